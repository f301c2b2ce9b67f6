/*
 * daemon/watch's plain logic: key ranges and filters, shared events, a
 * watcher's queue, how a queue is cut into WatchNext replies (whole
 * revisions, fragments only when allowed and needed, the progress revision),
 * and the dispatcher's feeding rule (skip what the watcher has, stop at a
 * revision boundary when the queue is full, fall back to the store on a lost
 * batch).  No threads, no store.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "daemon/watch_internal.h"

/* --- helpers ---------------------------------------------------------------- */

static struct mvcc_kv kv(const char *key, const char *value, int64_t rev)
{
    return (struct mvcc_kv){.key = {key, strlen(key)}, .value = {value, value ? strlen(value) : 0},
                            .create_revision = rev, .mod_revision = rev, .version = 1};
}

static struct wev *put_ev(const char *key, const char *value, int64_t rev)
{
    struct mvcc_kv k = kv(key, value, rev);
    struct wev *e = wev_new(MVCC_EVENT_PUT, &k, NULL);
    assert_non_null(e);
    return e;
}

static struct wev *del_ev(const char *key, int64_t rev)
{
    struct mvcc_kv k = {.key = {key, strlen(key)}, .mod_revision = rev};
    struct wev *e = wev_new(MVCC_EVENT_DELETE, &k, NULL);
    assert_non_null(e);
    return e;
}

/* A value of n bytes (static, so events may point into it while the test runs). */
static const char *value_of(size_t n)
{
    static char buf[1 << 16];
    assert_true(n < sizeof buf);
    memset(buf, 'v', n);
    buf[n] = '\0';
    return buf;
}

static void range(struct wrange *r, const char *key, const void *end, size_t elen)
{
    assert_int_equal(wrange_init(r, key, strlen(key), end, elen), 0);
}

/* Push an event of rev with a value of size bytes. */
static void push(struct wq *q, int64_t rev, size_t size)
{
    struct wev *e = put_ev("k", value_of(size), rev);
    assert_int_equal(wq_push(q, e, wev_bytes(e, false)), 0);
}

static size_t ev_bytes(size_t value)
{
    return 1 + value + WATCH_EVENT_OVERHEAD; /* key "k" */
}

/* --- ranges and filters ----------------------------------------------------- */

static void test_single_key_range_matches_only_that_key(void **state)
{
    (void)state;
    struct wrange r;
    range(&r, "ab", "", 0);
    assert_true(wrange_match(&r, "ab", 2));
    assert_false(wrange_match(&r, "a", 1));
    assert_false(wrange_match(&r, "abc", 3));
    assert_false(wrange_match(&r, "b", 1));
    wrange_free(&r);
}

static void test_bounded_range_is_half_open_in_byte_order(void **state)
{
    (void)state;
    struct wrange r;
    range(&r, "b", "d", 1);
    assert_false(wrange_match(&r, "a", 1));
    assert_false(wrange_match(&r, "a\xff", 2));
    assert_true(wrange_match(&r, "b", 1));
    assert_true(wrange_match(&r, "b\x00", 2));
    assert_true(wrange_match(&r, "c\xff\xff", 3));
    assert_false(wrange_match(&r, "d", 1));
    assert_false(wrange_match(&r, "da", 2));
    wrange_free(&r);
}

static void test_prefix_range_takes_keys_with_the_prefix(void **state)
{
    (void)state;
    struct wrange r;
    range(&r, "p/", "p0", 2); /* prefix_end("p/") */
    assert_true(wrange_match(&r, "p/", 2));
    assert_true(wrange_match(&r, "p/x/y", 5));
    assert_false(wrange_match(&r, "p", 1));
    assert_false(wrange_match(&r, "p0", 2));
    assert_false(wrange_match(&r, "q/", 2));
    wrange_free(&r);
}

static void test_zero_byte_end_takes_every_key_from_key(void **state)
{
    (void)state;
    struct wrange r;
    range(&r, "m", "\0", 1);
    assert_false(wrange_match(&r, "l\xff", 2));
    assert_true(wrange_match(&r, "m", 1));
    assert_true(wrange_match(&r, "\xff\xff", 2));
    wrange_free(&r);
}

static void test_end_not_above_key_matches_nothing(void **state)
{
    (void)state;
    struct wrange r;
    range(&r, "m", "c", 1);
    assert_false(wrange_match(&r, "m", 1));
    assert_false(wrange_match(&r, "d", 1));
    wrange_free(&r);
}

static void test_filters_drop_puts_or_deletes(void **state)
{
    (void)state;
    struct wfilter f = {0};
    range(&f.range, "k", "", 0);
    struct wev *p = put_ev("k", "v", 5), *d = del_ev("k", 6), *other = put_ev("j", "v", 7);
    assert_true(wfilter_match(&f, p));
    assert_true(wfilter_match(&f, d));
    assert_false(wfilter_match(&f, other));
    f.noput = true;
    assert_false(wfilter_match(&f, p));
    assert_true(wfilter_match(&f, d));
    f.noput = false;
    f.nodelete = true;
    assert_true(wfilter_match(&f, p));
    assert_false(wfilter_match(&f, d));
    wev_unref(p);
    wev_unref(d);
    wev_unref(other);
    wrange_free(&f.range);
}

/* --- events ----------------------------------------------------------------- */

static void test_event_is_a_copy_with_its_previous_value(void **state)
{
    (void)state;
    char key[] = "key", val[] = "new", pval[] = "old";
    struct mvcc_kv k = {.key = {key, 3}, .value = {val, 3}, .create_revision = 4, .mod_revision = 9, .version = 2,
                        .lease = 77};
    struct mvcc_kv p = {.key = {key, 3}, .value = {pval, 3}, .create_revision = 4, .mod_revision = 4, .version = 1};
    struct wev *e = wev_new(MVCC_EVENT_PUT, &k, &p);
    memset(key, 'x', 3);
    memset(val, 'x', 3);
    memset(pval, 'x', 3);
    assert_int_equal(e->rev, 9);
    assert_memory_equal(e->kv.key.data, "key", 3);
    assert_memory_equal(e->kv.value.data, "new", 3);
    assert_int_equal(e->kv.lease, 77);
    assert_int_equal(e->kv.version, 2);
    assert_true(e->has_prev);
    assert_memory_equal(e->prev.value.data, "old", 3);
    assert_int_equal(e->prev.mod_revision, 4);
    assert_int_equal(wev_bytes(e, false), 6 + WATCH_EVENT_OVERHEAD);
    assert_int_equal(wev_bytes(e, true), 12 + 2 * WATCH_EVENT_OVERHEAD);
    wev_ref(e);
    wev_unref(e);
    wev_unref(e);
}

static void test_delete_event_carries_key_and_revision_only(void **state)
{
    (void)state;
    /* a history row for a tombstone may carry more; both paths must give the same event */
    struct mvcc_kv k = {.key = {"gone", 4}, .create_revision = 3, .mod_revision = 8, .lease = 5};
    struct wev *e = wev_new(MVCC_EVENT_DELETE, &k, NULL);
    assert_int_equal(e->type, MVCC_EVENT_DELETE);
    assert_int_equal(e->kv.mod_revision, 8);
    assert_int_equal(e->kv.create_revision, 0);
    assert_int_equal(e->kv.lease, 0);
    assert_int_equal(e->kv.value.len, 0);
    assert_memory_equal(e->kv.key.data, "gone", 4);
    assert_false(e->has_prev);
    wev_unref(e);
}

/* --- queues ----------------------------------------------------------------- */

static void test_queue_keeps_order_across_wrap_and_growth(void **state)
{
    (void)state;
    struct wq q = {0};
    int64_t next_in = 1, next_out = 1;
    for (int round = 0; round < 50; round++) {
        for (int i = 0; i < round % 7 + 3; i++)
            push(&q, next_in++, 1);
        for (int i = 0; i < round % 5 + 1 && q.n; i++) {
            struct wev *e = wq_pop(&q, ev_bytes(1));
            assert_int_equal(e->rev, next_out++);
            wev_unref(e);
        }
    }
    assert_int_equal(q.n, (size_t)(next_in - next_out));
    assert_int_equal(q.bytes, q.n * ev_bytes(1));
    for (size_t i = 0; i < q.n; i++)
        assert_int_equal(wq_at(&q, i)->rev, next_out + (int64_t)i);
    wq_clear(&q);
    assert_int_equal(q.n, 0);
    assert_int_equal(q.bytes, 0);
}

/* --- cutting replies ----------------------------------------------------------- */

static void test_reply_takes_whole_revisions_up_to_max_bytes(void **state)
{
    (void)state;
    struct wq q = {0};
    push(&q, 5, 100);
    push(&q, 5, 100);
    push(&q, 6, 100);
    push(&q, 7, 100);
    push(&q, 7, 100);
    bool frag;
    /* room for revision 5 (2 events) and 6, not for both events of 7 */
    size_t n = wq_plan(&q, 8, 4 * ev_bytes(100), false, false, 1, &frag);
    assert_int_equal(n, 3);
    assert_false(frag);
    assert_int_equal(wq_progress(&q, n, 8), 6);
    /* a big enough limit takes everything; progress is then the watcher's position */
    assert_int_equal(wq_plan(&q, 8, 1 << 20, false, false, 1, &frag), 5);
    assert_int_equal(wq_progress(&q, 5, 8), 7);
    assert_int_equal(wq_progress(&q, 5, 12), 11);
    wq_clear(&q);
}

static void test_first_revision_goes_whole_without_fragment(void **state)
{
    (void)state;
    struct wq q = {0};
    for (int i = 0; i < 10; i++)
        push(&q, 3, 1000);
    push(&q, 4, 10);
    bool frag;
    size_t n = wq_plan(&q, 5, 2000, false, false, 2000, &frag);
    assert_int_equal(n, 10); /* never split: over the limit, alone */
    assert_false(frag);
    assert_int_equal(wq_progress(&q, n, 5), 3);
    wq_clear(&q);
}

static void test_fragment_splits_only_a_revision_over_the_limit(void **state)
{
    (void)state;
    struct wq q = {0};
    push(&q, 3, 100);
    push(&q, 3, 100);
    for (int i = 0; i < 10; i++)
        push(&q, 4, 1000);
    bool frag;
    /* revision 3 fits whole: taken whole, and 4 is not started in the same reply */
    size_t n = wq_plan(&q, 5, 2500, false, true, 2500, &frag);
    assert_int_equal(n, 2);
    assert_false(frag);
    for (size_t i = 0; i < n; i++)
        wev_unref(wq_pop(&q, ev_bytes(100)));
    /* revision 4 is over the limit: cut at the limit, said to be a fragment */
    n = wq_plan(&q, 5, 2500, false, true, 2500, &frag);
    assert_int_equal(n, 2);
    assert_true(frag);
    assert_int_equal(wq_progress(&q, n, 5), 3); /* revision 4 is not complete yet */
    for (size_t i = 0; i < 8; i++)
        wev_unref(wq_pop(&q, ev_bytes(1000)));
    /* the last two events of revision 4 end it: no longer a fragment */
    n = wq_plan(&q, 5, 2500, false, true, 2500, &frag);
    assert_int_equal(n, 2);
    assert_false(frag);
    assert_int_equal(wq_progress(&q, n, 5), 4);
    wq_clear(&q);
}

static void test_incomplete_revision_waits_unless_fragment_allows(void **state)
{
    (void)state;
    struct wq q = {0};
    push(&q, 9, 100); /* revision 9 is still being read: complete_below is 9 */
    push(&q, 9, 100);
    bool frag;
    assert_int_equal(wq_plan(&q, 9, 1 << 20, false, false, 1 << 20, &frag), 0);
    /* with fragment, only once the part read reaches frag_min */
    assert_int_equal(wq_plan(&q, 9, 1 << 20, false, true, 3 * ev_bytes(100), &frag), 0);
    size_t n = wq_plan(&q, 9, 1 << 20, false, true, 2 * ev_bytes(100), &frag);
    assert_int_equal(n, 2);
    assert_true(frag);
    assert_int_equal(wq_progress(&q, n, 9), 8);
    assert_int_equal(wq_progress(&q, 0, 9), 8);
    wq_clear(&q);
}

static void test_complete_revisions_go_before_an_incomplete_one(void **state)
{
    (void)state;
    struct wq q = {0};
    push(&q, 7, 10);
    push(&q, 8, 10);
    push(&q, 9, 10);
    bool frag;
    size_t n = wq_plan(&q, 9, 1 << 20, false, false, 1 << 20, &frag);
    assert_int_equal(n, 2);
    assert_false(frag);
    assert_int_equal(wq_progress(&q, n, 9), 8);
    wq_clear(&q);
}

static void test_prev_kv_counts_toward_the_limit(void **state)
{
    (void)state;
    struct wq q = {0};
    struct mvcc_kv k = kv("k", value_of(100), 4), p = kv("k", value_of(100), 3);
    for (int rev = 4; rev < 6; rev++) {
        k.mod_revision = rev;
        struct wev *e = wev_new(MVCC_EVENT_PUT, &k, &p);
        assert_int_equal(wq_push(&q, e, wev_bytes(e, true)), 0);
    }
    bool frag;
    size_t one = ev_bytes(100);
    assert_int_equal(wq_plan(&q, 6, 2 * one, false, false, 1, &frag), 2);
    assert_int_equal(wq_plan(&q, 6, 2 * one, true, false, 1, &frag), 1);
    wq_clear(&q);
}

/* --- the dispatcher's feeding rule --------------------------------------------- */

static struct watch_hub *hub_new(void)
{
    struct watch_hub *h = calloc(1, sizeof(*h));
    assert_non_null(h);
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->sync_cv, NULL);
    return h;
}

static void hub_del(struct watch_hub *h)
{
    pthread_cond_destroy(&h->sync_cv);
    pthread_mutex_destroy(&h->mu);
    free(h);
}

static struct watcher *synced_watcher(struct watch_hub *h, const char *key, const char *end, int64_t next_rev)
{
    struct watcher *w = calloc(1, sizeof(*w));
    assert_non_null(w);
    range(&w->f.range, key, end, strlen(end));
    w->state = W_SYNCED;
    w->next_rev = next_rev;
    w->cursor_sub = -1;
    h->synced.head = h->synced.tail = w;
    h->synced.n = 1;
    return w;
}

static void watcher_del(struct watcher *w)
{
    wq_clear(&w->q);
    wrange_free(&w->f.range);
    free(w);
}

/* A batch (from, to] of puts: keys[i] at revs[i] with values of size bytes. */
static struct wbatch *batch(int64_t from, int64_t to, const char *const *keys, const int64_t *revs, size_t n,
                            size_t size)
{
    struct wbatch *b = calloc(1, sizeof(*b));
    assert_non_null(b);
    b->from = from;
    b->to = to;
    b->ev = calloc(n ? n : 1, sizeof(*b->ev));
    for (size_t i = 0; i < n; i++)
        b->ev[b->n++] = put_ev(keys[i], value_of(size), revs[i]);
    return b;
}

static void test_feed_queues_matching_events_and_moves_on(void **state)
{
    (void)state;
    struct watch_hub *h = hub_new();
    struct watcher *w = synced_watcher(h, "a", "b", 11);
    const char *keys[] = {"a1", "x", "a2", "a3"};
    const int64_t revs[] = {11, 12, 12, 13};
    struct wbatch *b = batch(10, 14, keys, revs, 4, 10);
    assert_true(whub_feed(h, w, b));
    assert_int_equal(w->q.n, 3);
    assert_int_equal(wq_at(&w->q, 0)->rev, 11);
    assert_int_equal(wq_at(&w->q, 2)->rev, 13);
    assert_int_equal(w->next_rev, 15); /* revision 14 wrote nothing it watches, still passed */
    assert_int_equal(h->total_bytes, w->q.bytes);
    /* the batch and the queue share the events */
    assert_int_equal(b->ev[0]->refs, 2);
    assert_int_equal(b->ev[1]->refs, 1);
    /* a batch it already has changes nothing */
    assert_true(whub_feed(h, w, b));
    assert_int_equal(w->q.n, 3);
    wbatch_free(b);
    watcher_del(w);
    hub_del(h);
}

static void test_feed_skips_what_the_watcher_already_has(void **state)
{
    (void)state;
    struct watch_hub *h = hub_new();
    struct watcher *w = synced_watcher(h, "a", "b", 13); /* caught up from the store through 12 */
    const char *keys[] = {"a1", "a2", "a3"};
    const int64_t revs[] = {11, 12, 13};
    struct wbatch *b = batch(10, 13, keys, revs, 3, 10);
    assert_true(whub_feed(h, w, b));
    assert_int_equal(w->q.n, 1);
    assert_int_equal(wq_at(&w->q, 0)->rev, 13);
    wbatch_free(b);
    watcher_del(w);
    hub_del(h);
}

static void test_feed_of_a_lost_batch_sends_the_watcher_to_the_store(void **state)
{
    (void)state;
    struct watch_hub *h = hub_new();
    struct watcher *w = synced_watcher(h, "a", "b", 11);
    struct wbatch lost = {.from = 10, .to = 20, .lost = true};
    assert_false(whub_feed(h, w, &lost));
    assert_int_equal(w->state, W_UNSYNCED);
    assert_int_equal(w->next_rev, 11); /* reads from where it was */
    assert_ptr_equal(h->unsynced.head, w);
    assert_int_equal(h->synced.n, 0);
    watcher_del(w);
    hub_del(h);
}

static void test_full_queue_goes_back_to_the_store_at_a_revision_boundary(void **state)
{
    (void)state;
    struct watch_hub *h = hub_new();
    struct watcher *w = synced_watcher(h, "a", "b", 1);
    size_t size = 40000, per = WATCH_QUEUE_BYTES / ev_bytes(size);
    const char *keys[64];
    int64_t revs[64];
    assert_true(per + 4 < 64);
    /* one revision per event, then a revision of two events that does not fit */
    size_t n = 0;
    for (; n < per; n++) {
        keys[n] = "a";
        revs[n] = (int64_t)n + 1;
    }
    keys[n] = "a";
    revs[n++] = (int64_t)per + 1;
    keys[n] = "ab";
    revs[n++] = (int64_t)per + 1;
    struct wbatch *b = batch(0, (int64_t)per + 1, keys, revs, n, size);
    assert_false(whub_feed(h, w, b));
    assert_int_equal(w->state, W_UNSYNCED);
    assert_int_equal(w->q.n, per);                   /* whole revisions only */
    assert_int_equal(w->next_rev, (int64_t)per + 1); /* the store gives the rest from there */
    assert_true(w->q.bytes <= WATCH_QUEUE_BYTES);
    assert_int_equal(h->resyncs, 1);
    wbatch_free(b);
    watcher_del(w);
    hub_del(h);
}

static void test_empty_queue_takes_a_revision_larger_than_its_bound(void **state)
{
    (void)state;
    struct watch_hub *h = hub_new();
    struct watcher *w = synced_watcher(h, "a", "b", 1);
    const char *keys[40];
    int64_t revs[40];
    for (int i = 0; i < 40; i++) {
        keys[i] = "a";
        revs[i] = 1;
    }
    struct wbatch *b = batch(0, 1, keys, revs, 40, 40000); /* 1.6 MB in one revision */
    assert_true(whub_feed(h, w, b));
    assert_int_equal(w->q.n, 40);
    assert_int_equal(w->state, W_SYNCED);
    wbatch_free(b);
    watcher_del(w);
    hub_del(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_single_key_range_matches_only_that_key),
        cmocka_unit_test(test_bounded_range_is_half_open_in_byte_order),
        cmocka_unit_test(test_prefix_range_takes_keys_with_the_prefix),
        cmocka_unit_test(test_zero_byte_end_takes_every_key_from_key),
        cmocka_unit_test(test_end_not_above_key_matches_nothing),
        cmocka_unit_test(test_filters_drop_puts_or_deletes),
        cmocka_unit_test(test_event_is_a_copy_with_its_previous_value),
        cmocka_unit_test(test_delete_event_carries_key_and_revision_only),
        cmocka_unit_test(test_queue_keeps_order_across_wrap_and_growth),
        cmocka_unit_test(test_reply_takes_whole_revisions_up_to_max_bytes),
        cmocka_unit_test(test_first_revision_goes_whole_without_fragment),
        cmocka_unit_test(test_fragment_splits_only_a_revision_over_the_limit),
        cmocka_unit_test(test_incomplete_revision_waits_unless_fragment_allows),
        cmocka_unit_test(test_complete_revisions_go_before_an_incomplete_one),
        cmocka_unit_test(test_prev_kv_counts_toward_the_limit),
        cmocka_unit_test(test_feed_queues_matching_events_and_moves_on),
        cmocka_unit_test(test_feed_skips_what_the_watcher_already_has),
        cmocka_unit_test(test_feed_of_a_lost_batch_sends_the_watcher_to_the_store),
        cmocka_unit_test(test_full_queue_goes_back_to_the_store_at_a_revision_boundary),
        cmocka_unit_test(test_empty_queue_takes_a_revision_larger_than_its_bound),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
