/*
 * daemon/watch's plain data: shared events, key ranges, filters, a watcher's
 * queue and the rule that cuts it into WatchNext replies (whole revisions,
 * fragments only when a revision is too large).  No locks, no I/O: the
 * callers (watch.c, watch_sync.c) hold the hub lock; test_watch.c drives it
 * directly.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/watch_internal.h"

/* ---------------------------------------------------------------- events */

static size_t kv_bytes(const struct mvcc_kv *kv)
{
    return kv->key.len + kv->value.len;
}

size_t wev_copy_size(const struct mvcc_kv *kv, const struct mvcc_kv *prev)
{
    return sizeof(struct wev) + kv_bytes(kv) + (prev ? kv_bytes(prev) : 0) + 4;
}

/* Copy b to *p (NUL-terminated one past len, as mvcc's strings are) and move *p on. */
static struct mvcc_buf put_buf(char **p, struct mvcc_buf b)
{
    struct mvcc_buf out = {*p, b.len};
    if (b.len)
        memcpy(*p, b.data, b.len);
    (*p)[b.len] = '\0';
    *p += b.len + 1;
    return out;
}

struct wev *wev_new(enum mvcc_event_type type, const struct mvcc_kv *kv, const struct mvcc_kv *prev)
{
    struct wev *e = malloc(wev_copy_size(kv, prev));
    if (!e)
        return NULL;
    char *p = (char *)(e + 1);
    e->refs = 1;
    e->rev = kv->mod_revision;
    e->type = type;
    if (type == MVCC_EVENT_DELETE) {
        /* a delete says only which key and when, whichever path it came by (apply or history) */
        e->kv = (struct mvcc_kv){.mod_revision = kv->mod_revision};
        e->kv.key = put_buf(&p, kv->key);
        e->kv.value = put_buf(&p, (struct mvcc_buf){NULL, 0});
    } else {
        e->kv = *kv;
        e->kv.key = put_buf(&p, kv->key);
        e->kv.value = put_buf(&p, kv->value);
    }
    e->has_prev = prev != NULL;
    if (prev) {
        e->prev = *prev;
        e->prev.key = put_buf(&p, prev->key);
        e->prev.value = put_buf(&p, prev->value);
    } else {
        memset(&e->prev, 0, sizeof e->prev);
    }
    e->size = kv_bytes(&e->kv) + WATCH_EVENT_OVERHEAD;
    e->prev_size = prev ? kv_bytes(prev) + WATCH_EVENT_OVERHEAD : 0;
    return e;
}

void wev_ref(struct wev *e)
{
    __atomic_add_fetch(&e->refs, 1, __ATOMIC_RELAXED);
}

void wev_unref(struct wev *e)
{
    if (e && __atomic_sub_fetch(&e->refs, 1, __ATOMIC_ACQ_REL) == 0)
        free(e);
}

void wbatch_free(struct wbatch *b)
{
    if (!b)
        return;
    for (size_t i = 0; i < b->n; i++)
        wev_unref(b->ev[i]);
    free(b->ev);
    free(b);
}

/* ---------------------------------------------------------------- ranges */

int wrange_init(struct wrange *r, const void *key, size_t klen, const void *end, size_t elen)
{
    memset(r, 0, sizeof *r);
    r->key = malloc(klen ? klen : 1);
    r->end = malloc(elen ? elen : 1);
    if (!r->key || !r->end) {
        wrange_free(r);
        return -ENOMEM;
    }
    if (klen)
        memcpy(r->key, key, klen);
    if (elen)
        memcpy(r->end, end, elen);
    r->klen = klen;
    r->elen = elen;
    return 0;
}

void wrange_free(struct wrange *r)
{
    free(r->key);
    free(r->end);
    memset(r, 0, sizeof *r);
}

/* memcmp order on byte strings, the shorter first on a common prefix (SQLite's BLOB order). */
static int bytes_cmp(const void *a, size_t alen, const void *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    int c = n ? memcmp(a, b, n) : 0;
    if (c)
        return c;
    return alen < blen ? -1 : alen > blen;
}

bool wrange_match(const struct wrange *r, const void *key, size_t klen)
{
    if (r->elen == 0)
        return klen == r->klen && (klen == 0 || !memcmp(key, r->key, klen));
    if (bytes_cmp(key, klen, r->key, r->klen) < 0)
        return false;
    if (r->elen == 1 && r->end[0] == 0)
        return true; /* "\0": every key from key on */
    return bytes_cmp(key, klen, r->end, r->elen) < 0;
}

bool wfilter_match(const struct wfilter *f, const struct wev *e)
{
    if (e->type == MVCC_EVENT_PUT ? f->noput : f->nodelete)
        return false;
    return wrange_match(&f->range, e->kv.key.data, e->kv.key.len);
}

/* ---------------------------------------------------------------- queues */

int wq_reserve(struct wq *q, size_t extra)
{
    if (q->n + extra <= q->cap)
        return 0;
    size_t cap = q->cap ? q->cap : 16;
    while (cap < q->n + extra)
        cap *= 2;
    struct wev **v = malloc(cap * sizeof(*v));
    if (!v)
        return -ENOMEM;
    for (size_t i = 0; i < q->n; i++)
        v[i] = wq_at(q, i);
    free(q->v);
    q->v = v;
    q->cap = cap;
    q->head = 0;
    return 0;
}

int wq_push(struct wq *q, struct wev *e, size_t bytes)
{
    if (wq_reserve(q, 1) < 0)
        return -ENOMEM;
    q->v[(q->head + q->n) % q->cap] = e;
    q->n++;
    q->bytes += bytes;
    return 0;
}

struct wev *wq_pop(struct wq *q, size_t bytes)
{
    if (!q->n)
        return NULL;
    struct wev *e = q->v[q->head];
    q->head = (q->head + 1) % q->cap;
    q->n--;
    q->bytes -= bytes < q->bytes ? bytes : q->bytes;
    if (!q->n) {
        q->head = 0;
        q->bytes = 0;
    }
    return e;
}

void wq_clear(struct wq *q)
{
    for (size_t i = 0; i < q->n; i++)
        wev_unref(wq_at(q, i));
    free(q->v);
    memset(q, 0, sizeof *q);
}

size_t wq_plan(const struct wq *q, int64_t complete_below, size_t max_bytes, bool prev_kv, bool fragment,
               size_t frag_min, bool *is_fragment)
{
    size_t taken = 0, bytes = 0, i = 0;
    *is_fragment = false;
    while (i < q->n) {
        int64_t rev = wq_at(q, i)->rev;
        size_t j = i, group = 0;
        while (j < q->n && wq_at(q, j)->rev == rev)
            group += wev_bytes(wq_at(q, j++), prev_kv);
        bool complete = rev < complete_below;
        if (complete && (taken == 0 ? !(fragment && group > max_bytes) : bytes + group <= max_bytes)) {
            taken = j;
            bytes += group;
            i = j;
            continue;
        }
        if (taken > 0)
            break;
        /* Nothing taken yet: a revision too large for one reply, or one still being read. */
        if (!fragment || (!complete && group < frag_min))
            return 0;
        size_t k = i;
        while (k < j && (k == i || bytes + wev_bytes(wq_at(q, k), prev_kv) <= max_bytes))
            bytes += wev_bytes(wq_at(q, k++), prev_kv);
        *is_fragment = k < j || !complete;
        return k;
    }
    return taken;
}

int64_t wq_progress(const struct wq *q, size_t n, int64_t complete_below)
{
    if (n < q->n) {
        int64_t r = wq_at(q, n)->rev - 1;
        return r < complete_below - 1 ? r : complete_below - 1;
    }
    return complete_below - 1;
}
