/*
 * Health and metrics over HTTP (see metrics.h).  nng's HTTP server calls
 * http_cb on one of nng's threads; it only queues the request (bounded) for
 * the metrics thread, which runs the checks and renders the answer, then
 * completes nng's aio.  So a check that waits (a read while a snapshot is
 * installed, a probe of the node loop) holds no nng thread.  Request
 * counters are plain atomics bumped by rpc.c's request_done.
 */
#include "daemon/metrics.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nng/nng.h>
#include <nng/supplemental/http/http.h>

#include "base/deadline.h"
#include "base/errors.h"
#include "base/histogram.h"
#include "base/log.h"
#include "daemon/lease.h"
#include "daemon/peer.h"
#include "daemon/reads.h"
#include "daemon/sockclose.h"
#include "daemon/watch.h"
#include "proto/cairn.pb-c.h"
#include "raft/raft.h"
#include "storage/mvcc.h"

#define MAX_QUEUED 64          /* HTTP requests waiting for the metrics thread; beyond, 503 at once */
#define METHODS 128            /* cairn.Request body cases counted (the oneof's field numbers are below) */
#define CODES 130              /* 0 = OK, 1 + offset for CAIRN_E_ codes below +128, the last for anything else */
#define MAX_PEERS 64
#define PROBE_WAIT_NS 1000000000LL    /* a fresh probe of the node loop is waited for this long... */
#define PROBE_STALL_NS 10000000000LL  /* ...and /livez fails once one has waited this long */
#define MAX_CHECKS 8

/* ---------------------------------------------------------------- types */

/*
 * A probe of the node loop: node_call runs probe_fn between two Readies.
 * It outlives metrics_stop when the node still holds it (orphaned): the
 * last of the two frees it.
 */
struct probe {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool outstanding, orphaned, stopped;
    int64_t sent_ns, done_ns;
};

struct job {
    struct job *next;
    nng_aio *aio;
    char *uri;
};

struct metrics {
    const struct config *cfg;
    struct node *node;
    struct metrics_sources src;
    atomic_int refs;              /* the owner's, plus one per nng handler */
    pthread_mutex_t mu;           /* the queue, stopping */
    pthread_cond_t cv;
    struct job *head, *tail;
    size_t queued;
    bool stopping;
    pthread_t thread;
    bool thread_started;
    nng_http_server *servers[CONFIG_MAX_URLS];
    size_t n_servers;
    struct node_reader_slot slot; /* the metrics thread's */
    bool slot_registered;
    struct probe *probe;
    /* rpc.c's requests, by body case and code */
    _Atomic uint64_t requests[METHODS][CODES];
    struct histogram latency[METHODS];
    _Atomic uint64_t health_ok, health_failed;
    time_t started;
};

static void unref(struct metrics *m)
{
    if (atomic_fetch_sub(&m->refs, 1) != 1)
        return;
    pthread_cond_destroy(&m->cv);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

static void handler_data_free(void *arg)
{
    unref(arg);
}

/* ---------------------------------------------------------------- text buffer */

struct sbuf {
    char *p;
    size_t len, cap;
    bool oom;
};

static void sb_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
    if (b->oom)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = true;
            return;
        }
        if (b->p && b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + (size_t)n + 1)
            cap *= 2;
        char *np = realloc(b->p, cap);
        if (!np) {
            b->oom = true;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
}

/* ---------------------------------------------------------------- replies */

/* Complete the handler's aio with a response (nng frees it once written). */
static void reply(nng_aio *aio, uint16_t status, const char *ctype, const char *body, size_t len)
{
    nng_http_res *res;
    if (nng_http_res_alloc(&res) != 0) {
        nng_aio_finish(aio, NNG_ENOMEM); /* nng closes the connection */
        return;
    }
    if (nng_http_res_set_status(res, status) != 0 || nng_http_res_set_header(res, "Content-Type", ctype) != 0 ||
        nng_http_res_set_header(res, "X-Content-Type-Options", "nosniff") != 0 ||
        nng_http_res_copy_data(res, body, len) != 0) {
        nng_http_res_free(res);
        nng_aio_finish(aio, NNG_ENOMEM);
        return;
    }
    nng_aio_set_output(aio, 0, res);
    nng_aio_finish(aio, 0);
}

static void reply_text(nng_aio *aio, uint16_t status, const char *text)
{
    reply(aio, status, "text/plain; charset=utf-8", text, strlen(text));
}

/* ---------------------------------------------------------------- the query string */

struct query {
    bool verbose, serializable;
    const char *exclude[MAX_CHECKS * 2];
    size_t n_exclude;
};

/* Split uri (modified in place) into its path and the parameters we know. */
static char *parse_uri(char *uri, struct query *q)
{
    memset(q, 0, sizeof(*q));
    char *qs = strchr(uri, '?');
    if (!qs)
        return uri;
    *qs++ = '\0';
    for (char *save = NULL, *tok = strtok_r(qs, "&", &save); tok; tok = strtok_r(NULL, "&", &save)) {
        char *val = strchr(tok, '=');
        if (val)
            *val++ = '\0';
        if (!strcmp(tok, "verbose"))
            q->verbose = true;
        else if (!strcmp(tok, "serializable"))
            q->serializable = val && !strcmp(val, "true");
        else if (!strcmp(tok, "exclude") && val && *val && q->n_exclude < sizeof(q->exclude) / sizeof(q->exclude[0]))
            q->exclude[q->n_exclude++] = val;
    }
    return uri;
}

static bool excluded(const struct query *q, const char *name)
{
    for (size_t i = 0; i < q->n_exclude; i++)
        if (!strcmp(q->exclude[i], name))
            return true;
    return false;
}

/* ---------------------------------------------------------------- checks */

static int alarm_on(struct metrics *m, int type)
{
    return m->src.alarm_active ? m->src.alarm_active(m->src.alarm_arg, type) : 0;
}

/* A serializable read of the store on the metrics thread's own slot: its status (revision, sizes, keys). */
static int read_status(struct metrics *m, struct mvcc_status *st)
{
    int err = 0;
    struct mvcc_reader *r = node_read_begin(m->node, &m->slot, &err);
    if (!r)
        return err;
    int rc = mvcc_reader_status(r, st);
    node_read_end(m->node);
    return rc;
}

static void probe_fn(struct node *n, void *arg, int stopping)
{
    (void)n;
    struct probe *p = arg;
    pthread_mutex_lock(&p->mu);
    p->outstanding = false;
    if (stopping)
        p->stopped = true;
    else
        p->done_ns = mono_now_ns();
    bool orphan = p->orphaned;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    if (orphan) {
        pthread_cond_destroy(&p->cv);
        pthread_mutex_destroy(&p->mu);
        free(p);
    }
}

/*
 * The node loop is alive if it runs a probe: one is given to it (unless one
 * is already waiting) and waited for up to PROBE_WAIT_NS.  Fails only when a
 * probe has waited PROBE_STALL_NS, so a loop busy with one long fsync or
 * apply batch is not called dead at once, and a stuck one is within 10 s.
 */
static int check_node_loop(struct metrics *m, char *why, size_t len)
{
    struct probe *p = m->probe;
    int64_t now = mono_now_ns();
    pthread_mutex_lock(&p->mu);
    bool send = !p->outstanding && !p->stopped;
    if (send) {
        p->outstanding = true;
        p->sent_ns = now;
    }
    pthread_mutex_unlock(&p->mu);
    if (send) {
        int rc = node_call(m->node, probe_fn, p);
        if (rc < 0) {
            pthread_mutex_lock(&p->mu);
            p->outstanding = false;
            pthread_mutex_unlock(&p->mu);
            snprintf(why, len, "cannot reach the node loop: %s", cairn_strerror(rc));
            return -1;
        }
    }
    pthread_mutex_lock(&p->mu);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += PROBE_WAIT_NS / 1000000000LL;
    while (p->outstanding && mono_now_ns() - p->sent_ns < PROBE_STALL_NS)
        if (pthread_cond_timedwait(&p->cv, &p->mu, &until) == ETIMEDOUT)
            break;
    int rc = 0;
    if (p->stopped) {
        snprintf(why, len, "the node loop has stopped");
        rc = -1;
    } else if (p->outstanding && mono_now_ns() - p->sent_ns >= PROBE_STALL_NS) {
        snprintf(why, len, "the node loop has not run a probe given to it %" PRId64 " ms ago",
                 (mono_now_ns() - p->sent_ns) / 1000000);
        rc = -1;
    }
    pthread_mutex_unlock(&p->mu);
    return rc;
}

enum check_id { CK_LEADER, CK_CORRUPT, CK_NOSPACE, CK_READ, CK_LOOP };

static const char *check_name(enum check_id c)
{
    switch (c) {
    case CK_LEADER: return "leader";
    case CK_CORRUPT: return "data_corruption";
    case CK_NOSPACE: return "no_space";
    case CK_READ: return "serializable_read";
    case CK_LOOP: return "node_loop";
    }
    return "?";
}

/* Run one check: 0 passed, -1 failed with why. */
static int run_check(struct metrics *m, enum check_id c, char *why, size_t len)
{
    switch (c) {
    case CK_LEADER: {
        struct node_info in;
        node_get_info(m->node, &in);
        if (in.lead)
            return 0;
        snprintf(why, len, "no leader known (term %" PRIu64 ")", in.term);
        return -1;
    }
    case CK_CORRUPT:
        if (!alarm_on(m, CAIRN__ALARM_TYPE__CORRUPT))
            return 0;
        snprintf(why, len, "alarm activated: CORRUPT");
        return -1;
    case CK_NOSPACE:
        if (!alarm_on(m, CAIRN__ALARM_TYPE__NOSPACE))
            return 0;
        snprintf(why, len, "alarm activated: NOSPACE");
        return -1;
    case CK_READ: {
        struct mvcc_status st;
        int rc = read_status(m, &st);
        if (rc == 0)
            return 0;
        snprintf(why, len, "the store cannot be read: %s", cairn_strerror(rc));
        return -1;
    }
    case CK_LOOP:
        return check_node_loop(m, why, len);
    }
    return 0;
}

/*
 * /livez and /readyz as etcd 3.6 has them: 200 "ok" when every check passes
 * ("[+]name ok" lines first with ?verbose), else 503 with one line per check
 * ("[-]name failed: why").  /readyz/NAME runs one check; ?exclude=NAME skips one.
 */
static void serve_checks(struct metrics *m, nng_aio *aio, const char *kind, const char *sub, const struct query *q,
                         const enum check_id *checks, size_t n)
{
    struct sbuf b = {0};
    bool failed = false, any = false;
    for (size_t i = 0; i < n; i++) {
        const char *name = check_name(checks[i]);
        if (sub ? strcmp(sub, name) != 0 : excluded(q, name))
            continue;
        any = true;
        char why[256];
        if (run_check(m, checks[i], why, sizeof why) == 0) {
            sb_printf(&b, "[+]%s ok\n", name);
        } else {
            sb_printf(&b, "[-]%s failed: %s\n", name, why);
            failed = true;
        }
    }
    if (sub && !any) {
        reply_text(aio, NNG_HTTP_STATUS_NOT_FOUND, "no such check\n");
        return;
    }
    atomic_fetch_add(failed ? &m->health_failed : &m->health_ok, 1);
    if (b.oom) {
        reply_text(aio, NNG_HTTP_STATUS_INTERNAL_SERVER_ERROR, "out of memory\n");
    } else if (failed) {
        sb_printf(&b, "%s check failed\n", kind);
        reply(aio, NNG_HTTP_STATUS_SERVICE_UNAVAILABLE, "text/plain; charset=utf-8", b.p, b.len);
    } else if (q->verbose) {
        sb_printf(&b, "%s check passed\n", kind);
        reply(aio, NNG_HTTP_STATUS_OK, "text/plain; charset=utf-8", b.p, b.len);
    } else {
        reply_text(aio, NNG_HTTP_STATUS_OK, "ok\n");
    }
    free(b.p);
}

/*
 * /health as etcd 3.4-3.5: {"health":"true"} (200) or {"health":"false",
 * "reason":...} (503).  Fails on an active alarm (?exclude=NOSPACE or
 * CORRUPT ignores one), on no leader (unless ?serializable=true), and when
 * the store cannot be read.  etcd's last step is a linearizable Range; here
 * the leader check stands for the quorum part and the read is local.
 */
static void serve_health(struct metrics *m, nng_aio *aio, const struct query *q)
{
    char why[256], body[400];
    const char *reason = NULL;
    if (!excluded(q, "CORRUPT") && alarm_on(m, CAIRN__ALARM_TYPE__CORRUPT))
        reason = "ALARM CORRUPT";
    else if (!excluded(q, "NOSPACE") && alarm_on(m, CAIRN__ALARM_TYPE__NOSPACE))
        reason = "ALARM NOSPACE";
    else if (!q->serializable && run_check(m, CK_LEADER, why, sizeof why) < 0)
        reason = "RAFT NO LEADER";
    else if (run_check(m, CK_READ, why, sizeof why) < 0) {
        snprintf(body, sizeof body, "RANGE ERROR: %s", why);
        reason = body;
    }
    char out[512];
    if (!reason) {
        snprintf(out, sizeof out, "{\"health\":\"true\"}");
        atomic_fetch_add(&m->health_ok, 1);
        reply(aio, NNG_HTTP_STATUS_OK, "application/json", out, strlen(out));
    } else {
        snprintf(out, sizeof out, "{\"health\":\"false\",\"reason\":\"%s\"}", reason); /* no quotes in reasons */
        atomic_fetch_add(&m->health_failed, 1);
        reply(aio, NNG_HTTP_STATUS_SERVICE_UNAVAILABLE, "application/json", out, strlen(out));
    }
}

/* ---------------------------------------------------------------- /metrics */

static void family(struct sbuf *b, const char *name, const char *type, const char *help)
{
    sb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void sample_u(struct sbuf *b, const char *name, uint64_t v)
{
    sb_printf(b, "%s %" PRIu64 "\n", name, v);
}

static void sample_i(struct sbuf *b, const char *name, int64_t v)
{
    sb_printf(b, "%s %" PRId64 "\n", name, v);
}

static void gauge_u(struct sbuf *b, const char *name, const char *help, uint64_t v)
{
    family(b, name, "gauge", help);
    sample_u(b, name, v);
}

static void gauge_i(struct sbuf *b, const char *name, const char *help, int64_t v)
{
    family(b, name, "gauge", help);
    sample_i(b, name, v);
}

static void counter_u(struct sbuf *b, const char *name, const char *help, uint64_t v)
{
    family(b, name, "counter", help);
    sample_u(b, name, v);
}

/*
 * One histogram's samples (its family line written by the caller): labels
 * is "" or `a="b",` (with the trailing comma).  _count is the sum of the
 * buckets read, so it always equals the +Inf bucket even while observations
 * land during the read.
 */
static void histogram_samples(struct sbuf *b, const char *name, const char *labels, const struct histogram *h)
{
    uint64_t cum = 0;
    for (unsigned i = 0; i < HISTOGRAM_BUCKETS; i++) {
        cum += h->counts[i];
        sb_printf(b, "%s_bucket{%sle=\"%.9g\"} %" PRIu64 "\n", name, labels, histogram_bound_ns(i) / 1e9, cum);
    }
    cum += h->counts[HISTOGRAM_BUCKETS];
    sb_printf(b, "%s_bucket{%sle=\"+Inf\"} %" PRIu64 "\n", name, labels, cum);
    size_t l = strlen(labels);
    /* _sum and _count take the labels without the trailing comma */
    sb_printf(b, "%s_sum%s%.*s%s %.9f\n", name, l ? "{" : "", (int)(l ? l - 1 : 0), labels, l ? "}" : "",
              h->sum_ns / 1e9);
    sb_printf(b, "%s_count%s%.*s%s %" PRIu64 "\n", name, l ? "{" : "", (int)(l ? l - 1 : 0), labels, l ? "}" : "",
              cum);
}

static const char *method_name(int body_case)
{
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field(&cairn__request__descriptor, (unsigned)body_case);
    return f ? f->name : "unknown";
}

static const char *code_name(unsigned idx)
{
    if (idx == 0)
        return "OK";
    if (idx == CODES - 1)
        return "OTHER";
    return cairn_errname(CAIRN_ERR_BASE + (int)idx - 1);
}

static void render_requests(struct metrics *m, struct sbuf *b)
{
    family(b, "cairn_requests_total", "counter", "Client requests answered, by request type and error code (OK: success).");
    for (int i = 0; i < METHODS; i++)
        for (unsigned c = 0; c < CODES; c++) {
            uint64_t v = atomic_load_explicit(&m->requests[i][c], memory_order_relaxed);
            if (v)
                sb_printf(b, "cairn_requests_total{method=\"%s\",code=\"%s\"} %" PRIu64 "\n", method_name(i),
                          code_name(c), v);
        }
    family(b, "cairn_request_duration_seconds", "histogram",
           "Time from receiving a client request to sending its answer, by request type.");
    for (int i = 0; i < METHODS; i++) {
        struct histogram h;
        histogram_read(&m->latency[i], &h);
        if (!h.count)
            continue;
        char labels[96];
        snprintf(labels, sizeof labels, "method=\"%s\",", method_name(i));
        histogram_samples(b, "cairn_request_duration_seconds", labels, &h);
    }
}

static void render_peers(struct metrics *m, struct sbuf *b)
{
    struct peer_stats *ps = calloc(MAX_PEERS, sizeof(*ps));
    if (!ps) {
        b->oom = true;
        return;
    }
    size_t n = node_peer_stats(m->node, ps, MAX_PEERS);
    if (n > MAX_PEERS)
        n = MAX_PEERS;
    family(b, "cairn_peer_connected", "gauge", "1 if the Raft message connection to the peer is up.");
    for (size_t i = 0; i < n; i++)
        sb_printf(b, "cairn_peer_connected{To=\"%016" PRIx64 "\"} %d\n", ps[i].id, ps[i].connected ? 1 : 0);
    family(b, "etcd_network_peer_sent_bytes_total", "counter", "Bytes sent to the peer (envelopes handed to the connection).");
    for (size_t i = 0; i < n; i++)
        sb_printf(b, "etcd_network_peer_sent_bytes_total{To=\"%016" PRIx64 "\"} %" PRIu64 "\n", ps[i].id,
                  ps[i].bytes_sent);
    family(b, "etcd_network_peer_received_bytes_total", "counter", "Bytes received from the peer.");
    for (size_t i = 0; i < n; i++)
        sb_printf(b, "etcd_network_peer_received_bytes_total{From=\"%016" PRIx64 "\"} %" PRIu64 "\n", ps[i].id,
                  ps[i].bytes_received);
    family(b, "etcd_network_peer_sent_failures_total", "counter",
           "Messages to the peer dropped (queue full, peer unreachable, too large).");
    for (size_t i = 0; i < n; i++)
        sb_printf(b, "etcd_network_peer_sent_failures_total{To=\"%016" PRIx64 "\"} %" PRIu64 "\n", ps[i].id,
                  ps[i].dropped);
    family(b, "etcd_network_peer_round_trip_time_seconds", "histogram",
           "Heartbeat to heartbeat response, queueing included (observed on the leader only).");
    for (size_t i = 0; i < n; i++) {
        char labels[64];
        snprintf(labels, sizeof labels, "To=\"%016" PRIx64 "\",", ps[i].id);
        histogram_samples(b, "etcd_network_peer_round_trip_time_seconds", labels, &ps[i].rtt);
    }
    free(ps);
}

static void render_metrics(struct metrics *m, struct sbuf *b)
{
    struct node_info in;
    node_get_info(m->node, &in);
    struct node_stats st;
    node_get_stats(m->node, &st);

    family(b, "etcd_server_id", "gauge", "Always 1; the label is this member's ID.");
    sb_printf(b, "etcd_server_id{server_id=\"%016" PRIx64 "\"} 1\n", in.member_id);
    family(b, "cairn_server_version", "gauge", "Always 1; the label is the version of cairnd.");
    sb_printf(b, "cairn_server_version{version=\"%s\"} 1\n", CAIRN_VERSION);
    gauge_u(b, "etcd_server_has_leader", "1 if a leader is known to this member, else 0.", in.lead ? 1 : 0);
    gauge_u(b, "etcd_server_is_leader", "1 if this member is the leader, else 0.", in.role == RAFT_LEADER);
    gauge_u(b, "etcd_server_is_learner", "1 if this member is a learner, else 0.", in.is_learner ? 1 : 0);
    counter_u(b, "etcd_server_leader_changes_seen_total", "Leader changes this member has seen.", st.leader_changes);
    /* etcd declares the next two gauges although they only grow; kept so etcd's dashboards work */
    gauge_u(b, "etcd_server_proposals_committed_total", "Entries this member saw committed since it started.",
            st.proposals_committed);
    gauge_u(b, "etcd_server_proposals_applied_total", "Entries this member applied to the store since it started.",
            st.proposals_applied);
    gauge_u(b, "etcd_server_proposals_pending", "Proposals queued on this member and not yet given to Raft.",
            in.proposals_pending);
    counter_u(b, "etcd_server_proposals_failed_total", "Proposals refused or dropped before they reached the log.",
              st.proposals_failed);
    counter_u(b, "cairn_proposals_waited_for_leader_total",
              "Writes that found no leader (an election, a leadership transfer) and waited for one.",
              st.proposals_parked);
    counter_u(b, "etcd_server_slow_apply_total", "Apply batches that took over 100 ms.", st.slow_applies);
    counter_u(b, "cairn_wal_slow_fsyncs_total", "WAL fdatasyncs that took over 1 s.", st.slow_fsyncs);
    gauge_u(b, "cairn_raft_term", "The Raft term this member is in.", in.term);
    gauge_u(b, "cairn_raft_commit_index", "The highest log index this member knows committed.", in.commit);
    gauge_u(b, "cairn_raft_applied_index", "The highest log index applied to this member's store.", in.applied);
    counter_u(b, "cairn_snapshots_taken_total", "Raft snapshots this member took.", st.snapshots_taken);
    counter_u(b, "cairn_snapshots_installed_total", "Snapshots from the leader this member installed.",
              st.snapshots_installed);
    counter_u(b, "etcd_network_snapshot_send_success", "Snapshots this member streamed to a follower successfully.",
              st.snapshot_sends_ok);
    counter_u(b, "etcd_network_snapshot_send_failures", "Snapshot streams to a follower that failed.",
              st.snapshot_sends_failed);
    counter_u(b, "etcd_server_health_success", "Health, liveness and readiness checks that passed.",
              atomic_load(&m->health_ok));
    counter_u(b, "etcd_server_health_failures", "Health, liveness and readiness checks that failed.",
              atomic_load(&m->health_failed));

    family(b, "etcd_disk_wal_fsync_duration_seconds", "histogram", "WAL fdatasync latency, one per synced save.");
    histogram_samples(b, "etcd_disk_wal_fsync_duration_seconds", "", &st.wal_fsync);
    family(b, "etcd_disk_backend_commit_duration_seconds", "histogram",
           "Store commit latency, one per apply batch (one SQLite transaction).");
    histogram_samples(b, "etcd_disk_backend_commit_duration_seconds", "", &st.backend_commit);
    family(b, "cairn_store_checkpoint_duration_seconds", "histogram",
           "Checkpoints of the store's SQLite WAL, and its syncs before a snapshot, by the checkpointer thread.");
    histogram_samples(b, "cairn_store_checkpoint_duration_seconds", "", &st.store_checkpoint);

    gauge_i(b, "etcd_mvcc_db_total_size_in_bytes", "Size of the store's database file.", in.db_size);
    gauge_i(b, "etcd_mvcc_db_total_size_in_use_in_bytes", "Bytes of the database file holding data (the rest is free pages).",
            in.db_size_in_use);
    gauge_u(b, "etcd_server_quota_backend_bytes", "The backend quota (--quota-backend-bytes).",
            m->cfg->quota_backend_bytes);
    gauge_i(b, "etcd_debugging_mvcc_current_revision", "The store's current revision.", in.revision);
    gauge_i(b, "etcd_debugging_mvcc_compact_revision", "The store's compact revision.", in.compact_revision);
    struct mvcc_status ms;
    if (read_status(m, &ms) == 0) {
        gauge_i(b, "etcd_debugging_mvcc_keys_total", "Live keys in the store (newest revision not a delete).", ms.keys);
        counter_u(b, "cairn_value_cache_hits_total", "Value reads served from the value cache (--value-cache-bytes).",
                  ms.value_cache_hits);
        counter_u(b, "cairn_value_cache_misses_total", "Value reads that went to the store's SQL instead.",
                  ms.value_cache_misses);
        gauge_i(b, "cairn_value_cache_bytes", "Memory the value cache holds, its table included.",
                ms.value_cache_bytes);
    }

    if (m->src.reads) {
        struct reads_stats rst;
        reads_get_stats(m->src.reads, &rst);
        counter_u(b, "cairn_read_index_rounds_total",
                  "ReadIndex requests this member sent, each for the linearizable reads that came while the one before was out.",
                  rst.rounds);
        counter_u(b, "cairn_reads_solo_total",
                  "Linearizable reads that took the commit index of this member as the only voter, with no ReadIndex.",
                  rst.solo);
    }

    if (m->src.watches) {
        struct watch_stats ws;
        watch_get_stats(m->src.watches, &ws);
        gauge_u(b, "etcd_debugging_mvcc_watcher_total", "Watchers on this member.", ws.watchers);
        gauge_u(b, "etcd_debugging_mvcc_slow_watcher_total", "Watchers catching up from the store (unsynced).",
                ws.unsynced);
        gauge_u(b, "cairn_watch_parked_polls", "WatchNext requests waiting for events.", ws.parked);
        gauge_u(b, "cairn_watch_queued_bytes", "Event bytes queued for watchers.", ws.queued_bytes);
        counter_u(b, "etcd_debugging_mvcc_events_total", "Events sent to watchers.", ws.events_delivered);
        counter_u(b, "cairn_watch_lost_batches_total", "Apply batches the watch ring could not keep while watchers were live.", ws.lost_batches);
        counter_u(b, "cairn_watch_dispatcher_wakeups_total",
                  "Times the watch dispatcher thread woke (batches to deliver while watched, poll deadlines, idle checks).",
                  ws.dispatcher_wakeups);
    }
    if (m->src.leases)
        gauge_u(b, "cairn_leases", "Leases this member holds.", lease_count(m->src.leases));
    family(b, "cairn_alarm_active", "gauge", "1 if the alarm is active on any member of the cluster.");
    sb_printf(b, "cairn_alarm_active{type=\"NOSPACE\"} %d\n", alarm_on(m, CAIRN__ALARM_TYPE__NOSPACE) ? 1 : 0);
    sb_printf(b, "cairn_alarm_active{type=\"CORRUPT\"} %d\n", alarm_on(m, CAIRN__ALARM_TYPE__CORRUPT) ? 1 : 0);

    counter_u(b, "cairn_nng_close_abandoned_total",
              "Socket closes given up after 2 s (an nng 1.5.2 fault; restart the member when this grows).",
              sock_close_abandoned());
    render_peers(m, b);
    render_requests(m, b);
    gauge_i(b, "process_start_time_seconds", "Start time of the process since the Unix epoch, in seconds.",
            (int64_t)m->started);
}

static void serve_metrics(struct metrics *m, nng_aio *aio)
{
    struct sbuf b = {0};
    render_metrics(m, &b);
    if (b.oom)
        reply_text(aio, NNG_HTTP_STATUS_INTERNAL_SERVER_ERROR, "out of memory\n");
    else
        reply(aio, NNG_HTTP_STATUS_OK, "text/plain; version=0.0.4; charset=utf-8", b.p, b.len);
    free(b.p);
}

/* ---------------------------------------------------------------- the metrics thread */

static const enum check_id livez_checks[] = {CK_LOOP, CK_READ};
static const enum check_id readyz_checks[] = {CK_LEADER, CK_CORRUPT, CK_NOSPACE, CK_READ};

static void serve(struct metrics *m, struct job *j)
{
    struct query q;
    char *path = parse_uri(j->uri, &q);
    const char *sub = NULL;
    if (!strcmp(path, "/health")) {
        serve_health(m, j->aio, &q);
    } else if (!strcmp(path, "/metrics")) {
        serve_metrics(m, j->aio);
    } else if (!strncmp(path, "/livez", 6) && (path[6] == '\0' || path[6] == '/')) {
        sub = path[6] && path[7] ? path + 7 : NULL;
        serve_checks(m, j->aio, "livez", sub, &q, livez_checks, sizeof livez_checks / sizeof livez_checks[0]);
    } else if (!strncmp(path, "/readyz", 7) && (path[7] == '\0' || path[7] == '/')) {
        sub = path[7] && path[8] ? path + 8 : NULL;
        serve_checks(m, j->aio, "readyz", sub, &q, readyz_checks, sizeof readyz_checks / sizeof readyz_checks[0]);
    } else {
        reply_text(j->aio, NNG_HTTP_STATUS_NOT_FOUND, "not found\n");
    }
}

static void *metrics_main(void *arg)
{
    pthread_setname_np(pthread_self(), "cairn-metrics"); /* top -H, perf and gdb show it */
    struct metrics *m = arg;
    pthread_mutex_lock(&m->mu);
    for (;;) {
        while (!m->head && !m->stopping)
            pthread_cond_wait(&m->cv, &m->mu);
        struct job *j = m->head;
        if (!j)
            break; /* stopping, and everything queued was answered */
        m->head = j->next;
        if (!m->head)
            m->tail = NULL;
        m->queued--;
        bool stopping = m->stopping;
        pthread_mutex_unlock(&m->mu);
        if (stopping)
            reply_text(j->aio, NNG_HTTP_STATUS_SERVICE_UNAVAILABLE, "member is stopping\n");
        else
            serve(m, j);
        free(j->uri);
        free(j);
        pthread_mutex_lock(&m->mu);
    }
    pthread_mutex_unlock(&m->mu);
    return NULL;
}

/* nng's handler callback, on an nng thread: queue the request for the metrics thread. */
static void http_cb(nng_aio *aio)
{
    nng_http_req *req = nng_aio_get_input(aio, 0);
    nng_http_handler *h = nng_aio_get_input(aio, 1);
    struct metrics *m = nng_http_handler_get_data(h);
    struct job *j = calloc(1, sizeof(*j));
    if (j && !(j->uri = strdup(nng_http_req_get_uri(req)))) {
        free(j);
        j = NULL;
    }
    if (!j) {
        nng_aio_finish(aio, NNG_ENOMEM);
        return;
    }
    j->aio = aio;
    pthread_mutex_lock(&m->mu);
    const char *refuse = m->stopping ? "member is stopping\n"
                         : m->queued >= MAX_QUEUED ? "too many requests waiting; retry later\n" : NULL;
    if (!refuse) {
        if (m->tail)
            m->tail->next = j;
        else
            m->head = j;
        m->tail = j;
        m->queued++;
        pthread_cond_signal(&m->cv);
    }
    pthread_mutex_unlock(&m->mu);
    if (refuse) {
        free(j->uri);
        free(j);
        reply_text(aio, NNG_HTTP_STATUS_SERVICE_UNAVAILABLE, refuse);
    }
}

/* ---------------------------------------------------------------- request counting */

static void request_done(void *arg, int body_case, int code, int64_t took_ns)
{
    struct metrics *m = arg;
    if (body_case <= 0 || body_case >= METHODS)
        return;
    unsigned c = code == 0 ? 0 : code > CAIRN_ERR_BASE && code - CAIRN_ERR_BASE < CODES - 2
                                     ? (unsigned)(code - CAIRN_ERR_BASE) + 1 : CODES - 1;
    atomic_fetch_add_explicit(&m->requests[body_case][c], 1, memory_order_relaxed);
    histogram_observe_ns(&m->latency[body_case], took_ns > 0 ? (uint64_t)took_ns : 0);
}

void metrics_hooks(struct metrics *m, struct rpc_hooks *h)
{
    h->request_done = request_done;
    h->done_arg = m;
}

/* ---------------------------------------------------------------- start and stop */

/* Serve the four paths on url (tcp://host:port): nng's HTTP server wants http://. */
static int serve_url(struct metrics *m, const struct config_url *u, char *err, size_t errlen)
{
    static const struct {
        const char *path;
        bool tree;
    } paths[] = {{"/health", false}, {"/metrics", false}, {"/livez", true}, {"/readyz", true}};
    char buf[300];
    bool v6 = strchr(u->host, ':') != NULL;
    snprintf(buf, sizeof buf, "http://%s%s%s:%d", v6 ? "[" : "", u->host, v6 ? "]" : "", u->port);
    nng_url *url = NULL;
    nng_http_server *s = NULL;
    int rv = nng_url_parse(&url, buf);
    if (rv == 0)
        rv = nng_http_server_hold(&s, url);
    nng_url_free(url);
    if (rv != 0) {
        snprintf(err, errlen, "metrics listener %s: %s", u->url, nng_strerror(rv));
        return rv == NNG_ENOMEM ? -ENOMEM : -EINVAL;
    }
    m->servers[m->n_servers++] = s;
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        nng_http_handler *h;
        if ((rv = nng_http_handler_alloc(&h, paths[i].path, http_cb)) != 0) {
            snprintf(err, errlen, "metrics listener %s: %s", u->url, nng_strerror(rv));
            return -ENOMEM;
        }
        atomic_fetch_add(&m->refs, 1); /* dropped by handler_data_free when nng lets go of h */
        if ((rv = nng_http_handler_set_data(h, m, handler_data_free)) != 0 ||
            (paths[i].tree && (rv = nng_http_handler_set_tree(h)) != 0) ||
            (rv = nng_http_handler_collect_body(h, true, 0)) != 0 || (rv = nng_http_server_add_handler(s, h)) != 0) {
            nng_http_handler_free(h);
            snprintf(err, errlen, "metrics listener %s: %s: %s", u->url, paths[i].path, nng_strerror(rv));
            return -EINVAL;
        }
    }
    if ((rv = nng_http_server_start(s)) != 0) {
        snprintf(err, errlen, "cannot listen on %s for metrics: %s", u->url, nng_strerror(rv));
        return rv == NNG_EADDRINUSE ? -EADDRINUSE : rv == NNG_EPERM ? -EACCES : -EINVAL;
    }
    return 0;
}

int metrics_start(const struct config *cfg, struct node *n, const struct metrics_sources *src, struct metrics **out,
                  char *err, size_t errlen)
{
    struct metrics *m = calloc(1, sizeof(*m));
    struct probe *p = calloc(1, sizeof(*p));
    if (!m || !p) {
        free(m);
        free(p);
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    m->cfg = cfg;
    m->node = n;
    if (src)
        m->src = *src;
    atomic_init(&m->refs, 1);
    pthread_mutex_init(&m->mu, NULL);
    pthread_cond_init(&m->cv, NULL);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL); /* CLOCK_REALTIME, as check_node_loop's deadline */
    m->probe = p;
    m->started = time(NULL);
    node_reader_register(n, &m->slot);
    m->slot_registered = true;
    int rc = -pthread_create(&m->thread, NULL, metrics_main, m);
    if (rc < 0) {
        snprintf(err, errlen, "cannot start the metrics thread: %s", strerror(-rc));
        goto fail;
    }
    m->thread_started = true;
    for (size_t i = 0; i < cfg->listen_metrics_urls.n; i++)
        if ((rc = serve_url(m, &cfg->listen_metrics_urls.v[i], err, errlen)) < 0)
            goto fail;
    *out = m;
    return 0;
fail:
    metrics_stop(m);
    metrics_free(m);
    return rc;
}

void metrics_stop(struct metrics *m)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->mu);
    bool already = m->stopping;
    m->stopping = true;
    pthread_cond_broadcast(&m->cv);
    pthread_mutex_unlock(&m->mu);
    if (already)
        return;
    if (m->thread_started)
        pthread_join(m->thread, NULL); /* it answers everything queued first */
    /* From here http_cb answers 503 itself.  Stopping a server waits for callbacks in progress. */
    for (size_t i = 0; i < m->n_servers; i++) {
        nng_http_server_stop(m->servers[i]);
        nng_http_server_release(m->servers[i]);
    }
    m->n_servers = 0;
    if (m->slot_registered)
        node_reader_unregister(m->node, &m->slot);
    m->slot_registered = false;
    struct probe *p = m->probe;
    m->probe = NULL;
    pthread_mutex_lock(&p->mu);
    bool held = p->outstanding; /* the node still holds it and frees it when it runs or stops */
    p->orphaned = held;
    pthread_mutex_unlock(&p->mu);
    if (!held) {
        pthread_cond_destroy(&p->cv);
        pthread_mutex_destroy(&p->mu);
        free(p);
    }
}

void metrics_free(struct metrics *m)
{
    if (!m)
        return;
    metrics_stop(m);
    unref(m);
}
