/* Proposal forwarding from followers, and the clear errors when a proposal cannot be taken. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "test/unit/raft_testutil.h"

static void test_follower_forwards_proposal_to_leader(void **state)
{
    (void)state;
    struct tnet *net = t_new(3, 0, 1, 1);
    t_elect(net, 1);
    assert_int_equal(t_propose(net, 3, "via-3"), 0);
    assert_string_equal(t_msgs(net), "3->1 MsgProp t0");
    assert_int_equal(net->q[0].m.n_entries, 1);
    t_stabilize(net);
    t_tick(net, 1, 1);
    t_stabilize(net);
    for (uint64_t i = 1; i <= 3; i++)
        assert_string_equal(net->n[i].applied, "via-3");
    t_free(net);
}

static void test_batch_proposal_forwarded_in_one_message(void **state)
{
    (void)state;
    struct tnet *net = t_new(3, 0, 1, 1);
    t_elect(net, 1);
    struct raft_buf b[3] = { { "x", 1 }, { "y", 1 }, { "z", 1 } };
    assert_int_equal(raft_propose_batch(net->n[2].r, b, 3), 0);
    t_ready(net, 2);
    assert_int_equal(t_count(net, RAFT_MSG_PROP, 2), 1);
    assert_int_equal(net->q[0].m.n_entries, 3);
    t_stabilize(net);
    assert_string_equal(net->n[1].applied, "x,y,z");
    t_free(net);
}

static void test_proposal_without_leader_fails_with_no_leader(void **state)
{
    (void)state;
    struct tnet *net = t_new(3, 0, 1, 1);
    assert_int_equal(t_propose(net, 2, "nope"), -CAIRN_E_NO_LEADER);
    assert_int_equal(raft_campaign(net->n[1].r), 0); /* pre-candidate: still no leader */
    assert_int_equal(t_propose(net, 1, "nope"), -CAIRN_E_NO_LEADER);
    assert_int_equal(raft_read_index(net->n[3].r, "r", 1), -CAIRN_E_NO_LEADER);
    t_free(net);
}

static void test_proposal_during_leader_transfer_fails(void **state)
{
    (void)state;
    struct tnet *net = t_new(3, 0, 1, 1);
    t_elect(net, 1);
    t_isolate(net, 2); /* so the transfer cannot finish at once */
    assert_int_equal(raft_transfer_leader(net->n[1].r, 2), 0);
    assert_int_equal(t_propose(net, 1, "late"), -CAIRN_E_LEADER_TRANSFER);
    t_free(net);
}

static void test_proposal_beyond_uncommitted_limit_is_dropped(void **state)
{
    (void)state;
    struct raft_config c = { .election_tick = 10, .heartbeat_tick = 1, .max_uncommitted_bytes = 8 };
    struct tnet *net = t_new_cfg(3, 0, c);
    t_elect(net, 1);
    t_isolate(net, 1);
    assert_int_equal(t_propose(net, 1, "12345"), 0);
    assert_int_equal(t_propose(net, 1, "12345"), -CAIRN_E_PROPOSAL_DROPPED);
    t_heal(net);
    t_tick(net, 1, 1);
    t_stabilize(net);
    assert_int_equal(t_propose(net, 1, "12345"), 0); /* committed bytes no longer count */
    t_free(net);
}

static void test_removed_leader_drops_proposals(void **state)
{
    (void)state;
    struct tnet *net = t_new(3, 0, 1, 1);
    t_elect(net, 1);
    assert_int_equal(raft_propose_conf_change(net->n[1].r, RAFT_CC_REMOVE, 1, NULL, 0), 0);
    t_stabilize(net);
    assert_int_not_equal(t_role(net, 1), RAFT_LEADER);
    assert_int_equal(t_propose(net, 1, "gone"), -CAIRN_E_NO_LEADER);
    t_free(net);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_follower_forwards_proposal_to_leader),
        cmocka_unit_test(test_batch_proposal_forwarded_in_one_message),
        cmocka_unit_test(test_proposal_without_leader_fails_with_no_leader),
        cmocka_unit_test(test_proposal_during_leader_transfer_fails),
        cmocka_unit_test(test_proposal_beyond_uncommitted_limit_is_dropped),
        cmocka_unit_test(test_removed_leader_drops_proposals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
