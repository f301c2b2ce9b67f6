/*
 * The client object: opening it from a configuration, closing it without
 * hangs, the auth token, and the error detail every call fills.  Endpoints
 * are in endpoint.c, calls in call.c, the KV helpers in kv.c.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/internal.h"

/*
 * detail_set: fill d (may be NULL) with code and a formatted message,
 * keeping the fields that say where the call went.
 */
void detail_set(struct cairn_error_detail *d, int code, const char *fmt, ...)
{
    va_list ap;

    if (!d)
        return;
    d->code = code;
    va_start(ap, fmt);
    vsnprintf(d->message, sizeof(d->message), fmt, ap);
    va_end(ap);
}

static void client_free(struct cairn_client *c)
{
    endpoints_close(c);
    free(c->all_ops);
    free(c->auth_token);
    client_forget_credentials_locked(c);
    pthread_cond_destroy(&c->idle_cv);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

int cairn_open(const struct cairn_config *cfg, struct cairn_client **out,
               struct cairn_error_detail *err)
{
    struct cairn_client *c = NULL;
    int rv;

    if (err) {
        memset(err, 0, sizeof(*err));
        err->endpoint = -1;
    }
    if (!cfg || !out) {
        detail_set(err, -EINVAL, "cairn_open: no configuration or no result pointer");
        return -EINVAL;
    }
    *out = NULL;
    if (cfg->dial_timeout_ms < 0 || cfg->call_timeout_ms < 0) {
        detail_set(err, -CAIRN_E_CONFIG, "dial_timeout_ms and call_timeout_ms must not be negative");
        return -CAIRN_E_CONFIG;
    }
    if (!(c = calloc(1, sizeof(*c))))
        return -ENOMEM;
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->idle_cv, NULL);
    c->dial_timeout_ms = cfg->dial_timeout_ms ? cfg->dial_timeout_ms : CAIRN_DEFAULT_DIAL_TIMEOUT_MS;
    c->call_timeout_ms = cfg->call_timeout_ms ? cfg->call_timeout_ms : CAIRN_DEFAULT_CALL_TIMEOUT_MS;
    c->max_response_bytes =
        cfg->max_response_bytes ? cfg->max_response_bytes : CAIRN_DEFAULT_MAX_RESPONSE_BYTES;
    c->max_in_flight = cfg->max_in_flight ? cfg->max_in_flight : CAIRN_DEFAULT_MAX_IN_FLIGHT;
    c->inline_callbacks = cfg->inline_callbacks;
    if (cfg->auth_token && cfg->auth_token[0] && !(c->auth_token = strdup(cfg->auth_token))) {
        rv = -ENOMEM;
        goto fail;
    }
    if ((rv = endpoints_open(c, cfg, err)) != 0)
        goto fail;
    *out = c;
    return 0;

fail:
    if (err && err->code == 0)
        detail_set(err, rv, "%s", cairn_strerror(rv));
    client_free(c);
    return rv;
}

void cairn_close(struct cairn_client *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&c->mu);
    c->closing = true;
    /*
     * Cancel under the lock: an op's callback decides under the same lock
     * whether to submit again, and sees `closing`, so nothing submitted can
     * escape this loop.  Cancelling only queues the callbacks; they run
     * once cond_wait lets go of the lock.
     */
    for (struct op *op = c->busy_ops; op; op = op->next_busy) {
        nng_aio_cancel(op->aio);
        nng_aio_cancel(op->timer);
    }
    while (c->in_flight > 0)
        pthread_cond_wait(&c->idle_cv, &c->mu);
    pthread_mutex_unlock(&c->mu);

    /* nng_aio_free waits for a callback still returning; then contexts, then sockets. */
    for (size_t i = 0; i < c->n_ops; i++) {
        nng_aio_free(c->all_ops[i]->aio);
        nng_aio_free(c->all_ops[i]->timer);
        free(c->all_ops[i]->req);
        free(c->all_ops[i]);
    }
    c->n_ops = 0;
    client_free(c);
}

size_t cairn_endpoint_count(const struct cairn_client *c)
{
    return c ? c->n_eps : 0;
}

const char *cairn_endpoint_url(const struct cairn_client *c, size_t i)
{
    return c && i < c->n_eps ? c->eps[i].url : NULL;
}

int cairn_endpoint_connected(const struct cairn_client *c, size_t i)
{
    return c && i < c->n_eps && atomic_load(&c->eps[i].pipe_id) != 0;
}

int cairn_set_auth_token(struct cairn_client *c, const char *token)
{
    char *copy = NULL;

    if (!c)
        return -EINVAL;
    if (token && token[0] && !(copy = strdup(token)))
        return -ENOMEM;
    pthread_mutex_lock(&c->mu);
    free(c->auth_token);
    c->auth_token = copy;
    if (!copy)
        client_forget_credentials_locked(c); /* no token: no re-authentication either */
    pthread_mutex_unlock(&c->mu);
    return 0;
}
