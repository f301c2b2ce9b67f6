#!/usr/bin/env python3
"""Cairn against etcd on the same machine, in the same minutes: for each row
a fresh etcd cluster takes the load from bench/etcd/etcdput.go (etcd's own
Go client), then a fresh Cairn cluster the same load from cairn-bench; rows
alternate so both meet the same moments of a shared machine.  Issue 10's
workloads: puts of 256-byte values over 100,000 keys to the leader over one
connection, with 1 to 256 in flight; and 100 watchers on the key prefix with
a writer keeping 1, 8 or 32 puts in flight, over 10 connections (etcd's
watchers share one HTTP/2 connection badly: over one, its events came
tens of milliseconds late at any rate).  etcd's client carries the watches
of one connection on one gRPC stream (clientv3 keys its streams by the
context's metadata, the same for all of them), so Cairn's watchers are
polled the same way, each connection's together (cairn-bench
--shared-polls); --single-polls polls each of Cairn's on its own instead.
Every process is stopped and every directory removed, as in run-suite.py,
whose Cluster this uses.

    bench/etcd-compare.py [--build DIR] [--rounds R] [--duration S]
                          [--only "put|watch MEMBERS CLIENTS"] [--single-polls] [--json]

It needs etcd 3.4 and Go with etcd's client sources, from Debian:
`apt-get install etcd-server etcd-client golang-go golang-etcd-server-dev`
(`make bench-etcd` installs them).  etcdput is built into BUILD/etcdput.
etcd runs with its defaults (heartbeat 100 ms, election 1 s), as cairnd.
"""
import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("run_suite", os.path.join(HERE, "run-suite.py"))
suite = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(suite)

ROWS = [("put", 1, 1), ("put", 1, 64), ("put", 1, 256), ("put", 3, 1), ("put", 3, 16), ("put", 3, 64),
        ("watch", 1, 1), ("watch", 1, 8), ("watch", 1, 32)]
WATCHERS, WATCH_CONNS = 100, 10
GOPATH = "/usr/share/gocode"  # golang-etcd-server-dev's sources and their dependencies


def build_etcdput(build):
    """BUILD/etcdput from bench/etcd/etcdput.go, rebuilt when the source is newer."""
    src = os.path.join(HERE, "etcd", "etcdput.go")
    out = os.path.abspath(os.path.join(build, "etcdput"))
    for tool, pkg in (("etcd", "etcd-server"), ("etcdctl", "etcd-client")):
        if not shutil.which(tool):
            sys.exit("etcd-compare: %s is missing (apt-get install %s, or make bench-etcd)" % (tool, pkg))
    if os.path.exists(out) and os.path.getmtime(out) >= os.path.getmtime(src):
        return out
    if not shutil.which("go"):
        sys.exit("etcd-compare: go is missing (apt-get install golang-go, or make bench-etcd)")
    if not os.path.isdir(os.path.join(GOPATH, "src", "go.etcd.io", "etcd", "clientv3")):
        sys.exit("etcd-compare: etcd's Go client is missing (apt-get install golang-etcd-server-dev)")
    with tempfile.TemporaryDirectory(prefix="etcdput-") as d:
        shutil.copy(src, os.path.join(d, "main.go"))
        env = dict(os.environ, GOPATH=GOPATH, GO111MODULE="off", GOFLAGS="", GOCACHE=os.path.join(d, "cache"))
        p = subprocess.run(["go", "build", "-o", out, "."], cwd=d, env=env, capture_output=True, text=True)
        if p.returncode != 0:
            sys.exit("etcd-compare: building etcdput failed:\n" + p.stderr[-3000:])
    return out


class EtcdCluster:
    """n etcd members on loopback ports, data and logs under one temp dir."""

    def __init__(self, n):
        self.n = n
        self.dir = tempfile.mkdtemp(prefix="etcd-compare-%d-" % n)
        self.procs = []
        self.members = [{"name": "e%d" % (i + 1), "client": "http://127.0.0.1:%d" % suite.free_port(),
                         "peer": "http://127.0.0.1:%d" % suite.free_port()} for i in range(n)]

    def start(self, timeout=30):
        initial = ",".join("%s=%s" % (m["name"], m["peer"]) for m in self.members)
        for m in self.members:
            argv = ["etcd", "--name", m["name"], "--data-dir", os.path.join(self.dir, m["name"]),
                    "--listen-client-urls", m["client"], "--advertise-client-urls", m["client"],
                    "--listen-peer-urls", m["peer"], "--initial-advertise-peer-urls", m["peer"],
                    "--initial-cluster", initial, "--initial-cluster-state", "new",
                    "--initial-cluster-token", "compare-%d" % os.getpid(), "--logger", "zap", "--log-level", "error"]
            with open(os.path.join(self.dir, m["name"] + ".log"), "w") as log:
                self.procs.append(subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                                   stderr=subprocess.STDOUT, preexec_fn=suite.die_with_parent))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lead = self.leader()
            if lead:
                return lead
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("etcd: no leader within %d s" % timeout)

    def leader(self):
        """The leader's client URL, or None (etcdctl endpoint status)."""
        p = subprocess.run(["etcdctl", "--endpoints", ",".join(m["client"] for m in self.members),
                            "--command-timeout", "2s", "endpoint", "status", "-w", "json"],
                           capture_output=True, text=True, env=dict(os.environ, ETCDCTL_API="3"))
        try:
            st = json.loads(p.stdout)
        except ValueError:
            return None
        leads = [s["Endpoint"] for s in st if s["Status"]["leader"] == s["Status"]["header"]["member_id"]]
        return leads[0] if len(leads) == 1 and len(st) == self.n else None

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def etcd_row(etcdput, kind, members, clients, duration):
    cl = EtcdCluster(members)
    lead = cl.start()
    argv = [etcdput, "--endpoints", lead, "--clients", str(clients), "--val-size", "256", "--key-space", "100000",
            "--duration", "%gs" % duration]
    if kind == "watch":
        argv += ["--watchers", str(WATCHERS), "--conns", str(WATCH_CONNS)]
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 120)
    finally:
        cl.stop()
    lines = [x for x in p.stdout.splitlines() if x.startswith("{")]
    if p.returncode != 0 or not lines:
        raise RuntimeError("etcdput failed: %s" % p.stderr[-2000:])
    r = json.loads(lines[-1])
    if kind == "watch":
        return {"per_s": r["events_per_s"], "p50": r["p50_ms"], "p99": r["p99_ms"],
                "errors": r["errors"] + r["expected"] - r["events"]}
    return {"per_s": r["ops_per_s"], "p50": r["p50_ms"], "p99": r["p99_ms"], "errors": r["errors"]}


def cairn_row(build, kind, members, clients, duration, shared_polls=True):
    bench = os.path.join(build, "cairn-bench")
    args = ["put", "--clients", str(clients), "--val-size", "256", "--key-space", "100000"]
    if kind == "watch":
        args = ["watch", "--watchers", str(WATCHERS), "--conns", str(WATCH_CONNS)] + args[1:]
        if shared_polls:
            args.append("--shared-polls")
    cl = suite.Cluster(os.path.join(build, "cairnd"), members, bench).start()
    try:
        r = suite.run_row(bench, cl.leader()["client"], args, duration)
    finally:
        cl.stop()
    if kind == "watch":
        return {"per_s": r["events_per_s"], "p50": r["delay_ms"]["p50"], "p99": r["delay_ms"]["p99"],
                "errors": r["failed"] + r["expected"] - r["events"]}
    return {"per_s": r["ops_per_s"], "p50": r["latency_ms"]["p50"], "p99": r["latency_ms"]["p99"],
            "errors": r["failed"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default=os.path.join(suite.ROOT, "build"))
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--duration", type=float, default=5)
    ap.add_argument("--only", help='one row: "put MEMBERS CLIENTS" or "watch MEMBERS CLIENTS"')
    ap.add_argument("--single-polls", action="store_true",
                    help="watch rows: poll each of Cairn's watchers on its own (cairn_watch_next)")
    ap.add_argument("--json", action="store_true", help="one JSON object per row instead of text")
    a = ap.parse_args()
    rows = ROWS
    if a.only:
        kind, members, clients = a.only.split()
        if kind not in ("put", "watch"):
            ap.error('--only: "put MEMBERS CLIENTS" or "watch MEMBERS CLIENTS"')
        rows = [(kind, int(members), int(clients))]
    etcdput = build_etcdput(a.build)
    if not a.json:
        print("| members | row | etcd per s | p50 ms | p99 ms | Cairn per s | p50 ms | p99 ms | Cairn / etcd |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for _ in range(a.rounds):
        for kind, members, clients in rows:
            e = etcd_row(etcdput, kind, members, clients, a.duration)
            c = cairn_row(a.build, kind, members, clients, a.duration, not a.single_polls)
            if a.json:
                print(json.dumps({"kind": kind, "members": members, "clients": clients, "etcd": e, "cairn": c}),
                      flush=True)
                continue
            label = ("put %d" % clients if kind == "put" else
                     "watch %d (events; delay), writer %d" % (WATCHERS, clients))
            print("| %d | %s | %.0f | %.2f | %.2f | %.0f | %.2f | %.2f | %.1fx |" % (
                members, label, e["per_s"], e["p50"], e["p99"], c["per_s"], c["p50"], c["p99"],
                c["per_s"] / e["per_s"]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
