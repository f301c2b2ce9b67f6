"""Auto-compaction on real members (etcd's --auto-compaction-mode and
--auto-compaction-retention): the leader compacts, through Raft, so every
member ends at the same compact revision; periodic mode keeps a time window,
revision mode a number of revisions; a retention that does not parse stops
cairnd with exit 78.  Waits poll with deadlines; nothing is timed."""
import subprocess

import cluster

# 5 minutes is etcd's interval in revision mode; the test hook shortens it (daemon/compactor.h).
TEST_INTERVAL_ENV = "CAIRND_TEST_COMPACTION_INTERVAL"


def compact_revisions(c):
    return [m.status().status.compact_revision for m in c]


def write(wire, c, n, key="k"):
    with c.leader().client() as w:
        for i in range(n):
            rev = wire.check(w.put(key, "v%d" % i), "put").header.revision
    return rev


def test_periodic_compaction_keeps_a_window_of_time(env, wire):
    c = env.cluster(3, extra=["--auto-compaction-mode=periodic", "--auto-compaction-retention=2s"])
    rev = write(wire, c, 20)
    # Nothing is written afterwards, so once 2 s of samples have passed the window holds only `rev`.
    cluster.poll(lambda: all(x == rev for x in compact_revisions(c)), 60,
                 "every member compacted to revision %d" % rev)
    for m in c:
        r = m.call(wire.range_request("k", revision=rev - 1, serializable=True))
        assert wire.is_error(r) and r.error.code == wire.ERRORS["COMPACTED"], m.name
        r = wire.check(m.call(wire.range_request("k", revision=rev, serializable=True)), "range")
        assert r.range.kvs[0].value == b"v19"
    lead = c.leader()
    assert "msgid=c5ca32f969c6429395d8bd3ff3c876f7" in lead.log_text(), "the COMPACTION event is logged"
    # Only the leader proposes.
    for f in c.followers():
        assert "auto-compaction (periodic, retention 2s): compacting" not in f.log_text(), f.name


def test_revision_compaction_keeps_the_last_n_revisions(env, wire, monkeypatch):
    monkeypatch.setenv(TEST_INTERVAL_ENV, "200ms")
    c = env.cluster(3, extra=["--auto-compaction-mode=revision", "--auto-compaction-retention=10"])
    rev = write(wire, c, 30)
    cluster.poll(lambda: all(x == rev - 10 for x in compact_revisions(c)), 60,
                 "every member compacted to revision %d" % (rev - 10))
    m = c.followers()[0]
    r = m.call(wire.range_request("k", revision=rev - 11, serializable=True))
    assert wire.is_error(r) and r.error.code == wire.ERRORS["COMPACTED"]
    r = wire.check(m.call(wire.range_request("k", revision=rev - 10, serializable=True)), "range")
    assert r.range.kvs[0].value == b"v19"
    # It follows the writes: 10 more, and it moves 10 on.
    rev2 = write(wire, c, 10)
    cluster.poll(lambda: all(x == rev2 - 10 for x in compact_revisions(c)), 60,
                 "every member compacted to revision %d" % (rev2 - 10))


def test_a_retention_that_does_not_parse_is_a_configuration_error(env, tmp_path):
    for mode, ret in (("periodic", "soon"), ("revision", "1h")):
        p = subprocess.run([env.cairnd, "--data-dir=%s" % (tmp_path / mode), "--auto-compaction-mode=" + mode,
                            "--auto-compaction-retention=" + ret, "--log-target=stderr"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cluster.child_env(), timeout=30)
        err = p.stderr.decode(errors="replace")
        assert p.returncode == 78, err
        assert "--auto-compaction-retention" in err and ret in err, err
        assert not (tmp_path / mode / "member").exists(), "nothing is created for a bad configuration"
