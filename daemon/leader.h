/*
 * Move-leader (the MoveLeader call): the leader hands its leadership to a
 * started voting member through Raft's leadership transfer and answers once
 * the new leader is in place, or TIMEOUT after two and a half election
 * timeouts (Raft's attempt lasts one; a lost attempt is retried once).
 * Waiting is done with nng sleeps, so no thread is held while it goes on.
 */
#ifndef CAIRN_DAEMON_LEADER_H
#define CAIRN_DAEMON_LEADER_H

#include <stddef.h>

#include "daemon/config.h"
#include "daemon/node.h"
#include "daemon/rpc.h"

struct leader_mover;

/* leader_start: 0 or -ENOMEM. */
int leader_start(const struct config *cfg, struct node *n, struct leader_mover **out);

/* leader_routes: the MoveLeader route; returns how many were written (at most max). */
size_t leader_routes(struct leader_mover *lm, struct rpc_route *out, size_t max);

/* leader_stop: answer the moves still waiting with STOPPED, wait for them, free lm (before rpc_stop).  NULL is fine. */
void leader_stop(struct leader_mover *lm);

#endif
