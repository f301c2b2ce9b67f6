"""cairnwire: a small client for Cairn's tests that speaks nng's SP wire
protocol directly (Debian has no pynng), so tests can send exactly the bytes
they mean, good or bad.

The SP layer (checked against a real nng 1.5.2 rep0 by test_cairnwire.py):
  - tcp:// and tls+tcp:// (TLS from Python's ssl, then the same bytes): each
    side sends 8 bytes, 00 'S' 'P' 00, its 16-bit big-endian protocol number
    (req0 0x30, rep0 0x31), 00 00; we check the peer's.  Then every message
    is a 64-bit big-endian length and that many bytes.
  - ipc:// (AF_UNIX stream): the same handshake; each message is preceded by
    a type byte 0x01, then the 64-bit length.
  - req0 puts a 4-byte request ID with its high bit set before the body;
    rep0 echoes it before the reply.  IDs are distinct, so several requests
    may be in flight on one connection and replies may come in any order.

Messages are cairn.Request / cairn.Response from proto/*.proto, compiled by
protoc --python_out at session start (load_protos); the SP layer itself
needs no protobuf, so framing tests run without it.
"""
import importlib
import importlib.util
import os
import random
import re
import select
import socket
import ssl
import struct
import subprocess
import sys
import time

SP_HEADER = b"\x00SP\x00"
PROTO_REQ0 = 0x30
PROTO_REP0 = 0x31
# Every SP protocol and its peer, to answer any listener's handshake.
SP_PEERS = {0x10: 0x10, 0x11: 0x11, 0x20: 0x21, 0x21: 0x20, 0x30: 0x31, 0x31: 0x30,
            0x50: 0x51, 0x51: 0x50, 0x62: 0x63, 0x63: 0x62, 0x70: 0x70}

pb = None        # proto.cairn_pb2 once load_protos ran
kvpb = None      # proto.kv_pb2
peerpb = None    # proto.peer_pb2 (members' own protocol, for bad-input tests)
ERRORS = {}      # "COMPACTED" -> 1001, ... from base/errors.h (load_errors)
ERROR_NAMES = {}  # 1001 -> "COMPACTED"


class WireError(Exception):
    """The connection failed, closed, or the peer broke the SP protocol."""


class Closed(WireError):
    """The peer closed the connection."""


# ------------------------------------------------------------------ set-up

def load_protos(root, outdir):
    """Compile root/proto/*.proto for Python into outdir and import them.
    Raises RuntimeError saying which package is missing."""
    global pb, kvpb, peerpb
    if pb is not None:
        return pb
    if importlib.util.find_spec("google.protobuf") is None:
        raise RuntimeError("python3-protobuf is not installed (apt-get install python3-protobuf)")
    protos = sorted(os.path.join("proto", f) for f in os.listdir(os.path.join(root, "proto"))
                    if f.endswith(".proto"))
    os.makedirs(outdir, exist_ok=True)
    try:
        subprocess.run(["protoc", "--python_out=" + str(outdir), "-I.", *protos], cwd=str(root),
                       check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except FileNotFoundError:
        raise RuntimeError("protoc is not installed (apt-get install protobuf-compiler)")
    except subprocess.CalledProcessError as e:
        raise RuntimeError("protoc failed: " + e.stderr.decode(errors="replace"))
    # A regular package wins over the source tree's proto/ folder, which
    # `python -m pytest` run from the root would otherwise offer as a
    # namespace package.
    open(os.path.join(outdir, "proto", "__init__.py"), "w").close()
    sys.path.insert(0, str(outdir))
    for name in list(sys.modules):
        if name == "proto" or name.startswith("proto."):
            del sys.modules[name]
    pb = importlib.import_module("proto.cairn_pb2")
    kvpb = importlib.import_module("proto.kv_pb2")
    peerpb = importlib.import_module("proto.peer_pb2")
    return pb


def load_errors(root):
    """Read the CAIRN_E_* table from base/errors.h (wire codes by name)."""
    text = open(os.path.join(root, "base", "errors.h")).read()
    base = int(re.search(r"#define CAIRN_ERR_BASE (\d+)", text).group(1))
    for name, off in re.findall(r"X\((\w+), (\d+),", text):
        ERRORS[name] = base + int(off)
        ERROR_NAMES[base + int(off)] = name
    return ERRORS


def error_name(code):
    return ERROR_NAMES.get(code, str(code))


# ------------------------------------------------------------------ URLs

def parse_url(url):
    """('tcp'|'tls+tcp', (host, port)) or ('ipc', path)."""
    m = re.match(r"^(tcp|tls\+tcp|ipc)://(.*)$", url)
    if not m:
        raise ValueError("not an nng URL: %r" % url)
    scheme, rest = m.groups()
    if scheme == "ipc":
        return scheme, rest
    host, _, port = rest.rpartition(":")
    return scheme, (host.strip("[]"), int(port))


class TLS:
    """Client TLS for tls+tcp:// URLs: PEM paths and the name to check."""

    def __init__(self, ca, cert=None, key=None, server_name="localhost"):
        self.ca, self.cert, self.key, self.server_name = ca, cert, key, server_name

    def context(self):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(self.ca)
        if self.cert:
            ctx.load_cert_chain(self.cert, self.key)
        return ctx


def open_stream(url, timeout=5.0, tls=None):
    """A connected socket for url (TLS already negotiated for tls+tcp), no SP handshake.
    Returns (sock, is_ipc)."""
    scheme, addr = parse_url(url)
    if scheme == "ipc":
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            s.connect(addr)
        except OSError:
            s.close()
            raise
        return s, True
    s = socket.create_connection(addr, timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if scheme == "tls+tcp":
        if tls is None:
            s.close()
            raise ValueError("%s needs tls=TLS(...)" % url)
        try:
            s = tls.context().wrap_socket(s, server_hostname=tls.server_name)
        except BaseException:
            s.close()
            raise
    return s, False


def closed_by_peer(sock, timeout=5.0):
    """True once the peer of sock has closed (EOF or reset) within timeout; data read meanwhile is dropped."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        r, _, _ = select.select([sock], [], [], left)
        if not r:
            return False
        try:
            if not sock.recv(65536):
                return True
        except OSError:  # reset, or a TLS alert
            return True


def sp_header(proto):
    return SP_HEADER + struct.pack(">H", proto) + b"\x00\x00"


def recv_exact(sock, n, deadline=None):
    """n bytes from sock, or Closed / socket.timeout."""
    buf = bytearray()
    while len(buf) < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("timed out after %d of %d bytes" % (len(buf), n))
            sock.settimeout(left)
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise Closed("peer closed the connection after %d of %d bytes" % (len(buf), n))
        buf += chunk
    return bytes(buf)


# ------------------------------------------------------------------ SP connection

class SPConnection:
    """One SP connection: handshake, then framed messages (no req0 IDs)."""

    def __init__(self, url, proto=PROTO_REQ0, timeout=5.0, tls=None, expect_peer=None):
        """Connect and shake hands as `proto` (None: read the peer's header
        first and answer as its counterpart).  expect_peer: the protocol the
        peer must announce (default: proto's peer; False: accept any)."""
        self.url = url
        self.timeout = timeout
        self.sock, self.ipc = open_stream(url, timeout, tls)
        try:
            if proto is not None:
                self.sock.sendall(sp_header(proto))
            hdr = recv_exact(self.sock, 8, time.monotonic() + timeout)
            if hdr[:4] != SP_HEADER or hdr[6:] != b"\x00\x00":
                raise WireError("%s: not an SP handshake: %r" % (url, hdr))
            self.peer_proto = struct.unpack(">H", hdr[4:6])[0]
            if proto is None:
                if self.peer_proto not in SP_PEERS:
                    raise WireError("%s: unknown SP protocol 0x%x" % (url, self.peer_proto))
                proto = SP_PEERS[self.peer_proto]
                self.sock.sendall(sp_header(proto))
            self.proto = proto
            want = SP_PEERS.get(proto) if expect_peer is None else expect_peer
            if want is not False and self.peer_proto != want:
                raise WireError("%s: peer speaks protocol 0x%x, want 0x%x" % (url, self.peer_proto, want))
        except BaseException:
            self.close()
            raise

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def frame(self, payload):
        """The bytes of one message on this transport."""
        head = struct.pack(">Q", len(payload))
        return (b"\x01" + head if self.ipc else head) + payload

    def send_frame(self, payload):
        self.sock.sendall(self.frame(payload))

    def send_bytes(self, raw):
        """Raw bytes, no framing: for bad-input tests."""
        self.sock.sendall(raw)

    def recv_frame(self, timeout=None):
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        if self.ipc:
            t = recv_exact(self.sock, 1, deadline)
            if t != b"\x01":
                raise WireError("%s: ipc message type %r, want 0x01" % (self.url, t))
        n = struct.unpack(">Q", recv_exact(self.sock, 8, deadline))[0]
        if n > 256 << 20:
            raise WireError("%s: absurd frame length %d" % (self.url, n))
        return recv_exact(self.sock, n, deadline)

    def closed_by_peer(self, timeout=5.0):
        """True once the peer has closed (EOF or reset) within timeout; data read meanwhile is dropped."""
        return closed_by_peer(self.sock, timeout)


def connect_as_peer(url, timeout=5.0, tls=None):
    """An SPConnection to any SP listener, speaking whatever protocol pairs
    with the one it announces (nng sends its 8 bytes without waiting for ours)."""
    return SPConnection(url, None, timeout, tls)


class Client(SPConnection):
    """A req0 client of one member.  send/recv for many in flight, call for one."""

    def __init__(self, url, timeout=5.0, tls=None):
        super().__init__(url, PROTO_REQ0, timeout, tls)
        self._next = random.randrange(1, 1 << 31)
        self._replies = {}  # id -> raw reply body received early
        self.token = ""     # put in every cairn.Request sent without one (authenticate() sets it)

    # ---- raw requests
    def send_raw(self, body):
        """Send body (bytes) as one req0 request; returns its ID."""
        rid = 0x80000000 | self._next
        self._next = (self._next + 1) & 0x7FFFFFFF or 1
        self.send_frame(struct.pack(">I", rid) + body)
        return rid

    def recv_raw(self, rid=None, timeout=None):
        """(id, body bytes) of the reply to rid (any reply when None)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        if rid is None and self._replies:
            k = next(iter(self._replies))
            return k, self._replies.pop(k)
        if rid is not None and rid in self._replies:
            return rid, self._replies.pop(rid)
        while True:
            msg = self.recv_frame(max(0.0, deadline - time.monotonic()))
            if len(msg) < 4:
                raise WireError("%s: reply of %d bytes has no request ID" % (self.url, len(msg)))
            got = struct.unpack(">I", msg[:4])[0]
            if not got & 0x80000000:
                raise WireError("%s: reply ID 0x%08x lacks the high bit" % (self.url, got))
            if rid is None or got == rid:
                return got, msg[4:]
            self._replies[got] = msg[4:]

    def call_raw(self, body, timeout=None):
        """Send body, return the reply's bytes."""
        return self.recv_raw(self.send_raw(body), timeout)[1]

    # ---- protobuf requests
    def send(self, req):
        """Send a cairn.Request (or bytes); returns its ID.  A Request without a token gets self.token."""
        if not isinstance(req, (bytes, bytearray)) and self.token and not req.auth_token:
            copy = pb.Request()
            copy.CopyFrom(req)
            copy.auth_token = self.token
            req = copy
        return self.send_raw(req if isinstance(req, (bytes, bytearray)) else req.SerializeToString())

    def recv(self, rid=None, timeout=None):
        """(id, cairn.Response) of the reply to rid (any when None)."""
        got, body = self.recv_raw(rid, timeout)
        return got, pb.Response.FromString(body)

    def call(self, req, timeout=None):
        return self.recv(self.send(req), timeout)[1]

    def call_many(self, reqs, timeout=None):
        """Send every request before reading any reply; replies in request order."""
        ids = [self.send(r) for r in reqs]
        return [self.recv(i, timeout)[1] for i in ids]

    # ---- KV helpers: each returns the decoded Response (check .error / .HasField("error"))
    def put(self, key, value, **kw):
        return self.call(put_request(key, value, **kw))

    def get(self, key, **kw):
        return self.call(range_request(key, **kw))

    def range(self, key, range_end=b"", **kw):
        return self.call(range_request(key, range_end=range_end, **kw))

    def delete(self, key, range_end=b"", **kw):
        return self.call(delete_request(key, range_end=range_end, **kw))

    def txn(self, compare=(), success=(), failure=()):
        return self.call(txn_request(compare, success, failure))

    def compact(self, revision, physical=False):
        return self.call(pb.Request(compact=pb.CompactionRequest(revision=revision, physical=physical)))

    def history(self, key, range_end=b"", **kw):
        return self.call(pb.Request(history=pb.HistoryRequest(key=_b(key), range_end=_b(range_end), **kw)))

    def status(self, timeout=None):
        return self.call(pb.Request(status=pb.StatusRequest()), timeout)

    # ---- auth: each returns the decoded Response
    def authenticate(self, name, password, timeout=None):
        """Authenticate; on success the token is kept in self.token for the requests that follow."""
        r = self.call(request("authenticate", name=name, password=password), timeout)
        if not is_error(r):
            self.token = r.authenticate.token
        return r

    def auth(self, body, **fields):
        """call(request(body, **fields)): e.g. auth("user_add", name="alice", password="pw")."""
        return self.call(request(body, **fields))


# ------------------------------------------------------------------ message builders

def _b(x):
    return x.encode() if isinstance(x, str) else bytes(x)


def prefix_end(prefix):
    """range_end covering every key that starts with prefix."""
    p = bytearray(_b(prefix))
    while p and p[-1] == 0xFF:
        p.pop()
    if not p:
        return b"\x00"
    p[-1] += 1
    return bytes(p)


def put_request(key, value, **kw):
    return pb.Request(put=pb.PutRequest(key=_b(key), value=_b(value), **kw))


def range_request(key, range_end=b"", **kw):
    return pb.Request(range=pb.RangeRequest(key=_b(key), range_end=_b(range_end), **kw))


def delete_request(key, range_end=b"", **kw):
    return pb.Request(delete_range=pb.DeleteRangeRequest(key=_b(key), range_end=_b(range_end), **kw))


def txn_request(compare=(), success=(), failure=()):
    return pb.Request(txn=pb.TxnRequest(compare=list(compare), success=list(success), failure=list(failure)))


_CMP = {"=": "EQUAL", "==": "EQUAL", ">": "GREATER", "<": "LESS", "!=": "NOT_EQUAL"}


def compare(key, target, op, v):
    """compare(b"k", "version"|"create"|"mod"|"value"|"lease", "="|">"|"<"|"!=", v)."""
    field = {"version": "version", "create": "create_revision", "mod": "mod_revision",
             "value": "value", "lease": "lease"}[target]
    c = pb.Compare(key=_b(key), result=getattr(pb.Compare, _CMP[op]),
                   target=getattr(pb.Compare, {"create": "CREATE", "mod": "MOD"}.get(target, target.upper())))
    setattr(c, field, _b(v) if target == "value" else int(v))
    return c


def op_put(key, value, **kw):
    return pb.RequestOp(request_put=pb.PutRequest(key=_b(key), value=_b(value), **kw))


def op_range(key, range_end=b"", **kw):
    return pb.RequestOp(request_range=pb.RangeRequest(key=_b(key), range_end=_b(range_end), **kw))


def op_delete(key, range_end=b"", **kw):
    return pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=_b(key), range_end=_b(range_end), **kw))


def request(body, token="", **fields):
    """A cairn.Request whose body is the field `body` ("user_add", "role_grant_permission", ...) set from
    fields (messages are copied in); token is its auth_token."""
    r = pb.Request(auth_token=token)
    sub = getattr(r, body)
    sub.SetInParent()
    for k, v in fields.items():
        if hasattr(v, "DESCRIPTOR"):
            getattr(sub, k).CopyFrom(v)
        elif isinstance(v, (list, tuple)):
            getattr(sub, k).extend(v)
        else:
            setattr(sub, k, v)
    return r


def permission(ptype, key, range_end=b""):
    """A cairn.Permission: ptype "READ", "WRITE" or "READWRITE"."""
    return pb.Permission(perm_type=getattr(pb.Permission, ptype), key=_b(key), range_end=_b(range_end))


def is_error(resp):
    return resp.HasField("error") and resp.error.code != 0


def check(resp, body=None):
    """resp, or AssertionError naming the error code; with body, that body must be set."""
    if is_error(resp):
        raise AssertionError("error %s (%d): %s" % (error_name(resp.error.code), resp.error.code,
                                                    resp.error.message))
    if body is not None and resp.WhichOneof("body") != body:
        raise AssertionError("reply body %r, want %r" % (resp.WhichOneof("body"), body))
    return resp
