"""One cairnd member end to end through cairnwire: KV operations with their
revisions and response headers, transactions, history and compaction; then
crashes: kill -9 in the middle of a cairn-load run loses no acknowledged
write, the revision keeps growing across restarts, SIGTERM exits 0; a store of the
older schema is upgraded at start; a removed data directory stops the member with
78; nng's task threads' scheduling policy."""
import os
import shutil
import signal
import sqlite3
import time

import cluster


def rev(resp):
    return resp.header.revision


def only_kv(wire, resp):
    wire.check(resp, "range")
    assert len(resp.range.kvs) == 1, resp
    return resp.range.kvs[0]


def test_headers_name_the_member_and_its_cluster(member, wire):
    with member.client() as c:
        st = wire.check(c.status(), "status")
        assert st.header.member_id != 0 and st.header.cluster_id != 0
        assert st.status.leader == st.header.member_id, "a one-member cluster leads itself"
        assert st.status.member_name == "m1"
        assert st.status.raft_term >= 1 and st.header.raft_term == st.status.raft_term
        assert st.status.raft_applied_index >= 1
        assert st.status.raft_index >= st.status.raft_applied_index
        p = wire.check(c.put("h", "1"), "put")
        assert (p.header.member_id, p.header.cluster_id) == (st.header.member_id, st.header.cluster_id)
        assert p.header.raft_term == st.status.raft_term
    # The applied index moves past the write (Status may trail the ack a moment, as etcd's does).
    member.wait_applied(st.status.raft_applied_index + 1, timeout=10)


def test_put_get_delete_follow_etcd_revisions(member, wire):
    with member.client() as c:
        r1 = rev(wire.check(c.put("a", "1"), "put"))
        assert r1 >= 2, "the first write is revision 2 at the earliest (etcd starts at 1)"
        kv = only_kv(wire, c.get("a"))
        assert (kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version) == (b"a", b"1", r1, r1, 1)

        p = wire.check(c.put("a", "2", prev_kv=True), "put")
        r2 = rev(p)
        assert r2 == r1 + 1
        assert p.put.prev_kv.value == b"1" and p.put.prev_kv.mod_revision == r1
        kv = only_kv(wire, c.get("a"))
        assert (kv.value, kv.create_revision, kv.mod_revision, kv.version) == (b"2", r1, r2, 2)
        assert rev(c.get("a")) == r2, "a read's header carries the current revision"

        old = only_kv(wire, c.get("a", revision=r1))
        assert (old.value, old.version) == (b"1", 1), "reads at a past revision"

        for k in ("p/1", "p/2", "p/3"):
            wire.check(c.put(k, k.upper()), "put")
        r = wire.check(c.range("p/", wire.prefix_end("p/")), "range")
        assert [kv.key for kv in r.range.kvs] == [b"p/1", b"p/2", b"p/3"] and r.range.count == 3
        r = wire.check(c.range("p/", wire.prefix_end("p/"), limit=2), "range")
        assert len(r.range.kvs) == 2 and r.range.more and r.range.count == 3
        r = wire.check(c.range("p/", wire.prefix_end("p/"), count_only=True), "range")
        assert r.range.count == 3 and len(r.range.kvs) == 0
        r = wire.check(c.range("p/", wire.prefix_end("p/"), keys_only=True), "range")
        assert all(kv.value == b"" for kv in r.range.kvs)

        d = wire.check(c.delete("a", prev_kv=True), "delete_range")
        r3 = rev(d)
        assert d.delete_range.deleted == 1 and d.delete_range.prev_kvs[0].value == b"2"
        assert r3 > r2
        g = wire.check(c.get("a"), "range")
        assert len(g.range.kvs) == 0 and g.range.count == 0

        d = wire.check(c.delete("never-existed"), "delete_range")
        assert d.delete_range.deleted == 0 and rev(d) == r3, "deleting a missing key writes nothing"

        r4 = rev(wire.check(c.put("a", "3"), "put"))
        kv = only_kv(wire, c.get("a"))
        assert (kv.create_revision, kv.version) == (r4, 1), "a delete starts a new generation"

        d = wire.check(c.delete("p/", wire.prefix_end("p/")), "delete_range")
        assert d.delete_range.deleted == 3


def test_errors_carry_codes(member, wire):
    with member.client() as c:
        cur = rev(wire.check(c.put("e", "1"), "put"))
        r = c.get("e", revision=cur + 1000)
        assert wire.is_error(r) and r.error.code == wire.ERRORS["FUTURE_REV"], r
        r = c.put("", "x")
        assert wire.is_error(r) and r.error.code == wire.ERRORS["KEY_EMPTY"], r
        r = c.put("nokey", "", ignore_value=True)
        assert wire.is_error(r) and r.error.code == wire.ERRORS["KEY_NOT_FOUND"], r
        assert r.error.message


def test_txn_runs_one_branch_in_one_revision(member, wire):
    with member.client() as c:
        r0 = rev(wire.check(c.put("t/x", "1"), "put"))
        t = wire.check(c.txn([wire.compare("t/x", "value", "=", "1"), wire.compare("t/y", "version", "=", 0)],
                             [wire.op_put("t/x", "2"), wire.op_put("t/y", "new"), wire.op_range("t/x")],
                             [wire.op_range("t/x")]), "txn")
        assert t.txn.succeeded
        assert [op.WhichOneof("response") for op in t.txn.responses] == \
            ["response_put", "response_put", "response_range"]
        r1 = rev(t)
        assert r1 == r0 + 1, "every operation of a txn shares one revision"
        assert t.txn.responses[2].response_range.kvs[0].value == b"2", "ops see the txn's own writes"
        assert only_kv(wire, c.get("t/y")).mod_revision == r1

        t = wire.check(c.txn([wire.compare("t/x", "mod", "<", r0)],
                             [wire.op_delete("t/x")],
                             [wire.op_range("t/x"), wire.op_range("t/y")]), "txn")
        assert not t.txn.succeeded
        assert [op.response_range.kvs[0].value for op in t.txn.responses] == [b"2", b"new"]
        assert rev(t) == r1, "a read-only branch writes nothing"

        r = c.txn([], [wire.op_put("t/d", "1"), wire.op_put("t/d", "2")])
        assert wire.is_error(r) and r.error.code == wire.ERRORS["DUPLICATE_KEY"], r


def test_history_and_compaction(member, wire):
    with member.client() as c:
        r1 = rev(wire.check(c.put("hk", "1"), "put"))
        r2 = rev(wire.check(c.put("hk", "2"), "put"))
        r3 = rev(wire.check(c.delete("hk"), "delete_range"))
        r4 = rev(wire.check(c.put("hk", "4"), "put"))
        h = wire.check(c.history("hk"), "history")
        recs = [(x.kv.mod_revision, x.tombstone, x.kv.value) for x in h.history.records]
        assert recs == [(r1, False, b"1"), (r2, False, b"2"), (r3, True, b""), (r4, False, b"4")]

        # paging: one record per page, continued from next_revision/next_sub
        seen, after, sub = [], 0, 0
        for _ in range(10):
            h = wire.check(c.history("hk", limit=1, after_revision=after, after_sub=sub), "history")
            seen += [x.kv.mod_revision for x in h.history.records]
            if not h.history.more:
                break
            after, sub = h.history.next_revision, h.history.next_sub
        assert seen == [r1, r2, r3, r4]

        wire.check(c.compact(r2, physical=True), "compact")
        r = c.get("hk", revision=r1)
        assert wire.is_error(r) and r.error.code == wire.ERRORS["COMPACTED"], r
        assert r.error.compact_revision == r2
        assert only_kv(wire, c.get("hk", revision=r2)).value == b"2", "the compact point itself stays readable"
        h = wire.check(c.history("hk"), "history")
        assert [x.kv.mod_revision for x in h.history.records] == [r2, r3, r4]
        assert h.history.compact_revision == r2
        r = c.compact(r1)
        assert wire.is_error(r) and r.error.code == wire.ERRORS["COMPACTED"], "compacting backwards fails"


def test_several_requests_in_flight_on_one_connection(member, wire):
    with member.client() as c:
        replies = c.call_many([wire.put_request("f/%03d" % i, "v%d" % i) for i in range(64)])
        revs = [rev(wire.check(r, "put")) for r in replies]
        assert len(set(revs)) == 64
        got = wire.check(c.range("f/", wire.prefix_end("f/")), "range")
        assert {kv.key: kv.value for kv in got.range.kvs} == {b"f/%03d" % i: b"v%d" % i for i in range(64)}


def test_slow_requests_are_logged_at_most_20_per_10_seconds(env, wire):
    # A threshold of 0 makes every request slow: a storm, as a disk stall
    # makes one.  The log keeps 20 lines per 10 s window; the first line of
    # a later window counts what was left out.
    m = env.cluster(1, extra=["--slow-request-threshold=0"])[0]
    t0 = time.monotonic()
    with m.client() as c:
        for i in range(300):
            wire.check(c.put("slow/%03d" % i, "v"), "put")
    elapsed = time.monotonic() - t0
    # the first window opened with the start's status calls, a moment before t0
    windows = int(elapsed / 10) + 2
    lines = [x for x in m.log_text().splitlines() if "slow request:" in x]
    assert 20 <= len(lines) <= 20 * windows, (len(lines), windows)
    puts = [x for x in lines if "slow request: put" in x]
    assert puts and '\\"slow/000\\" took' in puts[0] and "--slow-request-threshold 0 ms" in puts[0], lines
    assert all("  took" not in x for x in lines), "a request without a key reads 'status took'"
    # the next window's first slow request reports the ones left out
    time.sleep(10.5)
    with m.client() as c:
        wire.check(c.put("slow/after", "v"), "put")
    # a request is logged once its reply has gone: the client can see the reply first
    last = cluster.poll(lambda: [x for x in m.log_text().splitlines() if "slow/after" in x] or None, 10,
                        "the slow-request line of slow/after")[-1]
    assert last == [x for x in m.log_text().splitlines() if "slow request:" in x][-1], last
    if elapsed < 5:  # the 300 puts were all in one window (the usual case): it refused some
        assert "earlier ones not logged)" in last, last


def test_kill_9_during_load_then_restart_keeps_every_acknowledged_write(env, wire, tmp_path):
    c = env.cluster(1)
    m = c[0]
    ack = str(tmp_path / "ack.log")
    total = 20000  # long enough that the kill lands mid-run
    run = env.load.start_put(c, total=total, inflight=32, key_space=1500, ack_log=ack, timeout=90)
    cluster.poll(lambda: cluster.acked_count(ack) >= 1500, 60, "1500 acknowledged puts")
    m.kill()
    acked_before_restart = cluster.acked_count(ack)
    m.restart()
    res = run.wait()
    assert res.rc in (0, 3) and res.report, res
    if acked_before_restart < total:  # else the load had finished before the kill
        assert res.report["acked"] > acked_before_restart, "the load went on after the restart: %r" % res
    env.load.check(c, ack).assert_no_loss()


def test_sigterm_under_client_load_exits_0_and_the_client_comes_back(env, tmp_path):
    """SIGTERM while a client keeps 64 puts in flight, twice.  With Debian's
    libnng, about half of such stops never ended (nng_close of the client
    socket waited forever), and in about one in six the client never
    reconnected to the restarted member (its dialer waited for a pipe that
    was never freed): the race third_party/nng/closed-pipe.patch fixes.
    Under ASan, every such stop before 0da45e2 read the freed node.

    The load has far more puts than it gets through, and is stopped once it
    has gone on after the second restart: a stopping member answers STOPPED
    until it exits, and a fast client that did not retry those spent the
    6,000 puts it had left on them in 0.1 s (libcairn has retried them since,
    as STOPPED now always means "not proposed")."""
    c = env.cluster(1)
    m = c[0]
    ack = str(tmp_path / "ack.log")
    run = env.load.start_put(c, total=400000, inflight=64, key_space=1500, ack_log=ack, seed=1,
                             timeout=120, call_timeout_ms=2000)
    for round in range(2):
        base = cluster.acked_count(ack)
        cluster.poll(lambda: cluster.acked_count(ack) >= base + 1500, 60,
                     "round %d: 1500 more acknowledged puts" % round)
        assert run.proc.poll() is None, "round %d: the load ended early: %r" % (round, run.wait())
        rc = m.terminate(timeout=60)
        assert rc == 0, "round %d: cairnd exited %s\n%s" % (round, rc, m.log_tail())
        log = m.log_text()
        for bad in ("AddressSanitizer", "runtime error", "LeakSanitizer"):
            assert bad not in log, "round %d: %s in the member's log\n%s" % (round, bad, m.log_tail(80))
        m.restart()
    at_restart = cluster.acked_count(ack)
    cluster.poll(lambda: cluster.acked_count(ack) >= at_restart + 1500, 60,
                 "the same client's puts acknowledged again after the second restart")
    run.proc.send_signal(signal.SIGTERM)
    res = run.wait()
    assert res.rc in (0, 3) and res.report, res
    env.load.check(c, ack).assert_no_loss()


def test_revision_keeps_growing_across_restarts(member, wire):
    last = 0
    for i, how in enumerate(["kill", "term", "kill", "term"]):
        with member.client() as c:
            now = rev(wire.check(c.get("anything"), "range"))
            assert i == 0 or now == last, "after restart %d the revision is %d, was %d" % (i, now, last)
            for j in range(5):
                r = rev(wire.check(c.put("grow", "%d-%d" % (i, j)), "put"))
                assert r > last
                last = r
        if how == "kill":
            member.kill()
        else:
            assert member.terminate() == 0
        member.restart()
    with member.client() as c:
        kv = only_kv(wire, c.get("grow"))
        assert kv.value == b"3-4" and kv.mod_revision == last and kv.version == 20


def test_sigterm_exits_0_and_a_restart_serves_the_data(member, wire):
    with member.client() as c:
        r = rev(wire.check(c.put("kept", "yes"), "put"))
    assert member.terminate() == 0, member.log_tail()
    member.restart()
    with member.client() as c:
        kv = only_kv(wire, c.get("kept"))
        assert (kv.value, kv.mod_revision) == (b"yes", r)


# The store as a version with schema 2 wrote it (storage/mvcc.c: `rev` was
# keyed by (main, sub) WITHOUT ROWID), made from this version's own file.
TO_SCHEMA_2 = """BEGIN;
CREATE TABLE rev_v2 (main INTEGER NOT NULL, sub INTEGER NOT NULL, key BLOB NOT NULL,
  create_rev INTEGER NOT NULL, version INTEGER NOT NULL, lease INTEGER NOT NULL, value BLOB,
  PRIMARY KEY (main, sub)) WITHOUT ROWID;
INSERT INTO rev_v2 SELECT main, sub, key, create_rev, version, lease, value FROM rev;
DROP TABLE rev; ALTER TABLE rev_v2 RENAME TO rev; PRAGMA user_version = 2; COMMIT;"""


def test_a_store_of_schema_2_is_upgraded_at_start_and_the_journal_says_so(member, wire):
    """The first start of this version on an older store copies its revisions
    to schema 3 before serving, says when it begins and when it is done (the
    file, how many revisions, how long), and then serves the same keys, the
    same history and the next revision."""
    with member.client() as c:
        for i in range(30):
            wire.check(c.put("k%d" % (i % 7), "v%d" % i), "put")
        wire.check(c.delete("k5", "k7"), "delete_range")
        last = rev(wire.check(c.put("k0", "last"), "put"))
        old = only_kv(wire, c.get("k3", revision=12))
        hist = wire.check(c.history("k", "l"), "history")
    assert member.terminate() == 0, member.log_tail()
    db = os.path.join(member.data_dir, "member", "db", "mvcc.db")
    con = sqlite3.connect(db)
    con.executescript(TO_SCHEMA_2)
    rows = con.execute("SELECT count(*) FROM rev").fetchone()[0]
    con.close()
    assert rows > 30 and len(hist.history.records) == rows
    member.restart()
    with member.client() as c:
        assert only_kv(wire, c.get("k3", revision=12)) == old
        assert wire.check(c.history("k", "l"), "history").history == hist.history
        assert rev(wire.check(c.put("k1", "after"), "put")) == last + 1
    log = member.log_text()
    begun = [x for x in log.splitlines() if "upgrading the store" in x]
    done = [x for x in log.splitlines() if "upgraded the store" in x]
    assert len(begun) == 1 and len(done) == 1, member.log_tail()
    assert db in begun[0] and "from schema 2 to 3" in begun[0] and "%d revisions" % rows in begun[0], begun
    assert db in done[0] and "%d revisions in " % rows in done[0], done
    assert all("msgid=d6b5eb80e081417b9159be4d75fa7723" in x for x in begun + done), begun + done  # catalogued
    assert "serving clients on" in log[log.index(done[0]):], member.log_tail()  # served after it, not before
    # upgraded once: the next start says nothing of it
    assert member.terminate() == 0
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA user_version").fetchone()[0] == 3
    con.close()
    member.restart()
    assert member.log_text().count("upgrading the store") == 1


def test_a_member_whose_data_directory_is_removed_stops_with_78(member, wire):
    """Its WAL would go on appending to unlinked files: every write acknowledged
    afterwards, and its vote, would be gone at the next start.  It stops with
    EX_CONFIG (the unit does not restart on 78) and says why."""
    with member.client() as c:
        wire.check(c.put("before", "1"), "put")
    shutil.rmtree(member.data_dir)
    rc = member.proc.wait(timeout=30)
    assert rc == 78, member.log_tail()
    assert "was removed while the member ran" in member.log_text(), member.log_tail()


SCHED_OTHER, SCHED_BATCH, SCHED_IDLE = 0, 3, 5


def scheduling_policies(pid):
    """{thread name: its threads' scheduling policies} for process pid (/proc's stat, field 41)."""
    out = {}
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                stat = f.read()
        except OSError:
            continue  # the thread exited
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        out.setdefault(name, set()).add(int(stat[stat.rindex(")") + 2:].split()[38]))
    return out


def test_nng_task_threads_never_preempt_on_waking(member, wire):
    """nng's task threads run at SCHED_BATCH (daemon/main.c says why); the member's own threads do not."""
    with member.client() as c:
        wire.check(c.put("k", "v"), "put")
    pol = scheduling_policies(member.pid)
    assert pol.get("nng:task") == {SCHED_BATCH}, pol
    for name in ("cairn-node", "cairn-wal", "cairnd"):
        assert pol.get(name) == {SCHED_OTHER}, (name, pol)


def test_a_member_started_at_another_policy_keeps_it(env):
    """An operator's choice (a unit's CPUSchedulingPolicy=) is left alone: every thread keeps it."""
    c = env.cluster(1, start=False)
    m = c[0]
    argv = m.argv
    m.argv = lambda: ["chrt", "--idle", "0"] + argv()
    c.start()
    pol = scheduling_policies(m.pid)
    assert pol.get("nng:task") == {SCHED_IDLE} and pol.get("cairn-node") == {SCHED_IDLE}, pol
