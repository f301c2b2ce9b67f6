#!/usr/bin/python3
"""The fault harness of issue 11 (docs/reliability.md).

One run: a cluster of real cairnd members, each in its own network namespace
on a bridge (netns.py, cluster_ns.py); build/cairn-record runs the load from
the switch namespace and writes the history; faults.py injects faults on a
seeded schedule while it runs; then everything is healed, the revision log
is appended, build/cairn-check judges the history (skipped, and said so, if
it is not built), and a summary is printed.  Everything started is cleaned
up -- processes, namespaces (with their iptables rules and the small
tmpfs), temporary files unless the run failed or --keep -- also on Ctrl-C.

  harness.py --duration 60 --faults mixed --seed 7
  harness.py --faults pause-leader --duration 120 --members 5
  harness.py --members 1 --duration 60     (one member: only faults of faults.SOLO_KINDS)
  harness.py --torture --duration 600          (each fault type, then mixed; a table)

Exit status: 0 valid, 1 the checker found a violation or a member crashed,
2 the run itself failed (could not start a cluster, ...), 77 the machine
cannot run it (no root / no network namespaces).  The last line of output
is a JSON summary (for test_jepsen.py and --torture).
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
ROOT = os.path.dirname(os.path.dirname(HERE))

import netns  # noqa: E402

EXIT_SKIP = 77


class RunFailed(Exception):
    pass


def _sigterm(signum, frame):
    raise KeyboardInterrupt("signal %d" % signum)


class Harness:
    def __init__(self, args):
        self.args = args
        self.build = os.path.abspath(args.build)
        self.cairnd = os.path.abspath(args.cairnd or os.path.join(self.build, "cairnd"))
        self.record = os.path.abspath(args.record or os.path.join(self.build, "cairn-record"))
        self.check = os.path.abspath(args.check or os.path.join(self.build, "cairn-check"))
        self.dir = None
        self.net = None
        self.cluster = None
        self.back = None
        self.faults_path = None
        self.fault_lines = []
        self.load_end = 0
        self.recorder = None
        self.summary = {}

    def tool(self, name):
        for d in (self.build, os.path.dirname(self.cairnd)):
            p = os.path.join(d, name)
            if os.access(p, os.X_OK):
                return p
        return None

    def log(self, msg):
        print("[harness %s] %s" % (time.strftime("%H:%M:%S"), msg), flush=True)

    def log_fault(self, what, kind, args):
        line = "fault %d %s %s %s" % (time.monotonic_ns(), what, kind, args)
        self.fault_lines.append(line)
        with open(self.faults_path, "a") as f:
            f.write(line + "\n")
        self.log(line)

    def membership_changed(self, new):
        self.log("member %s replaced its slot's old member (client %s)" % (new.name, new.client_url))

    # ---------------------------------------------------------------- the run
    def run(self):
        a = self.args
        for p, what in ((self.cairnd, "cairnd"), (self.record, "cairn-record")):
            if not os.access(p, os.X_OK):
                raise RunFailed("%s is not built: %s (make -j2 all tests)" % (what, p))
        import cluster_ns
        import faults
        kinds = faults.schedule_kinds(a.faults)
        if a.members == 1:
            kinds = [k for k in kinds if k in faults.SOLO_KINDS]
        self.dir = tempfile.mkdtemp(prefix="cairn-jepsen-", dir=a.workdir)
        self.history = os.path.join(self.dir, "history.txt")
        self.faults_path = os.path.join(self.dir, "faults.txt")
        cluster_ns.wire.load_protos(ROOT, os.path.join(self.dir, "pb"))
        cluster_ns.wire.load_errors(ROOT)
        self.log("seed %d, %d members, faults %s, %g s; files in %s" % (a.seed, a.members, a.faults, a.duration,
                                                                       self.dir))
        self.net = netns.Net(a.members)
        self.back = self.net.enter_switch()
        disk_slot = a.members if "disk-full" in kinds else None
        self.cluster = cluster_ns.Cluster(self.net, a.members, self.cairnd, self.dir,
                                          snapshot_count=a.snapshot_count, snapshot_catchup=a.snapshot_catchup,
                                          request_timeout_ms=a.request_timeout_ms, disk_slot=disk_slot,
                                          disk_mb=a.disk_mb)
        try:
            lead = self.cluster.start(timeout=60)
        except TimeoutError as e:
            raise RunFailed("the cluster did not start: %s\n%s" % (e, self.member_tails()))
        self.log("cluster up; leader %s" % lead.name)

        t0 = time.monotonic()
        self.load_end = t0 + a.duration
        self.start_recorder()
        fs = faults.run_schedule(self, kinds, a.seed, self.load_end)
        self.wait_recorder()
        self.log("load finished; healing")
        self.heal_all()
        self.append_faults()
        self.write_revision_log()
        verdict, check_out = self.run_check()
        self.report(fs, verdict, check_out)
        return self.summary

    def start_recorder(self):
        a = self.args
        c = self.cluster
        eps = c.recorder_endpoints()
        argv = [self.record, "--endpoints", ",".join(u for u, _ in eps), "--names", ",".join(n for _, n in eps),
                "--pin-count", str(len(c.members)), "--processes", str(a.processes),
                "--duration", str(a.duration), "--keys", str(a.keys), "--group", str(a.group), "--watchers", str(a.watchers),
                "--timeout-ms", str(a.timeout_ms), "--seed", str(a.seed), "--out", self.history,
                "--meta", "harness_faults=%s" % a.faults, "--meta", "harness_members=%d" % a.members]
        if a.mix:
            argv += ["--mix", a.mix]
        self.recorder_out = open(os.path.join(self.dir, "record.out"), "w")
        self.recorder = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.recorder_out,
                                         stderr=subprocess.STDOUT, preexec_fn=netns.die_with_parent)

    def wait_recorder(self):
        a = self.args
        limit = max(0.0, self.load_end - time.monotonic()) + a.timeout_ms / 1000.0 * 3 + 60
        try:
            rc = self.recorder.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            self.recorder.kill()
            self.recorder.wait()
            raise RunFailed("cairn-record did not finish within %.0f s of the load's end" % limit)
        self.recorder_out.close()
        with open(os.path.join(self.dir, "record.out")) as f:
            out = f.read()
        if rc != 0:
            raise RunFailed("cairn-record exited %d:\n%s" % (rc, out[-3000:]))
        self.record_json = json.loads([l for l in out.splitlines() if l.startswith("{")][-1])

    def recover(self, bounded=20):
        """After a fault: no rule left, nobody paused, every member running
        (one that exited unexpectedly is restarted and counted as a crash)."""
        self.net.heal()
        for m in self.cluster:
            m.resume()
            m.note_exit()
            if not m.running and not m.expect_exit:
                self.log("member %s had exited (status %s); restarting it" % (m.name, m.proc.returncode))
            if not m.running:
                m.start()
        try:
            self.cluster.wait_healthy(bounded)
        except TimeoutError:
            pass  # the schedule goes on; the final heal insists

    def heal_all(self):
        import faults
        self.recover(bounded=5)
        f = faults.Faults(self, None)
        f.disarm_alarms()
        try:
            self.cluster.wait_healthy(90)
        except TimeoutError as e:
            raise RunFailed("the cluster did not heal: %s\n%s" % (e, self.member_tails()))

    def append_faults(self):
        with open(self.history, "a") as f:
            for line in self.fault_lines:
                f.write(line + "\n")

    def write_revision_log(self):
        c = self.cluster
        argv = [self.record, "--log-only", "--endpoints", ",".join(c.endpoints()), "--out", self.history,
                "--timeout-ms", "5000", "--log-timeout", "60"]
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
        if p.returncode != 0:
            raise RunFailed("the revision log could not be read: %s" % p.stdout.decode(errors="replace"))

    def run_check(self):
        if not os.access(self.check, os.X_OK):
            msg = "cairn-check is not built (%s): the check was skipped" % self.check
            self.log(msg)
            return "skipped", msg
        p = subprocess.run([self.check, self.history], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=self.args.check_timeout)
        out = p.stdout.decode(errors="replace")
        with open(os.path.join(self.dir, "check.out"), "w") as f:
            f.write(out)
        # cairn-check's exit: 0 valid, 1 violation, 2 malformed history, 3 inconclusive, 4 usage/I/O
        verdict = {0: "valid", 1: "invalid", 2: "malformed-history", 3: "inconclusive"}.get(
            p.returncode, "error(exit %d)" % p.returncode)
        return verdict, out

    # ---------------------------------------------------------------- report
    def count_history(self):
        counts = {"attempted": 0, "ok": 0, "fail": 0, "info": 0, "watch_starts": 0, "events": 0}
        with open(self.history, errors="replace") as f:
            for line in f:
                k = line.split(" ", 1)[0]
                if k == "inv":
                    counts["attempted"] += 1
                elif k in ("ok", "fail", "info"):
                    counts[k] += 1
                elif k == "event":
                    counts["events"] += 1
                elif k == "watch" and " start " in line:
                    counts["watch_starts"] += 1
        return counts

    def crashes(self):
        out = []
        for m in self.cluster.all_members():
            m.note_exit()
            for status, expected in m.exits:
                if not expected:
                    out.append("%s exited with status %s" % (m.name, status))
        return out

    def snapshots_installed(self):
        n = 0
        for m in self.cluster.all_members():
            try:
                with open(m.log_path, errors="replace") as f:
                    n += sum(1 for l in f if "received a snapshot at index" in l)
            except OSError:
                pass
        return n

    def member_tails(self):
        if not self.cluster:
            return ""
        return "\n".join("---- %s (%s):\n%s" % (m.name, m.log_path, m.log_tail(15))
                         for m in self.cluster.all_members())

    def report(self, fs, verdict, check_out):
        a = self.args
        counts = self.count_history()
        crashes = self.crashes()
        injected = dict(sorted(fs.counts.items()))
        ok = verdict in ("valid", "skipped") and not crashes
        self.summary = dict(counts, seed=a.seed, faults=a.faults, members=a.members, duration=a.duration,
                            injected=injected, faults_total=sum(injected.values()),
                            skipped={k: len(v) for k, v in fs.skipped.items()},
                            snapshots_installed=self.snapshots_installed(), crashes=crashes,
                            verdict=verdict, history=self.history, passed=ok)
        print("")
        print("==== cairn fault run: seed %d, %d members, faults %s, %g s" % (a.seed, a.members, a.faults,
                                                                            a.duration))
        print("operations: %(attempted)d attempted, %(ok)d acknowledged, %(fail)d failed, %(info)d unknown" % counts)
        print("watches: %(watch_starts)d started, %(events)d events delivered" % counts)
        print("faults injected: %s (total %d)" % (", ".join("%s=%d" % kv for kv in injected.items()) or "none",
                                                  sum(injected.values())))
        for k, v in sorted(fs.skipped.items()):
            print("faults skipped: %s x%d (%s)" % (k, len(v), v[0]))
        print("snapshots installed from a leader: %d" % self.summary["snapshots_installed"])
        if crashes:
            print("members that died on their own: %s" % "; ".join(crashes))
        print("checker: %s" % verdict)
        if verdict not in ("valid", "skipped"):
            print(check_out[-6000:])
        if not ok:
            print("history: %s" % self.history)
            print("reproduce: %s" % repro(a))

    # ---------------------------------------------------------------- cleanup
    def cleanup(self, failed):
        if self.recorder and self.recorder.poll() is None:
            self.recorder.kill()
            self.recorder.wait()
        if self.cluster:
            self.cluster.kill_all()
        netns.Net.leave(self.back)
        self.back = None
        if self.net:
            self.net.stop()
        if self.dir and not failed and not self.args.keep:
            shutil.rmtree(self.dir, ignore_errors=True)


def repro(a):
    """The command line that runs the same schedule again."""
    cmd = "%s --seed %d --faults %s --members %d --duration %g" % (
        os.path.relpath(__file__, ROOT), a.seed, a.faults, a.members, a.duration)
    if os.path.abspath(a.build) != os.path.join(ROOT, "build"):
        cmd += " --build %s" % a.build
    for opt in ("cairnd", "record", "check"):
        if getattr(a, opt):
            cmd += " --%s %s" % (opt, getattr(a, opt))
    return cmd


def parse(argv):
    ap = argparse.ArgumentParser(description="Cairn's fault harness (docs/reliability.md)")
    ap.add_argument("--build", default=os.path.join(ROOT, "build"), help="build directory (cairnd, cairn-record, cairn-check)")
    ap.add_argument("--cairnd", help="the cairnd to test (default: BUILD/cairnd)")
    ap.add_argument("--record", help="cairn-record (default: BUILD/cairn-record)")
    ap.add_argument("--check", help="cairn-check (default: BUILD/cairn-check)")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--faults", default="mixed", help="comma list of fault kinds, or mixed (default), or none")
    ap.add_argument("--members", type=int, default=3, choices=(1, 3, 5))
    ap.add_argument("--duration", type=float, default=60, help="seconds of load and faults (default 60)")
    ap.add_argument("--processes", type=int, default=6)
    ap.add_argument("--keys", type=int, default=12)
    ap.add_argument("--group", type=int, default=2, help="cairn-record's --group (keys a multi-key txn ties)")
    ap.add_argument("--watchers", type=int, default=2)
    ap.add_argument("--mix", help="cairn-record's --mix")
    ap.add_argument("--timeout-ms", type=int, default=3000, help="per call (past it: outcome unknown)")
    ap.add_argument("--request-timeout-ms", type=int, default=3000, help="members' --request-timeout")
    ap.add_argument("--snapshot-count", type=int, default=300)
    ap.add_argument("--snapshot-catchup", type=int, default=50)
    ap.add_argument("--disk-mb", type=int, default=320, help="size of the full-disk member's tmpfs")
    ap.add_argument("--check-timeout", type=int, default=900)
    ap.add_argument("--workdir", default=None, help="where the run's directory is made (default: $TMPDIR)")
    ap.add_argument("--keep", action="store_true", help="keep the run's files even if it passed")
    ap.add_argument("--torture", action="store_true", help="one run per fault type, then a mixed one; a table")
    a = ap.parse_args(argv)
    if a.seed is None:
        a.seed = int(time.time()) % 100000
    return a


def one_run(args):
    signal.signal(signal.SIGTERM, _sigterm)
    h = Harness(args)
    failed = True
    try:
        netns.check_available()
        s = h.run()
        failed = not s["passed"]
        print(json.dumps(s), flush=True)
        return 0 if s["passed"] else 1
    except netns.Unavailable as e:
        print("harness: skipped: %s" % e, flush=True)
        print(json.dumps({"skipped": str(e)}), flush=True)
        failed = False
        return EXIT_SKIP
    except RunFailed as e:
        print("harness: the run failed: %s" % e, flush=True)
        if h.dir:
            print("harness: files kept in %s; reproduce: %s" % (h.dir, repro(args)))
        print(json.dumps({"error": str(e)[:2000], "dir": h.dir}), flush=True)
        return 2
    except KeyboardInterrupt:
        print("harness: interrupted; cleaning up", flush=True)
        return 130
    finally:
        h.cleanup(failed)


def torture(args):
    import faults
    kinds = faults.schedule_kinds(args.faults if args.faults != "mixed" else "mixed")
    order = list(dict.fromkeys(kinds)) + (["mixed"] if args.faults == "mixed" else [])
    rows = []
    for i, kind in enumerate(order):
        argv = [sys.executable, os.path.abspath(__file__), "--build", args.build, "--faults", kind,
                "--members", str(args.members), "--duration", str(args.duration), "--seed", str(args.seed + i)]
        for opt in ("cairnd", "record", "check", "workdir"):
            if getattr(args, opt):
                argv += ["--" + opt, getattr(args, opt)]
        print("== torture: %s for %g s (seed %d)" % (kind, args.duration, args.seed + i), flush=True)
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out = p.stdout.decode(errors="replace")
        sys.stdout.write(out)
        last = [l for l in out.splitlines() if l.startswith("{")]
        s = json.loads(last[-1]) if last else {"error": "no summary (exit %d)" % p.returncode}
        rows.append((kind, args.seed + i, p.returncode, s))
    print("")
    print("| fault | seed | seconds | attempted | ok | fail | info | faults injected | verdict |")
    print("|---|---|---|---|---|---|---|---|---|")
    bad = 0
    for kind, seed, rc, s in rows:
        if "attempted" in s:
            inj = ", ".join("%s=%d" % kv for kv in s["injected"].items()) or "none"
            v = s["verdict"] + ("" if not s["crashes"] else " + crashes")
            print("| %s | %d | %g | %d | %d | %d | %d | %s | %s |" % (kind, seed, s["duration"], s["attempted"], s["ok"],
                                                                  s["fail"], s["info"], inj, v))
        else:
            print("| %s | %d | | | | | | | %s |" % (kind, seed, s.get("skipped") or s.get("error", "")[:80]))
        bad += rc not in (0, EXIT_SKIP)
    return 1 if bad else 0


def main(argv=None):
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.torture:
        return torture(args)
    return one_run(args)


if __name__ == "__main__":
    sys.exit(main())
