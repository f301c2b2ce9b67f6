#!/usr/bin/env python3
"""Issue 10's memory and restart figures: a one-member cluster takes N keys
(default 1,000,000) of 256 bytes from cairn-bench, in key order at 256 puts
in flight; then its RSS is read, it gets SIGTERM, starts again on the same
data, and the time until it serves a read is measured two ways: until a
cairn-bench read succeeds (polled), and from exec to its "serving" log line.
Finally the RSS of the restarted member.

    bench/rss-restart.py [--build DIR] [--cairnd PATH[,PATH...]] [--keys N]
                         [--runs R] [--restart-cairnd PATH] [--json]

--restart-cairnd restarts the member with another build than the one that
loaded it: with an older build loading, the restart's times include what
the newer one does to the older data at its first start (a store schema
upgrade, docs/storage-mvcc.md).

With several cairnd paths the runs alternate between them (A B, B A, ...),
so two builds meet the same minutes of a shared machine.  RSS is /proc's
VmRSS, printed in KiB and in MB (KiB / 1000, as docs/performance.md's
figures since session 5 count it).  Every process is stopped and every
directory removed, as in run-suite.py, whose Cluster this uses.
"""
import argparse
import datetime
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("run_suite", os.path.join(HERE, "run-suite.py"))
suite = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(suite)

def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS for pid %d" % pid)


def serving_at(log_text):
    """Wall-clock time (s) of the last 'serving clients on' line, or None."""
    for line in reversed(log_text.splitlines()):
        if "serving clients on" in line:
            m = re.search(r"time=(\S+?)Z?(\s|$)", line)
            if m:
                ts = datetime.datetime.fromisoformat(m.group(1))
                return ts.replace(tzinfo=datetime.timezone.utc).timestamp()
    return None


def one_run(cairnd, bench, keys, restart_cairnd=None):
    cl = suite.Cluster(cairnd, 1, bench).start()
    try:
        m, ep = cl.members[0], cl.members[0]["client"]
        load = subprocess.run([bench, "put", "--sequential-keys", "--key-space", str(keys), "--total", str(keys),
                               "--clients", "256", "--val-size", "256", "--endpoints", ep, "--format", "json",
                               "--timeout", "900"], capture_output=True, text=True, env=suite.child_env(),
                              timeout=1000)
        if load.returncode != 0:
            raise RuntimeError("the load failed: %s" % load.stderr[-2000:])
        rate = json.loads(load.stdout)["ops_per_s"]
        time.sleep(1)
        p = cl.procs[0]
        after_load = rss_kib(p.pid)
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=60)
        with open(m["log"], "a") as log:
            t0, wall0 = time.monotonic(), time.time()
            argv = ([restart_cairnd] + list(p.args[1:])) if restart_cairnd else p.args
            cl.procs[0] = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                           env=suite.child_env(), preexec_fn=suite.die_with_parent)
        while True:
            r = subprocess.run([bench, "range", "--total", "1", "--endpoints", ep, "--format", "json",
                                "--call-timeout", "200", "--dial-timeout", "100"], capture_output=True, text=True,
                               env=suite.child_env())
            if r.returncode == 0:
                break
            if cl.procs[0].poll() is not None:
                raise RuntimeError("the restarted member exited: %s" % cl.log(m)[-2000:])
            if time.monotonic() - t0 > 120:
                raise RuntimeError("no read within 120 s of the restart")
        first_read = time.monotonic() - t0
        time.sleep(1)
        served = serving_at(cl.log(m))
        return {"cairnd": cairnd, "restart_cairnd": restart_cairnd or cairnd, "keys": keys,
                "load_puts_per_s": rate, "rss_after_load_kib": after_load,
                "first_read_s": first_read, "exec_to_serving_s": served - wall0 if served else None,
                "rss_after_restart_kib": rss_kib(cl.procs[0].pid)}
    finally:
        cl.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default=os.path.join(suite.ROOT, "build"))
    ap.add_argument("--cairnd", help="cairnd to measure (comma list: alternate); default BUILD/cairnd")
    ap.add_argument("--keys", type=int, default=1000000)
    ap.add_argument("--runs", type=int, default=1, help="runs per cairnd")
    ap.add_argument("--restart-cairnd", help="restart with this cairnd instead of the one that loaded the keys")
    ap.add_argument("--json", action="store_true", help="one JSON object per run instead of text")
    a = ap.parse_args()
    builds = a.cairnd.split(",") if a.cairnd else [os.path.join(a.build, "cairnd")]
    bench = os.path.join(a.build, "cairn-bench")
    for i in range(a.runs):
        for cairnd in (builds if i % 2 == 0 else builds[::-1]):
            r = one_run(cairnd, bench, a.keys, a.restart_cairnd)
            if a.json:
                print(json.dumps(r), flush=True)
                continue
            serving = "%.2f s" % r["exec_to_serving_s"] if r["exec_to_serving_s"] is not None else "?"
            print("%s%s: %d keys at %.0f puts/s; RSS after the load %d KiB (%.1f MB); restart: first read %.2f s, "
                  "exec to serving %s; RSS after the restart %d KiB (%.1f MB)" %
                  (cairnd, " (restarted with %s)" % a.restart_cairnd if a.restart_cairnd else "", r["keys"], r["load_puts_per_s"], r["rss_after_load_kib"], r["rss_after_load_kib"] / 1000,
                   r["first_read_s"], serving, r["rss_after_restart_kib"], r["rss_after_restart_kib"] / 1000),
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
