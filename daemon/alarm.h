/*
 * Alarms, the quota and the corruption check (etcd's alarm store, quota and
 * capped applier).  The set of active alarms is one store record (ns "alarm",
 * name "set", a packed cairn.AlarmResponse) changed only through the log, so
 * every member holds the same set; this part keeps a copy in memory, refuses
 * writes before proposing them (rpc admit hook) and, authoritatively, when
 * they are applied (node before_apply), and runs the periodic HashKV
 * comparison that raises CORRUPT.  It does not defragment (daemon/maint.c).
 */
#ifndef CAIRN_DAEMON_ALARM_H
#define CAIRN_DAEMON_ALARM_H

#include <stddef.h>
#include <stdint.h>

#include "daemon/config.h"
#include "daemon/node.h"
#include "daemon/rpc.h"

struct alarms;
struct mvcc_reader;

/* The record holding the active alarms. */
#define ALARM_RECORD_NS "alarm"
#define ALARM_RECORD_NAME "set"

/* alarm_start: load the set from the store, observe the node, start the corruption checker.  0 or an error. */
int alarm_start(const struct config *cfg, struct node *n, struct alarms **out);

/* alarm_routes: the request types served here (Alarm); returns how many were written (at most max). */
size_t alarm_routes(struct alarms *a, struct rpc_route *out, size_t max);

/* alarm_hooks: set h->admit and h->admit_arg (nothing else of h). */
void alarm_hooks(struct alarms *a, struct rpc_hooks *h);

/*
 * alarm_active: 1 if an alarm of type (a cairn.AlarmType; 0 = any) is active
 * on any member, else 0.  Any thread; a NULL a has none.
 */
int alarm_active(struct alarms *a, int type);

/*
 * alarm_describe: the active alarms as read from the store through r, one
 * sentence each for people ("NOSPACE alarm on member 8e9e05c52164694d: ..."),
 * into out (up to max strings, each malloc'd: the caller frees them).
 * Returns how many were written, or a negative error.
 */
int alarm_describe(struct mvcc_reader *r, char **out, size_t max);

/* alarm_stop: stop the checker thread (before node_stop: it proposes through the node). */
void alarm_stop(struct alarms *a);

/* alarm_free: free a, after node_stop (the node calls it until then).  NULL is fine. */
void alarm_free(struct alarms *a);

#endif
