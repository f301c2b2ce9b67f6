/*
 * cairn: the SQL admin shell.  Options and environment, then either the
 * interactive readline loop (multi-line statements, history in
 * ~/.cairn_history, Ctrl-C cancels what runs or clears the line) or the
 * statements of -c, -f or stdin, stopping at the first error.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <locale.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <readline/history.h>
#include <readline/readline.h>

#include "shell/shell.h"

#define HISTORY_LINES 1000

static struct shell sh;
static volatile sig_atomic_t winched;
/* The handlers write here, so the prompt's poll never misses a signal that came just before it. */
static int sigpipe[2] = {-1, -1};

static void wake(void)
{
    int e = errno;
    if (sigpipe[1] >= 0 && write(sigpipe[1], "", 1) < 0) {
        /* full: a wake-up is already pending */
    }
    errno = e;
}

static void on_sigint(int sig)
{
    (void)sig;
    shell_interrupted = 1;
    if (sh.db)
        sqlite3_interrupt(sh.db);
    wake();
}

static void on_sigwinch(int sig)
{
    (void)sig;
    winched = 1;
    wake();
}

static void drain_wakeups(void)
{
    char buf[64];
    while (sigpipe[0] >= 0 && read(sigpipe[0], buf, sizeof buf) > 0)
        ;
}

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: cairn [OPTION]... [-c SQL]... [-f FILE]\n"
            "The SQL shell of a Cairn cluster: keys, revisions, leases, members, alarms and\n"
            "status are tables.  Interactive on a terminal; else runs -c, -f or stdin.\n\n"
            "  -c, --command SQL     run SQL or a \\meta-command (repeatable, in order)\n"
            "  -f, --file FILE       run the statements in FILE ('-' = stdin)\n"
            "      --format F        table (default), json, csv or line\n"
            "  -x, --expanded        expanded rows in table format\n"
            "      --endpoints URLS  comma-separated member URLs (CAIRN_ENDPOINTS; default: the\n"
            "                        local member's ipc socket, else tcp://127.0.0.1:2479)\n"
            "      --cacert FILE     CA of the members' certificates, for tls+tcp:// (CAIRN_CACERT)\n"
            "      --cert FILE       client certificate (CAIRN_CERT)\n"
            "      --key FILE        its key (CAIRN_KEY)\n"
            "      --server-name N   name the members' certificates carry (CAIRN_SERVER_NAME)\n"
            "      --timeout MS      deadline of one cluster call (default 10000)\n"
            "      --max-txn-ops N   the members' --max-txn-ops (default 128)\n"
            "      --serializable    serve reads from the member asked, without a quorum round\n"
            "      --trace           print each cluster request on stderr\n"
            "  -q, --quiet           no banner\n"
            "  -h, --help            this help;  -V, --version  the version\n\n"
            "Exit status: 0 when every statement succeeded, 1 after the first error, 2 for\n"
            "bad options.  See cairn(1) and docs/sql.md.\n");
}

/* ------------------------------------------------------------------ input */

static struct sbuf stmt; /* the statement being typed or read */

static bool blank(const char *s)
{
    for (; *s; s++)
        if (*s != ' ' && *s != '\t' && *s != '\n' && *s != '\r')
            return false;
    return true;
}

static void remember(const char *text)
{
    if (!sh.interactive || blank(text))
        return;
    char *one = strdup(text);
    if (!one)
        return;
    size_t n = strlen(one);
    while (n && (one[n - 1] == '\n' || one[n - 1] == ' '))
        one[--n] = '\0';
    add_history(one);
    free(one);
}

/*
 * feed: one line of input.  Returns 0, -1 after an error, 1 to quit.  A
 * line starting with '\' between statements is a meta-command; SQL runs
 * once sqlite3_complete says the statement is whole.
 */
static int feed(const char *line)
{
    const char *p = line;
    while (*p == ' ' || *p == '\t')
        p++;
    if (blank(stmt.p ? stmt.p : "") && *p == '\\') {
        remember(line);
        stmt.n = 0;
        return meta_run(&sh, p);
    }
    sbuf_puts(&stmt, line);
    sbuf_puts(&stmt, "\n");
    if (!sqlite3_complete(stmt.p))
        return 0;
    remember(stmt.p);
    int rc = blank(stmt.p) ? 0 : engine_run(&sh, stmt.p);
    stmt.n = 0;
    stmt.p[0] = '\0';
    return rc;
}

/* run_stream: every line of f; stops at the first error.  0 or 1 (the exit status). */
static int run_stream(FILE *f)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int rc = 0;
    stmt.n = 0;
    while (rc == 0 && (n = getline(&line, &cap, f)) >= 0) {
        if (n && line[n - 1] == '\n')
            line[--n] = '\0';
        shell_interrupted = 0;
        rc = feed(line);
    }
    free(line);
    if (rc == 0 && stmt.n && !blank(stmt.p))
        rc = engine_run(&sh, stmt.p); /* the last statement may lack its ';' */
    stmt.n = 0;
    return rc < 0 ? 1 : 0;
}

/* ------------------------------------------------------------ interactive */

static bool quit;

static const char *prompt(void)
{
    if (stmt.n && !blank(stmt.p))
        return "cairn-> ";
    return sqlite3_get_autocommit(sh.db) ? "cairn=> " : "cairn*> ";
}

static void on_line(char *line)
{
    if (!line) {
        quit = true;
        rl_callback_handler_remove();
        fputc('\n', stdout);
        return;
    }
    shell_interrupted = 0;
    if (feed(line) == 1)
        quit = true;
    free(line);
    /* a Ctrl-C that cancelled the statement is spent */
    drain_wakeups();
    shell_interrupted = 0;
    if (quit)
        rl_callback_handler_remove();
    else
        rl_callback_handler_install(prompt(), on_line);
}

static char *history_path(void)
{
    const char *env = getenv("CAIRN_HISTFILE");
    if (env)
        return *env ? strdup(env) : NULL;
    const char *home = getenv("HOME");
    if (!home || !*home)
        return NULL;
    struct sbuf b = {0};
    sbuf_printf(&b, "%s/.cairn_history", home);
    return b.p;
}

static void banner(void)
{
    Cairn__Response *resp = NULL;
    Cairn__Request req = CAIRN__REQUEST__INIT;
    Cairn__StatusRequest q = CAIRN__STATUS_REQUEST__INIT;
    struct cairn_error_detail err;
    struct cairn_call_opts o = {.timeout_ms = 3000};
    req.body_case = CAIRN__REQUEST__BODY_STATUS;
    req.status = &q;
    printf("cairn %s, the SQL shell of Cairn.  \\help for help, \\q to quit.\n", CAIRN_VERSION);
    int rc = shell_call_expect(&sh, &req, CAIRN__RESPONSE__BODY_STATUS, &o, false, &resp, &err);
    if (rc == 0) {
        const char *name = resp->status->member_name;
        printf("Connected to %s (member %s, revision %lld).\n", sh.conn.endpoints,
               name && *name ? name : "?", resp->header ? (long long)resp->header->revision : 0LL);
    } else {
        printf("Not reached yet: %s: %s\n", sh.conn.endpoints, err.message);
    }
    cairn_response_free(resp);
}

static int interactive(void)
{
    char *hist = history_path();
    using_history();
    stifle_history(HISTORY_LINES);
    if (hist)
        read_history(hist);
    complete_init(&sh);
    rl_catch_signals = 0; /* ours: Ctrl-C clears the line or cancels the statement */
    rl_catch_sigwinch = 0;
    if (!sh.quiet)
        banner();
    rl_callback_handler_install(prompt(), on_line);
    while (!quit) {
        struct pollfd pfd[2] = {{.fd = STDIN_FILENO, .events = POLLIN},
                                {.fd = sigpipe[0], .events = POLLIN}};
        int r = poll(pfd, 2, -1);
        if ((r < 0 && errno == EINTR) || (r > 0 && pfd[1].revents)) {
            drain_wakeups();
            if (winched) {
                winched = 0;
                rl_resize_terminal();
            }
            if (shell_interrupted) {
                /* Ctrl-C at the prompt: forget the line and the statement typed so far */
                shell_interrupted = 0;
                stmt.n = 0;
                if (stmt.p)
                    stmt.p[0] = '\0';
                rl_free_line_state();
                rl_callback_sigcleanup();
                rl_replace_line("", 0);
                rl_crlf();
                rl_callback_handler_remove();
                rl_callback_handler_install(prompt(), on_line);
            }
            continue;
        }
        if (r < 0)
            break;
        rl_callback_read_char();
    }
    if (hist) {
        write_history(hist);
        history_truncate_file(hist, HISTORY_LINES);
        free(hist);
    }
    return 0;
}

/* ------------------------------------------------------------------ main */

enum { OPT_FORMAT = 256, OPT_ENDPOINTS, OPT_CACERT, OPT_CERT, OPT_KEY, OPT_SERVER_NAME, OPT_TIMEOUT,
       OPT_MAX_OPS, OPT_SERIALIZABLE, OPT_TRACE };

struct action {
    char kind; /* 'c' a command, 'f' a file */
    const char *arg;
};

static char *env_dup(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? strdup(v) : NULL;
}

static void set_opt(char **slot, const char *v)
{
    free(*slot);
    *slot = strdup(v);
}

static int parse_format(const char *s)
{
    if (!strcmp(s, "table"))
        sh.format = FMT_TABLE;
    else if (!strcmp(s, "json"))
        sh.format = FMT_JSON;
    else if (!strcmp(s, "csv"))
        sh.format = FMT_CSV;
    else if (!strcmp(s, "line"))
        sh.format = FMT_LINE;
    else
        return -1;
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option longs[] = {
        {"command", required_argument, NULL, 'c'},
        {"file", required_argument, NULL, 'f'},
        {"format", required_argument, NULL, OPT_FORMAT},
        {"expanded", no_argument, NULL, 'x'},
        {"endpoints", required_argument, NULL, OPT_ENDPOINTS},
        {"cacert", required_argument, NULL, OPT_CACERT},
        {"cert", required_argument, NULL, OPT_CERT},
        {"key", required_argument, NULL, OPT_KEY},
        {"server-name", required_argument, NULL, OPT_SERVER_NAME},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"max-txn-ops", required_argument, NULL, OPT_MAX_OPS},
        {"serializable", no_argument, NULL, OPT_SERIALIZABLE},
        {"trace", no_argument, NULL, OPT_TRACE},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    struct action *acts = calloc((size_t)argc + 1, sizeof *acts);
    size_t nacts = 0;
    int c, status = 0;
    char *end;

    setlocale(LC_CTYPE, "");
    txn_init(&sh.txn);
    sh.max_txn_ops = 128; /* etcd's and cairnd's default --max-txn-ops */
    sh.conn.endpoints = env_dup("CAIRN_ENDPOINTS");
    sh.conn.cacert = env_dup("CAIRN_CACERT");
    sh.conn.cert = env_dup("CAIRN_CERT");
    sh.conn.key = env_dup("CAIRN_KEY");
    sh.conn.server_name = env_dup("CAIRN_SERVER_NAME");
    if (!acts)
        return 1;
    while ((c = getopt_long(argc, argv, "c:f:xqhV", longs, NULL)) != -1) {
        switch (c) {
        case 'c':
        case 'f':
            acts[nacts++] = (struct action){(char)c, optarg};
            break;
        case 'x':
            sh.expanded = true;
            break;
        case 'q':
            sh.quiet = true;
            break;
        case OPT_FORMAT:
            if (parse_format(optarg) != 0) {
                fprintf(stderr, "cairn: --format takes table, json, csv or line, not '%s'\n", optarg);
                status = 2;
                goto out;
            }
            break;
        case OPT_ENDPOINTS:
            set_opt(&sh.conn.endpoints, optarg);
            break;
        case OPT_CACERT:
            set_opt(&sh.conn.cacert, optarg);
            break;
        case OPT_CERT:
            set_opt(&sh.conn.cert, optarg);
            break;
        case OPT_KEY:
            set_opt(&sh.conn.key, optarg);
            break;
        case OPT_SERVER_NAME:
            set_opt(&sh.conn.server_name, optarg);
            break;
        case OPT_TIMEOUT:
            sh.conn.timeout_ms = (int)strtol(optarg, &end, 10);
            if (*end || sh.conn.timeout_ms <= 0) {
                fprintf(stderr, "cairn: --timeout takes milliseconds, not '%s'\n", optarg);
                status = 2;
                goto out;
            }
            break;
        case OPT_MAX_OPS:
            sh.max_txn_ops = (int)strtol(optarg, &end, 10);
            if (*end || sh.max_txn_ops <= 0) {
                fprintf(stderr, "cairn: --max-txn-ops takes a number, not '%s'\n", optarg);
                status = 2;
                goto out;
            }
            break;
        case OPT_SERIALIZABLE:
            sh.serializable = true;
            break;
        case OPT_TRACE:
            sh.trace = true;
            break;
        case 'h':
            usage(stdout);
            goto out;
        case 'V':
            printf("cairn %s (SQLite %s)\n", CAIRN_VERSION, sqlite3_libversion());
            goto out;
        default:
            usage(stderr);
            status = 2;
            goto out;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "cairn: unexpected argument '%s' (SQL goes in -c or on stdin)\n", argv[optind]);
        status = 2;
        goto out;
    }

    if (pipe2(sigpipe, O_CLOEXEC | O_NONBLOCK) != 0) {
        fprintf(stderr, "cairn: pipe: %s\n", strerror(errno));
        status = 1;
        goto out;
    }
    struct sigaction sa = {.sa_handler = on_sigint};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL); /* no SA_RESTART: poll returns at Ctrl-C */
    sa.sa_handler = on_sigwinch;
    sigaction(SIGWINCH, &sa, NULL);

    sh.interactive = nacts == 0 && isatty(STDIN_FILENO);
    if (out_init(&sh) != 0 || conn_open(&sh) != 0 || engine_open(&sh) != 0) {
        status = 1;
        goto out;
    }
    if (sh.interactive) {
        status = interactive();
    } else if (nacts == 0) {
        status = run_stream(stdin);
    } else {
        for (size_t i = 0; i < nacts && status == 0; i++) {
            shell_interrupted = 0;
            if (acts[i].kind == 'c') {
                const char *p = acts[i].arg;
                while (*p == ' ' || *p == '\t' || *p == '\n')
                    p++;
                int rc = *p == '\\' ? meta_run(&sh, p) : engine_run(&sh, acts[i].arg);
                if (rc == 1)
                    break;
                status = rc < 0 ? 1 : 0;
            } else {
                FILE *f = strcmp(acts[i].arg, "-") ? fopen(acts[i].arg, "r") : stdin;
                if (!f) {
                    fprintf(stderr, "error: cannot open %s: %s\n", acts[i].arg, strerror(errno));
                    status = 1;
                    break;
                }
                status = run_stream(f);
                if (f != stdin)
                    fclose(f);
            }
        }
    }
    if (sh.db && !sqlite3_get_autocommit(sh.db) && sh.txn.npend && !sh.interactive)
        fprintf(stderr, "warning: the transaction was never committed; nothing was written\n");
out:
    if (sh.db)
        engine_close(&sh);
    conn_close(&sh);
    out_free(&sh);
    if (sh.out)
        fclose(sh.out);
    free(sh.out_path);
    txn_free(&sh.txn);
    sbuf_free(&sh.notice);
    sbuf_free(&stmt);
    conn_opts_free(&sh.conn);
    free(acts);
    for (int i = 0; i < 2; i++)
        if (sigpipe[i] >= 0)
            close(sigpipe[i]);
    return status;
}
