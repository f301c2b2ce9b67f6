/*
 * base/arena: alignment, geometric blocks, big allocations in blocks of
 * their own, the caller's buffer served first, zeroing, copies, and reuse
 * after a free.  ASan and valgrind check that every block is freed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "base/arena.h"

static void test_a_zeroed_arena_aligns_and_grows_in_a_few_blocks(void **state)
{
    (void)state;
    struct arena a = {0};
    for (int i = 0; i < 10000; i++) {
        size_t n = (size_t)(i % 37) + 1;
        char *q = arena_alloc(&a, n);
        assert_non_null(q);
        assert_int_equal((uintptr_t)q % _Alignof(max_align_t), 0);
        memset(q, 0x5a, n);
    }
    /* about 10000 * 32 bytes, in blocks doubling from 960 bytes to 64 KiB: a handful, not thousands */
    assert_in_range(a.n_blocks, 4, 12);
    arena_free(&a);
    assert_null(a.blocks);
    assert_int_equal(a.allocated, 0);
    assert_int_equal(a.n_blocks, 0);
    arena_free(&a); /* twice is harmless */
}

static void test_a_big_allocation_gets_its_own_block_and_the_current_one_stays(void **state)
{
    (void)state;
    struct arena a;
    arena_init(&a, NULL, 0, 4096, 65536);
    assert_non_null(arena_alloc(&a, 100));
    char *cur = a.cur;
    size_t blocks = a.n_blocks;
    char *big = arena_alloc(&a, 8 << 20);
    assert_non_null(big);
    memset(big, 1, 8 << 20);
    assert_ptr_equal(a.cur, cur);
    assert_int_equal(a.n_blocks, blocks + 1);
    assert_ptr_equal(arena_alloc(&a, 16), cur); /* small ones go on where they were */
    assert_null(arena_alloc(&a, SIZE_MAX - 4));
    assert_null(arena_dup(&a, "", SIZE_MAX));
    arena_free(&a);
}

static void test_the_callers_buffer_is_served_first_and_again_after_a_free(void **state)
{
    (void)state;
    _Alignas(max_align_t) char buf[256];
    struct arena a;
    arena_init(&a, buf + 1, sizeof buf - 1, 0, 0); /* an unaligned start is rounded up */
    char *p = arena_alloc(&a, 200);
    assert_true(p > buf && p + 200 <= buf + sizeof buf);
    assert_int_equal((uintptr_t)p % _Alignof(max_align_t), 0);
    assert_int_equal(a.n_blocks, 0);
    char *q = arena_alloc(&a, 200); /* does not fit: a block */
    assert_true(q < buf || q >= buf + sizeof buf);
    assert_int_equal(a.n_blocks, 1);
    arena_free(&a);
    assert_ptr_equal(arena_alloc(&a, 10), p);
    arena_free(&a);
}

static void test_zalloc_zeroes_and_dup_copies_with_a_nul(void **state)
{
    (void)state;
    struct arena a = {0};
    unsigned char *d = arena_alloc(&a, 64);
    memset(d, 0xff, 64);
    arena_free(&a);
    unsigned char *z = arena_zalloc(&a, 64); /* the same memory, handed out again */
    for (int i = 0; i < 64; i++)
        assert_int_equal(z[i], 0);
    char *s = arena_dup(&a, "hello, world", 5);
    assert_string_equal(s, "hello");
    assert_string_equal(arena_dup(&a, NULL, 0), "");
    /* a copy owns the blocks: free exactly one of them */
    struct arena moved = a;
    arena_free(&moved);
}

/* Pieces of every size class (the first small block, doubling blocks, one-off
 * big blocks) come back zeroed and 16-aligned, and none overlaps another:
 * each keeps the pattern written into it until the arena is freed. */
static void test_pieces_of_every_size_are_zeroed_aligned_and_disjoint(void **state)
{
    (void)state;
    struct arena a = {0};
    enum { N = 600 };
    unsigned char *blk[N];
    size_t len[N];
    uint64_t r = 12345;
    for (int i = 0; i < N; i++) {
        r = r * 6364136223846793005ULL + 1442695040888963407ULL;
        size_t pick = (r >> 33) % 100;
        len[i] = pick < 70 ? 1 + (r >> 40) % 300 : pick < 95 ? 1 + (r >> 40) % 5000 : 30000 + (r >> 40) % 60000;
        blk[i] = arena_zalloc(&a, len[i]);
        assert_non_null(blk[i]);
        assert_int_equal((uintptr_t)blk[i] % 16, 0);
        for (size_t k = 0; k < len[i]; k++)
            assert_int_equal(blk[i][k], 0);
        memset(blk[i], (int)(i & 0xff), len[i]);
    }
    for (int i = 0; i < N; i++)
        for (size_t k = 0; k < len[i]; k++)
            assert_int_equal(blk[i][k], (unsigned char)(i & 0xff));
    arena_free(&a);
    assert_null(a.blocks);
}

static void test_grow_keeps_the_elements_and_doubles_the_room(void **state)
{
    (void)state;
    struct arena a = {0};
    int *v = NULL;
    size_t cap = 0;
    for (int i = 0; i < 1000; i++) {
        int *before = v;
        size_t had = cap;
        v = arena_grow(&a, v, (size_t)i, &cap, sizeof(*v));
        assert_non_null(v);
        if ((size_t)i < had) {
            assert_ptr_equal(v, before); /* room left: the same array */
            assert_int_equal(cap, had);
        } else {
            assert_int_equal(cap, had ? had * 2 : 16);
            for (int j = 0; j < i; j++)
                assert_int_equal(v[j], j); /* moved whole */
            for (size_t j = (size_t)i; j < cap; j++)
                assert_int_equal(v[j], 0); /* the new room is zeroed */
        }
        v[i] = i;
    }
    assert_int_equal(cap, 1024);
    /* a size no arena can hold: NULL, and the capacity is left alone */
    size_t huge = SIZE_MAX / 2 + 1;
    assert_null(arena_grow(&a, v, huge, &huge, 4));
    assert_int_equal(huge, SIZE_MAX / 2 + 1);
    arena_free(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_zeroed_arena_aligns_and_grows_in_a_few_blocks),
        cmocka_unit_test(test_a_big_allocation_gets_its_own_block_and_the_current_one_stays),
        cmocka_unit_test(test_the_callers_buffer_is_served_first_and_again_after_a_free),
        cmocka_unit_test(test_zalloc_zeroes_and_dup_copies_with_a_nul),
        cmocka_unit_test(test_pieces_of_every_size_are_zeroed_aligned_and_disjoint),
        cmocka_unit_test(test_grow_keeps_the_elements_and_doubles_the_room),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
