/*
 * cairn-record's main: options, the history file writer, the threads of the
 * load and the watchers, the revision log at the end, and a summary line.
 * The operations are in record_ops.c, the watchers in record_watch.c, the
 * revision log in record_log.c.  The format is test/jepsen/HISTORY.md's.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "test/jepsen/record.h"

static const char *op_names[OP_COUNT] = {"put", "get", "sget", "del", "cas", "mput", "mget", "range", "lease"};

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: cairn-record --endpoints URL,URL,... --out FILE [OPTIONS]\n"
            "       cairn-record --log-only --endpoints ... --out FILE   (append the revision log)\n"
            "\n"
            "Runs random operations against a Cairn cluster and writes the history\n"
            "(test/jepsen/HISTORY.md) that cairn-check judges.\n"
            "\n"
            "  --endpoints LIST      comma-separated member client URLs\n"
            "  --names LIST          the members' names, in the order of --endpoints (for `meta pin`)\n"
            "  --pin-count N         sget processes pin to one of the first N endpoints (default: all)\n"
            "  --cacert F --cert F --key F --server-name NAME   TLS for tls+tcp:// endpoints\n"
            "  --processes N         load processes, one operation at a time each (default 5)\n"
            "  --duration S          stop starting operations after S seconds\n"
            "  --ops N               stop after N operations in all (default: 1000 if no --duration)\n"
            "  --keys K              size of the key space (default 16, at most %d)\n"
            "  --group G             mput/mget take 2-3 keys of one group of G consecutive keys (default 4)\n"
            "  --mix W,W,...         weights of put,get,sget,del,cas,mput,mget,range,lease,\n"
            "                        or name=W,... (default put=4,get=4,sget=2,del=1,cas=3,mput=1,mget=1,range=1,lease=1)\n"
            "  --watchers W          watchers on the key prefix (default 2, at most %d)\n"
            "  --timeout-ms MS       deadline of every call (default 2000); past it the outcome is unknown\n"
            "  --dial-timeout-ms MS  per-endpoint connection wait (default 500)\n"
            "  --seed N              random seed (default: time)\n"
            "  --prefix P            key prefix (default jp/)\n"
            "  --out FILE            the history file (required)\n"
            "  --append              append to FILE instead of writing a new history\n"
            "  --log                 after the load, append the revision log\n"
            "  --log-only            no load: append the revision log to FILE\n"
            "  --log-timeout S       bound on getting the revision log (default 60)\n"
            "  --watch-drain S       after the load, how long watchers may catch up (default 5)\n"
            "  --meta NAME=VALUE     an extra `meta NAME VALUE` line (repeatable)\n",
            REC_MAX_KEYS, REC_MAX_WATCHERS);
}

uint64_t rec_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ------------------------------------------------------------------ lines */

void rec_line_init(struct rec_line *l)
{
    l->len = 0;
    l->buf[0] = '\0';
    l->cut = false;
}

static void line_vadd(struct rec_line *l, const char *fmt, va_list ap)
{
    if (l->cut)
        return;
    size_t room = sizeof(l->buf) - l->len;
    int n = vsnprintf(l->buf + l->len, room, fmt, ap);
    if (n < 0 || (size_t)n >= room) {
        l->cut = true;
        l->buf[l->len] = '\0';
        return;
    }
    l->len += (size_t)n;
}

void rec_line_addf(struct rec_line *l, const char *fmt, ...)
{
    va_list ap;
    if (l->len && !l->cut && l->len + 1 < sizeof(l->buf)) {
        l->buf[l->len++] = ' ';
        l->buf[l->len] = '\0';
    }
    va_start(ap, fmt);
    line_vadd(l, fmt, ap);
    va_end(ap);
}

static bool token_byte(unsigned char ch)
{
    return isalnum(ch) || ch == '.' || ch == '_' || ch == '/' || ch == ':' || ch == '-';
}

void rec_line_value(struct rec_line *l, const void *data, size_t len, bool present)
{
    const unsigned char *p = data;
    bool plain = present && len > 0;
    if (!present) {
        rec_line_addf(l, "~");
        return;
    }
    for (size_t i = 0; plain && i < len; i++)
        plain = token_byte(p[i]);
    if (plain && !(len == 1 && p[0] == '~')) {
        rec_line_addf(l, "%.*s", (int)len, (const char *)p);
        return;
    }
    /* Nothing the recorder writes looks like this: the checker sees a value never written. */
    char hex[2 * 64 + 1];
    size_t n = len > 64 ? 64 : len;
    for (size_t i = 0; i < n; i++)
        snprintf(hex + 2 * i, 3, "%02x", p[i]);
    hex[2 * n] = '\0';
    rec_line_addf(l, "bad:%zu:%s", len, hex);
}

/* ------------------------------------------------------------------ the file */

uint64_t rec_write_op(struct rec_run *run, const char *kind, int p, uint64_t id, const char *rest)
{
    pthread_mutex_lock(&run->h.mu);
    uint64_t t = rec_now_ns();
    fprintf(run->h.f, "%s %d %" PRIu64 " %" PRIu64 "%s%s\n", kind, p, id, t, rest && rest[0] ? " " : "",
            rest ? rest : "");
    fflush(run->h.f);
    pthread_mutex_unlock(&run->h.mu);
    return t;
}

void rec_writef(struct rec_run *run, const char *fmt, ...)
{
    va_list ap;
    pthread_mutex_lock(&run->h.mu);
    va_start(ap, fmt);
    vfprintf(run->h.f, fmt, ap);
    va_end(ap);
    fputc('\n', run->h.f);
    fflush(run->h.f);
    pthread_mutex_unlock(&run->h.mu);
}

/* ------------------------------------------------------------------ codes */

const char *rec_code_word(int rc, char *buf, size_t len)
{
    const char *name = cairn_errname(rc);
    if (!strcmp(name, "UNKNOWN"))
        snprintf(buf, len, "err%d", rc < 0 ? -rc : rc);
    else
        snprintf(buf, len, "%s", name);
    for (char *q = buf; *q; q++)
        *q = (char)tolower((unsigned char)*q);
    return buf;
}

/*
 * Why each of these means "not applied" (base/errors.h, client/call.c,
 * daemon/rpc.c, raft/raft.c):
 *  UNAVAILABLE        libcairn never handed the request to a connection.
 *  NO_LEADER, LEADER_TRANSFER, PROPOSAL_DROPPED
 *                     refused by raft_propose before anything entered a log.
 *  NOT_LEADER         a member refusing what only the leader does, having done nothing.
 *  TOO_MANY_REQUESTS  refused by do_write before proposing.
 *  LEARNER_NOT_SERVING, REQUEST_TOO_LARGE, MALFORMED (from the member),
 *  INVALID_ARGUMENT, KEY_EMPTY, DUPLICATE_KEY, TOO_MANY_TXN_OPS, VALUE_PROVIDED,
 *  LEASE_PROVIDED     refused by validation before proposing.
 *  NO_SPACE, ALARM_ACTIVE, LEASE_NOT_FOUND, KEY_NOT_FOUND
 *                     refused by admission or by the apply itself, which then
 *                     changes nothing on any member (the apply is deterministic).
 *  -EAGAIN -EINVAL -ENOMEM  the library refused the call before sending it.
 *  STOPPED           a stopping member refusing what it had not proposed (what
 *                     it had proposed and not finished ends TIMEOUT).
 * Everything else -- TIMEOUT (deadline, connection lost after the send, or
 * the member stopped before the write completed), ECANCELED, IO, a reply
 * that does not decode -- is unknown.
 */
bool rec_write_not_applied(int rc)
{
    switch (-rc) {
    case CAIRN_E_UNAVAILABLE:
    case CAIRN_E_NO_LEADER:
    case CAIRN_E_LEADER_TRANSFER:
    case CAIRN_E_PROPOSAL_DROPPED:
    case CAIRN_E_NOT_LEADER:
    case CAIRN_E_STOPPED:
    case CAIRN_E_TOO_MANY_REQUESTS:
    case CAIRN_E_LEARNER_NOT_SERVING:
    case CAIRN_E_REQUEST_TOO_LARGE:
    case CAIRN_E_INVALID_ARGUMENT:
    case CAIRN_E_KEY_EMPTY:
    case CAIRN_E_DUPLICATE_KEY:
    case CAIRN_E_TOO_MANY_TXN_OPS:
    case CAIRN_E_VALUE_PROVIDED:
    case CAIRN_E_LEASE_PROVIDED:
    case CAIRN_E_NO_SPACE:
    case CAIRN_E_ALARM_ACTIVE:
    case CAIRN_E_LEASE_NOT_FOUND:
    case CAIRN_E_KEY_NOT_FOUND:
    case EAGAIN:
    case EINVAL:
    case ENOMEM:
        return true;
    default:
        return false;
    }
}

/* ------------------------------------------------------------------ client */

int rec_open_client(const struct rec_run *run, struct cairn_client **out, char *why, size_t whylen)
{
    const struct rec_opts *o = &run->o;
    struct cairn_config cfg = {
        .endpoints = o->endpoints,
        .n_endpoints = o->n_endpoints,
        .tls = {.ca_file = o->cacert, .cert_file = o->cert, .key_file = o->key, .server_name = o->server_name},
        .call_timeout_ms = o->timeout_ms,
        .dial_timeout_ms = o->dial_timeout_ms,
    };
    struct cairn_error_detail err = {0};
    int rc = cairn_open(&cfg, out, &err);
    if (rc != 0)
        snprintf(why, whylen, "%s", err.message[0] ? err.message : cairn_strerror(rc));
    return rc;
}

/* ------------------------------------------------------------------ options */

static int split_list(char *s, const char **out, size_t max, size_t *n, const char *what)
{
    *n = 0;
    for (char *save = NULL, *tok = strtok_r(s, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (*n == max) {
            fprintf(stderr, "cairn-record: more than %zu %s\n", max, what);
            return -1;
        }
        out[(*n)++] = tok;
    }
    return 0;
}

static int parse_mix(char *s, unsigned *w)
{
    unsigned vals[OP_COUNT] = {0};
    size_t n = 0;
    bool named = strchr(s, '=') != NULL;
    for (char *save = NULL, *tok = strtok_r(s, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '=');
        const char *num = tok;
        size_t idx = n;
        if (named) {
            if (!eq) {
                fprintf(stderr, "cairn-record: --mix entry '%s' is not name=weight\n", tok);
                return -1;
            }
            *eq = '\0';
            num = eq + 1;
            for (idx = 0; idx < OP_COUNT && strcmp(op_names[idx], tok); idx++)
                ;
            if (idx == OP_COUNT) {
                fprintf(stderr, "cairn-record: --mix: unknown operation '%s' (put get sget del cas mput mget range lease)\n",
                        tok);
                return -1;
            }
        } else if (n >= OP_COUNT) {
            fprintf(stderr, "cairn-record: --mix has more than %d weights\n", OP_COUNT);
            return -1;
        }
        char *end;
        unsigned long v = strtoul(num, &end, 10);
        if (*num == '\0' || *end || v > 1000) {
            fprintf(stderr, "cairn-record: --mix weight '%s' is not a number 0..1000\n", num);
            return -1;
        }
        vals[idx] = (unsigned)v;
        n++;
    }
    unsigned total = 0;
    for (int i = 0; i < OP_COUNT; i++)
        total += vals[i];
    if (!total) {
        fprintf(stderr, "cairn-record: --mix gives every operation weight 0\n");
        return -1;
    }
    memcpy(w, vals, sizeof(vals));
    return 0;
}

static int parse_num(const char *opt, const char *v, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (errno || *v == '\0' || *end || d < lo || d > hi) {
        fprintf(stderr, "cairn-record: %s '%s' is not a number in [%g, %g]\n", opt, v, lo, hi);
        return -1;
    }
    *out = d;
    return 0;
}

static int parse_args(int argc, char **argv, struct rec_opts *o)
{
    static const unsigned default_mix[OP_COUNT] = {4, 4, 2, 1, 3, 1, 1, 1, 1};
    char *endpoints = NULL, *names = NULL, *mix = NULL;
    double d;

    *o = (struct rec_opts){.processes = 5, .watchers = 2, .keys = 16, .group = 4, .timeout_ms = 2000,
                           .dial_timeout_ms = 500, .seed = (uint64_t)time(NULL), .prefix = "jp/",
                           .log_timeout_s = 60, .watch_drain_s = 5};
    memcpy(o->weights, default_mix, sizeof(default_mix));
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            exit(0);
        }
        if (!strcmp(a, "--log")) {
            o->log = true;
            continue;
        }
        if (!strcmp(a, "--log-only")) {
            o->log_only = true;
            continue;
        }
        if (!strcmp(a, "--append")) {
            o->append = true;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "cairn-record: %s needs a value (or is unknown; see --help)\n", a);
            return -1;
        }
        char *v = argv[++i];
        if (!strcmp(a, "--endpoints"))
            endpoints = v;
        else if (!strcmp(a, "--names"))
            names = v;
        else if (!strcmp(a, "--cacert"))
            o->cacert = v;
        else if (!strcmp(a, "--cert"))
            o->cert = v;
        else if (!strcmp(a, "--key"))
            o->key = v;
        else if (!strcmp(a, "--server-name"))
            o->server_name = v;
        else if (!strcmp(a, "--out"))
            o->out = v;
        else if (!strcmp(a, "--prefix"))
            o->prefix = v;
        else if (!strcmp(a, "--mix"))
            mix = v;
        else if (!strcmp(a, "--meta")) {
            if (!strchr(v, '=') || o->n_metas == sizeof(o->metas) / sizeof(o->metas[0])) {
                fprintf(stderr, "cairn-record: --meta '%s' is not NAME=VALUE (or more than 32 given)\n", v);
                return -1;
            }
            o->metas[o->n_metas++] = v;
        } else {
            if (!strcmp(a, "--processes")) {
                if (parse_num(a, v, 1, REC_MAX_PROCS, &d))
                    return -1;
                o->processes = (int)d;
            } else if (!strcmp(a, "--pin-count")) {
                if (parse_num(a, v, 1, CAIRN_MAX_ENDPOINTS, &d))
                    return -1;
                o->pin_count = (size_t)d;
            } else if (!strcmp(a, "--group")) {
                if (parse_num(a, v, 2, REC_MAX_KEYS, &d))
                    return -1;
                o->group = (int)d;
            } else if (!strcmp(a, "--watchers")) {
                if (parse_num(a, v, 0, REC_MAX_WATCHERS, &d))
                    return -1;
                o->watchers = (int)d;
            } else if (!strcmp(a, "--keys")) {
                if (parse_num(a, v, 2, REC_MAX_KEYS, &d))
                    return -1;
                o->keys = (int)d;
            } else if (!strcmp(a, "--duration")) {
                if (parse_num(a, v, 0, 86400 * 7, &o->duration_s))
                    return -1;
            } else if (!strcmp(a, "--ops")) {
                if (parse_num(a, v, 0, 1e12, &d))
                    return -1;
                o->ops = (uint64_t)d;
            } else if (!strcmp(a, "--timeout-ms")) {
                if (parse_num(a, v, 10, 600000, &d))
                    return -1;
                o->timeout_ms = (int)d;
            } else if (!strcmp(a, "--dial-timeout-ms")) {
                if (parse_num(a, v, 10, 600000, &d))
                    return -1;
                o->dial_timeout_ms = (int)d;
            } else if (!strcmp(a, "--seed")) {
                if (parse_num(a, v, 0, 1.8e19, &d))
                    return -1;
                o->seed = strtoull(v, NULL, 10);
            } else if (!strcmp(a, "--log-timeout")) {
                if (parse_num(a, v, 1, 3600, &o->log_timeout_s))
                    return -1;
            } else if (!strcmp(a, "--watch-drain")) {
                if (parse_num(a, v, 0, 600, &o->watch_drain_s))
                    return -1;
            } else {
                fprintf(stderr, "cairn-record: unknown option %s (see --help)\n", a);
                return -1;
            }
        }
    }
    if (!endpoints || !o->out) {
        fprintf(stderr, "cairn-record: --endpoints and --out are required (see --help)\n");
        return -1;
    }
    if (split_list(endpoints, o->endpoints, CAIRN_MAX_ENDPOINTS, &o->n_endpoints, "endpoints"))
        return -1;
    if (!o->n_endpoints) {
        fprintf(stderr, "cairn-record: --endpoints is empty\n");
        return -1;
    }
    if (!o->pin_count || o->pin_count > o->n_endpoints)
        o->pin_count = o->n_endpoints;
    if (names) {
        if (split_list(names, o->names, CAIRN_MAX_ENDPOINTS, &o->n_names, "names"))
            return -1;
        if (o->n_names != o->n_endpoints) {
            fprintf(stderr, "cairn-record: --names gives %zu names for %zu endpoints\n", o->n_names, o->n_endpoints);
            return -1;
        }
    }
    if (mix) {
        o->mix = strdup(mix);
        if (parse_mix(mix, o->weights))
            return -1;
    } else {
        o->mix = "put=4,get=4,sget=2,del=1,cas=3,mput=1,mget=1,range=1,lease=1";
    }
    if (strlen(o->prefix) > 32 || !o->prefix[0]) {
        fprintf(stderr, "cairn-record: --prefix '%s' must be 1 to 32 characters\n", o->prefix);
        return -1;
    }
    for (const char *q = o->prefix; *q; q++)
        if (!token_byte((unsigned char)*q)) {
            fprintf(stderr, "cairn-record: --prefix '%s' has a character outside [A-Za-z0-9._/:-]\n", o->prefix);
            return -1;
        }
    if (!o->log_only && o->duration_s == 0 && o->ops == 0)
        o->ops = 1000;
    return 0;
}

/* ------------------------------------------------------------------ main */

static void write_metas(struct rec_run *run)
{
    const struct rec_opts *o = &run->o;
    char eps[4096] = "";
    size_t len = 0;
    for (size_t i = 0; i < o->n_endpoints; i++)
        len += (size_t)snprintf(eps + len, len < sizeof eps ? sizeof eps - len : 0, "%s%s", i ? "," : "",
                                o->endpoints[i]);
    rec_writef(run, "meta recorder cairn-record");
    rec_writef(run, "meta seed %" PRIu64, o->seed);
    rec_writef(run, "meta endpoints %s", eps);
    if (o->n_names) {
        char nm[1024] = "";
        size_t l = 0;
        for (size_t i = 0; i < o->n_names; i++)
            l += (size_t)snprintf(nm + l, l < sizeof nm ? sizeof nm - l : 0, "%s%s", i ? "," : "", o->names[i]);
        rec_writef(run, "meta members %s", nm);
    }
    rec_writef(run, "meta processes %d", o->processes);
    rec_writef(run, "meta keys %d", o->keys);
    rec_writef(run, "meta group %d", o->group);
    rec_writef(run, "meta prefix %s", o->prefix);
    rec_writef(run, "meta mix %s", o->mix);
    rec_writef(run, "meta watchers %d", o->watchers);
    rec_writef(run, "meta timeout_ms %d", o->timeout_ms);
    if (o->duration_s > 0)
        rec_writef(run, "meta duration %g", o->duration_s);
    if (o->ops)
        rec_writef(run, "meta ops %" PRIu64, o->ops);
    for (size_t i = 0; i < o->n_metas; i++) {
        const char *eq = strchr(o->metas[i], '=');
        rec_writef(run, "meta %.*s %s", (int)(eq - o->metas[i]), o->metas[i], eq + 1);
    }
}

/* The revision watchers start from: one past the store's now, by a linearizable read (retried, bounded). */
static int64_t current_revision(struct rec_run *run, struct cairn_client *c)
{
    uint64_t end = rec_now_ns() + 30ull * 1000000000u;
    while (rec_now_ns() < end) {
        Cairn__Response *resp = NULL;
        const Cairn__KeyValue *kv = NULL;
        int rc = cairn_get(c, (struct cairn_bytes){run->key_names[0], strlen(run->key_names[0])}, NULL, &resp, &kv,
                           NULL);
        if (rc == 0) {
            int64_t rev = resp->header ? resp->header->revision : 0;
            cairn_response_free(resp);
            return rev;
        }
        struct timespec ts = {0, 100 * 1000000};
        nanosleep(&ts, NULL);
    }
    return 0;
}

int main(int argc, char **argv)
{
    static struct rec_run run; /* large: key names and hints */
    struct rec_proc procs[REC_MAX_PROCS];
    pthread_t threads[REC_MAX_PROCS], wthreads[REC_MAX_WATCHERS];
    struct rec_watcher_arg wargs[REC_MAX_WATCHERS];
    char why[600];
    int rc = 0;

    memset(procs, 0, sizeof procs);
    if (parse_args(argc, argv, &run.o))
        return 2;
    signal(SIGPIPE, SIG_IGN);
    struct rec_opts *o = &run.o;
    bool append = o->append || o->log_only;
    run.h.f = fopen(o->out, append ? "a" : "w");
    if (!run.h.f) {
        fprintf(stderr, "cairn-record: cannot open history file %s: %s\n", o->out, strerror(errno));
        return 2;
    }
    pthread_mutex_init(&run.h.mu, NULL);
    pthread_mutex_init(&run.hint_mu, NULL);
    for (int i = 0; i < o->keys; i++)
        snprintf(run.key_names[i], sizeof run.key_names[i], "%sk%03d", o->prefix, i);
    run.n_lease_keys = o->keys / 2 > 0 ? o->keys / 2 : 1;
    for (int i = 0; i < run.n_lease_keys; i++)
        snprintf(run.lease_key_names[i], sizeof run.lease_key_names[i], "%sl%03d", o->prefix, i);

    if (o->log_only) {
        rc = rec_write_log(&run);
        fclose(run.h.f);
        return rc ? 1 : 0;
    }
    if (!append)
        rec_writef(&run, "cairn-history 1");
    write_metas(&run);

    uint64_t start = rec_now_ns();
    if (o->duration_s > 0)
        run.deadline_ns = start + (uint64_t)(o->duration_s * 1e9);

    int n_procs = 0, n_watch = 0;
    for (int p = 0; p < o->processes; p++) {
        struct rec_proc *pr = &procs[p];
        *pr = (struct rec_proc){.run = &run, .p = p, .pin = -1, .rng = o->seed * 1000003u + (uint64_t)p * 7919u + 1};
        if (o->weights[OP_SGET]) {
            pr->pin = (int)((size_t)p % o->pin_count);
            rec_writef(&run, "meta pin %d %s", p,
                       o->n_names ? o->names[pr->pin] : o->endpoints[pr->pin]);
        }
        if (rec_open_client(&run, &pr->c, why, sizeof why) != 0) {
            fprintf(stderr, "cairn-record: cannot open a client: %s\n", why);
            rc = 2;
            goto stop;
        }
        n_procs++;
    }
    if (o->watchers) {
        int64_t from = current_revision(&run, procs[0].c);
        for (int w = 0; w < o->watchers; w++)
            wargs[w] = (struct rec_watcher_arg){.run = &run, .index = w, .start_rev = from > 0 ? from + 1 : 1};
    }
    for (int p = 0; p < n_procs; p++)
        if (pthread_create(&threads[p], NULL, rec_process, &procs[p]) != 0) {
            fprintf(stderr, "cairn-record: cannot start process thread %d\n", p);
            atomic_store(&run.stop, 1);
            n_procs = p;
            rc = 2;
            break;
        }
    for (int w = 0; w < o->watchers; w++) {
        if (pthread_create(&wthreads[w], NULL, rec_watcher, &wargs[w]) != 0) {
            fprintf(stderr, "cairn-record: cannot start watcher thread %d\n", w);
            rc = 2;
            break;
        }
        n_watch++;
    }
    for (int p = 0; p < n_procs; p++)
        pthread_join(threads[p], NULL);
    n_procs = 0;
    atomic_store(&run.stop, 1);
    /* The watchers catch up to the last acknowledged revision (bounded by --watch-drain), then stop. */
    for (int w = 0; w < n_watch; w++)
        pthread_join(wthreads[w], NULL);
    if (o->log && rec_write_log(&run) != 0 && rc == 0)
        rc = 1;
stop:
    atomic_store(&run.stop, 1);
    for (int p = 0; p < n_procs; p++)
        pthread_join(threads[p], NULL);
    for (int p = 0; p < o->processes; p++)
        if (procs[p].c)
            cairn_close(procs[p].c);
    fclose(run.h.f);
    printf("{\"attempted\": %" PRIu64 ", \"ok\": %" PRIu64 ", \"fail\": %" PRIu64 ", \"info\": %" PRIu64
           ", \"watch_starts\": %" PRIu64 ", \"events\": %" PRIu64 ", \"seconds\": %.1f}\n",
           (uint64_t)(atomic_load(&run.n_ok) + atomic_load(&run.n_fail) + atomic_load(&run.n_info)),
           (uint64_t)atomic_load(&run.n_ok), (uint64_t)atomic_load(&run.n_fail), (uint64_t)atomic_load(&run.n_info),
           (uint64_t)atomic_load(&run.n_watch_starts), (uint64_t)atomic_load(&run.n_events),
           (double)(rec_now_ns() - start) / 1e9);
    return rc;
}
