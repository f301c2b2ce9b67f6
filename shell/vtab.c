/*
 * What the virtual tables share: turning key constraints (=, IN, ranges,
 * LIKE/GLOB prefixes) into the points or the one range a Range or History
 * call reads; rows of the small cluster tables held in memory with a cursor
 * over them; error messages.  The tables themselves are vt_*.c.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "shell/shell.h"

int vt_error(sqlite3_vtab *vt, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sqlite3_free(vt->zErrMsg);
    vt->zErrMsg = sqlite3_vmprintf(fmt, ap);
    va_end(ap);
    return SQLITE_ERROR;
}

int vt_call_error(sqlite3_vtab *vt, const char *what, int rc, const struct cairn_error_detail *err)
{
    sqlite3_free(vt->zErrMsg);
    vt->zErrMsg = shell_call_error(what, rc, err);
    return rc == -EINTR ? SQLITE_INTERRUPT : SQLITE_ERROR;
}

int vt_declare(sqlite3 *db, const char *schema)
{
    int rc = sqlite3_declare_vtab(db, schema);
    if (rc == SQLITE_OK)
        rc = sqlite3_vtab_config(db, SQLITE_VTAB_CONSTRAINT_SUPPORT, 1);
    return rc;
}

/* ------------------------------------------------------------- key plans */

const char *plan_key_op(unsigned char op)
{
    switch (op) {
    case SQLITE_INDEX_CONSTRAINT_EQ:
        return "key=";
    case SQLITE_INDEX_CONSTRAINT_GT:
        return "key>";
    case SQLITE_INDEX_CONSTRAINT_GE:
        return "key>=";
    case SQLITE_INDEX_CONSTRAINT_LT:
        return "key<";
    case SQLITE_INDEX_CONSTRAINT_LE:
        return "key<=";
    case SQLITE_INDEX_CONSTRAINT_LIKE:
        return "key-like";
    case SQLITE_INDEX_CONSTRAINT_GLOB:
        return "key-glob";
    default:
        return NULL;
    }
}

size_t prefix_end(const uint8_t *prefix, size_t n, uint8_t *out)
{
    memcpy(out, prefix, n);
    while (n > 0) {
        if (out[n - 1] != 0xff) {
            out[n - 1]++;
            return n;
        }
        n--; /* 0xff cannot be incremented: the end is shorter */
    }
    return 0;
}

size_t plan_prefix(const char *pat, size_t n, bool glob, bool *exact)
{
    size_t i = 0;
    while (i < n) {
        char c = pat[i];
        if (glob ? (c == '*' || c == '?' || c == '[') : (c == '%' || c == '_'))
            break;
        i++;
    }
    *exact = i + 1 == n && pat[i] == (glob ? '*' : '%');
    return i;
}

static int set_bound(uint8_t **b, size_t *blen, const uint8_t *v, size_t n, bool successor)
{
    uint8_t *p = malloc(n + 1);
    if (!p)
        return SQLITE_NOMEM;
    if (n)
        memcpy(p, v, n);
    if (successor)
        p[n++] = 0; /* key + "\0": the first key after key */
    free(*b);
    *b = p;
    *blen = n;
    return SQLITE_OK;
}

/* raise_lo / lower_hi: narrow the range to [v, ...) / [..., v), v + "\0" with successor. */
static int raise_lo(struct keyplan *p, const uint8_t *v, size_t n, bool successor)
{
    uint8_t *tmp = NULL;
    size_t tlen = 0;
    if (set_bound(&tmp, &tlen, v, n, successor) != SQLITE_OK)
        return SQLITE_NOMEM;
    if (!p->lo || bytes_cmp(tmp, tlen, p->lo, p->lolen) > 0) {
        free(p->lo);
        p->lo = tmp;
        p->lolen = tlen;
    } else {
        free(tmp);
    }
    return SQLITE_OK;
}

static int lower_hi(struct keyplan *p, const uint8_t *v, size_t n, bool successor)
{
    uint8_t *tmp = NULL;
    size_t tlen = 0;
    if (set_bound(&tmp, &tlen, v, n, successor) != SQLITE_OK)
        return SQLITE_NOMEM;
    if (!p->hi || bytes_cmp(tmp, tlen, p->hi, p->hilen) < 0) {
        free(p->hi);
        p->hi = tmp;
        p->hilen = tlen;
    } else {
        free(tmp);
    }
    return SQLITE_OK;
}

static int keep_points(struct keyplan *p, uint8_t **pts, size_t *lens, size_t n)
{
    if (!p->points) {
        p->points = true;
        p->pts = pts;
        p->ptlen = lens;
        p->npts = n;
        return SQLITE_OK;
    }
    /* key = a AND key IN (...): only the keys in both */
    size_t k = 0;
    for (size_t i = 0; i < p->npts; i++) {
        bool found = false;
        for (size_t j = 0; j < n && !found; j++)
            found = bytes_cmp(p->pts[i], p->ptlen[i], pts[j], lens[j]) == 0;
        if (found) {
            p->pts[k] = p->pts[i];
            p->ptlen[k++] = p->ptlen[i];
        } else {
            free(p->pts[i]);
        }
    }
    p->npts = k;
    for (size_t j = 0; j < n; j++)
        free(pts[j]);
    free(pts);
    free(lens);
    return SQLITE_OK;
}

static int add_point(uint8_t ***pts, size_t **lens, size_t *n, size_t *cap, sqlite3_value *v)
{
    size_t len;
    const uint8_t *b = value_bytes(v, &len);
    if (!b)
        return SQLITE_OK; /* NULL matches nothing */
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 8;
        uint8_t **np = realloc(*pts, c * sizeof *np);
        if (!np)
            return SQLITE_NOMEM;
        *pts = np;
        size_t *nl = realloc(*lens, c * sizeof *nl);
        if (!nl)
            return SQLITE_NOMEM;
        *lens = nl;
        *cap = c;
    }
    if (!((*pts)[*n] = bytes_dup(b, len)))
        return SQLITE_NOMEM;
    (*lens)[(*n)++] = len;
    return SQLITE_OK;
}

int plan_key_apply(struct keyplan *p, const char *tok, sqlite3_value *v)
{
    size_t n;
    const uint8_t *b;
    if (!strcmp(tok, "key=") || !strcmp(tok, "key-in")) {
        uint8_t **pts = NULL;
        size_t *lens = NULL, np = 0, cap = 0;
        int rc = SQLITE_OK;
        sqlite3_value *x;
        if (!strcmp(tok, "key-in")) {
            for (int r = sqlite3_vtab_in_first(v, &x); r == SQLITE_OK && rc == SQLITE_OK;
                 r = sqlite3_vtab_in_next(v, &x))
                rc = add_point(&pts, &lens, &np, &cap, x);
        } else {
            rc = add_point(&pts, &lens, &np, &cap, v);
        }
        if (rc != SQLITE_OK) {
            for (size_t i = 0; i < np; i++)
                free(pts[i]);
            free(pts);
            free(lens);
            return rc;
        }
        return keep_points(p, pts, lens, np);
    }
    if (!(b = value_bytes(v, &n))) {
        p->empty = true; /* a comparison with NULL is never true */
        return SQLITE_OK;
    }
    if (!strcmp(tok, "key>"))
        return raise_lo(p, b, n, true);
    if (!strcmp(tok, "key>="))
        return raise_lo(p, b, n, false);
    if (!strcmp(tok, "key<"))
        return lower_hi(p, b, n, false);
    if (!strcmp(tok, "key<="))
        return lower_hi(p, b, n, true);
    if (!strcmp(tok, "key-like") || !strcmp(tok, "key-glob")) {
        bool exact;
        size_t plen = plan_prefix((const char *)b, n, tok[4] == 'g', &exact);
        if (!plen)
            return SQLITE_OK;
        int rc = raise_lo(p, b, plen, false);
        uint8_t *end = malloc(plen);
        if (rc != SQLITE_OK || !end) {
            free(end);
            return SQLITE_NOMEM;
        }
        size_t elen = prefix_end(b, plen, end);
        if (elen)
            rc = lower_hi(p, end, elen, false);
        free(end);
        return rc;
    }
    return SQLITE_OK;
}

static int cmp_points(const void *a, const void *b, void *arg)
{
    const size_t *ia = a, *ib = b;
    const struct keyplan *p = arg;
    return bytes_cmp(p->pts[*ia], p->ptlen[*ia], p->pts[*ib], p->ptlen[*ib]);
}

int plan_key_finish(struct keyplan *p, bool desc)
{
    if (p->hi && p->hilen == 0)
        p->empty = true;
    if (p->lo && p->hi && bytes_cmp(p->lo, p->lolen, p->hi, p->hilen) >= 0)
        p->empty = true;
    if (!p->points || p->empty)
        return SQLITE_OK;
    size_t n = p->npts;
    size_t *ord = malloc((n ? n : 1) * sizeof *ord);
    uint8_t **pts = malloc((n ? n : 1) * sizeof *pts);
    size_t *lens = malloc((n ? n : 1) * sizeof *lens);
    if (!ord || !pts || !lens) {
        free(ord);
        free(pts);
        free(lens);
        return SQLITE_NOMEM;
    }
    for (size_t i = 0; i < n; i++)
        ord[i] = i;
    qsort_r(ord, n, sizeof *ord, cmp_points, p);
    size_t k = 0;
    for (size_t j = 0; j < n; j++) {
        size_t i = ord[desc ? n - 1 - j : j];
        uint8_t *key = p->pts[i];
        size_t len = p->ptlen[i];
        bool in = (!p->lo || bytes_cmp(key, len, p->lo, p->lolen) >= 0) &&
                  (!p->hi || bytes_cmp(key, len, p->hi, p->hilen) < 0);
        bool dup = k && bytes_cmp(key, len, pts[k - 1], lens[k - 1]) == 0;
        if (in && !dup) {
            pts[k] = key;
            lens[k++] = len;
        } else {
            free(key);
        }
    }
    free(ord);
    free(p->pts);
    free(p->ptlen);
    p->pts = pts;
    p->ptlen = lens;
    p->npts = k;
    if (!k)
        p->empty = true;
    return SQLITE_OK;
}

void plan_key_free(struct keyplan *p)
{
    for (size_t i = 0; i < p->npts; i++)
        free(p->pts[i]);
    free(p->pts);
    free(p->ptlen);
    free(p->lo);
    free(p->hi);
    memset(p, 0, sizeof *p);
}

/* ------------------------------------------------------------ small tables */

int vrows_add(struct vrows *r, int64_t rowid)
{
    if (r->nrows == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 16;
        struct ocell *c = realloc(r->cells, cap * (size_t)r->ncols * sizeof *c);
        if (!c)
            return SQLITE_NOMEM;
        r->cells = c;
        int64_t *ids = realloc(r->rowids, cap * sizeof *ids);
        if (!ids)
            return SQLITE_NOMEM;
        r->rowids = ids;
        r->cap = cap;
    }
    struct ocell *row = &r->cells[r->nrows * (size_t)r->ncols];
    for (int i = 0; i < r->ncols; i++)
        row[i] = (struct ocell){.type = SQLITE_NULL};
    r->rowids[r->nrows++] = rowid;
    return SQLITE_OK;
}

static struct ocell *cell(struct vrows *r, int col)
{
    return &r->cells[(r->nrows - 1) * (size_t)r->ncols + (size_t)col];
}

int vrows_int(struct vrows *r, int col, int64_t v)
{
    *cell(r, col) = (struct ocell){.type = SQLITE_INTEGER, .i = v};
    return SQLITE_OK;
}

static int set_str(struct vrows *r, int col, int type, const void *s, size_t n)
{
    char *p = malloc(n + 1);
    if (!p)
        return SQLITE_NOMEM;
    if (n)
        memcpy(p, s, n);
    p[n] = '\0';
    *cell(r, col) = (struct ocell){.type = type, .s = p, .n = n};
    return SQLITE_OK;
}

int vrows_text(struct vrows *r, int col, const char *s, size_t n)
{
    return set_str(r, col, SQLITE_TEXT, s ? s : "", s ? n : 0);
}

int vrows_bytes(struct vrows *r, int col, const void *s, size_t n)
{
    return set_str(r, col, bytes_utf8(s, n) ? SQLITE_TEXT : SQLITE_BLOB, s, n);
}

void vrows_clear(struct vrows *r)
{
    for (size_t i = 0; i < r->nrows * (size_t)r->ncols; i++)
        if (r->cells[i].type == SQLITE_TEXT || r->cells[i].type == SQLITE_BLOB)
            free((char *)r->cells[i].s);
    free(r->cells);
    free(r->rowids);
    int ncols = r->ncols;
    memset(r, 0, sizeof *r);
    r->ncols = ncols;
}

int vrows_cursor_open(sqlite3_vtab *vt, sqlite3_vtab_cursor **out)
{
    (void)vt;
    struct vrows_cursor *c = sqlite3_malloc(sizeof *c);
    if (!c)
        return SQLITE_NOMEM;
    memset(c, 0, sizeof *c);
    *out = &c->base;
    return SQLITE_OK;
}

int vrows_cursor_close(sqlite3_vtab_cursor *cur)
{
    struct vrows_cursor *c = (struct vrows_cursor *)cur;
    vrows_clear(&c->rows);
    sqlite3_free(c);
    return SQLITE_OK;
}

int vrows_cursor_next(sqlite3_vtab_cursor *cur)
{
    ((struct vrows_cursor *)cur)->at++;
    return SQLITE_OK;
}

int vrows_cursor_eof(sqlite3_vtab_cursor *cur)
{
    struct vrows_cursor *c = (struct vrows_cursor *)cur;
    return c->at >= c->rows.nrows;
}

int vrows_cursor_column(sqlite3_vtab_cursor *cur, sqlite3_context *ctx, int col)
{
    struct vrows_cursor *c = (struct vrows_cursor *)cur;
    if (col < 0 || col >= c->rows.ncols || sqlite3_vtab_nochange(ctx))
        return SQLITE_OK; /* nochange: an UPDATE that leaves the column alone */
    const struct ocell *x = &c->rows.cells[c->at * (size_t)c->rows.ncols + (size_t)col];
    switch (x->type) {
    case SQLITE_INTEGER:
        sqlite3_result_int64(ctx, x->i);
        break;
    case SQLITE_FLOAT:
        sqlite3_result_double(ctx, x->d);
        break;
    case SQLITE_TEXT:
        sqlite3_result_text(ctx, x->s, (int)x->n, SQLITE_TRANSIENT);
        break;
    case SQLITE_BLOB:
        sqlite3_result_blob(ctx, x->s, (int)x->n, SQLITE_TRANSIENT);
        break;
    default:
        sqlite3_result_null(ctx);
    }
    return SQLITE_OK;
}

int vrows_cursor_rowid(sqlite3_vtab_cursor *cur, sqlite3_int64 *rowid)
{
    struct vrows_cursor *c = (struct vrows_cursor *)cur;
    *rowid = c->rows.rowids[c->at];
    return SQLITE_OK;
}
