/* Membership: one change at a time, learners, promotion, removing members and the leader. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "test/unit/raft_testutil.h"

static int has(const uint64_t *ids, uint32_t n, uint64_t id)
{
    for (uint32_t i = 0; i < n; i++)
        if (ids[i] == id)
            return 1;
    return 0;
}

static void settle(struct tnet *net, uint64_t leader, int ticks)
{
    for (int i = 0; i < ticks; i++) {
        t_tick(net, leader, 1);
        t_stabilize(net);
    }
}

static void test_conf_change_payload_round_trips(void **state)
{
    (void)state;
    uint8_t buf[64];
    struct raft_conf_change in = { RAFT_CC_ADD_LEARNER, 0x0102030405060708ull, "url", 3 }, out;
    int n = raft_conf_change_encode(&in, buf, sizeof(buf));
    assert_int_equal(n, 15);
    assert_int_equal(buf[0], 0xCA);
    assert_int_equal(buf[4], 0x08); /* little-endian node ID */
    assert_int_equal(raft_conf_change_decode(buf, (size_t)n, &out), 0);
    assert_int_equal(out.type, RAFT_CC_ADD_LEARNER);
    assert_int_equal(out.node_id, in.node_id);
    assert_memory_equal(out.context, "url", 3);
    buf[2] = 9;
    assert_int_equal(raft_conf_change_decode(buf, (size_t)n, &out), -CAIRN_E_MALFORMED);
    assert_int_equal(raft_conf_change_decode(buf, 5, &out), -CAIRN_E_MALFORMED);
    assert_int_equal(raft_conf_change_encode(&in, buf, 4), -ENOSPC);
}

static void test_new_learner_catches_up_but_never_counts(void **state)
{
    (void)state;
    struct tnet *net = t_new(3, 0, 1, 1);
    t_elect(net, 1);
    uint64_t l = t_add_empty(net);
    assert_int_equal(raft_propose_conf_change(net->n[1].r, RAFT_CC_ADD_LEARNER, l, NULL, 0), 0);
    t_stabilize(net);
    settle(net, 1, 3);
    assert_true(has(net->n[l].conf.learners, net->n[l].conf.n_learners, l));
    assert_int_equal(raft_campaign(net->n[l].r), -EINVAL); /* learners never campaign */
    t_propose(net, 1, "to-learner");
    settle(net, 1, 2);
    assert_string_equal(net->n[l].applied, "to-learner");
    /* with two voters down, the learner's ack does not make a quorum */
    t_isolate(net, 2);
    t_isolate(net, 3);
    t_propose(net, 1, "stuck");
    settle(net, 1, 2);
    assert_string_equal(net->n[1].applied, "to-learner");
    /* and it never grants votes that count: ticking it forever does nothing */
    for (int i = 0; i < 50; i++)
        t_tick(net, l, 1);
    assert_int_equal(t_role(net, l), RAFT_FOLLOWER);
    t_free(net);
}

static void test_promoted_learner_votes_and_counts(void **state)
{
    (void)state;
    struct tnet *net = t_new(1, 1, 1, 1); /* voter 1, learner 2 */
    t_elect(net, 1);
    assert_int_equal(raft_propose_conf_change(net->n[1].r, RAFT_CC_PROMOTE, 2, NULL, 0), 0);
    settle(net, 1, 2);
    struct raft_status st = t_status(net, 1);
    assert_int_equal(st.conf.n_voters, 2);
    assert_int_equal(st.conf.n_learners, 0);
    /* two voters now: 1 alone cannot commit */
    t_isolate(net, 2);
    t_propose(net, 1, "needs-2");
    settle(net, 1, 2);
    assert_string_equal(net->n[1].applied, "");
    t_heal(net);
    settle(net, 1, 2);
    assert_string_equal(net->n[1].applied, "needs-2");
    t_free(net);
}

static void test_only_one_conf_change_at_a_time(void **state)
{
    (void)state;
    struct tnet *net = t_new(3, 0, 1, 1);
    t_elect(net, 1);
    assert_int_equal(raft_propose_conf_change(net->n[1].r, RAFT_CC_ADD_LEARNER, 7, NULL, 0), 0);
    assert_int_equal(raft_propose_conf_change(net->n[1].r, RAFT_CC_ADD_LEARNER, 8, NULL, 0),
                     -CAIRN_E_PROPOSAL_DROPPED);
    t_stabilize(net);
    settle(net, 1, 1);
    assert_int_equal(raft_propose_conf_change(net->n[1].r, RAFT_CC_ADD_LEARNER, 8, NULL, 0), 0);
    t_free(net);
}

static void test_invalid_changes_apply_as_no_ops_everywhere(void **state)
{
    (void)state;
    struct tnet *net = t_new(3, 0, 1, 1);
    t_elect(net, 1);
    /* promoting a voter is refused at apply, identically on every member */
    assert_int_equal(raft_propose_conf_change(net->n[1].r, RAFT_CC_PROMOTE, 2, NULL, 0), 0);
    settle(net, 1, 2);
    for (uint64_t i = 1; i <= 3; i++) {
        assert_int_equal(net->n[i].conf.n_voters, 3);
        assert_int_equal(net->n[i].conf.n_learners, 0);
    }
    struct raft_entry bad = { .type = RAFT_ENTRY_CONF_CHANGE, .len = 3, .data = "bad" };
    assert_int_equal(raft_apply_conf_change(net->n[1].r, &bad, NULL, NULL), -CAIRN_E_MALFORMED);
    t_free(net);
}

static void test_removed_follower_stops_campaigning(void **state)
{
    (void)state;
    struct tnet *net = t_new(3, 0, 1, 1);
    t_elect(net, 1);
    assert_int_equal(raft_propose_conf_change(net->n[1].r, RAFT_CC_REMOVE, 3, NULL, 0), 0);
    settle(net, 1, 2);
    assert_int_equal(net->n[3].conf.n_voters, 2); /* 3 applied its own removal */
    uint64_t term = t_status(net, 3).term;
    for (int i = 0; i < 100; i++)
        t_tick(net, 3, 1);
    t_stabilize(net);
    assert_int_equal(t_role(net, 3), RAFT_FOLLOWER);
    assert_int_equal(t_status(net, 3).term, term);
    /* the two left commit alone */
    t_propose(net, 1, "pair");
    settle(net, 1, 2);
    assert_string_equal(net->n[2].applied, "pair");
    t_free(net);
}

static void test_removed_leader_hands_over_and_steps_down(void **state)
{
    (void)state;
    struct tnet *net = t_new(3, 0, 1, 1);
    t_elect(net, 1);
    assert_int_equal(raft_propose_conf_change(net->n[1].r, RAFT_CC_REMOVE, 1, NULL, 0), 0);
    t_stabilize(net);
    assert_int_equal(t_role(net, 1), RAFT_FOLLOWER);
    /* it sent TimeoutNow to a caught-up voter, which won at once */
    uint64_t nl = t_role(net, 2) == RAFT_LEADER ? 2 : 3;
    assert_int_equal(t_role(net, nl), RAFT_LEADER);
    settle(net, nl, 2);
    t_propose(net, nl, "without-1");
    settle(net, nl, 2);
    assert_string_equal(net->n[2].applied, "without-1");
    assert_string_equal(net->n[3].applied, "without-1");
    assert_string_equal(net->n[1].applied, "");
    t_free(net);
}

static void test_new_voter_joins_through_snapshot(void **state)
{
    (void)state;
    struct tnet *net = t_new(3, 0, 1, 1);
    t_elect(net, 1);
    t_propose(net, 1, "before");
    t_stabilize(net);
    uint64_t v = t_add_empty(net);
    assert_int_equal(raft_propose_conf_change(net->n[1].r, RAFT_CC_ADD_VOTER, v, "peer-url", 8), 0);
    settle(net, 1, 4);
    assert_int_equal(net->n[v].snap.index, 1); /* the bootstrap snapshot, then the log */
    assert_string_equal(net->n[v].applied, "before");
    assert_int_equal(t_status(net, 1).conf.n_voters, 4);
    t_free(net);
}

static void test_restart_rebuilds_membership_by_replaying_conf_changes(void **state)
{
    (void)state;
    struct tnet *net = t_new(3, 0, 1, 1);
    t_elect(net, 1);
    uint64_t l = t_add_empty(net);
    assert_int_equal(raft_propose_conf_change(net->n[1].r, RAFT_CC_ADD_LEARNER, l, NULL, 0), 0);
    settle(net, 1, 3);
    t_crash(net, 2);
    t_start(net, 2);
    struct raft_conf_state cs;
    raft_conf_state(net->n[2].r, &cs);
    assert_int_equal(cs.n_learners, 0); /* the snapshot's configuration... */
    assert_int_equal(raft_campaign(net->n[2].r), 0);
    assert_int_equal(t_role(net, 2), RAFT_FOLLOWER); /* deferred: a committed change is unapplied */
    t_ready(net, 2); /* ...until the committed change is replayed */
    raft_conf_state(net->n[2].r, &cs);
    assert_int_equal(cs.n_learners, 1);
    assert_int_equal(cs.learners[0], l);
    t_free(net);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conf_change_payload_round_trips),
        cmocka_unit_test(test_new_learner_catches_up_but_never_counts),
        cmocka_unit_test(test_promoted_learner_votes_and_counts),
        cmocka_unit_test(test_only_one_conf_change_at_a_time),
        cmocka_unit_test(test_invalid_changes_apply_as_no_ops_everywhere),
        cmocka_unit_test(test_removed_follower_stops_campaigning),
        cmocka_unit_test(test_removed_leader_hands_over_and_steps_down),
        cmocka_unit_test(test_new_voter_joins_through_snapshot),
        cmocka_unit_test(test_restart_rebuilds_membership_by_replaying_conf_changes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
