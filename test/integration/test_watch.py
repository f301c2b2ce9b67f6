"""Watches on real members through cairnwire: create, long-poll Next,
cancel; filters, key ranges and prev_kv; a start revision in the past
caught up from the store then live; a large revision whole or in fragments;
compacted start revisions; idle watches dropped; the per-connection and
parked-poll bounds; and the exactness checks: a watch from an old revision
held across a leader kill, and one resumed on another member from its
progress revision, each deliver exactly what History holds, no gap, no
repeat.  Then libcairn's resuming watches under a member kill (cairn-load
watch)."""
import subprocess
import threading
import time

import cluster

EV_PUT, EV_DELETE = 0, 1


# ---------------------------------------------------------------- helpers

def create(wire, c, key, range_end=b"", **kw):
    r = wire.check(c.call(wire.pb.Request(watch_create=wire.pb.WatchCreateRequest(
        key=wire._b(key), range_end=wire._b(range_end), **kw))), "watch_create")
    return r.watch_create


def watch_id(wire, c, key, range_end=b"", **kw):
    wc = create(wire, c, key, range_end, **kw)
    assert not wc.canceled and wc.watch_id != 0, wc
    return wc.watch_id


def next_req(wire, wid, timeout_ms=1000, max_bytes=0):
    return wire.pb.Request(watch_next=wire.pb.WatchNextRequest(watch_id=wid, timeout_ms=timeout_ms,
                                                               max_bytes=max_bytes))


def poll(wire, c, wid, timeout_ms=1000, max_bytes=0):
    """One WatchNext reply body (the wire client waits longer than the poll)."""
    return wire.check(c.call(next_req(wire, wid, timeout_ms, max_bytes), timeout=timeout_ms / 1000 + 10),
                      "watch_next").watch_next


def ev(e):
    """An event as (revision, type, key, value, create_revision, version, lease)."""
    return (e.kv.mod_revision, e.type, e.kv.key, e.kv.value, e.kv.create_revision, e.kv.version, e.kv.lease)


def drain(wire, c, wid, until_rev, deadline_s=60, max_bytes=0):
    """Every event until progress_revision reaches until_rev; also checks the
    progress revision never goes back and never passes an event."""
    out, progress = [], 0
    end = time.monotonic() + deadline_s
    while progress < until_rev:
        assert time.monotonic() < end, "watch %d reached only revision %d of %d" % (wid, progress, until_rev)
        n = poll(wire, c, wid, 500, max_bytes)
        assert not n.canceled, n
        assert n.progress_revision >= progress
        for e in n.events:
            assert e.kv.mod_revision > progress, "event %d at or below an earlier progress %d" % (
                e.kv.mod_revision, progress)
        out += [ev(e) for e in n.events]
        progress = n.progress_revision
    return out


def history(wire, c, key, range_end=b"", min_revision=0, max_revision=0):
    """History as events: every stored revision of the range, in order."""
    out, after, sub = [], 0, 0
    while True:
        h = wire.check(c.history(key, range_end, min_revision=min_revision, max_revision=max_revision,
                                 after_revision=after, after_sub=sub, limit=500), "history").history
        for r in h.records:
            if r.tombstone:
                out.append((r.kv.mod_revision, EV_DELETE, r.kv.key, b"", 0, 0, 0))
            else:
                out.append((r.kv.mod_revision, EV_PUT, r.kv.key, r.kv.value, r.kv.create_revision, r.kv.version,
                            r.kv.lease))
        if not h.more:
            return out
        after, sub = h.next_revision, h.next_sub


def assert_same_events(got, want):
    assert len(got) == len(want), "%d events delivered, the store holds %d" % (len(got), len(want))
    for i, (g, w) in enumerate(zip(got, want)):
        assert g == w, "event %d: delivered %r, the store holds %r" % (i, g, w)


def revs_strictly_increasing(events):
    revs = [e[0] for e in events]
    return all(a < b for a, b in zip(revs, revs[1:]))


def put_rev(wire, c, key, value):
    return wire.check(c.put(key, value), "put").header.revision


# ---------------------------------------------------------------- basics

def test_create_next_cancel(member, wire):
    with member.client(timeout=20) as c:
        base = put_rev(wire, c, "k/0", "before")
        wc = create(wire, c, "k/", wire.prefix_end("k/"))
        assert wc.watch_id != 0 and not wc.canceled
        r1 = put_rev(wire, c, "k/1", "one")
        r2 = put_rev(wire, c, "k/1", "two")
        d = wire.check(c.delete("k/1"), "delete_range").header.revision
        put_rev(wire, c, "other", "x")  # outside the range
        n = poll(wire, c, wc.watch_id)
        assert [ev(e)[:4] for e in n.events] == [(r1, EV_PUT, b"k/1", b"one"), (r2, EV_PUT, b"k/1", b"two"),
                                                  (d, EV_DELETE, b"k/1", b"")], n
        assert n.events[1].kv.version == 2 and n.events[1].kv.create_revision == r1
        assert not n.events[0].HasField("prev_kv"), "prev_kv only when asked"
        assert n.watch_id == wc.watch_id and not n.fragment and n.progress_revision >= d
        assert all(e.kv.mod_revision > base for e in n.events), "a watch from now starts after the create"

        # nothing new: an empty reply after the timeout, with the member's progress
        last = put_rev(wire, c, "other", "y")
        n = poll(wire, c, wc.watch_id, timeout_ms=300)
        assert len(n.events) == 0 and n.progress_revision >= last
        # a poll that waits past --slow-request-threshold (300 ms) waited on purpose: not a slow request
        n = poll(wire, c, wc.watch_id, timeout_ms=700)
        assert len(n.events) == 0
        assert "slow request: watch_next" not in member.log_text(), member.log_tail()

        wire.check(c.call(wire.pb.Request(watch_cancel=wire.pb.WatchCancelRequest(watch_id=wc.watch_id))),
                   "watch_cancel")
        r = c.call(next_req(wire, wc.watch_id))
        assert wire.is_error(r) and wire.error_name(r.error.code) == "WATCH_NOT_FOUND", r
        r = c.call(wire.pb.Request(watch_cancel=wire.pb.WatchCancelRequest(watch_id=wc.watch_id)))
        assert wire.is_error(r) and wire.error_name(r.error.code) == "WATCH_NOT_FOUND", r


def two_polls(wire, c, wid, progress):
    """Send two polls of wid; the one the member took first is ended empty by the
    other.  Returns the request ID of the one left parked."""
    ids = {c.send(next_req(wire, wid, timeout_ms=20000)), c.send(next_req(wire, wid, timeout_ms=20000))}
    got, r = c.recv(None, timeout=10)
    n = wire.check(r, "watch_next").watch_next
    assert len(n.events) == 0 and n.progress_revision >= progress
    return (ids - {got}).pop()


def test_parked_poll_answers_when_the_event_comes(member, wire):
    with member.client(timeout=30) as c, member.client() as writer:
        wid = watch_id(wire, c, "p")
        rid = c.send(next_req(wire, wid, timeout_ms=15000))
        rev = put_rev(wire, writer, "p", "v")
        n = wire.check(c.recv(rid, timeout=20)[1], "watch_next").watch_next
        assert [ev(e)[:4] for e in n.events] == [(rev, EV_PUT, b"p", b"v")], "the poll ended without the event"

        # a second poll of the same watch ends the first one empty; the event goes to the second
        # (the member may take the two in either order: the one answered at once is the older)
        new = two_polls(wire, c, wid, rev)
        rev2 = put_rev(wire, writer, "p", "w")
        n_new = wire.check(c.recv(new, timeout=20)[1], "watch_next").watch_next
        assert [e.kv.mod_revision for e in n_new.events] == [rev2]

        # WatchProgress answers the parked polls of this connection now
        rid = two_polls(wire, c, wid, rev2)
        wire.check(c.call(wire.pb.Request(watch_progress=wire.pb.WatchProgressRequest())), "watch_progress")
        n = wire.check(c.recv(rid, timeout=5)[1], "watch_next").watch_next
        assert len(n.events) == 0 and n.progress_revision >= rev2


def test_filters_ranges_and_prev_kv(member, wire):
    with member.client(timeout=20) as c:
        noput = watch_id(wire, c, "f/", wire.prefix_end("f/"), filters=[wire.pb.WatchCreateRequest.NOPUT])
        nodel = watch_id(wire, c, "f/", wire.prefix_end("f/"), filters=[wire.pb.WatchCreateRequest.NODELETE])
        prev = watch_id(wire, c, "f/", wire.prefix_end("f/"), prev_kv=True)
        single = watch_id(wire, c, "f/b")
        from_key = watch_id(wire, c, "f/c", b"\x00")
        a1 = put_rev(wire, c, "f/a", "1")
        b1 = put_rev(wire, c, "f/b", "1")
        a2 = put_rev(wire, c, "f/a", "2")
        c1 = put_rev(wire, c, "f/c", "1")
        z1 = put_rev(wire, c, "zz", "1")
        da = wire.check(c.delete("f/a"), "delete_range").header.revision
        last = wire.check(c.delete("f/", wire.prefix_end("f/")), "delete_range").header.revision  # f/b, f/c

        def revs_types(wid):
            return [(e[0], e[1], e[2]) for e in drain(wire, c, wid, last)]
        assert revs_types(noput) == [(da, EV_DELETE, b"f/a"), (last, EV_DELETE, b"f/b"), (last, EV_DELETE, b"f/c")]
        assert revs_types(nodel) == [(a1, EV_PUT, b"f/a"), (b1, EV_PUT, b"f/b"), (a2, EV_PUT, b"f/a"),
                                     (c1, EV_PUT, b"f/c")]
        assert revs_types(single) == [(b1, EV_PUT, b"f/b"), (last, EV_DELETE, b"f/b")]
        assert revs_types(from_key) == [(c1, EV_PUT, b"f/c"), (z1, EV_PUT, b"zz"), (last, EV_DELETE, b"f/c")]

        got = []
        while not got or got[-1].kv.mod_revision < last:
            got += list(poll(wire, c, prev).events)
        prevs = [(e.kv.key, e.prev_kv.value if e.HasField("prev_kv") else None) for e in got]
        assert prevs == [(b"f/a", None), (b"f/b", None), (b"f/a", b"1"), (b"f/c", None), (b"f/a", b"2"),
                         (b"f/b", b"1"), (b"f/c", b"1")]
        assert got[2].prev_kv.mod_revision == a1 and got[4].prev_kv.mod_revision == a2


def test_past_start_catches_up_from_the_store_then_goes_live(member, wire):
    with member.client(timeout=20) as c:
        first = put_rev(wire, c, "h/0", "x" * 100)
        for i in range(1, 400):
            wire.check(c.put("h/%d" % (i % 37), "v%d" % i + "x" * 100), "put")
            if i % 50 == 0:
                wire.check(c.delete("h/%d" % (i % 7)), "delete_range")
        mid = put_rev(wire, c, "h/x", "mid")
        # a small reply limit: the catch-up is read and sent in many pieces
        wid = watch_id(wire, c, "h/", wire.prefix_end("h/"), start_revision=first + 1)
        got = drain(wire, c, wid, mid, max_bytes=2048)
        assert_same_events(got, history(wire, c, "h/", wire.prefix_end("h/"), min_revision=first + 1))
        # then live, without a gap
        live = [put_rev(wire, c, "h/live%d" % i, "l") for i in range(20)]
        more = drain(wire, c, wid, live[-1])
        assert [e[0] for e in more] == live


def test_prev_kv_read_from_the_store(member, wire):
    with member.client(timeout=20) as c:
        r1 = put_rev(wire, c, "pv", "1")
        put_rev(wire, c, "pv", "2")
        wire.check(c.delete("pv"), "delete_range")
        last = put_rev(wire, c, "pv", "3")
        wid = watch_id(wire, c, "pv", start_revision=r1, prev_kv=True)
        got = []
        while not got or got[-1].kv.mod_revision < last:
            got += list(poll(wire, c, wid).events)
        assert [(e.type, e.kv.value, e.prev_kv.value if e.HasField("prev_kv") else None) for e in got] == [
            (EV_PUT, b"1", None), (EV_PUT, b"2", b"1"), (EV_DELETE, b"", b"2"), (EV_PUT, b"3", None)]
        assert got[2].prev_kv.mod_revision == r1 + 1 and got[2].prev_kv.version == 2


def test_prev_kv_is_exact_for_watchers_that_come_and_go_while_writes_flow(member, wire):
    # With no watcher live a member applies puts and deletes without reading
    # the old values (nobody would see them).  Watchers created and canceled
    # while one key is written again and again (every fifth write a delete)
    # must still get every old value: a batch applied without them just
    # before a watcher went live is read from the store.
    total = 1500
    done = threading.Event()
    ops = {}  # revision -> the value put there, or None for a delete

    def writer():
        with member.client(timeout=20) as w:
            for i in range(total):
                if i % 5 == 4:
                    ops[wire.check(w.delete("flow"), "delete_range").header.revision] = None
                else:
                    ops[put_rev(wire, w, "flow", "v%d" % i)] = b"v%d" % i
        done.set()

    t = threading.Thread(target=writer)
    t.start()
    got = []
    try:
        with member.client(timeout=20) as c:
            rounds = 0
            while not done.is_set() and rounds < 40:
                rounds += 1
                wid = watch_id(wire, c, "flow", prev_kv=True)
                for _ in range(3):
                    got += list(poll(wire, c, wid, 200).events)
                wire.check(c.call(wire.pb.Request(watch_cancel=wire.pb.WatchCancelRequest(watch_id=wid))),
                           "watch_cancel")
                time.sleep(0.02)  # a moment with no watcher
    finally:
        t.join()
    assert len(ops) == total and rounds >= 2 and got
    first = min(ops)
    for e in got:
        rev = e.kv.mod_revision
        assert (e.type == EV_DELETE) == (ops[rev] is None), e
        before = ops.get(rev - 1) if rev > first else None
        if before is None:
            assert not e.HasField("prev_kv"), e
        else:
            assert e.HasField("prev_kv") and e.prev_kv.mod_revision == rev - 1, e
            assert e.prev_kv.value == before, (rev, e.prev_kv.value, before)


def test_large_revision_whole_or_in_fragments(member, wire):
    with member.client(timeout=30) as c:
        before = put_rev(wire, c, "t/start", "s")
        whole = watch_id(wire, c, "t/", wire.prefix_end("t/"))
        frag = watch_id(wire, c, "t/", wire.prefix_end("t/"), fragment=True)
        txn = wire.check(c.txn(success=[wire.op_put("t/%03d" % i, "v" * 1000) for i in range(100)]), "txn")
        rev = txn.header.revision
        after = put_rev(wire, c, "t/after", "a")

        n = poll(wire, c, whole, max_bytes=4096)
        assert len(n.events) == 100 and not n.fragment, "without fragment a revision comes whole, over the limit"
        assert {e.kv.mod_revision for e in n.events} == {rev}

        parts, evs = 0, []
        while True:
            n = poll(wire, c, frag, max_bytes=4096)
            evs += [ev(e) for e in n.events]
            parts += 1
            if not n.fragment:
                break
            assert n.progress_revision == rev - 1, "a revision sent in part is not yet progress"
        assert parts >= 20, "100 KB in 4 KB replies"
        assert [e[2] for e in evs if e[0] == rev] == [b"t/%03d" % i for i in range(100)]

        # the same from the store: a watch starting in the past
        hist = history(wire, c, "t/", wire.prefix_end("t/"), min_revision=before + 1)
        for fragment in (False, True):
            wid = watch_id(wire, c, "t/", wire.prefix_end("t/"), start_revision=before + 1, fragment=fragment)
            got, splits = [], 0
            while not got or got[-1][0] < after:
                n = poll(wire, c, wid, max_bytes=4096)
                got += [ev(e) for e in n.events]
                splits += n.fragment
            assert_same_events(got, hist)
            assert (splits > 0) == fragment


def test_compacted_start_revision_cancels(member, wire):
    with member.client(timeout=20) as c:
        old = put_rev(wire, c, "c", "1")
        put_rev(wire, c, "c", "2")
        comp = put_rev(wire, c, "c", "3")
        wire.check(c.compact(comp), "compact")
        for start in (old, comp):
            wc = create(wire, c, "c", start_revision=start)
            assert wc.canceled and wc.watch_id == 0
            assert wc.compact_revision == comp + 1, "the first revision a watch can deliver exactly"
            assert "compacted" in wc.cancel_reason
        later = put_rev(wire, c, "c", "4")
        wid = watch_id(wire, c, "c", start_revision=comp + 1)
        assert [e[0] for e in drain(wire, c, wid, later)] == [later]


def test_watch_behind_a_compaction_is_canceled_after_what_it_had(member, wire):
    with member.client(timeout=30) as c:
        first = put_rev(wire, c, "b/0", "v")
        for i in range(1, 300):  # 300 x 8 KB: more than one watcher queue (1 MiB)
            last = put_rev(wire, c, "b/%d" % i, "v" * 8000)
        wid = watch_id(wire, c, "b/", wire.prefix_end("b/"), start_revision=first)
        n = poll(wire, c, wid, max_bytes=256)
        got = [ev(e) for e in n.events]
        assert got and got[0][0] == first
        wire.check(c.compact(last), "compact")
        while True:
            n = poll(wire, c, wid, max_bytes=256 << 10)
            if n.canceled:
                break
            got += [ev(e) for e in n.events]
        assert n.compact_revision == last + 1 and "compacted" in n.cancel_reason, n
        assert 1 < len(got) < 300 and revs_strictly_increasing(got)
        assert [e[0] for e in got] == list(range(first, first + len(got))), "what it had came whole, in order"
        r = c.call(next_req(wire, wid))
        assert wire.error_name(r.error.code) == "WATCH_NOT_FOUND", "a canceled watch is gone"


# ---------------------------------------------------------------- bounds

def test_idle_watch_is_dropped_and_a_polled_one_is_not(env, wire):
    m = env.cluster(1, extra=["--watch-idle-timeout=1s"])[0]
    with m.client(timeout=20) as c:
        idle = watch_id(wire, c, "i")
        kept = watch_id(wire, c, "j")
        pattern = "watch %d of" % idle
        end = time.monotonic() + 30
        while pattern not in m.log_text():  # keep `kept` polled meanwhile
            assert time.monotonic() < end, "watch %d was not dropped" % idle
            poll(wire, c, kept, timeout_ms=300)
        r = c.call(next_req(wire, idle))
        assert wire.error_name(r.error.code) == "WATCH_NOT_FOUND" and "--watch-idle-timeout" in r.error.message
        rev = put_rev(wire, c, "j", "v")
        assert [e[0] for e in drain(wire, c, kept, rev)] == [rev]
        assert "watch %d of" % kept not in m.log_text()


def test_watchers_per_connection_are_bounded(env, wire):
    m = env.cluster(1, extra=["--max-watchers-per-connection=3"])[0]
    with m.client() as c, m.client() as other:
        ids = [watch_id(wire, c, "k%d" % i) for i in range(3)]
        r = c.call(wire.pb.Request(watch_create=wire.pb.WatchCreateRequest(key=b"k9")))
        assert wire.error_name(r.error.code) == "TOO_MANY_WATCHERS" and "per-connection" in r.error.message
        watch_id(wire, other, "k9")  # another connection has its own count
        wire.check(c.call(wire.pb.Request(watch_cancel=wire.pb.WatchCancelRequest(watch_id=ids[0]))))
        watch_id(wire, c, "k9")


def test_parked_polls_are_bounded_below_the_request_contexts(member, wire):
    with member.client(timeout=30) as c, member.client() as writer:
        ids = [watch_id(wire, c, "q") for _ in range(193)]
        rids = {c.send(next_req(wire, w, timeout_ms=20000)) for w in ids}
        # whichever the member took last is refused at once; the other 192 stay parked
        got, r = c.recv(None, timeout=10)
        assert wire.error_name(r.error.code) == "TOO_MANY_REQUESTS" and "parks" in r.error.message, r
        rids.discard(got)
        # the member still serves everything else meanwhile
        rev = put_rev(wire, writer, "q", "v")
        for rid in rids:
            n = wire.check(c.recv(rid, timeout=20)[1], "watch_next").watch_next
            assert [e.kv.mod_revision for e in n.events] == [rev]


def test_stopping_member_ends_parked_polls_with_stopped(member, wire):
    """Also a clean exit with watches in every state (under ASan: nothing leaks)."""
    with member.client(timeout=30) as c:
        first = put_rev(wire, c, "s/0", "v")
        for i in range(1, 200):
            put_rev(wire, c, "s/%d" % i, "v" * 8000)
        behind = watch_id(wire, c, "s/", wire.prefix_end("s/"), start_revision=first)  # catching up, never polled
        poll(wire, c, watch_id(wire, c, "s/", wire.prefix_end("s/"), start_revision=first), max_bytes=256)
        watch_id(wire, c, "s/", wire.prefix_end("s/"), prev_kv=True)  # synced
        assert behind
        wid = watch_id(wire, c, "s")
        rid = two_polls(wire, c, wid, 0)  # once one ended the other, that one is parked
        member.proc.send_signal(15)
        r = c.recv(rid, timeout=10)[1]
        assert wire.error_name(r.error.code) == "STOPPED" and "resume the watch" in r.error.message, r
        assert member.proc.wait(timeout=15) == 0


# ---------------------------------------------------------------- exactness across failures

def test_watch_from_old_revision_across_leader_kill_is_exactly_the_history(env, wire):
    cl = env.cluster(3)
    lead = cl.leader()
    follower = [m for m in cl if m is not lead][0]
    with follower.client(timeout=30) as c:
        start = put_rev(wire, c, "x/0", "seed")
        for i in range(1, 200):
            wire.check(c.put("x/%d" % (i % 50), "old%d" % i), "put")
        # the watch starts in the past, on a member that stays up, and is polled all along
        wid = watch_id(wire, c, "x/", wire.prefix_end("x/"), start_revision=start)
        ack = str(env.tmp_path / "ack.log")
        load = env.load.start_put(cl, total=10000, inflight=16, key_prefix="x/l", key_space=300, ack_log=ack)
        got, progress, killed, mid_run = [], 0, False, False
        end = time.monotonic() + 240
        while load.proc.poll() is None or not killed:
            assert time.monotonic() < end, "the load did not finish"
            n = poll(wire, c, wid, 300)
            assert not n.canceled
            got += [ev(e) for e in n.events]
            progress = n.progress_revision
            if not killed and cluster.acked_count(ack) > 1500:
                mid_run = load.proc.poll() is None
                lead.kill()
                killed = True
                cl.leader(exclude=[lead], members=[m for m in cl if m is not lead])
                lead.restart()
        final = put_rev(wire, c, "x/end", "end")
        got += drain(wire, c, wid, final)
        assert killed and mid_run, "the leader was killed after the load"
        assert_same_events(got, history(wire, c, "x/", wire.prefix_end("x/"), min_revision=start))
        assert progress <= final


def test_synced_watch_across_a_snapshot_install(env, wire):
    """A follower that fell behind the leader's log gets the store as a snapshot:
    its watchers get the revisions the snapshot jumped over from the store."""
    cl = env.cluster(3, snapshot_count=100, snapshot_catchup_entries=20)
    lead = cl.leader()
    f = [m for m in cl if m is not lead][0]
    with f.client(timeout=30) as c, lead.client(timeout=30) as w:
        start = put_rev(wire, c, "s/0", "0")
        wid = watch_id(wire, c, "s/", wire.prefix_end("s/"), start_revision=start + 1)
        drain(wire, c, wid, start)  # synced and polled
        f.pause()
        try:
            for i in range(400):
                last = put_rev(wire, w, "s/%d" % (i % 40), "v%d" % i)
        finally:
            f.resume()
        got = drain(wire, c, wid, last)
        # (the log line comes a moment after the store is replaced)
        cluster.poll(lambda: "installed a snapshot" in f.log_text(), 10, "the follower installing a snapshot")
        assert_same_events(got, history(wire, c, "s/", wire.prefix_end("s/"), min_revision=start + 1))


def test_resume_on_another_member_from_progress_revision(env, wire):
    cl = env.cluster(3)
    a, b = cl[0], cl[1]
    with a.client(timeout=20) as ca, b.client(timeout=20) as cb:
        start = put_rev(wire, ca, "r/0", "0")
        wid = watch_id(wire, ca, "r/", wire.prefix_end("r/"), start_revision=start, fragment=True)
        txn = wire.check(ca.txn(success=[wire.op_put("r/t%02d" % i, "v" * 1000) for i in range(30)]), "txn")
        revs = [put_rev(wire, ca, "r/%d" % i, str(i)) for i in range(1, 30)]
        # take part of it, ending inside the fragmented revision, then lose member a
        got = []
        while len(got) < 10:
            n = poll(wire, ca, wid, max_bytes=4096)
            got += [ev(e) for e in n.events]
        assert n.fragment and n.progress_revision == txn.header.revision - 1
        progress = n.progress_revision
        a.kill()
        # resume on b from progress + 1, dropping the part of the revision already delivered
        wid_b = watch_id(wire, cb, "r/", wire.prefix_end("r/"), start_revision=progress + 1, fragment=True)
        seen_in_rev = sum(1 for e in got if e[0] == progress + 1)
        more = drain(wire, cb, wid_b, revs[-1], max_bytes=4096)
        assert more[:seen_in_rev] == [e for e in got if e[0] == progress + 1]
        got += more[seen_in_rev:]
        assert_same_events(got, history(wire, cb, "r/", wire.prefix_end("r/"), min_revision=start))


def test_libcairn_watches_resume_across_a_member_kill(env, build_dir):
    """cairn-load watch: 20 watchers through libcairn over three members, one of
    them killed mid-run; every watcher must get every put once, in order."""
    cl = env.cluster(3)
    victim = cl.followers()[0]
    others = [m for m in cl if m is not victim]
    out = str(env.tmp_path / "watch.out")
    with open(out, "w") as f:
        # the writer avoids the victim, so every put is acknowledged; the watchers use all three
        p = env.registry.spawn([build_dir / "cairn-load", "watch", "--endpoints", cl.endpoints(),
                                "--put-endpoints", cl.endpoints(others), "--watchers", 20, "--total", 4000,
                                "--inflight", 8, "--timeout", 180, "--call-timeout", 5000, "--json"],
                               stdout=f, stderr=subprocess.STDOUT)
    cluster.poll(lambda: victim.status() and victim.status().header.revision > 1000 or p.poll() is not None,
                 120, "the load reaching revision 1000")
    victim.kill()
    rc = p.wait(timeout=240)
    text = open(out).read()
    res = cluster.LoadResult(rc, text)
    r = res.report
    assert r is not None, text
    assert r["acked"] == 4000, text
    assert r["resumed"] > 0, "no watch was on the killed member: %s" % text
    assert r["problems"] == 0 and r["events"] == r["expected"] == 20 * 4000 and rc == 0, text


def test_libcairn_shared_poll_keeps_its_watches_together_across_a_member_kill(env, build_dir):
    """cairn-load watch --shared-polls: 20 watchers in one cairn_watch_poll over
    the two followers, the writer on the leader.  The poll keeps all 20 on one
    member; that member is killed mid-run and all 20 move to the other; every
    watcher gets every put once, in order."""
    import prom
    cl = prom.start_with_metrics(env, 3)
    leader = cl.leader()
    followers = [m for m in cl if m is not leader]
    out = str(env.tmp_path / "watch.out")

    def watchers(m):
        return prom.scrape(m).value("etcd_debugging_mvcc_watcher_total")

    with open(out, "w") as f:
        p = env.registry.spawn([build_dir / "cairn-load", "watch", "--endpoints", cl.endpoints(followers),
                                "--put-endpoints", cl.endpoints([leader]), "--watchers", 20, "--total", 4000,
                                "--inflight", 8, "--timeout", 180, "--call-timeout", 5000, "--json",
                                "--shared-polls"], stdout=f, stderr=subprocess.STDOUT)
    cluster.poll(lambda: leader.status() and leader.status().header.revision > 1000 or p.poll() is not None,
                 120, "the load reaching revision 1000")
    counts = [watchers(m) for m in followers]
    assert sorted(counts) == [0, 20], "the poll's watches are not on one member: %s" % counts
    holder, other = followers if counts[0] == 20 else followers[::-1]
    holder.kill()
    rc = p.wait(timeout=240)
    text = open(out).read()
    r = cluster.LoadResult(rc, text).report
    assert r is not None, text
    assert r["acked"] == 4000, text
    assert r["problems"] == 0 and r["events"] == r["expected"] == 20 * 4000 and rc == 0, text
    assert watchers(other) == 20, "the watches did not all move to the other member"
