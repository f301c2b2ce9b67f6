/*
 * peer: the member-to-member transport.  One nng pull0 socket listens on
 * every peer URL; each known member gets a push0 socket for Raft messages
 * and snapshot acks, and a second push0 socket for snapshot streams so a
 * megabyte chunk never sits in front of a heartbeat.  Everything is
 * PeerEnvelope (proto/peer.proto) framed, bounded and non-blocking.  It
 * knows the protobuf types and nothing of Raft's rules or of storage: the
 * node converts (daemon/raftmsg.h) and decides.
 */
#ifndef CAIRN_DAEMON_PEER_H
#define CAIRN_DAEMON_PEER_H

#include <stddef.h>
#include <stdint.h>

#include "base/errors.h"
#include "base/histogram.h"
#include "daemon/config.h"
#include "proto/peer.pb-c.h"

struct peer_transport;

/* Mutual TLS for tls+tcp:// URLs.  All NULL or "" = plain tcp only.
 * cert_file and key_file may name the same file (certificate and key in one
 * PEM).  Both sides require a certificate from ca_file's CA; every dialer
 * also checks the peer's certificate names the host of the URL it dials. */
struct peer_tls {
    const char *cert_file, *key_file, *ca_file;
};

/* Called on nng or transport threads: none may block (while on_messages
 * runs, nothing else is received; over tcp:// it runs on nng's poller
 * thread, which then reads nothing else either: see
 * third_party/nng/tcp-inline-read.patch).  They may call peer_send and
 * peer_stats; never peer_add, peer_remove, peer_reload_tls or peer_stop. */
struct peer_callbacks {
    void *arg;
    /* Raft messages from member `from` (envelope checked: our cluster, to ==
     * us or 0, a known sender).  The messages themselves are not checked
     * (raftmsg_from_pb does that; it is also the node's job to check each
     * message's from against `from`).  Ownership of batch passes to the
     * callee: cairnpeer__message_batch__free_unpacked(batch, NULL). */
    void (*on_messages)(void *arg, uint64_t from, Cairnpeer__MessageBatch *batch);
    /* A whole snapshot file from `from` arrived and verified (every chunk's
     * crc32c, total size, sha256) and its data was fsync'd (its directory
     * entry was not).  path is a file inside opts.incoming_dir
     * (recv-<from>-<term>-<index>.snap, in hex; it is assembled as .part),
     * now owned by the callee (it renames or unlinks it); the string is
     * valid during the call only.  msg is the MsgSnap that came with it (ownership passes:
     * cairnpeer__message__free_unpacked(msg, NULL)); peer.c checked that it
     * is a MSG_SNAP whose snapshot index and term are those of the stream. */
    void (*on_snapshot)(void *arg, uint64_t from, Cairnpeer__Message *msg, const char *path);
    /* The stream started by peer_send_snapshot to `to` ended: ok != 0 iff
     * the receiver acknowledged the whole file.  Exactly once per
     * peer_send_snapshot that returned 0 (peer_remove and peer_stop end a
     * stream with ok = 0). */
    void (*on_snapshot_done)(void *arg, uint64_t to, int ok);
};

struct peer_options {
    uint64_t cluster_id, self_id;
    const struct config_urls *listen;   /* peer listen URLs (tcp://, tls+tcp://, ipc://); port 0 picks one */
    struct peer_tls tls;
    const char *incoming_dir;           /* received snapshot files are assembled here (exists) */
    size_t max_queue;                   /* per-peer queued outgoing envelopes before dropping; 0 = 4096 */
    size_t max_recv_bytes;              /* largest envelope accepted; 0 = 64 MiB */
    size_t chunk_bytes;                 /* snapshot chunk size; 0 = 1 MiB */
    uint32_t snapshot_timeout_ms;       /* a stream without progress this long fails; 0 = 30 s */
};

/*
 * peer_start: listen on every o->listen URL and start the transport.  Stale
 * partial snapshot files ("*.part") in incoming_dir are removed.  Copies
 * what it keeps of o.  Returns 0 and *out, or a negative error with a
 * message in err: -CAIRN_E_CONFIG (bad URL, tls+tcp:// without TLS files,
 * unreadable TLS files, chunk_bytes not below max_recv_bytes), -EADDRINUSE
 * and other -errno from binding, -ENOMEM.
 */
int peer_start(const struct peer_options *o, const struct peer_callbacks *cb, struct peer_transport **out,
               char *err, size_t errlen);

/*
 * peer_listen_url: the i-th listen URL as bound (the real port when the
 * configured one was 0), written to buf.  Returns 0, -ENOENT past the last
 * one, -ENOSPC if buf is too small.
 */
int peer_listen_url(struct peer_transport *t, size_t i, char *buf, size_t len);

/*
 * peer_add: add member id with its peer URLs (tcp://, tls+tcp://, ipc://),
 * or replace the URLs of a known one (its queue and any snapshot stream
 * survive; its connections are re-dialed unless the URLs are unchanged).
 * Dials in the background and reconnects with backoff.  Adding self_id is
 * a no-op returning 0, so the node may pass every member.  Returns 0,
 * -EINVAL (id 0, no URLs, more than CONFIG_MAX_URLS), -CAIRN_E_CONFIG (a
 * URL nng refuses, tls+tcp:// without TLS), -ENOSPC (too many peers), -ENOMEM.
 */
int peer_add(struct peer_transport *t, uint64_t id, const char *const *urls, size_t n_urls);

/* peer_remove: forget member id; its queue is dropped and its snapshot
 * stream, if any, ends with on_snapshot_done(ok = 0).  0 or -ENOENT. */
int peer_remove(struct peer_transport *t, uint64_t id);

/*
 * peer_send: queue batch for `to`, packed into PeerEnvelope{cluster_id,
 * from = self, to}.  Never blocks.  Returns 0 when queued, -EAGAIN when the
 * peer's queue is full (message dropped; the node reports it unreachable),
 * -ENOENT for an unknown peer, -EMSGSIZE for an envelope over
 * max_recv_bytes, -ENOMEM.  A queue that makes no progress for 2 s (the
 * peer is down) is emptied, so a reconnecting peer is not fed stale
 * messages.  Thread-safe (the node thread is the intended caller; acks and
 * chunks from the transport's own thread share the queue).  batch stays
 * the caller's.
 */
int peer_send(struct peer_transport *t, uint64_t to, const Cairnpeer__MessageBatch *batch);

/*
 * peer_send_snapshot: stream the file at db_path to `to` in SnapshotChunks
 * of chunk_bytes (the first carries msgsnap, the last the file's sha256),
 * over the peer's stream socket, at most 4 chunks ahead of the receiver's
 * acks.  The caller keeps the file unchanged until on_snapshot_done.
 * Returns 0 (then exactly one on_snapshot_done follows), or, with no
 * callback: -ENOENT (unknown peer), -EBUSY (a stream to `to` is running),
 * -EINVAL (msgsnap is not a MSG_SNAP with metadata), -errno from opening
 * the file, -ENOMEM.
 */
int peer_send_snapshot(struct peer_transport *t, uint64_t to, const Cairnpeer__Message *msgsnap,
                       const char *db_path);

/*
 * peer_reload_tls: re-read the TLS files (SIGHUP).  If their contents
 * changed, new connections use them: listeners are restarted on the same
 * addresses (an inherited socket is adopted again, see
 * daemon/activation.h) and dialers re-dial, which may cost a snapshot
 * stream in flight (it fails and Raft retries); unchanged files restart
 * nothing.  On an error (unreadable or invalid files) nothing changes.
 * Returns 0 or -CAIRN_E_CONFIG with a message in err; -errno if a listener
 * could not be restarted (that one is then down).
 */
int peer_reload_tls(struct peer_transport *t, const struct peer_tls *tls, char *err, size_t errlen);

struct peer_stats {
    uint64_t id;
    int connected;          /* the Raft message connection is up (SP handshake done) */
    int stream_connected;   /* the snapshot stream connection is up (dials the first URL only) */
    uint64_t sent;          /* envelopes handed to the connection */
    uint64_t dropped;       /* envelopes dropped: queue full, stalled queue emptied, too big */
    uint64_t recv_errors;   /* envelopes from this member refused (wrong `to`, bad chunks, ...) */
    uint64_t bytes_sent;    /* envelope bytes handed to either connection */
    uint64_t bytes_received; /* envelope bytes accepted from this member */
    uint64_t renewed;       /* sockets replaced: a lost connection, a stall while connected, a TLS reload (peer.c, struct sendq) */
    /* Heartbeat to heartbeat response, queueing included (only a leader
     * sends heartbeats, so only a leader's peers have samples). */
    struct histogram rtt;
};

/* peer_stats: up to max peers into out; returns how many there are in all. */
size_t peer_stats(struct peer_transport *t, struct peer_stats *out, size_t max);

/*
 * peer_stop: stop everything and free t.  No callback runs after it
 * returns; streams in flight end with on_snapshot_done(ok = 0) before, and
 * partial incoming files are removed.  Safe to call with connections,
 * sends and streams in any state.  t may be NULL.
 */
void peer_stop(struct peer_transport *t);

#endif
