/*
 * storage/mvcc key index: a copy-on-write B+tree of keys, each with its
 * revisions, versioned per batch and read without locks (mvcc_index.h says
 * how).  It owns the trees, the published versions and the memory the
 * writer retires; it knows nothing of SQLite or of etcd's semantics.
 */
#include "storage/mvcc_index.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* 32 children per inner node, 32 keys per leaf: 4 levels for 1M keys, and a
 * path copy moves about 1 KiB per level. */
#define LEAF_MAX 32
#define INNER_MAX 32
/* Bulk-built nodes are 3/4 full so the first inserts do not split them all. */
#define BULK_FILL 24

struct ixnode {
    uint64_t gen;  /* the version that created it: changed in place only while it is the working one */
    uint32_t n;    /* keys (leaf) or children (inner) */
    uint16_t leaf;
    uint16_t kept; /* kept all its entries when it last split (split_point) */
};

/*
 * A leaf keeps, beside each key's keyrec, 8 bytes of the key: those after
 * the first `skip` bytes, which every key of the leaf shares.  A search
 * compares these heads and reads a keyrec (a cache miss: keyrecs are
 * scattered) only on a tie and for the final match.  skip need not be the
 * longest common prefix, only a common one; it shrinks when a key that does
 * not share it arrives.
 */
#define PFX_MAX 16
struct ixleaf {
    struct ixnode h;
    uint32_t skip;
    uint32_t pad_;
    unsigned char pfx[PFX_MAX];       /* the shared bytes, if skip <= PFX_MAX */
    uint64_t head[LEAF_MAX + 1];      /* key bytes skip..skip+7, big-endian, zero-padded */
    struct keyrec *kr[LEAF_MAX + 1];  /* one spare: a leaf splits after it overflows */
};

/* A separator: keys of child i are >= sep[i-1] and < sep[i]. */
struct ixsep {
    uint32_t len;
    unsigned char b[];
};

/* Inner nodes keep heads of their separators the same way leaves do. */
struct ixinner {
    struct ixnode h;
    uint32_t skip;
    uint32_t pad_;
    unsigned char pfx[PFX_MAX];
    uint64_t head[INNER_MAX];
    struct ixsep *sep[INNER_MAX];
    struct ixnode *child[INNER_MAX + 1];
};

static int keycmp(const void *a, size_t al, const void *b, size_t bl)
{
    size_t n = al < bl ? al : bl;
    int c = n ? memcmp(a, b, n) : 0;
    return c ? c : (al > bl) - (al < bl);
}

long kr_at(const struct keyrec *kr, uint32_t n, int64_t rev)
{
    const struct krev *r = kr_revs(kr);
    if (n == 0)
        return -1;
    if (r[n - 1].main <= rev)
        return (long)n - 1; /* reads at the current revision */
    long lo = 0, hi = (long)n - 1;
    while (lo < hi) {
        long mid = (lo + hi) / 2;
        if (r[mid].main <= rev)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo - 1;
}

static uint64_t head_of(const unsigned char *k, size_t klen, uint32_t skip)
{
    uint64_t h = 0;
    if (klen >= (size_t)skip + 8) {
        memcpy(&h, k + skip, 8);
        return __builtin_bswap64(h);
    }
    for (size_t i = skip; i < klen; i++)
        h |= (uint64_t)k[i] << (56 - 8 * (i - skip));
    return h;
}

static size_t common_prefix(const unsigned char *a, size_t al, const unsigned char *b, size_t bl)
{
    size_t i = 0, n = al < bl ? al : bl;
    while (i < n && a[i] == b[i])
        i++;
    return i;
}

/* The bytes every key of l starts with (l->skip of them; l not empty). */
static const unsigned char *leaf_pfx(const struct ixleaf *l)
{
    return l->skip <= PFX_MAX ? l->pfx : l->kr[0]->key;
}

/* Make skip the shared prefix length (pfx: its bytes) and redo every head. */
static void leaf_reskip(struct ixleaf *l, uint32_t skip, const unsigned char *pfx)
{
    l->skip = skip;
    if (skip <= PFX_MAX)
        memmove(l->pfx, pfx, skip);
    for (uint32_t i = 0; i < l->h.n; i++)
        l->head[i] = head_of(l->kr[i]->key, l->kr[i]->klen, skip);
}

/* Set the shared prefix to the longest one of l's keys (first and last). */
static void leaf_fit(struct ixleaf *l)
{
    uint32_t n = l->h.n;
    if (n == 0) {
        l->skip = 0;
        return;
    }
    const struct keyrec *a = l->kr[0], *z = l->kr[n - 1];
    leaf_reskip(l, (uint32_t)common_prefix(a->key, a->klen, z->key, z->klen), a->key);
}

/*
 * First slot of l with key >= key; *eq if it is key.  *shares (may be NULL)
 * tells whether key starts with the leaf's shared prefix.
 */
static uint32_t leaf_search(const struct ixleaf *l, const void *key, size_t klen, bool *eq,
                            bool *shares)
{
    uint32_t n = l->h.n, lo = 0, hi = n;
    *eq = false;
    if (shares)
        *shares = true;
    if (n == 0)
        return 0;
    size_t m = klen < l->skip ? klen : l->skip;
    int c = m ? memcmp(key, leaf_pfx(l), m) : 0;
    if (c == 0 && klen < l->skip)
        c = -1; /* a proper prefix of the shared bytes: below every key */
    if (c != 0) {
        if (shares)
            *shares = false;
        return c < 0 ? 0 : n;
    }
    uint64_t hk = head_of(key, klen, l->skip);
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        int d = l->head[mid] < hk ? -1 : l->head[mid] > hk;
        if (d == 0)
            d = keycmp(l->kr[mid]->key, l->kr[mid]->klen, key, klen);
        if (d < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *eq = lo < n && l->head[lo] == hk && keycmp(l->kr[lo]->key, l->kr[lo]->klen, key, klen) == 0;
    return lo;
}

static uint32_t leaf_lower(const struct ixleaf *l, const void *key, size_t klen, bool *eq)
{
    return leaf_search(l, key, klen, eq, NULL);
}

/* Put kr (not in l) at pos, as leaf_search found it. */
static void leaf_insert(struct ixleaf *l, uint32_t pos, struct keyrec *kr, bool shares)
{
    uint32_t n = l->h.n;
    size_t skip = l->skip;
    if (!shares)
        skip = common_prefix(kr->key, kr->klen, leaf_pfx(l), l->skip);
    memmove(&l->kr[pos + 1], &l->kr[pos], (n - pos) * sizeof(l->kr[0]));
    memmove(&l->head[pos + 1], &l->head[pos], (n - pos) * sizeof(l->head[0]));
    l->kr[pos] = kr;
    l->h.n = n + 1;
    if (shares)
        l->head[pos] = head_of(kr->key, kr->klen, l->skip);
    else
        leaf_reskip(l, (uint32_t)skip, kr->key);
}

static void leaf_remove(struct ixleaf *l, uint32_t pos)
{
    uint32_t n = --l->h.n;
    memmove(&l->kr[pos], &l->kr[pos + 1], (n - pos) * sizeof(l->kr[0]));
    memmove(&l->head[pos], &l->head[pos + 1], (n - pos) * sizeof(l->head[0]));
    if (n == 0)
        l->skip = 0;
}

static const unsigned char *inner_pfx(const struct ixinner *in)
{
    return in->skip <= PFX_MAX ? in->pfx : in->sep[0]->b;
}

/* Make skip the separators' shared prefix length and redo every head. */
static void inner_reskip(struct ixinner *in, uint32_t skip, const unsigned char *pfx)
{
    in->skip = skip;
    if (skip <= PFX_MAX)
        memmove(in->pfx, pfx, skip);
    for (uint32_t i = 0; i + 1 < in->h.n; i++)
        in->head[i] = head_of(in->sep[i]->b, in->sep[i]->len, skip);
}

static void inner_fit(struct ixinner *in)
{
    uint32_t n = in->h.n - 1;
    if (n == 0) {
        in->skip = 0;
        return;
    }
    const struct ixsep *a = in->sep[0], *z = in->sep[n - 1];
    inner_reskip(in, (uint32_t)common_prefix(a->b, a->len, z->b, z->len), a->b);
}

/* The child of in whose range holds key: the number of separators <= key. */
static uint32_t inner_child(const struct ixinner *in, const void *key, size_t klen)
{
    uint32_t n = in->h.n - 1, lo = 0, hi = n;
    if (n == 0)
        return 0;
    size_t m = klen < in->skip ? klen : in->skip;
    int c = m ? memcmp(key, inner_pfx(in), m) : 0;
    if (c == 0 && klen < in->skip)
        c = -1;
    if (c != 0)
        return c < 0 ? 0 : n;
    uint64_t hk = head_of(key, klen, in->skip);
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        int d = in->head[mid] < hk ? -1 : in->head[mid] > hk;
        if (d == 0)
            d = keycmp(in->sep[mid]->b, in->sep[mid]->len, key, klen);
        if (d <= 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Put sep at i and child at i + 1 (after a split of child i). */
static void inner_insert(struct ixinner *in, uint32_t i, struct ixsep *sep, struct ixnode *child)
{
    uint32_t n = in->h.n; /* children */
    size_t skip = n < 2 ? 0 : common_prefix(sep->b, sep->len, inner_pfx(in), in->skip);
    bool shares = skip == in->skip;
    memmove(&in->sep[i + 1], &in->sep[i], (n - 1 - i) * sizeof(in->sep[0]));
    memmove(&in->head[i + 1], &in->head[i], (n - 1 - i) * sizeof(in->head[0]));
    memmove(&in->child[i + 2], &in->child[i + 1], (n - 1 - i) * sizeof(in->child[0]));
    in->sep[i] = sep;
    in->child[i + 1] = child;
    in->h.n = n + 1;
    if (n < 2)
        inner_fit(in); /* its first separator */
    else if (shares)
        in->head[i] = head_of(sep->b, sep->len, in->skip);
    else
        inner_reskip(in, (uint32_t)skip, sep->b);
}

/* --- reading ---------------------------------------------------------------------- */

struct keyrec *ix_get(const struct ixnode *n, const void *key, size_t klen)
{
    while (!n->leaf)
        n = ((const struct ixinner *)n)->child[inner_child((const struct ixinner *)n, key, klen)];
    bool eq;
    uint32_t pos = leaf_lower((const struct ixleaf *)n, key, klen, &eq);
    return eq ? ((const struct ixleaf *)n)->kr[pos] : NULL;
}

void ix_seek(struct ixiter *it, const struct ixnode *n, const void *key, size_t klen)
{
    int d = 0;
    while (!n->leaf) {
        const struct ixinner *in = (const struct ixinner *)n;
        uint32_t i = klen ? inner_child(in, key, klen) : 0;
        it->node[d] = n;
        it->idx[d++] = (int)i;
        n = in->child[i];
    }
    bool eq;
    it->node[d] = n;
    it->idx[d] = klen ? (int)leaf_lower((const struct ixleaf *)n, key, klen, &eq) : 0;
    it->depth = d + 1;
}

struct keyrec *ix_next(struct ixiter *it)
{
    while (it->depth > 0) {
        int d = it->depth - 1;
        const struct ixleaf *l = (const struct ixleaf *)it->node[d];
        if ((uint32_t)it->idx[d] < l->h.n)
            return l->kr[it->idx[d]++];
        /* climb to the nearest ancestor with a next child, then down its left edge */
        int up = d - 1;
        while (up >= 0 && (uint32_t)it->idx[up] + 1 >= it->node[up]->n)
            up--;
        if (up < 0) {
            it->depth = 0;
            return NULL;
        }
        it->idx[up]++;
        const struct ixnode *n = ((const struct ixinner *)it->node[up])->child[it->idx[up]];
        d = up + 1;
        while (!n->leaf) {
            it->node[d] = n;
            it->idx[d++] = 0;
            n = ((const struct ixinner *)n)->child[0];
        }
        it->node[d] = n;
        it->idx[d] = 0;
        it->depth = d + 1;
    }
    return NULL;
}

/* --- pins and reclamation ------------------------------------------------------------ */

const struct ixver *ix_pin(struct ix *ix, struct ixpin *p)
{
    /* Store the pin, then load the version (both sequentially consistent):
     * either the writer's reclaim scan sees the pin, or this load sees a
     * version published before that scan, whose objects it did not free. */
    atomic_store(&p->seq, atomic_load(&ix->cur_seq));
    return atomic_load(&ix->cur);
}

void ix_unpin(struct ixpin *p)
{
    atomic_store_explicit(&p->seq, 0, memory_order_release);
}

void ix_pin_register(struct ix *ix, struct ixpin *p)
{
    atomic_init(&p->seq, 0);
    pthread_mutex_lock(&ix->pins_mu);
    p->prev = NULL;
    p->next = ix->pins;
    if (ix->pins)
        ix->pins->prev = p;
    ix->pins = p;
    pthread_mutex_unlock(&ix->pins_mu);
}

void ix_pin_unregister(struct ix *ix, struct ixpin *p)
{
    pthread_mutex_lock(&ix->pins_mu);
    if (p->prev)
        p->prev->next = p->next;
    else
        ix->pins = p->next;
    if (p->next)
        p->next->prev = p->prev;
    pthread_mutex_unlock(&ix->pins_mu);
}

/* Free what every pinned reader is past: an object retired with tag t is
 * unreachable from versions >= t, so it goes once every pin is 0 or >= t. */
static void reclaim(struct ix *ix)
{
    uint64_t min = UINT64_MAX;
    pthread_mutex_lock(&ix->pins_mu);
    for (struct ixpin *p = ix->pins; p; p = p->next) {
        uint64_t s = atomic_load(&p->seq);
        if (s && s < min)
            min = s;
    }
    pthread_mutex_unlock(&ix->pins_mu);
    while (ix->qn && ix->q[ix->qhead].tag <= min) {
        free(ix->q[ix->qhead].p);
        ix->qhead++;
        ix->qn--;
    }
    if (ix->qn == 0)
        ix->qhead = 0;
}

/* --- the writer's allocations ------------------------------------------------------------ */

static int vec_push(struct ptrvec *v, void *p)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 256;
        void **nv = realloc(v->v, cap * sizeof(*nv));
        if (!nv)
            return -ENOMEM;
        v->v = nv;
        v->cap = cap;
    }
    v->v[v->n++] = p;
    return 0;
}

/* Memory for the working version: freed if the batch is dropped. */
static void *wnew(struct ix *ix, size_t size)
{
    void *p = malloc(size);
    if (p && vec_push(&ix->created, p) < 0) {
        free(p);
        p = NULL;
    }
    return p;
}

static void *walloc(void *ix, size_t size)
{
    return wnew(ix, size);
}

/* p is unreachable from the working version (it may still be from published ones). */
static int retire(struct ix *ix, void *p)
{
    return vec_push(&ix->retired, p);
}

/* The working version's own copy of n. */
static struct ixnode *cow(struct ix *ix, struct ixnode *n)
{
    if (n->gen == ix->seq)
        return n;
    struct ixnode *c = wnew(ix, n->leaf ? sizeof(struct ixleaf) : sizeof(struct ixinner));
    if (!c)
        return NULL;
    if (n->leaf) {
        const struct ixleaf *src = (const struct ixleaf *)n;
        struct ixleaf *dst = (struct ixleaf *)c;
        memcpy(dst, src, offsetof(struct ixleaf, head));
        memcpy(dst->head, src->head, n->n * sizeof(dst->head[0]));
        memcpy(dst->kr, src->kr, n->n * sizeof(dst->kr[0]));
    } else {
        const struct ixinner *src = (const struct ixinner *)n;
        struct ixinner *dst = (struct ixinner *)c;
        memcpy(dst, src, offsetof(struct ixinner, head));
        memcpy(dst->head, src->head, (n->n - 1) * sizeof(dst->head[0]));
        memcpy(dst->sep, src->sep, (n->n - 1) * sizeof(dst->sep[0]));
        memcpy(dst->child, src->child, n->n * sizeof(dst->child[0]));
    }
    c->gen = ix->seq;
    return retire(ix, n) < 0 ? NULL : c;
}

static struct ixleaf *leaf_new(void *(*alloc)(void *, size_t), void *ctx, uint64_t gen)
{
    struct ixleaf *l = alloc(ctx, sizeof(*l));
    if (l) {
        l->h.gen = gen;
        l->h.n = 0;
        l->h.leaf = 1;
        l->h.kept = 0;
        l->skip = 0;
        l->pad_ = 0;
    }
    return l;
}

static struct ixinner *inner_new(void *(*alloc)(void *, size_t), void *ctx, uint64_t gen)
{
    struct ixinner *in = alloc(ctx, sizeof(*in));
    if (in) {
        in->h.gen = gen;
        in->h.n = 0;
        in->h.leaf = 0;
        in->h.kept = 0;
        in->skip = 0;
        in->pad_ = 0;
    }
    return in;
}

static void *plain_alloc(void *ctx, size_t size)
{
    (void)ctx;
    return malloc(size);
}

/* The shortest prefix of b that is above a (a < b): short separators. */
static struct ixsep *sep_between(void *(*alloc)(void *, size_t), void *ctx,
                                 const struct keyrec *a, const struct keyrec *b)
{
    size_t i = 0, m = a->klen < b->klen ? a->klen : b->klen;
    while (i < m && a->key[i] == b->key[i])
        i++;
    size_t len = i + 1 <= b->klen ? i + 1 : b->klen;
    struct ixsep *s = alloc(ctx, sizeof(*s) + len);
    if (s) {
        s->len = (uint32_t)len;
        memcpy(s->b, b->key, len);
    }
    return s;
}

static void shape_of(const struct ixnode *n, int depth, struct ixshape *out)
{
    if (depth > out->depth)
        out->depth = depth;
    if (n->leaf) {
        out->leaves++;
        out->keys += n->n;
        out->bytes += sizeof(struct ixleaf);
        return;
    }
    const struct ixinner *in = (const struct ixinner *)n;
    out->inners++;
    out->bytes += sizeof(struct ixinner);
    for (uint32_t i = 0; i < n->n; i++) {
        if (i > 0)
            out->bytes += sizeof(struct ixsep) + in->sep[i - 1]->len;
        shape_of(in->child[i], depth + 1, out);
    }
}

void ix_shape(const struct ixnode *root, struct ixshape *out)
{
    *out = (struct ixshape){0};
    shape_of(root, 1, out);
}

/* --- tree changes on the working version ------------------------------------------------ */

struct split {
    struct ixsep *sep;   /* the new right sibling's lower bound */
    struct ixnode *right;
};

/*
 * Where node x of n entries (keys, or children), overflowed by the one at
 * newcomer, splits: the left node keeps entries [0, h).  In halves, except
 * when the newcomer went to an end: then it alone starts a node and the
 * other keeps all x had.  Keys put in ascending (or descending) order, a
 * load or names with a counter, thus leave full nodes behind them instead of
 * half-full ones: 1M keys put in order take 19 MB of nodes instead of 40.
 * (Keys that come shuffled within a window, as a load with 256 puts in
 * flight sends them, fill nodes about 2/3 full either way.)
 *
 * The node that kept everything is marked, and splits in halves the next
 * time.  Otherwise keys put in descending order just above a full node's
 * last key (each one lands at its end, below the one before it) would split
 * off a one-key node each.  A key of a random load that lands at an end by
 * chance costs a one-key node, which fills like any other.
 */
static uint32_t split_point(const struct ixnode *x, uint32_t newcomer)
{
    uint32_t n = x->n;
    if (!x->kept && newcomer == n - 1)
        return n - 1;
    if (!x->kept && newcomer == 0)
        return 1;
    return n / 2;
}

/* Mark the halves of a split at h (x: the left one, y: the right one). */
static void split_mark(struct ixnode *x, struct ixnode *y, uint32_t h)
{
    x->kept = y->n == 1;
    y->kept = h == 1;
}

static int split_leaf(struct ix *ix, struct ixleaf *l, uint32_t h, struct split *sp)
{
    struct ixleaf *r = leaf_new(walloc, ix, ix->seq);
    if (!r)
        return -ENOMEM;
    r->h.n = l->h.n - h;
    memcpy(r->kr, l->kr + h, r->h.n * sizeof(r->kr[0]));
    l->h.n = h;
    split_mark(&l->h, &r->h, h);
    /* each half may share a longer prefix: longer prefixes, fewer ties */
    leaf_fit(l);
    leaf_fit(r);
    if (!(sp->sep = sep_between(walloc, ix, l->kr[h - 1], r->kr[0])))
        return -ENOMEM;
    sp->right = &r->h;
    return 0;
}

/* Children [0, h) stay; separator h - 1 moves up.  Either node may have
 * one child and no separator. */
static int split_inner(struct ix *ix, struct ixinner *in, uint32_t h, struct split *sp)
{
    struct ixinner *r = inner_new(walloc, ix, ix->seq);
    if (!r)
        return -ENOMEM;
    uint32_t n = in->h.n;
    r->h.n = n - h;
    memcpy(r->child, in->child + h, (n - h) * sizeof(r->child[0]));
    memcpy(r->sep, in->sep + h, (n - h - 1) * sizeof(r->sep[0]));
    sp->sep = in->sep[h - 1]; /* moves up */
    sp->right = &r->h;
    in->h.n = h;
    split_mark(&in->h, &r->h, h);
    inner_fit(in);
    inner_fit(r);
    return 0;
}

static int ins(struct ix *ix, struct ixnode **slot, const void *key, size_t klen, struct keyrec *kr,
               struct split *sp)
{
    struct ixnode *n = cow(ix, *slot);
    if (!n)
        return -ENOMEM;
    *slot = n;
    sp->right = NULL;
    if (n->leaf) {
        struct ixleaf *l = (struct ixleaf *)n;
        bool eq, shares;
        uint32_t pos = leaf_search(l, key, klen, &eq, &shares);
        if (eq)
            return -EEXIST;
        leaf_insert(l, pos, kr, shares);
        return n->n > LEAF_MAX ? split_leaf(ix, l, split_point(n, pos), sp) : 0;
    }
    struct ixinner *in = (struct ixinner *)n;
    uint32_t i = inner_child(in, key, klen);
    struct split cs;
    int rc = ins(ix, &in->child[i], key, klen, kr, &cs);
    if (rc < 0 || !cs.right)
        return rc;
    inner_insert(in, i, cs.sep, cs.right);
    /* the child that will take the next key of a run: the right half of
     * child i if the run ascends, the left one if it descends */
    return n->n > INNER_MAX ? split_inner(ix, in, split_point(n, i == 0 ? 0 : i + 1), sp) : 0;
}

static int tree_insert(struct ix *ix, struct ixnode **root, const void *key, size_t klen,
                       struct keyrec *kr)
{
    struct split sp;
    int rc = ins(ix, root, key, klen, kr, &sp);
    if (rc < 0 || !sp.right)
        return rc;
    struct ixinner *nr = inner_new(walloc, ix, ix->seq);
    if (!nr)
        return -ENOMEM;
    nr->h.n = 2;
    nr->child[0] = *root;
    nr->child[1] = sp.right;
    nr->sep[0] = sp.sep;
    inner_fit(nr);
    *root = &nr->h;
    return 0;
}

/* Point key's slot at kr (the key is in the tree). */
static int tree_replace(struct ix *ix, struct ixnode **slot, const void *key, size_t klen,
                        struct keyrec *kr)
{
    for (;;) {
        struct ixnode *n = cow(ix, *slot);
        if (!n)
            return -ENOMEM;
        *slot = n;
        if (n->leaf) {
            bool eq;
            uint32_t pos = leaf_lower((struct ixleaf *)n, key, klen, &eq);
            if (!eq)
                return -ENOENT;
            ((struct ixleaf *)n)->kr[pos] = kr;
            return 0;
        }
        struct ixinner *in = (struct ixinner *)n;
        slot = &in->child[inner_child(in, key, klen)];
    }
}

/* Remove key; *empty if the subtree has nothing left (the parent drops it).
 * Nodes are not merged: a sparse tree is still correct, and the next
 * open rebuilds it packed. */
static int rem(struct ix *ix, struct ixnode **slot, const void *key, size_t klen, bool *empty)
{
    struct ixnode *n = cow(ix, *slot);
    if (!n)
        return -ENOMEM;
    *slot = n;
    *empty = false;
    if (n->leaf) {
        struct ixleaf *l = (struct ixleaf *)n;
        bool eq;
        uint32_t pos = leaf_lower(l, key, klen, &eq);
        if (!eq)
            return -ENOENT;
        leaf_remove(l, pos);
        *empty = n->n == 0;
        return 0;
    }
    struct ixinner *in = (struct ixinner *)n;
    uint32_t i = inner_child(in, key, klen);
    bool ce;
    int rc = rem(ix, &in->child[i], key, klen, &ce);
    if (rc < 0 || !ce)
        return rc;
    if (retire(ix, in->child[i]) < 0)
        return -ENOMEM;
    if (n->n == 1) {
        *empty = true;
        return 0;
    }
    /* child i's range joins its left neighbour's (or its right one's if it is first) */
    uint32_t s = i > 0 ? i - 1 : 0;
    if (retire(ix, in->sep[s]) < 0)
        return -ENOMEM;
    memmove(&in->sep[s], &in->sep[s + 1], (n->n - 2 - s) * sizeof(in->sep[0]));
    memmove(&in->head[s], &in->head[s + 1], (n->n - 2 - s) * sizeof(in->head[0]));
    memmove(&in->child[i], &in->child[i + 1], (n->n - 1 - i) * sizeof(in->child[0]));
    n->n--;
    if (n->n == 1)
        in->skip = 0; /* no separator left */
    return 0;
}

static int tree_remove(struct ix *ix, struct ixnode **root, const void *key, size_t klen)
{
    bool empty;
    int rc = rem(ix, root, key, klen, &empty);
    if (rc < 0)
        return rc;
    if (empty && !(*root)->leaf) {
        struct ixleaf *l = leaf_new(walloc, ix, ix->seq);
        if (!l || retire(ix, *root) < 0)
            return -ENOMEM;
        *root = &l->h;
    }
    while (!(*root)->leaf && (*root)->n == 1) {
        struct ixnode *only = ((struct ixinner *)*root)->child[0];
        if (retire(ix, *root) < 0)
            return -ENOMEM;
        *root = only;
    }
    return 0;
}

/* --- keys and their revisions ----------------------------------------------------------- */

static size_t kr_size(size_t klen, uint32_t cap)
{
    return kr_revs_at(klen) + cap * sizeof(struct krev);
}

static struct keyrec *kr_alloc(void *(*alloc)(void *, size_t), void *ctx, const void *key,
                               size_t klen, uint32_t cap, uint64_t gen)
{
    struct keyrec *kr = alloc(ctx, kr_size(klen, cap));
    if (kr) {
        kr->gen = gen;
        atomic_init(&kr->n, 0);
        kr->cap = cap;
        kr->klen = (uint32_t)klen;
        if (key && klen)
            memcpy(kr->key, key, klen);
    }
    return kr;
}

static int log_append(struct ix *ix, struct keyrec *kr, uint32_t n)
{
    if (ix->nlog == ix->caplog) {
        size_t cap = ix->caplog ? ix->caplog * 2 : 64;
        struct ixlog *nl = realloc(ix->log, cap * sizeof(*nl));
        if (!nl)
            return -ENOMEM;
        ix->log = nl;
        ix->caplog = cap;
    }
    ix->log[ix->nlog++] = (struct ixlog){kr, n};
    return 0;
}

int ix_add_rev(struct ix *ix, struct keyrec *kr, const void *key, size_t klen, const struct krev *r)
{
    if (ix->poisoned)
        return -EIO;
    /* the live-key count moves when the newest revision turns live or dead */
    uint32_t had = kr ? atomic_load_explicit(&kr->n, memory_order_relaxed) : 0;
    ix->keys += (r->version != 0) - (had && kr_revs(kr)[had - 1].version != 0);
    if (!kr) {
        struct keyrec *nk = kr_alloc(walloc, ix, key, klen, 1, ix->seq);
        if (!nk)
            return -ENOMEM;
        kr_revs(nk)[0] = *r;
        atomic_init(&nk->n, 1);
        return tree_insert(ix, &ix->root, key, klen, nk);
    }
    uint32_t n = atomic_load_explicit(&kr->n, memory_order_relaxed);
    if (n < kr->cap) {
        /* in place: readers of published versions skip it by revision */
        if (kr->gen != ix->seq && log_append(ix, kr, n) < 0)
            return -ENOMEM;
        kr_revs(kr)[n] = *r;
        atomic_store_explicit(&kr->n, n + 1, memory_order_release);
        return 0;
    }
    if (n >= UINT32_MAX / 2)
        return -E2BIG;
    struct keyrec *nk = kr_alloc(walloc, ix, kr->key, kr->klen, n + n / 2 + 1, ix->seq);
    if (!nk)
        return -ENOMEM;
    memcpy(kr_revs(nk), kr_revs(kr), n * sizeof(struct krev));
    kr_revs(nk)[n] = *r;
    atomic_init(&nk->n, n + 1);
    if (retire(ix, kr) < 0)
        return -ENOMEM;
    return tree_replace(ix, &ix->root, nk->key, nk->klen, nk);
}

int ix_drop_revs(struct ix *ix, struct keyrec *kr, uint32_t k)
{
    if (ix->poisoned)
        return -EIO;
    uint32_t n = atomic_load_explicit(&kr->n, memory_order_relaxed);
    int rc;
    if (k >= n) {
        if (n && kr_revs(kr)[n - 1].version != 0)
            ix->keys--;
        if ((rc = tree_remove(ix, &ix->root, kr->key, kr->klen)) < 0)
            return rc;
        return retire(ix, kr);
    }
    struct keyrec *nk = kr_alloc(walloc, ix, kr->key, kr->klen, n - k, ix->seq);
    if (!nk)
        return -ENOMEM;
    memcpy(kr_revs(nk), kr_revs(kr) + k, (n - k) * sizeof(struct krev));
    atomic_init(&nk->n, n - k);
    if ((rc = retire(ix, kr)) < 0)
        return rc;
    return tree_replace(ix, &ix->root, nk->key, nk->klen, nk);
}

void ix_lease_prefix(int64_t lease, unsigned char out[8])
{
    /* big-endian with the sign bit flipped: byte order is numeric order */
    uint64_t u = (uint64_t)lease ^ (UINT64_C(1) << 63);
    for (int i = 0; i < 8; i++)
        out[i] = (unsigned char)(u >> (56 - 8 * i));
}

void ix_lease_key(int64_t lease, const void *key, size_t klen, unsigned char *out)
{
    ix_lease_prefix(lease, out);
    if (klen)
        memcpy(out + 8, key, klen);
}

/* --- lease key counts (struct lease_counts) --- */

static size_t lc_home(const struct lease_counts *c, int64_t id)
{
    return (size_t)(((uint64_t)id * UINT64_C(0x9E3779B97F4A7C15)) >> 32) & (c->cap - 1);
}

/* The slot holding id, or the empty slot where it would go (cap > 0). */
static struct lease_count *lc_slot(const struct lease_counts *c, int64_t id)
{
    size_t i = lc_home(c, id);
    while (c->v[i].id != 0 && c->v[i].id != id)
        i = (i + 1) & (c->cap - 1);
    return &c->v[i];
}

static int lc_grow(struct lease_counts *c)
{
    size_t cap = c->cap ? c->cap * 2 : 64;
    struct lease_counts nc = {.v = calloc(cap, sizeof(*nc.v)), .cap = cap, .used = c->used};
    if (!nc.v)
        return -ENOMEM;
    for (size_t i = 0; i < c->cap; i++)
        if (c->v[i].id)
            *lc_slot(&nc, c->v[i].id) = c->v[i];
    free(c->v);
    *c = nc;
    return 0;
}

/* Empty slot e, moving back the entries of its run that belong before it. */
static void lc_remove(struct lease_counts *c, struct lease_count *e)
{
    size_t hole = (size_t)(e - c->v), i = hole;
    for (;;) {
        i = (i + 1) & (c->cap - 1);
        if (c->v[i].id == 0)
            break;
        size_t home = lc_home(c, c->v[i].id);
        /* the entry at i may fill the hole if its home is not in (hole, i] */
        if ((i > hole && (home <= hole || home > i)) || (i < hole && home <= hole && home > i)) {
            c->v[hole] = c->v[i];
            hole = i;
        }
    }
    c->v[hole] = (struct lease_count){0, 0};
    c->used--;
}

/* Add d to lease's count; a count that reaches 0 leaves the table.  Only an
 * increment can fail (-ENOMEM). */
static int lc_add(struct lease_counts *c, int64_t lease, int64_t d)
{
    if (lease == 0) {
        c->n0 += d;
        return 0;
    }
    if (d > 0 && (c->used + 1) * 4 > c->cap * 3 && lc_grow(c) < 0)
        return -ENOMEM;
    if (!c->cap)
        return 0;
    struct lease_count *e = lc_slot(c, lease);
    if (!e->id) {
        if (d <= 0)
            return 0;
        e->id = lease;
        c->used++;
    }
    if ((e->n += d) <= 0)
        lc_remove(c, e);
    return 0;
}

static int64_t lease_of(const unsigned char *k)
{
    uint64_t u = 0;
    for (int i = 0; i < 8; i++)
        u = u << 8 | k[i];
    return (int64_t)(u ^ (UINT64_C(1) << 63));
}

/* Count afresh from the working lease index (at open, and after a batch was dropped). */
static int lc_rebuild(struct ix *ix)
{
    struct ixiter it;
    struct keyrec *lk;
    free(ix->lc.v);
    ix->lc = (struct lease_counts){0};
    ix_seek(&it, ix->lroot, NULL, 0);
    while ((lk = ix_next(&it)))
        if (lk->klen >= 8 && lc_add(&ix->lc, lease_of(lk->key), 1) < 0)
            return -ENOMEM;
    return 0;
}

int64_t ix_lease_count(const struct ix *ix, int64_t lease)
{
    if (lease == 0)
        return ix->lc.n0;
    return ix->lc.cap ? lc_slot(&ix->lc, lease)->n : 0;
}

int ix_lease_add(struct ix *ix, int64_t lease, const void *key, size_t klen)
{
    if (ix->poisoned)
        return -EIO;
    struct keyrec *kr = kr_alloc(walloc, ix, NULL, klen + 8, 0, ix->seq);
    if (!kr)
        return -ENOMEM;
    ix_lease_key(lease, key, klen, kr->key);
    int rc = lc_add(&ix->lc, lease, 1);
    if (rc == 0 && (rc = tree_insert(ix, &ix->lroot, kr->key, kr->klen, kr)) < 0)
        lc_add(&ix->lc, lease, -1);
    return rc;
}

int ix_lease_del(struct ix *ix, int64_t lease, const void *key, size_t klen)
{
    if (ix->poisoned)
        return -EIO;
    unsigned char small[256], *lk = klen + 8 <= sizeof(small) ? small : malloc(klen + 8);
    if (!lk)
        return -ENOMEM;
    ix_lease_key(lease, key, klen, lk);
    struct keyrec *kr = ix_get(ix->lroot, lk, klen + 8);
    int rc = kr ? tree_remove(ix, &ix->lroot, lk, klen + 8) : -ENOENT;
    if (rc == 0) {
        lc_add(&ix->lc, lease, -1);
        rc = retire(ix, kr);
    }
    if (lk != small)
        free(lk);
    return rc;
}

/* --- publishing ---------------------------------------------------------------------- */

bool ix_dirty(const struct ix *ix)
{
    return ix->created.n || ix->retired.n || ix->nlog;
}

int ix_prepare(struct ix *ix)
{
    if (ix->poisoned)
        return -EIO;
    if (!ix->next && !(ix->next = malloc(sizeof(*ix->next))))
        return -ENOMEM;
    size_t need = ix->retired.n + 1;
    if (ix->qhead && ix->qhead + ix->qn + need > ix->qcap) {
        memmove(ix->q, ix->q + ix->qhead, ix->qn * sizeof(*ix->q));
        ix->qhead = 0;
    }
    if (ix->qn + need > ix->qcap) {
        size_t cap = ix->qcap ? ix->qcap : 1024;
        while (cap < ix->qn + need)
            cap *= 2;
        struct ixretired *nq = realloc(ix->q, cap * sizeof(*nq));
        if (!nq)
            return -ENOMEM;
        ix->q = nq;
        ix->qcap = cap;
    }
    return 0;
}

void ix_publish(struct ix *ix, const struct state *st)
{
    struct ixver *v = ix->next, *old = ix->pub;
    ix->next = NULL;
    v->seq = ix->seq;
    v->root = ix->root;
    v->lroot = ix->lroot;
    v->st = *st;
    v->keys = ix->keys;
    atomic_store(&ix->cur, v);
    atomic_store(&ix->cur_seq, v->seq);
    ix->pub = v;
    struct ixretired *q = ix->q + ix->qhead + ix->qn;
    for (size_t i = 0; i < ix->retired.n; i++)
        q[i] = (struct ixretired){v->seq, ix->retired.v[i]};
    q[ix->retired.n] = (struct ixretired){v->seq, old};
    ix->qn += ix->retired.n + 1;
    ix->retired.n = 0;
    ix->created.n = 0;
    ix->nlog = 0;
    ix->seq++;
    reclaim(ix);
}

static int log_cmp(const void *a, const void *b)
{
    const struct ixlog *x = a, *y = b;
    if (x->kr != y->kr)
        return (uintptr_t)x->kr < (uintptr_t)y->kr ? -1 : 1;
    return (x->n > y->n) - (x->n < y->n);
}

int ix_abort(struct ix *ix)
{
    for (size_t i = 0; i < ix->created.n; i++)
        free(ix->created.v[i]);
    ix->created.n = 0;
    ix->retired.n = 0;
    ix->root = ix->pub->root;
    ix->lroot = ix->pub->lroot;
    ix->keys = ix->pub->keys;
    int rc = lc_rebuild(ix); /* the counts followed the dropped batch */
    if (rc == 0 && ix->nlog == 0)
        return 0;
    /* Published keyrecs got revisions of the dropped batch in place.  Readers
     * skip them by revision, but the next batch must not see them: give each
     * such key a copy with its revisions from before the batch.  The old
     * entries are never written again, so no reader sees one change. */
    qsort(ix->log, ix->nlog, sizeof(*ix->log), log_cmp);
    for (size_t i = 0; i < ix->nlog && rc == 0; i++) {
        if (i > 0 && ix->log[i].kr == ix->log[i - 1].kr)
            continue; /* the first entry of a key has its count before the batch */
        struct keyrec *kr = ix->log[i].kr;
        uint32_t n = ix->log[i].n;
        struct keyrec *nk = kr_alloc(walloc, ix, kr->key, kr->klen, kr->cap, ix->seq);
        if (!nk) {
            rc = -ENOMEM;
            break;
        }
        memcpy(kr_revs(nk), kr_revs(kr), n * sizeof(struct krev));
        atomic_init(&nk->n, n);
        if ((rc = retire(ix, kr)) == 0)
            rc = tree_replace(ix, &ix->root, kr->key, kr->klen, nk);
    }
    ix->nlog = 0;
    if (rc == 0)
        rc = ix_prepare(ix);
    if (rc < 0) {
        for (size_t i = 0; i < ix->created.n; i++)
            free(ix->created.v[i]);
        ix->created.n = 0;
        ix->retired.n = 0;
        ix->root = ix->pub->root;
        ix->lroot = ix->pub->lroot;
        ix->poisoned = true;
        return rc;
    }
    ix_publish(ix, &ix->pub->st);
    return 0;
}

/* --- bulk loading ---------------------------------------------------------------------- */

struct ixbuild {
    struct keyrec **kr; /* the keys, in the order they first came (see sort_runs) */
    size_t n, krcap;
    /* Open addressing by key hash.  A slot is 0 (empty) or the top 32 bits
     * of the key's hash, then its index in kr plus one: a probe compares
     * the hashes' bits before it reads a keyrec, which is a cache miss. */
    uint64_t *tab;
    size_t cap;
};

static uint64_t key_hash(const void *key, size_t klen)
{
    const unsigned char *p = key;
    uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a */
    for (size_t i = 0; i < klen; i++)
        h = (h ^ p[i]) * 0x100000001b3ULL;
    return h ^ (h >> 29);
}

struct ixbuild *ix_build_new(void)
{
    struct ixbuild *b = calloc(1, sizeof(*b));
    if (b && !(b->tab = calloc(b->cap = 1024, sizeof(*b->tab)))) {
        free(b);
        b = NULL;
    }
    return b;
}

/* The slot of tab (cap slots) that holds the key with hash h, or the empty one where it would go. */
static uint64_t *build_slot(const struct ixbuild *b, uint64_t *tab, size_t cap, uint64_t h, const void *key,
                            size_t klen)
{
    uint64_t top = h >> 32;
    size_t i = h & (cap - 1);
    while (tab[i]) {
        if (tab[i] >> 32 == top) {
            const struct keyrec *kr = b->kr[(uint32_t)tab[i] - 1];
            if (keycmp(kr->key, kr->klen, key, klen) == 0)
                break;
        }
        i = (i + 1) & (cap - 1);
    }
    return &tab[i];
}

/* Twice the slots, the keys placed again in the order they came. */
static int build_grow(struct ixbuild *b)
{
    size_t cap = b->cap * 2;
    uint64_t *nt = calloc(cap, sizeof(*nt));
    if (!nt)
        return -ENOMEM;
    for (size_t k = 0; k < b->n; k++) {
        uint64_t h = key_hash(b->kr[k]->key, b->kr[k]->klen);
        size_t i = h & (cap - 1);
        while (nt[i])
            i = (i + 1) & (cap - 1);
        nt[i] = (h >> 32) << 32 | (k + 1);
    }
    free(b->tab);
    b->tab = nt;
    b->cap = cap;
    return 0;
}

int ix_build_row(struct ixbuild *b, const void *key, size_t klen, const struct krev *r)
{
    if (2 * (b->n + 1) > b->cap && build_grow(b) < 0)
        return -ENOMEM;
    uint64_t h = key_hash(key, klen);
    uint64_t *slot = build_slot(b, b->tab, b->cap, h, key, klen);
    size_t at;
    if (*slot) {
        at = (uint32_t)*slot - 1;
    } else {
        if (b->n >= UINT32_MAX - 1)
            return -E2BIG;
        if (b->n == b->krcap) {
            size_t c = b->krcap ? b->krcap * 2 : 1024;
            struct keyrec **nk = realloc(b->kr, c * sizeof(*nk));
            if (!nk)
                return -ENOMEM;
            b->kr = nk;
            b->krcap = c;
        }
        struct keyrec *kr = kr_alloc(plain_alloc, NULL, key, klen, 1, 1);
        if (!kr)
            return -ENOMEM;
        at = b->n++;
        b->kr[at] = kr;
        *slot = (h >> 32) << 32 | (at + 1);
    }
    struct keyrec *kr = b->kr[at];
    uint32_t n = atomic_load_explicit(&kr->n, memory_order_relaxed);
    if (n == kr->cap) {
        if (n >= UINT32_MAX / 2)
            return -E2BIG;
        uint32_t cap = n * 2;
        struct keyrec *nk = realloc(kr, kr_size(kr->klen, cap));
        if (!nk)
            return -ENOMEM;
        nk->cap = cap;
        b->kr[at] = kr = nk;
    }
    kr_revs(kr)[n] = *r;
    atomic_store_explicit(&kr->n, n + 1, memory_order_relaxed);
    return 0;
}

void ix_build_abort(struct ixbuild *b)
{
    if (!b)
        return;
    for (size_t i = 0; i < b->n; i++)
        free(b->kr[i]);
    free(b->kr);
    free(b->tab);
    free(b);
}

static int kr_cmp(const void *a, const void *b)
{
    const struct keyrec *x = *(struct keyrec *const *)a, *y = *(struct keyrec *const *)b;
    return keycmp(x->key, x->klen, y->key, y->klen);
}

static bool kr_before(const struct keyrec *x, const struct keyrec *y)
{
    return keycmp(x->key, x->klen, y->key, y->klen) < 0;
}

/*
 * Sort kr[0..n) (distinct keys) by key, taking the runs already in key order
 * as they are: a natural merge sort, O(n log runs).  A store loaded in key
 * order, as bulk loads often are, is one run or a few, and at 1M keys the
 * qsort of the keys in the hash table's order was a third of a restart's
 * 1.9 s (docs/performance.md, "Session 16").  Falls back to qsort without
 * memory for the merges.
 */
static void sort_runs(struct keyrec **kr, size_t n)
{
    if (n < 2)
        return;
    struct keyrec **tmp = malloc(n * sizeof(*tmp));
    size_t *ends = malloc(n * sizeof(*ends)); /* ends[i]: where run i ends */
    size_t runs = 0;
    if (!tmp || !ends) {
        qsort(kr, n, sizeof(*kr), kr_cmp);
        goto out;
    }
    for (size_t i = 1; i <= n; i++)
        if (i == n || !kr_before(kr[i - 1], kr[i]))
            ends[runs++] = i;
    while (runs > 1) { /* merge runs 2k and 2k+1 into tmp, then copy back */
        size_t merged = 0, start = 0;
        for (size_t r = 0; r < runs; r += 2) {
            size_t mid = ends[r], end = r + 1 < runs ? ends[r + 1] : mid, a = start, b = mid, o = start;
            while (a < mid && b < end)
                tmp[o++] = kr_before(kr[b], kr[a]) ? kr[b++] : kr[a++];
            memcpy(tmp + o, kr + a, (mid - a) * sizeof(*kr));
            o += mid - a;
            memcpy(tmp + o, kr + b, (end - b) * sizeof(*kr));
            ends[merged++] = end;
            start = end;
        }
        memcpy(kr, tmp, n * sizeof(*kr));
        runs = merged;
    }
out:
    free(tmp);
    free(ends);
}

static void tree_free(struct ixnode *n, bool keys)
{
    if (!n)
        return;
    if (n->leaf) {
        struct ixleaf *l = (struct ixleaf *)n;
        for (uint32_t i = 0; keys && i < n->n; i++)
            free(l->kr[i]);
    } else {
        struct ixinner *in = (struct ixinner *)n;
        for (uint32_t i = 0; i < n->n; i++) {
            if (i > 0)
                free(in->sep[i - 1]);
            tree_free(in->child[i], keys);
        }
    }
    free(n);
}

/* Allocations of a bulk build, so a failure can free them all. */
static void *track_alloc(void *ctx, size_t size)
{
    struct ptrvec *v = ctx;
    void *p = malloc(size);
    if (p && vec_push(v, p) < 0) {
        free(p);
        p = NULL;
    }
    return p;
}

/*
 * A tree over m sorted keyrecs, built bottom up.  On failure returns NULL
 * and frees every node and separator it made; the keyrecs stay the caller's.
 */
static struct ixnode *bulk_tree(struct keyrec **kr, size_t m)
{
    struct ptrvec made = {0};
    size_t n = m ? (m + BULK_FILL - 1) / BULK_FILL : 1;
    struct ixnode **lvl = calloc(n, sizeof(*lvl));
    struct ixsep **left = calloc(n, sizeof(*left)); /* separator before node i (i > 0) */
    struct ixnode *root = NULL;
    if (!lvl || !left)
        goto out;
    for (size_t i = 0; i < n; i++) {
        size_t a = i * m / n, z = (i + 1) * m / n;
        struct ixleaf *l = leaf_new(track_alloc, &made, 1);
        if (!l)
            goto out;
        lvl[i] = &l->h;
        l->h.n = (uint32_t)(z - a);
        if (z > a) /* kr is NULL for an empty store */
            memcpy(l->kr, kr + a, (z - a) * sizeof(*kr));
        leaf_fit(l);
        if (i > 0 && !(left[i] = sep_between(track_alloc, &made, kr[a - 1], kr[a])))
            goto out;
    }
    while (n > 1) {
        size_t np = (n + BULK_FILL - 1) / BULK_FILL;
        for (size_t i = 0; i < np; i++) {
            size_t a = i * n / np, z = (i + 1) * n / np;
            struct ixinner *in = inner_new(track_alloc, &made, 1);
            if (!in)
                goto out;
            in->h.n = (uint32_t)(z - a);
            for (size_t j = a; j < z; j++) {
                in->child[j - a] = lvl[j];
                if (j > a)
                    in->sep[j - a - 1] = left[j];
            }
            inner_fit(in);
            lvl[i] = &in->h;
            left[i] = left[a]; /* a node's left separator is its first child's */
        }
        n = np;
    }
    root = lvl[0];
out:
    if (!root)
        for (size_t i = 0; i < made.n; i++)
            free(made.v[i]);
    free(made.v);
    free(lvl);
    free(left);
    return root;
}

int ix_build_finish(struct ixbuild *b, struct ix *ix, const struct state *st)
{
    struct keyrec **all = b->kr, **lk = NULL; /* all stays b's until the trees are built */
    size_t m = b->n, nlk = 0;
    int rc = -ENOMEM;
    memset(ix, 0, sizeof(*ix));
    pthread_mutex_init(&ix->pins_mu, NULL);
    free(b->tab);
    b->tab = NULL;
    for (size_t i = 0; i < m; i++) {
        struct keyrec *kr = all[i], *tight;
        uint32_t n = atomic_load_explicit(&kr->n, memory_order_relaxed);
        /* exact size: most keys never change again */
        if (n < kr->cap && (tight = realloc(kr, kr_size(kr->klen, n)))) {
            all[i] = kr = tight;
            kr->cap = n;
        }
        const struct krev *last = &kr_revs(kr)[n - 1];
        if (last->version != 0)
            ix->keys++;
        if (last->version != 0 && last->lease != 0)
            nlk++;
    }
    sort_runs(all, m);
    if (!(lk = malloc((nlk ? nlk : 1) * sizeof(*lk))))
        goto out;
    nlk = 0;
    for (size_t i = 0; i < m; i++) {
        const struct krev *last = &kr_revs(all[i])[all[i]->n - 1];
        if (last->version == 0 || last->lease == 0)
            continue;
        struct keyrec *l = malloc(kr_size(all[i]->klen + 8, 0));
        if (!l)
            goto out;
        l->gen = 1;
        atomic_init(&l->n, 0);
        l->cap = 0;
        l->klen = all[i]->klen + 8;
        ix_lease_key(last->lease, all[i]->key, all[i]->klen, l->key);
        lk[nlk++] = l;
    }
    qsort(lk, nlk, sizeof(*lk), kr_cmp);
    if (!(ix->root = bulk_tree(all, m)) || !(ix->lroot = bulk_tree(lk, nlk)) ||
        !(ix->pub = malloc(sizeof(*ix->pub))))
        goto out;
    ix->pub->seq = 1;
    ix->pub->root = ix->root;
    ix->pub->lroot = ix->lroot;
    ix->pub->st = *st;
    ix->pub->keys = ix->keys;
    atomic_init(&ix->cur, ix->pub);
    atomic_init(&ix->cur_seq, 1);
    ix->seq = 2;
    rc = 0;
out:
    if (rc < 0) {
        if (ix->root)
            tree_free(ix->root, false);
        if (ix->lroot)
            tree_free(ix->lroot, false);
        ix->root = ix->lroot = NULL;
        for (size_t i = 0; lk && i < nlk; i++)
            free(lk[i]);
    } else {
        b->n = 0; /* the keyrecs are the tree's now */
    }
    free(lk);
    ix_build_abort(b); /* all with it, and on failure the keyrecs */
    if (rc == 0 && lc_rebuild(ix) < 0)
        return -ENOMEM; /* the trees are whole: ix_destroy frees them */
    return rc;
}

void ix_destroy(struct ix *ix)
{
    if (!ix->pub && !ix->q)
        return;
    for (size_t i = 0; i < ix->created.n; i++)
        free(ix->created.v[i]);
    for (size_t i = 0; i < ix->qn; i++)
        free(ix->q[ix->qhead + i].p);
    if (ix->pub) {
        tree_free(ix->pub->root, true);
        tree_free(ix->pub->lroot, true);
    }
    free(ix->pub);
    free(ix->next);
    free(ix->created.v);
    free(ix->retired.v);
    free(ix->log);
    free(ix->q);
    free(ix->lc.v);
    pthread_mutex_destroy(&ix->pins_mu);
    memset(ix, 0, sizeof(*ix));
}
