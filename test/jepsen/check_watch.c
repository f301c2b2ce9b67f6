/*
 * The watch check: what each watcher delivered must be exactly the log's
 * events of its key or prefix, from its start revision up to the last
 * revision it delivered, in revision order, each once.  Events below the
 * log's start cannot be judged and are only counted.
 */
#include "test/jepsen/check_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

static bool matches(const struct history *h, const struct hist_watch *w, uint32_t key)
{
    if (!w->prefix)
        return key == w->key;
    const char *p = hist_str(h, w->key);
    return strncmp(hist_str(h, key), p, strlen(p)) == 0;
}

/* First log index with revision >= rev. */
static size_t log_lower(const struct history *h, int64_t rev)
{
    size_t a = 0, b = h->nlog;
    while (a < b) {
        size_t m = a + (b - a) / 2;
        if (h->log[m].rev < rev)
            a = m + 1;
        else
            b = m;
    }
    return a;
}

static void sb_event(struct sb *b, const struct history *h, const struct hist_event *e, const char *prefix)
{
    char t[32];
    sb_printf(b, "%srevision %" PRId64 " %s %s %s", prefix, e->rev, e->put ? "put" : "del", hist_str(h, e->key),
              hist_str(h, e->val));
    if (e->t)
        sb_printf(b, " delivered at %s", hist_format_time(h, e->t, t, sizeof(t)));
    sb_printf(b, " (line %" PRIu32 ")\n", e->line);
}

static void sb_watch(struct sb *b, const struct history *h, const struct hist_watch *w, int64_t from, int64_t last)
{
    char t[32];
    sb_printf(b, "watch %" PRIu64 " on %s %s from revision %" PRId64 ", created at %s (line %" PRIu32
                 "); checked revisions %" PRId64 "..%" PRId64 "\n",
              w->id, w->prefix ? "prefix" : "key", hist_str(h, w->key), w->start_rev,
              hist_format_time(h, w->start_t, t, sizeof(t)), w->line, from, last);
}

static int check_one(const struct history *h, const struct check_opts *o, struct check_result *res,
                     const struct hist_watch *w)
{
    int64_t from = w->start_rev;
    if (from == 0) { /* "from now": the first delivered event starts it */
        from = INT64_MAX;
        for (size_t i = 0; i < w->nev; i++)
            if (w->ev[i].rev < from)
                from = w->ev[i].rev;
    }
    if (from < h->logstart)
        from = h->logstart;
    int64_t last = -1;
    for (size_t i = 0; i < w->nev; i++) {
        if (w->ev[i].rev < from)
            res->nunchecked++;
        else if (w->ev[i].rev > last)
            last = w->ev[i].rev;
    }
    if (last < 0)
        return 0;
    /* The expected events: the log's, filtered. */
    size_t lo = log_lower(h, from), hi = log_lower(h, last + 1);
    uint32_t *exp = malloc((hi - lo + 1) * sizeof(uint32_t));
    uint8_t *got = calloc(hi - lo + 1, 1);
    int rc = 0;
    if (!exp || !got) {
        rc = -ENOMEM;
        goto out;
    }
    size_t ne = 0;
    for (size_t i = lo; i < hi; i++)
        if (matches(h, w, h->log[i].key))
            exp[ne++] = (uint32_t)i;
    size_t next = 0;
    const struct hist_event *prevd = NULL;
    for (size_t i = 0; i < w->nev && rc == 0; i++) {
        const struct hist_event *d = &w->ev[i];
        if (d->rev < from)
            continue;
        res->nchecked++;
        /* Where the log has it among the expected events. */
        size_t a = 0, b = ne;
        while (a < b) {
            size_t m = a + (b - a) / 2;
            if (h->log[exp[m]].rev < d->rev)
                a = m + 1;
            else
                b = m;
        }
        long idx = -1;
        const struct hist_event *same_key = NULL;
        for (size_t k = a; k < ne && h->log[exp[k]].rev == d->rev; k++) {
            const struct hist_event *e = &h->log[exp[k]];
            if (e->key != d->key)
                continue;
            same_key = e;
            if (e->put == d->put && e->val == d->val)
                idx = (long)k;
        }
        struct sb s = {0};
        const char *kind = NULL;
        if (idx < 0) {
            kind = "watch-phantom";
            sb_watch(&s, h, w, from, last);
            sb_printf(&s, "  delivered an event the log does not have:\n");
            sb_event(&s, h, d, "    ");
            if (same_key)
                sb_event(&s, h, same_key, "  the log has at that revision: ");
            else if (!matches(h, w, d->key))
                sb_printf(&s, "  (and its key is not one the watch covers)\n");
        } else if (got[idx]) {
            kind = "watch-duplicate";
            sb_watch(&s, h, w, from, last);
            sb_printf(&s, "  delivered the same event twice:\n");
            sb_event(&s, h, d, "    ");
        } else if ((size_t)idx < next) {
            kind = "watch-reorder";
            sb_watch(&s, h, w, from, last);
            sb_printf(&s, "  delivered an event after a later one:\n");
            sb_event(&s, h, prevd, "    earlier delivery: ");
            sb_event(&s, h, d, "    then:             ");
        }
        if (idx >= 0 && !got[idx]) {
            got[idx] = 1;
            if ((size_t)idx >= next)
                next = (size_t)idx + 1;
        }
        if (!prevd || d->rev >= prevd->rev)
            prevd = d;
        if (kind)
            rc = finding_add(res, o, kind, hist_str(h, w->key), sb_take(&s));
        free(s.s);
    }
    size_t missing = 0;
    for (size_t k = 0; k < ne; k++)
        missing += !got[k];
    if (rc == 0 && missing) {
        struct sb s = {0};
        sb_watch(&s, h, w, from, last);
        sb_printf(&s, "  never delivered %zu event(s) of the log at or below the last revision it delivered%s:\n",
                  missing, missing > 10 ? " (the first 10)" : "");
        size_t shown = 0;
        for (size_t k = 0; k < ne && shown < 10; k++)
            if (!got[k]) {
                sb_event(&s, h, &h->log[exp[k]], "    log: ");
                shown++;
            }
        rc = finding_add(res, o, "watch-gap", hist_str(h, w->key), sb_take(&s));
    }
out:
    free(exp);
    free(got);
    return rc;
}

int check_watches(const struct history *h, const struct check_opts *o, struct check_result *res)
{
    if (!h->has_log) {
        res->verdict = h->nwatches ? CV_SKIPPED : CV_VALID;
        snprintf(res->note, sizeof(res->note), "%s",
                 h->nwatches ? "no revision log in the file (logstart/log/logend)" : "no watches");
        return 0;
    }
    int rc = 0;
    for (size_t i = 0; i < h->nwatches && rc == 0; i++)
        rc = check_one(h, o, res, &h->watches[i]);
    if (res->nunchecked)
        snprintf(res->note, sizeof(res->note), "%zu delivered events below logstart %" PRId64 " not checked",
                 res->nunchecked, h->logstart);
    return rc;
}
