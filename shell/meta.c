/*
 * Backslash commands, psql's way: \d, \x, \format, \timing, \o, \connect,
 * \serializable, \status, \trace, \help, \q, and the two that run until
 * Ctrl-C, \watch and \lease keepalive (watch.c).  Each is one line.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <termios.h>
#include <unistd.h>

#include "shell/shell.h"

const char *const meta_commands[] = {"\\help", "\\?", "\\d", "\\x", "\\format", "\\timing", "\\o",
                                     "\\connect", "\\serializable", "\\watch", "\\lease",
                                     "\\status", "\\trace", "\\login", "\\logout", "\\auth", "\\q", NULL};

static const struct {
    const char *table, *what;
} tables[] = {
    {"keys", "the live keys; WHERE as_of = REV reads them as of a past revision"},
    {"revisions", "every stored revision of every key, deletes included (History)"},
    {"leases", "leases with their TTL and attached keys"},
    {"members", "the cluster's members and which one leads"},
    {"alarms", "raised alarms (NOSPACE, CORRUPT); DELETE disarms"},
    {"status", "one row per endpoint: Raft state, store size, revisions, counters"},
    {"users", "users and their roles; INSERT adds (with password), UPDATE changes password or roles"},
    {"roles", "roles; INSERT adds, DELETE deletes (and takes them from their users)"},
    {"permissions", "each role's READ/WRITE/READWRITE permissions on a key or [key, range_end)"},
};

/* What each column of the cluster tables takes: the cluster filters on these, and which are written. */
static const struct {
    const char *table, *column, *pushed, *writes;
} notes[] = {
    {"keys", "key", "=, IN, <, <=, >, >=, BETWEEN, LIKE 'p%', GLOB 'p*'", "INSERT"},
    {"keys", "value", "", "INSERT, UPDATE"},
    {"keys", "create_revision", "=, <, <=, >, >=", ""},
    {"keys", "mod_revision", "=, <, <=, >, >=", ""},
    {"keys", "lease", "", "INSERT, UPDATE"},
    {"keys", "as_of", "= (read at that revision)", ""},
    {"revisions", "key", "=, IN, <, <=, >, >=, BETWEEN, LIKE 'p%', GLOB 'p*'", ""},
    {"revisions", "revision", "=, <, <=, >, >=, BETWEEN", ""},
    {"leases", "id", "=", "INSERT (optional), DELETE revokes"},
    {"leases", "ttl", "", "INSERT grants"},
    {"members", "id", "", "DELETE removes"},
    {"members", "peer_urls", "", "INSERT adds, UPDATE changes"},
    {"members", "is_learner", "", "INSERT, UPDATE to 0 promotes"},
    {"alarms", "member_id", "", "INSERT raises, DELETE disarms"},
    {"alarms", "alarm", "", "INSERT raises, DELETE disarms"},
    {"users", "name", "", "INSERT adds, DELETE deletes"},
    {"users", "roles", "", "INSERT, UPDATE grants and revokes ('a,b')"},
    {"users", "password", "", "INSERT, UPDATE (never read back)"},
    {"roles", "name", "", "INSERT adds, DELETE deletes"},
    {"permissions", "type", "", "INSERT grants, UPDATE, DELETE revokes"},
    {"permissions", "range_end", "", "INSERT (empty: the key alone; prefix_end(key): a prefix)"},
};

static void help(struct shell *sh)
{
    static const char *const lines[] = {
        "SQL: the cluster is a set of tables (\\d lists them).  End a statement with ';'.",
        "  SELECT * FROM keys WHERE key LIKE 'config/%';",
        "  SELECT * FROM revisions WHERE key = 'a' ORDER BY revision;",
        "  INSERT INTO keys(key, value) VALUES ('a', '1');   -- fails if 'a' exists",
        "  UPDATE keys SET value = 'x' WHERE key = 'a';      -- one Raft Txn, checked",
        "  BEGIN; ... COMMIT;                                -- one Raft Txn for all",
        "  SELECT compact(100); SELECT keepalive(id) FROM leases;",
        "Meta-commands:",
        "  \\d [TABLE]             list tables, or the columns of one",
        "  \\x [on|off]            expanded rows",
        "  \\format table|json|csv|line",
        "  \\timing [on|off]       time each statement",
        "  \\o [FILE]              send results to FILE (no FILE: back to stdout)",
        "  \\connect ENDPOINTS     use other endpoints (same TLS files)",
        "  \\serializable on|off   read from the member answering, without a quorum round",
        "  \\watch PREFIX [FROM REV]  print changes under PREFIX until Ctrl-C",
        "  \\lease keepalive ID    keep lease ID alive until Ctrl-C",
        "  \\status                the status table",
        "  \\trace on|off          print each cluster request on stderr",
        "  \\login USER            authenticate (the password is read without echo)",
        "  \\logout                forget the token and the password",
        "  \\auth [on|off]         turn auth on or off for the cluster, or show whether it is on",
        "  \\q                     quit",
        "docs/sql.md and cairn(1) say more.",
        NULL,
    };
    for (size_t i = 0; lines[i]; i++)
        out_text(sh, "%s", lines[i]);
}

static int on_off(struct shell *sh, const char *arg, bool *flag, const char *what)
{
    if (!arg || !*arg)
        *flag = !*flag;
    else if (!strcasecmp(arg, "on"))
        *flag = true;
    else if (!strcasecmp(arg, "off"))
        *flag = false;
    else {
        out_error(sh, "\\%s takes on or off, not '%s'", what, arg);
        return -1;
    }
    if (sh->format != FMT_JSON)
        out_text(sh, "%s is %s.", what, *flag ? "on" : "off");
    return 0;
}

static void text_cell(struct ocell *c, const char *s)
{
    *c = (struct ocell){.type = SQLITE_TEXT, .s = s ? s : "", .n = s ? strlen(s) : 0};
}

static int describe_all(struct shell *sh)
{
    static const char *const names[] = {"table", "description"};
    struct ocell row[2];
    out_start(sh, 2, names);
    for (size_t i = 0; i < sizeof tables / sizeof tables[0]; i++) {
        text_cell(&row[0], tables[i].table);
        text_cell(&row[1], tables[i].what);
        out_row(sh, row);
    }
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(sh->db,
                           "SELECT name FROM sqlite_temp_schema WHERE type IN ('table','view') "
                           "AND sql NOT LIKE 'CREATE VIRTUAL TABLE%' UNION ALL "
                           "SELECT name FROM sqlite_schema WHERE type IN ('table','view') ORDER BY 1",
                           -1, &st, NULL) == SQLITE_OK) {
        while (sqlite3_step(st) == SQLITE_ROW) {
            text_cell(&row[0], (const char *)sqlite3_column_text(st, 0));
            text_cell(&row[1], "local to this session (not in the cluster)");
            out_row(sh, row);
        }
        sqlite3_finalize(st);
    }
    out_finish(sh, NULL);
    return 0;
}

static int describe(struct shell *sh, const char *table)
{
    static const char *const names[] = {"column", "type", "hidden", "filtered by the cluster", "written by"};
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(sh->db, "SELECT name, type, hidden FROM pragma_table_xinfo(?1)", -1, &st,
                           NULL) != SQLITE_OK) {
        out_error(sh, "\\d: %s", sqlite3_errmsg(sh->db));
        return -1;
    }
    sqlite3_bind_text(st, 1, table, -1, SQLITE_STATIC);
    int n = 0;
    struct ocell row[5];
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *col = (const char *)sqlite3_column_text(st, 0);
        const char *pushed = "", *writes = "";
        if (!n++)
            out_start(sh, 5, names);
        for (size_t i = 0; i < sizeof notes / sizeof notes[0]; i++)
            if (!strcasecmp(notes[i].table, table) && col && !strcmp(notes[i].column, col)) {
                pushed = notes[i].pushed;
                writes = notes[i].writes;
            }
        text_cell(&row[0], col);
        text_cell(&row[1], (const char *)sqlite3_column_text(st, 1));
        row[2] = (struct ocell){.type = SQLITE_INTEGER, .i = sqlite3_column_int(st, 2) != 0};
        text_cell(&row[3], pushed);
        text_cell(&row[4], writes);
        out_row(sh, row);
    }
    sqlite3_finalize(st);
    if (!n) {
        out_error(sh, "\\d: no table named '%s' (\\d lists them)", table);
        return -1;
    }
    out_finish(sh, NULL);
    return 0;
}

static int set_output(struct shell *sh, const char *path)
{
    if (sh->out) {
        fclose(sh->out);
        sh->out = NULL;
    }
    free(sh->out_path);
    sh->out_path = NULL;
    if (!path || !*path)
        return 0;
    FILE *f = fopen(path, "w");
    if (!f) {
        out_error(sh, "\\o: cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    sh->out = f;
    sh->out_path = strdup(path);
    return 0;
}

static int reconnect(struct shell *sh, const char *eps)
{
    if (!eps || !*eps) {
        out_error(sh, "\\connect needs endpoints: \\connect tcp://host:2479[,...]");
        return -1;
    }
    if (!sqlite3_get_autocommit(sh->db)) {
        out_error(sh, "\\connect: finish the open transaction first (COMMIT or ROLLBACK)");
        return -1;
    }
    char *old = sh->conn.endpoints;
    sh->conn.endpoints = strdup(eps);
    conn_close(sh);
    if (!sh->conn.endpoints || conn_open(sh) != 0) {
        free(sh->conn.endpoints);
        sh->conn.endpoints = old;
        if (conn_open(sh) == 0)
            out_text(sh, "still connected to %s", old);
        return -1;
    }
    free(old);
    out_text(sh, "connected to %s", sh->conn.endpoints);
    return 0;
}

/*
 * The password for \login: from the terminal without echo when interactive,
 * else the next line of stdin (a script gives it on the line after \login).
 * Returns a malloc'd string or NULL.
 */
static char *read_password(struct shell *sh, const char *user)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    if (sh->interactive && isatty(STDIN_FILENO)) {
        struct termios old, quiet;
        fprintf(stderr, "password for %s: ", user);
        fflush(stderr);
        int echo_off = tcgetattr(STDIN_FILENO, &old) == 0;
        if (echo_off) {
            quiet = old;
            quiet.c_lflag &= ~(tcflag_t)ECHO;
            quiet.c_lflag |= ECHONL;
            tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
        }
        n = getline(&line, &cap, stdin);
        if (echo_off)
            tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
    } else {
        n = getline(&line, &cap, stdin);
    }
    if (n < 0) {
        free(line);
        return NULL;
    }
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
    return line;
}

static int login(struct shell *sh, const char *user)
{
    if (!user || !*user) {
        out_error(sh, "usage: \\login USER (the password follows, without echo)");
        return -1;
    }
    if (!sh->client) {
        out_error(sh, "\\login: not connected (use \\connect)");
        return -1;
    }
    char *pw = read_password(sh, user);
    if (!pw) {
        out_error(sh, "\\login: no password given for %s (end of input)", user);
        return -1;
    }
    struct cairn_error_detail err;
    uint32_t ttl = 0;
    int rc = cairn_authenticate(sh->client, user, pw, NULL, NULL, 0, &ttl, &err);
    explicit_bzero(pw, strlen(pw));
    free(pw);
    if (rc != 0) {
        out_error(sh, "\\login %s: %s", user, err.message[0] ? err.message : cairn_strerror(rc));
        return -1;
    }
    if (sh->format != FMT_JSON)
        out_text(sh, "logged in as %s (the token lives %u s unused; the shell logs in again when it expires)", user,
                 ttl);
    return 0;
}

static int auth_cmd(struct shell *sh, const char *arg)
{
    struct cairn_error_detail err;
    int rc;
    if (!sh->client) {
        out_error(sh, "\\auth: not connected (use \\connect)");
        return -1;
    }
    if (!arg || !*arg || !strcasecmp(arg, "status")) {
        struct cairn_auth_status st;
        if ((rc = cairn_auth_status(sh->client, NULL, &st, &err)) == 0)
            out_text(sh, "auth is %s (auth revision %llu)", st.enabled ? "on" : "off",
                     (unsigned long long)st.revision);
    } else if (!strcasecmp(arg, "on")) {
        if ((rc = cairn_auth_enable(sh->client, NULL, &err)) == 0)
            out_text(sh, "auth is on: every request needs a token (\\login) except on the ipc socket as root");
    } else if (!strcasecmp(arg, "off")) {
        if ((rc = cairn_auth_disable(sh->client, NULL, &err)) == 0)
            out_text(sh, "auth is off");
    } else {
        out_error(sh, "\\auth takes on, off or nothing, not '%s'", arg);
        return -1;
    }
    if (rc != 0) {
        out_error(sh, "\\auth: %s", err.message[0] ? err.message : cairn_strerror(rc));
        return -1;
    }
    return 0;
}

int meta_run(struct shell *sh, const char *line)
{
    char *copy = strdup(line), *save = NULL;
    if (!copy)
        return -1;
    /* strip a trailing ';' people type out of habit */
    size_t len = strlen(copy);
    while (len && (copy[len - 1] == ';' || copy[len - 1] == ' ' || copy[len - 1] == '\n' ||
                   copy[len - 1] == '\r' || copy[len - 1] == '\t'))
        copy[--len] = '\0';
    char *cmd = strtok_r(copy, " \t", &save);
    char *rest = save;
    while (rest && (*rest == ' ' || *rest == '\t'))
        rest++;
    char *arg = rest && *rest ? rest : NULL;
    int rc = 0;
    if (!cmd) {
        rc = 0;
    } else if (!strcmp(cmd, "\\q") || !strcmp(cmd, "\\quit")) {
        rc = 1;
    } else if (!strcmp(cmd, "\\help") || !strcmp(cmd, "\\?") || !strcmp(cmd, "\\h")) {
        help(sh);
    } else if (!strcmp(cmd, "\\d")) {
        rc = arg ? describe(sh, arg) : describe_all(sh);
    } else if (!strcmp(cmd, "\\x")) {
        rc = on_off(sh, arg, &sh->expanded, "Expanded display");
    } else if (!strcmp(cmd, "\\timing")) {
        rc = on_off(sh, arg, &sh->timing, "Timing");
    } else if (!strcmp(cmd, "\\serializable")) {
        rc = on_off(sh, arg, &sh->serializable, "Serializable reads");
    } else if (!strcmp(cmd, "\\trace")) {
        rc = on_off(sh, arg, &sh->trace, "Tracing");
    } else if (!strcmp(cmd, "\\format")) {
        if (arg && !strcmp(arg, "table"))
            sh->format = FMT_TABLE;
        else if (arg && !strcmp(arg, "json"))
            sh->format = FMT_JSON;
        else if (arg && !strcmp(arg, "csv"))
            sh->format = FMT_CSV;
        else if (arg && !strcmp(arg, "line"))
            sh->format = FMT_LINE;
        else {
            out_error(sh, "\\format takes table, json, csv or line");
            rc = -1;
        }
    } else if (!strcmp(cmd, "\\o")) {
        rc = set_output(sh, arg);
    } else if (!strcmp(cmd, "\\connect") || !strcmp(cmd, "\\c")) {
        rc = reconnect(sh, arg);
    } else if (!strcmp(cmd, "\\login")) {
        rc = login(sh, arg);
    } else if (!strcmp(cmd, "\\logout")) {
        if (sh->client)
            cairn_forget_credentials(sh->client);
        out_text(sh, "logged out");
    } else if (!strcmp(cmd, "\\auth")) {
        rc = auth_cmd(sh, arg);
    } else if (!strcmp(cmd, "\\status")) {
        rc = engine_run(sh, "SELECT * FROM status");
    } else if (!strcmp(cmd, "\\watch")) {
        rc = watch_run(sh, arg);
    } else if (!strcmp(cmd, "\\lease")) {
        char *sub = arg ? strtok_r(arg, " \t", &save) : NULL;
        char *id = sub ? strtok_r(NULL, " \t", &save) : NULL, *end = NULL;
        long long v = id ? strtoll(id, &end, 0) : 0;
        if (!sub || strcmp(sub, "keepalive") || !id || *end || v <= 0) {
            out_error(sh, "usage: \\lease keepalive ID");
            rc = -1;
        } else {
            rc = lease_keepalive_run(sh, v);
        }
    } else {
        out_error(sh, "unknown command %s (\\help lists them)", cmd);
        rc = -1;
    }
    free(copy);
    return rc;
}
