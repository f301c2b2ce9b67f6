/*
 * An LD_PRELOAD library for tests: a disk that loses the WAL's writes and
 * says so at the next sync.  Once the file named by $FAIL_SYNC_TRIGGER
 * exists, pwrite to a file in a WAL directory (a path with "/wal/" in it)
 * reports success and writes nothing, and fdatasync and fsync of such a
 * file fail with EIO; only on a thread named $FAIL_SYNC_THREAD, if that is
 * set.  The failing sync takes 5 ms, as a failing disk is slow to say so
 * (and requests pile up meanwhile).  With $FAIL_SYNC_MODE=lie the syncs
 * succeed instead: a disk that loses synced writes without a word.  With
 * $FAIL_SYNC_MODE=slow nothing is lost or fails: each sync of a WAL file
 * takes $FAIL_SYNC_SLOW_US (default 20000) longer, a slow disk.
 * Everything else goes to libc.
 */
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

static int fails(int fd)
{
    const char *trigger = getenv("FAIL_SYNC_TRIGGER");
    if (!trigger || access(trigger, F_OK) != 0)
        return 0;
    const char *thread = getenv("FAIL_SYNC_THREAD");
    char name[17] = "";
    prctl(PR_GET_NAME, name, 0, 0, 0);
    if (thread && *thread && strcmp(thread, name) != 0)
        return 0;
    char link[64], path[PATH_MAX];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n < 0)
        return 0;
    path[n] = '\0';
    return strstr(path, "/wal/") != NULL;
}

static int lies(void)
{
    const char *mode = getenv("FAIL_SYNC_MODE");
    return mode && !strcmp(mode, "lie");
}

static int slow(void)
{
    const char *mode = getenv("FAIL_SYNC_MODE");
    return mode && !strcmp(mode, "slow");
}

static int failed_sync(void)
{
    usleep(5000);
    errno = EIO;
    return -1;
}

/* -1 when fd's sync fails here, else 0 after the slow disk's delay (if any): go on to libc. */
static int sync_here(int fd)
{
    if (!fails(fd))
        return 0;
    if (slow()) {
        const char *us = getenv("FAIL_SYNC_SLOW_US");
        usleep(us ? (useconds_t)atoi(us) : 20000);
        return 0;
    }
    if (lies())
        return 0;
    return failed_sync();
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
    ssize_t (*real)(int, const void *, size_t, off_t) =
        (ssize_t(*)(int, const void *, size_t, off_t))dlsym(RTLD_NEXT, "pwrite");
    if (!slow() && fails(fd))
        return (ssize_t)n; /* lost on the way to the disk */
    return real(fd, buf, n, off);
}

int fdatasync(int fd)
{
    int (*real)(int) = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    return sync_here(fd) < 0 ? -1 : real(fd);
}

int fsync(int fd)
{
    int (*real)(int) = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    return sync_here(fd) < 0 ? -1 : real(fd);
}
