/*
 * cairn-bench: a load generator for Cairn modeled on etcd's benchmark tool,
 * built on libcairn's asynchronous API.  This file holds the command line,
 * the shared helpers (histogram, error counts, keys, clients, progress line)
 * and the report's common parts; the request loop is in cairn_bench_load.c,
 * the watch mode in cairn_bench_watch.c and the in-process nng echo server
 * (the transport's ceiling) in cairn_bench_echo.c.  It measures; it checks
 * only what a result needs to be meaningful (the reply's type, counts).
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "base/errors.h"
#include "bench/cairn_bench.h"

#define DEFAULT_ENDPOINT "tcp://127.0.0.1:2479" /* cairnd's embedded default */

volatile int bench_interrupted;

static void usage(FILE *out)
{
    fprintf(out,
        "Usage: cairn-bench MODE [OPTIONS]\n\n"
        "Modes:\n"
        "  put      Put random (or --sequential-keys) keys of the key space\n"
        "  range    Range: a point get, or --range-keys N consecutive keys;\n"
        "           --consistency l (linearizable, default) or s (serializable)\n"
        "  txn      Txn: compare the key's mod_revision with the last revision seen, then put\n"
        "  mixed    gets (as range) and puts, --read-ratio R of them reads (default 0.5)\n"
        "  watch    --watchers W (default 100) watches on the key prefix, one writer putting\n"
        "           --total keys (at --rate, or --clients in flight): events/s and put->event delay;\n"
        "           --shared-polls: each connection polls its watchers together (cairn_watch_poll)\n"
        "  lease    grant --leases L (default: --clients) leases, then LeaseKeepAlive calls\n"
        "  echo     put mode against an nng rep0 server, this program in a child process, that\n"
        "           answers every request with one fixed reply: the transport's ceiling\n"
        "           (--endpoints ignored; --echo-inproc: the server in this process)\n\n"
        "Options:\n"
        "  --endpoints URL[,URL...]  members (default " DEFAULT_ENDPOINT ")\n"
        "  --cacert F --cert F --key F --server-name NAME   TLS for tls+tcp:// endpoints\n"
        "  --conns N         clients (connections to each endpoint), default 1\n"
        "  --clients N       requests in flight, default 1\n"
        "  --total N         requests (watch: puts), default 10000\n"
        "  --duration SEC    run for SEC seconds instead of --total requests\n"
        "  --rate R          open loop: R requests/s, latency counted from the scheduled time\n"
        "  --key-size B      key bytes, default 8  --val-size B   value bytes, default 256\n"
        "  --key-space N     keys drawn from N, default 100000   --sequential-keys\n"
        "  --key-prefix P    default \"b/\" (watch: \"w/\")\n"
        "  --prefill         put every key of the key space once before measuring\n"
        "  --range-keys N    keys per range request, default 1\n"
        "  --seed S          default 1\n"
        "  --timeout SEC     bound on the whole run, default 300\n"
        "  --call-timeout MS --dial-timeout MS\n"
        "  --task-callbacks  run the calls' callbacks on nng's task threads, as libcairn does\n"
        "                    by default, instead of on the thread that read the reply\n"
        "  --format text|json\n\n"
        "Output: throughput, latency percentiles from a log-bucketed histogram, errors by\n"
        "code and this process's CPU time.  A progress line only when stdout is a terminal.\n"
        "Exit 0 when every request succeeded, 3 when some failed, 2 on bad usage.\n");
}

/* ------------------------------------------------------------ histogram */

static unsigned bucket_of(uint64_t v)
{
    if (v < HIST_SUBS)
        return (unsigned)v;
    unsigned e = 63u - (unsigned)__builtin_clzll(v);
    return (e - HIST_SUB_BITS + 1) * HIST_SUBS + (unsigned)((v >> (e - HIST_SUB_BITS)) & (HIST_SUBS - 1));
}

/* The largest value bucket i holds. */
static uint64_t bucket_top(unsigned i)
{
    if (i < HIST_SUBS)
        return i;
    unsigned e = i / HIST_SUBS + HIST_SUB_BITS - 1, sub = i % HIST_SUBS;
    return (((uint64_t)HIST_SUBS + sub) << (e - HIST_SUB_BITS)) + ((1ull << (e - HIST_SUB_BITS)) - 1);
}

void hist_add(struct hist *h, uint64_t us)
{
    atomic_fetch_add_explicit(&h->b[bucket_of(us)], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum, us, memory_order_relaxed);
    uint64_t m = atomic_load_explicit(&h->max, memory_order_relaxed);
    while (us > m && !atomic_compare_exchange_weak(&h->max, &m, us))
        ;
}

uint64_t hist_quantile(const struct hist *h, double q)
{
    uint64_t count = atomic_load(&h->count), max = atomic_load(&h->max);
    if (count == 0)
        return 0;
    uint64_t rank = (uint64_t)(q * (double)count + 0.999999), seen = 0;
    if (rank == 0)
        rank = 1;
    for (unsigned i = 0; i < HIST_NBUCKETS; i++) {
        seen += atomic_load(&h->b[i]);
        if (seen >= rank)
            return bucket_top(i) < max ? bucket_top(i) : max;
    }
    return max;
}

/* ------------------------------------------------------------ errors */

void errs_add(struct errs *es, int code)
{
    atomic_fetch_add(&es->total, 1);
    pthread_mutex_lock(&es->mu);
    size_t i;
    for (i = 0; i < es->n; i++)
        if (es->e[i].code == code)
            break;
    if (i == es->n) {
        if (es->n < BENCH_MAX_ERR_KINDS)
            es->e[es->n++] = (struct errcount){code, 0};
        else
            i = BENCH_MAX_ERR_KINDS - 1; /* the rare overflow joins the last kind */
    }
    es->e[i].n++;
    pthread_mutex_unlock(&es->mu);
}

void stats_init(struct stats *s)
{
    memset(s, 0, sizeof(*s));
    pthread_mutex_init(&s->errs.mu, NULL);
}

void print_errs(struct errs *es, bool json)
{
    pthread_mutex_lock(&es->mu);
    if (json) {
        printf("{");
        for (size_t i = 0; i < es->n; i++)
            printf("%s\"%s\": %" PRIu64, i ? ", " : "", cairn_errname(es->e[i].code), es->e[i].n);
        printf("}");
    } else if (es->n == 0) {
        printf("none");
    } else {
        for (size_t i = 0; i < es->n; i++)
            printf("%s%s %" PRIu64, i ? ", " : "", cairn_errname(es->e[i].code), es->e[i].n);
    }
    pthread_mutex_unlock(&es->mu);
}

/* ------------------------------------------------------------ reports */

static const double quantiles[] = {0.50, 0.90, 0.99, 0.999};
static const char *const q_json[] = {"p50", "p90", "p99", "p99_9"};
static const char *const q_text[] = {"p50", "p90", "p99", "p99.9"};

void print_latency_json(const char *name, const struct hist *h)
{
    uint64_t n = atomic_load(&h->count);
    printf("\"%s\": {", name);
    for (int i = 0; i < 4; i++)
        printf("\"%s\": %.3f, ", q_json[i], (double)hist_quantile(h, quantiles[i]) / 1000.0);
    printf("\"max\": %.3f, \"mean\": %.3f}", (double)atomic_load(&h->max) / 1000.0,
           n ? (double)atomic_load(&h->sum) / (double)n / 1000.0 : 0.0);
}

void print_latency_text(const char *name, const struct hist *h)
{
    uint64_t n = atomic_load(&h->count);
    printf("%s ms:", name);
    for (int i = 0; i < 4; i++)
        printf(" %s %.3f", q_text[i], (double)hist_quantile(h, quantiles[i]) / 1000.0);
    printf(" max %.3f mean %.3f\n", (double)atomic_load(&h->max) / 1000.0,
           n ? (double)atomic_load(&h->sum) / (double)n / 1000.0 : 0.0);
}

void cpu_mark(struct cpu_mark *m)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    m->user = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6;
    m->sys = (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

void print_cpu_json(const struct cpu_mark *since, double secs)
{
    struct cpu_mark now;
    cpu_mark(&now);
    double user = now.user - since->user, sys = now.sys - since->sys;
    printf("\"cpu_user_s\": %.3f, \"cpu_sys_s\": %.3f, \"cpu_share\": %.3f", user, sys,
           secs > 0 ? (user + sys) / secs : 0.0);
}

void print_cpu_text(const struct cpu_mark *since, double secs)
{
    struct cpu_mark now;
    cpu_mark(&now);
    double user = now.user - since->user, sys = now.sys - since->sys;
    printf("client cpu: user %.3f s, sys %.3f s: %.0f%% of one core over the run\n", user, sys,
           secs > 0 ? 100.0 * (user + sys) / secs : 0.0);
}

/* ------------------------------------------------------------ progress */

struct progress {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;
    const char *what;
    _Atomic uint64_t *done;
    uint64_t total;
};

static void *progress_main(void *arg)
{
    struct progress *p = arg;
    uint64_t start = now_ns(), last = 0, last_ns = start;
    pthread_mutex_lock(&p->mu);
    while (!p->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1;
        pthread_cond_timedwait(&p->cv, &p->mu, &ts);
        if (p->stop)
            break;
        uint64_t d = atomic_load(p->done), t = now_ns();
        double rate = t > last_ns ? (double)(d - last) * 1e9 / (double)(t - last_ns) : 0;
        if (p->total)
            printf("\r%s: %6.1f s  %" PRIu64 " of %" PRIu64 " done  %.0f/s   ", p->what,
                   (double)(t - start) / 1e9, d, p->total, rate);
        else
            printf("\r%s: %6.1f s  %" PRIu64 " done  %.0f/s   ", p->what, (double)(t - start) / 1e9, d, rate);
        fflush(stdout);
        last = d;
        last_ns = t;
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

struct progress *progress_start(const char *what, _Atomic uint64_t *done, uint64_t total)
{
    if (!isatty(STDOUT_FILENO))
        return NULL;
    struct progress *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->what = what;
    p->done = done;
    p->total = total;
    if (pthread_create(&p->thread, NULL, progress_main, p) != 0) {
        free(p);
        return NULL;
    }
    return p;
}

void progress_stop(struct progress *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->thread, NULL);
    printf("\r\033[K");
    fflush(stdout);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

/* ------------------------------------------------------------ helpers */

uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

size_t bench_key(const struct bench_opts *o, uint64_t n, char *out)
{
    int len = snprintf(out, BENCH_MAX_KEY, "%s%0*" PRIu64, o->key_prefix, (int)o->key_digits, n);
    return len < 0 ? 0 : (size_t)len < BENCH_MAX_KEY ? (size_t)len : BENCH_MAX_KEY - 1;
}

int open_clients(const struct bench_opts *o, const char *url, struct cairn_client **out)
{
    static char buf[8192];
    const char *eps[CAIRN_MAX_ENDPOINTS];
    size_t n = 0;

    snprintf(buf, sizeof(buf), "%s", url ? url : o->endpoints);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (n == CAIRN_MAX_ENDPOINTS) {
            fprintf(stderr, "cairn-bench: more than %d endpoints\n", CAIRN_MAX_ENDPOINTS);
            return -1;
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
        .inline_callbacks = !o->task_callbacks, /* every callback here is short */
    };
    for (unsigned i = 0; i < o->conns; i++) {
        struct cairn_error_detail err = {0};
        int rc = cairn_open(&cfg, &out[i], &err);
        if (rc != 0) {
            fprintf(stderr, "cairn-bench: cannot open a client for %s: %s\n", url ? url : o->endpoints,
                    err.message[0] ? err.message : cairn_strerror(rc));
            for (unsigned j = 0; j < i; j++)
                cairn_close(out[j]);
            return -1;
        }
    }
    return 0;
}

void close_clients(const struct bench_opts *o, struct cairn_client **cs)
{
    for (unsigned i = 0; i < o->conns; i++) {
        cairn_close(cs[i]);
        cs[i] = NULL;
    }
}

/* ------------------------------------------------------------ options */

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

static int parse_double(const char *s, double *out)
{
    char *end;
    errno = 0;
    *out = strtod(s, &end);
    return (errno || end == s || *end || !(*out >= 0)) ? -1 : 0;
}

static const struct {
    const char *name;
    enum bench_mode mode;
} modes[] = {
    {"put", MODE_PUT}, {"range", MODE_RANGE}, {"txn", MODE_TXN}, {"mixed", MODE_MIXED},
    {"watch", MODE_WATCH}, {"lease", MODE_LEASE}, {"echo", MODE_ECHO},
};

/* parse_args: every option into o.  Returns 0, or -1 after saying what is wrong. */
static int parse_args(int argc, char **argv, struct bench_opts *o, bool *prefix_set)
{
    size_t m;
    for (m = 0; m < sizeof(modes) / sizeof(modes[0]); m++)
        if (!strcmp(argv[1], modes[m].name))
            break;
    if (m == sizeof(modes) / sizeof(modes[0])) {
        fprintf(stderr, "cairn-bench: unknown mode '%s'\n", argv[1]);
        return -1;
    }
    o->mode = modes[m].mode;
    o->mode_name = modes[m].name;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--sequential-keys")) {
            o->sequential_keys = true;
            continue;
        }
        if (!strcmp(a, "--prefill")) {
            o->prefill = true;
            continue;
        }
        if (!strcmp(a, "--echo-inproc")) {
            o->echo_inproc = true;
            continue;
        }
        if (!strcmp(a, "--shared-polls")) {
            o->shared_polls = true;
            continue;
        }
        if (!strcmp(a, "--task-callbacks")) {
            o->task_callbacks = true;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "cairn-bench: %s needs a value\n", a);
            return -1;
        }
        const char *v = argv[++i];
        uint64_t n = 0;
        bool bad = false;
        if (!strcmp(a, "--endpoints"))
            o->endpoints = v;
        else if (!strcmp(a, "--cacert"))
            o->cacert = v;
        else if (!strcmp(a, "--cert"))
            o->cert = v;
        else if (!strcmp(a, "--key"))
            o->key = v;
        else if (!strcmp(a, "--server-name"))
            o->server_name = v;
        else if (!strcmp(a, "--key-prefix")) {
            o->key_prefix = v;
            *prefix_set = true;
            bad = strlen(v) > BENCH_MAX_KEY / 2;
        } else if (!strcmp(a, "--conns")) {
            bad = parse_u64(v, &n) || n == 0 || n > BENCH_MAX_CONNS;
            o->conns = (unsigned)n;
        } else if (!strcmp(a, "--clients")) {
            bad = parse_u64(v, &n) || n == 0 || n > BENCH_MAX_CLIENTS;
            o->clients = (unsigned)n;
        } else if (!strcmp(a, "--total"))
            bad = parse_u64(v, &o->total) || o->total == 0;
        else if (!strcmp(a, "--duration"))
            bad = parse_double(v, &o->duration_s) || o->duration_s == 0;
        else if (!strcmp(a, "--rate"))
            bad = parse_double(v, &o->rate);
        else if (!strcmp(a, "--key-size")) {
            bad = parse_u64(v, &n) || n == 0 || n > BENCH_MAX_KEY / 2;
            o->key_size = (size_t)n;
        } else if (!strcmp(a, "--val-size")) {
            bad = parse_u64(v, &n) || n > BENCH_MAX_VAL;
            o->val_size = (size_t)n;
        } else if (!strcmp(a, "--key-space"))
            bad = parse_u64(v, &o->key_space) || o->key_space == 0;
        else if (!strcmp(a, "--seed"))
            bad = parse_u64(v, &o->seed);
        else if (!strcmp(a, "--consistency")) {
            bad = strcmp(v, "l") != 0 && strcmp(v, "s") != 0;
            o->serializable = !strcmp(v, "s");
        } else if (!strcmp(a, "--range-keys")) {
            bad = parse_u64(v, &n) || n == 0 || n > 100000;
            o->range_keys = (unsigned)n;
        } else if (!strcmp(a, "--read-ratio"))
            bad = parse_double(v, &o->read_ratio) || o->read_ratio > 1;
        else if (!strcmp(a, "--watchers")) {
            bad = parse_u64(v, &n) || n == 0 || n > 100000;
            o->watchers = (unsigned)n;
        } else if (!strcmp(a, "--leases")) {
            bad = parse_u64(v, &n) || n == 0 || n > 100000;
            o->leases = (unsigned)n;
        } else if (!strcmp(a, "--format")) {
            bad = strcmp(v, "text") != 0 && strcmp(v, "json") != 0;
            o->json = !strcmp(v, "json");
        } else if (!strcmp(a, "--timeout"))
            bad = parse_double(v, &o->timeout_s) || o->timeout_s == 0;
        else if (!strcmp(a, "--call-timeout")) {
            bad = parse_u64(v, &n) || n == 0 || n > 3600000;
            o->call_timeout_ms = (int)n;
        } else if (!strcmp(a, "--dial-timeout")) {
            bad = parse_u64(v, &n) || n == 0 || n > 3600000;
            o->dial_timeout_ms = (int)n;
        } else {
            fprintf(stderr, "cairn-bench: unknown option %s\n", a);
            return -1;
        }
        if (bad) {
            fprintf(stderr, "cairn-bench: bad value '%s' for %s\n", v, a);
            return -1;
        }
    }
    return 0;
}

static unsigned digits(uint64_t n)
{
    unsigned d = 1;
    while (n >= 10) {
        n /= 10;
        d++;
    }
    return d;
}

static void on_signal(int sig)
{
    (void)sig;
    bench_interrupted = 1;
}

int main(int argc, char **argv)
{
    struct bench_opts o = {
        .endpoints = DEFAULT_ENDPOINT,
        .conns = 1,
        .clients = 1,
        .key_size = 8,
        .val_size = 256,
        .key_space = 100000,
        .seed = 1,
        .range_keys = 1,
        .read_ratio = 0.5,
        .watchers = 100,
        .key_prefix = "b/",
        .call_timeout_ms = CAIRN_DEFAULT_CALL_TIMEOUT_MS,
        .dial_timeout_ms = CAIRN_DEFAULT_DIAL_TIMEOUT_MS,
        .timeout_s = 300,
    };
    bool prefix_set = false;

    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (parse_args(argc, argv, &o, &prefix_set) != 0)
        return 2;
    if (o.mode == MODE_WATCH && !prefix_set)
        o.key_prefix = "w/";
    if (!o.total && !o.duration_s)
        o.total = 10000;
    if (!o.leases)
        o.leases = o.clients;
    /* Enough digits for every key a request names, and the key padded to --key-size. */
    size_t plen = strlen(o.key_prefix);
    o.key_digits = digits(o.key_space + o.range_keys);
    if (o.key_size > plen + o.key_digits)
        o.key_digits = (unsigned)(o.key_size - plen);
    if (o.duration_s && o.timeout_s < o.duration_s + 30)
        o.timeout_s = o.duration_s + 30;

    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    return o.mode == MODE_WATCH ? run_watch(&o) : run_load(&o);
}
