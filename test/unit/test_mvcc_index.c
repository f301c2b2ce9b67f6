/*
 * storage/mvcc's key index (storage/mvcc_index.h), alone: random batches of
 * appends, drops, lease pairs, publishes and aborts against a plain sorted
 * reference, over keys with long shared prefixes, odd bytes and many leaves;
 * and a reader thread that checks every version it pins is whole while the
 * writer publishes (run it under SANITIZE=1 to check the reclamation too).
 * MVCC_INDEX_OPS makes it longer.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "storage/mvcc_index.h"

static int env_int(const char *name, int dflt)
{
    const char *v = getenv(name);
    return v && atoi(v) > 0 ? atoi(v) : dflt;
}

static uint64_t rng = 0x2545F4914F6CDD1DULL;
static uint32_t rnd(uint32_t n)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng % n);
}

/* --- the reference: keys in order, each with its revisions ------------------------ */

struct rkey {
    unsigned char k[64];
    size_t len;
    struct krev *r;
    uint32_t n;
};

struct ref {
    struct rkey *v;
    size_t n, cap;
};

static int kcmp(const unsigned char *a, size_t al, const unsigned char *b, size_t bl)
{
    size_t n = al < bl ? al : bl;
    int c = n ? memcmp(a, b, n) : 0;
    return c ? c : (al > bl) - (al < bl);
}

static size_t ref_find(const struct ref *f, const unsigned char *k, size_t len, bool *eq)
{
    size_t lo = 0, hi = f->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (kcmp(f->v[mid].k, f->v[mid].len, k, len) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *eq = lo < f->n && kcmp(f->v[lo].k, f->v[lo].len, k, len) == 0;
    return lo;
}

/* Insert key k (not there yet) at its place at, with no revisions. */
static void ref_insert(struct ref *f, size_t at, const unsigned char *k, size_t len)
{
    if (f->n == f->cap) {
        f->cap = f->cap ? f->cap * 2 : 64;
        f->v = realloc(f->v, f->cap * sizeof(*f->v));
    }
    memmove(&f->v[at + 1], &f->v[at], (f->n - at) * sizeof(*f->v));
    f->n++;
    f->v[at] = (struct rkey){.len = len};
    memcpy(f->v[at].k, k, len);
}

static void ref_copy(struct ref *dst, const struct ref *src)
{
    for (size_t i = 0; i < dst->n; i++)
        free(dst->v[i].r);
    free(dst->v);
    *dst = (struct ref){.n = src->n, .cap = src->n};
    dst->v = malloc((src->n ? src->n : 1) * sizeof(*dst->v));
    for (size_t i = 0; i < src->n; i++) {
        dst->v[i] = src->v[i];
        dst->v[i].r = malloc((src->v[i].n ? src->v[i].n : 1) * sizeof(struct krev));
        memcpy(dst->v[i].r, src->v[i].r, src->v[i].n * sizeof(struct krev));
    }
}

static void ref_free(struct ref *f)
{
    for (size_t i = 0; i < f->n; i++)
        free(f->v[i].r);
    free(f->v);
    memset(f, 0, sizeof(*f));
}

/* Keys built to share long prefixes (beyond a leaf's inline 16 bytes), to
 * differ only past 8 bytes after them, and to hold 0x00 and 0xff bytes. */
static size_t gen_key(unsigned char *k)
{
    static const char *const pre[] = {"", "a", "key/", "/registry/pods/default/pod-", "zzzzzzzzzzzzzzzzzzzzzzzz"};
    static const unsigned char alpha[] = {0x00, 0x01, '0', '1', '2', 'a', 'b', 0xfe, 0xff};
    const char *p = pre[rnd(5)];
    size_t len = strlen(p);
    memcpy(k, p, len);
    size_t extra = rnd(14);
    if (rnd(4) == 0) { /* a long run of one byte, then the difference */
        memset(k + len, 'q', 10);
        len += 10;
    }
    for (size_t i = 0; i < extra; i++)
        k[len++] = alpha[rnd(sizeof(alpha))];
    return len;
}

/* --- checks ------------------------------------------------------------------------- */

static void check_tree(const struct ixnode *root, const struct ref *f, int64_t rev)
{
    struct ixiter it;
    const struct keyrec *kr;
    size_t i = 0;
    ix_seek(&it, root, NULL, 0);
    while ((kr = ix_next(&it))) {
        assert_true(i < f->n);
        assert_int_equal(kr->klen, f->v[i].len);
        assert_memory_equal(kr->key, f->v[i].k, kr->klen);
        uint32_t n = kr_count(kr), m = 0;
        for (uint32_t j = 0; j < n; j++)
            m += kr_revs(kr)[j].main <= rev;
        assert_int_equal(m, f->v[i].n);
        assert_memory_equal(kr_revs(kr), f->v[i].r, m * sizeof(struct krev));
        i++;
    }
    assert_int_equal(i, f->n);
    /* lookups and seeks, of present and absent keys */
    for (int t = 0; t < 200; t++) {
        unsigned char k[64];
        size_t len;
        if (f->n && rnd(2)) {
            const struct rkey *rk = &f->v[rnd((uint32_t)f->n)];
            memcpy(k, rk->k, rk->len);
            len = rk->len;
        } else {
            len = gen_key(k);
        }
        bool eq;
        size_t at = ref_find(f, k, len, &eq);
        const struct keyrec *g = ix_get(root, k, len);
        assert_true(eq == (g != NULL));
        if (len == 0)
            continue;
        ix_seek(&it, root, k, len);
        kr = ix_next(&it);
        if (at == f->n) {
            assert_null(kr);
        } else {
            assert_non_null(kr);
            assert_int_equal(kr->klen, f->v[at].len);
            assert_memory_equal(kr->key, f->v[at].k, kr->klen);
        }
    }
}

/* Lease pairs: a sorted set of (lease, key) encodings. */
static void check_leases(const struct ixnode *lroot, unsigned char (*lk)[72], const size_t *lklen,
                         size_t nl)
{
    struct ixiter it;
    const struct keyrec *kr;
    size_t i = 0;
    ix_seek(&it, lroot, NULL, 0);
    while ((kr = ix_next(&it))) {
        assert_true(i < nl);
        assert_int_equal(kr->klen, lklen[i]);
        assert_memory_equal(kr->key, lk[i], kr->klen);
        i++;
    }
    assert_int_equal(i, nl);
}

static int lk_cmp(const void *a, const void *b)
{
    const unsigned char *x = a, *y = b;
    size_t xl, yl;
    memcpy(&xl, x + 64, sizeof(xl)); /* length kept after the bytes, see lease_set */
    memcpy(&yl, y + 64, sizeof(yl));
    return kcmp(x, xl, y, yl);
}

/* --- bulk builds --------------------------------------------------------------------- */

/* Feed keys[order[i]]'s first revision for each i, then extra later revisions
 * of random keys, to a bulk build; its tree must match the reference. */
static void build_and_check(struct ref *keys, const size_t *order, int extra)
{
    struct ixbuild *b = ix_build_new();
    int64_t main = 0;
    for (size_t i = 0; i < keys->n; i++)
        keys->v[i].n = 0;
    for (size_t i = 0; i < keys->n + (size_t)extra; i++) {
        struct rkey *rk = &keys->v[i < keys->n ? order[i] : rnd((uint32_t)keys->n)];
        struct krev r = {.main = ++main, .create = main, .version = rk->n + 1};
        rk->r = realloc(rk->r, (rk->n + 1) * sizeof(struct krev));
        rk->r[rk->n++] = r;
        assert_int_equal(ix_build_row(b, rk->k, rk->len, &r), 0);
    }
    struct ix ix;
    struct state st = {.rev = main};
    assert_int_equal(ix_build_finish(b, &ix, &st), 0);
    assert_int_equal(ix.keys, keys->n);
    check_tree(ix.root, keys, INT64_MAX);
    ix_destroy(&ix);
}

/*
 * A bulk build (a store's open) lays the keys out in key order whether they
 * first came in that order, which it then takes as it is, or in any other,
 * which it sorts; later revisions of a key come in any order either way.
 */
static void test_a_bulk_build_orders_keys_however_they_came(void **state)
{
    (void)state;
    struct ref keys = {0};
    while (keys.n < 5000) {
        unsigned char k[64];
        size_t len = gen_key(k);
        bool eq;
        size_t at = ref_find(&keys, k, len, &eq);
        if (!eq && len > 0)
            ref_insert(&keys, at, k, len);
    }
    size_t *order = malloc(keys.n * sizeof(*order));
    for (size_t i = 0; i < keys.n; i++)
        order[i] = i;
    build_and_check(&keys, order, 0);        /* in key order, one revision each */
    build_and_check(&keys, order, 3000);     /* in key order, then more revisions */
    size_t t = order[10];                    /* in key order but for one pair */
    order[10] = order[4000];
    order[4000] = t;
    build_and_check(&keys, order, 3000);
    for (size_t i = keys.n - 1; i > 0; i--) { /* shuffled */
        size_t j = rnd((uint32_t)(i + 1));
        t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    build_and_check(&keys, order, 3000);
    free(order);
    ref_free(&keys);
}

/* --- how full inserts leave the nodes ------------------------------------------------- */

/* Put keys ks[0..n) in that order, 100 per published batch, onto an empty
 * index; check every key is there in order, and return the tree's shape. */
static struct ixshape insert_all(char (*ks)[32], size_t n)
{
    struct ix ix;
    struct state st = {.rev = 1};
    assert_int_equal(ix_build_finish(ix_build_new(), &ix, &st), 0);
    for (size_t i = 0; i < n; i++) {
        struct krev r = {.main = (int64_t)i + 2, .create = (int64_t)i + 2, .version = 1};
        assert_int_equal(ix_add_rev(&ix, NULL, ks[i], strlen(ks[i]), &r), 0);
        if (i % 100 == 99 || i + 1 == n) {
            st.rev = r.main;
            assert_int_equal(ix_prepare(&ix), 0);
            ix_publish(&ix, &st);
        }
    }
    struct ixiter it;
    const struct keyrec *kr, *prev = NULL;
    size_t seen = 0;
    ix_seek(&it, ix.root, NULL, 0);
    while ((kr = ix_next(&it))) {
        if (prev)
            assert_true(kcmp(prev->key, prev->klen, kr->key, kr->klen) < 0);
        prev = kr;
        seen++;
    }
    assert_int_equal(seen, n);
    struct ixshape sh;
    ix_shape(ix.root, &sh);
    assert_int_equal(sh.keys, n);
    print_message("%zu keys: %zu leaves (%.1f keys each), %zu inner nodes, depth %d, %zu bytes\n",
                  n, sh.leaves, (double)n / (double)sh.leaves, sh.inners, sh.depth, sh.bytes);
    ix_destroy(&ix);
    return sh;
}

/*
 * Keys put in ascending or descending order leave full leaves behind them
 * (32 keys; half-full ones if every split went in halves).  Keys put in
 * descending order just above a full leaf's last key must not split off a
 * node per key; a random order fills nodes as a B+tree's usually are.
 */
static void test_keys_put_in_order_leave_full_nodes(void **state)
{
    (void)state;
    enum { N = 20000 };
    static char ks[N][32];
    for (size_t i = 0; i < N; i++)
        snprintf(ks[i], sizeof(ks[i]), "key%08zu", i);
    struct ixshape up = insert_all(ks, N);
    assert_true(up.keys >= 31 * up.leaves);
    assert_true(up.depth <= 4);

    for (size_t i = 0; i < N; i++)
        snprintf(ks[i], sizeof(ks[i]), "key%08zu", N - 1 - i);
    struct ixshape down = insert_all(ks, N);
    assert_true(down.keys >= 31 * down.leaves);
    assert_true(down.depth <= 4);

    /* 17,024 keys in order, which leave the last leaf full (532 leaves of
     * 32), then the rest in descending order, each between the last of those
     * (M) and the one before: M, j bytes 0x01, then a byte from 0xff down to
     * 0x02.  Each lands at the end of M's leaf. */
    size_t m = 32 * 532, len = strlen("key00000000");
    for (size_t i = 0; i < N; i++) {
        if (i < m) {
            snprintf(ks[i], sizeof(ks[i]), "key%08zu", i);
            continue;
        }
        size_t k = i - m, j = k / 254;
        memcpy(ks[i], ks[m - 1], len);
        memset(ks[i] + len, 0x01, j);
        ks[i][len + j] = (char)(0xff - k % 254);
        ks[i][len + j + 1] = 0;
    }
    struct ixshape band = insert_all(ks, N);
    assert_true(band.keys >= 28 * band.leaves);

    for (size_t i = N - 1; i > 0; i--) {
        size_t j = rnd((uint32_t)(i + 1));
        char t[32];
        memcpy(t, ks[i], sizeof(t));
        memcpy(ks[i], ks[j], sizeof(t));
        memcpy(ks[j], t, sizeof(t));
    }
    struct ixshape shuffled = insert_all(ks, N);
    assert_true(shuffled.keys >= 18 * shuffled.leaves);
    assert_true(shuffled.depth <= 4);
}

/* A key's revisions start at the first multiple of 8 past it: a 9-byte key
 * with one revision takes 72 bytes (80 with the header padded to 24). */
static void test_a_keyrec_wastes_at_most_7_bytes_before_its_revisions(void **state)
{
    (void)state;
    size_t hdr = offsetof(struct keyrec, key);
    assert_int_equal(hdr, 20);
    for (size_t klen = 0; klen < 64; klen++) {
        size_t at = kr_revs_at(klen);
        assert_int_equal(at % 8, 0);
        assert_true(at >= hdr + klen && at < hdr + klen + 8);
    }
    assert_int_equal(kr_revs_at(9) + sizeof(struct krev), 72);
}

/* ix_lease_count for every lease the test uses (-3..3) against the pairs in lk. */
static void check_lease_counts(const struct ix *ix, unsigned char (*lk)[72], const size_t *lklen, size_t nl)
{
    for (int64_t lease = -3; lease <= 3; lease++) {
        unsigned char prefix[8];
        int64_t n = 0;
        ix_lease_prefix(lease, prefix);
        for (size_t i = 0; i < nl; i++)
            n += lklen[i] >= 8 && memcmp(lk[i], prefix, 8) == 0;
        assert_int_equal(ix_lease_count(ix, lease), n);
    }
}

/* The writer's per-lease counts over many leases: the table grows, and
 * counts that reach zero leave it without losing the entries after them. */
static void test_lease_counts_follow_adds_and_removes_over_many_leases(void **state)
{
    (void)state;
    enum { LEASES = 3000, KEYS = 6 };
    static int64_t id[LEASES];
    static bool on[LEASES][KEYS];
    static int64_t n[LEASES];
    struct ixbuild *b = ix_build_new();
    struct ix ix;
    struct state st = {.rev = 1};
    assert_int_equal(ix_build_finish(b, &ix, &st), 0);
    for (int i = 0; i < LEASES; i++) /* IDs of every size and sign, none 0 */
        id[i] = (int64_t)(((uint64_t)rnd(1u << 31) << 33) ^ ((uint64_t)rnd(1u << 31) << 2) ^ (uint64_t)i) | 1;
    for (int op = 1; op <= 200000; op++) {
        int l = (int)rnd(op < 100000 ? LEASES : 40); /* later: a few leases filled and emptied often */
        int k = (int)rnd(KEYS);
        char key[8];
        snprintf(key, sizeof key, "k%d", k);
        if (on[l][k]) {
            assert_int_equal(ix_lease_del(&ix, id[l], key, strlen(key)), 0);
            n[l]--;
        } else {
            assert_int_equal(ix_lease_add(&ix, id[l], key, strlen(key)), 0);
            n[l]++;
        }
        on[l][k] = !on[l][k];
        if (op % 1000 == 0) {
            assert_int_equal(ix_prepare(&ix), 0);
            st.rev++;
            ix_publish(&ix, &st);
        }
        if (op % 20000 == 0)
            for (int i = 0; i < LEASES; i++)
                assert_int_equal(ix_lease_count(&ix, id[i]), n[i]);
    }
    size_t live = 0;
    for (int i = 0; i < LEASES; i++)
        live += n[i] != 0;
    assert_int_equal(ix.lc.used, live); /* emptied leases left the table */
    assert_int_equal(ix_lease_count(&ix, 12345678), 0);
    ix_destroy(&ix);
}

/* --- random batches against the reference ------------------------------------------ */

static void test_random_batches_agree_with_a_sorted_reference(void **state)
{
    (void)state;
    int ops = env_int("MVCC_INDEX_OPS", 60000);
    struct ixbuild *b = ix_build_new();
    struct ix ix;
    struct state st = {.rev = 1};
    assert_int_equal(ix_build_finish(b, &ix, &st), 0);
    struct ref cur = {0}, pub = {0};
    /* lease pairs: bytes + length (at offset 64) per entry, sorted */
    static unsigned char lk[4096][72], plk[4096][72];
    static size_t lklen[4096], plklen[4096];
    size_t nl = 0, pnl = 0;
    int64_t rev = 1, batches = 0, aborts = 0;
    for (int op = 0; op < ops;) {
        int nops = 1 + (int)rnd(rnd(8) == 0 ? 400 : 40);
        rev++;
        for (int i = 0; i < nops; i++, op++) {
            unsigned a = rnd(100);
            if (a < 70 || cur.n == 0) {
                /* append a revision to a key, maybe a new one */
                unsigned char k[64];
                size_t len;
                if (cur.n && rnd(3) == 0) {
                    struct rkey *rk = &cur.v[rnd((uint32_t)cur.n)];
                    memcpy(k, rk->k, len = rk->len);
                } else if ((len = gen_key(k)) == 0) {
                    continue;
                }
                bool eq;
                size_t at = ref_find(&cur, k, len, &eq);
                struct krev r = {.main = rev, .sub = (uint32_t)i, .create = rnd(1000), .version = rnd(5),
                                 .lease = rnd(3)};
                struct keyrec *kr = ix_get(ix.root, k, len);
                assert_true(eq == (kr != NULL));
                assert_int_equal(ix_add_rev(&ix, kr, k, len, &r), 0);
                if (!eq)
                    ref_insert(&cur, at, k, len);
                struct rkey *rk = &cur.v[at];
                rk->r = realloc(rk->r, (rk->n + 1) * sizeof(struct krev));
                rk->r[rk->n++] = r;
            } else if (a < 85) {
                /* drop a prefix of a key's revisions, maybe all of them */
                size_t at = rnd((uint32_t)cur.n);
                struct rkey *rk = &cur.v[at];
                uint32_t k = 1 + rnd(rk->n);
                struct keyrec *kr = ix_get(ix.root, rk->k, rk->len);
                assert_non_null(kr);
                assert_int_equal(ix_drop_revs(&ix, kr, k), 0);
                if (k == rk->n) {
                    free(rk->r);
                    memmove(&cur.v[at], &cur.v[at + 1], (cur.n - at - 1) * sizeof(*cur.v));
                    cur.n--;
                } else {
                    memmove(rk->r, rk->r + k, (rk->n - k) * sizeof(struct krev));
                    rk->n -= k;
                }
            } else {
                /* a lease pair: add one or remove one */
                if (nl && (rnd(2) || nl == 4096)) {
                    size_t at = rnd((uint32_t)nl);
                    int64_t lease = 0;
                    for (int j = 0; j < 8; j++)
                        lease = (int64_t)((uint64_t)lease << 8 | lk[at][j]);
                    lease = (int64_t)((uint64_t)lease ^ (UINT64_C(1) << 63));
                    assert_int_equal(ix_lease_del(&ix, lease, lk[at] + 8, lklen[at] - 8), 0);
                    memmove(lk[at], lk[at + 1], (nl - at - 1) * sizeof(lk[0]));
                    memmove(&lklen[at], &lklen[at + 1], (nl - at - 1) * sizeof(lklen[0]));
                    nl--;
                } else {
                    unsigned char k[64], enc[72];
                    size_t len = gen_key(k);
                    int64_t lease = (int64_t)rnd(7) - 3;
                    ix_lease_key(lease, k, len, enc);
                    size_t el = len + 8, j;
                    for (j = 0; j < nl; j++)
                        if (kcmp(lk[j], lklen[j], enc, el) == 0)
                            break;
                    if (j < nl)
                        continue; /* already there */
                    assert_int_equal(ix_lease_add(&ix, lease, k, len), 0);
                    memcpy(lk[nl], enc, el);
                    memcpy(lk[nl] + 64, &el, sizeof(el));
                    lklen[nl++] = el;
                    /* keep them sorted */
                    for (size_t x = 0; x < nl; x++)
                        memcpy(lk[x] + 64, &lklen[x], sizeof(size_t));
                    qsort(lk, nl, sizeof(lk[0]), lk_cmp);
                    for (size_t x = 0; x < nl; x++)
                        memcpy(&lklen[x], lk[x] + 64, sizeof(size_t));
                }
            }
        }
        /* the writer reads its working version as it is */
        check_tree(ix.root, &cur, INT64_MAX);
        check_lease_counts(&ix, lk, lklen, nl);
        if (rnd(5) == 0) {
            /* a failed batch: everything goes back to the last publish */
            assert_int_equal(ix_abort(&ix), 0);
            ref_copy(&cur, &pub);
            memcpy(lk, plk, sizeof(lk));
            memcpy(lklen, plklen, sizeof(lklen));
            nl = pnl;
            aborts++;
            rev--;
            check_lease_counts(&ix, lk, lklen, nl); /* counted again from what was published */
        } else {
            assert_int_equal(ix_prepare(&ix), 0);
            st.rev = rev;
            ix_publish(&ix, &st);
            ref_copy(&pub, &cur);
            memcpy(plk, lk, sizeof(lk));
            memcpy(plklen, lklen, sizeof(lklen));
            pnl = nl;
            batches++;
        }
        /* what a reader pins is the last publish, whatever the writer does */
        struct ixpin pin;
        ix_pin_register(&ix, &pin);
        const struct ixver *v = ix_pin(&ix, &pin);
        assert_int_equal(v->st.rev, rev);
        check_tree(v->root, &pub, v->st.rev);
        check_leases(v->lroot, plk, plklen, pnl);
        ix_unpin(&pin);
        ix_pin_unregister(&ix, &pin);
    }
    print_message("%d operations, %lld batches published, %lld dropped, %zu keys at the end\n", ops,
                  (long long)batches, (long long)aborts, cur.n);
    assert_true(cur.n > 500); /* many leaves and levels, not one */
    ix_destroy(&ix);
    ref_free(&cur);
    ref_free(&pub);
}

/* --- a reader pinning versions while the writer publishes ------------------------------ */

/*
 * Each published version v holds exactly the keys "k%06d" for ids in
 * [compact_rev, compact_done) of its state (fields borrowed for the test),
 * each with one revision per batch since it was added, mains up to
 * v->st.rev; v->st.term is the number of revisions a reader at v must see
 * (in-place appends of later batches have higher mains and do not count).
 */
struct reader_arg {
    struct ix *ix;
    atomic_int stop;
    atomic_long checked;
    long bad;
};

static void *reader_thread(void *p)
{
    struct reader_arg *a = p;
    struct ixpin pin;
    ix_pin_register(a->ix, &pin);
    while (!atomic_load(&a->stop)) {
        const struct ixver *v = ix_pin(a->ix, &pin);
        struct ixiter it;
        const struct keyrec *kr;
        int64_t id = v->st.compact_rev, revs = 0;
        ix_seek(&it, v->root, NULL, 0);
        while ((kr = ix_next(&it))) {
            char want[16];
            int n = snprintf(want, sizeof(want), "k%06lld", (long long)id++);
            if (kr->klen != (uint32_t)n || memcmp(kr->key, want, (size_t)n) != 0)
                a->bad++;
            uint32_t c = kr_count(kr);
            for (uint32_t j = 0; j < c; j++)
                revs += kr_revs(kr)[j].main <= v->st.rev;
        }
        if (id != v->st.compact_done || revs != (int64_t)v->st.term)
            a->bad++;
        ix_unpin(&pin);
        atomic_fetch_add(&a->checked, 1);
    }
    ix_pin_unregister(a->ix, &pin);
    return NULL;
}

static void test_pinned_versions_stay_whole_while_the_writer_publishes(void **state)
{
    (void)state;
    struct ix ix;
    struct state st = {.rev = 1, .compact_rev = 1, .compact_done = 1};
    assert_int_equal(ix_build_finish(ix_build_new(), &ix, &st), 0);
    struct reader_arg a = {.ix = &ix};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, reader_thread, &a), 0);
    int64_t lo = 1, hi = 1, revs = 0;
    /* at least 3000 batches, and on until the reader has checked many
     * (bounded, for a machine too busy to schedule it) */
    for (int b = 0; b < 3000 || (atomic_load(&a.checked) < 300 && b < 300000); b++) {
        int64_t rev = st.rev + 1;
        /* every present key gets a revision: in place while there is room */
        for (int64_t id = lo; id < hi; id++) {
            char k[16];
            int n = snprintf(k, sizeof(k), "k%06lld", (long long)id);
            struct krev r = {.main = rev, .version = 1};
            assert_int_equal(ix_add_rev(&ix, ix_get(ix.root, k, (size_t)n), k, (size_t)n, &r), 0);
            revs++;
        }
        /* new keys at the top, old ones leave at the bottom */
        for (int j = (int)rnd(4); j > 0; j--, hi++) {
            char k[16];
            int n = snprintf(k, sizeof(k), "k%06lld", (long long)hi);
            struct krev r = {.main = rev, .version = 1};
            assert_int_equal(ix_add_rev(&ix, NULL, k, (size_t)n, &r), 0);
            revs++;
        }
        for (int j = (int)rnd(hi - lo > 40 ? 5 : 1); j > 0 && lo < hi; j--, lo++) {
            char k[16];
            int n = snprintf(k, sizeof(k), "k%06lld", (long long)lo);
            struct keyrec *kr = ix_get(ix.root, k, (size_t)n);
            revs -= kr_count(kr);
            assert_int_equal(ix_drop_revs(&ix, kr, kr_count(kr)), 0);
        }
        if (rnd(10) == 0) {
            /* a dropped batch: readers keep the last version, and keys that
             * got revisions in place get them taken back */
            assert_int_equal(ix_abort(&ix), 0);
            lo = st.compact_rev;
            hi = st.compact_done;
            revs = (int64_t)st.term;
            continue;
        }
        st = (struct state){.rev = rev, .compact_rev = lo, .compact_done = hi, .term = (uint64_t)revs};
        assert_int_equal(ix_prepare(&ix), 0);
        ix_publish(&ix, &st);
    }
    atomic_store(&a.stop, 1);
    pthread_join(t, NULL);
    print_message("the reader checked %ld versions\n", atomic_load(&a.checked));
    assert_int_equal(a.bad, 0);
    assert_true(atomic_load(&a.checked) > 0);
    ix_destroy(&ix);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_bulk_build_orders_keys_however_they_came),
        cmocka_unit_test(test_keys_put_in_order_leave_full_nodes),
        cmocka_unit_test(test_a_keyrec_wastes_at_most_7_bytes_before_its_revisions),
        cmocka_unit_test(test_lease_counts_follow_adds_and_removes_over_many_leases),
        cmocka_unit_test(test_random_batches_agree_with_a_sorted_reference),
        cmocka_unit_test(test_pinned_versions_stay_whole_while_the_writer_publishes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
