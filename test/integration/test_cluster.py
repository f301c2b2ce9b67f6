"""Three cairnd members on loopback: every member serves writes and
linearizable reads; killing the leader (-9) elects another and loses no
acknowledged write; a follower that was down for 20,000 writes catches up
although the leader's log was compacted past it (so only a snapshot can
bring it back); all three killed at once and restarted keep every
acknowledged write; a write that finds no leader waits for one, and gets
NO_LEADER if none comes.  Elections are waited for by polling, never timed."""
import threading

import cluster
import prom

# Puts of a load that a member is killed in the middle of: the kill comes
# after 1500 are acknowledged, usually long before all are (if the load
# finished first, the check still stands; only "it went on" is moot).
TOTAL = 15000


def rev(resp):
    return resp.header.revision


def get_kv(wire, m, key, **kw):
    r = wire.check(m.call(wire.range_request(key, **kw)), "range")
    return r.range.kvs[0] if r.range.kvs else None


def test_every_member_serves_writes_and_linearizable_reads(env, wire):
    c = env.cluster(3)
    sts = [m.wait_ready() for m in c]
    assert len({st.header.member_id for st in sts}) == 3, "members have distinct IDs"
    assert len({st.header.cluster_id for st in sts}) == 1, "and one cluster ID"
    assert len({st.status.leader for st in sts}) == 1, "and agree on the leader"
    assert sorted(st.status.member_name for st in sts) == ["m1", "m2", "m3"]

    for i, writer in enumerate(c):
        with writer.client() as w:
            r = wire.check(w.put("k%d" % i, "from-" + writer.name), "put")
        # Right after the write is acknowledged, a linearizable read on any member sees it.
        for reader in c:
            kv = get_kv(wire, reader, "k%d" % i)
            assert kv is not None and kv.value == b"from-" + writer.name.encode(), (writer.name, reader.name)
            assert kv.mod_revision == rev(r)

    # A txn through a follower runs once, in one revision.
    f = c.followers()[0]
    with f.client() as fc:
        t = wire.check(fc.txn([wire.compare("k0", "value", "=", "from-m1")],
                              [wire.op_put("k0", "txn"), wire.op_delete("k1")]), "txn")
    assert t.txn.succeeded
    for reader in c:
        assert get_kv(wire, reader, "k0").mod_revision == rev(t)
        assert get_kv(wire, reader, "k1") is None

    # Revisions agree across members: the same key read everywhere has one history.
    hist = set()
    for reader in c:
        h = wire.check(reader.call(wire.pb.Request(history=wire.pb.HistoryRequest(key=b"k0"))), "history")
        hist.add(tuple((x.kv.mod_revision, x.kv.value) for x in h.history.records))
    assert len(hist) == 1, hist


def test_killing_the_leader_elects_another_and_loses_no_acknowledged_write(env, wire, tmp_path):
    c = env.cluster(3)
    old = c.leader()
    old_term = old.status().status.raft_term
    ack = str(tmp_path / "ack.log")
    run = env.load.start_put(c, total=TOTAL, inflight=32, key_space=2000, ack_log=ack, timeout=120)
    cluster.poll(lambda: cluster.acked_count(ack) >= 1500, 60, "1500 acknowledged puts")
    old.kill()
    at_kill = cluster.acked_count(ack)
    survivors = [m for m in c if m is not old]
    # A few election timeouts are enough; the deadline is generous, nothing is timed.
    new = c.leader(timeout=40 * cluster.ELECTION_MS / 1000, members=survivors)
    assert new is not old
    assert new.status().status.raft_term > old_term

    res = run.wait()
    assert res.rc in (0, 3) and res.report, res
    if at_kill < TOTAL:
        assert res.report["acked"] > at_kill, "writes went on under the new leader: %r" % res
    env.load.check(c, ack, members=survivors).assert_no_loss()

    # The old leader comes back as a follower and catches up.
    old.restart()
    old.wait_applied(new.applied_index())
    env.load.check(c, ack, members=[old]).assert_no_loss()


def test_a_follower_down_during_20000_writes_catches_up_through_a_snapshot(env, wire, tmp_path):
    # Snapshots every 1000 entries keeping 500: the leader's log soon starts far
    # beyond anything the stopped follower has, so only a snapshot can catch it up.
    c = env.cluster(3, start=False, snapshot_count=1000, snapshot_catchup_entries=500)
    # An election timeout of 2 s makes the store's lease minimum 3 s (1.5
    # timeouts, rounded up), so a grant of 1 s shows whether a member still
    # applies with its configured store options after installing a snapshot.
    c.election_ms = 2000
    c.start()
    f = c.followers()[0]
    f_applied = f.applied_index()
    f.kill()
    ack = str(tmp_path / "ack.log")
    up = [m for m in c if m is not f]
    res = env.load.put(c, members=up, total=20000, inflight=64, key_space=5000, ack_log=ack, timeout=150)
    assert res.rc == 0, res
    lead = c.leader(members=up)
    lead_applied = lead.applied_index()
    assert lead_applied - f_applied > 1000 + 500, \
        "the leader's log must have been compacted past the follower (applied %d vs %d)" % (lead_applied, f_applied)

    f.restart()
    f.wait_applied(lead_applied)

    # A linearizable read on the follower returns the last acknowledged write.
    acked = cluster.read_ack_log(ack)
    key, (last_rev, seq, size) = max(acked.items(), key=lambda kv: kv[1][0])
    kv = get_kv(wire, f, key)
    assert kv is not None and kv.mod_revision == last_rev, (key, last_rev, kv)
    assert kv.value == cluster.load_value(key, seq, size)
    # And every key's last acknowledged write, read through it alone.
    env.load.check(c, ack, members=[f]).assert_no_loss()

    # The store it installed is opened with the member's own options: a
    # grant it proposes and applies is raised to the minimum, as on the
    # others (it was reopened with the defaults, a minimum of none, before).
    for m in (f, lead):
        r = wire.check(m.call(wire.pb.Request(lease_grant=wire.pb.LeaseGrantRequest(ttl=1))), "lease_grant")
        assert r.lease_grant.ttl == 3, (m.name, r.lease_grant)


def test_all_members_killed_at_once_and_restarted_keep_every_acknowledged_write(env, wire, tmp_path):
    c = env.cluster(3)
    ack = str(tmp_path / "ack.log")
    run = env.load.start_put(c, total=TOTAL, inflight=32, key_space=2000, ack_log=ack, timeout=120,
                             call_timeout_ms=15000)
    cluster.poll(lambda: cluster.acked_count(ack) >= 1500, 60, "1500 acknowledged puts")
    for m in c:  # signal all three before reaping any
        m.proc.kill()
    for m in c:
        m.kill()
    for m in c:
        m.start()
    c.wait_ready()
    res = run.wait()
    assert res.rc in (0, 3) and res.report, res
    # Writes go on after the restart.  What was left of the first load may
    # all have failed meanwhile: puts in flight at the kill time out, and a
    # write that waited longer than half the request timeout for a leader
    # is refused with NO_LEADER (under ASan, before writes waited for a
    # leader, the load once used up its last 13,391 puts that way in 0.2 s).
    # So a second load, once there is a leader, shows it.
    res = env.load.put(c, total=500, inflight=32, key_space=2000, ack_log=ack, seed=2, timeout=120)
    assert res.rc == 0 and res.report["acked"] == 500, "writes went on after the restart: %r" % res
    env.load.check(c, ack).assert_no_loss()
    # every member holds the same state: each alone passes the check
    for m in c:
        env.load.check(c, ack, members=[m]).assert_no_loss()


def test_a_write_without_a_leader_waits_for_the_election(env, wire):
    # --request-timeout=14s: a write waits up to 7 s for a leader.
    c = prom.start_with_metrics(env, 3, extra=["--request-timeout=14s"])
    lead = c.leader()
    with lead.client() as w:
        before = rev(wire.check(w.put("k", "before"), "put"))
    s = lead
    others = [m for m in c if m is not s]

    def without_a_leader():
        for o in others:
            o.kill()
        # the leader steps down once it has not heard from a quorum for an election timeout
        def no_leader():
            st = s.status()
            return st is not None and st.status.leader == 0
        cluster.poll(no_leader, cluster.LEADER_TIMEOUT, "%s knowing no leader" % s.name)

    # A write that finds no leader waits for one, and is proposed once there is.
    without_a_leader()
    result = {}

    def put_waiting(value):
        """Start a put of k on s in a thread; return once s holds it waiting for a leader."""
        def waited_total():
            return prom.scrape(s).value("cairn_proposals_waited_for_leader_total") or 0
        waited = waited_total()
        result.clear()

        def run():
            try:
                result["r"] = s.call(wire.put_request("k", value), timeout=20)
            except (OSError, wire.WireError) as e:
                result["r"] = e
        t = threading.Thread(target=run)
        t.start()
        try:
            cluster.poll(lambda: "r" in result or waited_total() == waited + 1, 10, "the write waiting for a leader")
        except BaseException:
            t.join(30)
            raise
        assert "r" not in result, "answered before any leader: %r" % result.get("r")
        assert prom.scrape(s).value("etcd_server_proposals_pending") >= 1
        return t

    t = put_waiting("during")
    try:
        others[0].restart(wait_ready=False)
    finally:
        t.join(30)
    during = wire.check(result["r"], "put")
    assert rev(during) == before + 1
    assert get_kv(wire, s, "k").value == b"during"
    assert prom.scrape(s).value("etcd_server_proposals_pending") == 0

    # No leader within half the request timeout: NO_LEADER, and the write was not proposed.
    c.leader()
    without_a_leader()
    failed = prom.scrape(s).value("etcd_server_proposals_failed_total")
    r = s.call(wire.put_request("k", "never"), timeout=20)
    assert wire.is_error(r) and r.error.code == wire.ERRORS["NO_LEADER"], r
    assert "not proposed" in r.error.message, r.error.message
    assert prom.scrape(s).value("etcd_server_proposals_failed_total") == failed + 1

    # SIGTERM drains the requests in flight, a waiting write included: it is
    # answered (NO_LEADER, as no leader comes) and the member exits cleanly.
    t = put_waiting("stopping")
    try:
        assert s.terminate() == 0
    finally:
        t.join(30)
    r = result["r"]
    assert wire.is_error(r) and r.error.code == wire.ERRORS["NO_LEADER"], r
    s.start()
    others[0].restart()
    assert get_kv(wire, s, "k").value == b"during"
    assert get_kv(wire, s, "k").mod_revision == rev(during)


def test_members_at_the_same_revision_have_the_same_hash(env, wire):
    c = env.cluster(3)
    lead = c.leader()
    with lead.client() as cl:
        for i in range(200):
            assert not wire.is_error(cl.put(b"h/%03d" % i, b"v%d" % i))
        assert not wire.is_error(cl.delete(b"h/000"))
        rev = cl.status().header.revision
    for m in c:
        m.wait_applied(lead.applied_index())
    hashes = set()
    for m in c:
        r = m.call(wire.pb.Request(hash_kv=wire.pb.HashKVRequest(revision=rev)))
        assert not wire.is_error(r) and r.hash_kv.hash_revision == rev, r
        hashes.add(r.hash_kv.hash)
    assert len(hashes) == 1, hashes
    # a different revision hashes differently
    r = lead.call(wire.pb.Request(hash_kv=wire.pb.HashKVRequest(revision=rev - 1)))
    assert r.hash_kv.hash not in hashes
    future = lead.call(wire.pb.Request(hash_kv=wire.pb.HashKVRequest(revision=rev + 1000)))
    assert wire.is_error(future) and future.error.code == wire.ERRORS["FUTURE_REV"], future
