/*
 * The members table: MemberList, with the leader it names.  IDs are the
 * 16-digit hex form etcd shows (they are unsigned 64-bit, beyond SQLite's
 * integers).  INSERT adds a member (MemberAdd), DELETE removes one, UPDATE
 * of peer_urls changes them and is_learner = 0 promotes a learner.  Each runs
 * at once as its own request.
 */
#include <stdlib.h>
#include <string.h>

#include "shell/shell.h"

enum { M_ID, M_NAME, M_PEERS, M_CLIENTS, M_LEARNER, M_LEADER, M_NCOLS };

static const char *const col_names[M_NCOLS] = {"id", "name", "peer_urls", "client_urls",
                                               "is_learner", "is_leader"};

struct mvtab {
    sqlite3_vtab base;
    struct shell *sh;
};

static int m_connect(sqlite3 *db, void *aux, int argc, const char *const *argv,
                     sqlite3_vtab **out, char **err)
{
    (void)argc;
    (void)argv;
    (void)err;
    int rc = vt_declare(db, "CREATE TABLE x(id TEXT PRIMARY KEY, name TEXT, peer_urls TEXT,"
                            " client_urls TEXT, is_learner INTEGER, is_leader INTEGER) WITHOUT ROWID");
    if (rc != SQLITE_OK)
        return rc;
    struct mvtab *t = sqlite3_malloc(sizeof *t);
    if (!t)
        return SQLITE_NOMEM;
    memset(t, 0, sizeof *t);
    t->sh = aux;
    *out = &t->base;
    return SQLITE_OK;
}

static int m_disconnect(sqlite3_vtab *vt)
{
    sqlite3_free(vt);
    return SQLITE_OK;
}

static int m_best_index(sqlite3_vtab *vt, sqlite3_index_info *ii)
{
    (void)vt;
    ii->estimatedCost = 100; /* one call lists them all */
    return SQLITE_OK;
}

static int join_urls(struct vrows *r, int col, char **urls, size_t n)
{
    struct sbuf b = {0};
    for (size_t i = 0; i < n; i++)
        sbuf_printf(&b, "%s%s", i ? "," : "", urls[i] ? urls[i] : "");
    int rc = vrows_text(r, col, b.p ? b.p : "", b.n);
    sbuf_free(&b);
    return rc;
}

static int m_filter(sqlite3_vtab_cursor *cur, int idx_num, const char *idx_str, int argc,
                    sqlite3_value **argv)
{
    struct vrows_cursor *c = (struct vrows_cursor *)cur;
    sqlite3_vtab *vt = cur->pVtab;
    struct shell *sh = ((struct mvtab *)vt)->sh;
    (void)idx_num;
    (void)idx_str;
    (void)argc;
    (void)argv;
    vrows_clear(&c->rows);
    c->rows.ncols = M_NCOLS;
    c->at = 0;
    Cairn__Request req = CAIRN__REQUEST__INIT;
    Cairn__MemberListRequest q = CAIRN__MEMBER_LIST_REQUEST__INIT;
    Cairn__Response *resp;
    struct cairn_error_detail err;
    q.linearizable = !sh->serializable;
    req.body_case = CAIRN__REQUEST__BODY_MEMBER_LIST;
    req.member_list = &q;
    int rc = shell_call_expect(sh, &req, CAIRN__RESPONSE__BODY_MEMBER_LIST, NULL, false, &resp, &err);
    if (rc != 0)
        return vt_call_error(vt, "members", rc, &err);
    const Cairn__MemberListResponse *l = resp->member_list;
    int src = SQLITE_OK;
    for (size_t i = 0; i < l->n_members && src == SQLITE_OK; i++) {
        const Cairn__Member *m = l->members[i];
        char hex[17];
        if (!m)
            continue;
        member_id_text(m->id, hex);
        if ((src = vrows_add(&c->rows, (int64_t)i)) != SQLITE_OK)
            break;
        vrows_text(&c->rows, M_ID, hex, 16);
        vrows_text(&c->rows, M_NAME, m->name ? m->name : "", m->name ? strlen(m->name) : 0);
        join_urls(&c->rows, M_PEERS, m->peer_urls, m->n_peer_urls);
        join_urls(&c->rows, M_CLIENTS, m->client_urls, m->n_client_urls);
        vrows_int(&c->rows, M_LEARNER, m->is_learner);
        vrows_int(&c->rows, M_LEADER, l->leader_id && m->id == l->leader_id);
    }
    cairn_response_free(resp);
    return src;
}

/* split_urls: "a,b" into a malloc'd array of malloc'd strings; NULL on no URL. */
static char **split_urls(sqlite3_value *v, size_t *n)
{
    const char *s = (const char *)sqlite3_value_text(v);
    char *copy = s ? strdup(s) : NULL, *save = NULL;
    char **out = NULL;
    *n = 0;
    if (!copy)
        return NULL;
    for (char *t = strtok_r(copy, ", ", &save); t; t = strtok_r(NULL, ", ", &save)) {
        char **o = realloc(out, (*n + 1) * sizeof *o);
        if (!o || !(o[*n] = strdup(t))) {
            out = o ? o : out;
            break;
        }
        out = o;
        (*n)++;
    }
    free(copy);
    return out;
}

static void free_urls(char **u, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(u[i]);
    free(u);
}

static int member_call(sqlite3_vtab *vt, Cairn__Request *req, int want, const char *what)
{
    struct shell *sh = ((struct mvtab *)vt)->sh;
    Cairn__Response *resp;
    struct cairn_error_detail err;
    int rc = shell_call_expect(sh, req, want, NULL, true, &resp, &err);
    if (rc != 0)
        return vt_call_error(vt, what, rc, &err);
    if (want == CAIRN__RESPONSE__BODY_MEMBER_ADD && resp->member_add->member) {
        char hex[17];
        member_id_text(resp->member_add->member->id, hex);
        shell_notice(sh, "member %s added; start it with --initial-cluster-state existing", hex);
    }
    cairn_response_free(resp);
    return SQLITE_OK;
}

static int m_update(sqlite3_vtab *vt, int argc, sqlite3_value **argv, sqlite3_int64 *rowid)
{
    Cairn__Request req = CAIRN__REQUEST__INIT;
    (void)rowid;
    if (argc == 1) {
        Cairn__MemberRemoveRequest q = CAIRN__MEMBER_REMOVE_REQUEST__INIT;
        if (!(q.id = member_id_parse(argv[0])))
            return vt_error(vt, "members: bad member ID");
        req.body_case = CAIRN__REQUEST__BODY_MEMBER_REMOVE;
        req.member_remove = &q;
        return member_call(vt, &req, CAIRN__RESPONSE__BODY_MEMBER_REMOVE, "members: removing");
    }
    sqlite3_value **col = argv + 2;
    if (sqlite3_value_type(argv[0]) == SQLITE_NULL) {
        static const int cluster_set[] = {M_ID, M_NAME, M_CLIENTS, M_LEADER};
        for (size_t i = 0; i < sizeof cluster_set / sizeof cluster_set[0]; i++)
            if (sqlite3_value_type(col[cluster_set[i]]) != SQLITE_NULL)
                return vt_error(vt, "members: %s is set by the cluster; INSERT gives peer_urls and "
                                    "optionally is_learner", col_names[cluster_set[i]]);
        Cairn__MemberAddRequest q = CAIRN__MEMBER_ADD_REQUEST__INIT;
        q.peer_urls = split_urls(col[M_PEERS], &q.n_peer_urls);
        if (!q.n_peer_urls)
            return vt_error(vt, "members: INSERT needs peer_urls ('tcp://host:2480[,...]')");
        q.is_learner = sqlite3_value_int(col[M_LEARNER]) != 0;
        req.body_case = CAIRN__REQUEST__BODY_MEMBER_ADD;
        req.member_add = &q;
        int rc = member_call(vt, &req, CAIRN__RESPONSE__BODY_MEMBER_ADD, "members: adding");
        free_urls(q.peer_urls, q.n_peer_urls);
        return rc;
    }
    uint64_t id = member_id_parse(argv[0]);
    if (!id)
        return vt_error(vt, "members: bad member ID");
    static const int fixed[] = {M_ID, M_NAME, M_CLIENTS, M_LEADER};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        if (!sqlite3_value_nochange(col[fixed[i]]) &&
            !(fixed[i] == M_ID && member_id_parse(col[M_ID]) == id))
            return vt_error(vt, "members: %s cannot be changed (peer_urls can; is_learner = 0 "
                                "promotes a learner)", col_names[fixed[i]]);
    if (!sqlite3_value_nochange(col[M_PEERS])) {
        Cairn__MemberUpdateRequest q = CAIRN__MEMBER_UPDATE_REQUEST__INIT;
        q.id = id;
        q.peer_urls = split_urls(col[M_PEERS], &q.n_peer_urls);
        if (!q.n_peer_urls)
            return vt_error(vt, "members: peer_urls cannot be empty");
        req.body_case = CAIRN__REQUEST__BODY_MEMBER_UPDATE;
        req.member_update = &q;
        int rc = member_call(vt, &req, CAIRN__RESPONSE__BODY_MEMBER_UPDATE, "members: updating");
        free_urls(q.peer_urls, q.n_peer_urls);
        if (rc != SQLITE_OK)
            return rc;
    }
    if (!sqlite3_value_nochange(col[M_LEARNER])) {
        if (sqlite3_value_int(col[M_LEARNER]) != 0)
            return vt_error(vt, "members: a member cannot become a learner again (remove and add it)");
        Cairn__MemberPromoteRequest q = CAIRN__MEMBER_PROMOTE_REQUEST__INIT;
        q.id = id;
        req.body_case = CAIRN__REQUEST__BODY_MEMBER_PROMOTE;
        req.member_promote = &q;
        return member_call(vt, &req, CAIRN__RESPONSE__BODY_MEMBER_PROMOTE, "members: promoting");
    }
    return SQLITE_OK;
}

static const sqlite3_module members_module = {
    .iVersion = 1,
    .xCreate = m_connect,
    .xConnect = m_connect,
    .xBestIndex = m_best_index,
    .xDisconnect = m_disconnect,
    .xDestroy = m_disconnect,
    .xOpen = vrows_cursor_open,
    .xClose = vrows_cursor_close,
    .xFilter = m_filter,
    .xNext = vrows_cursor_next,
    .xEof = vrows_cursor_eof,
    .xColumn = vrows_cursor_column,
    .xRowid = vrows_cursor_rowid,
    .xUpdate = m_update,
};

int vt_members_register(struct shell *sh)
{
    return sqlite3_create_module_v2(sh->db, "cairn_members", &members_module, sh, NULL);
}
