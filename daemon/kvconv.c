/*
 * daemon/kvconv: client protobufs <-> storage/mvcc.h, and etcd's API-layer
 * checks on client requests (etcd's etcdserver/api/v3rpc/key.go).  It owns
 * nothing beyond the arena the caller hands it; it never touches the store,
 * so every check here is on a request's shape, never on the state.
 */
#include "daemon/kvconv.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/errors.h"

#define DEFAULT_MAX_TXN_OPS 128           /* etcd 3.4's --max-txn-ops */
#define DEFAULT_MAX_REQUEST_BYTES 1572864 /* etcd's --max-request-bytes: 1.5 MiB */
/* Txn nesting the converters follow.  Validation bounds it by max_txn_ops
 * already (each level takes at least one op from its children's limit);
 * this only keeps recursion finite on an entry that skipped validation. */
#define MAX_DEPTH 1024
#define ESCAPE_MAX 64 /* key bytes shown in a message */
#define CANDIDATES_SHOWN 3

/* --- arena ------------------------------------------------------------------ */

#define FIRST_BLOCK ((size_t)64 * 1024)
#define MAX_BLOCK ((size_t)4 * 1024 * 1024)

void kvconv_arena_init(struct kvconv_arena *a)
{
    arena_init(&a->a, a->inline_.bytes, sizeof a->inline_.bytes, FIRST_BLOCK, MAX_BLOCK);
}

void kvconv_arena_free(struct kvconv_arena *a)
{
    arena_free(&a->a);
}

void *kvconv_arena_alloc(struct kvconv_arena *a, size_t size)
{
    return arena_alloc(&a->a, size);
}

/* n elements of size bytes; NULL (without allocating) when n is 0. */
static void *arena_array(struct kvconv_arena *a, size_t n, size_t size, int *rc)
{
    if (n == 0)
        return NULL;
    void *p = n > SIZE_MAX / size ? NULL : kvconv_arena_alloc(a, n * size);
    if (!p)
        *rc = -ENOMEM;
    return p;
}

char *kvconv_arena_strdup(struct kvconv_arena *a, const char *s)
{
    if (!s)
        s = "";
    return arena_dup(&a->a, s, strlen(s));
}

/* --- messages ------------------------------------------------------------- */

/* A bounded string builder: writes what fits, always terminated. */
struct sbuf {
    char *buf;
    size_t cap, len;
};

static void sb_init(struct sbuf *sb, char *buf, size_t cap)
{
    sb->buf = buf;
    sb->cap = buf ? cap : 0;
    sb->len = 0;
    if (sb->cap)
        buf[0] = '\0';
}

static void sb_vprintf(struct sbuf *sb, const char *fmt, va_list ap)
{
    if (sb->cap == 0 || sb->len + 1 >= sb->cap)
        return;
    int n = vsnprintf(sb->buf + sb->len, sb->cap - sb->len, fmt, ap);
    if (n > 0)
        sb->len = sb->len + (size_t)n < sb->cap - 1 ? sb->len + (size_t)n : sb->cap - 1;
}

__attribute__((format(printf, 2, 3))) static void sb_printf(struct sbuf *sb, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sb_vprintf(sb, fmt, ap);
    va_end(ap);
}

static void sb_key(struct sbuf *sb, const void *data, size_t len)
{
    const unsigned char *p = data;
    size_t shown = len < ESCAPE_MAX ? len : ESCAPE_MAX;
    sb_printf(sb, "\"");
    for (size_t i = 0; i < shown; i++) {
        unsigned char c = p[i];
        if (c == '"' || c == '\\')
            sb_printf(sb, "\\%c", c);
        else if (c == '\n')
            sb_printf(sb, "\\n");
        else if (c == '\t')
            sb_printf(sb, "\\t");
        else if (c >= 0x20 && c < 0x7f)
            sb_printf(sb, "%c", c);
        else
            sb_printf(sb, "\\x%02x", c);
    }
    if (shown < len)
        sb_printf(sb, "...\" (%zu bytes)", len);
    else
        sb_printf(sb, "\"");
}

static void sb_bin(struct sbuf *sb, ProtobufCBinaryData b)
{
    sb_key(sb, b.data, b.len);
}

const char *kvconv_escape(const void *key, size_t len, char *buf, size_t buflen)
{
    struct sbuf sb;
    sb_init(&sb, buf, buflen);
    sb_key(&sb, key, len);
    return buf;
}

/* Where an op sits in a txn: success[1].failure[0]; compare[2].  Nodes live
 * on the stack of the walk that made them, or in an arena. */
struct opath {
    const struct opath *up;
    char kind; /* 's'uccess, 'f'ailure, 'c'ompare */
    size_t idx;
};

static void sb_path(struct sbuf *sb, const struct opath *p)
{
    if (!p)
        return;
    if (p->up) {
        sb_path(sb, p->up);
        sb_printf(sb, ".");
    }
    sb_printf(sb, "%s[%zu]", p->kind == 's' ? "success" : p->kind == 'f' ? "failure" : "compare",
              p->idx);
}

/* "put at success[1] (key "a")", or "put (key "a")" outside a txn. */
static void sb_op(struct sbuf *sb, const char *what, const struct opath *p,
                  const ProtobufCBinaryData *key)
{
    sb_printf(sb, "%s", what);
    if (p) {
        sb_printf(sb, " at ");
        sb_path(sb, p);
    }
    if (key && key->len) {
        sb_printf(sb, " (key ");
        sb_bin(sb, *key);
        sb_printf(sb, ")");
    }
}

/* Start a message for code: its own text, then ": " and the details. */
static int sb_fail(struct sbuf *sb, int code)
{
    sb->len = 0;
    if (sb->cap)
        sb->buf[0] = '\0';
    sb_printf(sb, "%s: ", cairn_strerror(code));
    return -code;
}

/* --- shape checks ------------------------------------------------------------------- */

struct vctx {
    struct sbuf sb;
    uint32_t max_ops;
    bool limits; /* count txn ops (a client request), or not (an applied entry) */
};

static int bad_number(struct vctx *v, const char *what, const struct opath *p,
                      const ProtobufCBinaryData *key, const char *field, int64_t n)
{
    int rc = sb_fail(&v->sb, CAIRN_E_INVALID_ARGUMENT);
    sb_op(&v->sb, what, p, key);
    sb_printf(&v->sb, " has %s %lld; it may not be negative", field, (long long)n);
    return rc;
}

static int bad_enum(struct vctx *v, const char *what, const struct opath *p,
                    const ProtobufCBinaryData *key, const char *field, int n)
{
    int rc = sb_fail(&v->sb, CAIRN_E_INVALID_ARGUMENT);
    sb_op(&v->sb, what, p, key);
    sb_printf(&v->sb, " has unknown %s %d", field, n);
    return rc;
}

static int no_key(struct vctx *v, const char *what, const struct opath *p)
{
    int rc = sb_fail(&v->sb, CAIRN_E_KEY_EMPTY);
    sb_op(&v->sb, what, p, NULL);
    return rc;
}

static int check_range(struct vctx *v, const Cairn__RangeRequest *r, const struct opath *p)
{
    static const char what[] = "range";
    if (r->key.len == 0)
        return no_key(v, what, p);
    if (r->limit < 0)
        return bad_number(v, what, p, &r->key, "limit", r->limit);
    if (r->revision < 0)
        return bad_number(v, what, p, &r->key, "revision", r->revision);
    if (r->min_mod_revision < 0)
        return bad_number(v, what, p, &r->key, "min_mod_revision", r->min_mod_revision);
    if (r->max_mod_revision < 0)
        return bad_number(v, what, p, &r->key, "max_mod_revision", r->max_mod_revision);
    if (r->min_create_revision < 0)
        return bad_number(v, what, p, &r->key, "min_create_revision", r->min_create_revision);
    if (r->max_create_revision < 0)
        return bad_number(v, what, p, &r->key, "max_create_revision", r->max_create_revision);
    if ((unsigned)r->sort_order > CAIRN__RANGE_REQUEST__SORT_ORDER__DESCEND)
        return bad_enum(v, what, p, &r->key, "sort_order", (int)r->sort_order);
    if ((unsigned)r->sort_target > CAIRN__RANGE_REQUEST__SORT_TARGET__VALUE)
        return bad_enum(v, what, p, &r->key, "sort_target", (int)r->sort_target);
    return 0;
}

static int check_put(struct vctx *v, const Cairn__PutRequest *r, const struct opath *p)
{
    int rc;
    if (r->key.len == 0)
        return no_key(v, "put", p);
    if (r->ignore_value && r->value.len) {
        rc = sb_fail(&v->sb, CAIRN_E_VALUE_PROVIDED);
        sb_op(&v->sb, "put", p, &r->key);
        sb_printf(&v->sb, " has a %zu-byte value; send none with ignore_value", r->value.len);
        return rc;
    }
    if (r->ignore_lease && r->lease) {
        rc = sb_fail(&v->sb, CAIRN_E_LEASE_PROVIDED);
        sb_op(&v->sb, "put", p, &r->key);
        sb_printf(&v->sb, " has lease %lld; send 0 with ignore_lease", (long long)r->lease);
        return rc;
    }
    return 0;
}

static int check_delete(struct vctx *v, const Cairn__DeleteRangeRequest *r, const struct opath *p)
{
    return r->key.len ? 0 : no_key(v, "delete-range", p);
}

static const char *const cmp_target_name[] = {"VERSION", "CREATE", "MOD", "VALUE", "LEASE"};
static const char *const union_name[] = {"version", "create_revision", "mod_revision", "value",
                                         "lease"};

/* The target_union case a Compare of this target must set. */
static Cairn__Compare__TargetUnionCase union_for(Cairn__Compare__CompareTarget t)
{
    return (Cairn__Compare__TargetUnionCase)(CAIRN__COMPARE__TARGET_UNION_VERSION + (int)t);
}

/*
 * etcd takes the number from whichever union field is set and the target
 * from the target field, so target MOD with version = 5 silently compares
 * mod_revision with 5, and a compare with no union field compares with 0.
 * Both are client mistakes we would rather name: Cairn refuses them.
 */
static int check_compare(struct vctx *v, const Cairn__Compare *c, const struct opath *p)
{
    static const char what[] = "compare";
    int rc;
    if (c->key.len == 0)
        return no_key(v, what, p);
    if ((unsigned)c->result > CAIRN__COMPARE__COMPARE_RESULT__NOT_EQUAL)
        return bad_enum(v, what, p, &c->key, "result", (int)c->result);
    if ((unsigned)c->target > CAIRN__COMPARE__COMPARE_TARGET__LEASE)
        return bad_enum(v, what, p, &c->key, "target", (int)c->target);
    if (c->target_union_case == union_for(c->target))
        return 0;
    rc = sb_fail(&v->sb, CAIRN_E_INVALID_ARGUMENT);
    sb_op(&v->sb, what, p, &c->key);
    sb_printf(&v->sb, " has target %s but ", cmp_target_name[c->target]);
    unsigned u = (unsigned)c->target_union_case - CAIRN__COMPARE__TARGET_UNION_VERSION;
    if (c->target_union_case == CAIRN__COMPARE__TARGET_UNION__NOT_SET)
        sb_printf(&v->sb, "no value to compare with");
    else if (u < 5)
        sb_printf(&v->sb, "sets %s", union_name[u]);
    else
        sb_printf(&v->sb, "an unknown target_union %d", (int)c->target_union_case);
    sb_printf(&v->sb, "; set %s", union_name[c->target]);
    return rc;
}

static int check_txn(struct vctx *v, const Cairn__TxnRequest *t, const struct opath *at,
                     int64_t limit, int depth);

static int check_op(struct vctx *v, const Cairn__RequestOp *op, const struct opath *p,
                    int64_t limit, int depth)
{
    switch (op ? op->request_case : CAIRN__REQUEST_OP__REQUEST__NOT_SET) {
    case CAIRN__REQUEST_OP__REQUEST_REQUEST_RANGE:
        if (op->request_range)
            return check_range(v, op->request_range, p);
        break;
    case CAIRN__REQUEST_OP__REQUEST_REQUEST_PUT:
        if (op->request_put)
            return check_put(v, op->request_put, p);
        break;
    case CAIRN__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE:
        if (op->request_delete_range)
            return check_delete(v, op->request_delete_range, p);
        break;
    case CAIRN__REQUEST_OP__REQUEST_REQUEST_TXN:
        if (op->request_txn)
            return check_txn(v, op->request_txn, p, limit, depth + 1);
        break;
    default:
        break;
    }
    /* etcd answers an empty op with "key not found", which misleads */
    int rc = sb_fail(&v->sb, CAIRN_E_INVALID_ARGUMENT);
    sb_printf(&v->sb, "the op at ");
    sb_path(&v->sb, p);
    sb_printf(&v->sb, " carries no request (range, put, delete-range or txn)");
    return rc;
}

/*
 * etcd 3.4's checkTxnRequest: a txn's largest list (compares, success or
 * failure) may hold `limit` entries; each op of its lists, nested txns
 * included, is checked against limit minus that largest list.
 */
static int check_txn(struct vctx *v, const Cairn__TxnRequest *t, const struct opath *at,
                     int64_t limit, int depth)
{
    int rc;
    if (depth > MAX_DEPTH) {
        rc = sb_fail(&v->sb, CAIRN_E_INVALID_ARGUMENT);
        sb_printf(&v->sb, "txns nested deeper than %d levels", MAX_DEPTH);
        return rc;
    }
    size_t opc = t->n_compare;
    const char *largest = "compares";
    if (t->n_success > opc) {
        opc = t->n_success;
        largest = "success operations";
    }
    if (t->n_failure > opc) {
        opc = t->n_failure;
        largest = "failure operations";
    }
    if (v->limits && (int64_t)opc > limit) {
        rc = sb_fail(&v->sb, CAIRN_E_TOO_MANY_TXN_OPS);
        sb_printf(&v->sb, "the txn");
        if (at) {
            sb_printf(&v->sb, " at ");
            sb_path(&v->sb, at);
        }
        sb_printf(&v->sb, " has %zu %s, over its limit of %lld", opc, largest, (long long)limit);
        if (at)
            sb_printf(&v->sb, " (--max-txn-ops %u less %lld taken by the txns enclosing it)",
                      v->max_ops, (long long)(v->max_ops - limit));
        return rc;
    }
    for (size_t i = 0; i < t->n_compare; i++) {
        struct opath p = {at, 'c', i};
        if (!t->compare[i]) {
            rc = sb_fail(&v->sb, CAIRN_E_INVALID_ARGUMENT);
            sb_path(&v->sb, &p);
            sb_printf(&v->sb, " is empty");
            return rc;
        }
        if ((rc = check_compare(v, t->compare[i], &p)) < 0)
            return rc;
    }
    for (int br = 0; br < 2; br++) {
        Cairn__RequestOp **ops = br ? t->failure : t->success;
        size_t n = br ? t->n_failure : t->n_success;
        for (size_t i = 0; i < n; i++) {
            struct opath p = {at, br ? 'f' : 's', i};
            if ((rc = check_op(v, ops[i], &p, limit - (int64_t)opc, depth)) < 0)
                return rc;
        }
    }
    return 0;
}

/* --- duplicate keys in a txn ---------------------------------------------------------------- */

/*
 * etcd's checkIntervals decides, per list of ops, from the children up: a
 * put may not share its key with another put or lie in a delete-range of the
 * same txn, except across the success and failure branches of one txn (only
 * one runs).  Its exact rule, which mvcc_apply follows too, is asymmetric:
 * at each list, a put inside nested txn i is checked against the list's own
 * delete-ranges and those inside nested txns before i, not after.  We give
 * each entry of a list a tag and compare tags:
 *   puts   own put at op i: tpp = i+1 (unique), tpd = +inf (checked against every delete)
 *          put from nested txn i, either branch: tpp = tpd = i+1
 *   deletes own delete-range: tag 0;  from nested txn i: tag i+1
 * Two puts conflict if their keys match and their tpp differ; a put and a
 * delete-range conflict if the key is in the range and tpd > tag.  Sorting
 * the puts by key and keeping a range-max tree over tpd makes each list cost
 * O(n log n) where etcd's interval tree and Cairn's apply-time check would
 * be quadratic on a big txn.  Unlike etcd, a range_end of "\0" is "every key
 * from key" here as everywhere else (etcd's check misses those deletes).
 */

struct dput {
    ProtobufCBinaryData key;
    uint64_t tpp, tpd;
    const struct opath *at;
};

struct ddel {
    ProtobufCBinaryData key, end;
    uint64_t tag;
    const struct opath *at;
};

struct dset {
    struct dput *puts; /* by key, one per key */
    size_t n_puts;
    struct ddel *dels;
    size_t n_dels;
};

struct dctx {
    struct kvconv_arena *a;
    struct sbuf *sb;
    ProtobufCBinaryData key; /* the key of the conflict found */
};

static int bincmp(ProtobufCBinaryData x, ProtobufCBinaryData y)
{
    size_t n = x.len < y.len ? x.len : y.len;
    int c = n ? memcmp(x.data, y.data, n) : 0;
    return c ? c : (x.len > y.len) - (x.len < y.len);
}

static int put_order(const void *x, const void *y)
{
    const struct dput *p = x, *q = y;
    int c = bincmp(p->key, q->key);
    return c ? c : (p->tpp > q->tpp) - (p->tpp < q->tpp);
}

/* First put whose key is >= key (> key if after). */
static size_t put_bound(const struct dput *puts, size_t n, ProtobufCBinaryData key, bool after)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = bincmp(puts[mid].key, key);
        if (c < 0 || (after && c == 0))
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Range-max over puts[].tpd: tree[m + i] = i, inner nodes the index of the larger child. */
static size_t tpd_max(const struct dput *puts, const size_t *tree, size_t m, size_t l, size_t r)
{
    size_t best = SIZE_MAX;
    for (l += m, r += m; l < r; l >>= 1, r >>= 1) {
        if (l & 1) {
            size_t i = tree[l++];
            if (best == SIZE_MAX || puts[i].tpd > puts[best].tpd)
                best = i;
        }
        if (r & 1) {
            size_t i = tree[--r];
            if (best == SIZE_MAX || puts[i].tpd > puts[best].tpd)
                best = i;
        }
    }
    return best;
}

static int dup_found(struct dctx *d, const struct dput *p)
{
    int rc = sb_fail(d->sb, CAIRN_E_DUPLICATE_KEY);
    d->key = p->key;
    sb_printf(d->sb, "key ");
    sb_bin(d->sb, p->key);
    sb_printf(d->sb, " is put at ");
    sb_path(d->sb, p->at);
    return rc;
}

static int dup_check_list(struct dctx *d, struct dput *puts, size_t np, const struct ddel *dels,
                          size_t nd)
{
    int rc = 0;
    if (np > 1)
        qsort(puts, np, sizeof(*puts), put_order);
    for (size_t j = 1; j < np; j++) {
        if (puts[j - 1].tpp != puts[j].tpp && bincmp(puts[j - 1].key, puts[j].key) == 0) {
            rc = dup_found(d, &puts[j - 1]);
            sb_printf(d->sb, " and at ");
            sb_path(d->sb, puts[j].at);
            return rc;
        }
    }
    if (np == 0 || nd == 0)
        return 0;
    size_t *tree = arena_array(d->a, 2 * np, sizeof(*tree), &rc);
    if (!tree)
        return rc;
    for (size_t i = 0; i < np; i++)
        tree[np + i] = i;
    for (size_t k = np - 1; k > 0; k--) {
        size_t l = tree[2 * k], r = tree[2 * k + 1];
        tree[k] = puts[r].tpd > puts[l].tpd ? r : l;
    }
    for (size_t i = 0; i < nd; i++) {
        const struct ddel *del = &dels[i];
        size_t lo = put_bound(puts, np, del->key, false), hi;
        bool from_key = del->end.len == 1 && del->end.data[0] == 0;
        if (del->end.len == 0)
            hi = put_bound(puts, np, del->key, true);
        else if (from_key)
            hi = np;
        else if (bincmp(del->end, del->key) <= 0)
            continue; /* an empty range deletes nothing */
        else
            hi = put_bound(puts, np, del->end, false);
        if (lo >= hi)
            continue;
        size_t best = tpd_max(puts, tree, np, lo, hi);
        if (puts[best].tpd <= del->tag)
            continue;
        rc = dup_found(d, &puts[best]);
        sb_printf(d->sb, " and deleted by the delete-range at ");
        sb_path(d->sb, del->at);
        if (del->end.len) {
            sb_printf(d->sb, " of ");
            sb_bin(d->sb, del->key);
            if (from_key) {
                sb_printf(d->sb, " and every key after");
            } else {
                sb_printf(d->sb, " up to ");
                sb_bin(d->sb, del->end);
            }
        }
        return rc;
    }
    return 0;
}

static int dup_list(struct dctx *d, Cairn__RequestOp *const *ops, size_t n, char kind,
                    const struct opath *up, int depth, struct dset *out)
{
    int rc = 0;
    memset(out, 0, sizeof(*out));
    if (n == 0)
        return 0;
    struct opath *at = arena_array(d->a, n, sizeof(*at), &rc);
    struct dset *kids = arena_array(d->a, 2 * n, sizeof(*kids), &rc);
    if (rc < 0)
        return rc;
    size_t np = 0, nd = 0;
    for (size_t i = 0; i < n; i++) {
        const Cairn__RequestOp *op = ops[i];
        at[i] = (struct opath){up, kind, i};
        memset(&kids[2 * i], 0, 2 * sizeof(*kids));
        if (!op)
            continue;
        if (op->request_case == CAIRN__REQUEST_OP__REQUEST_REQUEST_PUT && op->request_put) {
            np++;
        } else if (op->request_case == CAIRN__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE &&
                   op->request_delete_range) {
            nd++;
        } else if (op->request_case == CAIRN__REQUEST_OP__REQUEST_REQUEST_TXN && op->request_txn &&
                   depth < MAX_DEPTH) {
            const Cairn__TxnRequest *t = op->request_txn;
            if ((rc = dup_list(d, t->success, t->n_success, 's', &at[i], depth + 1, &kids[2 * i])) <
                    0 ||
                (rc = dup_list(d, t->failure, t->n_failure, 'f', &at[i], depth + 1,
                               &kids[2 * i + 1])) < 0)
                return rc;
            np += kids[2 * i].n_puts + kids[2 * i + 1].n_puts;
            nd += kids[2 * i].n_dels + kids[2 * i + 1].n_dels;
        }
    }
    struct dput *puts = arena_array(d->a, np, sizeof(*puts), &rc);
    struct ddel *dels = arena_array(d->a, nd, sizeof(*dels), &rc);
    if (rc < 0)
        return rc;
    np = nd = 0;
    for (size_t i = 0; i < n; i++) {
        const Cairn__RequestOp *op = ops[i];
        if (!op)
            continue;
        if (op->request_case == CAIRN__REQUEST_OP__REQUEST_REQUEST_PUT && op->request_put) {
            puts[np++] = (struct dput){op->request_put->key, i + 1, UINT64_MAX, &at[i]};
        } else if (op->request_case == CAIRN__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE &&
                   op->request_delete_range) {
            const Cairn__DeleteRangeRequest *r = op->request_delete_range;
            dels[nd++] = (struct ddel){r->key, r->range_end, 0, &at[i]};
        }
        for (int b = 0; b < 2; b++) {
            const struct dset *k = &kids[2 * i + b];
            for (size_t j = 0; j < k->n_puts; j++) {
                puts[np] = k->puts[j];
                puts[np].tpp = puts[np].tpd = i + 1;
                np++;
            }
            for (size_t j = 0; j < k->n_dels; j++) {
                dels[nd] = k->dels[j];
                dels[nd++].tag = i + 1;
            }
        }
    }
    if ((rc = dup_check_list(d, puts, np, dels, nd)) < 0)
        return rc;
    /* the parent needs each key once */
    size_t u = 0;
    for (size_t j = 0; j < np; j++)
        if (u == 0 || bincmp(puts[u - 1].key, puts[j].key) != 0)
            puts[u++] = puts[j];
    *out = (struct dset){puts, u, dels, nd};
    return 0;
}

/* The whole txn: its two branches are checked apart, as in etcd's Txn handler. */
static int dup_check(const Cairn__TxnRequest *t, struct sbuf *sb, ProtobufCBinaryData *key)
{
    struct kvconv_arena a;
    struct dctx d = {.a = &a, .sb = sb};
    struct dset s;
    int rc;
    kvconv_arena_init(&a);
    if ((rc = dup_list(&d, t->success, t->n_success, 's', NULL, 0, &s)) == 0)
        rc = dup_list(&d, t->failure, t->n_failure, 'f', NULL, 0, &s);
    kvconv_arena_free(&a);
    if (rc == -ENOMEM) {
        sb_fail(sb, ENOMEM);
        sb_printf(sb, "checking the txn for duplicate keys");
    }
    if (key)
        *key = rc == -CAIRN_E_DUPLICATE_KEY ? d.key : (ProtobufCBinaryData){0, NULL};
    return rc;
}

/* --- decoding ------------------------------------------------------------------------ */

/* One varint at *pos; 0 if cut short or longer than 10 bytes. */
static int wire_varint(const uint8_t *p, size_t len, size_t *pos, uint64_t *out)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < 10 && *pos < len; i++) {
        uint8_t b = p[(*pos)++];
        v |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            *out = v;
            return 1;
        }
    }
    return 0;
}

/* Walk the wire format of a message of type d (NULL: unknown, not descended
 * into) the way protobuf-c will, but without recursing past the limit.
 * Returns NULL if well formed, else what is wrong. */
static const char *wire_check(const ProtobufCMessageDescriptor *d, const uint8_t *p, size_t len,
                              unsigned depth)
{
    if (depth > KVCONV_MAX_DEPTH)
        return "messages nested too deep";
    for (size_t pos = 0; pos < len;) {
        uint64_t key, v;
        if (!wire_varint(p, len, &pos, &key))
            return "a field key is cut short or over 10 bytes";
        if (key >> 3 == 0 || key >> 3 > 536870911u)
            return "a field number is 0 or over 2^29-1";
        switch (key & 7) {
        case 0:
            if (!wire_varint(p, len, &pos, &v))
                return "a varint is cut short or over 10 bytes";
            break;
        case 1:
        case 5: {
            size_t n = (key & 7) == 1 ? 8 : 4;
            if (len - pos < n)
                return "a fixed-size field is cut short";
            pos += n;
            break;
        }
        case 2: {
            if (!wire_varint(p, len, &pos, &v) || v > len - pos)
                return "a length-delimited field is cut short";
            const ProtobufCFieldDescriptor *f =
                d ? protobuf_c_message_descriptor_get_field(d, (unsigned)(key >> 3)) : NULL;
            if (f && f->type == PROTOBUF_C_TYPE_MESSAGE) {
                const char *why = wire_check(f->descriptor, p + pos, (size_t)v, depth + 1);
                if (why)
                    return why;
            }
            pos += (size_t)v;
            break;
        }
        default:
            return "a field has a wire type proto3 does not use";
        }
    }
    return NULL;
}

/* Decode a message of type d after wire_check; NULL with the reason in why
 * ("<subject> does not decode as a <type> protobuf (N bytes): ..."). */
static void *strict_unpack(const ProtobufCMessageDescriptor *d, ProtobufCAllocator *al, const char *subject,
                           const void *data, size_t len, char *why, size_t whylen)
{
    const char *bad = wire_check(d, data, len, 1);
    void *m = bad ? NULL : protobuf_c_message_unpack(d, al, len, data);
    if (!m && why && whylen)
        snprintf(why, whylen, "%s does not decode as a %s protobuf (%zu bytes)%s%s", subject, d->name, len,
                 bad ? ": " : "", bad ? bad : "");
    return m;
}

static void *pb_arena_alloc(void *arena, size_t size)
{
    return kvconv_arena_alloc(arena, size);
}

static void pb_arena_free(void *arena, void *p)
{
    (void)arena; /* everything goes with the arena */
    (void)p;
}

Cairn__Request *kvconv_request_unpack(const void *data, size_t len, struct kvconv_arena *a, char *why,
                                      size_t whylen)
{
    ProtobufCAllocator al = {.alloc = pb_arena_alloc, .free = pb_arena_free, .allocator_data = a};
    return strict_unpack(&cairn__request__descriptor, a ? &al : NULL, "the request", data, len, why, whylen);
}

Cairnint__RaftRequest *kvconv_entry_unpack(const void *data, size_t len, struct kvconv_arena *a, char *why,
                                           size_t whylen)
{
    ProtobufCAllocator al = {.alloc = pb_arena_alloc, .free = pb_arena_free, .allocator_data = a};
    return strict_unpack(&cairnint__raft_request__descriptor, a ? &al : NULL, "it", data, len, why, whylen);
}

/* --- kvconv_validate ---------------------------------------------------------------- */

static int empty_body(struct vctx *v, const char *name)
{
    int rc = sb_fail(&v->sb, CAIRN_E_INVALID_ARGUMENT);
    sb_printf(&v->sb, "the request's %s body is missing", name);
    return rc;
}

static int check_history(struct vctx *v, const Cairn__HistoryRequest *r)
{
    static const char what[] = "history";
    if (r->key.len == 0)
        return no_key(v, what, NULL);
    if (r->min_revision < 0)
        return bad_number(v, what, NULL, &r->key, "min_revision", r->min_revision);
    if (r->max_revision < 0)
        return bad_number(v, what, NULL, &r->key, "max_revision", r->max_revision);
    if (r->limit < 0)
        return bad_number(v, what, NULL, &r->key, "limit", r->limit);
    if (r->after_revision < 0)
        return bad_number(v, what, NULL, &r->key, "after_revision", r->after_revision);
    if (r->after_sub < 0)
        return bad_number(v, what, NULL, &r->key, "after_sub", r->after_sub);
    return 0;
}

static int check_watch(struct vctx *v, const Cairn__WatchCreateRequest *r)
{
    static const char what[] = "watch";
    if (r->key.len == 0)
        return no_key(v, what, NULL);
    if (r->start_revision < 0)
        return bad_number(v, what, NULL, &r->key, "start_revision", r->start_revision);
    for (size_t i = 0; i < r->n_filters; i++)
        if ((unsigned)r->filters[i] > CAIRN__WATCH_CREATE_REQUEST__FILTER_TYPE__NODELETE)
            return bad_enum(v, what, NULL, &r->key, "filter", (int)r->filters[i]);
    return 0;
}

static int check_body(struct vctx *v, const Cairn__Request *req)
{
    int rc;
    switch (req->body_case) {
    case CAIRN__REQUEST__BODY__NOT_SET:
        /* fields this version does not know: most likely a newer client's request type */
        if (req->base.n_unknown_fields) {
            rc = sb_fail(&v->sb, CAIRN_E_UNSUPPORTED);
            sb_printf(&v->sb, "the request holds no body this member knows (a request type of a newer version?)");
        } else {
            rc = sb_fail(&v->sb, CAIRN_E_INVALID_ARGUMENT);
            sb_printf(&v->sb, "the request has no body: set one of its fields");
        }
        return rc;
    case CAIRN__REQUEST__BODY_RANGE:
        return req->range ? check_range(v, req->range, NULL) : empty_body(v, "range");
    case CAIRN__REQUEST__BODY_PUT:
        return req->put ? check_put(v, req->put, NULL) : empty_body(v, "put");
    case CAIRN__REQUEST__BODY_DELETE_RANGE:
        return req->delete_range ? check_delete(v, req->delete_range, NULL)
                                 : empty_body(v, "delete_range");
    case CAIRN__REQUEST__BODY_TXN:
        return req->txn ? check_txn(v, req->txn, NULL, v->max_ops, 0) : empty_body(v, "txn");
    case CAIRN__REQUEST__BODY_HISTORY:
        return req->history ? check_history(v, req->history) : empty_body(v, "history");
    case CAIRN__REQUEST__BODY_WATCH_CREATE:
        return req->watch_create ? check_watch(v, req->watch_create)
                                 : empty_body(v, "watch_create");
    case CAIRN__REQUEST__BODY_LEASE_GRANT:
        if (!req->lease_grant)
            return empty_body(v, "lease_grant");
        if (req->lease_grant->ttl < 0) {
            rc = sb_fail(&v->sb, CAIRN_E_INVALID_ARGUMENT);
            sb_printf(&v->sb, "lease grant with a negative TTL (%lld s)",
                      (long long)req->lease_grant->ttl);
            return rc;
        }
        return 0;
    case CAIRN__REQUEST__BODY_ALARM:
        if (!req->alarm)
            return empty_body(v, "alarm");
        if ((unsigned)req->alarm->action > CAIRN__ALARM_REQUEST__ALARM_ACTION__DEACTIVATE)
            return bad_enum(v, "alarm request", NULL, NULL, "action", (int)req->alarm->action);
        if ((unsigned)req->alarm->alarm > CAIRN__ALARM_TYPE__CORRUPT)
            return bad_enum(v, "alarm request", NULL, NULL, "alarm type", (int)req->alarm->alarm);
        return 0;
    case CAIRN__REQUEST__BODY_HASH_KV:
        if (!req->hash_kv)
            return empty_body(v, "hash_kv");
        return req->hash_kv->revision < 0
                   ? bad_number(v, "hash-kv", NULL, NULL, "revision", req->hash_kv->revision)
                   : 0;
    case CAIRN__REQUEST__BODY_ROLE_GRANT_PERMISSION: {
        if (!req->role_grant_permission)
            return empty_body(v, "role_grant_permission");
        const Cairn__Permission *perm = req->role_grant_permission->perm;
        if (!perm) {
            rc = sb_fail(&v->sb, CAIRN_E_INVALID_ARGUMENT);
            sb_printf(&v->sb, "role grant-permission without a permission");
            return rc;
        }
        if ((unsigned)perm->perm_type > CAIRN__PERMISSION__TYPE__READWRITE)
            return bad_enum(v, "permission", NULL, &perm->key, "type", (int)perm->perm_type);
        return 0;
    }
    default:
        return 0;
    }
}

int kvconv_validate(const Cairn__Request *req, const struct kvconv_limits *lim, char *msg,
                    size_t msglen)
{
    struct vctx v = {.limits = true};
    uint64_t max_bytes = DEFAULT_MAX_REQUEST_BYTES;
    int rc;
    v.max_ops = DEFAULT_MAX_TXN_OPS;
    if (lim && lim->max_txn_ops)
        v.max_ops = lim->max_txn_ops;
    if (lim && lim->max_request_bytes)
        max_bytes = lim->max_request_bytes;
    sb_init(&v.sb, msg, msglen);
    if (!req) {
        rc = sb_fail(&v.sb, CAIRN_E_INVALID_ARGUMENT);
        sb_printf(&v.sb, "no request");
        return rc;
    }
    if ((rc = check_body(&v, req)) < 0)
        return rc;
    /* after the shape checks: they refuse the NULLs packing would trip on */
    size_t size = lim && lim->wire_bytes ? lim->wire_bytes : protobuf_c_message_get_packed_size(&req->base);
    if (size > max_bytes) {
        rc = sb_fail(&v.sb, CAIRN_E_REQUEST_TOO_LARGE);
        sb_printf(&v.sb, "the request is %zu bytes, over the limit of %llu (--max-request-bytes)",
                  size, (unsigned long long)max_bytes);
        return rc;
    }
    /* last, as in etcd: the size and op limits bound its work */
    if (req->body_case == CAIRN__REQUEST__BODY_TXN)
        return dup_check(req->txn, &v.sb, NULL);
    return 0;
}

/* --- requests ------------------------------------------------------------------------ */

static struct mvcc_buf mbuf(ProtobufCBinaryData b)
{
    return (struct mvcc_buf){b.data, b.len};
}

static ProtobufCBinaryData pbin(struct mvcc_buf b)
{
    return (ProtobufCBinaryData){b.len, (uint8_t *)b.data};
}

void kvconv_range_req(const Cairn__RangeRequest *in, struct mvcc_range_req *out)
{
    *out = (struct mvcc_range_req){
        .key = mbuf(in->key),
        .range_end = mbuf(in->range_end),
        .revision = in->revision,
        .limit = in->limit,
        .sort_order = (enum mvcc_sort_order)in->sort_order,
        .sort_target = (enum mvcc_sort_target)in->sort_target,
        .keys_only = in->keys_only,
        .count_only = in->count_only,
        .min_mod_revision = in->min_mod_revision,
        .max_mod_revision = in->max_mod_revision,
        .min_create_revision = in->min_create_revision,
        .max_create_revision = in->max_create_revision,
    };
}

void kvconv_history_req(const Cairn__HistoryRequest *in, struct mvcc_history_req *out)
{
    *out = (struct mvcc_history_req){
        .key = mbuf(in->key),
        .range_end = mbuf(in->range_end),
        .min_revision = in->min_revision,
        .max_revision = in->max_revision,
        .limit = in->limit,
        .after_main = in->after_revision,
        .after_sub = in->after_sub,
    };
}

static void put_req(const Cairn__PutRequest *in, struct mvcc_put_req *out)
{
    *out = (struct mvcc_put_req){
        .key = mbuf(in->key),
        .value = mbuf(in->value),
        .lease = in->lease,
        .prev_kv = in->prev_kv,
        .ignore_value = in->ignore_value,
        .ignore_lease = in->ignore_lease,
    };
}

static void delete_req(const Cairn__DeleteRangeRequest *in, struct mvcc_delete_req *out)
{
    *out = (struct mvcc_delete_req){
        .key = mbuf(in->key), .range_end = mbuf(in->range_end), .prev_kv = in->prev_kv};
}

static int txn_req(const Cairn__TxnRequest *in, struct mvcc_txn_req *out, struct kvconv_arena *a,
                   int depth);

static int compare_req(const Cairn__Compare *in, struct mvcc_compare *out)
{
    /* the same rule as check_compare: the union must match the target */
    if (!in || (unsigned)in->target > CAIRN__COMPARE__COMPARE_TARGET__LEASE ||
        in->target_union_case != union_for(in->target))
        return -CAIRN_E_MALFORMED;
    *out = (struct mvcc_compare){
        .result = (enum mvcc_cmp_result)in->result,
        .target = (enum mvcc_cmp_target)in->target,
        .key = mbuf(in->key),
        .range_end = mbuf(in->range_end),
    };
    switch (in->target_union_case) {
    case CAIRN__COMPARE__TARGET_UNION_VERSION:
        out->number = in->version;
        break;
    case CAIRN__COMPARE__TARGET_UNION_CREATE_REVISION:
        out->number = in->create_revision;
        break;
    case CAIRN__COMPARE__TARGET_UNION_MOD_REVISION:
        out->number = in->mod_revision;
        break;
    case CAIRN__COMPARE__TARGET_UNION_LEASE:
        out->number = in->lease;
        break;
    case CAIRN__COMPARE__TARGET_UNION_VALUE:
        out->value = mbuf(in->value);
        break;
    default:
        return -CAIRN_E_MALFORMED;
    }
    return 0;
}

static int op_req(const Cairn__RequestOp *in, struct mvcc_request *out, struct kvconv_arena *a,
                  int depth)
{
    memset(out, 0, sizeof(*out));
    switch (in ? in->request_case : CAIRN__REQUEST_OP__REQUEST__NOT_SET) {
    case CAIRN__REQUEST_OP__REQUEST_REQUEST_RANGE:
        if (!in->request_range)
            break;
        out->type = MVCC_REQ_RANGE;
        kvconv_range_req(in->request_range, &out->range);
        return 0;
    case CAIRN__REQUEST_OP__REQUEST_REQUEST_PUT:
        if (!in->request_put)
            break;
        out->type = MVCC_REQ_PUT;
        put_req(in->request_put, &out->put);
        return 0;
    case CAIRN__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE:
        if (!in->request_delete_range)
            break;
        out->type = MVCC_REQ_DELETE_RANGE;
        delete_req(in->request_delete_range, &out->del);
        return 0;
    case CAIRN__REQUEST_OP__REQUEST_REQUEST_TXN:
        if (!in->request_txn)
            break;
        out->type = MVCC_REQ_TXN;
        return txn_req(in->request_txn, &out->txn, a, depth + 1);
    default:
        break;
    }
    return -CAIRN_E_MALFORMED;
}

static int txn_req(const Cairn__TxnRequest *in, struct mvcc_txn_req *out, struct kvconv_arena *a,
                   int depth)
{
    int rc = 0;
    memset(out, 0, sizeof(*out));
    if (depth > MAX_DEPTH)
        return -CAIRN_E_MALFORMED;
    struct mvcc_compare *cmps = arena_array(a, in->n_compare, sizeof(*cmps), &rc);
    struct mvcc_request *succ = arena_array(a, in->n_success, sizeof(*succ), &rc);
    struct mvcc_request *fail = arena_array(a, in->n_failure, sizeof(*fail), &rc);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < in->n_compare && rc == 0; i++)
        rc = compare_req(in->compare[i], &cmps[i]);
    for (size_t i = 0; i < in->n_success && rc == 0; i++)
        rc = op_req(in->success[i], &succ[i], a, depth);
    for (size_t i = 0; i < in->n_failure && rc == 0; i++)
        rc = op_req(in->failure[i], &fail[i], a, depth);
    if (rc < 0)
        return rc;
    *out = (struct mvcc_txn_req){cmps, in->n_compare, succ, in->n_success, fail, in->n_failure};
    return 0;
}

bool kvconv_write_entry(const Cairn__Request *req, Cairnint__RaftRequest *rr)
{
    switch (req->body_case) {
    case CAIRN__REQUEST__BODY_PUT:
        rr->request_case = CAIRNINT__RAFT_REQUEST__REQUEST_PUT;
        rr->put = req->put;
        return true;
    case CAIRN__REQUEST__BODY_DELETE_RANGE:
        rr->request_case = CAIRNINT__RAFT_REQUEST__REQUEST_DELETE_RANGE;
        rr->delete_range = req->delete_range;
        return true;
    case CAIRN__REQUEST__BODY_TXN:
        rr->request_case = CAIRNINT__RAFT_REQUEST__REQUEST_TXN;
        rr->txn = req->txn;
        return true;
    case CAIRN__REQUEST__BODY_COMPACT:
        rr->request_case = CAIRNINT__RAFT_REQUEST__REQUEST_COMPACTION;
        rr->compaction = req->compact;
        return true;
    default:
        return false;
    }
}

int kvconv_entry_req(const Cairnint__RaftRequest *rr, struct mvcc_request *out,
                     struct kvconv_arena *a)
{
    int rc = -CAIRN_E_MALFORMED;
    memset(out, 0, sizeof(*out));
    out->type = MVCC_REQ_NOOP;
    switch (rr ? rr->request_case : CAIRNINT__RAFT_REQUEST__REQUEST__NOT_SET) {
    case CAIRNINT__RAFT_REQUEST__REQUEST_PUT:
        if (!rr->put)
            break;
        out->type = MVCC_REQ_PUT;
        put_req(rr->put, &out->put);
        return 0;
    case CAIRNINT__RAFT_REQUEST__REQUEST_DELETE_RANGE:
        if (!rr->delete_range)
            break;
        out->type = MVCC_REQ_DELETE_RANGE;
        delete_req(rr->delete_range, &out->del);
        return 0;
    case CAIRNINT__RAFT_REQUEST__REQUEST_TXN:
        if (!rr->txn || (rc = txn_req(rr->txn, &out->txn, a, 0)) < 0)
            break;
        out->type = MVCC_REQ_TXN;
        return 0;
    case CAIRNINT__RAFT_REQUEST__REQUEST_COMPACTION:
        if (!rr->compaction)
            break;
        out->type = MVCC_REQ_COMPACT;
        out->compact.revision = rr->compaction->revision;
        return 0;
    case CAIRNINT__RAFT_REQUEST__REQUEST_LEASE_GRANT:
        if (!rr->lease_grant)
            break;
        out->type = MVCC_REQ_LEASE_GRANT;
        out->lease_grant = (struct mvcc_lease_grant_req){rr->lease_grant->id, rr->lease_grant->ttl};
        return 0;
    case CAIRNINT__RAFT_REQUEST__REQUEST_LEASE_REVOKE:
        if (!rr->lease_revoke)
            break;
        out->type = MVCC_REQ_LEASE_REVOKE;
        out->lease_revoke.id = rr->lease_revoke->id;
        return 0;
    case CAIRNINT__RAFT_REQUEST__REQUEST_LEASE_CHECKPOINT: {
        const Cairnint__LeaseCheckpointRequest *in = rr->lease_checkpoint;
        if (!in)
            break;
        rc = 0;
        struct mvcc_lease_checkpoint *cps = arena_array(a, in->n_checkpoints, sizeof(*cps), &rc);
        for (size_t i = 0; i < in->n_checkpoints && rc == 0; i++) {
            if (!in->checkpoints[i])
                rc = -CAIRN_E_MALFORMED;
            else
                cps[i] = (struct mvcc_lease_checkpoint){in->checkpoints[i]->id,
                                                        in->checkpoints[i]->remaining_ttl};
        }
        if (rc < 0)
            break;
        out->type = MVCC_REQ_LEASE_CHECKPOINT;
        out->lease_checkpoint = (struct mvcc_lease_checkpoint_req){cps, in->n_checkpoints};
        return 0;
    }
    case CAIRNINT__RAFT_REQUEST__REQUEST_ALARM:
    case CAIRNINT__RAFT_REQUEST__REQUEST_MEMBER_UPDATE:
    case CAIRNINT__RAFT_REQUEST__REQUEST_MEMBER_ATTRIBUTES:
    case CAIRNINT__RAFT_REQUEST__REQUEST_HASH_CHECK:
    case CAIRNINT__RAFT_REQUEST__REQUEST_HASH_REPORT:
    case CAIRNINT__RAFT_REQUEST__REQUEST_AUTH_ENABLE:
    case CAIRNINT__RAFT_REQUEST__REQUEST_AUTH_DISABLE:
    case CAIRNINT__RAFT_REQUEST__REQUEST_USER_ADD:
    case CAIRNINT__RAFT_REQUEST__REQUEST_USER_DELETE:
    case CAIRNINT__RAFT_REQUEST__REQUEST_USER_CHANGE_PASSWORD:
    case CAIRNINT__RAFT_REQUEST__REQUEST_USER_GRANT_ROLE:
    case CAIRNINT__RAFT_REQUEST__REQUEST_USER_REVOKE_ROLE:
    case CAIRNINT__RAFT_REQUEST__REQUEST_ROLE_ADD:
    case CAIRNINT__RAFT_REQUEST__REQUEST_ROLE_DELETE:
    case CAIRNINT__RAFT_REQUEST__REQUEST_ROLE_GRANT_PERMISSION:
    case CAIRNINT__RAFT_REQUEST__REQUEST_ROLE_REVOKE_PERMISSION:
    case CAIRNINT__RAFT_REQUEST__REQUEST_AUTH_TOKEN_GRANT:
        /* a no-op for the store unless a node observer's before_apply turns it into records (auth: daemon/auth.c) */
        memset(out, 0, sizeof(*out));
        out->type = MVCC_REQ_NOOP;
        return 0;
    default:
        break;
    }
    memset(out, 0, sizeof(*out));
    out->type = MVCC_REQ_NOOP;
    return rc == -ENOMEM ? rc : -CAIRN_E_MALFORMED;
}

/* --- responses ----------------------------------------------------------------------- */

void kvconv_kv(const struct mvcc_kv *in, Cairn__KeyValue *out)
{
    cairn__key_value__init(out);
    out->key = pbin(in->key);
    out->value = pbin(in->value);
    out->create_revision = in->create_revision;
    out->mod_revision = in->mod_revision;
    out->version = in->version;
    out->lease = in->lease;
}

static Cairn__KeyValue *kv_new(const struct mvcc_kv *in, struct kvconv_arena *a)
{
    Cairn__KeyValue *kv = kvconv_arena_alloc(a, sizeof(*kv));
    if (kv)
        kvconv_kv(in, kv);
    return kv;
}

/* n KeyValues in one piece, and the pointer array protobuf-c wants. */
static int kv_array(const struct mvcc_kv *in, size_t n, Cairn__KeyValue ***out,
                    struct kvconv_arena *a)
{
    int rc = 0;
    Cairn__KeyValue *kvs = arena_array(a, n, sizeof(*kvs), &rc);
    Cairn__KeyValue **ptrs = arena_array(a, n, sizeof(*ptrs), &rc);
    *out = NULL;
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < n; i++) {
        kvconv_kv(&in[i], &kvs[i]);
        ptrs[i] = &kvs[i];
    }
    *out = ptrs;
    return 0;
}

int kvconv_range_resp(const struct mvcc_range_resp *in, Cairn__RangeResponse *out,
                      struct kvconv_arena *a)
{
    cairn__range_response__init(out);
    out->more = in->more;
    out->count = in->count;
    int rc = kv_array(in->kvs, in->n_kvs, &out->kvs, a);
    if (rc == 0)
        out->n_kvs = in->n_kvs;
    return rc;
}

int kvconv_history_resp(const struct mvcc_history_result *in, bool keys_only,
                        Cairn__HistoryResponse *out, struct kvconv_arena *a)
{
    int rc = 0;
    size_t n = in->n_rows;
    cairn__history_response__init(out);
    out->more = in->more;
    out->next_revision = in->next_main;
    out->next_sub = in->next_sub;
    out->compact_revision = in->compact_revision;
    Cairn__HistoryRecord *recs = arena_array(a, n, sizeof(*recs), &rc);
    Cairn__HistoryRecord **ptrs = arena_array(a, n, sizeof(*ptrs), &rc);
    Cairn__KeyValue *kvs = arena_array(a, n, sizeof(*kvs), &rc);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < n; i++) {
        const struct mvcc_history_row *row = &in->rows[i];
        cairn__history_record__init(&recs[i]);
        kvconv_kv(&row->kv, &kvs[i]);
        if (keys_only)
            kvs[i].value = (ProtobufCBinaryData){0, NULL};
        recs[i].kv = &kvs[i];
        recs[i].sub = row->sub_revision;
        recs[i].tombstone = row->tombstone;
        ptrs[i] = &recs[i];
    }
    out->records = ptrs;
    out->n_records = n;
    return 0;
}

int kvconv_event(const struct mvcc_event *in, bool prev_kv, Cairn__Event *out,
                 struct kvconv_arena *a)
{
    cairn__event__init(out);
    out->type = in->type == MVCC_EVENT_DELETE ? CAIRN__EVENT__EVENT_TYPE__DELETE
                                              : CAIRN__EVENT__EVENT_TYPE__PUT;
    if (!(out->kv = kv_new(&in->kv, a)))
        return -ENOMEM;
    if (prev_kv && in->prev_kv && !(out->prev_kv = kv_new(in->prev_kv, a)))
        return -ENOMEM;
    return 0;
}

static int put_resp(const struct mvcc_put_resp *in, Cairn__PutResponse **out,
                    struct kvconv_arena *a)
{
    Cairn__PutResponse *r = *out = kvconv_arena_alloc(a, sizeof(*r));
    if (!r)
        return -ENOMEM;
    cairn__put_response__init(r);
    if (in->prev_kv && !(r->prev_kv = kv_new(in->prev_kv, a)))
        return -ENOMEM;
    return 0;
}

static int delete_resp(const struct mvcc_delete_resp *in, Cairn__DeleteRangeResponse **out,
                       struct kvconv_arena *a)
{
    Cairn__DeleteRangeResponse *r = *out = kvconv_arena_alloc(a, sizeof(*r));
    if (!r)
        return -ENOMEM;
    cairn__delete_range_response__init(r);
    r->deleted = in->deleted;
    int rc = kv_array(in->prev_kvs, in->n_prev_kvs, &r->prev_kvs, a);
    if (rc == 0)
        r->n_prev_kvs = in->n_prev_kvs;
    return rc;
}

static int range_resp_new(const struct mvcc_range_resp *in, Cairn__RangeResponse **out,
                          struct kvconv_arena *a)
{
    Cairn__RangeResponse *r = *out = kvconv_arena_alloc(a, sizeof(*r));
    return r ? kvconv_range_resp(in, r, a) : -ENOMEM;
}

/* A txn's responses, nested txns included (mvcc's depth is the request's). */
static int txn_resp(const struct mvcc_txn_resp *in, Cairn__TxnResponse **out,
                    struct kvconv_arena *a)
{
    int rc = 0;
    size_t n = in->n_responses;
    Cairn__TxnResponse *r = *out = kvconv_arena_alloc(a, sizeof(*r));
    if (!r)
        return -ENOMEM;
    cairn__txn_response__init(r);
    r->succeeded = in->succeeded;
    Cairn__ResponseOp *ops = arena_array(a, n, sizeof(*ops), &rc);
    Cairn__ResponseOp **ptrs = arena_array(a, n, sizeof(*ptrs), &rc);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const struct mvcc_response *sub = &in->responses[i];
        Cairn__ResponseOp *op = &ops[i];
        cairn__response_op__init(op);
        ptrs[i] = op;
        switch (sub->type) {
        case MVCC_REQ_RANGE:
            op->response_case = CAIRN__RESPONSE_OP__RESPONSE_RESPONSE_RANGE;
            rc = range_resp_new(&sub->range, &op->response_range, a);
            break;
        case MVCC_REQ_PUT:
            op->response_case = CAIRN__RESPONSE_OP__RESPONSE_RESPONSE_PUT;
            rc = put_resp(&sub->put, &op->response_put, a);
            break;
        case MVCC_REQ_DELETE_RANGE:
            op->response_case = CAIRN__RESPONSE_OP__RESPONSE_RESPONSE_DELETE_RANGE;
            rc = delete_resp(&sub->del, &op->response_delete_range, a);
            break;
        case MVCC_REQ_TXN:
            op->response_case = CAIRN__RESPONSE_OP__RESPONSE_RESPONSE_TXN;
            rc = txn_resp(&sub->txn, &op->response_txn, a);
            break;
        default:
            break; /* mvcc puts nothing else in a txn */
        }
    }
    if (rc < 0)
        return rc;
    r->responses = ptrs;
    r->n_responses = n;
    return 0;
}

/* --- errors ------------------------------------------------------------------------- */

/* Ops of a txn that can have caused a state error mvcc reports without saying where. */
struct suspects {
    struct sbuf *sb;
    int code;
    int64_t rev; /* COMPACTED: the compact revision; FUTURE_REV: the current one */
    size_t n;
    ProtobufCBinaryData key;
};

static void suspect(struct suspects *s, const Cairn__RequestOp *op, const struct opath *p)
{
    const Cairn__PutRequest *put =
        op->request_case == CAIRN__REQUEST_OP__REQUEST_REQUEST_PUT ? op->request_put : NULL;
    const Cairn__RangeRequest *rng =
        op->request_case == CAIRN__REQUEST_OP__REQUEST_REQUEST_RANGE ? op->request_range : NULL;
    bool hit = false;
    if (s->code == CAIRN_E_LEASE_NOT_FOUND)
        hit = put && put->lease;
    else if (s->code == CAIRN_E_KEY_NOT_FOUND)
        hit = put && (put->ignore_value || put->ignore_lease);
    else if (s->code == CAIRN_E_COMPACTED)
        hit = rng && rng->revision > 0 && rng->revision < s->rev;
    else if (s->code == CAIRN_E_FUTURE_REV)
        hit = rng && rng->revision > s->rev;
    if (!hit || ++s->n > CANDIDATES_SHOWN)
        return;
    if (s->n == 1)
        s->key = put ? put->key : rng->key;
    else
        sb_printf(s->sb, "; or ");
    if (s->code == CAIRN_E_LEASE_NOT_FOUND) {
        sb_printf(s->sb, "lease %lld of the ", (long long)put->lease);
        sb_op(s->sb, "put", p, &put->key);
    } else if (s->code == CAIRN_E_KEY_NOT_FOUND) {
        sb_op(s->sb, put->ignore_value ? "put with ignore_value" : "put with ignore_lease", p,
              &put->key);
    } else {
        sb_op(s->sb, "range", p, &rng->key);
        sb_printf(s->sb, " at revision %lld", (long long)rng->revision);
    }
}

static void suspects_walk(struct suspects *s, const Cairn__TxnRequest *t, const struct opath *up,
                          int depth)
{
    if (depth > MAX_DEPTH)
        return;
    for (int br = 0; br < 2; br++) {
        Cairn__RequestOp **ops = br ? t->failure : t->success;
        size_t n = br ? t->n_failure : t->n_success;
        for (size_t i = 0; i < n; i++) {
            struct opath p = {up, br ? 'f' : 's', i};
            if (!ops[i])
                continue;
            suspect(s, ops[i], &p);
            if (ops[i]->request_case == CAIRN__REQUEST_OP__REQUEST_REQUEST_TXN &&
                ops[i]->request_txn)
                suspects_walk(s, ops[i]->request_txn, &p, depth + 1);
        }
    }
}

static void txn_error(struct sbuf *sb, const Cairn__TxnRequest *t,
                      const struct mvcc_response *resp, ProtobufCBinaryData *key)
{
    int code = -resp->err;
    switch (code) {
    case CAIRN_E_DUPLICATE_KEY:
        if (dup_check(t, sb, key) == -code)
            return;
        break;
    case CAIRN_E_KEY_EMPTY:
    case CAIRN_E_VALUE_PROVIDED:
    case CAIRN_E_LEASE_PROVIDED:
    case CAIRN_E_INVALID_ARGUMENT: {
        struct vctx v = {.sb = *sb, .limits = false};
        if (check_txn(&v, t, NULL, INT64_MAX, 0) == -code) {
            *sb = v.sb;
            return;
        }
        break;
    }
    case CAIRN_E_LEASE_NOT_FOUND:
    case CAIRN_E_KEY_NOT_FOUND:
    case CAIRN_E_COMPACTED:
    case CAIRN_E_FUTURE_REV: {
        struct suspects s = {.sb = sb, .code = code};
        s.rev = code == CAIRN_E_COMPACTED ? resp->compact_revision : resp->revision;
        sb_fail(sb, code);
        suspects_walk(&s, t, NULL, 0);
        if (s.n > CANDIDATES_SHOWN)
            sb_printf(sb, " (and %zu more)", s.n - CANDIDATES_SHOWN);
        if (code == CAIRN_E_COMPACTED)
            sb_printf(sb, "%sthe store is compacted at revision %lld", s.n ? "; " : "",
                      (long long)resp->compact_revision);
        else if (code == CAIRN_E_FUTURE_REV)
            sb_printf(sb, "%sthe current revision is %lld", s.n ? "; " : "",
                      (long long)resp->revision);
        if (s.n == 1)
            *key = s.key;
        return;
    }
    default:
        break;
    }
    sb_fail(sb, code);
    sb_printf(sb, "in txn");
}

/* The message for a failed write, naming what it concerns; *key if one key. */
static void write_error(struct sbuf *sb, const Cairnint__RaftRequest *rr,
                        const struct mvcc_response *resp, ProtobufCBinaryData *key)
{
    int code = -resp->err;
    switch (rr ? rr->request_case : CAIRNINT__RAFT_REQUEST__REQUEST__NOT_SET) {
    case CAIRNINT__RAFT_REQUEST__REQUEST_PUT: {
        const Cairn__PutRequest *p = rr->put;
        struct vctx v = {.sb = *sb};
        if (!p)
            break;
        *key = p->key;
        if (check_put(&v, p, NULL) == -code) {
            *sb = v.sb;
            return;
        }
        sb_fail(sb, code);
        if (code == CAIRN_E_LEASE_NOT_FOUND)
            sb_printf(sb, "lease %lld of the ", (long long)p->lease);
        sb_op(sb, code == CAIRN_E_KEY_NOT_FOUND && p->ignore_value   ? "put with ignore_value"
                  : code == CAIRN_E_KEY_NOT_FOUND && p->ignore_lease ? "put with ignore_lease"
                                                                      : "put",
              NULL, &p->key);
        return;
    }
    case CAIRNINT__RAFT_REQUEST__REQUEST_DELETE_RANGE:
        if (!rr->delete_range)
            break;
        *key = rr->delete_range->key;
        sb_fail(sb, code);
        sb_op(sb, "delete-range", NULL, &rr->delete_range->key);
        return;
    case CAIRNINT__RAFT_REQUEST__REQUEST_TXN:
        if (!rr->txn)
            break;
        txn_error(sb, rr->txn, resp, key);
        return;
    case CAIRNINT__RAFT_REQUEST__REQUEST_COMPACTION:
        if (!rr->compaction || (code != CAIRN_E_COMPACTED && code != CAIRN_E_FUTURE_REV))
            break;
        sb_fail(sb, code);
        sb_printf(sb, "compaction at revision %lld; ", (long long)rr->compaction->revision);
        if (code == CAIRN_E_COMPACTED)
            sb_printf(sb, "the store is already compacted at revision %lld",
                      (long long)resp->compact_revision);
        else
            sb_printf(sb, "the current revision is %lld", (long long)resp->revision);
        return;
    case CAIRNINT__RAFT_REQUEST__REQUEST_LEASE_GRANT:
        if (!rr->lease_grant)
            break;
        sb_fail(sb, code);
        if (code == CAIRN_E_LEASE_NOT_FOUND && rr->lease_grant->id == 0)
            sb_printf(sb, "lease ID 0 cannot be granted");
        else if (code == CAIRN_E_LEASE_TTL_TOO_LARGE)
            sb_printf(sb, "TTL %lld s of lease %lld", (long long)rr->lease_grant->ttl,
                      (long long)rr->lease_grant->id);
        else
            sb_printf(sb, "lease %lld", (long long)rr->lease_grant->id);
        return;
    case CAIRNINT__RAFT_REQUEST__REQUEST_LEASE_REVOKE:
        if (!rr->lease_revoke)
            break;
        sb_fail(sb, code);
        sb_printf(sb, "lease %lld", (long long)rr->lease_revoke->id);
        return;
    default:
        break;
    }
    sb_init(sb, sb->buf, sb->cap);
    sb_printf(sb, "%s", cairn_strerror(code));
}

/* Never written: the reply when even the error cannot be allocated. */
static Cairn__Error enomem_error = {
    .base = PROTOBUF_C_MESSAGE_INIT(&cairn__error__descriptor),
    .code = ENOMEM,
    .message = (char *)"out of memory building the reply",
};

static void error_set(Cairn__Response *out, int code, char *message, struct kvconv_arena *a)
{
    Cairn__Error *e = message ? kvconv_arena_alloc(a, sizeof(*e)) : NULL;
    out->body_case = CAIRN__RESPONSE__BODY__NOT_SET;
    if (!e) {
        out->error = &enomem_error;
        return;
    }
    cairn__error__init(e);
    e->code = (uint32_t)(code < 0 ? -code : code);
    e->message = message;
    out->error = e;
}

void kvconv_error(Cairn__Response *out, int code, const char *message, struct kvconv_arena *a)
{
    error_set(out, code, kvconv_arena_strdup(a, message ? message : cairn_strerror(code)), a);
}

void kvconv_errorf(Cairn__Response *out, int code, struct kvconv_arena *a, const char *fmt, ...)
{
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    char *m = n < 0 ? NULL : kvconv_arena_alloc(a, (size_t)n + 1);
    if (m)
        vsnprintf(m, (size_t)n + 1, fmt, ap2);
    va_end(ap2);
    va_end(ap);
    error_set(out, code, m, a);
}

int kvconv_header(Cairn__Response *out, uint64_t cluster_id, uint64_t member_id, int64_t revision,
                  uint64_t raft_term, struct kvconv_arena *a)
{
    Cairn__ResponseHeader *h = kvconv_arena_alloc(a, sizeof(*h));
    if (!h)
        return -ENOMEM;
    cairn__response_header__init(h);
    h->cluster_id = cluster_id;
    h->member_id = member_id;
    h->revision = revision;
    h->raft_term = raft_term;
    out->header = h;
    return 0;
}

/* --- kvconv_write_resp ------------------------------------------------------------------ */

static int write_error_resp(const Cairnint__RaftRequest *rr, const struct mvcc_response *resp,
                            Cairn__Response *out, struct kvconv_arena *a)
{
    char buf[1024];
    struct sbuf sb;
    ProtobufCBinaryData key = {0, NULL};
    sb_init(&sb, buf, sizeof(buf));
    write_error(&sb, rr, resp, &key);
    kvconv_error(out, resp->err, buf, a);
    if (out->error == &enomem_error)
        return -ENOMEM;
    out->error->compact_revision = resp->compact_revision;
    if (key.len) {
        /* rr need not outlive this call: the key is copied */
        uint8_t *k = kvconv_arena_alloc(a, key.len);
        if (!k)
            return -ENOMEM;
        memcpy(k, key.data, key.len);
        out->error->key = (ProtobufCBinaryData){key.len, k};
    }
    return 0;
}

/* The mvcc request type kvconv_entry_req makes of rr; NOOP if none. */
static enum mvcc_req_type entry_type(const Cairnint__RaftRequest *rr)
{
    switch (rr->request_case) {
    case CAIRNINT__RAFT_REQUEST__REQUEST_PUT:
        return MVCC_REQ_PUT;
    case CAIRNINT__RAFT_REQUEST__REQUEST_DELETE_RANGE:
        return MVCC_REQ_DELETE_RANGE;
    case CAIRNINT__RAFT_REQUEST__REQUEST_TXN:
        return MVCC_REQ_TXN;
    case CAIRNINT__RAFT_REQUEST__REQUEST_COMPACTION:
        return MVCC_REQ_COMPACT;
    case CAIRNINT__RAFT_REQUEST__REQUEST_LEASE_GRANT:
        return MVCC_REQ_LEASE_GRANT;
    case CAIRNINT__RAFT_REQUEST__REQUEST_LEASE_REVOKE:
        return MVCC_REQ_LEASE_REVOKE;
    case CAIRNINT__RAFT_REQUEST__REQUEST_LEASE_CHECKPOINT:
        return MVCC_REQ_LEASE_CHECKPOINT;
    default:
        return MVCC_REQ_NOOP;
    }
}

/*
 * rr's request did not reach the store: kvconv_entry_req refused it and the
 * caller applied a no-op in its place.  Answering with an empty body would
 * tell the client its write succeeded.
 */
static int not_applied_resp(const Cairnint__RaftRequest *rr, Cairn__Response *out,
                            struct kvconv_arena *a)
{
    char buf[1024];
    struct vctx v = {.limits = false};
    sb_init(&v.sb, buf, sizeof(buf));
    if (rr->request_case == CAIRNINT__RAFT_REQUEST__REQUEST_TXN && rr->txn &&
        check_txn(&v, rr->txn, NULL, INT64_MAX, 0) < 0) {
        kvconv_errorf(out, CAIRN_E_MALFORMED, a, "%s: the committed txn was not applied: %s",
                      cairn_strerror(CAIRN_E_MALFORMED), buf);
    } else {
        kvconv_errorf(out, CAIRN_E_MALFORMED, a,
                      "%s: the committed request (case %d) was not applied: it does not convert",
                      cairn_strerror(CAIRN_E_MALFORMED), (int)rr->request_case);
    }
    return out->error == &enomem_error ? -ENOMEM : 0;
}

/*
 * An applied Alarm ACTIVATE or DEACTIVATE (daemon/alarm.c turned it into
 * the alarm record's write, or found nothing to change): the reply names
 * the alarm the request was about; member 0 and NONE stand for every
 * member and every alarm, as in the request.
 */
static int alarm_resp(const Cairn__AlarmRequest *q, Cairn__AlarmResponse **out, struct kvconv_arena *a)
{
    Cairn__AlarmResponse *r = kvconv_arena_alloc(a, sizeof(*r));
    Cairn__AlarmMember *m = kvconv_arena_alloc(a, sizeof(*m));
    Cairn__AlarmMember **ptrs = kvconv_arena_alloc(a, sizeof(*ptrs));
    if (!r || !m || !ptrs)
        return -ENOMEM;
    cairn__alarm_response__init(r);
    cairn__alarm_member__init(m);
    m->member_id = q->member_id;
    m->alarm = q->alarm;
    ptrs[0] = m;
    r->alarms = ptrs;
    r->n_alarms = 1;
    *out = r;
    return 0;
}

int kvconv_write_resp(const Cairnint__RaftRequest *rr, const struct mvcc_response *resp,
                      Cairn__Response *out, struct kvconv_arena *a)
{
    out->body_case = CAIRN__RESPONSE__BODY__NOT_SET;
    if (rr && resp->type != entry_type(rr) && resp->type == MVCC_REQ_NOOP)
        return not_applied_resp(rr, out, a);
    if (resp->err)
        return write_error_resp(rr, resp, out, a);
    if (rr && rr->request_case == CAIRNINT__RAFT_REQUEST__REQUEST_ALARM && rr->alarm) {
        out->body_case = CAIRN__RESPONSE__BODY_ALARM;
        return alarm_resp(rr->alarm, &out->alarm, a);
    }
    switch (resp->type) {
    case MVCC_REQ_RANGE:
        out->body_case = CAIRN__RESPONSE__BODY_RANGE;
        return range_resp_new(&resp->range, &out->range, a);
    case MVCC_REQ_PUT:
        out->body_case = CAIRN__RESPONSE__BODY_PUT;
        return put_resp(&resp->put, &out->put, a);
    case MVCC_REQ_DELETE_RANGE:
        out->body_case = CAIRN__RESPONSE__BODY_DELETE_RANGE;
        return delete_resp(&resp->del, &out->delete_range, a);
    case MVCC_REQ_TXN:
        out->body_case = CAIRN__RESPONSE__BODY_TXN;
        return txn_resp(&resp->txn, &out->txn, a);
    case MVCC_REQ_COMPACT:
        if (!(out->compact = kvconv_arena_alloc(a, sizeof(*out->compact))))
            return -ENOMEM;
        cairn__compaction_response__init(out->compact);
        out->body_case = CAIRN__RESPONSE__BODY_COMPACT;
        return 0;
    case MVCC_REQ_LEASE_GRANT:
        if (!(out->lease_grant = kvconv_arena_alloc(a, sizeof(*out->lease_grant))))
            return -ENOMEM;
        cairn__lease_grant_response__init(out->lease_grant);
        out->lease_grant->id = resp->lease_grant.id;
        out->lease_grant->ttl = resp->lease_grant.ttl;
        out->body_case = CAIRN__RESPONSE__BODY_LEASE_GRANT;
        return 0;
    case MVCC_REQ_LEASE_REVOKE:
        if (!(out->lease_revoke = kvconv_arena_alloc(a, sizeof(*out->lease_revoke))))
            return -ENOMEM;
        cairn__lease_revoke_response__init(out->lease_revoke);
        out->body_case = CAIRN__RESPONSE__BODY_LEASE_REVOKE;
        return 0;
    default:
        return 0; /* no-ops, lease checkpoints and records have no client reply body */
    }
}
