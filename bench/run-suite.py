#!/usr/bin/env python3
"""make bench's cluster suite: a one-member and a three-member cluster of
real cairnd processes on loopback, each in a temporary directory, driven by
cairn-bench through a fixed list of rows (about two minutes), then
one table.  Every process it starts is stopped (and killed if it must be),
every directory removed, whatever happens.

    bench/run-suite.py [--build DIR] [--cairnd PATH] [--duration SEC]
                       [--only SUBSTRING] [--pairs N] [--json-out FILE]

Values are 256 bytes, puts go to 100,000 random keys (etcd's benchmark
figures in issue 10 use the same), gets to 10,000 keys put beforehand.
Members run with cairnd's defaults (heartbeat 100 ms, election 1 s).  The
client shares the machine with the members: its CPU is in the table.  The
echo rows are the bare nng request/reply ceiling of the same machine: the
put rows' requests, connections and in-flight counts against a trivial
server inside cairn-bench.  A row compared with echo runs its echo row again
right after it, and the share of echo is against that run: on a shared
machine the ceiling moves by a third between minutes, and issue 10 compares
with the echo "measured in the same run".  Even so one pair can be off by
a third either way; --pairs N runs each such row and its echo N times in
turn and reports the pair with the median share, and the range.
"""
import argparse
import ctypes
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_libc = ctypes.CDLL(None, use_errno=True)
_handed_out = set()


def die_with_parent():
    """preexec_fn: the child gets SIGKILL if this script dies."""
    _libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


def free_port():
    for _ in range(200):
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        finally:
            s.close()
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError("no free loopback port")


def child_env():
    return {k: v for k, v in os.environ.items()
            if not k.startswith("CAIRN_") and k not in ("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID")}


LEADER_RE = re.compile(r'this member ([0-9a-f]+) is the leader at term (\d+)')
SERVING_RE = re.compile(r"member '([^']+)' \(([0-9a-f]+)\) of cluster")


class Cluster:
    """n cairnd members on loopback ports, data and logs under one temp dir."""

    def __init__(self, cairnd, n, bench):
        self.cairnd, self.n, self.bench = cairnd, n, bench
        self.dir = tempfile.mkdtemp(prefix="cairn-bench-%d-" % n)
        self.procs, self.members = [], []
        for i in range(n):
            name = "m%d" % (i + 1)
            self.members.append({"name": name, "client": "tcp://127.0.0.1:%d" % free_port(),
                                 "peer": "tcp://127.0.0.1:%d" % free_port(),
                                 "log": os.path.join(self.dir, name + ".log")})

    def start(self, timeout=30):
        initial = ",".join("%s=%s" % (m["name"], m["peer"]) for m in self.members)
        for m in self.members:
            argv = [self.cairnd, "--name=" + m["name"], "--data-dir=" + os.path.join(self.dir, m["name"]),
                    "--listen-client-urls=" + m["client"], "--listen-peer-urls=" + m["peer"],
                    "--listen-admin-url=ipc://" + os.path.join(self.dir, m["name"] + ".sock"),
                    "--initial-cluster=" + initial, "--initial-cluster-state=new",
                    "--initial-cluster-token=bench-%d-%d" % (os.getpid(), self.n),
                    "--log-target=stderr", "--log-level=notice"]
            with open(m["log"], "w") as log:
                self.procs.append(subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                                   stderr=subprocess.STDOUT, env=child_env(),
                                                   preexec_fn=die_with_parent))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for p, m in zip(self.procs, self.members):
                if p.poll() is not None:
                    raise RuntimeError("cairnd %s exited (%s); log:\n%s" % (m["name"], p.returncode,
                                                                          self.log(m)[-3000:]))
            if self.leader() is not None and self._probe():
                return self
            time.sleep(0.1)
        raise RuntimeError("the %d-member cluster did not elect a leader within %d s" % (self.n, timeout))

    def log(self, m):
        with open(m["log"], errors="replace") as f:
            return f.read()

    def leader(self):
        """The member whose ID the newest leadership line names, or None."""
        ids, best = {}, None
        for m in self.members:
            text = self.log(m)
            for mm in SERVING_RE.finditer(text):
                ids[mm.group(2)] = m
            for mm in LEADER_RE.finditer(text):
                term = int(mm.group(2))
                if best is None or term > best[0]:
                    best = (term, mm.group(1))
        return ids.get(best[1]) if best else None

    def _probe(self):
        p = subprocess.run([self.bench, "put", "--endpoints", self.leader()["client"], "--total", "1",
                            "--key-prefix", "probe/", "--call-timeout", "2000", "--format", "json"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30, env=child_env())
        return p.returncode == 0

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


VAL = ["--val-size", "256"]
PUT = VAL + ["--key-space", "100000"]
GET = VAL + ["--key-space", "10000"]

# (cluster size or 0 for none, label, cairn-bench arguments, echo row to compare with)
ROWS = [
    (0, "echo 1", ["echo", "--clients", "1"] + PUT, None),
    (0, "echo 64", ["echo", "--clients", "64"] + PUT, None),
    (0, "echo 256", ["echo", "--clients", "256"] + PUT, None),
    (1, "put 1", ["put", "--clients", "1"] + PUT, "echo 1"),
    (1, "put 64", ["put", "--clients", "64"] + PUT, "echo 64"),
    (1, "put 256", ["put", "--clients", "256"] + PUT, "echo 256"),
    (1, "get s 64", ["range", "--consistency", "s", "--clients", "64", "--prefill"] + GET, "echo 64"),
    (1, "get s 256", ["range", "--consistency", "s", "--clients", "256"] + GET, "echo 256"),
    (1, "get l 64", ["range", "--consistency", "l", "--clients", "64"] + GET, "echo 64"),
    (1, "get l 256", ["range", "--consistency", "l", "--clients", "256"] + GET, "echo 256"),
    (1, "watch 100, writer 1", ["watch", "--watchers", "100", "--clients", "1"] + VAL, None),
    (1, "watch 100, writer 32", ["watch", "--watchers", "100", "--clients", "32"] + VAL, None),
    (1, "lease keep-alive 64", ["lease", "--leases", "100", "--clients", "64"], None),
    (3, "put 1", ["put", "--clients", "1"] + PUT, None),
    (3, "put 16", ["put", "--clients", "16"] + PUT, None),
    (3, "put 64", ["put", "--clients", "64"] + PUT, None),
    (3, "get s 64", ["range", "--consistency", "s", "--clients", "64", "--prefill"] + GET, None),
    (3, "get l 64", ["range", "--consistency", "l", "--clients", "64"] + GET, None),
]


def run_row(bench, endpoint, args, duration):
    argv = [bench] + args + ["--duration", str(duration), "--format", "json"]
    if endpoint:
        argv += ["--endpoints", endpoint]
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=duration + 120,
                       env=child_env())
    out = p.stdout.decode(errors="replace")
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError("%s exited %d without a report: %s" % (" ".join(argv), p.returncode,
                                                                  p.stderr.decode(errors="replace")))
    r = json.loads(lines[-1])
    r["exit"] = p.returncode
    return r


def fmt_row(members, label, r, echo, shares=None):
    if r["mode"] == "watch":
        rate = "%.0f ev/s" % r["events_per_s"]
        lat = r["delay_ms"]
        extra = "%.0f puts/s, %d/%d events" % (r["puts_per_s"], r["events"], r["expected"])
    else:
        rate = "%.0f ops/s" % r["ops_per_s"]
        lat = r["latency_ms"]
        extra = ("%.0f%% of echo (%.0f ops/s right after)" % (100.0 * r["ops_per_s"] / echo["ops_per_s"],
                                                           echo["ops_per_s"]) if echo else "")
        if shares and len(shares) > 1:
            extra += "; the median of %d pairs, %.0f-%.0f%%" % (len(shares), 100.0 * min(shares), 100.0 * max(shares))
    errs = sum(r.get("errors", {}).values()) + sum(r.get("watch_errors", {}).values())
    if errs:
        extra += (", " if extra else "") + "%d errors" % errs
    return "| %s | %s | %s | %.2f | %.2f | %.2f | %.0f%% | %s |" % (
        members or "-", label, rate, lat["p50"], lat["p99"], lat["p99_9"], 100.0 * r["cpu_share"], extra)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--cairnd", help="the cairnd to run (default BUILD/cairnd)")
    ap.add_argument("--duration", type=float, default=3.0, help="seconds per row (default 3)")
    ap.add_argument("--only", help="run only rows whose '<members> <label>' contains this")
    ap.add_argument("--pairs", type=int, default=1,
                    help="run each row compared with echo, and its echo, this many times in turn (default 1)")
    ap.add_argument("--json-out", help="also write every row's report to this file")
    a = ap.parse_args()
    if a.pairs < 1:
        ap.error("--pairs must be at least 1")
    bench = os.path.join(a.build, "cairn-bench")
    cairnd = a.cairnd or os.path.join(a.build, "cairnd")
    for p in (bench, cairnd):
        if not os.access(p, os.X_OK):
            sys.exit("run-suite: %s is not built (make)" % p)

    def on_signal(sig, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_signal)

    rows = [r for r in ROWS if not a.only or a.only in "%d %s" % (r[0], r[1])]
    results, table, cluster = {}, [], None
    print("cairn-bench suite: %d rows of %.0f s; %s, %d cores" % (len(rows), a.duration, cairnd, os.cpu_count()),
          file=sys.stderr)
    try:
        for members, label, args, echo in rows:
            if members and (cluster is None or cluster.n != members):
                if cluster:
                    cluster.stop()
                    cluster = None
                cluster = Cluster(cairnd, members, bench).start()
            endpoint = cluster.leader()["client"] if members else None
            r = run_row(bench, endpoint, args, a.duration)
            results["%d %s" % (members, label)] = r
            beside, shares = None, None
            if echo:
                echo_args = [row[2] for row in ROWS if row[0] == 0 and row[1] == echo][0]
                pairs = []
                for i in range(a.pairs):
                    if i:
                        r = run_row(bench, endpoint, args, a.duration)
                    beside = run_row(bench, None, echo_args, a.duration)
                    pairs.append((r["ops_per_s"] / beside["ops_per_s"], r, beside))
                pairs.sort(key=lambda p: p[0])
                shares = [p[0] for p in pairs]
                _, r, beside = pairs[len(pairs) // 2]
                results["%d %s" % (members, label)] = r
                results["%d %s: %s beside it" % (members, label, echo)] = beside
                if a.pairs > 1:
                    results["%d %s: every pair" % (members, label)] = [{"row": p[1], "echo": p[2]} for p in pairs]
            line = fmt_row(members, label, r, beside, shares)
            table.append(line)
            print(line, file=sys.stderr)
    except KeyboardInterrupt:
        print("run-suite: interrupted", file=sys.stderr)
        return 130
    finally:
        if cluster:
            cluster.stop()
        if a.json_out:
            with open(a.json_out, "w") as f:
                json.dump(results, f, indent=1)
    print("| members | row (in flight) | throughput | p50 ms | p99 ms | p99.9 ms | client CPU | note |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
