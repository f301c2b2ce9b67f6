/*
 * base/within: a call that returns in time is waited for; one that does not
 * is abandoned at the deadline, still runs to its end if it ever returns,
 * and frees its own record then (ASan and valgrind see no leak).
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "base/within.h"

/* A call held until the test lets it go. */
struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool open, entered, left;
    pthread_t ran_on;
};

static void gated(void *arg)
{
    struct gate *g = arg;
    pthread_mutex_lock(&g->mu);
    g->entered = true;
    g->ran_on = pthread_self();
    pthread_cond_broadcast(&g->cv);
    while (!g->open)
        pthread_cond_wait(&g->cv, &g->mu);
    g->left = true;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

static void gate_init(struct gate *g, bool open)
{
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    g->open = open;
    g->entered = g->left = false;
}

static void test_a_call_that_returns_is_waited_for(void **state)
{
    (void)state;
    static struct gate g;
    gate_init(&g, true);
    unsigned before = call_within_abandoned();
    assert_int_equal(call_within(gated, &g, 10000), 0);
    assert_true(g.left); /* returned before call_within did */
    assert_false(pthread_equal(g.ran_on, pthread_self()));
    assert_int_equal(call_within_abandoned(), before);
}

static void test_a_call_past_its_deadline_is_abandoned_and_finishes_later(void **state)
{
    (void)state;
    static struct gate g; /* outlives the abandoned call, as within.h asks */
    gate_init(&g, false);
    unsigned before = call_within_abandoned();
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(call_within(gated, &g, 50), -ETIMEDOUT);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    /* not before the deadline (no upper bound: the machine may be slow) */
    assert_true((t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec) >= 50000000LL);
    assert_int_equal(call_within_abandoned(), before + 1);
    pthread_mutex_lock(&g.mu);
    while (!g.entered)
        pthread_cond_wait(&g.cv, &g.mu);
    assert_false(g.left);
    g.open = true;
    pthread_cond_broadcast(&g.cv);
    while (!g.left)
        pthread_cond_wait(&g.cv, &g.mu);
    pthread_mutex_unlock(&g.mu);
    /* The detached thread frees its record after gated returns: give it the
     * moment it needs, so leak checkers at exit see it freed. */
    usleep(100000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_call_that_returns_is_waited_for),
        cmocka_unit_test(test_a_call_past_its_deadline_is_abandoned_and_finishes_later),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
