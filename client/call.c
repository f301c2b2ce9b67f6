/*
 * One call from start to completion: pack the Request, pick an endpoint,
 * send on a pooled nng context, receive, decode, and decide whether another
 * attempt may be made.  Blocking calls are asynchronous calls waited on.
 *
 * The resend rules, and why they hold:
 *  - Each attempt sends on an nng req0 context of one endpoint's socket whose
 *    resend time is infinite.  nng 1.5's req0 then never resends by itself:
 *    no resend timer is armed, and when the pipe a request went out on
 *    closes, the context's receive fails with NNG_ECONNRESET (checked
 *    against nng 1.5.2; test_client.c proves it end to end).
 *  - The send of an attempt completes successfully exactly when req0 hands
 *    the message to a pipe.  If the send times out or fails instead, req0
 *    gives the message back untouched: the request never left this process,
 *    so any request may try another endpoint.
 *  - Once the send has completed, the request may have reached a member.  A
 *    read may still go elsewhere; anything else that then loses its
 *    connection or its deadline ends with -CAIRN_E_TIMEOUT, outcome unknown.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/internal.h"
#include "proto/fastpack.h"

/* Pause between rounds over every endpoint, doubling up to the maximum. */
#define BACKOFF_MIN_MS 25
#define BACKOFF_MAX_MS 500
/* A reply longer than this is not decoded on the I/O thread (see op_cb). */
#define INLINE_REPLY_MAX 16384

static bool txn_is_read(const Cairn__TxnRequest *t)
{
    Cairn__RequestOp **branches[2] = {t->success, t->failure};
    size_t counts[2] = {t->n_success, t->n_failure};

    for (int b = 0; b < 2; b++)
        for (size_t i = 0; i < counts[b]; i++) {
            const Cairn__RequestOp *op = branches[b][i];
            if (!op)
                return false;
            if (op->request_case == CAIRN__REQUEST_OP__REQUEST_REQUEST_RANGE)
                continue;
            if (op->request_case == CAIRN__REQUEST_OP__REQUEST_REQUEST_TXN && op->request_txn &&
                txn_is_read(op->request_txn))
                continue;
            return false;
        }
    return true;
}

/*
 * request_is_read: nonzero if req changes nothing on the cluster, so sending
 * it twice is harmless.  Watch and snapshot calls are not: their state lives
 * on the member that answered.
 */
bool request_is_read(const Cairn__Request *req)
{
    switch (req->body_case) {
    case CAIRN__REQUEST__BODY_RANGE:
    case CAIRN__REQUEST__BODY_HISTORY:
    case CAIRN__REQUEST__BODY_STATUS:
    case CAIRN__REQUEST__BODY_MEMBER_LIST:
    case CAIRN__REQUEST__BODY_LEASE_TIME_TO_LIVE:
    case CAIRN__REQUEST__BODY_LEASE_LEASES:
    case CAIRN__REQUEST__BODY_HASH_KV:
    case CAIRN__REQUEST__BODY_AUTH_STATUS:
    case CAIRN__REQUEST__BODY_USER_GET:
    case CAIRN__REQUEST__BODY_USER_LIST:
    case CAIRN__REQUEST__BODY_ROLE_GET:
    case CAIRN__REQUEST__BODY_ROLE_LIST:
        return true;
    case CAIRN__REQUEST__BODY_ALARM:
        return req->alarm && req->alarm->action == CAIRN__ALARM_REQUEST__ALARM_ACTION__GET;
    case CAIRN__REQUEST__BODY_TXN:
        return req->txn && txn_is_read(req->txn);
    default:
        return false;
    }
}

/* Member errors after which a read is worth asking another member. */
static bool read_retryable(int rc)
{
    switch (-rc) {
    case CAIRN_E_NO_LEADER:
    case CAIRN_E_UNAVAILABLE:
    case CAIRN_E_STOPPED:
    case CAIRN_E_LEARNER_NOT_SERVING:
    case CAIRN_E_LEADER_TRANSFER:
    case CAIRN_E_TOO_MANY_REQUESTS:
    case CAIRN_E_TIMEOUT:
    case CAIRN_E_NOT_LEADER:
        return true;
    default:
        return false;
    }
}

/* Response.error.code to a negative return code; 0 or absurd codes are malformed. */
static int map_wire_code(uint32_t code)
{
    if (code == 0 || code > INT_MAX)
        return -CAIRN_E_MALFORMED;
    return -(int)code;
}

static int remaining_ms(const struct op *op)
{
    nng_time now = nng_clock();
    if (now >= op->deadline)
        return 0;
    nng_time left = op->deadline - now;
    return left > INT_MAX ? INT_MAX : (int)left;
}

/* ------------------------------------------------------------------ op pool */

static void op_cb(void *arg);
static void timer_cb(void *arg);

static int op_get(struct cairn_client *c, struct op **out)
{
    struct op *op;

    if (c->closing)
        return -ECANCELED;
    if (c->in_flight >= c->max_in_flight)
        return -EAGAIN;
    if ((op = c->free_ops)) {
        c->free_ops = op->next_free;
    } else {
        if (c->n_ops == c->cap_ops) {
            size_t cap = c->cap_ops ? c->cap_ops * 2 : 64;
            struct op **all = realloc(c->all_ops, cap * sizeof(*all));
            if (!all)
                return -ENOMEM;
            c->all_ops = all;
            c->cap_ops = cap;
        }
        if (!(op = calloc(1, sizeof(*op))))
            return -ENOMEM;
        if (nng_aio_alloc(&op->aio, op_cb, op) != 0) {
            free(op);
            return -ENOMEM;
        }
        if (nng_aio_alloc(&op->timer, timer_cb, op) != 0) {
            nng_aio_free(op->aio);
            free(op);
            return -ENOMEM;
        }
        c->all_ops[c->n_ops++] = op;
    }
    op->c = c;
    op->next_busy = c->busy_ops;
    op->prev_busy = NULL;
    if (c->busy_ops)
        c->busy_ops->prev_busy = op;
    c->busy_ops = op;
    c->in_flight++;
    *out = op;
    return 0;
}

/* Back to the pool, with c->mu held.  The op must not be touched afterwards. */
static void op_put(struct cairn_client *c, struct op *op)
{
    if (op->prev_busy)
        op->prev_busy->next_busy = op->next_busy;
    else
        c->busy_ops = op->next_busy;
    if (op->next_busy)
        op->next_busy->prev_busy = op->prev_busy;
    free(op->req);
    op->req = NULL;
    op->state = OP_IDLE;
    op->next_free = c->free_ops;
    c->free_ops = op;
    if (--c->in_flight == 0 && c->closing)
        pthread_cond_broadcast(&c->idle_cv);
}

/* ---------------------------------------------------------- state machine */

/* Why the deadline ended the call, from what its attempts saw. */
static int deadline_rc(struct op *op)
{
    struct cairn_client *c = op->c;

    if (op->last_rc != 0)
        return op->last_rc;
    detail_set(&op->detail, -CAIRN_E_UNAVAILABLE,
               "no member could be reached within the deadline (%d attempts over %zu "
               "endpoints, the last %s); the request was not sent",
               op->detail.attempts, c->n_eps,
               op->ep ? op->ep->url : "none");
    return -CAIRN_E_UNAVAILABLE;
}

/*
 * Start op's next attempt, or a pause before the next round.  With c->mu
 * held.  Returns 0 if something was submitted on op->aio, else the code the
 * call ends with.
 */
static int attempt_next(struct op *op)
{
    struct cairn_client *c = op->c;
    uint64_t all = c->n_eps == 64 ? ~UINT64_C(0) : (UINT64_C(1) << c->n_eps) - 1;
    struct endpoint *ep;
    nng_msg *msg = NULL;
    int left, rv;

    if (c->closing) {
        detail_set(&op->detail, -ECANCELED, "client closed before the call completed%s",
                   op->ever_sent && !op->is_read ? "; the request was sent, its outcome is unknown"
                                                 : "");
        return -ECANCELED;
    }
    if ((left = remaining_ms(op)) == 0)
        return deadline_rc(op);

    bool round_done = op->pinned >= 0 ? (op->tried != 0) : ((op->tried & all) == all);
    if (round_done) {
        int ms = op->backoff_ms < left ? op->backoff_ms : left;
        op->backoff_ms = op->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : op->backoff_ms * 2;
        op->tried = 0;
        op->state = OP_BACKOFF;
        /*
         * A separate aio: in nng 1.5.2 an aio once used by nng_sleep_aio
         * keeps its "sleep" mark, so a later send that times out completes
         * with 0 (and its message handed back) instead of NNG_ETIMEDOUT.
         */
        nng_sleep_aio(ms, op->timer);
        return 0;
    }

    ep = endpoint_pick(c, op);
    op->tried |= UINT64_C(1) << ep->index;
    if ((rv = endpoint_take_ctx(c, ep, &op->slot)) != 0) {
        detail_set(&op->detail, rv, "endpoint %s: cannot open an nng context", ep->url);
        return rv;
    }
    if (nng_msg_alloc(&msg, op->req_len) != 0) {
        endpoint_give_ctx(ep, op->slot);
        op->slot = NULL;
        detail_set(&op->detail, -ENOMEM, "out of memory for a %zu-byte request", op->req_len);
        return -ENOMEM;
    }
    memcpy(nng_msg_body(msg), op->req, op->req_len);
    op->ep = ep;
    op->state = OP_SENDING;
    op->detail.attempts++;
    op->detail.endpoint = (int)ep->index;
    nng_aio_set_msg(op->aio, msg);
    nng_aio_set_timeout(op->aio, c->dial_timeout_ms < left ? c->dial_timeout_ms : left);
    nng_ctx_send(op->slot->ctx, op->aio);
    return 0;
}

/* Return the attempt's context to its endpoint, with c->mu held. */
static void release_slot(struct op *op)
{
    if (op->slot) {
        endpoint_give_ctx(op->ep, op->slot);
        op->slot = NULL;
    }
}

/*
 * The send of an attempt completed, with c->mu held.  Returns 0 if the op
 * continues, else its final code.
 */
static int on_sent(struct op *op, int rv)
{
    struct cairn_client *c = op->c;
    nng_msg *msg = nng_aio_get_msg(op->aio);

    /*
     * req0 takes the message out of the aio when it accepts it and completes
     * the send only once a pipe has it.  A message still in the aio was not
     * sent, whatever the result says: count that as not sent.
     */
    if (rv == 0 && msg)
        rv = NNG_ETIMEDOUT;
    if (rv == 0) {
        op->ever_sent = true;
        if (c->closing) {
            release_slot(op);
            return attempt_next(op); /* reports the cancellation */
        }
        op->state = OP_RECEIVING;
        int left = remaining_ms(op);
        nng_aio_set_timeout(op->aio, left > 0 ? left : 1);
        nng_ctx_recv(op->slot->ctx, op->aio);
        return 0;
    }
    /* req0 handed the message back: it never reached a connection. */
    if (msg) {
        nng_aio_set_msg(op->aio, NULL);
        nng_msg_free(msg);
    }
    release_slot(op);
    if (rv != NNG_ETIMEDOUT && rv != NNG_ECANCELED)
        detail_set(&op->detail, -CAIRN_E_UNAVAILABLE, "endpoint %s: %s", op->ep->url,
                   nng_strerror(rv));
    return attempt_next(op);
}

/*
 * The receive of an attempt completed, with c->mu held.  Returns 0 if the op
 * continues (another attempt), else its final code with *resp on success.
 */
static int on_received(struct op *op, int rv, Cairn__Response **resp)
{
    struct cairn_client *c = op->c;
    struct endpoint *ep = op->ep;

    release_slot(op);
    if (rv == NNG_ECANCELED)
        return attempt_next(op); /* only cairn_close cancels */
    if (rv == NNG_ETIMEDOUT) {
        detail_set(&op->detail, -CAIRN_E_TIMEOUT,
                   "no reply from %s within the deadline; the outcome is unknown: the "
                   "request may still be applied",
                   ep->url);
        return -CAIRN_E_TIMEOUT;
    }
    if (rv != 0) {
        /* The connection died after the request went out (NNG_ECONNRESET). */
        detail_set(&op->detail, -CAIRN_E_TIMEOUT,
                   "connection to %s lost after the request was sent (%s); the outcome is "
                   "unknown: the request may still be applied",
                   ep->url, nng_strerror(rv));
        if (!op->is_read)
            return -CAIRN_E_TIMEOUT;
        op->last_rc = -CAIRN_E_TIMEOUT;
        return attempt_next(op);
    }

    nng_msg *msg = nng_aio_get_msg(op->aio);
    nng_aio_set_msg(op->aio, NULL);
    Cairn__Response *r = cairn__response__unpack(NULL, nng_msg_len(msg), nng_msg_body(msg));
    size_t len = nng_msg_len(msg);
    nng_msg_free(msg);
    if (!r) {
        detail_set(&op->detail, -CAIRN_E_MALFORMED,
                   "reply of %zu bytes from %s is not a Response%s", len, ep->url,
                   op->is_read ? "" : "; the outcome of the request is unknown");
        return -CAIRN_E_MALFORMED;
    }
    if (r->header)
        op->detail.member_id = r->header->member_id;
    if (!r->error) {
        *resp = r;
        op->detail.message[0] = '\0';
        return 0;
    }

    int code = map_wire_code(r->error->code);
    detail_set(&op->detail, code, "%s",
               r->error->message && r->error->message[0] ? r->error->message
                                                         : cairn_strerror(code));
    op->detail.compact_revision = r->error->compact_revision;
    if (r->error->member_id)
        op->detail.member_id = r->error->member_id;
    cairn__response__free_unpacked(r, NULL);
    /* NOT_LEADER and STOPPED are refusals before anything was proposed
     * (MemberPromote, lease keep-alives and MoveLeader on a follower; any
     * request to a member that is stopping, which answers a write it had
     * proposed and not finished TIMEOUT instead): safe to take to another
     * member, or to this one once it is back, write or not; but a call pinned
     * to that member gets the answer (asking again cannot help) */
    if (((op->is_read && read_retryable(code)) ||
         ((code == -CAIRN_E_NOT_LEADER || code == -CAIRN_E_STOPPED) && op->pinned < 0)) &&
        !c->closing) {
        op->last_rc = code;
        return attempt_next(op);
    }
    return code;
}

/*
 * Finish or continue op after a step computed rc (and resp on success),
 * with c->mu held; releases the lock.  On completion the op goes back to the
 * pool before the callback runs, so the callback may start another call
 * even at the in-flight bound.
 */
static void op_settle(struct op *op, int rc, Cairn__Response *resp)
{
    struct cairn_client *c = op->c;

    if (rc == 0 && !resp) {
        pthread_mutex_unlock(&c->mu);
        return; /* still in flight */
    }
    struct cairn_error_detail d = op->detail;
    cairn_callback cb = op->cb;
    void *cb_arg = op->cb_arg;
    d.code = rc;
    if (rc != 0 && d.message[0] == '\0')
        snprintf(d.message, sizeof(d.message), "%s", cairn_strerror(rc));
    op_put(c, op);
    pthread_mutex_unlock(&c->mu);
    cb(cb_arg, rc, resp, &d);
}

/*
 * On the I/O thread (an op whose aio is marked inline), hand a long reply to
 * a task thread: its decoding and the caller's callback would hold up every
 * other connection of the client.  nng_aio_begin then nng_aio_finish run
 * op_cb again there.  With c->mu held; false if the aio is stopped (only
 * after the op is done) and the reply must be taken here after all.
 */
static bool hand_off(struct op *op)
{
    if (!nng_aio_begin(op->aio))
        return false;
    op->handed = nng_aio_get_msg(op->aio);
    nng_aio_set_msg(op->aio, NULL);
    op->state = OP_HANDOFF;
    nng_aio_finish(op->aio, 0);
    return true;
}

/* nng's completion of a send or receive of op->aio. */
static void op_cb(void *arg)
{
    struct op *op = arg;
    struct cairn_client *c = op->c;
    int rv = nng_aio_result(op->aio);
    Cairn__Response *resp = NULL;
    int rc;

    pthread_mutex_lock(&c->mu);
    if (op->state == OP_SENDING) {
        rc = on_sent(op, rv);
    } else if (op->state == OP_RECEIVING) {
        if (rv == 0 && nng_aio_inline_now() && nng_msg_len(nng_aio_get_msg(op->aio)) > INLINE_REPLY_MAX &&
            hand_off(op)) {
            pthread_mutex_unlock(&c->mu);
            return;
        }
        rc = on_received(op, rv, &resp);
    } else if (op->state == OP_HANDOFF) {
        nng_aio_set_msg(op->aio, op->handed);
        op->handed = NULL;
        op->state = OP_RECEIVING;
        rc = on_received(op, 0, &resp);
    } else {
        rc = -EINVAL; /* not reached: only sends and receives use op->aio */
    }
    op_settle(op, rc, resp);
}

/* The backoff sleep ended (or was cancelled by cairn_close: attempt_next reports it). */
static void timer_cb(void *arg)
{
    struct op *op = arg;
    struct cairn_client *c = op->c;

    pthread_mutex_lock(&c->mu);
    op_settle(op, op->state == OP_BACKOFF ? attempt_next(op) : -EINVAL, NULL);
}

/* --------------------------------------------------------------- public */

/* cairn_call_async, with cb run on the I/O thread that reads the reply if on_io (when nng lets it). */
static int call_start(struct cairn_client *c, const Cairn__Request *req, const struct cairn_call_opts *opts,
                      cairn_callback cb, void *arg, bool on_io)
{
    Cairn__Request copy;
    uint8_t *buf = NULL;
    size_t len;
    struct op *op;
    int timeout, pinned, rv;

    if (!c || !req || !cb)
        return -EINVAL;
    timeout = opts && opts->timeout_ms > 0 ? opts->timeout_ms : c->call_timeout_ms;
    pinned = -1;
    if (opts && opts->pinned) {
        if (opts->endpoint >= c->n_eps)
            return -EINVAL;
        pinned = (int)opts->endpoint;
    }

    copy = *req;
    pthread_mutex_lock(&c->mu);
    /* Packed under the lock so the token cannot change underneath. */
    if ((!copy.auth_token || !copy.auth_token[0]) && c->auth_token)
        copy.auth_token = c->auth_token;
    if (!(buf = fastpack_dup(&copy.base, &len))) {
        pthread_mutex_unlock(&c->mu);
        return -ENOMEM;
    }
    if ((rv = op_get(c, &op)) != 0) {
        pthread_mutex_unlock(&c->mu);
        free(buf);
        return rv;
    }
    op->req = buf;
    op->req_len = len;
    op->is_read = request_is_read(req);
    op->pinned = pinned;
    op->deadline = nng_clock() + (nng_time)timeout;
    op->ep = NULL;
    op->slot = NULL;
    op->tried = 0;
    op->start = c->rr++;
    op->backoff_ms = BACKOFF_MIN_MS;
    op->ever_sent = false;
    op->last_rc = 0;
    memset(&op->detail, 0, sizeof(op->detail));
    op->detail.endpoint = -1;
    op->cb = cb;
    op->cb_arg = arg;
    nng_aio_set_inline(op->aio, on_io); /* the aio is idle: the op came from the pool */
    if ((rv = attempt_next(op)) != 0) {
        op_put(c, op);
        pthread_mutex_unlock(&c->mu);
        return rv;
    }
    pthread_mutex_unlock(&c->mu);
    return 0;
}

int cairn_call_async(struct cairn_client *c, const Cairn__Request *req,
                     const struct cairn_call_opts *opts, cairn_callback cb, void *arg)
{
    return call_start(c, req, opts, cb, arg, c && c->inline_callbacks);
}

struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    int rc;
    Cairn__Response *resp;
    struct cairn_error_detail d;
};

static void waiter_cb(void *arg, int rc, Cairn__Response *resp,
                      const struct cairn_error_detail *err)
{
    struct waiter *w = arg;
    pthread_mutex_lock(&w->mu);
    w->rc = rc;
    w->resp = resp;
    w->d = *err;
    w->done = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* One asynchronous call, waited for: its outcome in w.  0, or the error
 * cairn_call_async gave (then w holds nothing). */
static int call_and_wait(struct cairn_client *c, const Cairn__Request *req, const struct cairn_call_opts *opts,
                         struct waiter *w)
{
    w->done = false;
    int rv = call_start(c, req, opts, waiter_cb, w, true); /* waiter_cb only wakes this thread */
    if (rv != 0)
        return rv;
    /* No timeout here: the call's own deadline always completes it. */
    pthread_mutex_lock(&w->mu);
    while (!w->done)
        pthread_cond_wait(&w->cv, &w->mu);
    pthread_mutex_unlock(&w->mu);
    return 0;
}

int cairn_call(struct cairn_client *c, const Cairn__Request *req,
               const struct cairn_call_opts *opts, Cairn__Response **resp,
               struct cairn_error_detail *err)
{
    struct waiter w = {.done = false};
    int rv;

    if (resp)
        *resp = NULL;
    if (err) {
        memset(err, 0, sizeof(*err));
        err->endpoint = -1;
    }
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    if ((rv = call_and_wait(c, req, opts, &w)) != 0) {
        detail_set(err, rv, "%s", cairn_strerror(rv));
        goto out;
    }
    rv = w.rc;
    if (rv == -CAIRN_E_INVALID_TOKEN && (!req->auth_token || !req->auth_token[0]) &&
        req->body_case != CAIRN__REQUEST__BODY_AUTHENTICATE && client_reauth(c, opts) == 0) {
        /* the token expired or was voided: refused before anything was proposed, so one retry is safe */
        cairn_response_free(w.resp);
        w.resp = NULL;
        if ((rv = call_and_wait(c, req, opts, &w)) != 0) {
            detail_set(err, rv, "%s", cairn_strerror(rv));
            goto out;
        }
        rv = w.rc;
    }
    if (err)
        *err = w.d;
    if (resp)
        *resp = w.resp;
    else
        cairn_response_free(w.resp);
out:
    pthread_cond_destroy(&w.cv);
    pthread_mutex_destroy(&w.mu);
    return rv;
}

void cairn_response_free(Cairn__Response *resp)
{
    if (resp)
        cairn__response__free_unpacked(resp, NULL);
}

/*
 * Make the call and insist on the reply body `want`.  On success *resp is
 * the caller's if resp is given, else freed here.
 */
int client_call_expect(struct cairn_client *c, const Cairn__Request *req,
                       Cairn__Response__BodyCase want, const struct cairn_call_opts *opts,
                       Cairn__Response **resp, struct cairn_error_detail *err)
{
    Cairn__Response *r = NULL;
    int rv;

    if (resp)
        *resp = NULL;
    if ((rv = cairn_call(c, req, opts, &r, err)) != 0)
        return rv;
    if (r->body_case != want) {
        detail_set(err, -CAIRN_E_MALFORMED,
                   "reply carries body %d where %d was expected; the outcome is unknown",
                   (int)r->body_case, (int)want);
        cairn_response_free(r);
        return -CAIRN_E_MALFORMED;
    }
    if (resp)
        *resp = r;
    else
        cairn_response_free(r);
    return 0;
}
