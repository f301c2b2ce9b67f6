"""Real cairnd members on loopback for the integration tests.

A Member is one cairnd process with its own ports, data directory and log;
it can be killed (-9), stopped (SIGTERM), paused (SIGSTOP) and restarted with
the same flags.  A Cluster starts N members that know each other, waits for a
leader, and finds it.  Processes register with a Registry that the fixtures
(conftest.py) empty at teardown, whatever the test's outcome; each child also
gets SIGKILL from the kernel if the test process itself dies.

Timings are short (heartbeat 50 ms, election 500 ms); waits poll with a
deadline, never sleep for a condition.
"""
import ctypes
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import cairnwire as wire

HEARTBEAT_MS = 50
ELECTION_MS = 500
START_TIMEOUT = 20.0      # s for a member to answer Status after it starts
LEADER_TIMEOUT = 20.0     # s for a leader to be known (many election timeouts)
POLL = 0.05               # s between polls: an interval, not a wait for the condition

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent():
    """preexec_fn: the child gets SIGKILL when the test process dies."""
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def child_env():
    """The environment for children: none of the variables that would change
    how cairnd configures itself (CAIRN_*, systemd's hand-offs)."""
    drop = ("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "JOURNAL_STREAM",
            "STATE_DIRECTORY", "CONFIGURATION_DIRECTORY", "WATCHDOG_USEC", "WATCHDOG_PID")
    return {k: v for k, v in os.environ.items() if not k.startswith("CAIRN_") and k not in drop}


def poll(pred, timeout, what="condition"):
    """pred()'s first truthy value within timeout seconds, else TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise TimeoutError("%s not reached within %.1f s" % (what, timeout))
        time.sleep(POLL)


def holds_for(pred, seconds):
    """True if pred() stays truthy at every poll for `seconds` (a negative check:
    something must NOT happen within a window)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if not pred():
            return False
        time.sleep(POLL)
    return bool(pred())


_handed_out = set()


def free_port():
    """A loopback TCP port nobody listens on now, never the same twice in a session."""
    for _ in range(200):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        finally:
            s.close()
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError("no free loopback port")


class Registry:
    """Every process a test started, to kill at teardown."""

    def __init__(self):
        self.procs = []

    def spawn(self, argv, **kw):
        kw.setdefault("stdin", subprocess.DEVNULL)
        kw.setdefault("env", child_env())
        p = subprocess.Popen([str(a) for a in argv], preexec_fn=_die_with_parent, **kw)
        self.procs.append(p)
        return p

    def kill_all(self):
        for p in self.procs:
            if p.poll() is None:
                try:
                    p.kill()
                except ProcessLookupError:
                    pass
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self.procs = []


# ------------------------------------------------------------------ a link that can be held

class HeldLink:
    """A loopback TCP forwarder in front of one listener, whose traffic towards
    the listener the test can hold: held bytes wait in the forwarder until
    release(), as on a network that stalls without dropping.  Put in front of a
    member's peer listener it cuts that member off from what the others send
    it while it still answers its clients and reaches the others itself."""

    def __init__(self, target_port):
        self.target = ("127.0.0.1", target_port)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.held = threading.Event()
        self.stopping = threading.Event()
        self.conns = []
        self.thread = threading.Thread(target=self._run, name="held-link", daemon=True)
        self.thread.start()

    def hold(self):
        self.held.set()

    def release(self):
        self.held.clear()

    def close(self):
        self.stopping.set()
        self.thread.join(timeout=10)
        for a, b in self.conns:
            a.close()
            b.close()
        self.sock.close()

    def _run(self):
        peer_of = {}
        while not self.stopping.is_set():
            # held: only the listener's replies flow (inward sockets are not read)
            inward = [a for a, b in self.conns]
            readable = [self.sock] + [b for a, b in self.conns] + ([] if self.held.is_set() else inward)
            r, _, _ = select.select(readable, [], [], 0.05)
            for s in r:
                if s is self.sock:
                    a, _ = self.sock.accept()
                    try:
                        b = socket.create_connection(self.target, timeout=5)
                    except OSError:
                        a.close()
                        continue
                    self.conns.append((a, b))
                    peer_of[a], peer_of[b] = b, a
                    continue
                if s not in peer_of:
                    continue  # its pair was closed earlier in this round
                try:
                    data = s.recv(65536)
                    if data:
                        peer_of[s].sendall(data)
                        continue
                except OSError:
                    pass
                pair = next(c for c in self.conns if s in c)
                self.conns.remove(pair)
                for x in pair:
                    peer_of.pop(x, None)
                    x.close()


# ------------------------------------------------------------------ certificates

class Certs:
    """Test PKI made with the openssl CLI (EC P-256), in one directory:
    ca (the cluster's CA), other_ca (a stranger's), member certificates naming
    the member and localhost, a client certificate, a client certificate from
    other_ca, and a member certificate that names only some other host."""

    def __init__(self, path):
        self.dir = str(path)
        os.makedirs(self.dir, exist_ok=True)
        self.ca = self._ca("ca")
        self.other_ca = self._ca("otherca")
        self.client = self.cert("client", "ca", ["client"])
        self.stranger = self.cert("stranger", "otherca", ["client"])

    def _run(self, *args):
        subprocess.run(["openssl", *args], cwd=self.dir, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE)

    def _ca(self, name):
        self._run("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", name + ".key")
        self._run("req", "-x509", "-new", "-key", name + ".key", "-subj", "/CN=" + name, "-days", "2",
                  "-out", name + ".crt")
        return os.path.join(self.dir, name + ".crt")

    def cert(self, name, ca, dns_names):
        """(crt, key) for name signed by ca ("ca" or "otherca"), with DNS SANs dns_names."""
        crt, key = os.path.join(self.dir, name + ".crt"), os.path.join(self.dir, name + ".key")
        if os.path.exists(crt):
            return crt, key
        self._run("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", name + ".key")
        self._run("req", "-new", "-key", name + ".key", "-subj", "/CN=" + name, "-out", name + ".csr")
        with open(os.path.join(self.dir, name + ".ext"), "w") as f:
            f.write("subjectAltName=" + ",".join("DNS:" + d for d in dns_names) + "\n")
        self._run("x509", "-req", "-in", name + ".csr", "-CA", ca + ".crt", "-CAkey", ca + ".key",
                  "-CAcreateserial", "-days", "2", "-extfile", name + ".ext", "-out", name + ".crt")
        return crt, key

    def member(self, name):
        """A member certificate from the CA naming `name` and localhost."""
        return self.cert(name, "ca", [name, "localhost"])

    def other_host(self, name):
        """A certificate from the CA for member `name` that names only otherhost."""
        return self.cert(name + "-otherhost", "ca", ["otherhost"])

    def client_tls(self, server_name="localhost", stranger=False):
        crt, key = self.stranger if stranger else self.client
        return wire.TLS(self.ca, crt, key, server_name)


# ------------------------------------------------------------------ members

class Member:
    """One cairnd: its flags never change across restarts."""

    def __init__(self, cluster, name):
        self.cluster = cluster
        self.name = name
        self.data_dir = os.path.join(cluster.dir, name)
        self.log_path = os.path.join(cluster.dir, name + ".log")
        self.admin_sock = os.path.join(cluster.sock_dir, name + ".sock")
        self.proc = None
        self.peer_cert = None  # (crt, key) to use instead of the CA-made one naming the member
        self.token = None      # --initial-cluster-token for this member alone
        self.state = "new"     # --initial-cluster-state: "existing" for a member added to a running cluster
        self.extra = []
        self.env = {}          # environment variables added to child_env() for this member
        self.link = None       # a HeldLink the other members reach this one's peer listener through
        self.pick_ports()

    def pick_ports(self):
        self.client_port, self.peer_port = free_port(), free_port()
        if self.link:
            self.link.target = ("127.0.0.1", self.peer_port)

    @property
    def scheme(self):
        return "tls+tcp" if self.cluster.certs else "tcp"

    @property
    def client_url(self):
        return "%s://127.0.0.1:%d" % (self.scheme, self.client_port)

    def _peer_url(self, port):
        # A TLS dialer checks that the peer's certificate names the URL's host,
        # and mbedTLS matches DNS names only: peers meet at "localhost" (which
        # every member certificate names), bound and dialled alike.
        host = "localhost" if self.cluster.certs else "127.0.0.1"
        return "%s://%s:%d" % (self.scheme, host, port)

    @property
    def peer_url(self):
        """The peer URL the cluster knows this member by (its link's, with one)."""
        return self._peer_url(self.link.port if self.link else self.peer_port)

    def reach_through_link(self):
        """Before the first start: the others reach this member through a HeldLink (self.link)."""
        self.link = HeldLink(self.peer_port)
        self.cluster.env.links.append(self.link)
        return self.link

    def argv(self):
        c = self.cluster
        a = [c.cairnd,
             "--name=" + self.name,
             "--data-dir=" + self.data_dir,
             "--listen-client-urls=" + self.client_url,
             "--advertise-client-urls=" + self.client_url,
             "--listen-peer-urls=" + self._peer_url(self.peer_port),
             "--initial-advertise-peer-urls=" + self.peer_url,
             "--listen-admin-url=ipc://" + self.admin_sock,
             "--initial-cluster=" + c.initial_cluster(),
             "--initial-cluster-state=" + self.state,
             "--initial-cluster-token=" + (self.token or c.token),
             "--heartbeat-interval=%d" % c.heartbeat_ms,
             "--election-timeout=%d" % c.election_ms,
             "--log-target=stderr",
             "--log-level=" + c.log_level]
        if c.snapshot_count:
            a.append("--snapshot-count=%d" % c.snapshot_count)
        if c.snapshot_catchup_entries:
            a.append("--snapshot-catchup-entries=%d" % c.snapshot_catchup_entries)
        if c.certs:
            crt, key = c.certs.member(self.name)
            pcrt, pkey = self.peer_cert or (crt, key)
            a += ["--cert-file=" + crt, "--key-file=" + key, "--trusted-ca-file=" + c.certs.ca,
                  "--client-cert-auth=true",
                  "--peer-cert-file=" + pcrt, "--peer-key-file=" + pkey,
                  "--peer-trusted-ca-file=" + c.certs.ca]
        return a + c.extra + self.extra

    # ---- process control
    def start(self):
        """Start cairnd (again) with the same flags; stderr and stdout go to the log."""
        assert not self.running, "%s is already running" % self.name
        with open(self.log_path, "a") as log:
            log.write("==== cairnd %s started by the test at %s\n" % (self.name, time.strftime("%H:%M:%S")))
            log.flush()
            self.proc = self.cluster.registry.spawn(self.argv(), stdout=log, stderr=subprocess.STDOUT,
                                                    env={**child_env(), **self.env})
        return self

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self):
        return self.proc.pid

    def kill(self):
        """kill -9 and reap."""
        if self.running:
            self.proc.kill()
        if self.proc:
            self.proc.wait(timeout=10)

    def terminate(self, timeout=15):
        """SIGTERM; wait for the exit and return its status (negative: killed by a signal)."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def pause(self):
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)

    def restart(self, wait_ready=True):
        """Start it again after a kill or stop, with the same flags; wait until it knows a leader."""
        if self.running:
            self.kill()
        self.start()
        if wait_ready:
            self.wait_ready()
        return self

    def log_text(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def log_tail(self, n=40):
        """The last n lines of the log, each cut to 300 characters."""
        return "\n".join(line[:300] for line in self.log_text().splitlines()[-n:])

    # ---- talking to it
    def tls(self):
        return self.cluster.certs.client_tls(server_name=self.name) if self.cluster.certs else None

    def client(self, timeout=5.0):
        """A new cairnwire.Client of this member (the caller closes it)."""
        return wire.Client(self.client_url, timeout=timeout, tls=self.tls())

    def call(self, req, timeout=5.0):
        """One request on a fresh connection."""
        with self.client(timeout) as c:
            return c.call(req, timeout)

    def status(self, timeout=1.0):
        """The Response to Status, or None if it cannot be had now (down, paused, starting)."""
        if not self.running:
            return None
        try:
            r = self.call(wire.pb.Request(status=wire.pb.StatusRequest()), timeout)
        except (OSError, wire.WireError):  # refused, reset, timed out, TLS refused, closed
            return None
        return None if wire.is_error(r) else r

    def _applied_or_none(self):
        st = self.status()
        return st.status.raft_applied_index if st else None

    def applied_index(self, timeout=START_TIMEOUT):
        """Status's raft_applied_index (polling until Status answers)."""
        return self._poll_with_log(lambda: self._applied_or_none(), timeout,
                                   "%s answering Status" % self.name)

    def wait_applied(self, index, timeout=90):
        """Poll until this member has applied `index`."""
        return self._poll_with_log(lambda: (self._applied_or_none() or 0) >= index, timeout,
                                   "%s applying up to index %d" % (self.name, index))

    def member_id(self):
        st = poll(self.status, START_TIMEOUT, "%s answering Status" % self.name)
        return st.header.member_id

    def _alive_or_fail(self):
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError("cairnd %s exited with status %s; log tail:\n%s"
                                 % (self.name, self.proc.returncode, self.log_tail()))

    def _poll_with_log(self, pred, timeout, what):
        try:
            return poll(pred, timeout, what)
        except TimeoutError as e:
            raise TimeoutError("%s; log tail of %s:\n%s" % (e, self.name, self.log_tail(20))) from None

    def wait_serving(self, timeout=START_TIMEOUT):
        """Poll until Status answers (leader or not); fail at once if the process exits."""
        def ok():
            self._alive_or_fail()
            return self.status()
        return self._poll_with_log(ok, timeout, "%s answering Status" % self.name)

    def wait_ready(self, timeout=LEADER_TIMEOUT):
        """Poll until Status names a leader (the member is "ready")."""
        def ok():
            self._alive_or_fail()
            st = self.status()
            return st if st and st.status.leader != 0 else None
        return self._poll_with_log(ok, timeout, "%s knowing a leader" % self.name)


ADDR_IN_USE = re.compile(r"address (already )?in use|EADDRINUSE", re.I)


class Cluster:
    """N members that know each other.  Build with Env.cluster(), which
    registers it for teardown."""

    def __init__(self, env, n=3, names=None, certs=None, token=None, snapshot_count=None,
                 snapshot_catchup_entries=None, extra=(), log_level="info"):
        self.env = env
        self.cairnd = env.cairnd
        self.registry = env.registry
        self.dir = tempfile.mkdtemp(prefix="cluster-", dir=str(env.tmp_path))
        # ipc paths must stay under 108 bytes: keep them out of pytest's long tmp paths.
        self.sock_dir = tempfile.mkdtemp(prefix="cairn-it-")
        self.certs = certs
        self.token = token or "cairn-test-%d" % os.getpid()
        self.heartbeat_ms, self.election_ms = HEARTBEAT_MS, ELECTION_MS
        self.snapshot_count, self.snapshot_catchup_entries = snapshot_count, snapshot_catchup_entries
        self.extra = list(extra)
        self.log_level = log_level
        self.members = [Member(self, nm) for nm in (names or ["m%d" % (i + 1) for i in range(n)])]

    def __getitem__(self, i):
        return self.members[i]

    def __iter__(self):
        return iter(self.members)

    def __len__(self):
        return len(self.members)

    def initial_cluster(self):
        return ",".join("%s=%s" % (m.name, m.peer_url) for m in self.members)

    def endpoints(self, members=None):
        return ",".join(m.client_url for m in (members or self.members))

    # ---- life
    def start(self, wait=True, attempts=3):
        """Start every member; with wait, until each answers Status and a leader is known.
        A member that lost its port to another process between our pick and its
        bind makes the whole cluster start again on new ports."""
        for attempt in range(attempts):
            for m in self.members:
                m.start()
            try:
                for m in self.members:
                    m.wait_serving()
                break
            except AssertionError:
                if attempt + 1 == attempts or not any(
                        m.proc.poll() is not None and ADDR_IN_USE.search(m.log_text()) for m in self.members):
                    raise
                self.kill_all()
                for m in self.members:
                    shutil.rmtree(m.data_dir, ignore_errors=True)
                    m.pick_ports()
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, members=None, timeout=LEADER_TIMEOUT):
        for m in members or [m for m in self.members if m.running]:
            m.wait_ready(timeout)
        return self.leader(timeout)

    def kill_all(self):
        for m in self.members:
            m.kill()

    def running(self):
        return [m for m in self.members if m.running]

    def destroy(self, keep_files):
        self.kill_all()
        shutil.rmtree(self.sock_dir, ignore_errors=True)
        if not keep_files:
            shutil.rmtree(self.dir, ignore_errors=True)

    # ---- leadership
    def find_leader(self, members=None):
        """The member that says it leads and that the other reachable members
        agree on, or None."""
        ids = {}
        views = []
        for m in members or self.running():
            st = m.status()
            if st is None:
                continue
            ids[st.header.member_id] = m
            views.append(st.status.leader)
        for m_id, m in ids.items():
            if views and all(v == m_id for v in views):
                return m
        return None

    def leader(self, timeout=LEADER_TIMEOUT, members=None, exclude=()):
        """Poll until the reachable members agree on a leader (not in exclude)."""
        def find():
            m = self.find_leader(members)
            return m if m is not None and m not in exclude else None
        return poll(find, timeout, "a leader agreed on by %s" % ", ".join(
            m.name for m in (members or self.running())))

    def followers(self):
        lead = self.leader()
        return [m for m in self.running() if m is not lead]

    def by_id(self, member_id):
        for m in self.running():
            st = m.status()
            if st and st.header.member_id == member_id:
                return m
        return None


# ------------------------------------------------------------------ cairn-load

M64 = (1 << 64) - 1
ALNUM = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def load_value(key, seq, size):
    """The value cairn-load writes for put `seq` of key (its make_value)."""
    if isinstance(key, str):
        key = key.encode()
    h = 0xcbf29ce484222325
    for b in key:
        h = ((h ^ b) * 0x100000001b3) & M64
    st = h ^ ((seq * 0x9E3779B97F4A7C15) & M64)
    head = b"%d:" % seq
    out = bytearray(head[:size])
    while len(out) < size:
        st = (st + 0x9E3779B97F4A7C15) & M64
        z = st
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        out.append(ALNUM[(z ^ (z >> 31)) % 62])
    return bytes(out)


def read_ack_log(path):
    """{key: (revision, seq, val_size)} keeping each key's newest acknowledged put."""
    acked, val_size = {}, 32
    with open(path) as f:
        for line in f:
            if line.startswith("#"):
                m = re.search(r" val-size=(\d+)", line)
                if m:
                    val_size = int(m.group(1))
                continue
            parts = line.split()
            if not line.endswith("\n") or len(parts) != 3:
                continue
            key, rev, seq = parts[0], int(parts[1]), int(parts[2])
            if key not in acked or acked[key][0] < rev:
                acked[key] = (rev, seq, val_size)
    return acked


class LoadRun:
    """A cairn-load put running in the background."""

    def __init__(self, proc, out_path):
        self.proc, self.out_path = proc, out_path

    def wait(self, timeout=180):
        rc = self.proc.wait(timeout=timeout)
        with open(self.out_path) as f:
            out = f.read()
        return LoadResult(rc, out)


class LoadResult:
    """A finished cairn-load: exit status, output, and its --json report (a dict) if it printed one."""

    def __init__(self, rc, out):
        self.rc, self.out = rc, out
        self.report = None
        for line in out.splitlines():
            if line.startswith("{"):
                try:
                    self.report = json.loads(line)
                except ValueError:
                    pass

    def __repr__(self):
        return "cairn-load exit %d: %s" % (self.rc, self.out.strip())

    def assert_no_loss(self):
        """For a check: every acknowledged write was found."""
        r = self.report
        assert self.rc == 0 and r and r["keys"] > 0 and r["ok"] == r["keys"], self
        return r


class Load:
    """Runs build/cairn-load against a cluster's endpoints."""

    def __init__(self, env, path):
        self.env, self.path = env, path

    def _tls_args(self, cluster):
        if not cluster.certs:
            return []
        crt, key = cluster.certs.client
        return ["--cacert", cluster.certs.ca, "--cert", crt, "--key", key, "--server-name", "localhost"]

    def put_args(self, cluster, members, total, ack_log, inflight=32, key_prefix="load/",
                 key_space=None, val_size=32, seed=1, timeout=120, call_timeout_ms=10000):
        a = [self.path, "put", "--endpoints", cluster.endpoints(members), "--total", total,
             "--inflight", inflight, "--key-prefix", key_prefix, "--val-size", val_size,
             "--ack-log", ack_log, "--seed", seed, "--timeout", timeout,
             "--call-timeout", call_timeout_ms, "--json"]
        if key_space:
            a += ["--key-space", key_space]
        return a + self._tls_args(cluster)

    def start_put(self, cluster, members=None, **kw):
        """cairn-load put in the background; returns a LoadRun."""
        fd, out = tempfile.mkstemp(prefix="load-", suffix=".out", dir=str(self.env.tmp_path))
        with os.fdopen(fd, "w") as f:
            p = self.env.registry.spawn(self.put_args(cluster, members, **kw), stdout=f,
                                        stderr=subprocess.STDOUT)
        return LoadRun(p, out)

    def put(self, cluster, members=None, **kw):
        return self.start_put(cluster, members, **kw).wait()

    def check(self, cluster, ack_log, members=None, timeout=120, extra=()):
        a = [self.path, "check", "--endpoints", cluster.endpoints(members), "--ack-log", ack_log,
             "--timeout", timeout, "--inflight", 32, "--json", *extra] + self._tls_args(cluster)
        p = subprocess.run([str(x) for x in a], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           env=child_env(), timeout=timeout + 30)
        return LoadResult(p.returncode, p.stdout.decode(errors="replace"))


def acked_count(ack_log):
    """Acknowledged puts logged so far (the file may be mid-write)."""
    try:
        with open(ack_log) as f:
            return sum(1 for line in f if line.endswith("\n") and not line.startswith("#"))
    except FileNotFoundError:
        return 0


class Env:
    """What one test may start: clusters and loads, all killed at teardown."""

    def __init__(self, cairnd, tmp_path, certs_factory=None, load_path=None):
        self.cairnd = str(cairnd)
        self.tmp_path = tmp_path
        self.registry = Registry()
        self.clusters = []
        self.links = []
        self._certs_factory = certs_factory
        self.load = Load(self, str(load_path)) if load_path else None

    @property
    def certs(self):
        return self._certs_factory()

    def cluster(self, n=3, start=True, **kw):
        """A Cluster of n members (see Cluster for options), started and with a leader unless start=False."""
        c = Cluster(self, n, **kw)
        self.clusters.append(c)
        if start:
            c.start()
        return c

    def teardown(self, failed):
        self.registry.kill_all()
        for link in self.links:
            link.close()
        self.links = []
        if failed:
            for c in self.clusters:
                for m in c.members:
                    print("---- %s (log %s), last lines:" % (m.name, m.log_path))
                    print(m.log_tail(60))
        for c in self.clusters:
            c.destroy(keep_files=failed)
