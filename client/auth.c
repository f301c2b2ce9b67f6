/*
 * libcairn: auth (enable, disable, status, authenticate) and the user and
 * role calls.  Thin wrappers over the Auth*, User* and Role* requests that
 * copy answers into plain C (strings, cairn_permission) so callers need no
 * protobuf.  cairn_authenticate keeps the credentials for one automatic
 * re-authentication when a token expires (cairn_call, call.c).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/errors.h"
#include "client/cairn.h"
#include "client/internal.h"

/* Fill the envelope's oneof: the body cases of Request and Response carry the same numbers. */
static int call_body(struct cairn_client *c, int body_case, void *body, const struct cairn_call_opts *opts,
                     Cairn__Response **resp, struct cairn_error_detail *err)
{
    Cairn__Request req = CAIRN__REQUEST__INIT;
    req.body_case = (Cairn__Request__BodyCase)body_case;
    req.auth_enable = body; /* the oneof's members share one pointer */
    return client_call_expect(c, &req, (Cairn__Response__BodyCase)body_case, opts, resp, err);
}

static int call_simple(struct cairn_client *c, int body_case, void *body, const struct cairn_call_opts *opts,
                       struct cairn_error_detail *err)
{
    return call_body(c, body_case, body, opts, NULL, err);
}

int cairn_auth_enable(struct cairn_client *c, const struct cairn_call_opts *opts, struct cairn_error_detail *err)
{
    Cairn__AuthEnableRequest q = CAIRN__AUTH_ENABLE_REQUEST__INIT;
    return c ? call_simple(c, CAIRN__REQUEST__BODY_AUTH_ENABLE, &q, opts, err) : -EINVAL;
}

int cairn_auth_disable(struct cairn_client *c, const struct cairn_call_opts *opts, struct cairn_error_detail *err)
{
    Cairn__AuthDisableRequest q = CAIRN__AUTH_DISABLE_REQUEST__INIT;
    return c ? call_simple(c, CAIRN__REQUEST__BODY_AUTH_DISABLE, &q, opts, err) : -EINVAL;
}

int cairn_auth_status(struct cairn_client *c, const struct cairn_call_opts *opts, struct cairn_auth_status *out,
                      struct cairn_error_detail *err)
{
    Cairn__AuthStatusRequest q = CAIRN__AUTH_STATUS_REQUEST__INIT;
    Cairn__Response *resp = NULL;
    if (!c || !out)
        return -EINVAL;
    int rc = call_body(c, CAIRN__REQUEST__BODY_AUTH_STATUS, &q, opts, &resp, err);
    if (rc == 0)
        *out = (struct cairn_auth_status){resp->auth_status->enabled, resp->auth_status->auth_revision};
    cairn_response_free(resp);
    return rc;
}

/* Under mu. */
void client_forget_credentials_locked(struct cairn_client *c)
{
    if (c->auth_password)
        explicit_bzero(c->auth_password, strlen(c->auth_password));
    free(c->auth_password);
    free(c->auth_user);
    c->auth_password = c->auth_user = NULL;
}

void cairn_forget_credentials(struct cairn_client *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&c->mu);
    client_forget_credentials_locked(c);
    free(c->auth_token);
    c->auth_token = NULL;
    pthread_mutex_unlock(&c->mu);
}

/* Authenticate and install the token (not the credentials). */
static int authenticate(struct cairn_client *c, const char *name, const char *password,
                        const struct cairn_call_opts *opts, char *token, size_t tokenlen, uint32_t *ttl,
                        struct cairn_error_detail *err)
{
    Cairn__AuthenticateRequest q = CAIRN__AUTHENTICATE_REQUEST__INIT;
    Cairn__Response *resp = NULL;
    q.name = (char *)name;
    q.password = (char *)password;
    int rc = call_body(c, CAIRN__REQUEST__BODY_AUTHENTICATE, &q, opts, &resp, err);
    if (rc != 0)
        return rc;
    char *copy = strdup(resp->authenticate->token);
    if (!copy) {
        cairn_response_free(resp);
        return -ENOMEM;
    }
    pthread_mutex_lock(&c->mu);
    free(c->auth_token);
    c->auth_token = copy;
    pthread_mutex_unlock(&c->mu);
    if (token && tokenlen) {
        strncpy(token, resp->authenticate->token, tokenlen - 1);
        token[tokenlen - 1] = 0;
    }
    if (ttl)
        *ttl = resp->authenticate->ttl;
    cairn_response_free(resp);
    return 0;
}

int cairn_authenticate(struct cairn_client *c, const char *name, const char *password,
                       const struct cairn_call_opts *opts, char *token, size_t tokenlen, uint32_t *ttl,
                       struct cairn_error_detail *err)
{
    if (!c || !name || !password)
        return -EINVAL;
    int rc = authenticate(c, name, password, opts, token, tokenlen, ttl, err);
    if (rc != 0)
        return rc;
    char *u = strdup(name), *p = strdup(password);
    pthread_mutex_lock(&c->mu);
    client_forget_credentials_locked(c);
    if (u && p) {
        c->auth_user = u;
        c->auth_password = p;
    } else {
        free(u);
        free(p); /* no re-authentication without memory; the token works */
    }
    pthread_mutex_unlock(&c->mu);
    return 0;
}

int client_reauth(struct cairn_client *c, const struct cairn_call_opts *opts)
{
    char *u = NULL, *p = NULL;
    pthread_mutex_lock(&c->mu);
    if (c->auth_user && c->auth_password) {
        u = strdup(c->auth_user);
        p = strdup(c->auth_password);
    }
    pthread_mutex_unlock(&c->mu);
    int rc = -CAIRN_E_INVALID_TOKEN;
    if (u && p)
        rc = authenticate(c, u, p, opts, NULL, 0, NULL, NULL);
    if (p)
        explicit_bzero(p, strlen(p));
    free(u);
    free(p);
    return rc;
}

int cairn_user_add(struct cairn_client *c, const char *name, const char *password, const struct cairn_call_opts *opts,
                   struct cairn_error_detail *err)
{
    Cairn__UserAddRequest q = CAIRN__USER_ADD_REQUEST__INIT;
    if (!c || !name)
        return -EINVAL;
    q.name = (char *)name;
    q.password = (char *)(password ? password : "");
    q.no_password = password == NULL;
    return call_simple(c, CAIRN__REQUEST__BODY_USER_ADD, &q, opts, err);
}

int cairn_user_delete(struct cairn_client *c, const char *name, const struct cairn_call_opts *opts,
                      struct cairn_error_detail *err)
{
    Cairn__UserDeleteRequest q = CAIRN__USER_DELETE_REQUEST__INIT;
    if (!c || !name)
        return -EINVAL;
    q.name = (char *)name;
    return call_simple(c, CAIRN__REQUEST__BODY_USER_DELETE, &q, opts, err);
}

int cairn_user_change_password(struct cairn_client *c, const char *name, const char *password,
                               const struct cairn_call_opts *opts, struct cairn_error_detail *err)
{
    Cairn__UserChangePasswordRequest q = CAIRN__USER_CHANGE_PASSWORD_REQUEST__INIT;
    if (!c || !name || !password)
        return -EINVAL;
    q.name = (char *)name;
    q.password = (char *)password;
    return call_simple(c, CAIRN__REQUEST__BODY_USER_CHANGE_PASSWORD, &q, opts, err);
}

int cairn_user_grant_role(struct cairn_client *c, const char *user, const char *role,
                          const struct cairn_call_opts *opts, struct cairn_error_detail *err)
{
    Cairn__UserGrantRoleRequest q = CAIRN__USER_GRANT_ROLE_REQUEST__INIT;
    if (!c || !user || !role)
        return -EINVAL;
    q.user = (char *)user;
    q.role = (char *)role;
    return call_simple(c, CAIRN__REQUEST__BODY_USER_GRANT_ROLE, &q, opts, err);
}

int cairn_user_revoke_role(struct cairn_client *c, const char *user, const char *role,
                           const struct cairn_call_opts *opts, struct cairn_error_detail *err)
{
    Cairn__UserRevokeRoleRequest q = CAIRN__USER_REVOKE_ROLE_REQUEST__INIT;
    if (!c || !user || !role)
        return -EINVAL;
    q.name = (char *)user;
    q.role = (char *)role;
    return call_simple(c, CAIRN__REQUEST__BODY_USER_REVOKE_ROLE, &q, opts, err);
}

void cairn_strv_free(char **v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        free(v[i]);
    free(v);
}

static int strv_copy(char *const *in, size_t n, char ***out, size_t *nout)
{
    char **v = calloc(n + 1, sizeof(*v));
    if (!v)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++)
        if (!(v[i] = strdup(in[i] ? in[i] : ""))) {
            cairn_strv_free(v, i);
            return -ENOMEM;
        }
    *out = v;
    *nout = n;
    return 0;
}

int cairn_user_get(struct cairn_client *c, const char *name, const struct cairn_call_opts *opts, char ***roles,
                   size_t *n, struct cairn_error_detail *err)
{
    Cairn__UserGetRequest q = CAIRN__USER_GET_REQUEST__INIT;
    Cairn__Response *resp = NULL;
    if (!c || !name || !roles || !n)
        return -EINVAL;
    q.name = (char *)name;
    int rc = call_body(c, CAIRN__REQUEST__BODY_USER_GET, &q, opts, &resp, err);
    if (rc == 0)
        rc = strv_copy(resp->user_get->roles, resp->user_get->n_roles, roles, n);
    cairn_response_free(resp);
    return rc;
}

int cairn_user_list(struct cairn_client *c, const struct cairn_call_opts *opts, char ***names, size_t *n,
                    struct cairn_error_detail *err)
{
    Cairn__UserListRequest q = CAIRN__USER_LIST_REQUEST__INIT;
    Cairn__Response *resp = NULL;
    if (!c || !names || !n)
        return -EINVAL;
    int rc = call_body(c, CAIRN__REQUEST__BODY_USER_LIST, &q, opts, &resp, err);
    if (rc == 0)
        rc = strv_copy(resp->user_list->users, resp->user_list->n_users, names, n);
    cairn_response_free(resp);
    return rc;
}

int cairn_role_list(struct cairn_client *c, const struct cairn_call_opts *opts, char ***names, size_t *n,
                    struct cairn_error_detail *err)
{
    Cairn__RoleListRequest q = CAIRN__ROLE_LIST_REQUEST__INIT;
    Cairn__Response *resp = NULL;
    if (!c || !names || !n)
        return -EINVAL;
    int rc = call_body(c, CAIRN__REQUEST__BODY_ROLE_LIST, &q, opts, &resp, err);
    if (rc == 0)
        rc = strv_copy(resp->role_list->roles, resp->role_list->n_roles, names, n);
    cairn_response_free(resp);
    return rc;
}

int cairn_role_add(struct cairn_client *c, const char *name, const struct cairn_call_opts *opts,
                   struct cairn_error_detail *err)
{
    Cairn__RoleAddRequest q = CAIRN__ROLE_ADD_REQUEST__INIT;
    if (!c || !name)
        return -EINVAL;
    q.name = (char *)name;
    return call_simple(c, CAIRN__REQUEST__BODY_ROLE_ADD, &q, opts, err);
}

int cairn_role_delete(struct cairn_client *c, const char *name, const struct cairn_call_opts *opts,
                      struct cairn_error_detail *err)
{
    Cairn__RoleDeleteRequest q = CAIRN__ROLE_DELETE_REQUEST__INIT;
    if (!c || !name)
        return -EINVAL;
    q.role = (char *)name;
    return call_simple(c, CAIRN__REQUEST__BODY_ROLE_DELETE, &q, opts, err);
}

int cairn_role_get(struct cairn_client *c, const char *name, const struct cairn_call_opts *opts,
                   struct cairn_permission **perms, size_t *n, struct cairn_error_detail *err)
{
    Cairn__RoleGetRequest q = CAIRN__ROLE_GET_REQUEST__INIT;
    Cairn__Response *resp = NULL;
    if (!c || !name || !perms || !n)
        return -EINVAL;
    q.role = (char *)name;
    int rc = call_body(c, CAIRN__REQUEST__BODY_ROLE_GET, &q, opts, &resp, err);
    if (rc != 0)
        return rc;
    const Cairn__RoleGetResponse *r = resp->role_get;
    size_t bytes = (r->n_perm + 1) * sizeof(struct cairn_permission);
    for (size_t i = 0; i < r->n_perm; i++)
        bytes += r->perm[i] ? r->perm[i]->key.len + r->perm[i]->range_end.len + 2 : 0;
    struct cairn_permission *out = calloc(1, bytes);
    if (!out) {
        cairn_response_free(resp);
        return -ENOMEM;
    }
    char *heap = (char *)(out + r->n_perm + 1);
    size_t k = 0;
    for (size_t i = 0; i < r->n_perm; i++) {
        const Cairn__Permission *p = r->perm[i];
        if (!p)
            continue;
        out[k].type = (int)p->perm_type;
        if (p->key.len)
            memcpy(heap, p->key.data, p->key.len);
        out[k].key = (struct cairn_bytes){heap, p->key.len};
        heap += p->key.len + 1;
        if (p->range_end.len)
            memcpy(heap, p->range_end.data, p->range_end.len);
        out[k].range_end = (struct cairn_bytes){heap, p->range_end.len};
        heap += p->range_end.len + 1;
        k++;
    }
    *perms = out;
    *n = k;
    cairn_response_free(resp);
    return 0;
}

int cairn_role_grant_permission(struct cairn_client *c, const char *role, const struct cairn_permission *p,
                                const struct cairn_call_opts *opts, struct cairn_error_detail *err)
{
    Cairn__RoleGrantPermissionRequest q = CAIRN__ROLE_GRANT_PERMISSION_REQUEST__INIT;
    Cairn__Permission perm = CAIRN__PERMISSION__INIT;
    if (!c || !role || !p)
        return -EINVAL;
    perm.perm_type = (Cairn__Permission__Type)p->type;
    perm.key = (ProtobufCBinaryData){p->key.len, (uint8_t *)p->key.data};
    perm.range_end = (ProtobufCBinaryData){p->range_end.len, (uint8_t *)p->range_end.data};
    q.name = (char *)role;
    q.perm = &perm;
    return call_simple(c, CAIRN__REQUEST__BODY_ROLE_GRANT_PERMISSION, &q, opts, err);
}

int cairn_role_revoke_permission(struct cairn_client *c, const char *role, struct cairn_bytes key,
                                 struct cairn_bytes range_end, const struct cairn_call_opts *opts,
                                 struct cairn_error_detail *err)
{
    Cairn__RoleRevokePermissionRequest q = CAIRN__ROLE_REVOKE_PERMISSION_REQUEST__INIT;
    if (!c || !role)
        return -EINVAL;
    q.role = (char *)role;
    q.key = (ProtobufCBinaryData){key.len, (uint8_t *)key.data};
    q.range_end = (ProtobufCBinaryData){range_end.len, (uint8_t *)range_end.data};
    return call_simple(c, CAIRN__REQUEST__BODY_ROLE_REVOKE_PERMISSION, &q, opts, err);
}

int cairn_reauthenticate(struct cairn_client *c, const struct cairn_call_opts *opts)
{
    return c ? client_reauth(c, opts) : -EINVAL;
}
