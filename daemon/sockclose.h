/*
 * sockclose: nng_close that cannot hold the member up forever.
 *
 * nng 1.5.2's nng_close can wait forever.  The cause seen here (a pipe
 * closed while its transport was between two parts of a message, after
 * which nng's reaper waits for an aio nobody will complete) is fixed in the
 * nng we build (third_party/nng/closed-pipe.patch; docs/reliability.md,
 * "nng_close never returns").  Others are reported upstream for 1.5.2
 * (nanomsg/nng#1543, #1813), so closes stay bounded as a second line.
 *
 * A close that takes longer than SOCK_CLOSE_MS is logged and abandoned: its
 * thread stays blocked, and the caller must leak what the socket's
 * callbacks may still use.  cairn_nng_close_abandoned_total counts them; a
 * member with a stuck reaper frees no more nng pipes until it restarts.
 */
#ifndef CAIRN_DAEMON_SOCKCLOSE_H
#define CAIRN_DAEMON_SOCKCLOSE_H

#include <stdbool.h>

#include <nng/nng.h>

#define SOCK_CLOSE_MS 2000

/* sock_close: close s within SOCK_CLOSE_MS; true if it closed, false if the
 * close was abandoned (logged with what, e.g. "client", as the socket's name). */
bool sock_close(nng_socket s, const char *what);

/* sock_close_abandoned: how many closes this process abandoned (for metrics). */
unsigned sock_close_abandoned(void);

#endif
