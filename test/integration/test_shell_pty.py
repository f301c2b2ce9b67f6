"""cairn interactive, through a pseudo-terminal as a person uses it: a query
typed over several lines, tab completion of a table name, a key prefix from
the cluster and a meta-command, Ctrl-C cancelling a running statement and
clearing a half-typed one (the shell stays up), and the history file."""
import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import termios
import time

import pytest

import cairnshell
import cluster as cluster_mod

ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\x1b[=>]")


@pytest.fixture(scope="session")
def cairn_path(build_dir):
    p = build_dir / "cairn"
    if not p.exists():
        pytest.fail("%s was not built (make builds it from shell/)" % p)
    return p


class Terminal:
    """cairn on a pseudo-terminal it has as its controlling terminal (so the
    terminal turns Ctrl-C into SIGINT); the screen is what it wrote, escape
    sequences removed."""

    def __init__(self, argv, env):
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))

        def child():
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
            cluster_mod._die_with_parent()

        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                                     preexec_fn=child, close_fds=True)
        os.close(slave)
        self.fd = master
        self.raw = b""
        self.mark = 0  # where the output of the last command starts

    def _read(self, timeout):
        r, _, _ = select.select([self.fd], [], [], timeout)
        if r:
            try:
                data = os.read(self.fd, 65536)
            except OSError:  # the child exited and closed the terminal
                data = b""
            self.raw += data
            return bool(data)
        return True

    @property
    def screen(self):
        return ANSI.sub(b"", self.raw).replace(b"\r", b"").decode("utf-8", "replace")

    def since_mark(self):
        return ANSI.sub(b"", self.raw[self.mark:]).replace(b"\r", b"").decode("utf-8", "replace")

    def type(self, text):
        self.mark = len(self.raw)
        os.write(self.fd, text.encode())

    def expect(self, pattern, timeout=20, tail=None):
        """Poll until pattern (a regex) appears in what was written since the last type()
        (in its last `tail` characters only, when given)."""
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern, re.S)
        while True:
            text = self.since_mark()
            m = rx.search(text[-tail:] if tail else text)
            if m:
                return m
            if time.monotonic() >= deadline:
                raise AssertionError("%r not on the screen within %.0f s (cairn is %s); it shows:\n%s"
                                     % (pattern, timeout, self.state(), self.screen[-3000:]))
            if not self._read(0.05) and self.proc.poll() is not None:
                raise AssertionError("cairn exited (%s); the screen:\n%s" % (self.proc.returncode,
                                                                            self.screen[-3000:]))

    def state(self):
        """What the process is doing, for failure messages."""
        try:
            with open("/proc/%d/wchan" % self.proc.pid) as f:
                wchan = f.read()
            with open("/proc/%d/stat" % self.proc.pid) as f:
                st = f.read().split(")")[-1].split()[0]
            return "%s in %s" % (st, wchan)
        except OSError:
            return "gone"

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        os.close(self.fd)


def test_an_interactive_session(cairn_path, member, wire, tmp_path):
    sh = cairnshell.Shell(cairn_path, member.client_url, tmp_path)
    sh.write("INSERT INTO keys(key, value) VALUES ('pty/alpha', 'a'), ('pty/beta', 'b'), ('pty/dir/x', 'x')")
    env = sh.env()
    env["TERM"] = "xterm"
    hist = os.path.join(str(tmp_path), "cairn_history")
    t = Terminal([str(cairn_path), "--endpoints", member.client_url], env)
    try:
        t.expect(r"Connected to .*member m1.*cairn=> $")

        # a query over three lines: the prompt says the statement goes on
        t.type("SELECT key, value\r")
        t.expect(r"cairn-> $")
        t.type("FROM keys\r")
        t.expect(r"cairn-> $")
        t.type("WHERE key LIKE 'pty/%';\r")
        t.expect(r" key +\| value\n-+\+-+\n pty/alpha +\| a\n pty/beta +\| b\n pty/dir/x +\| x\n"
                 r"\(3 rows, revision \d+\)\ncairn=> $")

        # tab completion: a table name, a key prefix from the cluster, a path segment, a meta-command
        t.type("SELECT count(*) AS n FROM statu\t")
        t.expect(r"FROM status $")
        t.type(";\r")
        t.expect(r"\(1 row\)\ncairn=> $")
        t.type("SELECT value FROM keys WHERE key = 'pty/al\t")
        t.expect(r"'pty/alpha' $")
        t.type(";\r")
        t.expect(r"\n a\n\(1 row, revision \d+\)\ncairn=> $")
        t.type("SELECT key FROM keys WHERE key LIKE 'pty/d\t")
        t.expect(r"'pty/dir/$")
        t.type("%';\r")
        t.expect(r" pty/dir/x\n\(1 row, revision \d+\)\ncairn=> $")
        t.type("\\tim\t")
        t.expect(r"\\timing $")
        t.type("\r")
        t.expect(r"Timing is on\.\ncairn=> $")

        # Ctrl-C cancels a statement that runs (here one that never ends, printing rows as it goes)
        t.type("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x FROM c;\r")
        t.expect(r"\n +2000\n")
        t.type("\x03")
        t.expect(r"error: canceled\nTime: [0-9.]+ ms\ncairn=> $", tail=2000)
        assert t.proc.poll() is None
        t.type("SELECT 'still here' AS s;\r")
        t.expect(r"still here\n\(1 row\)\nTime: [0-9.]+ ms\ncairn=> $")

        # Ctrl-C on a half-typed statement forgets it
        t.type("SELECT 1 +\r")
        t.expect(r"cairn-> $")
        t.type("\x03")
        t.expect(r"cairn=> $")
        t.type("SELECT 2 AS two;\r")
        t.expect(r" two\n-+\n +2\n\(1 row\)")

        # and a \watch (when the member serves watches) ends at Ctrl-C, back at the prompt
        if not cairnshell.unsupported(member, wire, wire.pb.Request(
                watch_create=wire.pb.WatchCreateRequest(key=b"probe"))):
            t.type("\\watch pty/\r")
            t.expect(r"watching \"pty/\"")
            with member.client() as c:
                wire.check(c.put("pty/new", "n"), "put")
            t.expect(r"PUT +pty/new = n")
            t.type("\x03")
            t.expect(r"cairn=> $")

        t.type("\\q\r")
        assert t.proc.wait(timeout=10) == 0
    finally:
        t.close()
    with open(hist) as f:
        history = f.read()
    assert "SELECT key, value\nFROM keys\nWHERE key LIKE 'pty/%';" in history or \
        "WHERE key LIKE 'pty/%';" in history, history
    assert "SELECT 2 AS two;" in history and "SELECT 1 +" not in history
