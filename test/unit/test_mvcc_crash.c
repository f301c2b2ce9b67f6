/*
 * storage/mvcc crash consistency: a forked child applies random batches (and
 * compaction steps, and reopens) until a timer SIGKILLs it at a random
 * moment; the parent reopens the store and checks it equals the reference
 * model at exactly the stored consistent index, which must fall on a batch
 * boundary (each batch is all or nothing).  The next child carries on from
 * there.  MVCC_CRASH_ITERS sets the number of kills (default 400).
 */
#include <signal.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test/unit/test_mvcc_model.h"

static int env_int(const char *name, int dflt)
{
    const char *v = getenv(name);
    return v && atoi(v) > 0 ? atoi(v) : dflt;
}

/* The deterministic workload: the parent and every child derive the same
 * batches from the same state, so the parent can follow a child's work. */
struct gen {
    struct rng r;
    struct model m;
    struct pool p, pm;
    uint64_t index;
    struct mvcc_entry batch[8];
    size_t n;
};

static void next_batch(struct gen *g)
{
    pool_reset(&g->p);
    pool_reset(&g->pm);
    g->n = 1 + (size_t)rnd(&g->r, 8);
    for (size_t i = 0; i < g->n; i++) {
        g->batch[i].index = ++g->index;
        g->batch[i].term = 1;
        gen_request(&g->r, &g->p, &g->m, &g->batch[i].req);
    }
    g->m.nevents = 0;
    for (size_t i = 0; i < g->n; i++) {
        struct mvcc_applied ignore;
        model_apply(&g->m, &g->pm, &g->batch[i], &ignore);
    }
}

static void die(int sig)
{
    (void)sig;
    kill(getpid(), SIGKILL);
}

/* The child: runs until killed, or until it has done its share. */
static void child(const char *dir, struct gen *g, uint64_t seed)
{
    struct rng r = {seed};
    struct sigaction sa = {.sa_handler = die};
    sigaction(SIGALRM, &sa, NULL);
    struct itimerval t = {.it_value = {.tv_sec = 0, .tv_usec = 1 + rnd(&r, 25000)}};
    setitimer(ITIMER_REAL, &t, NULL);
    struct mvcc_store *s;
    char err[256];
    if (mvcc_open(dir, &(struct mvcc_options){.finish_compaction = chance(&r, 20)}, &s, err,
                  sizeof(err)) != 0) {
        fprintf(stderr, "child: %s\n", err);
        _exit(2);
    }
    for (int b = 0; b < 400; b++) {
        next_batch(g);
        struct mvcc_result *res;
        if (mvcc_apply(s, g->batch, g->n, &res) != 0)
            _exit(3);
        mvcc_result_free(res);
        if (chance(&r, 20)) {
            bool done;
            if (mvcc_compact_step(s, 1 + (size_t)rnd(&r, 20), &done) != 0)
                _exit(4);
        }
        if (chance(&r, 2)) {
            mvcc_close(s);
            if (mvcc_open(dir, NULL, &s, err, sizeof(err)) != 0)
                _exit(5);
        }
    }
    mvcc_close(s);
    _exit(0);
}

static void test_store_equals_model_at_its_consistent_index_after_sigkill(void **state)
{
    (void)state;
    char dir[64];
    snprintf(dir, sizeof(dir), "/tmp/test_mvcc_crash.XXXXXX");
    assert_non_null(mkdtemp(dir));
    struct gen g = {.r = {0x5eed1234abcdULL}};
    model_init(&g.m);
    int iters = env_int("MVCC_CRASH_ITERS", 400), killed = 0;
    for (int it = 0; it < iters; it++) {
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0)
            child(dir, &g, 0x9E3779B97F4A7C15ULL * (uint64_t)(it + 1));
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        if (WIFSIGNALED(status)) {
            assert_int_equal(WTERMSIG(status), SIGKILL);
            killed++;
        } else {
            assert_true(WIFEXITED(status));
            assert_int_equal(WEXITSTATUS(status), 0);
        }
        struct mvcc_store *s;
        struct mvcc_reader *rd;
        char err[256];
        assert_int_equal(mvcc_open(dir, NULL, &s, err, sizeof(err)), 0);
        struct mvcc_status st;
        assert_int_equal(mvcc_store_status(s, &st), 0);
        /* follow the child's batches up to what it committed: a whole number of them */
        while (g.index < st.consistent_index)
            next_batch(&g);
        assert_int_equal(g.index, st.consistent_index);
        bool done = false;
        while (!done)
            assert_int_equal(mvcc_compact_step(s, 0, &done), 0);
        assert_int_equal(mvcc_reader_open(s, &rd), 0);
        check_store(&g.m, rd, mvcc_path(s));
        mvcc_reader_close(rd);
        mvcc_close(s);
    }
    print_message("%d iterations, %d killed mid-run, %llu entries\n", iters, killed,
                  (unsigned long long)g.index);
    /* the timer must have cut most children short, or this tested little */
    assert_true(killed > iters / 2);
    model_free(&g.m);
    pool_free(&g.p);
    pool_free(&g.pm);
    char cmd[96];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_store_equals_model_at_its_consistent_index_after_sigkill),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
