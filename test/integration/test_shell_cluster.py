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


@pytest.fixture
def need(wire):
    """need(member, what, **body): skip the test unless member serves Request(**body),
    sent once to ask."""
    def check(member, what, **body):
        why = cairnshell.unsupported(member, wire, wire.pb.Request(**body))
        if why:
            pytest.skip("%s: the member answers UNSUPPORTED (%s); issue 7 brings it" % (what, why))
    return check


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

def test_leases_grant_list_attach_keepalive_revoke(sh, member, wire, need):
    need(member, "leases", lease_time_to_live=wire.pb.LeaseTimeToLiveRequest(id=1))
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


def test_lease_keepalive_runs_until_ctrl_c(sh, member, wire, need):
    need(member, "leases", lease_time_to_live=wire.pb.LeaseTimeToLiveRequest(id=1))
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

def test_watch_prints_events_until_ctrl_c(sh, member, wire, need):
    need(member, "watch", watch_create=wire.pb.WatchCreateRequest(key=b"probe"))
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

def test_members_list_add_remove(env, cairn_path, tmp_path, wire, need):
    c = env.cluster(3)
    need(c[0], "members", member_list=wire.pb.MemberListRequest())
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


def test_alarms_raise_and_disarm(sh, member, wire, need):
    need(member, "alarms", alarm=wire.pb.AlarmRequest())
    assert sh.rows("SELECT * FROM alarms") == []
    me = sh.rows("SELECT member_id FROM status")[0]["member_id"]
    out = sh.write("INSERT INTO alarms(member_id, alarm) VALUES ('%s', 'NOSPACE')" % me)
    assert "raised" in out["notice"]
    assert sh.rows("SELECT member_id, alarm FROM alarms") == [{"member_id": me, "alarm": "NOSPACE"}]
    out = sh.write("DELETE FROM alarms")
    assert out["rows"] == 1 and "disarmed" in out["notice"]
    assert sh.rows("SELECT * FROM alarms") == []


# ---------------------------------------------------------------- maintenance functions

def test_defragment_and_snapshot_save(sh, member, wire, tmp_path, need):
    need(member, "defragment", defragment=wire.pb.DefragmentRequest())
    sh.write("INSERT INTO keys(key, value) VALUES ('snap', 'shot')")
    out = sh.rows("SELECT defragment() AS d")[0]["d"]
    assert member.client_url in out and "->" in out, out
    assert member.client_url in sh.rows("SELECT defragment('m1') AS d")[0]["d"]
    need(member, "snapshot", snapshot=wire.pb.SnapshotRequest())
    path = tmp_path / "store.snap"
    out = sh.rows("SELECT snapshot_save('%s') AS s" % path)[0]["s"]
    assert path.exists() and ("%d bytes" % path.stat().st_size) in out, out
    assert path.read_bytes()[:16] == b"SQLite format 3\x00", "the copy is the member's SQLite store"
    assert not (tmp_path / "store.snap.part").exists()


def test_move_leader(env, cairn_path, tmp_path, wire, need):
    c = env.cluster(3)
    need(c[0], "move_leader", move_leader=wire.pb.MoveLeaderRequest(target_id=1))
    sh = cairnshell.Shell(cairn_path, c.endpoints(), tmp_path)
    old = c.leader()
    target = next(m for m in c if m is not old)
    out = sh.rows("SELECT move_leader('%s') AS m" % target.name)[0]["m"]
    assert "leadership moved" in out, out
    assert c.leader(exclude=(old,)) is target


# ---------------------------------------------------------------- against a scripted member
# Until cairnd serves members, alarms and maintenance (issue 7), a member
# scripted here checks what the shell sends for them and how it shows the
# answers.  It speaks nng's rep0 over tcp (cairnwire's framing, server side).

class ScriptedMember:
    """A rep0 listener answering each Request with answer(req) -> Response; keeps every request."""

    ME = 0xabcdef0123456789
    OTHER = 0x1111222233334444

    def __init__(self, wire, answer):
        import socket
        import threading
        self.wire, self.answer = wire, answer
        self.requests = []
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(8)
        self.url = "tcp://127.0.0.1:%d" % self.lsock.getsockname()[1]
        self.stopping = False
        self.conns = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        import threading
        while not self.stopping:
            try:
                s, _ = self.lsock.accept()
            except OSError:
                return
            self.conns.append(s)
            threading.Thread(target=self._serve, args=(s,), daemon=True).start()

    def _serve(self, s):
        import struct
        w = self.wire
        try:
            s.sendall(w.sp_header(w.PROTO_REP0))
            w.recv_exact(s, 8)
            while True:
                n = struct.unpack(">Q", w.recv_exact(s, 8))[0]
                body = w.recv_exact(s, n)
                req = w.pb.Request.FromString(body[4:])
                self.requests.append(req)
                resp = self.answer(req)
                resp.header.member_id = self.ME
                resp.header.revision = 7
                out = body[:4] + resp.SerializeToString()
                s.sendall(struct.pack(">Q", len(out)) + out)
        except (OSError, w.WireError):
            return

    def sent(self, body):
        """The requests with that body."""
        return [getattr(r, body) for r in self.requests if r.WhichOneof("body") == body]

    def stop(self):
        self.stopping = True
        self.lsock.close()
        for s in self.conns:
            s.close()


@pytest.fixture
def scripted(wire):
    made = []

    def make(answer):
        m = ScriptedMember(wire, answer)
        made.append(m)
        return m
    yield make
    for m in made:
        m.stop()


def test_cluster_tables_and_functions_against_a_scripted_member(scripted, wire, cairn_path, tmp_path):
    import hashlib
    pb = wire.pb
    chunks = [b"SQLite format 3\x00" + b"a" * 100, b"b" * 50]
    bad_sum = []

    def answer(req):
        kind = req.WhichOneof("body")
        r = pb.Response()
        if kind == "status":
            r.status.member_name = "fake"
            r.status.leader = ScriptedMember.ME
        elif kind == "member_list":
            r.member_list.leader_id = ScriptedMember.ME
            r.member_list.members.add(id=ScriptedMember.ME, name="fake", peer_urls=["tcp://h1:2480"],
                                      client_urls=["tcp://h1:2479", "tcp://h1b:2479"])
            r.member_list.members.add(id=ScriptedMember.OTHER, name="", peer_urls=["tcp://h2:2480"],
                                      is_learner=True)
        elif kind in ("member_add", "member_remove", "member_promote", "member_update"):
            body = getattr(r, kind)
            body.SetInParent()
            if kind == "member_add":
                body.member.id = 0x5555
        elif kind == "alarm":
            if req.alarm.action == pb.AlarmRequest.GET:
                r.alarm.alarms.add(member_id=ScriptedMember.OTHER, alarm=pb.NOSPACE)
                r.alarm.alarms.add(member_id=ScriptedMember.ME, alarm=pb.CORRUPT)
            else:
                r.alarm.SetInParent()
        elif kind == "defragment":
            r.defragment.db_size_before = 5 << 20
            r.defragment.db_size_after = 1 << 20
            r.defragment.pause_ms = 12
        elif kind == "snapshot":
            i = 0 if req.snapshot.snapshot_id == 0 else 1
            r.snapshot.snapshot_id = 77
            r.snapshot.offset = 0 if i == 0 else len(chunks[0])
            r.snapshot.blob = chunks[i]
            r.snapshot.revision = 7
            r.snapshot.done = i == 1
            if i == 1:
                r.snapshot.sha256 = hashlib.sha256(b"x" if bad_sum else b"".join(chunks)).digest()
        elif kind == "move_leader":
            r.move_leader.SetInParent()
        else:
            r.error.code = wire.ERRORS["UNSUPPORTED"]
            r.error.message = "not scripted"
        return r

    m = scripted(answer)
    sh = cairnshell.Shell(cairn_path, m.url, tmp_path)
    me, other = "%016x" % ScriptedMember.ME, "%016x" % ScriptedMember.OTHER
    assert sh.rows("SELECT * FROM members") == [
        {"id": me, "name": "fake", "peer_urls": "tcp://h1:2480", "client_urls": "tcp://h1:2479,tcp://h1b:2479",
         "is_learner": 0, "is_leader": 1},
        {"id": other, "name": "", "peer_urls": "tcp://h2:2480", "client_urls": "", "is_learner": 1,
         "is_leader": 0}]
    assert m.sent("member_list")[-1].linearizable
    out = sh.write("INSERT INTO members(peer_urls, is_learner) VALUES ('tcp://h3:2480, tcp://h3b:2480', 1)")
    assert out["notice"] == "member 0000000000005555 added; start it with --initial-cluster-state existing"
    add = m.sent("member_add")[-1]
    assert list(add.peer_urls) == ["tcp://h3:2480", "tcp://h3b:2480"] and add.is_learner
    sh.write("UPDATE members SET is_learner = 0 WHERE name = ''")
    assert [p.id for p in m.sent("member_promote")] == [ScriptedMember.OTHER]
    sh.write("UPDATE members SET peer_urls = 'tcp://h9:2480' WHERE id = '%s'" % other)
    upd = m.sent("member_update")[-1]
    assert upd.id == ScriptedMember.OTHER and list(upd.peer_urls) == ["tcp://h9:2480"]
    assert "become a learner" in sh.fails("UPDATE members SET is_learner = 1 WHERE id = '%s'" % me)
    sh.write("DELETE FROM members WHERE is_learner")
    assert [p.id for p in m.sent("member_remove")] == [ScriptedMember.OTHER]

    assert sh.rows("SELECT * FROM alarms") == [{"member_id": other, "alarm": "NOSPACE"},
                                                {"member_id": me, "alarm": "CORRUPT"}]
    out = sh.write("DELETE FROM alarms WHERE alarm = 'NOSPACE'")
    assert out["rows"] == 1 and out["notice"] == "alarm NOSPACE of member %s disarmed" % other
    off = [a for a in m.sent("alarm") if a.action == pb.AlarmRequest.DEACTIVATE]
    assert [(a.member_id, a.alarm) for a in off] == [(ScriptedMember.OTHER, pb.NOSPACE)]
    sh.write("INSERT INTO alarms(member_id, alarm) VALUES ('%s', 'nospace')" % me)
    on = [a for a in m.sent("alarm") if a.action == pb.AlarmRequest.ACTIVATE]
    assert [(a.member_id, a.alarm) for a in on] == [(ScriptedMember.ME, pb.NOSPACE)]

    d = sh.rows("SELECT defragment() AS d, defragment('fake') AS by_name, defragment('%s') AS by_id" % me)[0]
    assert d["d"] == "%s: 5120 KiB -> 1024 KiB (applier paused 12 ms)" % m.url and d["by_name"] == d["by_id"] == d["d"]
    assert "no endpoint answers as member 'nobody'" in sh.fails("SELECT defragment('nobody')")

    path = tmp_path / "copy.db"
    out = sh.rows("SELECT snapshot_save('%s') AS s" % path)[0]["s"]
    assert out == "%d bytes at revision 7 written to %s" % (len(b"".join(chunks)), path)
    assert path.read_bytes() == b"".join(chunks)
    assert [(s.snapshot_id, s.offset) for s in m.sent("snapshot")] == [(0, 0), (77, len(chunks[0]))]
    bad_sum.append(1)
    bad = tmp_path / "bad.db"
    assert "does not match" in sh.fails("SELECT snapshot_save('%s')" % bad)
    assert not bad.exists() and not (tmp_path / "bad.db.part").exists()

    assert sh.rows("SELECT move_leader('%s') AS m" % other) == [
        {"m": "leadership moved from %s to %s" % (me, other)}]
    assert [x.target_id for x in m.sent("move_leader")] == [ScriptedMember.OTHER]
    assert "UNSUPPORTED: not scripted" in sh.fails("SELECT * FROM leases")
