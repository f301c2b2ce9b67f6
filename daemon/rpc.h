/*
 * The client API server: one nng rep0 socket listening on every client URL
 * and on the local admin socket, with a fixed pool of contexts so many
 * requests are in flight at once.  It decodes and checks each Request,
 * sends writes through Raft (wait table, request timeout), reads through
 * daemon/reads.c, and answers every request with a header or an error.
 */
#ifndef CAIRN_DAEMON_RPC_H
#define CAIRN_DAEMON_RPC_H

#include <stddef.h>

#include "daemon/config.h"
#include "daemon/node.h"
#include "daemon/reads.h"
#include "daemon/wait.h"

struct rpc;
struct mvcc_reader;
struct Cairn__Request;
struct Cairn__Response;
struct Cairnint__RaftRequest;

/*
 * Routes: other parts of the daemon (watch, lease, cluster, maintenance)
 * serve request types of their own through these.  A handler gets the call
 * on an nng thread (it must not block) and must end it exactly once, now or
 * later from any thread, with rpc_call_reply, rpc_call_error,
 * rpc_call_propose or rpc_call_read (whose function then replies).  The
 * request has passed the size, decode and API checks (kvconv_validate).
 */
struct rpc_call;
typedef void (*rpc_handler_fn)(void *arg, struct rpc_call *call);
struct rpc_route {
    int body_case;          /* Cairn__Request__BodyCase */
    rpc_handler_fn fn;
    void *arg;
    int learner_ok;         /* also served on a learner */
};

/* rpc_routes_copy: copy n routes into out (room for max); returns how many fit.  For a part's *_routes(). */
size_t rpc_routes_copy(struct rpc_route *out, size_t max, const struct rpc_route *routes, size_t n);

/* The request (owned by the call until it ends). */
const struct Cairn__Request *rpc_call_request(const struct rpc_call *c);
/* "127.0.0.1:50123", "ipc:/path" or "?", for logs. */
const char *rpc_call_remote(const struct rpc_call *c);
/* The nng pipe (client connection) the request came on, for per-connection limits. */
uint32_t rpc_call_pipe(const struct rpc_call *c);
/* Reply with resp; its header is set here (revision 0: the member's current one). */
void rpc_call_reply(struct rpc_call *c, struct Cairn__Response *resp, int64_t revision);
/* Reply with an error: code is a positive CAIRN_E_ value; fmt NULL for the code's own text. */
void rpc_call_error(struct rpc_call *c, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/*
 * Replies sent on this thread between rpc_batch_begin and rpc_batch_end
 * (they nest): the first to a connection goes at once, the rest to it queue
 * behind it and leave together in one write at rpc_batch_end, and no thread
 * is woken for nng's own completion of any of them (nng_defer_begin).  For
 * a loop sending many replies; nothing in between may block.
 */
void rpc_batch_begin(void);
void rpc_batch_end(void);
/* Reply that the store cannot be read (err negative, as given to an rpc_read_fn). */
void rpc_call_unreadable(struct rpc_call *c, int err);
/* Send rr through Raft (id and proposer set here, its oneof borrowed); the reply is the applied result. */
void rpc_call_propose(struct rpc_call *c, struct Cairnint__RaftRequest *rr);
/*
 * For requests that reach Raft by another way than a RaftRequest (membership
 * changes): register a waiter with the request timeout and return its ID in
 * *id; whoever fires it (wait_fire with a packed Response, or an error code)
 * ends the call.  0, or a negative error after which the call is already
 * answered.
 */
int rpc_call_wait(struct rpc_call *c, uint64_t *id);
/* The authorize hook keeps the call (see struct rpc_hooks). */
#define RPC_TAKEN (-1)
/* Serve a call the authorize hook kept, as if the hook had returned 0. */
void rpc_call_continue(struct rpc_call *c);
/* Stamp every RaftRequest this call proposes with the user it runs as and the auth revision it was checked at
 * (user copied; at most 255 bytes). */
void rpc_call_set_auth(struct rpc_call *c, const char *user, uint64_t revision);
/* The stamp set by rpc_call_set_auth (user "" and revision 0 when none). */
const char *rpc_call_auth(const struct rpc_call *c, uint64_t *revision);
/* Run fn on a reader thread (after a ReadIndex round when linearizable); fn must reply.  r is NULL
 * when the store cannot be read (err says why). */
typedef void (*rpc_read_fn)(struct rpc_call *c, struct mvcc_reader *r, int err, void *arg);
void rpc_call_read(struct rpc_call *c, int linearizable, rpc_read_fn fn, void *arg);

/*
 * Hooks other parts give the server (all optional, called on nng threads,
 * must not block).
 */
struct rpc_hooks {
    /*
     * Before any request is proposed through Raft (Put, DeleteRange, Txn,
     * Compact, and what routes send with rpc_call_propose): 0 to go on, or a
     * positive CAIRN_E_ code, with a message for people in msg, to refuse it.
     * The quota and the alarms (the capped applier's admission side) live here.
     */
    int (*admit)(void *arg, const struct Cairn__Request *req, const struct Cairnint__RaftRequest *rr,
                 size_t packed_bytes, char *msg, size_t msglen); /* packed_bytes: rr's size, an upper bound */
    void *admit_arg;
    /*
     * After a request passed the decode and API checks, before it is served
     * (routes included): 0 to go on, a positive CAIRN_E_ code (message in
     * msg) to refuse it, or RPC_TAKEN: the hook keeps the call and later,
     * from any thread, continues it with rpc_call_continue or ends it with
     * rpc_call_error.  Auth checks tokens and permissions here (daemon/auth.c).
     */
    int (*authorize)(void *arg, struct rpc_call *c, char *msg, size_t msglen);
    void *authorize_arg;
    /* Every request answered: its body case, the error code sent (0: success), how long it took. */
    void (*request_done)(void *arg, int body_case, int code, int64_t took_ns);
    void *done_arg;
};

/* rpc_start: listen and serve, with extra routes (copied) and hooks (copied; NULL for none).  0, or a
 * negative error with a message in err. */
int rpc_start(const struct config *cfg, struct node *n, struct reads *rs, struct wait_table *w,
              const struct rpc_route *routes, size_t n_routes, const struct rpc_hooks *hooks, struct rpc **out,
              char *err, size_t errlen);

/* rpc_drain: answer new requests with STOPPED from now on (requests in progress finish); from now on reply
 * headers carry the node's state as it was here, since the node is stopped and freed before rpc_stop. */
void rpc_drain(struct rpc *r);

/* rpc_busy: requests received and not yet answered. */
size_t rpc_busy(struct rpc *r);

/* rpc_reload_tls: re-read the client TLS files (SIGHUP); new connections use them. */
int rpc_reload_tls(struct rpc *r, char *err, size_t errlen);

/* rpc_stop: close the listeners and contexts and free r (after the node and reads stopped). */
void rpc_stop(struct rpc *r);

#endif
