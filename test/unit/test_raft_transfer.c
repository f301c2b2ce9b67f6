/* Leadership transfer: TimeoutNow to a caught-up voter, catching up first, abandoning after a timeout. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "test/unit/raft_testutil.h"

static void test_transfer_to_caught_up_voter(void **state)
{
    (void)state;
    struct tnet *net = t_new(3, 0, 1, 1);
    t_elect(net, 1);
    t_tick(net, 1, 1);
    t_stabilize(net);
    assert_int_equal(raft_transfer_leader(net->n[1].r, 2), 0);
    t_ready(net, 1);
    assert_string_equal(t_msgs(net), "1->2 MsgTimeoutNow t2");
    t_deliver_one(net, 0);
    /* the transferee skips pre-vote and asks with the "transfer" context */
    assert_int_equal(t_role(net, 2), RAFT_CANDIDATE);
    t_stabilize(net);
    assert_int_equal(t_role(net, 2), RAFT_LEADER);
    assert_int_equal(t_status(net, 2).term, 3);
    assert_int_equal(t_role(net, 1), RAFT_FOLLOWER);
    t_free(net);
}

static void test_transfer_catches_the_transferee_up_first(void **state)
{
    (void)state;
    struct tnet *net = t_new(3, 0, 1, 1);
    t_elect(net, 1);
    t_isolate(net, 3);
    t_propose(net, 1, "a");
    t_propose(net, 1, "b");
    t_stabilize(net);
    t_heal(net);
    assert_int_equal(raft_transfer_leader(net->n[1].r, 3), 0);
    t_ready(net, 1);
    assert_int_equal(t_count(net, RAFT_MSG_TIMEOUT_NOW, 1), 0); /* not yet: 3 lags */
    assert_int_equal(t_status(net, 1).lead_transferee, 3);
    t_stabilize(net);
    assert_int_equal(t_role(net, 3), RAFT_LEADER);
    assert_string_equal(net->n[3].applied, "a,b");
    t_free(net);
}

static void test_transfer_is_abandoned_after_an_election_timeout(void **state)
{
    (void)state;
    struct tnet *net = t_new(3, 0, 1, 1);
    t_elect(net, 1);
    t_isolate(net, 3);
    t_propose(net, 1, "x");
    t_stabilize(net);
    assert_int_equal(raft_transfer_leader(net->n[1].r, 3), 0);
    assert_int_equal(t_propose(net, 1, "blocked"), -CAIRN_E_LEADER_TRANSFER);
    for (int i = 0; i < 10; i++) {
        t_tick(net, 1, 1);
        t_stabilize(net);
    }
    assert_int_equal(t_status(net, 1).lead_transferee, 0);
    assert_int_equal(t_role(net, 1), RAFT_LEADER);
    assert_int_equal(t_propose(net, 1, "open-again"), 0);
    t_free(net);
}

static void test_transfer_to_learner_or_stranger_is_refused(void **state)
{
    (void)state;
    struct tnet *net = t_new(3, 1, 1, 1);
    t_elect(net, 1);
    assert_int_equal(raft_transfer_leader(net->n[1].r, 4), -EINVAL);
    assert_int_equal(raft_transfer_leader(net->n[1].r, 9), -EINVAL);
    t_free(net);
}

static void test_transfer_requested_on_a_follower_is_forwarded(void **state)
{
    (void)state;
    struct tnet *net = t_new(3, 0, 1, 1);
    t_elect(net, 1);
    t_tick(net, 1, 1);
    t_stabilize(net);
    assert_int_equal(raft_transfer_leader(net->n[2].r, 3), 0);
    t_ready(net, 2);
    assert_string_equal(t_msgs(net), "2->1 MsgTransferLeader t0");
    t_stabilize(net);
    assert_int_equal(t_role(net, 3), RAFT_LEADER);
    t_free(net);
}

static void test_transfer_overrides_leader_lease(void **state)
{
    (void)state;
    /* check-quorum voters ignore disruptive candidates, but not a transfer */
    struct tnet *net = t_new(5, 0, 0, 1);
    t_elect(net, 1);
    t_tick(net, 1, 1);
    t_stabilize(net);
    assert_int_equal(raft_transfer_leader(net->n[1].r, 4), 0);
    t_stabilize(net);
    assert_int_equal(t_role(net, 4), RAFT_LEADER);
    t_free(net);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_transfer_to_caught_up_voter),
        cmocka_unit_test(test_transfer_catches_the_transferee_up_first),
        cmocka_unit_test(test_transfer_is_abandoned_after_an_election_timeout),
        cmocka_unit_test(test_transfer_to_learner_or_stranger_is_refused),
        cmocka_unit_test(test_transfer_requested_on_a_follower_is_forwarded),
        cmocka_unit_test(test_transfer_overrides_leader_lease),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
