/*
 * The auth tables (docs/auth.md): users (name, roles; a hidden password
 * column that is only written), roles (name) and permissions (role, type,
 * key, range_end).  Reads list everything (UserList + UserGet, RoleList +
 * RoleGet); writes map to the auth calls at once, one request each, outside
 * the keys table's transactions: INSERT INTO users adds a user (and grants
 * the roles given), UPDATE users SET password changes it, SET roles grants
 * and revokes the difference, DELETE deletes; roles INSERT/DELETE; a
 * permissions row INSERTed is granted, DELETEd revoked, an UPDATE of its
 * type grants it again with the new type.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "shell/shell.h"

enum { U_NAME, U_ROLES, U_PASSWORD, U_NCOLS };
enum { R_NAME, R_NCOLS };
enum { P_ROLE, P_TYPE, P_KEY, P_END, P_NCOLS };

struct avtab {
    sqlite3_vtab base;
    struct shell *sh;
    int kind; /* 'u', 'r', 'p' */
    /* permissions: the rows of the last scan, so a DELETE or UPDATE by rowid knows its key */
    struct vrows last;
};

static const char *const type_names[] = {"READ", "WRITE", "READWRITE"};

static int a_connect(sqlite3 *db, void *aux, int argc, const char *const *argv, sqlite3_vtab **out, char **err,
                     int kind)
{
    (void)argc;
    (void)argv;
    (void)err;
    const char *schema =
        kind == 'u' ? "CREATE TABLE x(name TEXT PRIMARY KEY, roles TEXT, password TEXT HIDDEN) WITHOUT ROWID"
        : kind == 'r' ? "CREATE TABLE x(name TEXT PRIMARY KEY) WITHOUT ROWID"
                      : "CREATE TABLE x(role TEXT, type TEXT, key BLOB, range_end BLOB)";
    int rc = vt_declare(db, schema);
    if (rc != SQLITE_OK)
        return rc;
    struct avtab *t = sqlite3_malloc(sizeof *t);
    if (!t)
        return SQLITE_NOMEM;
    memset(t, 0, sizeof *t);
    t->sh = aux;
    t->kind = kind;
    t->last.ncols = P_NCOLS;
    *out = &t->base;
    return SQLITE_OK;
}

static int u_connect(sqlite3 *db, void *aux, int argc, const char *const *argv, sqlite3_vtab **out, char **err)
{
    return a_connect(db, aux, argc, argv, out, err, 'u');
}

static int r_connect(sqlite3 *db, void *aux, int argc, const char *const *argv, sqlite3_vtab **out, char **err)
{
    return a_connect(db, aux, argc, argv, out, err, 'r');
}

static int p_connect(sqlite3 *db, void *aux, int argc, const char *const *argv, sqlite3_vtab **out, char **err)
{
    return a_connect(db, aux, argc, argv, out, err, 'p');
}

static int a_disconnect(sqlite3_vtab *vt)
{
    vrows_clear(&((struct avtab *)vt)->last);
    sqlite3_free(vt);
    return SQLITE_OK;
}

static int a_best_index(sqlite3_vtab *vt, sqlite3_index_info *ii)
{
    (void)vt;
    ii->estimatedCost = 100; /* a few calls list them all */
    return SQLITE_OK;
}

static struct cairn_client *client_of(sqlite3_vtab *vt)
{
    struct shell *sh = ((struct avtab *)vt)->sh;
    if (!sh->client)
        vt_error(vt, "not connected (use \\connect)");
    return sh->client;
}

static int fill_users(sqlite3_vtab *vt, struct vrows *rows)
{
    struct cairn_client *c = client_of(vt);
    struct cairn_error_detail err;
    char **names = NULL;
    size_t n = 0;
    if (!c)
        return SQLITE_ERROR;
    int rc = cairn_user_list(c, NULL, &names, &n, &err);
    if (rc != 0)
        return vt_call_error(vt, "users", rc, &err);
    int src = SQLITE_OK;
    for (size_t i = 0; i < n && src == SQLITE_OK; i++) {
        char **roles = NULL;
        size_t nr = 0;
        if ((rc = cairn_user_get(c, names[i], NULL, &roles, &nr, &err)) != 0) {
            src = vt_call_error(vt, "users", rc, &err);
            break;
        }
        struct sbuf b = {0};
        for (size_t k = 0; k < nr; k++)
            sbuf_printf(&b, "%s%s", k ? "," : "", roles[k]);
        if ((src = vrows_add(rows, (int64_t)i)) == SQLITE_OK) {
            vrows_text(rows, U_NAME, names[i], strlen(names[i]));
            vrows_text(rows, U_ROLES, b.p ? b.p : "", b.n);
        }
        sbuf_free(&b);
        cairn_strv_free(roles, nr);
    }
    cairn_strv_free(names, n);
    return src;
}

static int fill_roles(sqlite3_vtab *vt, struct vrows *rows, int with_perms)
{
    struct cairn_client *c = client_of(vt);
    struct cairn_error_detail err;
    char **names = NULL;
    size_t n = 0;
    int64_t rowid = 0;
    if (!c)
        return SQLITE_ERROR;
    int rc = cairn_role_list(c, NULL, &names, &n, &err);
    if (rc != 0)
        return vt_call_error(vt, with_perms ? "permissions" : "roles", rc, &err);
    int src = SQLITE_OK;
    for (size_t i = 0; i < n && src == SQLITE_OK; i++) {
        if (!with_perms) {
            if ((src = vrows_add(rows, rowid++)) == SQLITE_OK)
                vrows_text(rows, R_NAME, names[i], strlen(names[i]));
            continue;
        }
        struct cairn_permission *p = NULL;
        size_t np = 0;
        if ((rc = cairn_role_get(c, names[i], NULL, &p, &np, &err)) != 0) {
            src = vt_call_error(vt, "permissions", rc, &err);
            break;
        }
        for (size_t k = 0; k < np && src == SQLITE_OK; k++) {
            if ((src = vrows_add(rows, rowid++)) != SQLITE_OK)
                break;
            const char *t = p[k].type >= 0 && p[k].type <= 2 ? type_names[p[k].type] : "?";
            vrows_text(rows, P_ROLE, names[i], strlen(names[i]));
            vrows_text(rows, P_TYPE, t, strlen(t));
            vrows_bytes(rows, P_KEY, p[k].key.data, p[k].key.len);
            vrows_bytes(rows, P_END, p[k].range_end.data, p[k].range_end.len);
        }
        free(p);
    }
    cairn_strv_free(names, n);
    return src;
}

static int copy_rows(struct vrows *dst, const struct vrows *src)
{
    vrows_clear(dst);
    dst->ncols = src->ncols;
    for (size_t i = 0; i < src->nrows; i++) {
        int rc = vrows_add(dst, src->rowids[i]);
        for (int k = 0; rc == SQLITE_OK && k < src->ncols; k++) {
            const struct ocell *cell = &src->cells[i * (size_t)src->ncols + (size_t)k];
            rc = cell->type == SQLITE_BLOB ? vrows_bytes(dst, k, cell->s, cell->n)
                                           : vrows_text(dst, k, cell->s ? cell->s : "", cell->n);
        }
        if (rc != SQLITE_OK)
            return rc;
    }
    return SQLITE_OK;
}

static int a_filter(sqlite3_vtab_cursor *cur, int idx_num, const char *idx_str, int argc, sqlite3_value **argv)
{
    struct vrows_cursor *c = (struct vrows_cursor *)cur;
    struct avtab *t = (struct avtab *)cur->pVtab;
    (void)idx_num;
    (void)idx_str;
    (void)argc;
    (void)argv;
    vrows_clear(&c->rows);
    c->at = 0;
    if (t->kind == 'u') {
        c->rows.ncols = U_NCOLS;
        return fill_users(cur->pVtab, &c->rows);
    }
    c->rows.ncols = t->kind == 'r' ? R_NCOLS : P_NCOLS;
    int rc = fill_roles(cur->pVtab, &c->rows, t->kind == 'p');
    if (rc == SQLITE_OK && t->kind == 'p')
        rc = copy_rows(&t->last, &c->rows);
    return rc;
}

/* ---------------------------------------------------------------- writes */

static const char *text_of(sqlite3_value *v)
{
    return sqlite3_value_type(v) == SQLITE_NULL ? NULL : (const char *)sqlite3_value_text(v);
}

static int done(sqlite3_vtab *vt, const char *what, int rc, const struct cairn_error_detail *err)
{
    return rc == 0 ? SQLITE_OK : vt_call_error(vt, what, rc, err);
}

/* Grant the roles of the comma-separated list want that have is missing; revoke the rest when revoke. */
static int sync_roles(sqlite3_vtab *vt, const char *user, const char *want, char **have, size_t nhave, int revoke)
{
    struct cairn_client *c = client_of(vt);
    struct cairn_error_detail err;
    char *copy = strdup(want ? want : ""), *save = NULL;
    int rc = 0;
    if (!copy)
        return SQLITE_NOMEM;
    for (char *r = strtok_r(copy, ", ", &save); r && rc == 0; r = strtok_r(NULL, ", ", &save)) {
        int has = 0;
        for (size_t i = 0; i < nhave; i++)
            has |= !strcmp(have[i], r);
        if (!has)
            rc = cairn_user_grant_role(c, user, r, NULL, &err);
    }
    free(copy);
    for (size_t i = 0; revoke && rc == 0 && i < nhave; i++) {
        int keep = 0;
        copy = strdup(want ? want : "");
        if (!copy)
            return SQLITE_NOMEM;
        for (char *r = strtok_r(copy, ", ", &save); r; r = strtok_r(NULL, ", ", &save))
            keep |= !strcmp(have[i], r);
        free(copy);
        if (!keep)
            rc = cairn_user_revoke_role(c, user, have[i], NULL, &err);
    }
    return done(vt, "users: roles", rc, &err);
}

static int u_update(sqlite3_vtab *vt, int argc, sqlite3_value **argv, sqlite3_int64 *rowid)
{
    struct cairn_client *c = client_of(vt);
    struct cairn_error_detail err;
    (void)rowid;
    if (!c)
        return SQLITE_ERROR;
    if (argc == 1) {
        const char *name = text_of(argv[0]);
        return name ? done(vt, "users: deleting", cairn_user_delete(c, name, NULL, &err), &err)
                    : vt_error(vt, "users: no such user");
    }
    sqlite3_value **col = argv + 2;
    const char *name = sqlite3_value_nochange(col[U_NAME]) ? text_of(argv[0]) : text_of(col[U_NAME]);
    if (!name || !*name)
        return vt_error(vt, "users: a user needs a name");
    if (sqlite3_value_type(argv[0]) == SQLITE_NULL) {
        /* INSERT INTO users(name, password[, roles]): NULL password = a user reached only through ipc */
        int rc = cairn_user_add(c, name, text_of(col[U_PASSWORD]), NULL, &err);
        if (rc != 0)
            return vt_call_error(vt, "users: adding", rc, &err);
        return text_of(col[U_ROLES]) ? sync_roles(vt, name, text_of(col[U_ROLES]), NULL, 0, 0) : SQLITE_OK;
    }
    const char *old = text_of(argv[0]);
    if (!old || strcmp(old, name))
        return vt_error(vt, "users: a user cannot be renamed (add a new one, then delete the old one)");
    if (!sqlite3_value_nochange(col[U_PASSWORD])) {
        const char *pw = text_of(col[U_PASSWORD]);
        if (!pw)
            return vt_error(vt, "users: the password cannot be set to NULL");
        int rc = cairn_user_change_password(c, name, pw, NULL, &err);
        if (rc != 0)
            return vt_call_error(vt, "users: changing the password", rc, &err);
    }
    if (!sqlite3_value_nochange(col[U_ROLES])) {
        char **have = NULL;
        size_t nhave = 0;
        int rc = cairn_user_get(c, name, NULL, &have, &nhave, &err);
        if (rc != 0)
            return vt_call_error(vt, "users: roles", rc, &err);
        int src = sync_roles(vt, name, text_of(col[U_ROLES]), have, nhave, 1);
        cairn_strv_free(have, nhave);
        return src;
    }
    return SQLITE_OK;
}

static int r_update(sqlite3_vtab *vt, int argc, sqlite3_value **argv, sqlite3_int64 *rowid)
{
    struct cairn_client *c = client_of(vt);
    struct cairn_error_detail err;
    (void)rowid;
    if (!c)
        return SQLITE_ERROR;
    if (argc == 1) {
        const char *name = text_of(argv[0]);
        return name ? done(vt, "roles: deleting", cairn_role_delete(c, name, NULL, &err), &err)
                    : vt_error(vt, "roles: no such role");
    }
    if (sqlite3_value_type(argv[0]) != SQLITE_NULL)
        return vt_error(vt, "roles: a role cannot be renamed; its permissions are in the permissions table");
    const char *name = text_of(argv[2 + R_NAME]);
    if (!name || !*name)
        return vt_error(vt, "roles: a role needs a name");
    return done(vt, "roles: adding", cairn_role_add(c, name, NULL, &err), &err);
}

static int parse_type(const char *s)
{
    for (int i = 0; s && i < 3; i++)
        if (!strcasecmp(s, type_names[i]))
            return i;
    if (s && (!strcasecmp(s, "RW") || !strcasecmp(s, "READ WRITE")))
        return 2;
    return -1;
}

/* The permission row with rowid id from the last scan. */
static int last_row(struct avtab *t, sqlite3_int64 id, const struct ocell **row)
{
    for (size_t i = 0; i < t->last.nrows; i++)
        if (t->last.rowids[i] == id) {
            *row = &t->last.cells[i * P_NCOLS];
            return 1;
        }
    return 0;
}

static int p_update(sqlite3_vtab *vt, int argc, sqlite3_value **argv, sqlite3_int64 *rowid)
{
    struct avtab *t = (struct avtab *)vt;
    struct cairn_client *c = client_of(vt);
    struct cairn_error_detail err;
    const struct ocell *row;
    (void)rowid;
    if (!c)
        return SQLITE_ERROR;
    if (argc == 1) {
        if (!last_row(t, sqlite3_value_int64(argv[0]), &row))
            return vt_error(vt, "permissions: the row to delete was not in the last scan");
        struct cairn_bytes key = {row[P_KEY].s, row[P_KEY].n}, end = {row[P_END].s, row[P_END].n};
        return done(vt, "permissions: revoking",
                    cairn_role_revoke_permission(c, row[P_ROLE].s, key, end, NULL, &err), &err);
    }
    sqlite3_value **col = argv + 2;
    if (sqlite3_value_type(argv[0]) != SQLITE_NULL) {
        /* UPDATE: only the type may change (granting the same range again replaces its type) */
        if (!last_row(t, sqlite3_value_int64(argv[0]), &row))
            return vt_error(vt, "permissions: the row to update was not in the last scan");
        if (!sqlite3_value_nochange(col[P_ROLE]) || !sqlite3_value_nochange(col[P_KEY]) ||
            !sqlite3_value_nochange(col[P_END]))
            return vt_error(vt, "permissions: only type can be updated; DELETE the row and INSERT another to "
                                "change its role, key or range_end");
        int type = parse_type(text_of(col[P_TYPE]));
        if (type < 0)
            return vt_error(vt, "permissions: type is READ, WRITE or READWRITE, not '%s'",
                            text_of(col[P_TYPE]) ? text_of(col[P_TYPE]) : "NULL");
        struct cairn_permission p = {.type = type, .key = {row[P_KEY].s, row[P_KEY].n},
                                     .range_end = {row[P_END].s, row[P_END].n}};
        return done(vt, "permissions: changing the type",
                    cairn_role_grant_permission(c, row[P_ROLE].s, &p, NULL, &err), &err);
    }
    const char *role = text_of(col[P_ROLE]);
    int type = parse_type(text_of(col[P_TYPE]));
    if (!role || !*role)
        return vt_error(vt, "permissions: a permission needs a role");
    if (type < 0)
        return vt_error(vt, "permissions: type is READ, WRITE or READWRITE, not '%s'",
                        text_of(col[P_TYPE]) ? text_of(col[P_TYPE]) : "NULL");
    size_t kl = 0, el = 0;
    const uint8_t *k = value_bytes(col[P_KEY], &kl), *e = value_bytes(col[P_END], &el);
    if (!k || !kl)
        return vt_error(vt, "permissions: a permission needs a key (x'00' with range_end x'00' is every key)");
    struct cairn_permission p = {.type = type, .key = {k, kl}, .range_end = {e, el}};
    return done(vt, "permissions: granting", cairn_role_grant_permission(c, role, &p, NULL, &err), &err);
}

#define MODULE(name, connect, update)                                                                                \
    static const sqlite3_module name = {                                                                             \
        .iVersion = 1,                                                                                               \
        .xCreate = connect,                                                                                          \
        .xConnect = connect,                                                                                         \
        .xBestIndex = a_best_index,                                                                                  \
        .xDisconnect = a_disconnect,                                                                                 \
        .xDestroy = a_disconnect,                                                                                    \
        .xOpen = vrows_cursor_open,                                                                                  \
        .xClose = vrows_cursor_close,                                                                                \
        .xFilter = a_filter,                                                                                         \
        .xNext = vrows_cursor_next,                                                                                  \
        .xEof = vrows_cursor_eof,                                                                                    \
        .xColumn = vrows_cursor_column,                                                                              \
        .xRowid = vrows_cursor_rowid,                                                                                \
        .xUpdate = update,                                                                                           \
    }

MODULE(users_module, u_connect, u_update);
MODULE(roles_module, r_connect, r_update);
MODULE(perms_module, p_connect, p_update);

int vt_users_register(struct shell *sh)
{
    int rc = sqlite3_create_module_v2(sh->db, "cairn_users", &users_module, sh, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_create_module_v2(sh->db, "cairn_roles", &roles_module, sh, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_create_module_v2(sh->db, "cairn_permissions", &perms_module, sh, NULL);
    return rc;
}
