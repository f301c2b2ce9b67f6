"""Snapshot save and `cairnd restore` on real members: a snapshot saved from
a 3-member cluster (through libcairn, tools/cairn-snapshot) restores into 3
new data directories that start as a new cluster with the same keys,
revisions and leases (equal HashKV at the saved revision); the Snapshot
call's sessions (chunks by offset, unknown IDs, the limit of 2, clean-up at
stop); restore's refusals (a non-empty data directory, a damaged or foreign
file, bad arguments), each naming what is wrong."""
import hashlib
import json
import os
import subprocess

import pytest

import cluster


@pytest.fixture
def snapshot_tool(build_dir):
    p = build_dir / "cairn-snapshot"
    if not p.exists():
        pytest.fail("%s was not built (make builds tools/cairn-snapshot.c)" % p)
    return str(p)


def save(tool, endpoints, path):
    p = subprocess.run([tool, "save", endpoints, str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       env=cluster.child_env(), timeout=120)
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    return json.loads(p.stdout.decode())


def restore(env, snapshot, *args):
    p = subprocess.run([env.cairnd, "restore", str(snapshot), *[str(a) for a in args]], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, env=cluster.child_env(), timeout=120)
    return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")


def restore_member(env, snapshot, m):
    """Restore member m of a (not started) cluster from snapshot with its own flags."""
    c = m.cluster
    return restore(env, snapshot, "--data-dir=" + m.data_dir, "--name=" + m.name,
                   "--initial-cluster=" + c.initial_cluster(), "--initial-cluster-token=" + c.token,
                   "--initial-advertise-peer-urls=" + m.peer_url)


def hash_kv(wire, m, rev):
    r = wire.check(m.call(wire.pb.Request(hash_kv=wire.pb.HashKVRequest(revision=rev))), "hash_kv")
    return r.hash_kv.hash, r.hash_kv.compact_revision


def all_kvs(wire, m):
    r = wire.check(m.call(wire.range_request(b"\x00", range_end=b"\x00", serializable=True)), "range")
    return [(kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease) for kv in r.range.kvs]


def fill(wire, c):
    """Puts, overwrites, deletes, a compaction, a lease with a key: a store with some history."""
    lead = c.leader()
    with lead.client() as w:
        for i in range(300):
            wire.check(w.put("key/%03d" % i, "v%d" % i * 20), "put")
        for i in range(0, 300, 3):
            wire.check(w.put("key/%03d" % i, "second-%d" % i), "put")
        wire.check(w.delete("key/1", range_end="key/2"), "delete_range")
        mid = wire.check(w.status(), "status").header.revision
        wire.check(w.compact(mid - 50), "compact")
        g = wire.check(w.call(wire.pb.Request(lease_grant=wire.pb.LeaseGrantRequest(ttl=3600))), "lease_grant")
        lease = g.lease_grant.id
        wire.check(w.put("leased", "x", lease=lease), "put")
        rev = wire.check(w.put("last", "y"), "put").header.revision
    for m in c:
        m.wait_applied(lead.applied_index())
    return rev, lease


def test_a_snapshot_restores_into_a_new_cluster_with_the_same_data(env, wire, snapshot_tool, tmp_path):
    old = env.cluster(3)
    rev, lease = fill(wire, old)
    lead = old.leader()
    old_hash = hash_kv(wire, lead, rev)
    old_kvs = all_kvs(wire, lead)
    old_cluster_id = lead.status().header.cluster_id

    path = tmp_path / "backup.db"
    info = save(snapshot_tool, lead.client_url, path)
    assert info["revision"] == rev
    data = path.read_bytes()
    assert info["bytes"] == len(data) and info["sha256"] == hashlib.sha256(data).hexdigest()
    side = (tmp_path / "backup.db.sha256").read_text()
    assert side == "%s  backup.db\n" % info["sha256"], side
    assert not (tmp_path / "backup.db.part").exists()
    # the member deletes its copy only when idle or stopping; it is in its incoming directory meanwhile
    assert any(f.startswith("backup-") for f in os.listdir(os.path.join(lead.data_dir, "member", "incoming")))
    print("snapshot save: %d bytes in %.3f s (%.1f MB/s)" % (info["bytes"], info["seconds"], info["mb_per_s"]))

    new = env.cluster(3, start=False, token="restored-%d" % os.getpid())
    for m in new:
        rc, out, err = restore_member(env, path, m)
        assert rc == 0, err
        assert "integrity check passed" in out and "SHA-256 matches" in out, out
        assert "restored into %s/member" % m.data_dir in out and "revision %d" % rev in out, out
    old.kill_all()  # the new cluster must stand on its own
    new.start()
    nlead = new.leader()
    for m in new:
        m.wait_applied(nlead.applied_index())
        assert hash_kv(wire, m, rev) == old_hash, m.name
        assert all_kvs(wire, m) == old_kvs, m.name
    st = nlead.status()
    assert st.header.cluster_id != old_cluster_id
    assert st.header.revision == rev, "the log of the new cluster writes no revision of its own"
    # The lease came along and its key with it; history below the old compaction stays compacted.
    with nlead.client() as w:
        ls = wire.check(w.call(wire.pb.Request(lease_leases=wire.pb.LeaseLeasesRequest())), "lease_leases")
        assert lease in [x.id for x in ls.lease_leases.leases]
        r = w.get("key/000", revision=1)
        assert wire.is_error(r) and r.error.code == wire.ERRORS["COMPACTED"]
        # and it takes writes, continuing the revisions
        assert wire.check(w.put("after", "restore"), "put").header.revision == rev + 1
    for m in new:
        m.wait_applied(nlead.applied_index())
        r = wire.check(m.call(wire.range_request("after", serializable=True)), "range")
        assert r.range.kvs and r.range.kvs[0].value == b"restore"
    # Members are members: a follower's Status names the new leader.
    assert {m.status().status.leader for m in new} == {nlead.member_id()}


def test_snapshot_sessions_chunks_limits_and_clean_up(env, wire):
    m = env.cluster(1)[0]
    with m.client() as w:
        for i in range(50):
            wire.check(w.put("k%d" % i, "x" * 1000), "put")
        first = wire.check(w.call(wire.pb.Request(snapshot=wire.pb.SnapshotRequest())), "snapshot").snapshot
        assert first.snapshot_id and first.offset == 0 and first.total_size == len(first.blob) and first.done
        assert first.sha256 == hashlib.sha256(first.blob).digest()
        # chunks are served again by offset while the session lives
        again = wire.check(w.call(wire.pb.Request(snapshot=wire.pb.SnapshotRequest(
            snapshot_id=first.snapshot_id, offset=100))), "snapshot").snapshot
        assert again.blob == first.blob[100:] and again.done and again.offset == 100
        past = w.call(wire.pb.Request(snapshot=wire.pb.SnapshotRequest(
            snapshot_id=first.snapshot_id, offset=first.total_size + 1)))
        assert wire.is_error(past) and past.error.code == wire.ERRORS["INVALID_ARGUMENT"]
        assert "past the end" in past.error.message
        unknown = w.call(wire.pb.Request(snapshot=wire.pb.SnapshotRequest(snapshot_id=12345, offset=0)))
        assert wire.is_error(unknown) and unknown.error.code == wire.ERRORS["NOT_FOUND"]
        assert "snapshot_id 0" in unknown.error.message
        # two sessions at most
        second = w.call(wire.pb.Request(snapshot=wire.pb.SnapshotRequest()))
        assert not wire.is_error(second)
        third = w.call(wire.pb.Request(snapshot=wire.pb.SnapshotRequest()))
        assert wire.is_error(third) and third.error.code == wire.ERRORS["TOO_MANY_REQUESTS"]
        assert "too many snapshot saves in progress" in third.error.message
    incoming = os.path.join(m.data_dir, "member", "incoming")
    assert len([f for f in os.listdir(incoming) if f.startswith("backup-")]) == 2
    assert m.terminate() == 0
    assert [f for f in os.listdir(incoming) if f.startswith("backup-")] == []


def test_restore_refuses_what_it_cannot_use_and_says_why(env, wire, snapshot_tool, tmp_path):
    m = env.cluster(1)[0]
    with m.client() as w:
        for i in range(400):
            wire.check(w.put("k%03d" % i, "v" * 1000), "put")
    good = tmp_path / "good.db"
    save(snapshot_tool, m.client_url, good)
    url = "tcp://127.0.0.1:%d" % cluster.free_port()
    ic = "--initial-cluster=r1=" + url
    args = ["--name=r1", ic, "--initial-cluster-token=t", "--initial-advertise-peer-urls=" + url]

    # a data directory that holds anything is never touched
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "precious").write_text("keep me")
    rc, out, err = restore(env, good, "--data-dir=%s" % busy, *args)
    assert rc == 78 and "not empty" in err and str(busy) in err and "precious" in err, err
    assert os.listdir(busy) == ["precious"]

    # bad arguments: no snapshot named, an unknown option, a member missing from --initial-cluster
    rc, _, err = restore(env, "--data-dir=%s" % (tmp_path / "x"))
    assert rc == 78 and "snapshot file" in err, err
    rc, _, err = restore(env, good, "--data-dir=%s" % (tmp_path / "x"), "--no-such-option=1", *args)
    assert rc == 78, err
    rc, _, err = restore(env, good, "--data-dir=%s" % (tmp_path / "x"), "--name=zz", ic,
                         "--initial-advertise-peer-urls=" + url)
    assert rc == 78 and "zz" in err, err
    rc, _, err = restore(env, tmp_path / "missing.db", "--data-dir=%s" % (tmp_path / "x"), *args)
    assert rc == 78 and "missing.db" in err, err
    assert not (tmp_path / "x").exists()

    # a damaged copy: its .sha256 catches it; without one, SQLite's integrity check does
    data = bytearray(good.read_bytes())
    mid = len(data) // 2 // 4096 * 4096
    data[mid:mid + 4096] = b"\x5a" * 4096
    bad = tmp_path / "bad.db"
    bad.write_bytes(bytes(data))
    (tmp_path / "bad.db.sha256").write_text((tmp_path / "good.db.sha256").read_text())
    rc, _, err = restore(env, bad, "--data-dir=%s" % (tmp_path / "d1"), *args)
    assert rc == 1 and "SHA-256" in err and str(bad) in err, err
    os.unlink(tmp_path / "bad.db.sha256")
    rc, _, err = restore(env, bad, "--data-dir=%s" % (tmp_path / "d2"), *args)
    assert rc == 1 and "integrity check" in err and str(bad) in err, err
    # a file that is no Cairn store at all
    foreign = tmp_path / "foreign.db"
    foreign.write_bytes(b"SQLite format 3\x00" + b"\x00" * 4000)
    rc, _, err = restore(env, foreign, "--data-dir=%s" % (tmp_path / "d3"), *args)
    assert rc == 1 and str(foreign) in err, err
    for d in ("d1", "d2", "d3"):
        assert not (tmp_path / d).exists() or os.listdir(tmp_path / d) == [], d

    # and the good one works, once
    rc, out, err = restore(env, good, "--data-dir=%s" % (tmp_path / "ok"), *args)
    assert rc == 0, err
    rc, _, err = restore(env, good, "--data-dir=%s" % (tmp_path / "ok"), *args)
    assert rc == 78 and "not empty" in err, err
