/*
 * Fuzz target: a store snapshot received from a peer (arbitrary bytes where
 * a SQLite copy of the store should be).  What the daemon does with one:
 * mvcc_snapshot_check (quick, then with SQLite's integrity check), and
 * daemon/node.c's install, which does not depend on that check: mvcc_restore
 * into an empty store directory and mvcc_open; a store that opens is read (a range over every key, the leases,
 * HashKV) and closed.  Every step must end in a clean error or a usable
 * store: no crash, no leak, no file descriptor left open.
 */
#include "test/fuzz/fuzz.h"

#include "base/errors.h"
#include "storage/mvcc.h"

#define RECEIVED "received.snapdb"

static void read_store(struct mvcc_store *s)
{
    struct mvcc_status st;
    (void)mvcc_store_status(s, &st);
    struct mvcc_reader *r = NULL;
    if (mvcc_reader_open(s, &r) < 0)
        return;
    struct mvcc_range_req rq;
    memset(&rq, 0, sizeof rq);
    static const char zero = 0;
    rq.key = (struct mvcc_buf){&zero, 1};
    rq.range_end = (struct mvcc_buf){&zero, 1}; /* "\0" to "\0": every key */
    struct mvcc_range_result *res = NULL;
    if (mvcc_range(r, &rq, &res, NULL) == 0)
        mvcc_range_result_free(res);
    struct mvcc_lease_list *ll = NULL;
    if (mvcc_lease_list(r, &ll) == 0)
        mvcc_lease_list_free(ll);
    uint32_t hash;
    (void)mvcc_hash_kv(r, 0, &hash, NULL, NULL);
    mvcc_reader_close(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fd_before = fuzz_fd_probe();
    const char *dir = fuzz_dir("mvcc");
    char path[256], err[512];
    snprintf(path, sizeof path, "%s/%s", dir, RECEIVED);
    fuzz_write_file(dir, RECEIVED, data, size);

    struct mvcc_status st;
    int quick = mvcc_snapshot_check(path, false, &st, err, sizeof err);
    FUZZ_CHECK(quick <= 0);
    FUZZ_CHECK(memchr(err, '\0', sizeof err) != NULL);
    if (quick == 0) {
        int full = mvcc_snapshot_check(path, true, &st, err, sizeof err);
        FUZZ_CHECK(full <= 0);
    }
    /* node.c installs what the peer sent (its sha256 matched) without the
     * check: mvcc_restore checks the schema itself. */
    err[0] = '\0';
    int rc = mvcc_restore(dir, path, err, sizeof err);
    FUZZ_CHECK(rc <= 0);
    if (rc == 0) {
        struct mvcc_store *s = NULL;
        struct mvcc_options o = {.cache_mb = 1, .mmap_mb = -1};
        rc = mvcc_open(dir, &o, &s, err, sizeof err);
        FUZZ_CHECK(rc <= 0);
        if (rc == 0) {
            read_store(s);
            mvcc_close(s);
        }
    }
    fuzz_dir_clear();
    FUZZ_CHECK(fuzz_fd_probe() == fd_before);
    return 0;
}
