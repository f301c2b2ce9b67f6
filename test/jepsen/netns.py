"""netns: the harness's network -- one "switch" namespace holding a bridge
(and the clients, at <prefix>.254), and one namespace per member slot joined
to the bridge by a veth pair at <prefix>.N.  Each member namespace also has a
mount namespace of its own, so a small tmpfs for the full-disk fault lives
and dies with it; nothing is mounted on the host and `ip netns` (which mounts
/run/netns on the host) is not used.

A namespace is held by `unshare --net --mount --fork --kill-child sleep
infinity`, started with PDEATHSIG: when the harness dies, the holders die
and the kernel removes the namespaces, their links, iptables rules and
mounts.  Faults are iptables rules in a chain of our own (CAIRNJ) inside the
member namespaces, flushed to heal.  Every wait polls with a deadline.
"""
import ctypes
import os
import signal
import subprocess
import time

_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1
CLONE_NEWNET = 0x40000000
POLL = 0.02


class Unavailable(Exception):
    """This machine cannot run the harness (the message says why)."""


def die_with_parent():
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def check_available():
    if os.geteuid() != 0:
        raise Unavailable("needs root to create network namespaces and iptables rules")
    for tool in ("unshare", "nsenter", "ip", "iptables", "mount"):
        if not any(os.access(os.path.join(d, tool), os.X_OK) for d in os.environ.get("PATH", "").split(":")
                   + ["/usr/sbin", "/sbin"]):
            raise Unavailable("the %s command is missing" % tool)
    h = None
    try:
        h = Holder("probe")
        h.run(["ip", "link", "set", "lo", "up"])
        h.run(["iptables", "-L", "-n"])
    except (OSError, subprocess.CalledProcessError, TimeoutError) as e:
        raise Unavailable("cannot create a network namespace with iptables here: %s" % e)
    finally:
        if h:
            h.stop()


class Holder:
    """One network + mount namespace, held by a sleeping process."""

    def __init__(self, name):
        self.name = name
        own = os.readlink("/proc/self/ns/net")
        self.proc = subprocess.Popen(["unshare", "--net", "--mount", "--propagation", "private", "--fork",
                                      "--kill-child", "sleep", "infinity"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, preexec_fn=die_with_parent)
        deadline = time.monotonic() + 10
        while True:
            try:
                if os.readlink("/proc/%d/ns/net" % self.proc.pid) != own:
                    break
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise OSError("unshare for namespace %s exited %d: %s" % (
                    name, self.proc.returncode, self.proc.stderr.read().decode(errors="replace").strip()))
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError("namespace %s not created within 10 s" % name)
            time.sleep(POLL)
        self.pid = self.proc.pid

    def nsenter(self, mount=False):
        return ["nsenter", "-t", str(self.pid), "-n"] + (["-m"] if mount else [])

    def run(self, argv, mount=False, check=True, timeout=30):
        return subprocess.run(self.nsenter(mount) + [str(a) for a in argv], check=check, timeout=timeout,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()  # --kill-child: the sleeper dies too, and the namespaces with the last process
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        if self.proc.stderr:
            self.proc.stderr.close()


class Net:
    """The switch and n member slots (1..n), addresses <prefix>.N."""

    CHAIN = "CAIRNJ"

    def __init__(self, n, prefix="10.77.0"):
        self.prefix = prefix
        self.switch = None
        self.slots = {}
        try:
            self.switch = Holder("switch")
            sw = self.switch
            sw.run(["ip", "link", "set", "lo", "up"])
            sw.run(["ip", "link", "add", "br0", "type", "bridge"])
            sw.run(["ip", "link", "set", "br0", "up"])
            sw.run(["ip", "addr", "add", "%s.254/24" % prefix, "dev", "br0"])
            for i in range(1, n + 1):
                self.add_slot(i)
        except BaseException:
            self.stop()
            raise

    def addr(self, i):
        return "%s.%d" % (self.prefix, i)

    @property
    def client_addr(self):
        return "%s.254" % self.prefix

    def add_slot(self, i):
        h = Holder("m%d" % i)
        self.slots[i] = h
        subprocess.run(["ip", "link", "add", "name", "port%d" % i, "netns", str(self.switch.pid), "type", "veth",
                        "peer", "name", "eth0", "netns", str(h.pid)], check=True,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.switch.run(["ip", "link", "set", "port%d" % i, "master", "br0", "up"])
        h.run(["ip", "link", "set", "lo", "up"])
        h.run(["ip", "addr", "add", "%s/24" % self.addr(i), "dev", "eth0"])
        h.run(["ip", "link", "set", "eth0", "up"])
        h.run(["iptables", "-N", self.CHAIN])
        h.run(["iptables", "-A", "INPUT", "-j", self.CHAIN])
        h.run(["iptables", "-A", "OUTPUT", "-j", self.CHAIN])
        return h

    # ---- faults
    def drop_from(self, i, j):
        """Slot i no longer hears slot j (j still hears i)."""
        self.slots[i].run(["iptables", "-A", self.CHAIN, "-s", self.addr(j), "-j", "DROP"])

    def drop_to(self, i, j):
        """Slot i's packets to slot j are lost."""
        self.slots[i].run(["iptables", "-A", self.CHAIN, "-d", self.addr(j), "-j", "DROP"])

    def cut(self, i, j):
        """No packet between slots i and j, either way."""
        self.drop_from(i, j)
        self.drop_to(i, j)

    def loss(self, i, p):
        """Slot i loses a fraction p of the packets it receives, clients' included."""
        self.slots[i].run(["iptables", "-A", self.CHAIN, "-m", "statistic", "--mode", "random",
                           "--probability", "%.3f" % p, "-j", "DROP"])

    def heal(self):
        for h in self.slots.values():
            h.run(["iptables", "-F", self.CHAIN], check=False)

    def rules(self):
        """Every rule now in place, per slot (for the report when healing fails)."""
        out = {}
        for i, h in self.slots.items():
            p = h.run(["iptables", "-S", self.CHAIN], check=False)
            out[i] = [l for l in p.stdout.decode().splitlines() if not l.startswith("-N")]
        return out

    def enter_switch(self):
        """Move the calling thread (call it from the main thread before starting
        others) into the switch namespace, where the clients are; returns the
        fd of the namespace it was in, for leave()."""
        back = os.open("/proc/self/ns/net", os.O_RDONLY)
        fd = os.open("/proc/%d/ns/net" % self.switch.pid, os.O_RDONLY)
        try:
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, "setns into the switch namespace: %s" % os.strerror(err))
        finally:
            os.close(fd)
        return back

    @staticmethod
    def leave(back):
        if back is None:
            return
        _libc.setns(back, CLONE_NEWNET)
        os.close(back)

    def stop(self):
        for h in list(self.slots.values()):
            h.stop()
        self.slots = {}
        if self.switch:
            self.switch.stop()
            self.switch = None
