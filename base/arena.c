/*
 * arena: the bump allocator (arena.h).
 */
#include "base/arena.h"

#include <stdalign.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct arena_block {
    struct arena_block *next;
    max_align_t data[];
};

#define ALIGN_TO alignof(max_align_t)

void arena_init(struct arena *a, void *buf, size_t buf_len, size_t first_block, size_t max_block)
{
    *a = (struct arena){.first_block = first_block, .max_block = max_block, .buf = buf, .buf_len = buf_len};
    /* the buffer's start may not be aligned: serve only its aligned part */
    if (buf && buf_len) {
        uintptr_t at = ((uintptr_t)buf + ALIGN_TO - 1) & ~(uintptr_t)(ALIGN_TO - 1);
        size_t skip = (size_t)(at - (uintptr_t)buf);
        if (skip < buf_len) {
            a->cur = (char *)at;
            a->end = (char *)buf + buf_len;
        }
    }
}

void arena_free(struct arena *a)
{
    struct arena_block *b = a->blocks;
    while (b) {
        struct arena_block *next = b->next;
        free(b);
        b = next;
    }
    arena_init(a, a->buf, a->buf_len, a->first_block, a->max_block);
}

static void *block_new(struct arena *a, size_t size)
{
    if (size > SIZE_MAX - sizeof(struct arena_block))
        return NULL;
    struct arena_block *b = malloc(sizeof(*b) + size);
    if (!b)
        return NULL;
    b->next = a->blocks;
    a->blocks = b;
    a->allocated += sizeof(*b) + size;
    a->n_blocks++;
    return b->data;
}

void *arena_alloc(struct arena *a, size_t size)
{
    if (size > SIZE_MAX - ALIGN_TO)
        return NULL;
    size_t need = size ? (size + ALIGN_TO - 1) & ~(ALIGN_TO - 1) : ALIGN_TO;
    if (a->cur && (size_t)(a->end - a->cur) >= need) {
        void *p = a->cur;
        a->cur += need;
        return p;
    }
    size_t next = a->next_block ? a->next_block : a->first_block ? a->first_block : ARENA_FIRST_BLOCK;
    size_t max = a->max_block ? a->max_block : ARENA_MAX_BLOCK;
    if (need > next / 2)
        return block_new(a, need); /* a block of its own; the current one stays in use */
    char *p = block_new(a, next);
    if (!p)
        return NULL;
    a->cur = p + need;
    a->end = p + next;
    a->next_block = next < max ? (next * 2 < max ? next * 2 : max) : next;
    return p;
}

void *arena_zalloc(struct arena *a, size_t size)
{
    void *p = arena_alloc(a, size);
    if (p)
        memset(p, 0, size);
    return p;
}

void *arena_grow(struct arena *a, void *arr, size_t n, size_t *cap, size_t elem)
{
    if (n < *cap)
        return arr;
    size_t ncap = *cap ? *cap * 2 : 16;
    if (ncap < *cap || (elem && ncap > SIZE_MAX / elem))
        return NULL;
    void *na = arena_zalloc(a, ncap * elem);
    if (!na)
        return NULL;
    if (n)
        memcpy(na, arr, n * elem);
    *cap = ncap;
    return na;
}

void *arena_dup(struct arena *a, const void *p, size_t n)
{
    if (n == SIZE_MAX)
        return NULL;
    char *d = arena_alloc(a, n + 1);
    if (d) {
        if (n)
            memcpy(d, p, n);
        d[n] = '\0';
    }
    return d;
}
