/*
 * Maintenance calls served from a member's own store: HashKV (so operators
 * and the corruption check can compare members) and Defragment (this
 * member's store gives its free pages back to the file system, in short
 * steps between applies).  Alarms are daemon/alarm.c's.
 */
#ifndef CAIRN_DAEMON_MAINT_H
#define CAIRN_DAEMON_MAINT_H

#include <stddef.h>

#include "daemon/rpc.h"

/* maint_routes: the request types served here; returns how many were written (at most max). */
size_t maint_routes(struct rpc_route *out, size_t max);

/*
 * Pages one defragment step gives back (1 MiB of 4 KiB pages): a step holds
 * the applier about 10 ms, 60 at worst on a loaded host (docs/performance.md,
 * "Defragment"); 4 MiB steps measured 35 to 250 ms for no gain in total time.
 */
#define MAINT_DEFRAG_STEP_PAGES 256

/* maint_defrag_routes: the Defragment route, run on n's node thread; returns how many were written. */
size_t maint_defrag_routes(struct node *n, struct rpc_route *out, size_t max);

#endif
