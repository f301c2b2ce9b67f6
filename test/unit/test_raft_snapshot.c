/* Snapshots: compaction behind the application's snapshot, sending one to a lagging follower, install, restart. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "test/unit/raft_testutil.h"

/* The application snapshots id's state machine at its applied index. */
static int snapshot_now(struct tnet *net, uint64_t id, uint64_t keep)
{
    struct tnode *n = &net->n[id];
    struct raft_snapshot_meta meta = { .index = n->applied_index, .conf_state = n->conf };
    meta.term = n->applied_index == n->snap.index ? n->snap.term : n->log[n->applied_index - n->snap.index - 1].term;
    int rc = raft_compact(n->r, &meta, keep);
    if (rc == 0) {
        /* persist the snapshot; stored entries it covers may go */
        size_t drop = (size_t)(meta.index - n->snap.index);
        for (size_t i = 0; i < drop; i++)
            free((void *)n->log[i].data);
        memmove(n->log, n->log + drop, (n->nlog - drop) * sizeof(n->log[0]));
        n->nlog -= drop;
        n->snap = meta;
        strcpy(n->snap_data, n->applied);
    }
    return rc;
}

static void test_compaction_drops_log_behind_snapshot(void **state)
{
    (void)state;
    struct tnet *net = t_new(3, 0, 1, 1);
    t_elect(net, 1);
    for (int i = 0; i < 10; i++)
        t_propose(net, 1, "e");
    t_stabilize(net);
    assert_int_equal(t_status(net, 1).applied, 12);
    assert_int_equal(snapshot_now(net, 1, 4), 0);
    struct raft_status st = t_status(net, 1);
    assert_int_equal(st.snapshot_index, 12);
    assert_int_equal(st.first_index, 9); /* keeps 4 entries for catch-up */
    t_free(net);
}

static void test_compact_rejects_bad_requests(void **state)
{
    (void)state;
    struct tnet *net = t_new(3, 0, 1, 1);
    t_elect(net, 1);
    t_propose(net, 1, "e");
    t_stabilize(net);
    struct raft_snapshot_meta m = { .index = 50, .term = 2, .conf_state = net->n[1].conf };
    assert_int_equal(raft_compact(net->n[1].r, &m, 0), -EINVAL);     /* beyond applied */
    m.index = 3;
    m.term = 9;
    assert_int_equal(raft_compact(net->n[1].r, &m, 0), -EINVAL);     /* wrong term */
    m.term = 2;
    assert_int_equal(raft_compact(net->n[1].r, &m, 0), 0);
    m.index = 2;
    assert_int_equal(raft_compact(net->n[1].r, &m, 0), -CAIRN_E_SNAPSHOT_TOO_OLD);
    t_free(net);
}

static void test_lagging_follower_gets_snapshot_then_entries(void **state)
{
    (void)state;
    struct tnet *net = t_new(3, 0, 1, 1);
    t_elect(net, 1);
    t_isolate(net, 3);
    for (int i = 0; i < 20; i++)
        t_propose(net, 1, "s");
    t_stabilize(net);
    assert_int_equal(snapshot_now(net, 1, 0), 0);
    t_heal(net);
    t_propose(net, 1, "after");
    t_tick(net, 1, 1); /* 3 answers the heartbeat, so it counts as recently active */
    int snaps = 0;
    for (int rounds = 0; net->nq && rounds < 10000; rounds++) {
        if (net->q[0].m.type == RAFT_MSG_SNAP) {
            snaps++;
            assert_int_equal(net->q[0].m.snapshot->index, 22);
        }
        t_deliver_one(net, 0);
    }
    assert_int_equal(snaps, 1);
    assert_int_equal(net->n[3].snap.index, 22); /* installed and persisted */
    t_tick(net, 1, 1);
    t_stabilize(net);
    assert_string_equal(net->n[3].applied, net->n[1].applied);
    assert_non_null(strstr(net->n[3].applied, "after"));
    t_free(net);
}

static void test_failed_snapshot_is_retried(void **state)
{
    (void)state;
    struct tnet *net = t_new(3, 0, 1, 1);
    t_elect(net, 1);
    t_isolate(net, 3);
    for (int i = 0; i < 5; i++)
        t_propose(net, 1, "s");
    t_stabilize(net);
    assert_int_equal(snapshot_now(net, 1, 0), 0);
    t_heal(net);
    t_tick(net, 1, 1);
    for (int i = 0; i < 100 && !t_count(net, RAFT_MSG_SNAP, 1); i++)
        t_deliver_one(net, 0);
    assert_int_equal(t_count(net, RAFT_MSG_SNAP, 1), 1);
    t_drop(net, RAFT_MSG_SNAP);
    /* while the transfer is out, nothing more is sent to 3 */
    struct raft_status st = t_status(net, 1);
    for (uint32_t i = 0; i < st.n_progress; i++)
        if (st.progress[i].id == 3)
            assert_int_equal(st.progress[i].state, RAFT_PROGRESS_SNAPSHOT);
    assert_int_equal(raft_report_snapshot(net->n[1].r, 3, 0), 0);
    st = t_status(net, 1);
    for (uint32_t i = 0; i < st.n_progress; i++)
        if (st.progress[i].id == 3)
            assert_int_equal(st.progress[i].state, RAFT_PROGRESS_PROBE);
    for (int i = 0; i < 3; i++) {
        t_tick(net, 1, 1);
        t_stabilize(net);
    }
    assert_int_equal(net->n[3].snap.index, 7);
    assert_string_equal(net->n[3].applied, net->n[1].applied);
    t_free(net);
}

static void test_stale_snapshot_is_ignored(void **state)
{
    (void)state;
    struct tnet *net = t_new(3, 0, 1, 1);
    t_elect(net, 1);
    t_propose(net, 1, "a");
    t_stabilize(net);
    struct raft_snapshot_meta old = { .index = 2, .term = 2, .conf_state = net->n[2].conf };
    struct raft_message m = { .type = RAFT_MSG_SNAP, .from = 1, .to = 2, .term = 2, .snapshot = &old };
    assert_int_equal(raft_step(net->n[2].r, &m), 0);
    struct raft_ready rd;
    assert_int_equal(raft_ready(net->n[2].r, &rd), 0);
    assert_null(rd.snapshot);
    assert_int_equal(rd.n_msgs, 1);
    assert_int_equal(rd.msgs[0].type, RAFT_MSG_APP_RESP);
    assert_int_equal(rd.msgs[0].index, 3); /* tells the leader where it really is */
    assert_int_equal(raft_advance(net->n[2].r, &rd), 0);
    t_free(net);
}

static void test_restart_from_snapshot_and_entries(void **state)
{
    (void)state;
    struct tnet *net = t_new(3, 0, 1, 1);
    t_elect(net, 1);
    t_propose(net, 1, "a");
    t_propose(net, 1, "b");
    t_stabilize(net);
    assert_int_equal(snapshot_now(net, 2, 0), 0);
    t_propose(net, 1, "c");
    t_stabilize(net);
    t_tick(net, 1, 1);
    t_stabilize(net);
    t_crash(net, 2);
    t_start(net, 2);
    assert_string_equal(net->n[2].applied, "a,b"); /* from the snapshot */
    t_ready(net, 2);
    assert_string_equal(net->n[2].applied, "a,b,c"); /* replayed after it */
    assert_int_equal(t_status(net, 2).first_index, 5);
    t_free(net);
}

static void test_ready_api_misuse_is_refused(void **state)
{
    (void)state;
    struct tnet *net = t_new(1, 0, 0, 0);
    assert_int_equal(raft_campaign(net->n[1].r), 0);
    struct raft_ready rd;
    assert_int_equal(raft_ready(net->n[1].r, &rd), 0);
    assert_int_equal(raft_tick(net->n[1].r), -EBUSY);
    assert_int_equal(raft_propose(net->n[1].r, "x", 1), -EBUSY);
    assert_int_equal(raft_ready(net->n[1].r, &rd), -EBUSY);
    assert_int_equal(raft_advance(net->n[1].r, &rd), 0);
    assert_int_equal(raft_advance(net->n[1].r, &rd), -EINVAL);
    t_free(net);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_compaction_drops_log_behind_snapshot),
        cmocka_unit_test(test_compact_rejects_bad_requests),
        cmocka_unit_test(test_lagging_follower_gets_snapshot_then_entries),
        cmocka_unit_test(test_failed_snapshot_is_retried),
        cmocka_unit_test(test_stale_snapshot_is_ignored),
        cmocka_unit_test(test_restart_from_snapshot_and_entries),
        cmocka_unit_test(test_ready_api_misuse_is_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
