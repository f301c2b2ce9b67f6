"""The shell's auth tables and commands (issue 12) against a real member:
users, roles and permissions written with INSERT/UPDATE/DELETE and read
back with SELECT; \\auth on|off; \\login reading the password from stdin
when not on a terminal; root on the ipc socket without a login; a logged-in
user's reads and writes inside and outside its permissions; a password
changed with UPDATE; and the re-authentication when the token expired.

Most runs go over tcp, where root logs in."""
import time

import pytest

import cairnshell

ROOT_PW = "rootpw"


@pytest.fixture(scope="session")
def cairn_path(build_dir):
    p = build_dir / "cairn"
    if not p.exists():
        pytest.fail("%s was not built (make builds it from shell/)" % p)
    return p


class Root:
    """cairn over tcp that logs in as root first (the password on stdin)."""

    def __init__(self, sh):
        self.sh = sh

    def ok(self, *cmds, **kw):
        return self.sh.ok("\\login root", *cmds, stdin=ROOT_PW + "\n", **kw)

    def rows(self, query):
        out = self.ok(query).json
        assert len(out) == 1, out
        return out[0]

    def fails(self, *cmds):
        return self.sh.fails("\\login root", *cmds, stdin=ROOT_PW + "\n")


def shells(cairn_path, m, tmp_path):
    """(root over tcp, anyone over tcp, root over ipc without a login)."""
    tcp = cairnshell.Shell(cairn_path, m.client_url, tmp_path)
    return Root(tcp), tcp, cairnshell.Shell(cairn_path, "ipc://" + m.admin_sock, tmp_path)


def enable_auth(tcp):
    """While auth is off anyone may set it up (etcd's rule too), then turn it on."""
    tcp.ok("INSERT INTO users(name, password, roles) VALUES ('root', '%s', 'root')" % ROOT_PW,
           "INSERT INTO roles VALUES ('app')",
           "INSERT INTO permissions VALUES ('app', 'READWRITE', 'app/', prefix_end('app/'))",
           "INSERT INTO permissions(role, type, key) VALUES ('app', 'READ', 'config')",
           "INSERT INTO users(name, password, roles) VALUES ('alice', 'apw', 'app')",
           "\\auth on")


def test_tables_map_to_users_roles_and_permissions(env, cairn_path, tmp_path):
    m = env.cluster(1)[0]
    root, tcp, ipc = shells(cairn_path, m, tmp_path)
    enable_auth(tcp)
    # root on the ipc socket needs no login
    assert ipc.rows("SELECT name FROM roles") == [{"name": "app"}]
    assert root.rows("SELECT name, roles FROM users ORDER BY name") == [
        {"name": "alice", "roles": "app"}, {"name": "root", "roles": "root"}]
    assert root.rows("SELECT name FROM roles") == [{"name": "app"}]
    assert root.rows("SELECT role, type, key, range_end FROM permissions ORDER BY key") == [
        {"role": "app", "type": "READWRITE", "key": "app/", "range_end": "app0"},
        {"role": "app", "type": "READ", "key": "config", "range_end": ""}]
    # the password is never read back
    assert root.rows("SELECT password FROM users WHERE name = 'alice'") == [{"password": None}]
    root.ok("UPDATE permissions SET type = 'WRITE' WHERE key = 'config'",
            "INSERT INTO roles VALUES ('ops')",
            "UPDATE users SET roles = 'ops' WHERE name = 'alice'")
    assert root.rows("SELECT roles FROM users WHERE name = 'alice'") == [{"roles": "ops"}]
    assert root.rows("SELECT type FROM permissions WHERE key = 'config'") == [{"type": "WRITE"}]
    root.ok("DELETE FROM permissions WHERE key = 'config'", "DELETE FROM roles WHERE name = 'ops'")
    assert root.rows("SELECT key FROM permissions") == [{"key": "app/"}]
    assert root.rows("SELECT roles FROM users WHERE name = 'alice'") == [{"roles": ""}]
    # what the cluster refuses comes back with its reason
    assert "USER_EXISTS" in root.fails("INSERT INTO users(name, password) VALUES ('alice', 'x')")
    assert "type is READ, WRITE or READWRITE" in root.fails(
        "INSERT INTO permissions VALUES ('app', 'EXECUTE', 'k', '')")
    assert "ROLE_NOT_FOUND" in root.fails("INSERT INTO permissions VALUES ('nope', 'READ', 'k', '')")
    assert "INVALID_AUTH_MGMT" in root.fails("DELETE FROM users WHERE name = 'root'")
    r = root.ok("\\auth", fmt="table")
    assert "auth is on" in r.out, r
    root.ok("\\auth off")
    assert "auth is off" in tcp.ok("\\auth", fmt="table").out  # no login now: auth is off


def test_login_reads_the_password_from_stdin_and_permissions_apply(env, cairn_path, tmp_path):
    m = env.cluster(1)[0]
    root, tcp, _ = shells(cairn_path, m, tmp_path)
    enable_auth(tcp)
    root.ok("INSERT INTO keys(key, value) VALUES ('config', 'c1'), ('secret', 's1')")
    # no login: refused, naming the key range
    err = tcp.fails("SELECT * FROM keys WHERE key = 'config'")
    assert "PERMISSION_DENIED" in err and '"config"' in err, err
    # \login USER, the password on stdin (not a terminal)
    r = tcp.ok("\\login alice", "INSERT INTO keys(key, value) VALUES ('app/x', '1')",
               "SELECT key, value FROM keys WHERE key LIKE 'app/%'", "SELECT value FROM keys WHERE key = 'config'",
               stdin="apw\n")
    assert r.json[-2] == [{"key": "app/x", "value": "1"}] and r.json[-1] == [{"value": "c1"}], r
    err = tcp.fails("\\login alice", "SELECT value FROM keys WHERE key = 'secret'", stdin="apw\n")
    assert "PERMISSION_DENIED" in err and "alice" in err and '"secret"' in err, err
    err = tcp.fails("\\login alice", "UPDATE keys SET value = 'x' WHERE key = 'config'", stdin="apw\n")
    assert "PERMISSION_DENIED" in err and '"config"' in err, err
    # a script on stdin gives the password on the line after \login
    r = tcp.run(stdin="\\login alice\napw\nSELECT value FROM keys WHERE key = 'config';\n")
    assert r.rc == 0 and r.json[-1] == [{"value": "c1"}], r
    err = tcp.fails("\\login alice", stdin="wrong\n")
    assert "authentication failed" in err, err
    # a password changed with UPDATE: the old one no longer logs in
    root.ok("UPDATE users SET password = 'apw2' WHERE name = 'alice'")
    assert "authentication failed" in tcp.fails("\\login alice", stdin="apw\n")
    tcp.ok("\\login alice", "SELECT * FROM keys WHERE key = 'config'", stdin="apw2\n")


def test_an_expired_token_is_renewed_by_the_client(env, cairn_path, tmp_path):
    m = env.cluster(1, extra=["--auth-token-ttl=1"])[0]
    root, tcp, _ = shells(cairn_path, m, tmp_path)
    enable_auth(tcp)
    root.ok("INSERT INTO keys(key, value) VALUES ('config', 'c1')")
    s = tcp.session()
    s.proc.stdin.write("\\login alice\napw\n")
    assert s.send("SELECT value FROM keys WHERE key = 'config';") == [{"value": "c1"}]
    # unused for longer than its TTL the token is expired on the member; libcairn logs in again and retries
    time.sleep(2.5)
    assert s.send("SELECT value FROM keys WHERE key = 'config';") == [{"value": "c1"}]
    s.proc.stdin.write("\\logout\n")
    s.proc.stdin.flush()
    rc, out, err = s.finish("SELECT value FROM keys WHERE key = 'config';")
    assert rc != 0 and "PERMISSION_DENIED" in err, (rc, out, err)
