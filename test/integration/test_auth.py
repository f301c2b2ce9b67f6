"""Auth (issue 12) on real members: enabling (root user with the root role),
every permission kind (READ, WRITE, READWRITE) on a key, a prefix and a range
for Range, Put, DeleteRange, Txn (compares, operations, nested txns) and
Watch; lease revoke of keys outside one's permission; root-only maintenance;
tokens (expiry with a short --auth-token-ttl, an unknown token, accepted by
every member, voided by a password change, a revoked role, a deleted user);
the auth store after a restart and after `cairnd restore`; the brute-force
limit and its journal event; the ipc socket's root rule (the tests run as
root); and a fuzz pass of auth requests that must get clear errors and leave
the member serving."""
import os
import random
import subprocess
import time

import pytest

import cluster
from cluster import poll

ROOT_PW = "root-secret"


def admin(m, wire):
    """A client of m's ipc admin socket: root without a password (uid 0)."""
    return wire.Client("ipc://" + m.admin_sock, timeout=10)


def ok(wire, r, body=None):
    return wire.check(r, body)


def err(wire, r):
    """(error name, message) of a reply that must be an error."""
    assert wire.is_error(r), "expected an error, got %s" % r
    return wire.error_name(r.error.code), r.error.message


def enable_auth(wire, m, users=(), roles=()):
    """Over ipc: root (password ROOT_PW, role root), the roles {name: [Permission]}, the users
    [(name, password, [roles])], then AuthEnable."""
    with admin(m, wire) as a:
        ok(wire, a.auth("user_add", name="root", password=ROOT_PW))
        ok(wire, a.auth("user_grant_role", user="root", role="root"))
        for name, perms in dict(roles).items():
            ok(wire, a.auth("role_add", name=name))
            for p in perms:
                ok(wire, a.auth("role_grant_permission", name=name, perm=p))
        for name, pw, rs in users:
            ok(wire, a.auth("user_add", name=name, password=pw))
            for r in rs:
                ok(wire, a.auth("user_grant_role", user=name, role=r))
        ok(wire, a.auth("auth_enable"), "auth_enable")


def login(wire, m, name, pw, timeout=10):
    c = m.client(timeout=timeout)
    ok(wire, c.authenticate(name, pw), "authenticate")
    return c


# ---------------------------------------------------------------- enabling, ipc rule, maintenance

def test_enable_needs_root_user_with_root_role_and_then_tokens(env, wire):
    m = env.cluster(1)[0]
    with admin(m, wire) as a, m.client() as c:
        assert err(wire, a.auth("auth_enable"))[0] == "ROOT_USER_MISSING"
        ok(wire, a.auth("user_add", name="root", password=ROOT_PW))
        assert err(wire, a.auth("auth_enable"))[0] == "ROOT_ROLE_MISSING"
        ok(wire, a.auth("user_grant_role", user="root", role="root"))
        # auth off: anyone may do anything; Authenticate says it is off
        ok(wire, c.put("k", "v0"), "put")
        assert err(wire, c.authenticate("root", ROOT_PW))[0] == "AUTH_NOT_ENABLED"
        ok(wire, a.auth("auth_enable"), "auth_enable")
        st = ok(wire, c.auth("auth_status"), "auth_status").auth_status
        assert st.enabled and st.auth_revision > 1
        name, msg = err(wire, c.put("k", "v1"))
        assert name == "PERMISSION_DENIED" and msg.startswith("permission denied:") and '"k"' in msg, msg
        # a password is needed: empty ones are refused, like etcd's ErrPasswordEmpty
        assert err(wire, a.auth("user_add", name="nopw", password=""))[0] == "INVALID_ARGUMENT"
        ok(wire, c.authenticate("root", ROOT_PW))
        assert len(c.token) == 64
        ok(wire, c.put("k", "v1"), "put")
        # root may not lose its role nor be deleted while auth is on
        assert err(wire, c.auth("user_revoke_role", name="root", role="root"))[0] == "INVALID_AUTH_MGMT"
        assert err(wire, c.auth("user_delete", name="root"))[0] == "INVALID_AUTH_MGMT"
        # Status and AuthStatus stay open (etcd's too)
        ok(wire, m.client().status(), "status")


def test_ipc_socket_trusts_uid_0_and_tcp_needs_a_token(env, wire):
    assert os.geteuid() == 0, "the ipc rule test runs as root"
    m = env.cluster(1)[0]
    enable_auth(wire, m, users=[("alice", "apw", [])])
    with admin(m, wire) as a, m.client() as c:
        ok(wire, a.put("anything", "x"), "put")
        ok(wire, a.auth("user_list"), "user_list")
        ok(wire, a.call(wire.pb.Request(defragment=wire.pb.DefragmentRequest()), timeout=30), "defragment")
        assert err(wire, c.get("anything"))[0] == "PERMISSION_DENIED"
        assert err(wire, c.auth("user_list"))[0] == "PERMISSION_DENIED"
        # a token over ipc is that user's, not root's
        ok(wire, a.authenticate("alice", "apw"))
        assert err(wire, a.put("anything", "y"))[0] == "PERMISSION_DENIED"


def test_maintenance_and_membership_need_root(env, wire):
    m = env.cluster(1)[0]
    enable_auth(wire, m, users=[("bob", "bpw", ["rw"])], roles={"rw": [wire.permission("READWRITE", "\0", "\0")]})
    pb = wire.pb
    root = login(wire, m, "root", ROOT_PW)
    bob = login(wire, m, "bob", "bpw")
    rev = ok(wire, bob.put("a", "1"), "put").header.revision  # bob may write every key...
    for req in (pb.Request(compact=pb.CompactionRequest(revision=rev)),
                pb.Request(defragment=pb.DefragmentRequest()),
                pb.Request(hash_kv=pb.HashKVRequest(revision=rev)),
                pb.Request(snapshot=pb.SnapshotRequest()),
                pb.Request(move_leader=pb.MoveLeaderRequest(target_id=1)),
                pb.Request(alarm=pb.AlarmRequest(action=pb.AlarmRequest.DEACTIVATE)),
                pb.Request(member_add=pb.MemberAddRequest(peer_urls=["tcp://127.0.0.1:1"])),
                pb.Request(member_remove=pb.MemberRemoveRequest(id=1)),
                wire.request("user_add", name="eve", password="x"),
                wire.request("role_grant_permission", name="rw", perm=wire.permission("READ", "z")),
                wire.request("auth_disable")):
        name, msg = err(wire, bob.call(req, timeout=30))  # ...but no maintenance, membership or auth
        assert name == "PERMISSION_DENIED" and "root role" in msg, (req, msg)
    ok(wire, bob.call(pb.Request(alarm=pb.AlarmRequest(action=pb.AlarmRequest.GET))), "alarm")
    ok(wire, bob.auth("user_get", name="bob"), "user_get")  # itself: allowed (etcd's rule)
    assert err(wire, bob.auth("user_get", name="root"))[0] == "PERMISSION_DENIED"
    ok(wire, bob.auth("role_get", role="rw"), "role_get")
    ok(wire, root.call(pb.Request(compact=pb.CompactionRequest(revision=rev))), "compact")
    ok(wire, root.call(pb.Request(hash_kv=pb.HashKVRequest(revision=rev))), "hash_kv")
    ok(wire, root.auth("auth_disable"), "auth_disable")
    ok(wire, m.client().put("free", "again"), "put")


def test_client_certificate_is_required_and_a_token_as_well(env, wire, certs):
    # --client-cert-auth (the TLS cluster's members run with it): the certificate proves only "signed by our CA"
    m = env.cluster(1, certs=certs)[0]
    enable_auth(wire, m, users=[("c", "pw", ["all"])], roles={"all": [wire.permission("READWRITE", "\0", "\0")]})
    with wire.Client(m.client_url, tls=certs.client_tls(m.name)) as c:
        name, msg = err(wire, c.put("k", "v"))
        assert name == "PERMISSION_DENIED" and "unauthenticated" in msg, msg
        ok(wire, c.authenticate("c", "pw"))
        ok(wire, c.put("k", "v"), "put")
    # without a client certificate the TLS handshake fails, token or not
    with pytest.raises((OSError, wire.WireError)):
        with wire.Client(m.client_url, tls=wire.TLS(certs.ca, None, None, m.name), timeout=3) as bare:
            bare.authenticate("c", "pw")  # the member closes the connection before answering


# ---------------------------------------------------------------- the permission matrix

SCOPES = {
    # name: (permission key, range_end, keys inside, ranges inside, keys outside, ranges outside)
    "key": ("k/a", "", ["k/a"], [], ["k/b", "k/a0"], [("k/a", "k/b"), ("k/", "k/b")]),
    "prefix": ("p/", "p0", ["p/x", "p/", "p/y/z"], [("p/", "p0"), ("p/a", "p/b")], ["q", "p"],
               [("p/", "q"), ("p", "p0")]),
    "range": ("r/b", "r/d", ["r/b", "r/c9"], [("r/b", "r/d"), ("r/bb", "r/c")], ["r/d", "r/a"],
              [("r/a", "r/c"), ("r/c", "r/e"), ("r/b", "\0")]),
}
KINDS = ("READ", "WRITE", "READWRITE")


def check_allowed(wire, r, allowed, key, what):
    if allowed:
        assert not wire.is_error(r), "%s on %r should be allowed: %s" % (what, key, r.error.message)
        return
    name, msg = err(wire, r)
    assert name == "PERMISSION_DENIED", (what, key, name, msg)
    assert msg.startswith("permission denied:") and key in msg, (what, key, msg)


def watch_create(wire, c, key, end=""):
    r = c.call(wire.pb.Request(watch_create=wire.pb.WatchCreateRequest(key=wire._b(key), range_end=wire._b(end))))
    if not wire.is_error(r):
        c.call(wire.pb.Request(watch_cancel=wire.pb.WatchCancelRequest(watch_id=r.watch_create.watch_id)))
    return r


def test_every_permission_kind_on_key_prefix_and_range(env, wire):
    m = env.cluster(1)[0]
    roles, users = {}, []
    for scope, (pk, pe, *_rest) in SCOPES.items():
        for kind in KINDS:
            roles["%s-%s" % (scope, kind)] = [wire.permission(kind, pk, pe)]
            users.append(("u-%s-%s" % (scope, kind), "pw", ["%s-%s" % (scope, kind)]))
    enable_auth(wire, m, users=users, roles=roles)
    pb = wire.pb
    for scope, (pk, pe, keys_in, ranges_in, keys_out, ranges_out) in SCOPES.items():
        for kind in KINDS:
            c = login(wire, m, "u-%s-%s" % (scope, kind), "pw")
            can_read, can_write = kind != "WRITE", kind != "READ"
            for inside, keys, ranges in ((True, keys_in, ranges_in), (False, keys_out, ranges_out)):
                for k in keys:
                    q = '"%s"' % k
                    check_allowed(wire, c.get(k), inside and can_read, q, "range")
                    check_allowed(wire, c.put(k, "v"), inside and can_write, q, "put")
                    check_allowed(wire, c.put(k, "v", prev_kv=True), inside and can_write and can_read, q,
                                  "put prev_kv")
                    check_allowed(wire, c.delete(k), inside and can_write, q, "delete")
                    check_allowed(wire, watch_create(wire, c, k), inside and can_read, q, "watch")
                    check_allowed(wire, c.txn(compare=[wire.compare(k, "version", ">", 0)]), inside and can_read, q,
                                  "txn compare")
                    check_allowed(wire, c.txn(success=[wire.op_put(k, "t")]), inside and can_write, q, "txn put")
                    check_allowed(wire, c.txn(failure=[wire.op_range(k)]), inside and can_read, q, "txn range")
                    check_allowed(wire, c.txn(success=[wire.op_delete(k)]), inside and can_write, q, "txn delete")
                for k, e in ranges:
                    q = '"%s"' % k
                    check_allowed(wire, c.range(k, e), inside and can_read, q, "range")
                    check_allowed(wire, c.delete(k, e), inside and can_write, q, "delete range")
                    check_allowed(wire, watch_create(wire, c, k, e), inside and can_read, q, "watch range")
                    cmp = wire.compare(k, "mod", ">", 0)
                    cmp.range_end = wire._b(e)
                    check_allowed(wire, c.txn(compare=[cmp]), inside and can_read, q, "txn compare range")
                    check_allowed(wire, c.txn(success=[wire.op_range(k, e)]), inside and can_read, q,
                                  "txn range op")
                    check_allowed(wire, c.call(pb.Request(history=pb.HistoryRequest(key=wire._b(k),
                                                                                    range_end=wire._b(e)))),
                                  inside and can_read, q, "history")
            c.close()


def test_txn_checks_every_compare_and_operation_at_any_depth(env, wire):
    m = env.cluster(1)[0]
    enable_auth(wire, m, users=[("t", "pw", ["mine"])],
                roles={"mine": [wire.permission("READWRITE", "mine/", "mine0")]})
    pb = wire.pb
    c = login(wire, m, "t", "pw")
    ok(wire, c.txn(compare=[wire.compare("mine/a", "version", "=", 0)], success=[wire.op_put("mine/a", "1")],
                   failure=[wire.op_range("mine/a")]), "txn")
    # one foreign key anywhere refuses the whole txn: a compare, the failure branch, a nested txn's op
    nested = pb.RequestOp(request_txn=pb.TxnRequest(success=[pb.RequestOp(
        request_txn=pb.TxnRequest(failure=[wire.op_delete("theirs/x")]))]))
    for t in (wire.txn_request(compare=[wire.compare("theirs/a", "version", "=", 0)],
                               success=[wire.op_put("mine/b", "1")]),
              wire.txn_request(success=[wire.op_put("mine/b", "1")], failure=[wire.op_put("theirs/b", "1")]),
              wire.txn_request(success=[wire.op_put("mine/b", "1"), nested])):
        name, msg = err(wire, c.call(t))
        assert name == "PERMISSION_DENIED" and '"theirs/' in msg, msg
    r = ok(wire, c.get("mine/b"), "range")
    assert len(r.range.kvs) == 0, "a refused txn wrote something"


def test_lease_revoke_needs_write_on_every_attached_key(env, wire):
    m = env.cluster(1)[0]
    enable_auth(wire, m, users=[("l", "pw", ["mine"])],
                roles={"mine": [wire.permission("READWRITE", "mine/", "mine0")]})
    pb = wire.pb
    c = login(wire, m, "l", "pw")
    root = login(wire, m, "root", ROOT_PW)
    lease = ok(wire, c.call(pb.Request(lease_grant=pb.LeaseGrantRequest(ttl=600))), "lease_grant").lease_grant.id
    ok(wire, c.put("mine/k", "v", lease=lease), "put")
    ok(wire, root.put("theirs/k", "v", lease=lease), "put")
    name, msg = err(wire, c.call(pb.Request(lease_revoke=pb.LeaseRevokeRequest(id=lease))))
    assert name == "PERMISSION_DENIED" and '"theirs/k"' in msg and str(lease) in msg, msg
    ok(wire, root.get("theirs/k"), "range")
    assert len(root.get("theirs/k").range.kvs) == 1, "the refused revoke deleted a key"
    ok(wire, root.delete("theirs/k"), "delete_range")
    ok(wire, c.call(pb.Request(lease_revoke=pb.LeaseRevokeRequest(id=lease))), "lease_revoke")
    assert len(root.get("mine/k").range.kvs) == 0
    # an unknown lease is the lease route's answer, not a permission error
    assert err(wire, c.call(pb.Request(lease_revoke=pb.LeaseRevokeRequest(id=lease))))[0] == "LEASE_NOT_FOUND"


def test_lease_time_to_live_lists_keys_only_to_a_user_who_may_read_them(env, wire):
    m = env.cluster(1)[0]
    enable_auth(wire, m, users=[("l", "pw", ["mine"])],
                roles={"mine": [wire.permission("READWRITE", "mine/", "mine0")]})
    pb = wire.pb
    c = login(wire, m, "l", "pw")
    root = login(wire, m, "root", ROOT_PW)
    lease = ok(wire, c.call(pb.Request(lease_grant=pb.LeaseGrantRequest(ttl=600))), "lease_grant").lease_grant.id
    ok(wire, c.put("mine/k", "v", lease=lease), "put")
    r = ok(wire, c.call(pb.Request(lease_time_to_live=pb.LeaseTimeToLiveRequest(id=lease, keys=True))),
           "lease_time_to_live")
    assert list(r.lease_time_to_live.keys) == [b"mine/k"], r
    ok(wire, root.put("theirs/k", "v", lease=lease), "put")
    name, msg = err(wire, c.call(pb.Request(lease_time_to_live=pb.LeaseTimeToLiveRequest(id=lease, keys=True))))
    assert name == "PERMISSION_DENIED" and '"theirs/k"' in msg and str(lease) in msg, msg
    # without the keys the TTL is anyone's; root sees the keys
    ok(wire, c.call(pb.Request(lease_time_to_live=pb.LeaseTimeToLiveRequest(id=lease))), "lease_time_to_live")
    r = ok(wire, root.call(pb.Request(lease_time_to_live=pb.LeaseTimeToLiveRequest(id=lease, keys=True))),
           "lease_time_to_live")
    assert sorted(r.lease_time_to_live.keys) == [b"mine/k", b"theirs/k"], r


def test_a_watch_answers_only_the_user_who_created_it(env, wire):
    """A watch ID is no capability: with auth on, only its creator may poll
    (WatchNext or WatchPoll) or cancel it (before, any token could read
    another user's watch)."""
    m = env.cluster(1)[0]
    enable_auth(wire, m, users=[("a", "pw", ["ra"]), ("b", "pw", ["rb"])],
                roles={"ra": [wire.permission("READWRITE", "a/", "a0")],
                       "rb": [wire.permission("READWRITE", "b/", "b0")]})
    pb = wire.pb
    ca, cb = login(wire, m, "a", "pw"), login(wire, m, "b", "pw")
    wid = ok(wire, ca.call(pb.Request(watch_create=pb.WatchCreateRequest(key=b"a/", range_end=b"a0"))),
             "watch_create").watch_create.watch_id
    ok(wire, ca.put("a/secret", "v"), "put")
    name, msg = err(wire, cb.call(pb.Request(watch_next=pb.WatchNextRequest(watch_id=wid, timeout_ms=500))))
    assert name == "PERMISSION_DENIED" and str(wid) in msg, msg
    name, msg = err(wire, cb.call(pb.Request(watch_cancel=pb.WatchCancelRequest(watch_id=wid))))
    assert name == "PERMISSION_DENIED", msg
    # nor in a WatchPoll beside a watch of its own, which the refusal leaves alone
    own = ok(wire, cb.call(pb.Request(watch_create=pb.WatchCreateRequest(key=b"b/", range_end=b"b0"))),
             "watch_create").watch_create.watch_id
    name, msg = err(wire, cb.call(pb.Request(watch_poll=pb.WatchPollRequest(watch_ids=[own, wid], timeout_ms=500))))
    assert name == "PERMISSION_DENIED" and str(wid) in msg, msg
    ok(wire, cb.put("b/1", "v"), "put")
    r = ok(wire, cb.call(pb.Request(watch_poll=pb.WatchPollRequest(watch_ids=[own], timeout_ms=2000))), "watch_poll")
    assert [[e.kv.key for e in n.events] for n in r.watch_poll.watches] == [[b"b/1"]], r
    # its creator still gets the event, and may cancel it
    r = ok(wire, ca.call(pb.Request(watch_next=pb.WatchNextRequest(watch_id=wid, timeout_ms=2000))), "watch_next")
    assert [e.kv.key for e in r.watch_next.events] == [b"a/secret"], r
    ok(wire, ca.call(pb.Request(watch_cancel=pb.WatchCancelRequest(watch_id=wid))), "watch_cancel")


# ---------------------------------------------------------------- tokens

def test_tokens_expire_and_unknown_tokens_are_invalid(env, wire):
    m = env.cluster(1, extra=["--auth-token-ttl=2"])[0]
    enable_auth(wire, m, users=[("e", "pw", ["all"])], roles={"all": [wire.permission("READWRITE", "\0", "\0")]})
    c = login(wire, m, "e", "pw")
    r = c.call(wire.request("authenticate", name="e", password="pw"))
    assert ok(wire, r).authenticate.ttl == 2
    ok(wire, c.put("a", "1"), "put")
    # the token lapses 2 s after its last use, and every use starts it again: poll with growing gaps
    gap, expired = 0.25, None
    for _ in range(8):
        time.sleep(gap)
        r = c.get("a")
        if wire.is_error(r):
            expired = r
            break
        gap *= 2
    assert expired is not None, "the token never expired"
    assert err(wire, expired) == ("INVALID_TOKEN", "authentication failed: token expired"), expired
    c.token = "00" * 32
    assert err(wire, c.get("a")) == ("INVALID_TOKEN", "authentication failed: token invalid")
    c.token = "not even hex"
    assert err(wire, c.get("a")) == ("INVALID_TOKEN", "authentication failed: token invalid")
    ok(wire, c.authenticate("e", "pw"))
    ok(wire, c.get("a"), "range")


def test_password_change_role_revoke_and_user_delete_void_tokens_on_every_member(env, wire):
    cl = env.cluster(3)
    enable_auth(wire, cl[0], users=[("v", "old", ["all"])],
                roles={"all": [wire.permission("READWRITE", "\0", "\0")]})
    root = login(wire, cl[1], "root", ROOT_PW)
    # a token made on one member works on every member (granted through the log)
    c0 = login(wire, cl[0], "v", "old")
    for m in cl:
        with m.client() as c:
            c.token = c0.token
            poll(lambda: not wire.is_error(c.get("x")), 10, "the token on %s" % m.name)
    ok(wire, root.auth("user_change_password", name="v", password="new"))
    for m in cl:
        with m.client() as c:
            c.token = c0.token
            poll(lambda: wire.is_error(c.get("x")), 10, "the old token refused on %s" % m.name)
            assert err(wire, c.get("x")) == ("INVALID_TOKEN", "authentication failed: token invalid")
    assert err(wire, cl[2].client().authenticate("v", "old"))[0] == "AUTH_FAILED"
    c1 = login(wire, cl[2], "v", "new")
    ok(wire, c1.get("x"), "range")
    ok(wire, root.auth("user_revoke_role", name="v", role="all"))
    poll(lambda: wire.is_error(c1.get("x")), 10, "the token voided by the revoked role")
    assert err(wire, c1.get("x"))[1] == "authentication failed: token invalid"
    ok(wire, root.auth("user_grant_role", user="v", role="all"))
    c2 = login(wire, cl[1], "v", "new")
    ok(wire, root.auth("user_delete", name="v"))
    poll(lambda: wire.is_error(c2.get("x")), 10, "the token voided by the deletion")
    assert err(wire, c2.get("x"))[1] == "authentication failed: token invalid"
    assert err(wire, root.auth("user_get", name="v"))[0] == "USER_NOT_FOUND"


# ---------------------------------------------------------------- durability

def auth_state(wire, m):
    """(enabled, users with roles, roles with permissions) read through m's ipc socket."""
    with admin(m, wire) as a:
        st = ok(wire, a.auth("auth_status"), "auth_status").auth_status
        users = {u: list(ok(wire, a.auth("user_get", name=u)).user_get.roles)
                 for u in ok(wire, a.auth("user_list")).user_list.users}
        roles = {r: [(p.perm_type, p.key, p.range_end) for p in ok(wire, a.auth("role_get", role=r)).role_get.perm]
                 for r in ok(wire, a.auth("role_list")).role_list.roles}
    return st.enabled, users, roles


def test_auth_state_survives_restart(env, wire):
    m = env.cluster(1)[0]
    enable_auth(wire, m, users=[("s", "pw", ["pre"])], roles={"pre": [wire.permission("READ", "s/", "s0")]})
    before = auth_state(wire, m)
    assert before[0] and before[1]["s"] == ["pre"] and before[2]["pre"] == [(0, b"s/", b"s0")], before
    m.terminate()
    m.restart()
    assert auth_state(wire, m) == before
    c = login(wire, m, "s", "pw")
    ok(wire, c.get("s/x"), "range")
    assert err(wire, c.put("s/x", "1"))[0] == "PERMISSION_DENIED"


def test_auth_state_survives_snapshot_restore(env, wire, build_dir, tmp_path):
    old = env.cluster(1)[0]
    enable_auth(wire, old, users=[("r", "pw", ["ro"])], roles={"ro": [wire.permission("READ", "r/", "r0")]})
    with admin(old, wire) as a:
        ok(wire, a.put("r/1", "one"), "put")
    before = auth_state(wire, old)
    path = tmp_path / "auth.db"
    tool = str(build_dir / "cairn-snapshot")
    # the snapshot needs root: through the ipc socket (a tcp client without a token is refused)
    p = subprocess.run([tool, "save", old.client_url, str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       env=cluster.child_env(), timeout=120)
    assert p.returncode != 0 and b"permission denied" in p.stderr, p.stderr
    p = subprocess.run([tool, "save", "ipc://" + old.admin_sock, str(path)], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, env=cluster.child_env(), timeout=120)
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    old.cluster.kill_all()
    new = env.cluster(1, start=False, token="restored-auth-%d" % os.getpid())
    m = new[0]
    rp = subprocess.run([env.cairnd, "restore", str(path), "--data-dir=" + m.data_dir, "--name=" + m.name,
                         "--initial-cluster=" + new.initial_cluster(), "--initial-cluster-token=" + new.token,
                         "--initial-advertise-peer-urls=" + m.peer_url], stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE, env=cluster.child_env(), timeout=120)
    assert rp.returncode == 0, rp.stderr.decode(errors="replace")
    new.start()
    assert auth_state(wire, m) == before
    c = login(wire, m, "r", "pw")
    assert ok(wire, c.get("r/1"), "range").range.kvs[0].value == b"one"
    assert err(wire, c.put("r/1", "x"))[0] == "PERMISSION_DENIED"
    assert err(wire, m.client().get("r/1"))[0] == "PERMISSION_DENIED"


# ---------------------------------------------------------------- brute force, fuzz

def test_failed_authentications_are_rate_limited_per_address_and_logged(env, wire):
    m = env.cluster(1)[0]
    enable_auth(wire, m, users=[("b", "right", [])])
    with m.client() as c:
        for i in range(5):
            assert err(wire, c.authenticate("b", "wrong-%d" % i)) == \
                ("AUTH_FAILED", "authentication failed: invalid user ID or password")
        # the sixth try is refused before any password check, even with the right password
        name, msg = err(wire, c.authenticate("b", "right"))
        assert name == "AUTH_RATE_LIMITED" and "127.0.0.1" in msg and "retry in" in msg, msg
        assert err(wire, c.authenticate("nobody", "x"))[0] == "AUTH_RATE_LIMITED"
    # another address is not limited: the ipc socket counts by uid
    with admin(m, wire) as a:
        ok(wire, a.authenticate("b", "right"))
    log = m.log_text()
    msgid = "65e14cae160b42b484c9bae7025372d9"
    assert log.count("authentication failed for user 'b'") >= 5, m.log_tail()
    assert msgid in log and "too many failed authentications from 127.0.0.1" in log, m.log_tail()


def test_fuzzed_auth_requests_get_clear_errors_and_the_member_keeps_serving(env, wire):
    m = env.cluster(1)[0]
    enable_auth(wire, m, users=[("f", "pw", ["fr"])], roles={"fr": [wire.permission("READ", "f/", "f0")]})
    pb = wire.pb
    rnd = random.Random(12)
    bodies = ["auth_enable", "auth_disable", "auth_status", "authenticate", "user_add", "user_get", "user_list",
              "user_delete", "user_change_password", "user_grant_role", "user_revoke_role", "role_add",
              "role_get", "role_list", "role_delete", "role_grant_permission", "role_revoke_permission"]
    field_num = {b: pb.Request.DESCRIPTOR.fields_by_name[b].number for b in bodies}

    def junk_str():
        return rnd.choice(["", "root", "f", "fr", "\x01ipc-root", "a" * 300, "\x00x", "é", "x\ny",
                           "".join(chr(rnd.randrange(1, 0x250)) for _ in range(rnd.randrange(1, 12)))])

    def junk_bytes():
        return rnd.choice([b"", b"\x00", b"f/", os.urandom(rnd.randrange(0, 40))])

    def varint(n):
        out = b""
        while True:
            b, n = n & 0x7F, n >> 7
            out += bytes([b | (0x80 if n else 0)])
            if not n:
                return out

    def random_request():
        body = rnd.choice(bodies)
        how = rnd.randrange(4)
        if how == 0:  # random bytes as the body message
            inner = os.urandom(rnd.randrange(0, 64))
            return varint(field_num[body] << 3 | 2) + varint(len(inner)) + inner
        if how == 1:  # a valid envelope cut short or with bits flipped
            raw = bytearray(wire.request(body, token=junk_str()).SerializeToString())
            if raw:
                raw[rnd.randrange(len(raw))] ^= 1 << rnd.randrange(8)
            return bytes(raw[:rnd.randrange(len(raw) + 1)])
        r = wire.request(body, token=rnd.choice(["", "", junk_str()]))
        sub = getattr(r, body)
        for f in sub.DESCRIPTOR.fields:
            if rnd.random() < 0.7:
                if f.type == f.TYPE_STRING:
                    setattr(sub, f.name, junk_str())
                elif f.type == f.TYPE_BYTES:
                    setattr(sub, f.name, junk_bytes())
                elif f.type == f.TYPE_BOOL:
                    setattr(sub, f.name, rnd.random() < 0.5)
                elif f.type == f.TYPE_MESSAGE:
                    getattr(sub, f.name).CopyFrom(pb.Permission(perm_type=rnd.randrange(3), key=junk_bytes(),
                                                                range_end=junk_bytes()))
        raw = r.SerializeToString()
        if how == 3 and body == "role_grant_permission":  # an out-of-range enum on the wire
            raw = raw.replace(b"\x08\x01", b"\x08\x63", 1)
        return raw

    counts = {}
    clients = [m.client(timeout=20), admin(m, wire)]
    for i in range(400):
        c = clients[i % 2]
        reply = wire.pb.Response.FromString(c.call_raw(random_request(), timeout=20))
        if wire.is_error(reply):
            name = wire.error_name(reply.error.code)
            assert reply.error.message, "error %s without a message" % name
            assert name not in ("IO", "CORRUPT"), reply.error.message
            counts[name] = counts.get(name, 0) + 1
        else:
            counts["ok"] = counts.get("ok", 0) + 1
    print("fuzz replies:", sorted(counts.items()))
    assert set(counts) - {"ok"}, "the fuzz never provoked an error"
    # the member still serves, and its auth store still decodes and works
    with admin(m, wire) as a:
        ok(wire, a.status(), "status")
        ok(wire, a.put("after", "fuzz"), "put")
        st = ok(wire, a.auth("auth_status")).auth_status
        if not st.enabled:
            # the fuzz may have disabled auth or deleted users through the ipc root: that is a valid outcome
            return
    assert m.running
