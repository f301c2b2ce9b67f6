/*
 * libcairn's insides, shared by its files and by no one else: the client,
 * its endpoints and the per-call state machine.  One mutex (client.mu)
 * guards everything mutable here except the pipe counters, which nng's pipe
 * callbacks update atomically so they never need the client lock.
 */
#ifndef CAIRN_CLIENT_INTERNAL_H
#define CAIRN_CLIENT_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include <nng/nng.h>
#include <nng/supplemental/tls/tls.h>
#include <nng/supplemental/util/platform.h>

#include "client/cairn.h"

/* A pooled nng context of one endpoint's socket, free when on the list. */
struct ctx_slot {
    nng_ctx ctx;
    struct ctx_slot *next;
};

struct endpoint {
    char *url;
    size_t index;
    nng_socket sock;
    bool sock_open;
    nng_dialer dialer;
    nng_tls_config *tls; /* NULL unless tls+tcp:// */
    atomic_int pipe_id;  /* ID of the live connection, 0 = none (one dialer: one pipe) */
    struct ctx_slot *free_ctx; /* under client.mu */
    struct ctx_slot **all;     /* every slot opened, for close; under client.mu */
    size_t n_all, cap_all;
};

enum op_state { OP_IDLE, OP_SENDING, OP_RECEIVING, OP_HANDOFF, OP_BACKOFF };

/* One call in flight: its aio is reused from attempt to attempt. */
struct op {
    struct cairn_client *c;
    nng_aio *aio;       /* sends and receives */
    nng_aio *timer;     /* backoff sleeps: never the same aio (see call.c) */
    nng_msg *handed;    /* OP_HANDOFF: the reply, taken off the I/O thread (see call.c) */
    enum op_state state;
    struct op *next_free;
    struct op *prev_busy, *next_busy;

    uint8_t *req;       /* packed Request (owned) */
    size_t req_len;
    bool is_read;       /* may be retried after it was sent */
    int pinned;         /* endpoint index or -1 */
    nng_time deadline;  /* nng_clock() ms */
    struct endpoint *ep;  /* endpoint of the current attempt */
    struct ctx_slot *slot;
    uint64_t tried;     /* endpoints tried in this round */
    unsigned start;     /* round-robin start of this call */
    int backoff_ms;
    bool ever_sent;     /* some attempt handed the request to a connection */
    int last_rc;        /* error of the last failed attempt, 0 = none */
    struct cairn_error_detail detail;

    cairn_callback cb;
    void *cb_arg;
};

struct cairn_client {
    struct endpoint *eps;
    size_t n_eps;
    int dial_timeout_ms;
    int call_timeout_ms;
    size_t max_response_bytes;
    unsigned max_in_flight;
    bool inline_callbacks;

    pthread_mutex_t mu;
    pthread_cond_t idle_cv; /* signalled when in_flight drops to 0 while closing */
    char *auth_token;       /* under mu */
    char *auth_user, *auth_password; /* cairn_authenticate's credentials, for one re-authentication; under mu */
    unsigned rr;            /* next round-robin start, under mu */
    bool closing;
    unsigned in_flight;
    struct op *free_ops;
    struct op *busy_ops; /* ops in flight, doubly linked */
    struct op **all_ops; /* every op allocated, for close */
    size_t n_ops, cap_ops;
};

/* endpoint.c */
int endpoints_open(struct cairn_client *c, const struct cairn_config *cfg,
                   struct cairn_error_detail *err);
void endpoints_close(struct cairn_client *c);
struct endpoint *endpoint_pick(struct cairn_client *c, struct op *op);
int endpoint_take_ctx(struct cairn_client *c, struct endpoint *ep, struct ctx_slot **out);
void endpoint_give_ctx(struct endpoint *ep, struct ctx_slot *slot);

/* tls.c */
int tls_client_config(const struct cairn_tls *tls, const char *url_host,
                      nng_tls_config **out, struct cairn_error_detail *err);

/* call.c */
bool request_is_read(const Cairn__Request *req);

/* auth.c */
/* client_reauth: authenticate again with the kept credentials; 0 if a new token is in place, else negative. */
int client_reauth(struct cairn_client *c, const struct cairn_call_opts *opts);
/* client_forget_credentials_locked: free the kept credentials (under mu). */
void client_forget_credentials_locked(struct cairn_client *c);

/* client.c */
/* client_call_expect: cairn_call, then check the reply carries body want (else -CAIRN_E_MALFORMED); resp may be NULL. */
int client_call_expect(struct cairn_client *c, const Cairn__Request *req, Cairn__Response__BodyCase want,
                       const struct cairn_call_opts *opts, Cairn__Response **resp, struct cairn_error_detail *err);

void detail_set(struct cairn_error_detail *d, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
