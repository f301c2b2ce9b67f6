/*
 * Fuzz target: the WAL reader on arbitrary segment files.  The input is a
 * small container (so one input can be a whole log of several segments):
 *
 *   u64 snapshot index | u64 snapshot term         (little-endian; short: 0)
 *   segment [ SEP segment ]...                     (at most 8)
 *   segment = u8 seq step | u64 first index | the segment file's bytes
 *
 * Segment i is written as %016llx-%016llx.wal (seq, first), seq being the
 * previous one plus step & 3 (the first: step & 3).  Then wal_dump, and
 * wal_open at the snapshot + wal_read_all: every answer must be a clean error
 * or contents that hold together (entries consecutive after the snapshot),
 * and a log that opened once (its torn tail cut) must open again alike.
 * test/fuzz/gen_corpus.c writes real logs in this format.
 */
#include "test/fuzz/fuzz.h"

#include "base/errors.h"
#include "storage/wal.h"

#define SEP "\n%SEG%\n"
#define SEP_LEN 7
#define MAX_SEGS 8

static uint64_t get64(const uint8_t *p, size_t avail)
{
    uint64_t v = 0;
    for (size_t i = 0; i < 8; i++)
        v |= (uint64_t)(i < avail ? p[i] : 0) << (8 * i);
    return v;
}

static const uint8_t *find_sep(const uint8_t *p, const uint8_t *end)
{
    if ((size_t)(end - p) < SEP_LEN)
        return NULL;
    return memmem(p, (size_t)(end - p), SEP, SEP_LEN);
}

/* FNV-1a over what wal_read_all returned, to compare two opens. */
static uint64_t contents_hash(const struct wal_contents *c)
{
    uint64_t h = 1469598103934665603ull;
#define MIX(p, n)                                                       \
    for (size_t k_ = 0; k_ < (n); k_++)                                 \
        h = (h ^ ((const uint8_t *)(p))[k_]) * 1099511628211ull;
    MIX(&c->meta.member_id, 8);
    MIX(&c->meta.cluster_id, 8);
    MIX(c->meta.blob, c->meta.blob_len);
    MIX(&c->hardstate, sizeof c->hardstate);
    MIX(&c->last_index, 8);
    for (size_t i = 0; i < c->n_entries; i++) {
        const struct wal_entry *e = &c->entries[i];
        MIX(&e->index, 8);
        MIX(&e->term, 8);
        MIX(&e->type, 4);
        MIX(e->data, e->len);
    }
#undef MIX
    return h;
}

static void check_contents(const struct wal_contents *c, const struct wal_snapshot *snap)
{
    FUZZ_CHECK(c->meta.blob_len == 0 || c->meta.blob != NULL);
    FUZZ_CHECK(c->n_entries == 0 || c->entries != NULL);
    for (size_t i = 0; i < c->n_entries; i++) {
        FUZZ_CHECK(c->entries[i].index == snap->index + 1 + i);
        FUZZ_CHECK(c->entries[i].len == 0 || c->entries[i].data != NULL);
    }
    FUZZ_CHECK(c->last_index == (c->n_entries ? c->entries[c->n_entries - 1].index : snap->index));
}

/* Open the log in dir at snap; 0 and *hash on success, else the error. */
static int open_once(const char *dir, const struct wal_snapshot *snap, uint64_t *hash, int *cut)
{
    struct wal_options opts = {.no_preallocate = 1};
    struct wal_error err;
    struct wal *w = NULL;
    memset(&err, 0, sizeof err);
    int rc = wal_open(dir, snap, &opts, &w, &err);
    if (rc < 0) {
        FUZZ_CHECK(w == NULL);
        FUZZ_CHECK(rc != -CAIRN_E_WAL_LOCKED);
        FUZZ_CHECK(memchr(err.msg, '\0', sizeof err.msg) != NULL);
        FUZZ_CHECK(memchr(err.file, '\0', sizeof err.file) != NULL);
        return rc;
    }
    FUZZ_CHECK(w != NULL);
    struct wal_contents c;
    FUZZ_CHECK(wal_read_all(w, &c) == 0);
    check_contents(&c, snap);
    FUZZ_CHECK(wal_last_index(w) == c.last_index);
    FUZZ_CHECK(wal_segment_count(w) >= 1);
    *hash = contents_hash(&c);
    *cut = c.repair.cut;
    FUZZ_CHECK(wal_close(w) == 0);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static FILE *devnull;
    if (!devnull) {
        devnull = fopen("/dev/null", "w");
        FUZZ_CHECK(devnull != NULL);
    }
    int fd_before = fuzz_fd_probe();
    const char *dir = fuzz_dir("wal");
    struct wal_snapshot snap = {get64(data, size), get64(data + (size > 8 ? 8 : size), size > 8 ? size - 8 : 0)};
    const uint8_t *p = data + (size > 16 ? 16 : size), *end = data + size;
    uint64_t seq = 0;
    for (int i = 0; i < MAX_SEGS && p < end; i++) {
        const uint8_t *sep = find_sep(p, end);
        const uint8_t *seg_end = sep ? sep : end;
        size_t n = (size_t)(seg_end - p);
        uint8_t step = p[0];
        uint64_t first = get64(p + 1, n > 1 ? n - 1 : 0);
        const uint8_t *body = p + (n > 9 ? 9 : n);
        seq = (i == 0 ? 0 : seq) + (step & 3u);
        char name[64];
        snprintf(name, sizeof name, "%016llx-%016llx.wal", (unsigned long long)seq, (unsigned long long)first);
        fuzz_write_file(dir, name, body, (size_t)(seg_end - body));
        p = sep ? sep + SEP_LEN : end;
    }

    int d = wal_dump(dir, devnull);
    FUZZ_CHECK(d == 0 || d == 1 || d < 0);

    uint64_t h1 = 0, h2 = 0;
    int cut1 = 0, cut2 = 0;
    int rc = open_once(dir, &snap, &h1, &cut1);
    if (rc == 0) {
        /* Opening repaired the log: a second open finds it whole and alike. */
        FUZZ_CHECK(open_once(dir, &snap, &h2, &cut2) == 0);
        FUZZ_CHECK(h1 == h2);
        FUZZ_CHECK(cut2 == 0);
    }
    fuzz_dir_clear();
    FUZZ_CHECK(fuzz_fd_probe() == fd_before);
    return 0;
}
