/*
 * The lessor: leases in memory on every member, expired by the leader.
 * Grants, revokes and checkpoints go through Raft and reach the lessor as
 * applied entries (a node observer); keep-alives are served by the leader
 * alone, which also proposes the revocation of expired leases (at most
 * LEASE_REVOKES_PER_SEC, so a mass expiry never floods the log) and
 * checkpoints remaining TTLs so a leader change does not reset long leases.
 * A new leader extends every lease by the election timeout before it
 * expires any (etcd's promote).  Expiry times are this member's monotonic
 * clock: they are never replicated.
 */
#ifndef CAIRN_DAEMON_LEASE_H
#define CAIRN_DAEMON_LEASE_H

#include <stddef.h>

#include "daemon/config.h"
#include "daemon/node.h"
#include "daemon/rpc.h"

#define LEASE_REVOKES_PER_SEC 1000        /* etcd's leaseRevokeRate */
#define LEASE_MAX_TTL 9000000000LL        /* etcd's MaxLeaseTTL, seconds */
#define LEASE_CHECKPOINT_INTERVAL_MS 300000 /* etcd's default: every 5 minutes */

struct lessor;

/* lease_start: load the leases from the store, observe the node, start the expiry thread. */
int lease_start(const struct config *cfg, struct node *n, struct lessor **out);

/* lease_routes: the request types the lessor serves; returns how many were written (at most max). */
size_t lease_routes(struct lessor *l, struct rpc_route *out, size_t max);

/* lease_count: the leases this member holds now (for metrics).  NULL has none. */
size_t lease_count(struct lessor *l);

/* lease_stop: stop the expiry thread (before node_stop: it proposes through the node). */
void lease_stop(struct lessor *l);

/* lease_free: free l, after node_stop (the node calls the lessor until then). */
void lease_free(struct lessor *l);

#endif
