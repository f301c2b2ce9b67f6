/*
 * The shell's connection to the cluster: endpoints and TLS from the options
 * or the environment, the default endpoint (the local member's ipc socket,
 * else tcp://127.0.0.1:2479), and shell_call, libcairn's call made
 * cancellable by Ctrl-C and traceable.  Knows nothing of SQL.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "base/deadline.h"
#include "shell/shell.h"

volatile sig_atomic_t shell_interrupted;

#define DEFAULT_TCP "tcp://127.0.0.1:2479"

/* Where a local member's admin socket may be: the systemd units, the state directory, the embedded default. */
static const char *const local_sockets[] = {
    "/run/cairn/cairnd.sock",
    "/var/lib/cairn/cairnd.sock",
    "cairn.data/cairnd.sock",
};

/*
 * unix_alive: nonzero if an SP rep0 member answers on the socket at path.
 * The probe completes nng's handshake before it closes: an unpatched nng
 * 1.5.2 ipc listener stops serving everyone after a client that closes
 * mid-handshake (nanomsg/nng#1518).  The nng cairnd is built with has that
 * fixed, but the shell may meet a member built before the fix.
 */
static int unix_alive(const char *path)
{
    static const unsigned char req0_hello[8] = {0x00, 'S', 'P', 0x00, 0x00, 0x30, 0x00, 0x00};
    unsigned char reply[8];
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path)
        return 0;
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    struct timeval tv = {.tv_sec = 1};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    int ok = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
             send(fd, req0_hello, sizeof req0_hello, MSG_NOSIGNAL) == (ssize_t)sizeof req0_hello &&
             recv(fd, reply, sizeof reply, MSG_WAITALL) == (ssize_t)sizeof reply && reply[1] == 'S' &&
             reply[2] == 'P' && reply[4] == 0x00 && reply[5] == 0x31;
    close(fd);
    return ok;
}

/* default_endpoint: the URL to use when none is configured (malloc'd). */
static char *default_endpoint(void)
{
    for (size_t i = 0; i < sizeof local_sockets / sizeof local_sockets[0]; i++) {
        const char *p = local_sockets[i];
        char abs[4096];
        if (p[0] != '/') {
            if (!getcwd(abs, sizeof abs - strlen(p) - 2))
                continue;
            strcat(abs, "/");
            strcat(abs, p);
            p = abs;
        }
        if (unix_alive(p)) {
            struct sbuf b = {0};
            if (sbuf_printf(&b, "ipc://%s", p) == 0)
                return b.p;
            sbuf_free(&b);
        }
    }
    return strdup(DEFAULT_TCP);
}

static void free_eps(struct shell *sh)
{
    for (size_t i = 0; i < sh->neps; i++)
        free(sh->eps[i]);
    free(sh->eps);
    sh->eps = NULL;
    sh->neps = 0;
}

int conn_open(struct shell *sh)
{
    struct conn_opts *o = &sh->conn;
    if (!o->endpoints || !o->endpoints[0]) {
        free(o->endpoints);
        if (!(o->endpoints = default_endpoint()))
            return -1;
    }
    free_eps(sh);
    char *copy = strdup(o->endpoints), *save = NULL;
    if (!copy)
        return -1;
    for (char *t = strtok_r(copy, ", ", &save); t; t = strtok_r(NULL, ", ", &save)) {
        if (sh->neps == CAIRN_MAX_ENDPOINTS) {
            fprintf(stderr, "error: more than %d endpoints in '%s'\n", CAIRN_MAX_ENDPOINTS,
                    o->endpoints);
            free(copy);
            return -1;
        }
        char **n = realloc(sh->eps, (sh->neps + 1) * sizeof *n);
        if (!n || !(n[sh->neps] = strdup(t))) {
            sh->eps = n ? n : sh->eps;
            free(copy);
            return -1;
        }
        sh->eps = n;
        sh->neps++;
    }
    free(copy);
    if (!sh->neps) {
        fprintf(stderr, "error: no endpoint in '%s'\n", o->endpoints);
        return -1;
    }
    struct cairn_config cfg = {
        .endpoints = (const char *const *)sh->eps,
        .n_endpoints = sh->neps,
        .tls = {.ca_file = o->cacert, .cert_file = o->cert, .key_file = o->key,
                .server_name = o->server_name},
        .call_timeout_ms = o->timeout_ms,
    };
    struct cairn_error_detail err;
    struct cairn_client *c;
    if (cairn_open(&cfg, &c, &err) != 0) {
        fprintf(stderr, "error: cannot use endpoints %s: %s\n", o->endpoints, err.message);
        return -1;
    }
    sh->client = c;
    return 0;
}

void conn_close(struct shell *sh)
{
    cairn_close(sh->client);
    sh->client = NULL;
    free_eps(sh);
}

void conn_opts_free(struct conn_opts *o)
{
    free(o->endpoints);
    free(o->cacert);
    free(o->cert);
    free(o->key);
    free(o->server_name);
    memset(o, 0, sizeof *o);
}

/* ------------------------------------------------------------------ calls */

/* A call in flight; freed by whoever is last: the waiter, or the callback of an abandoned call. */
struct pending {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done, abandoned;
    int rc;
    Cairn__Response *resp;
    struct cairn_error_detail err;
};

static void pending_free(struct pending *p)
{
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

static void pending_cb(void *arg, int rc, Cairn__Response *resp, const struct cairn_error_detail *err)
{
    struct pending *p = arg;
    pthread_mutex_lock(&p->mu);
    if (p->abandoned) {
        pthread_mutex_unlock(&p->mu);
        cairn_response_free(resp);
        pending_free(p);
        return;
    }
    p->rc = rc;
    p->resp = resp;
    p->err = *err;
    p->done = true;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

static const char *body_name(const Cairn__Request *req)
{
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field(&cairn__request__descriptor, req->body_case);
    return f ? f->name : "request";
}

static void trace_request(struct shell *sh, const Cairn__Request *req, const struct cairn_call_opts *o)
{
    struct sbuf b = {0};
    sbuf_printf(&b, "-> %s", body_name(req));
    if (o && o->pinned && o->endpoint < sh->neps)
        sbuf_printf(&b, " @%s", sh->eps[o->endpoint]);
    if (req->body_case == CAIRN__REQUEST__BODY_RANGE) {
        const Cairn__RangeRequest *r = req->range;
        sbuf_puts(&b, " key=");
        bytes_quote(&b, r->key.data, r->key.len, 64);
        if (r->range_end.len) {
            sbuf_puts(&b, " end=");
            bytes_quote(&b, r->range_end.data, r->range_end.len, 64);
        }
        sbuf_printf(&b, " limit=%lld revision=%lld", (long long)r->limit, (long long)r->revision);
        if (r->sort_order == CAIRN__RANGE_REQUEST__SORT_ORDER__DESCEND)
            sbuf_puts(&b, " descend");
        if (r->keys_only)
            sbuf_puts(&b, " keys_only");
        if (r->serializable)
            sbuf_puts(&b, " serializable");
        if (r->min_mod_revision || r->max_mod_revision)
            sbuf_printf(&b, " mod=[%lld,%lld]", (long long)r->min_mod_revision,
                        (long long)r->max_mod_revision);
        if (r->min_create_revision || r->max_create_revision)
            sbuf_printf(&b, " create=[%lld,%lld]", (long long)r->min_create_revision,
                        (long long)r->max_create_revision);
    } else if (req->body_case == CAIRN__REQUEST__BODY_HISTORY) {
        const Cairn__HistoryRequest *h = req->history;
        sbuf_puts(&b, " key=");
        bytes_quote(&b, h->key.data, h->key.len, 64);
        if (h->range_end.len) {
            sbuf_puts(&b, " end=");
            bytes_quote(&b, h->range_end.data, h->range_end.len, 64);
        }
        sbuf_printf(&b, " revisions=[%lld,%lld] limit=%lld after=%lld.%lld",
                    (long long)h->min_revision, (long long)h->max_revision, (long long)h->limit,
                    (long long)h->after_revision, (long long)h->after_sub);
        if (h->keys_only)
            sbuf_puts(&b, " keys_only");
    } else if (req->body_case == CAIRN__REQUEST__BODY_TXN) {
        const Cairn__TxnRequest *t = req->txn;
        sbuf_printf(&b, " compares=%zu success=%zu failure=%zu", t->n_compare, t->n_success,
                    t->n_failure);
    }
    if (b.p)
        fprintf(stderr, "%s\n", b.p);
    sbuf_free(&b);
}

static void trace_response(int rc, const Cairn__Response *r, const struct cairn_error_detail *err)
{
    if (rc != 0) {
        fprintf(stderr, "<- error %s: %s\n", cairn_errname(rc), err->message);
        return;
    }
    long long rev = r->header ? (long long)r->header->revision : 0;
    if (r->body_case == CAIRN__RESPONSE__BODY_RANGE)
        fprintf(stderr, "<- %zu kvs more=%d count=%lld revision=%lld\n", r->range->n_kvs,
                r->range->more, (long long)r->range->count, rev);
    else if (r->body_case == CAIRN__RESPONSE__BODY_HISTORY)
        fprintf(stderr, "<- %zu records more=%d revision=%lld\n", r->history->n_records,
                r->history->more, rev);
    else if (r->body_case == CAIRN__RESPONSE__BODY_TXN)
        fprintf(stderr, "<- succeeded=%d revision=%lld\n", r->txn->succeeded, rev);
    else
        fprintf(stderr, "<- ok revision=%lld\n", rev);
}

static int call_once(struct shell *sh, const Cairn__Request *req, const struct cairn_call_opts *opts,
                     bool uninterruptible, Cairn__Response **resp, struct cairn_error_detail *err)
{
    struct cairn_error_detail dummy;
    if (!err)
        err = &dummy;
    memset(err, 0, sizeof *err);
    err->endpoint = -1;
    *resp = NULL;
    if (!sh->client) {
        err->code = -CAIRN_E_UNAVAILABLE;
        snprintf(err->message, sizeof err->message, "not connected (use \\connect)");
        return err->code;
    }
    if (!uninterruptible && shell_interrupted) {
        err->code = -EINTR;
        snprintf(err->message, sizeof err->message, "canceled");
        return -EINTR;
    }
    if (sh->trace)
        trace_request(sh, req, opts);
    struct pending *p = calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    pthread_mutex_init(&p->mu, NULL);
    mono_cond_init(&p->cv);
    int rc = cairn_call_async(sh->client, req, opts, pending_cb, p);
    if (rc != 0) {
        pending_free(p);
        err->code = rc;
        snprintf(err->message, sizeof err->message, "%s", cairn_strerror(rc));
        return rc;
    }
    pthread_mutex_lock(&p->mu);
    while (!p->done) {
        if (!uninterruptible && shell_interrupted) {
            /* the callback frees p when the reply or the deadline comes */
            p->abandoned = true;
            pthread_mutex_unlock(&p->mu);
            err->code = -EINTR;
            snprintf(err->message, sizeof err->message, "canceled");
            if (sh->trace)
                fprintf(stderr, "<- canceled\n");
            return -EINTR;
        }
        struct timespec ts;
        deadline_after_ns(&ts, 50 * 1000000LL); /* how often Ctrl-C is noticed */
        pthread_cond_timedwait(&p->cv, &p->mu, &ts);
    }
    pthread_mutex_unlock(&p->mu);
    rc = p->rc;
    *err = p->err;
    *resp = p->resp;
    pending_free(p);
    if (sh->trace)
        trace_response(rc, *resp, err);
    return rc;
}

int shell_call(struct shell *sh, const Cairn__Request *req, const struct cairn_call_opts *opts,
               bool uninterruptible, Cairn__Response **resp, struct cairn_error_detail *err)
{
    int rc = call_once(sh, req, opts, uninterruptible, resp, err);
    /* the token expired or was voided (refused before anything was done): \login's credentials renew it once */
    if (rc == -CAIRN_E_INVALID_TOKEN && req->body_case != CAIRN__REQUEST__BODY_AUTHENTICATE &&
        (!req->auth_token || !req->auth_token[0]) && cairn_reauthenticate(sh->client, NULL) == 0)
        rc = call_once(sh, req, opts, uninterruptible, resp, err);
    return rc;
}

int shell_call_expect(struct shell *sh, const Cairn__Request *req, int want,
                      const struct cairn_call_opts *opts, bool uninterruptible,
                      Cairn__Response **resp, struct cairn_error_detail *err)
{
    int rc = shell_call(sh, req, opts, uninterruptible, resp, err);
    if (rc == 0 && (int)(*resp)->body_case != want) {
        cairn_response_free(*resp);
        *resp = NULL;
        snprintf(err->message, sizeof err->message, "the reply is not the one asked for");
        err->code = rc = -CAIRN_E_MALFORMED;
    }
    return rc;
}

char *shell_call_error(const char *what, int rc, const struct cairn_error_detail *err)
{
    if (rc == -EINTR)
        return sqlite3_mprintf("%s: canceled", what);
    const char *msg = err && err->message[0] ? err->message : cairn_strerror(rc);
    if (rc == -CAIRN_E_COMPACTED && err && err->compact_revision)
        return sqlite3_mprintf("%s: %s: %s (compact revision %lld)", what, cairn_errname(rc), msg,
                               (long long)err->compact_revision);
    return sqlite3_mprintf("%s: %s: %s", what, cairn_errname(rc), msg);
}

void shell_note_rev(struct shell *sh, int64_t rev)
{
    if (rev <= 0)
        return;
    if (!sh->rev_lo || rev < sh->rev_lo)
        sh->rev_lo = rev;
    if (rev > sh->rev_hi)
        sh->rev_hi = rev;
}

int shell_sleep_ms(int ms)
{
    while (ms > 0) {
        if (shell_interrupted)
            return -EINTR;
        int step = ms < 50 ? ms : 50;
        struct timespec ts = {0, step * 1000000L};
        nanosleep(&ts, NULL);
        ms -= step;
    }
    return shell_interrupted ? -EINTR : 0;
}

/* ---------------------------------------------------------------- members */

void member_id_text(uint64_t id, char out[17])
{
    snprintf(out, 17, "%016llx", (unsigned long long)id);
}

uint64_t member_id_parse(sqlite3_value *v)
{
    if (sqlite3_value_type(v) == SQLITE_INTEGER)
        return (uint64_t)sqlite3_value_int64(v);
    const char *s = (const char *)sqlite3_value_text(v);
    if (!s)
        return 0;
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X'))
        s += 2;
    if (!*s || strlen(s) > 16)
        return 0;
    char *end;
    errno = 0;
    unsigned long long id = strtoull(s, &end, 16);
    return errno || *end ? 0 : (uint64_t)id;
}

static int status_of(struct shell *sh, size_t ep, Cairn__Response **resp)
{
    Cairn__Request req = CAIRN__REQUEST__INIT;
    Cairn__StatusRequest st = CAIRN__STATUS_REQUEST__INIT;
    req.body_case = CAIRN__REQUEST__BODY_STATUS;
    req.status = &st;
    struct cairn_call_opts o = {.pinned = true, .endpoint = (unsigned)ep, .timeout_ms = 3000};
    int rc = shell_call(sh, &req, &o, false, resp, NULL);
    if (rc == 0 && (*resp)->body_case != CAIRN__RESPONSE__BODY_STATUS) {
        cairn_response_free(*resp);
        *resp = NULL;
        rc = -CAIRN_E_MALFORMED;
    }
    return rc;
}

int shell_find_member(struct shell *sh, sqlite3_value *who, uint64_t *id, char **why)
{
    const char *name = (const char *)sqlite3_value_text(who);
    uint64_t want = member_id_parse(who);
    for (size_t i = 0; i < sh->neps; i++) {
        if (name && !strcmp(name, sh->eps[i])) {
            Cairn__Response *r;
            if (status_of(sh, i, &r) == 0) {
                *id = r->header ? r->header->member_id : 0;
                cairn_response_free(r);
            }
            return (int)i;
        }
    }
    for (size_t i = 0; i < sh->neps; i++) {
        Cairn__Response *r;
        if (status_of(sh, i, &r) != 0)
            continue;
        uint64_t mid = r->header ? r->header->member_id : 0;
        bool match = (want && mid == want) ||
                     (name && r->status->member_name && !strcmp(name, r->status->member_name));
        cairn_response_free(r);
        if (match) {
            *id = mid;
            return (int)i;
        }
    }
    *why = sqlite3_mprintf("no endpoint answers as member '%s' (give its ID, name or endpoint URL; "
                           "the shell reaches members through --endpoints)",
                           name ? name : "?");
    return -1;
}

int shell_find_leader(struct shell *sh, uint64_t *leader_id, char **why)
{
    uint64_t leader = 0;
    for (size_t i = 0; i < sh->neps && !leader; i++) {
        Cairn__Response *r;
        if (status_of(sh, i, &r) != 0)
            continue;
        leader = r->status->leader;
        cairn_response_free(r);
    }
    if (!leader) {
        *why = sqlite3_mprintf("no member reached knows a leader");
        return -1;
    }
    *leader_id = leader;
    for (size_t i = 0; i < sh->neps; i++) {
        Cairn__Response *r;
        if (status_of(sh, i, &r) != 0)
            continue;
        uint64_t mid = r->header ? r->header->member_id : 0;
        cairn_response_free(r);
        if (mid == leader)
            return (int)i;
    }
    char hex[17];
    member_id_text(leader, hex);
    *why = sqlite3_mprintf("the leader %s is not among the shell's endpoints", hex);
    return -1;
}
