"""The unit files, the journal catalog and the man pages, checked as files:
`systemd-analyze security` rates the services at most 2.0 and every
hardening setting left off is explained in the unit; `systemd-analyze
verify` passes on the installed units (inside a sandbox, where the
installed binaries and man pages are); the sockets, the example
configuration and the services agree; the catalog explains every
MESSAGE_ID of daemon/msgids.h; the man pages name every option.
"""
import os
import re
import shutil
import subprocess

import pytest

import sdsandbox

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
UNITS = os.path.join(ROOT, "units")
SERVICES = ("cairnd.service", "cairnd@.service")
MAX_EXPOSURE = 2.0


def need(tool):
    if not shutil.which(tool):
        pytest.skip("the %s command is missing" % tool)


def unit_settings(name, section=None):
    """[(section, key, value)] of a unit file, comments dropped."""
    out, sec = [], None
    with open(os.path.join(UNITS, name)) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("["):
                sec = line.strip("[]")
                continue
            k, _, v = line.partition("=")
            if section is None or sec == section:
                out.append((sec, k, v))
    return out


def setting(name, key, section=None):
    vals = [v for _, k, v in unit_settings(name, section) if k == key]
    return vals


def comments(name):
    with open(os.path.join(UNITS, name)) as f:
        return "\n".join(line for line in f if line.lstrip().startswith("#"))


def security(unit):
    """(exposure, [names of the settings marked as not set]) from systemd-analyze."""
    p = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager", os.path.join(UNITS, unit)],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={"PATH": os.environ["PATH"],
                                                                                        "SYSTEMD_COLORS": "0"})
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", p.stdout)
    assert m, p.stdout
    off = re.findall(r"^✗ (\S+?)=", p.stdout, re.M)
    return float(m.group(1)), off, p.stdout


@pytest.mark.parametrize("unit", SERVICES)
def test_the_service_rates_at_most_2_0_in_systemd_analyze_security(unit):
    need("systemd-analyze")
    exposure, _, out = security(unit)
    assert exposure <= MAX_EXPOSURE, out
    assert "OK" in out.splitlines()[-1], out


@pytest.mark.parametrize("unit", SERVICES)
def test_every_hardening_setting_left_off_is_explained_in_the_unit(unit):
    need("systemd-analyze")
    _, off, out = security(unit)
    text = comments(unit)
    assert off, out  # the network service cannot have everything on
    for name in off:
        base = name.split("=")[0].split("~")[0]
        # RestrictAddressFamilies=~AF_... lines: the families it keeps are the point.
        if base == "RestrictAddressFamilies":
            assert "AF_INET" in text or "AF_UNIX" in text, text
            continue
        assert base in text, "%s is left off but the comments of %s do not say why" % (base, unit)


def test_the_two_services_are_hardened_alike():
    def hardening(name):
        skip = {"Description", "StateDirectory", "RuntimeDirectory", "ConfigurationDirectory", "Sockets", "Wants",
                "After", "Also"}
        return sorted((s, k, v) for s, k, v in unit_settings(name) if k not in skip)
    assert hardening("cairnd.service") == hardening("cairnd@.service")


def test_the_service_is_a_notify_service_with_the_lifecycle_settings():
    s = dict((k, v) for _, k, v in unit_settings("cairnd.service", "Service"))
    assert s["Type"] == "notify" and s["NotifyAccess"] == "main"
    assert s["ExecReload"].endswith("kill -HUP $MAINPID")
    assert s["Restart"] == "on-failure" and "78" in s["RestartPreventExitStatus"].split()
    assert s["User"] == "cairn" and s["Group"] == "cairn"
    for k in ("WatchdogSec", "TimeoutStartSec", "LimitNOFILE"):
        assert s.get(k), k
    assert s["StateDirectory"] == s["RuntimeDirectory"] == s["ConfigurationDirectory"] == "cairn"
    t = dict((k, v) for _, k, v in unit_settings("cairnd@.service", "Service"))
    assert t["StateDirectory"] == t["RuntimeDirectory"] == t["ConfigurationDirectory"] == "cairn/%i"
    # The user the units run as is the one sysusers.d makes.
    with open(os.path.join(UNITS, "sysusers.d", "cairn.conf")) as f:
        assert re.search(r"^u\s+cairn\s", f.read(), re.M)


def _config(path):
    out = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                k, _, v = line.partition("=")
                out[k.strip()] = v.strip()
    return out


def _socket_address(url):
    """What ListenStream= must say for a listen URL with a numeric host, or an ipc path."""
    if url.startswith("ipc://"):
        return url[len("ipc://"):]
    return re.sub(r"^(tcp|tls\+tcp)://", "", url)


def test_the_sockets_match_the_example_configuration_and_the_services():
    conf = _config(os.path.join(UNITS, "cairnd.conf"))
    want = {"cairnd.socket": ("client", _socket_address(conf["listen-client-urls"])),
            "cairnd-peer.socket": ("peer", _socket_address(conf["listen-peer-urls"])),
            "cairnd-admin.socket": ("admin", _socket_address(conf["listen-admin-url"]))}
    for sock, (fdname, address) in want.items():
        assert setting(sock, "ListenStream") == [address], sock
        assert setting(sock, "FileDescriptorName") == [fdname], sock
        assert setting(sock, "Service") == ["cairnd.service"], sock
        tmpl = sock.replace(".socket", "@.socket")
        assert setting(tmpl, "FileDescriptorName") == [fdname], tmpl
        assert setting(tmpl, "Service") == ["cairnd@%i.service"], tmpl
    # The ports are explicit addresses: a bare port would be [::]:port, which
    # no URL but tcp://[::]:port matches.
    for sock in want:
        for a in setting(sock, "ListenStream"):
            assert a.startswith("/") or re.match(r"^[\d.]+:\d+$|^\[.*\]:\d+$", a), a
    assert setting("cairnd-admin@.socket", "ListenStream") == ["/run/cairn/%i/cairnd.sock"]
    # The services take every socket, and the client socket brings the others.
    assert sorted(setting("cairnd.service", "Sockets")[0].split()) == sorted(want)
    assert sorted(setting("cairnd@.service", "Sockets")[0].split()) == sorted(
        s.replace(".socket", "@%i.socket") for s in want)
    assert sorted(setting("cairnd.socket", "Wants")[0].split()) == ["cairnd-admin.socket", "cairnd-peer.socket"]
    # The admin socket is for the cairn user only.
    for sock in ("cairnd-admin.socket", "cairnd-admin@.socket"):
        assert setting(sock, "SocketUser") == ["cairn"] and setting(sock, "SocketMode") == ["0600"], sock


def _msgids():
    with open(os.path.join(ROOT, "daemon", "msgids.h")) as f:
        return dict(re.findall(r'#define (MSGID_\w+) "([0-9a-f]{32})"', f.read()))


def test_the_catalog_explains_every_message_id(tmp_path):
    need("journalctl")
    ids = _msgids()
    assert len(ids) >= 15 and len(set(ids.values())) == len(ids), ids
    with open(os.path.join(UNITS, "cairn.catalog")) as f:
        text = f.read()
    entries = dict(re.findall(r"^-- ([0-9a-f]{32})\n(.*?)(?=^-- |\Z)", text, re.M | re.S))
    assert set(entries) == set(ids.values())
    for name, mid in ids.items():
        e = entries[mid]
        assert re.search(r"^Subject: \S", e, re.M), name
        assert re.search(r"^Defined-By: cairn$", e, re.M), name
        # What happened, then what to check and do: two paragraphs at least.
        paragraphs = [p for p in e.split("\n\n")[1:] if p.strip()]
        assert len(paragraphs) >= 2, "%s: the catalog says what happened but not what to do" % name
    # journalctl reads it: build a catalog database from it alone and list it.
    cat = tmp_path / "usr/lib/systemd/catalog"
    cat.mkdir(parents=True)
    (tmp_path / "var/lib/systemd/catalog").mkdir(parents=True)
    shutil.copy(os.path.join(UNITS, "cairn.catalog"), str(cat))
    subprocess.run(["journalctl", "--root", str(tmp_path), "--update-catalog"], check=True)
    listed = subprocess.run(["journalctl", "--root", str(tmp_path), "--list-catalog"], check=True,
                            stdout=subprocess.PIPE, text=True).stdout
    assert {line.split()[0] for line in listed.splitlines() if line.strip()} == set(ids.values())


def _options(cairnd_path):
    out = subprocess.run([str(cairnd_path), "--help"], stdout=subprocess.PIPE, text=True, check=True).stdout
    return re.findall(r"^  --([a-z0-9-]+)$", out, re.M)


def test_the_man_pages_name_every_option(cairnd_path):
    opts = _options(cairnd_path)
    assert len(opts) > 20
    with open(os.path.join(ROOT, "docs", "man", "cairnd.conf.5")) as f:
        conf5 = f.read().replace("\\-", "-")
    missing = [o for o in opts if not re.search(r"^\.B[IR]? %s \" = \"" % re.escape(o), conf5, re.M)]
    assert not missing, "cairnd.conf(5) does not describe: %s" % ", ".join(missing)
    with open(os.path.join(UNITS, "cairnd.conf")) as f:
        example = f.read()
    assert all(re.search(r"^#?%s = " % re.escape(k), example, re.M) for k in
               ("name", "listen-client-urls", "listen-peer-urls", "listen-admin-url", "initial-cluster",
                "cert-file", "peer-cert-file")), example


@pytest.mark.parametrize("page", ["cairnd.8", "cairnd.conf.5", "cairn-certs.1"])
def test_the_man_pages_render_without_warnings(page):
    need("man")
    p = subprocess.run(["man", "--warnings", "-l", os.path.join(ROOT, "docs", "man", page)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       env={"PATH": os.environ["PATH"], "MANWIDTH": "80", "LANG": "C.UTF-8", "MANPAGER": "cat"})
    assert p.returncode == 0 and not p.stderr.strip(), p.stderr
    assert "SEE ALSO" in p.stdout


def test_the_installed_units_pass_systemd_analyze_verify(root_dir, build_dir, cairnd_path, tmp_path,
                                                         tmp_path_factory):
    """Inside a sandbox, where the installed binaries, man pages and the cairn
    user exist as on a real host; templates are verified as instances too."""
    try:
        sdsandbox.check_available()
    except sdsandbox.Unavailable as e:
        pytest.skip("no systemd sandbox on this machine: %s" % e)
    tree = sdsandbox.installed_tree(root_dir, build_dir, tmp_path_factory.mktemp("install"))
    h = sdsandbox.CairnHost(tmp_path, "verify")
    h.start()
    ok = False
    try:
        h.install(tree)
        units = sorted(os.listdir(os.path.join(tree, "usr/lib/systemd/system")))
        assert len(units) == 8, units
        paths = ["/usr/lib/systemd/system/" + u for u in units]
        man = "--man=yes" if shutil.which("man") else "--man=no"
        p = h.run(["systemd-analyze", "verify", man] + paths, check=False)
        assert p.returncode == 0 and not p.stderr.strip() and not p.stdout.strip(), p.stdout + p.stderr
        # An instance of the templates, as systemctl loads it.
        p = h.run(["systemd-analyze", "verify", man, "cairnd@m1.service", "cairnd@m1.socket",
                   "cairnd-peer@m1.socket", "cairnd-admin@m1.socket"], check=False)
        assert p.returncode == 0 and not p.stderr.strip(), p.stdout + p.stderr
        ok = True
    finally:
        h.stop()
        if ok:
            h.remove_files()
