/*
 * daemon/kvconv: the translation between the client protobufs (cairn.proto,
 * internal.proto) and the state machine's C interface (storage/mvcc.h), and
 * etcd's API-layer checks on client requests before they are proposed or
 * read.  Pure functions: no I/O, no locks, no logging.  Everything built for
 * one request or response lives in one bump arena, freed at once; keys and
 * values are borrowed, not copied, from the protobuf or mvcc result (error
 * replies copy the little they quote).
 */
#ifndef CAIRN_DAEMON_KVCONV_H
#define CAIRN_DAEMON_KVCONV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/arena.h"
#include "proto/cairn.pb-c.h"
#include "proto/internal.pb-c.h"
#include "storage/mvcc.h"

/* --- arena ------------------------------------------------------------------ */

/* Bytes served from inside the arena itself before the first malloc: enough
 * for the reply to a point read or a put, so those allocate nothing. */
#define KVCONV_ARENA_INLINE 1024

/*
 * A base/arena.h bump arena for one conversion, with its first kilobyte
 * inline.  Put it anywhere (the stack is fine), kvconv_arena_init it, let
 * kvconv allocate into it, free it once the reply is packed.  Blocks grow
 * geometrically (64 KiB up to 4 MiB); an allocation bigger than half the
 * next block gets a block of its own, so a 100k-key range costs a few
 * mallocs.  Not thread-safe.  Do not copy or move an initialised arena: it
 * points into itself.
 */
struct kvconv_arena {
    struct arena a;
    union {
        max_align_t align_;
        char bytes[KVCONV_ARENA_INLINE];
    } inline_;
};

/* kvconv_arena_init: an empty arena (allocates nothing). */
void kvconv_arena_init(struct kvconv_arena *a);

/* kvconv_arena_free: free every block; every pointer into the arena dies.
 * The arena is left empty and may be used again.  Safe to call twice. */
void kvconv_arena_free(struct kvconv_arena *a);

/* kvconv_arena_alloc: size bytes aligned for any type, not zeroed; NULL if out
 * of memory (or size overflows).  Freed with the arena. */
void *kvconv_arena_alloc(struct kvconv_arena *a, size_t size);

/* kvconv_arena_strdup: a NUL-terminated copy of s (NULL: ""), in the arena; NULL if out of memory. */
char *kvconv_arena_strdup(struct kvconv_arena *a, const char *s);

/* --- decoding client requests ------------------------------------------------ */

/* Deepest nesting of messages a client request may have: protobuf-c recurses
 * once per level with ~1.6 KiB of stack, so a 35 KB request of nested txns
 * would overflow a thread's 8 MiB.  256 levels are 127 nested txns, more than
 * the default --max-txn-ops lets through anyway. */
#define KVCONV_MAX_DEPTH 256

/*
 * kvconv_request_unpack: decode a client's cairn.Request into arena a (it
 * lives until kvconv_arena_free(a); never cairn__request__free_unpacked it),
 * or with malloc if a is NULL (free it with cairn__request__free_unpacked).
 * The arena saves protobuf-c's walk of the message to free it and a malloc
 * per field: about 2k instructions of a point get's 31k (callgrind).  The
 * wire format is checked strictly first:
 * no message nested deeper than KVCONV_MAX_DEPTH, no field number 0 and no
 * varint over 10 bytes (protobuf-c accepts both in unknown fields, keeps
 * them, and then refuses its own repacking: a write carrying one would become
 * a Raft entry no member can decode).  NULL if the bytes are not such a
 * request, with the reason in why (whylen bytes, may be NULL/0).
 */
Cairn__Request *kvconv_request_unpack(const void *data, size_t len, struct kvconv_arena *a, char *why,
                                      size_t whylen);

/*
 * kvconv_entry_unpack: the same strict decoding for a committed Raft entry's
 * cairnint.RaftRequest, into arena a like a request (with a NULL: malloc'ed,
 * freed with cairnint__raft_request__free_unpacked).  Entries come from
 * other members and from the WAL, not only from this member's checked
 * clients: a deeply nested one must not overflow the applier's stack.  NULL
 * if the bytes are not such a request (why as above).
 */
Cairnint__RaftRequest *kvconv_entry_unpack(const void *data, size_t len, struct kvconv_arena *a, char *why,
                                           size_t whylen);

/* --- checks on client requests -------------------------------------------- */

struct kvconv_limits {
    uint32_t max_txn_ops;       /* 0: etcd's default, 128 */
    uint64_t max_request_bytes; /* packed Request; 0: etcd's default, 1.5 MiB */
    uint64_t wire_bytes;        /* the request's size as received, if known: then not packed again to size it */
};

/*
 * kvconv_validate: etcd's API-layer checks on a client request, before it is
 * proposed or read.  Returns 0, or -code with a message for people in msg
 * (msglen bytes, always NUL-terminated, may be NULL/0) that starts with the
 * code's own text and names what is wrong: the operation and where it sits in
 * a txn ("success[1].failure[0]"), the key (printable-escaped, truncated), the
 * value and the limit.  lim may be NULL (etcd's defaults).
 *
 *   -CAIRN_E_REQUEST_TOO_LARGE  the packed request (or wire_bytes) is over max_request_bytes
 *   -CAIRN_E_KEY_EMPTY          range, put, delete-range, compare, history or watch without key
 *   -CAIRN_E_VALUE_PROVIDED     put with a value and ignore_value
 *   -CAIRN_E_LEASE_PROVIDED     put with a lease and ignore_lease
 *   -CAIRN_E_TOO_MANY_TXN_OPS   a txn's largest list (compares, success or failure) is over its
 *                               limit; a nested txn's limit is its parent's minus the parent's
 *                               largest list (etcd 3.4's checkTxnRequest)
 *   -CAIRN_E_DUPLICATE_KEY      a txn writes a key twice: put vs put, put vs delete-range, across
 *                               nested txns (etcd's checkIntervals, see kvconv.c)
 *   -CAIRN_E_INVALID_ARGUMENT   negative limit, revision or revision bound (range, history,
 *                               watch, hash-kv); unknown enum value (sort order/target, compare
 *                               result/target, watch filter, alarm action/type, permission
 *                               type); a compare whose target_union is unset or does not match
 *                               its target (etcd accepts both, see kvconv.c); a txn op with no
 *                               request; negative lease TTL; a body case with no body
 *   -CAIRN_E_UNSUPPORTED        a Request with no body (a newer client's request type)
 *   -ENOMEM
 * Checks only the request's shape, never the state (lease existence etc. is mvcc's).
 */
int kvconv_validate(const Cairn__Request *req, const struct kvconv_limits *lim, char *msg,
                    size_t msglen);

/* --- requests ---------------------------------------------------------------- */

/* Client read requests -> mvcc.  Pointers in out borrow from in.  Validate
 * first; enum values are passed through as they are (mvcc rejects unknown
 * ones with -CAIRN_E_INVALID_ARGUMENT). */
void kvconv_range_req(const Cairn__RangeRequest *in, struct mvcc_range_req *out);
void kvconv_history_req(const Cairn__HistoryRequest *in, struct mvcc_history_req *out);

/* kvconv_write_entry: the RaftRequest body of a client's Put, DeleteRange,
 * Txn or Compaction (borrowing from req); false for any other request. */
bool kvconv_write_entry(const Cairn__Request *req, Cairnint__RaftRequest *rr);

/*
 * kvconv_entry_req: a Raft log entry's request -> mvcc_request: put,
 * delete_range, txn (nested txns and ranges included), compaction,
 * lease_grant, lease_revoke, lease_checkpoint.  Pointers in out borrow from
 * rr; the arrays of a txn or checkpoint live in a.  Only checks that do not
 * depend on configuration run here, so every member converts an entry alike.
 * Returns 0, or:
 *   -CAIRN_E_MALFORMED  rr carries no request the store applies: none set, one
 *                       for another module (alarm, members, auth), or one that
 *                       kvconv_validate would have refused for its shape (a txn
 *                       op without request, a compare without a matching
 *                       target value).  *out is then MVCC_REQ_NOOP: apply it so
 *                       the consistent index moves on, log the entry, and answer
 *                       its waiter, if any, with the code.
 *   -ENOMEM             *out is NOOP too, but applying it would make this member
 *                       diverge from the others: stop, as for a storage failure.
 */
int kvconv_entry_req(const Cairnint__RaftRequest *rr, struct mvcc_request *out,
                     struct kvconv_arena *a);

/* --- responses --------------------------------------------------------------- */

/*
 * mvcc results -> protobuf.  Messages and arrays are allocated in a; byte
 * strings borrow from the mvcc result, which the caller keeps alive until it
 * has packed the reply.  keys_only, count_only and limits were applied by
 * mvcc.  Return 0 or -ENOMEM (out is then partly filled: send an error instead).
 */
int kvconv_range_resp(const struct mvcc_range_resp *in, Cairn__RangeResponse *out,
                      struct kvconv_arena *a);
/* keys_only leaves the values out (mvcc_history returns them always). */
int kvconv_history_resp(const struct mvcc_history_result *in, bool keys_only,
                        Cairn__HistoryResponse *out, struct kvconv_arena *a);

/*
 * kvconv_write_resp: fill the body of out (put, delete_range, txn, compact,
 * lease_grant, lease_revoke) for the applied response resp of the write whose
 * request was rr, and set out->body_case.  A lease checkpoint, which has no
 * client reply, leaves the body unset.  If resp->err != 0, fill out->error
 * instead: code = -resp->err, a message that names the key, lease or revision
 * the error concerns (found again in rr: for a txn, the op that can have
 * caused it), key when there is exactly one, and compact_revision.  rr may be
 * NULL (the message is then generic); the reply never points into rr.  If
 * resp is the NOOP a caller applied in place of an entry kvconv_entry_req
 * refused, out->error is -CAIRN_E_MALFORMED saying so, never an empty success.
 * out->header is the caller's (its revision is resp->revision; see
 * kvconv_header).  Returns 0, or -ENOMEM: then reply kvconv_error(ENOMEM).
 */
int kvconv_write_resp(const Cairnint__RaftRequest *rr, const struct mvcc_response *resp,
                      Cairn__Response *out, struct kvconv_arena *a);

/* kvconv_kv: in -> out (initialised here); key and value borrow from in. */
void kvconv_kv(const struct mvcc_kv *in, Cairn__KeyValue *out);

/* kvconv_event: a watch event; out is initialised here, its KeyValues live in
 * a, prev_kv only if asked and known.  Returns 0 or -ENOMEM. */
int kvconv_event(const struct mvcc_event *in, bool prev_kv, Cairn__Event *out,
                 struct kvconv_arena *a);

/*
 * kvconv_error: set out->error to code (a positive CAIRN_E_ value or errno;
 * a negative one is turned positive) and message (copied into a; NULL: the
 * code's own text), and clear out->body_case.  Never fails: without memory,
 * out->error is a static ENOMEM error that must not be modified.
 */
void kvconv_error(Cairn__Response *out, int code, const char *message, struct kvconv_arena *a);
void kvconv_errorf(Cairn__Response *out, int code, struct kvconv_arena *a, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* kvconv_header: set out->header, allocated in a.  Returns 0 or -ENOMEM. */
int kvconv_header(Cairn__Response *out, uint64_t cluster_id, uint64_t member_id, int64_t revision,
                  uint64_t raft_term, struct kvconv_arena *a);

/* kvconv_escape: key as a quoted, printable C-style string ("a\x00b"), at most
 * 64 bytes of it then "..." and its length, into buf (always terminated).
 * Returns buf, for use in messages. */
const char *kvconv_escape(const void *key, size_t len, char *buf, size_t buflen);

#endif
