"""Health endpoints and Prometheus metrics on --listen-metrics-urls: /health,
/livez and /readyz answer OK on a healthy three-member cluster; /readyz (and
/health) turn 503 when a member loses its leader and OK again when it finds
one; /metrics parses strictly as Prometheus text (format 0.0.4) and its
counters move with a bounded load of puts; /readyz turns 503 under a
NOSPACE alarm.  Everything is polled with a deadline, nothing timed."""
import os

import cluster
from prom import get, get_or_none, scrape, start_with_metrics

PUTS = 200


# ---------------------------------------------------------------- tests

def test_health_livez_and_readyz_are_ok_on_a_healthy_cluster(env, wire):
    c = start_with_metrics(env, 3)
    c.wait_ready()
    for m in c:
        # /health is etcd 3.4's JSON; the other two are etcd 3.6's plain text
        assert get(m, "/health") == (200, '{"health":"true"}'), m.name
        assert get(m, "/livez") == (200, "ok\n"), m.name
        assert get(m, "/readyz") == (200, "ok\n"), m.name
        st, body = get(m, "/readyz?verbose")
        assert st == 200 and body.splitlines() == [
            "[+]leader ok", "[+]data_corruption ok", "[+]no_space ok", "[+]serializable_read ok",
            "readyz check passed"], body
        st, body = get(m, "/livez?verbose")
        assert st == 200 and body.splitlines() == ["[+]node_loop ok", "[+]serializable_read ok",
                                                   "livez check passed"], body
        assert get(m, "/readyz/serializable_read") == (200, "ok\n")
        assert get(m, "/readyz/no_such_check")[0] == 404
        st, body = get(m, "/readyz?verbose&exclude=leader")
        assert st == 200 and "leader" not in body, body
        assert get(m, "/nowhere")[0] == 404
    # Stopping with the listener up is clean, and takes the listener down.
    m = c[0]
    assert m.terminate() == 0, m.log_tail()
    assert get_or_none(m, "/livez") is None


def test_readyz_fails_while_the_member_has_no_leader_and_recovers(env, wire):
    c = start_with_metrics(env, 3)
    c.wait_ready()
    m, others = c[0], list(c)[1:]
    for o in others:
        assert o.terminate() == 0, o.log_tail()

    def not_ready():
        r = get_or_none(m, "/readyz")
        return r if r and r[0] == 503 else None

    st, body = cluster.poll(not_ready, cluster.LEADER_TIMEOUT, "%s /readyz 503 without a quorum" % m.name)
    assert "[-]leader failed: no leader known" in body and body.endswith("readyz check failed\n"), body
    assert "[+]serializable_read ok" in body, "the other checks are listed too: " + body
    st, body = get(m, "/health")
    assert st == 503 and '"health":"false"' in body and "RAFT NO LEADER" in body, (st, body)
    # the member itself is alive and can read locally
    assert get(m, "/livez") == (200, "ok\n")
    assert get(m, "/health?serializable=true") == (200, '{"health":"true"}')
    sc = scrape(m)
    assert sc.value("etcd_server_has_leader") == 0
    assert sc.value("etcd_server_health_failures") >= 2

    for o in others:
        o.start()
    cluster.poll(lambda: get_or_none(m, "/readyz") == (200, "ok\n"), cluster.LEADER_TIMEOUT,
                 "%s /readyz OK once a leader is back" % m.name)
    assert scrape(m).value("etcd_server_has_leader") == 1


def test_metrics_parse_strictly_and_move_with_the_load(env, wire):
    c = start_with_metrics(env, 3)
    lead = c.wait_ready()
    f = [m for m in c if m is not lead][0]
    before = {m.name: scrape(m) for m in c}
    b = before[lead.name]
    for name in ("etcd_server_has_leader", "etcd_server_proposals_committed_total",
                 "etcd_disk_wal_fsync_duration_seconds_count", "etcd_mvcc_db_total_size_in_bytes",
                 "etcd_debugging_mvcc_keys_total", "etcd_debugging_mvcc_current_revision",
                 "etcd_debugging_mvcc_watcher_total", "cairn_leases", "etcd_server_is_leader"):
        assert b.value(name) is not None, name
    assert b.value("etcd_server_is_leader") == 1 and before[f.name].value("etcd_server_is_leader") == 0
    assert b.types["etcd_disk_wal_fsync_duration_seconds"] == "histogram"
    assert b.types["etcd_disk_backend_commit_duration_seconds"] == "histogram"
    assert b.types["cairn_requests_total"] == "counter"

    with lead.client() as cl:
        for i in range(PUTS):
            wire.check(cl.put("metrics/%04d" % i, "v%d" % i), "put")
        r = cl.put("", "no key")
        assert wire.is_error(r), "an empty key is refused"
        rev = wire.check(cl.delete("metrics/0010"), "delete_range")
    f.wait_applied(lead.applied_index())  # its serializable reads see the puts
    fb = scrape(f)
    with f.client() as cf:
        for _ in range(2):  # the second pass finds the values in the value cache
            for i in range(10):
                r = wire.check(cf.get("metrics/%04d" % i, serializable=True), "range")
                assert r.range.kvs[0].value == b"v%d" % i
    fa = scrape(f)
    for name in ("cairn_value_cache_hits_total", "cairn_value_cache_misses_total"):
        assert fa.value(name) - fb.value(name) >= 10, name
    assert fa.value("cairn_value_cache_bytes") > 0
    deleted = 1
    keys = PUTS - deleted

    a = scrape(lead)
    assert a.value("cairn_requests_total", method="put", code="OK") - \
        (b.value("cairn_requests_total", method="put", code="OK") or 0) >= PUTS
    assert a.value("cairn_requests_total", method="put", code="KEY_EMPTY") >= 1
    assert a.value("cairn_request_duration_seconds_count", method="put") >= PUTS
    assert a.value("cairn_requests_total", method="delete_range", code="OK") >= 1
    assert a.value("etcd_disk_wal_fsync_duration_seconds_count") > b.value("etcd_disk_wal_fsync_duration_seconds_count")
    assert a.value("etcd_disk_backend_commit_duration_seconds_count") > \
        b.value("etcd_disk_backend_commit_duration_seconds_count")
    assert a.value("etcd_debugging_mvcc_current_revision") >= rev.header.revision
    ids = {st.header.member_id for st in (m.wait_ready() for m in c)}
    peers = {"%016x" % i for i in ids if i != lead.wait_ready().header.member_id}
    sent = a.series("etcd_network_peer_sent_bytes_total")
    assert {dict(k)["To"] for k in sent} == peers, sent

    # A follower's connection to the leader may still be in its redial backoff
    # right after the start: poll until traffic has flowed both ways, and the
    # leader has timed heartbeat round trips (every 50 ms) to each follower.
    def peer_traffic():
        s = scrape(lead)
        return all(s.value("etcd_network_peer_sent_bytes_total", To=p) >
                   (b.value("etcd_network_peer_sent_bytes_total", To=p) or 0) and
                   s.value("etcd_network_peer_received_bytes_total", From=p) > 0 and
                   s.value("cairn_peer_connected", To=p) == 1 and
                   s.value("etcd_network_peer_round_trip_time_seconds_count", To=p) > 0 for p in peers)
    cluster.poll(peer_traffic, 10, "peer traffic and round trips seen by the leader")

    # Every member commits and applies the load, and counts the live keys exactly.
    for m in c:
        def caught_up():
            s = scrape(m)
            return s if s.value("etcd_debugging_mvcc_current_revision") >= rev.header.revision else None
        s = cluster.poll(caught_up, 30, "%s applying the load" % m.name)
        old = before[m.name]
        assert s.value("etcd_server_proposals_committed_total") - \
            old.value("etcd_server_proposals_committed_total") >= PUTS + 1
        assert s.value("etcd_server_proposals_applied_total") - \
            old.value("etcd_server_proposals_applied_total") >= PUTS + 1
        assert s.value("etcd_disk_wal_fsync_duration_seconds_count") > \
            old.value("etcd_disk_wal_fsync_duration_seconds_count")
        assert s.value("etcd_debugging_mvcc_keys_total") == old.value("etcd_debugging_mvcc_keys_total") + keys, m.name
        assert s.value("etcd_mvcc_db_total_size_in_use_in_bytes") <= s.value("etcd_mvcc_db_total_size_in_bytes")
        # nobody watches here: no watcher had to read a batch from the store
        assert s.value("cairn_watch_lost_batches_total") == 0, m.name
        # ... nor was the watch dispatcher woken for each batch: only by its own
        # idle check, once a second (it was woken once per put or more before)
        woke = s.value("cairn_watch_dispatcher_wakeups_total") - old.value("cairn_watch_dispatcher_wakeups_total")
        assert woke < PUTS // 2, (m.name, woke)
    s = scrape(f)
    assert s.value("cairn_requests_total", method="range", code="OK") >= 10


def nospace_reached(wire, m, limit=400):
    """Put 16 KiB values until the member answers NO_SPACE; True if it did within limit puts."""
    with m.client() as cl:
        for i in range(limit):
            r = cl.put("fill/%04d" % i, "x" * 16384)
            if wire.is_error(r):
                return wire.error_name(r.error.code) in ("NO_SPACE", "ALARM_ACTIVE")
    return False


def test_readyz_fails_under_a_nospace_alarm(env, wire):
    c = start_with_metrics(env, 1, extra=["--quota-backend-bytes=%d" % (1 << 20)])
    m = c[0]
    assert get(m, "/readyz") == (200, "ok\n")
    assert nospace_reached(wire, m), "a 1 MiB quota is exceeded within 400 puts of 16 KiB"

    def not_ready():
        r = get_or_none(m, "/readyz?verbose")
        return r if r and r[0] == 503 else None

    st, body = cluster.poll(not_ready, 10, "/readyz 503 under NOSPACE")
    assert "[-]no_space failed: alarm activated: NOSPACE" in body and "[+]leader ok" in body, body
    assert get(m, "/health") == (503, '{"health":"false","reason":"ALARM NOSPACE"}')
    assert get(m, "/health?exclude=NOSPACE") == (200, '{"health":"true"}')
    assert get(m, "/livez") == (200, "ok\n"), "a full member is still alive"
    assert scrape(m).value("cairn_alarm_active", type="NOSPACE") == 1


def store_file_bytes(m):
    """The size of the member's store file (mvcc.db, without its -wal)."""
    for root, _, files in os.walk(m.data_dir):
        if "mvcc.db" in files:
            return os.path.getsize(os.path.join(root, "mvcc.db"))
    raise AssertionError("no mvcc.db under " + m.data_dir)


def test_the_checkpointer_moves_the_store_wal_into_the_file(env, wire):
    """SQLite's WAL is checkpointed by the checkpointer thread, not by the
    applies (daemon/ckpt.h): ~4,000 pages of writes, above its 2,000 but
    below the applier's backstop of 8,000 (and no snapshot, whose sync
    would checkpoint too), end up in the store's file, and the checkpoints
    show in the metrics."""
    c = start_with_metrics(env, 1)
    m = c[0]
    m.wait_ready()
    start = store_file_bytes(m)
    with m.client() as cl:
        for i in range(700):
            wire.check(cl.put("ckpt/%04d" % i, "%04d" % i + "c" * 16380), "put")

    def checkpointed():
        s = scrape(m)
        n = s.value("cairn_store_checkpoint_duration_seconds_count")
        return s if n and n >= 2 and store_file_bytes(m) > start + 8 * 1048576 else None

    s = cluster.poll(checkpointed, 20, "the store's file takes the checkpointed pages")
    assert s.value("cairn_snapshots_taken_total") == 0
    assert "of the store failed" not in m.log_tail()
    with m.client() as cl:
        r = wire.check(cl.get("ckpt/0123"), "range")
        assert r.range.kvs[0].value.startswith(b"0123c")


def test_a_lone_voter_serves_linearizable_reads_without_read_index_rounds(env, wire):
    """A one-member cluster's leader is its only voter: a linearizable read
    takes its commit index at once (cairn_reads_solo_total), with no
    ReadIndex round through the node thread, and still sees the put
    acknowledged just before it.  On three members every linearizable read
    on the leader goes through a ReadIndex round (several reads may share
    one) and none takes the shortcut."""
    c = start_with_metrics(env, 1)
    m = c[0]
    m.wait_ready()
    b = scrape(m)
    with m.client() as cl:
        for i in range(50):
            wire.check(cl.put("solo/%02d" % i, "v%d" % i), "put")
            r = wire.check(cl.get("solo/%02d" % i), "range")
            assert r.range.kvs[0].value == b"v%d" % i
        r = wire.check(cl.range("solo/", "solo0"), "range")  # not a point get: a reader thread runs it
        assert len(r.range.kvs) == 50
    a = scrape(m)
    assert a.value("cairn_reads_solo_total") - b.value("cairn_reads_solo_total") == 51
    assert a.value("cairn_read_index_rounds_total") == b.value("cairn_read_index_rounds_total")
    c.kill_all()

    c = start_with_metrics(env, 3)
    lead = c.wait_ready()
    b = scrape(lead)
    with lead.client() as cl:
        for i in range(20):
            wire.check(cl.put("multi/%02d" % i, "v%d" % i), "put")
            r = wire.check(cl.get("multi/%02d" % i), "range")
            assert r.range.kvs[0].value == b"v%d" % i
    a = scrape(lead)
    assert a.value("cairn_read_index_rounds_total") - b.value("cairn_read_index_rounds_total") >= 20
    assert a.value("cairn_reads_solo_total") == 0
