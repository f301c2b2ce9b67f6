/*
 * Which requests a user may send (see auth_internal.h): the key ranges every
 * KV request, txn (compares and operations at any depth), history and watch
 * touches, root for maintenance, membership and auth management; the same
 * rules on committed RaftRequests for the apply path's second look; and
 * password and token hashing.  Pure functions over an immutable auth store.
 */
#include "daemon/auth_internal.h"

#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

#include "base/errors.h"
#include "daemon/kvconv.h"

/* Where a denial is written. */
struct why {
    char *msg;
    size_t len;
};

static const char *who(const char *user, char *buf, size_t len)
{
    if (!user || !user[0])
        snprintf(buf, len, "an unauthenticated client");
    else if (!strcmp(user, AUTH_IPC_ROOT))
        snprintf(buf, len, "root (ipc)");
    else
        snprintf(buf, len, "user '%s'", user);
    return buf;
}

static int deny_range(struct why *w, const char *user, enum auth_need need, ProtobufCBinaryData key,
                      ProtobufCBinaryData end, const char *what)
{
    char u[AUTH_MAX_NAME + 32], k[160], e[160];
    if (w->msg && w->len) {
        kvconv_escape(key.data, key.len, k, sizeof k);
        if (end.len == 0)
            snprintf(w->msg, w->len, "permission denied: %s may not %s (%s) key %s", who(user, u, sizeof u),
                     need == AUTH_NEED_READ ? "read" : "write", what, k);
        else if (end.len == 1 && end.data[0] == 0)
            snprintf(w->msg, w->len, "permission denied: %s may not %s (%s) the keys from key %s on",
                     who(user, u, sizeof u), need == AUTH_NEED_READ ? "read" : "write", what, k);
        else
            snprintf(w->msg, w->len, "permission denied: %s may not %s (%s) the range [%s, %s) from key %s",
                     who(user, u, sizeof u), need == AUTH_NEED_READ ? "read" : "write", what, k,
                     kvconv_escape(end.data, end.len, e, sizeof e), k);
    }
    return CAIRN_E_PERMISSION_DENIED;
}

static int need_range(const Cairnint__AuthStore *st, const char *user, enum auth_need need, ProtobufCBinaryData key,
                      ProtobufCBinaryData end, const char *what, struct why *w)
{
    if (auth_range_allowed(st, user, need, key.data, key.len, end.data, end.len))
        return 0;
    return deny_range(w, user, need, key, end, what);
}

static int need_root(const Cairnint__AuthStore *st, const char *user, const char *what, struct why *w)
{
    char u[AUTH_MAX_NAME + 32];
    if (auth_is_admin(st, user))
        return 0;
    if (w->msg && w->len)
        snprintf(w->msg, w->len, "permission denied: %s may not %s: it needs the root role", who(user, u, sizeof u),
                 what);
    return CAIRN_E_PERMISSION_DENIED;
}

static int need_user(const Cairnint__AuthStore *st, const char *user, const char *what, struct why *w)
{
    if (auth_is_admin(st, user) || auth_find_user(st, user))
        return 0;
    if (w->msg && w->len)
        snprintf(w->msg, w->len, "permission denied: %s needs an authenticated user (authenticate first)", what);
    return CAIRN_E_PERMISSION_DENIED;
}

static const ProtobufCBinaryData no_end = {0, NULL};

static int check_put(const Cairnint__AuthStore *st, const char *user, const Cairn__PutRequest *p, const char *what,
                     struct why *w)
{
    int rc = need_range(st, user, AUTH_NEED_WRITE, p->key, no_end, what, w);
    if (rc == 0 && p->prev_kv)
        rc = need_range(st, user, AUTH_NEED_READ, p->key, no_end, "put with prev_kv", w);
    return rc;
}

static int check_delete(const Cairnint__AuthStore *st, const char *user, const Cairn__DeleteRangeRequest *d,
                        const char *what, struct why *w)
{
    int rc = need_range(st, user, AUTH_NEED_WRITE, d->key, d->range_end, what, w);
    if (rc == 0 && d->prev_kv)
        rc = need_range(st, user, AUTH_NEED_READ, d->key, d->range_end, "delete with prev_kv", w);
    return rc;
}

static int check_txn(const Cairnint__AuthStore *st, const char *user, const Cairn__TxnRequest *t, int depth,
                     struct why *w)
{
    if (!t)
        return 0;
    if (depth > 64)
        return need_root(st, user, "nest txns this deep", w);
    for (size_t i = 0; i < t->n_compare; i++) {
        int rc;
        if (t->compare[i] &&
            (rc = need_range(st, user, AUTH_NEED_READ, t->compare[i]->key, t->compare[i]->range_end, "txn compare",
                             w)) != 0)
            return rc;
    }
    Cairn__RequestOp **lists[2] = {t->success, t->failure};
    size_t ns[2] = {t->n_success, t->n_failure};
    for (int b = 0; b < 2; b++)
        for (size_t i = 0; i < ns[b]; i++) {
            const Cairn__RequestOp *op = lists[b][i];
            int rc = 0;
            if (!op)
                continue;
            switch (op->request_case) {
            case CAIRN__REQUEST_OP__REQUEST_REQUEST_RANGE:
                if (op->request_range)
                    rc = need_range(st, user, AUTH_NEED_READ, op->request_range->key, op->request_range->range_end,
                                    "txn range", w);
                break;
            case CAIRN__REQUEST_OP__REQUEST_REQUEST_PUT:
                if (op->request_put)
                    rc = check_put(st, user, op->request_put, "txn put", w);
                break;
            case CAIRN__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE:
                if (op->request_delete_range)
                    rc = check_delete(st, user, op->request_delete_range, "txn delete", w);
                break;
            case CAIRN__REQUEST_OP__REQUEST_REQUEST_TXN:
                rc = check_txn(st, user, op->request_txn, depth + 1, w);
                break;
            default:
                break;
            }
            if (rc)
                return rc;
        }
    return 0;
}

int auth_check_request(const Cairnint__AuthStore *st, const char *user, const Cairn__Request *req, char *msg,
                       size_t msglen)
{
    struct why w = {msg, msglen};
    if (msg && msglen)
        msg[0] = 0;
    switch (req->body_case) {
    case CAIRN__REQUEST__BODY_RANGE:
        return req->range ? need_range(st, user, AUTH_NEED_READ, req->range->key, req->range->range_end, "range", &w)
                          : 0;
    case CAIRN__REQUEST__BODY_HISTORY:
        return req->history
                   ? need_range(st, user, AUTH_NEED_READ, req->history->key, req->history->range_end, "history", &w)
                   : 0;
    case CAIRN__REQUEST__BODY_WATCH_CREATE:
        return req->watch_create ? need_range(st, user, AUTH_NEED_READ, req->watch_create->key,
                                              req->watch_create->range_end, "watch", &w)
                                 : 0;
    case CAIRN__REQUEST__BODY_PUT:
        return req->put ? check_put(st, user, req->put, "put", &w) : 0;
    case CAIRN__REQUEST__BODY_DELETE_RANGE:
        return req->delete_range ? check_delete(st, user, req->delete_range, "delete", &w) : 0;
    case CAIRN__REQUEST__BODY_TXN:
        return check_txn(st, user, req->txn, 0, &w);

    /* open to anyone: the status of a member and of auth (etcd's too) */
    case CAIRN__REQUEST__BODY_STATUS:
    case CAIRN__REQUEST__BODY_AUTH_STATUS:
    case CAIRN__REQUEST__BODY_AUTHENTICATE:
        return 0;

    /* any authenticated user (etcd: watches, leases and the member list need no permission) */
    case CAIRN__REQUEST__BODY_WATCH_NEXT:
    case CAIRN__REQUEST__BODY_WATCH_POLL:
    case CAIRN__REQUEST__BODY_WATCH_CANCEL:
    case CAIRN__REQUEST__BODY_WATCH_PROGRESS:
    case CAIRN__REQUEST__BODY_LEASE_GRANT:
    case CAIRN__REQUEST__BODY_LEASE_KEEP_ALIVE:
    case CAIRN__REQUEST__BODY_LEASE_TIME_TO_LIVE:
    case CAIRN__REQUEST__BODY_LEASE_LEASES:
    case CAIRN__REQUEST__BODY_LEASE_REVOKE: /* and every attached key writable: the caller reads them */
    case CAIRN__REQUEST__BODY_MEMBER_LIST:
        return need_user(st, user, "this request", &w);

    case CAIRN__REQUEST__BODY_ALARM:
        if (req->alarm && req->alarm->action == CAIRN__ALARM_REQUEST__ALARM_ACTION__GET)
            return need_user(st, user, "listing alarms", &w);
        return need_root(st, user, "raise or disarm alarms", &w);
    case CAIRN__REQUEST__BODY_COMPACT:
        return need_root(st, user, "compact", &w);
    case CAIRN__REQUEST__BODY_DEFRAGMENT:
        return need_root(st, user, "defragment", &w);
    case CAIRN__REQUEST__BODY_HASH_KV:
        return need_root(st, user, "hash the store", &w);
    case CAIRN__REQUEST__BODY_SNAPSHOT:
        return need_root(st, user, "save a snapshot", &w);
    case CAIRN__REQUEST__BODY_MOVE_LEADER:
        return need_root(st, user, "move the leader", &w);
    case CAIRN__REQUEST__BODY_MEMBER_ADD:
    case CAIRN__REQUEST__BODY_MEMBER_REMOVE:
    case CAIRN__REQUEST__BODY_MEMBER_UPDATE:
    case CAIRN__REQUEST__BODY_MEMBER_PROMOTE:
        return need_root(st, user, "change the membership", &w);

    case CAIRN__REQUEST__BODY_USER_GET:
        /* etcd: root, or a user about itself */
        if (req->user_get && user && !strcmp(user, req->user_get->name) && auth_find_user(st, user))
            return 0;
        return need_root(st, user, "read another user", &w);
    case CAIRN__REQUEST__BODY_ROLE_GET:
        /* etcd: root, or a user about a role it has */
        if (req->role_get && auth_user_has_role(auth_find_user(st, user), req->role_get->role))
            return 0;
        return need_root(st, user, "read a role it does not have", &w);
    case CAIRN__REQUEST__BODY_AUTH_ENABLE:
    case CAIRN__REQUEST__BODY_AUTH_DISABLE:
    case CAIRN__REQUEST__BODY_USER_ADD:
    case CAIRN__REQUEST__BODY_USER_LIST:
    case CAIRN__REQUEST__BODY_USER_DELETE:
    case CAIRN__REQUEST__BODY_USER_CHANGE_PASSWORD:
    case CAIRN__REQUEST__BODY_USER_GRANT_ROLE:
    case CAIRN__REQUEST__BODY_USER_REVOKE_ROLE:
    case CAIRN__REQUEST__BODY_ROLE_ADD:
    case CAIRN__REQUEST__BODY_ROLE_LIST:
    case CAIRN__REQUEST__BODY_ROLE_DELETE:
    case CAIRN__REQUEST__BODY_ROLE_GRANT_PERMISSION:
    case CAIRN__REQUEST__BODY_ROLE_REVOKE_PERMISSION:
        return need_root(st, user, "manage users, roles or auth", &w);
    default:
        /* a request type this version does not know: only root (it is refused later anyway) */
        return need_root(st, user, "send this request", &w);
    }
}

int auth_check_entry(const Cairnint__AuthStore *st, const Cairnint__RaftRequest *rr, char *msg, size_t msglen)
{
    struct why w = {msg, msglen};
    const char *user = rr->auth_user;
    if (msg && msglen)
        msg[0] = 0;
    switch (rr->request_case) {
    case CAIRNINT__RAFT_REQUEST__REQUEST_PUT:
        return rr->put ? check_put(st, user, rr->put, "put", &w) : 0;
    case CAIRNINT__RAFT_REQUEST__REQUEST_DELETE_RANGE:
        return rr->delete_range ? check_delete(st, user, rr->delete_range, "delete", &w) : 0;
    case CAIRNINT__RAFT_REQUEST__REQUEST_TXN:
        return check_txn(st, user, rr->txn, 0, &w);
    case CAIRNINT__RAFT_REQUEST__REQUEST_LEASE_GRANT:
        return need_user(st, user, "a lease grant", &w);
    case CAIRNINT__RAFT_REQUEST__REQUEST_LEASE_REVOKE:
        /* its keys were checked under an older auth store; they cannot be read here */
        return need_root(st, user, "revoke a lease checked under an older auth store (retry)", &w);
    case CAIRNINT__RAFT_REQUEST__REQUEST_ALARM:
        if (rr->alarm && rr->alarm->action == CAIRN__ALARM_REQUEST__ALARM_ACTION__GET)
            return 0;
        return need_root(st, user, "raise or disarm alarms", &w);
    case CAIRNINT__RAFT_REQUEST__REQUEST_AUTH_TOKEN_GRANT:
        return 0; /* auth_token_current decides */
    case CAIRNINT__RAFT_REQUEST__REQUEST_AUTH_ENABLE:
        return 0; /* harmless once enabled; allowed to anyone while disabled */
    case CAIRNINT__RAFT_REQUEST__REQUEST__NOT_SET:
        return 0;
    default:
        /* compaction, membership, auth management: root's */
        return need_root(st, user, "do this (it needs the root role)", &w);
    }
}

/* ---------------------------------------------------------------- passwords and tokens */

int auth_hash_password(const char *password, size_t len, const uint8_t *salt, size_t salt_len, uint32_t iterations,
                       uint8_t *out)
{
    if (len > AUTH_MAX_PASSWORD || !salt_len || !iterations || iterations > (1u << 30))
        return -CAIRN_E_INVALID_ARGUMENT;
    if (!PKCS5_PBKDF2_HMAC(password ? password : "", (int)len, salt, (int)salt_len, (int)iterations, EVP_sha256(),
                           AUTH_HASH_LEN, out))
        return -CAIRN_E_INVALID_ARGUMENT;
    return 0;
}

int auth_password_matches(const Cairnint__AuthUser *u, const char *password, size_t len)
{
    uint8_t h[AUTH_HASH_LEN];
    if (!u || !u->password || u->password->hash.len != AUTH_HASH_LEN)
        return 0;
    if (auth_hash_password(password, len, u->password->salt.data, u->password->salt.len, u->password->iterations, h) <
        0)
        return 0;
    return CRYPTO_memcmp(h, u->password->hash.data, AUTH_HASH_LEN) == 0;
}

void auth_token_hash(const char *token, size_t len, uint8_t *out)
{
    SHA256((const unsigned char *)token, len, out);
}
