/*
 * Linearizability of the key-value operations: the Wing & Gong search with
 * Lowe's memoization of (linearized set, model state), as porcupine runs it,
 * over partitions of the history (one per key; keys that a multi-key op
 * names together share one).  The model of a key is its value (or absent)
 * and the lease it is attached to.  A search has a budget (states, seconds):
 * past it the partition is "unknown".  A failing partition is shrunk into a
 * small fragment that is still not linearizable.
 */
#include "test/jepsen/check_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NO_SRC UINT32_MAX

enum lkind { L_PUT, L_READ, L_DEL, L_CAS, L_DROP };

/* One operation as the model sees it. */
struct lop {
    int64_t inv, ret; /* ret HIST_INF: it took effect at some time after inv, or never */
    uint32_t src;     /* index in h->ops, NO_SRC for a lease expiry */
    uint8_t kind;
    bool known;       /* its output is known (ok); false for info and forgotten outcomes */
    bool forgotten;   /* ok in the history, outcome forgotten while shrinking */
    uint32_t n;       /* keys */
    uint32_t *k;      /* local key indexes */
    uint32_t *v;      /* put: values written; read: values read */
    uint32_t e, cur;  /* cas: expected; current value on failure */
    int64_t outn;     /* del N; cas 1/0 */
    int64_t lease;    /* put: the lease attached (0 none); drop: the lease revoked or expired */
};

struct part {
    uint32_t *keys; /* global string ids */
    uint32_t nkeys;
    struct lop *ops;
    size_t nops, cap;
};

/* --- hashing ----------------------------------------------------------------------- */

struct h128 {
    uint64_t a, b;
};

static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static struct h128 op_hash(size_t i)
{
    return (struct h128){mix(i * 2 + 0x1234567ull), mix(i * 2 + 1 + 0x7654321ull)};
}

static struct h128 kv_hash(uint32_t k, uint32_t v, int64_t lease)
{
    uint64_t x = mix(((uint64_t)k << 32) ^ v ^ 0xabcdef0123ull) ^ mix((uint64_t)lease + 0x55aa55aaull);
    return (struct h128){mix(x ^ 0x1111), mix(x ^ 0x2222)};
}

/* A set of 128-bit fingerprints; (0,0) marks an empty slot. */
struct memo {
    struct h128 *s;
    size_t n, cap;
};

static int memo_insert(struct memo *m, struct h128 x)
{
    if (!x.a && !x.b)
        x.a = 1;
    if ((m->n + 1) * 2 > m->cap) {
        size_t nc = m->cap ? m->cap * 2 : 4096;
        struct h128 *ns = calloc(nc, sizeof(*ns));
        if (!ns)
            return -ENOMEM;
        for (size_t i = 0; i < m->cap; i++) {
            if (!m->s[i].a && !m->s[i].b)
                continue;
            size_t j = m->s[i].a & (nc - 1);
            while (ns[j].a || ns[j].b)
                j = (j + 1) & (nc - 1);
            ns[j] = m->s[i];
        }
        free(m->s);
        m->s = ns;
        m->cap = nc;
    }
    size_t j = x.a & (m->cap - 1);
    while (m->s[j].a || m->s[j].b) {
        if (m->s[j].a == x.a && m->s[j].b == x.b)
            return 0;
        j = (j + 1) & (m->cap - 1);
    }
    m->s[j] = x;
    m->n++;
    return 1;
}

/* --- the search ---------------------------------------------------------------------- */

enum { W_LIN, W_NOT, W_UNKNOWN, W_NOMEM };

struct wgl_out {
    int verdict;
    uint64_t states;
    uint32_t *best; /* the longest linearizable prefix found: op indexes in order */
    size_t nbest;
    uint32_t blocker; /* the op whose completion the search could not get past; UINT32_MAX none */
};

struct undo {
    uint32_t k, v;
    int64_t lease;
};

struct wgl {
    const struct lop *ops;
    size_t n;
    uint32_t nkeys;
    uint32_t *val;
    int64_t *lease;
    struct h128 hs; /* of the state */
    struct undo *undo;
    size_t nundo, capundo;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int set_key(struct wgl *w, uint32_t k, uint32_t v, int64_t lease)
{
    if (w->nundo == w->capundo) {
        size_t nc = w->capundo ? w->capundo * 2 : 1024;
        struct undo *nu = realloc(w->undo, nc * sizeof(*nu));
        if (!nu)
            return -ENOMEM;
        w->undo = nu;
        w->capundo = nc;
    }
    w->undo[w->nundo++] = (struct undo){k, w->val[k], w->lease[k]};
    struct h128 o = kv_hash(k, w->val[k], w->lease[k]), x = kv_hash(k, v, lease);
    w->hs.a ^= o.a ^ x.a;
    w->hs.b ^= o.b ^ x.b;
    w->val[k] = v;
    w->lease[k] = lease;
    return 0;
}

static void undo_to(struct wgl *w, size_t mark)
{
    while (w->nundo > mark) {
        struct undo *u = &w->undo[--w->nundo];
        struct h128 o = kv_hash(u->k, w->val[u->k], w->lease[u->k]), x = kv_hash(u->k, u->v, u->lease);
        w->hs.a ^= o.a ^ x.a;
        w->hs.b ^= o.b ^ x.b;
        w->val[u->k] = u->v;
        w->lease[u->k] = u->lease;
    }
}

/* Apply op to the state if the model allows its output: 1 applied, 0 not allowed, <0 error. */
static int apply(struct wgl *w, const struct lop *op)
{
    int rc = 0;
    switch (op->kind) {
    case L_READ:
        for (uint32_t j = 0; op->known && j < op->n; j++)
            if (w->val[op->k[j]] != op->v[j])
                return 0;
        return 1;
    case L_PUT:
        for (uint32_t j = 0; j < op->n && rc == 0; j++)
            rc = set_key(w, op->k[j], op->v[j], op->lease);
        return rc < 0 ? rc : 1;
    case L_DEL:
        if (op->known && (w->val[op->k[0]] != HIST_ABSENT) != (op->outn == 1))
            return 0;
        rc = set_key(w, op->k[0], HIST_ABSENT, 0);
        return rc < 0 ? rc : 1;
    case L_CAS:
        if (w->val[op->k[0]] == op->e) {
            if (op->known && op->outn != 1)
                return 0;
            rc = set_key(w, op->k[0], op->v[0], 0);
            return rc < 0 ? rc : 1;
        }
        if (op->known && (op->outn != 0 || op->cur != w->val[op->k[0]]))
            return 0;
        return 1;
    case L_DROP:
        for (uint32_t k = 0; k < w->nkeys && rc == 0; k++)
            if (w->val[k] != HIST_ABSENT && w->lease[k] == op->lease)
                rc = set_key(w, k, HIST_ABSENT, 0);
        return rc < 0 ? rc : 1;
    }
    return 0;
}

struct entry {
    int64_t t;
    uint32_t op;
    uint8_t ret; /* 0 call, 1 return */
};

static int cmp_entry(const void *a, const void *b)
{
    const struct entry *x = a, *y = b;
    if (x->t != y->t)
        return x->t < y->t ? -1 : 1;
    if (x->ret != y->ret) /* at equal times a call comes first: the two overlap */
        return x->ret < y->ret ? -1 : 1;
    return x->op < y->op ? -1 : x->op > y->op;
}

/*
 * wgl_run: is ops[0..n) linearizable from the all-absent state?  Fills out
 * (out->best is malloc'd, the caller frees).  budget: states; seconds: time.
 */
static int wgl_run(const struct lop *ops, size_t n, uint32_t nkeys, uint64_t budget, double seconds,
                   struct wgl_out *out)
{
    memset(out, 0, sizeof(*out));
    out->blocker = UINT32_MAX;
    if (n == 0) {
        out->verdict = W_LIN;
        return 0;
    }
    size_t ne = 2 * n;
    struct entry *es = malloc(ne * sizeof(*es));
    /* The list: entry 0 is the head; entries 1..ne in time order. */
    uint32_t *next = malloc((ne + 2) * sizeof(uint32_t)), *prev = malloc((ne + 2) * sizeof(uint32_t));
    uint32_t *eop = malloc((ne + 2) * sizeof(uint32_t)), *match = malloc((ne + 2) * sizeof(uint32_t));
    uint8_t *isret = malloc(ne + 2);
    uint32_t *stack = malloc((n + 1) * sizeof(uint32_t));
    size_t *umark = malloc((n + 1) * sizeof(size_t));
    uint8_t *sphase = malloc(n + 1);
    int phase = 0;
    uint8_t *lin = calloc(n, 1);
    struct wgl w = {.ops = ops, .n = n, .nkeys = nkeys};
    w.val = calloc(nkeys + 1, sizeof(uint32_t));
    w.lease = calloc(nkeys + 1, sizeof(int64_t));
    struct memo memo = {0};
    int rc = 0;
    if (!es || !next || !prev || !eop || !match || !isret || !stack || !umark || !sphase || !lin || !w.val || !w.lease) {
        rc = -ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        es[2 * i] = (struct entry){ops[i].inv, (uint32_t)i, 0};
        es[2 * i + 1] = (struct entry){ops[i].ret, (uint32_t)i, 1};
    }
    qsort(es, ne, sizeof(*es), cmp_entry);
    uint32_t *callof = malloc(n * sizeof(uint32_t));
    if (!callof) {
        rc = -ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < ne; i++) {
        uint32_t e = (uint32_t)i + 1;
        eop[e] = es[i].op;
        isret[e] = es[i].ret;
        prev[e] = e - 1;
        next[e] = i + 1 < ne ? e + 1 : 0;
        if (!es[i].ret)
            callof[es[i].op] = e;
        else
            match[callof[es[i].op]] = e;
    }
    free(callof);
    next[0] = 1;
    prev[0] = 0;
    for (uint32_t k = 0; k < nkeys; k++) {
        struct h128 x = kv_hash(k, HIST_ABSENT, 0);
        w.hs.a ^= x.a;
        w.hs.b ^= x.b;
    }
    struct h128 hl = {0, 0};
    size_t depth = 0, maxdepth = 0;
    bool saved = true;
    double deadline = now_s() + seconds;
    uint64_t iter = 0;
    size_t left = 0; /* ops with a known completion not yet linearized */
    for (size_t i = 0; i < n; i++)
        left += ops[i].ret != HIST_INF;
    uint32_t e = next[0];
    out->verdict = W_LIN;
    while (next[0] != 0 && left > 0) {
        if ((++iter & 0xffff) == 0 && now_s() > deadline) {
            out->verdict = W_UNKNOWN;
            break;
        }
        if (!isret[e]) {
            uint32_t i = eop[e];
            if ((ops[i].ret == HIST_INF) != (phase == 1)) {
                e = next[e];
                continue;
            }
            size_t mark = w.nundo;
            int ok = apply(&w, &ops[i]);
            if (ok < 0) {
                rc = ok;
                goto out;
            }
            if (ok && ops[i].ret == HIST_INF) {
                /*
                 * An operation that may take effect any time and changes
                 * nothing now is not worth linearizing now: whatever follows
                 * could follow it as well with it still pending, and it can
                 * always go last.
                 */
                bool changed = false;
                for (size_t u = mark; u < w.nundo && !changed; u++)
                    changed = w.val[w.undo[u].k] != w.undo[u].v || w.lease[w.undo[u].k] != w.undo[u].lease;
                ok = changed;
            }
            if (ok) {
                struct h128 oh = op_hash(i);
                struct h128 key = {hl.a ^ oh.a ^ w.hs.a, hl.b ^ oh.b ^ w.hs.b};
                int fresh = memo_insert(&memo, key);
                if (fresh < 0) {
                    rc = fresh;
                    goto out;
                }
                if (fresh) {
                    if (++out->states > budget) {
                        out->verdict = W_UNKNOWN;
                        break;
                    }
                    hl.a ^= oh.a;
                    hl.b ^= oh.b;
                    lin[i] = 1;
                    left -= ops[i].ret != HIST_INF;
                    stack[depth] = e;
                    umark[depth] = mark;
                    sphase[depth] = (uint8_t)phase;
                    depth++;
                    if (depth > maxdepth) {
                        maxdepth = depth;
                        saved = false;
                    }
                    /* lift the call and its return out of the list */
                    next[prev[e]] = next[e];
                    prev[next[e]] = prev[e];
                    uint32_t m = match[e];
                    next[prev[m]] = next[m];
                    if (next[m])
                        prev[next[m]] = prev[m];
                    e = next[0];
                    phase = 0;
                    if (left == 0)
                        break; /* what remains may all go last */
                    continue;
                }
                undo_to(&w, mark);
            }
            e = next[e];
            continue;
        }
        /*
         * A return entry: its op must be linearized before anything after it.
         * Phase 0 tried the calls before it whose op completed; phase 1 now
         * tries those that may take effect any time (info, lease expiry), so
         * the search reaches for one only where a later answer needs it
         * (tried first, one linearized early sends the search deep down a
         * path it then has to undo step by step).  After both, back up.
         */
        if (phase == 0) {
            phase = 1;
            e = next[0];
            continue;
        }
        if (!saved) {
            free(out->best);
            out->best = malloc((depth + 1) * sizeof(uint32_t));
            if (!out->best) {
                rc = -ENOMEM;
                goto out;
            }
            for (size_t d = 0; d < depth; d++)
                out->best[d] = eop[stack[d]];
            out->nbest = depth;
            out->blocker = eop[e];
            saved = true;
        }
        if (depth == 0) {
            if (maxdepth == 0)
                out->blocker = eop[e];
            out->verdict = W_NOT;
            break;
        }
        uint32_t c = stack[--depth];
        uint32_t i = eop[c];
        phase = sphase[depth];
        undo_to(&w, umark[depth]);
        struct h128 oh = op_hash(i);
        hl.a ^= oh.a;
        hl.b ^= oh.b;
        lin[i] = 0;
        left += ops[i].ret != HIST_INF;
        uint32_t m = match[c];
        next[prev[m]] = m;
        if (next[m])
            prev[next[m]] = m;
        next[prev[c]] = c;
        prev[next[c]] = c;
        e = next[c];
    }
out:
    free(es);
    free(next);
    free(prev);
    free(eop);
    free(match);
    free(isret);
    free(stack);
    free(umark);
    free(sphase);
    free(lin);
    free(w.val);
    free(w.lease);
    free(w.undo);
    free(memo.s);
    if (rc < 0)
        out->verdict = W_NOMEM;
    return rc;
}

/* --- building the model's operations ---------------------------------------------------- */

/*
 * Leave out the info writes nobody can tell happened: a put, mput or cas whose
 * outcome is unknown, whose written values no kept operation reads (or
 * compares), on keys that no known delete found present.  If the history
 * with one is linearizable so is the history without it, and the converse
 * holds by linearizing it last (after every other operation); so the verdict
 * stands, and the search is spared an operation that could go anywhere.
 * keep[i] is set for the ops to keep; returns how many were left out.
 * mark: scratch of one byte per string id, all zero (left zero).
 */
static size_t drop_unobserved(const struct lop *ops, size_t n, uint32_t nkeys, uint8_t *mark, uint8_t *present,
                              bool *keep)
{
    size_t dropped = 0;
    memset(present, 0, nkeys + 1);
    for (size_t i = 0; i < n; i++) {
        const struct lop *op = &ops[i];
        keep[i] = true;
        if (op->kind == L_READ && op->known)
            for (uint32_t j = 0; j < op->n; j++)
                mark[op->v[j]] = 1;
        if (op->kind == L_CAS) {
            mark[op->e] = 1;
            if (op->known && op->outn == 0)
                mark[op->cur] = 1;
        }
        if (op->kind == L_DEL && op->known && op->outn == 1)
            present[op->k[0]] = 1;
    }
    mark[HIST_ABSENT] = 1;
    /* A lease drop matters only if some put attaches a key to its lease. */
    for (size_t i = 0; i < n; i++) {
        const struct lop *op = &ops[i];
        if (op->known || (op->kind != L_PUT && op->kind != L_CAS) || (op->kind == L_PUT && op->lease))
            continue;
        bool seen = false;
        for (uint32_t j = 0; j < op->n && !seen; j++)
            seen = mark[op->v[j]] || present[op->k[j]];
        if (!seen) {
            keep[i] = false;
            dropped++;
        }
    }
    for (size_t i = 0; i < n; i++) {
        const struct lop *op = &ops[i];
        if (op->kind != L_DROP)
            continue;
        bool used = false;
        for (size_t j = 0; j < n && !used; j++)
            used = keep[j] && ops[j].kind == L_PUT && ops[j].lease == op->lease;
        if (!used) {
            keep[i] = false;
            dropped += op->src != NO_SRC; /* a synthetic expiry is not an operation of the history */
        }
    }
    for (size_t i = 0; i < n; i++) {
        const struct lop *op = &ops[i];
        if (op->kind == L_READ && op->known)
            for (uint32_t j = 0; j < op->n; j++)
                mark[op->v[j]] = 0;
        if (op->kind == L_CAS) {
            mark[op->e] = 0;
            mark[op->cur] = 0;
        }
    }
    mark[HIST_ABSENT] = 0;
    return dropped;
}

/* Make the model op of h->ops[src] with local keys (loc: global id -> local index). */
static int make_lop(const struct history *h, uint32_t src, const uint32_t *loc, struct lop *l)
{
    const struct hist_op *op = &h->ops[src];
    memset(l, 0, sizeof(*l));
    l->inv = op->inv;
    l->ret = op->status == HS_OK ? op->ret : HIST_INF;
    l->src = src;
    l->known = op->status == HS_OK;
    l->n = op->kind == HK_REVOKE ? 0 : op->nkeys;
    l->k = malloc((l->n + 1) * sizeof(uint32_t));
    l->v = malloc((l->n + 1) * sizeof(uint32_t));
    if (!l->k || !l->v)
        return -ENOMEM;
    for (uint32_t j = 0; j < l->n; j++)
        l->k[j] = loc[op->keys[j]];
    switch (op->kind) {
    case HK_PUT: case HK_PUTL: case HK_MPUT:
        l->kind = L_PUT;
        memcpy(l->v, op->vals, l->n * sizeof(uint32_t));
        l->lease = op->kind == HK_PUTL ? op->lease : 0;
        break;
    case HK_GET: case HK_MGET:
        l->kind = L_READ;
        if (l->known)
            memcpy(l->v, op->rvals, l->n * sizeof(uint32_t));
        break;
    case HK_DEL:
        l->kind = L_DEL;
        l->outn = op->n;
        break;
    case HK_CAS:
        l->kind = L_CAS;
        l->e = op->expect;
        l->v[0] = op->vals[0];
        l->outn = op->n;
        l->cur = l->known && op->n == 0 ? op->rvals[0] : HIST_ABSENT;
        break;
    case HK_REVOKE:
        l->kind = L_DROP;
        l->lease = op->lease;
        break;
    default:
        return -EINVAL;
    }
    return 0;
}

static bool in_model(const struct hist_op *op)
{
    if (op->status == HS_FAIL)
        return false;
    switch (op->kind) {
    case HK_PUT: case HK_PUTL: case HK_MPUT: case HK_GET: case HK_MGET: case HK_DEL: case HK_CAS: case HK_REVOKE:
        return true;
    default:
        return false;
    }
}

static uint32_t uf_find(uint32_t *par, uint32_t x)
{
    while (par[x] != x) {
        par[x] = par[par[x]];
        x = par[x];
    }
    return x;
}

struct lease_part {
    int64_t lease;
    uint32_t part;
};

static int cmp_lease_part(const void *a, const void *b)
{
    const struct lease_part *x = a, *y = b;
    if (x->lease != y->lease)
        return x->lease < y->lease ? -1 : 1;
    return x->part < y->part ? -1 : x->part > y->part;
}

static int part_push(struct part *p, struct lop *l)
{
    if (p->nops == p->cap) {
        size_t nc = p->cap ? p->cap * 2 : 64;
        struct lop *n = realloc(p->ops, nc * sizeof(*n));
        if (!n)
            return -ENOMEM;
        p->ops = n;
        p->cap = nc;
    }
    p->ops[p->nops++] = *l;
    return 0;
}

static void parts_free(struct part *parts, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < parts[i].nops; j++) {
            free(parts[i].ops[j].k);
            free(parts[i].ops[j].v);
        }
        free(parts[i].ops);
        free(parts[i].keys);
    }
    free(parts);
}

/*
 * What the revision log tells the search (as etcd's robustness tests patch
 * their histories with the watch stream): an info write whose value the log
 * holds took effect, so before every operation that answered with its
 * revision or a later one completed; one whose value the log lacks never
 * took effect; a lease whose keys the log never shows expiring did not
 * expire during the load, and one whose keys it does show expiring at
 * revision d expired after every (linearizable) operation that answered
 * below d was invoked and before every one that answered d or later
 * completed.  Only with a log from revision 1 (a compacted log cannot say
 * what is absent from it).  The log's own truth is judged by the log checks.
 */
struct expiry {
    int64_t lease;
    int64_t inv, ret; /* the window; ret HIST_INF: unbounded (the log is ambiguous) */
    int mode;         /* 0 none seen: no expiry op; 1 window; 2 unbounded */
};

struct patch {
    bool on;
    int64_t *ret;    /* per op: the bounded completion of an info write, HIST_INF if none */
    uint8_t *skip;   /* per op: leave it out (an info write that never took effect, an info revoke) */
    struct expiry *exp;
    size_t nexp;
    size_t skipped;
};

struct revop {
    int64_t rev, inv, ret;
};

static int cmp_revop(const void *a, const void *b)
{
    const struct revop *x = a, *y = b;
    return x->rev < y->rev ? -1 : x->rev > y->rev;
}

static int cmp_expiry(const void *a, const void *b)
{
    const struct expiry *x = a, *y = b;
    return x->lease < y->lease ? -1 : x->lease > y->lease;
}

/* The first of ro[0..n) with rev >= d. */
static size_t revop_lower(const struct revop *ro, size_t n, int64_t d)
{
    size_t a = 0, b = n;
    while (a < b) {
        size_t m = a + (b - a) / 2;
        if (ro[m].rev < d)
            a = m + 1;
        else
            b = m;
    }
    return a;
}

static void patch_free(struct patch *pt)
{
    free(pt->ret);
    free(pt->skip);
    free(pt->exp);
}

struct keyrev {
    uint32_t key;
    int64_t rev;
};

static int cmp_keyrev(const void *a, const void *b)
{
    const struct keyrev *x = a, *y = b;
    if (x->key != y->key)
        return x->key < y->key ? -1 : 1;
    return x->rev < y->rev ? -1 : x->rev > y->rev;
}

/*
 * An info del of a key none of whose deletions in the log is unexplained
 * (each one has an acknowledged del that answered N=1 at that revision)
 * deleted nothing or never ran: either way it changed nothing, and is left
 * out.  A del that removes a value makes a revision of its own, so it could
 * not hide behind an acknowledged one.  Deletions of leased keys by expiry
 * count as unexplained here, which keeps every info del of those keys.
 * Without this, each info del stays open to the end of the history, and a
 * run with thousands of them (membership changes) outgrows the search.
 */
static int skip_info_dels(const struct history *h, struct patch *pt)
{
    uint32_t ns = hist_nstr(h);
    struct keyrev *kr = malloc((h->nops + 1) * sizeof(*kr));
    uint8_t *open_del = calloc(ns + 1, 1); /* per key: the log has a deletion no ok del made */
    if (!kr || !open_del) {
        free(kr);
        free(open_del);
        return -ENOMEM;
    }
    size_t n = 0;
    for (size_t i = 0; i < h->nops; i++) {
        const struct hist_op *op = &h->ops[i];
        if (op->kind == HK_DEL && op->status == HS_OK && op->n == 1)
            kr[n++] = (struct keyrev){op->keys[0], op->rev};
    }
    qsort(kr, n, sizeof(*kr), cmp_keyrev);
    for (size_t i = 0; i < h->nlog; i++) {
        const struct hist_event *e = &h->log[i];
        struct keyrev want = {e->key, e->rev};
        if (!e->put && !bsearch(&want, kr, n, sizeof(*kr), cmp_keyrev))
            open_del[e->key] = 1;
    }
    for (size_t i = 0; i < h->nops; i++) {
        const struct hist_op *op = &h->ops[i];
        if (op->kind == HK_DEL && op->status == HS_INFO && !open_del[op->keys[0]] && !pt->skip[i]) {
            pt->skip[i] = 1;
            pt->skipped++;
        }
    }
    free(kr);
    free(open_del);
    return 0;
}

static int patch_build(const struct history *h, struct patch *pt)
{
    memset(pt, 0, sizeof(*pt));
    if (!h->has_log || h->logstart > 1)
        return 0;
    uint32_t ns = hist_nstr(h);
    int64_t *val_rev = malloc((ns + 1) * sizeof(int64_t));
    struct revop *ro = malloc((h->nops + 1) * sizeof(*ro));
    int64_t *premax = malloc((h->nops + 2) * sizeof(int64_t)), *sufmin = malloc((h->nops + 2) * sizeof(int64_t));
    struct log_index li = {0};
    pt->ret = malloc((h->nops + 1) * sizeof(int64_t));
    pt->skip = calloc(h->nops + 1, 1);
    pt->exp = malloc((h->nops + 1) * sizeof(*pt->exp));
    int rc = 0;
    if (!val_rev || !ro || !premax || !sufmin || !pt->ret || !pt->skip || !pt->exp ||
        (rc = log_index_build(&li, h)) < 0) {
        rc = -ENOMEM;
        goto out;
    }
    pt->on = true;
    for (uint32_t v = 0; v < ns; v++)
        val_rev[v] = -1;
    for (size_t i = 0; i < h->nlog; i++)
        if (h->log[i].put && val_rev[h->log[i].val] < 0)
            val_rev[h->log[i].val] = h->log[i].rev;
    size_t n = 0;
    for (size_t i = 0; i < h->nops; i++) {
        const struct hist_op *op = &h->ops[i];
        if (op->status == HS_OK && op->rev >= 0 && op->kind != HK_SGET)
            ro[n++] = (struct revop){op->rev, op->inv, op->ret};
    }
    qsort(ro, n, sizeof(*ro), cmp_revop);
    premax[0] = h->tmin; /* premax[i]: latest invocation among ro[0..i) */
    for (size_t i = 0; i < n; i++)
        premax[i + 1] = ro[i].inv > premax[i] ? ro[i].inv : premax[i];
    sufmin[n] = HIST_INF; /* sufmin[i]: earliest completion among ro[i..n) */
    for (size_t i = n; i-- > 0;)
        sufmin[i] = ro[i].ret < sufmin[i + 1] ? ro[i].ret : sufmin[i + 1];
    for (size_t i = 0; i < h->nops; i++) {
        const struct hist_op *op = &h->ops[i];
        pt->ret[i] = HIST_INF;
        if (op->status != HS_INFO)
            continue;
        if (op->kind == HK_REVOKE) {
            pt->skip[i] = 1; /* its effect, if any, is the lease's drop below */
            pt->skipped++;
            continue;
        }
        if (op->kind != HK_PUT && op->kind != HK_PUTL && op->kind != HK_MPUT && op->kind != HK_CAS)
            continue;
        int64_t d = val_rev[op->vals[0]];
        if (d < 0) {
            pt->skip[i] = 1;
            pt->skipped++;
            continue;
        }
        int64_t r = sufmin[revop_lower(ro, n, d)];
        if (r >= op->inv)
            pt->ret[i] = r;
    }
    if ((rc = skip_info_dels(h, pt)) < 0)
        goto out;
    /* Lease drops in the log not made by an acknowledged delete or revoke. */
    for (size_t i = 0; i < h->nops; i++) {
        const struct hist_op *op = &h->ops[i];
        if (op->kind != HK_PUTL || op->status == HS_FAIL)
            continue;
        bool have = false;
        for (size_t j = 0; j < pt->nexp && !have; j++)
            have = pt->exp[j].lease == op->lease;
        if (!have)
            pt->exp[pt->nexp++] = (struct expiry){op->lease, h->tmin, HIST_INF, 0};
    }
    qsort(pt->exp, pt->nexp, sizeof(*pt->exp), cmp_expiry);
    for (size_t i = 0; i < h->nlog; i++) {
        const struct hist_event *e = &h->log[i];
        if (e->put)
            continue;
        uint32_t pos = log_key_upper(&li, e->key, e->rev - 1);
        if (pos == 0)
            continue;
        const struct hist_event *prev = &h->log[li.ev[li.kstart[e->key] + pos - 1]];
        if (!prev->put || !prev->lease)
            continue;
        struct expiry want = {.lease = prev->lease};
        struct expiry *x = bsearch(&want, pt->exp, pt->nexp, sizeof(*pt->exp), cmp_expiry);
        if (!x)
            continue;
        bool by_client = false, maybe_del = false;
        for (size_t k = 0; k < h->nops && !by_client; k++) {
            const struct hist_op *op = &h->ops[k];
            if (op->kind == HK_DEL && op->keys[0] == e->key) {
                by_client |= op->status == HS_OK && op->n == 1 && op->rev == e->rev;
                maybe_del |= op->status == HS_INFO;
            } else if (op->kind == HK_REVOKE && op->lease == prev->lease)
                by_client |= op->status == HS_OK && op->rev == e->rev;
        }
        if (by_client)
            continue;
        if (maybe_del) {
            x->mode = 2; /* an info delete may have made it: the drop stays unbounded */
            x->inv = h->tmin;
            x->ret = HIST_INF;
            continue;
        }
        if (x->mode == 0) {
            size_t lo = revop_lower(ro, n, e->rev);
            x->mode = 1;
            x->inv = premax[lo];
            x->ret = sufmin[lo];
            if (x->ret < x->inv)
                x->ret = HIST_INF;
        }
    }
out:
    free(val_rev);
    free(ro);
    free(premax);
    free(sufmin);
    log_index_free(&li);
    if (rc < 0) {
        patch_free(pt);
        memset(pt, 0, sizeof(*pt));
    }
    return rc;
}

/*
 * Split the model's operations into partitions: union the keys each op
 * names; a revoke goes to every partition where a putl names its lease; each
 * (partition, lease) gets one synthetic expiry that may happen any time or never.
 */
static int build_parts(const struct history *h, const struct patch *pt, struct part **out, size_t *nout)
{
    uint32_t ns = hist_nstr(h);
    uint32_t *par = malloc((ns + 1) * sizeof(uint32_t));
    uint32_t *pid = malloc((ns + 1) * sizeof(uint32_t));
    uint32_t *loc = malloc((ns + 1) * sizeof(uint32_t));
    struct lease_part *lp = malloc((h->nops + 1) * sizeof(*lp));
    struct part *parts = NULL;
    size_t nparts = 0, nlp = 0;
    int rc = 0;
    if (!par || !pid || !loc || !lp) {
        rc = -ENOMEM;
        goto out;
    }
    for (uint32_t i = 0; i < ns; i++) {
        par[i] = i;
        pid[i] = UINT32_MAX;
    }
    for (size_t i = 0; i < h->nops; i++) {
        const struct hist_op *op = &h->ops[i];
        if (!in_model(op) || op->kind == HK_REVOKE || (pt->on && pt->skip[i]))
            continue;
        for (uint32_t j = 1; j < op->nkeys; j++) {
            uint32_t a = uf_find(par, op->keys[0]), b = uf_find(par, op->keys[j]);
            if (a != b)
                par[b] = a;
        }
    }
    /* Partitions in order of first appearance; keys numbered locally in order too. */
    for (size_t i = 0; i < h->nops; i++) {
        const struct hist_op *op = &h->ops[i];
        if (!in_model(op) || op->kind == HK_REVOKE || (pt->on && pt->skip[i]))
            continue;
        uint32_t r = uf_find(par, op->keys[0]);
        if (pid[r] == UINT32_MAX) {
            struct part *np = realloc(parts, (nparts + 1) * sizeof(*np));
            if (!np) {
                rc = -ENOMEM;
                goto out;
            }
            parts = np;
            memset(&parts[nparts], 0, sizeof(*parts));
            pid[r] = (uint32_t)nparts++;
        }
        struct part *p = &parts[pid[r]];
        for (uint32_t j = 0; j < op->nkeys; j++) {
            uint32_t k = op->keys[j];
            bool have = false;
            /* Most partitions hold one key: a scan is cheap enough. */
            for (uint32_t q = 0; q < p->nkeys && !have; q++)
                have = p->keys[q] == k;
            if (!have) {
                uint32_t *nk = realloc(p->keys, (p->nkeys + 1) * sizeof(uint32_t));
                if (!nk) {
                    rc = -ENOMEM;
                    goto out;
                }
                p->keys = nk;
                loc[k] = p->nkeys;
                p->keys[p->nkeys++] = k;
            }
        }
        struct lop l;
        if ((rc = make_lop(h, (uint32_t)i, loc, &l)) == 0 && pt->on)
            l.ret = pt->ret[i] != HIST_INF ? pt->ret[i] : l.ret;
        if (rc < 0 || (rc = part_push(p, &l)) < 0) {
            free(l.k);
            free(l.v);
            goto out;
        }
        if (op->kind == HK_PUTL)
            lp[nlp++] = (struct lease_part){op->lease, pid[r]};
    }
    qsort(lp, nlp, sizeof(*lp), cmp_lease_part);
    size_t m = 0;
    for (size_t i = 0; i < nlp; i++)
        if (!m || cmp_lease_part(&lp[m - 1], &lp[i]) != 0)
            lp[m++] = lp[i];
    nlp = m;
    for (size_t i = 0; i < nlp; i++) { /* the expiries */
        struct lop l = {.inv = h->tmin, .ret = HIST_INF, .src = NO_SRC, .kind = L_DROP, .lease = lp[i].lease};
        if (pt->on) {
            struct expiry want = {.lease = lp[i].lease};
            const struct expiry *x = bsearch(&want, pt->exp, pt->nexp, sizeof(*pt->exp), cmp_expiry);
            if (x && x->mode == 0)
                continue; /* the log shows no expiry of it */
            if (x) {
                l.inv = x->inv;
                l.ret = x->ret;
            }
        }
        l.k = malloc(sizeof(uint32_t));
        l.v = malloc(sizeof(uint32_t));
        if (!l.k || !l.v || (rc = part_push(&parts[lp[i].part], &l)) < 0) {
            free(l.k);
            free(l.v);
            rc = -ENOMEM;
            goto out;
        }
    }
    for (size_t i = 0; i < h->nops; i++) { /* the revokes */
        const struct hist_op *op = &h->ops[i];
        if (op->kind != HK_REVOKE || !in_model(op) || (pt->on && pt->skip[i]))
            continue;
        for (size_t j = 0; j < nlp; j++) {
            if (lp[j].lease != op->lease)
                continue;
            struct lop l;
            if ((rc = make_lop(h, (uint32_t)i, loc, &l)) < 0 || (rc = part_push(&parts[lp[j].part], &l)) < 0) {
                free(l.k);
                free(l.v);
                goto out;
            }
        }
    }
out:
    free(par);
    free(pid);
    free(loc);
    free(lp);
    if (rc < 0) {
        parts_free(parts, nparts);
        parts = NULL;
        nparts = 0;
    }
    *out = parts;
    *nout = nparts;
    return rc;
}

/* --- checking one partition, shrinking a failure ------------------------------------------ */

struct ctx {
    const struct history *h;
    const struct check_opts *o;
    uint8_t *mark;    /* one byte per string id, zero between uses */
    uint8_t *present; /* one byte per local key */
    size_t dropped;
};

/*
 * Search part's ops with mask applied (0 as is, 1 outcome forgotten, 2 left
 * out; NULL: all as is), after dropping unobserved info writes.  out->best
 * and out->blocker index the part's ops.
 */
static int search(struct ctx *c, const struct part *p, const uint8_t *mask, uint64_t budget, double seconds,
                  struct wgl_out *out, size_t *dropped, uint32_t **kept_out, size_t *nkept_out)
{
    struct lop *ops = malloc((p->nops + 1) * sizeof(*ops));
    uint32_t *idx = malloc((p->nops + 1) * sizeof(uint32_t));
    bool *keep = malloc(p->nops + 1);
    int rc = 0;
    if (!ops || !idx || !keep) {
        rc = -ENOMEM;
        goto out;
    }
    size_t n = 0;
    for (size_t i = 0; i < p->nops; i++) {
        uint8_t m = mask ? mask[i] : 0;
        if (m == 2)
            continue;
        ops[n] = p->ops[i];
        if (m == 1) {
            if (ops[n].kind == L_READ)
                continue; /* a read whose answer is forgotten does nothing */
            ops[n].known = false;
            ops[n].forgotten = true;
            ops[n].ret = HIST_INF;
        }
        idx[n++] = (uint32_t)i;
    }
    size_t d = drop_unobserved(ops, n, p->nkeys, c->mark, c->present, keep);
    if (dropped)
        *dropped = d;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (keep[i]) {
            ops[k] = ops[i];
            idx[k++] = idx[i];
        }
    rc = wgl_run(ops, k, p->nkeys, budget, seconds, out);
    for (size_t i = 0; i < out->nbest; i++)
        out->best[i] = idx[out->best[i]];
    if (out->blocker != UINT32_MAX)
        out->blocker = idx[out->blocker];
    if (kept_out) {
        *kept_out = idx;
        *nkept_out = k;
        idx = NULL;
    }
out:
    free(ops);
    free(idx);
    free(keep);
    return rc;
}

/* One op of the partition as a report line. */
static void sb_lop(struct sb *b, const struct ctx *c, const struct part *p, uint32_t i, bool forgotten)
{
    const struct lop *l = &p->ops[i];
    if (l->src == NO_SRC) {
        char t[32];
        sb_printf(b, "  (lease %" PRId64 " may expire here: any time from %s on, or never)\n", l->lease,
                  hist_format_time(c->h, l->inv, t, sizeof(t)));
        return;
    }
    sb_op(b, c->h, &c->h->ops[l->src], forgotten ? "~ " : "  ");
}

static void sb_keys(struct sb *b, const struct history *h, const struct part *p)
{
    for (uint32_t k = 0; k < p->nkeys && k < 8; k++)
        sb_printf(b, "%s%s", k ? "," : "", hist_str(h, p->keys[k]));
    if (p->nkeys > 8)
        sb_printf(b, ",... (%" PRIu32 " keys)", p->nkeys);
}

static const struct part *sort_part;
static int cmp_by_inv(const void *a, const void *b)
{
    const struct lop *x = &sort_part->ops[*(const uint32_t *)a], *y = &sort_part->ops[*(const uint32_t *)b];
    if (x->inv != y->inv)
        return x->inv < y->inv ? -1 : 1;
    return *(const uint32_t *)a < *(const uint32_t *)b ? -1 : 1;
}

/*
 * Shrink a non-linearizable partition: forget outcomes (a read then goes,
 * a write stays as "may have happened") while the rest stays not
 * linearizable.  Forgetting can only make a history easier to linearize, so
 * the fragment proves the violation by itself.  First cut everything after
 * the operation the search could not get past, then chunks, then one by one.
 */
static int shrink(struct ctx *c, const struct part *p, const struct wgl_out *first, struct sb *b)
{
    const struct check_opts *o = c->o;
    uint8_t *mask = calloc(p->nops + 1, 1), *trial = malloc(p->nops + 1);
    uint32_t *act = malloc((p->nops + 1) * sizeof(uint32_t));
    int rc = 0;
    if (!mask || !trial || !act) {
        rc = -ENOMEM;
        goto out;
    }
    double deadline = now_s() + o->shrink_seconds;
    unsigned trials = 0;
    uint64_t budget = o->budget / 10 > 100000 ? o->budget / 10 : 100000;
    struct wgl_out w;
    if (first->blocker != UINT32_MAX) {
        int64_t cut = p->ops[first->blocker].ret;
        memcpy(trial, mask, p->nops);
        for (size_t i = 0; i < p->nops; i++) {
            if (p->ops[i].inv > cut)
                trial[i] = 2;
            else if (p->ops[i].ret > cut)
                trial[i] = 1;
        }
        if ((rc = search(c, p, trial, budget, o->budget_seconds, &w, NULL, NULL, NULL)) < 0)
            goto out;
        trials++;
        free(w.best);
        if (w.verdict == W_NOT)
            memcpy(mask, trial, p->nops);
    }
    for (size_t chunk = p->nops / 2; o->shrink; chunk /= 2) {
        if (chunk == 0)
            chunk = 1;
        bool changed = false;
        size_t na = 0;
        for (size_t i = 0; i < p->nops; i++)
            if (mask[i] == 0 && p->ops[i].src != NO_SRC)
                act[na++] = (uint32_t)i;
        for (size_t s = 0; s < na; s += chunk) {
            if (trials >= o->shrink_trials || now_s() > deadline)
                goto done;
            memcpy(trial, mask, p->nops);
            for (size_t j = s; j < s + chunk && j < na; j++)
                trial[act[j]] = 1;
            if ((rc = search(c, p, trial, budget, o->budget_seconds, &w, NULL, NULL, NULL)) < 0)
                goto out;
            trials++;
            free(w.best);
            if (w.verdict == W_NOT) {
                memcpy(mask, trial, p->nops);
                changed = true;
            }
        }
        if (chunk == 1 && !changed)
            break;
    }
done:;
    /* The fragment: what the final search keeps. */
    uint32_t *kept = NULL;
    size_t nkept = 0;
    if ((rc = search(c, p, mask, budget, o->budget_seconds, &w, NULL, &kept, &nkept)) < 0)
        goto out;
    free(w.best);
    sort_part = p;
    qsort(kept, nkept, sizeof(uint32_t), cmp_by_inv);
    size_t nforgot = 0;
    for (size_t i = 0; i < nkept; i++)
        nforgot += mask[kept[i]] == 1 && p->ops[kept[i]].known;
    sb_printf(b, "a fragment that is not linearizable by itself (%zu operations, %u searches spent shrinking%s)",
              nkept, trials, w.verdict == W_NOT ? "" : "; NOTE: its final search was inconclusive");
    if (nforgot)
        sb_printf(b, ";\n  '~' marks %zu whose outcome was forgotten (treated as unknown), which can only make "
                     "linearizing easier",
                  nforgot);
    sb_printf(b, ":\n");
    for (size_t i = 0; i < nkept; i++)
        sb_lop(b, c, p, kept[i], mask[kept[i]] == 1 && p->ops[kept[i]].known);
    free(kept);
out:
    free(mask);
    free(trial);
    free(act);
    return rc;
}

static int check_part(struct ctx *c, const struct part *p, struct check_result *res, struct check_stats *st)
{
    const struct history *h = c->h;
    const struct check_opts *o = c->o;
    struct wgl_out w;
    size_t dropped = 0;
    int rc = search(c, p, NULL, o->budget, o->budget_seconds, &w, &dropped, NULL, NULL);
    if (rc < 0)
        return rc;
    st->partitions++;
    st->states += w.states;
    st->dropped_info += dropped;
    res->nchecked++;
    struct sb b = {0}, kb = {0};
    sb_keys(&kb, h, p);
    if (w.verdict == W_UNKNOWN) {
        st->partitions_unknown++;
        sb_printf(&b, "the search of this partition (%zu operations) gave up after %" PRIu64
                      " states: its verdict is unknown (raise --budget)\n",
                  p->nops, w.states);
        rc = finding_add(res, o, "budget-exhausted", kb.s, sb_take(&b));
    } else if (w.verdict == W_NOT) {
        st->partitions_bad++;
        sb_printf(&b, "no order of these %zu operations is consistent with both real time and the key-value model\n",
                  p->nops);
        if (o->shrink)
            rc = shrink(c, p, &w, &b);
        if (rc == 0) {
            sb_printf(&b, "the longest linearizable prefix found holds %zu operations", w.nbest);
            size_t from = w.nbest > 8 ? w.nbest - 8 : 0;
            sb_printf(&b, "%s\n", from ? "; its last 8:" : ":");
            for (size_t i = from; i < w.nbest; i++)
                sb_lop(&b, c, p, w.best[i], false);
            if (w.blocker != UINT32_MAX) {
                sb_printf(&b, "after it, this operation could not be linearized before it completed:\n");
                sb_lop(&b, c, p, w.blocker, false);
            }
            rc = finding_add(res, o, "not-linearizable", kb.s, sb_take(&b));
        }
    }
    free(b.s);
    free(kb.s);
    free(w.best);
    return rc;
}

int check_linearizable(const struct history *h, const struct check_opts *o, struct check_result *res,
                       struct check_stats *st)
{
    struct part *parts = NULL;
    size_t nparts = 0;
    struct patch pt;
    int rc = patch_build(h, &pt);
    if (rc == 0)
        rc = build_parts(h, &pt, &parts, &nparts);
    st->dropped_info += pt.skipped;
    patch_free(&pt);
    if (rc < 0)
        return rc;
    struct ctx c = {.h = h, .o = o};
    c.mark = calloc(hist_nstr(h) + 1, 1);
    uint32_t maxkeys = 1;
    for (size_t i = 0; i < nparts; i++)
        if (parts[i].nkeys > maxkeys)
            maxkeys = parts[i].nkeys;
    c.present = malloc(maxkeys + 1);
    if (!c.mark || !c.present)
        rc = -ENOMEM;
    for (size_t i = 0; i < nparts && rc == 0; i++) {
        st->lin_ops += parts[i].nops;
        rc = check_part(&c, &parts[i], res, st);
    }
    size_t excluded = 0;
    for (size_t i = 0; i < h->nops; i++)
        excluded += h->ops[i].kind == HK_SGET || h->ops[i].kind == HK_RANGE;
    res->nunchecked = excluded;
    snprintf(res->note, sizeof(res->note), "%zu partitions; sget and range are judged by the revision checks",
             nparts);
    free(c.mark);
    free(c.present);
    parts_free(parts, nparts);
    return rc;
}
