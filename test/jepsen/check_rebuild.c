/*
 * The revision log below a compaction, rebuilt from the watchers' events.
 *
 * A run that compacts leaves a revision log that starts above 1: History
 * can no longer return what compaction dropped.  Without the log from
 * revision 1, the model search cannot place or dismiss the writes of unknown
 * outcome, and long runs with compaction end "unknown".  etcd's robustness
 * tests patch their histories from the watch stream for the same reason.
 * The recorder's watchers watch the whole key prefix from the first write
 * and keep up with the load, so together they hold every event compaction
 * dropped.  This rebuilds the log's missing front from them: for each
 * revision below logstart, the events of the first watcher (in file order)
 * that delivered that revision.  The rest of the log is the recorded one.
 *
 * What it trusts: the chosen watcher's events for a revision.  The watch
 * check then compares every other watcher with the rebuilt log, so two
 * watchers that disagree are reported there, and an acknowledged write that
 * no watcher delivered at its revision is reported as lost.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test/jepsen/check_internal.h"

struct pick {
    uint32_t w;      /* watcher index + 1; 0: no watcher delivered the revision */
    uint32_t first;  /* its events [first, first + count) */
    uint32_t count;
};

static bool has_prefix(const char *s, const char *p)
{
    return strncmp(s, p, strlen(p)) == 0;
}

int log_rebuild(const struct history *h, struct history *out, struct hist_event **ev_out, char *why, size_t whylen)
{
    *ev_out = NULL;
    why[0] = '\0';
    if (!h->has_log || h->logstart <= 1)
        return 0;
    /* the prefix watchers all watch one prefix, which every key of the history has
     * (watchers of single keys are not used here; the watch check judges them) */
    const char *prefix = NULL;
    int64_t from = INT64_MAX;
    for (size_t i = 0; i < h->nwatches; i++) {
        const struct hist_watch *w = &h->watches[i];
        const char *p = hist_str(h, w->key);
        if (!w->prefix)
            continue;
        if (prefix && strcmp(p, prefix) != 0) {
            snprintf(why, whylen, "watch %" PRIu64 " (line %u) watches %s, another %s", w->id, w->line, p, prefix);
            return 0;
        }
        prefix = p;
        if (w->start_rev > 0 && w->start_rev < from)
            from = w->start_rev;
    }
    if (!prefix) {
        snprintf(why, whylen, "no watch of a key prefix");
        return 0;
    }
    if (from > 2) {
        snprintf(why, whylen, "no watch started at the first write (revision 2); the earliest started at %" PRId64,
                 from == INT64_MAX ? 0 : from);
        return 0;
    }
    for (size_t i = 0; i < h->nops; i++)
        for (uint32_t k = 0; k < h->ops[i].nkeys; k++)
            if (!has_prefix(hist_str(h, h->ops[i].keys[k]), prefix)) {
                snprintf(why, whylen, "key %s (line %u) is outside the watched prefix %s",
                         hist_str(h, h->ops[i].keys[k]), h->ops[i].inv_line, prefix);
                return 0;
            }
    int64_t nrev = h->logstart; /* revisions 0..logstart-1; 0 unused */
    struct pick *pk = calloc((size_t)nrev, sizeof(*pk));
    uint32_t nstr = hist_nstr(h);
    int64_t *lease_of = calloc(nstr + 1, sizeof(int64_t));
    int rc = 0;
    if (!pk || !lease_of) {
        rc = -ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < h->nwatches; i++) {
        const struct hist_watch *w = &h->watches[i];
        if (!w->prefix)
            continue;
        for (size_t e = 0; e < w->nev;) {
            int64_t rev = w->ev[e].rev;
            size_t n = 1;
            while (e + n < w->nev && w->ev[e + n].rev == rev)
                n++;
            if (rev >= 1 && rev < nrev && !pk[rev].w)
                pk[rev] = (struct pick){(uint32_t)i + 1, (uint32_t)e, (uint32_t)n};
            e += n;
        }
    }
    /* a cluster's store starts empty at revision 1 and its first write is 2:
     * watches from 2 miss nothing; a watch from 1 must then cover 1 as well */
    int64_t first = from < 2 ? 1 : 2;
    size_t total = h->nlog;
    for (int64_t r = first; r < nrev; r++) {
        if (!pk[r].w) {
            snprintf(why, whylen, "no watcher delivered revision %" PRId64 " (below logstart %" PRId64 ")", r,
                     h->logstart);
            goto out;
        }
        total += pk[r].count;
    }
    if (first == 2 && pk[1].w)
        total += pk[1].count;
    /* the lease of each leased value: putl alone attaches leases */
    for (size_t i = 0; i < h->nops; i++)
        if (h->ops[i].kind == HK_PUTL && h->ops[i].nkeys && h->ops[i].vals[0] < nstr)
            lease_of[h->ops[i].vals[0]] = h->ops[i].lease;
    struct hist_event *ev = malloc((total ? total : 1) * sizeof(*ev));
    if (!ev) {
        rc = -ENOMEM;
        goto out;
    }
    size_t n = 0;
    for (int64_t r = 1; r < nrev; r++) {
        if (!pk[r].w)
            continue;
        const struct hist_watch *w = &h->watches[pk[r].w - 1];
        for (uint32_t k = 0; k < pk[r].count; k++) {
            struct hist_event e = w->ev[pk[r].first + k];
            e.t = 0;
            e.lease = e.put && e.val < nstr ? lease_of[e.val] : 0;
            ev[n++] = e;
        }
    }
    memcpy(ev + n, h->log, h->nlog * sizeof(*ev));
    n += h->nlog;
    *out = *h;
    out->log = ev;
    out->nlog = n;
    out->logstart = 1;
    *ev_out = ev;
    rc = 1;
out:
    free(pk);
    free(lease_of);
    return rc;
}
