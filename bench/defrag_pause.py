#!/usr/bin/python3
"""How long Defragment holds a real member's applier (docs/performance.md,
"Defragment").

Starts one cairnd, fills its store to --mb MiB with --value-byte values,
deletes the first half of the keys (so the free pages sit before the live
ones: every page incremental vacuum gives back needs a live page moved, the
costly case), compacts, then defragments while a writer thread puts one key
after another and records each put's latency.  Prints the member's answer
(pause_ms = its longest step), the call's total time, and the writer's
latencies before and during the defragment: the stall a client sees.

  make build/cairnd && /usr/bin/python3 bench/defrag_pause.py --mb 256

Needs protoc and python3-protobuf (cairnwire compiles the schemas).  The
member and its files live in a temporary directory removed at the end.
"""
import argparse
import os
import shutil
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "test", "integration"))

import cairnwire as wire  # noqa: E402
import cluster as cluster_mod  # noqa: E402


def status(m):
    r = m.call(wire.pb.Request(status=wire.pb.StatusRequest()))
    assert not wire.is_error(r), r
    return r.status


def writer(m, stop, lat):
    with m.client(timeout=30) as c:
        i = 0
        while not stop.is_set():
            t0 = time.monotonic()
            r = c.put(b"probe", b"%d" % i)
            lat.append((t0, time.monotonic() - t0))
            assert not wire.is_error(r), r
            i += 1


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))] if xs else 0.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=256, help="store size to fill to (MiB)")
    ap.add_argument("--value-bytes", type=int, default=4096)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="defrag-pause-")
    wire.load_protos(ROOT, tmp)
    wire.load_errors(ROOT)
    env = cluster_mod.Env(os.path.join(a.build, "cairnd"), tmp)
    try:
        c = env.cluster(1, extra=["--quota-backend-bytes=8G"])
        m = c[0]
        value = os.urandom(a.value_bytes)
        n = 0
        t0 = time.monotonic()
        with m.client(timeout=60) as cl:
            while status(m).db_size < a.mb << 20:
                rs = cl.call_many([wire.put_request(b"k/%08d" % (n + i), value) for i in range(256)])
                assert not any(wire.is_error(r) for r in rs), rs[0]
                n += 256
            fill = time.monotonic() - t0
            st = status(m)
            print("filled: %d keys of %d bytes, store %.1f MiB in %.1f s" % (n, a.value_bytes, st.db_size / 2**20, fill))
            t0 = time.monotonic()
            r = cl.call(wire.delete_request(b"k/%08d" % 0, b"k/%08d" % (n // 2)), timeout=600)
            assert not wire.is_error(r), r
            rev = cl.status().header.revision
            r = cl.call(wire.pb.Request(compact=wire.pb.CompactionRequest(revision=rev, physical=True)), timeout=600)
            assert not wire.is_error(r), r
        cluster_mod.poll(lambda: status(m).db_size_in_use < status(m).db_size * 0.6, 600, "compaction")
        st = status(m)
        print("deleted the first half and compacted in %.1f s: store %.1f MiB, %.1f MiB in use"
              % (time.monotonic() - t0, st.db_size / 2**20, st.db_size_in_use / 2**20))
        stop, lat = threading.Event(), []
        th = threading.Thread(target=writer, args=(m, stop, lat))
        th.start()
        time.sleep(2)
        base = [x for _, x in lat]
        t0 = time.monotonic()
        r = m.call(wire.pb.Request(defragment=wire.pb.DefragmentRequest()), timeout=3600)
        t1 = time.monotonic()
        time.sleep(0.5)
        stop.set()
        th.join()
        assert not wire.is_error(r), r
        d = r.defragment
        during = [x for t, x in lat if t0 <= t <= t1]
        freed = (d.db_size_before - d.db_size_after) / 2**30
        print("defragment: %.1f -> %.1f MiB in %.2f s (%.2f s per GiB freed); longest step (pause_ms) %d ms"
              % (d.db_size_before / 2**20, d.db_size_after / 2**20, t1 - t0, (t1 - t0) / max(freed, 1e-9), d.pause_ms))
        print("writer before: %d puts, p50 %.1f ms, p99 %.1f ms, max %.1f ms"
              % (len(base), pct(base, .5) * 1e3, pct(base, .99) * 1e3, max(base) * 1e3))
        print("writer during: %d puts, p50 %.1f ms, p99 %.1f ms, max %.1f ms"
              % (len(during), pct(during, .5) * 1e3, pct(during, .99) * 1e3, max(during or [0]) * 1e3))
        log = [line for line in m.log_text().splitlines() if "defragmented" in line]
        print(log[-1][:400] if log else "(no defragment log line)")
    finally:
        env.teardown(failed=False)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
