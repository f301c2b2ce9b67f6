"""cairnwire's SP framing checked against real nng 1.5 servers (sp_echo.c, a
rep0 echo with 8 contexts; mock_member.c, libcairn's scripted member), so
the cairnd tests stand on a client known to speak nng's wire format: the
tcp and ipc handshakes and frames, req0 request IDs, several requests in
flight answered out of order, and protobuf messages protobuf-c decodes."""
import struct

import pytest

import cairnwire


@pytest.fixture(params=["tcp", "ipc"])
def echo(request, serve, tmp_path):
    if request.param == "tcp":
        return serve("sp_echo.c", "tcp://127.0.0.1:0")
    return serve("sp_echo.c", "ipc://%s/echo.sock" % tmp_path)


def test_handshake_names_rep0_and_a_request_is_echoed(echo):
    with cairnwire.Client(echo.url) as c:
        assert c.peer_proto == cairnwire.PROTO_REP0
        assert c.call_raw(b"hello") == b"echo:hello"
        assert c.call_raw(b"") == b"echo:"


def test_requests_in_flight_are_matched_by_id_when_replies_overtake(echo):
    with cairnwire.Client(echo.url) as c:
        ids = [c.send_raw(b"delay:%d:r%d" % (400 - 50 * i, i)) for i in range(8)]
        assert len(set(ids)) == 8 and all(i & 0x80000000 for i in ids)
        order = [c.recv_raw()[0] for _ in range(8)]
        assert sorted(order) == sorted(ids)
        assert order != ids, "replies should come back fastest first"
        # recv_raw(id) keeps replies that arrive for other IDs
        a, b = c.send_raw(b"delay:300:a"), c.send_raw(b"b")
        assert c.recv_raw(a)[1] == b"echo:delay:300:a"
        assert c.recv_raw(b)[1] == b"echo:b"


def test_a_large_message_crosses_intact(echo):
    body = bytes(range(256)) * 2048  # 512 KiB, under nng's 1 MiB default limit
    with cairnwire.Client(echo.url) as c:
        assert c.call_raw(body, timeout=10) == b"echo:" + body


def test_a_frame_without_a_request_id_is_dropped_with_the_connection(echo):
    """rep0 reads 4-byte words up to one with the high bit: here it runs out, so nng hangs up."""
    with cairnwire.Client(echo.url) as c:
        c.send_frame(struct.pack(">I", 1) + b"x")
        assert c.closed_by_peer(timeout=5)
    with cairnwire.Client(echo.url) as c:  # the server still serves
        assert c.call_raw(b"again") == b"echo:again"


def test_ipc_frames_need_the_message_type_byte(serve, tmp_path):
    """Without nng's 0x01 type byte an ipc frame is a protocol error: nng closes the pipe."""
    s = serve("sp_echo.c", "ipc://%s/t.sock" % tmp_path)
    with cairnwire.Client(s.url) as c:
        c.send_bytes(struct.pack(">QI", 6, 0x80000001) + b"hi")
        assert c.closed_by_peer(timeout=5)
    with cairnwire.Client(s.url) as c:
        assert c.call_raw(b"ok") == b"echo:ok"


def test_a_peer_of_the_wrong_protocol_is_refused(echo):
    with pytest.raises(cairnwire.WireError):
        cairnwire.SPConnection(echo.url, proto=cairnwire.PROTO_REP0)  # rep0 to rep0
    conn = cairnwire.SPConnection(echo.url, proto=0x50, expect_peer=False)  # push0: nng drops us
    with conn:
        assert conn.peer_proto == cairnwire.PROTO_REP0
        assert conn.closed_by_peer(timeout=5)


def test_protobuf_requests_decode_in_protobuf_c(wire, serve):
    m = serve("mock_member.c")
    with wire.Client(m.url) as c:
        r = wire.check(c.put("k", "v"), "put")
        assert r.header.member_id == 42 and r.header.cluster_id == 77
        r = wire.check(c.get("k"), "range")
        assert r.range.kvs[0].key == b"k" and r.range.kvs[0].value == b"v:k"
        r = wire.check(c.txn([wire.compare("k", "version", "=", 2)],
                             [wire.op_put("k", "w"), wire.op_range("k"), wire.op_delete("k")]), "txn")
        assert r.txn.succeeded
        assert [op.WhichOneof("response") for op in r.txn.responses] == \
            ["response_put", "response_range", "response_delete_range"]
        r = wire.check(c.history("k", limit=2), "history")
        assert [rec.kv.mod_revision for rec in r.history.records] == [1, 2] and r.history.more
        st = wire.check(c.status(), "status")
        assert st.status.member_name == "mock-member" and st.status.leader == 1
        replies = c.call_many([wire.put_request("a%d" % i, "x") for i in range(20)])
        assert len({r.header.revision for r in replies}) == 20


def test_error_table_is_read_from_errors_h(wire):
    assert wire.ERRORS["COMPACTED"] == 1001
    assert wire.ERRORS["MALFORMED"] == 1103
    assert wire.error_name(1012) == "NO_LEADER"


def test_connect_as_peer_answers_whatever_the_listener_speaks(echo):
    with cairnwire.connect_as_peer(echo.url) as conn:
        assert (conn.peer_proto, conn.proto) == (cairnwire.PROTO_REP0, cairnwire.PROTO_REQ0)
        conn.send_frame(b"\x80\x00\x00\x07ping")
        assert conn.recv_frame() == b"\x80\x00\x00\x07echo:ping"
