/*
 * The auth part's pure logic, apart from threads, the node and the network,
 * so unit tests can drive it (test/unit/test_auth.c): the auth store (users,
 * roles, permissions) as one packed record and the deterministic changes the
 * apply path makes to it, the permission matcher, the per-request checks,
 * and password hashing.  No locks, no clock, no logging.
 */
#ifndef CAIRN_DAEMON_AUTH_INTERNAL_H
#define CAIRN_DAEMON_AUTH_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "proto/cairn.pb-c.h"
#include "proto/internal.pb-c.h"

/* The record holding the whole auth store (a packed cairnint.AuthStore). */
#define AUTH_RECORD_NS "auth"
#define AUTH_RECORD_NAME "store"

#define AUTH_ROOT_USER "root"
#define AUTH_ROOT_ROLE "root"
/*
 * The identity stamped on requests that came through the local ipc socket
 * from uid 0 or the daemon's own uid: root without a password.  A control
 * character, so no user name (auth_name_ok refuses those) can be mistaken
 * for it.
 */
#define AUTH_IPC_ROOT "\001ipc-root"

/* PBKDF2-HMAC-SHA256: OWASP's 2023 advice is 600k; 200k costs ~60-120 ms here (docs/auth.md). */
#define AUTH_PBKDF2_ITERATIONS 200000
#define AUTH_SALT_LEN 16
#define AUTH_HASH_LEN 32
#define AUTH_TOKEN_BYTES 32      /* random bytes in a token (64 hex characters on the wire) */

/* Bounds: the store is one record rewritten by every change. */
#define AUTH_MAX_NAME 128
#define AUTH_MAX_USERS 4096
#define AUTH_MAX_ROLES 4096
#define AUTH_MAX_ROLES_PER_USER 64
#define AUTH_MAX_PERMS_PER_ROLE 1024
#define AUTH_MAX_PASSWORD 1024

/* What a request needs on a key range. */
enum auth_need { AUTH_NEED_READ = 1, AUTH_NEED_WRITE = 2 };

/* auth_name_ok: a user or role name: 1 to AUTH_MAX_NAME bytes, no control characters.  1 or 0. */
int auth_name_ok(const char *name);

/* auth_store_new_empty: the store before any auth change (revision 1, disabled), malloc'd. */
Cairnint__AuthStore *auth_store_new_empty(void);

/* auth_store_unpack: a packed record -> a store (free with cairnint__auth_store__free_unpacked); NULL if it does
 * not decode or is not sorted. */
Cairnint__AuthStore *auth_store_unpack(const void *data, size_t len);

/* auth_find_user / auth_find_role: binary search by name; NULL if absent. */
const Cairnint__AuthUser *auth_find_user(const Cairnint__AuthStore *st, const char *name);
const Cairnint__AuthRole *auth_find_role(const Cairnint__AuthStore *st, const char *name);

/* auth_user_has_role: 1 or 0. */
int auth_user_has_role(const Cairnint__AuthUser *u, const char *role);

/* auth_is_admin: the user (AUTH_IPC_ROOT included) holds the root role.  1 or 0. */
int auth_is_admin(const Cairnint__AuthStore *st, const char *user);

/*
 * auth_store_change: apply an auth RaftRequest (auth_enable ... role_revoke_permission) to st,
 * deterministically.  On success (0) *out and *out_len are the packed new store (malloc'd; the caller
 * frees it), or *out is NULL when nothing changes (granting a role the user has).  Otherwise a
 * positive CAIRN_E_ code and st is unchanged: USER_EXISTS, USER_NOT_FOUND, ROLE_EXISTS,
 * ROLE_NOT_FOUND, ROLE_NOT_GRANTED, PERMISSION_NOT_GRANTED, ROOT_USER_MISSING, ROOT_ROLE_MISSING,
 * INVALID_AUTH_MGMT, INVALID_ARGUMENT (a bad name, a missing password hash, a limit), ENOMEM.
 * Every change raises the revision by one; a password change, a user's deletion, a role revoked
 * from a user (or the role deleted) and disabling auth void the tokens granted before
 * (tokens_revision), which auth_token_current checks.
 */
int auth_store_change(const Cairnint__AuthStore *st, const Cairnint__RaftRequest *rr, uint8_t **out,
                      size_t *out_len);

/* auth_token_current: a token granted to user at store revision rev is still good under st.  1 or 0. */
int auth_token_current(const Cairnint__AuthStore *st, const char *user, uint64_t rev);

/*
 * auth_range_allowed: may user do `need` on [key, range_end) (etcd's encoding: empty range_end is
 * the key alone, "\0" everything from key on)?  The union of the user's roles' permissions must
 * cover the whole range; a READWRITE permission serves both.  Root is allowed everything.
 * 1 or 0.
 */
int auth_range_allowed(const Cairnint__AuthStore *st, const char *user, enum auth_need need, const uint8_t *key,
                       size_t key_len, const uint8_t *end, size_t end_len);

/*
 * auth_check_request: may user (NULL or "": nobody; AUTH_IPC_ROOT) send req with auth enabled?
 * Checks the key ranges of Range, Put, DeleteRange, Txn (every compare and operation, nested
 * txns too), History and WatchCreate, and root for maintenance, membership and auth management.
 * LeaseRevoke passes here (its keys are checked by the caller with auth_range_allowed).
 * Returns 0, or CAIRN_E_PERMISSION_DENIED with "permission denied: ... KEY" in msg.
 */
int auth_check_request(const Cairnint__AuthStore *st, const char *user, const Cairn__Request *req, char *msg,
                       size_t msglen);

/*
 * auth_check_entry: the apply path's second look at a committed request that was checked under an
 * older auth store: the same rules on the RaftRequest.  Returns 0 or CAIRN_E_PERMISSION_DENIED.
 * A lease revoke by a non-admin is refused (its keys cannot be read on the apply path).
 */
int auth_check_entry(const Cairnint__AuthStore *st, const Cairnint__RaftRequest *rr, char *msg, size_t msglen);

/* auth_hash_password: PBKDF2-HMAC-SHA256 into out (AUTH_HASH_LEN bytes).  0 or -CAIRN_E_INVALID_ARGUMENT. */
int auth_hash_password(const char *password, size_t len, const uint8_t *salt, size_t salt_len, uint32_t iterations,
                       uint8_t *out);

/* auth_password_matches: hash password with u's salt and iterations, compare in constant time.  1 or 0. */
int auth_password_matches(const Cairnint__AuthUser *u, const char *password, size_t len);

/* auth_token_hash: SHA-256 of the token string into out (32 bytes). */
void auth_token_hash(const char *token, size_t len, uint8_t *out);

#endif
