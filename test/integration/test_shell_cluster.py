"""cairn's cluster tables and the commands that run until Ctrl-C, against real
members: leases (grant, list, attached keys, keepalive, revoke), \\lease
keepalive, \\watch, members (list, add, remove, promote), alarms (raise,
disarm), and the maintenance functions defragment, snapshot_save and
move_leader.  Each test first sends the call it needs once; while the member
answers UNSUPPORTED (issue 7 lands them) the test is skipped with the
member's words."""
import json
import os
import signal
import subprocess
import time

import pytest

import cairnshell
import cluster as cluster_mod


@pytest.fixture(scope="session")
def cairn_path(build_dir):
    p = build_dir / "cairn"
    if not p.exists():
        pytest.fail("%s was not built (make builds it from shell/)" % p)
    return p


def need(member, wire, what, **body):
    """Skip unless the member serves the request Request(**body)."""
    why = cairnshell.unsupported(member, wire, wire.pb.Request(**body))
    if why:
        pytest.skip("%s: the member answers UNSUPPORTED (%s); issue 7 brings it" % (what, why))


@pytest.fixture
def sh(cairn_path, member, tmp_path):
    return cairnshell.Shell(cairn_path, member.client_url, tmp_path)


class Running:
    """A cairn running one long command (\\watch, \\lease keepalive) until SIGINT."""

    def __init__(self, shell, command, fmt):
        self.proc = subprocess.Popen(shell.argv(fmt) + ["-c", command], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=shell.env(), text=True, bufsize=1,
                                     preexec_fn=cluster_mod._die_with_parent)
        os.set_blocking(self.proc.stdout.fileno(), False)
        os.set_blocking(self.proc.stderr.fileno(), False)
        self.out = ""
        self.err = ""

    def _drain(self):
        for name, f in (("out", self.proc.stdout), ("err", self.proc.stderr)):
            try:
                chunk = f.read()
            except (BlockingIOError, TypeError):
                chunk = None
            if chunk:
                setattr(self, name, getattr(self, name) + chunk)

    def wait_for(self, pred, what, timeout=20):
        def ready():
            self._drain()
            if self.proc.poll() is not None:
                self._drain()
                raise AssertionError("cairn exited (%s) before %s:\n%s\n%s" % (
                    self.proc.returncode, what, self.out, self.err))
            return pred(self)
        return cluster_mod.poll(ready, timeout, what)

    def interrupt(self, timeout=20):
        """Ctrl-C; returns the exit status."""
        self.proc.send_signal(signal.SIGINT)
        rc = self.proc.wait(timeout=timeout)
        os.set_blocking(self.proc.stdout.fileno(), True)
        os.set_blocking(self.proc.stderr.fileno(), True)
        self.out += self.proc.stdout.read() or ""
        self.err += self.proc.stderr.read() or ""
        return rc

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# ---------------------------------------------------------------- leases

def test_leases_grant_list_attach_keepalive_revoke(sh, member, wire):
    need(member, wire, "leases", lease_time_to_live=wire.pb.LeaseTimeToLiveRequest(id=1))
    out = sh.sql("INSERT INTO leases(ttl) VALUES (60)", "SELECT last_insert_rowid() AS id")
    lid = out[1][0]["id"]
    assert lid > 0 and out[0][0]["notice"] == "lease %d granted, ttl 60 s" % lid, out
    w = sh.write("INSERT INTO keys(key, value, lease) VALUES ('l/1', 'a', %d), ('l/2', 'b', %d)" % (lid, lid))
    assert sh.rows("SELECT key, lease FROM keys WHERE key LIKE 'l/%'") == [
        {"key": "l/1", "lease": lid}, {"key": "l/2", "lease": lid}]
    rows = sh.rows("SELECT id, ttl, granted_ttl, keys FROM leases WHERE id = %d" % lid)
    assert len(rows) == 1 and rows[0]["granted_ttl"] == 60 and 0 < rows[0]["ttl"] <= 60, rows
    assert sorted(json.loads(rows[0]["keys"])) == ["l/1", "l/2"]
    assert lid in [r["id"] for r in sh.rows("SELECT id FROM leases")]
    # a join: the keys of each lease, through the lease column
    assert sh.rows("SELECT k.key FROM leases AS l JOIN keys AS k ON k.lease = l.id "
                   "WHERE l.id = %d AND k.key LIKE 'l/%%'" % lid) == [{"key": "l/1"}, {"key": "l/2"}]
    ttl = sh.rows("SELECT keepalive(%d) AS ttl" % lid)[0]["ttl"]
    assert 55 <= ttl <= 60, ttl
    assert "cannot be changed" in sh.fails("UPDATE leases SET ttl = 5 WHERE id = %d" % lid)
    # revoking deletes the attached keys, at one revision
    out = sh.write("DELETE FROM leases WHERE id = %d" % lid)
    assert out["rows"] == 1 and "revoked" in out["notice"], out
    assert sh.rows("SELECT key FROM keys WHERE key LIKE 'l/%'") == []
    assert sh.rows("SELECT id FROM leases WHERE id = %d" % lid) == []
    assert {r["event"] for r in sh.rows("SELECT event FROM revisions WHERE key LIKE 'l/%%' "
                                        "AND revision > %d" % w["revision"])} == {"DELETE"}
    # a chosen ID
    out = sh.sql("INSERT INTO leases(id, ttl) VALUES (424242, 30)", "SELECT last_insert_rowid() AS id")
    assert out[1] == [{"id": 424242}]
    assert "LEASE_NOT_FOUND" in sh.fails("SELECT keepalive(7)")


def test_lease_keepalive_runs_until_ctrl_c(sh, member, wire):
    need(member, wire, "leases", lease_time_to_live=wire.pb.LeaseTimeToLiveRequest(id=1))
    lid = sh.sql("INSERT INTO leases(ttl) VALUES (3)", "SELECT last_insert_rowid() AS id")[1][0]["id"]
    run = Running(sh, "\\lease keepalive %d" % lid, "table")
    try:
        run.wait_for(lambda r: r.out.count("lease %d: ttl" % lid) >= 3, "three renewals")
        rc = run.interrupt()
    finally:
        run.kill()
    assert rc == 0, (rc, run.out, run.err)
    assert "keeping lease %d alive" % lid in run.out
    # kept alive past its TTL of 3 s
    assert sh.rows("SELECT id FROM leases WHERE id = %d" % lid) == [{"id": lid}]


# ---------------------------------------------------------------- watch

def test_watch_prints_events_until_ctrl_c(sh, member, wire):
    need(member, wire, "watch", watch_create=wire.pb.WatchCreateRequest(key=b"probe"))
    first = sh.write("INSERT INTO keys(key, value) VALUES ('w/old', 'before')")["revision"]
    run = Running(sh, "\\watch w/", "json")
    try:
        run.wait_for(lambda r: "watching" in r.err, "the watch to start")
        with member.client() as c:
            wire.check(c.put("w/1", "one"), "put")
            wire.check(c.put("elsewhere", "x"), "put")
            wire.check(c.delete("w/1"), "delete_range")
        run.wait_for(lambda r: r.out.count("\n") >= 2, "two events")
        rc = run.interrupt()
    finally:
        run.kill()
    assert rc == 0, (rc, run.out, run.err)
    events = [json.loads(line) for line in run.out.splitlines()]
    assert [(e["type"], e["key"]) for e in events] == [("PUT", "w/1"), ("DELETE", "w/1")], events
    assert events[0]["value"] == "one" and events[1]["mod_revision"] > events[0]["mod_revision"]
    # FROM a past revision replays what happened since
    run = Running(sh, "\\watch w/ FROM %d" % first, "json")
    try:
        run.wait_for(lambda r: r.out.count("\n") >= 3, "the replayed events")
        rc = run.interrupt()
    finally:
        run.kill()
    assert rc == 0
    assert [(e["type"], e["key"]) for e in map(json.loads, run.out.splitlines())] == [
        ("PUT", "w/old"), ("PUT", "w/1"), ("DELETE", "w/1")]


# ---------------------------------------------------------------- members, alarms

def test_members_list_add_remove(env, cairn_path, tmp_path, wire):
    c = env.cluster(3)
    need(c[0], wire, "members", member_list=wire.pb.MemberListRequest())
    sh = cairnshell.Shell(cairn_path, c.endpoints(), tmp_path)
    rows = sh.rows("SELECT id, name, peer_urls, client_urls, is_learner, is_leader FROM members ORDER BY name")
    assert [r["name"] for r in rows] == ["m1", "m2", "m3"]
    assert [r["peer_urls"] for r in rows] == [m.peer_url for m in c]
    assert sum(r["is_leader"] for r in rows) == 1 and not any(r["is_learner"] for r in rows)
    ids = sh.rows("SELECT member_id FROM status")
    assert sorted(r["member_id"] for r in ids) == sorted(r["id"] for r in rows), \
        "members and status name members alike (16 hex digits)"
    leader = sh.rows("SELECT m.name FROM members AS m JOIN status AS s ON s.member_id = m.id "
                     "WHERE s.is_leader")
    assert leader == [{"name": c.leader().name}]
    # add a learner (never started), see it, fail to promote it, remove it
    url = "tcp://127.0.0.1:%d" % cluster_mod.free_port()
    out = sh.write("INSERT INTO members(peer_urls, is_learner) VALUES ('%s', 1)" % url)
    assert "added" in out["notice"], out
    new = sh.rows("SELECT id, is_learner FROM members WHERE peer_urls = '%s'" % url)
    assert len(new) == 1 and new[0]["is_learner"] == 1
    err = sh.fails("UPDATE members SET is_learner = 0 WHERE id = '%s'" % new[0]["id"])
    assert "LEARNER_NOT_READY" in err, err
    assert "cannot be changed" in sh.fails("UPDATE members SET name = 'x' WHERE id = '%s'" % new[0]["id"])
    sh.write("DELETE FROM members WHERE id = '%s'" % new[0]["id"])
    assert len(sh.rows("SELECT id FROM members")) == 3


def test_alarms_raise_and_disarm(sh, member, wire):
    need(member, wire, "alarms", alarm=wire.pb.AlarmRequest())
    assert sh.rows("SELECT * FROM alarms") == []
    me = sh.rows("SELECT member_id FROM status")[0]["member_id"]
    out = sh.write("INSERT INTO alarms(member_id, alarm) VALUES ('%s', 'NOSPACE')" % me)
    assert "raised" in out["notice"]
    assert sh.rows("SELECT member_id, alarm FROM alarms") == [{"member_id": me, "alarm": "NOSPACE"}]
    out = sh.write("DELETE FROM alarms")
    assert out["rows"] == 1 and "disarmed" in out["notice"]
    assert sh.rows("SELECT * FROM alarms") == []


# ---------------------------------------------------------------- maintenance functions

def test_defragment_and_snapshot_save(sh, member, wire, tmp_path):
    need(member, wire, "defragment", defragment=wire.pb.DefragmentRequest())
    sh.write("INSERT INTO keys(key, value) VALUES ('snap', 'shot')")
    out = sh.rows("SELECT defragment() AS d")[0]["d"]
    assert member.client_url in out and "->" in out, out
    assert member.client_url in sh.rows("SELECT defragment('m1') AS d")[0]["d"]
    need(member, wire, "snapshot", snapshot=wire.pb.SnapshotRequest())
    path = tmp_path / "store.snap"
    out = sh.rows("SELECT snapshot_save('%s') AS s" % path)[0]["s"]
    assert path.exists() and ("%d bytes" % path.stat().st_size) in out, out
    assert path.read_bytes()[:16] == b"SQLite format 3\x00", "the copy is the member's SQLite store"
    assert not (tmp_path / "store.snap.part").exists()


def test_move_leader(env, cairn_path, tmp_path, wire):
    c = env.cluster(3)
    need(c[0], wire, "move_leader", move_leader=wire.pb.MoveLeaderRequest(target_id=1))
    sh = cairnshell.Shell(cairn_path, c.endpoints(), tmp_path)
    old = c.leader()
    target = next(m for m in c if m is not old)
    out = sh.rows("SELECT move_leader('%s') AS m" % target.name)[0]["m"]
    assert "leadership moved" in out, out
    assert c.leader(exclude=(old,)) is target
