/*
 * The one table of every error a Cairn user can meet, as an X-macro.
 *
 * Functions across Cairn return 0 on success and a negative number on failure:
 * -errno for system errors (always below CAIRN_ERR_BASE in magnitude), or
 * -CAIRN_E_xxx for the codes below.  The same positive codes travel on the wire
 * in Response.error.code, so a client sees exactly what the member saw.
 * This header is self-contained (libc only) so every part may include it.
 */
#ifndef CAIRN_BASE_ERRORS_H
#define CAIRN_BASE_ERRORS_H

/* Codes start above any errno value so the two never collide. */
#define CAIRN_ERR_BASE 1000

/*
 * X(NAME, offset, "message")
 * The message is shown to people: it says what went wrong and, where there is
 * something to do about it, what to do.  Details (key, revision, file and
 * offset) are added by whoever reports the error.
 * Offsets are wire values: never renumber, only append.
 */
#define CAIRN_ERRORS(X)                                                        \
    /* etcd's errors, with etcd's meanings */                                  \
    X(COMPACTED, 1, "required revision has been compacted; read at or after the compact revision") \
    X(FUTURE_REV, 2, "required revision is a future revision")                 \
    X(NO_SPACE, 3, "database space exceeded; compact, defragment, then disarm the NOSPACE alarm") \
    X(TOO_MANY_REQUESTS, 4, "too many requests: the member is applying behind what it committed; retry later") \
    X(REQUEST_TOO_LARGE, 5, "request is too large; raise --max-request-bytes or send less") \
    X(TOO_MANY_TXN_OPS, 6, "too many operations in txn request; raise --max-txn-ops or split it") \
    X(DUPLICATE_KEY, 7, "duplicate key given in txn request")                  \
    X(KEY_NOT_FOUND, 8, "key not found (ignore_value and ignore_lease need an existing key)") \
    X(LEASE_NOT_FOUND, 9, "requested lease not found")                         \
    X(LEASE_TTL_TOO_LARGE, 10, "too large lease TTL")                          \
    X(LEASE_EXISTS, 11, "lease already exists")                                \
    X(NO_LEADER, 12, "no leader: the cluster cannot reach a quorum; check that a majority of members are up and connected") \
    X(TIMEOUT, 13, "request timed out; the outcome is unknown: the request may still be applied") \
    X(LEARNER_NOT_SERVING, 14, "this member is a learner and serves no client requests; use a voting member") \
    X(MEMBER_NOT_FOUND, 15, "member not found")                                \
    X(MEMBER_EXISTS, 16, "member already exists")                              \
    X(PEER_URL_EXISTS, 17, "peer URL already in use by another member")        \
    X(LEARNER_NOT_READY, 18, "the learner has not caught up with the leader yet; promote it later") \
    X(TOO_MANY_LEARNERS, 19, "too many learner members in the cluster")        \
    X(UNHEALTHY, 20, "unhealthy cluster: the change would leave the started members without quorum") \
    X(PERMISSION_DENIED, 21, "permission denied")                              \
    X(AUTH_FAILED, 22, "authentication failed: invalid user ID or password")   \
    X(INVALID_TOKEN, 23, "authentication failed: token expired/invalid; authenticate again") \
    X(AUTH_NOT_ENABLED, 24, "authentication is not enabled")                   \
    X(USER_NOT_FOUND, 25, "user name not found")                               \
    X(USER_EXISTS, 26, "user name already exists")                             \
    X(ROLE_NOT_FOUND, 27, "role name not found")                               \
    X(ROLE_EXISTS, 28, "role name already exists")                             \
    X(ROOT_USER_MISSING, 29, "root user does not exist; add it before enabling auth") \
    X(ROOT_ROLE_MISSING, 30, "root user does not have the root role")          \
    X(INVALID_ARGUMENT, 31, "invalid argument")                                \
    X(CORRUPT, 32, "corruption detected; the data is left untouched for an operator to inspect") \
    X(NOT_LEADER, 33, "this member is not the leader")                         \
    X(LEADER_TRANSFER, 34, "leadership transfer in progress; retry shortly")   \
    X(PROPOSAL_DROPPED, 35, "proposal dropped before it reached the log; it was not applied and may be retried") \
    X(STOPPED, 36, "member is stopping")                                       \
    X(CLUSTER_MISMATCH, 37, "message or data belongs to another cluster or member") \
    X(CLUSTER_ID_MISMATCH, 38, "cluster ID mismatch; check --initial-cluster-token and --data-dir") \
    X(KEY_EMPTY, 39, "key is not provided")                                    \
    X(VALUE_PROVIDED, 40, "value is provided together with ignore_value")      \
    X(LEASE_PROVIDED, 41, "lease is provided together with ignore_lease")      \
    X(WATCH_CANCELED, 42, "watch canceled")                                    \
    X(WATCH_NOT_FOUND, 43, "watch not found; it was canceled or dropped after the client stopped polling") \
    X(TOO_MANY_WATCHERS, 44, "too many watchers on this connection")           \
    X(SNAPSHOT_TOO_OLD, 45, "snapshot is older than the log it must replace")  \
    X(UNAVAILABLE, 46, "no member could be reached; check the endpoints and that the members are running") \
    /* Cairn's own */                                                          \
    X(WAL_LOCKED, 100, "the WAL directory is locked by another process; stop it or use another data directory") \
    X(SCHEMA, 101, "unsupported or foreign database schema; check that the data directory belongs to this version of Cairn") \
    X(CONFIG, 102, "invalid configuration")                                    \
    X(MALFORMED, 103, "malformed message")                                     \
    X(TXN_CONFLICT, 104, "transaction conflict: a key it read changed before it committed; nothing was written, retry") \
    X(NOT_FOUND, 105, "not found")                                             \
    X(TOO_MANY_LEASES, 106, "too many leases")                                 \
    X(UNSUPPORTED, 107, "operation not supported")                             \
    X(ALARM_ACTIVE, 108, "an alarm is active on the cluster; see the alarms table") \
    X(IO, 109, "I/O error")                                                    \
    X(AUTH_RATE_LIMITED, 110, "authentication failed: too many failed attempts from this client; wait and retry") \
    X(ROLE_NOT_GRANTED, 111, "role is not granted to the user")                \
    X(PERMISSION_NOT_GRANTED, 112, "permission is not granted to the role")    \
    X(INVALID_AUTH_MGMT, 113, "invalid auth management: the root user and the root role cannot be removed while auth is enabled") \
    X(TOO_MANY_CHANGES, 114, "the request would change more than 1048576 keys in one revision; delete the range in parts") \
    X(REVISIONS_EXHAUSTED, 115, "the store has reached its last revision (2^43 - 1) and takes no more writes; reads still work") \
    X(LEASE_TOO_MANY_KEYS, 116, "the lease already holds 1048576 keys, as many as its revoke can delete in one revision; attach the key to another lease")

enum cairn_error {
#define CAIRN_ERRENUM_(name, off, msg) CAIRN_E_##name = CAIRN_ERR_BASE + (off),
    CAIRN_ERRORS(CAIRN_ERRENUM_)
#undef CAIRN_ERRENUM_
};

/*
 * cairn_strerror: the message for err, which may be negative or positive, a
 * Cairn code or an errno value.  Returns a static string, never NULL.
 */
const char *cairn_strerror(int err);

/*
 * cairn_errname: the symbolic name ("COMPACTED", "ENOSPC") for err, or
 * "UNKNOWN".  Returns a static string.
 */
const char *cairn_errname(int err);

/* cairn_is_cairn_error: nonzero if err (either sign) is one of the codes above. */
int cairn_is_cairn_error(int err);

#endif
