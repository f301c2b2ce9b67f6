"""`make install DESTDIR=... PREFIX=...` lays out the tree an operator expects,
with every built program, the client library and its header and pkg-config
file, the units and the docs, and nothing outside DESTDIR."""
import os
import subprocess


def installed_tree(root_dir, build_dir, tmp_path, prefix="/usr"):
    dest = tmp_path / "dest"
    subprocess.run(["make", "--no-print-directory", "-C", str(root_dir), "install",
                    "BUILD=" + str(build_dir), "DESTDIR=" + str(dest), "PREFIX=" + prefix],
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
        assert (dest / "usr/include/cairn/cairn.h").exists()
        assert (dest / "usr/include/cairn/errors.h").exists()
        assert (dest / "usr/lib/libcairn.a").exists()
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
