/*
 * Fuzz target: what a member does with a Raft message from a peer before
 * raft_step (daemon/node.c step_peer): protobuf-c's unpack of a
 * cairnpeer.Message and raftmsg_from_pb; for a message that converts, the
 * round trip raftmsg_to_pb -> pack -> unpack -> raftmsg_from_pb must give the
 * same message back.  Each entry's payload is decoded as the applier decodes
 * committed entries (a RaftRequest through kvconv_entry_req, or a conf change
 * with its MemberChange context).  The input is also fed to
 * raftmsg_conf_decode (a snapshot's membership, daemon/boot.c), whose result,
 * re-encoded, must decode to the same configuration.
 */
#include "test/fuzz/fuzz.h"

#include "base/errors.h"
#include "daemon/kvconv.h"
#include "daemon/raftmsg.h"
#include "proto/internal.pb-c.h"
#include "proto/peer.pb-c.h"
#include "raft/raft.h"

static void same_conf(const struct raft_conf_state *a, const struct raft_conf_state *b)
{
    FUZZ_CHECK(a->n_voters == b->n_voters && a->n_learners == b->n_learners);
    FUZZ_CHECK(a->n_voters <= RAFT_MAX_MEMBERS && a->n_learners <= RAFT_MAX_MEMBERS);
    for (uint32_t i = 0; i < a->n_voters; i++)
        FUZZ_CHECK(a->voters[i] == b->voters[i]);
    for (uint32_t i = 0; i < a->n_learners; i++)
        FUZZ_CHECK(a->learners[i] == b->learners[i]);
}

static void same_message(const struct raft_message *a, const struct raft_message *b)
{
    FUZZ_CHECK(a->type == b->type && a->reject == b->reject);
    FUZZ_CHECK(a->from == b->from && a->to == b->to && a->term == b->term);
    FUZZ_CHECK(a->log_term == b->log_term && a->index == b->index && a->commit == b->commit);
    FUZZ_CHECK(a->reject_hint == b->reject_hint);
    FUZZ_CHECK(a->n_entries == b->n_entries);
    for (size_t i = 0; i < a->n_entries; i++) {
        const struct raft_entry *x = &a->entries[i], *y = &b->entries[i];
        FUZZ_CHECK(x->term == y->term && x->index == y->index && x->type == y->type);
        FUZZ_CHECK(x->len == y->len && (x->len == 0 || memcmp(x->data, y->data, x->len) == 0));
    }
    FUZZ_CHECK(a->context_len == b->context_len);
    FUZZ_CHECK(a->context_len == 0 || memcmp(a->context, b->context, a->context_len) == 0);
    FUZZ_CHECK((a->snapshot == NULL) == (b->snapshot == NULL));
    if (a->snapshot) {
        FUZZ_CHECK(a->snapshot->index == b->snapshot->index && a->snapshot->term == b->snapshot->term);
        same_conf(&a->snapshot->conf_state, &b->snapshot->conf_state);
    }
}

/* The applier's decoding of one committed entry (daemon/node.c). */
static void apply_entry(const struct raft_entry *e)
{
    if (e->type == RAFT_ENTRY_CONF_CHANGE) {
        struct raft_conf_change cc;
        if (raft_conf_change_decode(e->data, e->len, &cc) == 0 && cc.context_len) {
            FUZZ_CHECK(cc.context != NULL);
            Cairnint__MemberChange *mc = cairnint__member_change__unpack(NULL, cc.context_len, cc.context);
            if (mc)
                cairnint__member_change__free_unpacked(mc, NULL);
        }
        return;
    }
    if (e->len == 0)
        return;
    struct kvconv_arena a;
    kvconv_arena_init(&a);
    Cairnint__RaftRequest *rr = kvconv_entry_unpack(e->data, e->len, &a, NULL, 0); /* as node.c applies */
    if (!rr) {
        kvconv_arena_free(&a);
        return;
    }
    struct mvcc_request out;
    int rc = kvconv_entry_req(rr, &out, &a);
    FUZZ_CHECK(rc == 0 || rc == -CAIRN_E_MALFORMED);
    if (rc < 0)
        FUZZ_CHECK(out.type == MVCC_REQ_NOOP);
    kvconv_arena_free(&a);
}

static void message(const uint8_t *data, size_t size)
{
    Cairnpeer__Message *pb = cairnpeer__message__unpack(NULL, size, data);
    if (!pb)
        return;
    struct raft_message m;
    struct raftmsg_buf b = RAFTMSG_BUF_INIT;
    int rc = raftmsg_from_pb(pb, &m, &b);
    FUZZ_CHECK(rc == 0 || rc == -CAIRN_E_MALFORMED);
    if (rc == 0) {
        FUZZ_CHECK(m.type != 0);
        FUZZ_CHECK((m.snapshot != NULL) == (m.type == RAFT_MSG_SNAP));
        for (size_t i = 0; i < m.n_entries; i++)
            apply_entry(&m.entries[i]);

        Cairnpeer__Message out;
        struct raftmsg_buf b2 = RAFTMSG_BUF_INIT;
        FUZZ_CHECK(raftmsg_to_pb(&m, &out, &b2) == 0);
        size_t n = cairnpeer__message__get_packed_size(&out);
        uint8_t *buf = malloc(n ? n : 1);
        FUZZ_CHECK(buf != NULL);
        FUZZ_CHECK(cairnpeer__message__pack(&out, buf) == n);
        Cairnpeer__Message *pb2 = cairnpeer__message__unpack(NULL, n, buf);
        FUZZ_CHECK(pb2 != NULL);
        struct raft_message m2;
        struct raftmsg_buf b3 = RAFTMSG_BUF_INIT;
        FUZZ_CHECK(raftmsg_from_pb(pb2, &m2, &b3) == 0);
        same_message(&m, &m2);
        raftmsg_buf_release(&b3);
        cairnpeer__message__free_unpacked(pb2, NULL);
        free(buf);
        raftmsg_buf_release(&b2);
    }
    raftmsg_buf_release(&b);
    cairnpeer__message__free_unpacked(pb, NULL);
}

static void conf_state(const uint8_t *data, size_t size)
{
    struct raft_conf_state cs;
    int rc = raftmsg_conf_decode(data, size, &cs);
    FUZZ_CHECK(rc == 0 || rc == -CAIRN_E_MALFORMED);
    if (rc < 0) {
        FUZZ_CHECK(cs.n_voters == 0 && cs.n_learners == 0);
        return;
    }
    uint8_t *enc;
    size_t len;
    FUZZ_CHECK(raftmsg_conf_encode(&cs, &enc, &len) == 0);
    struct raft_conf_state back;
    FUZZ_CHECK(raftmsg_conf_decode(enc, len, &back) == 0);
    same_conf(&cs, &back);
    free(enc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    message(data, size);
    conf_state(data, size);
    return 0;
}
