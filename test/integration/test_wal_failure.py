"""A WAL that cannot be synced stops the member, and nothing it acknowledged
is lost: after the disk recovers, the member comes back with every write it
acknowledged, and takes new ones.  test/integration/fail_sync.c, preloaded
into cairnd, plays a disk that drops the WAL's writes and fails the next
fdatasync, once the test creates a trigger file.  A member that went on
after such a sync would acknowledge entries its WAL does not have; after a
restart its log would end below what its store applied, and new writes at
those indexes would be taken for ones already applied and skipped.

Since session 18 a leader syncs most of its Readies on its WAL writer
thread (cairn-wal) while the node thread applies: one case fails syncs on
that thread only, the other on any thread.  The same shim also plays a
disk that is only slow, for the lone voter's slices."""
import os
import signal
import subprocess

import pytest

import cluster
import prom


def build_shim(root_dir, out_dir):
    out = str(out_dir / "fail_sync.so")
    p = subprocess.run(["cc", "-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-Werror", "-O1", "-shared", "-fPIC",
                        "-o", out, str(root_dir / "test" / "integration" / "fail_sync.c"), "-ldl"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if p.returncode != 0:
        pytest.fail("cannot build fail_sync.so:\n%s" % p.stdout.decode(errors="replace"))
    return out


def preload(m, root_dir, tmp_path, trigger, **more):
    """Start m's cairnd with the shim preloaded, armed by trigger."""
    m.env = {"LD_PRELOAD": build_shim(root_dir, tmp_path), "FAIL_SYNC_TRIGGER": str(trigger), **more}
    if os.environ.get("CAIRN_SANITIZE") == "1":
        # ASan wants its runtime first among the libraries; the shim only wraps three libc calls
        opts = os.environ.get("ASAN_OPTIONS", "")
        m.env["ASAN_OPTIONS"] = (opts + ":" if opts else "") + "verify_asan_link_order=0"


@pytest.mark.parametrize("thread", ["cairn-wal", ""])
def test_a_wal_sync_that_fails_stops_the_member_and_loses_no_acknowledged_write(env, root_dir, tmp_path, thread):
    trigger = tmp_path / "fail-sync"
    c = env.cluster(1, start=False)
    m = c[0]
    preload(m, root_dir, tmp_path, trigger, FAIL_SYNC_THREAD=thread)
    c.start()
    ack = str(tmp_path / "ack.log")
    run = env.load.start_put(c, total=200000, inflight=256, key_space=2000, ack_log=ack, timeout=120,
                             call_timeout_ms=3000)
    cluster.poll(lambda: cluster.acked_count(ack) >= 2000, 60, "2000 acknowledged puts")
    trigger.touch()
    assert m.proc.wait(timeout=60) == 70, m.log_tail()
    log = m.log_text()
    assert "cannot persist to the WAL" in log and "the member must be restarted" in log, m.log_tail()
    run.proc.send_signal(signal.SIGTERM)  # its member is gone: stop it now, not at its timeout
    res = run.wait()
    assert res.report and res.report["acked"] >= 2000, res

    # The disk is back: every acknowledged write is there after the restart,
    # and so is every one acknowledged after it.
    trigger.unlink()
    m.restart()
    env.load.check(c, ack).assert_no_loss()
    after = str(tmp_path / "after.log")
    res = env.load.put(c, total=500, inflight=16, key_prefix="after/", ack_log=after, timeout=60)
    assert res.rc == 0, res
    env.load.check(c, after).assert_no_loss()


def test_a_lone_member_whose_wal_lost_synced_writes_does_not_start(env, root_dir, tmp_path):
    """A disk that drops the WAL's writes and still reports every sync done:
    the member applies and acknowledges entries its WAL never got.  As the
    only voter it would, after a restart, give those indexes to new writes
    and skip them as applied; it refuses to start and says why."""
    trigger = tmp_path / "lose-writes"
    c = env.cluster(1, start=False)
    m = c[0]
    preload(m, root_dir, tmp_path, trigger, FAIL_SYNC_MODE="lie")
    c.start()
    res = env.load.put(c, total=300, inflight=16, key_prefix="kept/", ack_log=str(tmp_path / "kept.log"))
    assert res.rc == 0, res
    trigger.touch()
    res = env.load.put(c, total=300, inflight=16, key_prefix="lost/", ack_log=str(tmp_path / "lost.log"))
    assert res.rc == 0, res
    assert m.terminate() == 0
    trigger.unlink()
    m.start()
    assert m.proc.wait(timeout=60) == 1, m.log_tail()
    log = m.log_text()
    assert "but the WAL in" in log and "as the only voter" in log, m.log_tail()


def wal_syncs(m):
    return prom.scrape(m).value("etcd_disk_wal_fsync_duration_seconds_count") or 0


def test_a_lone_member_on_a_slow_disk_writes_a_burst_in_few_syncs(env, root_dir, tmp_path):
    """A lone voter writes a burst of proposals a slice per Ready, each
    slice while it applies the one before (docs/raft.md).  On a disk whose
    syncs take 20 ms a slice of 64 would cost a sync each, and nothing
    would hide them: the slice is sized from the syncs the member measures,
    and 256 puts in flight go to the WAL in a Ready or two per wave instead
    of five (syncs counted, not timed)."""
    trigger = tmp_path / "slow"
    trigger.touch()
    c = env.cluster(1, start=False)
    m = c[0]
    prom.serve_metrics(m)
    preload(m, root_dir, tmp_path, trigger, FAIL_SYNC_MODE="slow")
    c.start()
    warm = env.load.put(c, total=1024, inflight=256, key_prefix="warm/", ack_log=str(tmp_path / "warm.log"),
                        timeout=120)
    assert warm.rc == 0, warm
    before = wal_syncs(m)
    ack = str(tmp_path / "ack.log")
    res = env.load.put(c, total=2560, inflight=256, ack_log=ack, timeout=120)
    assert res.rc == 0, res
    syncs = wal_syncs(m) - before
    # ten waves of 256: about 2 syncs a wave, against 5 with slices of 64
    assert 0 < syncs <= 30, "%d WAL syncs for 2560 puts" % syncs
    env.load.check(c, ack).assert_no_loss()
