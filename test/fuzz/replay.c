/*
 * The replay runner: links with one fuzz target (instead of libFuzzer) into
 * build/test/unit/test_fuzz_NAME, which `make check` runs; NAME comes from
 * the program's own name.  It feeds every
 * file of the target's seed corpus and regression folder
 * (test/fuzz/corpus/NAME, test/fuzz/regressions/NAME, relative to the
 * working directory, which test/run.py sets to the tree's root; or the files
 * and folders given as arguments) to LLVMFuzzerTestOneInput, each in a child
 * process so one crash is one failed test, and prints TAP: ok N - file.
 */
#include "test/fuzz/fuzz.h"

#include <signal.h>
#include <sys/wait.h>

static int n_tests, n_failed;

static int read_all(const char *path, uint8_t **out, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    size_t cap = 4096, n = 0;
    uint8_t *buf = malloc(cap);
    for (;;) {
        if (!buf)
            break;
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (n < cap)
            break;
        uint8_t *bigger = realloc(buf, cap * 2);
        if (!bigger) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = bigger;
        cap *= 2;
    }
    int bad = ferror(f) || !buf;
    fclose(f);
    if (bad) {
        free(buf);
        return -1;
    }
    *out = buf;
    *len = n;
    return 0;
}

static void run_one(const char *path)
{
    uint8_t *data;
    size_t len;
    n_tests++;
    if (read_all(path, &data, &len) < 0) {
        printf("not ok %d - %s (cannot read: %s)\n", n_tests, path, strerror(errno));
        n_failed++;
        return;
    }
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        /* A copy of exactly len bytes, so a read past the input is caught
         * under the sanitizers as it would be under libFuzzer. */
        uint8_t *copy = malloc(len ? len : 1);
        if (len)
            memcpy(copy, data, len);
        LLVMFuzzerTestOneInput(copy, len);
        free(copy);
        free(data);
        exit(0); /* not _exit: atexit handlers clean up, LeakSanitizer runs */
    }
    free(data);
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) < 0) {
        printf("not ok %d - %s (cannot fork: %s)\n", n_tests, path, strerror(errno));
        n_failed++;
    } else if (WIFSIGNALED(status)) {
        printf("not ok %d - %s (killed by signal %d)\n", n_tests, path, WTERMSIG(status));
        n_failed++;
    } else if (WEXITSTATUS(status) != 0) {
        printf("not ok %d - %s (exit status %d)\n", n_tests, path, WEXITSTATUS(status));
        n_failed++;
    } else {
        printf("ok %d - %s\n", n_tests, path);
    }
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every regular file of a folder, in name order; a missing folder is empty. */
static void run_path(const char *path)
{
    struct stat st;
    if (stat(path, &st) < 0)
        return;
    if (!S_ISDIR(st.st_mode)) {
        run_one(path);
        return;
    }
    DIR *d = opendir(path);
    if (!d)
        return;
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            char **bigger = realloc(names, cap * sizeof *names);
            if (!bigger)
                break;
            names = bigger;
        }
        names[n] = malloc(strlen(path) + strlen(de->d_name) + 2);
        if (!names[n])
            break;
        sprintf(names[n], "%s/%s", path, de->d_name);
        n++;
    }
    closedir(d);
    if (n)
        qsort(names, n, sizeof *names, name_cmp);
    for (size_t i = 0; i < n; i++) {
        struct stat fst;
        if (stat(names[i], &fst) == 0 && S_ISREG(fst.st_mode))
            run_one(names[i]);
        free(names[i]);
    }
    free(names);
}

int main(int argc, char **argv)
{
    const char *base = strrchr(argv[0], '/');
    base = base ? base + 1 : argv[0];
    const char *name = strncmp(base, "test_fuzz_", 10) == 0 ? base + 10 : base;
    /* A fuzz target may write to a peer that is gone; only the child dies of it. */
    signal(SIGPIPE, SIG_IGN);
    if (argc > 1) {
        for (int i = 1; i < argc; i++)
            run_path(argv[i]);
    } else {
        char dir[512];
        snprintf(dir, sizeof dir, "test/fuzz/corpus/%s", name);
        run_path(dir);
        snprintf(dir, sizeof dir, "test/fuzz/regressions/%s", name);
        run_path(dir);
    }
    if (n_tests == 0) {
        /* No input at all means the corpus is missing: that must not pass. */
        printf("not ok 1 - no inputs found for fuzz target %s (run from the tree's root)\n", name);
        n_tests = n_failed = 1;
    }
    printf("1..%d\n", n_tests);
    printf("# fuzz target %s: %d inputs, %d failed\n", name, n_tests, n_failed);
    return n_failed ? 1 : 0;
}
