"""cairnshell: run build/cairn against test members and read what it prints.

Shell(path, member, tmp) runs `cairn --endpoints ... --format json -c ...`
and parses its output: with --format json every statement prints one JSON
array on one line (rows, or a one-object summary for statements without
rows).  Tests check results through it and the member's own counters
through cairnwire.
"""
import json
import os
import subprocess

import cluster as cluster_mod


class Result:
    """A finished cairn run: exit status, stdout, stderr and the JSON lines of stdout."""

    def __init__(self, argv, proc):
        self.argv = argv
        self.rc = proc.returncode
        self.out = proc.stdout
        self.err = proc.stderr
        self.json = []
        for line in self.out.splitlines():
            if line.startswith("["):
                self.json.append(json.loads(line))

    def __repr__(self):
        return "cairn %s\nexit %d\nstdout:\n%s\nstderr:\n%s" % (self.argv[1:], self.rc, self.out, self.err)


class Shell:
    """cairn pointed at one member (or a list of endpoints), its history kept out of $HOME."""

    def __init__(self, path, endpoints, tmp, tls=None):
        self.path = str(path)
        self.endpoints = endpoints
        self.tmp = str(tmp)
        self.tls = tls  # (cacert, cert, key, server_name) or None

    def env(self):
        e = cluster_mod.child_env()
        e["HOME"] = self.tmp
        e["CAIRN_HISTFILE"] = os.path.join(self.tmp, "cairn_history")
        e["LC_ALL"] = "C.UTF-8"  # display widths and the cut marker are UTF-8's
        return e

    def argv(self, fmt="json", extra=()):
        a = [self.path, "--endpoints", self.endpoints, "--format", fmt]
        if self.tls:
            ca, crt, key, name = self.tls
            a += ["--cacert", ca, "--cert", crt, "--key", key, "--server-name", name]
        return a + list(extra)

    def run(self, *cmds, fmt="json", extra=(), stdin=None, timeout=60):
        """Run each of cmds with -c; returns a Result whatever the exit status."""
        a = self.argv(fmt, extra)
        for c in cmds:
            a += ["-c", c]
        p = subprocess.run(a, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           env=self.env(), timeout=timeout, text=True)
        return Result(a, p)

    def ok(self, *cmds, **kw):
        """Run cmds, insist on exit 0, return the Result."""
        r = self.run(*cmds, **kw)
        assert r.rc == 0 and not r.err.startswith("error"), r
        return r

    def sql(self, *cmds):
        """The JSON arrays the statements printed, in order (exit 0 insisted on)."""
        return self.ok(*cmds).json

    def rows(self, query):
        """The rows of one query."""
        out = self.sql(query)
        assert len(out) == 1, out
        return out[0]

    def write(self, stmt):
        """One write statement's summary object: {"command", "rows", "revision"}."""
        out = self.sql(stmt)
        assert len(out) == 1 and len(out[0]) == 1 and "command" in out[0][0], out
        return out[0][0]

    def fails(self, *cmds, **kw):
        """Run cmds, insist on a non-zero exit with one error line; returns that line."""
        r = self.run(*cmds, **kw)
        assert r.rc != 0, r
        lines = [ln for ln in r.err.splitlines() if ln.startswith("error: ")]
        assert lines, r
        return lines[-1]

    def session(self, fmt="json", extra=()):
        """A cairn reading statements from a pipe (the caller writes, reads, closes)."""
        return Session(subprocess.Popen(self.argv(fmt, extra), stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env(),
                                        text=True, bufsize=1, preexec_fn=cluster_mod._die_with_parent))


class Session:
    """Statements typed into a running cairn one at a time, answers read back."""

    def __init__(self, proc):
        self.proc = proc

    def send(self, stmt):
        """Send one statement; return the JSON array it printed."""
        self.proc.stdin.write(stmt + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, "cairn exited: %s" % self.finish()
        return json.loads(line)

    def finish(self, last=None, timeout=30):
        """Send last (if any), close stdin, wait; returns (exit status, stdout, stderr)."""
        if last is not None:
            self.proc.stdin.write(last + "\n")
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        try:
            out = self.proc.stdout.read()
            err = self.proc.stderr.read()
            rc = self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        return rc, out, err


def counters(member):
    """(ranges_served, point_ranges_served) from the member's Status."""
    st = cluster_mod.poll(member.status, 10, "%s answering Status" % member.name)
    return st.status.ranges_served, st.status.point_ranges_served


def unsupported(member, wire, req):
    """The member's message if it answers req with UNSUPPORTED (issue 7 not there yet), else None."""
    with member.client() as c:
        r = c.call(req)
    if wire.is_error(r) and r.error.code == wire.ERRORS["UNSUPPORTED"]:
        return r.error.message or "UNSUPPORTED"
    return None
