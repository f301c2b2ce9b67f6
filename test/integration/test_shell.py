"""cairn, the SQL shell, against real members through `cairn -c ... --format json`:
the keys and revisions tables, what xBestIndex hands to the member (proved by
the member's Range counters in Status and by the shell's --trace of each
request), every write form with its revisions, one Raft Txn per statement or
BEGIN ... COMMIT, a lost update prevented, as_of reads, history after
compaction, binary keys, errors, files and stdin, TLS."""
import os
import re

import pytest

import cairnshell
from cairnshell import counters


@pytest.fixture(scope="session")
def cairn_path(build_dir):
    p = build_dir / "cairn"
    if not p.exists():
        pytest.fail("%s was not built (make builds it from shell/)" % p)
    return p


@pytest.fixture
def sh(cairn_path, member, tmp_path):
    return cairnshell.Shell(cairn_path, member.client_url, tmp_path)


def put_many(member, wire, keys, value=b"v"):
    """Write keys straight through the wire (not the shell), in pipelined puts."""
    with member.client(timeout=30) as c:
        for r in c.call_many([wire.put_request(k, value) for k in keys], timeout=30):
            wire.check(r, "put")


def traced(result):
    """The requests the shell traced on stderr: a list of '-> ...' lines."""
    return [ln for ln in result.err.splitlines() if ln.startswith("-> ")]


# ---------------------------------------------------------------- reading

def test_keys_rows_types_and_the_revision_read_at(sh):
    w = sh.write("INSERT INTO keys(key, value) VALUES ('a', '1'), ('b', 'two'), ('c/d', '')")
    assert w["command"] == "INSERT" and w["rows"] == 3
    rev = w["revision"]
    rows = sh.rows("SELECT * FROM keys ORDER BY key")
    assert rows == [
        {"key": "a", "value": "1", "create_revision": rev, "mod_revision": rev, "version": 1, "lease": 0},
        {"key": "b", "value": "two", "create_revision": rev, "mod_revision": rev, "version": 1, "lease": 0},
        {"key": "c/d", "value": "", "create_revision": rev, "mod_revision": rev, "version": 1, "lease": 0},
    ], "three keys of one INSERT share one revision: one Raft Txn"
    # The aligned table says how many rows and at which revision they were read.
    out = sh.ok("SELECT key, value FROM keys WHERE key < 'c'", fmt="table").out
    assert re.search(r"^ key \| value\n-----\+-------\n a   \| 1\n b   \| two\n\(2 rows, revision %d\)$" % rev,
                     out, re.M), out
    # the hidden as_of column is the revision the row was read at
    assert sh.rows("SELECT key, as_of FROM keys WHERE key = 'a'") == [{"key": "a", "as_of": rev}]


def test_a_point_query_is_one_point_range(sh, member):
    sh.write("INSERT INTO keys(key, value) VALUES ('p1', 'x'), ('p2', 'y'), ('p3', 'z')")
    before = counters(member)
    assert sh.rows("SELECT value FROM keys WHERE key = 'p2'") == [{"value": "y"}]
    after = counters(member)
    assert (after[0] - before[0], after[1] - before[1]) == (1, 1), \
        "exactly one Range, and it was a point Range, not a scan"
    # a key that is not there costs the same single point read
    before = after
    assert sh.rows("SELECT * FROM keys WHERE key = 'nope'") == []
    after = counters(member)
    assert (after[0] - before[0], after[1] - before[1]) == (1, 1)


def test_in_reads_each_listed_key_once(sh, member):
    sh.write("INSERT INTO keys(key, value) VALUES ('i1', '1'), ('i2', '2'), ('i3', '3')")
    before = counters(member)
    rows = sh.rows("SELECT key FROM keys WHERE key IN ('i3', 'i1', 'zz', 'i1') ORDER BY key DESC")
    after = counters(member)
    assert rows == [{"key": "i3"}, {"key": "i1"}], "sorted by the shell, duplicates read once"
    assert (after[0] - before[0], after[1] - before[1]) == (3, 3), "one point Range per distinct key"


def test_prefixes_and_ranges_are_one_range_each(sh, member, wire):
    put_many(member, wire, ["cfg/a", "cfg/b", "cfg/c/d", "cfg0", "cfe", "other"])
    for query, want in [
        ("SELECT key FROM keys WHERE key LIKE 'cfg/%'", ["cfg/a", "cfg/b", "cfg/c/d"]),
        ("SELECT key FROM keys WHERE key GLOB 'cfg/*'", ["cfg/a", "cfg/b", "cfg/c/d"]),
        ("SELECT key FROM keys WHERE key LIKE 'cfg/_'", ["cfg/a", "cfg/b"]),
        ("SELECT key FROM keys WHERE key BETWEEN 'cfg/b' AND 'cfg0'", ["cfg/b", "cfg/c/d", "cfg0"]),
        ("SELECT key FROM keys WHERE key > 'cfg/b' AND key < 'cfg0'", ["cfg/c/d"]),
    ]:
        before = counters(member)
        r = sh.ok(query, extra=["--trace"])
        after = counters(member)
        assert [row["key"] for row in r.json[0]] == want, query
        assert (after[0] - before[0], after[1] - before[1]) == (1, 0), \
            "%s: one ranged Range, no scan of everything" % query
        assert len(traced(r)) == 1, r
    # LIKE is case-sensitive in the shell, so 'prefix%' is exactly a key range
    assert sh.rows("SELECT key FROM keys WHERE key LIKE 'CFG/%'") == []
    assert "keeps LIKE case-sensitive" in sh.fails("PRAGMA case_sensitive_like = OFF")
    # the member is asked for exactly the range
    r = sh.ok("SELECT key FROM keys WHERE key LIKE 'cfg/%'", extra=["--trace"])
    assert traced(r) == ['-> range key="cfg/" end="cfg0" limit=512 revision=0 keys_only'], traced(r)
    r = sh.ok("SELECT key FROM keys WHERE key BETWEEN 'cfg/b' AND 'cfg0'", extra=["--trace"])
    assert traced(r) == ['-> range key="cfg/b" end="cfg0\\x00" limit=512 revision=0 keys_only'], traced(r)


def test_limit_order_and_revision_filters_go_to_the_member(sh, member, wire):
    put_many(member, wire, ["l/%03d" % i for i in range(200)])
    r = sh.ok("SELECT key FROM keys WHERE key >= 'l/' AND key < 'l0' LIMIT 3", extra=["--trace"])
    assert [x["key"] for x in r.json[0]] == ["l/000", "l/001", "l/002"]
    assert traced(r) == ['-> range key="l/" end="l0" limit=3 revision=0 keys_only'], traced(r)
    r = sh.ok("SELECT key FROM keys WHERE key >= 'l/' AND key < 'l0' ORDER BY key DESC LIMIT 2 OFFSET 1",
              extra=["--trace"])
    assert [x["key"] for x in r.json[0]] == ["l/198", "l/197"]
    assert traced(r) == ['-> range key="l/" end="l0" limit=3 revision=0 descend keys_only'], traced(r)
    # EXPLAIN QUERY PLAN shows the plan xBestIndex chose
    plan = sh.rows("EXPLAIN QUERY PLAN SELECT * FROM keys WHERE key = 'l/001'")[0]["detail"]
    assert "VIRTUAL TABLE INDEX 0:key=" in plan, plan
    rev = sh.write("UPDATE keys SET value = 'new' WHERE key IN ('l/010', 'l/020')")["revision"]
    r = sh.ok("SELECT key FROM keys WHERE mod_revision >= %d" % rev, extra=["--trace"])
    assert [x["key"] for x in r.json[0]] == ["l/010", "l/020"]
    assert traced(r) == ['-> range key="\\x00" end="\\x00" limit=512 revision=0 keys_only mod=[%d,0]' % rev], \
        traced(r)


def test_big_results_stream_in_pages_at_one_revision(sh, member, wire):
    n = 3000
    put_many(member, wire, ["big/%05d" % i for i in range(n)], b"x" * 100)
    r = sh.ok("SELECT count(*) AS n, sum(length(value)) AS bytes, min(key) AS lo, max(key) AS hi "
              "FROM keys WHERE key LIKE 'big/%'", extra=["--trace"])
    assert r.json[0] == [{"n": n, "bytes": 100 * n, "lo": "big/00000", "hi": "big/%05d" % (n - 1)}]
    pages = traced(r)
    assert len(pages) > 3, "read in pages, not in one reply"
    limits = [int(re.search(r"limit=(\d+)", p).group(1)) for p in pages]
    assert max(limits) <= 4096 and sum(limits) >= n, limits
    revs = {re.search(r"revision=(\d+)", p).group(1) for p in pages[1:]}
    assert len(revs) == 1 and revs != {"0"}, "every later page reads the first page's revision: %s" % pages


def test_as_of_reads_the_past(sh, member):
    r1 = sh.write("INSERT INTO keys(key, value) VALUES ('h', 'one'), ('gone', 'soon')")["revision"]
    r2 = sh.write("UPDATE keys SET value = 'two' WHERE key = 'h'")["revision"]
    sh.write("DELETE FROM keys WHERE key = 'gone'")
    assert sh.rows("SELECT key, value FROM keys WHERE key IN ('h', 'gone')") == [{"key": "h", "value": "two"}]
    assert sh.rows("SELECT key, value, version, as_of FROM keys WHERE as_of = %d AND key IN ('gone', 'h')" % r1) == [
        {"key": "gone", "value": "soon", "version": 1, "as_of": r1},
        {"key": "h", "value": "one", "version": 1, "as_of": r1}]
    # as_of in a join: the value before and after
    assert sh.rows("SELECT old.value AS before, new.value AS after FROM keys AS old, keys AS new "
                   "WHERE old.key = 'h' AND old.as_of = %d AND new.key = 'h'" % r1) == [
        {"before": "one", "after": "two"}]
    assert "FUTURE_REV" in sh.fails("SELECT * FROM keys WHERE as_of = %d" % (r2 + 100))


def test_revisions_every_version_deletes_included(sh):
    revs = [sh.write("INSERT OR REPLACE INTO keys(key, value) VALUES ('v', '%d')" % i)["revision"] for i in range(3)]
    dead = sh.write("DELETE FROM keys WHERE key = 'v'")["revision"]
    back = sh.write("INSERT INTO keys(key, value) VALUES ('v', 'again')")["revision"]
    rows = sh.rows("SELECT value, revision, create_revision, version, event FROM revisions "
                   "WHERE key = 'v' ORDER BY revision")
    assert rows == [
        {"value": "0", "revision": revs[0], "create_revision": revs[0], "version": 1, "event": "PUT"},
        {"value": "1", "revision": revs[1], "create_revision": revs[0], "version": 2, "event": "PUT"},
        {"value": "2", "revision": revs[2], "create_revision": revs[0], "version": 3, "event": "PUT"},
        {"value": "", "revision": dead, "create_revision": 0, "version": 0, "event": "DELETE"},
        {"value": "again", "revision": back, "create_revision": back, "version": 1, "event": "PUT"},
    ]
    r = sh.ok("SELECT value FROM revisions WHERE key = 'v' AND revision BETWEEN %d AND %d" % (revs[1], dead),
              extra=["--trace"])
    assert r.json[0] == [{"value": "1"}, {"value": "2"}, {"value": ""}]
    assert traced(r) == ['-> history key="v" revisions=[%d,%d] limit=64 after=0.0' % (revs[1], dead)], traced(r)
    r = sh.ok("SELECT revision FROM revisions WHERE key = 'v' LIMIT 2", extra=["--trace"])
    assert r.json[0] == [{"revision": revs[0]}, {"revision": revs[1]}]
    assert "limit=2" in traced(r)[0] and len(traced(r)) == 1
    # aggregates over the history: writes per key
    assert sh.rows("SELECT key, count(*) AS writes FROM revisions WHERE key LIKE 'v%' GROUP BY key") == [
        {"key": "v", "writes": 5}]


def test_history_after_compaction(sh):
    r1 = sh.write("INSERT INTO keys(key, value) VALUES ('k', 'a'), ('d', 'x')")["revision"]
    r2 = sh.write("UPDATE keys SET value = 'b' WHERE key = 'k'")["revision"]
    r3 = sh.write("DELETE FROM keys WHERE key = 'd'")["revision"]
    r4 = sh.write("UPDATE keys SET value = 'c' WHERE key = 'k'")["revision"]
    assert sh.rows("SELECT compact(%d) AS compacted" % r3) == [{"compacted": r3}]
    # below the compact revision only each key's newest record survives, and not a delete
    assert sh.rows("SELECT key, value, revision, event FROM revisions WHERE key IN ('k', 'd') ORDER BY revision") == [
        {"key": "k", "value": "b", "revision": r2, "event": "PUT"},
        {"key": "k", "value": "c", "revision": r4, "event": "PUT"}]
    assert r1 < r2 < r3
    err = sh.fails("SELECT * FROM keys WHERE as_of = %d" % r1)
    assert "COMPACTED" in err and "compact revision %d" % r3 in err, err
    assert sh.rows("SELECT value FROM keys WHERE key = 'k' AND as_of = %d" % r3) == [{"value": "b"}]
    st = sh.rows("SELECT compact_revision FROM status")
    assert st == [{"compact_revision": r3}]


# ---------------------------------------------------------------- writing

def test_every_write_form_and_its_revisions(sh):
    # INSERT creates, and refuses a key that exists (nothing written)
    r1 = sh.write("INSERT INTO keys(key, value) VALUES ('w', '1')")
    assert r1["rows"] == 1
    err = sh.fails("INSERT INTO keys(key, value) VALUES ('w2', 'x'), ('w', '2')")
    assert 'key "w" already exists (mod_revision %d)' % r1["revision"] in err, err
    assert sh.rows("SELECT key, value, mod_revision FROM keys WHERE key IN ('w', 'w2')") == [
        {"key": "w", "value": "1", "mod_revision": r1["revision"]}], "the failed statement wrote nothing"
    # INSERT OR IGNORE skips what exists, writes the rest
    r = sh.write("INSERT OR IGNORE INTO keys(key, value) VALUES ('w', '3'), ('w2', 'x')")
    assert r["rows"] == 1
    assert sh.rows("SELECT key, value FROM keys WHERE key IN ('w', 'w2')") == [
        {"key": "w", "value": "1"}, {"key": "w2", "value": "x"}]
    # INSERT OR REPLACE and REPLACE put
    r2 = sh.write("INSERT OR REPLACE INTO keys(key, value) VALUES ('w', '4')")["revision"]
    r3 = sh.write("REPLACE INTO keys(key, value) VALUES ('w', '5')")["revision"]
    assert sh.rows("SELECT value, create_revision, mod_revision, version FROM keys WHERE key = 'w'") == [
        {"value": "5", "create_revision": r1["revision"], "mod_revision": r3, "version": 3}]
    assert r1["revision"] < r2 < r3
    # UPDATE changes the value (or only the lease: the value is kept)
    r4 = sh.write("UPDATE keys SET value = value || '!' WHERE key = 'w'")
    assert r4["rows"] == 1
    r5 = sh.write("UPDATE keys SET lease = 0 WHERE key = 'w'")["revision"]
    assert sh.rows("SELECT value, mod_revision, version FROM keys WHERE key = 'w'") == [
        {"value": "5!", "mod_revision": r5, "version": 5}]
    assert sh.write("UPDATE keys SET value = 'z' WHERE key = 'absent'") == {"command": "UPDATE", "rows": 0}
    # DELETE deletes, and history shows it
    r6 = sh.write("DELETE FROM keys WHERE key IN ('w', 'w2')")
    assert r6["rows"] == 2
    assert sh.rows("SELECT key FROM keys WHERE key IN ('w', 'w2')") == []
    assert sh.rows("SELECT key, event FROM revisions WHERE revision = %d ORDER BY key" % r6["revision"]) == [
        {"key": "w", "event": "DELETE"}, {"key": "w2", "event": "DELETE"}]
    # what the cluster sets cannot be written
    sh.write("INSERT INTO keys(key, value) VALUES ('ro', '1')")
    assert "mod_revision is read-only" in sh.fails("UPDATE keys SET mod_revision = 1 WHERE key = 'ro'")
    assert "version is set by the cluster" in sh.fails("INSERT INTO keys(key, value, version) VALUES ('x', 1, 7)")
    assert "key column cannot be changed" in sh.fails("UPDATE keys SET key = 'ro2' WHERE key = 'ro'")
    assert "at least one byte" in sh.fails("INSERT INTO keys(key, value) VALUES ('', 'x')")
    assert "may not be modified" in sh.fails("DELETE FROM revisions")


def test_one_statement_is_one_txn(sh, member, wire):
    put_many(member, wire, ["s/%d" % i for i in range(10)])
    r = sh.write("UPDATE keys SET value = 'u' || substr(key, 3) WHERE key LIKE 's/%' AND key != 's/5'")
    assert r["rows"] == 9
    rows = sh.rows("SELECT key, value, mod_revision FROM keys WHERE key LIKE 's/%'")
    assert {x["mod_revision"] for x in rows if x["key"] != "s/5"} == {r["revision"]}
    assert [x["value"] for x in rows] == ["u0", "u1", "u2", "u3", "u4", "v", "u6", "u7", "u8", "u9"]
    # deleting a whole prefix is one DeleteRange in one Txn, past the per-Txn operation limit
    put_many(member, wire, ["del/%04d" % i for i in range(300)])
    r = sh.ok("DELETE FROM keys WHERE key LIKE 'del/%'", extra=["--trace"])
    assert r.json == [[{"command": "DELETE", "rows": 300, "revision": r.json[0][0]["revision"]}]]
    assert [t for t in traced(r) if t.startswith("-> txn")] == ["-> txn compares=1 success=1 failure=1"]
    assert sh.rows("SELECT count(*) AS n FROM keys WHERE key LIKE 'del/%'") == [{"n": 0}]
    # a statement writing more keys than one Txn takes fails whole
    err = sh.fails("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200) "
                   "INSERT OR REPLACE INTO keys(key, value) SELECT 'many/' || i, i FROM n")
    assert "writes 200 keys" in err and "nothing was written" in err, err
    assert sh.rows("SELECT count(*) AS n FROM keys WHERE key LIKE 'many/%'") == [{"n": 0}]


def test_begin_commit_is_one_txn_and_reads_its_own_writes(sh):
    sh.write("INSERT INTO keys(key, value) VALUES ('t/a', 'A'), ('t/b', 'B'), ('t/c', 'C')")
    out = sh.sql("BEGIN",
                 "INSERT INTO keys(key, value) VALUES ('t/new', 'N')",
                 "UPDATE keys SET value = 'BB' WHERE key = 't/b'",
                 "DELETE FROM keys WHERE key = 't/c'",
                 "SELECT key, value, mod_revision FROM keys WHERE key LIKE 't/%'",
                 "COMMIT")
    assert out[1] == [{"command": "INSERT", "rows": 1, "pending": True}]
    assert out[4] == [{"key": "t/a", "value": "A", "mod_revision": out[4][0]["mod_revision"]},
                      {"key": "t/b", "value": "BB", "mod_revision": None},
                      {"key": "t/new", "value": "N", "mod_revision": None}], \
        "inside the transaction its own pending writes are seen (revision not known yet)"
    rev = out[5][0]["revision"]
    assert sh.rows("SELECT key, value, mod_revision FROM keys WHERE key LIKE 't/%'") == [
        {"key": "t/a", "value": "A", "mod_revision": out[4][0]["mod_revision"]},
        {"key": "t/b", "value": "BB", "mod_revision": rev},
        {"key": "t/new", "value": "N", "mod_revision": rev}]
    assert sh.rows("SELECT key, event FROM revisions WHERE revision = %d ORDER BY key" % rev) == [
        {"key": "t/b", "event": "PUT"}, {"key": "t/c", "event": "DELETE"}, {"key": "t/new", "event": "PUT"}]
    # ROLLBACK, and a savepoint rolled back, write nothing
    sh.sql("BEGIN", "DELETE FROM keys WHERE key LIKE 't/%'", "ROLLBACK")
    sh.sql("BEGIN", "SAVEPOINT s", "INSERT INTO keys(key, value) VALUES ('t/x', 'x')", "ROLLBACK TO s",
           "INSERT INTO keys(key, value) VALUES ('t/y', 'y')", "COMMIT")
    assert [x["key"] for x in sh.rows("SELECT key FROM keys WHERE key LIKE 't/%'")] == ["t/a", "t/b", "t/new", "t/y"]
    # a transaction left open at the end is not committed
    r = sh.run("BEGIN", "INSERT INTO keys(key, value) VALUES ('t/z', 'z')")
    assert r.rc == 0 and "never committed" in r.err, r
    assert sh.rows("SELECT key FROM keys WHERE key = 't/z'") == []


def test_a_lost_update_is_prevented(sh):
    """Two shells read the same counter and both add one: exactly one commit succeeds."""
    sh.write("INSERT INTO keys(key, value) VALUES ('counter', '10')")
    read_rev = sh.rows("SELECT mod_revision FROM keys WHERE key = 'counter'")[0]["mod_revision"]
    a, b = sh.session(), sh.session()
    try:
        for s in (a, b):
            assert s.send("BEGIN;") == [{"command": "BEGIN"}]
            assert s.send("SELECT value FROM keys WHERE key = 'counter';") == [{"value": "10"}]
            assert s.send("UPDATE keys SET value = value + 1 WHERE key = 'counter';") == [
                {"command": "UPDATE", "rows": 1, "pending": True}]
        won = a.send("COMMIT;")[0]["revision"]
        rc, out, err = b.finish("COMMIT;")
    finally:
        a.finish()
        b.finish()
    assert rc == 1 and out == "", (rc, out, err)
    assert ('conflict on key "counter": read at mod_revision %d, now mod_revision %d; nothing was written'
            % (read_rev, won)) in err, err
    assert sh.rows("SELECT value, version FROM keys WHERE key = 'counter'") == [{"value": "11", "version": 2}]
    # the same from two single statements that read at one revision and commit one after the other
    c = sh.session()
    try:
        assert c.send("BEGIN;") == [{"command": "BEGIN"}]
        assert c.send("UPDATE keys SET value = value * 2 WHERE key = 'counter';")[0]["rows"] == 1
        sh.write("UPDATE keys SET value = 0 WHERE key = 'counter'")
        rc, out, err = c.finish("COMMIT;")
    finally:
        c.finish()
    assert rc == 1 and "conflict on key \"counter\"" in err, err
    assert sh.rows("SELECT value FROM keys WHERE key = 'counter'") == [{"value": "0"}]


def test_concurrent_increments_lose_nothing(sh):
    """Two writers each add one to a counter 25 times with single UPDATE statements, retrying
    on a conflict: the counter ends at exactly 50, whatever the interleaving."""
    import threading
    sh.write("INSERT INTO keys(key, value) VALUES ('hits', '0')")
    conflicts = []
    failures = []

    def writer():
        for _ in range(25):
            for attempt in range(50):
                r = sh.run("UPDATE keys SET value = value + 1 WHERE key = 'hits'")
                if r.rc == 0:
                    break
                if "conflict on key \"hits\"" not in r.err:
                    failures.append(r)
                    return
                conflicts.append(r.err)
            else:
                failures.append("50 conflicts in a row")
                return
    threads = [threading.Thread(target=writer) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not failures, failures[:1]
    assert sh.rows("SELECT value, version FROM keys WHERE key = 'hits'") == [{"value": "50", "version": 51}], \
        "%d conflicts were retried" % len(conflicts)


def test_a_scanned_range_is_guarded_against_new_keys(sh):
    """A transaction that counted the keys under a prefix fails if one appears before it commits."""
    sh.write("INSERT INTO keys(key, value) VALUES ('q/1', 'x'), ('q/2', 'y')")
    s = sh.session()
    try:
        assert s.send("BEGIN;") == [{"command": "BEGIN"}]
        assert s.send("SELECT count(*) AS n FROM keys WHERE key LIKE 'q/%';") == [{"n": 2}]
        s.send("INSERT INTO keys(key, value) VALUES ('q-count', '2');")
        new = sh.write("INSERT INTO keys(key, value) VALUES ('q/3', 'z')")["revision"]
        rc, out, err = s.finish("COMMIT;")
    finally:
        s.finish()
    assert rc == 1 and 'conflict on key "q/3"' in err and "mod_revision %d" % new in err, err
    assert sh.rows("SELECT key FROM keys WHERE key = 'q-count'") == []


# ---------------------------------------------------------------- bytes, errors, input

def test_binary_keys_and_values(sh):
    r = sh.write("INSERT INTO keys(key, value) VALUES (x'00ff', x'0102'), ('t\u00e9xt', 'caf\u00e9')")
    rows = sh.rows("SELECT key, value, typeof(key) AS t FROM keys ORDER BY key")
    assert rows == [{"key": {"base64": "AP8="}, "value": {"base64": "AQI="}, "t": "blob"},
                    {"key": "t\u00e9xt", "value": "caf\u00e9", "t": "text"}]
    assert sh.rows("SELECT printable(key) AS k, hex(value) AS v, mod_revision FROM keys WHERE key = x'00ff'") == [
        {"k": "\\x00\\xff", "v": "0102", "mod_revision": r["revision"]}]
    assert sh.rows("SELECT base64(value) AS b FROM keys WHERE key = unhex('00FF')") == [{"b": "AQI="}]
    table = sh.ok("SELECT key, value FROM keys WHERE key = x'00ff'", fmt="table").out
    assert " \\x00\\xff | \\x01\\x02" in table, table
    csv = sh.ok("SELECT key, value FROM keys ORDER BY key", fmt="csv").out
    assert csv.splitlines() == ["key,value", "\\x00ff,\\x0102", "t\u00e9xt,caf\u00e9"], csv
    # long values are cut in tables only
    sh.write("INSERT INTO keys(key, value) VALUES ('long', printf('%.200c', 'x'))")
    table = sh.ok("SELECT value FROM keys WHERE key = 'long'", fmt="table").out
    assert "x" * 59 + "\u2026" in table and "x" * 61 not in table, table
    assert sh.rows("SELECT length(value) AS n FROM keys WHERE key = 'long'") == [{"n": 200}]
    assert sh.rows("SELECT value FROM keys WHERE key = 'long'") == [{"value": "x" * 200}]


def test_errors_say_what_and_where(sh, cairn_path, tmp_path):
    assert sh.fails("SELECT 1;\nSELECT * FORM keys") == \
        'error: near "FORM": syntax error (line 2, column 10)'
    assert sh.fails("SELECT * FROM nosuch") == "error: no such table: nosuch"
    r = sh.run("SELECT 1 AS one", "SELECT * FROM nosuch", "SELECT 2 AS two")
    assert r.rc == 1 and r.json == [[{"one": 1}]], "the first error stops the run"
    down = cairnshell.Shell(cairn_path, "tcp://127.0.0.1:1", tmp_path)
    err = down.fails("SELECT * FROM keys WHERE key = 'a'", extra=["--timeout", "1500"])
    assert err.startswith("error: keys: reading \"a\": UNAVAILABLE") and "127.0.0.1:1" in err, err
    assert "cannot be dropped" in sh.fails("DROP TABLE keys")


def test_files_stdin_formats_and_meta_commands(sh, tmp_path):
    script = tmp_path / "script.sql"
    script.write_text("-- a script\nINSERT INTO keys(key, value)\n  VALUES ('f/1', 'one');\n"
                      "\\format csv\nSELECT key, value\nFROM keys\nWHERE key LIKE 'f/%';\n"
                      "\\format line\nSELECT key FROM keys WHERE key = 'f/1'\n")
    r = sh.ok(fmt="table", extra=["-f", str(script)])
    assert r.out.splitlines() == ["INSERT 1 (revision %d)" % int(re.search(r"revision (\d+)", r.out).group(1)),
                                  "key,value", "f/1,one", "key = f/1"], r
    r = sh.ok(fmt="json", stdin="SELECT value FROM keys\n WHERE key = 'f/1';\nSELECT 2 AS two")
    assert r.json == [[{"value": "one"}], [{"two": 2}]]
    r = sh.run(fmt="json", stdin="SELECT 1 AS a;\nSELEC 2;\nSELECT 3 AS c;\n")
    assert r.rc == 1 and r.json == [[{"a": 1}]] and "line 1, column 1" in r.err, r
    d = sh.rows("\\d")
    assert [x["table"] for x in d] == ["keys", "revisions", "leases", "members", "alarms", "status", "users",
                                       "roles", "permissions"]
    cols = {x["column"]: x for x in sh.rows("\\d keys")}
    assert list(cols) == ["key", "value", "create_revision", "mod_revision", "version", "lease", "as_of"]
    assert cols["as_of"]["hidden"] == 1 and "LIKE" in cols["key"]["filtered by the cluster"]
    out = tmp_path / "out.json"
    sh.ok("\\o %s" % out, "SELECT 'to a file' AS x", "\\o", "SELECT 'back' AS y")
    assert out.read_text() == '[{"x":"to a file"}]\n'
    expanded = sh.ok("\\x on", "SELECT 1 AS x", fmt="table").out
    assert "-[ RECORD 1 ]" in expanded and re.search(r"^x \| 1$", expanded, re.M), expanded
    assert "unknown command" in sh.fails("\\nope")


def test_tls(env, cairn_path, tmp_path):
    c = env.cluster(1, certs=env.certs)
    crt, key = c.certs.client
    shell = cairnshell.Shell(cairn_path, c[0].client_url, tmp_path, tls=(c.certs.ca, crt, key, "localhost"))
    shell.write("INSERT INTO keys(key, value) VALUES ('secure', 'yes')")
    assert shell.rows("SELECT value FROM keys WHERE key = 'secure'") == [{"value": "yes"}]
    plain = cairnshell.Shell(cairn_path, c[0].client_url, tmp_path)
    assert "cannot use endpoints" in plain.fails("SELECT 1 FROM keys")


def test_status_table_one_row_per_endpoint(env, cairn_path, tmp_path):
    c = env.cluster(3)
    shell = cairnshell.Shell(cairn_path, c.endpoints(), tmp_path)
    rows = shell.rows("SELECT endpoint, name, is_leader, leader = member_id AS leads, error FROM status")
    assert [r["endpoint"] for r in rows] == [m.client_url for m in c]
    assert sorted(r["name"] for r in rows) == ["m1", "m2", "m3"]
    assert sum(r["is_leader"] for r in rows) == 1 and all(r["error"] is None for r in rows)
    leader = c.leader()
    follower = next(m for m in c if m is not leader)
    follower.kill()
    rows = shell.rows("SELECT endpoint, name, error FROM status")
    down = [r for r in rows if r["endpoint"] == follower.client_url][0]
    assert down["name"] is None and "UNAVAILABLE" in down["error"], down
    # the shell fails over to the members that answer
    shell.write("INSERT INTO keys(key, value) VALUES ('ha', '1')")
    assert shell.rows("SELECT value FROM keys WHERE key = 'ha'") == [{"value": "1"}]


def test_the_man_page_names_every_option_and_renders(cairn_path, root_dir):
    import shutil
    import subprocess
    help_text = subprocess.run([str(cairn_path), "--help"], stdout=subprocess.PIPE, text=True, check=True).stdout
    opts = sorted(set(re.findall(r"(--[a-z][a-z-]+)", help_text)))
    page = (root_dir / "docs" / "man" / "cairn.1").read_text().replace("\\-", "-")
    assert opts and not [o for o in opts if o not in page], [o for o in opts if o not in page]
    sql_md = (root_dir / "docs" / "sql.md").read_text()
    for meta in ("\\d", "\\x", "\\format", "\\timing", "\\o", "\\connect", "\\serializable", "\\watch",
                 "\\lease keepalive", "\\status", "\\q"):
        assert "`%s" % meta in sql_md, meta
    if not shutil.which("man"):
        return
    p = subprocess.run(["man", "--warnings", "-l", str(root_dir / "docs" / "man" / "cairn.1")],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       env={"PATH": os.environ["PATH"], "MANWIDTH": "80", "LANG": "C.UTF-8", "MANPAGER": "cat"})
    assert p.returncode == 0 and not p.stderr.strip(), p.stderr


def test_the_local_admin_socket_is_the_default_endpoint(cairn_path, member, tmp_path):
    """With no --endpoints the shell uses the local member's ipc socket when one answers
    (here ./cairn.data/cairnd.sock, as an embedded-default member has it), and \\connect
    moves it elsewhere."""
    import subprocess
    for system_socket in ("/run/cairn/cairnd.sock", "/var/lib/cairn/cairnd.sock"):
        if os.path.exists(system_socket):
            pytest.skip("%s exists on this host and would be chosen first" % system_socket)
    work = tmp_path / "w"
    (work / "cairn.data").mkdir(parents=True)
    os.symlink(member.admin_sock, str(work / "cairn.data" / "cairnd.sock"))
    sh = cairnshell.Shell(cairn_path, member.client_url, tmp_path)
    argv = [str(cairn_path), "--format", "json", "-c", "SELECT endpoint, name FROM status",
            "-c", "INSERT INTO keys(key, value) VALUES ('local', 'ipc')",
            "-c", "\\connect " + member.client_url, "-c", "SELECT endpoint FROM status",
            "-c", "SELECT value FROM keys WHERE key = 'local'"]
    p = subprocess.run(argv, cwd=str(work), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       env=sh.env(), timeout=60)
    assert p.returncode == 0, p
    out = [line for line in p.stdout.splitlines()]
    assert out[0] == '[{"endpoint":"ipc://%s","name":"m1"}]' % (work / "cairn.data" / "cairnd.sock"), p.stdout
    assert out[2] == '[{"endpoint":"%s"}]' % member.client_url and out[3] == '[{"value":"ipc"}]', p.stdout
    assert "connected to %s" % member.client_url in p.stderr
