"""cairn-wal, the offline WAL inspector, on logs written here byte by byte
from the format docs/storage-wal.md documents (so the document is checked
too): an intact log, a torn tail, and a flipped bit before the tail."""
import struct
import subprocess

import pytest

POLY = 0x82F63B78
TABLE = []
for n in range(256):
    c = n
    for _ in range(8):
        c = (c >> 1) ^ POLY if c & 1 else c >> 1
    TABLE.append(c)


def crc32c(crc, data):
    crc ^= 0xFFFFFFFF
    for b in data:
        crc = (crc >> 8) ^ TABLE[(crc ^ b) & 0xFF]
    return crc ^ 0xFFFFFFFF


class Writer:
    """Records as the doc describes: type, len, running crc, header crc, data, padding."""

    def __init__(self):
        self.crc = 0
        self.buf = bytearray()

    def record(self, rtype, data, crc_record=False):
        if not crc_record:
            self.crc = crc32c(self.crc, data)
        hdr = struct.pack("<III", rtype, len(data), self.crc)
        self.buf += hdr + struct.pack("<I", crc32c(0, hdr)) + data
        self.buf += b"\0" * (-len(data) % 8)
        return len(self.buf)


def write_log(path, n_entries=5):
    w = Writer()
    w.record(4, b"", crc_record=True)                          # crc
    w.record(1, struct.pack("<QQ", 0x11, 0x22))                 # metadata: member, cluster
    w.record(3, struct.pack("<QQQ", 0, 0, 0))                   # state
    w.record(5, struct.pack("<QQ", 0, 0))                       # snapshot at 0
    ends = []
    for i in range(1, n_entries + 1):
        ends.append(w.record(2, struct.pack("<QQII", i, 1, 0, 0) + b"value-%d" % i))
    w.record(3, struct.pack("<QQQ", 1, 0x11, n_entries))
    seg = path / ("%016x-%016x.wal" % (0, 0))
    seg.write_bytes(bytes(w.buf) + b"\0" * 4096)               # preallocated zeros
    return seg, ends


def run(build_dir, *args):
    return subprocess.run([str(build_dir / "cairn-wal"), *args], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=30)


@pytest.fixture
def tool(build_dir):
    if not (build_dir / "cairn-wal").exists():
        pytest.fail("cairn-wal was not built")
    return build_dir


def test_intact_log_lists_every_entry(tool, tmp_path):
    write_log(tmp_path)
    r = run(tool, "dump", str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    for i in range(1, 6):
        assert "index %d" % i in r.stdout or "index=%d" % i in r.stdout, r.stdout
    assert "metadata" in r.stdout and "snapshot" in r.stdout


def test_torn_last_record_is_reported_as_a_tail_not_corruption(tool, tmp_path):
    seg, ends = write_log(tmp_path)
    data = seg.read_bytes()
    state_end = len(data) - 4096
    seg.write_bytes(data[:state_end - 10])  # cut inside the final state record
    r = run(tool, "dump", str(tmp_path))
    assert r.returncode == 1, r.stdout + r.stderr
    assert seg.read_bytes() == data[:state_end - 10], "dump must not modify the log"


def test_flipped_bit_before_the_tail_is_corruption_with_file_and_offset(tool, tmp_path):
    seg, ends = write_log(tmp_path)
    data = bytearray(seg.read_bytes())
    target = ends[1] + 20          # inside the third entry's data
    data[target] ^= 0x04
    seg.write_bytes(bytes(data))
    r = run(tool, "dump", str(tmp_path))
    assert r.returncode == 2, r.stdout + r.stderr
    out = r.stdout + r.stderr
    assert seg.name in out
    assert str(ends[1]) in out or hex(ends[1]) in out, out


def test_unreadable_directory_and_bad_usage(tool, tmp_path):
    assert run(tool, "dump", str(tmp_path / "missing")).returncode == 3
    assert run(tool, "frobnicate").returncode == 3
    assert run(tool, "--help").returncode == 0


def test_snapshot_listing_on_an_empty_directory(tool, tmp_path):
    r = run(tool, "snapshots", str(tmp_path))
    assert r.returncode == 0 and "no snapshot files" in r.stdout
