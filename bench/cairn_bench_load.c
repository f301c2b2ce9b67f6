/*
 * cairn-bench's request loop: --clients slots, each one call in flight at a
 * time.  Closed loop: a slot's completion starts its next call from the
 * callback (no thread hand-off per request).  Open loop (--rate): the main
 * thread paces calls on a schedule and a call's latency counts from its
 * scheduled time, so a stalled server is not hidden by the client waiting
 * (coordinated omission).  Builds the requests of put, range, txn, mixed,
 * lease and echo, and the watch mode's timestamped puts.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/errors.h"
#include "bench/cairn_bench.h"

/* A slot: one call in flight at a time.  state is for the closed loop (see slot_run). */
struct slot {
    struct load *l;
    unsigned idx;
    atomic_int state;
    uint64_t t0;   /* send time, or scheduled time in the open loop */
    bool read;     /* mixed: this call is a read */
    uint64_t rng;
    struct slot *next_free;
};

struct load {
    const struct bench_opts *o;
    struct cairn_client **cs;
    struct slot *slots;
    char *val;
    int64_t *leases;

    /* the phase */
    bool prefill, open_loop;
    uint64_t total, end_ns;
    _Atomic uint64_t issued, done;
    _Atomic int64_t last_rev;
    _Atomic uint64_t compare_failed, keys_returned;
    struct stats all, writes, reads, pre;

    pthread_mutex_t mu;
    pthread_cond_t cv;
    unsigned active;        /* closed loop: slots still issuing */
    struct slot *free;      /* open loop: slots without a call */
    unsigned busy;          /* open loop: slots with a call */
};

static void slot_run(struct slot *s);

/* ------------------------------------------------------------ requests */

/* The key of call seq on slot s. */
static uint64_t key_number(struct load *l, struct slot *s, uint64_t seq)
{
    const struct bench_opts *o = l->o;
    if (l->prefill || o->sequential_keys || o->mode == MODE_WATCH)
        return seq % o->key_space;
    return splitmix64(&s->rng) % o->key_space;
}

static void call_done(void *arg, int rc, Cairn__Response *resp, const struct cairn_error_detail *err);

/*
 * issue: start call seq on slot s.  Returns cairn_call_async's code (on 0
 * call_done runs exactly once).
 */
static int issue(struct load *l, struct slot *s, uint64_t seq)
{
    const struct bench_opts *o = l->o;
    char key[BENCH_MAX_KEY], end[BENCH_MAX_KEY];
    Cairn__Request req = CAIRN__REQUEST__INIT;
    Cairn__PutRequest put = CAIRN__PUT_REQUEST__INIT;
    Cairn__RangeRequest range = CAIRN__RANGE_REQUEST__INIT;
    Cairn__TxnRequest txn = CAIRN__TXN_REQUEST__INIT;
    Cairn__Compare cmp = CAIRN__COMPARE__INIT;
    Cairn__RequestOp op = CAIRN__REQUEST_OP__INIT;
    Cairn__Compare *cmps[1] = {&cmp};
    Cairn__RequestOp *ops[1] = {&op};
    Cairn__LeaseKeepAliveRequest ka = CAIRN__LEASE_KEEP_ALIVE_REQUEST__INIT;
    uint64_t k = key_number(l, s, seq);
    size_t klen = bench_key(o, k, key);
    enum bench_mode mode = l->prefill ? MODE_PUT : o->mode;

    put.key.data = range.key.data = (uint8_t *)key;
    put.key.len = range.key.len = klen;
    put.value.data = (uint8_t *)l->val;
    put.value.len = o->val_size;
    s->read = false;
    if (mode == MODE_MIXED) {
        s->read = (double)(splitmix64(&s->rng) >> 11) * 0x1.0p-53 < o->read_ratio;
        mode = s->read ? MODE_RANGE : MODE_PUT;
    }
    switch (mode) {
    case MODE_PUT:
    case MODE_ECHO:
        req.body_case = CAIRN__REQUEST__BODY_PUT;
        req.put = &put;
        break;
    case MODE_WATCH: {
        /* The value starts with the send time, which the watchers read back. */
        char *v = l->val + (size_t)s->idx * o->val_size;
        char head[24];
        snprintf(head, sizeof(head), "%016" PRIx64 ":", now_ns());
        memcpy(v, head, 17);
        put.value.data = (uint8_t *)v;
        req.body_case = CAIRN__REQUEST__BODY_PUT;
        req.put = &put;
        break;
    }
    case MODE_RANGE:
        range.serializable = o->serializable;
        if (o->range_keys > 1) {
            range.range_end.data = (uint8_t *)end;
            range.range_end.len = bench_key(o, k + o->range_keys, end);
            range.limit = o->range_keys;
        }
        req.body_case = CAIRN__REQUEST__BODY_RANGE;
        req.range = &range;
        break;
    case MODE_TXN:
        /*
         * Compare-and-put as a client holding the latest revision it has seen
         * would: the key must not have changed after it.  A concurrent put of
         * the same key makes the compare fail, which is counted, not an error.
         */
        cmp.result = CAIRN__COMPARE__COMPARE_RESULT__LESS;
        cmp.target = CAIRN__COMPARE__COMPARE_TARGET__MOD;
        cmp.key.data = (uint8_t *)key;
        cmp.key.len = klen;
        cmp.target_union_case = CAIRN__COMPARE__TARGET_UNION_MOD_REVISION;
        cmp.mod_revision = atomic_load(&l->last_rev) + 1;
        op.request_case = CAIRN__REQUEST_OP__REQUEST_REQUEST_PUT;
        op.request_put = &put;
        txn.n_compare = 1;
        txn.compare = cmps;
        txn.n_success = 1;
        txn.success = ops;
        req.body_case = CAIRN__REQUEST__BODY_TXN;
        req.txn = &txn;
        break;
    case MODE_LEASE:
        ka.id = l->leases[seq % o->leases];
        req.body_case = CAIRN__REQUEST__BODY_LEASE_KEEP_ALIVE;
        req.lease_keep_alive = &ka;
        break;
    default:
        return -EINVAL;
    }
    return cairn_call_async(l->cs[seq % o->conns], &req, NULL, call_done, s);
}

/* check_reply: 0 if resp is the reply the slot's request expects, with its counts. */
static int check_reply(struct load *l, struct slot *s, const Cairn__Response *resp)
{
    enum bench_mode mode = l->prefill ? MODE_PUT : l->o->mode;
    if (mode == MODE_MIXED)
        mode = s->read ? MODE_RANGE : MODE_PUT;
    if (resp->header) {
        int64_t rev = resp->header->revision, seen = atomic_load(&l->last_rev);
        while (rev > seen && !atomic_compare_exchange_weak(&l->last_rev, &seen, rev))
            ;
    }
    switch (mode) {
    case MODE_PUT:
    case MODE_ECHO:
    case MODE_WATCH:
        return resp->body_case == CAIRN__RESPONSE__BODY_PUT ? 0 : -CAIRN_E_MALFORMED;
    case MODE_RANGE:
        if (resp->body_case != CAIRN__RESPONSE__BODY_RANGE)
            return -CAIRN_E_MALFORMED;
        atomic_fetch_add_explicit(&l->keys_returned, resp->range->n_kvs, memory_order_relaxed);
        return 0;
    case MODE_TXN:
        if (resp->body_case != CAIRN__RESPONSE__BODY_TXN)
            return -CAIRN_E_MALFORMED;
        if (!resp->txn->succeeded)
            atomic_fetch_add(&l->compare_failed, 1);
        return 0;
    case MODE_LEASE:
        return resp->body_case == CAIRN__RESPONSE__BODY_LEASE_KEEP_ALIVE ? 0 : -CAIRN_E_MALFORMED;
    default:
        return -EINVAL;
    }
}

/* Record one finished call in the phase's counters. */
static void record(struct load *l, struct slot *s, int rc, uint64_t t0)
{
    uint64_t us = (now_ns() - t0) / 1000;
    struct stats *kinds[2] = {l->prefill ? &l->pre : &l->all, NULL};
    if (!l->prefill && l->o->mode == MODE_MIXED)
        kinds[1] = s->read ? &l->reads : &l->writes;
    for (int i = 0; i < 2 && kinds[i]; i++) {
        if (rc == 0) {
            hist_add(&kinds[i]->lat, us);
            atomic_fetch_add_explicit(&kinds[i]->ok, 1, memory_order_relaxed);
        } else {
            errs_add(&kinds[i]->errs, rc);
        }
    }
    atomic_fetch_add(&l->done, 1);
}

static void call_done(void *arg, int rc, Cairn__Response *resp, const struct cairn_error_detail *err)
{
    struct slot *s = arg;
    struct load *l = s->l;
    (void)err;
    if (rc == 0)
        rc = check_reply(l, s, resp);
    cairn_response_free(resp);
    record(l, s, rc, s->t0);
    if (l->open_loop) {
        pthread_mutex_lock(&l->mu);
        s->next_free = l->free;
        l->free = s;
        l->busy--;
        pthread_cond_signal(&l->cv);
        pthread_mutex_unlock(&l->mu);
        return;
    }
    /* 1: the issuer is still inside cairn_call_async and will go on itself. */
    if (atomic_exchange(&s->state, 2) == 1)
        return;
    slot_run(s);
}

/* ------------------------------------------------------------ the loops */

/* claim: the sequence number of the next call, or false when the phase is over. */
static bool claim(struct load *l, uint64_t *seq)
{
    if (bench_interrupted || (l->end_ns && now_ns() >= l->end_ns))
        return false;
    uint64_t n = atomic_fetch_add(&l->issued, 1);
    if (n >= l->total)
        return false;
    *seq = n;
    return true;
}

/*
 * slot_run: issue the slot's calls until the phase is over.  Runs on the
 * main thread for the first call and then from call_done; when a call
 * completes before cairn_call_async returns, the issuer loops instead of
 * call_done recursing (state 1 = in cairn_call_async, 2 = completed there).
 */
static void slot_run(struct slot *s)
{
    struct load *l = s->l;
    uint64_t seq;
    while (claim(l, &seq)) {
        atomic_store(&s->state, 1);
        s->t0 = now_ns();
        int rc = issue(l, s, seq);
        if (rc != 0) {
            atomic_store(&s->state, 0);
            record(l, s, rc, s->t0);
            continue;
        }
        if (atomic_exchange(&s->state, 0) == 1)
            return; /* call_done will go on */
    }
    pthread_mutex_lock(&l->mu);
    if (--l->active == 0)
        pthread_cond_signal(&l->cv);
    pthread_mutex_unlock(&l->mu);
}

/* wait_until: sleep to CLOCK_MONOTONIC time t (ns). */
static void wait_until(uint64_t t)
{
    struct timespec ts = {.tv_sec = (time_t)(t / 1000000000ull), .tv_nsec = (long)(t % 1000000000ull)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR && !bench_interrupted)
        ;
}

static struct timespec in_ms(int ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += (long)ms * 1000000L;
    ts.tv_sec += ts.tv_nsec / 1000000000L;
    ts.tv_nsec %= 1000000000L;
    return ts;
}

/* pace: the open loop on this thread; slots are taken from the free list. */
static void pace(struct load *l, uint64_t start)
{
    const double gap_ns = 1e9 / l->o->rate;
    uint64_t seq;
    while (claim(l, &seq)) {
        uint64_t due = start + (uint64_t)((double)seq * gap_ns);
        wait_until(due);
        pthread_mutex_lock(&l->mu);
        while (!l->free && !bench_interrupted) {
            struct timespec ts = in_ms(100);
            pthread_cond_timedwait(&l->cv, &l->mu, &ts);
        }
        struct slot *s = l->free;
        if (!s) {
            pthread_mutex_unlock(&l->mu);
            break;
        }
        l->free = s->next_free;
        l->busy++;
        pthread_mutex_unlock(&l->mu);
        s->t0 = due;
        int rc = issue(l, s, seq);
        if (rc != 0) {
            record(l, s, rc, due);
            pthread_mutex_lock(&l->mu);
            s->next_free = l->free;
            l->free = s;
            l->busy--;
            pthread_mutex_unlock(&l->mu);
        }
    }
}

/*
 * run_phase: one phase of total calls (or until end_ns), then wait for every
 * call to end.  Each ends by its own deadline; past hard_end the phase is
 * abandoned (the caller's cairn_close then cancels what is left).
 */
static void run_phase(struct load *l, bool prefill, uint64_t total, uint64_t end_ns, uint64_t hard_end)
{
    const struct bench_opts *o = l->o;
    l->prefill = prefill;
    l->open_loop = !prefill && o->rate > 0;
    l->total = total;
    l->end_ns = end_ns;
    atomic_store(&l->issued, 0);
    atomic_store(&l->done, 0);
    uint64_t start = now_ns();
    if (l->open_loop) {
        l->free = NULL;
        l->busy = 0;
        for (unsigned i = o->clients; i-- > 0;) {
            l->slots[i].next_free = l->free;
            l->free = &l->slots[i];
        }
        pace(l, start);
        pthread_mutex_lock(&l->mu);
        while (l->busy > 0 && now_ns() < hard_end) {
            struct timespec ts = in_ms(100);
            pthread_cond_timedwait(&l->cv, &l->mu, &ts);
        }
        pthread_mutex_unlock(&l->mu);
        return;
    }
    l->active = o->clients;
    for (unsigned i = 0; i < o->clients; i++)
        slot_run(&l->slots[i]);
    pthread_mutex_lock(&l->mu);
    while (l->active > 0 && now_ns() < hard_end) {
        struct timespec ts = in_ms(100);
        pthread_cond_timedwait(&l->cv, &l->mu, &ts);
    }
    pthread_mutex_unlock(&l->mu);
}

static uint64_t hard_end_of(const struct bench_opts *o, uint64_t start)
{
    return start + (uint64_t)(o->timeout_s * 1e9) + (uint64_t)(o->call_timeout_ms + 2000) * 1000000ull;
}

/* ------------------------------------------------------------ public */

struct load *load_new(const struct bench_opts *o, struct cairn_client **cs)
{
    struct load *l = calloc(1, sizeof(*l));
    if (!l)
        return NULL;
    l->o = o;
    l->cs = cs;
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv, NULL);
    stats_init(&l->all);
    stats_init(&l->writes);
    stats_init(&l->reads);
    stats_init(&l->pre);
    /* One value per slot (watch puts stamp theirs); the same filler in all. */
    size_t vsize = o->val_size ? o->val_size : 1;
    l->slots = calloc(o->clients, sizeof(*l->slots));
    l->val = malloc(vsize * o->clients);
    if (!l->slots || !l->val) {
        load_free(l);
        return NULL;
    }
    uint64_t st = o->seed;
    static const char alnum[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    for (size_t i = 0; i < vsize; i++)
        l->val[i] = alnum[splitmix64(&st) % 62];
    for (unsigned i = 1; i < o->clients; i++)
        memcpy(l->val + (size_t)i * vsize, l->val, vsize);
    for (unsigned i = 0; i < o->clients; i++) {
        l->slots[i].l = l;
        l->slots[i].idx = i;
        l->slots[i].rng = o->seed * 0x100000001b3ull + i;
    }
    return l;
}

void load_free(struct load *l)
{
    if (!l)
        return;
    free(l->slots);
    free(l->val);
    free(l->leases);
    pthread_cond_destroy(&l->cv);
    pthread_mutex_destroy(&l->mu);
    free(l);
}

int load_prefill(struct load *l)
{
    const struct bench_opts *o = l->o;
    uint64_t start = now_ns();
    run_phase(l, true, o->key_space, 0, hard_end_of(o, start));
    if (atomic_load(&l->pre.ok) != o->key_space) {
        fprintf(stderr, "cairn-bench: prefill: %" PRIu64 " of %" PRIu64 " puts succeeded (errors: ",
                atomic_load(&l->pre.ok), o->key_space);
        fflush(stdout);
        pthread_mutex_lock(&l->pre.errs.mu);
        for (size_t i = 0; i < l->pre.errs.n; i++)
            fprintf(stderr, "%s%s %" PRIu64, i ? ", " : "", cairn_errname(l->pre.errs.e[i].code),
                    l->pre.errs.e[i].n);
        pthread_mutex_unlock(&l->pre.errs.mu);
        fprintf(stderr, ")\n");
        return -1;
    }
    return 0;
}

int load_run(struct load *l, double *secs)
{
    const struct bench_opts *o = l->o;
    uint64_t start = now_ns();
    uint64_t end = o->duration_s ? start + (uint64_t)(o->duration_s * 1e9) : 0;
    uint64_t hard = hard_end_of(o, start);
    if (!end || end > start + (uint64_t)(o->timeout_s * 1e9))
        end = start + (uint64_t)(o->timeout_s * 1e9);
    struct progress *p = progress_start(o->mode_name, &l->done, o->total);
    run_phase(l, false, o->total ? o->total : UINT64_MAX, end, hard);
    *secs = (double)(now_ns() - start) / 1e9;
    progress_stop(p);
    return 0;
}

struct stats *load_stats(struct load *l, int which)
{
    return which == 1 ? &l->writes : which == 2 ? &l->reads : &l->all;
}

uint64_t load_issued(struct load *l)
{
    uint64_t n = atomic_load(&l->issued);
    return n < l->total ? n : l->total;
}

uint64_t load_compare_failed(struct load *l)
{
    return atomic_load(&l->compare_failed);
}

uint64_t load_keys_returned(struct load *l)
{
    return atomic_load(&l->keys_returned);
}

/* ------------------------------------------------------------ leases */

/* grant_leases: o->leases leases of a minute, enough for any run here. */
static int grant_leases(struct load *l)
{
    const struct bench_opts *o = l->o;
    if (!(l->leases = calloc(o->leases, sizeof(*l->leases))))
        return -1;
    for (unsigned i = 0; i < o->leases; i++) {
        Cairn__LeaseGrantRequest g = CAIRN__LEASE_GRANT_REQUEST__INIT;
        Cairn__Request req = CAIRN__REQUEST__INIT;
        Cairn__Response *resp = NULL;
        struct cairn_error_detail err = {0};
        g.ttl = 60;
        req.body_case = CAIRN__REQUEST__BODY_LEASE_GRANT;
        req.lease_grant = &g;
        int rc = cairn_call(l->cs[i % o->conns], &req, NULL, &resp, &err);
        if (rc == 0 && resp->body_case != CAIRN__RESPONSE__BODY_LEASE_GRANT)
            rc = -CAIRN_E_MALFORMED;
        if (rc != 0) {
            fprintf(stderr, "cairn-bench: lease grant %u of %u: %s: %s\n", i + 1, o->leases,
                    cairn_errname(rc), err.message);
            cairn_response_free(resp);
            return -1;
        }
        l->leases[i] = resp->lease_grant->id;
        cairn_response_free(resp);
    }
    return 0;
}

/* revoke_leases: best effort, so a run leaves no leases behind for a minute. */
static void revoke_leases(struct load *l)
{
    for (unsigned i = 0; l->leases && i < l->o->leases; i++) {
        Cairn__LeaseRevokeRequest r = CAIRN__LEASE_REVOKE_REQUEST__INIT;
        Cairn__Request req = CAIRN__REQUEST__INIT;
        Cairn__Response *resp = NULL;
        r.id = l->leases[i];
        req.body_case = CAIRN__REQUEST__BODY_LEASE_REVOKE;
        req.lease_revoke = &r;
        if (l->leases[i])
            cairn_call(l->cs[i % l->o->conns], &req, NULL, &resp, NULL);
        cairn_response_free(resp);
    }
}

/* ------------------------------------------------------------ report */

static void print_report(const struct bench_opts *o, struct load *l, double secs,
                         const struct cpu_mark *cpu0, double server_cpu)
{
    struct stats *a = &l->all;
    uint64_t ok = atomic_load(&a->ok), failed = atomic_load(&a->errs.total);
    double rate = secs > 0 ? (double)ok / secs : 0;
    size_t n_eps = o->mode == MODE_ECHO ? 1 : cairn_endpoint_count(l->cs[0]);

    if (o->json) {
        printf("{\"mode\": \"%s\", \"endpoints\": %zu, \"conns\": %u, \"clients\": %u, \"rate\": %.1f"
               ", \"key_size\": %zu, \"val_size\": %zu, \"key_space\": %" PRIu64,
               o->mode_name, n_eps, o->conns, o->clients, o->rate, (size_t)(strlen(o->key_prefix) + o->key_digits),
               o->val_size, o->key_space);
        if (o->mode == MODE_RANGE || o->mode == MODE_MIXED)
            printf(", \"consistency\": \"%s\", \"range_keys\": %u, \"keys_returned\": %" PRIu64,
                   o->serializable ? "s" : "l", o->range_keys, load_keys_returned(l));
        if (o->mode == MODE_TXN)
            printf(", \"compare_failed\": %" PRIu64, load_compare_failed(l));
        if (o->mode == MODE_LEASE)
            printf(", \"leases\": %u", o->leases);
        printf(", \"total\": %" PRIu64 ", \"issued\": %" PRIu64 ", \"done\": %" PRIu64 ", \"ok\": %" PRIu64
               ", \"failed\": %" PRIu64 ", \"elapsed_s\": %.3f, \"ops_per_s\": %.1f, ",
               o->total, load_issued(l), ok + failed, ok, failed, secs, rate);
        print_latency_json("latency_ms", &a->lat);
        printf(", \"errors\": ");
        print_errs(&a->errs, true);
        if (o->mode == MODE_MIXED) {
            struct stats *k[2] = {&l->reads, &l->writes};
            const char *names[2] = {"reads", "writes"};
            for (int i = 0; i < 2; i++) {
                printf(", \"%s\": {\"ok\": %" PRIu64 ", \"ops_per_s\": %.1f, ", names[i], atomic_load(&k[i]->ok),
                       secs > 0 ? (double)atomic_load(&k[i]->ok) / secs : 0.0);
                print_latency_json("latency_ms", &k[i]->lat);
                printf(", \"errors\": ");
                print_errs(&k[i]->errs, true);
                printf("}");
            }
        }
        if (server_cpu >= 0)
            printf(", \"echo_server_cpu_s\": %.3f", server_cpu);
        printf(", \"echo_inproc\": %s", o->mode == MODE_ECHO && o->echo_inproc ? "true" : "false");
        printf(", ");
        print_cpu_json(cpu0, secs);
        printf("}\n");
        return;
    }
    printf("%s: %zu endpoint(s), %u conn(s), %u in flight%s", o->mode_name, n_eps, o->conns, o->clients,
           o->mode != MODE_ECHO ? "" : o->echo_inproc ? " (nng rep0 server in this process)"
                                                      : " (nng rep0 server in a child process)");
    if (o->rate > 0)
        printf(", open loop at %.0f/s", o->rate);
    printf("\n%" PRIu64 " ok, %" PRIu64 " failed in %.3f s: %.0f ops/s\n", ok, failed, secs, rate);
    print_latency_text("latency", &a->lat);
    if (o->mode == MODE_MIXED) {
        printf("reads %" PRIu64 ", writes %" PRIu64 "\n", atomic_load(&l->reads.ok), atomic_load(&l->writes.ok));
        print_latency_text("read latency", &l->reads.lat);
        print_latency_text("write latency", &l->writes.lat);
    }
    if (o->mode == MODE_TXN)
        printf("compares that failed (the key changed meanwhile): %" PRIu64 "\n", load_compare_failed(l));
    if (o->mode == MODE_RANGE)
        printf("keys returned: %" PRIu64 "\n", load_keys_returned(l));
    printf("errors: ");
    print_errs(&a->errs, false);
    printf("\n");
    print_cpu_text(cpu0, secs);
    if (server_cpu >= 0)
        printf("echo server cpu: %.3f s: %.0f%% of one core\n", server_cpu, secs > 0 ? 100.0 * server_cpu / secs : 0.0);
    else if (o->mode == MODE_ECHO)
        printf("(the echo server's CPU time is included: it runs in this process)\n");
}

int run_load(const struct bench_opts *o)
{
    struct cairn_client *cs[BENCH_MAX_CONNS] = {0};
    struct echo_server *echo = NULL;
    struct load *l = NULL;
    char url[128];
    int rc = 1;
    bool opened = false;

    if (o->mode == MODE_ECHO && echo_start(o->clients + 8, o->echo_inproc, &echo, url, sizeof(url)) != 0)
        return 1;
    if (open_clients(o, echo ? url : NULL, cs) != 0)
        goto out;
    opened = true;
    if (!(l = load_new(o, cs))) {
        fprintf(stderr, "cairn-bench: out of memory\n");
        goto out;
    }
    if (o->prefill && load_prefill(l) != 0)
        goto out;
    if (o->mode == MODE_LEASE && grant_leases(l) != 0)
        goto out;
    struct cpu_mark cpu0;
    double secs = 0, server_cpu = -1;
    cpu_mark(&cpu0);
    load_run(l, &secs);
    if (echo && !o->echo_inproc) {
        /* Stopped before the report, for its CPU time; the clients' calls are all done. */
        echo_stop(echo, &server_cpu);
        echo = NULL;
    }
    print_report(o, l, secs, &cpu0, server_cpu);
    fflush(stdout);
    rc = atomic_load(&l->all.errs.total) == 0 && (!o->total || atomic_load(&l->all.ok) == o->total) ? 0 : 3;
    if (o->mode == MODE_LEASE)
        revoke_leases(l);
out:
    if (opened)
        close_clients(o, cs); /* cancels any call still in flight */
    load_free(l);
    echo_stop(echo, NULL);
    return rc;
}
