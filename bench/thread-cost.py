#!/usr/bin/env python3
"""Where a row's time goes per thread: a fresh cluster of M members runs one
cairn-bench row, and for every member (the leader first) and each of its
threads (grouped by name) this prints, per operation, the CPU it ran, the
time it waited for a CPU while runnable, and how many times it was switched
in (/proc/<pid>/task/<tid>/schedstat); and for the machine, the share of
its CPU time idle, in iowait and stolen (/proc/stat) over the row.

    bench/thread-cost.py [--build DIR] [--cairnd PATH] [--members M]
                         [--rounds R] [--duration S] [--top N] -- BENCH-ARGS

For example, three members at one put in flight:

    bench/thread-cost.py --members 3 -- put --clients 1 --val-size 256 --key-space 100000

Waiting for a CPU is what a wake-up costs on a busy machine; a switch-in is
what it costs on an idle one (docs/performance.md, "Session 23").  Every
process is stopped and every directory removed, as in run-suite.py, whose
Cluster this uses.
"""
import argparse
import glob
import importlib.util
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("run_suite", os.path.join(HERE, "run-suite.py"))
suite = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(suite)


def threads(pid):
    """{thread name: [run ns, wait ns, switches]} summed over the threads of that name."""
    out = {}
    for t in glob.glob("/proc/%d/task/*" % pid):
        try:
            with open(t + "/comm") as f:
                name = f.read().strip()
            with open(t + "/schedstat") as f:
                run, wait, n = map(int, f.read().split())
        except (OSError, ValueError):
            continue  # the thread exited
        a = out.setdefault(name, [0, 0, 0])
        a[0] += run
        a[1] += wait
        a[2] += n
    return out


def machine():
    with open("/proc/stat") as f:
        return [int(x) for x in f.readline().split()[1:]]


def delta(before, after):
    """after - before per thread name and field (a thread born during the row counts from 0)."""
    return {k: [b - a for a, b in zip(before.get(k, [0, 0, 0]), v)] for k, v in after.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default=os.path.join(suite.ROOT, "build"))
    ap.add_argument("--cairnd", help="cairnd to measure; default BUILD/cairnd")
    ap.add_argument("--members", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=1, help="fresh clusters, one after another")
    ap.add_argument("--duration", type=float, default=5)
    ap.add_argument("--top", type=int, default=5, help="threads shown per member, by CPU")
    ap.add_argument("bench_args", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    args = [x for x in a.bench_args if x != "--"]
    if not args:
        ap.error("give cairn-bench's mode and options after --")
    cairnd = a.cairnd or os.path.join(a.build, "cairnd")
    bench = os.path.join(a.build, "cairn-bench")
    for _ in range(a.rounds):
        cl = suite.Cluster(cairnd, a.members, bench).start()
        try:
            lead = cl.leader()
            li = cl.members.index(lead)
            order = [li] + [i for i in range(a.members) if i != li]
            m0, t0 = machine(), [threads(cl.procs[i].pid) for i in order]
            out = suite.run_row(bench, lead["client"], args, a.duration)
            t1, m1 = [threads(cl.procs[i].pid) for i in order], machine()
        finally:
            cl.stop()
        ops = out.get("events") if out["mode"] == "watch" else out.get("ops")
        ops = ops or out.get("ops_per_s", 0) * a.duration
        if not ops:
            print("no operations completed: %s" % out)
            return 1
        lat = out.get("delay_ms") if out["mode"] == "watch" else out["latency_ms"]
        rate = out.get("events_per_s") if out["mode"] == "watch" else out["ops_per_s"]
        d = [b - x for x, b in zip(m0, m1)]
        print("%.0f/s, p50 %.3f ms, p99 %.3f ms; the client's CPU %.0f%%; the machine idle %.0f%%, iowait %.0f%%, "
              "steal %.0f%%" % (rate, lat["p50"], lat["p99"], 100 * out.get("cpu_share", 0), 100 * d[3] / sum(d),
                               100 * d[4] / sum(d), 100 * d[7] / sum(d)))
        for k, (before, after) in enumerate(zip(t0, t1)):
            per = delta(before, after)
            run = sum(v[0] for v in per.values()) / 1e3 / ops
            wait = sum(v[1] for v in per.values()) / 1e3 / ops
            top = sorted(per.items(), key=lambda kv: -kv[1][0])[:a.top]
            print("  %s: %.1f us CPU, %.1f us waiting per op; by thread (CPU us / waiting us / switches per op): %s" % (
                "leader" if k == 0 else "member %d" % (k + 1), run, wait,
                ", ".join("%s %.1f/%.1f/%.2f" % (name, v[0] / 1e3 / ops, v[1] / 1e3 / ops, v[2] / ops)
                          for name, v in top)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
