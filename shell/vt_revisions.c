/*
 * The revisions table: every stored revision of the keys, deletes included,
 * from the member's History call, page after page (after_revision/after_sub)
 * up to the revision of the first page, so one query sees one history.  Key
 * constraints, revision bounds and LIMIT go to the member.  Read-only: the
 * history is written by writing keys.
 */
#include <stdlib.h>
#include <string.h>

#include "shell/shell.h"

enum { R_KEY, R_VALUE, R_REV, R_SUB, R_CREATE, R_VERSION, R_LEASE, R_EVENT, R_NCOLS };

#define PAGE_FIRST 64
#define PAGE_MAX 4096
#define PAGE_BYTES_GROW (1 << 20)
#define PAGE_BYTES_SHRINK (8 << 20)

struct rvtab {
    sqlite3_vtab base;
    struct shell *sh;
};

struct rcur {
    sqlite3_vtab_cursor base;
    struct shell *sh;
    struct keyplan plan;
    bool keys_only;
    int64_t min_rev, max_rev; /* inclusive; 0 = open */
    int64_t left;             /* rows still wanted; -1 = no limit */
    size_t pi;                /* points: the one being read */
    Cairn__Response *page;
    size_t pos;
    bool more, started, eof;
    int64_t after_rev, after_sub;
    int page_size;
    const Cairn__HistoryRecord *rec;
};

static int r_connect(sqlite3 *db, void *aux, int argc, const char *const *argv,
                     sqlite3_vtab **out, char **err)
{
    (void)argc;
    (void)argv;
    (void)err;
    int rc = vt_declare(db, "CREATE TABLE x(key TEXT, value TEXT, revision INTEGER, sub INTEGER,"
                            " create_revision INTEGER, version INTEGER, lease INTEGER, event TEXT)");
    if (rc != SQLITE_OK)
        return rc;
    struct rvtab *t = sqlite3_malloc(sizeof *t);
    if (!t)
        return SQLITE_NOMEM;
    memset(t, 0, sizeof *t);
    t->sh = aux;
    *out = &t->base;
    return SQLITE_OK;
}

static int r_disconnect(sqlite3_vtab *vt)
{
    sqlite3_free(vt);
    return SQLITE_OK;
}

static const char *rev_tok(unsigned char op)
{
    switch (op) {
    case SQLITE_INDEX_CONSTRAINT_EQ:
        return "rev=";
    case SQLITE_INDEX_CONSTRAINT_GT:
        return "rev>";
    case SQLITE_INDEX_CONSTRAINT_GE:
        return "rev>=";
    case SQLITE_INDEX_CONSTRAINT_LT:
        return "rev<";
    case SQLITE_INDEX_CONSTRAINT_LE:
        return "rev<=";
    default:
        return NULL;
    }
}

static int r_best_index(sqlite3_vtab *vt, sqlite3_index_info *ii)
{
    struct sbuf plan = {0};
    int argc = 0, limit_i = -1, offset_i = -1;
    bool all_handled = true, key_eq = false, key_in = false, key_range = false, rev = false;
    (void)vt;

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
        const char *coll = sqlite3_vtab_collation(ii, i);
        bool binary = !coll || !sqlite3_stricmp(coll, "BINARY");
        if (c->usable && c->iColumn == R_KEY && (tok = plan_key_op(c->op))) {
            if (c->op == SQLITE_INDEX_CONSTRAINT_LIKE || c->op == SQLITE_INDEX_CONSTRAINT_GLOB) {
                sqlite3_value *rhs = NULL;
                bool exact = false;
                if (sqlite3_vtab_rhs_value(ii, i, &rhs) == SQLITE_OK && rhs &&
                    sqlite3_value_type(rhs) == SQLITE_TEXT) {
                    const char *pat = (const char *)sqlite3_value_text(rhs);
                    plan_prefix(pat, strlen(pat), c->op == SQLITE_INDEX_CONSTRAINT_GLOB, &exact);
                }
                omit = exact;
                key_range = true;
            } else if (!binary) {
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
        } else if (c->usable && c->iColumn == R_REV && (tok = rev_tok(c->op))) {
            rev = true;
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
    /* History returns revision order; several IN keys are read one after the other */
    if (!key_in && ii->nOrderBy >= 1 && ii->nOrderBy <= 2 && ii->aOrderBy[0].iColumn == R_REV &&
        !ii->aOrderBy[0].desc &&
        (ii->nOrderBy == 1 || (ii->aOrderBy[1].iColumn == R_SUB && !ii->aOrderBy[1].desc)))
        ii->orderByConsumed = 1;
    if (limit_i >= 0 && all_handled && (ii->nOrderBy == 0 || ii->orderByConsumed)) {
        ii->aConstraintUsage[limit_i].argvIndex = ++argc;
        sbuf_printf(&plan, "%slimit", plan.n ? " " : "");
        if (offset_i >= 0) {
            ii->aConstraintUsage[offset_i].argvIndex = ++argc;
            sbuf_puts(&plan, " offset");
        }
    }
    if (!(ii->colUsed & ((sqlite3_uint64)1 << R_VALUE)))
        sbuf_printf(&plan, "%skeys-only", plan.n ? " " : "");
    ii->estimatedCost = key_eq ? 50 : key_in ? 200 : key_range ? 5000 : 1e8;
    if (rev)
        ii->estimatedCost /= 10;
    ii->estimatedRows = (sqlite3_int64)ii->estimatedCost;
    if (plan.n) {
        ii->idxStr = sqlite3_mprintf("%s", plan.p);
        ii->needToFreeIdxStr = 1;
    }
    sbuf_free(&plan);
    return SQLITE_OK;
}

static int r_open(sqlite3_vtab *vt, sqlite3_vtab_cursor **out)
{
    struct rcur *c = sqlite3_malloc(sizeof *c);
    if (!c)
        return SQLITE_NOMEM;
    memset(c, 0, sizeof *c);
    c->sh = ((struct rvtab *)vt)->sh;
    *out = &c->base;
    return SQLITE_OK;
}

static void reset(struct rcur *c)
{
    plan_key_free(&c->plan);
    cairn_response_free(c->page);
    struct shell *sh = c->sh;
    sqlite3_vtab_cursor base = c->base;
    memset(c, 0, sizeof *c);
    c->sh = sh;
    c->base = base;
}

static int r_close(sqlite3_vtab_cursor *cur)
{
    reset((struct rcur *)cur);
    sqlite3_free(cur);
    return SQLITE_OK;
}

/* fetch: the next page of the current point (or of the range). */
static int fetch(struct rcur *c)
{
    struct shell *sh = c->sh;
    static const uint8_t first[1] = {0}, no_end[1] = {0};
    Cairn__HistoryRequest h = CAIRN__HISTORY_REQUEST__INIT;
    Cairn__Request req = CAIRN__REQUEST__INIT;
    struct cairn_error_detail err;
    cairn_response_free(c->page);
    c->page = NULL;
    c->pos = 0;
    if (c->plan.points) {
        h.key.data = c->plan.pts[c->pi];
        h.key.len = c->plan.ptlen[c->pi];
    } else {
        h.key.data = (uint8_t *)(c->plan.lo ? c->plan.lo : first);
        h.key.len = c->plan.lo ? c->plan.lolen : 1;
        h.range_end.data = (uint8_t *)(c->plan.hi ? c->plan.hi : no_end);
        h.range_end.len = c->plan.hi ? c->plan.hilen : 1;
    }
    h.min_revision = c->min_rev;
    h.max_revision = c->max_rev;
    if (sh->txn.snap_rev && (!h.max_revision || h.max_revision > sh->txn.snap_rev))
        h.max_revision = sh->txn.snap_rev;
    h.limit = c->page_size;
    if (c->left >= 0 && c->left < h.limit)
        h.limit = c->left > 0 ? c->left : 1;
    h.after_revision = c->after_rev;
    h.after_sub = c->after_sub;
    h.keys_only = c->keys_only;
    h.serializable = sh->serializable;
    req.body_case = CAIRN__REQUEST__BODY_HISTORY;
    req.history = &h;
    int rc = shell_call(sh, &req, NULL, false, &c->page, &err);
    if (rc == 0 && c->page->body_case != CAIRN__RESPONSE__BODY_HISTORY) {
        cairn_response_free(c->page);
        c->page = NULL;
        snprintf(err.message, sizeof err.message, "the reply is not a History reply");
        rc = -CAIRN_E_MALFORMED;
    }
    if (rc != 0)
        return vt_call_error(c->base.pVtab, "revisions: reading the history", rc, &err);
    /* later pages stop at the revision of the first: one consistent history */
    if (!sh->txn.snap_rev && c->page->header)
        sh->txn.snap_rev = c->page->header->revision;
    shell_note_rev(sh, sh->txn.snap_rev);
    const Cairn__HistoryResponse *r = c->page->history;
    c->more = r->more && r->n_records;
    c->after_rev = r->next_revision;
    c->after_sub = r->next_sub;
    size_t bytes = 0;
    for (size_t i = 0; i < r->n_records; i++)
        if (r->records[i]->kv)
            bytes += r->records[i]->kv->key.len + r->records[i]->kv->value.len;
    if (bytes < PAGE_BYTES_GROW && c->page_size < PAGE_MAX)
        c->page_size *= 2;
    else if (bytes > PAGE_BYTES_SHRINK && c->page_size > 1)
        c->page_size /= 2;
    return SQLITE_OK;
}

static int r_next(sqlite3_vtab_cursor *cur)
{
    struct rcur *c = (struct rcur *)cur;
    c->rec = NULL;
    if (c->left == 0) {
        c->eof = true;
        return SQLITE_OK;
    }
    for (;;) {
        if (c->page && c->pos < c->page->history->n_records) {
            const Cairn__HistoryRecord *rec = c->page->history->records[c->pos++];
            if (!rec || !rec->kv)
                continue;
            c->rec = rec;
            if (c->left > 0)
                c->left--;
            return SQLITE_OK;
        }
        if (c->started && !c->more) {
            /* this point is done: the next one, or the end */
            if (!c->plan.points || ++c->pi >= c->plan.npts) {
                c->eof = true;
                return SQLITE_OK;
            }
            c->after_rev = c->after_sub = 0;
        }
        c->started = true;
        int rc = fetch(c);
        if (rc != SQLITE_OK)
            return rc;
    }
}

static int int_arg(sqlite3_value *v, int64_t *out)
{
    if (sqlite3_value_numeric_type(v) != SQLITE_INTEGER)
        return 0;
    *out = sqlite3_value_int64(v);
    return 1;
}

static int r_filter(sqlite3_vtab_cursor *cur, int idx_num, const char *idx_str, int argc,
                    sqlite3_value **argv)
{
    struct rcur *c = (struct rcur *)cur;
    (void)idx_num;
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
        } else if (!strncmp(tok, "rev", 3)) {
            const char *op = tok + 3;
            if (sqlite3_value_type(v) == SQLITE_NULL) {
                c->plan.empty = true;
            } else if (!int_arg(v, &n)) {
                rc = vt_error(cur->pVtab, "revisions: revision bounds must be integers");
            } else if (!strcmp(op, "=")) {
                c->min_rev = c->min_rev > n ? c->min_rev : n;
                c->max_rev = c->max_rev && c->max_rev < n ? c->max_rev : n;
            } else if (op[0] == '>') {
                int64_t lo = op[1] == '=' ? n : n + 1;
                c->min_rev = c->min_rev > lo ? c->min_rev : lo;
            } else {
                int64_t hi = op[1] == '=' ? n : n - 1;
                if (!c->max_rev || hi < c->max_rev)
                    c->max_rev = hi;
                if (hi < 1)
                    c->plan.empty = true;
            }
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
    if (c->max_rev && c->min_rev > c->max_rev)
        c->plan.empty = true;
    if ((rc = plan_key_finish(&c->plan, false)) != SQLITE_OK)
        return rc;
    c->page_size = PAGE_FIRST;
    if (c->plan.empty) {
        c->eof = true;
        return SQLITE_OK;
    }
    return r_next(cur);
}

static int r_eof(sqlite3_vtab_cursor *cur)
{
    return ((struct rcur *)cur)->eof;
}

static int r_column(sqlite3_vtab_cursor *cur, sqlite3_context *ctx, int col)
{
    const Cairn__HistoryRecord *rec = ((struct rcur *)cur)->rec;
    const Cairn__KeyValue *kv = rec->kv;
    switch (col) {
    case R_KEY:
        result_bytes(ctx, kv->key.data, kv->key.len);
        break;
    case R_VALUE:
        result_bytes(ctx, kv->value.data ? kv->value.data : (const uint8_t *)"", kv->value.len);
        break;
    case R_REV:
        sqlite3_result_int64(ctx, kv->mod_revision);
        break;
    case R_SUB:
        sqlite3_result_int64(ctx, rec->sub);
        break;
    case R_CREATE:
        sqlite3_result_int64(ctx, kv->create_revision);
        break;
    case R_VERSION:
        sqlite3_result_int64(ctx, kv->version);
        break;
    case R_LEASE:
        sqlite3_result_int64(ctx, kv->lease);
        break;
    case R_EVENT:
        sqlite3_result_text(ctx, rec->tombstone ? "DELETE" : "PUT", -1, SQLITE_STATIC);
        break;
    }
    return SQLITE_OK;
}

static int r_rowid(sqlite3_vtab_cursor *cur, sqlite3_int64 *rowid)
{
    const Cairn__HistoryRecord *rec = ((struct rcur *)cur)->rec;
    /* unique enough within one scan: revision and sub */
    *rowid = rec && rec->kv ? rec->kv->mod_revision * 65536 + rec->sub : 0;
    return SQLITE_OK;
}

static const sqlite3_module revisions_module = {
    .iVersion = 1,
    .xCreate = r_connect,
    .xConnect = r_connect,
    .xBestIndex = r_best_index,
    .xDisconnect = r_disconnect,
    .xDestroy = r_disconnect,
    .xOpen = r_open,
    .xClose = r_close,
    .xFilter = r_filter,
    .xNext = r_next,
    .xEof = r_eof,
    .xColumn = r_column,
    .xRowid = r_rowid,
};

int vt_revisions_register(struct shell *sh)
{
    return sqlite3_create_module_v2(sh->db, "cairn_revisions", &revisions_module, sh, NULL);
}
