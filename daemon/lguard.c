/*
 * lguard: restart listeners that stopped handing connections to their
 * socket.  Why and how: lguard.h.  One thread; a probe is one local
 * connection (plus a TLS handshake for TLS listeners), so a round over
 * healthy listeners costs about a millisecond.
 */
#include "daemon/lguard.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/deadline.h"
#include "base/log.h"

struct lguard_slot {
    _Atomic uint32_t listener_id; /* 0: unused */
    _Atomic uint64_t pipes;       /* pipes this listener has handed to the socket */
    char url[512];                /* under mu */
    nng_tls_config *tls;          /* under mu: the probe's, for tls+tcp:// */
};

struct lguard {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* CLOCK_MONOTONIC */
    pthread_t thread;
    bool stopping;
    int interval_ms, wait_ms;
    int (*open_probe)(nng_socket *);
    char what[16];
    lguard_restart_fn restart;
    void *arg;
    _Atomic unsigned restarts;
    struct lguard_slot slots[LGUARD_MAX];
};

static void on_pipe(nng_pipe p, nng_pipe_ev ev, void *arg)
{
    struct lguard *g = arg;
    (void)ev;
    uint32_t id = (uint32_t)nng_listener_id(nng_pipe_listener(p));
    if (id == 0 || id == (uint32_t)-1)
        return; /* not from a listener */
    for (size_t i = 0; i < LGUARD_MAX; i++)
        if (atomic_load(&g->slots[i].listener_id) == id) {
            atomic_fetch_add(&g->slots[i].pipes, 1);
            return;
        }
}

static void deadline_in(struct timespec *ts, int ms)
{
    deadline_after_ns(ts, (int64_t)ms * 1000000);
}

/* Sleeps up to ms unless stopping; returns true when stopping.  Called and returns with mu held. */
static bool nap(struct lguard *g, int ms)
{
    struct timespec until;
    deadline_in(&until, ms);
    while (!g->stopping && pthread_cond_timedwait(&g->cv, &g->mu, &until) != ETIMEDOUT)
        ;
    return g->stopping;
}

/*
 * One probe of slot i: true when the listener is wedged (a connection was
 * made but no pipe reached the socket within wait_ms), or when nothing
 * listens on the path any more.  Called with mu held; drops it while dialing.
 */
static bool wedged(struct lguard *g, size_t i, const char *url, nng_tls_config *tls)
{
    struct lguard_slot *s = &g->slots[i];
    uint64_t before = atomic_load(&s->pipes);
    nng_socket probe = NNG_SOCKET_INITIALIZER;
    nng_dialer d;
    bool stuck = false;
    pthread_mutex_unlock(&g->mu);
    int rv = g->open_probe(&probe);
    if (rv == 0)
        rv = nng_dialer_create(&d, probe, url);
    if (rv == 0 && tls)
        rv = nng_dialer_set_ptr(d, NNG_OPT_TLS_CONFIG, tls);
    if (rv == 0) {
        rv = nng_dialer_start(d, 0);
        if (rv == NNG_ECONNREFUSED || rv == NNG_ENOENT) {
            log_warning(LOG_FIELDS(LOG_STR("CAIRN_URL", url)), "%s listener %s: nothing accepts connections there (%s)",
                        g->what, url, nng_strerror(rv));
            stuck = true;
        } else if (rv != 0) {
            log_debug(LOG_FIELDS(LOG_STR("CAIRN_URL", url)), "%s listener %s: probe: %s", g->what, url,
                      nng_strerror(rv));
        }
    }
    pthread_mutex_lock(&g->mu);
    if (rv == 0) {
        /* wait for the pipe in short naps, so stopping stays prompt */
        int waited = 0;
        while (atomic_load(&s->pipes) == before && waited < g->wait_ms && !g->stopping) {
            nap(g, 20);
            waited += 20;
        }
        stuck = atomic_load(&s->pipes) == before && !g->stopping;
    }
    pthread_mutex_unlock(&g->mu);
    nng_close(probe); /* closing an unopened socket is harmless: nng returns ECLOSED */
    pthread_mutex_lock(&g->mu);
    return stuck;
}

static void *guard_main(void *arg)
{
    pthread_setname_np(pthread_self(), "cairn-lguard"); /* top -H, perf and gdb show it */
    struct lguard *g = arg;
    pthread_mutex_lock(&g->mu);
    while (!nap(g, g->interval_ms)) {
        for (size_t i = 0; i < LGUARD_MAX && !g->stopping; i++) {
            if (!atomic_load(&g->slots[i].listener_id))
                continue;
            char url[sizeof g->slots[i].url];
            memcpy(url, g->slots[i].url, sizeof url);
            nng_tls_config *tls = g->slots[i].tls;
            if (tls)
                nng_tls_config_hold(tls);
            bool stuck = wedged(g, i, url, tls);
            if (tls)
                nng_tls_config_free(tls);
            if (!stuck || g->stopping)
                continue;
            pthread_mutex_unlock(&g->mu);
            log_warning(LOG_FIELDS(LOG_STR("CAIRN_URL", url)),
                        "%s listener %s stopped handing connections to the server; restarting it",
                        g->what, url);
            char err[256] = "";
            int rc = g->restart(g->arg, i, err, sizeof err);
            if (rc < 0)
                log_err(LOG_FIELDS(LOG_STR("CAIRN_URL", url)), "%s listener %s: cannot restart it: %s", g->what, url,
                        err[0] ? err : strerror(-rc));
            else
                atomic_fetch_add(&g->restarts, 1);
            pthread_mutex_lock(&g->mu);
        }
    }
    pthread_mutex_unlock(&g->mu);
    return NULL;
}

int lguard_start(nng_socket sock, int (*open_probe)(nng_socket *), const char *what, int interval_ms, int wait_ms,
                 lguard_restart_fn restart, void *arg, struct lguard **out)
{
    struct lguard *g = calloc(1, sizeof(*g));
    if (!g)
        return -ENOMEM;
    g->open_probe = open_probe;
    snprintf(g->what, sizeof g->what, "%s", what);
    g->interval_ms = interval_ms;
    g->wait_ms = wait_ms;
    g->restart = restart;
    g->arg = arg;
    mono_cond_init(&g->cv);
    pthread_mutex_init(&g->mu, NULL);
    int rv = nng_pipe_notify(sock, NNG_PIPE_EV_ADD_POST, on_pipe, g);
    if (rv == 0 && pthread_create(&g->thread, NULL, guard_main, g) != 0)
        rv = NNG_ENOMEM;
    if (rv != 0) {
        nng_pipe_notify(sock, NNG_PIPE_EV_ADD_POST, NULL, NULL);
        pthread_cond_destroy(&g->cv);
        pthread_mutex_destroy(&g->mu);
        free(g);
        return -ENOMEM;
    }
    *out = g;
    return 0;
}

void lguard_set(struct lguard *g, size_t i, const char *url, nng_listener l, nng_tls_config *probe_tls)
{
    if (!g || i >= LGUARD_MAX)
        return;
    pthread_mutex_lock(&g->mu);
    snprintf(g->slots[i].url, sizeof g->slots[i].url, "%s", url);
    if (g->slots[i].tls)
        nng_tls_config_free(g->slots[i].tls);
    g->slots[i].tls = strncmp(url, "tls+tcp://", 10) == 0 ? probe_tls : NULL;
    if (g->slots[i].tls)
        nng_tls_config_hold(g->slots[i].tls);
    atomic_store(&g->slots[i].listener_id, (uint32_t)nng_listener_id(l));
    pthread_mutex_unlock(&g->mu);
}

unsigned lguard_restarts(const struct lguard *g)
{
    return g ? atomic_load(&((struct lguard *)g)->restarts) : 0;
}

void lguard_stop(struct lguard *g)
{
    if (!g)
        return;
    pthread_mutex_lock(&g->mu);
    bool running = !g->stopping;
    g->stopping = true;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
    if (running)
        pthread_join(g->thread, NULL);
}

void lguard_free(struct lguard *g)
{
    if (!g)
        return;
    lguard_stop(g);
    for (size_t i = 0; i < LGUARD_MAX; i++)
        if (g->slots[i].tls)
            nng_tls_config_free(g->slots[i].tls);
    pthread_cond_destroy(&g->cv);
    pthread_mutex_destroy(&g->mu);
    free(g);
}
