/*
 * daemon/watch: the member's watches, etcd's watch API as a long poll
 * (cairn.proto: WatchCreate, WatchNext, WatchCancel, WatchProgress).
 *
 * Watches are per member, not replicated: a watch lives only on the member
 * that created it and dies with it (a restart, a kill, 60 s without a poll).
 * A client keeps its place with the progress_revision of every WatchNext
 * reply and resumes on any member with start_revision = progress_revision
 * + 1; every member applies the same revisions, so it continues exactly.
 *
 * Inside (docs/daemon.md, "Watch"): the node's applied observer copies each
 * apply batch's events into a bounded ring; a dispatcher thread feeds them to
 * the "synced" watchers; watchers behind (a start revision in the past, a
 * full queue, a batch the ring had to drop, a snapshot installed) are
 * "unsynced" and a catch-up thread reads their events from the store, then
 * joins them to the synced set.  A WatchNext parks its request until events
 * come or its timeout passes; at most WATCH_MAX_PARKED are parked at once, so
 * watches never take every one of rpc.c's 256 request contexts.
 */
#ifndef CAIRN_DAEMON_WATCH_H
#define CAIRN_DAEMON_WATCH_H

#include <stddef.h>
#include <stdint.h>

#include "daemon/config.h"
#include "daemon/node.h"
#include "daemon/rpc.h"

/* WatchNext requests parked at once: rpc.c's 256 contexts minus 64 kept for everything else. */
#define WATCH_MAX_PARKED 192

struct watch_hub;

/*
 * watch_start: make the hub, observe n's apply batches and start its two
 * threads (dispatcher, catch-up).  Call after node_start and before
 * rpc_start, then give watch_routes to rpc_start.  cfg and n must outlive the
 * hub.  Returns 0 and *out, or a negative error with a message in err.
 */
int watch_start(const struct config *cfg, struct node *n, struct watch_hub **out, char *err, size_t errlen);

/* watch_routes: the routes serving the four watch request types (owned by h); *n gets their count. */
const struct rpc_route *watch_routes(struct watch_hub *h, size_t *n);

/*
 * watch_stop: answer every parked WatchNext with STOPPED (the client resumes
 * elsewhere), refuse new watch requests, stop the threads and give back the
 * reader slot.  Call before reads_stop and node_stop.  NULL is fine.
 */
void watch_stop(struct watch_hub *h);

/* watch_free: free h and every watch; after node_stop and rpc_stop (the observer and routes are gone).  NULL is fine. */
void watch_free(struct watch_hub *h);

/* For Status and metrics. */
struct watch_stats {
    uint64_t watchers, synced, unsynced, parked;
    uint64_t queued_bytes;        /* charged to watchers' queues */
    uint64_t events_delivered;    /* events sent in WatchNext replies since start */
    uint64_t resyncs;             /* synced watchers sent back to catching up */
    uint64_t lost_batches;        /* apply batches the ring could not keep while watched (watchers read them from the store) */
    uint64_t dispatcher_wakeups;  /* times the dispatcher thread woke: batches to deliver, deadlines, idle checks */
};
void watch_get_stats(struct watch_hub *h, struct watch_stats *st);

#endif
