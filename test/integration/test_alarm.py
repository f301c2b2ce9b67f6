"""Alarms, the quota and defragment (issue 7): the NOSPACE round trip on three
members (fill a small quota, alarm, writes refused, compact, defragment,
disarm, writes again), the capped applier's list of what still works, a
CORRUPT alarm raised by the periodic HashKV check when one member's store is
altered behind its back, Status listing the alarms, and defragment giving
pages back to the file system."""
import os
import sqlite3

from cluster import poll

BIG = 100 * 1024          # bytes per value: a few dozen puts fill the small quota
QUOTA = 4 * 1024 * 1024   # --quota-backend-bytes of these tests


def alarm_req(wire, action, member_id=0, alarm=0):
    return wire.pb.Request(alarm=wire.pb.AlarmRequest(action=action, member_id=member_id, alarm=alarm))


def alarms(wire, m):
    r = m.call(alarm_req(wire, wire.pb.AlarmRequest.GET))
    assert not wire.is_error(r), r
    return sorted((a.member_id, a.alarm) for a in r.alarm.alarms)


def code_of(wire, r):
    return wire.error_name(r.error.code) if wire.is_error(r) else None


def status_errors(wire, m):
    st = m.call(wire.pb.Request(status=wire.pb.StatusRequest()))
    assert not wire.is_error(st), st
    return list(st.status.errors), st.status


def grant(wire, m, ttl=60):
    return m.call(wire.pb.Request(lease_grant=wire.pb.LeaseGrantRequest(ttl=ttl)))


def defragment(wire, m):
    r = m.call(wire.pb.Request(defragment=wire.pb.DefragmentRequest()), timeout=60)
    assert not wire.is_error(r), r
    return r.defragment


# ---------------------------------------------------------------- NOSPACE

def test_nospace_round_trip_on_three_members(env, wire):
    c = env.cluster(3, extra=["--quota-backend-bytes=%d" % QUOTA])
    lead = c.leader()
    value = os.urandom(BIG)
    refused = None
    with lead.client(timeout=10) as cl:
        for i in range(4 * QUOTA // BIG):  # bounded: the quota is passed well before
            r = cl.put(b"big", value)
            if wire.is_error(r):
                refused = r
                break
    assert refused is not None, "the quota was never reached"
    assert code_of(wire, refused) == "NO_SPACE", refused
    assert "quota-backend-bytes" in refused.error.message, refused.error.message
    # the alarm is raised for the member that refused, cluster-wide
    for m in c:
        poll(lambda: alarms(wire, m) == [(lead.member_id(), wire.pb.NOSPACE)], 20, "NOSPACE on " + m.name)
        errs, _ = status_errors(wire, m)
        assert any(e.startswith("NOSPACE alarm on member %016x" % lead.member_id()) for e in errs), errs
    # every member refuses what adds data, and accepts what frees it
    for m in c:
        with m.client() as cl:
            r = cl.put(b"small", b"v")
            assert code_of(wire, r) == "NO_SPACE" and "NOSPACE alarm" in r.error.message, r
            r = cl.txn(success=[wire.op_range(b"x")], failure=[wire.op_put(b"x", b"1")])
            assert code_of(wire, r) == "NO_SPACE", r
            assert not wire.is_error(cl.get(b"big"))
            assert not wire.is_error(cl.txn(success=[wire.op_range(b"big")]))
        assert code_of(wire, grant(wire, m)) == "NO_SPACE"
    with lead.client() as cl:
        assert not wire.is_error(cl.delete(b"nothing-there"))
        rev = cl.status().header.revision
        assert not wire.is_error(cl.compact(rev, physical=True))
    for m in c:
        # the compaction's rows go in steps after its reply (daemon.md, Known gaps): wait for the free pages
        poll(lambda: status_errors(wire, m)[1].db_size_in_use < QUOTA // 2, 20, "compaction on " + m.name)
        d = defragment(wire, m)
        assert d.db_size_after < d.db_size_before and d.db_size_after < QUOTA, (m.name, d)
        _, st = status_errors(wire, m)
        assert st.db_size < QUOTA, (m.name, st)
    r = c[1].call(alarm_req(wire, wire.pb.AlarmRequest.DEACTIVATE))  # member 0, NONE: every alarm
    assert not wire.is_error(r), r
    for m in c:
        poll(lambda: alarms(wire, m) == [], 20, "no alarm on " + m.name)
        assert not any("alarm" in e for e in status_errors(wire, m)[0])
    with c[2].client() as cl:
        assert not wire.is_error(cl.put(b"small", b"v"))
    assert not wire.is_error(grant(wire, c[0]))


def test_alarms_by_hand_and_the_capped_applier(member, wire):
    me = member.member_id()
    assert alarms(wire, member) == []
    bad = member.call(alarm_req(wire, wire.pb.AlarmRequest.ACTIVATE, 0, wire.pb.NOSPACE))
    assert code_of(wire, bad) == "INVALID_ARGUMENT", bad
    bad = member.call(alarm_req(wire, wire.pb.AlarmRequest.ACTIVATE, me, wire.pb.NONE))
    assert code_of(wire, bad) == "INVALID_ARGUMENT", bad
    with member.client() as cl:
        assert not wire.is_error(cl.put(b"k", b"v"))
    lease = grant(wire, member)
    assert not wire.is_error(lease)
    r = member.call(alarm_req(wire, wire.pb.AlarmRequest.ACTIVATE, me, wire.pb.NOSPACE))
    assert not wire.is_error(r) and [(a.member_id, a.alarm) for a in r.alarm.alarms] == [(me, wire.pb.NOSPACE)], r
    again = member.call(alarm_req(wire, wire.pb.AlarmRequest.ACTIVATE, me, wire.pb.NOSPACE))
    assert not wire.is_error(again), again  # already raised: no change, no error
    assert alarms(wire, member) == [(me, wire.pb.NOSPACE)]
    with member.client() as cl:
        assert code_of(wire, cl.put(b"k", b"w")) == "NO_SPACE"
        nested = wire.pb.RequestOp(request_txn=wire.pb.TxnRequest(failure=[wire.op_put(b"n", b"1")]))
        assert code_of(wire, cl.txn(success=[nested])) == "NO_SPACE"  # a put in any branch, at any depth
        assert not wire.is_error(cl.txn(success=[wire.op_delete(b"k")]))
        assert not wire.is_error(cl.get(b"k"))
    assert code_of(wire, grant(wire, member)) == "NO_SPACE"
    rv = member.call(wire.pb.Request(lease_revoke=wire.pb.LeaseRevokeRequest(id=lease.lease_grant.id)))
    assert not wire.is_error(rv), rv
    # another alarm type on a member that is not in the cluster: listed, then disarmed by type
    other = 0x1234
    assert not wire.is_error(member.call(alarm_req(wire, wire.pb.AlarmRequest.ACTIVATE, other, wire.pb.CORRUPT)))
    assert alarms(wire, member) == sorted([(me, wire.pb.NOSPACE), (other, wire.pb.CORRUPT)])
    with member.client() as cl:
        r = cl.delete(b"k")
        assert code_of(wire, r) == "CORRUPT" and "%016x" % other in r.error.message, r
    errs, _ = status_errors(wire, member)
    assert sum("alarm on member" in e for e in errs) == 2, errs
    assert not wire.is_error(member.call(alarm_req(wire, wire.pb.AlarmRequest.DEACTIVATE, 0, wire.pb.CORRUPT)))
    assert alarms(wire, member) == [(me, wire.pb.NOSPACE)]
    assert not wire.is_error(member.call(alarm_req(wire, wire.pb.AlarmRequest.DEACTIVATE, me, 0)))
    assert alarms(wire, member) == []
    with member.client() as cl:
        assert not wire.is_error(cl.put(b"k", b"again"))
    # the alarm set survives a restart (it is a record in the store)
    assert not wire.is_error(member.call(alarm_req(wire, wire.pb.AlarmRequest.ACTIVATE, me, wire.pb.NOSPACE)))
    member.restart()
    assert alarms(wire, member) == [(me, wire.pb.NOSPACE)]
    with member.client() as cl:
        assert code_of(wire, cl.put(b"k", b"w")) == "NO_SPACE"


# ---------------------------------------------------------------- CORRUPT

def alter_store(m, key):
    """Change the newest stored value of key in m's SQLite store (m is stopped)."""
    found = []
    for root, _dirs, files in os.walk(m.data_dir):
        for f in files:
            if f.endswith((".db", ".sqlite")) or f == "store":
                found.append(os.path.join(root, f))
    paths = [p for p in found if open(p, "rb").read(16) == b"SQLite format 3\x00"]
    assert len(paths) == 1, found
    db = sqlite3.connect(paths[0])
    try:
        n = db.execute("UPDATE rev SET value = ?1 WHERE key = ?2 AND main = (SELECT max(main) FROM rev WHERE key = ?2)",
                       (b"tampered", key)).rowcount
        db.commit()
    finally:
        db.close()
    assert n == 1, "no row for %r in %s" % (key, paths[0])


def test_corrupt_alarm_when_a_store_is_altered_behind_its_back(env, wire):
    c = env.cluster(3, extra=["--corrupt-check-time=300ms"])
    lead = c.leader()
    with lead.client() as cl:
        for i in range(20):
            assert not wire.is_error(cl.put(b"c/%02d" % i, b"value %d" % i))
    victim = next(m for m in c if m is not lead)
    vid = victim.member_id()
    victim.wait_applied(lead.applied_index())
    assert victim.terminate() == 0
    alter_store(victim, b"c/07")
    victim.restart()
    for m in c:
        poll(lambda: (vid, wire.pb.CORRUPT) in alarms(wire, m), 60, "CORRUPT on %016x seen by %s" % (vid, m.name))
    assert alarms(wire, lead) == [(vid, wire.pb.CORRUPT)], "only the altered member is accused"
    for m in c:
        errs, _ = status_errors(wire, m)
        assert any(e.startswith("CORRUPT alarm on member %016x" % vid) for e in errs), errs
        with m.client() as cl:
            r = cl.put(b"c/new", b"x")
            assert code_of(wire, r) == "CORRUPT" and "%016x" % vid in r.error.message, r
            assert code_of(wire, cl.delete(b"c/00")) == "CORRUPT"
            assert not wire.is_error(cl.get(b"c/00"))
    assert any("%016x's store differs from the majority's" % vid in m.log_text() for m in c)
    # disarming without repairing the member: the next checks raise it again
    assert not wire.is_error(lead.call(alarm_req(wire, wire.pb.AlarmRequest.DEACTIVATE, vid, wire.pb.CORRUPT)))
    poll(lambda: (vid, wire.pb.CORRUPT) in alarms(wire, lead), 60, "CORRUPT raised again")


# ---------------------------------------------------------------- defragment

def store_file_size(m):
    total = 0
    for root, _dirs, files in os.walk(m.data_dir):
        for f in files:
            p = os.path.join(root, f)
            with open(p, "rb") as fh:
                if fh.read(16) == b"SQLite format 3\x00":
                    total += os.path.getsize(p)
    return total


def test_defragment_gives_the_free_pages_back(member, wire):
    value = os.urandom(BIG)
    with member.client(timeout=10) as cl:
        for i in range(60):
            assert not wire.is_error(cl.put(b"d/%02d" % i, value))
        assert not wire.is_error(cl.delete(b"d/", wire.prefix_end(b"d/")))
        rev = cl.status().header.revision
        assert not wire.is_error(cl.compact(rev, physical=True))
    # the pages are free but still in the file
    st = poll(lambda: (lambda s: s if s.db_size_in_use < s.db_size // 2 else None)(status_errors(wire, member)[1]),
              20, "compaction to free pages")
    d = defragment(wire, member)
    assert d.db_size_before >= st.db_size - BIG and d.db_size_after < d.db_size_before // 2, d
    assert d.pause_ms >= 0
    _, st2 = status_errors(wire, member)
    assert st2.db_size == d.db_size_after and st2.db_size - st2.db_size_in_use < BIG, st2
    # The file ends at the store's new size once a checkpoint gets through
    # the WAL.  Its size before says little: the freed pages may never have
    # left the WAL (under ASan the file was 24 KiB before the defragment,
    # with 13 MB in mvcc.db-wal), so this compares with the size after.
    poll(lambda: store_file_size(member) <= d.db_size_after, 20, "the store file to shrink to the store's size")
    with member.client() as cl:
        assert not wire.is_error(cl.put(b"after", b"defrag"))
        assert cl.get(b"after").range.kvs[0].value == b"defrag"
    again = defragment(wire, member)  # nothing left to give back: answers at once
    assert again.db_size_after <= again.db_size_before
