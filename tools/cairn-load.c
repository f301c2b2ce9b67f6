/*
 * cairn-load: write load through libcairn's asynchronous API and check
 * afterwards that no acknowledged write was lost.  `put` keeps --inflight
 * puts in flight until --total are done (or --timeout), logs every
 * acknowledged put as "key revision seq" to --ack-log, and reports
 * throughput, a latency histogram, errors by name and its own CPU time.
 * `check` reads back the last acknowledged write of every logged key.
 * Values are derived from key and sequence number, so nothing else need be
 * kept.  `watch` measures watches: one writer's puts delivered to many
 * watchers, events per second and the delay from put to event.  It
 * measures and checks; it does not retry failed puts.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "base/errors.h"
#include "client/cairn.h"

#define DEFAULT_ENDPOINT "tcp://127.0.0.1:2479" /* cairnd's embedded default */
#define MAX_KEY 512
#define MAX_VAL (1u << 20)
#define MAX_ERR_KINDS 64
#define SHOW_PROBLEMS 20 /* problem keys named one by one before only counting */

/* ------------------------------------------------------------------ options */

struct opts {
    const char *endpoints, *ack_log, *key_prefix, *put_endpoints;
    const char *cacert, *cert, *key, *server_name;
    uint64_t total, key_space, seed, watchers;
    unsigned inflight;
    size_t val_size;
    bool val_size_set, json, serializable, shared_polls;
    double timeout_s;
    int call_timeout_ms, dial_timeout_ms;
};

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: cairn-load put [--total N] [--inflight K] [--key-prefix P] [--key-space M]\n"
            "                      [--val-size B] [--ack-log FILE] [--seed S] [OPTIONS]\n"
            "       cairn-load check --ack-log FILE [--inflight K] [OPTIONS]\n"
            "       cairn-load get KEY [OPTIONS]\n"
            "       cairn-load put KEY VALUE [OPTIONS]\n"
            "       cairn-load value KEY SEQ [--val-size B]\n"
            "       cairn-load watch [--watchers W] [--total N] [--inflight K] [--key-prefix P]\n"
            "                        [--val-size B] [--put-endpoints URL,...] [--shared-polls] [OPTIONS]\n\n"
            "put (load)  keep K puts in flight (default 32) until N (default 10000) are done\n"
            "            or --timeout passes.  Keys are P (default load/) followed by a number\n"
            "            below M (default N), drawn from --seed (default 1); each value is\n"
            "            derived from its key and sequence number (\"seq:\" then filler, B bytes,\n"
            "            default 32).  Every acknowledged put is appended to FILE as\n"
            "            \"key revision seq\".  Prints throughput, latency percentiles, errors\n"
            "            by name and CPU time.  Exit 0 if every put was acknowledged, 3 if\n"
            "            some failed or were not sent before the timeout.\n"
            "check       read (linearizable) every key FILE names and verify its last\n"
            "            acknowledged write is there with exactly its value, or was\n"
            "            overwritten at a later revision.  Exit 0 if so, 1 if any key is\n"
            "            missing, older or different, or could not be read.\n"
            "value       print the value put SEQ of KEY carries (what check expects).\n"
            "watch       W watches (default 100) on prefix P, then one writer puts N keys under\n"
            "            it (K in flight) whose values carry their send time.  Every watcher\n"
            "            must get every put once, in revision order.  Prints events delivered\n"
            "            per second and the put-to-event delay.  Exit 0 if every watcher got\n"
            "            every event exactly once, 1 otherwise.  The writer uses\n"
            "            --put-endpoints if given (default: --endpoints).  With --shared-polls\n"
            "            the watchers are polled together (cairn_watch_poll, up to 4096 a poll).\n\n"
            "Options: --endpoints URL[,URL...] (default " DEFAULT_ENDPOINT ")\n"
            "         --cacert F --cert F --key F --server-name NAME   (tls+tcp://)\n"
            "         --timeout SEC (whole run, default 60)  --call-timeout MS (default 10000)\n"
            "         --dial-timeout MS  --serializable (reads)  --json\n");
}

static int parse_u64(const char *s, uint64_t *out)
{
    char *end;
    if (!s || !*s || *s == '-')
        return -1;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end)
        return -1;
    *out = v;
    return 0;
}

/*
 * parse_args: options anywhere, positionals collected into pos (at most 2).
 * Returns 0, or -1 after printing what is wrong.
 */
static int parse_args(int argc, char **argv, struct opts *o, const char **pos, int *npos)
{
    *npos = 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0) {
            if (*npos >= 2) {
                fprintf(stderr, "cairn-load: unexpected argument '%s'\n", a);
                return -1;
            }
            pos[(*npos)++] = a;
            continue;
        }
        if (!strcmp(a, "--json")) {
            o->json = true;
            continue;
        }
        if (!strcmp(a, "--shared-polls")) {
            o->shared_polls = true;
            continue;
        }
        if (!strcmp(a, "--serializable")) {
            o->serializable = true;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "cairn-load: %s needs a value\n", a);
            return -1;
        }
        const char *v = argv[++i];
        uint64_t n = 0;
        int bad = 0;
        if (!strcmp(a, "--endpoints"))
            o->endpoints = v;
        else if (!strcmp(a, "--put-endpoints"))
            o->put_endpoints = v;
        else if (!strcmp(a, "--ack-log"))
            o->ack_log = v;
        else if (!strcmp(a, "--key-prefix"))
            o->key_prefix = v;
        else if (!strcmp(a, "--cacert"))
            o->cacert = v;
        else if (!strcmp(a, "--cert"))
            o->cert = v;
        else if (!strcmp(a, "--key"))
            o->key = v;
        else if (!strcmp(a, "--server-name"))
            o->server_name = v;
        else if (!strcmp(a, "--total"))
            bad = parse_u64(v, &o->total) || o->total == 0;
        else if (!strcmp(a, "--watchers"))
            bad = parse_u64(v, &o->watchers) || o->watchers == 0 || o->watchers > 100000;
        else if (!strcmp(a, "--key-space"))
            bad = parse_u64(v, &o->key_space) || o->key_space == 0;
        else if (!strcmp(a, "--seed"))
            bad = parse_u64(v, &o->seed) || o->seed > UINT32_MAX;
        else if (!strcmp(a, "--inflight")) {
            bad = parse_u64(v, &n) || n == 0 || n > CAIRN_DEFAULT_MAX_IN_FLIGHT;
            o->inflight = (unsigned)n;
        } else if (!strcmp(a, "--val-size")) {
            bad = parse_u64(v, &n) || n > MAX_VAL;
            o->val_size = (size_t)n;
            o->val_size_set = true;
        } else if (!strcmp(a, "--call-timeout")) {
            bad = parse_u64(v, &n) || n == 0 || n > 3600000;
            o->call_timeout_ms = (int)n;
        } else if (!strcmp(a, "--dial-timeout")) {
            bad = parse_u64(v, &n) || n == 0 || n > 3600000;
            o->dial_timeout_ms = (int)n;
        } else if (!strcmp(a, "--timeout")) {
            char *end;
            o->timeout_s = strtod(v, &end);
            bad = *end || !(o->timeout_s > 0);
        } else {
            fprintf(stderr, "cairn-load: unknown option %s\n", a);
            return -1;
        }
        if (bad) {
            fprintf(stderr, "cairn-load: bad value '%s' for %s\n", v, a);
            return -1;
        }
    }
    for (const char *p = o->key_prefix; *p; p++)
        if (*p <= ' ' || *p > '~') {
            fprintf(stderr, "cairn-load: --key-prefix must be printable ASCII without spaces "
                            "(it is written to the ack log as a word)\n");
            return -1;
        }
    if (strlen(o->key_prefix) > MAX_KEY - 32) {
        fprintf(stderr, "cairn-load: --key-prefix is too long\n");
        return -1;
    }
    return 0;
}

/* open_client: a client for o's endpoints and TLS files.  Returns NULL after printing why. */
static struct cairn_client *open_client(const struct opts *o)
{
    static char buf[8192];
    const char *eps[CAIRN_MAX_ENDPOINTS];
    size_t n = 0;
    struct cairn_client *c = NULL;
    struct cairn_error_detail err = {0};

    snprintf(buf, sizeof(buf), "%s", o->endpoints);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (n == CAIRN_MAX_ENDPOINTS) {
            fprintf(stderr, "cairn-load: more than %d endpoints\n", CAIRN_MAX_ENDPOINTS);
            return NULL;
        }
        eps[n++] = tok;
    }
    struct cairn_config cfg = {
        .endpoints = eps,
        .n_endpoints = n,
        .tls = {.ca_file = o->cacert, .cert_file = o->cert, .key_file = o->key,
                .server_name = o->server_name},
        .call_timeout_ms = o->call_timeout_ms,
        .dial_timeout_ms = o->dial_timeout_ms,
    };
    int rc = cairn_open(&cfg, &c, &err);
    if (rc != 0) {
        fprintf(stderr, "cairn-load: cannot open a client for %s: %s\n", o->endpoints,
                err.message[0] ? err.message : cairn_strerror(rc));
        return NULL;
    }
    return c;
}

/* ------------------------------------------------------------------ values */

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t fnv1a64(const char *s, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

/*
 * make_value: the value of put `seq` to key: "<seq>:" then letters and
 * digits drawn from (key, seq), cut to size bytes.  out holds size bytes.
 * test/integration/cluster.py recomputes it the same way.
 */
static void make_value(const char *key, uint64_t seq, size_t size, char *out)
{
    static const char alnum[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    char head[32];
    int hl = snprintf(head, sizeof(head), "%" PRIu64 ":", seq);
    uint64_t st = fnv1a64(key, strlen(key)) ^ (seq * 0x9E3779B97F4A7C15ull);
    for (size_t i = 0; i < size; i++)
        out[i] = i < (size_t)hl ? head[i] : alnum[splitmix64(&st) % 62];
}

/* ------------------------------------------------------------------ statistics */

/*
 * Latency histogram in microseconds: exact below 32, then 32 buckets per
 * power of two (under 3.2% error), so any run fits in 1920 counters.
 */
#define SUB_BITS 5
#define SUBS (1u << SUB_BITS)
#define NBUCKETS ((64 - SUB_BITS + 1) * SUBS)

struct hist {
    uint64_t b[NBUCKETS];
    uint64_t count, max;
};

static unsigned bucket_of(uint64_t v)
{
    if (v < SUBS)
        return (unsigned)v;
    unsigned e = 63u - (unsigned)__builtin_clzll(v);
    return (e - SUB_BITS + 1) * SUBS + (unsigned)((v >> (e - SUB_BITS)) & (SUBS - 1));
}

/* The largest value bucket i holds. */
static uint64_t bucket_top(unsigned i)
{
    if (i < SUBS)
        return i;
    unsigned e = i / SUBS + SUB_BITS - 1, sub = i % SUBS;
    return (((uint64_t)SUBS + sub) << (e - SUB_BITS)) + ((1ull << (e - SUB_BITS)) - 1);
}

static void hist_add(struct hist *h, uint64_t us)
{
    h->b[bucket_of(us)]++;
    h->count++;
    if (us > h->max)
        h->max = us;
}

/* The value at quantile q (0..1), at most the true maximum; 0 when empty. */
static uint64_t hist_quantile(const struct hist *h, double q)
{
    if (h->count == 0)
        return 0;
    uint64_t rank = (uint64_t)(q * (double)h->count + 0.999999), seen = 0;
    if (rank == 0)
        rank = 1;
    for (unsigned i = 0; i < NBUCKETS; i++) {
        seen += h->b[i];
        if (seen >= rank)
            return bucket_top(i) < h->max ? bucket_top(i) : h->max;
    }
    return h->max;
}

struct errcount {
    int code;
    uint64_t n;
};

struct errs {
    struct errcount e[MAX_ERR_KINDS];
    size_t n;
    uint64_t total;
};

static void errs_add(struct errs *es, int code)
{
    es->total++;
    for (size_t i = 0; i < es->n; i++)
        if (es->e[i].code == code) {
            es->e[i].n++;
            return;
        }
    if (es->n < MAX_ERR_KINDS)
        es->e[es->n++] = (struct errcount){code, 1};
    else
        es->e[MAX_ERR_KINDS - 1].n++; /* the rare overflow joins the last kind */
}

static void errs_print(const struct errs *es, FILE *out, bool json)
{
    if (json) {
        fprintf(out, "{");
        for (size_t i = 0; i < es->n; i++)
            fprintf(out, "%s\"%s\": %" PRIu64, i ? ", " : "", cairn_errname(es->e[i].code), es->e[i].n);
        fprintf(out, "}");
        return;
    }
    if (es->n == 0) {
        fprintf(out, "none");
        return;
    }
    for (size_t i = 0; i < es->n; i++)
        fprintf(out, "%s%s %" PRIu64, i ? ", " : "", cairn_errname(es->e[i].code), es->e[i].n);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static double cpu_seconds(double *user, double *sys)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    *user = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6;
    *sys = (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    return *user + *sys;
}

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

/* deadline_ts: CLOCK_REALTIME timespec `ms` from now, for pthread_cond_timedwait. */
static struct timespec deadline_ts(int ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    ts.tv_sec += ms / 1000 + ts.tv_nsec / 1000000000L;
    ts.tv_nsec %= 1000000000L;
    return ts;
}

/* ------------------------------------------------------------------ put (load) */

/*
 * The run's shared state: the issuing thread and nng's callback threads
 * meet under mu.  cv is signalled whenever a call completes.
 */
struct run {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    unsigned inflight;
    uint64_t done, acked;
    struct hist hist;
    struct errs errs;
    FILE *ack;
    bool ack_failed;
    /* check only */
    uint64_t ok, later, missing, older, mismatched, unverified, problems_shown;
};

struct put_op {
    struct run *run;
    uint64_t seq, t0;
    char key[MAX_KEY];
};

static void put_done(void *arg, int rc, Cairn__Response *resp, const struct cairn_error_detail *err)
{
    struct put_op *op = arg;
    struct run *r = op->run;
    uint64_t us = (now_ns() - op->t0) / 1000;
    (void)err;

    if (rc == 0 && (!resp->header || resp->body_case != CAIRN__RESPONSE__BODY_PUT))
        rc = -CAIRN_E_MALFORMED;
    pthread_mutex_lock(&r->mu);
    hist_add(&r->hist, us);
    if (rc == 0) {
        r->acked++;
        if (r->ack && fprintf(r->ack, "%s %" PRId64 " %" PRIu64 "\n", op->key,
                              resp->header->revision, op->seq) < 0)
            r->ack_failed = true;
    } else {
        errs_add(&r->errs, rc);
    }
    r->done++;
    r->inflight--;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
    cairn_response_free(resp);
    free(op);
}

static void print_put_report(const struct opts *o, struct run *r, uint64_t issued, double secs)
{
    double user, sys, cpu = cpu_seconds(&user, &sys);
    double rate = secs > 0 ? (double)r->acked / secs : 0;
    const double qs[] = {0.50, 0.90, 0.99, 0.999};
    const char *qn[] = {"p50", "p90", "p99", "p99_9"};
    const char *qt[] = {"p50", "p90", "p99", "p99.9"};

    if (o->json) {
        printf("{\"mode\": \"put\", \"total\": %" PRIu64 ", \"issued\": %" PRIu64
               ", \"acked\": %" PRIu64 ", \"failed\": %" PRIu64 ", \"elapsed_s\": %.3f"
               ", \"puts_per_s\": %.1f, \"latency_ms\": {",
               o->total, issued, r->acked, r->errs.total, secs, rate);
        for (int i = 0; i < 4; i++)
            printf("\"%s\": %.3f, ", qn[i], (double)hist_quantile(&r->hist, qs[i]) / 1000.0);
        printf("\"max\": %.3f}, \"errors\": ", (double)r->hist.max / 1000.0);
        errs_print(&r->errs, stdout, true);
        printf(", \"cpu_user_s\": %.3f, \"cpu_sys_s\": %.3f}\n", user, sys);
        return;
    }
    printf("put: %" PRIu64 " of %" PRIu64 " sent, %" PRIu64 " acknowledged, %" PRIu64
           " failed in %.3f s: %.0f puts/s\n",
           issued, o->total, r->acked, r->errs.total, secs, rate);
    printf("latency ms:");
    for (int i = 0; i < 4; i++)
        printf(" %s %.3f", qt[i], (double)hist_quantile(&r->hist, qs[i]) / 1000.0);
    printf(" max %.3f\n", (double)r->hist.max / 1000.0);
    printf("errors: ");
    errs_print(&r->errs, stdout, false);
    printf("\ncpu: user %.3f s, sys %.3f s (%.0f%% of one core)\n", user, sys,
           secs > 0 ? 100.0 * cpu / secs : 0.0);
}

/*
 * run_put: the load.  The calling thread issues; callbacks only record and
 * signal, so no callback ever starts a call (no recursion when one
 * completes before cairn_call_async returns).
 */
static int run_put(const struct opts *o)
{
    struct run r = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    struct cairn_client *c = NULL;
    char *val = malloc(o->val_size ? o->val_size : 1);
    uint64_t key_space = o->key_space ? o->key_space : o->total;
    uint64_t rng = o->seed, issued = 0;
    int rc = 1;

    if (!val)
        goto out;
    if (o->ack_log) {
        r.ack = fopen(o->ack_log, "a");
        if (!r.ack) {
            fprintf(stderr, "cairn-load: cannot open ack log %s: %s\n", o->ack_log, strerror(errno));
            goto out;
        }
        setvbuf(r.ack, NULL, _IOFBF, 1 << 16);
        fprintf(r.ack, "# cairn-load put val-size=%zu key-prefix=%s seed=%" PRIu64 " total=%" PRIu64 "\n",
                o->val_size, o->key_prefix, o->seed, o->total);
        fflush(r.ack);
    }
    if (!(c = open_client(o)))
        goto out;

    uint64_t start = now_ns(), end = start + (uint64_t)(o->timeout_s * 1e9), flushed = start;
    pthread_mutex_lock(&r.mu);
    while (issued < o->total && !interrupted && now_ns() < end) {
        /* Keep the log current, so a watcher sees progress and a kill loses little of it. */
        if (r.ack && now_ns() - flushed > 100000000ull) {
            fflush(r.ack);
            flushed = now_ns();
        }
        if (r.inflight >= o->inflight) {
            struct timespec ts = deadline_ts(100); /* wake to notice the deadline or a signal */
            pthread_cond_timedwait(&r.cv, &r.mu, &ts);
            continue;
        }
        struct put_op *op = malloc(sizeof(*op));
        if (!op) {
            errs_add(&r.errs, -ENOMEM);
            break;
        }
        op->run = &r;
        /* Sequence numbers are unique per seed, so runs with different seeds never reuse a value. */
        op->seq = (o->seed << 32) + issued;
        snprintf(op->key, sizeof(op->key), "%s%08" PRIu64, o->key_prefix, splitmix64(&rng) % key_space);
        make_value(op->key, op->seq, o->val_size, val);

        Cairn__PutRequest put = CAIRN__PUT_REQUEST__INIT;
        Cairn__Request req = CAIRN__REQUEST__INIT;
        put.key.data = (uint8_t *)op->key;
        put.key.len = strlen(op->key);
        put.value.data = (uint8_t *)val;
        put.value.len = o->val_size;
        req.body_case = CAIRN__REQUEST__BODY_PUT;
        req.put = &put;
        issued++;
        r.inflight++;
        op->t0 = now_ns();
        pthread_mutex_unlock(&r.mu); /* the callback may run before the call returns */
        int crc = cairn_call_async(c, &req, NULL, put_done, op);
        pthread_mutex_lock(&r.mu);
        if (crc != 0) {
            r.inflight--;
            r.done++;
            errs_add(&r.errs, crc);
            free(op);
        }
    }
    /* Drain: every call ends by its own deadline; give them that and a margin. */
    uint64_t drain_end = now_ns() + (uint64_t)(o->call_timeout_ms + 2000) * 1000000ull;
    while (r.inflight > 0 && now_ns() < drain_end) {
        struct timespec ts = deadline_ts(100);
        pthread_cond_timedwait(&r.cv, &r.mu, &ts);
    }
    pthread_mutex_unlock(&r.mu);
    double secs = (double)(now_ns() - start) / 1e9;
    cairn_close(c); /* completes any stragglers with -ECANCELED */
    c = NULL;

    if (r.ack && (fflush(r.ack) != 0 || r.ack_failed)) {
        fprintf(stderr, "cairn-load: writing the ack log %s failed: %s\n", o->ack_log, strerror(errno));
        goto out;
    }
    print_put_report(o, &r, issued, secs);
    rc = (r.acked == o->total) ? 0 : 3;
out:
    if (c)
        cairn_close(c);
    if (r.ack && fclose(r.ack) != 0 && rc == 0)
        rc = 1;
    free(val);
    return rc;
}

/* ------------------------------------------------------------------ watch */

/* One watcher of the watch run; its fields are under run.mu. */
struct watcher {
    struct wrun *run;
    struct cairn_watch *w;
    uint64_t events;
    int64_t last_rev, id;
    bool done, failed;
};

struct wrun {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    const struct opts *o;
    struct cairn_client *c;
    struct run put;              /* the writer's counts */
    struct hist delay;           /* put sent -> event received, microseconds */
    struct errs errs;            /* watch errors */
    uint64_t events, problems, done_watchers, polls, resumed;
    uint64_t first_put_ns, last_event_ns;
};

static void watch_poll(struct watcher *wt);

/* A watcher ends (with r->mu held). */
static void watcher_done(struct wrun *r, struct watcher *wt, bool failed)
{
    if (!wt->done) {
        wt->done = true;
        wt->failed = failed;
        r->done_watchers++;
    }
}

/* Take one reply's events for wt, checking their order; it is done once it has every put (with r->mu held). */
static void take_events(struct wrun *r, struct watcher *wt, const Cairn__WatchNextResponse *b, uint64_t now)
{
    int64_t id = cairn_watch_id(wt->w);
    if (id && id != wt->id) { /* made again on some member: its old one was lost */
        r->resumed++;
        wt->id = id;
    }
    for (size_t i = 0; b && i < b->n_events; i++) {
        const Cairn__Event *e = b->events[i];
        if (!e->kv || e->kv->mod_revision <= wt->last_rev) {
            if (r->problems++ < SHOW_PROBLEMS)
                fprintf(stderr, "cairn-load: watcher got revision %" PRId64 " after %" PRId64 "\n",
                        e->kv ? e->kv->mod_revision : -1, wt->last_rev);
            continue;
        }
        wt->last_rev = e->kv->mod_revision;
        char hex[17] = "";
        uint64_t sent = 0;
        if (e->kv->value.len >= 16) { /* protobuf bytes: not NUL-terminated */
            memcpy(hex, e->kv->value.data, 16);
            sent = strtoull(hex, NULL, 16);
        }
        if (sent && sent <= now)
            hist_add(&r->delay, (now - sent) / 1000);
        wt->events++;
        r->events++;
        r->last_event_ns = now;
    }
    if (wt->events >= r->o->total)
        watcher_done(r, wt, false);
}

/* A code that ends a watcher (or the run being interrupted): true if it ended wt (with r->mu held). */
static bool ended_by(struct wrun *r, struct watcher *wt, int rc, const char *message)
{
    if (rc == -CAIRN_E_WATCH_CANCELED || rc == -CAIRN_E_COMPACTED || rc == -ECANCELED || interrupted) {
        if (!wt->done)
            fprintf(stderr, "cairn-load: watch ended: %s\n", message);
        watcher_done(r, wt, true);
        return true;
    }
    return false;
}

static void watch_polled(void *arg, int rc, Cairn__Response *resp, const struct cairn_error_detail *err)
{
    struct watcher *wt = arg;
    struct wrun *r = wt->run;
    uint64_t now = now_ns();
    pthread_mutex_lock(&r->mu);
    r->polls++;
    if (rc != 0) {
        errs_add(&r->errs, rc);
        ended_by(r, wt, rc, err->message);
    } else {
        take_events(r, wt, resp->watch_next, now);
    }
    if (interrupted)
        watcher_done(r, wt, false);
    bool again = !wt->done;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    cairn_response_free(resp);
    if (again)
        watch_poll(wt);
}

static void watch_poll(struct watcher *wt)
{
    struct wrun *r = wt->run;
    int rc = cairn_watch_next_async(r->c, wt->w, 2000, 0, watch_polled, wt);
    if (rc != 0) {
        pthread_mutex_lock(&r->mu);
        errs_add(&r->errs, rc);
        watcher_done(r, wt, true);
        pthread_cond_broadcast(&r->cv);
        pthread_mutex_unlock(&r->mu);
    }
}

/* --shared-polls: watchers polled together, those not done first (n_live of n). */
#define SHARED_POLL_MAX 4096
struct pgroup {
    struct wrun *run;
    struct watcher **wts;
    struct cairn_watch **ws;
    size_t n, n_live;
};

static void group_poll(struct pgroup *g);

static void group_polled(void *arg, int rc, struct cairn_watch_poll *p, const struct cairn_error_detail *err)
{
    struct pgroup *g = arg;
    struct wrun *r = g->run;
    uint64_t now = now_ns();
    pthread_mutex_lock(&r->mu);
    r->polls++;
    if (rc != 0)
        errs_add(&r->errs, rc);
    size_t live = 0;
    for (size_t i = 0; i < g->n_live; i++) {
        struct watcher *wt = g->wts[i];
        if (rc != 0) {
            ended_by(r, wt, rc, err->message);
        } else if (p->parts[i].code) {
            errs_add(&r->errs, p->parts[i].code);
            ended_by(r, wt, p->parts[i].code, cairn_strerror(p->parts[i].code));
        } else {
            take_events(r, wt, p->parts[i].next, now);
        }
        if (interrupted)
            watcher_done(r, wt, false);
        if (!wt->done) {
            g->wts[i] = g->wts[live];
            g->wts[live++] = wt;
        }
    }
    g->n_live = live;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    cairn_watch_poll_free(p);
    if (live)
        group_poll(g);
}

static void group_poll(struct pgroup *g)
{
    for (size_t i = 0; i < g->n_live; i++)
        g->ws[i] = g->wts[i]->w;
    int rc = cairn_watch_poll_async(g->run->c, g->ws, g->n_live, 2000, 0, group_polled, g);
    if (rc != 0) {
        pthread_mutex_lock(&g->run->mu);
        errs_add(&g->run->errs, rc);
        for (size_t i = 0; i < g->n_live; i++)
            watcher_done(g->run, g->wts[i], true);
        pthread_cond_broadcast(&g->run->cv);
        pthread_mutex_unlock(&g->run->mu);
    }
}

/* Start polling every watcher: one poll each, or (--shared-polls) up to SHARED_POLL_MAX together.  -1: no memory. */
static int start_polls(struct wrun *r, struct watcher *ws, uint64_t nw, struct pgroup **groups, size_t *n_groups)
{
    if (!r->o->shared_polls) {
        for (uint64_t i = 0; i < nw; i++)
            watch_poll(&ws[i]);
        return 0;
    }
    size_t ng = (size_t)((nw + SHARED_POLL_MAX - 1) / SHARED_POLL_MAX);
    struct pgroup *gs = calloc(ng, sizeof(*gs));
    if (!gs)
        return -1;
    *groups = gs;
    *n_groups = ng;
    for (size_t k = 0; k < ng; k++) {
        struct pgroup *g = &gs[k];
        size_t from = k * SHARED_POLL_MAX, n = nw - from < SHARED_POLL_MAX ? nw - from : SHARED_POLL_MAX;
        g->run = r;
        if (!(g->wts = calloc(n, sizeof(*g->wts))) || !(g->ws = calloc(n, sizeof(*g->ws))))
            return -1;
        for (size_t i = 0; i < n; i++)
            g->wts[i] = &ws[from + i];
        g->n = g->n_live = n;
    }
    for (size_t k = 0; k < ng; k++)
        group_poll(&gs[k]);
    return 0;
}

static void print_watch_report(const struct opts *o, struct wrun *r, double secs)
{
    double user, sys;
    double span = r->last_event_ns > r->first_put_ns ? (double)(r->last_event_ns - r->first_put_ns) / 1e9 : 0;
    double eps = span > 0 ? (double)r->events / span : 0, pps = span > 0 ? (double)r->put.acked / span : 0;
    uint64_t want = o->total * o->watchers;
    cpu_seconds(&user, &sys);
    if (o->json) {
        printf("{\"mode\": \"watch\", \"watchers\": %" PRIu64 ", \"total\": %" PRIu64 ", \"acked\": %" PRIu64
               ", \"events\": %" PRIu64 ", \"expected\": %" PRIu64 ", \"problems\": %" PRIu64
               ", \"elapsed_s\": %.3f, \"span_s\": %.3f, \"events_per_s\": %.1f, \"puts_per_s\": %.1f"
               ", \"polls\": %" PRIu64 ", \"resumed\": %" PRIu64 ", \"delay_ms\": {\"p50\": %.3f, \"p90\": %.3f, \"p99\": %.3f, \"max\": %.3f}"
               ", \"put_errors\": ",
               o->watchers, o->total, r->put.acked, r->events, want, r->problems, secs, span, eps, pps, r->polls, r->resumed,
               (double)hist_quantile(&r->delay, 0.5) / 1000.0, (double)hist_quantile(&r->delay, 0.9) / 1000.0,
               (double)hist_quantile(&r->delay, 0.99) / 1000.0, (double)r->delay.max / 1000.0);
        errs_print(&r->put.errs, stdout, true);
        printf(", \"watch_errors\": ");
        errs_print(&r->errs, stdout, true);
        printf(", \"cpu_user_s\": %.3f, \"cpu_sys_s\": %.3f}\n", user, sys);
        return;
    }
    printf("watch: %" PRIu64 " watchers, %" PRIu64 " of %" PRIu64 " puts acknowledged, %" PRIu64 " of %" PRIu64
           " events delivered in %.3f s (%" PRIu64 " polls)\n",
           o->watchers, r->put.acked, o->total, r->events, want, span, r->polls);
    printf("rate: %.0f events/s delivered, %.0f puts/s\n", eps, pps);
    printf("delay put->event ms: p50 %.3f p90 %.3f p99 %.3f max %.3f\n", (double)hist_quantile(&r->delay, 0.5) / 1000.0,
           (double)hist_quantile(&r->delay, 0.9) / 1000.0, (double)hist_quantile(&r->delay, 0.99) / 1000.0,
           (double)r->delay.max / 1000.0);
    printf("problems (repeats, reorders): %" PRIu64 ", watches resumed on another member: %" PRIu64
           "\nput errors: ", r->problems, r->resumed);
    errs_print(&r->put.errs, stdout, false);
    printf("\nwatch errors: ");
    errs_print(&r->errs, stdout, false);
    printf("\ncpu: user %.3f s, sys %.3f s\n", user, sys);
}

/*
 * run_watch: watchers first (each from the revision it was created at), then
 * the writer on this thread as run_put does; watchers re-poll from their
 * callbacks until each has every put or the timeout passes.
 */
static int run_watch(const struct opts *o)
{
    struct wrun r = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER, .o = o};
    struct cairn_client *pc = NULL; /* the writer's client when --put-endpoints is given */
    r.put.mu = (pthread_mutex_t)PTHREAD_MUTEX_INITIALIZER;
    r.put.cv = (pthread_cond_t)PTHREAD_COND_INITIALIZER;
    uint64_t nw = o->watchers ? o->watchers : 100;
    struct watcher *ws = calloc(nw, sizeof(*ws));
    struct pgroup *groups = NULL;
    size_t n_groups = 0;
    size_t vsize = o->val_size < 24 ? 24 : o->val_size;
    char *val = malloc(vsize + 1);
    double secs = 0;
    int rc = 1;
    if (!ws || !val || !(r.c = open_client(o)))
        goto out;
    if (o->put_endpoints) {
        struct opts po = *o;
        po.endpoints = o->put_endpoints;
        if (!(pc = open_client(&po)))
            goto out;
    }
    struct opts eff = *o;
    eff.watchers = nw;
    r.o = &eff;
    char prefix_end[MAX_KEY];
    size_t plen = strlen(o->key_prefix);
    memcpy(prefix_end, o->key_prefix, plen);
    prefix_end[plen - 1]++; /* printable ASCII: never 0xff */
    struct cairn_watch_opts wo = {.key = {o->key_prefix, plen}, .range_end = {prefix_end, plen}};
    for (uint64_t i = 0; i < nw; i++) {
        struct cairn_error_detail err;
        ws[i].run = &r;
        int crc = cairn_watch_create(r.c, &wo, NULL, &ws[i].w, &err);
        if (crc == 0)
            ws[i].id = cairn_watch_id(ws[i].w);
        if (crc != 0) {
            fprintf(stderr, "cairn-load: cannot create watch %" PRIu64 ": %s\n", i, err.message);
            nw = i;
            goto stop;
        }
    }
    if (start_polls(&r, ws, nw, &groups, &n_groups) != 0) {
        fprintf(stderr, "cairn-load: out of memory\n");
        goto stop;
    }

    uint64_t start = now_ns(), end = start + (uint64_t)(o->timeout_s * 1e9), issued = 0;
    r.first_put_ns = start;
    pthread_mutex_lock(&r.put.mu);
    while (issued < o->total && !interrupted && now_ns() < end) {
        if (r.put.inflight >= o->inflight) {
            struct timespec ts = deadline_ts(100);
            pthread_cond_timedwait(&r.put.cv, &r.put.mu, &ts);
            continue;
        }
        struct put_op *op = malloc(sizeof(*op));
        if (!op)
            break;
        op->run = &r.put;
        op->seq = issued;
        snprintf(op->key, sizeof(op->key), "%s%08" PRIu64, o->key_prefix, issued);
        op->t0 = now_ns();
        make_value(op->key, issued, vsize, val);
        snprintf(val, 18, "%016" PRIx64 ":", op->t0);
        val[17] = ':';
        Cairn__PutRequest put = CAIRN__PUT_REQUEST__INIT;
        Cairn__Request req = CAIRN__REQUEST__INIT;
        put.key.data = (uint8_t *)op->key;
        put.key.len = strlen(op->key);
        put.value.data = (uint8_t *)val;
        put.value.len = vsize;
        req.body_case = CAIRN__REQUEST__BODY_PUT;
        req.put = &put;
        issued++;
        r.put.inflight++;
        pthread_mutex_unlock(&r.put.mu);
        int crc = cairn_call_async(pc ? pc : r.c, &req, NULL, put_done, op);
        pthread_mutex_lock(&r.put.mu);
        if (crc != 0) {
            r.put.inflight--;
            errs_add(&r.put.errs, crc);
            free(op);
        }
    }
    /* every put answered (each ends by its own deadline) before the counts are read */
    uint64_t drain_end = now_ns() + (uint64_t)(o->call_timeout_ms + 2000) * 1000000ull;
    while (r.put.inflight > 0 && now_ns() < drain_end) {
        struct timespec ts = deadline_ts(100);
        pthread_cond_timedwait(&r.put.cv, &r.put.mu, &ts);
    }
    pthread_mutex_unlock(&r.put.mu);
    pthread_mutex_lock(&r.mu);
    while (r.done_watchers < nw && !interrupted && now_ns() < end) {
        struct timespec ts = deadline_ts(100);
        pthread_cond_timedwait(&r.cv, &r.mu, &ts);
    }
    interrupted = 1; /* watchers stop re-polling */
    for (uint64_t i = 0, shown = 0; i < nw && shown < SHOW_PROBLEMS; i++)
        if (ws[i].events < o->total) {
            shown++;
            fprintf(stderr, "cairn-load: watcher %" PRIu64 " (watch %" PRId64 ") has %" PRIu64 " of %" PRIu64
                    " events, up to revision %" PRId64 "%s\n", i, ws[i].id, ws[i].events, o->total,
                    ws[i].last_rev, ws[i].failed ? ", failed" : "");
        }
    secs = (double)(now_ns() - start) / 1e9;
    /* the report first (polls still in flight only count, under r.mu) */
    print_watch_report(&eff, &r, secs);
    fflush(stdout);
    rc = r.events == o->total * nw && r.problems == 0 ? 0 : 1;
    pthread_mutex_unlock(&r.mu);
stop:
    cairn_close(r.c); /* completes the polls in flight with -ECANCELED */
    r.c = NULL;
    cairn_close(pc);
    pc = NULL;
    for (uint64_t i = 0; i < nw; i++)
        cairn_watch_free(ws[i].w);
out:
    if (r.c)
        cairn_close(r.c);
    cairn_close(pc);
    for (size_t k = 0; k < n_groups; k++) {
        free(groups[k].wts);
        free(groups[k].ws);
    }
    free(groups);
    free(ws);
    free(val);
    return rc;
}

/* ------------------------------------------------------------------ check */

/* The last acknowledged write of one key, from the ack log. */
struct acked {
    char *key;
    int64_t rev;
    uint64_t seq;
    size_t val_size;
};

/* An open-addressing table of acked writes by key, grown at half full. */
struct table {
    struct acked *slots;
    size_t cap, n;
};

static int table_put(struct table *t, const char *key, int64_t rev, uint64_t seq, size_t val_size)
{
    if (2 * (t->n + 1) > t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 1024;
        struct acked *s = calloc(cap, sizeof(*s));
        if (!s)
            return -ENOMEM;
        for (size_t i = 0; i < t->cap; i++) {
            if (!t->slots[i].key)
                continue;
            size_t j = fnv1a64(t->slots[i].key, strlen(t->slots[i].key)) & (cap - 1);
            while (s[j].key)
                j = (j + 1) & (cap - 1);
            s[j] = t->slots[i];
        }
        free(t->slots);
        t->slots = s;
        t->cap = cap;
    }
    size_t j = fnv1a64(key, strlen(key)) & (t->cap - 1);
    while (t->slots[j].key && strcmp(t->slots[j].key, key) != 0)
        j = (j + 1) & (t->cap - 1);
    struct acked *a = &t->slots[j];
    if (!a->key) {
        if (!(a->key = strdup(key)))
            return -ENOMEM;
        t->n++;
    } else if (a->rev >= rev) {
        return 0; /* acknowledgements arrive out of order: keep the newest */
    }
    a->rev = rev;
    a->seq = seq;
    a->val_size = val_size;
    return 0;
}

/*
 * read_ack_log: every line "key revision seq" of path into t; "#" lines
 * may set val-size for the lines after them.  A line that does not parse
 * (the torn last line of a killed writer) is counted in *skipped.
 */
static int read_ack_log(const char *path, size_t val_size, struct table *t, uint64_t *lines,
                        uint64_t *skipped)
{
    FILE *f = fopen(path, "r");
    char line[MAX_KEY + 128];
    if (!f) {
        fprintf(stderr, "cairn-load: cannot open ack log %s: %s\n", path, strerror(errno));
        return -1;
    }
    while (fgets(line, sizeof(line), f)) {
        char key[MAX_KEY];
        long long rev;
        unsigned long long seq;
        char tail;
        if (line[0] == '#') {
            const char *vs = strstr(line, " val-size=");
            if (vs)
                val_size = (size_t)strtoull(vs + 10, NULL, 10);
            continue;
        }
        if (!strchr(line, '\n') ||
            sscanf(line, "%511s %lld %llu %c", key, &rev, &seq, &tail) != 3) {
            (*skipped)++;
            continue;
        }
        (*lines)++;
        if (table_put(t, key, rev, seq, val_size) != 0) {
            fprintf(stderr, "cairn-load: out of memory reading %s\n", path);
            fclose(f);
            return -1;
        }
    }
    fclose(f);
    return 0;
}

struct check_op {
    struct run *run;
    const struct acked *a;
};

/* Say what is wrong with one key, for the first few problems. */
static void problem(struct run *r, const struct acked *a, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void problem(struct run *r, const struct acked *a, const char *fmt, ...)
{
    va_list ap;
    if (r->problems_shown++ >= SHOW_PROBLEMS)
        return;
    fprintf(stderr, "cairn-load: key %s (acknowledged at revision %" PRId64 ", seq %" PRIu64 "): ",
            a->key, a->rev, a->seq);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static void check_done(void *arg, int rc, Cairn__Response *resp, const struct cairn_error_detail *err)
{
    struct check_op *op = arg;
    struct run *r = op->run;
    const struct acked *a = op->a;
    char *want = NULL;

    pthread_mutex_lock(&r->mu);
    if (rc == 0 && resp->body_case != CAIRN__RESPONSE__BODY_RANGE)
        rc = -CAIRN_E_MALFORMED;
    if (rc != 0) {
        r->unverified++;
        errs_add(&r->errs, rc);
        problem(r, a, "cannot read it: %s%s%s", cairn_errname(rc), err && err->message[0] ? ": " : "",
                err ? err->message : "");
    } else if (resp->range->n_kvs == 0) {
        r->missing++;
        problem(r, a, "missing");
    } else {
        const Cairn__KeyValue *kv = resp->range->kvs[0];
        if (kv->mod_revision > a->rev) {
            r->later++;
            r->ok++;
        } else if (kv->mod_revision < a->rev) {
            r->older++;
            problem(r, a, "the member has an older revision %" PRId64, kv->mod_revision);
        } else if (!(want = malloc(a->val_size ? a->val_size : 1))) {
            r->unverified++;
            errs_add(&r->errs, -ENOMEM);
        } else {
            make_value(a->key, a->seq, a->val_size, want);
            if (kv->value.len == a->val_size && memcmp(kv->value.data, want, a->val_size) == 0) {
                r->ok++;
            } else {
                r->mismatched++;
                problem(r, a, "value differs at that revision (%zu bytes, want %zu): '%.*s'",
                        kv->value.len, a->val_size, (int)(kv->value.len < 64 ? kv->value.len : 64),
                        (const char *)kv->value.data);
            }
        }
    }
    r->done++;
    r->inflight--;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
    free(want);
    cairn_response_free(resp);
    free(op);
}

static int run_check(const struct opts *o)
{
    struct run r = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    struct table t = {0};
    struct cairn_client *c = NULL;
    uint64_t lines = 0, skipped = 0;
    int rc = 1;

    if (!o->ack_log) {
        fprintf(stderr, "cairn-load: check needs --ack-log FILE\n");
        return 2;
    }
    if (read_ack_log(o->ack_log, o->val_size, &t, &lines, &skipped) != 0)
        goto out;
    if (!(c = open_client(o)))
        goto out;

    uint64_t start = now_ns(), end = start + (uint64_t)(o->timeout_s * 1e9);
    pthread_mutex_lock(&r.mu);
    for (size_t i = 0; i < t.cap && !interrupted && now_ns() < end; i++) {
        if (!t.slots[i].key)
            continue;
        while (r.inflight >= o->inflight && !interrupted) {
            struct timespec ts = deadline_ts(100);
            pthread_cond_timedwait(&r.cv, &r.mu, &ts);
        }
        struct check_op *op = malloc(sizeof(*op));
        if (!op)
            break;
        op->run = &r;
        op->a = &t.slots[i];
        Cairn__RangeRequest range = CAIRN__RANGE_REQUEST__INIT;
        Cairn__Request req = CAIRN__REQUEST__INIT;
        range.key.data = (uint8_t *)t.slots[i].key;
        range.key.len = strlen(t.slots[i].key);
        range.serializable = o->serializable;
        req.body_case = CAIRN__REQUEST__BODY_RANGE;
        req.range = &range;
        r.inflight++;
        pthread_mutex_unlock(&r.mu);
        int crc = cairn_call_async(c, &req, NULL, check_done, op);
        pthread_mutex_lock(&r.mu);
        if (crc != 0) {
            r.inflight--;
            r.done++;
            r.unverified++;
            errs_add(&r.errs, crc);
            free(op);
        }
    }
    uint64_t drain_end = now_ns() + (uint64_t)(o->call_timeout_ms + 2000) * 1000000ull;
    while (r.inflight > 0 && now_ns() < drain_end) {
        struct timespec ts = deadline_ts(100);
        pthread_cond_timedwait(&r.cv, &r.mu, &ts);
    }
    pthread_mutex_unlock(&r.mu);
    double secs = (double)(now_ns() - start) / 1e9;
    cairn_close(c);
    c = NULL;
    /* Keys never read because of the timeout count as unverified. */
    r.unverified += t.n - r.done;

    uint64_t bad = r.missing + r.older + r.mismatched + r.unverified;
    if (r.problems_shown > SHOW_PROBLEMS)
        fprintf(stderr, "cairn-load: ... and %" PRIu64 " more problem keys\n", r.problems_shown - SHOW_PROBLEMS);
    if (o->json) {
        printf("{\"mode\": \"check\", \"keys\": %zu, \"lines\": %" PRIu64 ", \"skipped_lines\": %" PRIu64
               ", \"ok\": %" PRIu64 ", \"later\": %" PRIu64 ", \"missing\": %" PRIu64
               ", \"older\": %" PRIu64 ", \"mismatched\": %" PRIu64 ", \"unverified\": %" PRIu64
               ", \"elapsed_s\": %.3f, \"errors\": ",
               t.n, lines, skipped, r.ok, r.later, r.missing, r.older, r.mismatched, r.unverified, secs);
        errs_print(&r.errs, stdout, true);
        printf("}\n");
    } else {
        printf("check: %zu keys from %" PRIu64 " acknowledged puts (%" PRIu64
               " unreadable lines skipped) in %.3f s\n",
               t.n, lines, skipped, secs);
        printf("ok %" PRIu64 " (%" PRIu64 " overwritten later), missing %" PRIu64 ", older %" PRIu64
               ", mismatched %" PRIu64 ", unverified %" PRIu64 "\n",
               r.ok, r.later, r.missing, r.older, r.mismatched, r.unverified);
        if (r.errs.total) {
            printf("read errors: ");
            errs_print(&r.errs, stdout, false);
            printf("\n");
        }
    }
    rc = bad ? 1 : 0;
out:
    if (c)
        cairn_close(c);
    for (size_t i = 0; i < t.cap; i++)
        free(t.slots[i].key);
    free(t.slots);
    return rc;
}

/* ------------------------------------------------------------------ quick get / put */

static void print_json_bytes(const uint8_t *p, size_t n)
{
    putchar('"');
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '"' || p[i] == '\\')
            printf("\\%c", p[i]);
        else if (p[i] < 0x20 || p[i] >= 0x7f)
            printf("\\u%04x", p[i]);
        else
            putchar(p[i]);
    }
    putchar('"');
}

static int quick_get(const struct opts *o, const char *key)
{
    struct cairn_client *c = open_client(o);
    struct cairn_error_detail err = {0};
    Cairn__Response *resp = NULL;
    int rc = 1;

    if (!c)
        return 1;
    struct cairn_range r = {.key = {key, strlen(key)}, .serializable = o->serializable};
    int crc = cairn_range_call(c, &r, NULL, &resp, &err);
    if (crc != 0) {
        fprintf(stderr, "cairn-load: get %s: %s: %s\n", key, cairn_errname(crc),
                err.message[0] ? err.message : cairn_strerror(crc));
    } else if (resp->range->n_kvs == 0) {
        if (o->json) {
            printf("{\"key\": ");
            print_json_bytes((const uint8_t *)key, strlen(key));
            printf(", \"found\": false, \"revision\": %" PRId64 "}\n",
                   resp->header ? resp->header->revision : 0);
        } else {
            fprintf(stderr, "cairn-load: get %s: not found\n", key);
        }
    } else {
        const Cairn__KeyValue *kv = resp->range->kvs[0];
        if (o->json) {
            printf("{\"key\": ");
            print_json_bytes(kv->key.data, kv->key.len);
            printf(", \"found\": true, \"value\": ");
            print_json_bytes(kv->value.data, kv->value.len);
            printf(", \"create_revision\": %" PRId64 ", \"mod_revision\": %" PRId64
                   ", \"version\": %" PRId64 ", \"revision\": %" PRId64 "}\n",
                   kv->create_revision, kv->mod_revision, kv->version,
                   resp->header ? resp->header->revision : 0);
        } else {
            fwrite(kv->value.data, 1, kv->value.len, stdout);
            putchar('\n');
        }
        rc = 0;
    }
    cairn_response_free(resp);
    cairn_close(c);
    return rc;
}

static int quick_put(const struct opts *o, const char *key, const char *value)
{
    struct cairn_client *c = open_client(o);
    struct cairn_error_detail err = {0};
    Cairn__Response *resp = NULL;
    int rc = 1;

    if (!c)
        return 1;
    struct cairn_put p = {.key = {key, strlen(key)}, .value = {value, strlen(value)}};
    int crc = cairn_put(c, &p, NULL, &resp, &err);
    if (crc != 0) {
        fprintf(stderr, "cairn-load: put %s: %s: %s\n", key, cairn_errname(crc),
                err.message[0] ? err.message : cairn_strerror(crc));
    } else {
        int64_t rev = resp->header ? resp->header->revision : 0;
        if (o->json) {
            printf("{\"key\": ");
            print_json_bytes((const uint8_t *)key, strlen(key));
            printf(", \"revision\": %" PRId64 "}\n", rev);
        } else {
            printf("revision %" PRId64 "\n", rev);
        }
        rc = 0;
    }
    cairn_response_free(resp);
    cairn_close(c);
    return rc;
}

static int print_value(const struct opts *o, const char *key, const char *seq_s)
{
    uint64_t seq;
    char *val;
    if (parse_u64(seq_s, &seq) != 0) {
        fprintf(stderr, "cairn-load: bad sequence number '%s'\n", seq_s);
        return 2;
    }
    if (!(val = malloc(o->val_size ? o->val_size : 1)))
        return 1;
    make_value(key, seq, o->val_size, val);
    fwrite(val, 1, o->val_size, stdout);
    putchar('\n');
    free(val);
    return 0;
}

/* ------------------------------------------------------------------ main */

int main(int argc, char **argv)
{
    struct opts o = {
        .endpoints = DEFAULT_ENDPOINT,
        .key_prefix = "load/",
        .total = 10000,
        .seed = 1,
        .inflight = 32,
        .val_size = 32,
        .timeout_s = 60,
        .call_timeout_ms = CAIRN_DEFAULT_CALL_TIMEOUT_MS,
        .dial_timeout_ms = CAIRN_DEFAULT_DIAL_TIMEOUT_MS,
    };
    const char *pos[2];
    int npos;

    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (parse_args(argc, argv, &o, pos, &npos) != 0)
        return 2;
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    const char *cmd = argv[1];
    if (!strcmp(cmd, "put") && npos == 0)
        return run_put(&o);
    if (!strcmp(cmd, "put") && npos == 2)
        return quick_put(&o, pos[0], pos[1]);
    if (!strcmp(cmd, "check") && npos == 0)
        return run_check(&o);
    if (!strcmp(cmd, "get") && npos == 1)
        return quick_get(&o, pos[0]);
    if (!strcmp(cmd, "watch") && npos == 0)
        return run_watch(&o);
    if (!strcmp(cmd, "value") && npos == 2)
        return print_value(&o, pos[0], pos[1]);
    usage(stderr);
    return 2;
}
