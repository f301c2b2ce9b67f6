/*
 * mvcc_bench: storage/mvcc throughput and latency (docs/perf/mvcc.md).
 * Applies batches of 100 puts of 256-byte values over random keys, then
 * measures point reads (current and old revision), 1000-key prefix ranges,
 * reads on other threads while the writer applies, bytes on disk per key
 * revision, RSS, compaction, snapshot, and defragmentation (incremental
 * vacuum against VACUUM).
 *
 *   mvcc_bench [-n puts] [-k keys] [-d dir] [-r read_seconds] [-c cache_mb] [-m mmap_mb]
 *              [-t reader_threads] [-P] [-D]
 * Defaults are the short run of `make bench`; -P stops after the puts (for
 * profiling them), -t sets the reader threads of the concurrent phase (0
 * skips it), -D also measures defragmentation.
 */
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "base/errors.h"
#include "storage/mvcc.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t rng_state = 88172645463325252ULL;
static uint64_t rnd64(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* CPU seconds of this process (user + system): steadier than wall time on
 * a shared machine, since time the host gives to others does not count. */
static double cpu_secs(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           (double)ru.ru_stime.tv_usec / 1e6;
}

/* Bytes malloc has handed out and not taken back: the key index, mostly
 * (SQLite's page cache too); RSS also counts mapped file pages. */
static double heap_mib(void)
{
#ifdef __GLIBC__
    return (double)mallinfo2().uordblks / 1048576.0;
#else
    return -1;
#endif
}

static long rss_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    while (f && fgets(line, sizeof(line), f))
        if (sscanf(line, "VmRSS: %ld", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void report_latency(const char *what, double *lat, size_t n)
{
    qsort(lat, n, sizeof(*lat), cmp_double);
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += lat[i];
    printf("%-34s n=%zu avg %.1f us  p50 %.1f us  p99 %.1f us  max %.1f us\n", what, n,
           sum / (double)n * 1e6, lat[n / 2] * 1e6, lat[n * 99 / 100] * 1e6, lat[n - 1] * 1e6);
}

#define BATCH 100
#define VALUE 256

static void die(const char *what, int rc)
{
    fprintf(stderr, "mvcc_bench: %s: %s\n", what, cairn_strerror(rc));
    exit(1);
}

/* --- readers on other threads while the writer applies ------------------------------ */

struct conc {
    struct mvcc_store *s;
    long keys;
    bool ranges;          /* 1000-key prefix ranges instead of point reads */
    atomic_int stop;
    atomic_long reads;
    atomic_long keys_read;
};

static void *reader_main(void *p)
{
    struct conc *c = p;
    struct mvcc_reader *r;
    uint64_t x = (uint64_t)pthread_self() | 1;
    int rc;
    if ((rc = mvcc_reader_open(c->s, &r)) < 0)
        die("reader", rc);
    while (!atomic_load(&c->stop)) {
        char k[24], end[24];
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        struct mvcc_range_req q;
        if (c->ranges) {
            long pfx = (long)(x % (uint64_t)(c->keys / 1000 > 0 ? c->keys / 1000 : 1));
            int n = snprintf(k, sizeof(k), "key/%04ld", pfx);
            snprintf(end, sizeof(end), "key/%04ld", pfx + 1);
            q = (struct mvcc_range_req){.key = {k, (size_t)n}, .range_end = {end, (size_t)n}};
        } else {
            int n = snprintf(k, sizeof(k), "key/%07ld", (long)(x % (uint64_t)c->keys));
            q = (struct mvcc_range_req){.key = {k, (size_t)n}};
        }
        struct mvcc_range_result *res;
        if ((rc = mvcc_range(r, &q, &res, NULL)) < 0)
            die("concurrent range", rc);
        atomic_fetch_add(&c->keys_read, (long)res->resp.n_kvs);
        atomic_fetch_add(&c->reads, 1);
        mvcc_range_result_free(res);
    }
    mvcc_reader_close(r);
    return NULL;
}

/* Batches of 100 puts for secs seconds while `threads` readers read. */
static void concurrent_phase(struct mvcc_store *s, long keys, int threads, bool ranges, double secs,
                             uint64_t *index)
{
    struct conc c = {.s = s, .keys = keys, .ranges = ranges};
    pthread_t t[64];
    static char kbuf[BATCH][24];
    static unsigned char vbuf[BATCH][VALUE];
    struct mvcc_entry e[BATCH];
    long puts = 0;
    double worst = 0;
    if (threads > 64)
        threads = 64;
    for (int i = 0; i < threads; i++)
        if (pthread_create(&t[i], NULL, reader_main, &c) != 0)
            die("pthread_create", -EAGAIN);
    double t0 = now(), dt;
    while ((dt = now() - t0) < secs) {
        for (int i = 0; i < BATCH; i++) {
            int n = snprintf(kbuf[i], sizeof(kbuf[i]), "key/%07ld", (long)(rnd64() % (uint64_t)keys));
            for (int j = 0; j < VALUE; j += 8) {
                uint64_t x = rnd64();
                memcpy(vbuf[i] + j, &x, 8);
            }
            e[i] = (struct mvcc_entry){
                .index = ++*index, .term = 1,
                .req = {.type = MVCC_REQ_PUT,
                        .put = {.key = {kbuf[i], (size_t)n}, .value = {vbuf[i], VALUE}}}};
        }
        struct mvcc_result *res;
        double b0 = now();
        int rc = mvcc_apply(s, e, BATCH, &res);
        if (rc < 0)
            die("apply", rc);
        double b1 = now() - b0;
        worst = b1 > worst ? b1 : worst;
        mvcc_result_free(res);
        puts += BATCH;
    }
    atomic_store(&c.stop, 1);
    for (int i = 0; i < threads; i++)
        pthread_join(t[i], NULL);
    dt = now() - t0;
    char what[64];
    snprintf(what, sizeof(what), "%s, %d reader%s + writer", ranges ? "prefix ranges" : "point reads",
             threads, threads == 1 ? "" : "s");
    printf("%-34s %.0f %s/s (%.0f keys/s) while %.0f puts/s (slowest batch %.1f ms)\n", what,
           (double)atomic_load(&c.reads) / dt, ranges ? "ranges" : "reads",
           (double)atomic_load(&c.keys_read) / dt, (double)puts / dt, worst * 1e3);
}

int main(int argc, char **argv)
{
    long puts = 300000, keys = 1000000;
    double read_secs = 2;
    const char *dir = NULL;
    bool defrag = false, puts_only = false;
    int threads = 1;
    struct mvcc_options mo = {0};
    int opt;
    while ((opt = getopt(argc, argv, "n:k:d:r:c:m:t:PD")) != -1) {
        switch (opt) {
        case 'c': mo.cache_mb = atoi(optarg); break;
        case 'm': mo.mmap_mb = atoi(optarg); break;
        case 'n': puts = atol(optarg); break;
        case 'k': keys = atol(optarg); break;
        case 'd': dir = optarg; break;
        case 'r': read_secs = atof(optarg); break;
        case 't': threads = atoi(optarg); break;
        case 'P': puts_only = true; break;
        case 'D': defrag = true; break;
        default:
            fprintf(stderr, "usage: mvcc_bench [-n puts] [-k keys] [-d dir] [-r secs] [-c cache_mb] [-m mmap_mb] [-t threads] [-P] [-D]\n");
            return 2;
        }
    }
    char tmpl[] = "/tmp/mvcc_bench.XXXXXX";
    if (!dir && !(dir = mkdtemp(tmpl))) {
        perror("mkdtemp");
        return 1;
    }
    struct mvcc_store *s;
    struct mvcc_reader *r;
    char err[256];
    int rc;
    if ((rc = mvcc_open(dir, &mo, &s, err, sizeof(err))) < 0) {
        fprintf(stderr, "mvcc_bench: %s\n", err);
        return 1;
    }
    printf("mvcc_bench: %ld puts in batches of %d, %d-byte values, keys from %ld, dir %s\n",
           puts, BATCH, VALUE, keys, dir);

    /* --- puts ---------------------------------------------------------------- */
    static char kbuf[BATCH][24];
    static unsigned char vbuf[BATCH][VALUE];
    struct mvcc_entry e[BATCH];
    uint64_t index = 0;
    double t0 = now(), c0 = cpu_secs(), worst = 0;
    for (long done = 0; done < puts; done += BATCH) {
        for (int i = 0; i < BATCH; i++) {
            int n = snprintf(kbuf[i], sizeof(kbuf[i]), "key/%07ld", (long)(rnd64() % (uint64_t)keys));
            for (int j = 0; j < VALUE; j += 8) {
                uint64_t x = rnd64();
                memcpy(vbuf[i] + j, &x, 8);
            }
            e[i] = (struct mvcc_entry){
                .index = ++index, .term = 1,
                .req = {.type = MVCC_REQ_PUT,
                        .put = {.key = {kbuf[i], (size_t)n}, .value = {vbuf[i], VALUE}}}};
        }
        struct mvcc_result *res;
        double b0 = now();
        if ((rc = mvcc_apply(s, e, BATCH, &res)) < 0)
            die("apply", rc);
        double b1 = now() - b0;
        worst = b1 > worst ? b1 : worst;
        mvcc_result_free(res);
    }
    double dt = now() - t0, cpu = cpu_secs() - c0;
    printf("%-34s %.0f puts/s (%.2f s; slowest batch %.1f ms); %.0f puts per CPU second\n",
           "apply 100-put batches", (double)puts / dt, dt, worst * 1e3, (double)puts / cpu);

    struct mvcc_status st;
    mvcc_sync(s);
    mvcc_store_status(s, &st);
    printf("%-34s %.1f MiB, %.0f bytes per key revision (%ld revisions)\n", "database size",
           (double)st.db_size / 1048576.0, (double)st.db_size / (double)puts, puts);
    printf("%-34s %ld KiB (heap in use %.0f MiB)\n", "writer RSS after load", rss_kb(), heap_mib());
    if (puts_only)
        goto done;

    /* reopen: the key index is rebuilt from the revision table */
    mvcc_close(s);
    t0 = now();
    if ((rc = mvcc_open(dir, &mo, &s, err, sizeof(err))) < 0) {
        fprintf(stderr, "mvcc_bench: %s\n", err);
        return 1;
    }
    printf("%-34s %.2f s (key index rebuilt), RSS %ld KiB, heap in use %.0f MiB\n", "reopen", now() - t0,
           rss_kb(), heap_mib());
    if ((rc = mvcc_reader_open(s, &r)) < 0)
        die("reader", rc);

    /* --- point reads at the current revision ------------------------------------ */
    long reads = 0, found = 0;
    t0 = now();
    while ((dt = now() - t0) < read_secs) {
        for (int i = 0; i < 1000; i++) {
            char k[24];
            int n = snprintf(k, sizeof(k), "key/%07ld", (long)(rnd64() % (uint64_t)keys));
            struct mvcc_range_result *res;
            struct mvcc_range_req q = {.key = {k, (size_t)n}};
            if ((rc = mvcc_range(r, &q, &res, NULL)) < 0)
                die("range", rc);
            found += res->resp.n_kvs;
            mvcc_range_result_free(res);
        }
        reads += 1000;
    }
    printf("%-34s %.0f reads/s (%ld reads, %.0f%% found)\n", "point reads, current revision",
           (double)reads / dt, reads, 100.0 * (double)found / (double)reads);

    /* --- point reads at an old revision: latency -------------------------------- */
    size_t nl = 20000;
    double *lat = malloc(nl * sizeof(*lat));
    for (size_t i = 0; i < nl; i++) {
        char k[24];
        int n = snprintf(k, sizeof(k), "key/%07ld", (long)(rnd64() % (uint64_t)keys));
        struct mvcc_range_req q = {.key = {k, (size_t)n},
                                   .revision = 2 + (int64_t)(rnd64() % (uint64_t)(st.revision - 1))};
        struct mvcc_range_result *res;
        double a = now();
        if ((rc = mvcc_range(r, &q, &res, NULL)) < 0)
            die("range old", rc);
        lat[i] = now() - a;
        mvcc_range_result_free(res);
    }
    report_latency("point read, random old revision", lat, nl);

    /* --- 1000-key prefix ranges --------------------------------------------------- */
    size_t nr = 200, nkeys = 0;
    for (size_t i = 0; i < nr; i++) {
        char k[24], end[24];
        long p = (long)(rnd64() % (uint64_t)(keys / 1000 > 0 ? keys / 1000 : 1));
        int n = snprintf(k, sizeof(k), "key/%04ld", p);
        snprintf(end, sizeof(end), "key/%04ld", p + 1);
        struct mvcc_range_req q = {.key = {k, (size_t)n}, .range_end = {end, (size_t)n}};
        struct mvcc_range_result *res;
        double a = now();
        if ((rc = mvcc_range(r, &q, &res, NULL)) < 0)
            die("prefix range", rc);
        lat[i] = now() - a;
        nkeys += res->resp.n_kvs;
        mvcc_range_result_free(res);
    }
    char what[64];
    snprintf(what, sizeof(what), "prefix range (%zu keys avg)", nkeys / nr);
    report_latency(what, lat, nr);

    /* --- reads on other threads while the writer applies ---------------------------- */
    if (threads > 0) {
        concurrent_phase(s, keys, threads, false, read_secs, &index);
        concurrent_phase(s, keys, threads, true, read_secs, &index);
        mvcc_store_status(s, &st);
    }

    /* --- snapshot ---------------------------------------------------------------- */
    char snap[512];
    snprintf(snap, sizeof(snap), "%s.snap", dir);
    t0 = now();
    if ((rc = mvcc_snapshot_write(r, snap, NULL)) < 0)
        die("snapshot", rc);
    dt = now() - t0;
    printf("%-34s %.2f s (%.0f MiB/s)\n", "snapshot (online backup)", dt,
           (double)st.db_size / 1048576.0 / dt);
    unlink(snap);

    /* --- compaction: delete half of the history --------------------------------- */
    int64_t crev = st.revision - (st.revision - 1) / 2;
    struct mvcc_entry ce = {.index = ++index, .req = {.type = MVCC_REQ_COMPACT, .compact = {crev}}};
    struct mvcc_result *cres;
    if ((rc = mvcc_apply(s, &ce, 1, &cres)) < 0)
        die("compact", rc);
    mvcc_result_free(cres);
    bool done = false;
    long steps = 0;
    worst = 0;
    t0 = now();
    while (!done) {
        double a = now();
        if ((rc = mvcc_compact_step(s, 0, &done)) < 0)
            die("compact step", rc);
        double b = now() - a;
        worst = b > worst ? b : worst;
        steps++;
    }
    dt = now() - t0;
    printf("%-34s %ld steps of 1000 rows, %.2f s, %.2f ms per step avg, %.1f ms max\n",
           "compaction to the middle", steps, dt, dt / (double)steps * 1e3, worst * 1e3);
    mvcc_sync(s);
    mvcc_store_status(s, &st);
    printf("%-34s size %.1f MiB, in use %.1f MiB\n", "after compaction",
           (double)st.db_size / 1048576.0, (double)st.db_size_in_use / 1048576.0);

    if (defrag) {
        /* Free whole pages: delete the lower half of the key space in one
         * request, compact everything, then give the space back. */
        char lo[32], hi[32];
        snprintf(lo, sizeof(lo), "key/%07d", 0);
        snprintf(hi, sizeof(hi), "key/%07ld", keys / 2);
        struct mvcc_entry de = {.index = ++index,
                                .req = {.type = MVCC_REQ_DELETE_RANGE,
                                        .del = {.key = {lo, strlen(lo)}, .range_end = {hi, strlen(hi)}}}};
        t0 = now();
        if ((rc = mvcc_apply(s, &de, 1, &cres)) < 0)
            die("delete range", rc);
        dt = now() - t0;
        printf("%-34s %lld keys in %.2f s\n", "delete half the keys (1 request)",
               (long long)cres->entries[0].resp.del.deleted, dt);
        mvcc_result_free(cres);
        mvcc_store_status(s, &st);
        ce = (struct mvcc_entry){.index = ++index, .req = {.type = MVCC_REQ_COMPACT, .compact = {st.revision}}};
        if ((rc = mvcc_apply(s, &ce, 1, &cres)) < 0)
            die("compact", rc);
        mvcc_result_free(cres);
        t0 = now();
        for (done = false; !done;)
            if ((rc = mvcc_compact_step(s, 0, &done)) < 0)
                die("compact step", rc);
        mvcc_sync(s);
        mvcc_store_status(s, &st);
        printf("%-34s %.2f s; size %.1f MiB, in use %.1f MiB\n", "compaction of everything",
               now() - t0, (double)st.db_size / 1048576.0, (double)st.db_size_in_use / 1048576.0);
        /* incremental: free pages back to the file system, 1000 pages per step */
        int64_t remaining = 1, before = st.db_size;
        worst = 0;
        steps = 0;
        t0 = now();
        while (remaining > 0) {
            double a = now();
            if ((rc = mvcc_defrag_step(s, 1000, &remaining)) < 0)
                die("defrag step", rc);
            double b = now() - a;
            worst = b > worst ? b : worst;
            steps++;
        }
        dt = now() - t0;
        mvcc_store_status(s, &st);
        printf("%-34s %ld steps, %.2f s total, %.1f ms max step; %.1f -> %.1f MiB\n",
               "incremental vacuum (1000 pages)", steps, dt, worst * 1e3,
               (double)before / 1048576.0, (double)st.db_size / 1048576.0);
        mvcc_reader_close(r);
        r = NULL;
        before = st.db_size;
        t0 = now();
        if ((rc = mvcc_vacuum(s)) < 0)
            die("vacuum", rc);
        dt = now() - t0;
        mvcc_store_status(s, &st);
        printf("%-34s %.2f s blocking (%.1f s per GiB of input); %.1f -> %.1f MiB\n", "VACUUM", dt,
               dt / ((double)before / 1073741824.0), (double)before / 1048576.0,
               (double)st.db_size / 1048576.0);
    }
    mvcc_reader_close(r);
    free(lat);
done:
    mvcc_close(s);
    if (strcmp(dir, tmpl) == 0) {
        char cmd[600];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
        if (system(cmd) != 0)
            return 1;
    }
    return 0;
}
