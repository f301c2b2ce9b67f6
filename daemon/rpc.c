/*
 * The client API server over nng req/rep.  Each of RPC_CONTEXTS contexts
 * serves one request at a time: receive, decode, check, then hand the work
 * to the write path (Raft, answered from the node thread through the wait
 * table) or the read path (reader threads), and send the reply from whoever
 * finishes it.  Every reply has a header; every failure a code and a
 * message a person can act on.  Slow requests are logged with their method,
 * key, duration and client address.
 */
#include "daemon/rpc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/reqrep0/req.h>
#include <nng/supplemental/tls/tls.h>
#include <nng/transport/ipc/ipc.h>

#include "base/deadline.h"
#include "base/errors.h"
#include "base/log.h"
#include "daemon/msgids.h"
#include "daemon/alarm.h"
#include "daemon/kvconv.h"
#include "daemon/lguard.h"
#include "daemon/sockclose.h"
#include "proto/cairn.pb-c.h"
#include "proto/fastpack.h"
#include "proto/internal.pb-c.h"
#include "storage/mvcc.h"

#define RPC_CONTEXTS 256            /* requests in progress per member; more wait in nng's queue */
#define TOO_MANY_GAP 5000           /* etcd: committed - applied beyond this refuses writes */
#define BAD_INPUT_LOGS_PER_SEC 10   /* so a flood of garbage cannot fill the journal */
#define MAX_LISTENERS (CONFIG_MAX_URLS + 1)

enum slot_state { S_RECV, S_WORK, S_DEFER, S_SEND };

struct rpc;

struct slot {
    struct rpc *r;
    const struct rpc_route *route; /* the route serving the current request, or NULL */
    rpc_read_fn read_fn;
    void *read_arg;
    uint32_t pipe;
    nng_ctx ctx;
    nng_aio *aio;
    enum slot_state state;
    Cairn__Request *req;           /* in req_arena */
    nng_msg *deferred;             /* S_DEFER: the request not yet decoded, or NULL when req is */
    size_t wire_bytes;             /* the request's size as received */
    struct kvconv_arena req_arena; /* the request's memory, let go by finish() */
    int64_t start_ns;
    int code;                      /* the error code replied, 0 for success */
    char remote[160];
    char auth_user[256];           /* the authorize hook's stamp for proposals (rpc_call_set_auth) */
    uint64_t auth_revision;        /* 0: none */
    struct read_job job;
};

struct rpc {
    const struct config *cfg;
    struct node *node;
    struct reads *reads;
    struct wait_table *waits;
    nng_socket sock;
    int sock_open;
    pthread_mutex_t lis_mu;     /* listeners[] and tls, changed by reloads and by the guard */
    nng_listener listeners[MAX_LISTENERS];
    char *listener_urls[MAX_LISTENERS];
    size_t n_listeners;
    nng_tls_config *tls;
    char *tls_files;            /* the TLS files' contents when tls was made, to see whether a reload changes them */
    size_t tls_files_len;
    struct lguard *guard;       /* restarts ipc listeners nng wedged (lguard.h) */
    struct slot *slots;
    size_t n_slots;
    int draining;               /* atomic */
    struct node_info drain_info; /* the header of replies once draining: the node is stopped and freed meanwhile */
    size_t busy;                /* atomic */
    uint64_t member_id;         /* this member: fixed for the process's life */
    uint64_t ranges_served, point_ranges_served; /* atomic */
    struct rpc_route routes[64];
    size_t n_routes;
    struct rpc_hooks hooks;
    int64_t log_window_start;   /* atomic: rate limit of bad-input logs */
    int log_window_count;       /* atomic */
};

static void recv_next(struct slot *s);
static void propose(struct slot *s, Cairnint__RaftRequest *rr);
static void dispatch(struct slot *s);

/* ---------------------------------------------------------------- replies */

static const char *method_name(const Cairn__Request *req)
{
    if (!req || req->body_case == CAIRN__REQUEST__BODY__NOT_SET)
        return "unknown";
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field(&cairn__request__descriptor, (unsigned)req->body_case);
    return f ? f->name : "unknown";
}

/* The key a request concerns, for logs. */
static const ProtobufCBinaryData *request_key(const Cairn__Request *req)
{
    if (!req)
        return NULL;
    switch (req->body_case) {
    case CAIRN__REQUEST__BODY_RANGE:
        return &req->range->key;
    case CAIRN__REQUEST__BODY_PUT:
        return &req->put->key;
    case CAIRN__REQUEST__BODY_DELETE_RANGE:
        return &req->delete_range->key;
    case CAIRN__REQUEST__BODY_HISTORY:
        return &req->history->key;
    default:
        return NULL;
    }
}

/* Slow requests come in storms (a disk stall makes every request in flight
 * slow): 20 lines per 10 s, the rest counted in the next line.  The
 * request-duration histograms in /metrics see every one. */
static struct log_limit slow_log = LOG_LIMIT_INIT(20, 10000);

/* The request is answered: log it if slow, free it, take the next one. */
static void finish(struct slot *s)
{
    struct rpc *r = s->r;
    int64_t took_ns = mono_now_ns() - s->start_ns;
    int64_t took_ms = took_ns / 1000000;
    if (r->hooks.request_done && s->req)
        r->hooks.request_done(r->hooks.done_arg, (int)s->req->body_case, s->code, took_ns);
    /* a WatchNext or WatchPoll waits on purpose (a long poll): never "slow" */
    uint64_t refused;
    if (took_ms >= (int64_t)r->cfg->slow_request_ms && s->req &&
        s->req->body_case != CAIRN__REQUEST__BODY_WATCH_NEXT && s->req->body_case != CAIRN__REQUEST__BODY_WATCH_POLL &&
        log_limit_pass(&slow_log, &refused)) {
        char key[160] = "";
        const ProtobufCBinaryData *k = request_key(s->req);
        if (k)
            kvconv_escape(k->data, k->len, key, sizeof key);
        log_event(LOG_LEVEL_WARNING, MSGID_SLOW_REQUEST,
                  LOG_FIELDS(LOG_STR("CAIRN_METHOD", method_name(s->req)), LOG_STR("CAIRN_KEY", key),
                             LOG_U64("CAIRN_DURATION_MS", took_ms), LOG_STR("CAIRN_REMOTE", s->remote),
                             LOG_U64("CAIRN_SUPPRESSED", refused)),
                  "slow request: %s%s%s took %" PRId64 " ms (client %s; threshold --slow-request-threshold %u ms)%s",
                  method_name(s->req), k ? " " : "", key, took_ms, s->remote, r->cfg->slow_request_ms,
                  LOG_LIMIT_NOTE(refused));
    }
    s->req = NULL;
    kvconv_arena_free(&s->req_arena);
    __atomic_sub_fetch(&r->busy, 1, __ATOMIC_RELAXED);
}

/* Send a packed Response (copied). */
static void send_bytes(struct slot *s, const void *buf, size_t len)
{
    nng_msg *m = NULL;
    if (nng_msg_alloc(&m, 0) != 0 || nng_msg_append(m, buf, len) != 0) {
        nng_msg_free(m);
        finish(s);
        recv_next(s); /* the client times out; nothing else can be done without memory */
        return;
    }
    s->state = S_SEND;
    nng_aio_set_msg(s->aio, m);
    nng_ctx_send(s->ctx, s->aio);
}

/* Pack resp straight into a message and send it. */
static void send_response(struct slot *s, Cairn__Response *resp)
{
    struct fastpack_plan plan;
    size_t len = fastpack_size(&resp->base, &plan);
    nng_msg *m = NULL;
    if (nng_msg_alloc(&m, len) != 0) {
        finish(s);
        recv_next(s);
        return;
    }
    fastpack_pack(&resp->base, &plan, nng_msg_body(m));
    s->state = S_SEND;
    nng_aio_set_msg(s->aio, m);
    nng_ctx_send(s->ctx, s->aio);
}

static void set_header(struct slot *s, Cairn__Response *resp, int64_t revision, struct kvconv_arena *a)
{
    struct node_info info;
    /* Once draining, requests keep coming until rpc_stop and are refused,
     * while shut_down stops and frees the node: their headers come from
     * what the node said when the drain began. */
    if (__atomic_load_n(&s->r->draining, __ATOMIC_ACQUIRE))
        info = s->r->drain_info;
    else
        node_get_info(s->r->node, &info);
    kvconv_header(resp, info.cluster_id, info.member_id, revision ? revision : info.revision, info.term, a);
}

static void reply_error(struct slot *s, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void reply_error(struct slot *s, int code, const char *fmt, ...)
{
    Cairn__Response resp = CAIRN__RESPONSE__INIT;
    struct kvconv_arena a;
    char msg[512];
    kvconv_arena_init(&a);
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
    }
    s->code = code;
    set_header(s, &resp, 0, &a);
    kvconv_error(&resp, code, fmt ? msg : NULL, &a);
    if (resp.error && code != ENOMEM)
        resp.error->member_id = s->r->member_id;
    send_response(s, &resp);
    kvconv_arena_free(&a);
}

/* The reply when a reader could not get a handle on the store (err negative). */
static void reply_unreadable(struct slot *s, int err)
{
    reply_error(s, -err, "the store cannot be read: %s", cairn_strerror(err));
}

/* A bad message from a client: answered, and logged at a bounded rate. */
static void log_bad_input(struct slot *s, const char *what, size_t len)
{
    struct rpc *r = s->r;
    int64_t now = mono_now_ns();
    int64_t start = __atomic_load_n(&r->log_window_start, __ATOMIC_RELAXED);
    if (now - start > 1000000000LL) {
        __atomic_store_n(&r->log_window_start, now, __ATOMIC_RELAXED);
        __atomic_store_n(&r->log_window_count, 0, __ATOMIC_RELAXED);
    }
    if (__atomic_add_fetch(&r->log_window_count, 1, __ATOMIC_RELAXED) <= BAD_INPUT_LOGS_PER_SEC)
        log_warning(LOG_FIELDS(LOG_STR("CAIRN_REMOTE", s->remote), LOG_U64("CAIRN_BYTES", len)),
                    "bad request from %s: %s (%zu bytes)", s->remote, what, len);
}

/* ---------------------------------------------------------------- writes */

static void write_done(void *arg, void *reply, size_t len, int err)
{
    struct slot *s = arg;
    struct rpc *r = s->r;
    if (reply) {
        s->code = err; /* the error inside the packed reply, for request_done */
        send_bytes(s, reply, len);
        free(reply);
        return;
    }
    if (err == CAIRN_E_TIMEOUT && __atomic_load_n(&r->draining, __ATOMIC_RELAXED))
        reply_error(s, err,
                    "member %s stopped before the write completed; the outcome is unknown: the write may still be "
                    "applied, read the key before retrying",
                    r->cfg->name);
    else if (err == CAIRN_E_TIMEOUT)
        reply_error(s, err,
                    "request timed out after %u ms (--request-timeout); the outcome is unknown: the write may "
                    "still be applied, read the key before retrying",
                    r->cfg->request_timeout_ms);
    else if (err == CAIRN_E_STOPPED)
        reply_error(s, err, "member %s is stopping; the write was not proposed: send it to another member",
                    r->cfg->name);
    else if (err == CAIRN_E_NO_LEADER)
        reply_error(s, err, "no leader: the write was not proposed; check that a majority of members are up and "
                            "connected, then retry");
    else
        reply_error(s, err, NULL);
}

static void do_write(struct slot *s)
{
    struct rpc *r = s->r;
    Cairn__Request *req = s->req;
    struct node_info info;
    node_get_info(r->node, &info);
    if (info.commit > info.applied + TOO_MANY_GAP) {
        reply_error(s, CAIRN_E_TOO_MANY_REQUESTS,
                    "too many requests: committed index %" PRIu64 " is more than %d ahead of applied %" PRIu64
                    "; retry later",
                    info.commit, TOO_MANY_GAP, info.applied);
        return;
    }
    Cairnint__RaftRequest rr = CAIRNINT__RAFT_REQUEST__INIT;
    if (!kvconv_write_entry(req, &rr)) {
        reply_error(s, CAIRN_E_UNSUPPORTED, "%s is not a write", method_name(req));
        return;
    }
    propose(s, &rr);
}

/*
 * The write path's second half: admission, wait-table registration and the
 * proposal.  The request is sized once, before it has its ID: the ID adds at
 * most RR_ID_BYTES, so that bound serves both the quota check and the buffer,
 * and fastpack_pack says the exact length.
 */
#define RR_ID_BYTES 11 /* field 1's tag and a 64-bit varint */
static void propose(struct slot *s, Cairnint__RaftRequest *rr)
{
    struct rpc *r = s->r;
    rr->proposer = r->member_id;
    if (s->auth_revision) {
        rr->auth_user = s->auth_user;
        rr->auth_revision = s->auth_revision;
    }
    rr->id = 0;
    struct fastpack_plan plan;
    size_t bound = fastpack_size(&rr->base, &plan) + RR_ID_BYTES;
    if (r->hooks.admit) {
        char msg[512] = "";
        int code = r->hooks.admit(r->hooks.admit_arg, s->req, rr, bound, msg, sizeof msg);
        if (code > 0) {
            if (msg[0])
                reply_error(s, code, "%s", msg);
            else
                reply_error(s, code, NULL);
            return;
        }
    }
    if (rpc_call_wait((struct rpc_call *)s, &rr->id) < 0)
        return;
    void *buf = malloc(bound);
    if (!buf) {
        wait_fire(r->waits, rr->id, NULL, 0, ENOMEM);
        return;
    }
    size_t len = fastpack_pack(&rr->base, &plan, buf);
    int rc = node_propose(r->node, rr->id, buf, len);
    if (rc < 0)
        wait_fire(r->waits, rr->id, NULL, 0, -rc);
}

/* ---------------------------------------------------------------- reads */

static struct slot *slot_of(struct read_job *j)
{
    return (struct slot *)((char *)j - offsetof(struct slot, job));
}

static void read_failed(struct read_job *j, int code)
{
    struct slot *s = slot_of(j);
    if (code == CAIRN_E_TIMEOUT)
        reply_error(s, code, "linearizable read timed out after %u ms waiting for the leader to confirm it; "
                             "retry, or read with serializable",
                    s->r->cfg->request_timeout_ms);
    else
        reply_error(s, code, NULL);
}

static int store_error(struct slot *s, int rc, int64_t compact_rev)
{
    if (rc == -CAIRN_E_COMPACTED) {
        Cairn__Response resp = CAIRN__RESPONSE__INIT;
        struct kvconv_arena a;
        kvconv_arena_init(&a);
        set_header(s, &resp, 0, &a);
        kvconv_errorf(&resp, CAIRN_E_COMPACTED, &a,
                      "required revision has been compacted; read at or after revision %" PRId64, compact_rev);
        if (resp.error)
            resp.error->compact_revision = compact_rev;
        send_response(s, &resp);
        kvconv_arena_free(&a);
    } else {
        reply_error(s, -rc, NULL);
    }
    return rc;
}

static void run_range(struct read_job *j, struct mvcc_reader *rd, int err)
{
    struct slot *s = slot_of(j);
    struct rpc *r = s->r;
    if (!rd) {
        reply_unreadable(s, err);
        return;
    }
    struct mvcc_range_req q;
    struct mvcc_range_result *res = NULL;
    int64_t compact_rev = 0;
    kvconv_range_req(s->req->range, &q);
    int rc = mvcc_range(rd, &q, &res, &compact_rev);
    if (rc < 0) {
        store_error(s, rc, compact_rev);
        return;
    }
    __atomic_add_fetch(&r->ranges_served, 1, __ATOMIC_RELAXED);
    if (!s->req->range->range_end.len)
        __atomic_add_fetch(&r->point_ranges_served, 1, __ATOMIC_RELAXED);
    Cairn__Response resp = CAIRN__RESPONSE__INIT;
    Cairn__RangeResponse body = CAIRN__RANGE_RESPONSE__INIT;
    struct kvconv_arena a;
    kvconv_arena_init(&a);
    set_header(s, &resp, res->revision, &a);
    if (kvconv_range_resp(&res->resp, &body, &a) == 0) {
        resp.body_case = CAIRN__RESPONSE__BODY_RANGE;
        resp.range = &body;
        send_response(s, &resp);
    } else {
        reply_error(s, ENOMEM, NULL);
    }
    kvconv_arena_free(&a);
    mvcc_range_result_free(res);
}

static void run_history(struct read_job *j, struct mvcc_reader *rd, int err)
{
    struct slot *s = slot_of(j);
    if (!rd) {
        reply_unreadable(s, err);
        return;
    }
    struct mvcc_history_req q;
    struct mvcc_history_result *res = NULL;
    kvconv_history_req(s->req->history, &q);
    int rc = mvcc_history(rd, &q, &res);
    if (rc < 0) {
        store_error(s, rc, 0);
        return;
    }
    Cairn__Response resp = CAIRN__RESPONSE__INIT;
    Cairn__HistoryResponse body = CAIRN__HISTORY_RESPONSE__INIT;
    struct kvconv_arena a;
    kvconv_arena_init(&a);
    set_header(s, &resp, res->revision, &a);
    if (kvconv_history_resp(res, s->req->history->keys_only, &body, &a) == 0) {
        resp.body_case = CAIRN__RESPONSE__BODY_HISTORY;
        resp.history = &body;
        send_response(s, &resp);
    } else {
        reply_error(s, ENOMEM, NULL);
    }
    kvconv_arena_free(&a);
    mvcc_history_result_free(res);
}

/* Alarms Status lists, one line each (a cluster has at most two per member). */
#define STATUS_MAX_ALARMS 32

static void run_status(struct read_job *j, struct mvcc_reader *rd, int err)
{
    struct slot *s = slot_of(j);
    struct rpc *r = s->r;
    struct mvcc_status ms = {0};
    struct node_info info;
    node_get_info(r->node, &info);
    Cairn__Response resp = CAIRN__RESPONSE__INIT;
    Cairn__StatusResponse body = CAIRN__STATUS_RESPONSE__INIT;
    struct kvconv_arena a;
    kvconv_arena_init(&a);
    /* the store's state, no leader, and one line per active alarm (each malloc'd by alarm_describe) */
    char *errors[2 + STATUS_MAX_ALARMS], *alarm_lines[STATUS_MAX_ALARMS];
    int n_alarms = 0;
    if (!rd || mvcc_reader_status(rd, &ms) < 0) {
        errors[body.n_errors++] = kvconv_arena_strdup(&a, rd ? "the store's status cannot be read"
                                                             : cairn_strerror(err));
        body.errors = errors;
    }
    if (!info.lead) {
        errors[body.n_errors++] = "no leader";
        body.errors = errors;
    }
    if (rd && (n_alarms = alarm_describe(rd, alarm_lines, STATUS_MAX_ALARMS)) < 0) {
        errors[body.n_errors++] = "the alarms in the store cannot be read";
        body.errors = errors;
        n_alarms = 0;
    }
    for (int i = 0; i < n_alarms; i++) {
        errors[body.n_errors++] = alarm_lines[i];
        body.errors = errors;
    }
    set_header(s, &resp, ms.revision, &a);
    body.version = CAIRN_VERSION;
    body.db_size = ms.db_size;
    body.db_size_in_use = ms.db_size_in_use;
    body.leader = info.lead;
    body.raft_index = info.last_index;
    body.raft_term = info.term;
    body.raft_applied_index = info.applied;
    body.raft_commit_index = info.commit;
    body.is_learner = info.is_learner;
    body.member_name = r->cfg->name;
    body.compact_revision = ms.compact_revision;
    body.ranges_served = __atomic_load_n(&r->ranges_served, __ATOMIC_RELAXED);
    body.point_ranges_served = __atomic_load_n(&r->point_ranges_served, __ATOMIC_RELAXED);
    resp.body_case = CAIRN__RESPONSE__BODY_STATUS;
    resp.status = &body;
    send_response(s, &resp);
    kvconv_arena_free(&a);
    for (int i = 0; i < n_alarms; i++)
        free(alarm_lines[i]);
}

static void do_read(struct slot *s, void (*run)(struct read_job *, struct mvcc_reader *, int), int linearizable,
                    int cheap)
{
    struct rpc *r = s->r;
    s->job = (struct read_job){.run = run, .fail = read_failed, .linearizable = linearizable, .cheap = cheap,
                               .deadline_ns = mono_now_ns() + (int64_t)r->cfg->request_timeout_ms * 1000000LL};
    reads_submit(r->reads, &s->job);
}

/* ---------------------------------------------------------------- routes: the call API */

size_t rpc_routes_copy(struct rpc_route *out, size_t max, const struct rpc_route *routes, size_t n)
{
    if (n > max)
        n = max;
    if (n)
        memcpy(out, routes, n * sizeof(*out));
    return n;
}

/* struct rpc_call is a slot seen from outside. */
static struct slot *call_slot(const struct rpc_call *c)
{
    return (struct slot *)c;
}

const Cairn__Request *rpc_call_request(const struct rpc_call *c)
{
    return call_slot(c)->req;
}

const char *rpc_call_remote(const struct rpc_call *c)
{
    return call_slot(c)->remote;
}

uint32_t rpc_call_pipe(const struct rpc_call *c)
{
    return call_slot(c)->pipe;
}

void rpc_batch_begin(void)
{
    nng_defer_begin();
}

void rpc_batch_end(void)
{
    nng_defer_end();
}

void rpc_call_reply(struct rpc_call *c, Cairn__Response *resp, int64_t revision)
{
    struct slot *s = call_slot(c);
    struct kvconv_arena a;
    kvconv_arena_init(&a);
    set_header(s, resp, revision, &a);
    send_response(s, resp);
    kvconv_arena_free(&a);
}

void rpc_call_error(struct rpc_call *c, int code, const char *fmt, ...)
{
    struct slot *s = call_slot(c);
    if (!fmt) {
        reply_error(s, code, NULL);
        return;
    }
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    reply_error(s, code, "%s", msg);
}

void rpc_call_unreadable(struct rpc_call *c, int err)
{
    reply_unreadable(call_slot(c), err);
}

int rpc_call_wait(struct rpc_call *c, uint64_t *id)
{
    struct slot *s = call_slot(c);
    struct rpc *r = s->r;
    *id = node_next_request_id(r->node);
    int64_t deadline = mono_now_ns() + (int64_t)r->cfg->request_timeout_ms * 1000000LL;
    if (wait_add(r->waits, *id, deadline, write_done, s, WAIT_DEFER) < 0) {
        reply_error(s, ENOMEM, NULL);
        return -ENOMEM;
    }
    return 0;
}

void rpc_call_set_auth(struct rpc_call *c, const char *user, uint64_t revision)
{
    struct slot *s = call_slot(c);
    if (user && user[0])
        snprintf(s->auth_user, sizeof s->auth_user, "%s", user);
    else
        s->auth_user[0] = '\0'; /* every request when auth is off: no formatting */
    s->auth_revision = revision;
}

const char *rpc_call_auth(const struct rpc_call *c, uint64_t *revision)
{
    const struct slot *s = call_slot(c);
    *revision = s->auth_revision;
    return s->auth_revision ? s->auth_user : "";
}

void rpc_call_propose(struct rpc_call *c, Cairnint__RaftRequest *rr)
{
    propose(call_slot(c), rr);
}

static void run_route_read(struct read_job *j, struct mvcc_reader *rd, int err)
{
    struct slot *s = slot_of(j);
    s->read_fn((struct rpc_call *)s, rd, err, s->read_arg);
}

void rpc_call_read(struct rpc_call *c, int linearizable, rpc_read_fn fn, void *arg)
{
    struct slot *s = call_slot(c);
    s->read_fn = fn;
    s->read_arg = arg;
    do_read(s, run_route_read, linearizable, 0);
}

/* ---------------------------------------------------------------- dispatch */

static void remote_of(nng_msg *m, char *buf, size_t len)
{
    nng_sockaddr sa;
    nng_pipe p = nng_msg_get_pipe(m);
    snprintf(buf, len, "?");
    if (nng_pipe_id(p) < 0 || nng_pipe_get_addr(p, NNG_OPT_REMADDR, &sa) != 0)
        return;
    char ip[INET6_ADDRSTRLEN] = "";
    switch (sa.s_family) {
    case NNG_AF_INET:
        inet_ntop(AF_INET, &sa.s_in.sa_addr, ip, sizeof ip);
        snprintf(buf, len, "%s:%u", ip, ntohs(sa.s_in.sa_port));
        break;
    case NNG_AF_INET6:
        inet_ntop(AF_INET6, sa.s_in6.sa_addr, ip, sizeof ip);
        snprintf(buf, len, "[%s]:%u", ip, ntohs(sa.s_in6.sa_port));
        break;
    case NNG_AF_IPC:
        snprintf(buf, len, "ipc:%s", sa.s_ipc.sa_path);
        break;
    default:
        break;
    }
}

/*
 * Requests served on the poller.  Over tcp://, nng's poller thread reads a
 * request and runs slot_cb itself (the slots' aios are marked inline,
 * third_party/nng/tcp-inline-rep.patch): no task thread is woken between
 * the socket and the node thread's inbox, one wake-up less per write on
 * the leader's critical path.  The poller serves every connection of the
 * process, Raft's included, so only work that is short and never blocks
 * stays on it: a write or a linearizable read of at most INLINE_MAX_BYTES,
 * decoded, checked and handed to the node thread or to the read loop.  (Not
 * a linearizable read on a lone voter: it takes the commit index at once
 * and may run then and there, reads.h, so it is a read that touches the
 * store.)
 * Everything else (reads that touch the store, leases, watches, members,
 * maintenance, and bad input, which gets logged) goes to a task thread,
 * where every request ran before.  TLS and ipc requests always arrive on
 * a task thread.
 */
#define INLINE_MAX_BYTES 16384

static const struct rpc_route *route_of(const struct rpc *r, int body_case)
{
    const struct rpc_route *route = NULL;
    for (size_t i = 0; i < r->n_routes; i++)
        if (r->routes[i].body_case == body_case)
            route = &r->routes[i];
    return route;
}

/* Served here, not by a route (s->route): a write or a linearizable read. */
static bool serve_inline(const struct slot *s)
{
    const Cairn__Request *req = s->req;
    if (s->route)
        return false;
    switch (req->body_case) {
    case CAIRN__REQUEST__BODY_PUT:
    case CAIRN__REQUEST__BODY_DELETE_RANGE:
    case CAIRN__REQUEST__BODY_TXN:
        return true;
    case CAIRN__REQUEST__BODY_RANGE:
        return !req->range->serializable && !node_solo_read_index(s->r->node);
    default:
        return false;
    }
}

/* Hand the slot's request (m, or s->req when m is NULL) to a task thread: slot_cb runs again there. */
static void defer(struct slot *s, nng_msg *m)
{
    s->deferred = m;
    s->state = S_DEFER;
    if (!nng_aio_begin(s->aio)) { /* stopped: rpc_stop is under way */
        s->deferred = NULL;
        nng_msg_free(m);
        return;
    }
    nng_aio_finish(s->aio, 0);
}

static void serve(struct slot *s);

/* The request in m, decoded into the slot; here: on the poller (see INLINE_MAX_BYTES). */
static void decode(struct slot *s, nng_msg *m, bool here)
{
    struct rpc *r = s->r;
    size_t len = nng_msg_len(m);
    if (here && (len > INLINE_MAX_BYTES || len > r->cfg->max_request_bytes)) {
        defer(s, m); /* too long to decode here, or to be logged as too large */
        return;
    }
    if (len > r->cfg->max_request_bytes) {
        nng_msg_free(m);
        log_bad_input(s, "request larger than --max-request-bytes", len);
        reply_error(s, CAIRN_E_REQUEST_TOO_LARGE, "request is %zu bytes, more than --max-request-bytes %" PRIu64,
                    len, r->cfg->max_request_bytes);
        return;
    }
    char why[160];
    s->wire_bytes = len;
    s->req = kvconv_request_unpack(nng_msg_body(m), len, &s->req_arena, why, sizeof why);
    if (!s->req && here) {
        defer(s, m); /* logged there */
        return;
    }
    nng_msg_free(m);
    if (!s->req) {
        log_bad_input(s, "not a cairn.Request", len);
        reply_error(s, CAIRN_E_MALFORMED, "%s", why);
        return;
    }
    if (__atomic_load_n(&r->draining, __ATOMIC_RELAXED)) {
        reply_error(s, CAIRN_E_STOPPED, "member %s is stopping; send the request to another member", r->cfg->name);
        return;
    }
    s->route = route_of(r, s->req->body_case);
    if (here && !serve_inline(s)) {
        defer(s, NULL);
        return;
    }
    serve(s);
}

static void handle(struct slot *s, nng_msg *m)
{
    struct rpc *r = s->r;
    /* The address is looked up (a getpeername() and nng's pipe lookup) only
     * when this slot's request comes over another connection than its last. */
    uint32_t pipe = (uint32_t)nng_pipe_id(nng_msg_get_pipe(m));
    if (pipe != s->pipe || !s->remote[0])
        remote_of(m, s->remote, sizeof s->remote);
    s->pipe = pipe;
    __atomic_add_fetch(&r->busy, 1, __ATOMIC_RELAXED);
    s->state = S_WORK;
    decode(s, m, nng_aio_inline_now());
}

/* A decoded request (s->route set by decode): checked, authorized, served. */
static void serve(struct slot *s)
{
    struct rpc *r = s->r;
    char msg[512] = "";
    struct kvconv_limits lim = {.max_txn_ops = r->cfg->max_txn_ops, .max_request_bytes = r->cfg->max_request_bytes,
                                .wire_bytes = s->wire_bytes};
    int rc = kvconv_validate(s->req, &lim, msg, sizeof msg);
    if (rc < 0) {
        reply_error(s, -rc, "%s", msg[0] ? msg : cairn_strerror(rc));
        return;
    }
    Cairn__Request *req = s->req;
    if (req->body_case != CAIRN__REQUEST__BODY_STATUS && !(s->route && s->route->learner_ok)) {
        struct node_info info;
        node_get_info(r->node, &info);
        if (info.is_learner) {
            reply_error(s, CAIRN_E_LEARNER_NOT_SERVING, NULL);
            return;
        }
    }
    s->auth_revision = 0;
    if (r->hooks.authorize) {
        int code = r->hooks.authorize(r->hooks.authorize_arg, (struct rpc_call *)s, msg, sizeof msg);
        if (code == RPC_TAKEN)
            return;
        if (code > 0) {
            reply_error(s, code, "%s", msg[0] ? msg : cairn_strerror(code));
            return;
        }
    }
    dispatch(s);
}

void rpc_call_continue(struct rpc_call *c)
{
    dispatch(call_slot(c));
}

/* Serve a checked request: its route, or the KV requests served here. */
static void dispatch(struct slot *s)
{
    Cairn__Request *req = s->req;
    if (s->route) {
        s->route->fn(s->route->arg, (struct rpc_call *)s);
        return;
    }
    switch (req->body_case) {
    case CAIRN__REQUEST__BODY_RANGE:
        /* a point get that need not wait for a read index runs on this thread when it can (reads.h) */
        do_read(s, run_range, !req->range->serializable, !req->range->range_end.len);
        break;
    case CAIRN__REQUEST__BODY_HISTORY:
        do_read(s, run_history, !req->history->serializable, 0);
        break;
    case CAIRN__REQUEST__BODY_STATUS:
        do_read(s, run_status, 0, 0);
        break;
    case CAIRN__REQUEST__BODY_PUT:
    case CAIRN__REQUEST__BODY_DELETE_RANGE:
    case CAIRN__REQUEST__BODY_TXN:
    case CAIRN__REQUEST__BODY_COMPACT:
        do_write(s);
        break;
    case CAIRN__REQUEST__BODY__NOT_SET:
        reply_error(s, CAIRN_E_INVALID_ARGUMENT, "the request has no body: set one of its fields");
        break;
    default:
        reply_error(s, CAIRN_E_UNSUPPORTED, "%s is not served by this version of cairnd", method_name(req));
        break;
    }
}

static void recv_next(struct slot *s)
{
    s->state = S_RECV;
    nng_ctx_recv(s->ctx, s->aio);
}

static void slot_cb(void *arg)
{
    struct slot *s = arg;
    int rv = nng_aio_result(s->aio);
    if (s->state == S_SEND) {
        if (rv != 0) {
            nng_msg_free(nng_aio_get_msg(s->aio)); /* the client went away */
            nng_aio_set_msg(s->aio, NULL);
        }
        finish(s);
        if (rv == NNG_ECLOSED || rv == NNG_ECANCELED)
            return;
        recv_next(s);
        return;
    }
    if (s->state == S_DEFER) { /* on a task thread now (defer) */
        nng_msg *m = s->deferred;
        s->deferred = NULL;
        s->state = S_WORK;
        if (m)
            decode(s, m, false);
        else
            serve(s);
        return;
    }
    if (rv == NNG_ECLOSED || rv == NNG_ECANCELED)
        return;
    if (rv != 0) {
        recv_next(s);
        return;
    }
    s->start_ns = mono_now_ns();
    s->code = 0;
    nng_msg *m = nng_aio_get_msg(s->aio);
    nng_aio_set_msg(s->aio, NULL); /* handle owns it now (rpc_stop frees what an aio still holds) */
    handle(s, m);
}

/* ---------------------------------------------------------------- TLS and listeners */

static char *read_file(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&buf, &len);
    char chunk[4096];
    size_t k;
    while ((k = fread(chunk, 1, sizeof chunk, f)) > 0)
        fwrite(chunk, 1, k, mem);
    fclose(f);
    fclose(mem);
    return buf;
}

/* The server side of client TLS: our certificate, and the client CA when client certificates are required. */
static int make_tls(const struct config *cfg, nng_tls_config **out, char *err, size_t errlen)
{
    nng_tls_config *t = NULL;
    char *cert = NULL, *key = NULL;
    int rv, rc = -CAIRN_E_CONFIG;
    if (!cfg->cert_file || !cfg->cert_file[0]) {
        snprintf(err, errlen, "a tls+tcp:// client URL needs --cert-file (and --key-file)");
        return rc;
    }
    if ((rv = nng_tls_config_alloc(&t, NNG_TLS_MODE_SERVER)) != 0) {
        snprintf(err, errlen, "cannot make a TLS configuration: %s", nng_strerror(rv));
        return rc;
    }
    if (!(cert = read_file(cfg->cert_file, err, errlen)))
        goto out;
    if (!(key = read_file(cfg->key_file && cfg->key_file[0] ? cfg->key_file : cfg->cert_file, err, errlen)))
        goto out;
    if ((rv = nng_tls_config_own_cert(t, cert, key, NULL)) != 0) {
        snprintf(err, errlen, "--cert-file %s / --key-file %s: %s", cfg->cert_file,
                 cfg->key_file && cfg->key_file[0] ? cfg->key_file : cfg->cert_file, nng_strerror(rv));
        goto out;
    }
    if (cfg->client_cert_auth) {
        if (!cfg->trusted_ca_file || !cfg->trusted_ca_file[0]) {
            snprintf(err, errlen, "--client-cert-auth needs --trusted-ca-file");
            goto out;
        }
        if ((rv = nng_tls_config_ca_file(t, cfg->trusted_ca_file)) != 0) {
            snprintf(err, errlen, "--trusted-ca-file %s: %s", cfg->trusted_ca_file, nng_strerror(rv));
            goto out;
        }
        nng_tls_config_auth_mode(t, NNG_TLS_AUTH_MODE_REQUIRED);
    } else {
        nng_tls_config_auth_mode(t, NNG_TLS_AUTH_MODE_NONE);
    }
    rc = 0;
out:
    free(cert);
    free(key);
    if (rc == 0)
        *out = t;
    else
        nng_tls_config_free(t);
    return rc;
}

/* Listen on url into slot i (a TLS URL with r->tls).  Called with lis_mu held, or before any other thread runs. */
static int open_listener(struct rpc *r, size_t i, const char *url, char *err, size_t errlen)
{
    nng_listener l;
    int rv = nng_listener_create(&l, r->sock, url);
    if (rv == 0 && !strncmp(url, "tls+tcp://", 10))
        rv = nng_listener_set_ptr(l, NNG_OPT_TLS_CONFIG, r->tls);
    if (rv == 0 && !strncmp(url, "ipc://", 6))
        nng_listener_set_int(l, NNG_OPT_IPC_PERMISSIONS, 0600);
    if (rv == 0)
        rv = nng_listener_start(l, 0);
    if (rv != 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", url, nng_strerror(rv));
        return -CAIRN_E_CONFIG;
    }
    r->listeners[i] = l;
    if (!strncmp(url, "ipc://", 6)) /* the ones nng 1.5.2 was seen to wedge (lguard.h) */
        lguard_set(r->guard, i, url, l, NULL);
    return 0;
}

static int start_listener(struct rpc *r, const char *url, char *err, size_t errlen)
{
    char *copy = strdup(url);
    if (!copy)
        return -ENOMEM;
    int rc = open_listener(r, r->n_listeners, url, err, errlen);
    if (rc < 0) {
        free(copy);
        return rc;
    }
    r->listener_urls[r->n_listeners++] = copy;
    return 0;
}

/* Close listener i and listen again on its URL (a reload's new TLS files, or a wedged ipc listener). */
static int restart_listener(void *arg, size_t i, char *err, size_t errlen)
{
    struct rpc *r = arg;
    pthread_mutex_lock(&r->lis_mu);
    nng_listener_close(r->listeners[i]);
    int rc = open_listener(r, i, r->listener_urls[i], err, errlen);
    pthread_mutex_unlock(&r->lis_mu);
    return rc;
}

/* The client TLS files' contents, concatenated, so a reload can tell whether they changed. */
static char *tls_files_read(const struct config *cfg, size_t *len)
{
    const char *paths[3] = {cfg->cert_file, cfg->key_file, cfg->client_cert_auth ? cfg->trusted_ca_file : NULL};
    char *all = NULL, err[256];
    size_t n = 0;
    for (size_t i = 0; i < 3; i++) {
        char *one = paths[i] && paths[i][0] ? read_file(paths[i], err, sizeof err) : NULL;
        size_t k = one ? strlen(one) : 0;
        char *grown = realloc(all, n + k + 1);
        if (!grown) {
            free(one);
            free(all);
            return NULL;
        }
        all = grown;
        memcpy(all + n, one ? one : "", k);
        all[n + k] = '\0'; /* a separator, so moving bytes between files counts as a change */
        n += k + 1;
        free(one);
    }
    *len = n;
    return all;
}

int rpc_start(const struct config *cfg, struct node *n, struct reads *rs, struct wait_table *w,
              const struct rpc_route *routes, size_t n_routes, const struct rpc_hooks *hooks, struct rpc **out,
              char *err, size_t errlen)
{
    int rv, rc = 0;
    struct rpc *r = calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    if (n_routes > sizeof r->routes / sizeof r->routes[0]) {
        free(r);
        return -EINVAL;
    }
    if (n_routes)
        memcpy(r->routes, routes, n_routes * sizeof(*routes));
    if (hooks)
        r->hooks = *hooks;
    r->n_routes = n_routes;
    r->cfg = cfg;
    r->node = n;
    r->reads = rs;
    r->waits = w;
    if ((rv = nng_rep0_open(&r->sock)) != 0) {
        snprintf(err, errlen, "cannot open the client socket: %s", nng_strerror(rv));
        free(r);
        return -CAIRN_E_CONFIG;
    }
    r->sock_open = 1;
    pthread_mutex_init(&r->lis_mu, NULL);
    /* every 2 s; a pipe that takes 5 s to reach the socket means the listener is wedged */
    if ((rc = lguard_start(r->sock, nng_req0_open, "client", 2000, 5000, restart_listener, r, &r->guard)) < 0) {
        snprintf(err, errlen, "cannot start the listener guard: %s", strerror(-rc));
        goto fail;
    }
    struct node_info info;
    node_get_info(n, &info);
    r->member_id = info.member_id;
    /* twice the limit, so a request a little too big gets a clear error instead of a dropped connection */
    nng_socket_set_size(r->sock, NNG_OPT_RECVMAXSZ, (size_t)cfg->max_request_bytes * 2 + 4096);
    for (size_t i = 0; i < cfg->listen_client_urls.n; i++)
        if (!strcmp(cfg->listen_client_urls.v[i].scheme, "tls+tcp") && !r->tls &&
            (rc = make_tls(cfg, &r->tls, err, errlen)) < 0)
            goto fail;
    if (r->tls)
        r->tls_files = tls_files_read(cfg, &r->tls_files_len);
    r->n_slots = RPC_CONTEXTS;
    r->slots = calloc(r->n_slots, sizeof(*r->slots));
    if (!r->slots) {
        rc = -ENOMEM;
        goto fail;
    }
    for (size_t i = 0; i < r->n_slots; i++) {
        struct slot *s = &r->slots[i];
        s->r = r;
        kvconv_arena_init(&s->req_arena);
        if ((rv = nng_ctx_open(&s->ctx, r->sock)) != 0 || (rv = nng_aio_alloc(&s->aio, slot_cb, s)) != 0) {
            snprintf(err, errlen, "cannot set up the client contexts: %s", nng_strerror(rv));
            rc = -ENOMEM;
            goto fail;
        }
        nng_aio_set_inline(s->aio, true); /* see INLINE_MAX_BYTES */
    }
    for (size_t i = 0; i < cfg->listen_client_urls.n; i++) {
        const struct config_url *u = &cfg->listen_client_urls.v[i];
        if ((rc = start_listener(r, u->url, err, errlen)) < 0)
            goto fail;
    }
    if (cfg->listen_admin_url.url && (rc = start_listener(r, cfg->listen_admin_url.url, err, errlen)) < 0)
        goto fail;
    for (size_t i = 0; i < r->n_slots; i++)
        recv_next(&r->slots[i]);
    *out = r;
    return 0;
fail:
    rpc_stop(r);
    return rc;
}

void rpc_drain(struct rpc *r)
{
    if (!r)
        return;
    node_get_info(r->node, &r->drain_info);
    __atomic_store_n(&r->draining, 1, __ATOMIC_RELEASE);
}

size_t rpc_busy(struct rpc *r)
{
    return r ? __atomic_load_n(&r->busy, __ATOMIC_RELAXED) : 0;
}

int rpc_reload_tls(struct rpc *r, char *err, size_t errlen)
{
    if (!r->tls)
        return 0;
    /* Most SIGHUPs change only the log level: restart nothing unless the files changed,
     * since a restart drops the connections in progress on that listener. */
    size_t len = 0;
    char *files = tls_files_read(r->cfg, &len);
    if (files && r->tls_files && len == r->tls_files_len && !memcmp(files, r->tls_files, len)) {
        free(files);
        return 0;
    }
    nng_tls_config *t = NULL;
    int rc = make_tls(r->cfg, &t, err, errlen);
    if (rc < 0) {
        free(files);
        return rc;
    }
    /* a TLS configuration cannot change once used: restart the TLS listeners with the new one */
    pthread_mutex_lock(&r->lis_mu);
    nng_tls_config *old = r->tls;
    r->tls = t;
    free(r->tls_files);
    r->tls_files = files;
    r->tls_files_len = len;
    pthread_mutex_unlock(&r->lis_mu);
    for (size_t i = 0; i < r->n_listeners; i++) {
        char lerr[256];
        if (strncmp(r->listener_urls[i], "tls+tcp://", 10) || restart_listener(r, i, lerr, sizeof lerr) == 0)
            continue;
        snprintf(err, errlen, "%s", lerr);
        rc = -CAIRN_E_CONFIG;
    }
    nng_tls_config_free(old);
    return rc;
}

void rpc_stop(struct rpc *r)
{
    if (!r)
        return;
    lguard_stop(r->guard); /* no restart from here on */
    for (size_t i = 0; i < r->n_listeners; i++) {
        nng_listener_close(r->listeners[i]);
        free(r->listener_urls[i]);
    }
    /* PLATFORM-NOTES: stop every aio and context before closing the socket */
    for (size_t i = 0; r->slots && i < r->n_slots; i++)
        if (r->slots[i].aio)
            nng_aio_stop(r->slots[i].aio);
    for (size_t i = 0; r->slots && i < r->n_slots; i++) {
        struct slot *s = &r->slots[i];
        kvconv_arena_free(&s->req_arena);
        /* A reply sent while the stop above ran (a request refused during the
         * drain, answered from the callback nng_aio_stop waited for) found the
         * aio stopped: nng 1.5.2 then refuses the send without completing it,
         * and the message stays on the aio.  LeakSanitizer saw it in about
         * one stop in eight under load (test_member's SIGTERM test). */
        if (s->aio) {
            nng_msg *left = nng_aio_get_msg(s->aio);
            if (left)
                nng_msg_free(left);
            nng_aio_free(s->aio);
        }
        if (nng_ctx_id(s->ctx) > 0)
            nng_ctx_close(s->ctx);
    }
    /* An abandoned close may still run the guard's pipe callback: the guard is then leaked. */
    if (!r->sock_open || sock_close(r->sock, "client"))
        lguard_free(r->guard);
    if (r->sock_open)
        pthread_mutex_destroy(&r->lis_mu);
    if (r->tls)
        nng_tls_config_free(r->tls);
    free(r->tls_files);
    free(r->slots);
    free(r);
}
