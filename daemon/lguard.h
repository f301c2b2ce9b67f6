/*
 * lguard: keeps listeners accepting: the client server's ipc listeners, and
 * the peer listeners.
 *
 * nng 1.5.2 has a bug (nanomsg/nng#1518) that leaves a listener open but
 * no longer handing connections to its socket: a client that hangs up
 * before the SP handshake stops the listener's accept loop (over ipc, one
 * such client is enough).  The nng that Cairn builds has it fixed
 * (third_party/nng/handshake-failure.patch).  Before that fix and the one
 * for nng's reaper (closed-pipe.patch), a peer TLS listener restarted for
 * renewed certificates was also seen to stop taking connections under load
 * (test_systemd_cluster's reload test, about one run in five with the CPUs
 * busy); which bug that was is not known.  The guard stays as a second line
 * against wedges nobody has found yet: a listener that stops costs every
 * client of the member, and a probe costs about a millisecond.
 *
 * The guard cannot see inside nng, so it tests the path a client takes:
 * every few seconds it dials each watched listener (with the owner's
 * protocol's peer, and a TLS client configuration for TLS listeners) and
 * waits for the server socket to report the new pipe (NNG_PIPE_EV_ADD_POST
 * from that listener).  When no pipe arrives, the listener is wedged: the
 * guard logs it and asks its owner to restart that listener.  A restart
 * drops the connections that listener held; their dialers reconnect.
 */
#ifndef CAIRN_DAEMON_LGUARD_H
#define CAIRN_DAEMON_LGUARD_H

#include <stddef.h>

#include <nng/nng.h>
#include <nng/supplemental/tls/tls.h>

#define LGUARD_MAX 32

struct lguard;

/* Restart listener i of the owner (close it, listen again on the same URL,
 * then call lguard_set with the new listener).  0 or a negative errno with
 * a message in err. */
typedef int (*lguard_restart_fn)(void *arg, size_t i, char *err, size_t errlen);

/*
 * lguard_start: watch the listeners of sock that are later given to
 * lguard_set.  open_probe opens a socket of the protocol sock talks to
 * (nng_req0_open for a rep0 server, nng_push0_open for pull0).  what names
 * the listeners in messages ("client", "peer").  interval_ms between rounds;
 * wait_ms is how long a probe's pipe may take to reach the socket before the
 * listener counts as wedged.  Installs sock's NNG_PIPE_EV_ADD_POST callback.
 * Returns 0 or a negative errno.
 */
int lguard_start(nng_socket sock, int (*open_probe)(nng_socket *), const char *what, int interval_ms, int wait_ms,
                 lguard_restart_fn restart, void *arg, struct lguard **out);

/* lguard_set: slot i (below LGUARD_MAX) is listener l on url, probed with
 * probe_tls (a client configuration the listener accepts; the guard takes
 * its own hold) when url is tls+tcp://.  Call again after a restart. */
void lguard_set(struct lguard *g, size_t i, const char *url, nng_listener l, nng_tls_config *probe_tls);

/* lguard_restarts: how many wedged listeners were restarted (for tests and metrics). */
unsigned lguard_restarts(const struct lguard *g);

/* lguard_stop: stop the thread (before the owner closes its listeners; no
 * restart runs after it returns).  lguard_free: free g, once the socket is
 * closed (nng may still be running the pipe callback until then).  NULL is fine. */
void lguard_stop(struct lguard *g);
void lguard_free(struct lguard *g);

#endif
