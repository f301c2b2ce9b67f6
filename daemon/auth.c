/*
 * Auth (see auth.h and docs/auth.md).  Three kinds of state, each with its
 * own rule:
 *  - the auth store (users, roles, permissions, enabled): a store record
 *    changed only in before_apply, mirrored here as an immutable unpacked
 *    copy that nng threads borrow by reference count;
 *  - tokens: in memory on every member, inserted when an AuthTokenGrant
 *    entry is applied (SHA-256 of the token, the user, the TTL), refreshed
 *    by use on the member that sees the use, voided by the store's
 *    tokens_revision (password change, role revoked, user deleted, auth
 *    disabled: auth_token_current);
 *  - the failed-authentication limiter: per client address, this member only.
 * Password hashing (PBKDF2, ~0.1 s) runs on one worker thread with a bounded
 * queue: never on the node thread, never on nng's.
 */
#include "daemon/auth.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/transport/ipc/ipc.h>
#include <openssl/rand.h>

#include "base/deadline.h"
#include "base/errors.h"
#include "base/log.h"
#include "daemon/auth_internal.h"
#include "daemon/kvconv.h"
#include "daemon/msgids.h"
#include "proto/cairn.pb-c.h"
#include "proto/internal.pb-c.h"
#include "storage/mvcc.h"

#define WORK_QUEUE_MAX 64          /* password hashes waiting; beyond: TOO_MANY_REQUESTS */
#define TOKEN_BUCKETS 4096
#define TOKEN_MAX 100000           /* tokens remembered per member; the oldest go first beyond it */
#define TOKEN_KEEP_EXPIRED_MS (3600 * 1000) /* an expired token still says "expired" for an hour */
#define LIMIT_BURST 5              /* failed authentications an address may make at once */
#define LIMIT_REFILL_MS 12000      /* then one more every 12 s: 5 a minute */
#define LIMIT_ENTRIES 1024         /* addresses tracked; the idlest is forgotten beyond it */
#define LIMIT_LOG_EVERY_MS 10000   /* refusals logged at most this often per address */

struct snap {
    Cairnint__AuthStore *st;
    int refs; /* under auth.mu */
};

struct token {
    struct token *next;
    uint8_t hash[32];
    char user[AUTH_MAX_NAME + 1];
    uint64_t rev;        /* store revision when granted */
    int64_t deadline_ms; /* monotonic */
    uint32_t ttl;        /* seconds */
};

struct limit {
    char client[80];
    double tokens;
    int64_t last_ms, logged_ms;
};

enum job_kind { JOB_AUTHENTICATE, JOB_USER_ADD, JOB_CHANGE_PASSWORD };

struct job {
    struct job *next;
    enum job_kind kind;
    struct rpc_call *c;
    char client[80];
};

struct auth {
    const struct config *cfg;
    struct node *node;
    struct wait_table *waits;
    uint64_t self;
    uid_t my_uid;
    struct node_reader_slot slot;

    pthread_mutex_t mu; /* snap pointer and refs, tokens, limiter */
    struct snap *snap;
    struct token *tokens[TOKEN_BUCKETS];
    size_t n_tokens;
    struct limit limits[LIMIT_ENTRIES];
    size_t n_limits;

    pthread_mutex_t work_mu;
    pthread_cond_t work_cond;
    struct job *head, *tail;
    size_t queued;
    int stopping, started;
    pthread_t thread;
};

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---------------------------------------------------------------- the store copy */

static struct snap *snap_get(struct auth *a)
{
    pthread_mutex_lock(&a->mu);
    struct snap *s = a->snap;
    s->refs++;
    pthread_mutex_unlock(&a->mu);
    return s;
}

static void snap_unref_locked(struct snap *s)
{
    if (--s->refs == 0) {
        cairnint__auth_store__free_unpacked(s->st, NULL);
        free(s);
    }
}

static void snap_put(struct auth *a, struct snap *s)
{
    pthread_mutex_lock(&a->mu);
    snap_unref_locked(s);
    pthread_mutex_unlock(&a->mu);
}

/* Make st the current store (takes it).  0 or -ENOMEM (st freed). */
static int publish(struct auth *a, Cairnint__AuthStore *st)
{
    struct snap *s = malloc(sizeof(*s));
    if (!s) {
        cairnint__auth_store__free_unpacked(st, NULL);
        return -ENOMEM;
    }
    s->st = st;
    s->refs = 1;
    pthread_mutex_lock(&a->mu);
    struct snap *old = a->snap;
    a->snap = s;
    if (old)
        snap_unref_locked(old);
    pthread_mutex_unlock(&a->mu);
    return 0;
}

/* Read the record through this part's reader slot (node thread between applies, or start). */
static int load(struct auth *a)
{
    int err = 0;
    struct mvcc_reader *rd = node_read_begin(a->node, &a->slot, &err);
    if (!rd)
        return err;
    struct mvcc_record_list *l = NULL;
    struct mvcc_buf ns = {AUTH_RECORD_NS, strlen(AUTH_RECORD_NS)}, name = {AUTH_RECORD_NAME, strlen(AUTH_RECORD_NAME)};
    int rc = mvcc_record_list(rd, ns, name, &l);
    Cairnint__AuthStore *st = NULL;
    if (rc == 0) {
        st = l->n ? auth_store_unpack(l->records[0].value.data, l->records[0].value.len) : auth_store_new_empty();
        if (!st)
            rc = l->n ? -CAIRN_E_CORRUPT : -ENOMEM;
        mvcc_record_list_free(l);
    }
    node_read_end(a->node);
    if (rc < 0) {
        log_event(LOG_LEVEL_ERR, MSGID_CORRUPTION, NULL, "the auth record (%s/%s) cannot be read: %s", AUTH_RECORD_NS,
                  AUTH_RECORD_NAME, cairn_strerror(rc));
        return rc;
    }
    return publish(a, st);
}

/* ---------------------------------------------------------------- tokens */

static size_t bucket_of(const uint8_t *hash)
{
    return ((size_t)hash[0] | (size_t)hash[1] << 8) % TOKEN_BUCKETS;
}

/* Drop expired tokens (all of them when forced, else only those past the keep window).  Under mu. */
static void tokens_purge(struct auth *a, int64_t now, int force)
{
    for (size_t b = 0; b < TOKEN_BUCKETS; b++) {
        struct token **pp = &a->tokens[b];
        while (*pp) {
            struct token *t = *pp;
            if (now > t->deadline_ms + (force ? 0 : TOKEN_KEEP_EXPIRED_MS)) {
                *pp = t->next;
                free(t);
                a->n_tokens--;
            } else {
                pp = &t->next;
            }
        }
    }
}

static void token_insert(struct auth *a, const uint8_t *hash, const char *user, uint64_t rev, int64_t deadline,
                         uint32_t ttl)
{
    struct token *t = calloc(1, sizeof(*t));
    if (!t)
        return; /* this member will not know the token: the client authenticates again here */
    memcpy(t->hash, hash, 32);
    snprintf(t->user, sizeof t->user, "%s", user);
    t->rev = rev;
    t->deadline_ms = deadline;
    t->ttl = ttl;
    pthread_mutex_lock(&a->mu);
    int64_t now = mono_now_ms();
    if (a->n_tokens >= TOKEN_MAX)
        tokens_purge(a, now, 1);
    while (a->n_tokens >= TOKEN_MAX) {
        /* still full of live tokens: forget the one closest to expiring */
        struct token **victim = NULL;
        for (size_t b = 0; b < TOKEN_BUCKETS; b++)
            for (struct token **pp = &a->tokens[b]; *pp; pp = &(*pp)->next)
                if (!victim || (*pp)->deadline_ms < (*victim)->deadline_ms)
                    victim = pp;
        struct token *v = *victim;
        *victim = v->next;
        free(v);
        a->n_tokens--;
    }
    size_t b = bucket_of(hash);
    t->next = a->tokens[b];
    a->tokens[b] = t;
    a->n_tokens++;
    pthread_mutex_unlock(&a->mu);
}

/* The user a token stands for (refreshing it), or CAIRN_E_INVALID_TOKEN with the message. */
static int token_lookup(struct auth *a, const Cairnint__AuthStore *st, const char *token, char *user, size_t ulen,
                        char *msg, size_t msglen)
{
    uint8_t h[32];
    auth_token_hash(token, strlen(token), h);
    int rc = CAIRN_E_INVALID_TOKEN;
    const char *why = "authentication failed: token invalid";
    pthread_mutex_lock(&a->mu);
    int64_t now = mono_now_ms();
    struct token **pp = &a->tokens[bucket_of(h)];
    for (; *pp; pp = &(*pp)->next)
        if (!memcmp((*pp)->hash, h, 32))
            break;
    struct token *t = *pp;
    if (t && !auth_token_current(st, t->user, t->rev)) {
        *pp = t->next; /* voided by a password change, a revoked role, ... */
        free(t);
        a->n_tokens--;
    } else if (t && now > t->deadline_ms) {
        why = "authentication failed: token expired";
    } else if (t) {
        t->deadline_ms = now + (int64_t)t->ttl * 1000;
        snprintf(user, ulen, "%s", t->user);
        rc = 0;
    }
    pthread_mutex_unlock(&a->mu);
    if (rc)
        snprintf(msg, msglen, "%s", why);
    return rc;
}

/* ---------------------------------------------------------------- the failed-authentication limiter */

/* The limiter's entry for client (found or made).  Under mu. */
static struct limit *limit_of(struct auth *a, const char *client, int64_t now)
{
    struct limit *idlest = NULL;
    for (size_t i = 0; i < a->n_limits; i++) {
        struct limit *l = &a->limits[i];
        if (!strcmp(l->client, client)) {
            l->tokens += (double)(now - l->last_ms) / LIMIT_REFILL_MS;
            if (l->tokens > LIMIT_BURST)
                l->tokens = LIMIT_BURST;
            l->last_ms = now;
            return l;
        }
        if (!idlest || l->last_ms < idlest->last_ms)
            idlest = l;
    }
    struct limit *l = a->n_limits < LIMIT_ENTRIES ? &a->limits[a->n_limits++] : idlest;
    snprintf(l->client, sizeof l->client, "%s", client);
    l->tokens = LIMIT_BURST;
    l->last_ms = now;
    l->logged_ms = 0;
    return l;
}

/* 1 if client may try to authenticate now; else 0 with the seconds to wait in *wait_s and *log set when the
 * refusal should be logged. */
static int limit_allows(struct auth *a, const char *client, int *wait_s, int *log)
{
    pthread_mutex_lock(&a->mu);
    int64_t now = mono_now_ms();
    struct limit *l = limit_of(a, client, now);
    int ok = l->tokens >= 1.0;
    if (!ok) {
        *wait_s = (int)((1.0 - l->tokens) * LIMIT_REFILL_MS / 1000) + 1;
        *log = now - l->logged_ms >= LIMIT_LOG_EVERY_MS;
        if (*log)
            l->logged_ms = now;
    }
    pthread_mutex_unlock(&a->mu);
    return ok;
}

/* Count a failure; returns the failures now counted against client. */
static int limit_failed(struct auth *a, const char *client)
{
    pthread_mutex_lock(&a->mu);
    struct limit *l = limit_of(a, client, mono_now_ms());
    l->tokens -= 1.0;
    if (l->tokens < -LIMIT_BURST)
        l->tokens = -LIMIT_BURST; /* a long flood does not lock an address out for hours */
    int n = (int)(LIMIT_BURST - l->tokens + 0.5);
    pthread_mutex_unlock(&a->mu);
    return n;
}

/* ---------------------------------------------------------------- who the client is */

static nng_pipe pipe_of(struct rpc_call *c)
{
    nng_pipe p = NNG_PIPE_INITIALIZER;
    p.id = rpc_call_pipe(c);
    return p;
}

/* The limiter's key: the IP address without the port, or the ipc peer's uid.  Returns 1 for an ipc peer. */
static int client_of(struct rpc_call *c, char *buf, size_t len, uint64_t *uid)
{
    nng_sockaddr sa;
    nng_pipe p = pipe_of(c);
    char ip[INET6_ADDRSTRLEN] = "";
    snprintf(buf, len, "unknown");
    if (nng_pipe_get_addr(p, NNG_OPT_REMADDR, &sa) != 0)
        return 0;
    switch (sa.s_family) {
    case NNG_AF_INET:
        inet_ntop(AF_INET, &sa.s_in.sa_addr, ip, sizeof ip);
        snprintf(buf, len, "%s", ip);
        return 0;
    case NNG_AF_INET6:
        inet_ntop(AF_INET6, sa.s_in6.sa_addr, ip, sizeof ip);
        snprintf(buf, len, "%s", ip);
        return 0;
    case NNG_AF_IPC:
        if (nng_pipe_get_uint64(p, NNG_OPT_IPC_PEER_UID, uid) != 0) {
            snprintf(buf, len, "ipc");
            *uid = UINT64_MAX;
        } else {
            snprintf(buf, len, "ipc uid %" PRIu64, *uid);
        }
        return 1;
    default:
        return 0;
    }
}

/* ---------------------------------------------------------------- proposing (own waiters) */

struct pending {
    struct auth *a;
    struct rpc_call *c;
    int body_case;
    char token[2 * AUTH_TOKEN_BYTES + 1];
    uint32_t ttl;
};

/* The user or role a request names, for messages. */
static const char *subject(const Cairn__Request *req)
{
    switch (req->body_case) {
    case CAIRN__REQUEST__BODY_AUTHENTICATE: return req->authenticate->name;
    case CAIRN__REQUEST__BODY_USER_ADD: return req->user_add->name;
    case CAIRN__REQUEST__BODY_USER_GET: return req->user_get->name;
    case CAIRN__REQUEST__BODY_USER_DELETE: return req->user_delete->name;
    case CAIRN__REQUEST__BODY_USER_CHANGE_PASSWORD: return req->user_change_password->name;
    case CAIRN__REQUEST__BODY_USER_GRANT_ROLE: return req->user_grant_role->user;
    case CAIRN__REQUEST__BODY_USER_REVOKE_ROLE: return req->user_revoke_role->name;
    case CAIRN__REQUEST__BODY_ROLE_ADD: return req->role_add->name;
    case CAIRN__REQUEST__BODY_ROLE_GET: return req->role_get->role;
    case CAIRN__REQUEST__BODY_ROLE_DELETE: return req->role_delete->role;
    case CAIRN__REQUEST__BODY_ROLE_GRANT_PERMISSION: return req->role_grant_permission->name;
    case CAIRN__REQUEST__BODY_ROLE_REVOKE_PERMISSION: return req->role_revoke_permission->role;
    default: return "";
    }
}

static const char *role_named(const Cairn__Request *req)
{
    if (req->body_case == CAIRN__REQUEST__BODY_USER_GRANT_ROLE)
        return req->user_grant_role->role;
    if (req->body_case == CAIRN__REQUEST__BODY_USER_REVOKE_ROLE)
        return req->user_revoke_role->role;
    return subject(req);
}

/* Answer a call with code, naming what it concerns. */
static void refuse(struct auth *a, struct rpc_call *c, int code)
{
    const Cairn__Request *req = rpc_call_request(c);
    switch (code) {
    case CAIRN_E_TIMEOUT:
        rpc_call_error(c, code,
                       "request timed out after %u ms (--request-timeout); the outcome is unknown: check with a "
                       "read before retrying",
                       a->cfg->request_timeout_ms);
        break;
    case CAIRN_E_USER_EXISTS:
    case CAIRN_E_USER_NOT_FOUND:
        rpc_call_error(c, code, "%s: '%s'", cairn_strerror(code), subject(req));
        break;
    case CAIRN_E_ROLE_EXISTS:
    case CAIRN_E_ROLE_NOT_FOUND:
    case CAIRN_E_PERMISSION_NOT_GRANTED:
        rpc_call_error(c, code, "%s: '%s'", cairn_strerror(code), role_named(req));
        break;
    case CAIRN_E_ROLE_NOT_GRANTED:
        rpc_call_error(c, code, "role '%s' is not granted to user '%s'", role_named(req), subject(req));
        break;
    case CAIRN_E_AUTH_FAILED:
        rpc_call_error(c, code, "authentication failed: the auth store changed while the password was checked; "
                                "authenticate again");
        break;
    default:
        rpc_call_error(c, code, NULL);
        break;
    }
}

static void reply_ok(struct pending *p)
{
    Cairn__Response resp = CAIRN__RESPONSE__INIT;
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field(&cairn__response__descriptor, (unsigned)p->body_case);
    if (!f || f->type != PROTOBUF_C_TYPE_MESSAGE) {
        rpc_call_error(p->c, CAIRN_E_MALFORMED, "no reply body for request %d", p->body_case);
        return;
    }
    const ProtobufCMessageDescriptor *d = f->descriptor;
    ProtobufCMessage *m = calloc(1, d->sizeof_message);
    if (!m) {
        rpc_call_error(p->c, ENOMEM, NULL);
        return;
    }
    protobuf_c_message_init(d, m);
    if (p->body_case == CAIRN__REQUEST__BODY_AUTHENTICATE) {
        Cairn__AuthenticateResponse *ar = (Cairn__AuthenticateResponse *)m;
        ar->token = p->token;
        ar->ttl = p->ttl;
    }
    resp.body_case = (Cairn__Response__BodyCase)p->body_case;
    resp.auth_enable = (Cairn__AuthEnableResponse *)m; /* the oneof's members share one pointer */
    rpc_call_reply(p->c, &resp, 0);
    free(m);
}

static void pending_done(void *arg, void *reply, size_t len, int err)
{
    struct pending *p = arg;
    if (reply) {
        Cairn__Response *r = cairn__response__unpack(NULL, len, reply);
        free(reply);
        if (!r)
            rpc_call_error(p->c, CAIRN_E_MALFORMED, "the applied reply does not decode");
        else if (r->error && r->error->code)
            rpc_call_error(p->c, (int)r->error->code, "%s", r->error->message);
        else
            reply_ok(p);
        if (r)
            cairn__response__free_unpacked(r, NULL);
    } else {
        refuse(p->a, p->c, err);
    }
    explicit_bzero(p->token, sizeof p->token);
    free(p);
}

/* Send rr through Raft, stamped with the call's identity; the call is answered when it is applied. */
static void propose_auth(struct auth *a, struct rpc_call *c, Cairnint__RaftRequest *rr, const char *token,
                         uint32_t ttl)
{
    struct pending *p = calloc(1, sizeof(*p));
    if (!p) {
        rpc_call_error(c, ENOMEM, NULL);
        return;
    }
    p->a = a;
    p->c = c;
    p->body_case = (int)rpc_call_request(c)->body_case;
    if (token)
        snprintf(p->token, sizeof p->token, "%s", token);
    p->ttl = ttl;
    uint64_t rev;
    rr->auth_user = (char *)rpc_call_auth(c, &rev);
    rr->auth_revision = rev;
    rr->proposer = a->self;
    rr->id = node_next_request_id(a->node);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t deadline = (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec + (int64_t)a->cfg->request_timeout_ms * 1000000LL;
    if (wait_add(a->waits, rr->id, deadline, pending_done, p, 0) < 0) {
        free(p);
        rpc_call_error(c, ENOMEM, NULL);
        return;
    }
    size_t len = cairnint__raft_request__get_packed_size(rr);
    void *buf = malloc(len ? len : 1);
    if (!buf) {
        wait_fire(a->waits, rr->id, NULL, 0, ENOMEM);
        return;
    }
    cairnint__raft_request__pack(rr, buf);
    int rc = node_propose(a->node, rr->id, buf, len);
    if (rc < 0)
        wait_fire(a->waits, rr->id, NULL, 0, -rc);
}

/* ---------------------------------------------------------------- the worker: password hashes */

static void hex(const uint8_t *in, size_t n, char *out)
{
    static const char d[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = d[in[i] >> 4];
        out[2 * i + 1] = d[in[i] & 15];
    }
    out[2 * n] = 0;
}

static void run_authenticate(struct auth *a, struct job *j)
{
    const Cairn__AuthenticateRequest *q = rpc_call_request(j->c)->authenticate;
    struct snap *s = snap_get(a);
    const Cairnint__AuthUser *u = auth_find_user(s->st, q->name);
    int ok;
    if (u && u->password) {
        ok = auth_password_matches(u, q->password, strlen(q->password));
    } else {
        /* the same work for a user that does not exist, so timing does not tell which names do */
        uint8_t salt[AUTH_SALT_LEN] = {0}, h[AUTH_HASH_LEN];
        auth_hash_password(q->password, strnlen(q->password, AUTH_MAX_PASSWORD), salt, sizeof salt,
                           AUTH_PBKDF2_ITERATIONS, h);
        ok = 0;
    }
    uint64_t rev = s->st->revision;
    snap_put(a, s);
    if (!ok) {
        int n = limit_failed(a, j->client);
        log_event(LOG_LEVEL_WARNING, MSGID_AUTH_FAILED,
                  LOG_FIELDS(LOG_STR("CAIRN_USER", q->name), LOG_STR("CAIRN_REMOTE", rpc_call_remote(j->c)),
                             LOG_STR("CAIRN_CLIENT", j->client), LOG_U64("CAIRN_FAILURES", n)),
                  "authentication failed for user '%s' from %s (%s): %s; %d failure(s) counted against %s", q->name,
                  rpc_call_remote(j->c), j->client, u ? "wrong password" : "no such user or no password", n,
                  j->client);
        rpc_call_error(j->c, CAIRN_E_AUTH_FAILED, NULL);
        return;
    }
    uint8_t raw[AUTH_TOKEN_BYTES], h[32];
    char token[2 * AUTH_TOKEN_BYTES + 1];
    if (RAND_bytes(raw, sizeof raw) != 1) {
        rpc_call_error(j->c, CAIRN_E_IO, "cannot draw a random token (openssl RAND_bytes failed)");
        return;
    }
    hex(raw, sizeof raw, token);
    auth_token_hash(token, strlen(token), h);
    Cairnint__RaftRequest rr = CAIRNINT__RAFT_REQUEST__INIT;
    Cairnint__AuthTokenGrant g = CAIRNINT__AUTH_TOKEN_GRANT__INIT;
    g.token_hash = (ProtobufCBinaryData){32, h};
    g.user = q->name;
    g.ttl = a->cfg->auth_token_ttl;
    g.issued_unix_ms = wall_ms();
    rr.request_case = CAIRNINT__RAFT_REQUEST__REQUEST_AUTH_TOKEN_GRANT;
    rr.auth_token_grant = &g;
    rpc_call_set_auth(j->c, q->name, rev); /* the grant is void if the password changed after rev */
    propose_auth(a, j->c, &rr, token, g.ttl);
    explicit_bzero(token, sizeof token);
    explicit_bzero(raw, sizeof raw);
}

/* UserAdd with a password, UserChangePassword: salt and hash here, propose the hash only. */
static void run_hash(struct auth *a, struct job *j)
{
    const Cairn__Request *req = rpc_call_request(j->c);
    const char *password = j->kind == JOB_USER_ADD ? req->user_add->password : req->user_change_password->password;
    uint8_t salt[AUTH_SALT_LEN], h[AUTH_HASH_LEN];
    if (RAND_bytes(salt, sizeof salt) != 1 ||
        auth_hash_password(password, strlen(password), salt, sizeof salt, AUTH_PBKDF2_ITERATIONS, h) < 0) {
        rpc_call_error(j->c, CAIRN_E_IO, "cannot hash the password (openssl failed)");
        return;
    }
    Cairnint__RaftRequest rr = CAIRNINT__RAFT_REQUEST__INIT;
    Cairnint__AuthPassword pw = CAIRNINT__AUTH_PASSWORD__INIT;
    pw.salt = (ProtobufCBinaryData){sizeof salt, salt};
    pw.hash = (ProtobufCBinaryData){sizeof h, h};
    pw.iterations = AUTH_PBKDF2_ITERATIONS;
    rr.auth_password = &pw;
    Cairn__UserAddRequest add;
    Cairn__UserChangePasswordRequest chg;
    if (j->kind == JOB_USER_ADD) {
        add = *req->user_add;
        add.password = (char *)""; /* never in the log */
        rr.request_case = CAIRNINT__RAFT_REQUEST__REQUEST_USER_ADD;
        rr.user_add = &add;
    } else {
        chg = *req->user_change_password;
        chg.password = (char *)"";
        rr.request_case = CAIRNINT__RAFT_REQUEST__REQUEST_USER_CHANGE_PASSWORD;
        rr.user_change_password = &chg;
    }
    propose_auth(a, j->c, &rr, NULL, 0);
}

static void *worker_main(void *arg)
{
    pthread_setname_np(pthread_self(), "cairn-auth"); /* top -H, perf and gdb show it */
    struct auth *a = arg;
    pthread_mutex_lock(&a->work_mu);
    for (;;) {
        while (!a->head && !a->stopping)
            pthread_cond_wait(&a->work_cond, &a->work_mu);
        struct job *j = a->head;
        if (!j)
            break; /* stopping and nothing left */
        a->head = j->next;
        if (!a->head)
            a->tail = NULL;
        a->queued--;
        int stopping = a->stopping;
        pthread_mutex_unlock(&a->work_mu);
        if (stopping)
            rpc_call_error(j->c, CAIRN_E_STOPPED, "member is stopping; send the request to another member");
        else if (j->kind == JOB_AUTHENTICATE)
            run_authenticate(a, j);
        else
            run_hash(a, j);
        free(j);
        pthread_mutex_lock(&a->work_mu);
    }
    pthread_mutex_unlock(&a->work_mu);
    return NULL;
}

static void enqueue(struct auth *a, struct rpc_call *c, enum job_kind kind, const char *client)
{
    struct job *j = calloc(1, sizeof(*j));
    if (!j) {
        rpc_call_error(c, ENOMEM, NULL);
        return;
    }
    j->kind = kind;
    j->c = c;
    snprintf(j->client, sizeof j->client, "%s", client ? client : "");
    pthread_mutex_lock(&a->work_mu);
    int full = a->queued >= WORK_QUEUE_MAX, stopping = a->stopping;
    if (!full && !stopping) {
        if (a->tail)
            a->tail->next = j;
        else
            a->head = j;
        a->tail = j;
        a->queued++;
        pthread_cond_signal(&a->work_cond);
    }
    pthread_mutex_unlock(&a->work_mu);
    if (full || stopping) {
        free(j);
        if (stopping)
            rpc_call_error(c, CAIRN_E_STOPPED, NULL);
        else
            rpc_call_error(c, CAIRN_E_TOO_MANY_REQUESTS,
                           "too many password checks waiting on this member (%d); retry later", WORK_QUEUE_MAX);
    }
}

/* ---------------------------------------------------------------- routes */

static void reply_read(struct rpc_call *c, struct mvcc_reader *r, int err, void *arg)
{
    struct auth *a = arg;
    if (!r) {
        rpc_call_unreadable(c, err);
        return;
    }
    /* the ReadIndex wait means every auth change before this read is in the copy */
    const Cairn__Request *req = rpc_call_request(c);
    struct snap *s = snap_get(a);
    const Cairnint__AuthStore *st = s->st;
    Cairn__Response resp = CAIRN__RESPONSE__INIT;
    Cairn__AuthStatusResponse as = CAIRN__AUTH_STATUS_RESPONSE__INIT;
    Cairn__UserGetResponse ug = CAIRN__USER_GET_RESPONSE__INIT;
    Cairn__UserListResponse ul = CAIRN__USER_LIST_RESPONSE__INIT;
    Cairn__RoleGetResponse rg = CAIRN__ROLE_GET_RESPONSE__INIT;
    Cairn__RoleListResponse rl = CAIRN__ROLE_LIST_RESPONSE__INIT;
    char **names = NULL;
    const Cairnint__AuthUser *u;
    const Cairnint__AuthRole *role;
    int code = 0;
    switch (req->body_case) {
    case CAIRN__REQUEST__BODY_AUTH_STATUS:
        as.enabled = st->enabled;
        as.auth_revision = st->revision;
        resp.body_case = CAIRN__RESPONSE__BODY_AUTH_STATUS;
        resp.auth_status = &as;
        break;
    case CAIRN__REQUEST__BODY_USER_GET:
        if (!(u = auth_find_user(st, req->user_get->name))) {
            code = CAIRN_E_USER_NOT_FOUND;
            break;
        }
        ug.n_roles = u->n_roles;
        ug.roles = u->roles;
        resp.body_case = CAIRN__RESPONSE__BODY_USER_GET;
        resp.user_get = &ug;
        break;
    case CAIRN__REQUEST__BODY_USER_LIST:
        names = calloc(st->n_users + 1, sizeof(*names));
        for (size_t i = 0; names && i < st->n_users; i++)
            names[i] = st->users[i]->name;
        ul.n_users = names ? st->n_users : 0;
        ul.users = names;
        resp.body_case = CAIRN__RESPONSE__BODY_USER_LIST;
        resp.user_list = &ul;
        break;
    case CAIRN__REQUEST__BODY_ROLE_GET:
        if (!(role = auth_find_role(st, req->role_get->role))) {
            code = CAIRN_E_ROLE_NOT_FOUND;
            break;
        }
        rg.n_perm = role->n_perms;
        rg.perm = role->perms;
        resp.body_case = CAIRN__RESPONSE__BODY_ROLE_GET;
        resp.role_get = &rg;
        break;
    default: /* ROLE_LIST */
        names = calloc(st->n_roles + 1, sizeof(*names));
        for (size_t i = 0; names && i < st->n_roles; i++)
            names[i] = st->roles[i]->name;
        rl.n_roles = names ? st->n_roles : 0;
        rl.roles = names;
        resp.body_case = CAIRN__RESPONSE__BODY_ROLE_LIST;
        resp.role_list = &rl;
        break;
    }
    if (code)
        refuse(a, c, code);
    else
        rpc_call_reply(c, &resp, 0);
    free(names);
    snap_put(a, s);
}

static int name_checked(struct rpc_call *c, const char *what, const char *name)
{
    if (auth_name_ok(name))
        return 1;
    rpc_call_error(c, CAIRN_E_INVALID_ARGUMENT,
                   "%s name '%.64s' is not valid: 1 to %d bytes without control characters", what, name ? name : "",
                   AUTH_MAX_NAME);
    return 0;
}

/* Authenticate, once this member has applied everything committed before it arrived. */
static void authenticate_read(struct rpc_call *c, struct mvcc_reader *r, int err, void *arg)
{
    struct auth *a = arg;
    const Cairn__Request *req = rpc_call_request(c);
    char client[80];
    uint64_t uid = 0;
    if (!r) {
        rpc_call_unreadable(c, err);
        return;
    }
    struct snap *s = snap_get(a);
    int enabled = s->st->enabled;
    snap_put(a, s);
    if (!enabled) {
        rpc_call_error(c, CAIRN_E_AUTH_NOT_ENABLED, "authentication is not enabled: every request is served "
                                                    "without a token (enable it with AuthEnable)");
        return;
    }
    client_of(c, client, sizeof client, &uid);
    int wait_s = 0, log = 0;
    if (!limit_allows(a, client, &wait_s, &log)) {
        if (log)
            log_event(LOG_LEVEL_WARNING, MSGID_AUTH_FAILED,
                      LOG_FIELDS(LOG_STR("CAIRN_USER", auth_name_ok(req->authenticate->name)
                                                           ? req->authenticate->name : "?"),
                                 LOG_STR("CAIRN_REMOTE", rpc_call_remote(c)), LOG_STR("CAIRN_CLIENT", client)),
                      "authentication refused without a password check: too many failed authentications from %s "
                      "(%d allowed, then one per %d s)",
                      client, LIMIT_BURST, LIMIT_REFILL_MS / 1000);
        rpc_call_error(c, CAIRN_E_AUTH_RATE_LIMITED,
                       "authentication failed: too many failed attempts from %s; retry in %d s", client, wait_s);
        return;
    }
    if (!auth_name_ok(req->authenticate->name) || strlen(req->authenticate->password) > AUTH_MAX_PASSWORD) {
        limit_failed(a, client);
        rpc_call_error(c, CAIRN_E_AUTH_FAILED, NULL);
        return;
    }
    enqueue(a, c, JOB_AUTHENTICATE, client);
}

static void auth_route(void *arg, struct rpc_call *c)
{
    struct auth *a = arg;
    const Cairn__Request *req = rpc_call_request(c);
    Cairnint__RaftRequest rr = CAIRNINT__RAFT_REQUEST__INIT;
    switch (req->body_case) {
    case CAIRN__REQUEST__BODY_AUTH_STATUS:
    case CAIRN__REQUEST__BODY_USER_GET:
    case CAIRN__REQUEST__BODY_USER_LIST:
    case CAIRN__REQUEST__BODY_ROLE_GET:
    case CAIRN__REQUEST__BODY_ROLE_LIST:
        rpc_call_read(c, 1, reply_read, a);
        return;
    case CAIRN__REQUEST__BODY_AUTHENTICATE:
        /* after a ReadIndex round: a user added or a password changed on another member just before counts */
        rpc_call_read(c, 1, authenticate_read, a);
        return;
    case CAIRN__REQUEST__BODY_USER_ADD:
        if (!name_checked(c, "user", req->user_add->name))
            return;
        if (req->user_add->no_password) {
            rr.request_case = CAIRNINT__RAFT_REQUEST__REQUEST_USER_ADD;
            Cairn__UserAddRequest add = *req->user_add;
            add.password = (char *)"";
            rr.user_add = &add;
            propose_auth(a, c, &rr, NULL, 0);
            return;
        }
        /* etcd: ErrPasswordEmpty */
        if (!req->user_add->password[0] || strlen(req->user_add->password) > AUTH_MAX_PASSWORD) {
            rpc_call_error(c, CAIRN_E_INVALID_ARGUMENT,
                           "user '%s' needs a password of 1 to %d bytes (or no_password, for a user reached only "
                           "through the ipc socket)",
                           req->user_add->name, AUTH_MAX_PASSWORD);
            return;
        }
        enqueue(a, c, JOB_USER_ADD, NULL);
        return;
    case CAIRN__REQUEST__BODY_USER_CHANGE_PASSWORD:
        if (!req->user_change_password->password[0] ||
            strlen(req->user_change_password->password) > AUTH_MAX_PASSWORD) {
            rpc_call_error(c, CAIRN_E_INVALID_ARGUMENT, "the new password of user '%s' must be 1 to %d bytes",
                           req->user_change_password->name, AUTH_MAX_PASSWORD);
            return;
        }
        enqueue(a, c, JOB_CHANGE_PASSWORD, NULL);
        return;
    case CAIRN__REQUEST__BODY_AUTH_ENABLE:
        rr.request_case = CAIRNINT__RAFT_REQUEST__REQUEST_AUTH_ENABLE;
        rr.auth_enable = req->auth_enable;
        break;
    case CAIRN__REQUEST__BODY_AUTH_DISABLE:
        rr.request_case = CAIRNINT__RAFT_REQUEST__REQUEST_AUTH_DISABLE;
        rr.auth_disable = req->auth_disable;
        break;
    case CAIRN__REQUEST__BODY_USER_DELETE:
        rr.request_case = CAIRNINT__RAFT_REQUEST__REQUEST_USER_DELETE;
        rr.user_delete = req->user_delete;
        break;
    case CAIRN__REQUEST__BODY_USER_GRANT_ROLE:
        if (!name_checked(c, "role", req->user_grant_role->role))
            return;
        rr.request_case = CAIRNINT__RAFT_REQUEST__REQUEST_USER_GRANT_ROLE;
        rr.user_grant_role = req->user_grant_role;
        break;
    case CAIRN__REQUEST__BODY_USER_REVOKE_ROLE:
        rr.request_case = CAIRNINT__RAFT_REQUEST__REQUEST_USER_REVOKE_ROLE;
        rr.user_revoke_role = req->user_revoke_role;
        break;
    case CAIRN__REQUEST__BODY_ROLE_ADD:
        if (!name_checked(c, "role", req->role_add->name))
            return;
        rr.request_case = CAIRNINT__RAFT_REQUEST__REQUEST_ROLE_ADD;
        rr.role_add = req->role_add;
        break;
    case CAIRN__REQUEST__BODY_ROLE_DELETE:
        rr.request_case = CAIRNINT__RAFT_REQUEST__REQUEST_ROLE_DELETE;
        rr.role_delete = req->role_delete;
        break;
    case CAIRN__REQUEST__BODY_ROLE_GRANT_PERMISSION:
        if (!req->role_grant_permission->perm->key.len) {
            rpc_call_error(c, CAIRN_E_INVALID_ARGUMENT,
                           "a permission needs a key (use key \"\\0\" with range_end \"\\0\" for every key)");
            return;
        }
        rr.request_case = CAIRNINT__RAFT_REQUEST__REQUEST_ROLE_GRANT_PERMISSION;
        rr.role_grant_permission = req->role_grant_permission;
        break;
    case CAIRN__REQUEST__BODY_ROLE_REVOKE_PERMISSION:
        rr.request_case = CAIRNINT__RAFT_REQUEST__REQUEST_ROLE_REVOKE_PERMISSION;
        rr.role_revoke_permission = req->role_revoke_permission;
        break;
    default:
        rpc_call_error(c, CAIRN_E_UNSUPPORTED, "request %d is not an auth request", (int)req->body_case);
        return;
    }
    propose_auth(a, c, &rr, NULL, 0);
}

size_t auth_routes(struct auth *a, struct rpc_route *out, size_t max)
{
    static const int cases[] = {
        CAIRN__REQUEST__BODY_AUTH_ENABLE,         CAIRN__REQUEST__BODY_AUTH_DISABLE,
        CAIRN__REQUEST__BODY_AUTH_STATUS,         CAIRN__REQUEST__BODY_AUTHENTICATE,
        CAIRN__REQUEST__BODY_USER_ADD,            CAIRN__REQUEST__BODY_USER_GET,
        CAIRN__REQUEST__BODY_USER_LIST,           CAIRN__REQUEST__BODY_USER_DELETE,
        CAIRN__REQUEST__BODY_USER_CHANGE_PASSWORD, CAIRN__REQUEST__BODY_USER_GRANT_ROLE,
        CAIRN__REQUEST__BODY_USER_REVOKE_ROLE,    CAIRN__REQUEST__BODY_ROLE_ADD,
        CAIRN__REQUEST__BODY_ROLE_GET,            CAIRN__REQUEST__BODY_ROLE_LIST,
        CAIRN__REQUEST__BODY_ROLE_DELETE,         CAIRN__REQUEST__BODY_ROLE_GRANT_PERMISSION,
        CAIRN__REQUEST__BODY_ROLE_REVOKE_PERMISSION,
    };
    struct rpc_route routes[sizeof cases / sizeof cases[0]];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        routes[i] = (struct rpc_route){cases[i], auth_route, a, 0};
    return rpc_routes_copy(out, max, routes, sizeof cases / sizeof cases[0]);
}

/* ---------------------------------------------------------------- the authorize hook (nng threads) */

/* LeaseRevoke, or LeaseTimeToLive listing the keys, by a user that is not
 * root: every key attached must be writable (the revoke deletes them) or
 * readable (the reply names them), as etcd checks. */
static void lease_keys_read(struct rpc_call *c, struct mvcc_reader *r, int err, void *arg)
{
    struct auth *a = arg;
    if (!r) {
        rpc_call_unreadable(c, err);
        return;
    }
    const Cairn__Request *req = rpc_call_request(c);
    bool revoke = req->body_case == CAIRN__REQUEST__BODY_LEASE_REVOKE;
    int64_t id = revoke ? req->lease_revoke->id : req->lease_time_to_live->id;
    struct mvcc_lease_list *l = NULL;
    int rc = mvcc_lease_get(r, id, &l);
    if (rc == -CAIRN_E_LEASE_NOT_FOUND) {
        rpc_call_continue(c); /* the lease route answers that */
        return;
    }
    if (rc < 0) {
        rpc_call_unreadable(c, rc);
        return;
    }
    uint64_t rev;
    const char *user = rpc_call_auth(c, &rev);
    struct snap *s = snap_get(a);
    const struct mvcc_lease *ls = &l->leases[0];
    size_t bad = ls->n_keys;
    for (size_t i = 0; i < ls->n_keys && bad == ls->n_keys; i++)
        if (!auth_range_allowed(s->st, user, revoke ? AUTH_NEED_WRITE : AUTH_NEED_READ, ls->keys[i].data,
                                ls->keys[i].len, NULL, 0))
            bad = i;
    snap_put(a, s);
    if (bad < ls->n_keys) {
        char k[160];
        kvconv_escape(ls->keys[bad].data, ls->keys[bad].len, k, sizeof k);
        if (revoke)
            rpc_call_error(c, CAIRN_E_PERMISSION_DENIED,
                           "permission denied: user '%s' may not revoke lease %" PRId64
                           " (it would delete keys it may not write) key %s",
                           user, id, k);
        else
            rpc_call_error(c, CAIRN_E_PERMISSION_DENIED,
                           "permission denied: user '%s' may not list the keys of lease %" PRId64
                           " (ask without keys, or for read permission) key %s",
                           user, id, k);
    } else {
        rpc_call_continue(c);
    }
    mvcc_lease_list_free(l);
}

static int authorize(void *arg, struct rpc_call *c, char *msg, size_t msglen)
{
    struct auth *a = arg;
    const Cairn__Request *req = rpc_call_request(c);
    struct snap *s = snap_get(a);
    const Cairnint__AuthStore *st = s->st;
    int code = 0;
    if (!st->enabled) {
        rpc_call_set_auth(c, "", st->revision);
        goto out;
    }
    /* Authenticate and the status requests ignore the token: a client re-authenticates with its expired one */
    if (req->body_case == CAIRN__REQUEST__BODY_AUTHENTICATE || req->body_case == CAIRN__REQUEST__BODY_AUTH_STATUS ||
        req->body_case == CAIRN__REQUEST__BODY_STATUS) {
        rpc_call_set_auth(c, "", st->revision);
        goto out;
    }
    char user[AUTH_MAX_NAME + 16] = "";
    if (req->auth_token && req->auth_token[0]) {
        if ((code = token_lookup(a, st, req->auth_token, user, sizeof user, msg, msglen)) != 0)
            goto out;
    } else {
        char client[80];
        uint64_t uid = UINT64_MAX;
        if (client_of(c, client, sizeof client, &uid) && (uid == 0 || uid == (uint64_t)a->my_uid))
            snprintf(user, sizeof user, "%s", AUTH_IPC_ROOT);
    }
    if ((code = auth_check_request(st, user, req, msg, msglen)) != 0)
        goto out;
    rpc_call_set_auth(c, user, st->revision);
    bool lease_keys = (req->body_case == CAIRN__REQUEST__BODY_LEASE_REVOKE && req->lease_revoke) ||
                      (req->body_case == CAIRN__REQUEST__BODY_LEASE_TIME_TO_LIVE && req->lease_time_to_live &&
                       req->lease_time_to_live->keys);
    if (lease_keys && !auth_is_admin(st, user)) {
        snap_put(a, s);
        rpc_call_read(c, 1, lease_keys_read, a);
        return RPC_TAKEN;
    }
out:
    snap_put(a, s);
    return code;
}

void auth_hooks(struct auth *a, struct rpc_hooks *h)
{
    h->authorize = authorize;
    h->authorize_arg = a;
}

/* ---------------------------------------------------------------- the apply path (node thread) */

static const char *change_name(const Cairnint__RaftRequest *rr)
{
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field(&cairnint__raft_request__descriptor, (unsigned)rr->request_case);
    return f ? f->name : "?";
}

static int apply_change(struct auth *a, uint64_t index, const Cairnint__RaftRequest *rr, struct mvcc_request *req,
                        struct kvconv_arena *arena)
{
    const Cairnint__AuthStore *st = a->snap->st; /* only this thread replaces it */
    char msg[512];
    int code;
    if (st->enabled && rr->auth_revision && rr->auth_revision < st->revision &&
        (code = auth_check_entry(st, rr, msg, sizeof msg)) != 0) {
        log_info(LOG_FIELDS(LOG_U64("CAIRN_INDEX", index)), "entry %" PRIu64 " refused at apply: %s", index, msg);
        return code;
    }
    uint8_t *buf = NULL;
    size_t len = 0;
    if ((code = auth_store_change(st, rr, &buf, &len)) != 0)
        return code;
    if (!buf)
        return 0; /* nothing changes */
    Cairnint__AuthStore *next = auth_store_unpack(buf, len);
    uint8_t *copy = kvconv_arena_alloc(arena, len ? len : 1);
    if (!next || !copy) {
        free(buf);
        if (next)
            cairnint__auth_store__free_unpacked(next, NULL);
        return ENOMEM;
    }
    memcpy(copy, buf, len);
    free(buf);
    memset(req, 0, sizeof(*req));
    req->type = MVCC_REQ_RECORD_PUT;
    req->record.ns = (struct mvcc_buf){AUTH_RECORD_NS, strlen(AUTH_RECORD_NS)};
    req->record.name = (struct mvcc_buf){AUTH_RECORD_NAME, strlen(AUTH_RECORD_NAME)};
    req->record.value = (struct mvcc_buf){copy, len};
    /* published before the batch commits, as the alarms do: the observers registered before this one (the
     * alarms) have passed the entry and none after refuses it, so the store will hold exactly this record */
    int was = st->enabled, now = next->enabled;
    uint64_t rev = next->revision;
    if (publish(a, next) < 0)
        return ENOMEM;
    if (was != now)
        log_event(LOG_LEVEL_NOTICE, MSGID_AUTH_CHANGED,
                  LOG_FIELDS(LOG_U64("CAIRN_AUTH_REVISION", rev), LOG_U64("CAIRN_INDEX", index)),
                  "auth %s (auth revision %" PRIu64 ", entry %" PRIu64 ")", now ? "enabled" : "disabled", rev, index);
    else
        log_info(LOG_FIELDS(LOG_U64("CAIRN_AUTH_REVISION", rev), LOG_U64("CAIRN_INDEX", index)),
                 "auth store changed: %s (auth revision %" PRIu64 ")", change_name(rr), rev);
    return 0;
}

static int apply_token(struct auth *a, const Cairnint__AuthTokenGrant *g, uint64_t check_rev)
{
    const Cairnint__AuthStore *st = a->snap->st;
    if (!st->enabled)
        return CAIRN_E_AUTH_NOT_ENABLED;
    if (g->token_hash.len != 32 || !auth_token_current(st, g->user, check_rev))
        return CAIRN_E_AUTH_FAILED; /* the password changed (or the user went) after it was checked */
    /* the proposer's clock says when it was issued: a grant replayed after its TTL is not brought back */
    int64_t left = g->issued_unix_ms + (int64_t)g->ttl * 1000 - wall_ms();
    if (left > (int64_t)g->ttl * 1000)
        left = (int64_t)g->ttl * 1000;
    if (left <= 0)
        return 0;
    token_insert(a, g->token_hash.data, g->user, st->revision, mono_now_ms() + left, g->ttl);
    return 0;
}

static int is_auth_change(int request_case)
{
    return request_case >= CAIRNINT__RAFT_REQUEST__REQUEST_AUTH_ENABLE &&
           request_case <= CAIRNINT__RAFT_REQUEST__REQUEST_ROLE_REVOKE_PERMISSION;
}

static int before_apply(void *arg, uint64_t index, const Cairnint__RaftRequest *rr, struct mvcc_request *req,
                        struct kvconv_arena *arena)
{
    struct auth *a = arg;
    if (is_auth_change((int)rr->request_case))
        return apply_change(a, index, rr, req, arena);
    if (rr->request_case == CAIRNINT__RAFT_REQUEST__REQUEST_AUTH_TOKEN_GRANT)
        return rr->auth_token_grant ? apply_token(a, rr->auth_token_grant, rr->auth_revision)
                                    : CAIRN_E_INVALID_ARGUMENT;
    /* etcd's auth applier: a request checked under an older auth store is checked again (stamp 0: a member's own) */
    const Cairnint__AuthStore *st = a->snap->st;
    if (st->enabled && rr->auth_revision && rr->auth_revision < st->revision) {
        char msg[512];
        int code = auth_check_entry(st, rr, msg, sizeof msg);
        if (code) {
            log_info(LOG_FIELDS(LOG_U64("CAIRN_INDEX", index)), "entry %" PRIu64 " refused at apply: %s", index,
                     msg);
            return code;
        }
    }
    return 0;
}

static void on_store_replaced(void *arg)
{
    struct auth *a = arg;
    if (load(a) < 0)
        log_err(NULL, "auth: the users and roles of the installed snapshot cannot be read; keeping the old ones");
}

/* ---------------------------------------------------------------- life */

struct start_call {
    struct auth *a;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    int rc; /* 1 until done */
};

/* Load and observe on the node thread between two applies, so no entry slips between them. */
static void start_on_node(struct node *n, void *arg, int stopping)
{
    struct start_call *sc = arg;
    struct auth *a = sc->a;
    int rc = -CAIRN_E_STOPPED;
    if (!stopping && (rc = load(a)) == 0) {
        struct node_observer o = {.arg = a, .store_replaced = on_store_replaced, .before_apply = before_apply};
        rc = node_observe(n, &o);
    }
    pthread_mutex_lock(&sc->mu);
    sc->rc = rc;
    pthread_cond_signal(&sc->cond);
    pthread_mutex_unlock(&sc->mu);
}

int auth_start(const struct config *cfg, struct node *n, struct wait_table *waits, struct auth **out)
{
    struct auth *a = calloc(1, sizeof(*a));
    if (!a)
        return -ENOMEM;
    a->cfg = cfg;
    a->node = n;
    a->waits = waits;
    a->my_uid = geteuid();
    struct node_info in;
    node_get_info(n, &in);
    a->self = in.member_id;
    pthread_mutex_init(&a->mu, NULL);
    pthread_mutex_init(&a->work_mu, NULL);
    pthread_cond_init(&a->work_cond, NULL);
    node_reader_register(n, &a->slot);
    struct start_call sc = {.a = a, .rc = 1};
    pthread_mutex_init(&sc.mu, NULL);
    pthread_cond_init(&sc.cond, NULL);
    int rc = node_call(n, start_on_node, &sc);
    pthread_mutex_lock(&sc.mu);
    while (rc == 0 && sc.rc > 0)
        pthread_cond_wait(&sc.cond, &sc.mu);
    pthread_mutex_unlock(&sc.mu);
    if (rc == 0)
        rc = sc.rc;
    pthread_cond_destroy(&sc.cond);
    pthread_mutex_destroy(&sc.mu);
    if (rc < 0) {
        node_reader_unregister(n, &a->slot);
        if (a->snap)
            snap_put(a, a->snap);
        free(a);
        return rc;
    }
    /* from here the node holds a: on failure it is left to the exiting process */
    if ((rc = -pthread_create(&a->thread, NULL, worker_main, a)) < 0)
        return rc;
    a->started = 1;
    *out = a;
    return 0;
}

void auth_stop(struct auth *a)
{
    if (!a || !a->started)
        return;
    pthread_mutex_lock(&a->work_mu);
    a->stopping = 1;
    pthread_cond_signal(&a->work_cond);
    pthread_mutex_unlock(&a->work_mu);
    pthread_join(a->thread, NULL);
    a->started = 0;
    node_reader_unregister(a->node, &a->slot);
}

void auth_free(struct auth *a)
{
    if (!a)
        return;
    auth_stop(a);
    pthread_mutex_lock(&a->mu);
    tokens_purge(a, INT64_MAX / 2, 1);
    pthread_mutex_unlock(&a->mu);
    if (a->snap)
        snap_unref_locked(a->snap);
    pthread_cond_destroy(&a->work_cond);
    pthread_mutex_destroy(&a->work_mu);
    pthread_mutex_destroy(&a->mu);
    free(a);
}
