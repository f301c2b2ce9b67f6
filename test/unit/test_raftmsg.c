/*
 * daemon/raftmsg: every Raft message type survives raft -> protobuf -> wire
 * bytes -> protobuf -> raft unchanged (entries, snapshot metadata, context,
 * the rejected MsgAppResp's hint term), and everything a hostile peer could
 * send that raft must never see is refused with CAIRN_E_MALFORMED.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "daemon/raftmsg.h"

/* Encode m as bytes the way the node would send it. */
static uint8_t *encode(const struct raft_message *m, size_t *len)
{
    struct raftmsg_buf b = RAFTMSG_BUF_INIT;
    Cairnpeer__Message pb;
    assert_int_equal(raftmsg_to_pb(m, &pb, &b), 0);
    *len = cairnpeer__message__get_packed_size(&pb);
    uint8_t *out = malloc(*len ? *len : 1);
    assert_non_null(out);
    cairnpeer__message__pack(&pb, out);
    raftmsg_buf_release(&b);
    return out;
}

static void assert_same_entries(const struct raft_entry *a, const struct raft_entry *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(a[i].term, b[i].term);
        assert_int_equal(a[i].index, b[i].index);
        assert_int_equal(a[i].type, b[i].type);
        assert_int_equal(a[i].len, b[i].len);
        if (a[i].len)
            assert_memory_equal(a[i].data, b[i].data, a[i].len);
        else
            assert_null(b[i].data);
    }
}

static void assert_same_conf(const struct raft_conf_state *a, const struct raft_conf_state *b)
{
    assert_int_equal(a->n_voters, b->n_voters);
    assert_int_equal(a->n_learners, b->n_learners);
    for (uint32_t i = 0; i < a->n_voters; i++)
        assert_int_equal(a->voters[i], b->voters[i]);
    for (uint32_t i = 0; i < a->n_learners; i++)
        assert_int_equal(a->learners[i], b->learners[i]);
}

/* m -> bytes -> m2, then every field compared. */
static void round_trip(const struct raft_message *m)
{
    size_t len;
    uint8_t *bytes = encode(m, &len);
    Cairnpeer__Message *pb = cairnpeer__message__unpack(NULL, len, bytes);
    assert_non_null(pb);
    struct raftmsg_buf b = RAFTMSG_BUF_INIT;
    struct raft_message m2;
    assert_int_equal(raftmsg_from_pb(pb, &m2, &b), 0);

    assert_int_equal(m2.type, m->type);
    assert_int_equal(m2.reject, m->reject ? 1 : 0);
    assert_int_equal(m2.from, m->from);
    assert_int_equal(m2.to, m->to);
    assert_int_equal(m2.term, m->term);
    assert_int_equal(m2.log_term, m->log_term);
    assert_int_equal(m2.index, m->index);
    assert_int_equal(m2.commit, m->commit);
    assert_int_equal(m2.reject_hint, m->reject_hint);
    assert_int_equal(m2.commit_only, m->commit_only ? 1 : 0);
    assert_int_equal(m2.n_entries, m->n_entries);
    assert_same_entries(m->entries, m2.entries, m->n_entries);
    assert_int_equal(m2.context_len, m->context_len);
    if (m->context_len)
        assert_memory_equal(m2.context, m->context, m->context_len);
    else
        assert_null(m2.context);
    if (m->type == RAFT_MSG_SNAP) {
        assert_non_null(m2.snapshot);
        assert_int_equal(m2.snapshot->index, m->snapshot->index);
        assert_int_equal(m2.snapshot->term, m->snapshot->term);
        assert_same_conf(&m->snapshot->conf_state, &m2.snapshot->conf_state);
    } else {
        assert_null(m2.snapshot);
    }
    raftmsg_buf_release(&b);
    cairnpeer__message__free_unpacked(pb, NULL);
    free(bytes);
}

static void test_every_message_type_round_trips(void **state)
{
    (void)state;
    static const char d1[] = "put a 1", d2[] = "\xCA\x01\x01";
    struct raft_entry ents[] = {
        {.term = 7, .index = 41, .type = RAFT_ENTRY_NORMAL, .len = 0, .data = NULL},
        {.term = 7, .index = 42, .type = RAFT_ENTRY_NORMAL, .len = sizeof(d1), .data = d1},
        {.term = 8, .index = 43, .type = RAFT_ENTRY_CONF_CHANGE, .len = 3, .data = d2},
    };
    struct raft_snapshot_meta snap = {.index = 1000, .term = 6};
    snap.conf_state.n_voters = 3;
    snap.conf_state.voters[0] = 1;
    snap.conf_state.voters[1] = 0xfeedfacecafebeefULL;
    snap.conf_state.voters[2] = 3;
    snap.conf_state.n_learners = 1;
    snap.conf_state.learners[0] = 9;

    for (uint32_t t = RAFT_MSG_APP; t <= RAFT_MSG_TYPE_MAX; t++) {
        struct raft_message m = {.type = t, .from = 0x1111, .to = 0x2222, .term = 8,
                                 .log_term = 7, .index = 40, .commit = 39};
        /* Every type once bare (MsgSnap needs its metadata), once with
         * everything it can carry. */
        if (t == RAFT_MSG_SNAP)
            m.snapshot = &snap;
        round_trip(&m);
        if (t == RAFT_MSG_APP || t == RAFT_MSG_PROP) {
            m.entries = ents;
            m.n_entries = 3;
        }
        if (t == RAFT_MSG_SNAP)
            m.snapshot = &snap;
        if (t == RAFT_MSG_HEARTBEAT || t == RAFT_MSG_HEARTBEAT_RESP || t == RAFT_MSG_READ_INDEX ||
            t == RAFT_MSG_READ_INDEX_RESP || t == RAFT_MSG_VOTE) {
            m.context = "ctx-0042";
            m.context_len = 8;
        }
        if (t == RAFT_MSG_VOTE_RESP || t == RAFT_MSG_PREVOTE_RESP)
            m.reject = 1;
        round_trip(&m);
    }
}

static void test_type_mapping_is_explicit_where_the_enums_differ(void **state)
{
    (void)state;
    assert_int_equal(raftmsg_type_to_pb(RAFT_MSG_TIMEOUT_NOW), CAIRNPEER__MESSAGE_TYPE__MSG_TIMEOUT_NOW);
    assert_int_equal(raftmsg_type_to_pb(RAFT_MSG_TRANSFER_LEADER),
                     CAIRNPEER__MESSAGE_TYPE__MSG_TRANSFER_LEADER);
    assert_int_equal(raftmsg_type_from_pb(CAIRNPEER__MESSAGE_TYPE__MSG_TIMEOUT_NOW), RAFT_MSG_TIMEOUT_NOW);
    assert_int_equal(raftmsg_type_from_pb(CAIRNPEER__MESSAGE_TYPE__MSG_TRANSFER_LEADER),
                     RAFT_MSG_TRANSFER_LEADER);
    assert_int_equal(raftmsg_type_from_pb(CAIRNPEER__MESSAGE_TYPE__MSG_SNAP_STATUS), 0);
    assert_int_equal(raftmsg_type_from_pb(CAIRNPEER__MESSAGE_TYPE__MSG_UNREACHABLE), 0);
    assert_int_equal(raftmsg_type_to_pb(0), CAIRNPEER__MESSAGE_TYPE__MSG_UNKNOWN);
    assert_int_equal(raftmsg_type_to_pb(RAFT_MSG_TYPE_MAX + 1), CAIRNPEER__MESSAGE_TYPE__MSG_UNKNOWN);
    /* Every raft type maps to a distinct wire type and back. */
    for (uint32_t t = RAFT_MSG_APP; t <= RAFT_MSG_TYPE_MAX; t++) {
        assert_int_not_equal(raftmsg_type_to_pb(t), CAIRNPEER__MESSAGE_TYPE__MSG_UNKNOWN);
        assert_int_equal(raftmsg_type_from_pb(raftmsg_type_to_pb(t)), t);
    }
}

static void test_rejected_app_resp_carries_the_hint_term_in_its_own_field(void **state)
{
    (void)state;
    struct raft_message m = {.type = RAFT_MSG_APP_RESP, .from = 2, .to = 1, .term = 5,
                             .index = 100, .reject = 1, .reject_hint = 77, .log_term = 4};
    struct raftmsg_buf b = RAFTMSG_BUF_INIT;
    Cairnpeer__Message pb;
    assert_int_equal(raftmsg_to_pb(&m, &pb, &b), 0);
    assert_true(pb.reject);
    assert_int_equal(pb.reject_hint, 77);
    assert_int_equal(pb.reject_hint_term, 4);
    assert_int_equal(pb.log_term, 0);
    round_trip(&m);

    /* An accepted MsgAppResp keeps log_term as log_term. */
    m.reject = 0;
    m.reject_hint = 0;
    assert_int_equal(raftmsg_to_pb(&m, &pb, &b), 0);
    assert_int_equal(pb.log_term, 4);
    assert_int_equal(pb.reject_hint_term, 0);
    round_trip(&m);
    raftmsg_buf_release(&b);
}

/* A commit notice keeps its mark; a mark on anything else (from a confused or hostile peer) is dropped. */
static void test_a_commit_notice_is_marked_on_the_wire(void **state)
{
    (void)state;
    struct raft_message m = {.type = RAFT_MSG_APP, .from = 1, .to = 2, .term = 5, .index = 100, .log_term = 5,
                             .commit = 100, .commit_only = 1};
    struct raftmsg_buf b = RAFTMSG_BUF_INIT;
    Cairnpeer__Message pb;
    assert_int_equal(raftmsg_to_pb(&m, &pb, &b), 0);
    assert_true(pb.commit_only);
    round_trip(&m);
    m.commit_only = 0;
    round_trip(&m);

    struct raft_message out;
    struct raftmsg_buf b2 = RAFTMSG_BUF_INIT;
    static const char d[] = "x";
    Cairnpeer__Entry e = CAIRNPEER__ENTRY__INIT, *ep = &e;
    e.term = 5;
    e.index = 101;
    e.data.data = (uint8_t *)d;
    e.data.len = 1;
    pb.commit_only = 1;
    pb.n_entries = 1;
    pb.entries = &ep;
    assert_int_equal(raftmsg_from_pb(&pb, &out, &b2), 0);
    assert_int_equal(out.commit_only, 0); /* entries must be answered */
    pb.n_entries = 0;
    pb.entries = NULL;
    pb.type = CAIRNPEER__MESSAGE_TYPE__MSG_HEARTBEAT;
    assert_int_equal(raftmsg_from_pb(&pb, &out, &b2), 0);
    assert_int_equal(out.commit_only, 0);
    raftmsg_buf_release(&b2);
    raftmsg_buf_release(&b);
}

static void test_a_buffer_is_reused_across_conversions(void **state)
{
    (void)state;
    struct raft_entry ents[4] = {{.term = 1, .index = 1}, {.term = 1, .index = 2},
                                 {.term = 1, .index = 3}, {.term = 1, .index = 4}};
    struct raft_message m = {.type = RAFT_MSG_APP, .from = 1, .to = 2, .entries = ents, .n_entries = 4};
    struct raftmsg_buf b = RAFTMSG_BUF_INIT;
    Cairnpeer__Message pb;
    assert_int_equal(raftmsg_to_pb(&m, &pb, &b), 0);
    void *mem = b.mem;
    m.n_entries = 2;
    assert_int_equal(raftmsg_to_pb(&m, &pb, &b), 0);
    assert_ptr_equal(b.mem, mem);
    assert_int_equal(pb.n_entries, 2);
    assert_int_equal(pb.entries[1]->index, 2);
    m.n_entries = 0;
    m.type = RAFT_MSG_HEARTBEAT;
    assert_int_equal(raftmsg_to_pb(&m, &pb, &b), 0);
    assert_int_equal(pb.n_entries, 0);
    assert_null(pb.entries);
    raftmsg_buf_release(&b);
    assert_null(b.mem);
    assert_int_equal(b.cap, 0);
}

static void test_to_pb_refuses_what_raft_cannot_produce(void **state)
{
    (void)state;
    struct raftmsg_buf b = RAFTMSG_BUF_INIT;
    Cairnpeer__Message pb;
    struct raft_message m = {.type = 0, .from = 1, .to = 2};
    assert_int_equal(raftmsg_to_pb(&m, &pb, &b), -EINVAL);
    m.type = RAFT_MSG_TYPE_MAX + 1;
    assert_int_equal(raftmsg_to_pb(&m, &pb, &b), -EINVAL);
    m.type = RAFT_MSG_SNAP; /* without metadata */
    assert_int_equal(raftmsg_to_pb(&m, &pb, &b), -EINVAL);
    struct raft_entry e = {.term = 1, .index = 1, .type = 7};
    m.type = RAFT_MSG_APP;
    m.entries = &e;
    m.n_entries = 1;
    assert_int_equal(raftmsg_to_pb(&m, &pb, &b), -EINVAL);
    raftmsg_buf_release(&b);
}

/* pb (built by hand, as a hostile peer could) must be refused. */
static void assert_malformed(const Cairnpeer__Message *pb)
{
    /* Through the wire too, so unpack's view of the same bytes is checked. */
    size_t len = cairnpeer__message__get_packed_size(pb);
    uint8_t *bytes = malloc(len ? len : 1);
    assert_non_null(bytes);
    cairnpeer__message__pack(pb, bytes);
    struct raftmsg_buf b = RAFTMSG_BUF_INIT;
    struct raft_message m;
    assert_int_equal(raftmsg_from_pb(pb, &m, &b), -CAIRN_E_MALFORMED);
    Cairnpeer__Message *back = cairnpeer__message__unpack(NULL, len, bytes);
    if (back) {
        assert_int_equal(raftmsg_from_pb(back, &m, &b), -CAIRN_E_MALFORMED);
        cairnpeer__message__free_unpacked(back, NULL);
    }
    raftmsg_buf_release(&b);
    free(bytes);
}

static void test_hostile_messages_are_malformed(void **state)
{
    (void)state;
    Cairnpeer__Message pb = CAIRNPEER__MESSAGE__INIT;
    pb.from = 1;
    pb.to = 2;

    /* Zero, local-only and out-of-range types. */
    pb.type = CAIRNPEER__MESSAGE_TYPE__MSG_UNKNOWN;
    assert_malformed(&pb);
    pb.type = CAIRNPEER__MESSAGE_TYPE__MSG_SNAP_STATUS;
    assert_malformed(&pb);
    pb.type = CAIRNPEER__MESSAGE_TYPE__MSG_UNREACHABLE;
    assert_malformed(&pb);
    pb.type = (Cairnpeer__MessageType)999;
    assert_malformed(&pb);

    /* MsgSnap without metadata. */
    pb.type = CAIRNPEER__MESSAGE_TYPE__MSG_SNAP;
    assert_malformed(&pb);

    /* Too many voters, too many learners, ID 0, a repeated ID, voter and learner at once. */
    uint64_t ids[RAFT_MAX_MEMBERS + 1];
    for (size_t i = 0; i <= RAFT_MAX_MEMBERS; i++)
        ids[i] = i + 1;
    Cairnpeer__ConfState cs = CAIRNPEER__CONF_STATE__INIT;
    Cairnpeer__SnapshotMetadata meta = CAIRNPEER__SNAPSHOT_METADATA__INIT;
    meta.conf_state = &cs;
    meta.index = 10;
    meta.term = 2;
    pb.snapshot = &meta;
    cs.voters = ids;
    cs.n_voters = RAFT_MAX_MEMBERS + 1;
    assert_malformed(&pb);
    cs.n_voters = 0;
    cs.learners = ids;
    cs.n_learners = RAFT_MAX_MEMBERS + 1;
    assert_malformed(&pb);
    uint64_t zero[] = {3, 0};
    cs.learners = NULL;
    cs.n_learners = 0;
    cs.voters = zero;
    cs.n_voters = 2;
    assert_malformed(&pb);
    uint64_t dup[] = {3, 4, 3};
    cs.voters = dup;
    cs.n_voters = 3;
    assert_malformed(&pb);
    uint64_t v[] = {1, 2}, l[] = {2};
    cs.voters = v;
    cs.n_voters = 2;
    cs.learners = l;
    cs.n_learners = 1;
    assert_malformed(&pb);
    /* The same metadata with a sane configuration is fine. */
    cs.n_learners = 0;
    struct raftmsg_buf b = RAFTMSG_BUF_INIT;
    struct raft_message m;
    assert_int_equal(raftmsg_from_pb(&pb, &m, &b), 0);
    assert_int_equal(m.snapshot->conf_state.n_voters, 2);
    raftmsg_buf_release(&b);
    pb.snapshot = NULL;

    /* An entry type that is neither normal nor a conf change. */
    Cairnpeer__Entry e = CAIRNPEER__ENTRY__INIT;
    e.type = (Cairnpeer__EntryType)2;
    Cairnpeer__Entry *ep[] = {&e};
    pb.type = CAIRNPEER__MESSAGE_TYPE__MSG_APP;
    pb.entries = ep;
    pb.n_entries = 1;
    assert_malformed(&pb);
    e.type = (Cairnpeer__EntryType)-1;
    assert_malformed(&pb);
    pb.entries = NULL;
    pb.n_entries = 0;

    /* A context too big to be a read request. */
    static uint8_t big[RAFTMSG_MAX_CONTEXT + 1];
    pb.type = CAIRNPEER__MESSAGE_TYPE__MSG_READ_INDEX;
    pb.context.data = big;
    pb.context.len = sizeof(big);
    assert_malformed(&pb);
}

static void test_absurd_entry_counts_are_malformed(void **state)
{
    (void)state;
    /* Built directly: an envelope with this many entries would be ~2 MiB on the wire. */
    size_t n = RAFTMSG_MAX_ENTRIES + 1;
    Cairnpeer__Entry e = CAIRNPEER__ENTRY__INIT;
    Cairnpeer__Entry **ep = malloc(n * sizeof(*ep));
    assert_non_null(ep);
    for (size_t i = 0; i < n; i++)
        ep[i] = &e;
    Cairnpeer__Message pb = CAIRNPEER__MESSAGE__INIT;
    pb.type = CAIRNPEER__MESSAGE_TYPE__MSG_APP;
    pb.from = 1;
    pb.to = 2;
    pb.entries = ep;
    pb.n_entries = n;
    struct raftmsg_buf b = RAFTMSG_BUF_INIT;
    struct raft_message m;
    assert_int_equal(raftmsg_from_pb(&pb, &m, &b), -CAIRN_E_MALFORMED);
    pb.n_entries = RAFTMSG_MAX_ENTRIES;
    assert_int_equal(raftmsg_from_pb(&pb, &m, &b), 0);
    assert_int_equal(m.n_entries, RAFTMSG_MAX_ENTRIES);
    raftmsg_buf_release(&b);
    free(ep);
}

static void test_a_snapshot_field_on_another_type_is_ignored(void **state)
{
    (void)state;
    Cairnpeer__ConfState cs = CAIRNPEER__CONF_STATE__INIT;
    Cairnpeer__SnapshotMetadata meta = CAIRNPEER__SNAPSHOT_METADATA__INIT;
    meta.conf_state = &cs;
    Cairnpeer__Message pb = CAIRNPEER__MESSAGE__INIT;
    pb.type = CAIRNPEER__MESSAGE_TYPE__MSG_HEARTBEAT;
    pb.snapshot = &meta;
    struct raftmsg_buf b = RAFTMSG_BUF_INIT;
    struct raft_message m;
    assert_int_equal(raftmsg_from_pb(&pb, &m, &b), 0);
    assert_null(m.snapshot);
    raftmsg_buf_release(&b);
}

static void test_conf_state_round_trips(void **state)
{
    (void)state;
    struct raft_conf_state cs = {0}, back;
    uint8_t *bytes;
    size_t len;
    /* Empty. */
    assert_int_equal(raftmsg_conf_encode(&cs, &bytes, &len), 0);
    assert_non_null(bytes);
    assert_int_equal(raftmsg_conf_decode(bytes, len, &back), 0);
    assert_same_conf(&cs, &back);
    free(bytes);
    /* Full. */
    cs.n_voters = RAFT_MAX_MEMBERS;
    cs.n_learners = RAFT_MAX_MEMBERS;
    for (uint32_t i = 0; i < RAFT_MAX_MEMBERS; i++) {
        cs.voters[i] = 0x100 + i;
        cs.learners[i] = UINT64_MAX - i;
    }
    assert_int_equal(raftmsg_conf_encode(&cs, &bytes, &len), 0);
    assert_int_equal(raftmsg_conf_decode(bytes, len, &back), 0);
    assert_same_conf(&cs, &back);
    /* Every truncation is refused or decodes to something sane, never crashes. */
    for (size_t i = 0; i < len; i++) {
        int rc = raftmsg_conf_decode(bytes, i, &back);
        assert_true(rc == 0 || rc == -CAIRN_E_MALFORMED);
        assert_true(back.n_voters <= RAFT_MAX_MEMBERS && back.n_learners <= RAFT_MAX_MEMBERS);
    }
    free(bytes);

    cs.n_voters = RAFT_MAX_MEMBERS + 1;
    assert_int_equal(raftmsg_conf_encode(&cs, &bytes, &len), -EINVAL);
    assert_null(bytes);
}

static void test_conf_decode_refuses_bad_bytes(void **state)
{
    (void)state;
    struct raft_conf_state cs;
    static const uint8_t garbage[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
    assert_int_equal(raftmsg_conf_decode(garbage, sizeof(garbage), &cs), -CAIRN_E_MALFORMED);
    assert_int_equal(cs.n_voters, 0);

    /* Seventeen voters, encoded by protobuf-c itself. */
    uint64_t ids[RAFT_MAX_MEMBERS + 1];
    for (size_t i = 0; i <= RAFT_MAX_MEMBERS; i++)
        ids[i] = i + 1;
    Cairnpeer__ConfState pb = CAIRNPEER__CONF_STATE__INIT;
    pb.voters = ids;
    pb.n_voters = RAFT_MAX_MEMBERS + 1;
    uint8_t buf[256];
    size_t n = cairnpeer__conf_state__pack(&pb, buf);
    assert_int_equal(raftmsg_conf_decode(buf, n, &cs), -CAIRN_E_MALFORMED);
    assert_int_equal(cs.n_voters, 0);
}

static void test_random_bytes_never_crash_the_decoder(void **state)
{
    (void)state;
    srand(12345);
    uint8_t buf[512];
    struct raftmsg_buf b = RAFTMSG_BUF_INIT;
    for (int iter = 0; iter < 20000; iter++) {
        size_t len = (size_t)(rand() % (int)sizeof(buf));
        for (size_t i = 0; i < len; i++)
            buf[i] = (uint8_t)rand();
        Cairnpeer__Message *pb = cairnpeer__message__unpack(NULL, len, buf);
        if (pb) {
            struct raft_message m;
            int rc = raftmsg_from_pb(pb, &m, &b);
            assert_true(rc == 0 || rc == -CAIRN_E_MALFORMED);
            if (rc == 0) {
                assert_true(m.type >= RAFT_MSG_APP && m.type <= RAFT_MSG_TYPE_MAX);
                assert_true(m.type != RAFT_MSG_SNAP || m.snapshot);
            }
            cairnpeer__message__free_unpacked(pb, NULL);
        }
        struct raft_conf_state cs;
        int rc = raftmsg_conf_decode(buf, len, &cs);
        assert_true(rc == 0 || rc == -CAIRN_E_MALFORMED);
    }
    raftmsg_buf_release(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_message_type_round_trips),
        cmocka_unit_test(test_type_mapping_is_explicit_where_the_enums_differ),
        cmocka_unit_test(test_rejected_app_resp_carries_the_hint_term_in_its_own_field),
        cmocka_unit_test(test_a_commit_notice_is_marked_on_the_wire),
        cmocka_unit_test(test_a_buffer_is_reused_across_conversions),
        cmocka_unit_test(test_to_pb_refuses_what_raft_cannot_produce),
        cmocka_unit_test(test_hostile_messages_are_malformed),
        cmocka_unit_test(test_absurd_entry_counts_are_malformed),
        cmocka_unit_test(test_a_snapshot_field_on_another_type_is_ignored),
        cmocka_unit_test(test_conf_state_round_trips),
        cmocka_unit_test(test_conf_decode_refuses_bad_bytes),
        cmocka_unit_test(test_random_bytes_never_crash_the_decoder),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
