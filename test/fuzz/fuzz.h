/*
 * Shared by the fuzz targets (test/fuzz/fuzz_NAME.c): the libFuzzer entry
 * point's prototype, a check that aborts (so both libFuzzer and the replay
 * runner see a broken invariant as a crash), and a per-process scratch
 * directory under /tmp that each input starts empty and that is removed at
 * exit.  Header-only, because each target is linked alone.
 */
#ifndef CAIRN_TEST_FUZZ_H
#define CAIRN_TEST_FUZZ_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* An invariant of the code under test failed: report it and crash. */
#define FUZZ_CHECK(cond)                                                                        \
    do {                                                                                        \
        if (!(cond)) {                                                                          \
            fprintf(stderr, "%s:%d: fuzz check failed: %s\n", __FILE__, __LINE__, #cond);       \
            abort();                                                                            \
        }                                                                                       \
    } while (0)

static char fuzz_dir_path[64];

/* Remove every entry of the scratch directory (files only: nothing under
 * test makes subdirectories; one would fail the next input's check). */
static inline void fuzz_dir_clear(void)
{
    DIR *d = opendir(fuzz_dir_path);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        if (unlinkat(dirfd(d), de->d_name, 0) < 0 && errno != ENOENT) {
            fprintf(stderr, "fuzz: cannot remove %s/%s: %s\n", fuzz_dir_path, de->d_name, strerror(errno));
            abort();
        }
    }
    closedir(d);
}

static inline void fuzz_dir_remove(void)
{
    if (!fuzz_dir_path[0])
        return;
    fuzz_dir_clear();
    rmdir(fuzz_dir_path);
}

/* The scratch directory /tmp/cairn-fuzz-NAME-PID, empty.  Created on the
 * first call; removed when the process exits normally. */
static inline const char *fuzz_dir(const char *name)
{
    if (!fuzz_dir_path[0]) {
        snprintf(fuzz_dir_path, sizeof fuzz_dir_path, "/tmp/cairn-fuzz-%.16s-%ld", name, (long)getpid());
        if (mkdir(fuzz_dir_path, 0700) < 0 && errno != EEXIST) {
            fprintf(stderr, "fuzz: cannot create %s: %s\n", fuzz_dir_path, strerror(errno));
            abort();
        }
        atexit(fuzz_dir_remove);
    }
    fuzz_dir_clear();
    return fuzz_dir_path;
}

/* Write size bytes to dir/name; aborts on failure (the harness's fault). */
static inline void fuzz_write_file(const char *dir, const char *name, const void *data, size_t size)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        fprintf(stderr, "fuzz: cannot create %s: %s\n", path, strerror(errno));
        abort();
    }
    const uint8_t *p = data;
    while (size) {
        ssize_t w = write(fd, p, size);
        if (w <= 0) {
            fprintf(stderr, "fuzz: cannot write %s: %s\n", path, strerror(errno));
            abort();
        }
        p += w;
        size -= (size_t)w;
    }
    close(fd);
}

/* A NUL-terminated copy of data (malloc'd; the caller frees). */
static inline char *fuzz_strndup(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    FUZZ_CHECK(s != NULL);
    if (size)
        memcpy(s, data, size);
    s[size] = '\0';
    return s;
}

/* The lowest free file descriptor: equal before and after an input, or the
 * code under test leaked one. */
static inline int fuzz_fd_probe(void)
{
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    FUZZ_CHECK(fd >= 0);
    close(fd);
    return fd;
}

#endif
