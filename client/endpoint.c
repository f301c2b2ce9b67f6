/*
 * Endpoints: one nng req0 socket and one background dialer per member URL,
 * the round-robin choice of where an attempt goes, and the pool of nng
 * contexts each socket lends to calls.
 *
 * Why one socket per endpoint rather than one socket dialing every member:
 * a req0 socket spreads requests over its pipes itself and, when a pipe
 * closes, resends what was in flight on another one.  Owning the choice of
 * socket is what lets call.c know exactly where a write went and decide
 * itself whether it may go anywhere else (see call.c for the resend rules).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/within.h"
#include "client/internal.h"

#include <nng/protocol/reqrep0/req.h>

/*
 * nng's reconnect backoff: a member that comes back is seen within a second,
 * and a dead one costs one connect() per second per client.
 */
#define RECONNECT_MIN_MS 100
#define RECONNECT_MAX_MS 1000

/*
 * Pipe callbacks run on nng's threads, maybe while nng holds its own locks,
 * so they never take the client lock: they only record the pipe ID.  One
 * dialer means at most one pipe per socket; REM_POST clears the ID only if
 * it is the one recorded, so a late callback of an old pipe changes nothing.
 */
static void pipe_added(nng_pipe p, nng_pipe_ev ev, void *arg)
{
    struct endpoint *ep = arg;
    (void)ev;
    atomic_store(&ep->pipe_id, (int)nng_pipe_id(p));
}

static void pipe_removed(nng_pipe p, nng_pipe_ev ev, void *arg)
{
    struct endpoint *ep = arg;
    int expected = (int)nng_pipe_id(p);
    (void)ev;
    atomic_compare_exchange_strong(&ep->pipe_id, &expected, 0);
}

static bool scheme_ok(const char *scheme, bool *tls)
{
    static const char *const plain[] = {"tcp", "tcp4", "tcp6", "ipc"};
    static const char *const secure[] = {"tls+tcp", "tls+tcp4", "tls+tcp6"};
    for (size_t i = 0; i < sizeof(plain) / sizeof(plain[0]); i++)
        if (strcmp(scheme, plain[i]) == 0) {
            *tls = false;
            return true;
        }
    for (size_t i = 0; i < sizeof(secure) / sizeof(secure[0]); i++)
        if (strcmp(scheme, secure[i]) == 0) {
            *tls = true;
            return true;
        }
    return false;
}

/* Open ep's socket and start its dialer.  On failure ep holds what must be closed. */
static int endpoint_open(struct cairn_client *c, struct endpoint *ep,
                         const struct cairn_config *cfg, struct cairn_error_detail *err)
{
    nng_url *u = NULL;
    bool tls = false;
    int rv;

    if ((rv = nng_url_parse(&u, ep->url)) != 0) {
        detail_set(err, -CAIRN_E_CONFIG, "endpoint %s: not a valid URL (%s)", ep->url,
                   nng_strerror(rv));
        rv = -CAIRN_E_CONFIG;
        goto out;
    }
    if (!scheme_ok(u->u_scheme, &tls)) {
        detail_set(err, -CAIRN_E_CONFIG,
                   "endpoint %s: scheme %s is not tcp://, tls+tcp:// or ipc://", ep->url,
                   u->u_scheme);
        rv = -CAIRN_E_CONFIG;
        goto out;
    }
    if (tls && (rv = tls_client_config(&cfg->tls, u->u_hostname, &ep->tls, err)) != 0)
        goto out;

    if ((rv = nng_req0_open(&ep->sock)) != 0)
        goto nng_fail;
    ep->sock_open = true;
    /*
     * Never let req0 resend: with a resend time of "infinite" nng 1.5 arms
     * no resend timer and, when the pipe a request went out on closes,
     * fails the context with NNG_ECONNRESET instead of sending it again.
     * Set on the socket before any context exists, since contexts copy it;
     * endpoint_take_ctx sets it on each context as well.
     */
    if ((rv = nng_socket_set_ms(ep->sock, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE)) != 0 ||
        (rv = nng_socket_set_size(ep->sock, NNG_OPT_RECVMAXSZ, c->max_response_bytes)) != 0 ||
        (rv = nng_socket_set_ms(ep->sock, NNG_OPT_RECONNMINT, RECONNECT_MIN_MS)) != 0 ||
        (rv = nng_socket_set_ms(ep->sock, NNG_OPT_RECONNMAXT, RECONNECT_MAX_MS)) != 0)
        goto nng_fail;
    if ((rv = nng_pipe_notify(ep->sock, NNG_PIPE_EV_ADD_POST, pipe_added, ep)) != 0 ||
        (rv = nng_pipe_notify(ep->sock, NNG_PIPE_EV_REM_POST, pipe_removed, ep)) != 0)
        goto nng_fail;
    if ((rv = nng_dialer_create(&ep->dialer, ep->sock, ep->url)) != 0)
        goto nng_fail;
    if (ep->tls && (rv = nng_dialer_set_ptr(ep->dialer, NNG_OPT_TLS_CONFIG, ep->tls)) != 0)
        goto nng_fail;
    if ((rv = nng_dialer_set_size(ep->dialer, NNG_OPT_RECVMAXSZ, c->max_response_bytes)) != 0)
        goto nng_fail;
    /* Non-blocking: a member that is down now is dialed again in the background. */
    if ((rv = nng_dialer_start(ep->dialer, NNG_FLAG_NONBLOCK)) != 0)
        goto nng_fail;
    rv = 0;
    goto out;

nng_fail:
    detail_set(err, -CAIRN_E_CONFIG, "endpoint %s: %s", ep->url, nng_strerror(rv));
    rv = -CAIRN_E_CONFIG;
out:
    if (u)
        nng_url_free(u);
    return rv;
}

/*
 * endpoints_open: copy cfg's endpoint list into c and start dialing each.
 * Returns 0 or a negative code with err set; on failure c->eps is left for
 * endpoints_close to release.
 */
int endpoints_open(struct cairn_client *c, const struct cairn_config *cfg,
                   struct cairn_error_detail *err)
{
    int rv;

    if (!cfg->endpoints || cfg->n_endpoints == 0 || cfg->n_endpoints > CAIRN_MAX_ENDPOINTS) {
        detail_set(err, -CAIRN_E_CONFIG, "endpoints: give between 1 and %d URLs",
                   CAIRN_MAX_ENDPOINTS);
        return -CAIRN_E_CONFIG;
    }
    if (!(c->eps = calloc(cfg->n_endpoints, sizeof(*c->eps))))
        return -ENOMEM;
    c->n_eps = cfg->n_endpoints;
    for (size_t i = 0; i < c->n_eps; i++) {
        struct endpoint *ep = &c->eps[i];
        ep->index = i;
        atomic_init(&ep->pipe_id, 0);
        if (!cfg->endpoints[i] || !cfg->endpoints[i][0]) {
            detail_set(err, -CAIRN_E_CONFIG, "endpoint %zu is empty", i);
            return -CAIRN_E_CONFIG;
        }
        if (!(ep->url = strdup(cfg->endpoints[i])))
            return -ENOMEM;
    }
    for (size_t i = 0; i < c->n_eps; i++)
        if ((rv = endpoint_open(c, &c->eps[i], cfg, err)) != 0)
            return rv;
    return 0;
}

static void close_by_id(void *arg)
{
    nng_socket s = NNG_SOCKET_INITIALIZER;
    s.id = (uint32_t)(uintptr_t)arg;
    nng_close(s);
}

/*
 * endpoints_close: close every pooled context, then every socket (which
 * closes its dialer and pipes), then the TLS configurations.  Called once no
 * call is in flight and every aio has been freed, the order nng 1.5 needs to
 * close without hanging (PLATFORM-NOTES.md).
 *
 * Even so, nng 1.5.2's nng_close can wait forever (daemon/sockclose.h; the
 * cause seen here is fixed in the nng we build).  A close is given
 * CLOSE_MS; past that it is abandoned and the endpoints, which the
 * socket's pipe callbacks use, are leaked instead of freed.
 */
#define CLOSE_MS 2000
void endpoints_close(struct cairn_client *c)
{
    if (!c->eps)
        return;
    for (size_t i = 0; i < c->n_eps; i++) {
        struct endpoint *ep = &c->eps[i];
        for (size_t j = 0; j < ep->n_all; j++) {
            nng_ctx_close(ep->all[j]->ctx);
            free(ep->all[j]);
        }
        free(ep->all);
    }
    bool leak = false;
    for (size_t i = 0; i < c->n_eps; i++) {
        struct endpoint *ep = &c->eps[i];
        if (ep->sock_open && call_within(close_by_id, (void *)(uintptr_t)ep->sock.id, CLOSE_MS) != 0)
            leak = true;
        if (ep->tls)
            nng_tls_config_free(ep->tls);
        free(ep->url);
    }
    if (!leak)
        free(c->eps);
    c->eps = NULL;
}

/*
 * endpoint_pick: where op's next attempt goes, with c->mu held.  From the
 * call's round-robin start, the first endpoint not yet tried in this round
 * that has a connection; else the first not tried (its attempt waits for the
 * dialer).  The caller has made sure one is left (or the op is pinned).
 */
struct endpoint *endpoint_pick(struct cairn_client *c, struct op *op)
{
    size_t n = c->n_eps;

    if (op->pinned >= 0)
        return &c->eps[op->pinned];
    for (size_t i = 0; i < n; i++) {
        size_t idx = (op->start + i) % n;
        if (!(op->tried & (UINT64_C(1) << idx)) && atomic_load(&c->eps[idx].pipe_id) != 0)
            return &c->eps[idx];
    }
    for (size_t i = 0; i < n; i++) {
        size_t idx = (op->start + i) % n;
        if (!(op->tried & (UINT64_C(1) << idx)))
            return &c->eps[idx];
    }
    return &c->eps[op->start % n];
}

/*
 * endpoint_take_ctx: a free context of ep's socket, opening one if the pool
 * is empty (the pool grows to the peak number of calls in flight on ep).
 * Called with c->mu held.  Returns 0 and *out, or -ENOMEM / -CAIRN_E_UNAVAILABLE.
 */
int endpoint_take_ctx(struct cairn_client *c, struct endpoint *ep, struct ctx_slot **out)
{
    struct ctx_slot *slot;
    int rv;
    (void)c;

    if ((slot = ep->free_ctx)) {
        ep->free_ctx = slot->next;
        *out = slot;
        return 0;
    }
    if (ep->n_all == ep->cap_all) {
        size_t cap = ep->cap_all ? ep->cap_all * 2 : 16;
        struct ctx_slot **all = realloc(ep->all, cap * sizeof(*all));
        if (!all)
            return -ENOMEM;
        ep->all = all;
        ep->cap_all = cap;
    }
    if (!(slot = calloc(1, sizeof(*slot))))
        return -ENOMEM;
    if ((rv = nng_ctx_open(&slot->ctx, ep->sock)) != 0) {
        free(slot);
        return rv == NNG_ENOMEM ? -ENOMEM : -CAIRN_E_UNAVAILABLE;
    }
    /* Contexts copy the socket's value at creation; set it again to be certain. */
    if (nng_ctx_set_ms(slot->ctx, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE) != 0) {
        nng_ctx_close(slot->ctx);
        free(slot);
        return -CAIRN_E_UNAVAILABLE;
    }
    ep->all[ep->n_all++] = slot;
    *out = slot;
    return 0;
}

/* endpoint_give_ctx: return slot to ep's pool, with c->mu held. */
void endpoint_give_ctx(struct endpoint *ep, struct ctx_slot *slot)
{
    slot->next = ep->free_ctx;
    ep->free_ctx = slot;
}
