/*
 * proto/fastpack: pack an envelope message (cairn.Request, cairn.Response,
 * cairnint.RaftRequest: a few plain fields and a oneof of some forty message
 * bodies, one of them set) into the bytes protobuf-c writes, at a fraction of
 * the cost.
 *
 * protobuf-c's get_packed_size and pack each run its full field routine for
 * every field of the descriptor, set or not, and pack sizes every nested
 * message again to write its length.  For a point read's reply that was a
 * sixth of the member's instructions (docs/performance.md, session 10).
 * Here a oneof costs a read of its case and a lookup of that member (a
 * layout of each descriptor is built once), and fastpack_size records the
 * size of each nested message in the plan, so fastpack_pack writes the
 * lengths without sizing anything again; the nested messages themselves are
 * still packed by protobuf-c.
 *
 * Only proto3 plain fields (message, string, bytes, integer, bool and enum
 * types) and oneof members are handled here.  A message with any other kind
 * of field (repeated, sint, fixed, floating point), unknown fields, or more
 * nested messages than a plan holds is sized and packed by protobuf-c
 * instead: the result is always protobuf-c's bytes (test_fastpack compares
 * them for every body of the three envelopes).
 */
#ifndef CAIRN_PROTO_FASTPACK_H
#define CAIRN_PROTO_FASTPACK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#define FASTPACK_MAX_PARTS 8

struct fastpack_layout; /* private to fastpack.c */

/* What fastpack_size learned about a message, for fastpack_pack. */
struct fastpack_plan {
    size_t size;                          /* the packed size */
    bool fallback;                        /* protobuf-c packs it */
    const struct fastpack_layout *layout; /* the descriptor's, or NULL: field by field */
    size_t n_parts;                       /* nested messages set, in field order */
    size_t part[FASTPACK_MAX_PARTS];      /* each one's packed size */
};

/* fastpack_size: the packed size of m (protobuf_c_message_get_packed_size's
 * answer), with the plan fastpack_pack needs. */
size_t fastpack_size(const ProtobufCMessage *m, struct fastpack_plan *plan);

/* fastpack_pack: pack m into out with the plan fastpack_size made for it;
 * returns the length written.  m's nested messages must not have changed
 * since; its plain fields may have, if out has room for them (rpc.c sets a
 * raft request's ID after sizing it, with room for the largest ID). */
size_t fastpack_pack(const ProtobufCMessage *m, const struct fastpack_plan *plan, uint8_t *out);

/* fastpack_dup: m packed into a new malloc'ed buffer of *len bytes (at least
 * one byte is allocated, so an empty message is not NULL); NULL if out of
 * memory. */
void *fastpack_dup(const ProtobufCMessage *m, size_t *len);

#endif
