/*
 * cairnd's options: the table below is the single list of every option, its
 * type, default and help.  Loading gathers one raw string per option (file,
 * then environment, then flags, each overriding the last), converts them, and
 * checks what only makes sense across options (URLs vs TLS, the cluster list).
 */
#include "daemon/config.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/errors.h"
#include "base/log.h"

extern char **environ;

enum opt_type {
    T_STR,
    T_URLS,
    T_URL,
    T_U32,
    T_U64,
    T_MS,
    T_SIZE,
    T_BOOL,
    T_STATE,
    T_LEVEL,
    T_TARGET,
    T_CLUSTER,
    T_COMPACTION,
};

struct opt {
    const char *name;
    enum opt_type type;
    const char *def; /* NULL: derived from other options after loading (see derive_defaults) */
    size_t off;
    const char *help;
};

#define F(field) offsetof(struct config, field)

/* etcd's defaults unless the help says otherwise. */
static const struct opt opts[] = {
    {"name", T_STR, "default", F(name), "human-readable name of this member, unique in the cluster"},
    {"data-dir", T_STR, NULL, F(data_dir),
     "directory for the WAL, snapshots and store (default: $STATE_DIRECTORY under systemd, else ./cairn.data)"},
    {"config-file", T_STR, NULL, F(config_file),
     "read options from this file, `name = value` per line (default: $CONFIGURATION_DIRECTORY/cairnd.conf if present)"},
    {"listen-client-urls", T_URLS, "tcp://127.0.0.1:2479", F(listen_client_urls),
     "comma-separated URLs to serve clients on (tcp://, tls+tcp://, ipc://)"},
    {"advertise-client-urls", T_URLS, NULL, F(advertise_client_urls),
     "client URLs other members and clients are told (default: --listen-client-urls)"},
    {"listen-peer-urls", T_URLS, "tcp://127.0.0.1:2480", F(listen_peer_urls),
     "comma-separated URLs to serve peers on"},
    {"initial-advertise-peer-urls", T_URLS, NULL, F(initial_advertise_peer_urls),
     "peer URLs other members are told (default: --listen-peer-urls)"},
    {"listen-admin-url", T_URL, NULL, F(listen_admin_url),
     "local admin socket (default: ipc://<data-dir>/cairnd.sock); trusts the peer's uid"},
    {"listen-metrics-urls", T_URLS, "", F(listen_metrics_urls),
     "URLs serving /health, /livez, /readyz and /metrics over HTTP (default: off)"},
    {"initial-cluster", T_CLUSTER, NULL, F(members),
     "initial members as name=peer-url,... (default: <name>=<initial-advertise-peer-urls>)"},
    {"initial-cluster-state", T_STATE, "new", F(initial_cluster_state),
     "'new' to form a cluster, 'existing' to join one that has added this member"},
    {"initial-cluster-token", T_STR, "cairn-cluster", F(initial_cluster_token),
     "token that makes the cluster ID unique; members with different tokens refuse each other"},
    {"heartbeat-interval", T_MS, "100", F(heartbeat_ms), "time between leader heartbeats (ms, or 100ms, 1s)"},
    {"election-timeout", T_MS, "1000", F(election_ms),
     "time without a leader before an election (ms); at least 5x the heartbeat interval"},
    {"snapshot-count", T_U64, "10000", F(snapshot_count), "applied entries between snapshots"},
    {"snapshot-catchup-entries", T_U64, "5000", F(snapshot_catchup_entries),
     "entries kept in the log after a snapshot for slow followers"},
    {"max-wal-files", T_U32, "5", F(max_wal_files), "WAL segment files to keep (0 = keep all)"},
    {"max-snapshots", T_U32, "5", F(max_snapshots), "snapshot files to keep (0 = keep all)"},
    {"max-request-bytes", T_SIZE, "1572864", F(max_request_bytes), "largest client request accepted (bytes, or 1.5M)"},
    {"max-txn-ops", T_U32, "128", F(max_txn_ops), "most operations in one txn"},
    {"quota-backend-bytes", T_SIZE, "2G", F(quota_backend_bytes),
     "size of the store past which NOSPACE is raised and writes refused"},
    {"value-cache-bytes", T_SIZE, "8M", F(value_cache_bytes),
     "memory for the values serializable and linearizable reads return, kept so a hot key's next read skips "
     "the store's SQL (0 = off; Cairn's own)"},
    {"request-timeout", T_MS, "7s", F(request_timeout_ms),
     "how long a write waits to be applied before it fails as 'outcome unknown'"},
    {"slow-request-threshold", T_MS, "300ms", F(slow_request_ms), "requests slower than this are logged"},
    {"watch-idle-timeout", T_MS, "60s", F(watch_idle_timeout_ms),
     "a watch nobody polls (WatchNext) for this long is dropped (Cairn's own: watches are long polls)"},
    {"max-watchers", T_U32, "10000", F(max_watchers), "most watches on this member (Cairn's own)"},
    {"max-watchers-per-connection", T_U32, "1000", F(max_watchers_per_connection),
     "most watches one client connection may have (Cairn's own)"},
    {"auto-compaction-mode", T_COMPACTION, "periodic", F(auto_compaction_mode), "'periodic' or 'revision'"},
    {"auto-compaction-retention", T_STR, "0", F(auto_compaction_retention),
     "history to keep: hours or a duration (periodic), revisions (revision); 0 = off"},
    {"corrupt-check-time", T_MS, "5m", F(corrupt_check_ms),
     "how often the leader has every member hash its store at one revision and compare (0 = never); "
     "a member whose hash differs gets a CORRUPT alarm"},
    {"strict-reconfig-check", T_BOOL, "true", F(strict_reconfig_check),
     "refuse membership changes that would leave the started members without quorum"},
    {"log-level", T_LEVEL, "info", F(log_level), "debug, info, notice, warning, err or crit"},
    {"log-target", T_TARGET, "auto", F(log_target), "auto (journal when run by systemd), journal or stderr"},
    {"cert-file", T_STR, "", F(cert_file), "client-facing TLS certificate (PEM, may hold the key too)"},
    {"key-file", T_STR, "", F(key_file), "client-facing TLS key (PEM)"},
    {"trusted-ca-file", T_STR, "", F(trusted_ca_file), "CA that signs client certificates"},
    {"client-cert-auth", T_BOOL, "false", F(client_cert_auth), "require client certificates signed by --trusted-ca-file"},
    {"auth-token-ttl", T_U32, "300", F(auth_token_ttl),
     "seconds an auth token stays valid without use; each use starts it again (etcd's --auth-token-ttl)"},
    {"peer-cert-file", T_STR, "", F(peer_cert_file), "peer TLS certificate (PEM); peer TLS is always mutual"},
    {"peer-key-file", T_STR, "", F(peer_key_file), "peer TLS key (PEM)"},
    {"peer-trusted-ca-file", T_STR, "", F(peer_trusted_ca_file), "CA that signs every member's peer certificate"},
    {"insecure-listen", T_BOOL, "false", F(insecure_listen),
     "allow plain tcp:// listeners on addresses other than loopback (not recommended)"},
};

#define NOPTS (sizeof(opts) / sizeof(opts[0]))

struct raw {
    const char *val[NOPTS];
    char src[NOPTS][96]; /* where the value came from, for messages */
    char *owned[512];    /* strings copied out of the config file */
    size_t nowned;
};

static int fail(char *err, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, len, fmt, ap);
    va_end(ap);
    return -CAIRN_E_CONFIG;
}

/* Index of an option the code itself names; a typo there is a bug, not input. */
static size_t opt_index(const char *name)
{
    for (size_t i = 0; i < NOPTS; i++)
        if (strcmp(opts[i].name, name) == 0)
            return i;
    abort();
}

static const struct opt *find_opt(const char *name, size_t len, size_t *idx)
{
    for (size_t i = 0; i < NOPTS; i++)
        if (strlen(opts[i].name) == len && strncmp(opts[i].name, name, len) == 0) {
            *idx = i;
            return &opts[i];
        }
    return NULL;
}

/* ---------------------------------------------------------------- scalars */

int64_t config_parse_duration_ms(const char *s)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno || !(v >= 0)) /* !(v >= 0) also refuses "nan" */
        return -1;
    double mult;
    if (*end == '\0' || strcmp(end, "ms") == 0)
        mult = 1;
    else if (strcmp(end, "s") == 0)
        mult = 1000;
    else if (strcmp(end, "m") == 0)
        mult = 60000;
    else if (strcmp(end, "h") == 0)
        mult = 3600000;
    else
        return -1;
    if (v * mult > (double)INT64_MAX / 2)
        return -1;
    return (int64_t)(v * mult + 0.5);
}

int64_t config_parse_size(const char *s)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno || !(v >= 0)) /* !(v >= 0) also refuses "nan" */
        return -1;
    double mult = 1;
    switch (toupper((unsigned char)*end)) {
    case '\0': mult = 1; break;
    case 'K': mult = 1024.0; end++; break;
    case 'M': mult = 1024.0 * 1024; end++; break;
    case 'G': mult = 1024.0 * 1024 * 1024; end++; break;
    case 'T': mult = 1024.0 * 1024 * 1024 * 1024; end++; break;
    default: return -1;
    }
    if (*end == 'i' || *end == 'I')
        end++;
    if (*end == 'B' || *end == 'b')
        end++;
    if (*end != '\0' || v * mult > (double)INT64_MAX / 2)
        return -1;
    return (int64_t)(v * mult);
}

static int parse_uint(const char *s, uint64_t max, uint64_t *out)
{
    char *end;
    if (!isdigit((unsigned char)*s))
        return -1;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end != '\0' || v > max)
        return -1;
    *out = v;
    return 0;
}

static int parse_bool(const char *s, bool *out)
{
    if (!strcmp(s, "true") || !strcmp(s, "1") || !strcmp(s, "yes") || !strcmp(s, "on"))
        *out = true;
    else if (!strcmp(s, "false") || !strcmp(s, "0") || !strcmp(s, "no") || !strcmp(s, "off"))
        *out = false;
    else
        return -1;
    return 0;
}

/* ---------------------------------------------------------------- URLs */

void config_url_free(struct config_url *u)
{
    free(u->url);
    free(u->scheme);
    free(u->host);
    free(u->path);
    memset(u, 0, sizeof *u);
}

int config_parse_url(const char *s, struct config_url *u, char *err, size_t len)
{
    const char *sep = strstr(s, "://");
    memset(u, 0, sizeof *u);
    if (!sep)
        return fail(err, len, "'%s' is not a URL (want tcp://host:port, tls+tcp://host:port or ipc:///path)", s);
    size_t slen = (size_t)(sep - s);
    const char *rest = sep + 3;
    if (!((slen == 3 && !strncmp(s, "tcp", 3)) || (slen == 7 && !strncmp(s, "tls+tcp", 7)) ||
          (slen == 3 && !strncmp(s, "ipc", 3))))
        return fail(err, len, "'%s': unsupported scheme '%.*s' (want tcp, tls+tcp or ipc)", s, (int)slen, s);
    u->url = strdup(s);
    u->scheme = strndup(s, slen);
    if (!strcmp(u->scheme, "ipc")) {
        if (*rest != '/' || rest[1] == '\0') {
            config_url_free(u);
            return fail(err, len, "'%s': an ipc URL needs an absolute socket path (ipc:///run/cairn/cairnd.sock)", s);
        }
        u->path = strdup(rest);
        return 0;
    }
    const char *host = rest, *hend, *colon;
    if (*host == '[') { /* [v6]:port */
        hend = strchr(host, ']');
        if (!hend) {
            config_url_free(u);
            return fail(err, len, "'%s': unterminated IPv6 address", s);
        }
        colon = hend + 1;
        host++;
    } else {
        colon = strrchr(host, ':');
        hend = colon;
    }
    if (!colon || *colon != ':' || hend == host) {
        config_url_free(u);
        return fail(err, len, "'%s': want host:port", s);
    }
    uint64_t port;
    if (parse_uint(colon + 1, 65535, &port) < 0 || port == 0) {
        config_url_free(u);
        return fail(err, len, "'%s': '%s' is not a port number (1-65535)", s, colon + 1);
    }
    u->host = strndup(host, (size_t)(hend - host));
    u->port = (int)port;
    return 0;
}

int config_url_is_local(const struct config_url *u)
{
    if (!strcmp(u->scheme, "ipc"))
        return 1;
    return u->host && (!strcmp(u->host, "localhost") || !strncmp(u->host, "127.", 4) || !strcmp(u->host, "::1"));
}

static void urls_free(struct config_urls *l)
{
    for (size_t i = 0; i < l->n; i++)
        config_url_free(&l->v[i]);
    l->n = 0;
}

/* Comma-separated URLs; an empty string is an empty list. */
static int parse_urls(const char *s, struct config_urls *l, char *err, size_t len)
{
    char *copy = strdup(s), *save = NULL;
    int rc = 0;
    urls_free(l);
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        while (isspace((unsigned char)*tok))
            tok++;
        if (!*tok)
            continue;
        if (l->n == CONFIG_MAX_URLS) {
            rc = fail(err, len, "more than %d URLs", CONFIG_MAX_URLS);
            break;
        }
        if ((rc = config_parse_url(tok, &l->v[l->n], err, len)) < 0)
            break;
        l->n++;
    }
    free(copy);
    return rc;
}

static void members_free(struct config *c)
{
    for (size_t i = 0; i < c->n_members; i++) {
        free(c->members[i].name);
        urls_free(&c->members[i].peer_urls);
    }
    c->n_members = 0;
}

/* name=url,name=url; a repeated name gathers several URLs. */
static int parse_cluster(const char *s, struct config *c, char *err, size_t len)
{
    char *copy = strdup(s), *save = NULL;
    int rc = 0;
    members_free(c);
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        while (isspace((unsigned char)*tok))
            tok++;
        char *eq = strchr(tok, '=');
        if (!eq || eq == tok) {
            rc = fail(err, len, "'%s' is not name=peer-url", tok);
            break;
        }
        *eq = '\0';
        struct config_member *m = NULL;
        for (size_t i = 0; i < c->n_members; i++)
            if (!strcmp(c->members[i].name, tok))
                m = &c->members[i];
        if (!m) {
            if (c->n_members == CONFIG_MAX_MEMBERS) {
                rc = fail(err, len, "more than %d members", CONFIG_MAX_MEMBERS);
                break;
            }
            m = &c->members[c->n_members++];
            m->name = strdup(tok);
        }
        if (m->peer_urls.n == CONFIG_MAX_URLS) {
            rc = fail(err, len, "member '%s' has more than %d URLs", tok, CONFIG_MAX_URLS);
            break;
        }
        if ((rc = config_parse_url(eq + 1, &m->peer_urls.v[m->peer_urls.n], err, len)) < 0)
            break;
        m->peer_urls.n++;
    }
    free(copy);
    if (rc == 0 && c->n_members == 0)
        rc = fail(err, len, "empty member list");
    return rc;
}

/* ---------------------------------------------------------------- sources */

static int read_file(struct raw *raw, const char *path, char *err, size_t len)
{
    FILE *f = fopen(path, "r");
    char line[4096];
    int lineno = 0, rc = 0;

    if (!f)
        return fail(err, len, "cannot read config file %s: %s", path, strerror(errno));
    while (fgets(line, sizeof line, f)) {
        lineno++;
        char *p = line, *end;
        size_t n = strlen(p);
        if (n == sizeof line - 1 && p[n - 1] != '\n') {
            rc = fail(err, len, "%s:%d: line too long", path, lineno);
            break;
        }
        while (isspace((unsigned char)*p))
            p++;
        if (*p == '#' || *p == '\0')
            continue;
        char *eq = strchr(p, '=');
        if (!eq) {
            rc = fail(err, len, "%s:%d: want 'name = value', got '%.*s'", path, lineno, (int)strcspn(p, "\n"), p);
            break;
        }
        end = eq;
        while (end > p && isspace((unsigned char)end[-1]))
            end--;
        size_t idx;
        if (!find_opt(p, (size_t)(end - p), &idx)) {
            rc = fail(err, len, "%s:%d: unknown option '%.*s' (see cairnd --help)", path, lineno, (int)(end - p), p);
            break;
        }
        char *v = eq + 1;
        while (isspace((unsigned char)*v))
            v++;
        end = v + strlen(v);
        while (end > v && isspace((unsigned char)end[-1]))
            end--;
        if (end - v >= 2 && *v == '"' && end[-1] == '"') {
            v++;
            end--;
        }
        if (raw->nowned == sizeof raw->owned / sizeof raw->owned[0]) {
            rc = fail(err, len, "%s:%d: too many lines", path, lineno);
            break;
        }
        raw->owned[raw->nowned] = strndup(v, (size_t)(end - v));
        raw->val[idx] = raw->owned[raw->nowned++];
        snprintf(raw->src[idx], sizeof raw->src[idx], "%.60s:%d", path, lineno);
    }
    fclose(f);
    return rc;
}

static void env_name(const char *opt, char *out, size_t len)
{
    size_t i = snprintf(out, len, "CAIRN_");
    for (; *opt && i < len - 1; opt++)
        out[i++] = *opt == '-' ? '_' : (char)toupper((unsigned char)*opt);
    out[i] = '\0';
}

static const char *env_get(char **envp, const char *name)
{
    size_t n = strlen(name);
    for (char **e = envp; e && *e; e++)
        if (!strncmp(*e, name, n) && (*e)[n] == '=')
            return *e + n + 1;
    return NULL;
}

static void read_env(struct raw *raw, char **envp)
{
    for (size_t i = 0; i < NOPTS; i++) {
        char name[64];
        env_name(opts[i].name, name, sizeof name);
        const char *v = env_get(envp, name);
        if (v) {
            raw->val[i] = v;
            snprintf(raw->src[i], sizeof raw->src[i], "environment %s", name);
        }
    }
}

static int read_args(struct raw *raw, int argc, char **argv, char *err, size_t len)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0)
            return fail(err, len, "unexpected argument '%s' (options start with --; see cairnd --help)", a);
        a += 2;
        const char *eq = strchr(a, '=');
        size_t idx;
        const struct opt *o = find_opt(a, eq ? (size_t)(eq - a) : strlen(a), &idx);
        if (!o)
            return fail(err, len, "unknown option '--%.*s' (see cairnd --help)", eq ? (int)(eq - a) : (int)strlen(a), a);
        if (eq)
            raw->val[idx] = eq + 1;
        else if (o->type == T_BOOL)
            raw->val[idx] = "true";
        else if (i + 1 < argc)
            raw->val[idx] = argv[++i];
        else
            return fail(err, len, "option --%s needs a value", o->name);
        snprintf(raw->src[idx], sizeof raw->src[idx], "flag --%s", o->name);
    }
    return 0;
}

/* ---------------------------------------------------------------- conversion */

static int convert(struct config *c, const struct opt *o, const char *v, const char *src, char *err, size_t len)
{
    void *field = (char *)c + o->off;
    char why[256];
    uint64_t u;
    int64_t n;
    int rc;

#define BAD(...) fail(err, len, "option --%s (from %s): " __VA_ARGS__)
    switch (o->type) {
    case T_STR:
        free(*(char **)field);
        *(char **)field = strdup(v);
        return 0;
    case T_URLS:
        if ((rc = parse_urls(v, field, why, sizeof why)) < 0)
            return BAD("%s", o->name, src, why);
        return 0;
    case T_URL:
        config_url_free(field);
        if ((rc = config_parse_url(v, field, why, sizeof why)) < 0)
            return BAD("%s", o->name, src, why);
        return 0;
    case T_CLUSTER:
        if ((rc = parse_cluster(v, c, why, sizeof why)) < 0)
            return BAD("%s", o->name, src, why);
        return 0;
    case T_U32:
        if (parse_uint(v, UINT32_MAX, &u) < 0)
            return BAD("'%s' is not a whole number", o->name, src, v);
        *(uint32_t *)field = (uint32_t)u;
        return 0;
    case T_U64:
        if (parse_uint(v, UINT64_MAX / 2, &u) < 0)
            return BAD("'%s' is not a whole number", o->name, src, v);
        *(uint64_t *)field = u;
        return 0;
    case T_MS:
        if ((n = config_parse_duration_ms(v)) < 0 || n > UINT32_MAX)
            return BAD("'%s' is not a duration (milliseconds, or with ms, s, m, h)", o->name, src, v);
        *(uint32_t *)field = (uint32_t)n;
        return 0;
    case T_SIZE:
        if ((n = config_parse_size(v)) < 0)
            return BAD("'%s' is not a size (bytes, or with K, M, G)", o->name, src, v);
        *(uint64_t *)field = (uint64_t)n;
        return 0;
    case T_BOOL:
        if (parse_bool(v, field) < 0)
            return BAD("'%s' is not true or false", o->name, src, v);
        return 0;
    case T_STATE:
        if (!strcmp(v, "new"))
            *(enum cluster_state *)field = CLUSTER_STATE_NEW;
        else if (!strcmp(v, "existing"))
            *(enum cluster_state *)field = CLUSTER_STATE_EXISTING;
        else
            return BAD("'%s' is neither 'new' nor 'existing'", o->name, src, v);
        return 0;
    case T_COMPACTION:
        if (!strcmp(v, "periodic"))
            *(enum auto_compaction_mode *)field = AUTO_COMPACTION_PERIODIC;
        else if (!strcmp(v, "revision"))
            *(enum auto_compaction_mode *)field = AUTO_COMPACTION_REVISION;
        else
            return BAD("'%s' is neither 'periodic' nor 'revision'", o->name, src, v);
        return 0;
    case T_LEVEL:
        if ((*(int *)field = log_parse_level(v)) < 0)
            return BAD("'%s' is not a level (debug, info, notice, warning, err, crit)", o->name, src, v);
        return 0;
    case T_TARGET:
        if ((*(int *)field = log_parse_target(v)) < 0)
            return BAD("'%s' is not a target (auto, journal, stderr)", o->name, src, v);
        return 0;
    }
#undef BAD
    return fail(err, len, "option --%s: internal error: unknown type", o->name);
}

static void copy_urls(struct config_urls *dst, const struct config_urls *src)
{
    char ignored[64];
    urls_free(dst);
    for (size_t i = 0; i < src->n; i++)
        if (config_parse_url(src->v[i].url, &dst->v[dst->n], ignored, sizeof ignored) == 0)
            dst->n++;
}

/* Options whose default depends on others. */
static int derive_defaults(struct config *c, const struct raw *raw, char **envp, char *err, size_t len)
{
    char buf[4096];

    if (!c->data_dir) {
        const char *sd = env_get(envp, "STATE_DIRECTORY");
        if (sd && strchr(sd, ':'))
            sd = NULL; /* several state directories: ambiguous, keep the default */
        c->data_dir = strdup(sd ? sd : "cairn.data");
    }
    if (!raw->val[opt_index("advertise-client-urls")])
        copy_urls(&c->advertise_client_urls, &c->listen_client_urls);
    if (!raw->val[opt_index("initial-advertise-peer-urls")])
        copy_urls(&c->initial_advertise_peer_urls, &c->listen_peer_urls);
    if (!raw->val[opt_index("listen-admin-url")]) {
        /* ipc needs an absolute path; a relative data dir is anchored at the cwd */
        char cwd[2048] = "";
        if (c->data_dir[0] != '/' && !getcwd(cwd, sizeof cwd))
            return fail(err, len, "cannot find the current directory: %s", strerror(errno));
        snprintf(buf, sizeof buf, "ipc://%s%s%s/cairnd.sock", cwd, cwd[0] ? "/" : "", c->data_dir);
        char why[256];
        if (config_parse_url(buf, &c->listen_admin_url, why, sizeof why) < 0)
            return fail(err, len, "default admin socket: %s", why);
    }
    if (!raw->val[opt_index("initial-cluster")]) {
        size_t off = 0;
        for (size_t k = 0; k < c->initial_advertise_peer_urls.n && off < sizeof buf; k++)
            off += (size_t)snprintf(buf + off, sizeof buf - off, "%s%s=%s", k ? "," : "", c->name,
                                    c->initial_advertise_peer_urls.v[k].url);
        char why[256];
        if (parse_cluster(buf, c, why, sizeof why) < 0)
            return fail(err, len, "default --initial-cluster: %s", why);
    }
    return 0;
}

static int has_tls(const struct config_urls *l)
{
    for (size_t i = 0; i < l->n; i++)
        if (!strcmp(l->v[i].scheme, "tls+tcp"))
            return 1;
    return 0;
}

static int check_listeners(const struct config *c, const struct config_urls *l, const char *opt, char *err, size_t len)
{
    for (size_t i = 0; i < l->n; i++)
        if (!strcmp(l->v[i].scheme, "tcp") && !config_url_is_local(&l->v[i]) && !c->insecure_listen)
            return fail(err, len,
                        "option --%s: '%s' listens without TLS on a non-loopback address; "
                        "use tls+tcp:// with certificates, or give --insecure-listen",
                        opt, l->v[i].url);
    return 0;
}

static int url_in(const struct config_url *u, const struct config_urls *l)
{
    for (size_t i = 0; i < l->n; i++)
        if (!strcmp(u->url, l->v[i].url))
            return 1;
    return 0;
}

static int check_whole(const struct config *c, char *err, size_t len)
{
    int rc;

    if (!c->name[0])
        return fail(err, len, "option --name: must not be empty");
    if (!c->data_dir[0])
        return fail(err, len, "option --data-dir: must not be empty");
    if (c->listen_client_urls.n == 0)
        return fail(err, len, "option --listen-client-urls: at least one URL is needed");
    if (c->listen_peer_urls.n == 0)
        return fail(err, len, "option --listen-peer-urls: at least one URL is needed");
    if (c->heartbeat_ms == 0)
        return fail(err, len, "option --heartbeat-interval: must be above 0");
    if (c->election_ms < 5 * (uint64_t)c->heartbeat_ms)
        return fail(err, len,
                    "option --election-timeout: %" PRIu32 " ms is less than 5x --heartbeat-interval (%" PRIu32
                    " ms); elections would fire between heartbeats",
                    c->election_ms, c->heartbeat_ms);
    if (c->election_ms > 50000)
        return fail(err, len, "option --election-timeout: %" PRIu32 " ms is above the 50000 ms maximum", c->election_ms);
    if (c->snapshot_count == 0)
        return fail(err, len, "option --snapshot-count: must be above 0");
    if (c->max_txn_ops == 0)
        return fail(err, len, "option --max-txn-ops: must be above 0");
    if (c->max_request_bytes < 1024 || c->max_request_bytes > 64ull << 20)
        return fail(err, len, "option --max-request-bytes: %" PRIu64 " is outside 1024 .. 64M", c->max_request_bytes);
    if (c->value_cache_bytes > 64ull << 30)
        return fail(err, len, "option --value-cache-bytes: %" PRIu64 " is above the 64G maximum", c->value_cache_bytes);
    if (c->request_timeout_ms == 0)
        return fail(err, len, "option --request-timeout: must be above 0");
    if (c->watch_idle_timeout_ms == 0)
        return fail(err, len, "option --watch-idle-timeout: must be above 0");
    if (strcmp(c->listen_admin_url.scheme, "ipc") != 0)
        return fail(err, len, "option --listen-admin-url: '%s' must be an ipc:// URL", c->listen_admin_url.url);
    if ((rc = check_listeners(c, &c->listen_client_urls, "listen-client-urls", err, len)) < 0 ||
        (rc = check_listeners(c, &c->listen_peer_urls, "listen-peer-urls", err, len)) < 0 ||
        (rc = check_listeners(c, &c->listen_metrics_urls, "listen-metrics-urls", err, len)) < 0)
        return rc;
    for (size_t i = 0; i < c->listen_metrics_urls.n; i++)
        if (strcmp(c->listen_metrics_urls.v[i].scheme, "tcp") != 0)
            return fail(err, len, "option --listen-metrics-urls: '%s' must be a tcp:// URL (HTTP)",
                        c->listen_metrics_urls.v[i].url);
    if (has_tls(&c->listen_client_urls) && (!c->cert_file[0] || !c->key_file[0]))
        return fail(err, len, "options --cert-file and --key-file are needed for tls+tcp:// client listeners");
    if (c->auth_token_ttl == 0 || c->auth_token_ttl > 86400 * 366)
        return fail(err, len, "option --auth-token-ttl: %" PRIu32 " s is outside 1 .. 31622400 (a year)",
                    c->auth_token_ttl);
    if (c->client_cert_auth && !c->trusted_ca_file[0])
        return fail(err, len, "option --client-cert-auth needs --trusted-ca-file");
    if ((has_tls(&c->listen_peer_urls) || has_tls(&c->initial_advertise_peer_urls)) &&
        (!c->peer_cert_file[0] || !c->peer_key_file[0] || !c->peer_trusted_ca_file[0]))
        return fail(err, len,
                    "options --peer-cert-file, --peer-key-file and --peer-trusted-ca-file are all needed "
                    "for tls+tcp:// peer URLs (peer TLS is always mutual)");
    for (size_t i = 0; i < c->n_members; i++)
        for (size_t j = 0; j < c->members[i].peer_urls.n; j++)
            if (!strcmp(c->members[i].peer_urls.v[j].scheme, "ipc"))
                return fail(err, len, "option --initial-cluster: member '%s' has an ipc:// peer URL; peers need tcp",
                            c->members[i].name);
    const struct config_member *me = NULL;
    for (size_t i = 0; i < c->n_members; i++)
        if (!strcmp(c->members[i].name, c->name))
            me = &c->members[i];
    if (!me)
        return fail(err, len, "option --initial-cluster: this member's name '%s' is not in it", c->name);
    for (size_t i = 0; i < me->peer_urls.n; i++)
        if (!url_in(&me->peer_urls.v[i], &c->initial_advertise_peer_urls))
            return fail(err, len,
                        "option --initial-cluster: '%s' lists %s for this member, which is not in "
                        "--initial-advertise-peer-urls",
                        c->name, me->peer_urls.v[i].url);
    for (size_t i = 0; i < c->initial_advertise_peer_urls.n; i++)
        if (!url_in(&c->initial_advertise_peer_urls.v[i], &me->peer_urls))
            return fail(err, len,
                        "option --initial-advertise-peer-urls: %s is missing from this member's entry in "
                        "--initial-cluster",
                        c->initial_advertise_peer_urls.v[i].url);
    return 0;
}

/* ---------------------------------------------------------------- entry points */

int config_load(struct config *cfg, int argc, char **argv, char **envp, char *err, size_t len)
{
    struct raw *raw = calloc(1, sizeof *raw);
    int rc = 0;

    memset(cfg, 0, sizeof *cfg);
    if (!raw)
        return fail(err, len, "out of memory");
    if (!envp)
        envp = environ;

    /* Find the config file first: flags and environment may both name it. */
    struct raw pre = {0};
    read_env(&pre, envp);
    if ((rc = read_args(&pre, argc, argv, err, len)) < 0)
        goto out;
    const char *file = pre.val[opt_index("config-file")]; /* NULL, or points into argv/envp */
    char defpath[4096];
    const char *cd = env_get(envp, "CONFIGURATION_DIRECTORY");
    if (!file && cd && !strchr(cd, ':')) {
        snprintf(defpath, sizeof defpath, "%s/cairnd.conf", cd);
        if (access(defpath, F_OK) == 0)
            file = defpath;
    }
    if (file && (rc = read_file(raw, file, err, len)) < 0)
        goto out;
    read_env(raw, envp);
    if ((rc = read_args(raw, argc, argv, err, len)) < 0)
        goto out;
    if (file) {
        size_t i = opt_index("config-file");
        raw->val[i] = file;
        memcpy(raw->src[i], pre.src[i], sizeof raw->src[i]);
    }

    for (size_t i = 0; i < NOPTS; i++) {
        const char *v = raw->val[i] ? raw->val[i] : opts[i].def;
        if (!v)
            continue;
        if ((rc = convert(cfg, &opts[i], v, raw->val[i] ? raw->src[i] : "default", err, len)) < 0)
            goto out;
    }
    if ((rc = derive_defaults(cfg, raw, envp, err, len)) < 0)
        goto out;
    rc = check_whole(cfg, err, len);
out:
    for (size_t i = 0; i < raw->nowned; i++)
        free(raw->owned[i]);
    free(raw);
    if (rc < 0)
        config_free(cfg);
    return rc;
}

void config_free(struct config *c)
{
    for (size_t i = 0; i < NOPTS; i++) {
        void *field = (char *)c + opts[i].off;
        switch (opts[i].type) {
        case T_STR:
            free(*(char **)field);
            *(char **)field = NULL;
            break;
        case T_URLS:
            urls_free(field);
            break;
        case T_URL:
            config_url_free(field);
            break;
        case T_CLUSTER:
            members_free(c);
            break;
        default:
            break;
        }
    }
}

void config_print_help(FILE *out)
{
    fprintf(out,
            "Usage: cairnd [OPTIONS]\n"
            "       cairnd wal dump DIR\n"
            "       cairnd --help | --version\n\n"
            "A Cairn member.  With no options: a one-member cluster in ./cairn.data, clients on\n"
            "tcp://127.0.0.1:2479, peers on tcp://127.0.0.1:2480, and an ipc socket in the data dir.\n\n"
            "Every option can also be set in the config file (name = value) or in the environment\n"
            "(CAIRN_ and the name upper-cased, '-' as '_'); flags win over the environment, which\n"
            "wins over the file.\n\nOptions:\n");
    for (size_t i = 0; i < NOPTS; i++) {
        char env[64];
        env_name(opts[i].name, env, sizeof env);
        fprintf(out, "  --%s\n      %s\n      default: %s; environment: %s\n", opts[i].name, opts[i].help,
                opts[i].def ? (opts[i].def[0] ? opts[i].def : "(none)") : "(derived, see above)", env);
    }
}
