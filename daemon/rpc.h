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

/* rpc_start: listen and serve.  0, or a negative error with a message in err. */
int rpc_start(const struct config *cfg, struct node *n, struct reads *rs, struct wait_table *w, struct rpc **out,
              char *err, size_t errlen);

/* rpc_drain: answer new requests with STOPPED from now on (requests in progress finish). */
void rpc_drain(struct rpc *r);

/* rpc_busy: requests received and not yet answered. */
size_t rpc_busy(struct rpc *r);

/* rpc_reload_tls: re-read the client TLS files (SIGHUP); new connections use them. */
int rpc_reload_tls(struct rpc *r, char *err, size_t errlen);

/* rpc_stop: close the listeners and contexts and free r (after the node and reads stopped). */
void rpc_stop(struct rpc *r);

#endif
