"""cairnd's start-up: the command line, configuration errors, and a data
directory that belongs to another member or cluster (issue 6)."""
import os
import re
import subprocess



def run_cairnd(cairnd_path, *args, timeout=20):
    return subprocess.run([str(cairnd_path), *args], capture_output=True, text=True, timeout=timeout)


def test_help_lists_every_option_with_its_default(cairnd_path, root_dir):
    r = run_cairnd(cairnd_path, "--help")
    assert r.returncode == 0, r.stderr
    # every option of the table in daemon/config.c, and etcd's names the issue lists
    table = (root_dir / "daemon" / "config.c").read_text()
    names = re.findall(r'^\s*\{"([a-z-]+)", T_', table, re.M)
    assert len(names) > 30
    blocks = {}
    for block in re.split(r"\n(?=  --)", r.stdout):
        m = re.match(r"  --([a-z-]+)", block)
        if m:
            blocks[m.group(1)] = block
    for name in names:
        assert name in blocks and "default:" in blocks[name], (name, blocks.get(name))
    assert "default: 100" in blocks["heartbeat-interval"], blocks["heartbeat-interval"]
    assert "default: 7s" in blocks["request-timeout"], blocks["request-timeout"]


def test_version(cairnd_path):
    r = run_cairnd(cairnd_path, "--version")
    assert r.returncode == 0 and re.match(r"cairnd \d+\.\d+\.\d+", r.stdout), r


def test_a_bad_value_stops_the_start_naming_the_option(cairnd_path, tmp_path):
    r = run_cairnd(cairnd_path, "--data-dir", str(tmp_path / "d"), "--heartbeat-interval", "soon")
    assert r.returncode == 78, r
    assert "heartbeat-interval" in r.stderr and "soon" in r.stderr, r.stderr
    assert not (tmp_path / "d").exists()


def _restart_with(m, **changes):
    """Restart member m (stopped) with some of its flags changed; return (exit code, log)."""
    argv = m.argv()
    for flag, value in changes.items():
        flag = "--" + flag.replace("_", "-")
        argv = [a for a in argv if not a.startswith(flag + "=")] + ["%s=%s" % (flag, value)]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    return r.returncode, r.stdout + r.stderr


def test_a_data_directory_of_another_member_is_refused(env):
    c = env.cluster(1)
    m = c[0]
    assert m.terminate() == 0
    code, out = _restart_with(m, name="someone-else", initial_cluster="someone-else=" + m.peer_url)
    assert code == 78, out
    assert "belongs to member 'm1'" in out and "someone-else" in out, out


def test_a_data_directory_of_another_cluster_is_refused(env):
    c = env.cluster(1)
    m = c[0]
    assert m.terminate() == 0
    code, out = _restart_with(m, initial_cluster_token="another-token")
    assert code == 78, out
    assert "another-token" in out and c.token in out, out
    # the directory is untouched: the member still starts with its own flags
    m.restart()


def test_a_damaged_wal_stops_the_start_with_file_and_offset(env, wire):
    c = env.cluster(1)
    m = c[0]
    with m.client() as cl:
        for i in range(50):
            r = cl.call(wire.pb.Request(put=wire.pb.PutRequest(key=b"k%d" % i, value=b"x" * 100)))
            assert not wire.is_error(r), r
    assert m.terminate() == 0
    import glob
    import os
    seg = sorted(glob.glob(os.path.join(m.data_dir, "member", "wal", "*.wal")))[0]
    with open(seg, "r+b") as f:
        f.seek(600)
        b = f.read(1)
        f.seek(600)
        f.write(bytes([b[0] ^ 0xFF]))
    r = subprocess.run(m.argv(), capture_output=True, text=True, timeout=30)
    assert r.returncode != 0, r
    out = r.stdout + r.stderr
    assert os.path.basename(seg) in out and "offset" in out, out


def test_wal_dump_subcommand_reads_a_members_log(env):
    m = env.cluster(1)[0]
    assert m.terminate() == 0
    import os
    r = run_cairnd(m.cluster.cairnd, "wal", "dump", os.path.join(m.data_dir, "member", "wal"))
    assert r.returncode == 0, r
    assert "state" in r.stdout or "STATE" in r.stdout, r.stdout


def test_the_member_runs_on_the_allocator_the_build_chose(env):
    """The Makefile links cairnd with tcmalloc (MALLOC=tcmalloc, the default;
    docs/performance.md, session 18), except in sanitized builds.  Nothing
    else would notice a build that silently fell back to glibc's malloc."""
    c = env.cluster(1)
    with open("/proc/%d/maps" % c[0].pid) as f:
        maps = f.read()
    want = os.environ.get("CAIRN_MALLOC", "tcmalloc") == "tcmalloc" and os.environ.get("CAIRN_SANITIZE") != "1"
    assert ("libtcmalloc" in maps) == want, "CAIRN_MALLOC=%s CAIRN_SANITIZE=%s" % (
        os.environ.get("CAIRN_MALLOC"), os.environ.get("CAIRN_SANITIZE"))
