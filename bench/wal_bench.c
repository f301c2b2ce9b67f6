/*
 * wal_bench: WAL append throughput against the disk's raw fdatasync rate,
 * measured in the same run on the same filesystem.  Phases are interleaved
 * in rounds so a noisy shared machine hits them all alike.
 *
 *   wal_bench [-d DIR] [-t SECONDS_PER_PHASE] [-r ROUNDS] [-b BATCHES] [-s PAYLOAD]
 *
 * DIR defaults to a fresh directory under the current one (removed after);
 * BATCHES is a comma list of entries per sync (default 1,100,1000).
 * The default run (3 rounds x 4 phases x 1 s) takes about 12 s.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/errors.h"
#include "storage/wal.h"

#define MAX_PHASES 8
#define MAX_BATCH 10000

struct result {
    const char *label;
    size_t batch;            /* 0: raw fdatasync */
    uint64_t syncs, entries, bytes;
    double wall, cpu, sync_time;
    uint64_t *lat;           /* per-sync latency samples, ns */
    size_t nlat, latcap;
};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_now(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static void add_lat(struct result *r, uint64_t ns)
{
    if (r->nlat == r->latcap) {
        size_t cap = r->latcap ? r->latcap * 2 : 4096;
        uint64_t *l = realloc(r->lat, cap * sizeof *l);
        if (!l)
            return;
        r->lat = l;
        r->latcap = cap;
    }
    r->lat[r->nlat++] = ns;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double pct(struct result *r, double p)
{
    if (!r->nlat)
        return 0;
    size_t i = (size_t)(p * (double)(r->nlat - 1));
    return (double)r->lat[i] / 1e6;
}

/* The same bytes a one-entry WAL append writes (record header, entry
 * header, payload; the hard state record), appended to a preallocated file
 * and fdatasync'ed: what the disk itself allows for this write pattern. */
struct raw {
    int fd;
    char path[600];
    off_t off, size;
    int nfile;
    const char *dir;
};

static int raw_file(struct raw *rw)
{
    if (rw->fd >= 0) {
        close(rw->fd);
        unlink(rw->path);
    }
    snprintf(rw->path, sizeof rw->path, "%s/raw-%d", rw->dir, rw->nfile++);
    rw->fd = open(rw->path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (rw->fd < 0)
        return -errno;
    int rc = posix_fallocate(rw->fd, 0, rw->size);
    if (rc)
        return -rc;
    rw->off = 0;
    return 0;
}

static int run_raw(struct raw *rw, struct result *r, size_t recbytes, double secs)
{
    char buf[4096];
    memset(buf, 0xab, sizeof buf);
    double t0 = now(), c0 = cpu_now(), end = t0 + secs;
    while (now() < end) {
        if (rw->off + (off_t)recbytes > rw->size && raw_file(rw) < 0)
            return -1;
        if (pwrite(rw->fd, buf, recbytes, rw->off) != (ssize_t)recbytes)
            return -1;
        rw->off += (off_t)recbytes;
        double s0 = now();
        if (fdatasync(rw->fd) < 0)
            return -1;
        double s1 = now();
        r->sync_time += s1 - s0;
        add_lat(r, (uint64_t)((s1 - s0) * 1e9));
        r->syncs++;
        r->bytes += recbytes;
    }
    r->wall += now() - t0;
    r->cpu += cpu_now() - c0;
    return 0;
}

static int run_wal(struct wal *w, struct result *r, struct wal_entry *ents, size_t payload,
                   double secs)
{
    double t0 = now(), c0 = cpu_now(), end = t0 + secs;
    while (now() < end) {
        uint64_t first = wal_last_index(w) + 1, ns = 0;
        for (size_t i = 0; i < r->batch; i++) {
            ents[i].index = first + i;
            ents[i].term = 1;
        }
        struct wal_hardstate hs = {1, 1, first + r->batch - 1};
        int rc = wal_save(w, &hs, ents, r->batch, &ns);
        if (rc < 0) {
            fprintf(stderr, "wal_save: %s\n", cairn_strerror(rc));
            return -1;
        }
        r->sync_time += (double)ns / 1e9;
        add_lat(r, ns);
        r->syncs++;
        r->entries += r->batch;
        r->bytes += r->batch * payload;
    }
    r->wall += now() - t0;
    r->cpu += cpu_now() - c0;
    return 0;
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st, (void)flag, (void)f;
    return remove(p);
}

int main(int argc, char **argv)
{
    const char *dir = NULL;
    double secs = 1.0;
    int rounds = 3, opt, made = 0;
    size_t payload = 256, batches[MAX_PHASES] = {1, 100, 1000}, nb = 3;
    char tmpl[] = "wal-bench-XXXXXX", wdir[MAX_PHASES][700];
    struct result res[MAX_PHASES + 1];
    struct wal *wals[MAX_PHASES] = {0};
    struct raw rw = {.fd = -1, .size = WAL_DEFAULT_SEGMENT_SIZE};
    struct wal_entry *ents;
    uint8_t *data;

    while ((opt = getopt(argc, argv, "d:t:r:b:s:")) != -1) {
        switch (opt) {
        case 'd': dir = optarg; break;
        case 't': secs = atof(optarg); break;
        case 'r': rounds = atoi(optarg); break;
        case 's': payload = (size_t)atol(optarg); break;
        case 'b': {
            nb = 0;
            for (char *tok = strtok(optarg, ","); tok && nb < MAX_PHASES; tok = strtok(NULL, ","))
                batches[nb++] = (size_t)atol(tok);
            break;
        }
        default:
            fprintf(stderr, "usage: %s [-d DIR] [-t SECONDS] [-r ROUNDS] [-b 1,100,1000] [-s PAYLOAD]\n",
                    argv[0]);
            return 2;
        }
    }
    for (size_t i = 0; i < nb; i++)
        if (batches[i] == 0 || batches[i] > MAX_BATCH) {
            fprintf(stderr, "batch sizes must be 1..%d\n", MAX_BATCH);
            return 2;
        }
    if (!dir) {
        if (!mkdtemp(tmpl)) {
            perror("mkdtemp");
            return 1;
        }
        dir = tmpl;
        made = 1;
    }
    rw.dir = dir;
    data = malloc(payload ? payload : 1);
    ents = calloc(MAX_BATCH, sizeof *ents);
    if (!data || !ents)
        return 1;
    for (size_t i = 0; i < payload; i++)
        data[i] = (uint8_t)(i * 31 + 7);
    for (size_t i = 0; i < MAX_BATCH; i++) {
        ents[i].data = data;
        ents[i].len = payload;
    }

    memset(res, 0, sizeof res);
    res[0].label = "raw fdatasync";
    for (size_t i = 0; i < nb; i++) {
        struct wal_metadata meta = {1, 1, NULL, 0};
        struct wal_error err;
        res[i + 1].label = "wal";
        res[i + 1].batch = batches[i];
        snprintf(wdir[i], sizeof wdir[i], "%s/wal-%zu", dir, batches[i]);
        int rc = wal_create(wdir[i], &meta, NULL, &wals[i], &err);
        if (rc < 0) {
            fprintf(stderr, "wal_create %s: %s: %s\n", wdir[i], cairn_strerror(rc), err.msg);
            return 1;
        }
    }
    /* One-entry WAL append: entry record + hard state record. */
    size_t recbytes = 16 + ((24 + payload + 7) & ~(size_t)7) + 16 + 24;
    if (raw_file(&rw) < 0) {
        perror("raw file");
        return 1;
    }

    for (int r = 0; r < rounds; r++) {
        if (run_raw(&rw, &res[0], recbytes, secs) < 0) {
            perror("raw");
            return 1;
        }
        for (size_t i = 0; i < nb; i++)
            if (run_wal(wals[i], &res[i + 1], ents, payload, secs) < 0)
                return 1;
    }

    char cpu[300] = "unknown";
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f) {
        char line[256];
        while (fgets(line, sizeof line, f))
            if (strncmp(line, "model name", 10) == 0) {
                char *c = strchr(line, ':');
                snprintf(cpu, sizeof cpu, "%s", c ? c + 2 : line);
                cpu[strcspn(cpu, "\n")] = '\0';
                break;
            }
        fclose(f);
    }
    printf("wal_bench: dir %s, %d rounds x %.1f s per phase, payload %zu B, nproc %ld, %s\n", dir,
           rounds, secs, payload, sysconf(_SC_NPROCESSORS_ONLN), cpu);
    printf("%-20s %10s %12s %10s %8s %8s %8s %7s %7s\n", "phase", "syncs/s", "entries/s", "MB/s",
           "p50 ms", "p99 ms", "%raw", "%sync", "%cpu");
    double raw_rate = res[0].syncs / res[0].wall;
    for (size_t i = 0; i <= nb; i++) {
        struct result *x = &res[i];
        char label[40];
        if (x->batch)
            snprintf(label, sizeof label, "wal %zu entr%s/sync", x->batch, x->batch == 1 ? "y" : "ies");
        else
            snprintf(label, sizeof label, "%s", x->label);
        qsort(x->lat, x->nlat, sizeof *x->lat, cmp_u64);
        double rate = x->syncs / x->wall;
        printf("%-20s %10.0f %12.0f %10.2f %8.3f %8.3f %7.1f%% %6.1f%% %6.1f%%\n", label, rate,
               x->batch ? x->entries / x->wall : 0.0, x->bytes / x->wall / 1e6, pct(x, 0.5),
               pct(x, 0.99), 100.0 * rate / raw_rate, 100.0 * x->sync_time / x->wall,
               100.0 * x->cpu / x->wall);
        free(x->lat);
    }
    printf("%%raw: syncs/s against raw fdatasync; %%sync: wall time inside fdatasync; %%cpu: process CPU (user+sys) per wall time\n");

    for (size_t i = 0; i < nb; i++)
        wal_close(wals[i]);
    if (rw.fd >= 0) {
        close(rw.fd);
        unlink(rw.path);
    }
    if (made)
        nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    else
        for (size_t i = 0; i < nb; i++)
            nftw(wdir[i], rm_one, 16, FTW_DEPTH | FTW_PHYS);
    free(ents);
    free(data);
    return 0;
}
