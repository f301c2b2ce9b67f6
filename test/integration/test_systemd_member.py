"""cairnd under real systemd, one member on one sandboxed host (sdsandbox.py):
installed as `make install` installs it, with the cairn user from sysusers.d,
the shipped example configuration and the shipped units, changed only by a
drop-in that keeps the host's sysinit.target out of the sandbox.

- a client connecting to cairnd.socket starts the member, is served, and
  `systemctl status` shows the member's STATUS line;
- the journal holds cairnd's events with their CAIRN_* fields, and (once
  the daemon tags them) the MESSAGE_IDs of daemon/msgids.h with their
  catalog text;
- a wedged member is killed by the watchdog and restarted, the sockets stay,
  and no acknowledged write is lost;
- `systemctl reload` makes the member serve a renewed certificate without a
  restart and without dropping a client.
"""
import os
import re
import signal
import subprocess

import pytest

import cluster as cl
import sdsandbox

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _failed(request):
    rep = getattr(request.node, "rep_call", None)
    return rep is None or rep.failed


@pytest.fixture(scope="module")
def tree(root_dir, build_dir, cairnd_path, tmp_path_factory):
    try:
        sdsandbox.check_available()
    except sdsandbox.Unavailable as e:
        pytest.skip("no systemd sandbox on this machine: %s" % e)
    return sdsandbox.installed_tree(root_dir, build_dir, tmp_path_factory.mktemp("install"))


@pytest.fixture
def host(tree, tmp_path, request):
    """A booted sandbox with Cairn installed and the example cairnd.conf in place."""
    h = sdsandbox.CairnHost(tmp_path, "solo")
    h.start()
    try:
        h.install(tree)
        h.run(["cp", "/usr/share/doc/cairn/cairnd.conf.example", "/etc/cairn/cairnd.conf"])
        yield h
    finally:
        failed = _failed(request)
        if failed and h.pid1:
            print("---- journal of sandbox %s" % h.name)
            print(h.journal_text(lines=120))
        h.stop()
        if not failed:
            h.remove_files()


def status_via(host, url, tls=None, wire=None):
    """Status from a fresh connection made inside the sandbox's network."""
    c = host.in_netns(lambda: wire.Client(url, timeout=5, tls=tls))
    with c:
        return c.status()


def test_a_client_activates_the_socket_and_status_shows_in_systemctl(host, wire):
    host.systemctl("start", "cairnd.socket")
    # Starting the client socket brought the peer and admin sockets along;
    # nothing has started the member yet.
    for s in ("cairnd.socket", "cairnd-peer.socket", "cairnd-admin.socket"):
        assert host.show(s, "ActiveState") == "active", s
    assert host.show("cairnd.service", "ActiveState") == "inactive"

    # The first connection starts it, and is served by it.
    st = status_via(host, "tcp://127.0.0.1:2479", wire=wire)
    assert not wire.is_error(st), st
    assert st.header.member_id != 0
    assert host.show("cairnd.service", "ActiveState") == "active"
    assert host.show("cairnd.service", "NRestarts") == "0"

    # It runs as the cairn user of sysusers.d, with its state in /var/lib/cairn.
    pid = host.main_pid("cairnd.service")
    assert pid > 0
    assert host.proc_uid(pid) == host.uid("cairn")
    owner = host.run(["stat", "-c", "%U %a", "/var/lib/cairn/member"]).stdout.split()
    assert owner[0] == "cairn", owner

    # The admin socket (systemd's, owned by cairn, 0600) is served too.
    mode = host.run(["stat", "-c", "%U %a", "/run/cairn/cairnd.sock"]).stdout.split()
    assert mode == ["cairn", "600"], mode
    with wire.Client(host.admin_url(), timeout=5) as c:
        st2 = c.status()
    assert st2.header.member_id == st.header.member_id

    # systemctl status shows cairnd's STATUS= line: name, role, term, leader, revision, applied, health.
    def status_line():
        out = host.systemctl("status", "cairnd.service", check=False).stdout
        m = re.search(r'Status: "([^"]*)"', out)
        return m.group(1) if m and "healthy" in m.group(1) else None
    line = sdsandbox.poll(status_line, 10, "a STATUS line in systemctl status")
    assert re.match(r"default leader, term \d+, leader [0-9a-f]{16}, revision \d+, applied \d+, healthy", line), line
    assert "%016x" % st.header.member_id in line


def test_the_shell_finds_the_member_through_the_admin_socket(host, wire):
    if not os.path.exists(host.path("/usr/bin/cairn")):
        pytest.skip("the cairn shell is not built")
    host.systemctl("start", "cairnd.socket", "cairnd.service")
    member = status_via(host, "tcp://127.0.0.1:2479", wire=wire).header.member_id
    # As root on the member's host, with no options: /run/cairn/cairnd.sock.
    p = host.run(["cairn", "-q", "--format", "csv", "--timeout", "3000", "-c", "SELECT member_id, name FROM status"],
                 check=False)
    assert "%016x" % member in p.stdout and "default" in p.stdout, p.stdout + p.stderr
    p = host.run(["cairn", "-q", "--timeout", "3000", "-c", "SELECT count(*) FROM keys"], check=False)
    assert p.returncode == 0, p.stdout + p.stderr


def test_the_journal_has_cairn_fields(host, wire):
    host.systemctl("start", "cairnd.socket", "cairnd.service")
    member = status_via(host, "tcp://127.0.0.1:2479", wire=wire).header.member_id
    mid = "%016x" % member

    def entries():
        es = host.journal(unit="cairnd.service")
        return es if any(e.get("CAIRN_LEADER") for e in es) else None
    es = sdsandbox.poll(entries, 10, "cairnd's leader event in the journal")
    ours = [e for e in es if e.get("SYSLOG_IDENTIFIER") == "cairnd"]
    assert ours and all(e.get("_SYSTEMD_UNIT") == "cairnd.service" for e in ours)
    serving = [e for e in ours if "serving clients on" in e.get("MESSAGE", "")]
    assert serving and serving[-1].get("CAIRN_MEMBER") == mid, serving
    assert serving[-1].get("CAIRN_CLUSTER"), serving
    lead = [e for e in ours if e.get("CAIRN_LEADER")]
    assert lead[-1]["CAIRN_LEADER"] == mid and int(lead[-1]["CAIRN_TERM"]) >= 1, lead
    # Fields are journal fields: journalctl filters on them.
    filtered = host.journal("CAIRN_LEADER=" + mid, unit="cairnd.service")
    assert filtered and all(e.get("CAIRN_LEADER") == mid for e in filtered)
    assert not host.journal("CAIRN_LEADER=0000000000000000", unit="cairnd.service")


def _msgids():
    ids = {}
    with open(os.path.join(ROOT, "daemon", "msgids.h")) as f:
        for m in re.finditer(r'#define (MSGID_\w+) "([0-9a-f]{32})"', f.read()):
            ids[m.group(1)] = m.group(2)
    return ids


def _daemon_tags_events():
    """True once some daemon source uses the MESSAGE_IDs."""
    d = os.path.join(ROOT, "daemon")
    for name in os.listdir(d):
        if name.endswith(".c"):
            with open(os.path.join(d, name)) as f:
                if "MSGID_" in f.read():
                    return True
    return False


def test_the_journal_has_message_ids_with_catalog_text(host, wire):
    if not _daemon_tags_events():
        pytest.skip("cairnd does not tag its events with daemon/msgids.h yet")
    ids = _msgids()
    host.systemctl("start", "cairnd.socket", "cairnd.service")
    status_via(host, "tcp://127.0.0.1:2479", wire=wire)
    host.systemctl("stop", "cairnd.service")
    host.systemctl("start", "cairnd.service")
    status_via(host, "tcp://127.0.0.1:2479", wire=wire)

    def seen():
        got = {e.get("MESSAGE_ID") for e in host.journal(unit="cairnd.service")}
        want = {ids["MSGID_MEMBER_STARTED"], ids["MSGID_LEADER_ELECTED"], ids["MSGID_MEMBER_STOPPED"]}
        return want <= got
    sdsandbox.poll(seen, 10, "the started, leader and stopped MESSAGE_IDs in the journal")
    # journalctl -x shows the catalog's explanation beside the event.
    out = host.run(["journalctl", "--no-pager", "-x", "-u", "cairnd.service",
                    "MESSAGE_ID=" + ids["MSGID_LEADER_ELECTED"]]).stdout
    assert "Cairn cluster has a leader at term" in out, out[-2000:]
    # Every tagged event carries a known ID.
    known = set(ids.values())
    for e in host.journal(unit="cairnd.service"):
        if e.get("SYSLOG_IDENTIFIER") == "cairnd" and e.get("MESSAGE_ID"):
            assert e["MESSAGE_ID"] in known, e


def _wedge_with_sigstop(host, pid):
    # Every thread stops, the one that would feed the watchdog included.
    os.kill(host.host_pid(pid), signal.SIGSTOP)


def _wedge_node_loop(host, pid):
    # Test builds only (-DCAIRN_DEBUG_FAULTS): the node loop sleeps while
    # <data-dir>/hang-node-loop exists; the other threads go on.
    host.put("/var/lib/cairn/hang-node-loop", "")


FAULTS_BUILD = os.environ.get("CAIRN_FAULTS_BUILD")


@pytest.mark.parametrize("wedge", ["sigstop", "hung-node-loop"])
def test_the_watchdog_restarts_a_wedged_member_keeping_sockets_and_acked_writes(host, cairn_load_path, tmp_path,
                                                                                 wedge):
    if wedge == "hung-node-loop":
        if not FAULTS_BUILD:
            pytest.skip("set CAIRN_FAULTS_BUILD to a build made with CFLAGS=-DCAIRN_DEBUG_FAULTS "
                        "(make BUILD=build/faults CFLAGS=-DCAIRN_DEBUG_FAULTS build/faults/cairnd)")
        host.copy(os.path.join(FAULTS_BUILD, "cairnd"), "/usr/bin/cairnd", 0o755)
    # A short watchdog for the test; the unit's own is 20 s.
    host.dropin("cairnd.service", "[Service]\nWatchdogSec=2s\nTimeoutAbortSec=10s\nLimitCORE=0\n")
    host.systemctl("start", "cairnd.socket", "cairnd.service")
    socket_since = host.show("cairnd.socket", "ActiveEnterTimestampMonotonic")
    pid = host.main_pid("cairnd.service")

    ack = str(tmp_path / "acks")
    out = open(str(tmp_path / "load.out"), "w")
    load = host.popen([cairn_load_path, "put", "--endpoints", "tcp://127.0.0.1:2479", "--total", 10000000,
                       "--inflight", 8, "--ack-log", ack, "--timeout", 90, "--call-timeout", 3000,
                       "--dial-timeout", 1000, "--json"], stdout=out, stderr=subprocess.STDOUT)
    try:
        sdsandbox.poll(lambda: cl.acked_count(ack) >= 300, 20, "300 acknowledged puts")
        (_wedge_with_sigstop if wedge == "sigstop" else _wedge_node_loop)(host, pid)

        def restarted():
            return (host.show("cairnd.service", "NRestarts") == "1" and
                    host.show("cairnd.service", "ActiveState") == "active" and
                    host.main_pid("cairnd.service") not in (0, pid))
        sdsandbox.poll(restarted, 30, "cairnd.service restarted by the watchdog")
        if wedge == "hung-node-loop":
            host.run(["rm", "-f", "/var/lib/cairn/hang-node-loop"])
        # The restarted member serves the load through the same sockets.
        at_restart = cl.acked_count(ack)
        sdsandbox.poll(lambda: cl.acked_count(ack) >= at_restart + 300, 30, "300 more puts after the restart")
    finally:
        load.kill()
        load.wait()
        out.close()
    assert host.show("cairnd.socket", "ActiveState") == "active"
    assert host.show("cairnd.socket", "ActiveEnterTimestampMonotonic") == socket_since, "the socket was restarted"
    text = host.journal_text("cairnd.service", lines=400)
    assert "Watchdog timeout" in text, text[-3000:]

    # Every put the member acknowledged is there with its value.  The load
    # was killed: drop a half-written last line of its log.
    with open(ack) as f:
        data = f.read()
    with open(ack, "w") as f:
        f.write(data[:data.rfind("\n") + 1])
    p = subprocess.run(host.nsenter("n") + [str(cairn_load_path), "check", "--endpoints", "tcp://127.0.0.1:2479",
                                            "--ack-log", ack, "--timeout", "60", "--json"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=90)
    res = cl.LoadResult(p.returncode, p.stdout)
    r = res.assert_no_loss()
    assert r["keys"] >= 600, res


def _serial(host, path):
    return host.run(["openssl", "x509", "-in", path, "-noout", "-serial"]).stdout.strip().split("=")[1].lower()


def _served_serial(host, ca, crt, key):
    """The serial number of the certificate the member presents right now."""
    import socket
    import ssl

    def get():
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(ca)
        ctx.load_cert_chain(crt, key)
        with socket.create_connection(("127.0.0.1", 2479), timeout=5) as s:
            with ctx.wrap_socket(s, server_hostname="localhost") as t:
                der = t.getpeercert(binary_form=True)
        p = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-serial"], input=der,
                           stdout=subprocess.PIPE, check=True)
        return p.stdout.decode().strip().split("=")[1].lower()
    return host.in_netns(get)


def test_reload_serves_a_renewed_certificate_without_a_restart(host, wire):
    # TLS for clients, with the files cairn-certs makes on the member itself
    # (run as root, it gives the member key to the cairn user).
    host.run(["cairn-certs", "-q", "ca"])
    out = host.run(["cairn-certs", "member", "solo"]).stdout
    assert "cert-file = /etc/cairn/tls/solo.crt" in out, out
    host.run(["cairn-certs", "-q", "client", "op"])
    assert host.run(["stat", "-c", "%U %a", "/etc/cairn/tls/solo.key"]).stdout.split() == ["cairn", "600"]
    host.put("/etc/cairn/cairnd.conf", "\n".join([
        "name = solo",
        "listen-client-urls = tls+tcp://127.0.0.1:2479",
        "listen-peer-urls = tcp://127.0.0.1:2480",
        "listen-admin-url = ipc:///run/cairn/cairnd.sock",
        "cert-file = /etc/cairn/tls/solo.crt",
        "key-file = /etc/cairn/tls/solo.key",
        "trusted-ca-file = /etc/cairn/tls/ca.crt",
        "client-cert-auth = true",
        ""]))
    host.systemctl("start", "cairnd.socket", "cairnd.service")
    ca, crt, key = (host.path("/etc/cairn/tls/" + f) for f in ("ca.crt", "client-op.crt", "client-op.key"))
    tls = wire.TLS(ca, crt, key, "localhost")
    before = _serial(host, "/etc/cairn/tls/solo.crt")
    assert _served_serial(host, ca, crt, key) == before
    pid = host.main_pid("cairnd.service")
    c = host.in_netns(lambda: wire.Client("tls+tcp://127.0.0.1:2479", timeout=5, tls=tls))
    with c:
        assert not wire.is_error(c.put(b"before", b"1"))

    out = host.run(["cairn-certs", "renew", "solo"]).stdout
    assert "systemctl reload" in out
    after = _serial(host, "/etc/cairn/tls/solo.crt")
    assert after != before
    host.systemctl("reload", "cairnd.service")
    sdsandbox.poll(lambda: _served_serial(host, ca, crt, key) == after, 10,
                   "the member presenting the renewed certificate")

    # The same process, never restarted, with its data, serving new connections.
    # (Connections open across the reload may be closed: nng 1.5 cannot change
    # a listener's TLS configuration, so cairnd replaces the listener.)
    assert host.main_pid("cairnd.service") == pid
    assert host.show("cairnd.service", "NRestarts") == "0"
    assert host.show("cairnd.service", "ActiveState") == "active"
    c = host.in_netns(lambda: wire.Client("tls+tcp://127.0.0.1:2479", timeout=5, tls=tls))
    with c:
        got = c.get(b"before")
        assert not wire.is_error(got) and got.range.kvs[0].value == b"1", got
        assert not wire.is_error(c.put(b"after", b"2"))
        st = c.status()
    assert not wire.is_error(st) and st.status.leader == st.header.member_id
    assert "reloaded" in host.journal_text("cairnd.service", lines=50)
