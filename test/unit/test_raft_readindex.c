/* ReadIndex: a quorum round confirms leadership; a new leader waits for an own-term commit. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "test/unit/raft_testutil.h"

static void test_leader_answers_after_a_quorum_of_heartbeat_acks(void **state)
{
    (void)state;
    struct tnet *net = t_new(3, 0, 1, 1);
    t_elect(net, 1);
    t_propose(net, 1, "w");
    t_stabilize(net);
    assert_int_equal(raft_read_index(net->n[1].r, "r1", 2), 0);
    t_ready(net, 1);
    assert_string_equal(t_msgs(net), "1->2 MsgHeartbeat t2, 1->3 MsgHeartbeat t2");
    assert_int_equal(net->n[1].nreads, 0); /* not before the round */
    t_deliver_type(net, RAFT_MSG_HEARTBEAT);
    t_deliver_one(net, 0); /* one ack + the leader itself = quorum */
    assert_int_equal(net->n[1].nreads, 1);
    assert_string_equal(net->n[1].read_ctx[0], "r1");
    assert_int_equal(net->n[1].read_index[0], 3);
    t_free(net);
}

static void test_follower_read_goes_through_the_leader(void **state)
{
    (void)state;
    struct tnet *net = t_new(3, 0, 1, 1);
    t_elect(net, 1);
    t_propose(net, 1, "w");
    t_stabilize(net);
    assert_int_equal(raft_read_index(net->n[2].r, "f", 1), 0);
    t_ready(net, 2);
    assert_string_equal(t_msgs(net), "2->1 MsgReadIndex t0");
    t_stabilize(net);
    assert_int_equal(net->n[2].nreads, 1);
    assert_string_equal(net->n[2].read_ctx[0], "f");
    assert_int_equal(net->n[2].read_index[0], 3);
    assert_int_equal(net->n[1].nreads, 0);
    t_free(net);
}

static void test_new_leader_waits_for_an_entry_of_its_term(void **state)
{
    (void)state;
    struct tnet *net = t_new(3, 0, 0, 0);
    assert_int_equal(raft_campaign(net->n[1].r), 0);
    t_ready(net, 1);
    t_deliver_type(net, RAFT_MSG_VOTE);
    t_deliver_type(net, RAFT_MSG_VOTE_RESP);
    assert_int_equal(t_role(net, 1), RAFT_LEADER);
    t_drop(net, RAFT_MSG_APP); /* its empty entry is not committed yet */
    assert_int_equal(raft_read_index(net->n[1].r, "early", 5), 0);
    t_ready(net, 1);
    assert_int_equal(t_count(net, RAFT_MSG_HEARTBEAT, 1), 0); /* no round yet */
    t_tick(net, 1, 1);
    t_stabilize(net);
    assert_int_equal(net->n[1].nreads, 1);
    assert_int_equal(net->n[1].read_index[0], 2); /* at least the new term's entry */
    t_free(net);
}

static void test_deposed_leader_cannot_answer_reads(void **state)
{
    (void)state;
    struct tnet *net = t_new(3, 0, 0, 0);
    t_elect(net, 1);
    t_isolate(net, 1);
    assert_int_equal(raft_campaign(net->n[2].r), 0);
    t_stabilize(net);
    t_propose(net, 2, "newer");
    t_stabilize(net);
    assert_int_equal(t_role(net, 1), RAFT_LEADER); /* it still believes it leads */
    assert_int_equal(raft_read_index(net->n[1].r, "stale", 5), 0);
    for (int i = 0; i < 5; i++) {
        t_tick(net, 1, 1);
        t_stabilize(net);
    }
    assert_int_equal(net->n[1].nreads, 0); /* a stale read would have missed "newer" */
    t_free(net);
}

static void test_reads_are_bounded(void **state)
{
    (void)state;
    struct raft_config c = { .election_tick = 10, .heartbeat_tick = 1, .max_pending_reads = 2 };
    struct tnet *net = t_new_cfg(3, 0, c);
    t_elect(net, 1);
    t_isolate(net, 1);
    assert_int_equal(raft_read_index(net->n[1].r, "a", 1), 0);
    assert_int_equal(raft_read_index(net->n[1].r, "b", 1), 0);
    assert_int_equal(raft_read_index(net->n[1].r, "c", 1), -CAIRN_E_TOO_MANY_REQUESTS);
    t_free(net);
}

static void test_single_voter_answers_at_once(void **state)
{
    (void)state;
    struct tnet *net = t_new(1, 0, 0, 0);
    t_elect(net, 1);
    assert_int_equal(raft_read_index(net->n[1].r, "s", 1), 0);
    t_ready(net, 1);
    assert_int_equal(net->n[1].nreads, 1);
    assert_int_equal(net->n[1].read_index[0], 2);
    t_free(net);
}

/* The commit index, to a lone voter that leads and has committed in its
 * term; 0 to everyone else, and from the moment a second voter is applied. */
static void test_solo_read_index_is_for_a_lone_voter_leader_only(void **state)
{
    (void)state;
    struct tnet *net = t_new(1, 0, 0, 0);
    assert_int_equal(raft_solo_read_index(net->n[1].r), 0); /* a follower */
    t_elect(net, 1);
    assert_int_equal(raft_solo_read_index(net->n[1].r), 2);
    t_propose(net, 1, "w");
    t_stabilize(net);
    assert_int_equal(raft_solo_read_index(net->n[1].r), 3);
    uint64_t l = t_add_empty(net);
    assert_int_equal(raft_propose_conf_change(net->n[1].r, RAFT_CC_ADD_LEARNER, l, NULL, 0), 0);
    t_stabilize(net);
    assert_int_equal(t_status(net, 1).conf.n_learners, 1);
    assert_int_equal(raft_solo_read_index(net->n[1].r), t_status(net, 1).commit); /* a learner does not vote */
    assert_int_equal(raft_solo_read_index(net->n[l].r), 0);
    assert_int_equal(raft_propose_conf_change(net->n[1].r, RAFT_CC_PROMOTE, l, NULL, 0), 0);
    t_ready(net, 1); /* the leader appends the promotion; it commits and applies it alone */
    while (t_status(net, 1).conf.n_voters == 1) {
        assert_int_not_equal(raft_solo_read_index(net->n[1].r), 0);
        t_deliver_one(net, 0);
        t_ready_all(net);
    }
    assert_int_equal(raft_solo_read_index(net->n[1].r), 0);
    t_stabilize(net);
    assert_int_equal(t_role(net, 1), RAFT_LEADER);
    assert_int_equal(raft_solo_read_index(net->n[1].r), 0);
    t_free(net);

    net = t_new(3, 0, 1, 1);
    t_elect(net, 1);
    t_propose(net, 1, "w");
    t_stabilize(net);
    for (uint64_t id = 1; id <= 3; id++)
        assert_int_equal(raft_solo_read_index(net->n[id].r), 0);
    t_free(net);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_leader_answers_after_a_quorum_of_heartbeat_acks),
        cmocka_unit_test(test_follower_read_goes_through_the_leader),
        cmocka_unit_test(test_new_leader_waits_for_an_entry_of_its_term),
        cmocka_unit_test(test_deposed_leader_cannot_answer_reads),
        cmocka_unit_test(test_reads_are_bounded),
        cmocka_unit_test(test_single_voter_answers_at_once),
        cmocka_unit_test(test_solo_read_index_is_for_a_lone_voter_leader_only),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
