/*
 * Auto-compaction, as etcd's v3compactor: on the leader only, a thread
 * proposes CompactionRequests through Raft (node_propose_internal).
 *  - revision mode: every 5 minutes, compact to the current revision minus
 *    the retention (a number of revisions), when that is positive and new;
 *  - periodic mode: keep `retention` of history (hours, "1" or "0.5", or a
 *    duration, "30m", "5s"): sample the revision every tenth of
 *    min(retention, 1 h) and compact to the sample taken a retention ago,
 *    first once a retention has passed, then every min(retention, 1 h).
 * Retention "0" turns it off.  The periodic arithmetic is separate and pure
 * so it can be tested without clocks (struct compactor_periodic).
 */
#ifndef CAIRN_DAEMON_COMPACTOR_H
#define CAIRN_DAEMON_COMPACTOR_H

#include <stddef.h>
#include <stdint.h>

#include "daemon/config.h"
#include "daemon/node.h"

#define COMPACTOR_REVISION_INTERVAL_MS 300000 /* etcd's revInterval: 5 minutes */

/*
 * Test hook: the environment variable CAIRND_TEST_COMPACTION_INTERVAL (a
 * duration, "200ms") replaces the revision mode's 5 minutes, so tests need
 * not wait that long.  Not for production: it is logged as a warning.
 */
#define COMPACTOR_TEST_INTERVAL_ENV "CAIRND_TEST_COMPACTION_INTERVAL"

/*
 * compactor_parse_retention: --auto-compaction-retention for mode.  Periodic:
 * *out is milliseconds (a bare number is hours, decimals allowed; or a
 * duration with ms, s, m or h); revision: a whole number of revisions.
 * 0 means off.  Returns 0 or -CAIRN_E_CONFIG with a message in err.
 */
int compactor_parse_retention(enum auto_compaction_mode mode, const char *s, int64_t *out, char *err, size_t errlen);

/* The periodic compactor's state (etcd 3.4+'s Periodic). */
struct compactor_periodic {
    int64_t period_ms;   /* the retention */
    int64_t compact_ms;  /* min(period, 1 h): between compactions after the first */
    int64_t retry_ms;    /* compact_ms / 10: between samples (and retries) */
    size_t retentions;   /* samples kept: period / retry + 1, so revs[0] is a period old */
    int64_t *revs;       /* oldest first */
    size_t n;
    int64_t last_success_ms, base_ms;
};

/* compactor_periodic_init: for retention period_ms, starting at now_ms.  0 or -ENOMEM. */
int compactor_periodic_init(struct compactor_periodic *p, int64_t period_ms, int64_t now_ms);
void compactor_periodic_free(struct compactor_periodic *p);

/* compactor_periodic_sample: record the current revision (at the start of each retry interval). */
void compactor_periodic_sample(struct compactor_periodic *p, int64_t rev);

/*
 * compactor_periodic_due: after a retry interval, at now_ms: 1 with *rev the
 * revision to compact to now (the oldest sample), or 0 when it is not time
 * yet.  The caller proposes it (if above the compact revision) and calls
 * compactor_periodic_done when that worked; if not, it is tried again at the
 * next interval.
 */
int compactor_periodic_due(struct compactor_periodic *p, int64_t now_ms, int64_t *rev);
void compactor_periodic_done(struct compactor_periodic *p, int64_t now_ms);

struct compactor;

/* compactor_start: start the thread when cfg's retention is not 0 (*out NULL when off).  0 or a negative
 * error with a message in err (a retention that does not parse). */
int compactor_start(const struct config *cfg, struct node *n, struct compactor **out, char *err, size_t errlen);

/* compactor_stop: stop the thread and free c (before node_stop).  NULL is fine. */
void compactor_stop(struct compactor *c);

#endif
