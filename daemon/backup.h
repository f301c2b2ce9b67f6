/*
 * Snapshot save (the Snapshot call): a consistent copy of this member's
 * store, made on a reader thread with SQLite's online backup (the applier
 * keeps going) into <data-dir>/member/incoming/backup-<id>.db, then pulled by
 * the client in chunks by offset, with the copy's SHA-256 in the last one.
 * At most BACKUP_MAX_SESSIONS copies exist at once; one nobody asked for a
 * chunk of for BACKUP_IDLE_MS is deleted, and every copy goes at stop and at
 * start.  Restoring a copy is `cairnd restore` (daemon/restore.c).
 */
#ifndef CAIRN_DAEMON_BACKUP_H
#define CAIRN_DAEMON_BACKUP_H

#include <stddef.h>

#include "daemon/config.h"
#include "daemon/node.h"
#include "daemon/rpc.h"

#define BACKUP_CHUNK_BYTES (1u << 20) /* well under libcairn's 64 MiB reply limit; nng's own default is 1 MiB */
#define BACKUP_MAX_SESSIONS 2         /* each holds a copy of the store on disk */
#define BACKUP_IDLE_MS 60000

struct backups;

/* backup_start: remove copies a previous run left, start the expiry thread.  0 or a negative error. */
int backup_start(const struct config *cfg, struct node *n, struct backups **out);

/* backup_routes: the Snapshot route; returns how many were written (at most max). */
size_t backup_routes(struct backups *b, struct rpc_route *out, size_t max);

/* backup_stop: stop the expiry thread and delete every copy (after the read path stopped); frees b.  NULL is fine. */
void backup_stop(struct backups *b);

#endif
