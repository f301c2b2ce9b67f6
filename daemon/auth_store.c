/*
 * The auth store's pure logic (see auth_internal.h): the store is a packed
 * cairnint.AuthStore, immutable once unpacked; a change builds the next
 * store as a view over the old one's messages (only what changes is new),
 * packs it, and the caller unpacks that into the next immutable copy.  So
 * the record written in the apply path and the memory copy are the same
 * bytes, and every member computes them alike.
 */
#include "daemon/auth_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

#include "base/errors.h"
#include "daemon/kvconv.h"

/* ---------------------------------------------------------------- names and lookups */

int auth_name_ok(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > AUTH_MAX_NAME)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)name[i] < 0x20 || name[i] == 0x7f)
            return 0;
    return 1;
}

Cairnint__AuthStore *auth_store_new_empty(void)
{
    Cairnint__AuthStore *st = malloc(sizeof(*st));
    if (!st)
        return NULL;
    cairnint__auth_store__init(st);
    st->revision = 1; /* etcd's auth revision starts at 1; requests stamped 0 are the members' own */
    return st;
}

Cairnint__AuthStore *auth_store_unpack(const void *data, size_t len)
{
    Cairnint__AuthStore *st = cairnint__auth_store__unpack(NULL, len, data);
    if (!st)
        return NULL;
    int ok = st->revision > 0;
    for (size_t i = 0; ok && i < st->n_users; i++)
        ok = st->users[i] && auth_name_ok(st->users[i]->name) &&
             (i == 0 || strcmp(st->users[i - 1]->name, st->users[i]->name) < 0);
    for (size_t i = 0; ok && i < st->n_roles; i++) {
        ok = st->roles[i] && auth_name_ok(st->roles[i]->name) &&
             (i == 0 || strcmp(st->roles[i - 1]->name, st->roles[i]->name) < 0);
        for (size_t j = 0; ok && j < st->roles[i]->n_perms; j++)
            ok = st->roles[i]->perms[j] != NULL;
    }
    if (!ok) {
        cairnint__auth_store__free_unpacked(st, NULL);
        return NULL;
    }
    return st;
}

/* Index of name in a sorted array of named messages, or where it would go (*found 0). */
#define BSEARCH_NAMED(arr, n, name, found)                                                                           \
    ({                                                                                                               \
        size_t lo_ = 0, hi_ = (n);                                                                                   \
        *(found) = 0;                                                                                                \
        while (lo_ < hi_) {                                                                                          \
            size_t mid_ = (lo_ + hi_) / 2;                                                                           \
            int c_ = strcmp((arr)[mid_]->name, (name));                                                              \
            if (c_ == 0) {                                                                                           \
                *(found) = 1;                                                                                        \
                lo_ = mid_;                                                                                          \
                break;                                                                                               \
            }                                                                                                        \
            if (c_ < 0)                                                                                              \
                lo_ = mid_ + 1;                                                                                      \
            else                                                                                                     \
                hi_ = mid_;                                                                                          \
        }                                                                                                            \
        lo_;                                                                                                         \
    })

static size_t user_index(const Cairnint__AuthStore *st, const char *name, int *found)
{
    return BSEARCH_NAMED(st->users, st->n_users, name, found);
}

static size_t role_index(const Cairnint__AuthStore *st, const char *name, int *found)
{
    return BSEARCH_NAMED(st->roles, st->n_roles, name, found);
}

const Cairnint__AuthUser *auth_find_user(const Cairnint__AuthStore *st, const char *name)
{
    int found;
    if (!st || !name)
        return NULL;
    size_t i = user_index(st, name, &found);
    return found ? st->users[i] : NULL;
}

const Cairnint__AuthRole *auth_find_role(const Cairnint__AuthStore *st, const char *name)
{
    int found;
    if (!st || !name)
        return NULL;
    size_t i = role_index(st, name, &found);
    return found ? st->roles[i] : NULL;
}

int auth_user_has_role(const Cairnint__AuthUser *u, const char *role)
{
    for (size_t i = 0; u && i < u->n_roles; i++)
        if (!strcmp(u->roles[i], role))
            return 1;
    return 0;
}

int auth_is_admin(const Cairnint__AuthStore *st, const char *user)
{
    if (user && !strcmp(user, AUTH_IPC_ROOT))
        return 1;
    return auth_user_has_role(auth_find_user(st, user), AUTH_ROOT_ROLE);
}

int auth_token_current(const Cairnint__AuthStore *st, const char *user, uint64_t rev)
{
    const Cairnint__AuthUser *u = auth_find_user(st, user);
    return st->enabled && u && u->tokens_revision <= rev && st->tokens_revision <= rev;
}

/* ---------------------------------------------------------------- changes (the apply path) */

/* The next store as a view: arrays of pointers into the old store and the arena. */
struct view {
    Cairnint__AuthStore s;
    Cairnint__AuthUser **users;
    Cairnint__AuthRole **roles;
    struct kvconv_arena *a;
};

static int view_init(struct view *v, const Cairnint__AuthStore *st, struct kvconv_arena *a)
{
    v->s = *st;
    v->a = a;
    /* room for one more of each */
    v->users = kvconv_arena_alloc(a, (st->n_users + 1) * sizeof(*v->users));
    v->roles = kvconv_arena_alloc(a, (st->n_roles + 1) * sizeof(*v->roles));
    if (!v->users || !v->roles)
        return ENOMEM;
    if (st->n_users)
        memcpy(v->users, st->users, st->n_users * sizeof(*v->users));
    if (st->n_roles)
        memcpy(v->roles, st->roles, st->n_roles * sizeof(*v->roles));
    v->s.users = v->users;
    v->s.roles = v->roles;
    v->s.revision = st->revision + 1;
    return 0;
}

/* A copy of user i that may be changed (its roles array has room for one more). */
static Cairnint__AuthUser *user_copy(struct view *v, size_t i)
{
    Cairnint__AuthUser *u = kvconv_arena_alloc(v->a, sizeof(*u));
    const Cairnint__AuthUser *old = v->users[i];
    if (!u)
        return NULL;
    *u = *old;
    u->roles = kvconv_arena_alloc(v->a, (old->n_roles + 1) * sizeof(char *));
    if (!u->roles)
        return NULL;
    if (old->n_roles)
        memcpy(u->roles, old->roles, old->n_roles * sizeof(char *));
    v->users[i] = u;
    return u;
}

static Cairnint__AuthRole *role_copy(struct view *v, size_t i)
{
    Cairnint__AuthRole *r = kvconv_arena_alloc(v->a, sizeof(*r));
    const Cairnint__AuthRole *old = v->roles[i];
    if (!r)
        return NULL;
    *r = *old;
    r->perms = kvconv_arena_alloc(v->a, (old->n_perms + 1) * sizeof(*r->perms));
    if (!r->perms)
        return NULL;
    if (old->n_perms)
        memcpy(r->perms, old->perms, old->n_perms * sizeof(*r->perms));
    v->roles[i] = r;
    return r;
}

static void insert_ptr(void **arr, size_t *n, size_t at, void *p)
{
    memmove(&arr[at + 1], &arr[at], (*n - at) * sizeof(*arr));
    arr[at] = p;
    (*n)++;
}

static void remove_ptr(void **arr, size_t *n, size_t at)
{
    memmove(&arr[at], &arr[at + 1], (*n - at - 1) * sizeof(*arr));
    (*n)--;
}

static int remove_role_of(Cairnint__AuthUser *u, const char *role)
{
    for (size_t k = 0; k < u->n_roles; k++)
        if (!strcmp(u->roles[k], role)) {
            remove_ptr((void **)u->roles, &u->n_roles, k);
            return 1;
        }
    return 0;
}

static int bytes_eq(ProtobufCBinaryData a, ProtobufCBinaryData b)
{
    return a.len == b.len && (a.len == 0 || !memcmp(a.data, b.data, a.len));
}

static int change_user(struct view *v, const Cairnint__RaftRequest *rr)
{
    int found;
    size_t i;
    Cairnint__AuthUser *u;
    uint64_t rev = v->s.revision;
    switch (rr->request_case) {
    case CAIRNINT__RAFT_REQUEST__REQUEST_USER_ADD: {
        const Cairn__UserAddRequest *q = rr->user_add;
        if (!auth_name_ok(q->name))
            return CAIRN_E_INVALID_ARGUMENT;
        const Cairnint__AuthPassword *pw = rr->auth_password;
        if (!q->no_password && (!pw || pw->salt.len == 0 || pw->hash.len != AUTH_HASH_LEN || !pw->iterations))
            return CAIRN_E_INVALID_ARGUMENT; /* the proposer hashes; never a password in the log */
        i = user_index(&v->s, q->name, &found);
        if (found)
            return CAIRN_E_USER_EXISTS;
        if (v->s.n_users >= AUTH_MAX_USERS)
            return CAIRN_E_INVALID_ARGUMENT;
        if (!(u = kvconv_arena_alloc(v->a, sizeof(*u))))
            return ENOMEM;
        cairnint__auth_user__init(u);
        u->name = (char *)q->name;
        u->password = q->no_password ? NULL : (Cairnint__AuthPassword *)pw;
        u->tokens_revision = rev;
        insert_ptr((void **)v->users, &v->s.n_users, i, u);
        return 0;
    }
    case CAIRNINT__RAFT_REQUEST__REQUEST_USER_DELETE:
        i = user_index(&v->s, rr->user_delete->name, &found);
        if (!found)
            return CAIRN_E_USER_NOT_FOUND;
        if (v->s.enabled && !strcmp(rr->user_delete->name, AUTH_ROOT_USER))
            return CAIRN_E_INVALID_AUTH_MGMT;
        remove_ptr((void **)v->users, &v->s.n_users, i);
        return 0;
    case CAIRNINT__RAFT_REQUEST__REQUEST_USER_CHANGE_PASSWORD: {
        const Cairnint__AuthPassword *pw = rr->auth_password;
        if (!pw || pw->salt.len == 0 || pw->hash.len != AUTH_HASH_LEN || !pw->iterations)
            return CAIRN_E_INVALID_ARGUMENT;
        i = user_index(&v->s, rr->user_change_password->name, &found);
        if (!found)
            return CAIRN_E_USER_NOT_FOUND;
        if (!(u = user_copy(v, i)))
            return ENOMEM;
        u->password = (Cairnint__AuthPassword *)pw;
        u->tokens_revision = rev;
        return 0;
    }
    case CAIRNINT__RAFT_REQUEST__REQUEST_USER_GRANT_ROLE: {
        const Cairn__UserGrantRoleRequest *q = rr->user_grant_role;
        i = user_index(&v->s, q->user, &found);
        if (!found)
            return CAIRN_E_USER_NOT_FOUND;
        /* etcd: the root role need not exist as a role to be granted */
        if (strcmp(q->role, AUTH_ROOT_ROLE) && !auth_find_role(&v->s, q->role))
            return CAIRN_E_ROLE_NOT_FOUND;
        if (!auth_name_ok(q->role))
            return CAIRN_E_INVALID_ARGUMENT;
        if (auth_user_has_role(v->users[i], q->role))
            return -1; /* nothing changes (etcd ignores it too) */
        if (v->users[i]->n_roles >= AUTH_MAX_ROLES_PER_USER)
            return CAIRN_E_INVALID_ARGUMENT;
        if (!(u = user_copy(v, i)))
            return ENOMEM;
        size_t k = 0;
        while (k < u->n_roles && strcmp(u->roles[k], q->role) < 0)
            k++;
        insert_ptr((void **)u->roles, &u->n_roles, k, (char *)q->role);
        return 0;
    }
    case CAIRNINT__RAFT_REQUEST__REQUEST_USER_REVOKE_ROLE: {
        const Cairn__UserRevokeRoleRequest *q = rr->user_revoke_role;
        i = user_index(&v->s, q->name, &found);
        if (!found)
            return CAIRN_E_USER_NOT_FOUND;
        if (!auth_user_has_role(v->users[i], q->role))
            return CAIRN_E_ROLE_NOT_GRANTED;
        if (v->s.enabled && !strcmp(q->name, AUTH_ROOT_USER) && !strcmp(q->role, AUTH_ROOT_ROLE))
            return CAIRN_E_INVALID_AUTH_MGMT;
        if (!(u = user_copy(v, i)))
            return ENOMEM;
        remove_role_of(u, q->role);
        u->tokens_revision = rev;
        return 0;
    }
    default:
        return CAIRN_E_INVALID_ARGUMENT;
    }
}

static int change_role(struct view *v, const Cairnint__RaftRequest *rr)
{
    int found;
    size_t i;
    Cairnint__AuthRole *r;
    switch (rr->request_case) {
    case CAIRNINT__RAFT_REQUEST__REQUEST_ROLE_ADD:
        if (!auth_name_ok(rr->role_add->name))
            return CAIRN_E_INVALID_ARGUMENT;
        i = role_index(&v->s, rr->role_add->name, &found);
        if (found)
            return CAIRN_E_ROLE_EXISTS;
        if (v->s.n_roles >= AUTH_MAX_ROLES)
            return CAIRN_E_INVALID_ARGUMENT;
        if (!(r = kvconv_arena_alloc(v->a, sizeof(*r))))
            return ENOMEM;
        cairnint__auth_role__init(r);
        r->name = (char *)rr->role_add->name;
        insert_ptr((void **)v->roles, &v->s.n_roles, i, r);
        return 0;
    case CAIRNINT__RAFT_REQUEST__REQUEST_ROLE_DELETE: {
        const char *name = rr->role_delete->role;
        i = role_index(&v->s, name, &found);
        if (!found)
            return CAIRN_E_ROLE_NOT_FOUND;
        if (v->s.enabled && !strcmp(name, AUTH_ROOT_ROLE))
            return CAIRN_E_INVALID_AUTH_MGMT;
        remove_ptr((void **)v->roles, &v->s.n_roles, i);
        /* etcd takes the role from every user that had it; their tokens go with it */
        for (size_t k = 0; k < v->s.n_users; k++) {
            if (!auth_user_has_role(v->users[k], name))
                continue;
            Cairnint__AuthUser *u = user_copy(v, k);
            if (!u)
                return ENOMEM;
            remove_role_of(u, name);
            u->tokens_revision = v->s.revision;
        }
        return 0;
    }
    case CAIRNINT__RAFT_REQUEST__REQUEST_ROLE_GRANT_PERMISSION: {
        const Cairn__RoleGrantPermissionRequest *q = rr->role_grant_permission;
        if (!q->perm || q->perm->key.len == 0 || (unsigned)q->perm->perm_type > CAIRN__PERMISSION__TYPE__READWRITE)
            return CAIRN_E_INVALID_ARGUMENT;
        i = role_index(&v->s, q->name, &found);
        if (!found)
            return CAIRN_E_ROLE_NOT_FOUND;
        if (!(r = role_copy(v, i)))
            return ENOMEM;
        for (size_t k = 0; k < r->n_perms; k++)
            if (bytes_eq(r->perms[k]->key, q->perm->key) && bytes_eq(r->perms[k]->range_end, q->perm->range_end)) {
                /* etcd: granting the same range again replaces its type */
                Cairn__Permission *p = kvconv_arena_alloc(v->a, sizeof(*p));
                if (!p)
                    return ENOMEM;
                *p = *r->perms[k];
                p->perm_type = q->perm->perm_type;
                r->perms[k] = p;
                return 0;
            }
        if (r->n_perms >= AUTH_MAX_PERMS_PER_ROLE)
            return CAIRN_E_INVALID_ARGUMENT;
        r->perms[r->n_perms++] = q->perm;
        return 0;
    }
    case CAIRNINT__RAFT_REQUEST__REQUEST_ROLE_REVOKE_PERMISSION: {
        const Cairn__RoleRevokePermissionRequest *q = rr->role_revoke_permission;
        i = role_index(&v->s, q->role, &found);
        if (!found)
            return CAIRN_E_ROLE_NOT_FOUND;
        if (!(r = role_copy(v, i)))
            return ENOMEM;
        for (size_t k = 0; k < r->n_perms; k++)
            if (bytes_eq(r->perms[k]->key, q->key) && bytes_eq(r->perms[k]->range_end, q->range_end)) {
                remove_ptr((void **)r->perms, &r->n_perms, k);
                return 0;
            }
        return CAIRN_E_PERMISSION_NOT_GRANTED;
    }
    default:
        return CAIRN_E_INVALID_ARGUMENT;
    }
}

/* The request's body is set (protobuf-c leaves a oneof member NULL when it was absent). */
static int body_present(const Cairnint__RaftRequest *rr)
{
    switch (rr->request_case) {
    case CAIRNINT__RAFT_REQUEST__REQUEST_AUTH_ENABLE: return rr->auth_enable != NULL;
    case CAIRNINT__RAFT_REQUEST__REQUEST_AUTH_DISABLE: return rr->auth_disable != NULL;
    case CAIRNINT__RAFT_REQUEST__REQUEST_USER_ADD: return rr->user_add != NULL;
    case CAIRNINT__RAFT_REQUEST__REQUEST_USER_DELETE: return rr->user_delete != NULL;
    case CAIRNINT__RAFT_REQUEST__REQUEST_USER_CHANGE_PASSWORD: return rr->user_change_password != NULL;
    case CAIRNINT__RAFT_REQUEST__REQUEST_USER_GRANT_ROLE: return rr->user_grant_role != NULL;
    case CAIRNINT__RAFT_REQUEST__REQUEST_USER_REVOKE_ROLE: return rr->user_revoke_role != NULL;
    case CAIRNINT__RAFT_REQUEST__REQUEST_ROLE_ADD: return rr->role_add != NULL;
    case CAIRNINT__RAFT_REQUEST__REQUEST_ROLE_DELETE: return rr->role_delete != NULL;
    case CAIRNINT__RAFT_REQUEST__REQUEST_ROLE_GRANT_PERMISSION: return rr->role_grant_permission != NULL;
    case CAIRNINT__RAFT_REQUEST__REQUEST_ROLE_REVOKE_PERMISSION: return rr->role_revoke_permission != NULL;
    default: return 0;
    }
}

int auth_store_change(const Cairnint__AuthStore *st, const Cairnint__RaftRequest *rr, uint8_t **out,
                      size_t *out_len)
{
    struct kvconv_arena a;
    struct view v;
    int rc;
    *out = NULL;
    *out_len = 0;
    if (!body_present(rr))
        return CAIRN_E_INVALID_ARGUMENT;
    kvconv_arena_init(&a);
    if ((rc = view_init(&v, st, &a)) != 0)
        goto out;
    switch (rr->request_case) {
    case CAIRNINT__RAFT_REQUEST__REQUEST_AUTH_ENABLE: {
        if (st->enabled) {
            rc = -1;
            break;
        }
        const Cairnint__AuthUser *root = auth_find_user(st, AUTH_ROOT_USER);
        if (!root)
            rc = CAIRN_E_ROOT_USER_MISSING;
        else if (!auth_user_has_role(root, AUTH_ROOT_ROLE))
            rc = CAIRN_E_ROOT_ROLE_MISSING;
        else
            v.s.enabled = 1;
        break;
    }
    case CAIRNINT__RAFT_REQUEST__REQUEST_AUTH_DISABLE:
        if (!st->enabled) {
            rc = -1;
            break;
        }
        v.s.enabled = 0;
        v.s.tokens_revision = v.s.revision;
        break;
    case CAIRNINT__RAFT_REQUEST__REQUEST_USER_ADD:
    case CAIRNINT__RAFT_REQUEST__REQUEST_USER_DELETE:
    case CAIRNINT__RAFT_REQUEST__REQUEST_USER_CHANGE_PASSWORD:
    case CAIRNINT__RAFT_REQUEST__REQUEST_USER_GRANT_ROLE:
    case CAIRNINT__RAFT_REQUEST__REQUEST_USER_REVOKE_ROLE:
        rc = change_user(&v, rr);
        break;
    default:
        rc = change_role(&v, rr);
        break;
    }
    if (rc == -1) {
        rc = 0; /* nothing changes: no record write, the revision stays */
        goto out;
    }
    if (rc != 0)
        goto out;
    *out_len = cairnint__auth_store__get_packed_size(&v.s);
    if (!(*out = malloc(*out_len ? *out_len : 1))) {
        rc = ENOMEM;
        goto out;
    }
    cairnint__auth_store__pack(&v.s, *out);
out:
    kvconv_arena_free(&a);
    return rc;
}

/* ---------------------------------------------------------------- the permission matcher */

/*
 * A key bound: the key p, or (succ) the key p followed by one zero byte -- the
 * next key after p, which ends a single-key range -- or (inf) beyond every key.
 */
struct xkey {
    const uint8_t *p;
    size_t len;
    int succ, inf;
};

static int xcmp(const struct xkey *a, const struct xkey *b)
{
    if (a->inf || b->inf)
        return a->inf - b->inf;
    size_t al = a->len + (size_t)a->succ, bl = b->len + (size_t)b->succ, n = al < bl ? al : bl;
    for (size_t i = 0; i < n; i++) {
        uint8_t ca = i < a->len ? a->p[i] : 0, cb = i < b->len ? b->p[i] : 0;
        if (ca != cb)
            return ca < cb ? -1 : 1;
    }
    return al < bl ? -1 : al > bl;
}

struct ival {
    struct xkey start, end;
};

static int keycmp(const uint8_t *a, size_t al, const uint8_t *b, size_t bl)
{
    size_t n = al < bl ? al : bl;
    int c = n ? memcmp(a, b, n) : 0;
    if (c)
        return c;
    return al < bl ? -1 : al > bl;
}

/* etcd's encoding -> interval.  An end at or below the key is read as the key alone (conservative). */
static void to_ival(struct ival *iv, const uint8_t *key, size_t kl, const uint8_t *end, size_t el)
{
    memset(iv, 0, sizeof(*iv));
    iv->start.p = key;
    iv->start.len = kl;
    if (el == 1 && end[0] == 0) {
        iv->end.inf = 1;
    } else if (el == 0 || keycmp(end, el, key, kl) <= 0) {
        iv->end = iv->start;
        iv->end.succ = 1;
    } else {
        iv->end.p = end;
        iv->end.len = el;
    }
}

static int ival_start_cmp(const void *x, const void *y)
{
    const struct ival *a = x, *b = y;
    return xcmp(&a->start, &b->start);
}

static int perm_serves(int perm_type, enum auth_need need)
{
    if (perm_type == CAIRN__PERMISSION__TYPE__READWRITE)
        return 1;
    return need == AUTH_NEED_READ ? perm_type == CAIRN__PERMISSION__TYPE__READ
                                  : perm_type == CAIRN__PERMISSION__TYPE__WRITE;
}

int auth_range_allowed(const Cairnint__AuthStore *st, const char *user, enum auth_need need, const uint8_t *key,
                       size_t key_len, const uint8_t *end, size_t end_len)
{
    if (auth_is_admin(st, user))
        return 1;
    const Cairnint__AuthUser *u = auth_find_user(st, user);
    if (!u)
        return 0;
    size_t n = 0;
    for (size_t i = 0; i < u->n_roles; i++) {
        const Cairnint__AuthRole *r = auth_find_role(st, u->roles[i]);
        for (size_t j = 0; r && j < r->n_perms; j++)
            n += perm_serves(r->perms[j]->perm_type, need);
    }
    if (!n)
        return 0;
    struct ival stack[32], *ivs = n <= 32 ? stack : malloc(n * sizeof(*ivs));
    if (!ivs)
        return 0;
    size_t k = 0;
    for (size_t i = 0; i < u->n_roles; i++) {
        const Cairnint__AuthRole *r = auth_find_role(st, u->roles[i]);
        for (size_t j = 0; r && j < r->n_perms; j++)
            if (perm_serves(r->perms[j]->perm_type, need))
                to_ival(&ivs[k++], r->perms[j]->key.data, r->perms[j]->key.len, r->perms[j]->range_end.data,
                        r->perms[j]->range_end.len);
    }
    qsort(ivs, n, sizeof(*ivs), ival_start_cmp);
    struct ival want;
    to_ival(&want, key, key_len, end, end_len);
    /* sweep in start order: covered is how far from want's start the permissions reach without a gap */
    struct xkey covered = want.start;
    int ok = 0;
    for (size_t i = 0; i < n && !ok; i++) {
        if (xcmp(&ivs[i].start, &covered) > 0)
            break; /* a gap: every later interval starts later still */
        if (xcmp(&ivs[i].end, &covered) > 0)
            covered = ivs[i].end;
        ok = xcmp(&covered, &want.end) >= 0;
    }
    if (ivs != stack)
        free(ivs);
    return ok;
}
