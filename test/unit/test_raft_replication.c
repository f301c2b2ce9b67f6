/* Log replication: commit by quorum, figure 8, fast backtracking, pipelining bounds, probing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "test/unit/raft_testutil.h"

static struct raft_config cfg_small_msgs(void)
{
    return (struct raft_config){ .election_tick = 10, .heartbeat_tick = 1, .max_inflight_msgs = 256,
                                 .max_msg_bytes = 1 };
}

static void test_proposal_commits_and_applies_everywhere(void **state)
{
    (void)state;
    struct tnet *net = t_new(3, 0, 1, 1);
    t_elect(net, 1);
    assert_int_equal(t_propose(net, 1, "a"), 0);
    assert_int_equal(t_propose(net, 1, "b"), 0);
    /* pipelined: the second goes out before the first is acknowledged */
    assert_int_equal(t_count(net, RAFT_MSG_APP, 1), 4);
    t_stabilize(net);
    t_tick(net, 1, 1);
    t_stabilize(net);
    for (uint64_t i = 1; i <= 3; i++) {
        assert_string_equal(net->n[i].applied, "a,b");
        assert_int_equal(net->n[i].hs.commit, 4);
    }
    t_free(net);
}

static void test_entry_not_committed_without_quorum(void **state)
{
    (void)state;
    struct tnet *net = t_new(5, 0, 0, 0);
    t_elect(net, 1);
    t_isolate(net, 3);
    t_isolate(net, 4);
    t_isolate(net, 5);
    assert_int_equal(t_propose(net, 1, "x"), 0);
    t_stabilize(net);
    assert_int_equal(t_status(net, 1).commit, 2);
    assert_string_equal(net->n[1].applied, "");
    t_heal(net);
    t_tick(net, 1, 1);
    t_stabilize(net);
    assert_int_equal(t_status(net, 1).commit, 3);
    assert_string_equal(net->n[1].applied, "x");
    t_free(net);
}

/*
 * Raft paper, figure 8: a leader must not commit an entry of an older term
 * by counting replicas, only through an entry of its own term.
 */
static void test_old_term_entry_is_not_committed_by_counting(void **state)
{
    (void)state;
    struct tnet *net;
    /* Now step by step: stop right after a quorum holds index 3 but not 4. */
    net = t_new_cfg(3, 0, cfg_small_msgs());
    t_elect(net, 1);
    assert_int_equal(t_propose(net, 1, "ab"), 0);
    t_drop(net, 0);
    t_crash(net, 1);
    t_start(net, 1);
    assert_int_equal(raft_campaign(net->n[1].r), 0);
    t_ready(net, 1);
    t_deliver_type(net, RAFT_MSG_VOTE);
    t_deliver_type(net, RAFT_MSG_VOTE_RESP);
    assert_int_equal(t_role(net, 1), RAFT_LEADER);
    t_drop(net, 0);
    t_isolate(net, 3);
    /* probe 2 from index 4; it lacks 3 and rejects; the leader backs up and sends 3 alone */
    t_tick(net, 1, 1);               /* heartbeat -> response -> MsgApp */
    for (int round = 0; round < 10 && t_status(net, 2).last_index < 3; round++) {
        t_deliver_type(net, RAFT_MSG_HEARTBEAT);
        t_deliver_type(net, RAFT_MSG_HEARTBEAT_RESP);
        t_deliver_type(net, RAFT_MSG_APP);
        t_deliver_type(net, RAFT_MSG_APP_RESP);
    }
    assert_int_equal(t_status(net, 2).last_index, 3);
    /* 1 and 2 (a quorum) hold index 3 of term 2; it must not count */
    struct raft_status ls = t_status(net, 1);
    for (uint32_t i = 0; i < ls.n_progress; i++)
        if (ls.progress[i].id == 2)
            assert_int_equal(ls.progress[i].match, 3);
    assert_int_equal(ls.commit, 2);
    assert_string_equal(net->n[1].applied, "");
    t_stabilize(net);
    assert_int_equal(t_status(net, 1).commit, 4);
    assert_string_equal(net->n[1].applied, "ab");
    t_free(net);
}

static void test_reject_hint_skips_a_divergent_term_at_once(void **state)
{
    (void)state;
    struct tnet *net = t_new(3, 0, 0, 0);
    t_elect(net, 1);
    /* 1, cut off, takes 30 proposals that never commit */
    t_isolate(net, 1);
    for (int i = 0; i < 30; i++)
        assert_int_equal(t_propose(net, 1, "lost"), 0);
    t_stabilize(net);
    assert_int_equal(raft_campaign(net->n[2].r), 0);
    t_stabilize(net);
    assert_int_equal(t_role(net, 2), RAFT_LEADER);
    for (int i = 0; i < 30; i++)
        assert_int_equal(t_propose(net, 2, "kept"), 0);
    t_stabilize(net);
    /* a fresh leader probes 1 from its own last index, far past the divergence */
    assert_int_equal(raft_campaign(net->n[3].r), 0);
    t_stabilize(net);
    assert_int_equal(t_role(net, 3), RAFT_LEADER);
    t_heal(net);
    /* 3's heartbeat demotes 1; count 1's rejections while it catches up */
    t_tick(net, 3, 1);
    int rejects = 0;
    for (int rounds = 0; net->nq && rounds < 10000; rounds++) {
        if (net->q[0].m.type == RAFT_MSG_APP_RESP && net->q[0].m.from == 1 && net->q[0].m.reject)
            rejects++;
        t_deliver_one(net, 0);
    }
    assert_true(rejects >= 1 && rejects <= 2); /* not one per divergent entry */
    t_tick(net, 3, 1);
    t_stabilize(net);
    assert_string_equal(net->n[1].applied, net->n[3].applied);
    assert_null(strstr(net->n[1].applied, "lost"));
    t_free(net);
}

static void test_inflight_window_bounds_pipelining_by_count(void **state)
{
    (void)state;
    struct raft_config c = cfg_small_msgs();
    c.max_inflight_msgs = 3;
    struct tnet *net = t_new_cfg(3, 0, c);
    t_elect(net, 1);
    t_tick(net, 1, 1);
    t_stabilize(net); /* followers in replicate state */
    for (int i = 0; i < 10; i++)
        assert_int_equal(t_propose(net, 1, "xx"), 0);
    assert_int_equal(t_count(net, RAFT_MSG_APP, 1), 2 * 3);
    struct raft_status st = t_status(net, 1);
    for (uint32_t i = 0; i < st.n_progress; i++)
        if (st.progress[i].id != 1) {
            assert_int_equal(st.progress[i].state, RAFT_PROGRESS_REPLICATE);
            assert_int_equal(st.progress[i].inflight, 3);
            assert_true(st.progress[i].paused);
        }
    t_stabilize(net); /* acks open the window again until everything is through */
    assert_int_equal(t_status(net, 2).last_index, 12);
    t_free(net);
}

static void test_inflight_window_bounds_pipelining_by_bytes(void **state)
{
    (void)state;
    struct raft_config c = cfg_small_msgs();
    c.max_inflight_bytes = 10;
    struct tnet *net = t_new_cfg(3, 0, c);
    t_elect(net, 1);
    t_tick(net, 1, 1);
    t_stabilize(net);
    for (int i = 0; i < 10; i++)
        assert_int_equal(t_propose(net, 1, "abcd"), 0);
    /* 4-byte entries, 10 bytes of window: three messages, then paused */
    assert_int_equal(t_count(net, RAFT_MSG_APP, 1), 2 * 3);
    t_stabilize(net);
    assert_int_equal(t_status(net, 3).last_index, 12);
    t_free(net);
}

static void test_probe_state_sends_one_message_per_round_trip(void **state)
{
    (void)state;
    struct tnet *net = t_new(3, 0, 0, 0);
    t_elect(net, 1);
    t_isolate(net, 3);
    t_tick(net, 1, 1);
    t_stabilize(net);
    raft_report_unreachable(net->n[1].r, 3); /* replicate -> probe */
    struct raft_status st = t_status(net, 1);
    for (uint32_t i = 0; i < st.n_progress; i++)
        if (st.progress[i].id == 3)
            assert_int_equal(st.progress[i].state, RAFT_PROGRESS_PROBE);
    t_propose(net, 1, "p1");
    t_propose(net, 1, "p2");
    t_propose(net, 1, "p3");
    int to3 = 0;
    for (int i = 0; i < net->nq; i++)
        if (net->q[i].m.type == RAFT_MSG_APP && net->q[i].m.to == 3)
            to3++;
    assert_int_equal(to3, 1);
    t_heal(net);
    t_stabilize(net);
    t_tick(net, 1, 1);
    t_stabilize(net);
    assert_string_equal(net->n[3].applied, "p1,p2,p3");
    t_free(net);
}

static void test_committed_entries_survive_restart_and_replay(void **state)
{
    (void)state;
    struct tnet *net = t_new(3, 0, 1, 1);
    t_elect(net, 1);
    t_propose(net, 1, "a");
    t_propose(net, 1, "b");
    t_stabilize(net);
    t_crash(net, 2);
    t_start(net, 2); /* state machine rebuilt from the snapshot, then replayed */
    assert_string_equal(net->n[2].applied, "");
    t_ready(net, 2);
    assert_string_equal(net->n[2].applied, "a,b");
    t_free(net);
}

static void test_malformed_messages_are_refused(void **state)
{
    (void)state;
    struct tnet *net = t_new(3, 0, 0, 0);
    struct raft_message m = { .type = 99, .from = 2, .to = 1, .term = 1 };
    assert_int_equal(raft_step(net->n[1].r, &m), -CAIRN_E_MALFORMED);
    struct raft_entry e = { .term = 5, .index = 9, .len = 1, .data = "z" };
    m = (struct raft_message){ .type = RAFT_MSG_APP, .from = 2, .to = 1, .term = 2, .index = 1,
                               .log_term = 1, .entries = &e, .n_entries = 1 };
    assert_int_equal(raft_step(net->n[1].r, &m), -CAIRN_E_MALFORMED); /* index gap, term above message */
    m = (struct raft_message){ .type = RAFT_MSG_SNAP, .from = 2, .to = 1, .term = 2 };
    assert_int_equal(raft_step(net->n[1].r, &m), -CAIRN_E_MALFORMED); /* no metadata */
    m = (struct raft_message){ .type = RAFT_MSG_HEARTBEAT, .from = 2, .to = 3, .term = 2 };
    assert_int_equal(raft_step(net->n[1].r, &m), -CAIRN_E_CLUSTER_MISMATCH); /* not for member 1 */
    t_free(net);
}

/*
 * A lone voter's leader may send a Ready's messages before it persists the
 * Ready (raft.h), so those messages must not tell its learners that the
 * Ready's own entries are committed: they are not on the leader's disk yet.
 * The entries commit once raft_advance says they are durable.
 */
static void test_a_lone_voter_commits_its_entries_once_they_are_durable(void **state)
{
    (void)state;
    struct tnet *net = t_new(1, 1, 0, 0);
    t_elect(net, 1);
    t_stabilize(net);
    struct raft *r = net->n[1].r;
    uint64_t before = t_status(net, 1).commit;
    assert_int_equal(raft_propose(r, "x", 1), 0);
    assert_int_equal(t_status(net, 1).commit, before); /* appended, not yet durable */
    struct raft_ready rd;
    assert_int_equal(raft_ready(r, &rd), 0);
    assert_int_equal(rd.n_entries, 1);
    uint64_t x = rd.entries[0].index;
    for (size_t i = 0; i < rd.n_committed; i++)
        assert_true(rd.committed[i].index < x);
    for (size_t i = 0; i < rd.n_msgs; i++)
        assert_true(rd.msgs[i].commit < x); /* what may leave before the fsync */
    t_finish(net, 1, &rd);
    assert_int_equal(t_status(net, 1).commit, x); /* durable now: committed */
    assert_true(raft_has_ready(r));
    assert_int_equal(raft_ready(r, &rd), 0);
    assert_int_equal(rd.n_committed, 1);
    assert_int_equal(rd.committed[0].index, x);
    t_finish(net, 1, &rd);
    /* The learner hears of it as it acknowledges x (bcast_commit), by a
     * notice it does not answer. */
    assert_int_equal(t_count(net, RAFT_MSG_APP, 1), 1);
    t_deliver_type(net, RAFT_MSG_APP);
    assert_int_equal(t_count(net, RAFT_MSG_APP_RESP, 2), 1);
    t_deliver_type(net, RAFT_MSG_APP_RESP);
    assert_int_equal(net->nq, 1);
    assert_int_equal(net->q[0].m.to, 2);
    assert_int_equal(net->q[0].m.commit, x);
    assert_true(net->q[0].m.commit_only);
    t_stabilize(net);
    assert_string_equal(net->n[2].applied, net->n[1].applied);
    t_free(net);
}

/* The next Ready of member id, finished by the caller. */
static struct raft_ready next_ready(struct tnet *net, uint64_t id)
{
    struct raft_ready rd;
    assert_true(raft_has_ready(net->n[id].r));
    assert_int_equal(raft_ready(net->n[id].r, &rd), 0);
    return rd;
}

/*
 * raft_ready_committed_durable (raft.h's apply rule, and its exception):
 * true when the Ready's committed entries were persisted by an earlier
 * Ready, as in a leader's steady state, where the daemon applies them while
 * another thread writes the new ones; false when a follower catching up
 * gets entries and a commit index covering them at once.
 */
static void test_a_ready_says_whether_its_committed_entries_are_already_durable(void **state)
{
    (void)state;
    /* a lone voter: each Ready writes new proposals and applies the last ones */
    struct tnet *net = t_new(1, 0, 0, 0);
    t_elect(net, 1);
    t_stabilize(net);
    struct raft *r = net->n[1].r;
    assert_int_equal(raft_propose(r, "a", 1), 0);
    struct raft_ready rd = next_ready(net, 1);
    assert_int_equal(rd.n_entries, 1);
    assert_false(raft_ready_committed_durable(&rd)); /* nothing to apply */
    t_finish(net, 1, &rd);
    assert_int_equal(raft_propose(r, "b", 1), 0);
    rd = next_ready(net, 1);
    assert_int_equal(rd.n_entries, 1);
    assert_int_equal(rd.n_committed, 1);
    assert_true(raft_ready_committed_durable(&rd)); /* "a", written by the Ready before */
    t_finish(net, 1, &rd);
    rd = next_ready(net, 1);
    assert_int_equal(rd.n_entries, 0);
    assert_true(raft_ready_committed_durable(&rd)); /* "b" alone: nothing to write */
    t_finish(net, 1, &rd);
    assert_string_equal(net->n[1].applied, "a,b");
    t_free(net);

    /* a follower that was cut off gets "x" and its commit in one Ready */
    net = t_new(3, 0, 0, 0);
    t_elect(net, 1);
    t_stabilize(net);
    t_isolate(net, 3);
    assert_int_equal(t_propose(net, 1, "x"), 0);
    t_stabilize(net);
    assert_string_equal(net->n[1].applied, "x");
    t_heal(net);
    t_tick(net, 1, 1); /* a heartbeat: 3 answers, and the leader sends what it misses */
    bool seen = false;
    for (int guard = 0; guard < 100 && !seen && net->nq; guard++) {
        if (net->q[0].m.to != 3) {
            t_deliver_one(net, 0);
            continue;
        }
        /* delivered by hand: t_deliver_one would run 3's Ready loop itself */
        struct tmsg t = t_take(net, 0);
        assert_int_equal(raft_step(net->n[3].r, &t.m), 0);
        t_free_msg(&t);
        if (!raft_has_ready(net->n[3].r))
            continue;
        rd = next_ready(net, 3);
        if (rd.n_entries && rd.n_committed && rd.committed[rd.n_committed - 1].index >= rd.entries[0].index) {
            seen = true;
            assert_false(raft_ready_committed_durable(&rd));
        }
        t_finish(net, 3, &rd);
    }
    assert_true(seen);
    t_stabilize(net);
    assert_string_equal(net->n[3].applied, "x");
    t_free(net);
}

/*
 * solo_ready_entries: a lone voter hands out a burst of proposals a slice at
 * a time, each Ready writing the next slice while it applies the one before
 * (so raft_ready_committed_durable holds), and commits only what was
 * handed out and persisted.  A leader with other voters writes all at once.
 */
static const char *const burst[] = { "a", "b", "c", "d", "e", "f", "g", "h" };

/* A cluster of voters and learners under cfg, member 1 leading, with the 8 proposals of burst made. */
static struct tnet *leader_with_a_burst(int voters, int learners, struct raft_config cfg)
{
    struct tnet *net = t_new_cfg(voters, learners, cfg);
    t_elect(net, 1);
    t_stabilize(net);
    for (int i = 0; i < 8; i++)
        assert_int_equal(raft_propose(net->n[1].r, burst[i], 1), 0);
    return net;
}

/* The leader's next Ready writes the burst's n unwritten entries at once;
 * then member `check` applies all of it.  Frees net. */
static void rest_of_the_burst_in_one_ready(struct tnet *net, size_t n, uint64_t check)
{
    struct raft_ready rd = next_ready(net, 1);
    assert_int_equal(rd.n_entries, n);
    t_finish(net, 1, &rd);
    t_stabilize(net);
    assert_string_equal(net->n[check].applied, "a,b,c,d,e,f,g,h");
    t_free(net);
}

static void test_a_lone_voter_writes_a_burst_a_slice_per_ready(void **state)
{
    (void)state;
    struct raft_config cfg = { .election_tick = 10, .heartbeat_tick = 1, .max_inflight_msgs = 256,
                               .solo_ready_entries = 3 };
    struct tnet *net = leader_with_a_burst(1, 1, cfg); /* a learner: the early messages must not run ahead */
    uint64_t last = t_status(net, 1).last_index, first = last - 7;
    size_t slices[] = { 3, 3, 2, 0 }, applied[] = { 0, 3, 3, 2 };
    for (int k = 0; k < 4; k++) {
        struct raft_ready rd = next_ready(net, 1);
        assert_int_equal(rd.n_entries, slices[k]);
        if (rd.n_entries)
            assert_int_equal(rd.entries[0].index, first + 3 * (uint64_t)k);
        assert_int_equal(rd.n_committed, applied[k]);
        if (k > 0)
            assert_true(raft_ready_committed_durable(&rd)); /* applied while the next slice is written */
        uint64_t durable = first + 3 * (uint64_t)k - 1; /* the last entry an earlier Ready handed out */
        assert_int_equal(t_status(net, 1).commit, durable < last ? durable : last);
        for (size_t i = 0; i < rd.n_msgs; i++)
            assert_true(rd.msgs[i].commit <= t_status(net, 1).commit);
        t_finish(net, 1, &rd);
    }
    assert_int_equal(t_status(net, 1).commit, last);
    t_stabilize(net);
    assert_string_equal(net->n[1].applied, "a,b,c,d,e,f,g,h");
    assert_string_equal(net->n[2].applied, net->n[1].applied);
    t_free(net);

    /* the caller may resize the slice between Readies (daemon/node.c sizes it from its disk) */
    net = leader_with_a_burst(1, 0, cfg);
    struct raft_ready rd = next_ready(net, 1);
    assert_int_equal(rd.n_entries, 3);
    t_finish(net, 1, &rd);
    raft_set_solo_ready_entries(net->n[1].r, 0); /* all */
    rest_of_the_burst_in_one_ready(net, 5, 1);

    /* with other voters the leader's own write is not the commit: no slices */
    rest_of_the_burst_in_one_ready(leader_with_a_burst(3, 0, cfg), 8, 3);
}

/* The MsgApp messages in flight from `from` to `to`: how many, and how many marked commit_only. */
static int apps_to(struct tnet *net, uint64_t from, uint64_t to, int *commit_only)
{
    int n = 0;
    *commit_only = 0;
    for (int i = 0; i < net->nq; i++) {
        const struct raft_message *m = &net->q[i].m;
        if (m->type == RAFT_MSG_APP && m->from == from && m->to == to) {
            n++;
            *commit_only += m->commit_only != 0;
        }
    }
    return n;
}

/* The position in the queue of the first message of type from `from` to `to` (there must be one). */
static int msg_to(struct tnet *net, uint32_t type, uint64_t from, uint64_t to)
{
    for (int i = 0; i < net->nq; i++)
        if (net->q[i].m.type == type && net->q[i].m.from == from && net->q[i].m.to == to)
            return i;
    fail_msg("no %s from %llu to %llu in flight: %s", raft_msg_type_name((int)type), (unsigned long long)from,
             (unsigned long long)to, t_msgs(net));
    return -1;
}

static void test_a_commit_notice_to_a_follower_known_to_match_is_not_answered(void **state)
{
    (void)state;
    struct tnet *net = t_new(3, 0, 0, 0);
    t_elect(net, 1);
    t_tick(net, 1, 1);
    t_stabilize(net); /* both followers in replicate state, matched */
    int marked;
    assert_int_equal(t_propose(net, 1, "a"), 0);
    assert_int_equal(apps_to(net, 1, 2, &marked), 1);
    assert_int_equal(marked, 0); /* entries: always answered */
    t_deliver_type(net, RAFT_MSG_APP);
    assert_int_equal(t_count(net, RAFT_MSG_APP_RESP, 0), 2);
    t_deliver_type(net, RAFT_MSG_APP_RESP); /* "a" commits: the leader tells both */
    assert_int_equal(t_status(net, 1).commit, 3);
    assert_int_equal(apps_to(net, 1, 2, &marked), 1);
    assert_int_equal(marked, 1);
    assert_int_equal(apps_to(net, 1, 3, &marked), 1);
    assert_int_equal(marked, 1);
    t_deliver_type(net, RAFT_MSG_APP);
    /* each follower took the commit, and answered nothing */
    assert_int_equal(net->nq, 0);
    assert_int_equal(t_status(net, 2).commit, 3);
    assert_int_equal(t_status(net, 3).commit, 3);
    assert_string_equal(net->n[2].applied, "a");

    /* a notice that does not match the follower's log is answered: the leader must hear the reject */
    struct raft_message m = {.type = RAFT_MSG_APP, .from = 1, .to = 2, .term = t_status(net, 1).term,
                             .index = 9, .log_term = t_status(net, 1).term, .commit = 3, .commit_only = 1};
    assert_int_equal(raft_step(net->n[2].r, &m), 0);
    t_ready(net, 2);
    assert_int_equal(t_count(net, RAFT_MSG_APP_RESP, 2), 1);
    assert_true(net->q[0].m.reject);
    t_stabilize(net);

    t_free(net);

    /* A follower in probe state is left as it was: an empty MsgApp to it is
     * not marked, even at its known match.  Five members: 3 holds and acks
     * "b", then goes to probe (its match is the last index, so its probe has
     * nothing to carry), and 2's ack commits "b". */
    net = t_new(5, 0, 0, 0);
    t_elect(net, 1);
    t_tick(net, 1, 1);
    t_stabilize(net);
    assert_int_equal(t_propose(net, 1, "b"), 0);
    t_deliver_one(net, msg_to(net, RAFT_MSG_APP, 1, 3));
    t_deliver_one(net, msg_to(net, RAFT_MSG_APP_RESP, 3, 1));
    raft_report_unreachable(net->n[1].r, 3);
    t_ready(net, 1);
    uint64_t before = t_status(net, 1).commit;
    t_deliver_one(net, msg_to(net, RAFT_MSG_APP, 1, 2));
    t_deliver_one(net, msg_to(net, RAFT_MSG_APP_RESP, 2, 1));
    assert_true(t_status(net, 1).commit > before);
    assert_int_equal(apps_to(net, 1, 3, &marked), 1);
    assert_int_equal(marked, 0);
    assert_int_equal(net->q[msg_to(net, RAFT_MSG_APP, 1, 3)].m.n_entries, 0);
    t_stabilize(net);
    assert_string_equal(net->n[3].applied, "b");
    t_free(net);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_proposal_commits_and_applies_everywhere),
        cmocka_unit_test(test_entry_not_committed_without_quorum),
        cmocka_unit_test(test_old_term_entry_is_not_committed_by_counting),
        cmocka_unit_test(test_reject_hint_skips_a_divergent_term_at_once),
        cmocka_unit_test(test_inflight_window_bounds_pipelining_by_count),
        cmocka_unit_test(test_inflight_window_bounds_pipelining_by_bytes),
        cmocka_unit_test(test_probe_state_sends_one_message_per_round_trip),
        cmocka_unit_test(test_committed_entries_survive_restart_and_replay),
        cmocka_unit_test(test_malformed_messages_are_refused),
        cmocka_unit_test(test_a_lone_voter_commits_its_entries_once_they_are_durable),
        cmocka_unit_test(test_a_ready_says_whether_its_committed_entries_are_already_durable),
        cmocka_unit_test(test_a_lone_voter_writes_a_burst_a_slice_per_ready),
        cmocka_unit_test(test_a_commit_notice_to_a_follower_known_to_match_is_not_answered),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
