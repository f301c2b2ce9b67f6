"""cairn-bench: every mode runs briefly against a real one-member cluster
(the echo mode against its own server) and its --format json report parses
with counts that add up and no errors.  Nothing here asserts a timing:
performance is measured by bench/run-suite.py and written in docs/."""
import json
import os
import re
import subprocess
import sys

import pytest

TOTAL = 300


@pytest.fixture(scope="session")
def cairn_bench_path(build_dir):
    p = build_dir / "cairn-bench"
    if not p.exists():
        pytest.fail("%s was not built (make builds bench/cairn_bench*.c)" % p)
    return p


def run(path, *args, timeout=120):
    p = subprocess.run([str(path), *[str(a) for a in args]], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=timeout)
    return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")


def bench_json(path, *args):
    rc, out, err = run(path, *args, "--format", "json")
    assert rc == 0, "exit %d\nstdout: %s\nstderr: %s" % (rc, out, err)
    lines = out.splitlines()
    assert len(lines) == 1, "not a terminal: the report alone, one line: %r" % out
    return json.loads(lines[0])


def check_latency(lat):
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p99_9"] <= lat["max"], lat
    assert 0 < lat["mean"] <= lat["max"], lat


def check_counts(r, total=TOTAL):
    assert r["total"] == total and r["issued"] == total and r["done"] == total, r
    assert r["ok"] == total and r["failed"] == 0 and r["errors"] == {}, r
    assert r["ops_per_s"] > 0 and r["elapsed_s"] > 0, r
    check_latency(r["latency_ms"])
    assert r["cpu_user_s"] >= 0 and r["cpu_sys_s"] >= 0 and r["cpu_user_s"] + r["cpu_sys_s"] > 0, r
    assert r["cpu_share"] >= 0, r


MODES = {
    "put": ["put", "--clients", 8],
    "put-sequential-2-conns": ["put", "--clients", 8, "--conns", 2, "--sequential-keys", "--key-size", 16],
    "put-open-loop": ["put", "--clients", 8, "--rate", 2000],
    "get-serializable": ["range", "--consistency", "s", "--clients", 8, "--prefill", "--key-space", 50],
    "get-linearizable": ["range", "--consistency", "l", "--clients", 8, "--prefill", "--key-space", 50],
    "range-10-keys": ["range", "--range-keys", 10, "--clients", 4, "--prefill", "--key-space", 50],
    "txn": ["txn", "--clients", 8, "--key-space", 1000],
    "mixed": ["mixed", "--read-ratio", 0.7, "--clients", 8, "--prefill", "--key-space", 50],
    "lease": ["lease", "--leases", 5, "--clients", 8],
}


@pytest.mark.parametrize("name", sorted(MODES))
def test_mode_reports_every_request(cairn_bench_path, member, name):
    r = bench_json(cairn_bench_path, *MODES[name], "--total", TOTAL, "--val-size", 64,
                   "--endpoints", member.client_url)
    check_counts(r)
    assert r["mode"] == MODES[name][0] and r["endpoints"] == 1
    if name.startswith("get"):
        assert r["keys_returned"] == TOTAL, "every key was put by --prefill"
        assert r["consistency"] == ("s" if "serializable" in name else "l")
    if name == "range-10-keys":
        assert r["keys_returned"] > TOTAL, r  # most ranges start 10 keys before the end
    if name == "txn":
        assert 0 <= r["compare_failed"] < TOTAL, r
    if name == "mixed":
        assert r["reads"]["ok"] + r["writes"]["ok"] == TOTAL, r
        assert r["reads"]["ok"] > 0 and r["writes"]["ok"] > 0, r
    if name == "put-sequential-2-conns":
        assert r["conns"] == 2 and r["key_size"] == 16, r


@pytest.mark.parametrize("shared", [False, True], ids=["one-poll-each", "shared-polls"])
def test_watch_delivers_every_put_to_every_watcher(cairn_bench_path, member, shared):
    """Each watcher polled on its own, or (--shared-polls) the watchers of each
    of the 2 connections in one cairn_watch_poll."""
    r = bench_json(cairn_bench_path, "watch", "--watchers", 5, "--total", 200, "--clients", 4, "--conns", 2,
                   "--endpoints", member.client_url, *(["--shared-polls"] if shared else []))
    assert r["shared_polls"] is shared and r["conns"] == 2, r
    assert r["ok"] == 200 and r["failed"] == 0 and r["errors"] == {} and r["watch_errors"] == {}, r
    assert r["events"] == r["expected"] == 200 * 5 and r["problems"] == 0, r
    assert r["events_per_s"] > 0 and r["polls"] > 0, r
    check_latency(r["delay_ms"])
    check_latency(r["put_latency_ms"])


@pytest.mark.parametrize("inproc", [False, True])
def test_echo_needs_no_member(cairn_bench_path, inproc):
    r = bench_json(cairn_bench_path, "echo", "--clients", 16, "--total", 2000,
                   *(["--echo-inproc"] if inproc else []))
    check_counts(r, 2000)
    assert r["mode"] == "echo" and r["echo_inproc"] == inproc
    assert ("echo_server_cpu_s" in r) != inproc, r


def test_duration_bounds_the_run(cairn_bench_path):
    r = bench_json(cairn_bench_path, "echo", "--clients", 4, "--duration", 0.5)
    assert r["total"] == 0 and r["done"] == r["ok"] > 0 and r["errors"] == {}, r
    assert 0.4 < r["elapsed_s"] < 30, r


def test_text_report(cairn_bench_path):
    rc, out, err = run(cairn_bench_path, "echo", "--clients", 2, "--total", 100)
    assert rc == 0, err
    assert "\r" not in out, "no progress line when stdout is not a terminal"
    assert "100 ok, 0 failed" in out and "p99.9" in out and "client cpu" in out, out


def test_no_member_fails_every_request_as_unavailable(cairn_bench_path):
    rc, out, err = run(cairn_bench_path, "put", "--endpoints", "tcp://127.0.0.1:1", "--total", 6,
                       "--clients", 3, "--call-timeout", 200, "--dial-timeout", 50, "--format", "json")
    assert rc == 3, out + err
    r = json.loads(out)
    assert r["ok"] == 0 and r["failed"] == 6 and r["errors"] == {"UNAVAILABLE": 6}, r


def test_bad_usage_exits_2(cairn_bench_path):
    for args in (["frob"], ["put", "--clients", "0"], ["range", "--consistency", "x"],
                 ["put", "--format", "yaml"], ["put", "--total"], []):
        rc, _, err = run(cairn_bench_path, *args)
        assert rc == 2, (args, err)


def test_suite_reports_the_median_of_several_pairs(build_dir, root_dir, tmp_path):
    """bench/run-suite.py --pairs N: a row compared with echo runs N times,
    each time with its echo right after, and the table shows the pair with
    the median share of echo and the range of all N."""
    out = tmp_path / "suite.json"
    p = subprocess.run([sys.executable, str(root_dir / "bench" / "run-suite.py"), "--build", str(build_dir),
                        "--only", "1 put 1", "--pairs", "3", "--duration", "0.3", "--json-out", str(out)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300)
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    rows = [line for line in p.stdout.decode().splitlines() if line.startswith("| 1 | put 1 |")]
    assert len(rows) == 1, p.stdout
    res = json.loads(out.read_text())
    pairs = res["1 put 1: every pair"]
    assert len(pairs) == 3
    shares = sorted(x["row"]["ops_per_s"] / x["echo"]["ops_per_s"] for x in pairs)
    shown = res["1 put 1"]["ops_per_s"] / res["1 put 1: echo 1 beside it"]["ops_per_s"]
    assert shown == shares[1], (shown, shares)
    assert "%.0f%% of echo" % (100 * shown) in rows[0], rows[0]
    assert "the median of 3 pairs, %.0f-%.0f%%" % (100 * shares[0], 100 * shares[2]) in rows[0], rows[0]
    for x in pairs:
        assert x["row"]["ok"] > 0 and x["row"]["failed"] == 0 and x["echo"]["failed"] == 0, x


def test_thread_cost_reports_every_members_threads(build_dir, root_dir):
    """bench/thread-cost.py: per op, each member's CPU, its wait for a CPU and
    its busiest threads, the leader first, with the node thread among them."""
    p = subprocess.run([sys.executable, str(root_dir / "bench" / "thread-cost.py"), "--build", str(build_dir),
                        "--members", "3", "--duration", "1", "--top", "3", "--",
                        "put", "--clients", "4", "--key-space", "100"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300)
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    lines = p.stdout.decode().splitlines()
    assert len(lines) == 4 and re.match(r"\d+/s, p50 [\d.]+ ms, p99 [\d.]+ ms; .*the machine idle \d+%", lines[0]), lines
    for line, who in zip(lines[1:], ("leader", "member 2", "member 3")):
        m = re.match(r"  %s: ([\d.]+) us CPU, ([\d.]+) us waiting per op; by thread .*: (.*)$" % who, line)
        assert m and float(m.group(1)) > 0, line
        shown = re.findall(r"(\S+) ([\d.]+)/([\d.]+)/([\d.]+)", m.group(3))
        assert len(shown) == 3 and "cairn-node" in [t[0] for t in shown], line
        assert sum(float(t[1]) for t in shown) <= float(m.group(1)) + 0.1, line


def test_rss_restart_restarts_with_another_build(build_dir, root_dir, tmp_path):
    """bench/rss-restart.py --restart-cairnd: the keys are loaded by one
    cairnd and the member restarted by another (here a wrapper that records
    that it ran), and the restart is timed as usual."""
    ran = tmp_path / "ran"
    wrapper = tmp_path / "cairnd-wrapper"
    wrapper.write_text("#!/bin/sh\necho yes > %s\nexec %s \"$@\"\n" % (ran, build_dir / "cairnd"))
    wrapper.chmod(0o755)
    p = subprocess.run([sys.executable, str(root_dir / "bench" / "rss-restart.py"), "--build", str(build_dir),
                        "--keys", "2000", "--restart-cairnd", str(wrapper), "--json"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300)
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    r = json.loads(p.stdout.decode().splitlines()[-1])
    assert r["cairnd"] == str(build_dir / "cairnd") and r["restart_cairnd"] == str(wrapper), r
    assert r["keys"] == 2000 and r["first_read_s"] > 0 and r["rss_after_restart_kib"] > 0, r
    assert ran.read_text() == "yes\n"


def test_etcd_compare_runs_a_row_against_both(build_dir, root_dir, tmp_path):
    """bench/etcd-compare.py: one row against a fresh etcd and a fresh Cairn.
    It needs etcd and Go from Debian (make bench-etcd installs them), which
    the test suite does not install: skipped where they are missing."""
    import shutil
    if not (shutil.which("etcd") and shutil.which("etcdctl") and shutil.which("go")
            and os.path.isdir("/usr/share/gocode/src/go.etcd.io/etcd/clientv3")):
        pytest.skip("etcd, etcdctl, go or golang-etcd-server-dev is missing (make bench-etcd installs them)")
    build = tmp_path / "build"
    build.mkdir()
    for name in ("cairnd", "cairn-bench"):
        (build / name).symlink_to(build_dir / name)

    def row(only):
        p = subprocess.run([sys.executable, str(root_dir / "bench" / "etcd-compare.py"), "--build", str(build),
                            "--only", only, "--duration", "1", "--json"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=600)
        assert p.returncode == 0, p.stderr.decode(errors="replace")
        r = json.loads(p.stdout.decode().splitlines()[-1])
        assert [r["kind"], str(r["members"]), str(r["clients"])] == only.split(), r
        for side in ("etcd", "cairn"):
            assert r[side]["per_s"] > 0 and r[side]["errors"] == 0 and 0 < r[side]["p50"] <= r[side]["p99"], r
        return r

    row("put 3 4")
    assert (build / "etcdput").exists()  # built from bench/etcd/etcdput.go
    # the watch row: every put's event reached each of the 100 watchers (errors counts the missing ones)
    r = row("watch 1 2")
    assert r["etcd"]["per_s"] > 100 and r["cairn"]["per_s"] > 100, r
