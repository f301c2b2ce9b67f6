/*
 * Auto-compaction (see compactor.h).  One thread; it asks node_get_info at
 * each of its ticks whether this member leads, which is all etcd's
 * Pause/Resume amount to, and needs no node observer (they are few:
 * NODE_MAX_OBSERVERS).  A proposal is fire-and-forget: whether it was
 * applied shows in the compact revision at the next tick, which is when the
 * COMPACTION event is logged.  As in etcd, every member samples revisions in
 * periodic mode, so a new leader compacts at once from its own samples.
 */
#include "daemon/compactor.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/deadline.h"
#include "base/errors.h"
#include "base/log.h"
#include "daemon/msgids.h"
#include "proto/cairn.pb-c.h"
#include "proto/internal.pb-c.h"

#define HOUR_MS 3600000LL

/* ---------------------------------------------------------------- retention */

int compactor_parse_retention(enum auto_compaction_mode mode, const char *s, int64_t *out, char *err, size_t errlen)
{
    const char *what = mode == AUTO_COMPACTION_REVISION ? "a whole number of revisions"
                                                        : "hours (\"1\", \"0.5\") or a duration (\"30m\", \"5s\")";
    if (!s || !*s)
        goto bad;
    if (mode == AUTO_COMPACTION_REVISION) {
        char *end;
        errno = 0;
        long long v = strtoll(s, &end, 10);
        if (*end || errno || v < 0)
            goto bad;
        *out = v;
        return 0;
    }
    if (strspn(s, "0123456789.") == strlen(s)) {
        char *end;
        errno = 0;
        double h = strtod(s, &end);
        if (*end || errno || h < 0 || h > 24.0 * 365 * 100)
            goto bad;
        *out = (int64_t)(h * HOUR_MS + 0.5);
    } else {
        int64_t ms = config_parse_duration_ms(s);
        if (ms < 0)
            goto bad;
        *out = ms;
    }
    if (*out > 0 && *out < 10) {
        snprintf(err, errlen, "option --auto-compaction-retention: '%s' is under 10 ms; keep at least that", s);
        return -CAIRN_E_CONFIG;
    }
    return 0;
bad:
    snprintf(err, errlen, "option --auto-compaction-retention: '%s' is not %s (0 turns it off)", s ? s : "", what);
    return -CAIRN_E_CONFIG;
}

/* ---------------------------------------------------------------- periodic arithmetic */

int compactor_periodic_init(struct compactor_periodic *p, int64_t period_ms, int64_t now_ms)
{
    memset(p, 0, sizeof(*p));
    p->period_ms = period_ms;
    p->compact_ms = period_ms > HOUR_MS ? HOUR_MS : period_ms;
    p->retry_ms = p->compact_ms / 10 > 0 ? p->compact_ms / 10 : 1;
    p->retentions = (size_t)(period_ms / p->retry_ms) + 1;
    p->revs = calloc(p->retentions, sizeof(*p->revs));
    if (!p->revs)
        return -ENOMEM;
    p->last_success_ms = now_ms;
    p->base_ms = period_ms; /* the first compaction waits a whole retention */
    return 0;
}

void compactor_periodic_free(struct compactor_periodic *p)
{
    free(p->revs);
    p->revs = NULL;
}

void compactor_periodic_sample(struct compactor_periodic *p, int64_t rev)
{
    if (p->n == p->retentions) {
        memmove(p->revs, p->revs + 1, (p->n - 1) * sizeof(*p->revs));
        p->n--;
    }
    p->revs[p->n++] = rev;
}

int compactor_periodic_due(struct compactor_periodic *p, int64_t now_ms, int64_t *rev)
{
    if (!p->n || now_ms - p->last_success_ms < p->base_ms)
        return 0;
    p->base_ms = p->compact_ms; /* after the first: every min(retention, 1 h) */
    *rev = p->revs[0];
    return 1;
}

void compactor_periodic_done(struct compactor_periodic *p, int64_t now_ms)
{
    p->last_success_ms = now_ms;
}

/* ---------------------------------------------------------------- the thread */

struct compactor {
    struct node *node;
    enum auto_compaction_mode mode;
    const char *retention_text;
    int64_t retention;          /* ms (periodic) or revisions */
    int64_t interval_ms;        /* between ticks */
    struct compactor_periodic periodic;
    int64_t prev_rev;           /* revision mode: last one proposed */
    int64_t pending_rev, pending_ms; /* proposed, not yet seen applied */
    pthread_mutex_t mu;
    pthread_cond_t cond;
    int stopping;
    pthread_t thread;
};

/* Propose a compaction to rev; 0 once queued. */
static int propose(struct compactor *c, int64_t rev)
{
    Cairnint__RaftRequest rr = CAIRNINT__RAFT_REQUEST__INIT;
    Cairn__CompactionRequest cr = CAIRN__COMPACTION_REQUEST__INIT;
    cr.revision = rev;
    rr.request_case = CAIRNINT__RAFT_REQUEST__REQUEST_COMPACTION;
    rr.compaction = &cr;
    int rc = node_propose_internal(c->node, &rr);
    if (rc < 0) {
        log_warning(LOG_FIELDS(LOG_I64("CAIRN_REVISION", rev)),
                    "auto-compaction: cannot propose compacting to revision %" PRId64 ": %s; retrying later", rev,
                    cairn_strerror(rc));
        return rc;
    }
    log_info(LOG_FIELDS(LOG_I64("CAIRN_REVISION", rev)),
             "auto-compaction (%s, retention %s): compacting to revision %" PRId64,
             c->mode == AUTO_COMPACTION_PERIODIC ? "periodic" : "revision", c->retention_text, rev);
    c->pending_rev = rev;
    c->pending_ms = mono_now_ms();
    return 0;
}

static void tick(struct compactor *c)
{
    struct node_info in;
    node_get_info(c->node, &in);
    if (c->pending_rev && in.compact_revision >= c->pending_rev) {
        log_event(LOG_LEVEL_NOTICE, MSGID_COMPACTION,
                  LOG_FIELDS(LOG_I64("CAIRN_REVISION", in.compact_revision),
                             LOG_I64("CAIRN_DURATION_MS", mono_now_ms() - c->pending_ms)),
                  "auto-compaction: history compacted up to revision %" PRId64, in.compact_revision);
        c->pending_rev = 0;
    }
    int leader = in.lead && in.lead == in.member_id;
    if (c->mode == AUTO_COMPACTION_PERIODIC) {
        if (!leader)
            return; /* paused: samples go on, no compaction */
        int64_t rev = 0;
        if (!compactor_periodic_due(&c->periodic, mono_now_ms(), &rev))
            return;
        /* at or below the compact revision is etcd's ErrCompacted: done already, which counts as success */
        if (rev <= in.compact_revision || propose(c, rev) == 0)
            compactor_periodic_done(&c->periodic, mono_now_ms());
        return;
    }
    if (!leader)
        return;
    int64_t rev = in.revision - c->retention;
    if (rev <= 0 || rev == c->prev_rev)
        return;
    if (rev <= in.compact_revision || propose(c, rev) == 0)
        c->prev_rev = rev;
}

static void *compactor_main(void *arg)
{
    pthread_setname_np(pthread_self(), "cairn-compact"); /* top -H, perf and gdb show it */
    struct compactor *c = arg;
    pthread_mutex_lock(&c->mu);
    while (!c->stopping) {
        if (c->mode == AUTO_COMPACTION_PERIODIC) {
            struct node_info in;
            node_get_info(c->node, &in);
            compactor_periodic_sample(&c->periodic, in.revision);
        }
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        int64_t ns = ts.tv_nsec + (c->interval_ms % 1000) * 1000000LL;
        ts.tv_sec += (time_t)(c->interval_ms / 1000 + ns / 1000000000LL);
        ts.tv_nsec = (long)(ns % 1000000000LL);
        while (!c->stopping && pthread_cond_timedwait(&c->cond, &c->mu, &ts) != ETIMEDOUT)
            ;
        if (c->stopping)
            break;
        pthread_mutex_unlock(&c->mu);
        tick(c);
        pthread_mutex_lock(&c->mu);
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

int compactor_start(const struct config *cfg, struct node *n, struct compactor **out, char *err, size_t errlen)
{
    int64_t retention = 0;
    int rc = compactor_parse_retention(cfg->auto_compaction_mode, cfg->auto_compaction_retention, &retention, err,
                                       errlen);
    *out = NULL;
    if (rc < 0 || retention == 0)
        return rc;
    struct compactor *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->node = n;
    c->mode = cfg->auto_compaction_mode;
    c->retention_text = cfg->auto_compaction_retention;
    c->retention = retention;
    if (c->mode == AUTO_COMPACTION_PERIODIC) {
        if ((rc = compactor_periodic_init(&c->periodic, retention, mono_now_ms())) < 0) {
            free(c);
            return rc;
        }
        c->interval_ms = c->periodic.retry_ms;
    } else {
        c->interval_ms = COMPACTOR_REVISION_INTERVAL_MS;
        const char *t = getenv(COMPACTOR_TEST_INTERVAL_ENV);
        int64_t ms = t ? config_parse_duration_ms(t) : -1;
        if (ms > 0) {
            log_warning(NULL, "auto-compaction: %s=%s replaces the 5 minute interval (a test hook, not for production)",
                        COMPACTOR_TEST_INTERVAL_ENV, t);
            c->interval_ms = ms;
        }
    }
    pthread_mutex_init(&c->mu, NULL);
    mono_cond_init(&c->cond);
    if ((rc = -pthread_create(&c->thread, NULL, compactor_main, c)) < 0) {
        compactor_periodic_free(&c->periodic);
        pthread_cond_destroy(&c->cond);
        pthread_mutex_destroy(&c->mu);
        free(c);
        return rc;
    }
    log_info(NULL, "auto-compaction: %s mode, retention %s; %s", c->mode == AUTO_COMPACTION_PERIODIC ? "periodic" : "revision",
             c->retention_text,
             c->mode == AUTO_COMPACTION_PERIODIC ? "history older than the retention is compacted by the leader"
                                                 : "the leader keeps that many revisions, checking every interval");
    *out = c;
    return 0;
}

void compactor_stop(struct compactor *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&c->mu);
    c->stopping = 1;
    pthread_cond_signal(&c->cond);
    pthread_mutex_unlock(&c->mu);
    pthread_join(c->thread, NULL);
    compactor_periodic_free(&c->periodic);
    pthread_cond_destroy(&c->cond);
    pthread_mutex_destroy(&c->mu);
    free(c);
}
