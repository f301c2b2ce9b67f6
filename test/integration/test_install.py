"""`make install DESTDIR=... PREFIX=...` lays out the tree an operator expects,
with every built program, the client library and its header and pkg-config
file, the units and the docs, and nothing outside DESTDIR."""
import os
import subprocess


def installed_tree(root_dir, build_dir, tmp_path, prefix="/usr"):
    dest = tmp_path / "dest"
    subprocess.run(["make", "--no-print-directory", "-C", str(root_dir), "install",
                    "BUILD=" + str(build_dir), "DESTDIR=" + str(dest), "PREFIX=" + prefix,
                    "SANITIZE=" + os.environ.get("CAIRN_SANITIZE", "")],
                   check=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return dest


def test_install_puts_everything_under_destdir_and_prefix(root_dir, build_dir, tmp_path):
    dest = installed_tree(root_dir, build_dir, tmp_path)
    files = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert files, "install wrote nothing"
    assert all(f.startswith("usr/") for f in files), files
    assert "usr/share/doc/cairn/README.md" in files

    for prog in ("cairnd", "cairn"):
        if (build_dir / prog).exists():
            p = dest / "usr/bin" / prog
            assert p.exists() and os.access(p, os.X_OK), prog
    if (build_dir / "libclient.a").exists():
        for f in ("include/cairn/cairn.h", "include/cairn/errors.h", "include/cairn/proto/cairn.pb-c.h",
                  "include/cairn/proto/kv.pb-c.h", "lib/libcairn.a", "lib/libcairn.so.0", "lib/libcairn.so"):
            assert (dest / "usr" / f).exists(), f
        pc = dest / "usr/lib/pkgconfig/cairn.pc"
        out = subprocess.run(["pkg-config", "--cflags", "--libs", str(pc)],
                             check=True, stdout=subprocess.PIPE, text=True).stdout
        assert "-I/usr/include/cairn" in out and "-lcairn" in out
    for unit in (root_dir / "units").glob("*.s*"):
        assert (dest / "usr/lib/systemd/system" / unit.name).exists(), unit.name


def test_install_honours_prefix(root_dir, build_dir, tmp_path):
    dest = installed_tree(root_dir, build_dir, tmp_path, prefix="/opt/cairn")
    files = [p for p in dest.rglob("*") if p.is_file()]
    assert files and all(str(p.relative_to(dest)).startswith("opt/cairn/") for p in files)


def test_the_shared_library_exports_only_the_cairn_interface(root_dir, build_dir, tmp_path):
    """libcairn.so's dynamic symbols are the cairn_ calls and the public protos'
    cairn__ code (client/libcairn.map): its own helpers (endpoint_pick,
    detail_set, ...) and the internal protos would otherwise meet a program's
    symbols of the same names."""
    if not (build_dir / "libclient.a").exists():
        return
    dest = installed_tree(root_dir, build_dir, tmp_path)
    out = subprocess.run(["nm", "-D", "--defined-only", str(dest / "usr/lib/libcairn.so.0")],
                         check=True, stdout=subprocess.PIPE, text=True).stdout
    names = [line.split()[-1] for line in out.splitlines() if line.strip()]
    assert any(n == "cairn_call" for n in names) and any(n.startswith("cairn__") for n in names), names[:20]
    assert [n for n in names if not n.startswith("cairn_")] == []


PROGRAM = r"""
#include <stdio.h>
#include <cairn.h>

int main(void)
{
    const char *eps[] = {"tcp://127.0.0.1:1"};
    struct cairn_config cfg = {.endpoints = eps, .n_endpoints = 1, .dial_timeout_ms = 50, .call_timeout_ms = 200};
    struct cairn_client *c = NULL;
    struct cairn_error_detail err;
    if (cairn_open(&cfg, &c, &err) != 0)
        return 2;
    Cairn__StatusRequest st = CAIRN__STATUS_REQUEST__INIT;
    Cairn__Request req = CAIRN__REQUEST__INIT;
    req.body_case = CAIRN__REQUEST__BODY_STATUS;
    req.status = &st;
    Cairn__Response *resp = NULL;
    int rc = cairn_call(c, &req, NULL, &resp, &err);
    printf("%s: %s\n", cairn_errname(rc), cairn_strerror(rc));
    cairn_close(c);
    return rc == -CAIRN_E_UNAVAILABLE ? 0 : 1;
}
"""


def test_a_program_builds_against_the_installed_library(root_dir, build_dir, tmp_path):
    """What a user does: compile with the installed pkg-config file, link
    shared and static, run; with no member listening the call is UNAVAILABLE."""
    if not (build_dir / "libclient.a").exists():
        return
    dest = installed_tree(root_dir, build_dir, tmp_path)
    src = tmp_path / "prog.c"
    src.write_text(PROGRAM)
    pcdir = dest / "usr/lib/pkgconfig"
    def pkg(*args):
        return subprocess.run(["pkg-config", "--define-variable=prefix=%s/usr" % dest, *args, "cairn"],
                              check=True, stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ, PKG_CONFIG_PATH=str(pcdir))).stdout.split()
    static_libs = [str(dest / "usr/lib/libcairn.a")] + [l for l in pkg("--libs", "--static") if l != "-lcairn"]
    for kind, libs in (("shared", pkg("--libs")), ("static", static_libs)):
        exe = tmp_path / ("prog-" + kind)
        # a sanitized tree (make asan) installs a sanitized library: build the program alike
        san = ["-fsanitize=address,undefined"] if os.environ.get("CAIRN_SANITIZE") == "1" else []
        subprocess.run(["cc", "-std=c11", "-Wall", "-Werror", "-o", str(exe), str(src)] + san + pkg("--cflags") + libs,
                       check=True)
        env = dict(os.environ, LD_LIBRARY_PATH=str(dest / "usr/lib"))
        r = subprocess.run([str(exe)], env=env, stdout=subprocess.PIPE, text=True, timeout=30)
        assert r.returncode == 0, (kind, r.stdout)
        assert "UNAVAILABLE" in r.stdout
