/*
 * Maintenance calls (see maint.h).  HashKV reads this member's store as it
 * is (no ReadIndex: the point is to see what this member holds); Defragment
 * works on this member's store alone, not through Raft, as in etcd.
 */
#include "daemon/maint.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/deadline.h"
#include "base/errors.h"
#include "base/log.h"
#include "daemon/msgids.h"
#include "proto/cairn.pb-c.h"
#include "storage/mvcc.h"

static void hash_kv_read(struct rpc_call *c, struct mvcc_reader *r, int err, void *arg)
{
    (void)arg;
    if (!r) {
        rpc_call_unreadable(c, err);
        return;
    }
    int64_t rev = rpc_call_request(c)->hash_kv->revision;
    uint32_t hash = 0;
    int64_t cur = 0, compact = 0;
    int rc = mvcc_hash_kv(r, rev, &hash, &cur, &compact);
    if (rc == -CAIRN_E_COMPACTED) {
        rpc_call_error(c, CAIRN_E_COMPACTED, "revision %lld is compacted; hash at or after %lld", (long long)rev,
                       (long long)compact);
        return;
    }
    if (rc < 0) {
        rpc_call_error(c, -rc, NULL);
        return;
    }
    Cairn__Response resp = CAIRN__RESPONSE__INIT;
    Cairn__HashKVResponse body = CAIRN__HASH_KVRESPONSE__INIT;
    body.hash = hash;
    body.compact_revision = compact;
    body.hash_revision = rev > 0 ? rev : cur;
    resp.body_case = CAIRN__RESPONSE__BODY_HASH_KV;
    resp.hash_kv = &body;
    rpc_call_reply(c, &resp, cur);
}

static void hash_kv(void *arg, struct rpc_call *c)
{
    rpc_call_read(c, 0, hash_kv_read, arg);
}

size_t maint_routes(struct rpc_route *out, size_t max)
{
    const struct rpc_route routes[] = {
        {CAIRN__REQUEST__BODY_HASH_KV, hash_kv, NULL, 1},
    };
    return rpc_routes_copy(out, max, routes, sizeof routes / sizeof routes[0]);
}

/* ---------------------------------------------------------------- defragment */

/*
 * One defragment in progress per member (a second is refused: the first
 * already does all there is to do).  It runs as node_call steps, each
 * giving back at most MAINT_DEFRAG_STEP_PAGES free pages in its own SQLite
 * transaction, then queueing the next: applies go on between steps, so the
 * applier waits for one step at most, never for the whole file.
 */
struct defrag {
    struct rpc_call *call;
    int64_t started_ns, longest_ns;
    int64_t size_before;
    uint64_t steps;
};

static int defrag_busy; /* atomic: a defragment runs on this member */

static void defrag_end(struct defrag *d, int code, const char *why)
{
    if (code)
        rpc_call_error(d->call, code, "defragment after %" PRIu64 " step(s): %s", d->steps, why);
    free(d);
    __atomic_store_n(&defrag_busy, 0, __ATOMIC_RELEASE);
}

static void defrag_step(struct node *n, void *arg, int stopping)
{
    struct defrag *d = arg;
    if (stopping) {
        defrag_end(d, CAIRN_E_STOPPED, "the member is stopping; the space freed so far stays freed");
        return;
    }
    struct mvcc_store *s = node_writer(n);
    struct mvcc_status st = {0};
    int rc;
    if (!d->steps && (rc = mvcc_store_status(s, &st)) == 0)
        d->size_before = st.db_size;
    int64_t remaining = 0, t0 = mono_now_ns();
    rc = mvcc_defrag_step(s, MAINT_DEFRAG_STEP_PAGES, &remaining);
    int64_t took = mono_now_ns() - t0;
    d->steps++;
    if (took > d->longest_ns)
        d->longest_ns = took;
    if (rc < 0) {
        defrag_end(d, -rc, cairn_strerror(rc));
        return;
    }
    if (remaining > 0) {
        if ((rc = node_call(n, defrag_step, d)) < 0)
            defrag_end(d, -rc, "cannot queue the next step");
        return;
    }
    /* A passive checkpoint copies the shrunk pages into the file, which SQLite
     * truncates once a checkpoint gets to the WAL's end; a read in progress
     * on an older snapshot stops it short, and the node loop tries again.
     * (No WAL sync: a defragmentation that a power loss undid loses nothing.) */
    t0 = mono_now_ns();
    if (mvcc_checkpoint(s) == 0)
        node_checkpoint_owed(n);
    took = mono_now_ns() - t0;
    if (took > d->longest_ns)
        d->longest_ns = took;
    mvcc_store_status(s, &st);
    int64_t total_ms = (mono_now_ns() - d->started_ns) / 1000000;
    uint32_t pause_ms = (uint32_t)((d->longest_ns + 999999) / 1000000);
    log_event(LOG_LEVEL_NOTICE, MSGID_DEFRAG,
              LOG_FIELDS(LOG_I64("CAIRN_BYTES", d->size_before), LOG_I64("CAIRN_DURATION_MS", total_ms)),
              "defragmented the store: %" PRId64 " -> %" PRId64 " bytes in %" PRIu64 " step(s), %" PRId64
              " ms in all, the applier held %" PRIu32 " ms at most",
              d->size_before, st.db_size, d->steps, total_ms, pause_ms);
    Cairn__Response resp = CAIRN__RESPONSE__INIT;
    Cairn__DefragmentResponse body = CAIRN__DEFRAGMENT_RESPONSE__INIT;
    body.db_size_before = d->size_before;
    body.db_size_after = st.db_size;
    body.pause_ms = pause_ms;
    resp.body_case = CAIRN__RESPONSE__BODY_DEFRAGMENT;
    resp.defragment = &body;
    rpc_call_reply(d->call, &resp, st.revision);
    defrag_end(d, 0, NULL);
}

static void defragment(void *arg, struct rpc_call *c)
{
    struct node *n = arg;
    int expected = 0;
    if (!__atomic_compare_exchange_n(&defrag_busy, &expected, 1, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
        rpc_call_error(c, CAIRN_E_TOO_MANY_REQUESTS,
                       "a defragment is already running on this member; wait for its answer");
        return;
    }
    struct defrag *d = calloc(1, sizeof(*d));
    if (!d) {
        __atomic_store_n(&defrag_busy, 0, __ATOMIC_RELEASE);
        rpc_call_error(c, ENOMEM, NULL);
        return;
    }
    d->call = c;
    d->started_ns = mono_now_ns();
    int rc = node_call(n, defrag_step, d);
    if (rc < 0)
        defrag_end(d, -rc, "cannot reach the node thread");
}

size_t maint_defrag_routes(struct node *n, struct rpc_route *out, size_t max)
{
    const struct rpc_route routes[] = {
        {CAIRN__REQUEST__BODY_DEFRAGMENT, defragment, n, 1},
    };
    return rpc_routes_copy(out, max, routes, sizeof routes / sizeof routes[0]);
}
