/*
 * The SQL engine: an in-memory SQLite database whose temp schema holds the
 * cluster's tables, and the loop that prepares, steps and prints each
 * statement.  It decides per statement what the transaction records (reads
 * of a write statement, or of everything inside BEGIN ... COMMIT) and says
 * where a statement went wrong.  The commit itself is txn.c's, reached from
 * the keys table's xSync.
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "shell/shell.h"

const char *const engine_tables[] = {"keys",  "revisions", "leases", "members",     "alarms",
                                     "status", "users",     "roles",  "permissions", NULL};

static const char *const modules[] = {"cairn_keys",   "cairn_revisions", "cairn_leases",
                                      "cairn_members", "cairn_alarms",   "cairn_status",
                                      "cairn_users",   "cairn_roles",    "cairn_permissions"};

void shell_notice(struct shell *sh, const char *fmt, ...)
{
    va_list ap;
    char buf[512];
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (sh->notice.n)
        sbuf_puts(&sh->notice, "\n");
    sbuf_puts(&sh->notice, buf);
}

/* The shell keeps LIKE case-sensitive (so 'prefix%' is a key range) and its tables in place. */
static int authorize(void *arg, int action, const char *a1, const char *a2, const char *db,
                     const char *trigger)
{
    struct shell *sh = arg;
    (void)a2;
    (void)trigger;
    if (action == SQLITE_PRAGMA && a1 && !sqlite3_stricmp(a1, "case_sensitive_like")) {
        sh->denied = "the shell keeps LIKE case-sensitive, so that LIKE 'prefix%' reads one key range";
        return SQLITE_DENY;
    }
    if ((action == SQLITE_DROP_VTABLE || action == SQLITE_DROP_TABLE) && a1 && db &&
        !strcmp(db, "temp"))
        for (size_t i = 0; engine_tables[i]; i++)
            if (!sqlite3_stricmp(a1, engine_tables[i])) {
                sh->denied = "the cluster's tables cannot be dropped";
                return SQLITE_DENY;
            }
    return SQLITE_OK;
}

int engine_open(struct shell *sh)
{
    int rc = sqlite3_open_v2(":memory:", &sh->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
    if (rc != SQLITE_OK) {
        fprintf(stderr, "error: cannot open SQLite: %s\n", sqlite3_errstr(rc));
        return -1;
    }
    if ((rc = vt_keys_register(sh)) == SQLITE_OK && (rc = vt_revisions_register(sh)) == SQLITE_OK &&
        (rc = vt_leases_register(sh)) == SQLITE_OK && (rc = vt_members_register(sh)) == SQLITE_OK &&
        (rc = vt_alarms_register(sh)) == SQLITE_OK && (rc = vt_status_register(sh)) == SQLITE_OK &&
        (rc = vt_users_register(sh)) == SQLITE_OK)
        rc = functions_register(sh);
    if (rc != SQLITE_OK) {
        fprintf(stderr, "error: registering the tables: %s\n", sqlite3_errmsg(sh->db));
        return -1;
    }
    struct sbuf sql = {0};
    sbuf_puts(&sql, "PRAGMA case_sensitive_like = ON;");
    for (size_t i = 0; engine_tables[i]; i++)
        sbuf_printf(&sql, "CREATE VIRTUAL TABLE temp.%s USING %s;", engine_tables[i], modules[i]);
    char *err = NULL;
    rc = sqlite3_exec(sh->db, sql.p, NULL, NULL, &err);
    sbuf_free(&sql);
    if (rc != SQLITE_OK) {
        fprintf(stderr, "error: creating the tables: %s\n", err ? err : sqlite3_errstr(rc));
        sqlite3_free(err);
        return -1;
    }
    sqlite3_set_authorizer(sh->db, authorize, sh);
    return 0;
}

void engine_close(struct shell *sh)
{
    sqlite3_close_v2(sh->db);
    sh->db = NULL;
}

/* where: "line L, column C" of byte offset off in sql. */
static void where(const char *sql, int off, int *line, int *col)
{
    *line = 1;
    *col = 1;
    for (int i = 0; i < off && sql[i]; i++) {
        if (sql[i] == '\n') {
            (*line)++;
            *col = 1;
        } else if (((unsigned char)sql[i] & 0xc0) != 0x80) {
            (*col)++;
        }
    }
}

/* word_at: the keyword at s (letters), upper-cased into out; returns its length. */
static size_t word_at(const char *s, char *out, size_t n)
{
    size_t i = 0;
    while (i + 1 < n && ((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z'))) {
        out[i] = (char)(s[i] >= 'a' ? s[i] - 32 : s[i]);
        i++;
    }
    out[i] = '\0';
    return i;
}

/*
 * verb: what the statement does, upper-cased into out: its first keyword,
 * or after WITH ... the first INSERT, UPDATE, DELETE, REPLACE or SELECT
 * outside parentheses and quotes.
 */
static void verb(const char *sql, char *out, size_t n)
{
    for (;;) { /* white space and comments before the statement */
        while (*sql == ' ' || *sql == '\t' || *sql == '\n' || *sql == '\r')
            sql++;
        if (sql[0] == '-' && sql[1] == '-') {
            while (*sql && *sql != '\n')
                sql++;
        } else if (sql[0] == '/' && sql[1] == '*') {
            const char *e = strstr(sql + 2, "*/");
            sql = e ? e + 2 : sql + strlen(sql);
        } else {
            break;
        }
    }
    word_at(sql, out, n);
    if (strcmp(out, "WITH") != 0)
        return;
    int depth = 0;
    for (const char *p = sql + 4; *p; p++) {
        if (*p == '\'' || *p == '"' || *p == '`') {
            char q = *p;
            while (p[1] && p[1] != q)
                p++;
            if (p[1])
                p++;
        } else if (*p == '(') {
            depth++;
        } else if (*p == ')') {
            depth--;
        } else if (depth == 0 && (p == sql || !((p[-1] >= 'a' && p[-1] <= 'z') ||
                                                (p[-1] >= 'A' && p[-1] <= 'Z') || p[-1] == '_'))) {
            char w[16];
            size_t l = word_at(p, w, sizeof w);
            if (!strcmp(w, "INSERT") || !strcmp(w, "UPDATE") || !strcmp(w, "DELETE") ||
                !strcmp(w, "REPLACE") || !strcmp(w, "SELECT")) {
                snprintf(out, n, "%s", w);
                return;
            }
            if (l)
                p += l - 1;
        }
    }
}

static void cell_of(sqlite3_stmt *st, int i, struct ocell *c)
{
    c->type = sqlite3_column_type(st, i);
    switch (c->type) {
    case SQLITE_INTEGER:
        c->i = sqlite3_column_int64(st, i);
        break;
    case SQLITE_FLOAT:
        c->d = sqlite3_column_double(st, i);
        break;
    case SQLITE_TEXT:
        c->s = (const char *)sqlite3_column_text(st, i);
        c->n = (size_t)sqlite3_column_bytes(st, i);
        break;
    case SQLITE_BLOB:
        c->s = sqlite3_column_blob(st, i);
        c->n = (size_t)sqlite3_column_bytes(st, i);
        if (!c->s)
            c->s = "";
        break;
    default:
        break;
    }
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* footer: "revision R" or "revisions A-B" the rows were read at. */
static void footer(const struct shell *sh, char *buf, size_t n)
{
    if (!sh->rev_lo)
        buf[0] = '\0';
    else if (sh->rev_lo == sh->rev_hi)
        snprintf(buf, n, "revision %lld", (long long)sh->rev_lo);
    else
        snprintf(buf, n, "revisions %lld-%lld", (long long)sh->rev_lo, (long long)sh->rev_hi);
}

/* summary: what a statement without result rows prints; wrote_keys: it added pending writes. */
static void summary(struct shell *sh, sqlite3_stmt *st, bool wrote_keys)
{
    char word[16];
    verb(sqlite3_sql(st), word, sizeof word);
    bool dml = !strcmp(word, "INSERT") || !strcmp(word, "UPDATE") || !strcmp(word, "DELETE") ||
               !strcmp(word, "REPLACE");
    bool in_txn = !sqlite3_get_autocommit(sh->db);
    if (dml) {
        out_command(sh, word, sqlite3_changes64(sh->db), true, sh->commit_rev,
                    in_txn && !sh->commit_rev && wrote_keys);
    } else if (!strcmp(word, "COMMIT") || !strcmp(word, "END")) {
        out_command(sh, "COMMIT", 0, false, sh->commit_rev, false);
    } else if (!strcmp(word, "BEGIN") || !strcmp(word, "ROLLBACK") || !strcmp(word, "SAVEPOINT") ||
               !strcmp(word, "RELEASE")) {
        out_command(sh, word, 0, false, 0, false);
    } else if (word[0]) {
        out_command(sh, word, 0, false, sh->commit_rev, false);
    }
}

/* run_one: step a prepared statement to its end, printing as it goes.  0 or -1. */
static int run_one(struct shell *sh, sqlite3_stmt *st)
{
    bool autocommit = sqlite3_get_autocommit(sh->db);
    if (autocommit)
        txn_reset(&sh->txn);
    /* reads matter to a commit only in a write statement or an explicit transaction */
    sh->txn.recording = !autocommit || !sqlite3_stmt_readonly(st);
    sh->rev_lo = sh->rev_hi = 0;
    sh->commit_rev = 0;
    sh->notice.n = 0;
    size_t undo_before = sh->txn.nundo;
    double t0 = now_ms();

    int ncols = sqlite3_column_count(st);
    if (ncols > 0) {
        const char **names = calloc((size_t)ncols, sizeof *names);
        if (!names)
            return -1;
        for (int i = 0; i < ncols; i++)
            names[i] = sqlite3_column_name(st, i);
        out_start(sh, ncols, names);
        free(names);
    }
    struct ocell *cells = calloc((size_t)ncols + 1, sizeof *cells);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        for (int i = 0; i < ncols; i++)
            cell_of(st, i, &cells[i]);
        out_row(sh, cells);
    }
    free(cells);
    char foot[64];
    footer(sh, foot, sizeof foot);
    if (rc == SQLITE_DONE) {
        if (ncols > 0)
            out_finish(sh, foot[0] ? foot : NULL);
        else
            summary(sh, st, sh->txn.nundo > undo_before);
    } else {
        if (ncols > 0)
            out_abort(sh);
        const char *msg = sqlite3_errmsg(sh->db);
        if (rc == SQLITE_INTERRUPT || shell_interrupted)
            out_error(sh, "canceled%s%s", msg && strcmp(msg, "interrupted") ? ": " : "",
                      msg && strcmp(msg, "interrupted") ? msg : "");
        else
            out_error(sh, "%s", msg);
    }
    if (sh->timing)
        out_text(sh, "Time: %.3f ms", now_ms() - t0);
    if (sqlite3_get_autocommit(sh->db))
        txn_reset(&sh->txn);
    return rc == SQLITE_DONE ? 0 : -1;
}

int engine_run(struct shell *sh, const char *sql)
{
    const char *tail = sql;
    int result = 0;
    while (tail && *tail && result == 0) {
        sqlite3_stmt *st = NULL;
        const char *start = tail;
        sh->denied = NULL;
        int rc = sqlite3_prepare_v2(sh->db, tail, -1, &st, &tail);
        if (rc == SQLITE_AUTH && sh->denied) {
            out_error(sh, "not allowed: %s", sh->denied);
            return -1;
        }
        if (rc != SQLITE_OK) {
            int off = sqlite3_error_offset(sh->db);
            if (off >= 0) {
                int line, col;
                where(sql, (int)(start - sql) + off, &line, &col);
                out_error(sh, "%s (line %d, column %d)", sqlite3_errmsg(sh->db), line, col);
            } else {
                out_error(sh, "%s", sqlite3_errmsg(sh->db));
            }
            return -1;
        }
        if (!st)
            continue; /* only a comment or white space */
        result = run_one(sh, st);
        sqlite3_finalize(st);
        if (shell_interrupted)
            result = -1;
    }
    return result;
}
