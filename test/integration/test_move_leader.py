"""MoveLeader on real members: the leader hands leadership to the member
named and answers once it leads; a follower refuses, naming the leader; an
unknown target is refused; moving to the leader itself is a no-op; libcairn's
cairn_move_leader (tools/cairn-snapshot move-leader) finds the leader by
itself."""
import subprocess

import cluster


def move(m, wire, target, timeout=10.0):
    return m.call(wire.pb.Request(move_leader=wire.pb.MoveLeaderRequest(target_id=target)), timeout)


def test_the_leader_hands_over_to_the_member_named(env, wire):
    c = env.cluster(3)
    lead = c.leader()
    old_term = lead.status().status.raft_term
    target = c.followers()[0]
    tid = target.member_id()
    r = move(lead, wire, tid)
    wire.check(r, "move_leader")
    # Answered only once the target leads: every member agrees on it.
    new = c.leader()
    assert new is target
    assert new.status().status.raft_term > old_term
    # The cluster goes on taking writes under the new leader.
    with lead.client() as w:
        wire.check(w.put("after-move", "x"), "put")


def test_followers_refuse_naming_the_leader_and_bad_targets_are_refused(env, wire):
    c = env.cluster(3)
    lead = c.leader()
    lid = lead.member_id()
    f = c.followers()[0]
    r = move(f, wire, f.member_id())
    assert wire.is_error(r) and r.error.code == wire.ERRORS["NOT_LEADER"], r
    assert "%016x" % lid in r.error.message, r.error.message
    r = move(lead, wire, 0x1234)
    assert wire.is_error(r) and r.error.code == wire.ERRORS["MEMBER_NOT_FOUND"], r
    assert "0000000000001234" in r.error.message
    r = move(lead, wire, 0)
    assert wire.is_error(r) and r.error.code == wire.ERRORS["INVALID_ARGUMENT"], r
    # to itself: nothing to do
    wire.check(move(lead, wire, lid), "move_leader")
    assert c.leader() is lead


def test_libcairn_finds_the_leader_itself(env, wire, build_dir):
    c = env.cluster(3)
    target = c.followers()[1]
    tid = target.member_id()
    # the endpoints in an order that starts with a follower
    eps = ",".join(m.client_url for m in [c.followers()[0], c.leader(), target])
    p = subprocess.run([str(build_dir / "cairn-snapshot"), "move-leader", eps, "%x" % tid], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, env=cluster.child_env(), timeout=60)
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    assert c.leader() is target
