"""WatchPoll on a real member through cairnwire: one long poll for several
watches.  A reply carries a part for each watch with something to say (all
of one revision's watchers together), every watch at the deadline or on
WatchProgress; missing watches are named at once; the reply's size bound is
shared and a watch left out goes in a later reply; a poll of a watch ends the
poll it was parked in; WatchCancel, catching up from the store, the idle
drop, the parked-poll bound and a member's stop, each with polls of several
watches."""
import time

from test_watch import EV_PUT, ev, put_rev, watch_id

EV = lambda e: ev(e)[:4]  # noqa: E731 (revision, type, key, value)


def poll_req(wire, ids, timeout_ms=1000, max_bytes=0):
    return wire.pb.Request(watch_poll=wire.pb.WatchPollRequest(watch_ids=list(ids), timeout_ms=timeout_ms,
                                                               max_bytes=max_bytes))


def wpoll(wire, c, ids, timeout_ms=1000, max_bytes=0):
    """One WatchPoll reply body."""
    return wire.check(c.call(poll_req(wire, ids, timeout_ms, max_bytes), timeout=timeout_ms / 1000 + 10),
                      "watch_poll").watch_poll


def parts(p):
    """{watch ID: its WatchNextResponse} of one reply (each watch at most once)."""
    out = {}
    for n in p.watches:
        assert n.watch_id not in out, "watch %d twice in one reply" % n.watch_id
        out[n.watch_id] = n
    return out


def error(wire, r, name):
    assert wire.is_error(r) and wire.error_name(r.error.code) == name, r
    return r.error.message


def test_a_reply_carries_each_watch_with_something_to_say(member, wire):
    with member.client(timeout=20) as c:
        a, b, z = (watch_id(wire, c, k, wire.prefix_end(k)) for k in ("a/", "b/", "z/"))
        ra = put_rev(wire, c, "a/1", "x")
        rb = put_rev(wire, c, "b/1", "y")
        got = parts(wpoll(wire, c, [a, b, z]))
        assert set(got) == {a, b}, "only the watches with events: %s" % got
        assert [EV(e) for e in got[a].events] == [(ra, EV_PUT, b"a/1", b"x")]
        assert [EV(e) for e in got[b].events] == [(rb, EV_PUT, b"b/1", b"y")]
        assert got[b].progress_revision >= rb

        # nothing new: at the deadline every watch says its progress
        last = put_rev(wire, c, "other", "v")
        got = parts(wpoll(wire, c, [a, b, z], timeout_ms=300))
        assert set(got) == {a, b, z}
        assert all(len(n.events) == 0 and n.progress_revision >= last for n in got.values()), got
        # waiting past --slow-request-threshold (300 ms) is on purpose
        wpoll(wire, c, [z], timeout_ms=700)
        assert "slow request: watch_poll" not in member.log_text(), member.log_tail()


def test_a_parked_poll_gets_one_revisions_watchers_together(member, wire):
    """A txn writes under three prefixes in one revision: the parked poll's one
    reply carries all three (answered after the batch fed every member)."""
    with member.client(timeout=30) as c, member.client() as writer:
        ids = [watch_id(wire, c, k, wire.prefix_end(k)) for k in ("a/", "b/", "c/", "d/")]
        rid = c.send(poll_req(wire, ids, timeout_ms=15000))
        time.sleep(0.2)  # parked
        ops = [wire.pb.RequestOp(request_put=wire.pb.PutRequest(key=k, value=b"v")) for k in (b"a/1", b"b/1", b"c/1")]
        rev = wire.check(writer.txn(success=ops), "txn").header.revision
        got = parts(wire.check(c.recv(rid, timeout=20)[1], "watch_poll").watch_poll)
        assert set(got) == set(ids[:3]), got
        for wid, key in zip(ids, (b"a/1", b"b/1", b"c/1")):
            assert [EV(e) for e in got[wid].events] == [(rev, EV_PUT, key, b"v")]

        # WatchProgress answers this connection's parked polls now, every watch in them
        rid = c.send(poll_req(wire, ids, timeout_ms=15000))
        time.sleep(0.2)
        wire.check(c.call(wire.pb.Request(watch_progress=wire.pb.WatchProgressRequest())), "watch_progress")
        got = parts(wire.check(c.recv(rid, timeout=5)[1], "watch_poll").watch_poll)
        assert set(got) == set(ids) and all(n.progress_revision >= rev for n in got.values())


def test_missing_duplicate_and_out_of_bounds_ids(member, wire):
    with member.client(timeout=20) as c:
        a = watch_id(wire, c, "a")
        put_rev(wire, c, "a", "v")
        p = wpoll(wire, c, [a, 12345, 777])
        assert sorted(p.missing) == [777, 12345] and len(p.watches) == 0, "answered at once, nothing taken"
        got = parts(wpoll(wire, c, [a]))
        assert [e.kv.key for e in got[a].events] == [b"a"], "a's event was left queued"
        assert "twice" in error(wire, c.call(poll_req(wire, [a, a])), "INVALID_ARGUMENT")
        assert "1 to 4096" in error(wire, c.call(poll_req(wire, [])), "INVALID_ARGUMENT")
        assert "1 to 4096" in error(wire, c.call(poll_req(wire, range(1, 4098))), "INVALID_ARGUMENT")
        wire.check(c.call(wire.pb.Request(watch_cancel=wire.pb.WatchCancelRequest(watch_id=a))), "watch_cancel")
        assert list(wpoll(wire, c, [a]).missing) == [a]


def test_the_size_bound_is_shared_and_every_watch_gets_its_turn(member, wire):
    with member.client(timeout=30) as c:
        ids = [watch_id(wire, c, "big/%d" % i) for i in range(6)]
        revs = {wid: put_rev(wire, c, "big/%d" % i, "v" * 1000) for i, wid in enumerate(ids)}
        seen, replies = {}, 0
        while len(seen) < len(ids):
            replies += 1
            assert replies <= 6, "watches left behind: %s" % (set(ids) - set(seen))
            got = parts(wpoll(wire, c, ids, max_bytes=1500, timeout_ms=300))
            with_events = {w: n for w, n in got.items() if n.events}
            # the first revision goes whatever its size, one more may start below the bound: never three
            assert 1 <= len(with_events) <= 2, got
            for w, n in with_events.items():
                assert w not in seen, "watch %d delivered twice" % w
                seen[w] = [e.kv.mod_revision for e in n.events]
        assert seen == {w: [r] for w, r in revs.items()}


def test_polling_a_watch_ends_the_poll_it_was_parked_in(member, wire):
    with member.client(timeout=30) as c, member.client() as writer:
        a, b = watch_id(wire, c, "a"), watch_id(wire, c, "b")
        old = c.send(poll_req(wire, [a, b], timeout_ms=20000))
        time.sleep(0.2)
        # a WatchNext of a: the WatchPoll ends empty (the client gave up on it), b is free again
        nid = c.send(wire.pb.Request(watch_next=wire.pb.WatchNextRequest(watch_id=a, timeout_ms=20000)))
        p = wire.check(c.recv(old, timeout=10)[1], "watch_poll").watch_poll
        assert len(p.watches) == 0 and len(p.missing) == 0, p
        rb = put_rev(wire, writer, "b", "v")
        assert [EV(e) for e in parts(wpoll(wire, c, [b]))[b].events] == [(rb, EV_PUT, b"b", b"v")]
        # a WatchPoll of a ends a's parked WatchNext the same way, and takes a's events
        poll2 = c.send(poll_req(wire, [a, b], timeout_ms=20000))
        n = wire.check(c.recv(nid, timeout=10)[1], "watch_next").watch_next
        assert len(n.events) == 0
        ra = put_rev(wire, writer, "a", "w")
        got = parts(wire.check(c.recv(poll2, timeout=20)[1], "watch_poll").watch_poll)
        assert [EV(e) for e in got[a].events] == [(ra, EV_PUT, b"a", b"w")] and b not in got


def test_cancel_of_a_polled_watch_is_told_in_its_poll(member, wire):
    with member.client(timeout=30) as c, member.client() as other:
        a, b = watch_id(wire, c, "a"), watch_id(wire, c, "b")
        rid = c.send(poll_req(wire, [a, b], timeout_ms=20000))
        time.sleep(0.2)
        wire.check(other.call(wire.pb.Request(watch_cancel=wire.pb.WatchCancelRequest(watch_id=a))), "watch_cancel")
        got = parts(wire.check(c.recv(rid, timeout=10)[1], "watch_poll").watch_poll)
        assert set(got) == {a} and got[a].canceled and "WatchCancel" in got[a].cancel_reason, got
        assert list(wpoll(wire, c, [a, b], timeout_ms=200).missing) == [a]
        rb = put_rev(wire, other, "b", "v")
        assert [e.kv.mod_revision for e in parts(wpoll(wire, c, [b]))[b].events] == [rb]


def test_a_poll_of_watches_catching_up_from_the_store(member, wire):
    with member.client(timeout=30) as c:
        first = put_rev(wire, c, "h/0", "v")
        last = first
        for i in range(1, 300):
            last = put_rev(wire, c, "h/%d" % (i % 7), "v%d" % i)
        ids = [watch_id(wire, c, "h/", wire.prefix_end("h/"), start_revision=first) for _ in range(3)]
        got = {w: [] for w in ids}
        end = time.monotonic() + 60
        while any(not v or v[-1] < last for v in got.values()):
            assert time.monotonic() < end, {w: v[-1:] for w, v in got.items()}
            for w, n in parts(wpoll(wire, c, ids, max_bytes=4096)).items():
                got[w] += [e.kv.mod_revision for e in n.events]
        assert all(v == list(range(first, last + 1)) for v in got.values()), "a gap or a repeat"


def test_more_watches_in_one_poll_than_polls_a_member_parks(member, wire):
    """300 watches in one parked request: WatchNext could wait on at most 192."""
    with member.client(timeout=30) as c, member.client() as writer:
        ids = [watch_id(wire, c, "m") for _ in range(300)]
        singles = {c.send(wire.pb.Request(watch_next=wire.pb.WatchNextRequest(watch_id=w, timeout_ms=20000)))
                   for w in ids[:191]}
        rid = c.send(poll_req(wire, ids[191:], timeout_ms=20000))  # the 192nd parked request
        time.sleep(0.3)
        extra = watch_id(wire, c, "m")
        r = c.call(poll_req(wire, [extra], timeout_ms=20000))
        assert "parks" in error(wire, r, "TOO_MANY_REQUESTS")
        rev = put_rev(wire, writer, "m", "v")
        got = parts(wire.check(c.recv(rid, timeout=20)[1], "watch_poll").watch_poll)
        assert set(got) == set(ids[191:]) and all([e.kv.mod_revision for e in n.events] == [rev]
                                                   for n in got.values())
        for s in singles:
            assert [e.kv.mod_revision for e in wire.check(c.recv(s, timeout=20)[1], "watch_next").watch_next.events] \
                == [rev]


def test_watches_parked_in_a_poll_are_not_idle(env, wire):
    m = env.cluster(1, extra=["--watch-idle-timeout=1s"])[0]
    with m.client(timeout=20) as c:
        a, b = watch_id(wire, c, "a"), watch_id(wire, c, "b")
        got = parts(wpoll(wire, c, [a, b], timeout_ms=2500))  # longer than the idle timeout
        assert set(got) == {a, b}
        rev = put_rev(wire, c, "b", "v")
        got = parts(wpoll(wire, c, [a, b]))
        assert [e.kv.mod_revision for e in got[b].events] == [rev]
        assert "dropped: not polled" not in m.log_text(), m.log_tail()
        # left alone, they are dropped as any watch
        end = time.monotonic() + 30
        while "watch %d of" % a not in m.log_text():
            assert time.monotonic() < end, "watch %d was not dropped" % a
            time.sleep(0.2)


def test_stopping_member_ends_a_parked_poll_with_stopped(member, wire):
    with member.client(timeout=30) as c:
        ids = [watch_id(wire, c, "s%d" % i) for i in range(3)]
        rid = c.send(poll_req(wire, ids, timeout_ms=20000))
        time.sleep(0.2)
        member.proc.send_signal(15)
        r = c.recv(rid, timeout=10)[1]
        assert "resume the watches" in error(wire, r, "STOPPED")
        assert member.proc.wait(timeout=15) == 0
