/*
 * A generator of valid histories for the checker's tests and measurements:
 * processes issue random operations with random overlapping intervals; each
 * takes effect at a random point of its interval (an info one maybe later,
 * or never) on a simulated store with revisions, leases, lagging members for
 * serializable reads and watchers; the records are then written in time
 * order with the revision log.  Not a model of Cairn's timing, only of its
 * promises.
 */
#include "test/jepsen/check.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define MS ((int64_t)1000000)

void check_gen_default(struct check_gen *g)
{
    memset(g, 0, sizeof(*g));
    g->seed = 1;
    g->nops = 2000;
    g->nkeys = 8;
    g->nprocs = 5;
    g->info_pct = 3;
    g->group = 4;
    g->leases = true;
    g->watches = true;
    g->sget = true;
    g->ranges = true;
}

static uint64_t rnd(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t below(uint64_t *s, uint64_t n)
{
    return n ? rnd(s) % n : 0;
}

enum gkind { G_PUT, G_GET, G_SGET, G_DEL, G_CAS, G_MPUT, G_MGET, G_RANGE, G_GRANT, G_KEEPALIVE, G_PUTL, G_REVOKE };
enum gstatus { GS_OK, GS_FAIL, GS_INFO };

struct gop {
    unsigned p;
    uint64_t id;
    int64_t inv, ret, at; /* at: when it takes effect (INT64_MAX: never) */
    enum gkind kind;
    enum gstatus status;
    char *inv_line, *end_line;
};

struct gevent {
    int64_t rev, at;
    bool put;
    unsigned key;
    uint64_t val; /* (process << 32) | id of the writer; 0 for a delete */
    int64_t lease;
};

struct glease {
    int64_t id, ttl, deadline; /* deadline: expiry time while alive */
    bool gone;
};

struct gkey {
    uint64_t val; /* 0 absent */
    int64_t modrev, lease;
    size_t *ev; /* indexes into the log */
    size_t nev, capev;
};

struct gen {
    const struct check_gen *g;
    uint64_t rs;
    struct gop *ops;
    size_t nops;
    struct gkey *keys;
    struct gevent *log;
    size_t nlog, caplog;
    int64_t rev;
    struct glease *leases;
    size_t nleases, capleases;
    int64_t member_rev[3];
    bool nomem;
};

static char *fmt(struct gen *s, const char *f, ...) __attribute__((format(printf, 2, 3)));
static char *fmt(struct gen *s, const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    char *out = NULL;
    if (vasprintf(&out, f, ap) < 0) {
        out = NULL;
        s->nomem = true;
    }
    va_end(ap);
    return out;
}

static void keyname(char *b, size_t n, unsigned k)
{
    snprintf(b, n, "k/%04u", k);
}

static void valname(char *b, size_t n, uint64_t v)
{
    if (!v)
        snprintf(b, n, "~");
    else
        snprintf(b, n, "p%u.%u", (unsigned)(v >> 32), (unsigned)(v & 0xffffffffu));
}

static int log_add(struct gen *s, int64_t at, bool put, unsigned key, uint64_t val, int64_t lease)
{
    if (s->nlog == s->caplog) {
        size_t nc = s->caplog ? s->caplog * 2 : 1024;
        struct gevent *n = realloc(s->log, nc * sizeof(*n));
        if (!n)
            return -ENOMEM;
        s->log = n;
        s->caplog = nc;
    }
    struct gkey *k = &s->keys[key];
    if (k->nev == k->capev) {
        size_t nc = k->capev ? k->capev * 2 : 16;
        size_t *n = realloc(k->ev, nc * sizeof(*n));
        if (!n)
            return -ENOMEM;
        k->ev = n;
        k->capev = nc;
    }
    k->ev[k->nev++] = s->nlog;
    s->log[s->nlog++] = (struct gevent){s->rev, at, put, key, val, lease};
    k->val = put ? val : 0;
    k->modrev = put ? s->rev : 0;
    k->lease = put ? lease : 0;
    return 0;
}

/* The value of key at revision rev (by its events). */
static uint64_t val_at(struct gen *s, unsigned key, int64_t rev, int64_t *modrev)
{
    struct gkey *k = &s->keys[key];
    size_t a = 0, b = k->nev;
    while (a < b) {
        size_t m = (a + b) / 2;
        if (s->log[k->ev[m]].rev <= rev)
            a = m + 1;
        else
            b = m;
    }
    if (a == 0 || !s->log[k->ev[a - 1]].put) {
        *modrev = 0;
        return 0;
    }
    *modrev = s->log[k->ev[a - 1]].rev;
    return s->log[k->ev[a - 1]].val;
}

/* Delete every key attached to lease at one new revision (if any is). */
static int drop_lease(struct gen *s, int64_t at, int64_t lease)
{
    bool bumped = false;
    for (unsigned k = 0; k < s->g->nkeys; k++) {
        if (s->keys[k].val && s->keys[k].lease == lease) {
            if (!bumped) {
                s->rev++;
                bumped = true;
            }
            if (log_add(s, at, false, k, 0, 0) < 0)
                return -ENOMEM;
        }
    }
    return 0;
}

/* Leases whose deadline passed before t expire (a little late, as a leader notices). */
static int expire_until(struct gen *s, int64_t t)
{
    for (size_t i = 0; i < s->nleases; i++) {
        struct glease *l = &s->leases[i];
        if (!l->gone && l->deadline + 20 * MS < t) {
            l->gone = true;
            if (drop_lease(s, l->deadline + 20 * MS, l->id) < 0)
                return -ENOMEM;
        }
    }
    return 0;
}

static struct glease *alive_lease(struct gen *s)
{
    if (!s->nleases)
        return NULL;
    /* Mostly a live one; now and then one that is gone (its calls are refused). */
    struct glease *l = &s->leases[below(&s->rs, s->nleases)];
    for (int i = 0; i < 8 && l->gone; i++)
        l = &s->leases[below(&s->rs, s->nleases)];
    return l;
}

static unsigned pick_group_keys(struct gen *s, unsigned *ks)
{
    unsigned grp = s->g->group ? s->g->group : 1;
    unsigned ngroups = (unsigned)((s->g->nkeys + grp - 1) / grp);
    unsigned gi = (unsigned)below(&s->rs, ngroups);
    unsigned first = gi * grp, size = (unsigned)(s->g->nkeys - first < grp ? s->g->nkeys - first : grp);
    unsigned n = size >= 2 ? 2 + (unsigned)below(&s->rs, size - 1 < 2 ? 1 : 2) : 1;
    if (n > size)
        n = size;
    unsigned start = (unsigned)below(&s->rs, size);
    for (unsigned i = 0; i < n; i++)
        ks[i] = first + (start + i) % size;
    return n;
}

/* Apply op at its effect point: choose its arguments from the state, write its lines. */
static int apply_op(struct gen *s, struct gop *op)
{
    bool eff = op->at != INT64_MAX;
    if (eff && expire_until(s, op->at) < 0)
        return -ENOMEM;
    uint64_t myval = ((uint64_t)op->p << 32) | (op->id & 0xffffffffu);
    char k[32], v[32], c[32];
    unsigned key = (unsigned)below(&s->rs, s->g->nkeys);
    keyname(k, sizeof(k), key);
    valname(v, sizeof(v), myval);
    char *args = NULL, *res = NULL;
    int64_t modrev;
    switch (op->kind) {
    case G_PUT:
        args = fmt(s, "put %s %s", k, v);
        if (eff) {
            s->rev++;
            if (log_add(s, op->at, true, key, myval, 0) < 0)
                return -ENOMEM;
        }
        res = fmt(s, "%" PRId64, s->rev);
        break;
    case G_PUTL: {
        struct glease *l = alive_lease(s);
        if (!l) {
            op->kind = G_PUT;
            return apply_op(s, op);
        }
        args = fmt(s, "putl %s %s %" PRId64, k, v, l->id);
        if (l->gone) {
            op->status = GS_FAIL; /* lease not found: refused */
            op->at = INT64_MAX;
            break;
        }
        if (eff) {
            s->rev++;
            if (log_add(s, op->at, true, key, myval, l->id) < 0)
                return -ENOMEM;
        }
        res = fmt(s, "%" PRId64, s->rev);
        break;
    }
    case G_GET:
        args = fmt(s, "get %s", k);
        valname(c, sizeof(c), s->keys[key].val);
        res = fmt(s, "%" PRId64 " %s %" PRId64, s->rev, c, s->keys[key].modrev);
        break;
    case G_SGET: {
        int64_t *mr = &s->member_rev[op->p % 3];
        if (*mr < s->rev)
            *mr += (int64_t)below(&s->rs, (uint64_t)(s->rev - *mr) + 1);
        args = fmt(s, "sget %s", k);
        uint64_t val = val_at(s, key, *mr, &modrev);
        valname(c, sizeof(c), val);
        res = fmt(s, "%" PRId64 " %s %" PRId64, *mr, c, modrev);
        break;
    }
    case G_DEL: {
        args = fmt(s, "del %s", k);
        bool present = s->keys[key].val != 0;
        if (eff && present) {
            s->rev++;
            if (log_add(s, op->at, false, key, 0, 0) < 0)
                return -ENOMEM;
        }
        res = fmt(s, "%" PRId64 " %d", s->rev, present ? 1 : 0);
        break;
    }
    case G_CAS: {
        uint64_t cur = s->keys[key].val;
        uint64_t e = below(&s->rs, 10) < 6 ? cur : below(&s->rs, 2) ? 0 : ((uint64_t)op->p << 32) | 999999u;
        valname(c, sizeof(c), e);
        args = fmt(s, "cas %s %s %s", k, c, v);
        if (e == cur) {
            if (eff) {
                s->rev++;
                if (log_add(s, op->at, true, key, myval, 0) < 0)
                    return -ENOMEM;
            }
            res = fmt(s, "%" PRId64 " 1", s->rev);
        } else {
            valname(c, sizeof(c), cur);
            res = fmt(s, "%" PRId64 " 0 %s", s->rev, c);
        }
        break;
    }
    case G_MPUT:
    case G_MGET: {
        unsigned ks[4];
        unsigned n = pick_group_keys(s, ks);
        char a[256] = "", r[256] = "";
        size_t al = 0, rl = 0;
        if (op->kind == G_MPUT && eff)
            s->rev++;
        for (unsigned i = 0; i < n; i++) {
            keyname(k, sizeof(k), ks[i]);
            if (op->kind == G_MPUT) {
                uint64_t val = myval | ((uint64_t)i << 24); /* unique per key of the txn */
                valname(v, sizeof(v), val);
                al += (size_t)snprintf(a + al, sizeof(a) - al, " %s %s", k, v);
                if (eff && log_add(s, op->at, true, ks[i], val, 0) < 0)
                    return -ENOMEM;
            } else {
                valname(c, sizeof(c), s->keys[ks[i]].val);
                al += (size_t)snprintf(a + al, sizeof(a) - al, " %s", k);
                rl += (size_t)snprintf(r + rl, sizeof(r) - rl, " %s", c);
            }
        }
        args = fmt(s, "%s%s", op->kind == G_MPUT ? "mput" : "mget", a);
        res = fmt(s, "%" PRId64 "%s", s->rev, r);
        break;
    }
    case G_RANGE: {
        unsigned lo = (unsigned)below(&s->rs, s->g->nkeys), span = 1 + (unsigned)below(&s->rs, 4);
        char b[32];
        keyname(k, sizeof(k), lo);
        keyname(b, sizeof(b), lo + span);
        args = fmt(s, "range %s %s", k, b);
        char *body = NULL;
        size_t bl = 0;
        FILE *m = open_memstream(&body, &bl);
        int n = 0;
        if (!m)
            return -ENOMEM;
        for (unsigned i = lo; i < lo + span && i < s->g->nkeys; i++)
            if (s->keys[i].val) {
                keyname(k, sizeof(k), i);
                valname(c, sizeof(c), s->keys[i].val);
                fprintf(m, " %s %s", k, c);
                n++;
            }
        fclose(m);
        res = fmt(s, "%" PRId64 " %d%s", s->rev, n, body ? body : "");
        free(body);
        break;
    }
    case G_GRANT: {
        int64_t ttl = 1 + (int64_t)below(&s->rs, 2);
        args = fmt(s, "grant %" PRId64, ttl);
        if (eff) {
            if (s->nleases == s->capleases) {
                size_t nc = s->capleases ? s->capleases * 2 : 16;
                struct glease *n = realloc(s->leases, nc * sizeof(*n));
                if (!n)
                    return -ENOMEM;
                s->leases = n;
                s->capleases = nc;
            }
            int64_t id = 7000 + (int64_t)s->nleases;
            s->leases[s->nleases++] = (struct glease){id, ttl, op->at + ttl * 1000 * MS, false};
            res = fmt(s, "%" PRId64 " %" PRId64, id, ttl);
        } else
            res = fmt(s, "0 0");
        break;
    }
    case G_KEEPALIVE:
    case G_REVOKE: {
        struct glease *l = alive_lease(s);
        if (!l) {
            op->kind = G_GET;
            return apply_op(s, op);
        }
        args = fmt(s, "%s %" PRId64, op->kind == G_KEEPALIVE ? "keepalive" : "revoke", l->id);
        if (op->kind == G_KEEPALIVE) {
            if (eff && !l->gone)
                l->deadline = op->at + l->ttl * 1000 * MS;
            res = fmt(s, "%" PRId64, l->gone ? 0 : l->ttl);
        } else {
            if (l->gone) {
                op->status = GS_FAIL;
                op->at = INT64_MAX;
                break;
            }
            if (eff) {
                l->gone = true;
                if (drop_lease(s, op->at, l->id) < 0)
                    return -ENOMEM;
            }
            res = fmt(s, "%" PRId64, s->rev);
        }
        break;
    }
    }
    op->inv_line = fmt(s, "inv %u %" PRIu64 " %" PRId64 " %s", op->p, op->id, op->inv, args ? args : "?");
    if (op->status == GS_OK)
        op->end_line = fmt(s, "ok %u %" PRIu64 " %" PRId64 " %s", op->p, op->id, op->ret, res ? res : "?");
    else
        op->end_line = fmt(s, "%s %u %" PRIu64 " %" PRId64 " %s", op->status == GS_FAIL ? "fail" : "info", op->p,
                           op->id, op->ret, op->status == GS_FAIL ? "unavailable" : "timeout");
    free(args);
    free(res);
    return s->nomem ? -ENOMEM : 0;
}

struct line {
    int64_t t;
    uint64_t seq;
    char *s;
};

static int cmp_line(const void *a, const void *b)
{
    const struct line *x = a, *y = b;
    if (x->t != y->t)
        return x->t < y->t ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static int cmp_at(const void *a, const void *b)
{
    const struct gop *x = *(struct gop *const *)a, *y = *(struct gop *const *)b;
    if (x->at != y->at)
        return x->at < y->at ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

static enum gkind pick_kind(struct gen *s)
{
    const struct check_gen *g = s->g;
    for (;;) {
        unsigned r = (unsigned)below(&s->rs, 100);
        enum gkind k = r < 24 ? G_PUT : r < 42 ? G_GET : r < 50 ? G_SGET : r < 57 ? G_DEL : r < 69 ? G_CAS
                     : r < 74 ? G_MPUT : r < 79 ? G_MGET : r < 83 ? G_RANGE : r < 86 ? G_GRANT
                     : r < 91 ? G_KEEPALIVE : r < 99 ? G_PUTL : G_REVOKE;
        if ((k == G_SGET && !g->sget) || (k == G_RANGE && !g->ranges) ||
            ((k == G_MPUT || k == G_MGET) && g->group < 2) ||
            ((k == G_GRANT || k == G_KEEPALIVE || k == G_PUTL || k == G_REVOKE) && !g->leases))
            continue;
        return k;
    }
}

int check_generate(FILE *f, const struct check_gen *g)
{
    struct gen s = {.g = g, .rs = g->seed * 0x2545f4914f6cdd1dull + 1};
    int rc = 0;
    size_t nlines = 0, caplines = 2 * g->nops + 64;
    struct line *lines = NULL;
    struct gop **order = NULL;
    int64_t *clock = NULL;
    s.ops = calloc(g->nops + 1, sizeof(*s.ops));
    s.keys = calloc(g->nkeys + 1, sizeof(*s.keys));
    clock = calloc(g->nprocs + 1, sizeof(*clock));
    order = malloc((g->nops + 1) * sizeof(*order));
    lines = malloc(caplines * sizeof(*lines));
    if (!s.ops || !s.keys || !clock || !order || !lines || !g->nprocs || !g->nkeys) {
        rc = g->nprocs && g->nkeys ? -ENOMEM : -EINVAL;
        goto out;
    }
    /* Intervals: each process back to back with gaps; some slow calls. */
    int64_t t0 = 1000 * MS;
    for (unsigned p = 0; p < g->nprocs; p++)
        clock[p] = t0 + (int64_t)below(&s.rs, MS);
    for (size_t i = 0; i < g->nops; i++) {
        unsigned p = (unsigned)below(&s.rs, g->nprocs);
        struct gop *op = &s.ops[i];
        op->p = p;
        op->id = i + 1;
        op->inv = clock[p] + (int64_t)below(&s.rs, 8 * MS);
        int64_t d = MS / 2 + (int64_t)below(&s.rs, 12 * MS);
        if (below(&s.rs, 100) == 0)
            d += 50 * MS;
        op->ret = op->inv + d;
        clock[p] = op->ret;
        op->kind = pick_kind(&s);
        op->at = op->inv + (int64_t)below(&s.rs, (uint64_t)d + 1);
        unsigned r = (unsigned)below(&s.rs, 100);
        if (r < g->info_pct) {
            op->status = GS_INFO;
            unsigned fate = (unsigned)below(&s.rs, 3);
            if (fate == 0)
                op->at = INT64_MAX; /* never took effect */
            else if (fate == 1)
                op->at = op->ret + (int64_t)below(&s.rs, 20 * MS); /* took effect after the timeout */
        } else if (r < g->info_pct + 2) {
            op->status = GS_FAIL;
            op->at = INT64_MAX;
        }
        order[i] = op;
    }
    qsort(order, g->nops, sizeof(*order), cmp_at);
    for (size_t i = 0; i < g->nops && rc == 0; i++)
        rc = apply_op(&s, order[i]);
    if (rc == 0)
        rc = expire_until(&s, INT64_MAX - 100 * MS);
    if (rc < 0)
        goto out;

    uint64_t seq = 0;
    for (size_t i = 0; i < g->nops; i++) {
        lines[nlines++] = (struct line){s.ops[i].inv, seq++, s.ops[i].inv_line};
        lines[nlines++] = (struct line){s.ops[i].ret, seq++, s.ops[i].end_line};
        s.ops[i].inv_line = s.ops[i].end_line = NULL; /* the lines own them now */
    }
    /* Watchers: one on the whole prefix, one on the first key, from revision 1. */
    unsigned nw = g->watches ? 2 : 0;
    for (unsigned w = 1; w <= nw; w++) {
        char k[32];
        keyname(k, sizeof(k), 0);
        size_t need = nlines + s.nlog + 2;
        if (need > caplines) {
            struct line *nl = realloc(lines, need * 2 * sizeof(*nl));
            if (!nl) {
                rc = -ENOMEM;
                goto out;
            }
            lines = nl;
            caplines = need * 2;
        }
        lines[nlines++] = (struct line){t0 - MS, seq++, fmt(&s, "watch %u %" PRId64 " start %s 1", w, t0 - MS,
                                                             w == 1 ? "k/" : k)};
        int64_t last = t0;
        for (size_t i = 0; i < s.nlog; i++) {
            struct gevent *e = &s.log[i];
            if (w == 2 && e->key != 0)
                continue;
            char kk[32], vv[32];
            keyname(kk, sizeof(kk), e->key);
            valname(vv, sizeof(vv), e->val);
            int64_t t = e->at + MS;
            if (t < last)
                t = last;
            last = t;
            lines[nlines++] = (struct line){t, seq++, fmt(&s, "event %u %" PRId64 " %" PRId64 " %s %s %s", w, t,
                                                          e->rev, e->put ? "put" : "del", kk, vv)};
        }
    }
    if (s.nomem) {
        rc = -ENOMEM;
        goto out;
    }
    qsort(lines, nlines, sizeof(*lines), cmp_line);
    bool ok = fprintf(f, "cairn-history 1\nmeta generator cairn-check --generate\nmeta seed %" PRIu64
                         "\nmeta ops %zu\nmeta keys %zu\nmeta procs %u\n",
                      g->seed, g->nops, g->nkeys, g->nprocs) > 0;
    for (unsigned p = 0; p < g->nprocs && ok; p++)
        ok = fprintf(f, "meta pin %u m%u\n", p, p % 3) > 0;
    for (size_t i = 0; i < nlines && ok; i++)
        ok = fprintf(f, "%s\n", lines[i].s) > 0;
    ok = ok && fprintf(f, "logstart 1\n") > 0;
    for (size_t i = 0; i < s.nlog && ok; i++) {
        char kk[32], vv[32];
        keyname(kk, sizeof(kk), s.log[i].key);
        valname(vv, sizeof(vv), s.log[i].val);
        if (s.log[i].put && s.log[i].lease)
            ok = fprintf(f, "log %" PRId64 " put %s %s %" PRId64 "\n", s.log[i].rev, kk, vv, s.log[i].lease) > 0;
        else
            ok = fprintf(f, "log %" PRId64 " %s %s %s\n", s.log[i].rev, s.log[i].put ? "put" : "del", kk, vv) > 0;
    }
    ok = ok && fprintf(f, "logend %" PRId64 "\n", s.rev) > 0;
    if (!ok || ferror(f))
        rc = -EIO;
out:
    for (size_t i = 0; s.ops && i < g->nops; i++) {
        free(s.ops[i].inv_line);
        free(s.ops[i].end_line);
    }
    for (size_t i = 0; lines && i < nlines; i++)
        free(lines[i].s);
    for (size_t i = 0; s.keys && i < g->nkeys; i++)
        free(s.keys[i].ev);
    free(s.ops);
    free(s.keys);
    free(s.log);
    free(s.leases);
    free(clock);
    free(order);
    free(lines);
    return rc;
}
