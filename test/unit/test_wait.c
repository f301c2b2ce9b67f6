/*
 * daemon/wait: each waiter is called exactly once (fired, expired or freed),
 * and replies held for a batch are called after the batch: a few on the
 * releasing thread, more on the sender thread, always in the order they were
 * fired, and all of them before wait_free returns.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "daemon/wait.h"

#define MAX_CALLS 256

/* What the callbacks saw, in the order they were called. */
struct log {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    size_t n;
    uint64_t ids[MAX_CALLS];
    int errs[MAX_CALLS];
    bool had_reply[MAX_CALLS];
    pthread_t threads[MAX_CALLS];
    /* a call for block_id waits until released is set */
    uint64_t block_id;
    bool blocked, released;
};

struct arg {
    struct log *log;
    uint64_t id;
};

static void on_call(void *p, void *reply, size_t len, int err)
{
    struct arg *a = p;
    struct log *l = a->log;
    (void)len;
    pthread_mutex_lock(&l->mu);
    if (l->n < MAX_CALLS) {
        l->ids[l->n] = a->id;
        l->errs[l->n] = err;
        l->had_reply[l->n] = reply != NULL;
        l->threads[l->n] = pthread_self();
        l->n++;
    }
    pthread_cond_broadcast(&l->cv);
    if (a->id == l->block_id && l->block_id) {
        l->blocked = true;
        pthread_cond_broadcast(&l->cv);
        while (!l->released)
            pthread_cond_wait(&l->cv, &l->mu);
    }
    pthread_mutex_unlock(&l->mu);
    free(reply);
    free(a);
}

static void log_init(struct log *l)
{
    memset(l, 0, sizeof(*l));
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv, NULL);
}

static void log_destroy(struct log *l)
{
    pthread_cond_destroy(&l->cv);
    pthread_mutex_destroy(&l->mu);
}

/* Wait (at most 10 s) until the log has n calls; the count it has. */
static size_t log_wait(struct log *l, size_t n)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 10;
    pthread_mutex_lock(&l->mu);
    while (l->n < n && pthread_cond_timedwait(&l->cv, &l->mu, &ts) == 0)
        ;
    size_t got = l->n;
    pthread_mutex_unlock(&l->mu);
    return got;
}

static size_t log_count(struct log *l)
{
    pthread_mutex_lock(&l->mu);
    size_t n = l->n;
    pthread_mutex_unlock(&l->mu);
    return n;
}

static void add(struct wait_table *w, struct log *l, uint64_t id, int64_t deadline, int flags)
{
    struct arg *a = malloc(sizeof(*a));
    assert_non_null(a);
    *a = (struct arg){l, id};
    assert_int_equal(wait_add(w, id, deadline, on_call, a, flags), 0);
}

static int fire_reply(struct wait_table *w, uint64_t id)
{
    void *reply = malloc(8);
    assert_non_null(reply);
    int rc = wait_fire(w, id, reply, 8, 0);
    if (!rc)
        free(reply);
    return rc;
}

static void add_range(struct wait_table *w, struct log *l, uint64_t first, uint64_t last)
{
    for (uint64_t id = first; id <= last; id++)
        add(w, l, id, INT64_MAX, WAIT_DEFER);
}

/* One held batch: replies to first..last, then the release. */
static void fire_held(struct wait_table *w, uint64_t first, uint64_t last)
{
    wait_hold(w);
    for (uint64_t id = first; id <= last; id++)
        assert_int_equal(fire_reply(w, id), 1);
    wait_release(w);
}

/* Wait until the call for l->block_id is inside on_call / let it return. */
static void wait_blocked(struct log *l)
{
    pthread_mutex_lock(&l->mu);
    while (!l->blocked)
        pthread_cond_wait(&l->cv, &l->mu);
    pthread_mutex_unlock(&l->mu);
}

static void unblock(struct log *l)
{
    pthread_mutex_lock(&l->mu);
    l->released = true;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
}

/* Each test's log and table; a test that frees the table itself sets w to NULL. */
struct fx {
    struct log l;
    struct wait_table *w;
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    if (!f)
        return -1;
    log_init(&f->l);
    f->w = wait_new();
    *state = f;
    return f->w ? 0 : -1;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    wait_free(f->w, 9);
    log_destroy(&f->l);
    free(f);
    return 0;
}

static void test_each_waiter_is_called_once(void **state)
{
    struct fx *f = *state;
    struct log *l = &f->l;
    struct wait_table *w = f->w;
    add(w, l, 1, INT64_MAX, 0);
    add(w, l, 2, 100, WAIT_DEFER);
    add(w, l, 3, INT64_MAX, WAIT_DEFER);
    struct arg dup = {l, 1};
    assert_int_equal(wait_add(w, 1, INT64_MAX, on_call, &dup, 0), -EEXIST);
    assert_int_equal(wait_count(w), 3);

    assert_int_equal(fire_reply(w, 1), 1);
    assert_int_equal(fire_reply(w, 1), 0); /* once only */
    assert_int_equal(wait_expire(w, 99, 7), 0);
    assert_int_equal(wait_expire(w, 100, 7), 1);
    assert_int_equal(wait_fire(w, 2, NULL, 0, 5), 0); /* already expired */
    assert_int_equal(log_count(l), 2);
    assert_int_equal(l->ids[0], 1);
    assert_true(l->had_reply[0]);
    assert_int_equal(l->ids[1], 2);
    assert_int_equal(l->errs[1], 7);
    assert_false(l->had_reply[1]);

    wait_free(w, 9); /* the one left is failed */
    f->w = NULL;
    assert_int_equal(log_count(l), 3);
    assert_int_equal(l->ids[2], 3);
    assert_int_equal(l->errs[2], 9);
}

static void test_a_few_held_replies_go_out_at_release_from_the_releasing_thread(void **state)
{
    struct fx *f = *state;
    struct log *l = &f->l;
    struct wait_table *w = f->w;
    add_range(w, l, 1, WAIT_INLINE_MAX);
    wait_hold(w);
    for (uint64_t id = WAIT_INLINE_MAX; id >= 1; id--)
        assert_int_equal(fire_reply(w, id), 1);
    assert_int_equal(log_count(l), 0); /* held */
    assert_int_equal(wait_count(w), 0);
    wait_release(w);
    assert_int_equal(log_count(l), WAIT_INLINE_MAX);
    for (size_t i = 0; i < WAIT_INLINE_MAX; i++) {
        assert_int_equal(l->ids[i], WAIT_INLINE_MAX - i); /* fired order */
        assert_true(pthread_equal(l->threads[i], pthread_self()));
    }
}

static void test_errors_and_plain_waiters_are_not_held(void **state)
{
    struct fx *f = *state;
    struct log *l = &f->l;
    struct wait_table *w = f->w;
    add(w, l, 1, INT64_MAX, 0);
    add(w, l, 2, INT64_MAX, WAIT_DEFER);
    add(w, l, 3, INT64_MAX, WAIT_DEFER);
    wait_hold(w);
    assert_int_equal(fire_reply(w, 1), 1);             /* not WAIT_DEFER: now */
    assert_int_equal(wait_fire(w, 2, NULL, 0, 11), 1); /* an error: now */
    assert_int_equal(log_count(l), 2);
    assert_int_equal(fire_reply(w, 3), 1);
    assert_int_equal(log_count(l), 2);
    wait_release(w);
    assert_int_equal(log_count(l), 3);
    assert_int_equal(l->ids[2], 3);
}

struct fire_job {
    struct wait_table *w;
    uint64_t id;
    int rc;
};

static void *fire_thread(void *p)
{
    struct fire_job *j = p;
    j->rc = fire_reply(j->w, j->id);
    return NULL;
}

static void test_only_the_holding_thread_is_held(void **state)
{
    struct fx *f = *state;
    struct log *l = &f->l;
    struct wait_table *w = f->w;
    add(w, l, 1, INT64_MAX, WAIT_DEFER);
    wait_hold(w);
    struct fire_job j = {w, 1, 0};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, fire_thread, &j), 0);
    pthread_join(t, NULL);
    assert_int_equal(j.rc, 1);
    assert_int_equal(log_count(l), 1); /* made on the other thread at once */
    assert_true(pthread_equal(l->threads[0], t));
    wait_release(w);
}

static void test_a_large_batch_goes_out_on_the_sender_thread_in_order(void **state)
{
    struct fx *f = *state;
    struct log *l = &f->l;
    struct wait_table *w = f->w;
    const uint64_t n = 100;
    add_range(w, l, 1, n);
    fire_held(w, 1, n);
    assert_int_equal(log_wait(l, n), n);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(l->ids[i], i + 1);
        assert_false(pthread_equal(l->threads[i], pthread_self()));
    }
    wait_free(w, 9);
    f->w = NULL;
    assert_int_equal(log_count(l), n);
}

static void test_a_small_batch_waits_behind_what_the_sender_still_has(void **state)
{
    struct fx *f = *state;
    struct log *l = &f->l;
    struct wait_table *w = f->w;
    const uint64_t big = WAIT_INLINE_MAX + 1;
    add_range(w, l, 1, big + 1);
    l->block_id = 1; /* the sender stops inside the first call */
    fire_held(w, 1, big);
    wait_blocked(l);

    fire_held(w, big + 1, big + 1);      /* one reply: inline, were the sender not busy */
    assert_int_equal(log_count(l), 1); /* it did not overtake the batch */

    unblock(l);
    assert_int_equal(log_wait(l, big + 1), big + 1);
    for (size_t i = 0; i <= big; i++)
        assert_int_equal(l->ids[i], i + 1);
}

static void test_free_makes_every_queued_call_first(void **state)
{
    struct fx *f = *state;
    struct log *l = &f->l;
    struct wait_table *w = f->w;
    const uint64_t n = 50;
    add_range(w, l, 1, n + 1);
    l->block_id = 1;
    fire_held(w, 1, n);
    wait_blocked(l);
    unblock(l); /* it goes on while wait_free stops it */
    wait_free(w, 9);
    f->w = NULL;
    assert_int_equal(log_count(l), n + 1);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(l->ids[i], i + 1);
        assert_true(l->had_reply[i]);
    }
    assert_int_equal(l->ids[n], n + 1); /* never fired: failed by wait_free, after the replies */
    assert_int_equal(l->errs[n], 9);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_each_waiter_is_called_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_few_held_replies_go_out_at_release_from_the_releasing_thread, setup, teardown),
        cmocka_unit_test_setup_teardown(test_errors_and_plain_waiters_are_not_held, setup, teardown),
        cmocka_unit_test_setup_teardown(test_only_the_holding_thread_is_held, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_large_batch_goes_out_on_the_sender_thread_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_small_batch_waits_behind_what_the_sender_still_has, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_makes_every_queued_call_first, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
