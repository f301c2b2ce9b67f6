"""cairn-load against libcairn's scripted member (mock_member.c), before and
besides cairnd: the ack log it writes, its report, how check classifies
what it reads back, and that the tests' copy of its value function
(cluster.load_value) agrees with the tool's."""
import json
import subprocess

import pytest

import cluster


def run(path, *args, timeout=60):
    p = subprocess.run([str(path), *[str(a) for a in args]], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=timeout)
    return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")


def report(out):
    return json.loads([line for line in out.splitlines() if line.startswith("{")][-1])


def test_put_logs_every_acknowledged_put(cairn_load_path, serve, tmp_path):
    m = serve("mock_member.c")
    log = tmp_path / "ack.log"
    rc, out, err = run(cairn_load_path, "put", "--endpoints", m.url, "--total", 3000, "--inflight", 16,
                       "--key-space", 50, "--key-prefix", "t/", "--ack-log", log, "--seed", 7, "--json")
    assert rc == 0, out + err
    r = report(out)
    assert r["acked"] == 3000 and r["failed"] == 0 and r["errors"] == {}
    lat = r["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p99_9"] <= lat["max"]
    assert r["cpu_user_s"] + r["cpu_sys_s"] > 0
    lines = log.read_text().splitlines()
    assert lines[0].startswith("# cairn-load put val-size=32")
    rows = [line.split() for line in lines[1:]]
    assert len(rows) == 3000 and all(len(x) == 3 for x in rows)
    keys = {x[0] for x in rows}
    assert len(keys) <= 50 and all(k.startswith("t/") for k in keys)
    assert len({int(x[1]) for x in rows}) == 3000, "each put answered at its own revision"
    assert len({int(x[2]) for x in rows}) == 3000, "sequence numbers are unique"


def test_put_to_nobody_fails_every_put_as_unavailable(cairn_load_path, tmp_path):
    log = tmp_path / "ack.log"
    rc, out, err = run(cairn_load_path, "put", "--endpoints", "tcp://127.0.0.1:1", "--total", 20,
                       "--inflight", 4, "--call-timeout", 200, "--dial-timeout", 50, "--ack-log", log,
                       "--json")
    assert rc == 3, out + err
    r = report(out)
    assert r["acked"] == 0 and r["errors"] == {"UNAVAILABLE": 20}
    assert [line for line in log.read_text().splitlines() if not line.startswith("#")] == []


def test_the_whole_run_is_bounded_by_timeout(cairn_load_path):
    rc, out, err = run(cairn_load_path, "put", "--endpoints", "tcp://127.0.0.1:1", "--total", 10 ** 9,
                       "--call-timeout", 200, "--timeout", 0.5, "--json", timeout=30)
    assert rc == 3, out + err
    assert report(out)["issued"] < 10 ** 9


def test_check_classifies_each_key(cairn_load_path, serve, tmp_path):
    """The mock holds every key at mod_revision 7 with value "v:<key>", except "missing"."""
    m = serve("mock_member.c")
    log = tmp_path / "ack.log"
    log.write_text("# cairn-load put val-size=32\n"
                   "later 3 11\n"       # acknowledged at 3, overwritten at 7: fine
                   "differs 7 12\n"     # same revision, other value: lost write
                   "older 9 13\n"       # acknowledged at 9, member has 7: lost write
                   "missing 2 14\n"     # gone
                   "later 2 10\n"       # an older ack of the same key is ignored
                   "torn 5")            # a killed writer's last line
    rc, out, err = run(cairn_load_path, "check", "--endpoints", m.url, "--ack-log", log, "--json")
    assert rc == 1, out + err
    r = report(out)
    assert (r["keys"], r["ok"], r["later"], r["mismatched"], r["older"], r["missing"], r["skipped_lines"]) \
        == (4, 1, 1, 1, 1, 1, 1), r
    for key in ("differs", "older", "missing"):
        assert "key %s " % key in err


def test_check_passes_when_every_key_was_overwritten_later(cairn_load_path, serve, tmp_path):
    m = serve("mock_member.c")
    log = tmp_path / "ack.log"
    log.write_text("".join("k%d %d %d\n" % (i, 1 + i % 6, i) for i in range(100)))
    rc, out, err = run(cairn_load_path, "check", "--endpoints", m.url, "--ack-log", log)
    assert rc == 0, out + err
    assert "ok 100" in out


@pytest.mark.parametrize("key,seq,size", [("load/00000001", 4294967296, 32), ("k", 7, 5), ("k", 7, 1),
                                          ("x", 123456789012, 0), ("long/key", 1, 300)])
def test_python_value_function_matches_the_tool(cairn_load_path, key, seq, size):
    rc, out, err = run(cairn_load_path, "value", key, seq, "--val-size", size)
    assert rc == 0, err
    assert out.encode() == cluster.load_value(key, seq, size) + b"\n"


def test_quick_get_and_put(cairn_load_path, serve):
    m = serve("mock_member.c")
    rc, out, _ = run(cairn_load_path, "get", "a", "--endpoints", m.url)
    assert (rc, out) == (0, "v:a\n")
    rc, out, err = run(cairn_load_path, "get", "missing", "--endpoints", m.url)
    assert rc == 1 and "not found" in err
    rc, out, _ = run(cairn_load_path, "put", "a", "b", "--endpoints", m.url, "--json")
    assert rc == 0 and json.loads(out)["revision"] > 0


def test_bad_usage_exits_2(cairn_load_path):
    for args in (["put", "--total", "x"], ["check"], ["frob"], ["put", "--key-prefix", "a b"]):
        rc, _, err = run(cairn_load_path, *args)
        assert rc == 2, (args, err)
