/*
 * Auth: users, roles and key-range permissions (etcd v3's auth store).  The
 * store is one record (ns "auth", name "store") changed only by committed
 * entries (before_apply), so every member holds the same users and roles
 * across restarts, snapshots and `cairnd restore`.  This part checks every
 * request before it is proposed or read (rpc authorize hook) and again in
 * the apply path when the auth store changed in between; hashes passwords
 * (PBKDF2) and checks them on its own worker thread, never the node's;
 * keeps the tokens every member accepts (granted through the log, by hash
 * only) and rate-limits failed authentications per client address.
 * docs/auth.md explains the design.
 */
#ifndef CAIRN_DAEMON_AUTH_H
#define CAIRN_DAEMON_AUTH_H

#include <stddef.h>

#include "daemon/config.h"
#include "daemon/node.h"
#include "daemon/rpc.h"
#include "daemon/wait.h"

struct auth;

/* auth_start: load the store, observe the node, start the worker.  waits: the table write requests wait in.
 * 0 or a negative error. */
int auth_start(const struct config *cfg, struct node *n, struct wait_table *waits, struct auth **out);

/* auth_routes: the Auth*, User* and Role* requests; returns how many routes were written (at most max). */
size_t auth_routes(struct auth *a, struct rpc_route *out, size_t max);

/* auth_hooks: set h->authorize and h->authorize_arg (nothing else of h). */
void auth_hooks(struct auth *a, struct rpc_hooks *h);

/* auth_stop: stop the worker (before node_stop: it proposes); calls waiting for it are answered STOPPED. */
void auth_stop(struct auth *a);

/* auth_free: free a after node_stop.  NULL is fine. */
void auth_free(struct auth *a);

#endif
