#!/usr/bin/python3
"""Runs every Cairn test suite and prints one line per suite, then the total.

Suites, found under the build directory and the source tree:
  unit/<name>     each cmocka binary in BUILD/test/unit (TAP output is counted)
  sim/raft-sim    the Raft simulation, if built (it prints 'N passed, N failed')
  integration     pytest over test/integration, if it holds tests

Each suite's full output goes to BUILD/test-logs/<suite>.log; a failing suite's
tail is printed.  The last line is 'N passed, N failed' (tests, not suites),
and the exit status is non-zero if anything failed or a suite crashed.
"""
import argparse
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def count_tap(out):
    passed = len(re.findall(r"^ok \d+", out, re.M))
    failed = len(re.findall(r"^not ok \d+", out, re.M))
    return passed, failed


def count_plain(out):
    """The last 'N passed, N failed' line a program printed."""
    m = None
    for m in re.finditer(r"^(?:\w+: )?(\d+) passed, (\d+) failed", out, re.M):
        pass
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def count_pytest(out):
    tail = out.strip().splitlines()[-1] if out.strip() else ""
    def num(word):
        m = re.search(r"(\d+) " + word, tail)
        return int(m.group(1)) if m else 0
    return num("passed"), num("failed") + num("error")


def suites(build, only):
    unit_dir = os.path.join(build, "test", "unit")
    if os.path.isdir(unit_dir):
        for name in sorted(os.listdir(unit_dir)):
            path = os.path.join(unit_dir, name)
            if name.startswith("test_") and os.access(path, os.X_OK) and not name.endswith((".o", ".d")):
                yield "unit/" + name, [path], count_tap
    sim = os.path.join(build, "test", "sim", "raft-sim")
    if os.access(sim, os.X_OK):
        seeds = os.environ.get("SIM_SEEDS", "2000")
        yield "sim/raft-sim", [sim, "--seeds", seeds], count_plain
    integ = os.path.join(ROOT, "test", "integration")
    if os.path.isdir(integ) and any(f.startswith("test_") and f.endswith(".py") for f in os.listdir(integ)):
        yield "integration", [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                              "-o", "console_output_style=classic", integ], count_pytest


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--timeout", type=int, default=1500, help="seconds per suite")
    ap.add_argument("only", nargs="*", help="run only suites whose name contains one of these")
    args = ap.parse_args()
    build = os.path.abspath(args.build)
    logs = os.path.join(build, "test-logs")
    os.makedirs(logs, exist_ok=True)
    env = dict(os.environ, CMOCKA_MESSAGE_OUTPUT="TAP", CAIRN_BUILD=build, PYTHONDONTWRITEBYTECODE="1")
    total_pass = total_fail = 0
    failed_suites = []
    for name, cmd, counter in suites(build, args.only):
        if args.only and not any(o in name for o in args.only):
            continue
        start = time.monotonic()
        try:
            p = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, timeout=args.timeout)
            out, rc = p.stdout.decode(errors="replace"), p.returncode
        except subprocess.TimeoutExpired as e:
            out = (e.stdout or b"").decode(errors="replace") + "\n[run.py: suite timed out after %ds]\n" % args.timeout
            rc = -1
        elapsed = time.monotonic() - start
        with open(os.path.join(logs, name.replace("/", "_") + ".log"), "w") as f:
            f.write(out)
        passed, failed = counter(out)
        if rc != 0 and failed == 0:
            failed = 1  # crashed, timed out, or failed outside any counted test
        if passed == 0 and failed == 0:
            failed = 1  # a suite that ran nothing is a broken suite
        total_pass += passed
        total_fail += failed
        status = "ok  " if failed == 0 else "FAIL"
        print("%-32s %s %5d passed %3d failed  %7.1fs" % (name, status, passed, failed, elapsed), flush=True)
        if failed:
            failed_suites.append(name)
            print("---- last lines of %s (full log: %s) ----" % (name, os.path.relpath(f.name, ROOT)))
            print("\n".join(out.splitlines()[-40:]))
            print("----")
    if failed_suites:
        print("failed suites: " + " ".join(failed_suites))
    print("%d passed, %d failed" % (total_pass, total_fail))
    return 1 if total_fail or total_pass == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
