"""sdsandbox: real systemd 252 as PID 1 of private namespaces, for the tests
of Cairn's units (test_systemd*.py).  PLATFORM-NOTES.md has the recipe and
the facts it rests on.

A Sandbox is one "host": its own PID, mount, network, UTS, IPC and cgroup
namespaces, a cgroup v2 directory of its own, and systemd booting a small
target that wants journald.  /etc, /usr and /var are overlays whose upper
layers live in the test's directory, so `make install`-like copies, users
from sysusers.d, /etc/cairn and the state under /var/lib all stay inside;
/run, /tmp, /dev, /etc/systemd/system and the journal are tmpfs.  Nothing
is mounted, written or left on the host: the mounts die with the mount
namespace, the processes with PID 1 (the launcher is `unshare --kill-child`
with PDEATHSIG), and stop() removes the cgroup directory.

A Switch is a network namespace with a bridge; link() gives a sandbox an
eth0 with an address on it, so several sandboxes are several hosts.

Everything polls with a deadline; nothing sleeps for a condition.
"""
import ctypes
import json
import os
import shutil
import signal
import subprocess
import threading
import time

POLL = 0.05
_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1
_CLONE_NEWNET = 0x40000000
SYSTEMD = "/lib/systemd/systemd"


class Unavailable(Exception):
    """This machine cannot run the sandbox; the message says why (tests skip)."""


def poll(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise TimeoutError("%s not reached within %.1f s" % (what, timeout))
        time.sleep(POLL)


def _cgroup2_root():
    """The cgroup v2 mount and our place in it, for a hybrid or a pure v2 host."""
    for mnt in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
        try:
            if os.statvfs(mnt) and _fstype(mnt) == "cgroup2":
                break
        except OSError:
            continue
    else:
        raise Unavailable("no cgroup v2 hierarchy (/sys/fs/cgroup or /sys/fs/cgroup/unified)")
    own = "/"
    with open("/proc/self/cgroup") as f:
        for line in f:
            if line.startswith("0::"):
                own = line[3:].strip()
    return mnt, own


def _fstype(path):
    best, kind = "", None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            mp = parts[4]
            fs = parts[parts.index("-") + 1]
            if (path == mp or path.startswith(mp.rstrip("/") + "/")) and len(mp) >= len(best):
                best, kind = mp, fs
    return kind


def check_available():
    """Raise Unavailable with the reason if the sandbox cannot run here."""
    if os.geteuid() != 0:
        raise Unavailable("needs root (namespaces, mounts, cgroups)")
    for tool in ("unshare", "nsenter", "systemctl", "journalctl", "ip", "mount"):
        if not shutil.which(tool):
            raise Unavailable("the %s command is missing" % tool)
    if not os.access(SYSTEMD, os.X_OK):
        raise Unavailable("%s is missing (Debian package systemd)" % SYSTEMD)
    mnt, own = _cgroup2_root()
    probe = os.path.join(mnt, own.lstrip("/"), "cairn-probe-%d" % os.getpid())
    try:
        os.mkdir(probe)
        os.rmdir(probe)
    except OSError as e:
        raise Unavailable("cannot create a cgroup v2 directory under %s (no delegation): %s"
                          % (os.path.dirname(probe), e))
    with open("/proc/filesystems") as f:
        if "overlay" not in f.read():
            raise Unavailable("the kernel has no overlay file system")


# The init script: PID 1 of the new namespaces until it execs systemd.
# $1: the sandbox's directory on the host, $2: the host name.
INIT = r"""
set -e
dir=$1
mount -n -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
mkdir -p /run/sandbox
mount -n --bind "$dir" /run/sandbox
dir=/run/sandbox   # /tmp, where the host's directory may be, is covered below
# A minimal /dev.
mkdir /run/dev
mount -n -t tmpfs -o mode=0755,nosuid tmpfs /run/dev
mknod -m 666 /run/dev/null c 1 3
mknod -m 666 /run/dev/zero c 1 5
mknod -m 666 /run/dev/full c 1 7
mknod -m 666 /run/dev/random c 1 8
mknod -m 666 /run/dev/urandom c 1 9
mknod -m 666 /run/dev/tty c 5 0
mkdir /run/dev/pts /run/dev/shm
mount -n -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts /run/dev/pts
ln -s pts/ptmx /run/dev/ptmx
touch /run/dev/console
mount -n --bind /dev/null /run/dev/console
ln -s /proc/self/fd /run/dev/fd
mount -n --move /run/dev /dev
# Our own sysfs (we have our own network namespace), cgroup2 rooted at our
# cgroup namespace, read-only /proc/sys.
mount -n -t sysfs -o ro,nosuid,nodev,noexec sysfs /sys
mount -n -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup
mount -n --bind /proc/sys /proc/sys
mount -n -o remount,bind,ro /proc/sys
# /etc, /usr and /var: the host's, with writes going to our directory.
for d in etc usr var; do
    mkdir -p "$dir/$d.upper" "$dir/$d.work"
    mount -n -t overlay overlay -o "lowerdir=/$d,upperdir=$dir/$d.upper,workdir=$dir/$d.work" "/$d"
done
mount -n -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp
mount -n -t tmpfs -o mode=0755 tmpfs /etc/systemd/system
mkdir -p /var/log/journal
mount -n -t tmpfs -o mode=0755 tmpfs /var/log/journal
mount -n -t tmpfs -o mode=0755 tmpfs /var/lib/systemd
hostname "$2"
ip link set lo up
mkdir -p /run/systemd/system
cp "$dir/boot/"* /run/systemd/system/
exec env -i container=cairn-test PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    /lib/systemd/systemd --unit=sandbox.target --log-target=journal --log-level=info
"""

BOOT_TARGET = """[Unit]
Description=Cairn test sandbox
Wants=systemd-journald.service systemd-journald.socket
After=systemd-journald.service
AllowIsolate=yes
"""


def _preexec(cgroup):
    def run():
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))
        os.setsid()
    return run


class Sandbox:
    """One systemd host.  Use start(), then install files with put()/copy(),
    drive it with systemctl()/run(), read journal(); always stop()."""

    def __init__(self, workdir, name="host", hostname=None):
        self.name = name
        self.hostname = hostname or name
        self.dir = os.path.join(str(workdir), "sandbox-" + name)
        self.proc = None
        self.pid1 = None
        self.cgroup = None
        self.log_path = os.path.join(self.dir, "launcher.log")

    # ---- life
    def start(self, timeout=20):
        check_available()
        os.makedirs(os.path.join(self.dir, "boot"), exist_ok=True)
        with open(os.path.join(self.dir, "boot", "sandbox.target"), "w") as f:
            f.write(BOOT_TARGET)
        mnt, own = _cgroup2_root()
        self.cgroup = os.path.join(mnt, own.lstrip("/"), "cairn-sd-%d-%s-%d" % (os.getpid(), self.name,
                                                                              int(time.monotonic() * 1000)))
        os.mkdir(self.cgroup)
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                ["unshare", "--fork", "--kill-child", "--pid", "--mount", "--mount-proc", "--net", "--uts",
                 "--ipc", "--cgroup", "--propagation", "private",
                 "sh", "-c", INIT, "init", self.dir, self.hostname],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                preexec_fn=_preexec(self.cgroup))
        try:
            self.pid1 = poll(self._find_pid1, timeout, "the sandbox's PID 1")
            poll(self._booted, timeout, "systemd in sandbox %s answering" % self.name)
        except Exception:
            self.stop()
            raise
        return self

    def _find_pid1(self):
        if self.proc.poll() is not None:
            raise RuntimeError("the sandbox launcher exited (%s): %s" % (self.proc.returncode, self.launcher_log()))
        try:
            with open("/proc/%d/task/%d/children" % (self.proc.pid, self.proc.pid)) as f:
                kids = f.read().split()
        except OSError:
            return None
        if not kids:
            return None
        pid = int(kids[0])
        try:
            with open("/proc/%d/comm" % pid) as f:
                return pid if f.read().strip() == "systemd" else None
        except OSError:
            return None

    def _booted(self):
        if self.proc.poll() is not None:
            raise RuntimeError("the sandbox exited (%s): %s" % (self.proc.returncode, self.launcher_log()))
        p = self.run(["systemctl", "is-system-running"], check=False, timeout=10)
        return p.stdout.strip() in ("running", "degraded")

    def launcher_log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-3000:]
        except OSError:
            return ""

    def stop(self, timeout=15):
        """Power the sandbox off (SIGRTMIN+4 to its PID 1), kill what is left,
        remove its cgroup.  Safe to call twice and after a failed start."""
        if self.proc is not None:
            if self.proc.poll() is None and self.pid1:
                try:
                    os.kill(self.pid1, signal.SIGRTMIN + 4)
                except ProcessLookupError:
                    pass
                try:
                    self.proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    pass
            if self.proc.poll() is None:
                self.proc.kill()  # --kill-child: PID 1 dies, and with it the whole PID namespace
                self.proc.wait(timeout=30)
        if self.cgroup:
            self._kill_cgroup()
            self._remove_cgroup(self.cgroup)
            self.cgroup = None
        self.pid1 = None

    def _kill_cgroup(self):
        """Anything still in the cgroup tree (there should be nothing) is killed."""
        kill = os.path.join(self.cgroup, "cgroup.kill")
        if os.path.exists(kill):
            try:
                with open(kill, "w") as f:
                    f.write("1")
            except OSError:
                pass
        def empty():
            for root, _dirs, files in os.walk(self.cgroup):
                try:
                    with open(os.path.join(root, "cgroup.procs")) as f:
                        if f.read().strip():
                            return False
                except OSError:
                    pass
            return True
        try:
            poll(empty, 10, "the sandbox's cgroup to empty")
        except TimeoutError:
            pass

    @staticmethod
    def _remove_cgroup(path):
        for root, dirs, _files in os.walk(path, topdown=False):
            for d in dirs:
                try:
                    os.rmdir(os.path.join(root, d))
                except OSError:
                    pass
        try:
            os.rmdir(path)
        except OSError:
            pass

    def remove_files(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    # ---- files inside
    def path(self, p):
        """The host's path to p inside the sandbox (through its PID 1's root)."""
        return "/proc/%d/root%s" % (self.pid1, p)

    def put(self, p, text, mode=0o644, owner=None):
        """Write text to p inside (directories made as needed)."""
        self.run(["mkdir", "-p", os.path.dirname(p)])
        host = self.path(p)
        with open(host, "w") as f:
            f.write(text)
        os.chmod(host, mode)
        if owner:
            self.run(["chown", owner, p])

    def copy(self, src, p, mode=0o644):
        self.run(["mkdir", "-p", os.path.dirname(p)])
        shutil.copyfile(src, self.path(p))
        os.chmod(self.path(p), mode)

    def read(self, p):
        with open(self.path(p), errors="replace") as f:
            return f.read()

    # ---- commands inside
    def nsenter(self, namespaces="mpnuiC"):
        return ["nsenter", "-t", str(self.pid1)] + ["-" + c for c in namespaces]

    def run(self, argv, check=True, timeout=60, input=None, namespaces="mpnuiC", env=None):
        """Run argv inside (every namespace by default); a CompletedProcess with text output."""
        e = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "SYSTEMD_PAGER": "cat",
             "SYSTEMD_COLORS": "0", "SYSTEMD_LOG_COLOR": "0"}
        e.update(env or {})
        p = subprocess.run(self.nsenter(namespaces) + [str(a) for a in argv], input=input,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout, env=e)
        if check and p.returncode != 0:
            raise AssertionError("in sandbox %s: %s exited %d\nstdout: %s\nstderr: %s"
                                 % (self.name, " ".join(map(str, argv)), p.returncode, p.stdout[-2000:],
                                    p.stderr[-2000:]))
        return p

    def popen(self, argv, namespaces="n", **kw):
        """A background process inside some namespaces (by default the network only)."""
        kw.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.Popen(self.nsenter(namespaces) + [str(a) for a in argv],
                                preexec_fn=lambda: _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), **kw)

    def systemctl(self, *args, check=True, timeout=60):
        return self.run(["systemctl", "--no-pager", "--no-ask-password"] + list(args), check=check,
                        timeout=timeout)

    def show(self, unit, prop):
        return self.systemctl("show", "-p", prop, "--value", unit).stdout.strip()

    def main_pid(self, unit):
        return int(self.show(unit, "MainPID") or 0)

    def wait_state(self, unit, states, timeout=30):
        """Poll until the unit's ActiveState is one of states; return it."""
        states = (states,) if isinstance(states, str) else tuple(states)
        def ok():
            s = self.show(unit, "ActiveState")
            return s if s in states else None
        try:
            return poll(ok, timeout, "%s %s" % (unit, "/".join(states)))
        except TimeoutError as e:
            raise TimeoutError("%s in sandbox %s\n%s" % (e, self.name, self.journal_text(unit)))

    def journal(self, *match, unit=None):
        """Journal entries (dicts from -o json), oldest first, of unit and matches."""
        argv = ["journalctl", "--no-pager", "-o", "json"]
        if unit:
            argv += ["-u", unit]
        p = self.run(argv + list(match), check=False)
        out = []
        for line in p.stdout.splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def journal_text(self, unit=None, lines=60):
        argv = ["journalctl", "--no-pager", "-n", str(lines)]
        if unit:
            argv += ["-u", unit]
        p = self.run(argv, check=False)
        return p.stdout if p.returncode == 0 else "%s(journalctl: %s)" % (p.stdout, p.stderr.strip())

    # ---- the network namespace
    def in_netns(self, fn, *args):
        """fn(*args) run inside the sandbox's network namespace (see in_netns)."""
        return in_netns(self.pid1, fn, *args)


def in_netns(pid, fn, *args):
    """fn(*args) run on a thread that has joined the network namespace of
    process pid: sockets it makes live there and can be used from any thread."""
    result = {}

    def body():
        try:
            fd = os.open("/proc/%d/ns/net" % pid, os.O_RDONLY)
            try:
                if _libc.setns(fd, _CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns into the network namespace of %d" % pid)
            finally:
                os.close(fd)
            result["v"] = fn(*args)
        except BaseException as e:  # handed to the caller
            result["e"] = e
    t = threading.Thread(target=body)
    t.start()
    t.join()
    if "e" in result:
        raise result["e"]
    return result["v"]


class Switch:
    """A network namespace with a bridge: the LAN the sandboxes share."""

    def __init__(self, prefix="10.77.0"):
        self.prefix = prefix
        self.proc = subprocess.Popen(["unshare", "--net", "--fork", "--kill-child", "sleep", "infinity"],
                                     stdin=subprocess.DEVNULL,
                                     preexec_fn=lambda: _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0))
        self.pid = poll(self._child, 10, "the switch namespace")
        self._ip("link", "add", "br0", "type", "bridge")
        self._ip("link", "set", "br0", "up")
        self._ip("link", "set", "lo", "up")
        self.ports = {}

    def _child(self):
        try:
            with open("/proc/%d/task/%d/children" % (self.proc.pid, self.proc.pid)) as f:
                kids = f.read().split()
        except OSError:
            return None
        return int(kids[0]) if kids else None

    def _ip(self, *args, pid=None):
        subprocess.run(["nsenter", "-t", str(pid or self.pid), "-n", "ip", *args], check=True,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def link(self, sb, n):
        """Give sandbox sb an eth0 at <prefix>.n/24, plugged into the bridge."""
        port = "port%d" % n
        subprocess.run(["ip", "link", "add", "name", port, "netns", str(self.pid), "type", "veth",
                        "peer", "name", "eth0", "netns", str(sb.pid1)], check=True,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self._ip("link", "set", port, "master", "br0", "up")
        self._ip("addr", "add", "%s.%d/24" % (self.prefix, n), "dev", "eth0", pid=sb.pid1)
        self._ip("link", "set", "eth0", "up", pid=sb.pid1)
        self.ports[n] = port
        return "%s.%d" % (self.prefix, n)

    def add_client(self, n=254):
        """An address for the switch itself, so clients can run in its namespace; returns it."""
        self._ip("addr", "add", "%s.%d/24" % (self.prefix, n), "dev", "br0")
        return "%s.%d" % (self.prefix, n)

    def nsenter(self):
        return ["nsenter", "-t", str(self.pid), "-n"]

    def in_netns(self, fn, *args):
        return in_netns(self.pid, fn, *args)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


# ------------------------------------------------------------------ Cairn on a sandbox

_trees = {}


def installed_tree(root_dir, build_dir, tmp_dir):
    """`make install DESTDIR=<tmp_dir>/dest PREFIX=/usr`, once per build dir
    in a session: what a package of Cairn would put on a host."""
    key = str(build_dir)
    if key not in _trees:
        dest = os.path.join(str(tmp_dir), "dest")
        p = subprocess.run(["make", "--no-print-directory", "-C", str(root_dir), "install", "BUILD=" + str(build_dir),
                            "DESTDIR=" + dest, "PREFIX=/usr", "SANITIZE=" + os.environ.get("CAIRN_SANITIZE", "")],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if p.returncode != 0:
            raise AssertionError("make install failed:\n" + p.stdout[-3000:])
        _trees[key] = dest
    return _trees[key]


# The units, and the drop-in every one of them gets in a sandbox: the
# installed units keep their normal dependencies, which would pull the
# host's sysinit.target into the sandbox.
CAIRN_UNITS = ("cairnd.service", "cairnd.socket", "cairnd-peer.socket", "cairnd-admin.socket",
               "cairnd@.service", "cairnd@.socket", "cairnd-peer@.socket", "cairnd-admin@.socket")
SANDBOX_DROPIN = "[Unit]\nDefaultDependencies=no\n"


class CairnHost(Sandbox):
    """A sandbox with Cairn installed as a package would install it: the
    files of `make install`, the cairn user from sysusers.d, the directories
    from tmpfiles.d, the journal catalog."""

    def install(self, tree):
        subprocess.run(["cp", "-a", os.path.join(tree, "usr") + "/.", self.path("/usr/")], check=True)
        self.run(["systemd-sysusers", "/usr/lib/sysusers.d/cairn.conf"])
        self.run(["systemd-tmpfiles", "--create", "/usr/lib/tmpfiles.d/cairn.conf"])
        self.run(["journalctl", "--update-catalog"])
        for u in CAIRN_UNITS:
            self.put("/run/systemd/system/%s.d/50-sandbox.conf" % u, SANDBOX_DROPIN)
        self.systemctl("daemon-reload")
        return self

    def dropin(self, unit, text, name="60-test.conf", reload=True):
        """A drop-in for unit, as `systemctl edit` would make it."""
        self.put("/etc/systemd/system/%s.d/%s" % (unit, name), text)
        if reload:
            self.systemctl("daemon-reload")

    def uid(self, user):
        return int(self.run(["id", "-u", user]).stdout)

    def proc_uid(self, pid):
        """The real uid of a process inside, as the host sees it."""
        with open("/proc/%d/status" % self.host_pid(pid)) as f:
            for line in f:
                if line.startswith("Uid:"):
                    return int(line.split()[1])
        return None

    def host_pid(self, pid):
        """The host's PID of the sandbox's process pid (MainPID is in the sandbox's PID namespace)."""
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open("/proc/%s/status" % entry) as f:
                    for line in f:
                        if line.startswith("NSpid:"):
                            ids = line.split()[1:]
                            if len(ids) >= 2 and int(ids[-1]) == pid and self._in_our_pidns(entry):
                                return int(entry)
                            break
            except OSError:
                continue
        raise LookupError("no process %d in sandbox %s" % (pid, self.name))

    def _in_our_pidns(self, hostpid):
        try:
            return os.readlink("/proc/%s/ns/pid" % hostpid) == os.readlink("/proc/%d/ns/pid" % self.pid1)
        except OSError:
            return False

    def admin_url(self, instance=None):
        """The admin socket's ipc:// URL as the host reaches it."""
        p = "/run/cairn/%s/cairnd.sock" % instance if instance else "/run/cairn/cairnd.sock"
        return "ipc://" + self.path(p)
