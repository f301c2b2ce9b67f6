/* Raft leader election: votes, terms, the up-to-date check, randomized timeouts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "test/unit/raft_testutil.h"

static void test_candidate_with_majority_of_votes_becomes_leader(void **state)
{
    (void)state;
    struct tnet *net = t_new(3, 0, 0, 0);
    assert_int_equal(raft_campaign(net->n[1].r), 0);
    t_ready(net, 1);
    assert_string_equal(t_msgs(net), "1->2 MsgVote t2, 1->3 MsgVote t2");
    assert_int_equal(t_role(net, 1), RAFT_CANDIDATE);
    t_deliver_type(net, RAFT_MSG_VOTE);
    assert_string_equal(t_msgs(net), "2->1 MsgVoteResp t2, 3->1 MsgVoteResp t2");
    t_deliver_one(net, 0);
    assert_int_equal(t_role(net, 1), RAFT_LEADER);
    t_stabilize(net);
    assert_int_equal(t_status(net, 1).commit, 2); /* the new leader's empty entry */
    t_tick(net, 1, 1); /* a heartbeat carries the commit index to everyone */
    t_stabilize(net);
    for (uint64_t i = 1; i <= 3; i++) {
        assert_int_equal(t_status(net, i).term, 2);
        assert_int_equal(t_status(net, i).lead, 1);
        assert_int_equal(t_status(net, i).commit, 2);
    }
    t_free(net);
}

static void test_member_grants_one_vote_per_term(void **state)
{
    (void)state;
    struct tnet *net = t_new(3, 0, 0, 0);
    assert_int_equal(raft_campaign(net->n[1].r), 0);
    assert_int_equal(raft_campaign(net->n[2].r), 0);
    t_ready_all(net);
    /* 3 hears 1 first and votes for it; 2's request in the same term is refused */
    t_deliver_type(net, RAFT_MSG_VOTE);
    const char *m = t_msgs(net);
    assert_non_null(strstr(m, "3->1 MsgVoteResp t2"));
    assert_non_null(strstr(m, "3->2 MsgVoteResp t2 reject"));
    assert_int_equal(t_status(net, 3).vote, 1);
    t_stabilize(net);
    assert_int_equal(t_role(net, 1), RAFT_LEADER);
    assert_int_not_equal(t_role(net, 2), RAFT_LEADER);
    t_free(net);
}

static void test_vote_refused_to_candidate_with_stale_log(void **state)
{
    (void)state;
    struct tnet *net = t_new(3, 0, 0, 0);
    t_elect(net, 1);
    t_isolate(net, 3);
    assert_int_equal(t_propose(net, 1, "x"), 0);
    t_stabilize(net);
    t_heal(net);
    /* 3 missed "x": 1 and 2 hold a longer log of the same last term */
    assert_int_equal(raft_campaign(net->n[3].r), 0);
    t_ready(net, 3);
    t_deliver_type(net, RAFT_MSG_VOTE);
    assert_string_equal(t_msgs(net), "1->3 MsgVoteResp t3 reject, 2->3 MsgVoteResp t3 reject");
    t_deliver_type(net, RAFT_MSG_VOTE_RESP);
    assert_int_equal(t_role(net, 3), RAFT_FOLLOWER);
    t_free(net);
}

static void test_follower_campaigns_after_randomized_timeout(void **state)
{
    (void)state;
    struct tnet *net = t_new(3, 0, 0, 0);
    int fired[4] = { 0 };
    for (uint64_t id = 1; id <= 3; id++) {
        int ticks = 0;
        while (t_role(net, id) == RAFT_FOLLOWER && ticks < 100) {
            assert_int_equal(raft_tick(net->n[id].r), 0);
            ticks++;
        }
        /* within [election_tick, 2 * election_tick) */
        assert_true(ticks >= 10 && ticks < 20);
        fired[id] = ticks;
    }
    /* the same seed gives the same timeout: determinism */
    struct tnet *again = t_new(3, 0, 0, 0);
    int ticks = 0;
    while (t_role(again, 1) == RAFT_FOLLOWER)
        raft_tick(again->n[1].r), ticks++;
    assert_int_equal(ticks, fired[1]);
    t_free(again);
    t_free(net);
}

static void test_higher_term_message_makes_leader_step_down(void **state)
{
    (void)state;
    struct tnet *net = t_new(3, 0, 0, 0);
    t_elect(net, 1);
    t_isolate(net, 1);
    assert_int_equal(raft_campaign(net->n[2].r), 0);
    t_stabilize(net);
    assert_int_equal(t_role(net, 2), RAFT_LEADER);
    assert_int_equal(t_status(net, 2).term, 3);
    assert_int_equal(t_role(net, 1), RAFT_LEADER); /* cut off: does not know yet */
    t_heal(net);
    t_tick(net, 2, 1); /* heartbeat at term 3 */
    t_stabilize(net);
    assert_int_equal(t_role(net, 1), RAFT_FOLLOWER);
    assert_int_equal(t_status(net, 1).term, 3);
    assert_int_equal(t_status(net, 1).lead, 2);
    t_free(net);
}

static void test_single_voter_elects_itself_and_commits_alone(void **state)
{
    (void)state;
    struct tnet *net = t_new(1, 0, 1, 1);
    t_elect(net, 1);
    assert_int_equal(t_propose(net, 1, "solo"), 0);
    t_stabilize(net);
    assert_string_equal(net->n[1].applied, "solo");
    t_free(net);
}

static void test_vote_is_durable_before_the_grant_is_sent(void **state)
{
    (void)state;
    struct tnet *net = t_new(3, 0, 0, 0);
    assert_int_equal(raft_campaign(net->n[1].r), 0);
    t_ready(net, 1);
    t_deliver_type(net, RAFT_MSG_VOTE); /* runs 2's and 3's Ready: persist, then send */
    assert_int_equal(net->n[2].hs.vote, 1);
    assert_int_equal(net->n[2].hs.term, 2);
    /* a crash after the grant cannot forget it */
    t_crash(net, 2);
    t_start(net, 2);
    assert_int_equal(t_status(net, 2).vote, 1);
    t_free(net);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_candidate_with_majority_of_votes_becomes_leader),
        cmocka_unit_test(test_member_grants_one_vote_per_term),
        cmocka_unit_test(test_vote_refused_to_candidate_with_stale_log),
        cmocka_unit_test(test_follower_campaigns_after_randomized_timeout),
        cmocka_unit_test(test_higher_term_message_makes_leader_step_down),
        cmocka_unit_test(test_single_voter_elects_itself_and_commits_alone),
        cmocka_unit_test(test_vote_is_durable_before_the_grant_is_sent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
