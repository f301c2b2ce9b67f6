/*
 * The lessor (see lease.h).  One mutex guards the table; the node thread
 * updates it from applied entries, RPC threads read and renew, and the
 * expiry thread scans it twice a second.  A scan is O(leases): fine for the
 * tens of thousands of leases a member holds; a heap would be the next step.
 */
#include "daemon/lease.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/rand.h>

#include "base/deadline.h"
#include "base/errors.h"
#include "base/log.h"
#include "daemon/kvconv.h"
#include "proto/cairn.pb-c.h"
#include "proto/internal.pb-c.h"
#include "storage/mvcc.h"

#define BUCKETS 16384          /* a power of two */
#define SCAN_MS 500
#define REVOKE_RETRY_NS 3000000000LL /* a proposed revoke not applied by then is proposed again */
#define FOREVER INT64_MAX

struct lease {
    struct lease *next;
    int64_t id, ttl;
    int64_t remaining;   /* last checkpoint, seconds; 0 if none */
    int64_t expiry_ns;   /* leader only; FOREVER on followers */
};

struct lessor {
    const struct config *cfg;
    struct node *node;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    struct lease *buckets[BUCKETS];
    size_t count;
    int leader;
    int stopping;
    int reload;            /* the store was replaced: reload on the thread */
    int64_t next_checkpoint_ns;
    pthread_t thread;
    int started;
    struct node_reader_slot slot;
};

static size_t bucket(int64_t id)
{
    uint64_t x = (uint64_t)id * 0x9e3779b97f4a7c15ULL;
    return (size_t)(x >> 50) & (BUCKETS - 1);
}

static struct lease *find(struct lessor *l, int64_t id)
{
    for (struct lease *x = l->buckets[bucket(id)]; x; x = x->next)
        if (x->id == id)
            return x;
    return NULL;
}

/* The expiry a lease gets now: on a leader its TTL (or checkpointed remainder) from now plus extra. */
static int64_t expiry_of(struct lessor *l, const struct lease *x, int64_t extra_ns)
{
    if (!l->leader)
        return FOREVER;
    int64_t secs = x->remaining > 0 ? x->remaining : x->ttl;
    return mono_now_ns() + secs * 1000000000LL + extra_ns;
}

static void put_lease(struct lessor *l, int64_t id, int64_t ttl, int64_t remaining)
{
    struct lease *x = find(l, id);
    if (!x) {
        x = calloc(1, sizeof(*x));
        if (!x)
            return; /* the expiry is lost until the next reload; the lease stays in the store */
        x->id = id;
        size_t b = bucket(id);
        x->next = l->buckets[b];
        l->buckets[b] = x;
        l->count++;
    }
    x->ttl = ttl;
    x->remaining = remaining;
    x->expiry_ns = expiry_of(l, x, 0);
}

static void del_lease(struct lessor *l, int64_t id)
{
    for (struct lease **pp = &l->buckets[bucket(id)]; *pp; pp = &(*pp)->next)
        if ((*pp)->id == id) {
            struct lease *x = *pp;
            *pp = x->next;
            free(x);
            l->count--;
            return;
        }
}

static void clear(struct lessor *l)
{
    for (size_t b = 0; b < BUCKETS; b++)
        while (l->buckets[b]) {
            struct lease *x = l->buckets[b];
            l->buckets[b] = x->next;
            free(x);
        }
    l->count = 0;
}

/* Rebuild the table from the store (at start and after a snapshot install). */
static int load(struct lessor *l)
{
    int err = 0;
    struct mvcc_reader *r = node_read_begin(l->node, &l->slot, &err);
    if (!r)
        return err;
    struct mvcc_lease_list *list = NULL;
    int rc = mvcc_lease_list(r, &list);
    node_read_end(l->node);
    if (rc < 0)
        return rc;
    pthread_mutex_lock(&l->mu);
    clear(l);
    for (size_t i = 0; i < list->n; i++)
        put_lease(l, list->leases[i].id, list->leases[i].ttl, list->leases[i].remaining_ttl);
    pthread_mutex_unlock(&l->mu);
    mvcc_lease_list_free(list);
    return 0;
}

/* ---------------------------------------------------------------- node observer (node thread) */

/*
 * A revoke the store refused (not "not found": that one was revoked
 * already).  The lease stays, and the lessor proposes it again every
 * REVOKE_RETRY_NS: say so, at most a few times a minute.  Only a store
 * from before leases were limited to MVCC_MAX_CHANGES keys can hold a
 * lease too big to revoke (TOO_MANY_CHANGES, docs/storage-mvcc.md).
 */
static struct log_limit revoke_log = LOG_LIMIT_INIT(3, 60000);
static void revoke_refused(int64_t id, int err)
{
    uint64_t suppressed;
    if (!log_limit_pass(&revoke_log, &suppressed))
        return;
    log_warning(NULL, "the revoke of lease %016" PRIx64 " was refused: %s; the lease and its keys stay (an expired "
                      "lease's revoke is proposed again every %d s)%s",
                (uint64_t)id, cairn_strerror(err), (int)(REVOKE_RETRY_NS / 1000000000), LOG_LIMIT_NOTE(suppressed));
}

static void on_applied(void *arg, const struct mvcc_entry *ents, size_t n, const struct mvcc_result *res)
{
    struct lessor *l = arg;
    pthread_mutex_lock(&l->mu);
    for (size_t i = 0; i < n && i < res->n_entries; i++) {
        const struct mvcc_applied *ap = &res->entries[i];
        if (!ap->skipped && ap->resp.err && ents[i].req.type == MVCC_REQ_LEASE_REVOKE && l->leader &&
            ap->resp.err != -CAIRN_E_LEASE_NOT_FOUND)
            revoke_refused(ents[i].req.lease_revoke.id, ap->resp.err);
        if (ap->skipped || ap->resp.err)
            continue;
        switch (ents[i].req.type) {
        case MVCC_REQ_LEASE_GRANT:
            put_lease(l, ap->resp.lease_grant.id, ap->resp.lease_grant.ttl, 0);
            break;
        case MVCC_REQ_LEASE_REVOKE:
            del_lease(l, ents[i].req.lease_revoke.id);
            break;
        case MVCC_REQ_LEASE_CHECKPOINT:
            for (size_t k = 0; k < ents[i].req.lease_checkpoint.n; k++) {
                struct lease *x = find(l, ents[i].req.lease_checkpoint.checkpoints[k].id);
                if (x)
                    x->remaining = ents[i].req.lease_checkpoint.checkpoints[k].remaining_ttl;
            }
            break;
        default:
            break;
        }
    }
    pthread_mutex_unlock(&l->mu);
}

static void on_leader_changed(void *arg, uint64_t lead, uint64_t term, int is_self)
{
    struct lessor *l = arg;
    (void)lead;
    (void)term;
    pthread_mutex_lock(&l->mu);
    if (is_self != l->leader) {
        l->leader = is_self;
        /* promote: every lease gets its remaining TTL plus an election timeout, so
         * none expires before its holder could have found the new leader */
        int64_t extra = (int64_t)l->cfg->election_ms * 1000000LL;
        for (size_t b = 0; b < BUCKETS; b++)
            for (struct lease *x = l->buckets[b]; x; x = x->next)
                x->expiry_ns = expiry_of(l, x, extra);
        l->next_checkpoint_ns = mono_now_ns() + (int64_t)LEASE_CHECKPOINT_INTERVAL_MS * 1000000LL;
        if (is_self)
            log_info(LOG_FIELDS(LOG_U64("CAIRN_LEASES", l->count)),
                     "lessor: leading %zu lease(s); each extended by the election timeout", l->count);
    }
    pthread_mutex_unlock(&l->mu);
}

static void on_store_replaced(void *arg)
{
    struct lessor *l = arg;
    pthread_mutex_lock(&l->mu);
    l->reload = 1;
    pthread_cond_signal(&l->cond);
    pthread_mutex_unlock(&l->mu);
}

/* ---------------------------------------------------------------- expiry thread */

static void propose_revoke(struct lessor *l, int64_t id)
{
    Cairnint__RaftRequest rr = CAIRNINT__RAFT_REQUEST__INIT;
    Cairn__LeaseRevokeRequest rv = CAIRN__LEASE_REVOKE_REQUEST__INIT;
    rv.id = id;
    rr.request_case = CAIRNINT__RAFT_REQUEST__REQUEST_LEASE_REVOKE;
    rr.lease_revoke = &rv;
    node_propose_internal(l->node, &rr);
}

static void propose_checkpoints(struct lessor *l, Cairnint__LeaseCheckpoint *cps, size_t n)
{
    Cairnint__RaftRequest rr = CAIRNINT__RAFT_REQUEST__INIT;
    Cairnint__LeaseCheckpointRequest req = CAIRNINT__LEASE_CHECKPOINT_REQUEST__INIT;
    Cairnint__LeaseCheckpoint **ptrs = malloc(n * sizeof(*ptrs));
    if (!ptrs)
        return;
    for (size_t i = 0; i < n; i++)
        ptrs[i] = &cps[i];
    req.n_checkpoints = n;
    req.checkpoints = ptrs;
    rr.request_case = CAIRNINT__RAFT_REQUEST__REQUEST_LEASE_CHECKPOINT;
    rr.lease_checkpoint = &req;
    node_propose_internal(l->node, &rr);
    free(ptrs);
}

/* One scan: revoke what expired (rate-limited), checkpoint when due.  Called with mu held; drops it to propose. */
static void scan(struct lessor *l)
{
    int64_t now = mono_now_ns();
    size_t budget = LEASE_REVOKES_PER_SEC * SCAN_MS / 1000, k = 0;
    int64_t *ids = malloc(budget * sizeof(*ids));
    if (!ids)
        return;
    for (size_t b = 0; b < BUCKETS && k < budget; b++)
        for (struct lease *x = l->buckets[b]; x && k < budget; x = x->next)
            if (x->expiry_ns <= now) {
                ids[k++] = x->id;
                x->expiry_ns = now + REVOKE_RETRY_NS; /* proposed: wait for it to apply */
            }
    Cairnint__LeaseCheckpoint *cps = NULL;
    size_t ncp = 0;
    if (now >= l->next_checkpoint_ns && l->count) {
        l->next_checkpoint_ns = now + (int64_t)LEASE_CHECKPOINT_INTERVAL_MS * 1000000LL;
        cps = calloc(l->count, sizeof(*cps));
        for (size_t b = 0; cps && b < BUCKETS; b++)
            for (struct lease *x = l->buckets[b]; x; x = x->next) {
                if (x->expiry_ns == FOREVER || x->expiry_ns <= now)
                    continue;
                cairnint__lease_checkpoint__init(&cps[ncp]);
                cps[ncp].id = x->id;
                cps[ncp].remaining_ttl = (x->expiry_ns - now + 999999999) / 1000000000;
                ncp++;
            }
    }
    pthread_mutex_unlock(&l->mu);
    for (size_t i = 0; i < k; i++)
        propose_revoke(l, ids[i]);
    if (k)
        log_info(LOG_FIELDS(LOG_U64("CAIRN_LEASES", k)), "lessor: revoking %zu expired lease(s)", k);
    for (size_t off = 0; off < ncp; off += 1000)
        propose_checkpoints(l, cps + off, ncp - off < 1000 ? ncp - off : 1000);
    free(cps);
    free(ids);
    pthread_mutex_lock(&l->mu);
}

static void *lessor_main(void *arg)
{
    pthread_setname_np(pthread_self(), "cairn-lessor"); /* top -H, perf and gdb show it */
    struct lessor *l = arg;
    pthread_mutex_lock(&l->mu);
    while (!l->stopping) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += SCAN_MS * 1000000L;
        ts.tv_sec += ts.tv_nsec / 1000000000L;
        ts.tv_nsec %= 1000000000L;
        pthread_cond_timedwait(&l->cond, &l->mu, &ts);
        if (l->stopping)
            break;
        if (l->reload) {
            l->reload = 0;
            pthread_mutex_unlock(&l->mu);
            int rc = load(l);
            if (rc < 0)
                log_err(NULL, "lessor: cannot reload the leases after a snapshot: %s", cairn_strerror(rc));
            pthread_mutex_lock(&l->mu);
        }
        if (l->leader)
            scan(l);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

/* ---------------------------------------------------------------- requests */

static int64_t random_id(void)
{
    uint64_t v = 0;
    while (!v) {
        if (RAND_bytes((unsigned char *)&v, sizeof v) != 1)
            v = (uint64_t)mono_now_ns();
        v &= INT64_MAX; /* etcd's IDs are positive int64 */
    }
    return (int64_t)v;
}

static void grant(void *arg, struct rpc_call *c)
{
    struct lessor *l = arg;
    const Cairn__LeaseGrantRequest *in = rpc_call_request(c)->lease_grant;
    if (in->ttl <= 0 || in->ttl > LEASE_MAX_TTL) {
        rpc_call_error(c, in->ttl > LEASE_MAX_TTL ? CAIRN_E_LEASE_TTL_TOO_LARGE : CAIRN_E_INVALID_ARGUMENT,
                       "lease TTL %" PRId64 " s is out of range: 1 to %lld s", in->ttl, LEASE_MAX_TTL);
        return;
    }
    if (in->id < 0) {
        rpc_call_error(c, CAIRN_E_INVALID_ARGUMENT, "lease ID %" PRId64 " is negative", in->id);
        return;
    }
    (void)l;
    Cairn__LeaseGrantRequest g = *in;
    if (!g.id)
        g.id = random_id();
    Cairnint__RaftRequest rr = CAIRNINT__RAFT_REQUEST__INIT;
    rr.request_case = CAIRNINT__RAFT_REQUEST__REQUEST_LEASE_GRANT;
    rr.lease_grant = &g;
    rpc_call_propose(c, &rr);
}

static void revoke(void *arg, struct rpc_call *c)
{
    (void)arg;
    Cairnint__RaftRequest rr = CAIRNINT__RAFT_REQUEST__INIT;
    rr.request_case = CAIRNINT__RAFT_REQUEST__REQUEST_LEASE_REVOKE;
    rr.lease_revoke = rpc_call_request(c)->lease_revoke;
    rpc_call_propose(c, &rr);
}

static void keep_alive(void *arg, struct rpc_call *c)
{
    struct lessor *l = arg;
    int64_t id = rpc_call_request(c)->lease_keep_alive->id;
    pthread_mutex_lock(&l->mu);
    if (!l->leader) {
        pthread_mutex_unlock(&l->mu);
        struct node_info in;
        node_get_info(l->node, &in);
        rpc_call_error(c, CAIRN_E_NOT_LEADER,
                       "keep-alives are served by the leader (member %016" PRIx64 "); send it there", in.lead);
        return;
    }
    struct lease *x = find(l, id);
    int64_t ttl = x ? x->ttl : 0;
    if (x) {
        x->remaining = 0;
        x->expiry_ns = expiry_of(l, x, 0);
    }
    pthread_mutex_unlock(&l->mu);
    if (!x) {
        rpc_call_error(c, CAIRN_E_LEASE_NOT_FOUND, "lease %" PRId64 " not found (expired or revoked)", id);
        return;
    }
    Cairn__Response resp = CAIRN__RESPONSE__INIT;
    Cairn__LeaseKeepAliveResponse body = CAIRN__LEASE_KEEP_ALIVE_RESPONSE__INIT;
    body.id = id;
    body.ttl = ttl;
    resp.body_case = CAIRN__RESPONSE__BODY_LEASE_KEEP_ALIVE;
    resp.lease_keep_alive = &body;
    rpc_call_reply(c, &resp, 0);
}

/* TimeToLive: the attached keys from the store, the remaining time from the lessor. */
static void ttl_read(struct rpc_call *c, struct mvcc_reader *r, int err, void *arg)
{
    struct lessor *l = arg;
    const Cairn__LeaseTimeToLiveRequest *in = rpc_call_request(c)->lease_time_to_live;
    if (!r) {
        rpc_call_unreadable(c, err);
        return;
    }
    struct mvcc_lease_list *list = NULL;
    int rc = mvcc_lease_get(r, in->id, &list);
    Cairn__Response resp = CAIRN__RESPONSE__INIT;
    Cairn__LeaseTimeToLiveResponse body = CAIRN__LEASE_TIME_TO_LIVE_RESPONSE__INIT;
    body.id = in->id;
    body.ttl = -1; /* etcd: -1 for an expired or unknown lease */
    ProtobufCBinaryData *keys = NULL;
    if (rc == 0 && list->n == 1) {
        const struct mvcc_lease *ml = &list->leases[0];
        body.granted_ttl = ml->ttl;
        pthread_mutex_lock(&l->mu);
        struct lease *x = find(l, in->id);
        int64_t now = mono_now_ns();
        if (x && x->expiry_ns != FOREVER)
            body.ttl = x->expiry_ns > now ? (x->expiry_ns - now + 999999999) / 1000000000 : 0;
        else /* a follower does not time leases: the last checkpoint, or the granted TTL */
            body.ttl = ml->remaining_ttl > 0 ? ml->remaining_ttl : ml->ttl;
        pthread_mutex_unlock(&l->mu);
        if (in->keys && ml->n_keys && (keys = calloc(ml->n_keys, sizeof(*keys)))) {
            for (size_t i = 0; i < ml->n_keys; i++)
                keys[i] = (ProtobufCBinaryData){ml->keys[i].len, (uint8_t *)ml->keys[i].data};
            body.n_keys = ml->n_keys;
            body.keys = keys;
        }
    } else if (rc < 0 && rc != -CAIRN_E_LEASE_NOT_FOUND) {
        rpc_call_error(c, -rc, NULL);
        return;
    }
    resp.body_case = CAIRN__RESPONSE__BODY_LEASE_TIME_TO_LIVE;
    resp.lease_time_to_live = &body;
    rpc_call_reply(c, &resp, 0);
    free(keys);
    mvcc_lease_list_free(list);
}

static void time_to_live(void *arg, struct rpc_call *c)
{
    rpc_call_read(c, 1, ttl_read, arg);
}

static void leases_read(struct rpc_call *c, struct mvcc_reader *r, int err, void *arg)
{
    (void)arg;
    if (!r) {
        rpc_call_unreadable(c, err);
        return;
    }
    struct mvcc_lease_list *list = NULL;
    int rc = mvcc_lease_list(r, &list);
    if (rc < 0) {
        rpc_call_error(c, -rc, NULL);
        return;
    }
    Cairn__Response resp = CAIRN__RESPONSE__INIT;
    Cairn__LeaseLeasesResponse body = CAIRN__LEASE_LEASES_RESPONSE__INIT;
    Cairn__LeaseStatus *st = calloc(list->n ? list->n : 1, sizeof(*st));
    Cairn__LeaseStatus **ptrs = calloc(list->n ? list->n : 1, sizeof(*ptrs));
    if (!st || !ptrs) {
        rpc_call_error(c, ENOMEM, NULL);
    } else {
        for (size_t i = 0; i < list->n; i++) {
            cairn__lease_status__init(&st[i]);
            st[i].id = list->leases[i].id;
            ptrs[i] = &st[i];
        }
        body.n_leases = list->n;
        body.leases = ptrs;
        resp.body_case = CAIRN__RESPONSE__BODY_LEASE_LEASES;
        resp.lease_leases = &body;
        rpc_call_reply(c, &resp, 0);
    }
    free(st);
    free(ptrs);
    mvcc_lease_list_free(list);
}

static void leases(void *arg, struct rpc_call *c)
{
    rpc_call_read(c, 1, leases_read, arg);
}

size_t lease_routes(struct lessor *l, struct rpc_route *out, size_t max)
{
    const struct rpc_route routes[] = {
        {CAIRN__REQUEST__BODY_LEASE_GRANT, grant, l, 0},
        {CAIRN__REQUEST__BODY_LEASE_REVOKE, revoke, l, 0},
        {CAIRN__REQUEST__BODY_LEASE_KEEP_ALIVE, keep_alive, l, 0},
        {CAIRN__REQUEST__BODY_LEASE_TIME_TO_LIVE, time_to_live, l, 0},
        {CAIRN__REQUEST__BODY_LEASE_LEASES, leases, l, 0},
    };
    return rpc_routes_copy(out, max, routes, sizeof routes / sizeof routes[0]);
}

/* ---------------------------------------------------------------- life */

int lease_start(const struct config *cfg, struct node *n, struct lessor **out)
{
    struct lessor *l = calloc(1, sizeof(*l));
    if (!l)
        return -ENOMEM;
    l->cfg = cfg;
    l->node = n;
    pthread_mutex_init(&l->mu, NULL);
    mono_cond_init(&l->cond);
    node_reader_register(n, &l->slot);
    /* observe first, then load: nothing applied in between is missed (applying it twice is harmless) */
    struct node_observer o = {.arg = l, .applied = on_applied, .leader_changed = on_leader_changed,
                              .store_replaced = on_store_replaced};
    int rc = node_observe(n, &o);
    if (rc < 0) {
        node_reader_unregister(n, &l->slot);
        free(l);
        return rc;
    }
    /* from here the node holds l: on failure it is left to the exiting process */
    if ((rc = load(l)) < 0)
        return rc;
    struct node_info in;
    node_get_info(n, &in);
    if (in.lead == in.member_id)
        on_leader_changed(l, in.lead, in.term, 1);
    if ((rc = -pthread_create(&l->thread, NULL, lessor_main, l)) < 0)
        return rc;
    l->started = 1;
    *out = l;
    return 0;
}

void lease_stop(struct lessor *l)
{
    if (!l || !l->started)
        return;
    pthread_mutex_lock(&l->mu);
    l->stopping = 1;
    pthread_cond_signal(&l->cond);
    pthread_mutex_unlock(&l->mu);
    pthread_join(l->thread, NULL);
    l->started = 0;
    node_reader_unregister(l->node, &l->slot);
}

void lease_free(struct lessor *l)
{
    if (!l)
        return;
    lease_stop(l);
    clear(l);
    pthread_cond_destroy(&l->cond);
    pthread_mutex_destroy(&l->mu);
    free(l);
}

size_t lease_count(struct lessor *l)
{
    if (!l)
        return 0;
    pthread_mutex_lock(&l->mu);
    size_t n = l->count;
    pthread_mutex_unlock(&l->mu);
    return n;
}
