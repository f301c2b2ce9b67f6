/*
 * Fuzz target: the client request path of daemon/rpc.c's handle() up to the
 * point where a request is routed: the size check, kvconv_request_unpack
 * (a strict wire check, then protobuf-c's unpack), and kvconv_validate with cairnd's default limits.  A request
 * that passes is converted as the daemon would convert it (range and history
 * reads to mvcc requests; writes wrapped in a RaftRequest, packed, unpacked
 * and turned into an mvcc_request as the applier does), which must succeed.
 */
#include "test/fuzz/fuzz.h"

#include "base/errors.h"
#include "daemon/kvconv.h"
#include "proto/cairn.pb-c.h"
#include "proto/internal.pb-c.h"

/* cairnd's defaults (daemon/config.c: max-request-bytes, max-txn-ops). */
#define DEFAULT_MAX_REQUEST_BYTES 1572864u
#define DEFAULT_MAX_TXN_OPS 128u

/* What the applier does with a proposed write: the entry's bytes are
 * decoded again on every member, then converted. */
static void convert_write(const Cairn__Request *req)
{
    Cairnint__RaftRequest rr = CAIRNINT__RAFT_REQUEST__INIT;
    rr.id = 1;
    rr.proposer = 2;
    if (!kvconv_write_entry(req, &rr)) /* what rpc.c proposes for it */
        return;
    size_t n = cairnint__raft_request__get_packed_size(&rr);
    uint8_t *buf = malloc(n ? n : 1);
    FUZZ_CHECK(buf != NULL);
    FUZZ_CHECK(cairnint__raft_request__pack(&rr, buf) == n);
    Cairnint__RaftRequest *back = cairnint__raft_request__unpack(NULL, n, buf);
    FUZZ_CHECK(back != NULL);
    struct kvconv_arena a;
    kvconv_arena_init(&a);
    struct mvcc_request out;
    int rc = kvconv_entry_req(back, &out, &a);
    /* A request kvconv_validate let through must convert. */
    FUZZ_CHECK(rc == 0);
    kvconv_arena_free(&a);
    cairnint__raft_request__free_unpacked(back, NULL);
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > DEFAULT_MAX_REQUEST_BYTES)
        return 0; /* rpc.c refuses these before decoding */
    char why[160];
    memset(why, 'x', sizeof why);
    struct kvconv_arena a;
    kvconv_arena_init(&a);
    Cairn__Request *req = kvconv_request_unpack(data, size, &a, why, sizeof why);
    if (!req) {
        kvconv_arena_free(&a);
        FUZZ_CHECK(memchr(why, '\0', sizeof why) != NULL && why[0] != '\0');
        return 0;
    }
    struct kvconv_limits lim = {.max_txn_ops = DEFAULT_MAX_TXN_OPS,
                                .max_request_bytes = DEFAULT_MAX_REQUEST_BYTES};
    char msg[512];
    memset(msg, 'x', sizeof msg);
    int rc = kvconv_validate(req, &lim, msg, sizeof msg);
    FUZZ_CHECK(rc <= 0);
    FUZZ_CHECK(memchr(msg, '\0', sizeof msg) != NULL);
    if (rc < 0) {
        FUZZ_CHECK(msg[0] != '\0');
        FUZZ_CHECK(cairn_strerror(rc) != NULL);
    }
    /* The same request with a tiny message buffer and with etcd's defaults. */
    char tiny[3];
    FUZZ_CHECK(kvconv_validate(req, &lim, tiny, sizeof tiny) == rc);
    FUZZ_CHECK(tiny[2] == '\0' || memchr(tiny, '\0', sizeof tiny) != NULL);
    FUZZ_CHECK(kvconv_validate(req, NULL, NULL, 0) == rc);
    if (rc == 0) {
        struct mvcc_range_req rr;
        struct mvcc_history_req hr;
        if (req->body_case == CAIRN__REQUEST__BODY_RANGE)
            kvconv_range_req(req->range, &rr);
        else if (req->body_case == CAIRN__REQUEST__BODY_HISTORY)
            kvconv_history_req(req->history, &hr);
        else
            convert_write(req);
    }
    kvconv_arena_free(&a);
    return 0;
}
