/*
 * libcairn's watches: a long poll on the member that created the watch,
 * resumed on any member from the last revision delivered when that member is
 * lost; and one long poll for several watches kept on one member
 * (cairn_watch_poll, WatchPoll on the wire).  Built on cairn_call_async only: each poll is a chain of calls
 * (create if needed, then WatchNext pinned to the watch's endpoint) whose
 * callbacks run on nng's threads; the blocking functions wait on that chain.
 * A watch remembers how far it delivered (progress revision, and how many
 * events of a fragmented revision) so a resumed watch repeats nothing.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/internal.h"

#define WATCH_DEFAULT_POLL_MS 10000 /* cairnd's default for timeout_ms 0: used for the call deadline */

struct cairn_watch {
    struct cairn_client *c;
    pthread_mutex_t mu;
    int refs;                    /* the caller's handle, and one while a poll is in flight */

    /* What WatchCreate sends when the watch is made again (owned copies). */
    uint8_t *key, *end;
    size_t klen, elen;
    Cairn__WatchCreateRequest__FilterType filters[2];
    size_t n_filters;
    bool prev_kv, progress_notify, fragment;

    int64_t id;                  /* 0: none (made again before the next poll) */
    unsigned endpoint;           /* the member holding it */
    int64_t progress;            /* every event up to it has been handed to the caller */
    int64_t frag_rev;            /* a revision delivered in part (0: none) ... */
    size_t frag_seen;            /* ... and how many of its events */
    size_t skip;                 /* events of frag_rev to drop after a resume */
    bool ended;                  /* canceled (by the caller or the member): no more polls */
    int end_code;
    char end_message[512];

    /* The poll in flight. */
    bool busy;
    int timeout_ms;
    size_t max_bytes;
    nng_time deadline;
    int resumes;
    cairn_callback cb;
    void *cb_arg;
};

static ProtobufCBinaryData bin(const void *p, size_t n)
{
    ProtobufCBinaryData d = {n, (uint8_t *)p};
    return d;
}

static void watch_put(struct cairn_watch *w)
{
    pthread_mutex_lock(&w->mu);
    int left = --w->refs;
    pthread_mutex_unlock(&w->mu);
    if (left)
        return;
    free(w->key);
    free(w->end);
    pthread_mutex_destroy(&w->mu);
    free(w);
}

/* The range end of every key starting with key: its last byte below 0xff + 1, or "\0" (every key). */
static size_t prefix_end(const uint8_t *key, size_t len, uint8_t *out)
{
    while (len && key[len - 1] == 0xff)
        len--;
    if (!len) {
        out[0] = 0;
        return 1;
    }
    memcpy(out, key, len);
    out[len - 1]++;
    return len;
}

static struct cairn_watch *watch_new(struct cairn_client *c, const struct cairn_watch_opts *o)
{
    struct cairn_watch *w = calloc(1, sizeof(*w));
    if (!w)
        return NULL;
    size_t elen = o->prefix ? (o->key.len ? o->key.len : 1) : o->range_end.len;
    w->key = malloc(o->key.len ? o->key.len : 1);
    w->end = malloc(elen ? elen : 1);
    if (!w->key || !w->end) {
        free(w->key);
        free(w->end);
        free(w);
        return NULL;
    }
    if (o->key.len)
        memcpy(w->key, o->key.data, o->key.len);
    w->klen = o->key.len;
    if (o->prefix)
        w->elen = prefix_end(o->key.data, o->key.len, w->end);
    else if ((w->elen = o->range_end.len))
        memcpy(w->end, o->range_end.data, o->range_end.len);
    if (o->no_put)
        w->filters[w->n_filters++] = CAIRN__WATCH_CREATE_REQUEST__FILTER_TYPE__NOPUT;
    if (o->no_delete)
        w->filters[w->n_filters++] = CAIRN__WATCH_CREATE_REQUEST__FILTER_TYPE__NODELETE;
    w->prev_kv = o->prev_kv;
    w->progress_notify = o->progress_notify;
    w->fragment = o->fragment;
    w->progress = o->start_revision > 0 ? o->start_revision - 1 : 0;
    w->c = c;
    w->refs = 1;
    pthread_mutex_init(&w->mu, NULL);
    return w;
}

/* Send WatchCreate for w from start (0: now). */
static int send_create(struct cairn_watch *w, int64_t start, const struct cairn_call_opts *opts,
                       cairn_callback cb, void *arg)
{
    Cairn__WatchCreateRequest q = CAIRN__WATCH_CREATE_REQUEST__INIT;
    Cairn__Request req = CAIRN__REQUEST__INIT;
    q.key = bin(w->key, w->klen);
    q.range_end = bin(w->end, w->elen);
    q.start_revision = start;
    q.filters = w->filters;
    q.n_filters = w->n_filters;
    q.prev_kv = w->prev_kv;
    q.progress_notify = w->progress_notify;
    q.fragment = w->fragment;
    req.body_case = CAIRN__REQUEST__BODY_WATCH_CREATE;
    req.watch_create = &q;
    return cairn_call_async(w->c, &req, opts, cb, arg);
}

/*
 * Take a WatchCreate reply for w (with w->mu held).  Returns 0, or the code
 * the watch ends with (compacted) and fills d.
 */
static int created(struct cairn_watch *w, Cairn__Response *resp, const struct cairn_error_detail *err,
                   int64_t start, struct cairn_error_detail *d)
{
    const Cairn__WatchCreateResponse *b = resp->watch_create;
    if (resp->body_case != CAIRN__RESPONSE__BODY_WATCH_CREATE || !b) {
        detail_set(d, -CAIRN_E_MALFORMED, "WatchCreate reply carries body %d", (int)resp->body_case);
        return -CAIRN_E_MALFORMED;
    }
    if (b->canceled || b->watch_id == 0) {
        int code = b->compact_revision ? -CAIRN_E_COMPACTED : -CAIRN_E_WATCH_CANCELED;
        detail_set(d, code, "%s", b->cancel_reason && b->cancel_reason[0] ? b->cancel_reason : cairn_strerror(code));
        d->compact_revision = b->compact_revision;
        return code;
    }
    w->id = b->watch_id;
    w->endpoint = err->endpoint >= 0 ? (unsigned)err->endpoint : 0;
    if (start == 0 && resp->header)
        w->progress = resp->header->revision; /* "from now": after the revision the member had */
    return 0;
}

/* ------------------------------------------------------------------ create */

struct create_ctx {
    struct cairn_watch *w;
    cairn_watch_created_fn cb;
    void *arg;
    int64_t start;
};

static void create_cb(void *arg, int rc, Cairn__Response *resp, const struct cairn_error_detail *err)
{
    struct create_ctx *x = arg;
    struct cairn_watch *w = x->w;
    struct cairn_error_detail d = *err;
    if (rc == 0) {
        pthread_mutex_lock(&w->mu);
        rc = created(w, resp, err, x->start, &d);
        pthread_mutex_unlock(&w->mu);
        d.code = rc;
    }
    cairn_response_free(resp);
    if (rc != 0) {
        watch_put(w);
        w = NULL;
    }
    x->cb(x->arg, rc, w, &d);
    free(x);
}

int cairn_watch_create_async(struct cairn_client *c, const struct cairn_watch_opts *o,
                             const struct cairn_call_opts *opts, cairn_watch_created_fn cb, void *arg)
{
    if (!c || !o || !cb || !o->key.len || o->start_revision < 0)
        return -EINVAL;
    struct create_ctx *x = calloc(1, sizeof(*x));
    if (!x || !(x->w = watch_new(c, o))) {
        free(x);
        return -ENOMEM;
    }
    x->cb = cb;
    x->arg = arg;
    x->start = o->start_revision;
    int rc = send_create(x->w, o->start_revision, opts, create_cb, x);
    if (rc != 0) {
        watch_put(x->w);
        free(x);
    }
    return rc;
}

/* A blocking call waits for its asynchronous twin here. */
struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    int rc;
    Cairn__Response *resp;
    struct cairn_watch *w;
    struct cairn_watch_poll *poll;
    struct cairn_error_detail d;
};

static void waiter_init(struct waiter *x)
{
    memset(x, 0, sizeof(*x));
    x->d.endpoint = -1;
    pthread_mutex_init(&x->mu, NULL);
    pthread_cond_init(&x->cv, NULL);
}

static int waiter_wait(struct waiter *x, int rc, struct cairn_error_detail *err)
{
    if (rc == 0) {
        pthread_mutex_lock(&x->mu);
        while (!x->done)
            pthread_cond_wait(&x->cv, &x->mu);
        pthread_mutex_unlock(&x->mu);
        rc = x->rc;
    } else {
        detail_set(&x->d, rc, "%s", cairn_strerror(rc));
    }
    if (err)
        *err = x->d;
    pthread_cond_destroy(&x->cv);
    pthread_mutex_destroy(&x->mu);
    return rc;
}

static void waiter_done(struct waiter *x, int rc, Cairn__Response *resp, struct cairn_watch *w,
                        const struct cairn_error_detail *err)
{
    pthread_mutex_lock(&x->mu);
    x->rc = rc;
    x->resp = resp;
    x->w = w;
    x->d = *err;
    x->done = true;
    pthread_cond_signal(&x->cv);
    pthread_mutex_unlock(&x->mu);
}

static void created_wait_cb(void *arg, int rc, struct cairn_watch *w, const struct cairn_error_detail *err)
{
    waiter_done(arg, rc, NULL, w, err);
}

int cairn_watch_create(struct cairn_client *c, const struct cairn_watch_opts *o,
                       const struct cairn_call_opts *opts, struct cairn_watch **out,
                       struct cairn_error_detail *err)
{
    struct waiter x;
    if (!out)
        return -EINVAL;
    *out = NULL;
    waiter_init(&x);
    int rc = waiter_wait(&x, cairn_watch_create_async(c, o, opts, created_wait_cb, &x), err);
    *out = x.w;
    return rc;
}

/* -------------------------------------------------------------------- next */

static void next_step(struct cairn_watch *w);

/* End the poll in flight: the caller's callback, then the poll's reference. */
static void finish(struct cairn_watch *w, int rc, Cairn__Response *resp, const struct cairn_error_detail *d)
{
    pthread_mutex_lock(&w->mu);
    cairn_callback cb = w->cb;
    void *arg = w->cb_arg;
    w->busy = false;
    pthread_mutex_unlock(&w->mu);
    struct cairn_error_detail out = *d;
    out.code = rc;
    if (rc != 0 && !out.message[0])
        snprintf(out.message, sizeof out.message, "%s", cairn_strerror(rc));
    cb(arg, rc, resp, &out);
    watch_put(w);
}

/* Failures after which the watch is made again elsewhere: the member no longer has it, or is unreachable. */
static bool resumable(int rc)
{
    switch (-rc) {
    case CAIRN_E_WATCH_NOT_FOUND:
    case CAIRN_E_STOPPED:
    case CAIRN_E_TIMEOUT:
    case CAIRN_E_UNAVAILABLE:
    case CAIRN_E_LEARNER_NOT_SERVING:
        return true;
    default:
        return false;
    }
}

/* One more resume within deadline: at most two tries per endpoint, plus two. */
static bool may_resume(const struct cairn_client *c, int *resumes, nng_time deadline)
{
    return nng_clock() < deadline && (*resumes)++ < 2 * (int)c->n_eps + 2;
}


/* Another attempt after rc, or the end of the poll: a bounded number of resumes within the deadline. */
static void retry_or_finish(struct cairn_watch *w, int rc, const struct cairn_error_detail *d)
{
    pthread_mutex_lock(&w->mu);
    bool again = resumable(rc) && !w->ended && may_resume(w->c, &w->resumes, w->deadline);
    if (resumable(rc))
        w->id = 0; /* the member lost it, or we lost the member: made again from the progress revision */
    pthread_mutex_unlock(&w->mu);
    if (again)
        next_step(w);
    else
        finish(w, rc, NULL, d);
}

/* Drop the events a resumed watch gives again: the part of a fragmented revision already delivered. */
static void drop_repeated(struct cairn_watch *w, Cairn__WatchNextResponse *b)
{
    size_t drop = 0;
    while (w->skip && drop < b->n_events && b->events[drop]->kv &&
           b->events[drop]->kv->mod_revision == w->frag_rev) {
        drop++;
        w->skip--;
    }
    if (drop < b->n_events)
        w->skip = 0; /* the revision is over */
    for (size_t i = 0; i < drop; i++)
        protobuf_c_message_free_unpacked(&b->events[i]->base, NULL);
    if (!drop)
        return; /* also keeps memmove away from an empty reply's NULL array (undefined behaviour) */
    memmove(b->events, b->events + drop, (b->n_events - drop) * sizeof(*b->events));
    b->n_events -= drop;
}

/* Account for what a reply delivers (with w->mu held). */
static void delivered(struct cairn_watch *w, Cairn__WatchNextResponse *b)
{
    drop_repeated(w, b);
    if (b->fragment && b->n_events && b->events[b->n_events - 1]->kv) {
        int64_t rev = b->events[b->n_events - 1]->kv->mod_revision;
        size_t k = 0;
        for (size_t i = b->n_events; i > 0 && b->events[i - 1]->kv && b->events[i - 1]->kv->mod_revision == rev; i--)
            k++;
        if (w->frag_rev != rev)
            w->frag_rev = rev, w->frag_seen = 0;
        w->frag_seen += k;
    } else if (!b->fragment) {
        w->frag_rev = 0;
        w->frag_seen = 0;
        w->skip = 0;
    }
    if (b->progress_revision > w->progress)
        w->progress = b->progress_revision;
}

/* The watch is over (with w->mu held): later polls return code at once. */
static void end_watch(struct cairn_watch *w, int code, const char *message)
{
    w->ended = true;
    w->end_code = code;
    w->id = 0;
    snprintf(w->end_message, sizeof w->end_message, "%s", message);
}

/* The code a canceled reply ends its watch with; ends w (with w->mu held) and returns it. */
static int end_canceled(struct cairn_watch *w, const Cairn__WatchNextResponse *b)
{
    int code = b->compact_revision ? -CAIRN_E_COMPACTED : -CAIRN_E_WATCH_CANCELED;
    end_watch(w, code, b->cancel_reason && b->cancel_reason[0] ? b->cancel_reason : cairn_strerror(code));
    return code;
}

static void next_cb(void *arg, int rc, Cairn__Response *resp, const struct cairn_error_detail *err)
{
    struct cairn_watch *w = arg;
    struct cairn_error_detail d = *err;
    if (rc != 0) {
        retry_or_finish(w, rc, &d);
        return;
    }
    Cairn__WatchNextResponse *b = resp->watch_next;
    if (resp->body_case != CAIRN__RESPONSE__BODY_WATCH_NEXT || !b) {
        cairn_response_free(resp);
        detail_set(&d, -CAIRN_E_MALFORMED, "WatchNext reply carries body %d", (int)resp->body_case);
        finish(w, -CAIRN_E_MALFORMED, NULL, &d);
        return;
    }
    pthread_mutex_lock(&w->mu);
    if (b->canceled) {
        int code = end_canceled(w, b);
        detail_set(&d, code, "%s", w->end_message);
        d.compact_revision = b->compact_revision;
        pthread_mutex_unlock(&w->mu);
        cairn_response_free(resp);
        finish(w, code, NULL, &d);
        return;
    }
    delivered(w, b);
    pthread_mutex_unlock(&w->mu);
    finish(w, 0, resp, &d);
}

static void create_step_cb(void *arg, int rc, Cairn__Response *resp, const struct cairn_error_detail *err)
{
    struct cairn_watch *w = arg;
    struct cairn_error_detail d = *err;
    if (rc != 0) {
        retry_or_finish(w, rc, &d);
        return;
    }
    pthread_mutex_lock(&w->mu);
    rc = created(w, resp, err, w->progress + 1, &d);
    if (rc == 0)
        w->skip = w->frag_rev == w->progress + 1 ? w->frag_seen : 0;
    else if (rc == -CAIRN_E_COMPACTED || rc == -CAIRN_E_WATCH_CANCELED)
        end_watch(w, rc, d.message);
    pthread_mutex_unlock(&w->mu);
    cairn_response_free(resp);
    if (rc != 0)
        finish(w, rc, NULL, &d);
    else
        next_step(w);
}

/* The next call of the poll: WatchCreate if the watch has no member, else WatchNext there. */
static void next_step(struct cairn_watch *w)
{
    struct cairn_client *c = w->c;
    struct cairn_call_opts opts = {0};
    Cairn__WatchNextRequest q = CAIRN__WATCH_NEXT_REQUEST__INIT;
    Cairn__Request req = CAIRN__REQUEST__INIT;
    int rc;

    pthread_mutex_lock(&w->mu);
    int64_t id = w->id, from = w->progress + 1;
    unsigned ep = w->endpoint;
    int left = (int)(w->deadline > nng_clock() ? w->deadline - nng_clock() : 1);
    bool ended = w->ended;
    int end_code = w->end_code;
    struct cairn_error_detail d = {.endpoint = -1};
    if (ended)
        detail_set(&d, end_code, "%s", w->end_message);
    if (id && !cairn_endpoint_connected(c, ep))
        id = w->id = 0; /* its member is unreachable: resume elsewhere rather than wait for it */
    pthread_mutex_unlock(&w->mu);
    if (ended) {
        finish(w, end_code, NULL, &d);
        return;
    }
    if (id == 0) {
        opts.timeout_ms = c->call_timeout_ms < left ? c->call_timeout_ms : left;
        rc = send_create(w, from, &opts, create_step_cb, w);
    } else {
        q.watch_id = id;
        q.timeout_ms = (uint32_t)w->timeout_ms;
        q.max_bytes = w->max_bytes > UINT32_MAX ? UINT32_MAX : (uint32_t)w->max_bytes;
        req.body_case = CAIRN__REQUEST__BODY_WATCH_NEXT;
        req.watch_next = &q;
        opts.pinned = true;
        opts.endpoint = ep;
        /* the member answers after timeout_ms at the latest: wait that long plus a call's time */
        opts.timeout_ms = (w->timeout_ms ? w->timeout_ms : WATCH_DEFAULT_POLL_MS) + c->call_timeout_ms;
        rc = cairn_call_async(c, &req, &opts, next_cb, w);
    }
    if (rc != 0) {
        detail_set(&d, rc, "%s", cairn_strerror(rc));
        finish(w, rc, NULL, &d);
    }
}

int cairn_watch_next_async(struct cairn_client *c, struct cairn_watch *w, int timeout_ms,
                           size_t max_bytes, cairn_callback cb, void *arg)
{
    if (!c || !w || !cb || timeout_ms < 0 || w->c != c)
        return -EINVAL;
    pthread_mutex_lock(&w->mu);
    if (w->busy) {
        pthread_mutex_unlock(&w->mu);
        return -EBUSY;
    }
    if (w->ended) {
        int code = w->end_code;
        pthread_mutex_unlock(&w->mu);
        return code;
    }
    w->busy = true;
    w->refs++;
    w->timeout_ms = timeout_ms;
    w->max_bytes = max_bytes;
    w->resumes = 0;
    w->deadline = nng_clock() + (nng_time)(timeout_ms ? timeout_ms : WATCH_DEFAULT_POLL_MS) +
                  (nng_time)c->call_timeout_ms;
    w->cb = cb;
    w->cb_arg = arg;
    pthread_mutex_unlock(&w->mu);
    next_step(w);
    return 0;
}

static void next_wait_cb(void *arg, int rc, Cairn__Response *resp, const struct cairn_error_detail *err)
{
    waiter_done(arg, rc, resp, NULL, err);
}

int cairn_watch_next(struct cairn_client *c, struct cairn_watch *w, int timeout_ms, size_t max_bytes,
                     Cairn__Response **resp, struct cairn_error_detail *err)
{
    struct waiter x;
    if (!resp)
        return -EINVAL;
    *resp = NULL;
    waiter_init(&x);
    int rc = cairn_watch_next_async(c, w, timeout_ms, max_bytes, next_wait_cb, &x);
    rc = waiter_wait(&x, rc, err);
    if (rc != 0 && !x.done && err && w && (rc == -CAIRN_E_WATCH_CANCELED || rc == -CAIRN_E_COMPACTED)) {
        pthread_mutex_lock(&w->mu);
        detail_set(err, rc, "%s", w->end_message);
        pthread_mutex_unlock(&w->mu);
    }
    *resp = x.resp;
    return rc;
}

/* -------------------------------------------------------------------- poll */

#define WATCH_POLL_MAX 4096 /* cairnd's bound on a WatchPoll's watches */

/*
 * One cairn_watch_poll: a chain of calls on nng's threads, one at a time.
 * Each step makes again, one by one, the watches that have no member or are
 * on another than the poll's (ep), then sends one WatchPoll there.
 */
struct poll_ctx {
    struct cairn_client *c;
    struct cairn_watch **ws;
    size_t n;
    int timeout_ms;
    size_t max_bytes;
    nng_time deadline;
    int resumes;
    int ep;                      /* the member the watches are kept on; -1: none yet */
    size_t creating;             /* the watch the create in flight is for */
    struct cairn_watch_poll *out;
    cairn_watch_poll_fn cb;
    void *arg;
};

void cairn_watch_poll_free(struct cairn_watch_poll *p)
{
    if (!p)
        return;
    cairn_response_free(p->resp);
    free(p->parts);
    free(p);
}

static void poll_step(struct poll_ctx *x);

/* End the poll: the watches are free again, the caller's callback, then the poll's references. */
static void poll_finish(struct poll_ctx *x, int rc, Cairn__Response *resp, const struct cairn_error_detail *d)
{
    struct cairn_watch_poll *p = x->out;
    for (size_t i = 0; i < x->n; i++) {
        struct cairn_watch *w = x->ws[i];
        pthread_mutex_lock(&w->mu);
        w->busy = false;
        if (w->ended && !p->parts[i].code)
            p->parts[i].code = w->end_code;
        pthread_mutex_unlock(&w->mu);
    }
    struct cairn_error_detail out = *d;
    out.code = rc;
    if (rc != 0 && !out.message[0])
        snprintf(out.message, sizeof out.message, "%s", cairn_strerror(rc));
    if (rc != 0) {
        cairn_response_free(resp);
        cairn_watch_poll_free(p);
        p = NULL;
    } else {
        p->resp = resp;
    }
    x->cb(x->arg, rc, p, &out);
    for (size_t i = 0; i < x->n; i++)
        watch_put(x->ws[i]);
    free(x->ws);
    free(x);
}

/* Another step after rc, or the end: the member is lost to every watch of the poll. */
static void poll_retry_or_finish(struct poll_ctx *x, int rc, const struct cairn_error_detail *d)
{
    bool again = resumable(rc) && may_resume(x->c, &x->resumes, x->deadline);
    if (resumable(rc)) {
        for (size_t i = 0; i < x->n; i++) {
            pthread_mutex_lock(&x->ws[i]->mu);
            x->ws[i]->id = 0;
            pthread_mutex_unlock(&x->ws[i]->mu);
        }
        x->ep = -1;
    }
    if (again)
        poll_step(x);
    else
        poll_finish(x, rc, NULL, d);
}

static void ignore_reply(void *arg, int rc, Cairn__Response *resp, const struct cairn_error_detail *err)
{
    (void)arg, (void)rc, (void)err;
    cairn_response_free(resp);
}

/* w moves to the poll's member: its old one is told to drop it (or drops it when idle). */
static void drop_elsewhere(struct cairn_client *c, int64_t id, unsigned ep)
{
    Cairn__WatchCancelRequest q = CAIRN__WATCH_CANCEL_REQUEST__INIT;
    Cairn__Request req = CAIRN__REQUEST__INIT;
    struct cairn_call_opts o = {.pinned = true, .endpoint = ep};
    q.watch_id = id;
    req.body_case = CAIRN__REQUEST__BODY_WATCH_CANCEL;
    req.watch_cancel = &q;
    cairn_call_async(c, &req, &o, ignore_reply, NULL);
}

static void poll_create_cb(void *arg, int rc, Cairn__Response *resp, const struct cairn_error_detail *err)
{
    struct poll_ctx *x = arg;
    struct cairn_watch *w = x->ws[x->creating];
    struct cairn_error_detail d = *err;
    if (rc == 0) {
        pthread_mutex_lock(&w->mu);
        rc = created(w, resp, err, w->progress + 1, &d);
        if (rc == 0) {
            w->skip = w->frag_rev == w->progress + 1 ? w->frag_seen : 0;
            if (x->ep < 0)
                x->ep = (int)w->endpoint;
        } else if (rc == -CAIRN_E_COMPACTED || rc == -CAIRN_E_WATCH_CANCELED) {
            end_watch(w, rc, d.message); /* this watch is over; its part says so, the others go on */
            rc = 0;
        }
        pthread_mutex_unlock(&w->mu);
    }
    cairn_response_free(resp);
    if (rc != 0)
        poll_retry_or_finish(x, rc, &d);
    else
        poll_step(x);
}

static int cmp_pair(const void *a, const void *b)
{
    int64_t x = ((const int64_t *)a)[0], y = ((const int64_t *)b)[0];
    return x < y ? -1 : x > y;
}

/* Take a WatchPoll reply: each part to its watch (by ID), as cairn_watch_next takes its reply. */
static void poll_cb(void *arg, int rc, Cairn__Response *resp, const struct cairn_error_detail *err)
{
    struct poll_ctx *x = arg;
    struct cairn_error_detail d = *err;
    if (rc != 0) {
        poll_retry_or_finish(x, rc, &d);
        return;
    }
    Cairn__WatchPollResponse *b = resp->watch_poll;
    if (resp->body_case != CAIRN__RESPONSE__BODY_WATCH_POLL || !b) {
        detail_set(&d, -CAIRN_E_MALFORMED, "WatchPoll reply carries body %d", (int)resp->body_case);
        cairn_response_free(resp);
        poll_finish(x, -CAIRN_E_MALFORMED, NULL, &d);
        return;
    }
    /* (watch ID, index) sorted by ID: a part finds its watch in log n */
    int64_t(*ids)[2] = malloc(x->n * sizeof(*ids));
    if (!ids) {
        cairn_response_free(resp);
        detail_set(&d, -ENOMEM, "out of memory");
        poll_finish(x, -ENOMEM, NULL, &d); /* the events are lost: the watches' progress did not move */
        return;
    }
    for (size_t i = 0; i < x->n; i++) {
        pthread_mutex_lock(&x->ws[i]->mu);
        ids[i][0] = x->ws[i]->ended ? 0 : x->ws[i]->id;
        ids[i][1] = (int64_t)i;
        pthread_mutex_unlock(&x->ws[i]->mu);
    }
    qsort(ids, x->n, sizeof(*ids), cmp_pair);
    /* a reply naming missing watches carries nothing else */
    size_t n_named = b->n_missing ? b->n_missing : b->n_watches;
    for (size_t k = 0; k < n_named; k++) {
        int64_t id = b->n_missing ? b->missing[k] : b->watches[k]->watch_id;
        int64_t key[2] = {id, 0};
        int64_t(*hit)[2] = id ? bsearch(key, ids, x->n, sizeof(*ids), cmp_pair) : NULL;
        if (!hit)
            continue; /* not one of ours (a reply must not name others): left alone */
        struct cairn_watch *w = x->ws[(*hit)[1]];
        pthread_mutex_lock(&w->mu);
        if (b->n_missing) {
            w->id = 0; /* canceled or dropped when idle: made again from its progress revision */
        } else {
            Cairn__WatchNextResponse *part = b->watches[k];
            x->out->parts[(*hit)[1]].next = part;
            if (part->canceled)
                end_canceled(w, part);
            else
                delivered(w, part);
        }
        pthread_mutex_unlock(&w->mu);
    }
    free(ids);
    if (b->n_missing) {
        /* the member answered at once and took nothing: make those again, then poll anew */
        cairn_response_free(resp);
        detail_set(&d, -CAIRN_E_WATCH_NOT_FOUND, "%s", cairn_strerror(-CAIRN_E_WATCH_NOT_FOUND));
        if (may_resume(x->c, &x->resumes, x->deadline))
            poll_step(x);
        else
            poll_finish(x, -CAIRN_E_WATCH_NOT_FOUND, NULL, &d);
        return;
    }
    poll_finish(x, 0, resp, &d);
}

/*
 * The next call of the poll: keep the watches on one member (the first
 * with a connected one), make again one that has none or is elsewhere,
 * and once all are there, one WatchPoll for those not ended.
 */
static void poll_step(struct poll_ctx *x)
{
    struct cairn_client *c = x->c;
    struct cairn_error_detail d = {.endpoint = -1};
    size_t live = 0, remake = x->n;
    int64_t *ids = malloc(x->n * sizeof(*ids));
    if (!ids) {
        detail_set(&d, -ENOMEM, "out of memory");
        poll_finish(x, -ENOMEM, NULL, &d);
        return;
    }
    if (x->ep >= 0 && !cairn_endpoint_connected(c, (unsigned)x->ep))
        x->ep = -1;
    for (size_t i = 0; i < x->n; i++) {
        struct cairn_watch *w = x->ws[i];
        pthread_mutex_lock(&w->mu);
        if (!w->ended && w->id && !cairn_endpoint_connected(c, w->endpoint))
            w->id = 0; /* its member is unreachable: resume elsewhere rather than wait for it */
        if (!w->ended && w->id && x->ep < 0)
            x->ep = (int)w->endpoint;
        pthread_mutex_unlock(&w->mu);
    }
    for (size_t i = 0; i < x->n; i++) {
        struct cairn_watch *w = x->ws[i];
        pthread_mutex_lock(&w->mu);
        if (!w->ended) {
            if (w->id && (int)w->endpoint != x->ep) {
                drop_elsewhere(c, w->id, w->endpoint);
                w->id = 0;
            }
            if (!w->id && remake == x->n)
                remake = i;
            ids[live++] = w->id;
        }
        pthread_mutex_unlock(&w->mu);
    }
    int left = (int)(x->deadline > nng_clock() ? x->deadline - nng_clock() : 1);
    int rc;
    if (!live) {
        free(ids);
        poll_finish(x, 0, NULL, &d); /* every watch is over: each part's code says how */
        return;
    }
    if (remake < x->n) {
        struct cairn_watch *w = x->ws[remake];
        struct cairn_call_opts opts = {.timeout_ms = c->call_timeout_ms < left ? c->call_timeout_ms : left};
        if (x->ep >= 0) {
            opts.pinned = true;
            opts.endpoint = (unsigned)x->ep;
        }
        pthread_mutex_lock(&w->mu);
        int64_t from = w->progress + 1;
        pthread_mutex_unlock(&w->mu);
        x->creating = remake;
        rc = send_create(w, from, &opts, poll_create_cb, x);
    } else {
        Cairn__WatchPollRequest q = CAIRN__WATCH_POLL_REQUEST__INIT;
        Cairn__Request req = CAIRN__REQUEST__INIT;
        q.watch_ids = ids;
        q.n_watch_ids = live;
        q.timeout_ms = (uint32_t)x->timeout_ms;
        q.max_bytes = x->max_bytes > UINT32_MAX ? UINT32_MAX : (uint32_t)x->max_bytes;
        req.body_case = CAIRN__REQUEST__BODY_WATCH_POLL;
        req.watch_poll = &q;
        /* the member answers after timeout_ms at the latest: wait that long plus a call's time */
        struct cairn_call_opts opts = {.pinned = true, .endpoint = (unsigned)x->ep,
                                       .timeout_ms = (x->timeout_ms ? x->timeout_ms : WATCH_DEFAULT_POLL_MS) +
                                                     c->call_timeout_ms};
        rc = cairn_call_async(c, &req, &opts, poll_cb, x);
    }
    free(ids);
    if (rc != 0) {
        detail_set(&d, rc, "%s", cairn_strerror(rc));
        poll_finish(x, rc, NULL, &d);
    }
}

static int cmp_ptr(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t) * (void *const *)a, y = (uintptr_t) * (void *const *)b;
    return x < y ? -1 : x > y;
}

/* ws holds n distinct watches of c: 0 or -EINVAL (-ENOMEM). */
static int check_set(struct cairn_client *c, struct cairn_watch *const *ws, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!ws[i] || ws[i]->c != c)
            return -EINVAL;
    struct cairn_watch **sorted = malloc(n * sizeof(*sorted));
    if (!sorted)
        return -ENOMEM;
    memcpy(sorted, ws, n * sizeof(*sorted));
    qsort(sorted, n, sizeof(*sorted), cmp_ptr);
    int rc = 0;
    for (size_t i = 1; i < n && !rc; i++)
        if (sorted[i] == sorted[i - 1])
            rc = -EINVAL;
    free(sorted);
    return rc;
}

int cairn_watch_poll_async(struct cairn_client *c, struct cairn_watch *const *ws, size_t n, int timeout_ms,
                           size_t max_bytes, cairn_watch_poll_fn cb, void *arg)
{
    if (!c || !ws || !cb || !n || n > WATCH_POLL_MAX || timeout_ms < 0)
        return -EINVAL;
    int rc = check_set(c, ws, n);
    if (rc != 0)
        return rc;
    struct poll_ctx *x = calloc(1, sizeof(*x));
    struct cairn_watch_poll *out = calloc(1, sizeof(*out));
    if (!x || !out || !(x->ws = malloc(n * sizeof(*x->ws))) || !(out->parts = calloc(n, sizeof(*out->parts)))) {
        if (x)
            free(x->ws);
        free(x);
        cairn_watch_poll_free(out);
        return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        struct cairn_watch *w = ws[i];
        pthread_mutex_lock(&w->mu);
        bool busy = w->busy;
        if (!busy) {
            w->busy = true;
            w->refs++;
        }
        pthread_mutex_unlock(&w->mu);
        if (busy) {
            for (size_t j = 0; j < i; j++) {
                pthread_mutex_lock(&ws[j]->mu);
                ws[j]->busy = false;
                pthread_mutex_unlock(&ws[j]->mu);
                watch_put(ws[j]);
            }
            free(x->ws);
            free(x);
            cairn_watch_poll_free(out);
            return -EBUSY;
        }
        x->ws[i] = w;
    }
    out->n = n;
    x->c = c;
    x->n = n;
    x->timeout_ms = timeout_ms;
    x->max_bytes = max_bytes;
    x->ep = -1;
    x->deadline = nng_clock() + (nng_time)(timeout_ms ? timeout_ms : WATCH_DEFAULT_POLL_MS) +
                  (nng_time)c->call_timeout_ms;
    x->out = out;
    x->cb = cb;
    x->arg = arg;
    poll_step(x);
    return 0;
}

static void poll_wait_cb(void *arg, int rc, struct cairn_watch_poll *p, const struct cairn_error_detail *err)
{
    struct waiter *x = arg;
    pthread_mutex_lock(&x->mu);
    x->poll = p;
    pthread_mutex_unlock(&x->mu);
    waiter_done(x, rc, NULL, NULL, err);
}

int cairn_watch_poll(struct cairn_client *c, struct cairn_watch *const *ws, size_t n, int timeout_ms,
                     size_t max_bytes, struct cairn_watch_poll **out, struct cairn_error_detail *err)
{
    struct waiter x;
    if (!out)
        return -EINVAL;
    *out = NULL;
    waiter_init(&x);
    int rc = waiter_wait(&x, cairn_watch_poll_async(c, ws, n, timeout_ms, max_bytes, poll_wait_cb, &x), err);
    *out = x.poll;
    return rc;
}

/* ------------------------------------------------------------------ cancel */

struct cancel_ctx {
    struct cairn_watch *w;
    cairn_callback cb;
    void *arg;
};

static void cancel_cb(void *arg, int rc, Cairn__Response *resp, const struct cairn_error_detail *err)
{
    struct cancel_ctx *x = arg;
    cairn_response_free(resp);
    watch_put(x->w);
    x->cb(x->arg, rc, NULL, err);
    free(x);
}

int cairn_watch_cancel_async(struct cairn_client *c, struct cairn_watch *w, const struct cairn_call_opts *opts,
                             cairn_callback cb, void *arg)
{
    if (!c || !w || !cb || w->c != c)
        return -EINVAL;
    struct cancel_ctx *x = calloc(1, sizeof(*x));
    if (!x) {
        watch_put(w);
        return -ENOMEM;
    }
    pthread_mutex_lock(&w->mu);
    int64_t id = w->id;
    unsigned ep = w->endpoint;
    w->ended = true;
    w->end_code = -CAIRN_E_WATCH_CANCELED;
    snprintf(w->end_message, sizeof w->end_message, "canceled by cairn_watch_cancel");
    pthread_mutex_unlock(&w->mu);
    x->w = w;
    x->cb = cb;
    x->arg = arg;
    Cairn__WatchCancelRequest q = CAIRN__WATCH_CANCEL_REQUEST__INIT;
    Cairn__Request req = CAIRN__REQUEST__INIT;
    struct cairn_call_opts o = opts ? *opts : (struct cairn_call_opts){0};
    o.pinned = true;
    o.endpoint = ep;
    q.watch_id = id;
    req.body_case = CAIRN__REQUEST__BODY_WATCH_CANCEL;
    req.watch_cancel = &q;
    if (!id) {
        /* no member holds it now: nothing to tell */
        struct cairn_error_detail d = {.endpoint = -1};
        cancel_cb(x, 0, NULL, &d);
        return 0;
    }
    int rc = cairn_call_async(c, &req, &o, cancel_cb, x);
    if (rc != 0) {
        watch_put(w);
        free(x);
    }
    return rc;
}

static void cancel_wait_cb(void *arg, int rc, Cairn__Response *resp, const struct cairn_error_detail *err)
{
    waiter_done(arg, rc, resp, NULL, err);
}

int cairn_watch_cancel(struct cairn_client *c, struct cairn_watch *w, const struct cairn_call_opts *opts,
                       struct cairn_error_detail *err)
{
    struct waiter x;
    waiter_init(&x);
    return waiter_wait(&x, cairn_watch_cancel_async(c, w, opts, cancel_wait_cb, &x), err);
}

void cairn_watch_free(struct cairn_watch *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->mu);
    w->ended = true;
    w->end_code = -CAIRN_E_WATCH_CANCELED;
    pthread_mutex_unlock(&w->mu);
    watch_put(w);
}

int64_t cairn_watch_progress(const struct cairn_watch *w)
{
    struct cairn_watch *m = (struct cairn_watch *)w;
    pthread_mutex_lock(&m->mu);
    int64_t p = w->progress;
    pthread_mutex_unlock(&m->mu);
    return p;
}

int64_t cairn_watch_id(const struct cairn_watch *w)
{
    struct cairn_watch *m = (struct cairn_watch *)w;
    pthread_mutex_lock(&m->mu);
    int64_t id = w->id;
    pthread_mutex_unlock(&m->mu);
    return id;
}
