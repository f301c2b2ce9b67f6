/*
 * base/offload: the call runs on the offload's own thread while the owner
 * goes on, offload_end waits for it and returns its result, and calls in a
 * row each return their own.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "base/deadline.h"
#include "base/offload.h"

/* A call held until the owner lets it go. */
struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool open, entered, left;
    pthread_t ran_on;
    char name[16];
};

static int gated(void *arg)
{
    struct gate *g = arg;
    pthread_mutex_lock(&g->mu);
    g->entered = true;
    g->ran_on = pthread_self();
    pthread_getname_np(pthread_self(), g->name, sizeof g->name);
    pthread_cond_broadcast(&g->cv);
    while (!g->open)
        pthread_cond_wait(&g->cv, &g->mu);
    g->left = true;
    pthread_mutex_unlock(&g->mu);
    return 42;
}

static void test_the_call_runs_on_its_thread_while_the_owner_goes_on(void **state)
{
    (void)state;
    struct offload *o;
    assert_int_equal(offload_start("cairn-test-off", &o), 0);
    struct gate g = {.open = false};
    pthread_mutex_init(&g.mu, NULL);
    mono_cond_init(&g.cv);
    offload_begin(o, gated, &g);
    /* the owner is not inside the call: it sees the call start, and lets it go */
    pthread_mutex_lock(&g.mu);
    struct timespec until;
    deadline_after_ns(&until, 10LL * 1000000000);
    while (!g.entered && pthread_cond_timedwait(&g.cv, &g.mu, &until) != ETIMEDOUT)
        ;
    assert_true(g.entered);
    assert_false(g.left);
    assert_false(pthread_equal(g.ran_on, pthread_self()));
    assert_string_equal(g.name, "cairn-test-off");
    g.open = true;
    pthread_cond_broadcast(&g.cv);
    pthread_mutex_unlock(&g.mu);
    assert_int_equal(offload_end(o), 42);
    assert_true(g.left); /* offload_end waited for the call's end */
    offload_stop(o);
    pthread_cond_destroy(&g.cv);
    pthread_mutex_destroy(&g.mu);
}

static int count(void *arg)
{
    int *n = arg;
    return ++*n;
}

static int fail_odd(void *arg)
{
    int *n = arg;
    return (*n)++ % 2 ? -EIO : 0;
}

static void test_calls_in_a_row_each_return_their_result(void **state)
{
    (void)state;
    struct offload *o;
    assert_int_equal(offload_start("cairn-test-off", &o), 0);
    int n = 0;
    for (int i = 1; i <= 2000; i++) {
        offload_begin(o, count, &n);
        assert_int_equal(offload_end(o), i);
    }
    int k = 0;
    for (int i = 0; i < 10; i++) {
        offload_begin(o, fail_odd, &k);
        assert_int_equal(offload_end(o), i % 2 ? -EIO : 0);
    }
    offload_stop(o);
}

static void test_stop_without_a_call_and_of_null(void **state)
{
    (void)state;
    struct offload *o;
    assert_int_equal(offload_start("cairn-test-off", &o), 0);
    offload_stop(o);
    offload_stop(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_the_call_runs_on_its_thread_while_the_owner_goes_on),
        cmocka_unit_test(test_calls_in_a_row_each_return_their_result),
        cmocka_unit_test(test_stop_without_a_call_and_of_null),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
