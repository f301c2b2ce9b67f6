/*
 * The leases table: one row per lease (LeaseLeases, then LeaseTimeToLive for
 * each, or only for the one an id = ... names).  INSERT grants (the new ID
 * is the row's rowid, so last_insert_rowid() gives it), DELETE revokes.
 * These run at once, each its own Raft request: they are not part of the
 * keys' transaction.
 */
#include <stdlib.h>
#include <string.h>

#include "shell/shell.h"

enum { L_ID, L_TTL, L_GRANTED, L_KEYS, L_NCOLS };

struct lvtab {
    sqlite3_vtab base;
    struct shell *sh;
};

static int l_connect(sqlite3 *db, void *aux, int argc, const char *const *argv,
                     sqlite3_vtab **out, char **err)
{
    (void)argc;
    (void)argv;
    (void)err;
    int rc = vt_declare(db, "CREATE TABLE x(id INTEGER, ttl INTEGER, granted_ttl INTEGER, keys TEXT)");
    if (rc != SQLITE_OK)
        return rc;
    struct lvtab *t = sqlite3_malloc(sizeof *t);
    if (!t)
        return SQLITE_NOMEM;
    memset(t, 0, sizeof *t);
    t->sh = aux;
    *out = &t->base;
    return SQLITE_OK;
}

static int l_disconnect(sqlite3_vtab *vt)
{
    sqlite3_free(vt);
    return SQLITE_OK;
}

static int l_best_index(sqlite3_vtab *vt, sqlite3_index_info *ii)
{
    (void)vt;
    ii->estimatedCost = 1000;
    for (int i = 0; i < ii->nConstraint; i++) {
        const struct sqlite3_index_constraint *c = &ii->aConstraint[i];
        if (c->usable && c->op == SQLITE_INDEX_CONSTRAINT_EQ &&
            (c->iColumn == L_ID || c->iColumn == -1)) {
            ii->aConstraintUsage[i].argvIndex = 1;
            ii->aConstraintUsage[i].omit = 1;
            ii->idxNum = 1;
            ii->idxStr = "id=";
            ii->estimatedCost = 1;
            ii->estimatedRows = 1;
            ii->idxFlags = SQLITE_INDEX_SCAN_UNIQUE;
            break;
        }
    }
    return SQLITE_OK;
}

/* keys_json: the attached keys as a JSON array (non-UTF-8 keys as {"base64": ...}). */
static int keys_json(struct sbuf *b, const Cairn__LeaseTimeToLiveResponse *t)
{
    int rc = sbuf_puts(b, "[");
    for (size_t i = 0; i < t->n_keys && rc == 0; i++) {
        const ProtobufCBinaryData *k = &t->keys[i];
        if (i)
            sbuf_puts(b, ",");
        if (bytes_utf8(k->data, k->len)) {
            sbuf_puts(b, "\"");
            for (size_t j = 0; j < k->len && rc == 0; j++) {
                uint8_t c = k->data[j];
                if (c == '"' || c == '\\')
                    rc = sbuf_printf(b, "\\%c", c);
                else if (c < 0x20)
                    rc = sbuf_printf(b, "\\u%04x", c);
                else
                    rc = sbuf_add(b, &c, 1);
            }
            sbuf_puts(b, "\"");
        } else {
            sbuf_puts(b, "{\"base64\":\"");
            bytes_base64(b, k->data, k->len);
            rc = sbuf_puts(b, "\"}");
        }
    }
    return rc == 0 ? sbuf_puts(b, "]") : rc;
}

/* add_lease: one row from LeaseTimeToLive; a lease that is gone gives none. */
static int add_lease(sqlite3_vtab *vt, struct vrows *rows, int64_t id, bool want_keys)
{
    struct shell *sh = ((struct lvtab *)vt)->sh;
    Cairn__Request req = CAIRN__REQUEST__INIT;
    Cairn__LeaseTimeToLiveRequest q = CAIRN__LEASE_TIME_TO_LIVE_REQUEST__INIT;
    Cairn__Response *resp;
    struct cairn_error_detail err;
    q.id = id;
    q.keys = want_keys;
    req.body_case = CAIRN__REQUEST__BODY_LEASE_TIME_TO_LIVE;
    req.lease_time_to_live = &q;
    int rc = shell_call_expect(sh, &req, CAIRN__RESPONSE__BODY_LEASE_TIME_TO_LIVE, NULL, false, &resp,
                               &err);
    if (rc == -CAIRN_E_LEASE_NOT_FOUND)
        return SQLITE_OK;
    if (rc != 0)
        return vt_call_error(vt, "leases", rc, &err);
    const Cairn__LeaseTimeToLiveResponse *t = resp->lease_time_to_live;
    int src = SQLITE_OK;
    if (t->ttl >= 0) {
        struct sbuf keys = {0};
        src = vrows_add(rows, id);
        if (src == SQLITE_OK) {
            vrows_int(rows, L_ID, id);
            vrows_int(rows, L_TTL, t->ttl);
            vrows_int(rows, L_GRANTED, t->granted_ttl);
            if (want_keys && keys_json(&keys, t) == 0)
                src = vrows_text(rows, L_KEYS, keys.p, keys.n);
        }
        sbuf_free(&keys);
    }
    cairn_response_free(resp);
    return src;
}

static int l_filter(sqlite3_vtab_cursor *cur, int idx_num, const char *idx_str, int argc,
                    sqlite3_value **argv)
{
    struct vrows_cursor *c = (struct vrows_cursor *)cur;
    sqlite3_vtab *vt = cur->pVtab;
    struct shell *sh = ((struct lvtab *)vt)->sh;
    (void)idx_str;
    vrows_clear(&c->rows);
    c->rows.ncols = L_NCOLS;
    c->at = 0;
    if (idx_num == 1 && argc == 1) {
        if (sqlite3_value_numeric_type(argv[0]) != SQLITE_INTEGER)
            return SQLITE_OK;
        return add_lease(vt, &c->rows, sqlite3_value_int64(argv[0]), true);
    }
    Cairn__Request req = CAIRN__REQUEST__INIT;
    Cairn__LeaseLeasesRequest q = CAIRN__LEASE_LEASES_REQUEST__INIT;
    Cairn__Response *resp;
    struct cairn_error_detail err;
    req.body_case = CAIRN__REQUEST__BODY_LEASE_LEASES;
    req.lease_leases = &q;
    int rc = shell_call_expect(sh, &req, CAIRN__RESPONSE__BODY_LEASE_LEASES, NULL, false, &resp, &err);
    if (rc != 0)
        return vt_call_error(vt, "leases", rc, &err);
    int src = SQLITE_OK;
    for (size_t i = 0; i < resp->lease_leases->n_leases && src == SQLITE_OK; i++)
        if (resp->lease_leases->leases[i])
            src = add_lease(vt, &c->rows, resp->lease_leases->leases[i]->id, true);
    cairn_response_free(resp);
    return src;
}

static int lease_grant(sqlite3_vtab *vt, sqlite3_value **col, sqlite3_value *rowid, sqlite3_int64 *out)
{
    struct shell *sh = ((struct lvtab *)vt)->sh;
    if (sqlite3_value_numeric_type(col[L_TTL]) != SQLITE_INTEGER || sqlite3_value_int64(col[L_TTL]) < 1)
        return vt_error(vt, "leases: INSERT needs ttl, in seconds (1 or more)");
    if (sqlite3_value_type(col[L_GRANTED]) != SQLITE_NULL || sqlite3_value_type(col[L_KEYS]) != SQLITE_NULL)
        return vt_error(vt, "leases: INSERT gives ttl and optionally id; keys attach with "
                            "INSERT INTO keys(key, value, lease)");
    Cairn__Request req = CAIRN__REQUEST__INIT;
    Cairn__LeaseGrantRequest q = CAIRN__LEASE_GRANT_REQUEST__INIT;
    Cairn__Response *resp;
    struct cairn_error_detail err;
    q.ttl = sqlite3_value_int64(col[L_TTL]);
    if (sqlite3_value_type(col[L_ID]) != SQLITE_NULL)
        q.id = sqlite3_value_int64(col[L_ID]);
    else if (sqlite3_value_type(rowid) != SQLITE_NULL)
        q.id = sqlite3_value_int64(rowid);
    req.body_case = CAIRN__REQUEST__BODY_LEASE_GRANT;
    req.lease_grant = &q;
    int rc = shell_call_expect(sh, &req, CAIRN__RESPONSE__BODY_LEASE_GRANT, NULL, true, &resp, &err);
    if (rc != 0)
        return vt_call_error(vt, "leases: granting", rc, &err);
    *out = resp->lease_grant->id;
    shell_notice(sh, "lease %lld granted, ttl %lld s", (long long)resp->lease_grant->id,
                 (long long)resp->lease_grant->ttl);
    cairn_response_free(resp);
    return SQLITE_OK;
}

static int lease_revoke(sqlite3_vtab *vt, int64_t id)
{
    struct shell *sh = ((struct lvtab *)vt)->sh;
    Cairn__Request req = CAIRN__REQUEST__INIT;
    Cairn__LeaseRevokeRequest q = CAIRN__LEASE_REVOKE_REQUEST__INIT;
    Cairn__Response *resp;
    struct cairn_error_detail err;
    q.id = id;
    req.body_case = CAIRN__REQUEST__BODY_LEASE_REVOKE;
    req.lease_revoke = &q;
    int rc = shell_call_expect(sh, &req, CAIRN__RESPONSE__BODY_LEASE_REVOKE, NULL, true, &resp, &err);
    if (rc != 0) {
        char what[64];
        snprintf(what, sizeof what, "leases: revoking %lld", (long long)id);
        return vt_call_error(vt, what, rc, &err);
    }
    shell_notice(sh, "lease %lld revoked (its keys are deleted)", (long long)id);
    if (resp->header)
        sh->commit_rev = sh->last_commit_rev = resp->header->revision;
    cairn_response_free(resp);
    return SQLITE_OK;
}

static int l_update(sqlite3_vtab *vt, int argc, sqlite3_value **argv, sqlite3_int64 *rowid)
{
    if (argc == 1)
        return lease_revoke(vt, sqlite3_value_int64(argv[0]));
    if (sqlite3_value_type(argv[0]) == SQLITE_NULL)
        return lease_grant(vt, argv + 2, argv[1], rowid);
    return vt_error(vt, "leases: a lease cannot be changed; renew it with SELECT keepalive(id) or "
                        "\\lease keepalive ID, or revoke it with DELETE");
}

static const sqlite3_module leases_module = {
    .iVersion = 1,
    .xCreate = l_connect,
    .xConnect = l_connect,
    .xBestIndex = l_best_index,
    .xDisconnect = l_disconnect,
    .xDestroy = l_disconnect,
    .xOpen = vrows_cursor_open,
    .xClose = vrows_cursor_close,
    .xFilter = l_filter,
    .xNext = vrows_cursor_next,
    .xEof = vrows_cursor_eof,
    .xColumn = vrows_cursor_column,
    .xRowid = vrows_cursor_rowid,
    .xUpdate = l_update,
};

int vt_leases_register(struct shell *sh)
{
    return sqlite3_create_module_v2(sh->db, "cairn_leases", &leases_module, sh, NULL);
}
