/*
 * cairn-bench's watch mode: --watchers watches on the key prefix, each
 * polled again from its own completion (with --shared-polls, the watchers
 * of each connection together, cairn_watch_poll), and one writer in the same process
 * (the request loop of cairn_bench_load.c, at --rate or with --clients in
 * flight) whose values start with their send time.  Reports the events
 * delivered per second over the run and the delay from put to event; checks
 * that each watcher sees revisions in order.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/errors.h"
#include "bench/cairn_bench.h"

#define POLL_MS 500          /* a poll's wait: bounds the stop at the end */
#define CATCH_UP_S 10        /* after the writer, how long the watchers may take to catch up */

struct watcher {
    struct wrun *r;
    struct cairn_client *c;
    struct cairn_watch *w;
    uint64_t events;
    int64_t last_rev;
    bool failed;
};

struct wrun {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;
    unsigned polling;     /* watchers with a poll in flight */
    _Atomic uint64_t events;
    uint64_t polls, problems, last_event_ns;
    struct hist delay;    /* put sent -> event received, us */
    struct errs errs;
};

/* One watcher's share of a reply: events checked for order, their delays recorded.  Returns how many. */
static uint64_t take_events(struct watcher *wt, const Cairn__WatchNextResponse *b, uint64_t now)
{
    struct wrun *r = wt->r;
    uint64_t got = 0;
    for (size_t i = 0; b && i < b->n_events; i++) {
        const Cairn__Event *e = b->events[i];
        if (!e->kv || e->kv->mod_revision <= wt->last_rev) {
            pthread_mutex_lock(&r->mu);
            r->problems++;
            pthread_mutex_unlock(&r->mu);
            continue;
        }
        wt->last_rev = e->kv->mod_revision;
        if (e->kv->value.len >= 17) {
            char hex[17];
            memcpy(hex, e->kv->value.data, 16); /* protobuf bytes: not NUL-terminated */
            hex[16] = '\0';
            uint64_t sent = strtoull(hex, NULL, 16);
            if (sent && sent <= now)
                hist_add(&r->delay, (now - sent) / 1000);
        }
        got++;
    }
    return got;
}

/* Count a watcher's events of one poll, and its end (with r->mu held). */
static void count_events(struct wrun *r, struct watcher *wt, uint64_t got, int code, uint64_t now)
{
    wt->events += got;
    if (got) {
        atomic_fetch_add(&r->events, got);
        r->last_event_ns = now;
    }
    /* These end the watch; the rest (TOO_MANY_REQUESTS, a lost member) are polled again. */
    if (code == -CAIRN_E_WATCH_CANCELED || code == -CAIRN_E_COMPACTED || code == -ECANCELED)
        wt->failed = true;
}

/* A poll could not start: the watchers it was for stop polling (with r->mu held). */
static void poll_refused(struct wrun *r, struct watcher **wts, unsigned n, int rc)
{
    errs_add(&r->errs, rc);
    for (unsigned i = 0; i < n; i++)
        wts[i]->failed = true;
    r->polling--;
    pthread_cond_broadcast(&r->cv);
}

static void watch_poll(struct watcher *wt);

static void watch_polled(void *arg, int rc, Cairn__Response *resp, const struct cairn_error_detail *err)
{
    struct watcher *wt = arg;
    struct wrun *r = wt->r;
    uint64_t now = now_ns();
    (void)err;
    uint64_t got = rc == 0 ? take_events(wt, resp->watch_next, now) : 0;
    cairn_response_free(resp);

    pthread_mutex_lock(&r->mu);
    r->polls++;
    if (rc != 0)
        errs_add(&r->errs, rc);
    count_events(r, wt, got, rc, now);
    bool again = !r->stop && !wt->failed && !bench_interrupted;
    if (!again)
        r->polling--;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    if (again)
        watch_poll(wt);
}

static void watch_poll(struct watcher *wt)
{
    struct wrun *r = wt->r;
    int rc = cairn_watch_next_async(wt->c, wt->w, POLL_MS, 0, watch_polled, wt);
    if (rc != 0) {
        pthread_mutex_lock(&r->mu);
        poll_refused(r, &wt, 1, rc);
        pthread_mutex_unlock(&r->mu);
    }
}

/* --shared-polls: the watchers of one connection, polled together by cairn_watch_poll. */
struct poller {
    struct wrun *r;
    struct cairn_client *c;
    struct watcher **wts;         /* the live ones first: n_live of n */
    struct cairn_watch **ws;
    unsigned n, n_live;
};

static void group_poll(struct poller *p);

static void group_polled(void *arg, int rc, struct cairn_watch_poll *res, const struct cairn_error_detail *err)
{
    struct poller *p = arg;
    struct wrun *r = p->r;
    uint64_t now = now_ns();
    (void)err;
    uint64_t *got = calloc(p->n_live, sizeof(*got));
    for (unsigned i = 0; rc == 0 && got && i < p->n_live; i++)
        got[i] = take_events(p->wts[i], res->parts[i].next, now);

    pthread_mutex_lock(&r->mu);
    r->polls++;
    if (rc != 0)
        errs_add(&r->errs, rc);
    unsigned live = 0;
    for (unsigned i = 0; i < p->n_live; i++) {
        int code = rc != 0 ? rc : res->parts[i].code;
        if (code != 0 && rc == 0)
            errs_add(&r->errs, code);
        count_events(r, p->wts[i], got ? got[i] : 0, code, now);
        if (!p->wts[i]->failed) {
            struct watcher *t = p->wts[live];
            p->wts[live++] = p->wts[i];
            p->wts[i] = t;
        }
    }
    p->n_live = live;
    bool again = !r->stop && live && !bench_interrupted;
    if (!again)
        r->polling--;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    free(got);
    cairn_watch_poll_free(res);
    if (again)
        group_poll(p);
}

static void group_poll(struct poller *p)
{
    for (unsigned i = 0; i < p->n_live; i++)
        p->ws[i] = p->wts[i]->w;
    int rc = cairn_watch_poll_async(p->c, p->ws, p->n_live, POLL_MS, 0, group_polled, p);
    if (rc != 0) {
        pthread_mutex_lock(&p->r->mu);
        poll_refused(p->r, p->wts, p->n_live, rc);
        pthread_mutex_unlock(&p->r->mu);
    }
}

/* Start polling: a poll per watcher, or with --shared-polls one per connection (pollers, o->conns of them). */
static int start_polls(const struct bench_opts *o, struct wrun *r, struct watcher *ws, unsigned nw,
                       struct poller *pollers)
{
    if (!o->shared_polls) {
        r->polling = nw;
        for (unsigned i = 0; i < nw; i++)
            watch_poll(&ws[i]);
        return 0;
    }
    unsigned np = o->conns < nw ? o->conns : nw; /* a poller per connection that has watchers */
    for (unsigned j = 0; j < np; j++) {
        struct poller *p = &pollers[j];
        p->r = r;
        p->c = ws[j].c;
        if (!(p->wts = calloc(nw, sizeof(*p->wts))) || !(p->ws = calloc(nw, sizeof(*p->ws))))
            return -1;
        for (unsigned i = j; i < nw; i += o->conns)
            p->wts[p->n++] = &ws[i];
        p->n_live = p->n;
    }
    r->polling = np;
    for (unsigned j = 0; j < np; j++)
        group_poll(&pollers[j]);
    return 0;
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

/* caught_up: every live watcher has `want` events.  With r->mu held. */
static bool caught_up(const struct watcher *ws, unsigned nw, uint64_t want)
{
    for (unsigned i = 0; i < nw; i++)
        if (!ws[i].failed && ws[i].events < want)
            return false;
    return true;
}

static void print_watch_report(const struct bench_opts *o, struct wrun *r, struct load *l, size_t n_eps,
                               unsigned nw, uint64_t start, const struct cpu_mark *cpu0)
{
    struct stats *puts = load_stats(l, 0);
    uint64_t acked = atomic_load(&puts->ok), events = atomic_load(&r->events);
    double span = r->last_event_ns > start ? (double)(r->last_event_ns - start) / 1e9 : 0;
    double eps = span > 0 ? (double)events / span : 0, pps = span > 0 ? (double)acked / span : 0;
    double secs = (double)(now_ns() - start) / 1e9;

    if (o->json) {
        printf("{\"mode\": \"watch\", \"endpoints\": %zu, \"conns\": %u, \"clients\": %u, \"rate\": %.1f"
               ", \"watchers\": %u, \"shared_polls\": %s, \"val_size\": %zu, \"total\": %" PRIu64 ", \"ok\": %" PRIu64
               ", \"failed\": %" PRIu64 ", \"events\": %" PRIu64 ", \"expected\": %" PRIu64
               ", \"problems\": %" PRIu64 ", \"polls\": %" PRIu64 ", \"span_s\": %.3f, \"events_per_s\": %.1f"
               ", \"puts_per_s\": %.1f, ",
               n_eps, o->conns, o->clients, o->rate, nw, o->shared_polls ? "true" : "false", o->val_size, o->total,
               acked, atomic_load(&puts->errs.total), events, acked * nw, r->problems, r->polls, span, eps, pps);
        print_latency_json("delay_ms", &r->delay);
        printf(", ");
        print_latency_json("put_latency_ms", &puts->lat);
        printf(", \"errors\": ");
        print_errs(&puts->errs, true);
        printf(", \"watch_errors\": ");
        print_errs(&r->errs, true);
        printf(", ");
        print_cpu_json(cpu0, secs);
        printf("}\n");
        return;
    }
    printf("watch: %u watchers%s, %" PRIu64 " of %" PRIu64 " puts acknowledged, %" PRIu64 " of %" PRIu64
           " events delivered in %.3f s (%" PRIu64 " polls)\n",
           nw, o->shared_polls ? " (polled together per connection)" : "", acked, o->total, events, acked * nw, span,
           r->polls);
    printf("rate: %.0f events/s delivered, %.0f puts/s\n", eps, pps);
    print_latency_text("delay put->event", &r->delay);
    print_latency_text("put latency", &puts->lat);
    printf("out of order: %" PRIu64 "\nput errors: ", r->problems);
    print_errs(&puts->errs, false);
    printf("\nwatch errors: ");
    print_errs(&r->errs, false);
    printf("\n");
    print_cpu_text(cpu0, secs);
}

int run_watch(const struct bench_opts *in)
{
    struct bench_opts o = *in;
    struct cairn_client *cs[BENCH_MAX_CONNS] = {0};
    struct wrun r = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    struct watcher *ws = NULL;
    struct poller pollers[BENCH_MAX_CONNS] = {0};
    struct load *l = NULL;
    unsigned nw = 0;
    int rc = 1;
    bool opened = false;

    pthread_mutex_init(&r.errs.mu, NULL);
    if (o.val_size < 17)
        o.val_size = 17; /* the send time, in hex, and a colon */
    if (o.key_space < (o.total ? o.total : 1))
        o.key_space = o.total ? o.total : o.key_space; /* a new key per put */
    if (open_clients(&o, NULL, cs) != 0)
        goto out;
    opened = true;
    if (!(ws = calloc(o.watchers, sizeof(*ws))) || !(l = load_new(&o, cs))) {
        fprintf(stderr, "cairn-bench: out of memory\n");
        goto out;
    }
    char prefix_end[BENCH_MAX_KEY];
    size_t plen = strlen(o.key_prefix);
    if (plen == 0 || (unsigned char)o.key_prefix[plen - 1] == 0xff) {
        fprintf(stderr, "cairn-bench: watch needs a --key-prefix not ending in 0xff\n");
        goto out;
    }
    memcpy(prefix_end, o.key_prefix, plen);
    prefix_end[plen - 1]++;
    struct cairn_watch_opts wo = {.key = {o.key_prefix, plen}, .range_end = {prefix_end, plen}};
    for (nw = 0; nw < o.watchers; nw++) {
        struct cairn_error_detail err = {0};
        struct watcher *wt = &ws[nw];
        wt->r = &r;
        wt->c = cs[nw % o.conns];
        int crc = cairn_watch_create(wt->c, &wo, NULL, &wt->w, &err);
        if (crc != 0) {
            fprintf(stderr, "cairn-bench: cannot create watch %u: %s: %s\n", nw, cairn_errname(crc), err.message);
            goto stop;
        }
    }
    if (start_polls(&o, &r, ws, nw, pollers) != 0) {
        fprintf(stderr, "cairn-bench: out of memory\n");
        goto stop;
    }

    struct cpu_mark cpu0;
    double secs;
    cpu_mark(&cpu0);
    uint64_t start = now_ns();
    load_run(l, &secs);

    /* Let the watchers catch up with every acknowledged put, within bounds. */
    uint64_t want = atomic_load(&load_stats(l, 0)->ok);
    uint64_t until = now_ns() + (uint64_t)CATCH_UP_S * 1000000000ull;
    pthread_mutex_lock(&r.mu);
    while (!caught_up(ws, nw, want) && r.polling > 0 && !bench_interrupted && now_ns() < until) {
        struct timespec ts = in_ms(100);
        pthread_cond_timedwait(&r.cv, &r.mu, &ts);
    }
    pthread_mutex_unlock(&r.mu);
    print_watch_report(&o, &r, l, cairn_endpoint_count(cs[0]), nw, start, &cpu0);
    fflush(stdout);
    pthread_mutex_lock(&r.mu);
    rc = caught_up(ws, nw, want) && want == o.total && r.problems == 0 &&
                 atomic_load(&load_stats(l, 0)->errs.total) == 0 ? 0 : 3;
    for (unsigned i = 0; i < nw; i++)
        if (ws[i].failed)
            rc = 3;
    pthread_mutex_unlock(&r.mu);

stop:
    /* No new polls; the ones in flight end within POLL_MS; then cancel each watch on its member. */
    pthread_mutex_lock(&r.mu);
    r.stop = true;
    until = now_ns() + (uint64_t)(POLL_MS + o.call_timeout_ms) * 1000000ull;
    while (r.polling > 0 && now_ns() < until) {
        struct timespec ts = in_ms(100);
        pthread_cond_timedwait(&r.cv, &r.mu, &ts);
    }
    bool idle = r.polling == 0;
    pthread_mutex_unlock(&r.mu);
    for (unsigned i = 0; i < nw && idle; i++) {
        struct cairn_call_opts co = {.timeout_ms = 2000};
        cairn_watch_cancel(ws[i].c, ws[i].w, &co, NULL);
        ws[i].w = NULL;
    }
out:
    if (opened)
        close_clients(&o, cs); /* completes any poll still in flight with -ECANCELED */
    for (unsigned i = 0; ws && i < nw; i++)
        cairn_watch_free(ws[i].w);
    free(ws);
    for (unsigned j = 0; j < BENCH_MAX_CONNS; j++) {
        free(pollers[j].wts);
        free(pollers[j].ws);
    }
    load_free(l);
    return rc;
}
