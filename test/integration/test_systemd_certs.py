"""certs/cairn-certs: the CA, member and client certificates a cluster
needs, made with the openssl CLI, checked with it.  (The certificates are
used for real by test_systemd_member.py and test_systemd_cluster.py.)"""
import os
import re
import shutil
import stat
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOL = os.path.join(ROOT, "certs", "cairn-certs")


@pytest.fixture(autouse=True)
def _openssl():
    if not shutil.which("openssl"):
        pytest.skip("the openssl command is missing (Debian package openssl)")


def certs(d, *args, ok=True):
    p = subprocess.run([TOOL, "--dir", str(d), "--owner", ""] + list(args), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
    if ok:
        assert p.returncode == 0, p.stdout + p.stderr
    return p


def x509(path, *args):
    return subprocess.run(["openssl", "x509", "-in", str(path), "-noout"] + list(args), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, check=True).stdout


def sans(path):
    out = x509(path, "-ext", "subjectAltName")
    return [s.strip() for s in out.splitlines()[1].split(",")] if "\n" in out.strip() else []


def pubkey(path):
    return subprocess.run(["openssl", "pkey", "-in", str(path), "-pubout"], stdout=subprocess.PIPE, text=True,
                          check=True).stdout


def mode(path):
    return stat.S_IMODE(os.stat(str(path)).st_mode)


def test_a_ca_member_and_client_with_safe_defaults(tmp_path):
    d = tmp_path / "tls"
    out = certs(d, "ca").stdout
    assert "ca.crt" in out and "ca.key" in out
    out = certs(d, "member", "m1", "--url", "tls+tcp://m1.example.net:2480", "--dns", "cairn-1").stdout
    certs(d, "client", "alice")
    assert mode(d) == 0o750
    for key in ("ca.key", "m1.key", "client-alice.key"):
        assert mode(d / key) == 0o600, key
        text = subprocess.run(["openssl", "pkey", "-in", str(d / key), "-noout", "-text"], stdout=subprocess.PIPE,
                              text=True, check=True).stdout
        assert "prime256v1" in text or "P-256" in text, key
    for crt in ("ca.crt", "m1.crt", "client-alice.crt"):
        assert mode(d / crt) == 0o644, crt
    # The CA is a CA; the others chain to it and are not.
    assert "CA:TRUE" in x509(d / "ca.crt", "-ext", "basicConstraints")
    for crt in ("m1.crt", "client-alice.crt"):
        subprocess.run(["openssl", "verify", "-CAfile", str(d / "ca.crt"), str(d / crt)], check=True,
                       stdout=subprocess.PIPE)
        assert "CA:FALSE" in x509(d / crt, "-ext", "basicConstraints")
    # The member's names: its name, localhost, its URLs' hosts, the extra names; DNS all.
    assert sans(d / "m1.crt") == ["DNS:m1", "DNS:localhost", "DNS:m1.example.net", "DNS:cairn-1"]
    eku = x509(d / "m1.crt", "-ext", "extendedKeyUsage")
    assert "Server Authentication" in eku and "Client Authentication" in eku
    eku = x509(d / "client-alice.crt", "-ext", "extendedKeyUsage")
    assert "Client Authentication" in eku and "Server Authentication" not in eku
    # A lifetime of about a year, the CA's about ten.
    for crt, days in (("m1.crt", 397), ("ca.crt", 3650)):
        end = x509(d / crt, "-enddate").strip().split("=", 1)[1]
        left = subprocess.run(["openssl", "x509", "-in", str(d / crt), "-noout", "-checkend",
                               str((days - 2) * 86400)], stdout=subprocess.PIPE).returncode
        assert left == 0, (crt, end)
    # The output says which file goes where in cairnd.conf, with absolute paths.
    real = os.path.realpath(str(d))
    for line in ("cert-file = %s/m1.crt" % real, "key-file = %s/m1.key" % real,
                 "trusted-ca-file = %s/ca.crt" % real, "peer-cert-file = %s/m1.crt" % real,
                 "peer-key-file = %s/m1.key" % real, "peer-trusted-ca-file = %s/ca.crt" % real,
                 "client-cert-auth = true"):
        assert line in out, out


def test_an_existing_ca_is_kept_unless_forced(tmp_path):
    d = tmp_path / "tls"
    certs(d, "ca")
    first = (d / "ca.crt").read_bytes(), (d / "ca.key").read_bytes()
    p = certs(d, "ca")
    assert "kept" in p.stdout and "--force" in p.stdout
    assert ((d / "ca.crt").read_bytes(), (d / "ca.key").read_bytes()) == first
    certs(d, "member", "m1")
    before = (d / "m1.crt").read_bytes()
    assert "kept" in certs(d, "member", "m1").stdout
    assert (d / "m1.crt").read_bytes() == before
    certs(d, "--force", "ca")
    assert (d / "ca.crt").read_bytes() != first[0] and (d / "ca.key").read_bytes() != first[1]
    # The old member certificate no longer chains to the new CA.
    assert subprocess.run(["openssl", "verify", "-CAfile", str(d / "ca.crt"), str(d / "m1.crt")],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE).returncode != 0


def test_renew_keeps_the_names_and_the_key_and_can_change_the_key(tmp_path):
    d = tmp_path / "tls"
    certs(d, "ca")
    certs(d, "member", "m2", "--url", "tls+tcp://m2.lan:2480", "--days", "3")
    names, serial, key = sans(d / "m2.crt"), x509(d / "m2.crt", "-serial"), pubkey(d / "m2.key")
    out = certs(d, "renew", "m2").stdout
    assert "systemctl reload" in out
    assert sans(d / "m2.crt") == names and x509(d / "m2.crt", "-serial") != serial
    assert pubkey(d / "m2.key") == key
    # Renewed for the default lifetime, not the 3 days of the first one.
    assert subprocess.run(["openssl", "x509", "-in", str(d / "m2.crt"), "-noout", "-checkend", str(30 * 86400)],
                          stdout=subprocess.PIPE).returncode == 0
    certs(d, "renew", "m2", "--new-key")
    assert pubkey(d / "m2.key") != key and mode(d / "m2.key") == 0o600
    subprocess.run(["openssl", "verify", "-CAfile", str(d / "ca.crt"), str(d / "m2.crt")], check=True,
                   stdout=subprocess.PIPE)
    # The certificate and its key belong together.
    crt_pub = subprocess.run(["openssl", "x509", "-in", str(d / "m2.crt"), "-noout", "-pubkey"],
                             stdout=subprocess.PIPE, text=True, check=True).stdout
    assert crt_pub == pubkey(d / "m2.key")
    # A client certificate renews as a client.
    certs(d, "client", "bob")
    certs(d, "renew", "client-bob")
    assert "Server Authentication" not in x509(d / "client-bob.crt", "-ext", "extendedKeyUsage")


def test_mistakes_get_clear_errors(tmp_path):
    d = tmp_path / "tls"
    p = certs(d, "member", "m1", ok=False)
    assert p.returncode == 1 and "no CA" in p.stderr and "cairn-certs --dir" in p.stderr
    certs(d, "ca")
    for bad in ("m 1", "-x", "a/b", "m1;rm"):
        p = certs(d, "member", bad, ok=False)
        assert p.returncode != 0 and p.stderr, bad
    p = certs(d, "member", "m1", "--url", "http://m1:80", ok=False)
    assert p.returncode == 1 and "--url" in p.stderr
    p = certs(d, "renew", "nobody", ok=False)
    assert p.returncode == 1 and "no certificate" in p.stderr
    p = certs(d, "--days", "0", "client", "x", ok=False)
    assert p.returncode == 1 and "--days" in p.stderr
    p = subprocess.run([TOOL, "frobnicate"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.returncode != 0 and "unknown command" in p.stderr
    # An IP address in a URL is noted: TLS here checks DNS names only.
    p = certs(d, "member", "m3", "--url", "tls+tcp://192.0.2.7:2480")
    assert "DNS" in p.stderr and "IP Address:192.0.2.7" in x509(d / "m3.crt", "-ext", "subjectAltName")
    assert not list(d.glob(".cairn-certs.*")), "a work directory was left behind"


def test_keys_go_to_the_owner(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("giving a key to another user needs root")
    d = tmp_path / "tls"
    certs(d, "ca")
    p = subprocess.run([TOOL, "--dir", str(d), "--owner", "nobody", "member", "m1"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
    assert p.returncode == 0, p.stderr
    st = os.stat(str(d / "m1.key"))
    assert st.st_uid == int(subprocess.run(["id", "-u", "nobody"], stdout=subprocess.PIPE, text=True).stdout)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert re.search(r"belongs to nobody", p.stdout)
    # The CA key is never given away; a renewal with a new key keeps the owner.
    assert os.stat(str(d / "ca.key")).st_uid == 0
    certs_p = subprocess.run([TOOL, "--dir", str(d), "renew", "m1", "--new-key"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    assert certs_p.returncode == 0, certs_p.stderr
    assert os.stat(str(d / "m1.key")).st_uid == st.st_uid
