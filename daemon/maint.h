/*
 * Maintenance calls served from a member's own store: HashKV (so operators
 * and the corruption check can compare members).  Alarms, defragment,
 * snapshot save and move-leader join it with the rest of issue 7.
 */
#ifndef CAIRN_DAEMON_MAINT_H
#define CAIRN_DAEMON_MAINT_H

#include <stddef.h>

#include "daemon/rpc.h"

/* maint_routes: the request types served here; returns how many were written (at most max). */
size_t maint_routes(struct rpc_route *out, size_t max);

#endif
