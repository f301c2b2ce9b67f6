/* Pre-vote and check-quorum: partitioned members do not disrupt; a leader without a quorum steps down. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "test/unit/raft_testutil.h"

static void test_prevote_runs_before_the_real_election(void **state)
{
    (void)state;
    struct tnet *net = t_new(3, 0, 1, 0);
    assert_int_equal(raft_campaign(net->n[1].r), 0);
    t_ready(net, 1);
    assert_int_equal(t_role(net, 1), RAFT_PRECANDIDATE);
    assert_int_equal(t_status(net, 1).term, 1); /* no term bump yet */
    assert_string_equal(t_msgs(net), "1->2 MsgPreVote t2, 1->3 MsgPreVote t2");
    t_deliver_type(net, RAFT_MSG_PREVOTE);
    assert_string_equal(t_msgs(net), "2->1 MsgPreVoteResp t2, 3->1 MsgPreVoteResp t2");
    assert_int_equal(t_status(net, 2).term, 1); /* granting a pre-vote changes nothing */
    assert_int_equal(t_status(net, 2).vote, 0);
    t_deliver_one(net, 0);
    assert_int_equal(t_role(net, 1), RAFT_CANDIDATE);
    assert_int_equal(t_status(net, 1).term, 2);
    t_stabilize(net);
    assert_int_equal(t_role(net, 1), RAFT_LEADER);
    t_free(net);
}

static void test_partitioned_member_with_prevote_does_not_raise_its_term(void **state)
{
    (void)state;
    struct tnet *net = t_new(3, 0, 1, 0);
    t_elect(net, 1);
    uint64_t term = t_status(net, 1).term;
    t_isolate(net, 3);
    for (int i = 0; i < 100; i++) {
        t_tick(net, 3, 1);
        t_stabilize(net); /* its pre-votes are lost */
    }
    assert_int_equal(t_status(net, 3).term, term);
    t_heal(net);
    t_tick(net, 1, 1);
    t_stabilize(net);
    /* it rejoins without disturbing the leader */
    assert_int_equal(t_role(net, 1), RAFT_LEADER);
    assert_int_equal(t_status(net, 1).term, term);
    assert_int_equal(t_status(net, 3).lead, 1);
    t_free(net);
}

static void test_without_prevote_a_partitioned_member_disrupts_on_return(void **state)
{
    (void)state;
    struct tnet *net = t_new(3, 0, 0, 0);
    t_elect(net, 1);
    uint64_t term = t_status(net, 1).term;
    t_isolate(net, 3);
    for (int i = 0; i < 40; i++) {
        t_tick(net, 3, 1);
        t_stabilize(net);
    }
    assert_true(t_status(net, 3).term > term);
    t_heal(net);
    for (int i = 0; i < 20; i++) {
        for (uint64_t id = 1; id <= 3; id++)
            t_tick(net, id, 1);
        t_stabilize(net);
    }
    /* the contrast that makes pre-vote worth having: the leader was deposed */
    assert_true(t_status(net, 1).term > term);
    t_free(net);
}

static void test_leader_without_quorum_steps_down(void **state)
{
    (void)state;
    struct tnet *net = t_new(3, 0, 1, 1);
    t_elect(net, 1);
    t_isolate(net, 1);
    for (int i = 0; i < 2 * 10; i++) {
        t_tick(net, 1, 1);
        t_stabilize(net);
    }
    assert_int_equal(t_role(net, 1), RAFT_FOLLOWER);
    assert_int_equal(t_status(net, 1).lead, 0);
    t_free(net);
}

static void test_leader_with_quorum_stays(void **state)
{
    (void)state;
    struct tnet *net = t_new(3, 0, 1, 1);
    t_elect(net, 1);
    t_isolate(net, 3);
    for (int i = 0; i < 50; i++) {
        t_tick(net, 1, 1);
        t_stabilize(net);
    }
    assert_int_equal(t_role(net, 1), RAFT_LEADER);
    t_free(net);
}

static void test_leader_lease_ignores_disruptive_vote_request(void **state)
{
    (void)state;
    struct tnet *net = t_new(3, 0, 0, 1);
    t_elect(net, 1);
    uint64_t term = t_status(net, 1).term;
    /* 3 campaigns although the leader is alive (say it was briefly cut off) */
    assert_int_equal(raft_campaign(net->n[3].r), 0);
    t_ready(net, 3);
    t_deliver_type(net, RAFT_MSG_VOTE);
    /* 1 and 2 heard from their leader within the election timeout: no answer at all */
    assert_int_equal(t_count(net, RAFT_MSG_VOTE_RESP, 0), 0);
    assert_int_equal(t_status(net, 2).term, term);
    t_tick(net, 1, 1);
    t_stabilize(net);
    /* the leader's heartbeat is answered with 3's higher term, so it steps down */
    assert_true(t_status(net, 1).term > term);
    assert_int_not_equal(t_role(net, 1), RAFT_LEADER);
    t_free(net);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prevote_runs_before_the_real_election),
        cmocka_unit_test(test_partitioned_member_with_prevote_does_not_raise_its_term),
        cmocka_unit_test(test_without_prevote_a_partitioned_member_disrupts_on_return),
        cmocka_unit_test(test_leader_without_quorum_steps_down),
        cmocka_unit_test(test_leader_with_quorum_stays),
        cmocka_unit_test(test_leader_lease_ignores_disruptive_vote_request),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
