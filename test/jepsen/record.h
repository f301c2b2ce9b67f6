/*
 * cairn-record: the history recorder of the fault harness (issue 11).  Load
 * processes (threads, one operation at a time each) and watchers run against
 * a cluster through libcairn and write every invocation, completion and
 * watch event to a history file in the format of test/jepsen/HISTORY.md;
 * afterwards the revision log (the History API) can be appended.  It judges
 * nothing: cairn-check does.  This header is shared by record*.c only.
 */
#ifndef CAIRN_TEST_JEPSEN_RECORD_H
#define CAIRN_TEST_JEPSEN_RECORD_H

#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <stdio.h>

#include "client/cairn.h"

/* The kinds of load operation, in the order of --mix's weights. */
enum rec_op {
    OP_PUT, OP_GET, OP_SGET, OP_DEL, OP_CAS, OP_MPUT, OP_MGET, OP_RANGE, OP_LEASE,
    OP_COUNT
};

#define REC_MAX_KEYS 256
#define REC_MAX_PROCS 64
#define REC_MAX_WATCHERS 16
#define REC_LINE_MAX 32768 /* one record: a range of REC_MAX_KEYS keys and values fits */

struct rec_opts {
    const char *endpoints[CAIRN_MAX_ENDPOINTS];
    const char *names[CAIRN_MAX_ENDPOINTS]; /* member names for `meta pin` (default: the URL) */
    size_t n_endpoints, n_names;
    size_t pin_count;        /* sget processes pin to one of the first pin_count endpoints */
    const char *cacert, *cert, *key, *server_name;
    int processes, watchers, keys;
    int group;               /* mput/mget keys come from one group of this many consecutive keys */
    double duration_s;       /* 0 = no time bound */
    uint64_t ops;            /* 0 = no count bound */
    int timeout_ms;          /* per call */
    int dial_timeout_ms;
    uint64_t seed;
    const char *out;
    bool append;             /* append to --out instead of starting a new history */
    bool log;                /* write the revision log after the load */
    bool log_only;           /* no load: only the revision log (appended) */
    double log_timeout_s;    /* bound on getting the revision log */
    double watch_drain_s;    /* after the load, how long watchers may catch up */
    const char *prefix;      /* every key starts with it; watchers watch it */
    unsigned weights[OP_COUNT];
    const char *mix;         /* as given, for the meta line */
    const char *metas[32];   /* extra `meta NAME VALUE` lines (NAME=VALUE) */
    size_t n_metas;
};

/* The history file: one writer, each record one line written under a lock. */
struct rec_hist {
    FILE *f;
    pthread_mutex_t mu;
};

/* A growable line being built (bounded at REC_LINE_MAX; past it, the line is marked cut). */
struct rec_line {
    char buf[REC_LINE_MAX];
    size_t len;
    bool cut;
};

/* What the whole run shares. */
struct rec_run {
    struct rec_opts o;
    struct rec_hist h;
    atomic_uint_fast64_t next_id;     /* operation IDs, unique in the file */
    atomic_uint_fast64_t issued;      /* operations started, for --ops */
    atomic_int stop;                  /* load processes stop */
    atomic_int watch_stop;            /* watchers stop */
    atomic_int_fast64_t max_rev;      /* the highest revision any reply carried */
    atomic_int next_watch;            /* watcher IDs */
    uint64_t deadline_ns;             /* load end (CLOCK_MONOTONIC), 0 = none */
    /* counts for the summary */
    atomic_uint_fast64_t n_ok, n_fail, n_info, n_events, n_watch_starts;
    char key_names[REC_MAX_KEYS][64];     /* prefix + "k%03d" */
    char lease_key_names[REC_MAX_KEYS][64]; /* prefix + "l%03d": only putl writes them */
    int n_lease_keys;
    /* a hint per key: a value recently read or written, for cas to expect */
    pthread_mutex_t hint_mu;
    char hint[REC_MAX_KEYS][48];
};

/* Time on CLOCK_MONOTONIC in nanoseconds: every record's clock. */
uint64_t rec_now_ns(void);

/* rec_line_*: build a line; tokens are added with one space before each but the first. */
void rec_line_init(struct rec_line *l);
void rec_line_addf(struct rec_line *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* rec_line_value: a value or key token; NULL/absent is "~"; bytes outside the token set are hex-escaped. */
void rec_line_value(struct rec_line *l, const void *data, size_t len, bool present);

/*
 * rec_write: write "KIND P ID T REST" (T is read under the file's lock, so the
 * file is in time order) and flush.  Returns T.
 */
uint64_t rec_write_op(struct rec_run *run, const char *kind, int p, uint64_t id, const char *rest);
/* rec_writef: any other line (meta, watch, event, log), flushed. */
void rec_writef(struct rec_run *run, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* rec_open_client: a libcairn client of every endpoint with the run's TLS and timeouts; 0 or negative. */
int rec_open_client(const struct rec_run *run, struct cairn_client **out, char *why, size_t whylen);

/* rec_code_word: the one-word CODE of a record for a negative return code ("timeout", "not_leader", ...). */
const char *rec_code_word(int rc, char *buf, size_t len);
/* rec_write_not_applied: true if a write that failed with rc certainly did not take effect. */
bool rec_write_not_applied(int rc);

/* rec_process: the body of load process p (a thread). */
void *rec_process(void *arg);
struct rec_proc {
    struct rec_run *run;
    int p;
    int pin;                 /* endpoint for sget, -1: this process does no sget */
    uint64_t rng;
    struct cairn_client *c;
    int64_t lease;           /* the lease this process holds, 0 = none */
    uint64_t seq;            /* writes made, for unique values */
};

/* rec_watcher: the body of one watcher thread (restarts its watch as new watchers). */
void *rec_watcher(void *arg);
struct rec_watcher_arg {
    struct rec_run *run;
    int index;
    int64_t start_rev;
};

/* rec_write_log: append the revision log (logstart/log/logend), retrying within --log-timeout. 0 or negative. */
int rec_write_log(struct rec_run *run);

/* rec_rand: xorshift64* step. */
static inline uint64_t rec_rand(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * UINT64_C(2685821657736338717);
}

static inline void rec_note_rev(struct rec_run *run, int64_t rev)
{
    int_fast64_t cur = atomic_load(&run->max_rev);
    while (rev > cur && !atomic_compare_exchange_weak(&run->max_rev, &cur, rev))
        ;
}

#endif
