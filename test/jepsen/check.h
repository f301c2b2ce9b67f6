/*
 * The checker of a cairn-history 1 file (docs/reliability-checker.md): the
 * linearizability of the key-value operations (Wing & Gong with Lowe's
 * memoization, partitioned per key as porcupine does) and the linear-time
 * checks that use the revision log (lost acknowledged writes, reads at a
 * revision, the real-time order of revisions, watches, lease expiry).
 * It reads a parsed history and writes nothing but the report it returns.
 */
#ifndef CAIRN_JEPSEN_CHECK_H
#define CAIRN_JEPSEN_CHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "test/jepsen/history.h"

enum check_id {
    CHK_LIN,   /* linearizability (model search) */
    CHK_WRITES,/* acknowledged writes in the log; the log's writes came from clients */
    CHK_READS, /* every ok read equals the log's state at its REV */
    CHK_ORDER, /* revisions respect real time; serializable reads never go back */
    CHK_WATCH, /* watch streams equal the log */
    CHK_LEASE, /* no expiry before the TTL */
    CHK_N
};

enum check_verdict { CV_VALID, CV_VIOLATION, CV_UNKNOWN, CV_SKIPPED };

/* One violation (or one inconclusive partition) as a person reads it. */
struct check_finding {
    char *kind; /* short slug: "not-linearizable", "lost-write", "watch-gap", ... */
    char *key;  /* the key(s) concerned, "" if none */
    char *text; /* several lines: what was wrong, then the operations with their times */
};

struct check_result {
    enum check_verdict verdict;
    size_t nviolations;     /* all violations found (findings holds the first ones) */
    size_t nchecked;        /* items this check judged */
    size_t nunchecked;      /* items it could not judge (below logstart, unknown state, ...) */
    struct check_finding *findings;
    size_t nfindings, capfindings;
    char note[512];         /* why skipped / what was not checked */
};

struct check_stats {
    size_t partitions, partitions_unknown, partitions_bad;
    size_t lin_ops;         /* operations given to the model search, synthetic expiries included */
    size_t dropped_info;    /* info writes whose value nobody observed: left out (see the docs) */
    uint64_t states;        /* states the search visited, all partitions */
    double seconds;         /* wall time of the whole check */
    double lin_seconds;     /* of which the model search and shrinking */
    int64_t log_rebuilt_below; /* > 0: the log's front below this revision was rebuilt from the watchers */
    size_t log_rebuilt_events;
    char log_rebuild_why[200]; /* when a compacted log could not be rebuilt: why */
};

struct check_opts {
    uint64_t budget;        /* states per partition before "unknown"; default 10M */
    double budget_seconds;  /* wall time per partition before "unknown"; default 60 */
    size_t max_findings;    /* findings kept per check; default 20 */
    bool shrink;            /* shrink a non-linearizable partition; default true */
    unsigned shrink_trials; /* searches spent shrinking one partition; default 2000 */
    double shrink_seconds;  /* and at most this long; default 10 */
};

void check_opts_default(struct check_opts *o);

/*
 * check_history: run every check on h into rep (free with
 * check_report_free).  Returns 0, or -ENOMEM (rep then holds what was done).
 */
struct check_report {
    struct check_result r[CHK_N];
    struct check_stats st;
};
int check_history(const struct history *h, const struct check_opts *o, struct check_report *rep);
void check_report_free(struct check_report *rep);

/* Each check alone (check_history calls them in this order). */
int check_linearizable(const struct history *h, const struct check_opts *o, struct check_result *res,
                       struct check_stats *st);
int check_log_writes(const struct history *h, const struct check_opts *o, struct check_result *res);
int check_log_reads(const struct history *h, const struct check_opts *o, struct check_result *res);
int check_rev_order(const struct history *h, const struct check_opts *o, struct check_result *res);
int check_watches(const struct history *h, const struct check_opts *o, struct check_result *res);
int check_leases(const struct history *h, const struct check_opts *o, struct check_result *res);

/* 0 valid, 1 a violation, 3 inconclusive and nothing failed (2 is the parser's: malformed). */
int check_exit_code(const struct check_report *rep);
const char *check_name(enum check_id id);
const char *check_verdict_name(enum check_verdict v);

/* The summary and the verdicts, as text or as one JSON object. */
void check_print_text(FILE *f, const struct history *h, const struct check_report *rep);
void check_print_json(FILE *f, const struct history *h, const struct check_report *rep);

/*
 * check_generate: write a valid history (HISTORY.md) produced by a simulated
 * linearizable store: nops operations by nprocs processes over nkeys keys,
 * seeded, with info outcomes, leases, watches and the revision log.  For the
 * tests and for measuring the checker.  Returns 0 or -EIO/-ENOMEM.
 */
struct check_gen {
    uint64_t seed;
    size_t nops, nkeys;
    unsigned nprocs;
    unsigned info_pct;      /* percent of operations whose outcome is lost */
    unsigned group;         /* keys per multi-key group (mput/mget stay inside one); 0: none */
    bool leases, watches, sget, ranges;
};
void check_gen_default(struct check_gen *g);
int check_generate(FILE *f, const struct check_gen *g);

#endif
