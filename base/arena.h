/*
 * arena: a bump allocator for many small allocations that die together
 * (one read's rows, one apply batch, one request or reply and everything
 * protobuf-c unpacks into it).  Allocating is a pointer bump; freeing is one
 * free() per block, however many allocations were made.
 *
 * Blocks come from malloc: the first is first_block bytes, each next one
 * twice the last, up to max_block.  An allocation over half the next block's
 * size gets a block of its own, and the block being filled stays in use, so
 * a few big values cost a malloc each and no room.  An optional buffer from
 * the caller (on the stack, or inside a longer-lived struct) serves the first
 * bytes, so a small job allocates nothing.
 *
 * A zeroed struct arena ({0}) is a valid empty arena with the default block
 * sizes and no buffer.  Such an arena may be copied by value: the copy owns
 * the blocks (free exactly one of them).  One with a caller buffer must not
 * outlive the buffer.  Not thread-safe.
 */
#ifndef CAIRN_BASE_ARENA_H
#define CAIRN_BASE_ARENA_H

#include <stddef.h>

/* Defaults for a zeroed arena: the first block, with its header, stays
 * under 1 KiB, the size glibc's per-thread cache serves without a lock. */
#define ARENA_FIRST_BLOCK 960
#define ARENA_MAX_BLOCK ((size_t)64 * 1024)

struct arena_block; /* private to arena.c */

struct arena {
    char *cur, *end;            /* free space in the block being filled */
    struct arena_block *blocks; /* malloc'ed blocks, newest first */
    size_t first_block;         /* size of the first block; 0: ARENA_FIRST_BLOCK */
    size_t next_block;          /* size of the next block; 0: first_block */
    size_t max_block;           /* 0: ARENA_MAX_BLOCK */
    char *buf;                  /* the caller's buffer, or NULL */
    size_t buf_len;
    size_t allocated;           /* bytes obtained from malloc, for logs and tests */
    size_t n_blocks;            /* mallocs behind it */
};

/*
 * arena_init: an empty arena serving buf (buf_len bytes, may be NULL/0)
 * first, then blocks of first_block doubling up to max_block bytes (0 for
 * either: the defaults).
 */
void arena_init(struct arena *a, void *buf, size_t buf_len, size_t first_block, size_t max_block);

/* arena_alloc: size bytes aligned for any type, not zeroed; NULL if out of
 * memory (or size overflows).  Lives until arena_free. */
void *arena_alloc(struct arena *a, size_t size);

/* arena_zalloc: the same, zeroed. */
void *arena_zalloc(struct arena *a, size_t size);

/* arena_dup: a copy of n bytes at p followed by a NUL byte; NULL if out of memory. */
void *arena_dup(struct arena *a, const void *p, size_t n);

/*
 * arena_grow: room for one more element in a growable array in the arena,
 * n elements of elem bytes used of *cap: arr itself while n < *cap, else a
 * zeroed copy with twice the room (16 elements at first; the old copy is
 * left to the arena) and *cap updated; NULL if out of memory.
 */
void *arena_grow(struct arena *a, void *arr, size_t n, size_t *cap, size_t elem);

/* arena_free: free every block; every pointer into the arena dies.  The
 * arena is left empty, with its buffer and sizes, and may be used again.
 * Safe to call twice. */
void arena_free(struct arena *a);

#endif
