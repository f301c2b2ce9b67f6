/*
 * The keys table: the live keys (or, with the hidden as_of column, the keys
 * as of a past revision), read through Range in pages at one pinned
 * revision, written through the pending writes of txn.c.  xBestIndex hands
 * key equality, IN, ranges, LIKE/GLOB prefixes, revision bounds, as_of and
 * LIMIT to the cluster; reads record what they saw for the commit's
 * compares and see the transaction's own pending writes.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "shell/shell.h"

enum { K_KEY, K_VALUE, K_CREATE, K_MOD, K_VERSION, K_LEASE, K_ASOF, K_NCOLS };

static const char *const col_names[K_NCOLS] = {"key", "value", "create_revision", "mod_revision",
                                               "version", "lease", "as_of"};

#define PAGE_FIRST 64      /* keys in the first page with values */
#define PAGE_KEYS_ONLY 512 /* ... without */
#define PAGE_MAX 4096
#define PAGE_BYTES_GROW (1 << 20)  /* a page under 1 MiB doubles the next one */
#define PAGE_BYTES_SHRINK (8 << 20) /* one over 8 MiB halves it */

struct kvtab {
    sqlite3_vtab base;
    struct shell *sh;
};

struct kcur {
    sqlite3_vtab_cursor base;
    struct shell *sh;
    struct keyplan plan;
    bool desc, keys_only, record, overlay;
    bool as_of_set;
    int64_t as_of;
    int64_t min_mod, max_mod, min_create, max_create;
    int64_t left; /* rows still wanted (LIMIT + OFFSET); -1 = no limit */
    int64_t rev;  /* the revision the rows are read at; 0 before the first read */

    size_t pi; /* points: the next one */

    /* range: the server's pages */
    Cairn__Response *page;
    size_t pos;
    bool server_done;
    uint8_t *next; /* ascending: next lower bound; descending: next upper bound (exclusive) */
    size_t nextlen;
    bool fetched;
    int page_size;
    uint8_t *pos_key; /* last row produced, for the pending writes' position */
    size_t pos_keylen;
    bool span_noted;
    size_t nseen; /* server rows of the range so far */

    /* the current row */
    bool eof;
    const Cairn__KeyValue *kv; /* server row, in page or point_resp; NULL for a pending put alone */
    Cairn__Response *point_resp;
    struct wop ov; /* pending put shown instead of (or without) kv */
    bool has_ov;
};

/* ------------------------------------------------------------------ reads */

static bool pinned_read(const struct kcur *c)
{
    return !c->as_of_set;
}

/* read_revision: the revision to ask for: as_of, the pinned one, or 0 (current). */
static int64_t read_revision(struct shell *sh, bool as_of_set, int64_t as_of)
{
    return as_of_set ? as_of : sh->txn.snap_rev;
}

/* after_read: pin the statement's revision on its first read and note it for the footer. */
static int64_t after_read(struct shell *sh, bool as_of_set, int64_t as_of, const Cairn__Response *r)
{
    int64_t hdr = r->header ? r->header->revision : 0;
    if (as_of_set) {
        shell_note_rev(sh, as_of);
        return as_of;
    }
    if (!sh->txn.snap_rev)
        sh->txn.snap_rev = hdr;
    shell_note_rev(sh, sh->txn.snap_rev);
    return sh->txn.snap_rev;
}

static int range_call(struct shell *sh, Cairn__RangeRequest *rr, Cairn__Response **resp,
                      struct cairn_error_detail *err)
{
    Cairn__Request req = CAIRN__REQUEST__INIT;
    req.body_case = CAIRN__REQUEST__BODY_RANGE;
    req.range = rr;
    rr->serializable = sh->serializable;
    int rc = shell_call(sh, &req, NULL, false, resp, err);
    if (rc == 0 && (*resp)->body_case != CAIRN__RESPONSE__BODY_RANGE) {
        cairn_response_free(*resp);
        *resp = NULL;
        snprintf(err->message, sizeof err->message, "the reply is not a Range reply");
        rc = -CAIRN_E_MALFORMED;
    }
    return rc;
}

/*
 * read_point: one key at the statement's revision, recorded for the commit.
 * *kv points into *resp (the caller frees it), NULL when absent.
 */
static int read_point(sqlite3_vtab *vt, struct shell *sh, const uint8_t *key, size_t klen,
                      bool as_of_set, int64_t as_of, bool keys_only, Cairn__Response **resp,
                      const Cairn__KeyValue **kv, int64_t *rev)
{
    Cairn__RangeRequest rr = CAIRN__RANGE_REQUEST__INIT;
    struct cairn_error_detail err;
    rr.key.data = (uint8_t *)key;
    rr.key.len = klen;
    rr.revision = read_revision(sh, as_of_set, as_of);
    rr.keys_only = keys_only;
    int rc = range_call(sh, &rr, resp, &err);
    if (rc != 0) {
        struct sbuf what = {0};
        sbuf_puts(&what, "keys: reading ");
        bytes_quote(&what, key, klen, 100);
        if (as_of_set)
            sbuf_printf(&what, " as of revision %lld", (long long)as_of);
        rc = vt_call_error(vt, what.p ? what.p : "keys", rc, &err);
        sbuf_free(&what);
        return rc;
    }
    *rev = after_read(sh, as_of_set, as_of, *resp);
    *kv = (*resp)->range->n_kvs ? (*resp)->range->kvs[0] : NULL;
    if (!as_of_set && sh->txn.recording && txn_note_key(&sh->txn, key, klen, *kv, false))
        return SQLITE_NOMEM;
    return SQLITE_OK;
}

/* ------------------------------------------------------------ connecting */

static int k_connect(sqlite3 *db, void *aux, int argc, const char *const *argv,
                     sqlite3_vtab **out, char **err)
{
    (void)argc;
    (void)argv;
    (void)err;
    int rc = vt_declare(db, "CREATE TABLE x(key TEXT PRIMARY KEY, value TEXT, create_revision INTEGER,"
                            " mod_revision INTEGER, version INTEGER, lease INTEGER,"
                            " as_of INTEGER HIDDEN) WITHOUT ROWID");
    if (rc != SQLITE_OK)
        return rc;
    struct kvtab *t = sqlite3_malloc(sizeof *t);
    if (!t)
        return SQLITE_NOMEM;
    memset(t, 0, sizeof *t);
    t->sh = aux;
    *out = &t->base;
    return SQLITE_OK;
}

static int k_disconnect(sqlite3_vtab *vt)
{
    sqlite3_free(vt);
    return SQLITE_OK;
}

/* ------------------------------------------------------------- planning */

static const char *rev_op(int col, unsigned char op)
{
    static const char *const mod[] = {"mod=", "mod>", "mod>=", "mod<", "mod<="};
    static const char *const cre[] = {"create=", "create>", "create>=", "create<", "create<="};
    const char *const *t = col == K_MOD ? mod : cre;
    switch (op) {
    case SQLITE_INDEX_CONSTRAINT_EQ:
        return t[0];
    case SQLITE_INDEX_CONSTRAINT_GT:
        return t[1];
    case SQLITE_INDEX_CONSTRAINT_GE:
        return t[2];
    case SQLITE_INDEX_CONSTRAINT_LT:
        return t[3];
    case SQLITE_INDEX_CONSTRAINT_LE:
        return t[4];
    default:
        return NULL;
    }
}

/* binary: the constraint compares bytes as the store does (no NOCASE or RTRIM). */
static bool binary(sqlite3_index_info *ii, int i)
{
    const char *coll = sqlite3_vtab_collation(ii, i);
    return !coll || !sqlite3_stricmp(coll, "BINARY");
}

static int k_best_index(sqlite3_vtab *vt, sqlite3_index_info *ii)
{
    struct sbuf plan = {0};
    int argc = 0, limit_i = -1, offset_i = -1;
    bool all_handled = true, key_eq = false, key_in = false, key_range = false;

    for (int i = 0; i < ii->nConstraint; i++) {
        const struct sqlite3_index_constraint *c = &ii->aConstraint[i];
        const char *tok = NULL;
        bool omit = true;
        if (c->op == SQLITE_INDEX_CONSTRAINT_LIMIT) {
            limit_i = c->usable ? i : limit_i;
            continue;
        }
        if (c->op == SQLITE_INDEX_CONSTRAINT_OFFSET) {
            offset_i = c->usable ? i : offset_i;
            continue;
        }
        if (c->usable && c->iColumn == K_KEY && (tok = plan_key_op(c->op))) {
            if (c->op == SQLITE_INDEX_CONSTRAINT_LIKE || c->op == SQLITE_INDEX_CONSTRAINT_GLOB) {
                /* the pattern itself is checked by SQLite unless it is exactly 'prefix%' */
                sqlite3_value *rhs = NULL;
                bool exact = false;
                if (sqlite3_vtab_rhs_value(ii, i, &rhs) == SQLITE_OK && rhs &&
                    sqlite3_value_type(rhs) == SQLITE_TEXT) {
                    const char *pat = (const char *)sqlite3_value_text(rhs);
                    plan_prefix(pat, strlen(pat), c->op == SQLITE_INDEX_CONSTRAINT_GLOB, &exact);
                }
                omit = exact;
                key_range = true;
            } else if (!binary(ii, i)) {
                tok = NULL;
            } else if (c->op == SQLITE_INDEX_CONSTRAINT_EQ && sqlite3_vtab_in(ii, i, -1)) {
                sqlite3_vtab_in(ii, i, 1);
                tok = "key-in";
                key_in = true;
            } else if (c->op == SQLITE_INDEX_CONSTRAINT_EQ) {
                key_eq = true;
            } else {
                key_range = true;
            }
        } else if (c->usable && c->iColumn == K_ASOF && c->op == SQLITE_INDEX_CONSTRAINT_EQ) {
            tok = "as_of=";
        } else if (c->usable && (c->iColumn == K_MOD || c->iColumn == K_CREATE)) {
            /* filtered by the member, checked again by SQLite: pending writes have no revision yet */
            tok = rev_op(c->iColumn, c->op);
            omit = false;
        }
        if (!tok) {
            all_handled = false;
            continue;
        }
        ii->aConstraintUsage[i].argvIndex = ++argc;
        ii->aConstraintUsage[i].omit = omit;
        if (!omit)
            all_handled = false;
        sbuf_printf(&plan, "%s%s", plan.n ? " " : "", tok);
    }

    bool desc = false;
    if (ii->nOrderBy == 1 && ii->aOrderBy[0].iColumn == K_KEY) {
        ii->orderByConsumed = 1;
        desc = ii->aOrderBy[0].desc;
    }
    /* LIMIT only when no row the cluster returns can be filtered out afterwards */
    if (limit_i >= 0 && all_handled && (ii->nOrderBy == 0 || ii->orderByConsumed)) {
        ii->aConstraintUsage[limit_i].argvIndex = ++argc;
        sbuf_printf(&plan, "%slimit", plan.n ? " " : "");
        if (offset_i >= 0) {
            ii->aConstraintUsage[offset_i].argvIndex = ++argc;
            sbuf_puts(&plan, " offset");
        }
    }
    if (desc)
        sbuf_printf(&plan, "%sdesc", plan.n ? " " : "");
    if (!(ii->colUsed & ((sqlite3_uint64)1 << K_VALUE)))
        sbuf_printf(&plan, "%skeys-only", plan.n ? " " : "");

    if (key_eq) {
        ii->estimatedCost = 2;
        ii->estimatedRows = 1;
        ii->idxFlags |= SQLITE_INDEX_SCAN_UNIQUE;
    } else if (key_in) {
        ii->estimatedCost = 20;
        ii->estimatedRows = 10;
    } else if (key_range) {
        ii->estimatedCost = 1000;
        ii->estimatedRows = 1000;
    } else {
        ii->estimatedCost = 1e7;
        ii->estimatedRows = 1000000;
    }
    if (plan.n) {
        ii->idxStr = sqlite3_mprintf("%s", plan.p);
        ii->needToFreeIdxStr = 1;
    }
    sbuf_free(&plan);
    (void)vt;
    return SQLITE_OK;
}

/* --------------------------------------------------------------- cursor */

static int k_open(sqlite3_vtab *vt, sqlite3_vtab_cursor **out)
{
    struct kcur *c = sqlite3_malloc(sizeof *c);
    if (!c)
        return SQLITE_NOMEM;
    memset(c, 0, sizeof *c);
    c->sh = ((struct kvtab *)vt)->sh;
    *out = &c->base;
    return SQLITE_OK;
}

static void clear_ov(struct kcur *c)
{
    if (c->has_ov) {
        free(c->ov.key);
        free(c->ov.value);
        memset(&c->ov, 0, sizeof c->ov);
        c->has_ov = false;
    }
}

/* note_span: the range this scan covered, for the commit's guard. */
static int note_span(struct kcur *c)
{
    struct shell *sh = c->sh;
    if (c->span_noted || c->plan.points || c->plan.empty || !c->record || !pinned_read(c) ||
        !c->fetched)
        return SQLITE_OK;
    c->span_noted = true;
    static const uint8_t first[1] = {0};
    const uint8_t *lo = c->plan.lo ? c->plan.lo : first;
    size_t lolen = c->plan.lo ? c->plan.lolen : 1;
    const uint8_t *hi = c->plan.hi;
    size_t hilen = c->plan.hi ? c->plan.hilen : 0;
    if (!c->eof && c->pos_key) {
        /* stopped early: only what was read so far */
        if (c->desc) {
            lo = c->pos_key;
            lolen = c->pos_keylen;
        } else {
            uint8_t *h = malloc(c->pos_keylen + 1);
            if (!h)
                return SQLITE_NOMEM;
            memcpy(h, c->pos_key, c->pos_keylen);
            h[c->pos_keylen] = 0;
            int rc = txn_note_span(&sh->txn, lo, lolen, h, c->pos_keylen + 1, c->rev, c->nseen);
            free(h);
            return rc;
        }
    }
    return txn_note_span(&sh->txn, lo, lolen, hi, hilen, c->rev, c->nseen);
}

static void reset(struct kcur *c)
{
    plan_key_free(&c->plan);
    cairn_response_free(c->page);
    cairn_response_free(c->point_resp);
    free(c->next);
    free(c->pos_key);
    clear_ov(c);
    struct shell *sh = c->sh;
    sqlite3_vtab_cursor base = c->base;
    memset(c, 0, sizeof *c);
    c->sh = sh;
    c->base = base;
}

static int k_close(sqlite3_vtab_cursor *cur)
{
    struct kcur *c = (struct kcur *)cur;
    note_span(c);
    reset(c);
    sqlite3_free(c);
    return SQLITE_OK;
}

static int set_pos(struct kcur *c, const void *key, size_t klen)
{
    uint8_t *k = bytes_dup(key, klen);
    if (!k)
        return SQLITE_NOMEM;
    free(c->pos_key);
    c->pos_key = k;
    c->pos_keylen = klen;
    return SQLITE_OK;
}

/* fetch_page: the next page of the range from the member. */
static int fetch_page(struct kcur *c)
{
    struct shell *sh = c->sh;
    static const uint8_t first[1] = {0}, no_end[1] = {0};
    Cairn__RangeRequest rr = CAIRN__RANGE_REQUEST__INIT;
    struct cairn_error_detail err;
    cairn_response_free(c->page);
    c->page = NULL;
    c->pos = 0;
    if (c->desc) {
        rr.key.data = (uint8_t *)(c->plan.lo ? c->plan.lo : first);
        rr.key.len = c->plan.lo ? c->plan.lolen : 1;
        const uint8_t *end = c->next ? c->next : c->plan.hi;
        size_t endlen = c->next ? c->nextlen : c->plan.hilen;
        rr.range_end.data = (uint8_t *)(end ? end : no_end);
        rr.range_end.len = end ? endlen : 1;
        rr.sort_order = CAIRN__RANGE_REQUEST__SORT_ORDER__DESCEND;
        rr.sort_target = CAIRN__RANGE_REQUEST__SORT_TARGET__KEY;
    } else {
        const uint8_t *lo = c->next ? c->next : c->plan.lo;
        size_t lolen = c->next ? c->nextlen : c->plan.lolen;
        rr.key.data = (uint8_t *)(lo ? lo : first);
        rr.key.len = lo ? lolen : 1;
        rr.range_end.data = (uint8_t *)(c->plan.hi ? c->plan.hi : no_end);
        rr.range_end.len = c->plan.hi ? c->plan.hilen : 1;
    }
    rr.limit = c->page_size;
    if (c->left >= 0 && c->left < rr.limit)
        rr.limit = c->left;
    rr.revision = read_revision(sh, c->as_of_set, c->as_of);
    rr.keys_only = c->keys_only;
    rr.min_mod_revision = c->min_mod;
    rr.max_mod_revision = c->max_mod;
    rr.min_create_revision = c->min_create;
    rr.max_create_revision = c->max_create;
    int rc = range_call(sh, &rr, &c->page, &err);
    if (rc != 0) {
        const char *what = c->as_of_set ? "keys: reading as of a revision" : "keys: reading a range";
        char buf[80];
        if (c->as_of_set) {
            snprintf(buf, sizeof buf, "keys: reading as of revision %lld", (long long)c->as_of);
            what = buf;
        }
        return vt_call_error(c->base.pVtab, what, rc, &err);
    }
    c->fetched = true;
    c->rev = after_read(sh, c->as_of_set, c->as_of, c->page);
    const Cairn__RangeResponse *r = c->page->range;
    if (!r->more || !r->n_kvs) {
        c->server_done = true;
    } else {
        const Cairn__KeyValue *last = r->kvs[r->n_kvs - 1];
        free(c->next);
        c->nextlen = last->key.len + (c->desc ? 0 : 1);
        if (!(c->next = malloc(c->nextlen)))
            return SQLITE_NOMEM;
        memcpy(c->next, last->key.data, last->key.len);
        if (!c->desc)
            c->next[last->key.len] = 0; /* the first key after the last */
    }
    size_t bytes = 0;
    for (size_t i = 0; i < r->n_kvs; i++)
        bytes += r->kvs[i]->key.len + r->kvs[i]->value.len;
    if (bytes < PAGE_BYTES_GROW && c->page_size < PAGE_MAX)
        c->page_size *= 2;
    else if (bytes > PAGE_BYTES_SHRINK && c->page_size > 1)
        c->page_size /= 2;
    return SQLITE_OK;
}

/* in_range: key lies in the plan's [lo, hi). */
static bool in_range(const struct kcur *c, const uint8_t *k, size_t n)
{
    return (!c->plan.lo || bytes_cmp(k, n, c->plan.lo, c->plan.lolen) >= 0) &&
           (!c->plan.hi || bytes_cmp(k, n, c->plan.hi, c->plan.hilen) < 0);
}

/* next_pending: the pending write the scan meets next after pos_key, or NULL. */
static const struct wop *next_pending(const struct kcur *c)
{
    const struct shell_txn *t = &c->sh->txn;
    if (!c->overlay || !t->npend)
        return NULL;
    const struct wop *w = NULL;
    if (!c->desc) {
        size_t i;
        if (c->pos_key) {
            i = txn_pending_find(t, c->pos_key, c->pos_keylen);
            if (i < t->npend && !bytes_cmp(t->pend[i].key, t->pend[i].klen, c->pos_key, c->pos_keylen))
                i++;
        } else {
            i = c->plan.lo ? txn_pending_find(t, c->plan.lo, c->plan.lolen) : 0;
        }
        w = i < t->npend ? &t->pend[i] : NULL;
    } else {
        size_t i;
        if (c->pos_key)
            i = txn_pending_find(t, c->pos_key, c->pos_keylen);
        else
            i = c->plan.hi ? txn_pending_find(t, c->plan.hi, c->plan.hilen) : t->npend;
        w = i > 0 ? &t->pend[i - 1] : NULL;
    }
    return w && in_range(c, w->key, w->klen) ? w : NULL;
}

static int show_pending(struct kcur *c, const struct wop *w)
{
    clear_ov(c);
    c->ov = *w;
    c->ov.key = bytes_dup(w->key, w->klen);
    c->ov.value = w->value ? bytes_dup(w->value, w->vlen) : NULL;
    c->has_ov = true;
    if (!c->ov.key || (w->value && !c->ov.value))
        return SQLITE_NOMEM;
    return SQLITE_OK;
}

static int advance_range(struct kcur *c)
{
    for (;;) {
        if ((!c->page || c->pos >= c->page->range->n_kvs) && !c->server_done) {
            int rc = fetch_page(c);
            if (rc != SQLITE_OK)
                return rc;
            continue;
        }
        const Cairn__KeyValue *srv =
            c->page && c->pos < c->page->range->n_kvs ? c->page->range->kvs[c->pos] : NULL;
        const struct wop *pend = next_pending(c);
        if (!srv && !pend) {
            c->eof = true;
            return SQLITE_OK;
        }
        int order = 0;
        if (srv && pend)
            order = bytes_cmp(srv->key.data, srv->key.len, pend->key, pend->klen) * (c->desc ? -1 : 1);
        if (srv && (!pend || order <= 0)) {
            c->pos++;
            c->nseen++;
            if (set_pos(c, srv->key.data, srv->key.len))
                return SQLITE_NOMEM;
            if (c->record && pinned_read(c) &&
                txn_note_key(&c->sh->txn, srv->key.data, srv->key.len, srv, true))
                return SQLITE_NOMEM;
            if (pend && order == 0) {
                if (pend->kind == WOP_DELETE)
                    continue; /* deleted by this transaction */
                c->kv = srv;
                return show_pending(c, pend);
            }
            c->kv = srv;
            return SQLITE_OK;
        }
        if (set_pos(c, pend->key, pend->klen))
            return SQLITE_NOMEM;
        if (pend->kind == WOP_DELETE)
            continue;
        c->kv = NULL;
        return show_pending(c, pend);
    }
}

static int advance_points(struct kcur *c)
{
    while (c->pi < c->plan.npts) {
        const uint8_t *key = c->plan.pts[c->pi];
        size_t klen = c->plan.ptlen[c->pi++];
        const Cairn__KeyValue *kv;
        cairn_response_free(c->point_resp);
        c->point_resp = NULL;
        int rc = read_point(c->base.pVtab, c->sh, key, klen, c->as_of_set, c->as_of, c->keys_only,
                            &c->point_resp, &kv, &c->rev);
        if (rc != SQLITE_OK)
            return rc;
        const struct wop *pend = c->overlay ? txn_pending_get(&c->sh->txn, key, klen) : NULL;
        if (pend) {
            if (pend->kind == WOP_DELETE)
                continue;
            c->kv = kv;
            return show_pending(c, pend);
        }
        if (kv) {
            c->kv = kv;
            return SQLITE_OK;
        }
    }
    c->eof = true;
    return SQLITE_OK;
}

static int k_next(sqlite3_vtab_cursor *cur)
{
    struct kcur *c = (struct kcur *)cur;
    clear_ov(c);
    c->kv = NULL;
    if (c->left == 0) {
        c->eof = true;
        return note_span(c);
    }
    int rc = c->plan.points ? advance_points(c) : advance_range(c);
    if (rc != SQLITE_OK)
        return rc;
    if (c->left > 0 && !c->eof)
        c->left--;
    if (c->eof)
        return note_span(c);
    return SQLITE_OK;
}

static int int_arg(sqlite3_value *v, int64_t *out)
{
    if (sqlite3_value_numeric_type(v) != SQLITE_INTEGER)
        return 0;
    *out = sqlite3_value_int64(v);
    return 1;
}

/* narrow: apply a revision bound token with value v to [*lo, *hi] (0 = open). */
static void narrow(const char *op, int64_t v, int64_t *lo, int64_t *hi, bool *empty)
{
    int64_t l = 0, h = 0;
    if (!strcmp(op, "="))
        l = h = v;
    else if (!strcmp(op, ">"))
        l = v + 1;
    else if (!strcmp(op, ">="))
        l = v;
    else if (!strcmp(op, "<"))
        h = v - 1;
    else if (!strcmp(op, "<="))
        h = v;
    if (l > *lo)
        *lo = l;
    if (op[0] == '<' || op[0] == '=') {
        if (h < 1)
            *empty = true;
        else if (!*hi || h < *hi)
            *hi = h;
    }
    if (*lo < 1)
        *lo = 0;
    if (*hi && *lo > *hi)
        *empty = true;
}

static int k_filter(sqlite3_vtab_cursor *cur, int idx_num, const char *idx_str, int argc,
                    sqlite3_value **argv)
{
    struct kcur *c = (struct kcur *)cur;
    struct shell *sh = c->sh;
    (void)idx_num;
    note_span(c);
    reset(c);
    c->left = -1;
    int64_t offset = 0;
    bool have_limit = false;
    char *plan = idx_str ? strdup(idx_str) : NULL, *save = NULL;
    int ai = 0, rc = SQLITE_OK;
    if (idx_str && !plan)
        return SQLITE_NOMEM;
    for (char *tok = plan ? strtok_r(plan, " ", &save) : NULL; tok && rc == SQLITE_OK;
         tok = strtok_r(NULL, " ", &save)) {
        if (!strcmp(tok, "desc")) {
            c->desc = true;
            continue;
        }
        if (!strcmp(tok, "keys-only")) {
            c->keys_only = true;
            continue;
        }
        if (ai >= argc)
            break;
        sqlite3_value *v = argv[ai++];
        int64_t n;
        if (!strncmp(tok, "key", 3)) {
            rc = plan_key_apply(&c->plan, tok, v);
        } else if (!strcmp(tok, "as_of=")) {
            if (sqlite3_value_type(v) == SQLITE_NULL)
                c->plan.empty = true;
            else if (!int_arg(v, &n) || n < 1)
                rc = vt_error(cur->pVtab, "keys: as_of must be a revision number (1 or more)");
            else {
                c->as_of_set = true;
                c->as_of = n;
            }
        } else if (!strncmp(tok, "mod", 3) || !strncmp(tok, "create", 6)) {
            bool mod = tok[0] == 'm';
            if (int_arg(v, &n))
                narrow(tok + (mod ? 3 : 6), n, mod ? &c->min_mod : &c->min_create,
                       mod ? &c->max_mod : &c->max_create, &c->plan.empty);
        } else if (!strcmp(tok, "limit")) {
            if (int_arg(v, &n) && n >= 0) {
                c->left = n;
                have_limit = true;
            }
        } else if (!strcmp(tok, "offset")) {
            if (int_arg(v, &n) && n > 0)
                offset = n;
        }
    }
    free(plan);
    if (rc != SQLITE_OK)
        return rc;
    if (have_limit)
        c->left += offset;
    if ((rc = plan_key_finish(&c->plan, c->desc)) != SQLITE_OK)
        return rc;
    c->record = sh->txn.recording && !c->as_of_set;
    c->overlay = !c->as_of_set && sh->txn.npend > 0;
    c->page_size = c->keys_only ? PAGE_KEYS_ONLY : PAGE_FIRST;
    if (c->plan.empty) {
        c->eof = true;
        return SQLITE_OK;
    }
    return k_next(cur);
}

static int k_eof(sqlite3_vtab_cursor *cur)
{
    return ((struct kcur *)cur)->eof;
}

static int k_column(sqlite3_vtab_cursor *cur, sqlite3_context *ctx, int col)
{
    struct kcur *c = (struct kcur *)cur;
    const Cairn__KeyValue *kv = c->kv;
    const struct wop *ov = c->has_ov ? &c->ov : NULL;
    if (sqlite3_vtab_nochange(ctx))
        return SQLITE_OK; /* an UPDATE that leaves this column alone */
    switch (col) {
    case K_KEY:
        if (ov)
            result_bytes(ctx, ov->key, ov->klen);
        else
            result_bytes(ctx, kv->key.data, kv->key.len);
        break;
    case K_VALUE:
        if (ov && !ov->ignore_value)
            result_bytes(ctx, ov->value ? ov->value : (const uint8_t *)"", ov->vlen);
        else if (kv)
            result_bytes(ctx, kv->value.data ? kv->value.data : (const uint8_t *)"", kv->value.len);
        break;
    case K_CREATE:
        if (kv)
            sqlite3_result_int64(ctx, kv->create_revision);
        break;
    case K_MOD:
        if (!ov)
            sqlite3_result_int64(ctx, kv->mod_revision);
        break;
    case K_VERSION:
        if (!ov)
            sqlite3_result_int64(ctx, kv->version);
        break;
    case K_LEASE:
        if (ov && !ov->ignore_lease)
            sqlite3_result_int64(ctx, ov->lease);
        else if (kv)
            sqlite3_result_int64(ctx, kv->lease);
        break;
    case K_ASOF:
        sqlite3_result_int64(ctx, c->rev);
        break;
    }
    return SQLITE_OK;
}

static int k_rowid(sqlite3_vtab_cursor *cur, sqlite3_int64 *rowid)
{
    (void)cur;
    *rowid = 0; /* WITHOUT ROWID: never asked */
    return SQLITE_OK;
}

/* ---------------------------------------------------------------- writes */

/* known: whether key exists for this transaction (its pending writes, what it read, or a read now). */
static int known(sqlite3_vtab *vt, struct shell *sh, const uint8_t *key, size_t klen, bool *exists,
                 int64_t *mod)
{
    const struct wop *p = txn_pending_get(&sh->txn, key, klen);
    if (p) {
        *exists = p->kind == WOP_PUT;
        *mod = 0;
        return SQLITE_OK;
    }
    const struct rkey *r = txn_find_key(&sh->txn, key, klen);
    if (!r) {
        Cairn__Response *resp = NULL;
        const Cairn__KeyValue *kv;
        int64_t rev;
        bool was = sh->txn.recording;
        sh->txn.recording = true; /* a write depends on it */
        int rc = read_point(vt, sh, key, klen, false, 0, true, &resp, &kv, &rev);
        sh->txn.recording = was;
        cairn_response_free(resp);
        if (rc != SQLITE_OK)
            return rc;
        r = txn_find_key(&sh->txn, key, klen);
        if (!r)
            return SQLITE_NOMEM;
    }
    *exists = r->mod != 0;
    *mod = r->mod;
    return SQLITE_OK;
}

static int write_op(sqlite3_vtab *vt, struct shell *sh, const struct wop *w)
{
    char *msg = NULL;
    int rc = txn_write(&sh->txn, w, &msg);
    if (rc != SQLITE_OK) {
        sqlite3_free(vt->zErrMsg);
        vt->zErrMsg = msg ? sqlite3_mprintf("keys: %s", msg) : NULL;
        sqlite3_free(msg);
    }
    return rc;
}

static int key_error(sqlite3_vtab *vt, int code, const char *pre, const uint8_t *key, size_t klen,
                     const char *post)
{
    struct sbuf m = {0};
    sbuf_puts(&m, pre);
    bytes_quote(&m, key, klen, 200);
    sbuf_puts(&m, post);
    vt_error(vt, "%s", m.p ? m.p : "keys: error");
    sbuf_free(&m);
    return code;
}

static int k_update(sqlite3_vtab *vt, int argc, sqlite3_value **argv, sqlite3_int64 *rowid)
{
    struct shell *sh = ((struct kvtab *)vt)->sh;
    struct wop w = {0};
    size_t klen, vlen;
    bool exists;
    int64_t mod;
    int rc;
    (void)rowid;

    if (argc == 1) { /* DELETE */
        const uint8_t *key = value_bytes(argv[0], &klen);
        if (!key)
            return SQLITE_OK;
        if ((rc = known(vt, sh, key, klen, &exists, &mod)) != SQLITE_OK)
            return rc;
        if (!exists)
            return SQLITE_OK; /* gone already: nothing to write */
        w = (struct wop){.key = (uint8_t *)key, .klen = klen, .kind = WOP_DELETE};
        return write_op(vt, sh, &w);
    }

    sqlite3_value **col = argv + 2;
    static const int read_only[] = {K_CREATE, K_MOD, K_VERSION, K_ASOF};
    if (sqlite3_value_type(argv[0]) == SQLITE_NULL) { /* INSERT */
        for (size_t i = 0; i < sizeof read_only / sizeof read_only[0]; i++)
            if (sqlite3_value_type(col[read_only[i]]) != SQLITE_NULL)
                return vt_error(vt, "keys: %s is set by the cluster; INSERT gives key, value and lease",
                                col_names[read_only[i]]);
        const uint8_t *key = value_bytes(col[K_KEY], &klen);
        if (!key || !klen)
            return vt_error(vt, "keys: a key must be at least one byte long");
        const uint8_t *val = value_bytes(col[K_VALUE], &vlen);
        w = (struct wop){.key = (uint8_t *)key, .klen = klen, .value = (uint8_t *)val, .vlen = vlen,
                         .lease = sqlite3_value_int64(col[K_LEASE]), .kind = WOP_PUT};
        if (sqlite3_vtab_on_conflict(sh->db) != SQLITE_REPLACE) {
            if ((rc = known(vt, sh, key, klen, &exists, &mod)) != SQLITE_OK)
                return rc;
            if (exists) {
                char post[128];
                if (mod)
                    snprintf(post, sizeof post,
                             " already exists (mod_revision %lld); INSERT OR REPLACE overwrites it",
                             (long long)mod);
                else
                    snprintf(post, sizeof post, " is already written by this transaction");
                return key_error(vt, SQLITE_CONSTRAINT, "keys: key ", key, klen, post);
            }
        }
        return write_op(vt, sh, &w);
    }

    /* UPDATE */
    const uint8_t *key = value_bytes(argv[0], &klen);
    if (!key)
        return vt_error(vt, "keys: UPDATE of a row without a key");
    if (!sqlite3_value_nochange(col[K_KEY])) {
        size_t nlen;
        const uint8_t *nk = value_bytes(col[K_KEY], &nlen);
        if (!nk || bytes_cmp(nk, nlen, key, klen) != 0)
            return vt_error(vt, "keys: the key column cannot be changed; INSERT the new key and "
                                "DELETE the old one");
    }
    if ((rc = known(vt, sh, key, klen, &exists, &mod)) != SQLITE_OK)
        return rc;
    if (!exists)
        return key_error(vt, SQLITE_ERROR, "keys: key ", key, klen, " no longer exists");
    const struct rkey *r = txn_find_key(&sh->txn, key, klen);
    for (size_t i = 0; i < sizeof read_only / sizeof read_only[0]; i++) {
        sqlite3_value *v = col[read_only[i]];
        if (sqlite3_value_nochange(v))
            continue;
        int64_t was = -1;
        if (r && read_only[i] == K_CREATE)
            was = r->create;
        else if (r && read_only[i] == K_MOD)
            was = r->mod;
        else if (r && read_only[i] == K_VERSION)
            was = r->version;
        else if (read_only[i] == K_ASOF)
            was = sh->txn.snap_rev;
        if (sqlite3_value_type(v) == SQLITE_NULL || sqlite3_value_int64(v) != was)
            return vt_error(vt, "keys: %s is read-only (the cluster sets it)", col_names[read_only[i]]);
    }
    w = (struct wop){.key = (uint8_t *)key, .klen = klen, .kind = WOP_PUT};
    if (sqlite3_value_nochange(col[K_VALUE])) {
        w.ignore_value = true;
    } else {
        const uint8_t *val = value_bytes(col[K_VALUE], &vlen);
        w.value = (uint8_t *)val;
        w.vlen = vlen;
    }
    if (sqlite3_value_nochange(col[K_LEASE]))
        w.ignore_lease = true;
    else
        w.lease = sqlite3_value_int64(col[K_LEASE]);
    return write_op(vt, sh, &w);
}

/* ----------------------------------------------------------- transactions */

static int k_begin(sqlite3_vtab *vt)
{
    (void)vt;
    return SQLITE_OK;
}

static int k_sync(sqlite3_vtab *vt)
{
    char *msg = NULL;
    int rc = txn_commit(((struct kvtab *)vt)->sh, &msg);
    if (rc != SQLITE_OK) {
        sqlite3_free(vt->zErrMsg);
        vt->zErrMsg = msg;
    }
    return rc;
}

static int k_commit(sqlite3_vtab *vt)
{
    txn_discard_writes(&((struct kvtab *)vt)->sh->txn);
    return SQLITE_OK;
}

static int k_rollback(sqlite3_vtab *vt)
{
    txn_discard_writes(&((struct kvtab *)vt)->sh->txn);
    return SQLITE_OK;
}

static int k_savepoint(sqlite3_vtab *vt, int n)
{
    txn_savepoint(&((struct kvtab *)vt)->sh->txn, n);
    return SQLITE_OK;
}

static int k_release(sqlite3_vtab *vt, int n)
{
    txn_release(&((struct kvtab *)vt)->sh->txn, n);
    return SQLITE_OK;
}

static int k_rollback_to(sqlite3_vtab *vt, int n)
{
    txn_rollback_to(&((struct kvtab *)vt)->sh->txn, n);
    return SQLITE_OK;
}

static const sqlite3_module keys_module = {
    .iVersion = 2,
    .xCreate = k_connect,
    .xConnect = k_connect,
    .xBestIndex = k_best_index,
    .xDisconnect = k_disconnect,
    .xDestroy = k_disconnect,
    .xOpen = k_open,
    .xClose = k_close,
    .xFilter = k_filter,
    .xNext = k_next,
    .xEof = k_eof,
    .xColumn = k_column,
    .xRowid = k_rowid,
    .xUpdate = k_update,
    .xBegin = k_begin,
    .xSync = k_sync,
    .xCommit = k_commit,
    .xRollback = k_rollback,
    .xSavepoint = k_savepoint,
    .xRelease = k_release,
    .xRollbackTo = k_rollback_to,
};

int vt_keys_register(struct shell *sh)
{
    return sqlite3_create_module_v2(sh->db, "cairn_keys", &keys_module, sh, NULL);
}
