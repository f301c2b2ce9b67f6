/*
 * A full disk: an append that meets ENOSPC fails cleanly, nothing
 * acknowledged before it is lost, nothing of the failed batch shows up
 * later, and appends work again once space returns.  Run twice: on a real,
 * tiny tmpfs in a private mount namespace (as root, or in a user namespace
 * without root; skipped if neither is allowed), and against a byte budget
 * enforced through the WAL's I/O seam, which needs nothing.  The seam also
 * fails every step of a segment cut in turn.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "base/errors.h"
#include "storage/wal.h"
#include "storage/wal_internal.h"

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st, (void)flag, (void)f;
    return remove(p);
}

static char *make_tmpdir(void)
{
    const char *t = getenv("TMPDIR");
    char *d;
    if (asprintf(&d, "%s/cairn-walx-XXXXXX", t ? t : "/tmp") < 0)
        return NULL;
    if (!mkdtemp(d)) {
        free(d);
        return NULL;
    }
    return d;
}

static const struct wal_metadata meta = {1, 2, NULL, 0};

static void entry(uint64_t i, uint64_t term, struct wal_entry *e, uint8_t *buf)
{
    e->index = i;
    e->term = term;
    e->type = 0;
    e->len = 256;
    for (size_t k = 0; k < e->len; k++)
        buf[k] = (uint8_t)(i * 5 + term + k);
    e->data = buf;
}

/* Save entries [from, from+n) at term; returns wal_save's result. */
static int save(struct wal *w, uint64_t from, size_t n, uint64_t term)
{
    static uint8_t bufs[32][256];
    struct wal_entry e[32];
    assert_true(n <= 32);
    for (size_t k = 0; k < n; k++)
        entry(from + k, term, &e[k], bufs[k]);
    struct wal_hardstate hs = {term, 1, from + n - 1};
    return wal_save(w, &hs, e, n, NULL);
}

/* The log holds exactly entries 1..n, entry i written at terms[i] (or 1). */
static void expect_log(const char *dir, const struct wal_options *o, uint64_t n, uint64_t term_from,
                       uint64_t term)
{
    struct wal *w;
    struct wal_contents c;
    struct wal_error err;
    uint8_t buf[256];
    struct wal_entry want;
    int rc = wal_open(dir, NULL, o, &w, &err);
    if (rc != 0)
        fail_msg("reopen: %s at %s:%llu: %s", cairn_errname(rc), err.file,
                 (unsigned long long)err.offset, err.msg);
    assert_int_equal(wal_read_all(w, &c), 0);
    assert_int_equal(c.n_entries, n);
    assert_int_equal(c.repair.cut, 0);
    for (uint64_t i = 1; i <= n; i++) {
        entry(i, i >= term_from ? term : 1, &want, buf);
        assert_int_equal(c.entries[i - 1].index, i);
        assert_int_equal(c.entries[i - 1].term, want.term);
        assert_memory_equal(c.entries[i - 1].data, buf, 256);
    }
    wal_close(w);
}

/* --- the I/O seam ---------------------------------------------------------- */

static int fail_pwrite;      /* next pwrite writes half, then ENOSPC */
static int fail_fallocate;   /* fallocate fails with ENOSPC */
static int fail_fdatasync;   /* fdatasync fails with EIO */
static int half_written;

static ssize_t fake_pwrite(int fd, const void *buf, size_t n, off_t off)
{
    if (fail_pwrite) {
        if (!half_written && n > 1) {
            half_written = 1;
            return wal_io_real.pwrite(fd, buf, n / 2, off);
        }
        return -ENOSPC;
    }
    return wal_io_real.pwrite(fd, buf, n, off);
}

static int fake_fdatasync(int fd)
{
    return fail_fdatasync ? -EIO : wal_io_real.fdatasync(fd);
}

static int fake_fallocate(int fd, off_t off, off_t len)
{
    return fail_fallocate ? -ENOSPC : wal_io_real.fallocate(fd, off, len);
}

static const struct wal_io fake_io = {
    fake_pwrite, fake_fdatasync, NULL, fake_fallocate, NULL,
};
static struct wal_io seam;

static int setup(void **state)
{
    char *d = make_tmpdir();
    if (!d)
        return -1;
    seam = fake_io;
    seam.fsync = wal_io_real.fsync;
    seam.ftruncate = wal_io_real.ftruncate;
    wal_io = &seam;
    fail_pwrite = fail_fallocate = fail_fdatasync = half_written = 0;
    *state = d;
    return 0;
}

static int teardown(void **state)
{
    wal_io = &wal_io_real;
    nftw(*state, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    free(*state);
    return 0;
}

static const struct wal_options seamopts = {.segment_size = 16384};

static char *sub(void **state)
{
    static char p[512];
    snprintf(p, sizeof p, "%s/wal", (char *)*state);
    return p;
}

/* A batch half written when the disk fills fails, and its half never comes
 * back: retrying a shorter batch of the same entries leaves exactly those. */
static void test_seam_failed_write_is_rolled_back_and_retry_succeeds(void **state)
{
    struct wal *w;
    assert_int_equal(wal_create(sub(state), &meta, &seamopts, &w, NULL), 0);
    for (uint64_t i = 1; i <= 100; i += 10)
        assert_int_equal(save(w, i, 10, 1), 0);

    fail_pwrite = 1;
    assert_int_equal(save(w, 101, 20, 1), -ENOSPC);
    assert_int_equal(half_written, 1);
    assert_int_equal(wal_last_index(w), 100);
    assert_int_equal(save(w, 101, 20, 1), -ENOSPC);

    fail_pwrite = 0;
    /* The same entries' prefix: stale records after it would chain cleanly. */
    assert_int_equal(save(w, 101, 2, 1), 0);
    wal_close(w);
    expect_log(sub(state), &seamopts, 102, 0, 1);
}

/* A cut that cannot preallocate its new segment fails before anything of
 * the batch is written; the next append cuts and succeeds. */
static void test_seam_failed_cut_writes_nothing_and_is_retried(void **state)
{
    struct wal *w;
    uint64_t i = 1;
    assert_int_equal(wal_create(sub(state), &meta, &seamopts, &w, NULL), 0);
    /* Fill the first segment: the next save must cut. */
    while (wal_segment_count(w) == 1) {
        fail_fallocate = 1;
        int rc = save(w, i, 10, 1);
        if (rc == 0) {
            i += 10;
            continue;
        }
        assert_int_equal(rc, -ENOSPC);
        break;
    }
    assert_int_equal(wal_segment_count(w), 1);
    assert_int_equal(wal_last_index(w), i - 1);
    assert_int_equal(wal_exists(sub(state)), 1);
    fail_fallocate = 0;
    assert_int_equal(save(w, i, 10, 1), 0);
    assert_int_equal(wal_segment_count(w), 2);
    wal_close(w);
    /* No temporary segment was left behind by the failed cut. */
    char tmp[700];
    snprintf(tmp, sizeof tmp, "%s/%016llx-%016llx.wal.tmp", sub(state), 1ULL,
             (unsigned long long)i);
    assert_int_equal(access(tmp, F_OK), -1);
    expect_log(sub(state), &seamopts, i + 9, 0, 1);
}

/* After a failed fdatasync the page cache cannot be trusted: the handle
 * refuses further appends, and a reopen still has everything acknowledged. */
static void test_seam_failed_sync_poisons_handle_but_keeps_acknowledged(void **state)
{
    struct wal *w;
    struct wal_contents c;
    assert_int_equal(wal_create(sub(state), &meta, &seamopts, &w, NULL), 0);
    assert_int_equal(save(w, 1, 10, 1), 0);
    fail_fdatasync = 1;
    assert_int_equal(save(w, 11, 10, 1), -EIO);
    fail_fdatasync = 0;
    assert_int_equal(save(w, 11, 10, 1), -EIO);
    wal_close(w);
    assert_int_equal(wal_open(sub(state), NULL, &seamopts, &w, NULL), 0);
    assert_int_equal(wal_read_all(w, &c), 0);
    /* The unsynced batch may or may not be there (like after a crash). */
    assert_true(c.n_entries == 10 || c.n_entries == 20);
    assert_int_equal(c.entries[9].index, 10);
    wal_close(w);
}

/* Fail every I/O call from the k-th on, for each k through a whole cut and
 * append: wherever a failure (or a crash: nothing after it happens) strikes,
 * the log reopens with every acknowledged entry and takes appends again. */
static int calls, fail_from;

static ssize_t step_pwrite(int fd, const void *buf, size_t n, off_t off)
{
    return ++calls >= fail_from ? -EIO : wal_io_real.pwrite(fd, buf, n, off);
}
static int step_fdatasync(int fd)
{
    return ++calls >= fail_from ? -EIO : wal_io_real.fdatasync(fd);
}
static int step_fsync(int fd)
{
    return ++calls >= fail_from ? -EIO : wal_io_real.fsync(fd);
}
static int step_fallocate(int fd, off_t off, off_t len)
{
    return ++calls >= fail_from ? -ENOSPC : wal_io_real.fallocate(fd, off, len);
}
static int step_ftruncate(int fd, off_t len)
{
    return ++calls >= fail_from ? -EIO : wal_io_real.ftruncate(fd, len);
}
static const struct wal_io step_io = {
    step_pwrite, step_fdatasync, step_fsync, step_fallocate, step_ftruncate,
};

/* One run: a log whose next append must cut, then two appends with the
 * seam failing from call fail_at on.  Returns how many seam calls the two
 * appends made; checks the reopened log holds every acknowledged entry. */
static int cut_under_failure(const char *root, int fail_at)
{
    char dir[600];
    struct wal *w;
    struct wal_contents c;
    struct wal_error err;
    uint64_t i = 1, acked;

    snprintf(dir, sizeof dir, "%s/wal-%d", root, fail_at);
    wal_io = &wal_io_real;
    assert_int_equal(wal_create(dir, &meta, &seamopts, &w, NULL), 0);
    while (wal_segment_count(w) < 2 || w->off < w->segment_size) {
        assert_int_equal(save(w, i, 10, 1), 0);
        i += 10;
    }
    acked = i - 1;
    calls = 0;
    fail_from = fail_at;
    wal_io = &step_io;
    if (save(w, i, 30, 1) == 0) {
        assert_int_equal(wal_segment_count(w), 3);
        acked = i + 29;
        if (save(w, i + 30, 30, 1) == 0)
            acked = i + 59;
    }
    int used = calls;
    wal_close(w);
    wal_io = &wal_io_real;

    int rc = wal_open(dir, NULL, &seamopts, &w, &err);
    if (rc != 0)
        fail_msg("failure from call %d: reopen %s at %s:%llu: %s", fail_at, cairn_errname(rc),
                 err.file, (unsigned long long)err.offset, err.msg);
    assert_int_equal(wal_read_all(w, &c), 0);
    /* An unacknowledged batch may have reached the file, as after a crash. */
    assert_true(c.n_entries >= acked);
    uint64_t next = c.n_entries + 1;
    assert_int_equal(save(w, next, 10, 2), 0);
    wal_close(w);
    expect_log(dir, &seamopts, next + 9, next, 2);
    return used;
}

static void test_failure_at_every_step_of_a_cut_loses_nothing_acknowledged(void **state)
{
    int total = cut_under_failure(*state, 1 << 30);
    /* ftruncate, fsync, fallocate, pwrite, fsync, dir fsync, pwrite, fdatasync,
     * then pwrite, fdatasync: make sure the run covered a whole cut. */
    assert_true(total >= 10);
    for (int k = 1; k <= total; k++)
        cut_under_failure(*state, k);
}

/* --- a real, tiny filesystem ----------------------------------------------- */

static int write_file(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = write(fd, text, strlen(text));
    close(fd);
    return n == (ssize_t)strlen(text) ? 0 : -1;
}

static int in_private_namespace = -1;

static int private_mounts(void)
{
    if (in_private_namespace >= 0)
        return in_private_namespace;
    in_private_namespace = 0;
    /* The whole test process moves into its own mount namespace: the tmpfs
     * below is invisible to the host and goes away when we exit.  Without
     * root, a user namespace grants the right to mount a tmpfs. */
    if (unshare(CLONE_NEWNS) != 0) {
        char map[64];
        uid_t uid = getuid();
        gid_t gid = getgid();
        if (unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0)
            return 0;
        snprintf(map, sizeof map, "0 %u 1", (unsigned)uid);
        if (write_file("/proc/self/uid_map", map) != 0)
            return 0;
        write_file("/proc/self/setgroups", "deny");
        snprintf(map, sizeof map, "0 %u 1", (unsigned)gid);
        if (write_file("/proc/self/gid_map", map) != 0)
            return 0;
    }
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0)
        return 0;
    in_private_namespace = 1;
    return 1;
}

/* The disk under test: a real tmpfs, or a byte budget enforced through the
 * I/O seam (the same scenario without any privilege). */
static int use_tmpfs;
static char cap_dir[600];
static off_t capacity;

static off_t dir_used(void)
{
    off_t used = 0;
    DIR *d = opendir(cap_dir);
    struct dirent *de;
    if (!d)
        return 0;
    while ((de = readdir(d)) != NULL) {
        struct stat st;
        if (fstatat(dirfd(d), de->d_name, &st, 0) == 0 && S_ISREG(st.st_mode))
            used += st.st_size;
    }
    closedir(d);
    return used;
}

static ssize_t cap_pwrite(int fd, const void *buf, size_t n, off_t off)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return -errno;
    off_t grow = off + (off_t)n > st.st_size ? off + (off_t)n - st.st_size : 0;
    off_t room = capacity - dir_used();
    if (grow > room) {
        off_t can = (off_t)n - (grow - (room > 0 ? room : 0));
        if (can <= 0)
            return -ENOSPC;
        return wal_io_real.pwrite(fd, buf, (size_t)can, off); /* a short write, as a full disk gives */
    }
    return wal_io_real.pwrite(fd, buf, n, off);
}

static int cap_fallocate(int fd, off_t off, off_t len)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return -errno;
    off_t grow = off + len > st.st_size ? off + len - st.st_size : 0;
    if (grow > capacity - dir_used())
        return -ENOSPC;
    return wal_io_real.fallocate(fd, off, len);
}

static struct wal_io cap_io;

/* Make the disk at mnt hold kib KiB. */
static void disk_size(const char *mnt, unsigned kib)
{
    char opt[64];
    if (!use_tmpfs) {
        capacity = (off_t)kib * 1024;
        return;
    }
    snprintf(opt, sizeof opt, "size=%uk", kib);
    assert_int_equal(mount("cairn-wal-test", mnt, "tmpfs", MS_REMOUNT, opt), 0);
}

/* Fill the disk with w, appending batches of 10 from *next; returns once an
 * append fails with ENOSPC (a bounded number of tries). */
static void fill(struct wal *w, uint64_t *next)
{
    for (int tries = 0; tries < 100000; tries++) {
        int rc = save(w, *next, 10, 1);
        if (rc == -ENOSPC)
            return;
        assert_int_equal(rc, 0);
        *next += 10;
    }
    fail_msg("the disk never filled");
}

static void disk_full(void **state, const struct wal_options *o, int tmpfs)
{
    char mnt[512], dir[600];
    struct wal *w;
    uint64_t next = 1;

    wal_io = &wal_io_real;
    use_tmpfs = tmpfs;
    snprintf(mnt, sizeof mnt, "%s/mnt", (char *)*state);
    snprintf(dir, sizeof dir, "%s/wal", mnt);
    if (tmpfs && !private_mounts())
        skip();
    assert_int_equal(mkdir(mnt, 0700), 0);
    if (tmpfs) {
        if (mount("cairn-wal-test", mnt, "tmpfs", 0, "size=256k,mode=0700") != 0) {
            rmdir(mnt);
            skip();
        }
    } else {
        snprintf(cap_dir, sizeof cap_dir, "%s", dir);
        cap_io = wal_io_real;
        cap_io.pwrite = cap_pwrite;
        cap_io.fallocate = cap_fallocate;
        wal_io = &cap_io;
    }
    disk_size(mnt, 256);

    assert_int_equal(wal_create(dir, &meta, o, &w, NULL), 0);
    fill(w, &next);
    uint64_t acked = next - 1;
    assert_true(acked > 0);
    assert_int_equal(wal_last_index(w), acked);
    /* Still full: still a clean failure. */
    assert_int_equal(save(w, next, 10, 1), -ENOSPC);

    /* Space returns: the same handle appends again. */
    disk_size(mnt, 1024);
    assert_int_equal(save(w, next, 10, 1), 0);
    next += 10;
    fill(w, &next);
    acked = next - 1;
    wal_close(w);

    /* Reopening on the full disk finds exactly what was acknowledged. */
    expect_log(dir, o, acked, 0, 1);
    assert_int_equal(wal_open(dir, NULL, o, &w, NULL), 0);
    assert_int_equal(save(w, next, 10, 1), -ENOSPC);
    disk_size(mnt, 4096);
    /* Overwrite the tail at a new term, as a new leader would. */
    assert_int_equal(save(w, acked - 4, 10, 2), 0);
    wal_close(w);
    expect_log(dir, o, acked + 5, acked - 4, 2);

    if (tmpfs)
        assert_int_equal(umount(mnt), 0);
    else
        nftw(mnt, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    rmdir(mnt);
}

static const struct wal_options prealloc_opts = {.segment_size = 32768};
static const struct wal_options noprealloc_opts = {.segment_size = 32768, .no_preallocate = 1};

static void test_simulated_full_disk_preallocated_segments(void **state)
{
    disk_full(state, &prealloc_opts, 0);
}

static void test_simulated_full_disk_without_preallocation(void **state)
{
    disk_full(state, &noprealloc_opts, 0);
}

static void test_tmpfs_full_disk_preallocated_segments(void **state)
{
    disk_full(state, &prealloc_opts, 1);
}

static void test_tmpfs_full_disk_without_preallocation(void **state)
{
    disk_full(state, &noprealloc_opts, 1);
}

/* A commit-only hard state is written without fdatasync (raft.h allows it to
 * wait) and becomes durable with the next save, in order before its entries. */
static int syncs;
static int counting_fdatasync(int fd)
{
    syncs++;
    return wal_io_real.fdatasync(fd);
}

static void test_write_state_skips_the_sync_and_rides_on_the_next(void **state)
{
    struct wal *w;
    struct wal_contents c;
    seam.fdatasync = counting_fdatasync;
    assert_int_equal(wal_create(sub(state), &meta, &seamopts, &w, NULL), 0);
    assert_int_equal(save(w, 1, 5, 1), 0);
    syncs = 0;
    struct wal_hardstate hs = {1, 1, 5};
    assert_int_equal(wal_write_state(w, &hs), 0);
    assert_int_equal(syncs, 0);
    assert_int_equal(save(w, 6, 2, 1), 0); /* hard state {1, 1, 7} */
    assert_int_equal(syncs, 1);
    hs.commit = 7;
    assert_int_equal(wal_write_state(w, &hs), 0);
    assert_int_equal(syncs, 1);
    wal_close(w);
    assert_int_equal(wal_open(sub(state), NULL, &seamopts, &w, NULL), 0);
    wal_read_all(w, &c);
    assert_int_equal(c.n_entries, 7);
    assert_int_equal(c.hardstate.commit, 7);
    wal_close(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_seam_failed_write_is_rolled_back_and_retry_succeeds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_state_skips_the_sync_and_rides_on_the_next, setup, teardown),
        cmocka_unit_test_setup_teardown(test_seam_failed_cut_writes_nothing_and_is_retried, setup, teardown),
        cmocka_unit_test_setup_teardown(test_seam_failed_sync_poisons_handle_but_keeps_acknowledged, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failure_at_every_step_of_a_cut_loses_nothing_acknowledged, setup, teardown),
        cmocka_unit_test_setup_teardown(test_simulated_full_disk_preallocated_segments, setup, teardown),
        cmocka_unit_test_setup_teardown(test_simulated_full_disk_without_preallocation, setup, teardown),
        /* Last: they move the process into its own mount (and user) namespace. */
        cmocka_unit_test_setup_teardown(test_tmpfs_full_disk_preallocated_segments, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tmpfs_full_disk_without_preallocation, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
