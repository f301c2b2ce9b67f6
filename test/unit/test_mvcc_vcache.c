/*
 * storage/mvcc's value cache on its own: what goes in comes back byte for
 * byte (empty values too), the bytes held never pass the budget, values too
 * big are refused, a value read again and again survives a stream of new
 * ones, and threads reading and adding the same revisions at once always
 * get the right bytes (run under ASan/TSan builds too).  Its use by reader
 * calls is covered by test_mvcc (and test_mvcc_model's odd seeds).
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "storage/mvcc_internal.h"

/* The value stored for (main, sub): its length and bytes follow from both. */
static size_t value_of(int64_t main, uint32_t sub, unsigned char *buf, size_t cap)
{
    size_t n = (size_t)((main * 7 + sub) % 300);
    if (n > cap)
        n = cap;
    for (size_t i = 0; i < n; i++)
        buf[i] = (unsigned char)(main + sub * 3 + i);
    return n;
}

static void put_rev(struct vcache *vc, int64_t main, uint32_t sub)
{
    unsigned char buf[300];
    vcache_put(vc, main, sub, buf, value_of(main, sub, buf, sizeof buf));
}

/* 1 if (main, sub) was cached with the right bytes, 0 if not cached. */
static int get_rev(struct vcache *vc, int64_t main, uint32_t sub)
{
    struct arena a = {0};
    struct mvcc_buf got = {0};
    unsigned char want[300];
    size_t n = value_of(main, sub, want, sizeof want);
    int rc = vcache_get(vc, &a, main, sub, &got);
    if (rc == 1) {
        assert_non_null(got.data);
        assert_int_equal(got.len, n);
        assert_memory_equal(got.data, want, n);
    }
    arena_free(&a);
    return rc;
}

static struct mvcc_status stats(struct vcache *vc)
{
    struct mvcc_status st = {0};
    vcache_stats(vc, &st);
    return st;
}

static void test_values_come_back_as_they_went_in_and_are_counted(void **state)
{
    (void)state;
    struct vcache *vc;
    assert_int_equal(vcache_new(1 << 20, &vc), 0);
    assert_non_null(vc);
    assert_int_equal(get_rev(vc, 5, 0), 0);
    for (int64_t m = 1; m <= 100; m++)
        for (uint32_t s = 0; s < 3; s++)
            put_rev(vc, m, s);
    for (int64_t m = 1; m <= 100; m++)
        for (uint32_t s = 0; s < 3; s++)
            assert_int_equal(get_rev(vc, m, s), 1);
    assert_int_equal(get_rev(vc, 101, 0), 0);
    assert_int_equal(get_rev(vc, 1, 3), 0);
    /* an empty value (value_of(300, 0) has no bytes) is a hit with a valid pointer */
    put_rev(vc, 300, 0);
    assert_int_equal(get_rev(vc, 300, 0), 1);
    /* adding it again keeps one copy */
    size_t before = (size_t)stats(vc).value_cache_bytes;
    put_rev(vc, 300, 0);
    assert_int_equal((size_t)stats(vc).value_cache_bytes, before);
    struct mvcc_status st = stats(vc);
    assert_int_equal(st.value_cache_hits, 301);
    assert_int_equal(st.value_cache_misses, 3);
    vcache_free(vc);
    vcache_free(NULL);
}

static void test_the_budget_holds_and_big_values_stay_out(void **state)
{
    (void)state;
    const size_t budget = 256 << 10;
    struct vcache *vc;
    assert_int_equal(vcache_new(budget, &vc), 0);
    size_t table = (size_t)stats(vc).value_cache_bytes;
    assert_true(table > 0 && table < budget / 2);
    /* values of 0-299 bytes: the table's ways fill before the budget */
    for (int64_t m = 1; m <= 20000; m++) {
        put_rev(vc, m, 0);
        assert_true((size_t)stats(vc).value_cache_bytes <= budget);
    }
    size_t n = 0;
    for (int64_t m = 1; m <= 20000; m++)
        n += (size_t)get_rev(vc, m, 0);
    assert_in_range(n, 900, 1024); /* 256 buckets of 4 ways */

    /* values of 2000 bytes: the budget binds, and stays nearly all used */
    static unsigned char v2k[2000];
    for (int64_t m = 1; m <= 5000; m++) {
        v2k[0] = (unsigned char)m;
        vcache_put(vc, 100000 + m, 0, v2k, sizeof v2k);
        assert_true((size_t)stats(vc).value_cache_bytes <= budget);
    }
    assert_true((size_t)stats(vc).value_cache_bytes > budget - 2 * 2100);
    n = 0;
    for (int64_t m = 1; m <= 5000; m++) {
        struct arena a = {0};
        struct mvcc_buf got;
        if (vcache_get(vc, &a, 100000 + m, 0, &got) == 1) {
            assert_int_equal(got.len, sizeof v2k);
            assert_int_equal(((unsigned char *)got.data)[0], (unsigned char)m);
            n++;
        }
        arena_free(&a);
    }
    assert_in_range(n, 100, 125); /* (256 KiB - the table) / 2 KiB */

    /* over 1/64 of the budget: not kept */
    static unsigned char big[(256 << 10) / 64 + 1];
    vcache_put(vc, 1 << 30, 0, big, sizeof big);
    struct arena a = {0};
    struct mvcc_buf got;
    assert_int_equal(vcache_get(vc, &a, 1 << 30, 0, &got), 0);
    vcache_put(vc, 1 << 30, 1, big, sizeof big - 1);
    assert_int_equal(vcache_get(vc, &a, 1 << 30, 1, &got), 1);
    assert_int_equal(got.len, sizeof big - 1);
    arena_free(&a);
    vcache_free(vc);

    /* a budget too small for its own table makes no cache */
    assert_int_equal(vcache_new(1000, &vc), 0);
    assert_null(vc);
    assert_int_equal(vcache_new(0, &vc), 0);
    assert_null(vc);
}

static void test_a_value_read_often_survives_a_stream_of_new_ones(void **state)
{
    (void)state;
    struct vcache *vc;
    assert_int_equal(vcache_new(64 << 10, &vc), 0);
    /* 32 hot revisions, read between every insert of 20,000 cold ones that
     * fill the cache over and over */
    for (int64_t h = 0; h < 32; h++)
        put_rev(vc, 1000000 + h, 0);
    size_t hot_hits = 0;
    for (int64_t m = 1; m <= 20000; m++) {
        put_rev(vc, m, 0);
        int64_t h = 1000000 + m % 32;
        if (get_rev(vc, h, 0))
            hot_hits++;
        else
            put_rev(vc, h, 0); /* a reader refills what it missed */
    }
    /* CLOCK keeps them: nearly every hot read hits (a FIFO would lose each
     * hot value once per pass of the cold stream over its bucket) */
    assert_true(hot_hits > 19000);
    vcache_free(vc);
}

struct worker {
    struct vcache *vc;
    int id;
    long hits;
};

static void *work(void *arg)
{
    struct worker *w = arg;
    for (int i = 0; i < 40000; i++) {
        int64_t m = 1 + (i * 7919 + w->id * 104729) % 3000;
        uint32_t s = (uint32_t)(i % 2);
        if (get_rev(w->vc, m, s))
            w->hits++;
        else
            put_rev(w->vc, m, s);
    }
    return NULL;
}

static void test_threads_share_it_and_always_read_the_right_bytes(void **state)
{
    (void)state;
    struct vcache *vc;
    assert_int_equal(vcache_new(256 << 10, &vc), 0); /* about a quarter of the 6000 revisions fit */
    enum { N = 4 };
    struct worker w[N];
    pthread_t t[N];
    for (int i = 0; i < N; i++) {
        w[i] = (struct worker){.vc = vc, .id = i};
        assert_int_equal(pthread_create(&t[i], NULL, work, &w[i]), 0);
    }
    long hits = 0;
    for (int i = 0; i < N; i++) {
        assert_int_equal(pthread_join(t[i], NULL), 0);
        hits += w[i].hits;
    }
    struct mvcc_status st = stats(vc);
    assert_int_equal(st.value_cache_hits, (uint64_t)hits);
    assert_int_equal(st.value_cache_hits + st.value_cache_misses, (uint64_t)N * 40000);
    assert_true(hits > 0);
    /* a few inserts may race past the budget at once, never more than one per thread */
    assert_true((size_t)st.value_cache_bytes <= (256 << 10) + N * 400);
    vcache_free(vc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_values_come_back_as_they_went_in_and_are_counted),
        cmocka_unit_test(test_the_budget_holds_and_big_values_stay_out),
        cmocka_unit_test(test_a_value_read_often_survives_a_stream_of_new_ones),
        cmocka_unit_test(test_threads_share_it_and_always_read_the_right_bytes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
