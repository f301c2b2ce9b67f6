"""cluster_ns: real cairnd members, each in its own network namespace (a
"slot" of netns.Net), and the harness's control calls to them (Status,
membership, compaction, defragment, alarms) over cairnwire.

A slot keeps its address for the whole run; the member in it may be
replaced (the membership fault removes it and adds a new member with a
fresh data directory and new ports, named m<slot>.<generation>).  Control
calls are made from the switch namespace: the harness's main thread joins it
before it starts any thread (netns.Net.enter_switch).
"""
import os
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "test", "integration"))
import cairnwire as wire  # noqa: E402

from netns import die_with_parent  # noqa: E402

HEARTBEAT_MS = 50
ELECTION_MS = 500  # cairnd needs at least 5x the heartbeat
POLL = 0.05


def poll(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise TimeoutError("%s not reached within %.1f s" % (what, timeout))
        time.sleep(POLL)


def child_env():
    drop = ("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "JOURNAL_STREAM",
            "STATE_DIRECTORY", "CONFIGURATION_DIRECTORY", "WATCHDOG_USEC", "WATCHDOG_PID")
    return {k: v for k, v in os.environ.items() if not k.startswith("CAIRN_") and k not in drop}


def port_of(gen):
    """The client port of a slot's member of generation gen.
    The first member's port is never used again, so sget processes pinned to it
    only ever meet that member; replacements alternate between two others, so
    the recorder (which knows all three per slot) reaches every slot all along."""
    return 2379 if gen == 0 else (2389 if gen % 2 else 2399)


class Member:
    def __init__(self, cluster, slot, gen=0):
        self.cluster = cluster
        self.slot = slot
        self.gen = gen
        self.name = "m%d" % slot if gen == 0 else "m%d.%d" % (slot, gen)
        self.client_port = port_of(gen)
        # A fresh peer URL per generation: cairnd derives a member's ID from its
        # peer URLs alone, and refuses to add back the ID of a removed member.
        self.peer_port = 3000 + gen
        self.data_dir = os.path.join(cluster.slot_dir(slot), self.name)
        self.log_path = os.path.join(cluster.dir, self.name + ".log")
        self.state = "new"
        self.initial_cluster = None
        self.proc = None
        self.paused = False
        self.expect_exit = False  # set by whoever kills or removes it on purpose
        self.exits = []           # (status, expected) of every exit seen
        self.id = 0

    @property
    def addr(self):
        return self.cluster.net.addr(self.slot)

    @property
    def client_url(self):
        return "tcp://%s:%d" % (self.addr, self.client_port)

    @property
    def peer_url(self):
        return "tcp://%s:%d" % (self.addr, self.peer_port)

    def argv(self):
        c = self.cluster
        return [c.cairnd, "--name=" + self.name, "--data-dir=" + self.data_dir,
                "--listen-client-urls=" + self.client_url, "--advertise-client-urls=" + self.client_url,
                "--listen-peer-urls=" + self.peer_url, "--initial-advertise-peer-urls=" + self.peer_url,
                "--listen-admin-url=ipc://" + os.path.join(c.sock_dir, self.name + ".sock"),
                "--initial-cluster=" + (self.initial_cluster or c.initial_cluster()),
                "--initial-cluster-state=" + self.state,
                "--initial-cluster-token=cairn-jepsen",
                "--heartbeat-interval=%d" % HEARTBEAT_MS, "--election-timeout=%d" % ELECTION_MS,
                "--snapshot-count=%d" % c.snapshot_count,
                "--snapshot-catchup-entries=%d" % c.snapshot_catchup,
                "--request-timeout=%dms" % c.request_timeout_ms,
                "--corrupt-check-time=5s",
                "--insecure-listen=true",  # plain tcp:// inside private namespaces
                "--log-target=stderr", "--log-level=info"]

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self):
        assert not self.running, "%s is already running" % self.name
        os.makedirs(os.path.dirname(self.data_dir), exist_ok=True)
        self.expect_exit = False
        self.paused = False
        with open(self.log_path, "a") as log:
            log.write("==== cairnd %s started by the harness at %s\n" % (self.name, time.strftime("%H:%M:%S")))
            log.flush()
            self.proc = subprocess.Popen(self.cluster.net.slots[self.slot].nsenter(mount=True) + self.argv(),
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         env=child_env(), preexec_fn=die_with_parent)
        return self

    def note_exit(self):
        """If the process ended since we last looked, remember how (once)."""
        if self.proc is not None and self.proc.poll() is not None and not getattr(self.proc, "_noted", False):
            self.proc._noted = True
            self.exits.append((self.proc.returncode, self.expect_exit))

    def kill(self):
        self.expect_exit = True
        if self.running:
            if self.paused:
                self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
        if self.proc:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            self.note_exit()
        self.paused = False

    def terminate(self, timeout=30):
        """SIGTERM: the member drains and exits.  Anything but a clean exit
        (status 0 within timeout; past it, kill -9) counts as a crash."""
        if self.running:
            if self.paused:
                self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
            self.expect_exit = self.proc.returncode == 0
            self.note_exit()
        self.expect_exit = True
        self.paused = False

    def pause(self):
        if self.running:
            self.proc.send_signal(signal.SIGSTOP)
            self.paused = True

    def resume(self):
        if self.proc is not None and self.paused:
            try:
                self.proc.send_signal(signal.SIGCONT)
            except ProcessLookupError:
                pass
        self.paused = False

    def log_tail(self, n=30):
        try:
            with open(self.log_path, errors="replace") as f:
                return "\n".join(l[:300] for l in f.read().splitlines()[-n:])
        except OSError:
            return ""

    # ---- control calls
    def call(self, req, timeout=2.0):
        with wire.Client(self.client_url, timeout=timeout) as c:
            return c.call(req, timeout)

    def status(self, timeout=1.0):
        if not self.running or self.paused:
            return None
        try:
            r = self.call(wire.pb.Request(status=wire.pb.StatusRequest()), timeout)
        except (OSError, wire.WireError):
            return None
        if wire.is_error(r):
            return None
        self.id = r.header.member_id
        return r


class Cluster:
    def __init__(self, net, n, cairnd, workdir, snapshot_count=300, snapshot_catchup=50,
                 request_timeout_ms=3000, disk_slot=None, disk_mb=0):
        self.net = net
        self.cairnd = cairnd
        self.dir = workdir
        self.sock_dir = os.path.join(workdir, "sock")
        os.makedirs(self.sock_dir, exist_ok=True)
        self.snapshot_count = snapshot_count
        self.snapshot_catchup = snapshot_catchup
        self.request_timeout_ms = request_timeout_ms
        self.disk_slot = disk_slot
        self.retired = []  # members removed from the cluster (membership fault)
        self.members = {i: Member(self, i) for i in range(1, n + 1)}
        if disk_slot:
            # The slot's directory is a small tmpfs inside its mount namespace only.
            d = self.slot_dir(disk_slot)
            os.makedirs(d, exist_ok=True)
            net.slots[disk_slot].run(["mount", "-t", "tmpfs", "-o", "size=%dm" % disk_mb, "cairn-jepsen-disk", d],
                                     mount=True)

    def slot_dir(self, slot):
        return os.path.join(self.dir, "s%d" % slot)

    def slot_path(self, slot, path):
        """The host's path to path as the slot's mount namespace sees it."""
        return "/proc/%d/root%s" % (self.net.slots[slot].pid, path)

    def __iter__(self):
        return iter(self.members.values())

    def all_members(self):
        return list(self.members.values()) + self.retired

    def initial_cluster(self):
        return ",".join("%s=%s" % (m.name, m.peer_url) for m in self)

    def endpoints(self):
        return [m.client_url for m in self]

    def recorder_endpoints(self):
        """(url, name) of every endpoint a slot will ever have: the first members'
        (sget processes pin to these) then the two replacement ports of each slot."""
        out = []
        for gen, tag in ((0, ""), (1, "b"), (2, "c")):
            for slot in sorted(self.members):
                out.append(("tcp://%s:%d" % (self.net.addr(slot), port_of(gen)), "m%d%s" % (slot, tag)))
        return out

    def start(self, timeout=30):
        for m in self:
            m.start()
        return self.wait_healthy(timeout)

    def up(self):
        return [m for m in self if m.running and not m.paused]

    def statuses(self):
        out = {}
        for m in self.up():
            st = m.status()
            if st is not None:
                out[m.slot] = st
        return out

    def leader(self):
        """The member that says it leads, at the highest term among those that do; or None."""
        best, term = None, -1
        for slot, st in self.statuses().items():
            if st.status.leader == st.header.member_id and st.status.raft_term > term:
                best, term = self.members[slot], st.status.raft_term
        return best

    def agreed_leader(self):
        """The leader every reachable member names, or None."""
        sts = self.statuses()
        if not sts:
            return None
        views = {st.status.leader for st in sts.values()}
        if len(views) != 1:
            return None
        lid = views.pop()
        for slot, st in sts.items():
            if st.header.member_id == lid:
                return self.members[slot]
        return None

    def wait_healthy(self, timeout=60):
        """Every member running answers Status and all agree on a leader among them."""
        def ok():
            for m in self:
                if m.proc is not None and m.proc.poll() is not None and not m.expect_exit:
                    raise TimeoutError("%s exited with status %s" % (m.name, m.proc.returncode))
            lead = self.agreed_leader()
            if lead is None:
                return None
            return lead if len(self.statuses()) == len(self.up()) == len(self.members) else None
        return poll(ok, timeout, "every member up and agreeing on a leader")

    def followers(self, lead=None):
        lead = lead or self.leader()
        return [m for m in self.up() if m is not lead]

    def call_any(self, req, timeout=3.0, members=None, ok_errors=()):
        """The first answer that is not an error (or is one of ok_errors), trying each member; else the last error."""
        last = None
        for m in members or self.up():
            try:
                r = m.call(req, timeout)
            except (OSError, wire.WireError) as e:
                last = e
                continue
            if not wire.is_error(r) or wire.error_name(r.error.code) in ok_errors:
                return r
            last = r
        return last

    def kill_all(self):
        for m in self.all_members():
            m.kill()
