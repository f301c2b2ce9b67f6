/*
 * Maintenance calls (see maint.h).  HashKV reads this member's store as it
 * is (no ReadIndex: the point is to see what this member holds).
 */
#include "daemon/maint.h"

#include <string.h>

#include "base/errors.h"
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
