/*
 * The cairn-history 1 parser and writer (HISTORY.md).  The parser is strict:
 * every record is checked against the format and the first problem ends the
 * parse with its line number.  Strings are interned in one table; arrays of
 * an operation live in an arena freed with the history.
 */
#include "test/jepsen/history.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* --- arena -------------------------------------------------------------------- */

struct arena_chunk {
    struct arena_chunk *next;
    size_t used, size;
    max_align_t data[];
};

struct hist_arena {
    struct arena_chunk *head;
};

static void *arena_alloc(struct hist_arena *a, size_t n)
{
    n = (n + sizeof(max_align_t) - 1) / sizeof(max_align_t) * sizeof(max_align_t);
    if (!a->head || a->head->size - a->head->used < n) {
        size_t size = n > 65536 ? n : 65536;
        struct arena_chunk *c = malloc(sizeof(*c) + size);
        if (!c)
            return NULL;
        c->next = a->head;
        c->used = 0;
        c->size = size;
        a->head = c;
    }
    void *p = (char *)a->head->data + a->head->used;
    a->head->used += n;
    return p;
}

static void arena_free(struct hist_arena *a)
{
    while (a && a->head) {
        struct arena_chunk *c = a->head;
        a->head = c->next;
        free(c);
    }
}

/* --- string table --------------------------------------------------------------- */

struct hist_strtab {
    char **s;
    uint32_t n, cap;
    uint32_t *slots; /* id + 1, 0 empty */
    uint32_t nslots;
};

static uint64_t hash_str(const char *s, size_t len)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

static int strtab_grow(struct hist_strtab *t)
{
    uint32_t ns = t->nslots ? t->nslots * 2 : 1024;
    uint32_t *slots = calloc(ns, sizeof(*slots));
    if (!slots)
        return -ENOMEM;
    for (uint32_t id = 0; id < t->n; id++) {
        uint64_t h = hash_str(t->s[id], strlen(t->s[id]));
        uint32_t i = (uint32_t)h & (ns - 1);
        while (slots[i])
            i = (i + 1) & (ns - 1);
        slots[i] = id + 1;
    }
    free(t->slots);
    t->slots = slots;
    t->nslots = ns;
    return 0;
}

/* The id of s[0..len), interned if new; UINT32_MAX on no memory. */
static uint32_t strtab_intern(struct hist_strtab *t, struct hist_arena *a, const char *s, size_t len,
                              bool add)
{
    if ((t->n + 1) * 2 > t->nslots && strtab_grow(t) < 0)
        return UINT32_MAX;
    uint64_t h = hash_str(s, len);
    uint32_t i = (uint32_t)h & (t->nslots - 1);
    while (t->slots[i]) {
        const char *x = t->s[t->slots[i] - 1];
        if (strncmp(x, s, len) == 0 && x[len] == '\0')
            return t->slots[i] - 1;
        i = (i + 1) & (t->nslots - 1);
    }
    if (!add)
        return UINT32_MAX;
    if (t->n == t->cap) {
        uint32_t nc = t->cap ? t->cap * 2 : 1024;
        char **ns = realloc(t->s, nc * sizeof(*ns));
        if (!ns)
            return UINT32_MAX;
        t->s = ns;
        t->cap = nc;
    }
    char *copy = arena_alloc(a, len + 1);
    if (!copy)
        return UINT32_MAX;
    memcpy(copy, s, len);
    copy[len] = '\0';
    t->s[t->n] = copy;
    t->slots[i] = t->n + 1;
    return t->n++;
}

/* --- u64 -> index map (operation ids, watch ids, pending processes) ------------- */

struct u64map {
    uint64_t *keys;
    uint32_t *vals; /* value + 1; 0 empty */
    size_t n, cap;
};

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

static int u64map_grow(struct u64map *m)
{
    size_t nc = m->cap ? m->cap * 2 : 1024;
    uint64_t *k = calloc(nc, sizeof(*k));
    uint32_t *v = calloc(nc, sizeof(*v));
    if (!k || !v) {
        free(k);
        free(v);
        return -ENOMEM;
    }
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->vals[i])
            continue;
        size_t j = mix64(m->keys[i]) & (nc - 1);
        while (v[j])
            j = (j + 1) & (nc - 1);
        k[j] = m->keys[i];
        v[j] = m->vals[i];
    }
    free(m->keys);
    free(m->vals);
    m->keys = k;
    m->vals = v;
    m->cap = nc;
    return 0;
}

/* The slot of key (found or where it would go); -1 on no memory. */
static long u64map_slot(struct u64map *m, uint64_t key)
{
    if ((m->n + 1) * 2 > m->cap && u64map_grow(m) < 0)
        return -1;
    size_t j = mix64(key) & (m->cap - 1);
    while (m->vals[j] && m->keys[j] != key)
        j = (j + 1) & (m->cap - 1);
    return (long)j;
}

static void u64map_free(struct u64map *m)
{
    free(m->keys);
    free(m->vals);
}

/* --- parser --------------------------------------------------------------------- */

#define MAX_TOKENS_SMALL 64

struct parser {
    struct history *h;
    uint32_t line;
    char *err;
    size_t errlen;
    struct u64map ids;     /* operation id -> ops index */
    struct u64map pending; /* process -> ops index of its open operation */
    struct u64map wids;    /* watch id -> watches index */
    bool saw_logend;
};

static int perr(struct parser *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int perr(struct parser *p, const char *fmt, ...)
{
    int n = snprintf(p->err, p->errlen, "line %" PRIu32 ": ", p->line);
    if (n < 0 || (size_t)n >= p->errlen)
        return -EINVAL;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->err + n, p->errlen - (size_t)n, fmt, ap);
    va_end(ap);
    return -EINVAL;
}

static bool is_key_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '/' || c == ':' || c == '-';
}

static bool is_key_token(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (!is_key_char(*s))
            return false;
    return true;
}

/* A non-negative decimal that fits int64_t. */
static int parse_num(struct parser *p, const char *tok, const char *what, int64_t *out)
{
    if (!*tok)
        return perr(p, "empty %s", what);
    int64_t v = 0;
    for (const char *s = tok; *s; s++) {
        if (*s < '0' || *s > '9')
            return perr(p, "%s '%s' is not a non-negative decimal number", what, tok);
        if (v > (INT64_MAX - (*s - '0')) / 10)
            return perr(p, "%s '%s' is too large", what, tok);
        v = v * 10 + (*s - '0');
    }
    *out = v;
    return 0;
}

static int intern(struct parser *p, const char *s, uint32_t *id)
{
    *id = strtab_intern(p->h->strs, p->h->arena, s, strlen(s), true);
    return *id == UINT32_MAX ? perr(p, "out of memory") : 0;
}

/* A key: key characters, not "~". */
static int parse_key(struct parser *p, const char *tok, const char *what, uint32_t *id)
{
    if (!is_key_token(tok))
        return perr(p, "%s '%s' is not a key (characters [A-Za-z0-9._/:-])", what, tok);
    return intern(p, tok, id);
}

/* A value: key characters, or "~" (absent) when absent_ok. */
static int parse_val(struct parser *p, const char *tok, const char *what, bool absent_ok, uint32_t *id)
{
    if (strcmp(tok, "~") == 0) {
        if (!absent_ok)
            return perr(p, "%s may not be '~' here", what);
        *id = HIST_ABSENT;
        return 0;
    }
    if (!is_key_token(tok))
        return perr(p, "%s '%s' is not a value (characters [A-Za-z0-9._/:-] or '~')", what, tok);
    return intern(p, tok, id);
}

static void note_time(struct history *h, int64_t t)
{
    if (t < h->tmin)
        h->tmin = t;
    if (t > h->tmax)
        h->tmax = t;
}

static uint32_t *arr(struct parser *p, size_t n)
{
    return arena_alloc(p->h->arena, (n ? n : 1) * sizeof(uint32_t));
}

static int grow(void **a, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap)
        return 0;
    size_t nc = *cap ? *cap * 2 : 256;
    while (nc < need)
        nc *= 2;
    void *n = realloc(*a, nc * size);
    if (!n)
        return -ENOMEM;
    *a = n;
    *cap = nc;
    return 0;
}

static const struct {
    const char *name;
    int minargs, maxargs; /* -1: pairs / list */
} kinds[HK_NKINDS] = {
    [HK_PUT] = {"put", 2, 2},       [HK_GET] = {"get", 1, 1},       [HK_SGET] = {"sget", 1, 1},
    [HK_DEL] = {"del", 1, 1},       [HK_CAS] = {"cas", 3, 3},       [HK_MPUT] = {"mput", 2, -1},
    [HK_MGET] = {"mget", 1, -1},    [HK_RANGE] = {"range", 2, 2},   [HK_GRANT] = {"grant", 1, 1},
    [HK_KEEPALIVE] = {"keepalive", 1, 1}, [HK_PUTL] = {"putl", 3, 3}, [HK_REVOKE] = {"revoke", 1, 1},
};

const char *hist_kind_name(enum hist_kind k)
{
    return (unsigned)k < HK_NKINDS ? kinds[k].name : "?";
}

/* Keys of an mput/mget must be distinct: a txn naming a key twice is not one the recorder makes. */
static int distinct_keys(struct parser *p, const uint32_t *keys, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        for (uint32_t j = i + 1; j < n; j++)
            if (keys[i] == keys[j])
                return perr(p, "key '%s' is named twice in one operation", hist_str(p->h, keys[i]));
    return 0;
}

static int parse_inv_args(struct parser *p, struct hist_op *op, char **a, int n)
{
    const char *kn = kinds[op->kind].name;
    int rc = 0;
    if (n < kinds[op->kind].minargs || (kinds[op->kind].maxargs >= 0 && n > kinds[op->kind].maxargs))
        return perr(p, "%s takes %d argument(s), got %d", kn, kinds[op->kind].minargs, n);
    switch (op->kind) {
    case HK_PUT:
    case HK_PUTL:
    case HK_GET:
    case HK_SGET:
    case HK_DEL:
    case HK_CAS:
        op->nkeys = 1;
        op->keys = arr(p, 1);
        if (!op->keys)
            return perr(p, "out of memory");
        if ((rc = parse_key(p, a[0], "key", &op->keys[0])) < 0)
            return rc;
        if (op->kind == HK_PUT || op->kind == HK_PUTL) {
            op->vals = arr(p, 1);
            if (!op->vals)
                return perr(p, "out of memory");
            if ((rc = parse_val(p, a[1], "value", false, &op->vals[0])) < 0)
                return rc;
            if (op->kind == HK_PUTL && (rc = parse_num(p, a[2], "lease", &op->lease)) < 0)
                return rc;
            if (op->kind == HK_PUTL && op->lease == 0)
                return perr(p, "putl lease 0 is not a lease");
        } else if (op->kind == HK_CAS) {
            op->vals = arr(p, 1);
            if (!op->vals)
                return perr(p, "out of memory");
            if ((rc = parse_val(p, a[1], "expected value", true, &op->expect)) < 0 ||
                (rc = parse_val(p, a[2], "new value", false, &op->vals[0])) < 0)
                return rc;
        }
        return 0;
    case HK_MPUT:
        if (n % 2)
            return perr(p, "mput takes key value pairs, got %d tokens", n);
        op->nkeys = (uint32_t)n / 2;
        op->keys = arr(p, op->nkeys);
        op->vals = arr(p, op->nkeys);
        if (!op->keys || !op->vals)
            return perr(p, "out of memory");
        for (uint32_t i = 0; i < op->nkeys; i++)
            if ((rc = parse_key(p, a[2 * i], "key", &op->keys[i])) < 0 ||
                (rc = parse_val(p, a[2 * i + 1], "value", false, &op->vals[i])) < 0)
                return rc;
        return distinct_keys(p, op->keys, op->nkeys);
    case HK_MGET:
        op->nkeys = (uint32_t)n;
        op->keys = arr(p, op->nkeys);
        if (!op->keys)
            return perr(p, "out of memory");
        for (uint32_t i = 0; i < op->nkeys; i++)
            if ((rc = parse_key(p, a[i], "key", &op->keys[i])) < 0)
                return rc;
        return distinct_keys(p, op->keys, op->nkeys);
    case HK_RANGE:
        op->nkeys = 2;
        op->keys = arr(p, 2);
        if (!op->keys)
            return perr(p, "out of memory");
        if ((rc = parse_key(p, a[0], "range start", &op->keys[0])) < 0 ||
            (rc = parse_val(p, a[1], "range end", true, &op->keys[1])) < 0)
            return rc;
        if (op->keys[1] != HIST_ABSENT && strcmp(a[0], a[1]) >= 0)
            return perr(p, "range [%s, %s) is empty", a[0], a[1]);
        return 0;
    case HK_GRANT:
        return parse_num(p, a[0], "TTL", &op->ttl);
    case HK_KEEPALIVE:
    case HK_REVOKE:
        return parse_num(p, a[0], "lease", &op->lease);
    default:
        return perr(p, "internal: kind %d", (int)op->kind);
    }
}

static int parse_ok_result(struct parser *p, struct hist_op *op, char **a, int n)
{
    const char *kn = kinds[op->kind].name;
    int rc;
    int want;
    switch (op->kind) {
    case HK_PUT: case HK_PUTL: case HK_MPUT: case HK_REVOKE: want = 1; break;
    case HK_GET: case HK_SGET: want = 3; break;
    case HK_DEL: want = 2; break;
    case HK_CAS: want = n >= 2 && strcmp(a[1], "0") == 0 ? 3 : 2; break;
    case HK_MGET: want = 1 + (int)op->nkeys; break;
    case HK_RANGE: want = n >= 2 ? n : 2; break;
    case HK_GRANT: want = 2; break;
    case HK_KEEPALIVE: want = 1; break;
    default: return perr(p, "internal: kind %d", (int)op->kind);
    }
    if (n != want)
        return perr(p, "ok of %s (id %" PRIu64 ") needs %d result token(s), got %d", kn, op->id, want, n);
    if (op->kind == HK_GRANT) {
        if ((rc = parse_num(p, a[0], "lease", &op->res_lease)) < 0 ||
            (rc = parse_num(p, a[1], "TTL", &op->res_ttl)) < 0)
            return rc;
        return op->res_lease == 0 ? perr(p, "grant returned lease 0") : 0;
    }
    if (op->kind == HK_KEEPALIVE)
        return parse_num(p, a[0], "TTL", &op->res_ttl);
    if ((rc = parse_num(p, a[0], "REV", &op->rev)) < 0)
        return rc;
    switch (op->kind) {
    case HK_GET:
    case HK_SGET:
        op->rvals = arr(p, 1);
        if (!op->rvals)
            return perr(p, "out of memory");
        if ((rc = parse_val(p, a[1], "value", true, &op->rvals[0])) < 0 ||
            (rc = parse_num(p, a[2], "MODREV", &op->modrev)) < 0)
            return rc;
        if ((op->rvals[0] == HIST_ABSENT) != (op->modrev == 0))
            return perr(p, "%s result: MODREV must be 0 exactly when the value is '~'", kn);
        return 0;
    case HK_DEL:
        if ((rc = parse_num(p, a[1], "N", &op->n)) < 0)
            return rc;
        return op->n > 1 ? perr(p, "del of one key deleted %" PRId64 " keys", op->n) : 0;
    case HK_CAS:
        if ((rc = parse_num(p, a[1], "succeeded flag", &op->n)) < 0)
            return rc;
        if (op->n > 1)
            return perr(p, "cas result flag must be 0 or 1, got '%s'", a[1]);
        if (op->n == 0) {
            op->rvals = arr(p, 1);
            if (!op->rvals)
                return perr(p, "out of memory");
            if ((rc = parse_val(p, a[2], "current value", true, &op->rvals[0])) < 0)
                return rc;
            if (op->rvals[0] == op->expect)
                return perr(p, "cas failed but its current value '%s' is the expected one", a[2]);
        }
        return 0;
    case HK_MGET:
        op->rvals = arr(p, op->nkeys);
        if (!op->rvals)
            return perr(p, "out of memory");
        for (uint32_t i = 0; i < op->nkeys; i++)
            if ((rc = parse_val(p, a[1 + i], "value", true, &op->rvals[i])) < 0)
                return rc;
        return 0;
    case HK_RANGE: {
        if ((rc = parse_num(p, a[1], "N", &op->n)) < 0)
            return rc;
        if (op->n != (n - 2) / 2 || (n - 2) % 2)
            return perr(p, "range result says N=%" PRId64 " but holds %d key/value tokens", op->n, n - 2);
        op->rkeys = arr(p, (size_t)op->n);
        op->rvals = arr(p, (size_t)op->n);
        if (!op->rkeys || !op->rvals)
            return perr(p, "out of memory");
        const char *lo = hist_str(p->h, op->keys[0]);
        const char *hi = op->keys[1] == HIST_ABSENT ? NULL : hist_str(p->h, op->keys[1]);
        for (int64_t i = 0; i < op->n; i++) {
            const char *k = a[2 + 2 * i];
            if ((rc = parse_key(p, k, "key", &op->rkeys[i])) < 0 ||
                (rc = parse_val(p, a[3 + 2 * i], "value", false, &op->rvals[i])) < 0)
                return rc;
            if (strcmp(k, lo) < 0 || (hi && strcmp(k, hi) >= 0))
                return perr(p, "range result key '%s' is outside [%s, %s)", k, lo, hi ? hi : "~");
            if (i > 0 && strcmp(hist_str(p->h, op->rkeys[i - 1]), k) >= 0)
                return perr(p, "range result keys are not in strictly increasing order at '%s'", k);
        }
        return 0;
    }
    default:
        return 0;
    }
}

static int parse_inv(struct parser *p, char **t, int n)
{
    struct history *h = p->h;
    if (n < 5)
        return perr(p, "inv needs P ID T OP, got %d tokens", n);
    int64_t proc, id, time;
    int rc;
    if ((rc = parse_num(p, t[1], "process", &proc)) < 0 || (rc = parse_num(p, t[2], "operation id", &id)) < 0 ||
        (rc = parse_num(p, t[3], "time", &time)) < 0)
        return rc;
    if (proc > 1000000)
        return perr(p, "process %" PRId64 " is not a small integer", proc);
    int k;
    for (k = 0; k < HK_NKINDS; k++)
        if (strcmp(t[4], kinds[k].name) == 0)
            break;
    if (k == HK_NKINDS)
        return perr(p, "unknown operation '%s'", t[4]);
    long slot = u64map_slot(&p->ids, (uint64_t)id);
    if (slot < 0)
        return perr(p, "out of memory");
    if (p->ids.vals[slot])
        return perr(p, "duplicate operation id %" PRId64 " (first invoked on line %" PRIu32 ")", id,
                    h->ops[p->ids.vals[slot] - 1].inv_line);
    long ps = u64map_slot(&p->pending, (uint64_t)proc);
    if (ps < 0)
        return perr(p, "out of memory");
    if (p->pending.vals[ps] && p->pending.vals[ps] != UINT32_MAX)
        return perr(p, "process %" PRId64 " invokes id %" PRId64 " while its id %" PRIu64 " (line %" PRIu32
                       ") has no completion",
                    proc, id, h->ops[p->pending.vals[ps] - 1].id, h->ops[p->pending.vals[ps] - 1].inv_line);
    if (grow((void **)&h->ops, &h->capops, h->nops + 1, sizeof(*h->ops)) < 0)
        return perr(p, "out of memory");
    struct hist_op *op = &h->ops[h->nops];
    memset(op, 0, sizeof(*op));
    op->process = (uint32_t)proc;
    op->id = (uint64_t)id;
    op->inv = time;
    op->ret = HIST_INF;
    op->kind = (enum hist_kind)k;
    op->status = HS_PENDING;
    op->inv_line = p->line;
    op->rev = op->modrev = op->n = op->res_lease = op->res_ttl = -1;
    if ((rc = parse_inv_args(p, op, t + 5, n - 5)) < 0)
        return rc;
    note_time(h, time);
    if (op->process > h->maxprocess)
        h->maxprocess = op->process;
    p->ids.keys[slot] = (uint64_t)id;
    p->ids.vals[slot] = (uint32_t)h->nops + 1;
    p->ids.n++;
    if (!p->pending.vals[ps])
        p->pending.n++;
    p->pending.keys[ps] = (uint64_t)proc;
    p->pending.vals[ps] = (uint32_t)h->nops + 1;
    h->nops++;
    return 0;
}

static int parse_completion(struct parser *p, char **t, int n)
{
    struct history *h = p->h;
    const char *rk = t[0];
    if (n < 4)
        return perr(p, "%s needs P ID T, got %d tokens", rk, n);
    int64_t proc, id, time;
    int rc;
    if ((rc = parse_num(p, t[1], "process", &proc)) < 0 || (rc = parse_num(p, t[2], "operation id", &id)) < 0 ||
        (rc = parse_num(p, t[3], "time", &time)) < 0)
        return rc;
    long slot = u64map_slot(&p->ids, (uint64_t)id);
    if (slot < 0)
        return perr(p, "out of memory");
    if (!p->ids.vals[slot])
        return perr(p, "%s for operation id %" PRId64 " that was never invoked", rk, id);
    struct hist_op *op = &h->ops[p->ids.vals[slot] - 1];
    if (op->status != HS_PENDING)
        return perr(p, "second completion of operation id %" PRId64 " (first on line %" PRIu32 ")", id,
                    op->end_line);
    if (op->process != (uint32_t)proc)
        return perr(p, "%s of operation id %" PRId64 " names process %" PRId64 " but process %" PRIu32
                       " invoked it (line %" PRIu32 ")",
                    rk, id, proc, op->process, op->inv_line);
    if (time < op->inv)
        return perr(p, "operation id %" PRId64 " completes at %" PRId64 ", before its invocation at %" PRId64,
                    id, time, op->inv);
    if (strcmp(rk, "ok") == 0) {
        if ((rc = parse_ok_result(p, op, t + 4, n - 4)) < 0)
            return rc;
        op->status = HS_OK;
        op->ret = time;
    } else {
        if (n != 5)
            return perr(p, "%s needs exactly one CODE after P ID T, got %d tokens", rk, n - 4);
        if ((rc = intern(p, t[4], &op->code)) < 0)
            return rc;
        op->status = strcmp(rk, "fail") == 0 ? HS_FAIL : HS_INFO;
        op->ret = op->status == HS_FAIL ? time : HIST_INF;
    }
    op->end_line = p->line;
    note_time(h, time);
    long ps = u64map_slot(&p->pending, op->process);
    if (ps >= 0 && p->pending.vals[ps]) {
        /* Tombstone: a value that maps nowhere keeps the probe chain intact. */
        p->pending.vals[ps] = UINT32_MAX;
    }
    return 0;
}

static struct hist_watch *find_watch(struct parser *p, int64_t w)
{
    long s = u64map_slot(&p->wids, (uint64_t)w);
    if (s < 0 || !p->wids.vals[s])
        return NULL;
    return &p->h->watches[p->wids.vals[s] - 1];
}

static int parse_watch(struct parser *p, char **t, int n)
{
    struct history *h = p->h;
    int64_t w, time;
    int rc;
    if (n < 4)
        return perr(p, "watch needs W T start|end ..., got %d tokens", n);
    if ((rc = parse_num(p, t[1], "watch id", &w)) < 0 || (rc = parse_num(p, t[2], "time", &time)) < 0)
        return rc;
    note_time(h, time);
    if (strcmp(t[3], "start") == 0) {
        if (n != 6)
            return perr(p, "watch start needs K|PREFIX/ START_REV, got %d tokens", n - 4);
        long s = u64map_slot(&p->wids, (uint64_t)w);
        if (s < 0)
            return perr(p, "out of memory");
        if (p->wids.vals[s])
            return perr(p, "watch %" PRId64 " started twice (first on line %" PRIu32 ")", w,
                        h->watches[p->wids.vals[s] - 1].line);
        if (grow((void **)&h->watches, &h->capwatches, h->nwatches + 1, sizeof(*h->watches)) < 0)
            return perr(p, "out of memory");
        struct hist_watch *wa = &h->watches[h->nwatches];
        memset(wa, 0, sizeof(*wa));
        wa->id = (uint64_t)w;
        wa->start_t = time;
        wa->line = p->line;
        if ((rc = parse_key(p, t[4], "watched key", &wa->key)) < 0 ||
            (rc = parse_num(p, t[5], "START_REV", &wa->start_rev)) < 0)
            return rc;
        wa->prefix = t[4][strlen(t[4]) - 1] == '/';
        p->wids.keys[s] = (uint64_t)w;
        p->wids.vals[s] = (uint32_t)h->nwatches + 1;
        p->wids.n++;
        h->nwatches++;
        return 0;
    }
    if (strcmp(t[3], "end") == 0) {
        if (n != 5)
            return perr(p, "watch end needs one REASON, got %d tokens", n - 4);
        struct hist_watch *wa = find_watch(p, w);
        if (!wa)
            return perr(p, "end of watch %" PRId64 " that never started", w);
        if (wa->ended)
            return perr(p, "watch %" PRId64 " ended twice", w);
        wa->ended = true;
        wa->end_t = time;
        return intern(p, t[4], &wa->reason);
    }
    return perr(p, "watch record '%s' is neither start nor end", t[3]);
}

/* event W T REV put K V | event W T REV del K ~  and  log REV put K V [LEASE] | log REV del K ~ */
static int parse_event_body(struct parser *p, char **t, int n, struct hist_event *e, bool log)
{
    int rc;
    if ((rc = parse_num(p, t[0], "REV", &e->rev)) < 0)
        return rc;
    if (e->rev == 0)
        return perr(p, "revision 0 holds no events");
    if (strcmp(t[1], "put") == 0) {
        if (n != 4 && !(log && n == 5))
            return perr(p, "%s put needs REV put K V%s", log ? "log" : "event", log ? " [LEASE]" : "");
        e->put = true;
        if ((rc = parse_key(p, t[2], "key", &e->key)) < 0 || (rc = parse_val(p, t[3], "value", false, &e->val)) < 0)
            return rc;
        if (n == 5 && (rc = parse_num(p, t[4], "lease", &e->lease)) < 0)
            return rc;
        return 0;
    }
    if (strcmp(t[1], "del") == 0) {
        if (n != 4 || strcmp(t[3], "~") != 0)
            return perr(p, "%s del needs REV del K ~", log ? "log" : "event");
        e->put = false;
        e->val = HIST_ABSENT;
        return parse_key(p, t[2], "key", &e->key);
    }
    return perr(p, "event type '%s' is neither put nor del", t[1]);
}

static int parse_event(struct parser *p, char **t, int n)
{
    int64_t w, time;
    int rc;
    if (n < 7)
        return perr(p, "event needs W T REV put|del K V, got %d tokens", n);
    if ((rc = parse_num(p, t[1], "watch id", &w)) < 0 || (rc = parse_num(p, t[2], "time", &time)) < 0)
        return rc;
    struct hist_watch *wa = find_watch(p, w);
    if (!wa)
        return perr(p, "event of watch %" PRId64 " that never started", w);
    if (wa->ended)
        return perr(p, "event of watch %" PRId64 " after its end", w);
    struct hist_event e = {.t = time, .line = p->line};
    if ((rc = parse_event_body(p, t + 3, n - 3, &e, false)) < 0)
        return rc;
    if (grow((void **)&wa->ev, &wa->capev, wa->nev + 1, sizeof(*wa->ev)) < 0)
        return perr(p, "out of memory");
    wa->ev[wa->nev++] = e;
    note_time(p->h, time);
    return 0;
}

static int parse_log(struct parser *p, char **t, int n)
{
    struct history *h = p->h;
    int rc;
    int64_t rev;
    if (strcmp(t[0], "logstart") == 0) {
        if (n != 2)
            return perr(p, "logstart needs one REV");
        if (h->has_log)
            return perr(p, "second logstart");
        if ((rc = parse_num(p, t[1], "REV", &rev)) < 0)
            return rc;
        h->has_log = true;
        h->logstart = rev < 1 ? 1 : rev;
        return 0;
    }
    if (strcmp(t[0], "logend") == 0) {
        if (n != 2)
            return perr(p, "logend needs one REV");
        if (!h->has_log)
            return perr(p, "logend before logstart");
        if (p->saw_logend)
            return perr(p, "second logend");
        if ((rc = parse_num(p, t[1], "REV", &rev)) < 0)
            return rc;
        p->saw_logend = true;
        h->logend = rev;
        for (size_t i = 0; i < h->nlog; i++)
            if (h->log[i].rev > rev)
                return perr(p, "logend %" PRId64 " is below the log's revision %" PRId64 " (line %" PRIu32 ")",
                            rev, h->log[i].rev, h->log[i].line);
        return 0;
    }
    if (!h->has_log)
        return perr(p, "log record before logstart");
    if (p->saw_logend)
        return perr(p, "log record after logend");
    if (n < 5)
        return perr(p, "log needs REV put|del K V, got %d tokens", n);
    struct hist_event e = {.line = p->line};
    if ((rc = parse_event_body(p, t + 1, n - 1, &e, true)) < 0)
        return rc;
    if (e.rev < h->logstart)
        return perr(p, "log revision %" PRId64 " is below logstart %" PRId64, e.rev, h->logstart);
    if (h->nlog && e.rev < h->log[h->nlog - 1].rev)
        return perr(p, "log revision %" PRId64 " after revision %" PRId64 ": the log is in revision order", e.rev,
                    h->log[h->nlog - 1].rev);
    if (grow((void **)&h->log, &h->caplog, h->nlog + 1, sizeof(*h->log)) < 0)
        return perr(p, "out of memory");
    h->log[h->nlog++] = e;
    return 0;
}

/* The rest of the line after token i (tokens were split in place: rejoin). */
static char *rest_of_line(struct parser *p, char **t, int n, int i)
{
    size_t len = 0;
    for (int k = i; k < n; k++)
        len += strlen(t[k]) + 1;
    char *s = arena_alloc(p->h->arena, len + 1);
    if (!s)
        return NULL;
    s[0] = '\0';
    for (int k = i; k < n; k++) {
        if (k > i)
            strcat(s, " ");
        strcat(s, t[k]);
    }
    return s;
}

static int parse_fault(struct parser *p, char **t, int n)
{
    struct history *h = p->h;
    int rc;
    if (n < 4)
        return perr(p, "fault needs T START|STOP NAME, got %d tokens", n);
    if (grow((void **)&h->faults, &h->capfaults, h->nfaults + 1, sizeof(*h->faults)) < 0)
        return perr(p, "out of memory");
    struct hist_fault *f = &h->faults[h->nfaults];
    memset(f, 0, sizeof(*f));
    f->line = p->line;
    if ((rc = parse_num(p, t[1], "time", &f->t)) < 0)
        return rc;
    if (strcmp(t[2], "START") != 0 && strcmp(t[2], "STOP") != 0)
        return perr(p, "fault phase '%s' is neither START nor STOP", t[2]);
    f->start = t[2][2] == 'A';
    if ((rc = intern(p, t[3], &f->name)) < 0)
        return rc;
    f->args = rest_of_line(p, t, n, 4);
    if (!f->args)
        return perr(p, "out of memory");
    note_time(h, f->t);
    h->nfaults++;
    return 0;
}

static int parse_meta(struct parser *p, char **t, int n)
{
    struct history *h = p->h;
    if (n < 3)
        return perr(p, "meta needs NAME VALUE");
    if (grow((void **)&h->meta, &h->capmeta, h->nmeta + 1, sizeof(*h->meta)) < 0)
        return perr(p, "out of memory");
    struct hist_meta *m = &h->meta[h->nmeta];
    m->name = rest_of_line(p, t, 2, 1);
    m->value = rest_of_line(p, t, n, 2);
    if (!m->name || !m->value)
        return perr(p, "out of memory");
    h->nmeta++;
    return 0;
}

/* Split line in place at single spaces; an empty token is malformed. */
static int split(struct parser *p, char *line, char ***tok, int *cap, int *n)
{
    *n = 0;
    char *s = line;
    for (;;) {
        if (*n == *cap) {
            int nc = *cap * 2;
            char **nt = realloc(*tok, (size_t)nc * sizeof(char *));
            if (!nt)
                return perr(p, "out of memory");
            *tok = nt;
            *cap = nc;
        }
        char *sp = strchr(s, ' ');
        if (sp)
            *sp = '\0';
        if (!*s)
            return perr(p, "empty token at column %zu (tokens are separated by exactly one space)",
                        (size_t)(s - line) + 1);
        (*tok)[(*n)++] = s;
        if (!sp)
            return 0;
        s = sp + 1;
    }
}

static int parse_line(struct parser *p, char *line, char ***tok, int *cap)
{
    for (char *c = line; *c; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7f)
            return perr(p, "control character 0x%02x at column %zu", (unsigned char)*c, (size_t)(c - line) + 1);
    int n, rc;
    if ((rc = split(p, line, tok, cap, &n)) < 0)
        return rc;
    char **t = *tok;
    if (strcmp(t[0], "inv") == 0)
        return parse_inv(p, t, n);
    if (strcmp(t[0], "ok") == 0 || strcmp(t[0], "fail") == 0 || strcmp(t[0], "info") == 0)
        return parse_completion(p, t, n);
    if (strcmp(t[0], "watch") == 0)
        return parse_watch(p, t, n);
    if (strcmp(t[0], "event") == 0)
        return parse_event(p, t, n);
    if (strcmp(t[0], "log") == 0 || strcmp(t[0], "logstart") == 0 || strcmp(t[0], "logend") == 0)
        return parse_log(p, t, n);
    if (strcmp(t[0], "fault") == 0)
        return parse_fault(p, t, n);
    if (strcmp(t[0], "meta") == 0)
        return parse_meta(p, t, n);
    if (strcmp(t[0], "cairn-history") == 0)
        return perr(p, "a second header");
    return perr(p, "unknown record kind '%s'", t[0]);
}

static struct history *hist_new(void)
{
    struct history *h = calloc(1, sizeof(*h));
    if (!h)
        return NULL;
    h->strs = calloc(1, sizeof(*h->strs));
    h->arena = calloc(1, sizeof(*h->arena));
    if (!h->strs || !h->arena ||
        strtab_intern(h->strs, h->arena, "~", 1, true) != HIST_ABSENT) {
        hist_free(h);
        return NULL;
    }
    h->tmin = INT64_MAX;
    h->tmax = 0;
    h->logend = -1;
    return h;
}

int hist_parse_buf(const char *buf, size_t len, struct history **out, char *err, size_t errlen)
{
    char dummy[8];
    if (!err || !errlen) {
        err = dummy;
        errlen = sizeof(dummy);
    }
    err[0] = '\0';
    *out = NULL;
    struct parser p = {.err = err, .errlen = errlen};
    p.h = hist_new();
    int cap = MAX_TOKENS_SMALL;
    char **tok = malloc((size_t)cap * sizeof(char *));
    char *line = malloc(HIST_MAX_LINE + 1);
    int rc = 0;
    if (!p.h || !tok || !line) {
        rc = -ENOMEM;
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    size_t pos = 0;
    bool header = false;
    while (pos < len) {
        p.line++;
        const char *nl = memchr(buf + pos, '\n', len - pos);
        size_t ll = nl ? (size_t)(nl - (buf + pos)) : len - pos;
        if (ll > HIST_MAX_LINE) {
            rc = perr(&p, "line longer than %u bytes", HIST_MAX_LINE);
            goto out;
        }
        if (memchr(buf + pos, '\0', ll)) {
            rc = perr(&p, "NUL byte in the line");
            goto out;
        }
        memcpy(line, buf + pos, ll);
        line[ll] = '\0';
        pos += ll + (nl ? 1 : 0);
        if (!header) {
            if (strcmp(line, "cairn-history 1") != 0) {
                rc = perr(&p, "the first line must be 'cairn-history 1'");
                goto out;
            }
            header = true;
            continue;
        }
        if (ll == 0 || line[0] == '#')
            continue;
        if ((rc = parse_line(&p, line, &tok, &cap)) < 0)
            goto out;
    }
    if (!header) {
        p.line = 1;
        rc = perr(&p, "empty file: the first line must be 'cairn-history 1'");
        goto out;
    }
    if (p.h->has_log && !p.saw_logend) {
        rc = perr(&p, "logstart without logend (the log was cut short)");
        goto out;
    }
    for (size_t i = 0; i < p.h->nops; i++) {
        struct hist_op *op = &p.h->ops[i];
        if (op->status == HS_PENDING) {
            op->status = HS_INFO;
            op->ret = HIST_INF;
            op->code = strtab_intern(p.h->strs, p.h->arena, "unfinished", 10, true);
            p.h->nunfinished++;
        }
    }
    if (p.h->tmin == INT64_MAX)
        p.h->tmin = 0;
    *out = p.h;
    p.h = NULL;
out:
    free(tok);
    free(line);
    u64map_free(&p.ids);
    u64map_free(&p.pending);
    u64map_free(&p.wids);
    hist_free(p.h);
    return rc;
}

int hist_parse_file(const char *path, struct history **out, char *err, size_t errlen)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) {
        int e = errno;
        snprintf(err, errlen, "%s: %s", path, strerror(e));
        return -e;
    }
    char *buf = NULL;
    size_t len = 0, cap = 0;
    int rc = 0;
    for (;;) {
        if (len == cap) {
            size_t nc = cap ? cap * 2 : 1 << 20;
            char *nb = realloc(buf, nc);
            if (!nb) {
                snprintf(err, errlen, "%s: out of memory", path);
                rc = -ENOMEM;
                goto out;
            }
            buf = nb;
            cap = nc;
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0) {
            if (ferror(f)) {
                snprintf(err, errlen, "%s: read error", path);
                rc = -EIO;
                goto out;
            }
            break;
        }
    }
    rc = hist_parse_buf(buf, len, out, err, errlen);
    if (rc < 0 && err && errlen) {
        char tmp[512];
        snprintf(tmp, sizeof(tmp), "%s", err);
        snprintf(err, errlen, "%s: %s", path, tmp);
    }
out:
    free(buf);
    fclose(f);
    return rc;
}

void hist_free(struct history *h)
{
    if (!h)
        return;
    for (size_t i = 0; i < h->nwatches; i++)
        free(h->watches[i].ev);
    free(h->ops);
    free(h->watches);
    free(h->log);
    free(h->faults);
    free(h->meta);
    if (h->strs) {
        free(h->strs->s);
        free(h->strs->slots);
        free(h->strs);
    }
    arena_free(h->arena);
    free(h->arena);
    free(h);
}

const char *hist_str(const struct history *h, uint32_t id)
{
    return id < h->strs->n ? h->strs->s[id] : "?";
}

uint32_t hist_lookup(const struct history *h, const char *s)
{
    return strtab_intern(h->strs, h->arena, s, strlen(s), false);
}

uint32_t hist_nstr(const struct history *h)
{
    return h->strs->n;
}

const char *hist_meta_get(const struct history *h, const char *name)
{
    for (size_t i = 0; i < h->nmeta; i++)
        if (strcmp(h->meta[i].name, name) == 0)
            return h->meta[i].value;
    return NULL;
}

/* --- formatting ------------------------------------------------------------------- */

char *hist_format_time(const struct history *h, int64_t t, char *buf, size_t len)
{
    if (t == HIST_INF)
        snprintf(buf, len, "inf");
    else {
        int64_t d = t - h->tmin;
        snprintf(buf, len, "%s%" PRId64 ".%09" PRId64 "s", d < 0 ? "-" : "", (d < 0 ? -d : d) / 1000000000,
                 (d < 0 ? -d : d) % 1000000000);
    }
    return buf;
}

/* Append to buf at *pos, never past len. */
static void app(char *buf, size_t len, size_t *pos, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void app(char *buf, size_t len, size_t *pos, const char *fmt, ...)
{
    if (*pos >= len)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf + *pos, len - *pos, fmt, ap);
    va_end(ap);
    if (n > 0)
        *pos = *pos + (size_t)n < len ? *pos + (size_t)n : len - 1;
}

char *hist_format_op(const struct history *h, const struct hist_op *op, char *buf, size_t len)
{
    size_t pos = 0;
    if (!len)
        return buf;
    buf[0] = '\0';
    app(buf, len, &pos, "p%" PRIu32 " #%" PRIu64 " %s", op->process, op->id, hist_kind_name(op->kind));
    switch (op->kind) {
    case HK_PUT: case HK_PUTL: case HK_MPUT:
        for (uint32_t i = 0; i < op->nkeys; i++)
            app(buf, len, &pos, " %s %s", hist_str(h, op->keys[i]), hist_str(h, op->vals[i]));
        if (op->kind == HK_PUTL)
            app(buf, len, &pos, " %" PRId64, op->lease);
        break;
    case HK_GET: case HK_SGET: case HK_DEL: case HK_MGET: case HK_RANGE:
        for (uint32_t i = 0; i < op->nkeys; i++)
            app(buf, len, &pos, " %s", hist_str(h, op->keys[i]));
        break;
    case HK_CAS:
        app(buf, len, &pos, " %s %s %s", hist_str(h, op->keys[0]), hist_str(h, op->expect), hist_str(h, op->vals[0]));
        break;
    case HK_GRANT:
        app(buf, len, &pos, " %" PRId64, op->ttl);
        break;
    case HK_KEEPALIVE: case HK_REVOKE:
        app(buf, len, &pos, " %" PRId64, op->lease);
        break;
    default:
        break;
    }
    if (op->status == HS_OK) {
        app(buf, len, &pos, " -> ok");
        switch (op->kind) {
        case HK_GRANT:
            app(buf, len, &pos, " %" PRId64 " %" PRId64, op->res_lease, op->res_ttl);
            break;
        case HK_KEEPALIVE:
            app(buf, len, &pos, " %" PRId64, op->res_ttl);
            break;
        case HK_GET: case HK_SGET:
            app(buf, len, &pos, " %" PRId64 " %s %" PRId64, op->rev, hist_str(h, op->rvals[0]), op->modrev);
            break;
        case HK_DEL:
            app(buf, len, &pos, " %" PRId64 " %" PRId64, op->rev, op->n);
            break;
        case HK_CAS:
            app(buf, len, &pos, " %" PRId64 " %" PRId64, op->rev, op->n);
            if (op->n == 0)
                app(buf, len, &pos, " %s", hist_str(h, op->rvals[0]));
            break;
        case HK_MGET:
            app(buf, len, &pos, " %" PRId64, op->rev);
            for (uint32_t i = 0; i < op->nkeys; i++)
                app(buf, len, &pos, " %s", hist_str(h, op->rvals[i]));
            break;
        case HK_RANGE:
            app(buf, len, &pos, " %" PRId64 " %" PRId64, op->rev, op->n);
            for (int64_t i = 0; i < op->n && i < 8; i++)
                app(buf, len, &pos, " %s %s", hist_str(h, op->rkeys[i]), hist_str(h, op->rvals[i]));
            if (op->n > 8)
                app(buf, len, &pos, " ...");
            break;
        default:
            app(buf, len, &pos, " %" PRId64, op->rev);
            break;
        }
    } else {
        app(buf, len, &pos, " -> %s %s", op->status == HS_FAIL ? "fail" : "info", hist_str(h, op->code));
    }
    char a[32], b[32];
    app(buf, len, &pos, " [%s .. %s]", hist_format_time(h, op->inv, a, sizeof(a)),
        hist_format_time(h, op->ret, b, sizeof(b)));
    return buf;
}

/* --- writer ----------------------------------------------------------------------- */

struct wbuf {
    char *s;
    size_t len, cap;
    bool bad;
};

static void wb_add(struct wbuf *w, const char *s, size_t n)
{
    if (w->bad)
        return;
    if (w->len + n + 2 > w->cap) {
        size_t nc = w->cap ? w->cap * 2 : 256;
        while (nc < w->len + n + 2)
            nc *= 2;
        char *ns = realloc(w->s, nc);
        if (!ns) {
            w->bad = true;
            return;
        }
        w->s = ns;
        w->cap = nc;
    }
    memcpy(w->s + w->len, s, n);
    w->len += n;
}

/* One token, preceded by a space unless it is the first. */
static void wb_tok(struct wbuf *w, const char *tok, bool keylike)
{
    if (!tok || !*tok) {
        w->bad = true;
        return;
    }
    for (const char *c = tok; *c; c++)
        if ((keylike && !is_key_char(*c) && !(c == tok && *c == '~' && !c[1])) ||
            (unsigned char)*c <= ' ' || *c == 0x7f) {
            w->bad = true;
            return;
        }
    if (w->len)
        wb_add(w, " ", 1);
    wb_add(w, tok, strlen(tok));
}

static void wb_num(struct wbuf *w, int64_t v)
{
    char b[32];
    snprintf(b, sizeof(b), "%" PRId64, v);
    wb_tok(w, b, false);
}

static int wb_flush(struct wbuf *w, FILE *f)
{
    int rc = 0;
    if (w->bad)
        rc = -EINVAL;
    else {
        wb_add(w, "\n", 1);
        if (w->bad)
            rc = -ENOMEM;
        else if (fwrite(w->s, 1, w->len, f) != w->len)
            rc = -EIO;
    }
    free(w->s);
    return rc;
}

int hist_write_header(FILE *f)
{
    return fputs("cairn-history 1\n", f) < 0 ? -EIO : 0;
}

int hist_write_meta(FILE *f, const char *name, const char *value)
{
    struct wbuf w = {0};
    wb_tok(&w, "meta", false);
    wb_tok(&w, name, false);
    if (!value || !*value || strchr(value, '\n'))
        w.bad = true;
    else {
        wb_add(&w, " ", 1);
        wb_add(&w, value, strlen(value));
    }
    return wb_flush(&w, f);
}

static void wb_head(struct wbuf *w, const char *kind, unsigned p, uint64_t id, int64_t t)
{
    wb_tok(w, kind, false);
    wb_num(w, p);
    char b[32];
    snprintf(b, sizeof(b), "%" PRIu64, id);
    wb_tok(w, b, false);
    wb_num(w, t);
}

int hist_write_inv(FILE *f, unsigned p, uint64_t id, int64_t t, const char *op, const char *const *args,
                   size_t nargs)
{
    struct wbuf w = {0};
    wb_head(&w, "inv", p, id, t);
    wb_tok(&w, op, false);
    for (size_t i = 0; i < nargs; i++)
        wb_tok(&w, args[i], true);
    return wb_flush(&w, f);
}

int hist_write_ok(FILE *f, unsigned p, uint64_t id, int64_t t, const char *const *res, size_t nres)
{
    struct wbuf w = {0};
    wb_head(&w, "ok", p, id, t);
    for (size_t i = 0; i < nres; i++)
        wb_tok(&w, res[i], true);
    return wb_flush(&w, f);
}

static int write_end(FILE *f, const char *kind, unsigned p, uint64_t id, int64_t t, const char *code)
{
    struct wbuf w = {0};
    wb_head(&w, kind, p, id, t);
    wb_tok(&w, code, false);
    return wb_flush(&w, f);
}

int hist_write_fail(FILE *f, unsigned p, uint64_t id, int64_t t, const char *code)
{
    return write_end(f, "fail", p, id, t, code);
}

int hist_write_info(FILE *f, unsigned p, uint64_t id, int64_t t, const char *code)
{
    return write_end(f, "info", p, id, t, code);
}

int hist_write_watch_start(FILE *f, uint64_t wid, int64_t t, const char *key_or_prefix, int64_t start_rev)
{
    struct wbuf w = {0};
    wb_tok(&w, "watch", false);
    wb_num(&w, (int64_t)wid);
    wb_num(&w, t);
    wb_tok(&w, "start", false);
    wb_tok(&w, key_or_prefix, true);
    if (key_or_prefix && strcmp(key_or_prefix, "~") == 0)
        w.bad = true;
    wb_num(&w, start_rev);
    return wb_flush(&w, f);
}

static void wb_event(struct wbuf *w, int64_t rev, bool put, const char *key, const char *val)
{
    wb_num(w, rev);
    wb_tok(w, put ? "put" : "del", false);
    wb_tok(w, key, true);
    if (key && strcmp(key, "~") == 0)
        w->bad = true;
    if (put) {
        wb_tok(w, val, true);
        if (val && strcmp(val, "~") == 0)
            w->bad = true;
    } else
        wb_tok(w, "~", true);
}

int hist_write_event(FILE *f, uint64_t wid, int64_t t, int64_t rev, bool put, const char *key, const char *val)
{
    struct wbuf w = {0};
    wb_tok(&w, "event", false);
    wb_num(&w, (int64_t)wid);
    wb_num(&w, t);
    wb_event(&w, rev, put, key, val);
    return wb_flush(&w, f);
}

int hist_write_watch_end(FILE *f, uint64_t wid, int64_t t, const char *reason)
{
    struct wbuf w = {0};
    wb_tok(&w, "watch", false);
    wb_num(&w, (int64_t)wid);
    wb_num(&w, t);
    wb_tok(&w, "end", false);
    wb_tok(&w, reason, false);
    return wb_flush(&w, f);
}

int hist_write_logstart(FILE *f, int64_t rev)
{
    struct wbuf w = {0};
    wb_tok(&w, "logstart", false);
    wb_num(&w, rev);
    return wb_flush(&w, f);
}

int hist_write_log(FILE *f, int64_t rev, bool put, const char *key, const char *val, int64_t lease)
{
    struct wbuf w = {0};
    wb_tok(&w, "log", false);
    wb_event(&w, rev, put, key, val);
    if (put && lease)
        wb_num(&w, lease);
    return wb_flush(&w, f);
}

int hist_write_logend(FILE *f, int64_t rev)
{
    struct wbuf w = {0};
    wb_tok(&w, "logend", false);
    wb_num(&w, rev);
    return wb_flush(&w, f);
}

int hist_write_fault(FILE *f, int64_t t, bool start, const char *name, const char *args)
{
    struct wbuf w = {0};
    wb_tok(&w, "fault", false);
    wb_num(&w, t);
    wb_tok(&w, start ? "START" : "STOP", false);
    wb_tok(&w, name, false);
    if (args && *args) {
        if (strchr(args, '\n'))
            w.bad = true;
        wb_add(&w, " ", 1);
        wb_add(&w, args, strlen(args));
    }
    return wb_flush(&w, f);
}
