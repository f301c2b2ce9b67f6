/*
 * raftmsg: Raft's plain C messages (raft/raft.h) to and from the protobuf-c
 * types of proto/peer.proto.  It owns no state; converted messages point
 * into the original wherever they can, and into a caller-held raftmsg_buf
 * for the rest.  Input from the network is untrusted: raftmsg_from_pb
 * checks everything raft_step() would otherwise have to.  It does not
 * send, batch or frame anything: that is daemon/peer.c.
 */
#ifndef CAIRN_DAEMON_RAFTMSG_H
#define CAIRN_DAEMON_RAFTMSG_H

#include <stddef.h>
#include <stdint.h>

#include "proto/peer.pb-c.h"
#include "raft/raft.h"

/* Most entries one received message may carry (an empty entry still costs
 * the sender a few bytes, so a 64 MiB envelope could otherwise ask for
 * millions); a leader sends far fewer (max_msg_bytes per MsgApp). */
#define RAFTMSG_MAX_ENTRIES (1u << 20)
/* Largest context accepted (ReadIndex request IDs, "transfer"). */
#define RAFTMSG_MAX_CONTEXT 65536u

/*
 * Scratch memory for one conversion, in either direction.  Start from
 * RAFTMSG_BUF_INIT (all zero).  A buf may be reused for the next
 * conversion without a release (its memory is kept and grown only when a
 * message has more entries than any before); that ends the validity of
 * the previous conversion's output.  The converted message points into
 * the buf itself (snapshot metadata), so do not move or copy a buf while
 * its output is in use.  At most one malloc per conversion, none for a
 * message without entries (heartbeats, votes, responses).
 */
struct raftmsg_buf {
    void *mem;   /* entry arrays of the last conversion (owned) */
    size_t cap;  /* bytes at mem */
    Cairnpeer__SnapshotMetadata snap_pb; /* to_pb: pb->snapshot points here */
    Cairnpeer__ConfState conf_pb;
    struct raft_snapshot_meta snap;      /* from_pb: m->snapshot points here */
};
#define RAFTMSG_BUF_INIT {0}

/*
 * raftmsg_to_pb: fill *pb (initialised here; any previous content is
 * forgotten, not freed) from m.  pb then points into m (entry data,
 * context, the snapshot's voter lists) and into *b: keep both unchanged
 * until pb has been packed.  Never free pb with protobuf-c's free_unpacked.
 * Returns 0, -EINVAL for a message raft could not have produced (unknown
 * type or entry type, entry data over 4 GiB), -ENOMEM.
 */
int raftmsg_to_pb(const struct raft_message *m, Cairnpeer__Message *pb, struct raftmsg_buf *b);

/*
 * raftmsg_from_pb: fill *m from a received message.  m points into pb
 * (entry data, context) and into *b; keep both until raft_step() has
 * returned (raft copies what it keeps).  Returns 0, -CAIRN_E_MALFORMED for
 * anything a correct peer never sends (unknown or local-only type, MSG_SNAP
 * without metadata, an unknown entry type, a member ID 0 or a repeated one
 * in a configuration, more than RAFT_MAX_MEMBERS voters or learners, more
 * than RAFTMSG_MAX_ENTRIES entries, a context over RAFTMSG_MAX_CONTEXT),
 * -ENOMEM.  It does not check m->from against the envelope's sender: the
 * caller does (a member must not speak for another).
 */
int raftmsg_from_pb(const Cairnpeer__Message *pb, struct raft_message *m, struct raftmsg_buf *b);

/* raftmsg_buf_release: free b's memory; b is RAFTMSG_BUF_INIT again. */
void raftmsg_buf_release(struct raftmsg_buf *b);

/* raftmsg_type_to_pb / raftmsg_type_from_pb: the explicit type mapping
 * (the two enums differ for TIMEOUT_NOW and TRANSFER_LEADER).  0 (MSG_UNKNOWN
 * / no raft type) for a value without a counterpart. */
Cairnpeer__MessageType raftmsg_type_to_pb(uint32_t raft_type);
uint32_t raftmsg_type_from_pb(Cairnpeer__MessageType pb_type);

/*
 * raftmsg_conf_encode: cs as ConfState protobuf bytes in *out (malloc'd,
 * the caller frees), length *len.  Returns 0, -EINVAL (more than
 * RAFT_MAX_MEMBERS in a list), -ENOMEM.
 */
int raftmsg_conf_encode(const struct raft_conf_state *cs, uint8_t **out, size_t *len);

/*
 * raftmsg_conf_decode: the reverse, with the same checks as a received
 * snapshot's configuration.  Returns 0 or -CAIRN_E_MALFORMED (then *cs is
 * zeroed).
 */
int raftmsg_conf_decode(const void *data, size_t len, struct raft_conf_state *cs);

#endif
