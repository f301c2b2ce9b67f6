/*
 * Health endpoints and Prometheus metrics over HTTP, on the optional
 * --listen-metrics-urls, served by nng's own HTTP server.  /health (etcd
 * 3.4's JSON), /livez and /readyz (etcd 3.6's check lists, ?verbose,
 * ?exclude=), /metrics (Prometheus text format 0.0.4).  It reads what other
 * parts publish (node info and stats, peer stats, watch and lease counts,
 * the alarm set) and counts the client requests rpc.c answers; it changes
 * nothing.  Requests are answered on a thread of its own, so nng's threads
 * and the node thread never wait for a scrape.
 */
#ifndef CAIRN_DAEMON_METRICS_H
#define CAIRN_DAEMON_METRICS_H

#include <stddef.h>

#include "daemon/config.h"
#include "daemon/node.h"
#include "daemon/rpc.h"

struct metrics;
struct watch_hub;
struct lessor;
struct reads;

/* What the endpoints read besides the node.  Every field may be NULL. */
struct metrics_sources {
    struct watch_hub *watches;
    struct lessor *leases;
    struct reads *reads;
    /* 1 if an alarm of type (a cairn.AlarmType; 0 = any) is active, else 0.
     * Any thread, must not block.  NULL: no alarm is ever reported. */
    int (*alarm_active)(void *arg, int type);
    void *alarm_arg;
};

/*
 * metrics_start: serve the endpoints on every cfg->listen_metrics_urls URL
 * (tcp://host:port, plain HTTP).  cfg, n and what src points to must
 * outlive metrics_stop.  Returns 0 and *out, or a negative error with a
 * message in err (-EADDRINUSE and other -errno from binding, -ENOMEM).
 */
int metrics_start(const struct config *cfg, struct node *n, const struct metrics_sources *src, struct metrics **out,
                  char *err, size_t errlen);

/* metrics_hooks: set h->request_done and h->done_arg (nothing else of h), to count requests by method and code. */
void metrics_hooks(struct metrics *m, struct rpc_hooks *h);

/*
 * metrics_stop: answer what is queued with 503, stop the listeners and give
 * back the reader slot.  Call before node_stop and before the sources stop.
 * NULL is fine.
 */
void metrics_stop(struct metrics *m);

/*
 * metrics_free: after rpc_stop (request_done may be called until then).
 * The memory goes when nng has also dropped its last handler reference.
 * NULL is fine.
 */
void metrics_free(struct metrics *m);

#endif
