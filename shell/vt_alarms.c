/*
 * The alarms table: the cluster's raised alarms (Alarm GET), one row per
 * member and alarm.  DELETE disarms (DEACTIVATE), INSERT raises one by hand
 * (ACTIVATE).  A rowid names (member, alarm) through the member IDs this
 * table has seen, so a DELETE finds what its scan read.
 */
#include <stdlib.h>
#include <string.h>

#include "shell/shell.h"

enum { A_MEMBER, A_ALARM, A_NCOLS };

struct avtab {
    sqlite3_vtab base;
    struct shell *sh;
    uint64_t *seen; /* member IDs met so far; rowid = index * 4 + alarm type */
    size_t nseen;
};

static int a_connect(sqlite3 *db, void *aux, int argc, const char *const *argv,
                     sqlite3_vtab **out, char **err)
{
    (void)argc;
    (void)argv;
    (void)err;
    int rc = vt_declare(db, "CREATE TABLE x(member_id TEXT, alarm TEXT)");
    if (rc != SQLITE_OK)
        return rc;
    struct avtab *t = sqlite3_malloc(sizeof *t);
    if (!t)
        return SQLITE_NOMEM;
    memset(t, 0, sizeof *t);
    t->sh = aux;
    *out = &t->base;
    return SQLITE_OK;
}

static int a_disconnect(sqlite3_vtab *vt)
{
    free(((struct avtab *)vt)->seen);
    sqlite3_free(vt);
    return SQLITE_OK;
}

static int a_best_index(sqlite3_vtab *vt, sqlite3_index_info *ii)
{
    (void)vt;
    ii->estimatedCost = 10;
    return SQLITE_OK;
}

static const char *alarm_name(int a)
{
    return a == CAIRN__ALARM_TYPE__NOSPACE ? "NOSPACE" : a == CAIRN__ALARM_TYPE__CORRUPT ? "CORRUPT" : "NONE";
}

static int alarm_parse(sqlite3_value *v)
{
    const char *s = (const char *)sqlite3_value_text(v);
    if (!s)
        return -1;
    if (!sqlite3_stricmp(s, "NOSPACE"))
        return CAIRN__ALARM_TYPE__NOSPACE;
    if (!sqlite3_stricmp(s, "CORRUPT"))
        return CAIRN__ALARM_TYPE__CORRUPT;
    return -1;
}

static int64_t rowid_for(struct avtab *t, uint64_t member, int alarm)
{
    size_t i;
    for (i = 0; i < t->nseen && t->seen[i] != member; i++)
        ;
    if (i == t->nseen) {
        uint64_t *n = realloc(t->seen, (t->nseen + 1) * sizeof *n);
        if (!n)
            return -1;
        t->seen = n;
        t->seen[t->nseen++] = member;
    }
    return (int64_t)i * 4 + alarm;
}

static int alarm_call(struct avtab *t, int action, uint64_t member, int alarm, Cairn__Response **resp)
{
    Cairn__Request req = CAIRN__REQUEST__INIT;
    Cairn__AlarmRequest q = CAIRN__ALARM_REQUEST__INIT;
    struct cairn_error_detail err;
    q.action = action;
    q.member_id = member;
    q.alarm = alarm;
    req.body_case = CAIRN__REQUEST__BODY_ALARM;
    req.alarm = &q;
    int rc = shell_call_expect(t->sh, &req, CAIRN__RESPONSE__BODY_ALARM, NULL,
                               action != CAIRN__ALARM_REQUEST__ALARM_ACTION__GET, resp, &err);
    if (rc != 0)
        return vt_call_error(&t->base, "alarms", rc, &err);
    return SQLITE_OK;
}

static int a_filter(sqlite3_vtab_cursor *cur, int idx_num, const char *idx_str, int argc,
                    sqlite3_value **argv)
{
    struct vrows_cursor *c = (struct vrows_cursor *)cur;
    struct avtab *t = (struct avtab *)cur->pVtab;
    Cairn__Response *resp;
    (void)idx_num;
    (void)idx_str;
    (void)argc;
    (void)argv;
    vrows_clear(&c->rows);
    c->rows.ncols = A_NCOLS;
    c->at = 0;
    int rc = alarm_call(t, CAIRN__ALARM_REQUEST__ALARM_ACTION__GET, 0, CAIRN__ALARM_TYPE__NONE, &resp);
    if (rc != SQLITE_OK)
        return rc;
    for (size_t i = 0; i < resp->alarm->n_alarms && rc == SQLITE_OK; i++) {
        const Cairn__AlarmMember *a = resp->alarm->alarms[i];
        char hex[17];
        int64_t rowid = a ? rowid_for(t, a->member_id, a->alarm) : -1;
        if (!a)
            continue;
        if (rowid < 0 || (rc = vrows_add(&c->rows, rowid)) != SQLITE_OK) {
            rc = SQLITE_NOMEM;
            break;
        }
        member_id_text(a->member_id, hex);
        vrows_text(&c->rows, A_MEMBER, hex, 16);
        vrows_text(&c->rows, A_ALARM, alarm_name(a->alarm), strlen(alarm_name(a->alarm)));
    }
    cairn_response_free(resp);
    return rc;
}

static int a_update(sqlite3_vtab *vt, int argc, sqlite3_value **argv, sqlite3_int64 *rowid)
{
    struct avtab *t = (struct avtab *)vt;
    Cairn__Response *resp = NULL;
    uint64_t member;
    int alarm, rc;
    const char *verb;
    if (argc == 1) {
        int64_t r = sqlite3_value_int64(argv[0]);
        if (r < 0 || (size_t)(r / 4) >= t->nseen)
            return vt_error(vt, "alarms: no such alarm row");
        member = t->seen[r / 4];
        alarm = (int)(r % 4);
        rc = alarm_call(t, CAIRN__ALARM_REQUEST__ALARM_ACTION__DEACTIVATE, member, alarm, &resp);
        verb = "disarmed";
    } else if (sqlite3_value_type(argv[0]) == SQLITE_NULL) {
        member = member_id_parse(argv[2 + A_MEMBER]);
        alarm = alarm_parse(argv[2 + A_ALARM]);
        if (!member || alarm < 0)
            return vt_error(vt, "alarms: INSERT needs member_id (hex ID) and alarm ('NOSPACE' or 'CORRUPT')");
        rc = alarm_call(t, CAIRN__ALARM_REQUEST__ALARM_ACTION__ACTIVATE, member, alarm, &resp);
        *rowid = rowid_for(t, member, alarm);
        verb = "raised";
    } else {
        return vt_error(vt, "alarms: an alarm cannot be changed; DELETE disarms it");
    }
    if (rc == SQLITE_OK) {
        char hex[17];
        member_id_text(member, hex);
        shell_notice(t->sh, "alarm %s of member %s %s", alarm_name(alarm), hex, verb);
    }
    cairn_response_free(resp);
    return rc;
}

static const sqlite3_module alarms_module = {
    .iVersion = 1,
    .xCreate = a_connect,
    .xConnect = a_connect,
    .xBestIndex = a_best_index,
    .xDisconnect = a_disconnect,
    .xDestroy = a_disconnect,
    .xOpen = vrows_cursor_open,
    .xClose = vrows_cursor_close,
    .xFilter = a_filter,
    .xNext = vrows_cursor_next,
    .xEof = vrows_cursor_eof,
    .xColumn = vrows_cursor_column,
    .xRowid = vrows_cursor_rowid,
    .xUpdate = a_update,
};

int vt_alarms_register(struct shell *sh)
{
    return sqlite3_create_module_v2(sh->db, "cairn_alarms", &alarms_module, sh, NULL);
}
