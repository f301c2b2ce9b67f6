/*
 * cairn-bench's insides, shared by its files (bench/cairn_bench*.c, built
 * into one program, build/cairn-bench): the options, the log-bucketed
 * latency histogram, the counters of a run and the modes' entry points.
 * Nothing here is part of libcairn; the tool only uses its public API.
 */
#ifndef CAIRN_BENCH_CAIRN_BENCH_H
#define CAIRN_BENCH_CAIRN_BENCH_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "client/cairn.h"

#define BENCH_MAX_CONNS 64
#define BENCH_MAX_CLIENTS 4096 /* libcairn's default bound on calls in flight */
#define BENCH_MAX_KEY 1024
#define BENCH_MAX_VAL (1u << 20)
#define BENCH_MAX_ERR_KINDS 32

enum bench_mode {
    MODE_PUT,
    MODE_RANGE,
    MODE_TXN,
    MODE_MIXED,
    MODE_WATCH,
    MODE_LEASE,
    MODE_ECHO,
};

struct bench_opts {
    enum bench_mode mode;
    const char *mode_name;
    const char *endpoints;
    const char *cacert, *cert, *key, *server_name;
    unsigned conns, clients;
    uint64_t total;       /* requests (watch: puts); 0 = --duration decides */
    double duration_s;    /* 0 = --total decides */
    size_t key_size, val_size;
    uint64_t key_space;
    bool sequential_keys;
    double rate;          /* requests/s, open loop; 0 = closed loop */
    uint64_t seed;
    bool json;
    bool serializable;    /* --consistency s */
    unsigned range_keys;  /* range: keys per request (1 = point get) */
    double read_ratio;    /* mixed */
    unsigned watchers;    /* watch */
    bool shared_polls;    /* watch: one cairn_watch_poll per connection for its watchers */
    unsigned leases;      /* lease */
    bool prefill;         /* put every key of the key space once before measuring */
    bool echo_inproc;     /* echo: the server in this process, not a child */
    bool task_callbacks;  /* libcairn's default: callbacks off the poller (inline_callbacks false) */
    const char *key_prefix;
    unsigned key_digits;  /* digits after the prefix, from --key-size and the key space */
    int call_timeout_ms, dial_timeout_ms;
    double timeout_s;     /* bound on the whole run */
};

/* ------------------------------------------------------------ histogram */

/*
 * Latency in microseconds, HDR-style: exact below 32, then 32 buckets per
 * power of two (under 3.2% error); 1920 counters cover any run, updated
 * with atomics from nng's callback threads.
 */
#define HIST_SUB_BITS 5
#define HIST_SUBS (1u << HIST_SUB_BITS)
#define HIST_NBUCKETS ((64 - HIST_SUB_BITS + 1) * HIST_SUBS)

struct hist {
    _Atomic uint64_t b[HIST_NBUCKETS];
    _Atomic uint64_t count, sum, max;
};

void hist_add(struct hist *h, uint64_t us);
/* The value at quantile q (0..1), never above the true maximum; 0 when empty. */
uint64_t hist_quantile(const struct hist *h, double q);

/* ------------------------------------------------------------ counters */

struct errcount {
    int code;
    uint64_t n;
};

/* Errors by code, under their own lock (they are rare). */
struct errs {
    pthread_mutex_t mu;
    struct errcount e[BENCH_MAX_ERR_KINDS];
    size_t n;
    _Atomic uint64_t total;
};

void errs_add(struct errs *es, int code);

/* One kind of request's results. */
struct stats {
    struct hist lat;
    _Atomic uint64_t ok;
    struct errs errs;
};

void stats_init(struct stats *s);

/* ------------------------------------------------------------ shared helpers */

uint64_t now_ns(void);
uint64_t splitmix64(uint64_t *state);
/* bench_key: key number n as o->key_prefix and zero-padded digits, o->key_size bytes (at least). */
size_t bench_key(const struct bench_opts *o, uint64_t n, char *out);
/* open_clients: o->conns clients of o->endpoints (or of url if not NULL).  Returns 0 or -1 after saying why. */
int open_clients(const struct bench_opts *o, const char *url, struct cairn_client **out);
void close_clients(const struct bench_opts *o, struct cairn_client **cs);

/* ------------------------------------------------------------ modes */

/*
 * An echo server: nng rep0 on a loopback port, answering every request with
 * the same pre-packed Response, in a forked child (or, with inproc, in this
 * process).  echo_start returns 0 and the URL to dial in url (at least 64
 * bytes), or -1 after saying why.  echo_stop stops it and gives the child's
 * CPU seconds in *child_cpu_s (optional; untouched when in this process).
 */
struct echo_server;
int echo_start(size_t contexts, bool inproc, struct echo_server **out, char *url, size_t url_len);
void echo_stop(struct echo_server *e, double *child_cpu_s);

/*
 * The request loop (cairn_bench_load.c): --clients calls in flight, closed
 * loop or paced at --rate, until --total or --duration.  load_new takes the
 * clients (still the caller's, who closes them after load_free).
 */
struct load;
struct load *load_new(const struct bench_opts *o, struct cairn_client **cs);
void load_free(struct load *l);
/* load_prefill: put every key of the key space once (not measured).  0 or -1 after saying why. */
int load_prefill(struct load *l);
/* load_run: the measured phase; *secs its wall time.  Returns 0, or -1 if it could not start. */
int load_run(struct load *l, double *secs);
/* The counters of the measured phase: every request, and for mixed reads and writes apart. */
struct stats *load_stats(struct load *l, int which); /* 0 all, 1 writes, 2 reads */
uint64_t load_issued(struct load *l);
uint64_t load_compare_failed(struct load *l);
uint64_t load_keys_returned(struct load *l);

/* run_load: every mode but watch, report included.  Returns the exit status. */
int run_load(const struct bench_opts *o);
/* run_watch: the watch mode, report included.  Returns the exit status. */
int run_watch(const struct bench_opts *o);

/* Terminal progress: started by the modes, a no-op unless stdout is a terminal. */
struct progress;
struct progress *progress_start(const char *what, _Atomic uint64_t *done, uint64_t total);
void progress_stop(struct progress *p);

/* Reports.  cpu_mark: the process's CPU time so far, to subtract from a later mark. */
struct cpu_mark {
    double user, sys;
};
void cpu_mark(struct cpu_mark *m);
void print_cpu_json(const struct cpu_mark *since, double secs);
void print_cpu_text(const struct cpu_mark *since, double secs);
void print_latency_json(const char *name, const struct hist *h);
void print_latency_text(const char *name, const struct hist *h);
void print_errs(struct errs *es, bool json);

extern volatile int bench_interrupted;

#endif
