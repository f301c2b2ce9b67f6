/*
 * Cluster membership: the member set the store keeps (one record, see
 * boot.h's MEMBERS_RECORD_*), the pure rules that change it, and the client
 * requests MemberAdd/Remove/Update/Promote/List.
 *
 * A change travels as a Raft conf-change entry whose context is an
 * internal.proto MemberChange (the waiter's ID and the member's URLs); the
 * node applies it to Raft's configuration and rewrites the member set record
 * in the same store transaction, so a snapshot or a restore carries both.
 * Peer URL updates and a started member's name and client URLs travel as
 * ordinary RaftRequests (member_update, member_attributes).
 */
#ifndef CAIRN_DAEMON_MEMBERS_H
#define CAIRN_DAEMON_MEMBERS_H

#include <stddef.h>
#include <stdint.h>

#include "daemon/rpc.h"

struct Cairnint__MemberSet;
struct Cairn__Member;
struct mvcc_reader;

/* --- the set (pure functions, unit-tested) ---------------------------------- */

/* members_read: the set stored in the store r reads; -CAIRN_E_NOT_FOUND if the store has none. */
int members_read(struct mvcc_reader *r, struct Cairnint__MemberSet **out);

/* members_find: the member with id, or NULL. */
const struct Cairn__Member *members_find(const struct Cairnint__MemberSet *s, uint64_t id);

/* members_is_removed: nonzero if id was removed (IDs are never reused). */
int members_is_removed(const struct Cairnint__MemberSet *s, uint64_t id);

/* members_url_owner: the member using peer URL url, or 0. */
uint64_t members_url_owner(const struct Cairnint__MemberSet *s, const char *url);

/*
 * members_change: the packed set after one change.  kind is a RAFT_CC_ type
 * (add voter, add learner, promote, remove: m gives the added member's peer
 * URLs), or MEMBERS_UPDATE_URLS (m's peer URLs replace id's) or
 * MEMBERS_ATTRIBUTES (m's name and client URLs).  Returns 0 and *out (malloc'd)
 * or a positive CAIRN_E_ code when the change does not apply (unknown member,
 * already there, removed), the set then unchanged.
 */
#define MEMBERS_UPDATE_URLS 100
#define MEMBERS_ATTRIBUTES 101
int members_change(const struct Cairnint__MemberSet *s, int kind, uint64_t id, const struct Cairn__Member *m,
                   uint8_t **out, size_t *out_len);

/*
 * members_check_quorum: etcd's strict reconfiguration check.  voters: the
 * voters now; active: which of them are started and reachable (this member
 * counts).  kind/id: the change.  0, or CAIRN_E_UNHEALTHY if afterwards the
 * active voters would not be a quorum of the new voter set.
 */
int members_check_quorum(const uint64_t *voters, size_t n_voters, const uint64_t *active, size_t n_active,
                         int kind, uint64_t id);

/* --- requests --------------------------------------------------------------- */

struct members;
int members_start(const struct config *cfg, struct node *n, struct members **out);
size_t members_routes(struct members *m, struct rpc_route *out, size_t max);
void members_free(struct members *m);

#endif
