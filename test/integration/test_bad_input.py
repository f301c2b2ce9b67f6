"""Bad bytes on a member's ports never harm it.  On the client port: random
bytes instead of a handshake, garbage after a good handshake, absurd frame
lengths, frames too short to carry a request ID (nng hangs up on all of
these); well-framed requests whose protobuf does not decode, or that carry
no body, get an error reply on the same connection.  On the peer port:
the same transport abuse, plus well-formed envelopes from another cluster
or an unknown member, which must be dropped without moving the term.  After
each, the member still serves."""
import random
import socket
import struct
import time
import warnings

import pytest

from cluster import poll


def assert_serving(wire, m, key="alive"):
    """m answers Status, takes a write and reads it back."""
    assert m.running, m.log_tail()
    with m.client() as c:
        wire.check(c.status(), "status")
        r = wire.check(c.put(key, "yes"), "put")
        kv = wire.check(c.get(key), "range").range.kvs[0]
        assert kv.mod_revision == r.header.revision


def rand(n, seed):
    return random.Random(seed).randbytes(n)


HANG_UP_S = 15  # nng gives a handshake 10 s; bad frames are dropped at once


def hung_up(conn):
    return conn.closed_by_peer(timeout=HANG_UP_S)


# ---------------------------------------------------------------- client port: transport

def test_random_bytes_instead_of_a_handshake(member, wire):
    for seed in range(3):
        sock, _ = wire.open_stream(member.client_url)
        with sock:
            sock.sendall(rand(4096, seed))
            assert wire.closed_by_peer(sock, HANG_UP_S)
    assert_serving(wire, member)


def test_a_handshake_for_another_protocol_is_refused(member, wire):
    for proto in (0x31, 0x10, 0x50, 0x7777):  # rep0 to rep0, pair0, push0, nonsense
        with wire.SPConnection(member.client_url, proto, expect_peer=False) as conn:
            assert conn.peer_proto == wire.PROTO_REP0
            assert hung_up(conn), "protocol 0x%x was accepted" % proto
    assert_serving(wire, member)


def test_garbage_after_a_good_handshake(member, wire):
    with wire.Client(member.client_url) as c:
        c.send_bytes(b"\x7f" + rand(8191, 1))  # a length of ~9e18 bytes, then noise
        assert hung_up(c)
    assert_serving(wire, member)


@pytest.mark.parametrize("length", [2 ** 64 - 1, 2 ** 63, 2 ** 40, 64 << 20])
def test_absurd_frame_lengths(member, wire, length):
    with wire.Client(member.client_url) as c:
        c.send_bytes(struct.pack(">QI", length, 0x80000001) + b"\x00" * 64)
        assert hung_up(c)
    assert_serving(wire, member)


def test_frames_too_short_for_a_request_id(member, wire):
    for body in (b"", b"\x80", b"\x80\x00\x01"):
        with wire.Client(member.client_url) as c:
            c.send_frame(body)
            assert hung_up(c), body
    assert_serving(wire, member)


def test_a_connection_closed_mid_frame(member, wire):
    for cut in (3, 8, 12, 20):
        with wire.Client(member.client_url) as c:
            frame = c.frame(struct.pack(">I", 0x80000001) + wire.put_request("half", "x" * 100).SerializeToString())
            c.send_bytes(frame[:cut])
    assert_serving(wire, member)
    with member.client() as c:
        assert wire.check(c.get("half"), "range").range.count == 0, "a half-sent put was applied"


def test_a_client_closing_mid_handshake_on_the_admin_socket(member, wire):
    """A client that hangs up before the SP handshake made nng 1.5.2's ipc
    listener stop handing connections to the server (nanomsg/nng#1518): every
    later ipc request timed out until cairnd's listener guard restarted it,
    5 to 7 s later.  The nng cairnd is built with has that fixed
    (third_party/nng/handshake-failure.patch): the admin socket must answer
    within a second after every round, and the guard must never have had to
    restart it."""
    url = "ipc://" + member.admin_sock

    def served():
        try:
            with wire.Client(url, timeout=1.0) as c:
                return not wire.is_error(c.status())
        except (OSError, wire.WireError):
            return False

    # Hang up at once, before the member's half of the handshake goes out
    # (nng accepts later, on its own thread): its write then fails, the path
    # that wedged.  The race is nng's, so several rounds; before the fix the
    # first round failed in 4 of 4 runs.
    for rnd in range(5):
        for _ in range(3):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(member.admin_sock)
            s.close()
        time.sleep(0.3)
        assert served(), f"round {rnd}: the admin socket stopped answering after clients hung up mid-handshake"
    assert "restarting it" not in member.log_text(), member.log_tail()
    assert_serving(wire, member)


# ---------------------------------------------------------------- client port: messages

UNDECODABLE = [
    b"\xff\xff\xff\xff",                    # field 0x1fffffff..., wire type 7: no such type
    b"\x5a\x10abc",                         # put (field 11), length 16, 3 bytes follow
    b"\x5a\x05\x0a\x10abc",                 # put whose key claims 16 bytes of 3
    b"\x08" + b"\xff" * 11,                 # a varint longer than 10 bytes
    b"\x0b",                                # a start-group that never ends
]


def python_rejects(wire, body):
    """Python's protobuf cannot decode body.  (For the seeded inputs used here
    protobuf-c, which cairnd uses, was checked to agree.)"""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            wire.pb.Request.FromString(body)
        except Exception:  # google.protobuf.message.DecodeError
            return True
    return False


def test_undecodable_requests_get_a_malformed_error(member, wire):
    with member.client() as c:
        for body in UNDECODABLE:
            assert python_rejects(wire, body), body
            r = wire.pb.Response.FromString(c.call_raw(body))
            assert wire.is_error(r) and r.error.code == wire.ERRORS["MALFORMED"], (body, r)
            assert r.error.message
        # every truncation of a real put that does not decode, likewise
        full = wire.put_request("trunc/key", "v" * 40, prev_kv=True).SerializeToString()
        for n in range(1, len(full)):
            if python_rejects(wire, full[:n]):
                r = wire.pb.Response.FromString(c.call_raw(full[:n]))
                assert wire.is_error(r) and r.error.code == wire.ERRORS["MALFORMED"], (n, r)
        # random blobs that do not decode
        rng = random.Random(7)
        sent = 0
        while sent < 100:
            body = rng.randbytes(rng.randrange(1, 300))
            if python_rejects(wire, body):
                r = wire.pb.Response.FromString(c.call_raw(body))
                assert wire.is_error(r), (body, r)
                sent += 1
    assert_serving(wire, member)


def test_a_request_without_a_body_gets_an_error(member, wire):
    with member.client() as c:
        for body in (b"", wire.pb.Request(auth_token="x").SerializeToString()):
            r = wire.pb.Response.FromString(c.call_raw(body))
            assert wire.is_error(r) and r.error.code == wire.ERRORS["INVALID_ARGUMENT"], (body, r)
        # field 127: a request type this version does not know
        r = wire.pb.Response.FromString(c.call_raw(b"\xf8\x07\x01"))
        assert wire.is_error(r) and r.error.code == wire.ERRORS["UNSUPPORTED"], r
    assert_serving(wire, member)


def test_a_request_over_the_size_limit_gets_an_error(member, wire):
    # 2 MiB: above --max-request-bytes (1.5 MiB) but small enough that nng delivers it
    with member.client(timeout=15) as c:
        body = wire.put_request("big", b"x" * (2 << 20)).SerializeToString()
        try:
            r = wire.pb.Response.FromString(c.call_raw(body, timeout=15))
        except wire.Closed:
            r = None  # hanging up on it is also a refusal
        if r is not None:
            assert wire.is_error(r) and r.error.code == wire.ERRORS["REQUEST_TOO_LARGE"], r
    with member.client() as c:
        assert wire.check(c.get("big"), "range").range.count == 0
    assert_serving(wire, member)


def test_bad_and_good_requests_interleaved_on_one_connection(member, wire):
    with member.client() as c:
        ids = []
        for i in range(40):
            if i % 2:
                ids.append((c.send_raw(UNDECODABLE[i % len(UNDECODABLE)]), None))
            else:
                ids.append((c.send(wire.put_request("mix/%02d" % i, "v")), i))
        for rid, i in ids:
            r = c.recv(rid)[1]
            if i is None:
                assert wire.is_error(r) and r.error.code == wire.ERRORS["MALFORMED"], r
            else:
                wire.check(r, "put")
        got = wire.check(c.range("mix/", wire.prefix_end("mix/")), "range")
        assert got.range.count == 20
    assert_serving(wire, member)


# ---------------------------------------------------------------- peer port

def peer_url(m):
    return m.peer_url


def send_frames_as_peer(wire, url, frames):
    """Send each frame on an SP connection to url, connecting again whenever
    the member hangs up on one (it may drop a link that sent garbage)."""
    conn = None
    try:
        for f in frames:
            for attempt in range(2):
                if conn is None:
                    conn = wire.connect_as_peer(url)
                try:
                    conn.send_frame(f)
                    break
                except OSError:
                    conn.close()
                    conn = None
    finally:
        if conn is not None:
            conn.close()


def envelope(wire, cluster_id, frm, to, term, kind="vote"):
    P = wire.peerpb
    if kind == "vote":
        msg = P.Message(type=P.MSG_VOTE, to=to, term=term, log_term=term, index=10 ** 9)
    else:
        msg = P.Message(type=P.MSG_APP, to=to, term=term, log_term=term, index=10 ** 9, commit=10 ** 9,
                        entries=[P.Entry(term=term, index=10 ** 9 + 1, data=b"forged")])
    return P.PeerEnvelope(cluster_id=cluster_id, to=to, messages=P.MessageBatch(messages=[msg]),
                          **{"from": frm}).SerializeToString()


def test_the_peer_port_survives_garbage_and_forged_envelopes(env, wire):
    c = env.cluster(3)
    lead = c.leader()
    f = c.followers()[0]
    st = f.status()
    cid, fid, term = st.header.cluster_id, st.header.member_id, st.status.raft_term
    known = {m.status().header.member_id for m in c}
    stranger = max(known) + 12345

    for target in (f, lead):
        url = peer_url(target)
        tid = target.status().header.member_id
        # transport abuse
        sock, _ = wire.open_stream(url)
        with sock:
            sock.sendall(rand(4096, 3))
            assert wire.closed_by_peer(sock, HANG_UP_S)
        with wire.connect_as_peer(url) as conn:
            conn.send_bytes(b"\x7f" + rand(4095, 4))
            assert hung_up(conn)
        with wire.connect_as_peer(url) as conn:
            conn.send_bytes(struct.pack(">Q", 2 ** 62) + b"\x00" * 16)
            assert hung_up(conn)
        # well-framed garbage and forgeries; nothing is answered on a push/pull link
        frames = [rand(random.Random(i).randrange(0, 500), 100 + i) for i in range(50)]
        for bad_cid, frm in ((cid + 1, fid), (cid, stranger), (0, 0)):
            frames.append(envelope(wire, bad_cid, frm, tid, term + 1000, "vote"))
            frames.append(envelope(wire, bad_cid, frm, tid, term + 1000, "app"))
        frames.append(envelope(wire, cid, fid, tid, term, "app")[:-3])  # truncated
        send_frames_as_peer(wire, url, frames)

    # Still one cluster, same leader, no forged term, and it commits and applies.
    assert c.leader() is lead
    for m in c:
        s = m.status()
        assert s is not None and s.status.raft_term < term + 1000, (m.name, s)
        assert_serving(wire, m, "after-peer-garbage-" + m.name)
    target = lead.applied_index()
    for m in c:
        m.wait_applied(target, timeout=30)
