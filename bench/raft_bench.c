/*
 * raft_bench: how fast the Raft core alone commits proposals - three
 * members in one process, an instant network (messages are stepped straight
 * into the peer), persistence that does nothing - and how much memory an
 * entry costs while it is in flight.  Not a test: it asserts nothing.
 *   raft_bench [seconds-per-case]   (default 2; the whole run stays under 20 s)
 */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "raft/raft.h"

#define N 3

struct cluster {
    struct raft *r[N + 1];
    uint64_t applied[N + 1];
    uint64_t applied_index[N + 1], applied_term[N + 1], snap_index[N + 1];
    uint64_t bytes_applied;
    struct raft_conf_state conf;
};

/* Like the daemon: snapshot every 10000 applied entries, keep 5000 for catch-up (DESIGN.md). */
static void maybe_compact(struct cluster *c, int i)
{
    if (c->applied_index[i] < c->snap_index[i] + 10000)
        return;
    struct raft_snapshot_meta meta = { .index = c->applied_index[i], .term = c->applied_term[i],
                                       .conf_state = c->conf };
    if (raft_compact(c->r[i], &meta, 5000) == 0)
        c->snap_index[i] = meta.index;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, int rc)
{
    fprintf(stderr, "raft_bench: %s failed: %d\n", what, rc);
    exit(1);
}

static void start(struct cluster *c, uint32_t inflight)
{
    struct raft_snapshot_meta boot = { .index = 1, .term = 1 };
    for (int i = 1; i <= N; i++)
        boot.conf_state.voters[boot.conf_state.n_voters++] = (uint64_t)i;
    memset(c, 0, sizeof(*c));
    c->conf = boot.conf_state;
    for (int i = 1; i <= N; i++) {
        struct raft_config cfg = { .id = (uint64_t)i, .seed = 42, .election_tick = 10, .heartbeat_tick = 1,
                                   .max_inflight_msgs = inflight };
        struct raft_restore rs = { .hard_state = { 1, 0, 1 }, .snapshot = boot };
        int rc = raft_new(&cfg, &rs, &c->r[i]);
        if (rc < 0)
            die("raft_new", rc);
    }
}

/* One pass of every member's Ready: no-op persistence, instant delivery, count applies. */
static int pump(struct cluster *c, int deliver)
{
    int work = 0;
    for (int i = 1; i <= N; i++) {
        while (raft_has_ready(c->r[i])) {
            struct raft_ready rd;
            raft_ready(c->r[i], &rd);
            work = 1;
            for (size_t k = 0; deliver && k < rd.n_msgs; k++) {
                int rc = raft_step(c->r[rd.msgs[k].to], &rd.msgs[k]);
                if (rc < 0)
                    die("raft_step", rc);
            }
            for (size_t k = 0; k < rd.n_committed; k++)
                c->bytes_applied += rd.committed[k].len;
            c->applied[i] += rd.n_committed;
            if (rd.n_committed) {
                c->applied_index[i] = rd.committed[rd.n_committed - 1].index;
                c->applied_term[i] = rd.committed[rd.n_committed - 1].term;
            }
            raft_advance(c->r[i], &rd);
            maybe_compact(c, i);
            if (!deliver)
                break;
        }
    }
    return work;
}

static void elect(struct cluster *c)
{
    if (raft_campaign(c->r[1]) < 0)
        die("raft_campaign", -1);
    while (pump(c, 1))
        ;
}

static void stop(struct cluster *c)
{
    for (int i = 1; i <= N; i++)
        raft_free(c->r[i]);
}

/* Committed entries per second with batches of `batch` proposals of `size` bytes. */
static void throughput(size_t batch, size_t size, double secs)
{
    struct cluster c;
    start(&c, 256);
    elect(&c);
    char *data = calloc(batch, size ? size : 1);
    struct raft_buf *bufs = calloc(batch, sizeof(*bufs));
    for (size_t i = 0; i < batch; i++)
        bufs[i] = (struct raft_buf){ data + i * size, size };
    uint64_t base = c.applied[1];
    double t0 = now(), t;
    do {
        for (int k = 0; k < 64; k++) {
            int rc = raft_propose_batch(c.r[1], bufs, batch);
            if (rc < 0)
                die("raft_propose_batch", rc);
            pump(&c, 1);
        }
        t = now();
    } while (t - t0 < secs);
    while (pump(&c, 1))
        ;
    t = now();
    uint64_t done = c.applied[1] - base;
    printf("batch %5zu x %4zu B: %10.0f entries/s committed (%8.1f MB/s), %llu entries in %.2fs\n", batch, size,
           (double)done / (t - t0), (double)done * (double)size / (t - t0) / 1e6, (unsigned long long)done, t - t0);
    free(data);
    free(bufs);
    stop(&c);
}

/* Heap bytes per entry appended by the leader and not yet acknowledged. */
static void memory_per_entry(size_t size)
{
    struct cluster c;
    const size_t n = 100000;
    start(&c, 1u << 20);
    elect(&c);
    static char data[256 * 1024];
    struct raft_buf bufs[256];
    for (size_t i = 0; i < 256; i++)
        bufs[i] = (struct raft_buf){ data + i * size, size };
    struct mallinfo2 before = mallinfo2();
    /* batches go out (MsgApp built and "sent") but no follower ever answers */
    for (size_t i = 0; i < n; i += 256) {
        if (raft_propose_batch(c.r[1], bufs, 256) < 0)
            die("raft_propose", -1);
        pump(&c, 0);
    }
    struct mallinfo2 after = mallinfo2();
    if (after.uordblks + after.hblkhd == before.uordblks + before.hblkhd) {
        printf("memory per in-flight entry (%4zu B payload): not measurable (the allocator is not glibc's, e.g. ASan)\n",
               size);
        stop(&c);
        return;
    }
    printf("memory per in-flight entry (%4zu B payload): %.1f bytes at the leader (entry header, data copy, log array slack)\n", size,
           (double)((after.uordblks + after.hblkhd) - (before.uordblks + before.hblkhd)) / (double)n);
    stop(&c);
}

int main(int argc, char **argv)
{
    double secs = argc > 1 ? atof(argv[1]) : 2.0;
    printf("raft_bench: 3 members, instant network, no-op persistence, %.1fs per case\n", secs);
    throughput(1, 16, secs);
    throughput(16, 16, secs);
    throughput(256, 16, secs);
    throughput(1024, 16, secs);
    throughput(256, 256, secs);
    memory_per_entry(16);
    memory_per_entry(256);
    return 0;
}
