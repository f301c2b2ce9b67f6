/*
 * The checker's driver and its report: run every check, keep the findings,
 * print the summary and the verdicts as text or JSON, and the exit code.
 */
#include "test/jepsen/check_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void sb_printf(struct sb *b, const char *fmt, ...)
{
    if (b->nomem)
        return;
    for (int pass = 0; pass < 2; pass++) {
        size_t room = b->cap - b->len;
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->s ? b->s + b->len : NULL, b->s ? room : 0, fmt, ap);
        va_end(ap);
        if (n < 0)
            return;
        if (b->s && (size_t)n < room) {
            b->len += (size_t)n;
            return;
        }
        size_t nc = b->cap ? b->cap : 256;
        while (nc < b->len + (size_t)n + 1)
            nc *= 2;
        char *ns = realloc(b->s, nc);
        if (!ns) {
            b->nomem = true;
            return;
        }
        b->s = ns;
        b->cap = nc;
    }
}

void sb_op(struct sb *b, const struct history *h, const struct hist_op *op, const char *prefix)
{
    char buf[1024];
    hist_format_op(h, op, buf, sizeof(buf));
    sb_printf(b, "%s%s  (line %" PRIu32 ")\n", prefix ? prefix : "  ", buf, op->inv_line);
}

char *sb_take(struct sb *b)
{
    char *s = b->s ? b->s : strdup("");
    b->s = NULL;
    b->len = b->cap = 0;
    return s;
}

int finding_add(struct check_result *res, const struct check_opts *o, const char *kind, const char *key,
                char *text)
{
    res->nviolations++;
    if (strcmp(kind, "budget-exhausted") != 0)
        res->verdict = CV_VIOLATION;
    else if (res->verdict == CV_VALID)
        res->verdict = CV_UNKNOWN;
    if (res->nfindings >= o->max_findings) {
        free(text);
        return 0;
    }
    if (res->nfindings == res->capfindings) {
        size_t nc = res->capfindings ? res->capfindings * 2 : 8;
        struct check_finding *nf = realloc(res->findings, nc * sizeof(*nf));
        if (!nf) {
            free(text);
            return -ENOMEM;
        }
        res->findings = nf;
        res->capfindings = nc;
    }
    struct check_finding *f = &res->findings[res->nfindings];
    f->kind = strdup(kind);
    f->key = strdup(key ? key : "");
    f->text = text ? text : strdup("");
    if (!f->kind || !f->key || !f->text) {
        free(f->kind);
        free(f->key);
        free(f->text);
        return -ENOMEM;
    }
    res->nfindings++;
    return 0;
}

bool op_is_write(const struct hist_op *op)
{
    switch (op->kind) {
    case HK_PUT: case HK_PUTL: case HK_MPUT:
        return true;
    case HK_CAS: case HK_DEL:
        return op->status == HS_OK && op->n == 1;
    default:
        return false;
    }
}

void check_opts_default(struct check_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->budget = 10 * 1000 * 1000;
    o->budget_seconds = 60;
    o->max_findings = 20;
    o->shrink = true;
    o->shrink_trials = 2000;
    o->shrink_seconds = 10;
}

static const char *const names[CHK_N] = {
    [CHK_LIN] = "linearizability",
    [CHK_WRITES] = "acknowledged-writes",
    [CHK_READS] = "reads-at-revision",
    [CHK_ORDER] = "revision-order",
    [CHK_WATCH] = "watches",
    [CHK_LEASE] = "leases",
};

const char *check_name(enum check_id id)
{
    return (unsigned)id < CHK_N ? names[id] : "?";
}

const char *check_verdict_name(enum check_verdict v)
{
    switch (v) {
    case CV_VALID: return "valid";
    case CV_VIOLATION: return "VIOLATION";
    case CV_UNKNOWN: return "unknown";
    case CV_SKIPPED: return "skipped";
    }
    return "?";
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int check_history(const struct history *given, const struct check_opts *o, struct check_report *rep)
{
    memset(rep, 0, sizeof(*rep));
    double t0 = now_seconds();
    /* a compacted log gets its front back from the watchers (check_rebuild.c) */
    struct history rebuilt;
    struct hist_event *ev = NULL;
    int rc = log_rebuild(given, &rebuilt, &ev, rep->st.log_rebuild_why, sizeof rep->st.log_rebuild_why);
    if (rc < 0)
        return rc;
    const struct history *h = rc ? &rebuilt : given;
    if (rc) {
        rep->st.log_rebuilt_below = given->logstart;
        rep->st.log_rebuilt_events = rebuilt.nlog - given->nlog;
    }
    rc = check_linearizable(h, o, &rep->r[CHK_LIN], &rep->st);
    rep->st.lin_seconds = now_seconds() - t0;
    if (rc == 0)
        rc = check_log_writes(h, o, &rep->r[CHK_WRITES]);
    if (rc == 0)
        rc = check_log_reads(h, o, &rep->r[CHK_READS]);
    if (rc == 0)
        rc = check_rev_order(h, o, &rep->r[CHK_ORDER]);
    if (rc == 0)
        rc = check_watches(h, o, &rep->r[CHK_WATCH]);
    if (rc == 0)
        rc = check_leases(h, o, &rep->r[CHK_LEASE]);
    rep->st.seconds = now_seconds() - t0;
    free(ev);
    return rc;
}

void check_report_free(struct check_report *rep)
{
    for (int i = 0; i < CHK_N; i++) {
        struct check_result *r = &rep->r[i];
        for (size_t j = 0; j < r->nfindings; j++) {
            free(r->findings[j].kind);
            free(r->findings[j].key);
            free(r->findings[j].text);
        }
        free(r->findings);
    }
    memset(rep, 0, sizeof(*rep));
}

int check_exit_code(const struct check_report *rep)
{
    bool unknown = false;
    for (int i = 0; i < CHK_N; i++) {
        if (rep->r[i].verdict == CV_VIOLATION)
            return 1;
        if (rep->r[i].verdict == CV_UNKNOWN)
            unknown = true;
    }
    return unknown ? 3 : 0;
}

/* --- the summary ------------------------------------------------------------------- */

struct counts {
    size_t by[HK_NKINDS][4]; /* attempted, ok, fail, info */
    size_t tot[4];
    size_t events, watches, faults_start, faults_stop;
};

static void count(const struct history *h, struct counts *c)
{
    memset(c, 0, sizeof(*c));
    for (size_t i = 0; i < h->nops; i++) {
        const struct hist_op *op = &h->ops[i];
        int s = op->status == HS_OK ? 1 : op->status == HS_FAIL ? 2 : 3;
        c->by[op->kind][0]++;
        c->by[op->kind][s]++;
        c->tot[0]++;
        c->tot[s]++;
    }
    c->watches = h->nwatches;
    for (size_t i = 0; i < h->nwatches; i++)
        c->events += h->watches[i].nev;
    for (size_t i = 0; i < h->nfaults; i++) {
        if (h->faults[i].start)
            c->faults_start++;
        else
            c->faults_stop++;
    }
}

void check_print_text(FILE *f, const struct history *h, const struct check_report *rep)
{
    struct counts c;
    count(h, &c);
    fprintf(f, "operations: %zu attempted, %zu ok, %zu fail, %zu info", c.tot[0], c.tot[1], c.tot[2], c.tot[3]);
    if (h->nunfinished)
        fprintf(f, " (%zu of them unfinished in the file, read as info)", h->nunfinished);
    fprintf(f, "\n");
    fprintf(f, "  %-10s %9s %9s %9s %9s\n", "op", "attempted", "ok", "fail", "info");
    for (int k = 0; k < HK_NKINDS; k++)
        if (c.by[k][0])
            fprintf(f, "  %-10s %9zu %9zu %9zu %9zu\n", hist_kind_name((enum hist_kind)k), c.by[k][0], c.by[k][1],
                    c.by[k][2], c.by[k][3]);
    fprintf(f, "watches: %zu, events delivered: %zu\n", c.watches, c.events);
    fprintf(f, "faults recorded: %zu started, %zu stopped", c.faults_start, c.faults_stop);
    if (h->nfaults) {
        /* The distinct fault names, in order of first appearance. */
        fprintf(f, " (");
        int shown = 0;
        for (size_t i = 0; i < h->nfaults; i++) {
            bool seen = false;
            for (size_t j = 0; j < i; j++)
                seen |= h->faults[j].name == h->faults[i].name;
            if (!seen && h->faults[i].start) {
                size_t n = 0;
                for (size_t j = i; j < h->nfaults; j++)
                    n += h->faults[j].start && h->faults[j].name == h->faults[i].name;
                fprintf(f, "%s%s x%zu", shown++ ? ", " : "", hist_str(h, h->faults[i].name), n);
            }
        }
        fprintf(f, ")");
    }
    fprintf(f, "\n");
    if (h->has_log)
        fprintf(f, "revision log: %zu events, revisions %" PRId64 "..%" PRId64 "\n", h->nlog, h->logstart,
                h->logend);
    else
        fprintf(f, "revision log: none in the file\n");
    const struct check_stats *st = &rep->st;
    if (st->log_rebuilt_below)
        fprintf(f, "revision log below %" PRId64 " (compacted): rebuilt from the watchers' events, %zu events\n",
                st->log_rebuilt_below, st->log_rebuilt_events);
    else if (st->log_rebuild_why[0])
        fprintf(f, "revision log below %" PRId64 " (compacted): not rebuilt: %s\n", h->logstart, st->log_rebuild_why);
    fprintf(f, "model search: %zu partitions (%zu inconclusive, %zu not linearizable), %zu operations, "
               "%" PRIu64 " states, %zu unobserved info writes left out\n",
            st->partitions, st->partitions_unknown, st->partitions_bad, st->lin_ops, st->states, st->dropped_info);
    fprintf(f, "time: %.3f s (model search %.3f s)\n\n", st->seconds, st->lin_seconds);

    for (int i = 0; i < CHK_N; i++) {
        const struct check_result *r = &rep->r[i];
        fprintf(f, "%-20s %-9s", check_name((enum check_id)i), check_verdict_name(r->verdict));
        if (r->verdict == CV_VIOLATION || r->verdict == CV_UNKNOWN)
            fprintf(f, " %zu finding(s)", r->nviolations);
        fprintf(f, "  (%zu checked", r->nchecked);
        if (r->nunchecked)
            fprintf(f, ", %zu not checkable", r->nunchecked);
        fprintf(f, ")");
        if (r->note[0])
            fprintf(f, "  %s", r->note);
        fprintf(f, "\n");
    }
    for (int i = 0; i < CHK_N; i++) {
        const struct check_result *r = &rep->r[i];
        for (size_t j = 0; j < r->nfindings; j++)
            fprintf(f, "\n[%s] %s%s%s\n%s", check_name((enum check_id)i), r->findings[j].kind,
                    r->findings[j].key[0] ? " key " : "", r->findings[j].key, r->findings[j].text);
        if (r->nviolations > r->nfindings)
            fprintf(f, "\n[%s] ... and %zu more not shown\n", check_name((enum check_id)i),
                    r->nviolations - r->nfindings);
    }
    int code = check_exit_code(rep);
    fprintf(f, "\nverdict: %s\n", code == 0 ? "VALID" : code == 1 ? "INVALID" : "UNKNOWN (search budget exhausted)");
}

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c == '\n')
            fputs("\\n", f);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

void check_print_json(FILE *f, const struct history *h, const struct check_report *rep)
{
    struct counts c;
    count(h, &c);
    int code = check_exit_code(rep);
    fprintf(f, "{\"valid\":%s,\"exit\":%d,\"operations\":{\"attempted\":%zu,\"ok\":%zu,\"fail\":%zu,\"info\":%zu,"
               "\"unfinished\":%zu,\"by_kind\":{",
            code == 0 ? "true" : code == 1 ? "false" : "null", code, c.tot[0], c.tot[1], c.tot[2], c.tot[3],
            h->nunfinished);
    int first = 1;
    for (int k = 0; k < HK_NKINDS; k++)
        if (c.by[k][0]) {
            fprintf(f, "%s\"%s\":{\"attempted\":%zu,\"ok\":%zu,\"fail\":%zu,\"info\":%zu}", first ? "" : ",",
                    hist_kind_name((enum hist_kind)k), c.by[k][0], c.by[k][1], c.by[k][2], c.by[k][3]);
            first = 0;
        }
    const struct check_stats *st = &rep->st;
    fprintf(f, "}},\"watches\":%zu,\"watch_events\":%zu,\"faults\":{\"started\":%zu,\"stopped\":%zu},"
               "\"log\":{\"present\":%s,\"events\":%zu,\"start\":%" PRId64 ",\"end\":%" PRId64 "},"
               "\"search\":{\"partitions\":%zu,\"inconclusive\":%zu,\"not_linearizable\":%zu,\"operations\":%zu,"
               "\"states\":%" PRIu64 ",\"dropped_info\":%zu},\"log_rebuilt_below\":%" PRId64
               ",\"seconds\":%.6f,\"checks\":{",
            c.watches, c.events, c.faults_start, c.faults_stop, h->has_log ? "true" : "false", h->nlog,
            h->has_log ? h->logstart : 0, h->logend, st->partitions, st->partitions_unknown, st->partitions_bad,
            st->lin_ops, st->states, st->dropped_info, st->log_rebuilt_below, st->seconds);
    for (int i = 0; i < CHK_N; i++) {
        const struct check_result *r = &rep->r[i];
        fprintf(f, "%s\"%s\":{\"verdict\":\"%s\",\"violations\":%zu,\"checked\":%zu,\"unchecked\":%zu,\"note\":",
                i ? "," : "", check_name((enum check_id)i), check_verdict_name(r->verdict), r->nviolations,
                r->nchecked, r->nunchecked);
        json_str(f, r->note);
        fprintf(f, ",\"findings\":[");
        for (size_t j = 0; j < r->nfindings; j++) {
            fprintf(f, "%s{\"kind\":", j ? "," : "");
            json_str(f, r->findings[j].kind);
            fprintf(f, ",\"key\":");
            json_str(f, r->findings[j].key);
            fprintf(f, ",\"text\":");
            json_str(f, r->findings[j].text);
            fprintf(f, "}");
        }
        fprintf(f, "]}");
    }
    fprintf(f, "}}\n");
}
