/*
 * Printing results: aligned tables like psql (rows batched to align them, a
 * footer with the row count and the revision read at), expanded records,
 * line, JSON (one array per statement on one line) and CSV.  Rows stream:
 * a table holds at most one batch.  Text is escaped and long values are cut
 * with a marker in the table formats only; JSON and CSV carry every byte.
 */
#include <langinfo.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>

#include "shell/shell.h"

#define BATCH_ROWS 1000  /* rows aligned together in a table */
#define CELL_MAX 60      /* display columns of a table cell before it is cut */
#define EXPANDED_MAX 400 /* ... of a value in expanded mode */

struct rcell {
    char *s;
    int width;
    bool right; /* numbers align right */
};

struct out_state {
    int ncols;
    char **names;
    int *widths;
    int64_t nrows;
    struct rcell *batch; /* BATCH_ROWS * ncols */
    size_t nbatch;
    bool header_done;
};

int out_init(struct shell *sh)
{
    sh->os = calloc(1, sizeof *sh->os);
    return sh->os ? 0 : -1;
}

static void clear_batch(struct out_state *o)
{
    for (size_t i = 0; i < o->nbatch * (size_t)o->ncols; i++)
        free(o->batch[i].s);
    o->nbatch = 0;
}

static void reset(struct out_state *o)
{
    clear_batch(o);
    for (int i = 0; i < o->ncols; i++)
        free(o->names[i]);
    free(o->names);
    free(o->widths);
    free(o->batch);
    memset(o, 0, sizeof *o);
}

void out_free(struct shell *sh)
{
    if (sh->os)
        reset(sh->os);
    free(sh->os);
    sh->os = NULL;
}

static FILE *out(struct shell *sh)
{
    return sh->out ? sh->out : stdout;
}

/* ------------------------------------------------------------ rendering */

static bool utf8_locale(void)
{
    const char *cs = nl_langinfo(CODESET);
    return cs && (!strcmp(cs, "UTF-8") || !strcmp(cs, "utf8"));
}

/* width: display columns of UTF-8 s (invalid bytes count as one). */
static int width(const char *s, size_t n)
{
    int w = 0;
    mbstate_t st;
    memset(&st, 0, sizeof st);
    for (size_t i = 0; i < n;) {
        wchar_t wc;
        size_t l = mbrtowc(&wc, s + i, n - i, &st);
        if (l == (size_t)-1 || l == (size_t)-2 || l == 0) {
            memset(&st, 0, sizeof st);
            w++;
            i++;
            continue;
        }
        int cw = wcwidth(wc);
        w += cw < 0 ? 1 : cw;
        i += l;
    }
    return w;
}

/* cut: s shortened to max display columns with a marker; returns the width. */
static int cut(struct sbuf *b, int max)
{
    int w = width(b->p ? b->p : "", b->n);
    if (w <= max)
        return w;
    const char *mark = utf8_locale() ? "\xe2\x80\xa6" : "...";
    int mw = utf8_locale() ? 1 : 3;
    mbstate_t st;
    memset(&st, 0, sizeof st);
    size_t i = 0;
    int acc = 0;
    while (i < b->n) {
        wchar_t wc;
        size_t l = mbrtowc(&wc, b->p + i, b->n - i, &st);
        int cw = 1;
        if (l == (size_t)-1 || l == (size_t)-2 || l == 0) {
            memset(&st, 0, sizeof st);
            l = 1;
        } else {
            cw = wcwidth(wc) < 0 ? 1 : wcwidth(wc);
        }
        if (acc + cw > max - mw)
            break;
        acc += cw;
        i += l;
    }
    b->n = i;
    sbuf_puts(b, mark);
    return acc + mw;
}

/* render: a cell for the table formats. */
static struct rcell render(const struct ocell *c, int max)
{
    struct sbuf b = {0};
    struct rcell r = {0};
    switch (c->type) {
    case SQLITE_INTEGER:
        sbuf_printf(&b, "%lld", (long long)c->i);
        r.right = true;
        break;
    case SQLITE_FLOAT:
        sbuf_printf(&b, "%.15g", c->d);
        r.right = true;
        break;
    case SQLITE_TEXT:
    case SQLITE_BLOB:
        bytes_escape(&b, c->s, c->n);
        break;
    default:
        break;
    }
    sbuf_add(&b, "", 0);
    r.width = cut(&b, max);
    r.s = b.p ? b.p : strdup("");
    return r;
}

static void json_string(FILE *f, const char *s, size_t n)
{
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c == '\n')
            fputs("\\n", f);
        else if (c == '\t')
            fputs("\\t", f);
        else if (c == '\r')
            fputs("\\r", f);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

static void json_value(FILE *f, const struct ocell *c)
{
    struct sbuf b = {0};
    switch (c->type) {
    case SQLITE_INTEGER:
        fprintf(f, "%lld", (long long)c->i);
        return;
    case SQLITE_FLOAT:
        if (isfinite(c->d))
            fprintf(f, "%.17g", c->d);
        else
            fputs("null", f);
        return;
    case SQLITE_TEXT:
        if (bytes_utf8(c->s, c->n) || !c->n) {
            json_string(f, c->s, c->n);
            return;
        }
        __attribute__((fallthrough)); /* text that is not UTF-8 is carried as bytes */
    case SQLITE_BLOB:
        bytes_base64(&b, c->s, c->n);
        fputs("{\"base64\":\"", f);
        if (b.p)
            fputs(b.p, f);
        fputs("\"}", f);
        sbuf_free(&b);
        return;
    default:
        fputs("null", f);
    }
}

static void csv_field(FILE *f, const struct ocell *c)
{
    switch (c->type) {
    case SQLITE_INTEGER:
        fprintf(f, "%lld", (long long)c->i);
        return;
    case SQLITE_FLOAT:
        fprintf(f, "%.17g", c->d);
        return;
    case SQLITE_TEXT:
        if (bytes_utf8(c->s, c->n) || !c->n) {
            bool quote = c->n && (c->s[0] == ' ' || c->s[c->n - 1] == ' ');
            for (size_t i = 0; i < c->n && !quote; i++)
                quote = c->s[i] == ',' || c->s[i] == '"' || c->s[i] == '\n' || c->s[i] == '\r';
            if (!quote) {
                fwrite(c->s, 1, c->n, f);
                return;
            }
            fputc('"', f);
            for (size_t i = 0; i < c->n; i++) {
                if (c->s[i] == '"')
                    fputc('"', f);
                fputc(c->s[i], f);
            }
            fputc('"', f);
            return;
        }
        __attribute__((fallthrough));
    case SQLITE_BLOB:
        fputs("\\x", f);
        for (size_t i = 0; i < c->n; i++)
            fprintf(f, "%02x", (unsigned char)c->s[i]);
        return;
    default:
        return;
    }
}

static void csv_name(FILE *f, const char *name)
{
    struct ocell c = {.type = SQLITE_TEXT, .s = name, .n = strlen(name)};
    csv_field(f, &c);
}

/* ------------------------------------------------------------- results */

void out_start(struct shell *sh, int ncols, const char *const *names)
{
    struct out_state *o = sh->os;
    reset(o);
    o->ncols = ncols;
    o->names = calloc((size_t)ncols + 1, sizeof *o->names);
    o->widths = calloc((size_t)ncols + 1, sizeof *o->widths);
    for (int i = 0; i < ncols && o->names; i++)
        o->names[i] = strdup(names[i] ? names[i] : "?");
    FILE *f = out(sh);
    if (sh->format == FMT_JSON) {
        fputc('[', f);
    } else if (sh->format == FMT_CSV) {
        for (int i = 0; i < ncols; i++) {
            if (i)
                fputc(',', f);
            csv_name(f, o->names[i] ? o->names[i] : "");
        }
        fputc('\n', f);
    }
}

static void rule(FILE *f, const struct out_state *o)
{
    for (int i = 0; i < o->ncols; i++) {
        if (i)
            fputc('+', f);
        for (int j = 0; j < o->widths[i] + 2; j++)
            fputc('-', f);
    }
    fputc('\n', f);
}

static void pad(FILE *f, int n)
{
    while (n-- > 0)
        fputc(' ', f);
}

static void flush_batch(struct shell *sh)
{
    struct out_state *o = sh->os;
    FILE *f = out(sh);
    if (!o->header_done) {
        for (int i = 0; i < o->ncols; i++) {
            int w = width(o->names[i], strlen(o->names[i]));
            if (w > o->widths[i])
                o->widths[i] = w;
        }
    }
    for (size_t r = 0; r < o->nbatch; r++)
        for (int i = 0; i < o->ncols; i++)
            if (o->batch[r * (size_t)o->ncols + (size_t)i].width > o->widths[i])
                o->widths[i] = o->batch[r * (size_t)o->ncols + (size_t)i].width;
    if (!o->header_done) {
        for (int i = 0; i < o->ncols; i++) {
            int w = width(o->names[i], strlen(o->names[i]));
            fputs(i ? "| " : " ", f);
            /* psql centres the names */
            int left = (o->widths[i] - w) / 2;
            pad(f, left);
            fputs(o->names[i], f);
            pad(f, o->widths[i] - w - left + (i + 1 < o->ncols ? 1 : 0));
        }
        fputc('\n', f);
        rule(f, o);
        o->header_done = true;
    }
    for (size_t r = 0; r < o->nbatch; r++) {
        for (int i = 0; i < o->ncols; i++) {
            const struct rcell *c = &o->batch[r * (size_t)o->ncols + (size_t)i];
            fputs(i ? "| " : " ", f);
            if (c->right)
                pad(f, o->widths[i] - c->width);
            fputs(c->s, f);
            if (!c->right && i + 1 < o->ncols)
                pad(f, o->widths[i] - c->width);
            if (i + 1 < o->ncols)
                fputc(' ', f);
        }
        fputc('\n', f);
    }
    clear_batch(o);
}

static void expanded_row(struct shell *sh, const struct ocell *cells)
{
    struct out_state *o = sh->os;
    FILE *f = out(sh);
    int nw = 0;
    for (int i = 0; i < o->ncols; i++) {
        int w = width(o->names[i], strlen(o->names[i]));
        nw = w > nw ? w : nw;
    }
    fprintf(f, "-[ RECORD %lld ]", (long long)o->nrows);
    for (int i = 0; i < nw - 10; i++)
        fputc('-', f);
    fputs("-+------\n", f);
    for (int i = 0; i < o->ncols; i++) {
        struct rcell c = render(&cells[i], EXPANDED_MAX);
        fputs(o->names[i], f);
        pad(f, nw - width(o->names[i], strlen(o->names[i])));
        fprintf(f, " | %s\n", c.s);
        free(c.s);
    }
}

static void line_row(struct shell *sh, const struct ocell *cells)
{
    struct out_state *o = sh->os;
    FILE *f = out(sh);
    int nw = 0;
    for (int i = 0; i < o->ncols; i++) {
        int w = width(o->names[i], strlen(o->names[i]));
        nw = w > nw ? w : nw;
    }
    if (o->nrows > 1)
        fputc('\n', f);
    for (int i = 0; i < o->ncols; i++) {
        struct rcell c = render(&cells[i], EXPANDED_MAX);
        pad(f, nw - width(o->names[i], strlen(o->names[i])));
        fprintf(f, "%s = %s\n", o->names[i], c.s);
        free(c.s);
    }
}

void out_row(struct shell *sh, const struct ocell *cells)
{
    struct out_state *o = sh->os;
    FILE *f = out(sh);
    o->nrows++;
    switch (sh->format) {
    case FMT_JSON:
        fputs(o->nrows > 1 ? ",{" : "{", f);
        for (int i = 0; i < o->ncols; i++) {
            if (i)
                fputc(',', f);
            json_string(f, o->names[i], strlen(o->names[i]));
            fputc(':', f);
            json_value(f, &cells[i]);
        }
        fputc('}', f);
        return;
    case FMT_CSV:
        for (int i = 0; i < o->ncols; i++) {
            if (i)
                fputc(',', f);
            csv_field(f, &cells[i]);
        }
        fputs("\r\n", f);
        return;
    case FMT_LINE:
        line_row(sh, cells);
        return;
    case FMT_TABLE:
        if (sh->expanded) {
            expanded_row(sh, cells);
            return;
        }
        if (!o->batch && !(o->batch = calloc((size_t)BATCH_ROWS * (size_t)o->ncols, sizeof *o->batch)))
            return;
        for (int i = 0; i < o->ncols; i++)
            o->batch[o->nbatch * (size_t)o->ncols + (size_t)i] = render(&cells[i], CELL_MAX);
        if (++o->nbatch == BATCH_ROWS)
            flush_batch(sh);
        return;
    }
}

void out_finish(struct shell *sh, const char *extra)
{
    struct out_state *o = sh->os;
    FILE *f = out(sh);
    switch (sh->format) {
    case FMT_JSON:
        fputs("]\n", f);
        break;
    case FMT_CSV:
        break;
    case FMT_LINE:
    case FMT_TABLE:
        if (sh->format == FMT_TABLE && !sh->expanded && (o->nbatch || !o->header_done))
            flush_batch(sh);
        if (sh->format == FMT_TABLE)
            fprintf(f, "(%lld row%s%s%s)\n", (long long)o->nrows, o->nrows == 1 ? "" : "s",
                    extra ? ", " : "", extra ? extra : "");
        break;
    }
    fflush(f);
    reset(o);
}

void out_abort(struct shell *sh)
{
    struct out_state *o = sh->os;
    FILE *f = out(sh);
    if (sh->format == FMT_JSON)
        fputs("]\n", f); /* the rows so far, still one valid array */
    else if (sh->format == FMT_TABLE && !sh->expanded && o->nbatch)
        flush_batch(sh);
    fflush(f);
    reset(o);
}

void out_command(struct shell *sh, const char *command, int64_t rows, bool has_rows,
                 int64_t revision, bool pending)
{
    FILE *f = out(sh);
    const char *notice = sh->notice.n ? sh->notice.p : NULL;
    if (sh->format == FMT_JSON) {
        fputs("[{\"command\":", f);
        json_string(f, command, strlen(command));
        if (has_rows)
            fprintf(f, ",\"rows\":%lld", (long long)rows);
        if (revision)
            fprintf(f, ",\"revision\":%lld", (long long)revision);
        if (pending)
            fputs(",\"pending\":true", f);
        if (notice) {
            fputs(",\"notice\":", f);
            json_string(f, notice, strlen(notice));
        }
        fputs("}]\n", f);
    } else if (sh->format == FMT_CSV) {
        if (notice)
            fprintf(stderr, "%s\n", notice);
    } else {
        if (notice)
            fprintf(f, "%s\n", notice);
        fputs(command, f);
        if (has_rows)
            fprintf(f, " %lld", (long long)rows);
        if (revision)
            fprintf(f, " (revision %lld)", (long long)revision);
        else if (pending)
            fputs(" (pending until COMMIT)", f);
        fputc('\n', f);
    }
    fflush(f);
}

void out_error(struct shell *sh, const char *fmt, ...)
{
    va_list ap;
    if (sh->out)
        fflush(sh->out);
    fflush(stdout);
    fputs("error: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
}

void out_text(struct shell *sh, const char *fmt, ...)
{
    va_list ap;
    FILE *f = sh->format == FMT_JSON || sh->format == FMT_CSV ? stderr : out(sh);
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
    fputc('\n', f);
    fflush(f);
}

void out_event(struct shell *sh, const char *type, const Cairn__KeyValue *kv)
{
    FILE *f = out(sh);
    struct ocell key = {.type = bytes_utf8(kv->key.data, kv->key.len) ? SQLITE_TEXT : SQLITE_BLOB,
                        .s = (const char *)kv->key.data, .n = kv->key.len};
    struct ocell val = {.type = bytes_utf8(kv->value.data, kv->value.len) ? SQLITE_TEXT : SQLITE_BLOB,
                        .s = kv->value.data ? (const char *)kv->value.data : "", .n = kv->value.len};
    if (sh->format == FMT_JSON) {
        fputs("{\"type\":", f);
        json_string(f, type, strlen(type));
        fputs(",\"key\":", f);
        json_value(f, &key);
        fputs(",\"value\":", f);
        json_value(f, &val);
        fprintf(f, ",\"mod_revision\":%lld,\"create_revision\":%lld,\"version\":%lld,\"lease\":%lld}\n",
                (long long)kv->mod_revision, (long long)kv->create_revision, (long long)kv->version,
                (long long)kv->lease);
    } else if (sh->format == FMT_CSV) {
        struct ocell t = {.type = SQLITE_TEXT, .s = type, .n = strlen(type)};
        csv_field(f, &t);
        fputc(',', f);
        csv_field(f, &key);
        fputc(',', f);
        csv_field(f, &val);
        fprintf(f, ",%lld,%lld,%lld,%lld\r\n", (long long)kv->mod_revision,
                (long long)kv->create_revision, (long long)kv->version, (long long)kv->lease);
    } else {
        struct rcell k = render(&key, EXPANDED_MAX), v = render(&val, CELL_MAX);
        if (!strcmp(type, "DELETE"))
            fprintf(f, "%-6s %s (revision %lld)\n", type, k.s, (long long)kv->mod_revision);
        else
            fprintf(f, "%-6s %s = %s (revision %lld, version %lld%s)\n", type, k.s, v.s,
                    (long long)kv->mod_revision, (long long)kv->version,
                    kv->lease ? ", with a lease" : "");
        free(k.s);
        free(v.s);
    }
    fflush(f);
}
