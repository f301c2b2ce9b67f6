"""The short run of the fault harness (issue 11, docs/reliability.md): about
60 s of load on 3 real members in network namespaces with mixed faults,
judged by cairn-check.  It fails on a violation, on a member that died on
its own, or if no fault was injected or nothing was acknowledged; it skips
only when the machine cannot create network namespaces (not root, no
iptables).  Longer runs: `make torture`.
"""
import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
HARNESS = os.path.join(ROOT, "test", "jepsen", "harness.py")
sys.path.insert(0, os.path.join(ROOT, "test", "jepsen"))

import netns  # noqa: E402

SECONDS = 50  # of load and faults; start, heal, revision log and check add ~10-20 s
# Keys: the model search is per key pair, and its cost grows fast with the
# operations of unknown outcome in one partition (kill-all and membership
# faults make thousands).  With 12 keys one pair held 6.7k operations and a
# fresh-clone CI run ended "inconclusive" after 10M states; 32 keys spread
# the same load over 16 pairs.
KEYS = 32
# Every fault kind.  Compaction was left out for a while: a compacted revision
# log left the model search without the log's help placing operations of
# unknown outcome, and a 50 s run with two compactions ended "inconclusive"
# in CI (seed 796).  cairn-check now rebuilds the compacted front of the log
# from the watchers' events (docs/reliability-checker.md).
import faults  # noqa: E402
FAULTS = ",".join(faults.KINDS)


def summary_of(out):
    lines = [l for l in out.splitlines() if l.startswith("{")]
    return json.loads(lines[-1]) if lines else {}


def test_mixed_faults_on_three_members_keep_every_promise(build_dir, cairnd_path, tmp_path):
    try:
        netns.check_available()
    except netns.Unavailable as e:
        pytest.skip("the fault harness cannot run here: %s" % e)
    for tool in ("cairn-record", "cairn-check"):
        if not (build_dir / tool).exists():
            pytest.fail("%s was not built (make tests builds it)" % (build_dir / tool))
    seed = int(os.environ.get("CAIRN_JEPSEN_SEED", "0")) or (os.getpid() % 10000)
    argv = [sys.executable, HARNESS, "--build", str(build_dir), "--faults", FAULTS, "--members", "3",
            "--duration", str(SECONDS), "--keys", str(KEYS), "--seed", str(seed), "--workdir", str(tmp_path)]
    if os.environ.get("CAIRN_SANITIZE") == "1":
        argv += ["--timeout-ms", "5000", "--request-timeout-ms", "5000"]
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=SECONDS + 400)
    out = p.stdout.decode(errors="replace")
    print(out)
    s = summary_of(out)
    if p.returncode == 77:
        pytest.skip("the fault harness skipped: %s" % s.get("skipped"))
    assert "verdict" in s, "the harness did not finish a run (exit %d):\n%s" % (p.returncode, out[-4000:])
    # "inconclusive" is cairn-check's exit 3: the model search ran out of budget on
    # some partition and nothing else failed -- no partition found non-linearizable,
    # and the lost-write, read, revision-order, watch and lease checks all held.  It
    # is not a violation, and a 50 s run with many operations of unknown outcome
    # reaches it now and then (CI, seeds 2738 and 796); `make torture` reports it.
    assert s["verdict"] in ("valid", "inconclusive"), \
        "cairn-check: %s; history %s (seed %d)" % (s["verdict"], s["history"], seed)
    assert not s["crashes"], "members died on their own: %s (seed %d)" % (s["crashes"], seed)
    assert s["faults_total"] >= 3, "only %d faults injected: %s" % (s["faults_total"], s["injected"])
    assert s["ok"] > 100, "only %d operations acknowledged" % s["ok"]
    assert s["info"] + s["fail"] < s["attempted"]
    assert p.returncode == 0 or s["verdict"] == "inconclusive", out[-4000:]
