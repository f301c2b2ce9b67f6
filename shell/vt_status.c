/*
 * The status table: one row per endpoint the shell was given, from a Status
 * call pinned to that endpoint; an endpoint that does not answer still has
 * its row, with the reason in the error column.  Read-only.
 */
#include <errno.h>
#include <string.h>

#include "shell/shell.h"

enum {
    S_ENDPOINT, S_MEMBER, S_NAME, S_VERSION, S_IS_LEADER, S_LEADER, S_TERM, S_INDEX, S_APPLIED,
    S_COMMIT, S_REVISION, S_COMPACT, S_DB_SIZE, S_DB_IN_USE, S_LEARNER, S_ERRORS, S_RANGES,
    S_POINT_RANGES, S_ERROR, S_NCOLS
};

struct svtab {
    sqlite3_vtab base;
    struct shell *sh;
};

static int s_connect(sqlite3 *db, void *aux, int argc, const char *const *argv,
                     sqlite3_vtab **out, char **err)
{
    (void)argc;
    (void)argv;
    (void)err;
    int rc = vt_declare(db, "CREATE TABLE x(endpoint TEXT, member_id TEXT, name TEXT, version TEXT,"
                            " is_leader INTEGER, leader TEXT, raft_term INTEGER, raft_index INTEGER,"
                            " raft_applied_index INTEGER, raft_commit_index INTEGER, revision INTEGER,"
                            " compact_revision INTEGER, db_size INTEGER, db_size_in_use INTEGER,"
                            " is_learner INTEGER, errors TEXT, ranges_served INTEGER,"
                            " point_ranges_served INTEGER, error TEXT)");
    if (rc != SQLITE_OK)
        return rc;
    struct svtab *t = sqlite3_malloc(sizeof *t);
    if (!t)
        return SQLITE_NOMEM;
    memset(t, 0, sizeof *t);
    t->sh = aux;
    *out = &t->base;
    return SQLITE_OK;
}

static int s_disconnect(sqlite3_vtab *vt)
{
    sqlite3_free(vt);
    return SQLITE_OK;
}

static int s_best_index(sqlite3_vtab *vt, sqlite3_index_info *ii)
{
    (void)vt;
    ii->estimatedCost = 10;
    return SQLITE_OK;
}

static int add_status(struct vrows *rows, size_t ep, const char *url, const Cairn__Response *r)
{
    const Cairn__StatusResponse *s = r->status;
    char hex[17];
    int rc = vrows_add(rows, (int64_t)ep);
    if (rc != SQLITE_OK)
        return rc;
    uint64_t me = r->header ? r->header->member_id : 0;
    vrows_text(rows, S_ENDPOINT, url, strlen(url));
    member_id_text(me, hex);
    vrows_text(rows, S_MEMBER, hex, 16);
    vrows_text(rows, S_NAME, s->member_name ? s->member_name : "",
               s->member_name ? strlen(s->member_name) : 0);
    vrows_text(rows, S_VERSION, s->version ? s->version : "", s->version ? strlen(s->version) : 0);
    vrows_int(rows, S_IS_LEADER, s->leader && s->leader == me);
    if (s->leader) {
        member_id_text(s->leader, hex);
        vrows_text(rows, S_LEADER, hex, 16);
    }
    vrows_int(rows, S_TERM, (int64_t)s->raft_term);
    vrows_int(rows, S_INDEX, (int64_t)s->raft_index);
    vrows_int(rows, S_APPLIED, (int64_t)s->raft_applied_index);
    vrows_int(rows, S_COMMIT, (int64_t)s->raft_commit_index);
    if (r->header)
        vrows_int(rows, S_REVISION, r->header->revision);
    vrows_int(rows, S_COMPACT, s->compact_revision);
    vrows_int(rows, S_DB_SIZE, s->db_size);
    vrows_int(rows, S_DB_IN_USE, s->db_size_in_use);
    vrows_int(rows, S_LEARNER, s->is_learner);
    struct sbuf e = {0};
    for (size_t i = 0; i < s->n_errors; i++)
        sbuf_printf(&e, "%s%s", i ? "; " : "", s->errors[i] ? s->errors[i] : "");
    rc = vrows_text(rows, S_ERRORS, e.p ? e.p : "", e.n);
    sbuf_free(&e);
    vrows_int(rows, S_RANGES, (int64_t)s->ranges_served);
    vrows_int(rows, S_POINT_RANGES, (int64_t)s->point_ranges_served);
    return rc;
}

static int s_filter(sqlite3_vtab_cursor *cur, int idx_num, const char *idx_str, int argc,
                    sqlite3_value **argv)
{
    struct vrows_cursor *c = (struct vrows_cursor *)cur;
    struct shell *sh = ((struct svtab *)cur->pVtab)->sh;
    (void)idx_num;
    (void)idx_str;
    (void)argc;
    (void)argv;
    vrows_clear(&c->rows);
    c->rows.ncols = S_NCOLS;
    c->at = 0;
    for (size_t i = 0; i < sh->neps; i++) {
        Cairn__Request req = CAIRN__REQUEST__INIT;
        Cairn__StatusRequest q = CAIRN__STATUS_REQUEST__INIT;
        Cairn__Response *resp;
        struct cairn_error_detail err;
        struct cairn_call_opts o = {.pinned = true, .endpoint = (unsigned)i, .timeout_ms = 3000};
        req.body_case = CAIRN__REQUEST__BODY_STATUS;
        req.status = &q;
        int rc = shell_call_expect(sh, &req, CAIRN__RESPONSE__BODY_STATUS, &o, false, &resp, &err);
        if (rc == -EINTR)
            return vt_call_error(cur->pVtab, "status", rc, &err);
        int src;
        if (rc != 0) {
            char *msg = shell_call_error("Status", rc, &err);
            src = vrows_add(&c->rows, (int64_t)i);
            if (src == SQLITE_OK) {
                vrows_text(&c->rows, S_ENDPOINT, sh->eps[i], strlen(sh->eps[i]));
                src = vrows_text(&c->rows, S_ERROR, msg ? msg : "", msg ? strlen(msg) : 0);
            }
            sqlite3_free(msg);
        } else {
            src = add_status(&c->rows, i, sh->eps[i], resp);
            cairn_response_free(resp);
        }
        if (src != SQLITE_OK)
            return src;
    }
    return SQLITE_OK;
}

static const sqlite3_module status_module = {
    .iVersion = 1,
    .xCreate = s_connect,
    .xConnect = s_connect,
    .xBestIndex = s_best_index,
    .xDisconnect = s_disconnect,
    .xDestroy = s_disconnect,
    .xOpen = vrows_cursor_open,
    .xClose = vrows_cursor_close,
    .xFilter = s_filter,
    .xNext = vrows_cursor_next,
    .xEof = vrows_cursor_eof,
    .xColumn = vrows_cursor_column,
    .xRowid = vrows_cursor_rowid,
};

int vt_status_register(struct shell *sh)
{
    return sqlite3_create_module_v2(sh->db, "cairn_status", &status_module, sh, NULL);
}
