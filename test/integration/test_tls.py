"""Who may talk to a member: with --client-cert-auth a client certificate
from another CA (or none) is refused; a member whose peer certificate does
not name it is never reached by the others, so it never joins; members
started with different --initial-cluster-token belong to different clusters
and drop each other's messages.  The negative checks watch for a window of
several election timeouts that something does NOT happen."""
import subprocess

import pytest

import cluster

WINDOW = 6 * cluster.ELECTION_MS / 1000  # seconds a refused member is watched


def refused(wire, url, tls):
    """True if no Status can be had through url with tls: the TLS handshake
    fails, or the member hangs up before answering."""
    try:
        with wire.Client(url, timeout=3, tls=tls) as c:
            c.status(timeout=3)
    except (OSError, wire.WireError):
        return True
    return False


def test_client_certificates_from_another_ca_or_none_are_refused(env, wire, certs):
    c = env.cluster(1, certs=certs)
    m = c[0]
    with wire.Client(m.client_url, tls=certs.client_tls("m1")) as good:
        wire.check(good.status(), "status")
    assert refused(wire, m.client_url, certs.client_tls("m1", stranger=True))
    assert refused(wire, m.client_url, wire.TLS(certs.ca, None, None, "m1"))

    # libcairn (through cairn-load) sees the member as unreachable
    crt, key = certs.stranger
    p = subprocess.run([env.load.path, "put", "--endpoints", m.client_url, "--total", "3",
                        "--cacert", certs.ca, "--cert", crt, "--key", key, "--server-name", "localhost",
                        "--dial-timeout", "300", "--call-timeout", "1500", "--json"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=cluster.child_env(), timeout=60)
    out = p.stdout.decode(errors="replace")
    assert p.returncode == 3 and '"acked": 0' in out, out

    # ...while the member goes on serving the right clients.
    with wire.Client(m.client_url, tls=certs.client_tls("m1")) as good:
        wire.check(good.put("after", "strangers"), "put")


def test_a_tls_cluster_with_the_right_certificates_forms_and_replicates(env, wire, certs):
    """The control for the refusals below: with every certificate right, all join."""
    c = env.cluster(3, certs=certs)
    lead = c.leader()
    with lead.client() as lc:
        r = wire.check(lc.put("tls", "ok"), "put")
    for m in c:
        assert m.wait_ready().status.leader == lead.status().header.member_id
        kv = wire.check(m.call(wire.range_request("tls")), "range").range.kvs[0]
        assert (kv.value, kv.mod_revision) == (b"ok", r.header.revision)
    # libcairn over tls+tcp, through cairn-load's --cacert/--cert/--key/--server-name
    ack = str(env.tmp_path / "ack.log")
    res = env.load.put(c, total=500, ack_log=ack)
    assert res.rc == 0, res
    env.load.check(c, ack).assert_no_loss()


def test_plain_tcp_is_refused_on_a_tls_client_port(env, wire, certs):
    c = env.cluster(1, certs=certs)
    url = c[0].client_url.replace("tls+tcp://", "tcp://")
    with pytest.raises((OSError, wire.WireError)):
        with wire.Client(url, timeout=3) as plain:
            plain.status(timeout=3)
    wire.check(c[0].call(wire.pb.Request(status=wire.pb.StatusRequest())), "status")


def _never_joins(wire, outsider, key):
    """outsider knows no leader and lacks key, at every poll of the window."""
    def apart():
        st = outsider.status()
        if st is None or st.status.leader != 0:
            return False
        r = outsider.call(wire.range_request(key, serializable=True))
        return wire.is_error(r) or len(r.range.kvs) == 0
    return cluster.holds_for(apart, WINDOW)


def test_a_member_whose_peer_certificate_does_not_name_it_never_joins(env, wire, certs):
    c = env.cluster(3, certs=certs, start=False)
    m1, m2, m3 = c
    m3.peer_cert = certs.other_host("m3")  # signed by the right CA, naming only "otherhost"
    for m in c:
        m.start()
    for m in c:
        m.wait_serving()
    lead = c.leader(members=[m1, m2])
    assert lead in (m1, m2)
    with lead.client() as lc:
        wire.check(lc.put("joined", "no"), "put")
    for m in (m1, m2):
        assert cluster.poll(lambda: m.call(wire.range_request("joined")).range.kvs, 10, "the write on " + m.name)
    assert _never_joins(wire, m3, "joined"), "m3 joined although no member could verify its certificate"
    assert m3.running, m3.log_tail()
    assert c.find_leader([m1, m2]) is lead, "the outsider must not disturb the others"


def test_members_with_different_cluster_tokens_refuse_each_other(env, wire):
    c = env.cluster(3, token="token-a", start=False)
    m1, m2, m3 = c
    m3.token = "token-b"
    for m in c:
        m.start()
    for m in c:
        m.wait_serving()
    lead = c.leader(members=[m1, m2])
    assert m1.status().header.cluster_id == m2.status().header.cluster_id
    assert m3.status().header.cluster_id != m1.status().header.cluster_id, "the token makes the cluster ID"
    with lead.client() as lc:
        wire.check(lc.put("token", "a"), "put")
    assert _never_joins(wire, m3, "token"), "a member of another cluster took messages from this one"
    assert all(m.running for m in c), "\n".join(m.log_tail() for m in c)
    assert c.find_leader([m1, m2]) is lead
