"""Shared fixtures for Cairn's integration tests.

Tests run real programs from the build directory (CAIRN_BUILD, set by
test/run.py; build/ by default) and clean up every process and file they make.
"""
import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def build_dir():
    return pathlib.Path(os.environ.get("CAIRN_BUILD", ROOT / "build")).resolve()


@pytest.fixture(scope="session")
def root_dir():
    return ROOT


# ---------------------------------------------------------------- cairnd fixtures
# cluster.py starts real members; cairnwire.py talks to them byte by byte.

import shutil  # noqa: E402
import subprocess  # noqa: E402

import cairnwire  # noqa: E402
import cluster as cluster_mod  # noqa: E402


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Remember each phase's report on the item, so teardown knows if the test failed."""
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def _failed(request):
    rep = getattr(request.node, "rep_call", None)
    return rep is None or rep.failed


@pytest.fixture(scope="session")
def cairnd_path(build_dir):
    """build/cairnd, or skip: the daemon lands with issue 6."""
    p = build_dir / "cairnd"
    if not p.exists():
        pytest.skip("%s does not exist yet (cairnd lands with issue 6)" % p)
    return p


@pytest.fixture(scope="session")
def wire(root_dir, build_dir, tmp_path_factory):
    """cairnwire with the protobuf messages compiled and the error table read."""
    try:
        cairnwire.load_protos(str(root_dir), str(tmp_path_factory.mktemp("pb")))
    except RuntimeError as e:
        why = "cairnwire needs protoc and python3-protobuf: %s" % e
        if (build_dir / "cairnd").exists():
            pytest.fail(why)
        pytest.skip(why)
    cairnwire.load_errors(str(root_dir))
    return cairnwire


@pytest.fixture(scope="session")
def certs_factory(tmp_path_factory):
    """A function returning the session's test PKI (made on first use)."""
    made = []

    def get():
        if not made:
            if not shutil.which("openssl"):
                pytest.fail("the openssl command is missing (Debian package openssl)")
            made.append(cluster_mod.Certs(tmp_path_factory.mktemp("certs")))
        return made[0]
    return get


@pytest.fixture
def certs(certs_factory):
    return certs_factory()


@pytest.fixture(scope="session")
def cairn_load_path(build_dir):
    p = build_dir / "cairn-load"
    if not p.exists():
        pytest.fail("%s was not built (make builds tools/cairn-load.c)" % p)
    return p


@pytest.fixture
def env(cairnd_path, wire, cairn_load_path, certs_factory, tmp_path, request):
    """Start clusters with env.cluster(n, ...), loads with env.load; every
    process is killed at teardown; on failure the members' log tails are
    printed and their files kept under tmp_path."""
    e = cluster_mod.Env(cairnd_path, tmp_path, certs_factory, cairn_load_path)
    yield e
    e.teardown(failed=_failed(request))


@pytest.fixture
def member(env):
    """One started member (a one-member cluster with a leader)."""
    return env.cluster(1)[0]


def compile_c(root_dir, build_dir, out_dir, source, extra=()):
    """Build one test helper program from test/integration/<source>; returns its path."""
    out = str(out_dir / source[:-2])
    # Under `make asan` the build's libraries are instrumented: link the helper alike.
    san = ["-fsanitize=address,undefined"] if os.environ.get("CAIRN_SANITIZE") == "1" else []
    # The nng the build links (third_party/nng/build.sh), not the system's.
    nng = os.environ.get("CAIRN_NNG_DIR") or str(root_dir / "build" / "nng")
    cmd = ["cc", "-std=c11", "-D_GNU_SOURCE", *san, "-Wall", "-Wextra", "-Werror", "-O1", "-I", str(root_dir),
           "-I", str(build_dir), "-I", nng + "/include", "-o", out, str(root_dir / "test" / "integration" / source),
           *extra, nng + "/lib/libnng.a", "-lmbedtls", "-lmbedx509", "-lmbedcrypto", "-lpthread"]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if p.returncode != 0:
        pytest.fail("cannot build %s:\n%s" % (source, p.stdout.decode(errors="replace")))
    return out


class HelperServer:
    """A helper program serving one URL until its stdin closes."""

    def __init__(self, path, url):
        self.proc = subprocess.Popen([path, url], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     preexec_fn=cluster_mod._die_with_parent)
        self.url = self.proc.stdout.readline().decode().strip()
        if not self.url:
            self.stop()
            pytest.fail("%s did not start on %s" % (path, url))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()


@pytest.fixture(scope="session")
def helper_bin(root_dir, build_dir, tmp_path_factory):
    """Compile a helper: helper_bin("sp_echo.c") or helper_bin("mock_member.c")."""
    out_dir = tmp_path_factory.mktemp("helpers")
    built = {}

    def get(source):
        if source not in built:
            extra = []
            if source == "mock_member.c":
                lib = build_dir / "libproto.a"
                if not lib.exists():
                    pytest.fail("%s was not built" % lib)
                extra = [str(lib), "-lprotobuf-c"]
            built[source] = compile_c(root_dir, build_dir, out_dir, source, extra)
        return built[source]
    return get


@pytest.fixture
def serve(helper_bin):
    """serve("sp_echo.c", url) -> a HelperServer stopped at teardown."""
    servers = []

    def start(source, url="tcp://127.0.0.1:0"):
        s = HelperServer(helper_bin(source), url)
        servers.append(s)
        return s
    yield start
    for s in servers:
        s.stop()
