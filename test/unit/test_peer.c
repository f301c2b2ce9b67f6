/*
 * daemon/peer: transports in one process on 127.0.0.1 (listeners on port 0,
 * the bound port read back with peer_listen_url).  Messages flow both ways;
 * a dead peer's queue fills to -EAGAIN without blocking and recovers;
 * snapshots stream, verify and report, while messages keep flowing and a
 * stalled stream never holds them up; a fake member (the test's own nng
 * sockets, or a raw TCP socket doing the SP handshake) sends corrupt chunks,
 * wrong checksums, foreign clusters, garbage and absurd lengths, and the
 * transport refuses them, removes partial files and keeps working; over
 * tls+tcp:// with openssl-made certificates, only a certificate from the CA
 * that names the dialed host is accepted.  PEER_TEST=pattern runs only the
 * tests whose names match.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include <nng/nng.h>
#include <nng/protocol/pipeline0/pull.h>
#include <nng/protocol/pipeline0/push.h>

#include "base/crc32c.h"
#include "base/log.h"
#include "daemon/peer.h"
#include "test/unit/wait_testutil.h"

#include <openssl/evp.h>

#define LONG_MS 20000  /* for things that must happen */
#define QUIET_MS 1500  /* for things that must not: nothing arrives in this long */
#define CLUSTER 0xc1c1c1c1ULL

static char tmpdir[128];

/* ---------------------------------------------------------------- a member */

#define MAX_REC 4096

struct member {
    uint64_t id;
    struct peer_transport *t;
    char url[256];
    char dir[256];
    pthread_mutex_t mu;
    size_t n_batches, n_messages;
    uint64_t from[MAX_REC], term[MAX_REC];
    size_t n_snaps;
    char snap_path[512];
    uint64_t snap_from, snap_index;
    size_t n_done;
    uint64_t done_to[64];
    int done_ok[64];
};

static void on_messages(void *arg, uint64_t from, Cairnpeer__MessageBatch *batch)
{
    struct member *m = arg;
    pthread_mutex_lock(&m->mu);
    if (m->n_batches < MAX_REC) {
        m->from[m->n_batches] = from;
        m->term[m->n_batches] = batch->n_messages ? batch->messages[0]->term : 0;
    }
    m->n_batches++;
    m->n_messages += batch->n_messages;
    pthread_mutex_unlock(&m->mu);
    cairnpeer__message_batch__free_unpacked(batch, NULL);
}

static void on_snapshot(void *arg, uint64_t from, Cairnpeer__Message *msg, const char *path)
{
    struct member *m = arg;
    pthread_mutex_lock(&m->mu);
    m->n_snaps++;
    snprintf(m->snap_path, sizeof m->snap_path, "%s", path);
    m->snap_from = from;
    m->snap_index = msg->snapshot ? msg->snapshot->index : 0;
    pthread_mutex_unlock(&m->mu);
    cairnpeer__message__free_unpacked(msg, NULL);
}

static void on_snapshot_done(void *arg, uint64_t to, int ok)
{
    struct member *m = arg;
    pthread_mutex_lock(&m->mu);
    if (m->n_done < 64) {
        m->done_to[m->n_done] = to;
        m->done_ok[m->n_done] = ok;
    }
    m->n_done++;
    pthread_mutex_unlock(&m->mu);
}

static size_t batches(struct member *m)
{
    pthread_mutex_lock(&m->mu);
    size_t n = m->n_batches;
    pthread_mutex_unlock(&m->mu);
    return n;
}

static size_t snaps(struct member *m)
{
    pthread_mutex_lock(&m->mu);
    size_t n = m->n_snaps;
    pthread_mutex_unlock(&m->mu);
    return n;
}

static size_t dones(struct member *m)
{
    pthread_mutex_lock(&m->mu);
    size_t n = m->n_done;
    pthread_mutex_unlock(&m->mu);
    return n;
}

/* Files in dir (the incoming directory), for "nothing was left behind". */
static int files_in(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *de;
    assert_non_null(d);
    while ((de = readdir(d)))
        if (de->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

struct opts {
    const char *listen;          /* default tcp://127.0.0.1:0 */
    struct peer_tls tls;
    size_t max_queue, chunk_bytes;
    uint32_t snapshot_timeout_ms;
};

static int member_try_start(struct member *m, uint64_t id, const struct opts *o, char *err, size_t errlen)
{
    memset(m, 0, sizeof(*m));
    pthread_mutex_init(&m->mu, NULL);
    m->id = id;
    snprintf(m->dir, sizeof m->dir, "%s/in-%llx-XXXXXX", tmpdir, (unsigned long long)id);
    assert_non_null(mkdtemp(m->dir));
    struct config_urls urls = {.n = 1};
    urls.v[0].url = (char *)(o && o->listen ? o->listen : "tcp://127.0.0.1:0");
    struct peer_options po = {.cluster_id = CLUSTER, .self_id = id, .listen = &urls, .incoming_dir = m->dir};
    if (o) {
        po.tls = o->tls;
        po.max_queue = o->max_queue;
        po.chunk_bytes = o->chunk_bytes;
        po.snapshot_timeout_ms = o->snapshot_timeout_ms;
    }
    struct peer_callbacks cb = {.arg = m, .on_messages = on_messages, .on_snapshot = on_snapshot,
                                .on_snapshot_done = on_snapshot_done};
    int rc = peer_start(&po, &cb, &m->t, err, errlen);
    if (rc == 0)
        assert_int_equal(peer_listen_url(m->t, 0, m->url, sizeof m->url), 0);
    return rc;
}

static void member_start(struct member *m, uint64_t id, const struct opts *o)
{
    char err[512];
    int rc = member_try_start(m, id, o, err, sizeof err);
    if (rc != 0)
        fail_msg("peer_start: %d %s", rc, err);
}

/*
 * Wait until both connections to every peer of m are up (or a while has
 * passed).  nng 1.5.2 sometimes leaks a listener whose peer hung up in the
 * middle of the SP or TLS handshake, which LeakSanitizer reports; closing
 * connections only once their handshakes are over keeps the sanitizer run
 * clean.  Tests remove peers that never answer before they stop.
 */
static bool all_up(struct member *m)
{
    struct peer_stats st[16];
    size_t n = peer_stats(m->t, st, 16);
    for (size_t i = 0; i < n && i < 16; i++)
        if (!st[i].connected || !st[i].stream_connected)
            return false;
    return true;
}

static void settle(struct member *m)
{
    if (m->t)
        WAIT_FOR(all_up(m), 5000);
}

static void member_stop(struct member *m)
{
    peer_stop(m->t);
    m->t = NULL;
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf %s", m->dir);
    assert_int_equal(system(cmd), 0);
    pthread_mutex_destroy(&m->mu);
}

/* Stop several members, once all of their connections are up (see settle). */
static void stop_all(struct member *a, struct member *b, struct member *c)
{
    struct member *ms[] = {a, b, c};
    for (size_t i = 0; i < 3; i++)
        if (ms[i] && ms[i]->t)
            settle(ms[i]);
    for (size_t i = 0; i < 3; i++)
        if (ms[i])
            member_stop(ms[i]);
}

/*
 * Keep m running until the process exits instead of stopping it.  For the
 * members whose certificate a peer refuses: that peer hangs up in the
 * middle of the TLS handshake, and nng 1.5.2 may then leak the listener's
 * objects when it is closed (reproduced without Cairn's code: a listener
 * whose dialer hung up during the handshake sometimes leaks ~4-50 KiB once,
 * at close).  An open socket stays reachable, so LeakSanitizer keeps
 * checking the rest of the process.  Its files go with the test directory.
 */
#define MAX_PARKED 4
static struct member *parked[MAX_PARKED];
static size_t n_parked;

static void park(struct member *m) /* m: static storage, the callbacks keep using it */
{
    assert_true(n_parked < MAX_PARKED);
    parked[n_parked++] = m;
}

static void add(struct member *m, uint64_t id, const char *url)
{
    const char *urls[] = {url};
    assert_int_equal(peer_add(m->t, id, urls, 1), 0);
}

static void link_members(struct member *a, struct member *b)
{
    add(a, b->id, b->url);
    add(b, a->id, a->url);
}

/* A batch of n heartbeats whose first message carries term. */
static int send_batch(struct member *m, uint64_t to, uint64_t term, size_t n)
{
    Cairnpeer__Message msgs[8];
    Cairnpeer__Message *ptrs[8];
    assert_true(n <= 8);
    for (size_t i = 0; i < n; i++) {
        cairnpeer__message__init(&msgs[i]);
        msgs[i].type = CAIRNPEER__MESSAGE_TYPE__MSG_HEARTBEAT;
        msgs[i].from = m->id;
        msgs[i].to = to;
        msgs[i].term = term;
        ptrs[i] = &msgs[i];
    }
    Cairnpeer__MessageBatch b = CAIRNPEER__MESSAGE_BATCH__INIT;
    b.n_messages = n;
    b.messages = ptrs;
    return peer_send(m->t, to, &b);
}

static struct peer_stats stats_of(struct member *m, uint64_t id)
{
    struct peer_stats st[16];
    size_t n = peer_stats(m->t, st, 16);
    for (size_t i = 0; i < n && i < 16; i++)
        if (st[i].id == id)
            return st[i];
    fail_msg("no stats for %llx", (unsigned long long)id);
    return st[0];
}

/*
 * Send a batch of term from `from` to `to` until `to` has received one, as
 * Raft's heartbeats would: the transport may drop a message it could not
 * send within STALL_MS, which a handshake held up on a loaded host can
 * cause.  For a test whose point is that a connection comes up, not that
 * its first message survives.  Returns whether one arrived within LONG_MS;
 * a message resent is reported with the sender's counters, so a loss shows.
 */
static bool send_until_delivered(struct member *from, struct member *to, uint64_t term)
{
    uint64_t end = now_ms() + LONG_MS;
    size_t before = batches(to);
    for (int sends = 1;; sends++) {
        assert_int_equal(send_batch(from, to->id, term, 1), 0);
        if (WAIT_FOR(batches(to) > before, 500)) {
            if (sends > 1) {
                struct peer_stats st = stats_of(from, to->id);
                fprintf(stderr, "test_peer: %d sends for one delivery: connected %d, sent %" PRIu64
                        ", dropped %" PRIu64 ", renewed %" PRIu64 "\n",
                        sends, st.connected, st.sent, st.dropped, st.renewed);
            }
            return true;
        }
        if (now_ms() >= end)
            return false;
    }
}

/* A tcp URL on 127.0.0.1 that refuses connections (bound, never listening; kept open). */
static void refused_url(char *buf, size_t len)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t salen = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &salen), 0);
    snprintf(buf, len, "tcp://127.0.0.1:%u", (unsigned)ntohs(sa.sin_port));
}

/* True while some connection to url's port is open or half open (from /proc/net/tcp). */
static bool port_busy(const char *url)
{
    const char *colon = strrchr(url, ':');
    int port = colon ? atoi(colon + 1) : 0;
    static const char *const files[] = {"/proc/net/tcp", "/proc/net/tcp6"};
    int n = 0;
    for (size_t f = 0; f < 2; f++) {
        FILE *fp = fopen(files[f], "r");
        char line[512];
        if (!fp)
            continue;
        while (fgets(line, sizeof line, fp)) {
            char local[128], remote[128];
            unsigned st;
            if (sscanf(line, " %*d: %127s %127s %x", local, remote, &st) != 3)
                continue;
            char *c = strrchr(local, ':');
            /* ESTABLISHED, SYN_RECV, CLOSE_WAIT */
            if (c && strtol(c + 1, NULL, 16) == port && (st == 1 || st == 3 || st == 8))
                n++;
        }
        fclose(fp);
    }
    return n > 0;
}

/* A file of n pseudo-random bytes; its sha256 into digest. */
static void make_file(const char *path, size_t n, unsigned seed, uint8_t digest[32])
{
    uint8_t *buf = malloc(n ? n : 1);
    assert_non_null(buf);
    srand(seed);
    for (size_t i = 0; i < n; i++)
        buf[i] = (uint8_t)rand();
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(buf, 1, n, f), n);
    fclose(f);
    unsigned dl;
    EVP_Digest(buf, n, digest, &dl, EVP_sha256(), NULL);
    free(buf);
}

static void file_digest(const char *path, uint8_t digest[32], size_t *size)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    EVP_DigestInit_ex(c, EVP_sha256(), NULL);
    uint8_t buf[65536];
    size_t n;
    *size = 0;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
        EVP_DigestUpdate(c, buf, n);
        *size += n;
    }
    unsigned dl;
    EVP_DigestFinal_ex(c, digest, &dl);
    EVP_MD_CTX_free(c);
    fclose(f);
}

static void msgsnap_init(Cairnpeer__Message *m, Cairnpeer__SnapshotMetadata *meta, Cairnpeer__ConfState *cs,
                         uint64_t to, uint64_t index, uint64_t term)
{
    static uint64_t voters[] = {1, 2, 3};
    cairnpeer__conf_state__init(cs);
    cs->voters = voters;
    cs->n_voters = 3;
    cairnpeer__snapshot_metadata__init(meta);
    meta->conf_state = cs;
    meta->index = index;
    meta->term = term;
    cairnpeer__message__init(m);
    m->type = CAIRNPEER__MESSAGE_TYPE__MSG_SNAP;
    m->to = to;
    m->term = term;
    m->snapshot = meta;
}

/* ---------------------------------------------------------------- a fake member made of raw nng sockets */

struct fake {
    uint64_t id;
    nng_socket push; /* dials the transport under test */
    nng_socket pull; /* receives what it sends to us */
    char url[128];
};

static void fake_start(struct fake *f, uint64_t id, const char *target)
{
    memset(f, 0, sizeof(*f));
    f->id = id;
    assert_int_equal(nng_push0_open(&f->push), 0);
    assert_int_equal(nng_socket_set_ms(f->push, NNG_OPT_SENDTIMEO, LONG_MS), 0);
    if (target)
        assert_int_equal(nng_dial(f->push, target, NULL, NNG_FLAG_NONBLOCK), 0);
    assert_int_equal(nng_pull0_open(&f->pull), 0);
    assert_int_equal(nng_socket_set_ms(f->pull, NNG_OPT_RECVTIMEO, LONG_MS), 0);
    nng_listener l;
    assert_int_equal(nng_listener_create(&l, f->pull, "tcp://127.0.0.1:0"), 0);
    assert_int_equal(nng_listener_start(l, 0), 0);
    int port;
    assert_int_equal(nng_listener_get_int(l, NNG_OPT_TCP_BOUND_PORT, &port), 0);
    snprintf(f->url, sizeof f->url, "tcp://127.0.0.1:%d", port);
}

static void fake_stop(struct fake *f)
{
    nng_close(f->push);
    nng_close(f->pull);
}

static void fake_send_raw(struct fake *f, const void *data, size_t len)
{
    assert_int_equal(nng_send(f->push, (void *)data, len, 0), 0);
}

/* Send env with our identity (cluster, from) filled in unless set already. */
static void fake_send(struct fake *f, Cairnpeer__PeerEnvelope *env)
{
    if (!env->cluster_id)
        env->cluster_id = CLUSTER;
    if (!env->from)
        env->from = f->id;
    size_t n = cairnpeer__peer_envelope__get_packed_size(env);
    uint8_t *buf = malloc(n ? n : 1);
    assert_non_null(buf);
    cairnpeer__peer_envelope__pack(env, buf);
    fake_send_raw(f, buf, n);
    free(buf);
}

/* The next envelope sent to us, within ms (NULL if none). */
static Cairnpeer__PeerEnvelope *fake_recv(struct fake *f, int ms)
{
    nng_socket_set_ms(f->pull, NNG_OPT_RECVTIMEO, ms);
    nng_msg *m;
    if (nng_recvmsg(f->pull, &m, 0) != 0)
        return NULL;
    Cairnpeer__PeerEnvelope *env = cairnpeer__peer_envelope__unpack(NULL, nng_msg_len(m), nng_msg_body(m));
    nng_msg_free(m);
    assert_non_null(env);
    return env;
}

/* The next SnapshotAck sent to us (other envelopes skipped). */
static Cairnpeer__PeerEnvelope *fake_recv_ack(struct fake *f)
{
    uint64_t end = now_ms() + LONG_MS;
    while (now_ms() < end) {
        Cairnpeer__PeerEnvelope *env = fake_recv(f, LONG_MS);
        if (!env)
            break;
        if (env->body_case == CAIRNPEER__PEER_ENVELOPE__BODY_SNAPSHOT_ACK)
            return env;
        cairnpeer__peer_envelope__free_unpacked(env, NULL);
    }
    fail_msg("no snapshot ack");
    return NULL;
}

/* A heartbeat batch envelope from f with marker term. */
static void fake_send_batch(struct fake *f, uint64_t to, uint64_t term)
{
    Cairnpeer__Message msg = CAIRNPEER__MESSAGE__INIT;
    msg.type = CAIRNPEER__MESSAGE_TYPE__MSG_HEARTBEAT;
    msg.term = term;
    Cairnpeer__Message *ptr = &msg;
    Cairnpeer__MessageBatch b = CAIRNPEER__MESSAGE_BATCH__INIT;
    b.n_messages = 1;
    b.messages = &ptr;
    Cairnpeer__PeerEnvelope env = CAIRNPEER__PEER_ENVELOPE__INIT;
    env.to = to;
    env.body_case = CAIRNPEER__PEER_ENVELOPE__BODY_MESSAGES;
    env.messages = &b;
    fake_send(f, &env);
}

/* One chunk of data[off, off+len) of a total-byte file, as a sender would make it. */
static void fake_send_chunk(struct fake *f, uint64_t to, uint64_t index, uint64_t off, const uint8_t *data,
                            size_t len, uint64_t total, bool last, const uint8_t *sha, bool with_msg)
{
    Cairnpeer__Message msg;
    Cairnpeer__SnapshotMetadata meta;
    Cairnpeer__ConfState cs;
    msgsnap_init(&msg, &meta, &cs, to, index, 3);
    Cairnpeer__SnapshotChunk c = CAIRNPEER__SNAPSHOT_CHUNK__INIT;
    c.snapshot_index = index;
    c.snapshot_term = 3;
    c.offset = off;
    c.total_size = total;
    c.data.data = (uint8_t *)data;
    c.data.len = len;
    c.crc32c = crc32c_extend(0, data, len);
    c.last = last;
    if (with_msg)
        c.message = &msg;
    if (sha) {
        c.sha256.data = (uint8_t *)sha;
        c.sha256.len = 32;
    }
    Cairnpeer__PeerEnvelope env = CAIRNPEER__PEER_ENVELOPE__INIT;
    env.to = to;
    env.body_case = CAIRNPEER__PEER_ENVELOPE__BODY_SNAPSHOT_CHUNK;
    env.snapshot_chunk = &c;
    fake_send(f, &env);
}

/* Expect the next ack: ok or not, at next_offset (if ok). */
static void expect_ack(struct fake *f, bool ok, uint64_t next)
{
    Cairnpeer__PeerEnvelope *env = fake_recv_ack(f);
    if (ok != (bool)env->snapshot_ack->ok)
        fail_msg("ack ok=%d (%s), wanted %d", env->snapshot_ack->ok, env->snapshot_ack->error, ok);
    if (ok)
        assert_int_equal(env->snapshot_ack->next_offset, next);
    else
        assert_true(strlen(env->snapshot_ack->error) > 0);
    cairnpeer__peer_envelope__free_unpacked(env, NULL);
}

/* ---------------------------------------------------------------- tests: messages */

static void test_messages_flow_both_ways(void **state)
{
    (void)state;
    struct member a, b;
    member_start(&a, 0xa1, NULL);
    member_start(&b, 0xb2, NULL);
    link_members(&a, &b);

    for (uint64_t i = 1; i <= 100; i++)
        assert_int_equal(send_batch(&a, b.id, i, 3), 0);
    assert_int_equal(send_batch(&b, a.id, 777, 1), 0);
    assert_true(WAIT_FOR(batches(&b) == 100 && batches(&a) == 1, LONG_MS));
    /* One connection: in order, every message there, the sender named. */
    for (size_t i = 0; i < 100; i++) {
        assert_int_equal(b.term[i], i + 1);
        assert_int_equal(b.from[i], a.id);
    }
    assert_int_equal(b.n_messages, 300);
    assert_int_equal(a.term[0], 777);
    assert_int_equal(a.from[0], b.id);

    struct peer_stats st = stats_of(&a, b.id);
    assert_true(WAIT_FOR((st = stats_of(&a, b.id)).sent == 100, LONG_MS));
    assert_int_equal(st.connected, 1);
    assert_int_equal(st.dropped, 0);
    assert_int_equal(st.recv_errors, 0);
    stop_all(&a, &b, NULL);
}

static void test_unknown_peers_self_and_bad_urls(void **state)
{
    (void)state;
    struct member a;
    member_start(&a, 0xa1, NULL);
    assert_int_equal(send_batch(&a, 0x99, 1, 1), -ENOENT);
    assert_int_equal(peer_remove(a.t, 0x99), -ENOENT);
    const char *self[] = {a.url};
    assert_int_equal(peer_add(a.t, 0xa1, self, 1), 0); /* self: nothing to do */
    struct peer_stats st[4];
    assert_int_equal(peer_stats(a.t, st, 4), 0);
    const char *bad[] = {"nosuch://x:1"};
    assert_int_equal(peer_add(a.t, 0x5, bad, 1), -CAIRN_E_CONFIG);
    const char *tls[] = {"tls+tcp://localhost:1"}; /* no TLS files configured */
    assert_int_equal(peer_add(a.t, 0x5, tls, 1), -CAIRN_E_CONFIG);
    assert_int_equal(peer_add(a.t, 0, self, 1), -EINVAL);
    assert_int_equal(peer_add(a.t, 0x5, self, 0), -EINVAL);
    assert_int_equal(peer_stats(a.t, st, 4), 0);

    /* Replacing a peer's URLs keeps it; the same URLs again change nothing. */
    char dead[64], dead2[64];
    refused_url(dead, sizeof dead);
    refused_url(dead2, sizeof dead2);
    add(&a, 0x6, dead);
    add(&a, 0x6, dead);
    add(&a, 0x6, dead2);
    assert_int_equal(peer_stats(a.t, st, 4), 1);
    assert_int_equal(peer_remove(a.t, 0x6), 0);
    assert_int_equal(peer_stats(a.t, st, 4), 0);
    member_stop(&a);
}

static void test_start_refuses_bad_options(void **state)
{
    (void)state;
    struct member m;
    char err[512];
    struct opts o = {.listen = "tls+tcp://127.0.0.1:0"};
    assert_int_equal(member_try_start(&m, 1, &o, err, sizeof err), -CAIRN_E_CONFIG);
    assert_non_null(strstr(err, "tls+tcp://127.0.0.1:0"));
    member_stop(&m);
    o = (struct opts){.tls = {.cert_file = "/nonexistent.pem", .key_file = "/nonexistent.pem",
                              .ca_file = "/nonexistent.crt"}};
    assert_int_equal(member_try_start(&m, 1, &o, err, sizeof err), -CAIRN_E_CONFIG);
    assert_non_null(strstr(err, "/nonexistent.pem"));
    member_stop(&m);
    o = (struct opts){.tls = {.cert_file = "/nonexistent.pem"}};
    assert_int_equal(member_try_start(&m, 1, &o, err, sizeof err), -CAIRN_E_CONFIG);
    member_stop(&m);

    /* A port in use. */
    struct member a;
    member_start(&a, 0xa1, NULL);
    char url[256];
    snprintf(url, sizeof url, "%s", a.url);
    o = (struct opts){.listen = url};
    assert_int_equal(member_try_start(&m, 2, &o, err, sizeof err), -EADDRINUSE);
    member_stop(&m);
    member_stop(&a);
}

static void test_queue_toward_a_dead_peer_overflows_without_blocking(void **state)
{
    (void)state;
    struct member a, b;
    struct opts o = {.max_queue = 8};
    member_start(&a, 0xa1, &o);
    member_start(&b, 0xb2, NULL);
    link_members(&a, &b);
    char dead[64];
    refused_url(dead, sizeof dead);
    add(&a, 0xdead, dead);

    /* One in flight and eight queued, then -EAGAIN: the call never waits. */
    int accepted = 0, refused = 0;
    for (int i = 0; i < 50; i++) {
        int rc = send_batch(&a, 0xdead, 1, 1);
        assert_true(rc == 0 || rc == -EAGAIN);
        rc == 0 ? accepted++ : refused++;
    }
    assert_true(accepted >= 1 && accepted <= 9);
    assert_true(refused >= 41);
    struct peer_stats st = stats_of(&a, 0xdead);
    assert_int_equal(st.connected, 0);
    assert_true(st.dropped >= (uint64_t)refused);

    /* Other peers are not held up. */
    assert_int_equal(send_batch(&a, b.id, 5, 1), 0);
    assert_true(WAIT_FOR(batches(&b) == 1, LONG_MS));

    /* The stalled queue is emptied, so the dead peer takes messages again. */
    assert_true(WAIT_FOR(send_batch(&a, 0xdead, 1, 1) == 0, LONG_MS));
    assert_int_equal(peer_remove(a.t, 0xdead), 0);
    stop_all(&a, &b, NULL);
}

static void test_a_restarted_peer_is_reconnected(void **state)
{
    (void)state;
    struct member a, b;
    member_start(&a, 0xa1, NULL);
    member_start(&b, 0xb2, NULL);
    link_members(&a, &b);
    assert_int_equal(send_batch(&a, b.id, 1, 1), 0);
    assert_true(WAIT_FOR(batches(&b) == 1, LONG_MS));
    char url[256];
    snprintf(url, sizeof url, "%s", b.url);
    settle(&a);
    settle(&b);
    member_stop(&b);
    struct opts o = {.listen = url};
    member_start(&b, 0xb2, &o);
    add(&b, a.id, a.url);
    /* Messages sent while it was away may be lost; new ones arrive. */
    assert_true(WAIT_FOR((send_batch(&a, b.id, 2, 1), batches(&b) > 0), LONG_MS));
    stop_all(&a, &b, NULL);
}

/* A listener that shakes hands as pull0 on every connection, then hangs up
 * at once or, if deaf, keeps the connection open and never reads from it. */
#define DEAF_MAX 64
struct door {
    int fd, port;
    bool deaf;
    int kept[DEAF_MAX];
    int n_kept;
    atomic_int stop;
    atomic_long served;
    pthread_t thread;
};

static void *door_main(void *arg)
{
    struct door *d = arg;
    while (!atomic_load(&d->stop)) {
        struct pollfd pf = {.fd = d->fd, .events = POLLIN};
        if (poll(&pf, 1, 50) <= 0)
            continue;
        int c = accept(d->fd, NULL, NULL);
        if (c < 0)
            continue;
        const unsigned char hdr[8] = {0, 'S', 'P', 0, 0, 0x51, 0, 0}; /* pull0 */
        unsigned char theirs[8];
        if (write(c, hdr, sizeof hdr) == (ssize_t)sizeof hdr && read(c, theirs, sizeof theirs) > 0)
            atomic_fetch_add(&d->served, 1);
        if (d->deaf && d->n_kept < DEAF_MAX)
            d->kept[d->n_kept++] = c;
        else
            close(c);
    }
    return NULL;
}

static void door_open(struct door *d, bool deaf, char *url, size_t len)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t salen = sizeof sa;
    d->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(d->fd >= 0);
    d->deaf = deaf;
    d->n_kept = 0;
    if (deaf) { /* accepted connections inherit it: a small window fills sooner */
        int small = 4096;
        assert_int_equal(setsockopt(d->fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small), 0);
    }
    assert_int_equal(bind(d->fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(d->fd, 128), 0);
    assert_int_equal(getsockname(d->fd, (struct sockaddr *)&sa, &salen), 0);
    snprintf(url, len, "tcp://127.0.0.1:%d", ntohs(sa.sin_port));
    atomic_init(&d->stop, 0);
    atomic_init(&d->served, 0);
    assert_int_equal(pthread_create(&d->thread, NULL, door_main, d), 0);
}

static void door_close(struct door *d)
{
    atomic_store(&d->stop, 1);
    pthread_join(d->thread, NULL);
    close(d->fd);
    for (int i = 0; i < d->n_kept; i++)
        close(d->kept[i]);
}

/*
 * A member whose connections close as soon as they open (a peer exiting,
 * resetting, or a network that cuts them) cannot crash the sender.  nng
 * 1.5.2's push0 may keep such a pipe on its ready list after freeing it, and
 * the next send crashed in nng_send_aio (seen as a member's SIGSEGV in the
 * fault runs); the transport now gives a queue a fresh socket whenever its
 * connection goes.  Before that, this test crashed in 5 runs of 5.
 *
 * It runs in a child process (this program again, PEER_DOOR_CHILD set) that
 * leaves with _exit: in the same race nng 1.5.2 also loses a message it gave
 * the closing pipe, which LeakSanitizer would report at exit under `make
 * asan`, while AddressSanitizer still stops the child at any use of freed
 * memory, and the exit status says so.
 */
static void door_scenario(void)
{
    struct member a, b;
    member_start(&a, 0xa1, NULL);
    member_start(&b, 0xb2, NULL);
    link_members(&a, &b);
    struct door d;
    char url[64];
    door_open(&d, false, url, sizeof url);
    enum { DOORS = 12 }; /* members behind the one listener: more connections hung up on per second */
    for (uint64_t i = 0; i < DOORS; i++)
        add(&a, 0xd00 + i, url);
    uint64_t end = now_ms() + 3000;
    long sends = 0;
    while (now_ms() < end && sends < 4000000) {
        int rc = send_batch(&a, 0xd00 + (uint64_t)sends % DOORS, 1, 1);
        assert_true(rc == 0 || rc == -EAGAIN);
        sends++;
    }
    uint64_t renewed = 0;
    for (uint64_t i = 0; i < DOORS; i++)
        renewed += stats_of(&a, 0xd00 + i).renewed;
    print_message("%ld sends, %ld connections hung up on, %" PRIu64 " fresh sockets\n", sends,
                  atomic_load(&d.served), renewed);
    assert_true(atomic_load(&d.served) >= DOORS); /* each hung up on at least once */
    assert_true(renewed > 0);
    /* the transport still works */
    assert_int_equal(send_batch(&a, b.id, 7, 1), 0);
    assert_true(WAIT_FOR(batches(&b) == 1, LONG_MS));
    for (uint64_t i = 0; i < DOORS; i++)
        assert_int_equal(peer_remove(a.t, 0xd00 + i), 0);
    door_close(&d);
    stop_all(&a, &b, NULL);
}

static void test_a_peer_that_hangs_up_at_once_cannot_crash_the_sender(void **state)
{
    (void)state;
    if (getenv("PEER_DOOR_CHILD")) {
        door_scenario();
        return;
    }
    char log[256];
    snprintf(log, sizeof log, "%s/door-child.log", tmpdir);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* its own report stays out of this one's (a runner counts the lines) */
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0)
            _exit(126);
        setenv("PEER_DOOR_CHILD", "1", 1);
        setenv("PEER_TEST", "test_a_peer_that_hangs_up_at_once_cannot_crash_the_sender", 1);
        execl("/proc/self/exe", "test_peer", (char *)NULL);
        _exit(127);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    FILE *f = fopen(log, "r");
    char line[512];
    while (f && fgets(line, sizeof line, f))
        if (!ok || strstr(line, " sends, "))
            print_message("child: %s", line);
    if (f)
        fclose(f);
    if (!ok)
        fail_msg("the sending child %s %d", WIFSIGNALED(status) ? "died of signal" : "exited with",
                 WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
}

/* One MSG_APP carrying an entry of n bytes. */
static int send_big(struct member *m, uint64_t to, size_t n)
{
    static uint8_t blob[1 << 20];
    assert_true(n <= sizeof blob);
    Cairnpeer__Entry e = CAIRNPEER__ENTRY__INIT;
    e.term = 1;
    e.index = 1;
    e.data.data = blob;
    e.data.len = n;
    Cairnpeer__Entry *ents[] = {&e};
    Cairnpeer__Message msg = CAIRNPEER__MESSAGE__INIT;
    msg.type = CAIRNPEER__MESSAGE_TYPE__MSG_APP;
    msg.from = m->id;
    msg.to = to;
    msg.term = 1;
    msg.n_entries = 1;
    msg.entries = ents;
    Cairnpeer__Message *ptrs[] = {&msg};
    Cairnpeer__MessageBatch b = CAIRNPEER__MESSAGE_BATCH__INIT;
    b.n_messages = 1;
    b.messages = ptrs;
    return peer_send(m->t, to, &b);
}

/*
 * A connection the peer accepted but no longer reads from (its end wedged,
 * or half-open) never closes, so waiting for it to close would leave the
 * peer unreachable for good.  Once it has taken nothing for the stall
 * period, the queue gets a fresh connection.  Before, the sender kept the
 * first connection forever (a suspect in a certificate-reload test that
 * saw a leader lose a member for 30 s with no error anywhere).
 */
static void test_a_connection_that_takes_nothing_is_replaced(void **state)
{
    (void)state;
    struct member a;
    member_start(&a, 0xa1, NULL);
    struct door d;
    char url[64];
    door_open(&d, true, url, sizeof url);
    add(&a, 0xdeaf, url);
    assert_true(WAIT_FOR(all_up(&a) && atomic_load(&d.served) == 2, LONG_MS)); /* messages and stream */
    /* more than the kernel buffers of the connection hold */
    for (int i = 0; i < 48; i++)
        assert_int_equal(send_big(&a, 0xdeaf, 512 << 10), 0);
    assert_true(WAIT_FOR(atomic_load(&d.served) > 2, LONG_MS));
    struct peer_stats st = stats_of(&a, 0xdeaf);
    print_message("%ld connections, %" PRIu64 " fresh sockets, %" PRIu64 " dropped\n", atomic_load(&d.served),
                  st.renewed, st.dropped);
    assert_true(st.renewed >= 1);
    assert_true(st.dropped >= 1);
    assert_int_equal(peer_remove(a.t, 0xdeaf), 0);
    door_close(&d);
    stop_all(&a, NULL, NULL);
}

/* ---------------------------------------------------------------- tests: snapshots */

static void test_a_snapshot_streams_and_verifies_while_messages_flow(void **state)
{
    (void)state;
    struct member a, b;
    struct opts o = {.chunk_bytes = 64 * 1024};
    member_start(&a, 0xa1, &o);
    member_start(&b, 0xb2, NULL);
    link_members(&a, &b);

    char path[300];
    uint8_t want[32], got[32];
    size_t size = 3 * 1024 * 1024 + 12345;
    snprintf(path, sizeof path, "%s/send.db", tmpdir);
    make_file(path, size, 7, want);

    Cairnpeer__Message msg;
    Cairnpeer__SnapshotMetadata meta;
    Cairnpeer__ConfState cs;
    msgsnap_init(&msg, &meta, &cs, b.id, 1234, 5);
    assert_int_equal(peer_send_snapshot(a.t, b.id, &msg, path), 0);
    assert_int_equal(peer_send_snapshot(a.t, b.id, &msg, path), -EBUSY);
    for (uint64_t i = 1; i <= 50; i++)
        assert_int_equal(send_batch(&a, b.id, i, 1), 0);

    assert_true(WAIT_FOR(dones(&a) == 1 && snaps(&b) == 1 && batches(&b) == 50, LONG_MS));
    assert_int_equal(a.done_to[0], b.id);
    assert_int_equal(a.done_ok[0], 1);
    assert_int_equal(b.snap_from, a.id);
    assert_int_equal(b.snap_index, 1234);
    size_t got_size;
    file_digest(b.snap_path, got, &got_size);
    assert_int_equal(got_size, size);
    assert_memory_equal(got, want, 32);
    assert_int_equal(strncmp(b.snap_path, b.dir, strlen(b.dir)), 0);
    assert_int_equal(unlink(b.snap_path), 0);
    assert_int_equal(files_in(b.dir), 0);

    /* Another stream may start now; an empty file works too. */
    make_file(path, 0, 1, want);
    msgsnap_init(&msg, &meta, &cs, b.id, 1300, 5);
    assert_int_equal(peer_send_snapshot(a.t, b.id, &msg, path), 0);
    assert_true(WAIT_FOR(dones(&a) == 2 && snaps(&b) == 2, LONG_MS));
    assert_int_equal(a.done_ok[1], 1);
    file_digest(b.snap_path, got, &got_size);
    assert_int_equal(got_size, 0);
    unlink(b.snap_path);
    unlink(path);

    /* Bad calls get an error and no callback. */
    assert_int_equal(peer_send_snapshot(a.t, 0x99, &msg, path), -ENOENT);
    assert_int_equal(peer_send_snapshot(a.t, b.id, &msg, "/nonexistent/file"), -ENOENT);
    msg.type = CAIRNPEER__MESSAGE_TYPE__MSG_APP;
    assert_int_equal(peer_send_snapshot(a.t, b.id, &msg, path), -EINVAL);
    assert_int_equal(dones(&a), 2);
    stop_all(&a, &b, NULL);
}

/* The receiver never acks: the window fills, messages still get through on their own connection. */
static void test_a_stalled_stream_never_holds_up_messages(void **state)
{
    (void)state;
    struct member a;
    struct opts o = {.chunk_bytes = 64 * 1024, .snapshot_timeout_ms = 1000};
    member_start(&a, 0xa1, &o);
    struct fake x;
    fake_start(&x, 0x77, NULL);
    add(&a, x.id, x.url);

    char path[300];
    uint8_t digest[32];
    snprintf(path, sizeof path, "%s/stall.db", tmpdir);
    make_file(path, 1024 * 1024, 3, digest);
    Cairnpeer__Message msg;
    Cairnpeer__SnapshotMetadata meta;
    Cairnpeer__ConfState cs;
    msgsnap_init(&msg, &meta, &cs, x.id, 99, 2);
    assert_int_equal(peer_send_snapshot(a.t, x.id, &msg, path), 0);

    /* Read chunks until the window is out, then ask for messages. */
    size_t chunks = 0, msgs = 0;
    uint64_t next_off = 0;
    while (chunks < 4) {
        Cairnpeer__PeerEnvelope *env = fake_recv(&x, LONG_MS);
        assert_non_null(env);
        assert_int_equal(env->body_case, CAIRNPEER__PEER_ENVELOPE__BODY_SNAPSHOT_CHUNK);
        assert_int_equal(env->snapshot_chunk->offset, next_off);
        assert_true(env->snapshot_chunk->message != NULL || next_off != 0);
        next_off += env->snapshot_chunk->data.len;
        chunks++;
        cairnpeer__peer_envelope__free_unpacked(env, NULL);
    }
    for (uint64_t i = 1; i <= 10; i++)
        assert_int_equal(send_batch(&a, x.id, i, 1), 0);
    while (msgs < 10) {
        Cairnpeer__PeerEnvelope *env = fake_recv(&x, LONG_MS);
        assert_non_null(env);
        /* Nothing beyond the window is sent without an ack. */
        assert_int_equal(env->body_case, CAIRNPEER__PEER_ENVELOPE__BODY_MESSAGES);
        msgs++;
        cairnpeer__peer_envelope__free_unpacked(env, NULL);
    }
    /* No ack ever comes: the stream times out, reported once. */
    assert_true(WAIT_FOR(dones(&a) == 1, LONG_MS));
    assert_int_equal(a.done_ok[0], 0);

    /* A second stream ended by peer_remove is reported once too. */
    assert_int_equal(peer_send_snapshot(a.t, x.id, &msg, path), 0);
    assert_int_equal(peer_remove(a.t, x.id), 0);
    assert_true(WAIT_FOR(dones(&a) == 2, LONG_MS));
    assert_int_equal(a.done_ok[1], 0);

    /* And one still running when the transport stops (once both its
     * connections are up: nng 1.5.2 can leak a listener whose peer hangs
     * up during the SP handshake, which would upset LeakSanitizer). */
    add(&a, x.id, x.url);
    assert_int_equal(peer_send_snapshot(a.t, x.id, &msg, path), 0);
    for (bool first = false; !first;) {
        Cairnpeer__PeerEnvelope *env = fake_recv(&x, LONG_MS);
        assert_non_null(env);
        first = env->body_case == CAIRNPEER__PEER_ENVELOPE__BODY_SNAPSHOT_CHUNK && env->snapshot_chunk->offset == 0;
        cairnpeer__peer_envelope__free_unpacked(env, NULL);
    }
    assert_true(WAIT_FOR(stats_of(&a, x.id).connected, LONG_MS));
    struct member *pa = &a;
    peer_stop(pa->t);
    pa->t = NULL;
    assert_int_equal(a.n_done, 3);
    assert_int_equal(a.done_ok[2], 0);
    unlink(path);
    fake_stop(&x);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf %s", a.dir);
    assert_int_equal(system(cmd), 0);
}

struct hostile {
    struct member b;
    struct fake f;
    uint8_t data[3000];
    uint8_t sha[32];
};

static void hostile_setup(struct hostile *h)
{
    member_start(&h->b, 0xb2, NULL);
    fake_start(&h->f, 0x77, h->b.url);
    add(&h->b, h->f.id, h->f.url);
    for (size_t i = 0; i < sizeof h->data; i++)
        h->data[i] = (uint8_t)(i * 7 + 1);
    unsigned dl;
    EVP_Digest(h->data, sizeof h->data, h->sha, &dl, EVP_sha256(), NULL);
}

static void test_corrupt_chunks_are_refused_and_partial_files_removed(void **state)
{
    (void)state;
    struct hostile h;
    hostile_setup(&h);
    struct fake *f = &h.f;
    uint64_t b = h.b.id;
    const uint8_t *d = h.data;

    /* A chunk failing its crc32c. */
    fake_send_chunk(f, b, 10, 0, d, 1000, 3000, false, NULL, true);
    expect_ack(f, true, 1000);
    assert_int_equal(files_in(h.b.dir), 1); /* the partial file */
    Cairnpeer__Message msg;
    Cairnpeer__SnapshotMetadata meta;
    Cairnpeer__ConfState cs;
    msgsnap_init(&msg, &meta, &cs, b, 10, 3);
    Cairnpeer__SnapshotChunk c = CAIRNPEER__SNAPSHOT_CHUNK__INIT;
    c.snapshot_index = 10;
    c.snapshot_term = 3;
    c.offset = 1000;
    c.total_size = 3000;
    c.data.data = (uint8_t *)d + 1000;
    c.data.len = 1000;
    c.crc32c = crc32c_extend(0, d + 1000, 1000) ^ 1;
    Cairnpeer__PeerEnvelope env = CAIRNPEER__PEER_ENVELOPE__INIT;
    env.to = b;
    env.body_case = CAIRNPEER__PEER_ENVELOPE__BODY_SNAPSHOT_CHUNK;
    env.snapshot_chunk = &c;
    fake_send(f, &env);
    expect_ack(f, false, 0);
    assert_int_equal(files_in(h.b.dir), 0);

    /* Every chunk right, the file's sha256 wrong. */
    uint8_t bad_sha[32];
    memcpy(bad_sha, h.sha, 32);
    bad_sha[31] ^= 0x80;
    fake_send_chunk(f, b, 11, 0, d, 1500, 3000, false, NULL, true);
    expect_ack(f, true, 1500);
    fake_send_chunk(f, b, 11, 1500, d + 1500, 1500, 3000, true, bad_sha, false);
    expect_ack(f, false, 0);
    assert_int_equal(files_in(h.b.dir), 0);

    /* The last chunk without a sha256 at all. */
    fake_send_chunk(f, b, 11, 0, d, 3000, 3000, true, NULL, true);
    expect_ack(f, false, 0);
    assert_int_equal(files_in(h.b.dir), 0);

    /* More data than announced. */
    fake_send_chunk(f, b, 12, 0, d, 200, 100, false, NULL, true);
    expect_ack(f, false, 0);
    fake_send_chunk(f, b, 12, 0, d, 100, 200, false, NULL, true);
    expect_ack(f, true, 100);
    fake_send_chunk(f, b, 12, 100, d + 100, 200, 200, true, h.sha, false);
    expect_ack(f, false, 0);
    assert_int_equal(files_in(h.b.dir), 0);

    /* Out of order, and a chunk of no stream at all. */
    fake_send_chunk(f, b, 13, 0, d, 1000, 3000, false, NULL, true);
    expect_ack(f, true, 1000);
    fake_send_chunk(f, b, 13, 2000, d + 2000, 1000, 3000, true, h.sha, false);
    expect_ack(f, false, 0);
    assert_int_equal(files_in(h.b.dir), 0);
    fake_send_chunk(f, b, 14, 500, d + 500, 100, 3000, false, NULL, false);
    expect_ack(f, false, 0);

    /* A first chunk without its MsgSnap, or with one for another snapshot. */
    fake_send_chunk(f, b, 15, 0, d, 1000, 3000, false, NULL, false);
    expect_ack(f, false, 0);
    msgsnap_init(&msg, &meta, &cs, b, 16, 3);
    c = (Cairnpeer__SnapshotChunk)CAIRNPEER__SNAPSHOT_CHUNK__INIT;
    c.snapshot_index = 17;
    c.snapshot_term = 3;
    c.total_size = 3000;
    c.data.data = (uint8_t *)d;
    c.data.len = 10;
    c.crc32c = crc32c_extend(0, d, 10);
    c.message = &msg;
    env.snapshot_chunk = &c;
    fake_send(f, &env);
    expect_ack(f, false, 0);
    /* A total size larger than any disk. */
    fake_send_chunk(f, b, 18, 0, d, 10, UINT64_MAX / 2, false, NULL, true);
    expect_ack(f, false, 0);
    assert_int_equal(files_in(h.b.dir), 0);
    assert_int_equal(snaps(&h.b), 0);
    assert_true(stats_of(&h.b, f->id).recv_errors >= 10);

    /* After all that, a correct stream in three chunks is taken. */
    fake_send_chunk(f, b, 20, 0, d, 1000, 3000, false, NULL, true);
    expect_ack(f, true, 1000);
    fake_send_chunk(f, b, 20, 1000, d + 1000, 1000, 3000, false, NULL, false);
    expect_ack(f, true, 2000);
    fake_send_chunk(f, b, 20, 2000, d + 2000, 1000, 3000, true, h.sha, false);
    expect_ack(f, true, 3000);
    assert_true(WAIT_FOR(snaps(&h.b) == 1, LONG_MS));
    assert_int_equal(h.b.snap_index, 20);
    assert_int_equal(h.b.snap_from, f->id);
    uint8_t got[32];
    size_t size;
    file_digest(h.b.snap_path, got, &size);
    assert_int_equal(size, 3000);
    assert_memory_equal(got, h.sha, 32);
    unlink(h.b.snap_path);

    /* A stream abandoned half way is removed after the timeout... not here
     * (30 s); but one that is restarted from 0 replaces the partial file. */
    fake_send_chunk(f, b, 21, 0, d, 1000, 3000, false, NULL, true);
    expect_ack(f, true, 1000);
    fake_send_chunk(f, b, 22, 0, d, 1000, 3000, false, NULL, true);
    expect_ack(f, true, 1000);
    assert_int_equal(files_in(h.b.dir), 1);
    settle(&h.b);
    settle(&h.b);
    member_stop(&h.b); /* removes the partial file too */
    fake_stop(f);
}

/* Refusals past the log's burst are left out, and the next line logged says how many. */
static void test_refusals_past_the_log_limit_are_counted_in_the_next_line(void **state)
{
    (void)state;
    struct hostile h;
    hostile_setup(&h);
    /* a chunk of no stream at all, 25 times: 20 lines (LOG_BURST in peer.c), 5 left out */
    for (int i = 0; i < 25; i++) {
        fake_send_chunk(&h.f, h.b.id, 30, 500, h.data, 100, 3000, false, NULL, false);
        expect_ack(&h.f, false, 0);
    }
    struct timespec window = {10, 300000000}; /* past LOG_WINDOW_MS */
    nanosleep(&window, NULL);
    char path[] = "/tmp/test_peer_log_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    fflush(stderr);
    int saved = dup(2);
    assert_true(saved >= 0 && dup2(fd, 2) == 2);
    fake_send_chunk(&h.f, h.b.id, 31, 500, h.data, 100, 3000, false, NULL, false);
    expect_ack(&h.f, false, 0);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    char text[4096] = "";
    ssize_t n = pread(fd, text, sizeof text - 1, 0);
    close(fd);
    unlink(path);
    assert_true(n > 0);
    text[n] = 0;
    const char *line = strstr(text, "snapshot at 31 from");
    const char *note = line ? strstr(line, " earlier ones not logged)") : NULL;
    if (!note)
        fail_msg("the first line of the next window does not count the refusals left out: %s", text);
    while (note > line && *note != '(')
        note--;
    assert_true(strtoul(note + 1, NULL, 10) >= 5);
    member_stop(&h.b);
    fake_stop(&h.f);
}

static void test_stopping_removes_partial_files(void **state)
{
    (void)state;
    struct hostile h;
    hostile_setup(&h);
    fake_send_chunk(&h.f, h.b.id, 5, 0, h.data, 1000, 3000, false, NULL, true);
    expect_ack(&h.f, true, 1000);
    assert_int_equal(files_in(h.b.dir), 1);
    peer_stop(h.b.t);
    h.b.t = NULL;
    assert_int_equal(files_in(h.b.dir), 0);
    settle(&h.b);
    member_stop(&h.b);
    fake_stop(&h.f);
}

/* ---------------------------------------------------------------- tests: hostile envelopes */

static void test_bad_envelopes_are_dropped_and_the_member_keeps_working(void **state)
{
    (void)state;
    struct hostile h;
    hostile_setup(&h);
    struct fake *f = &h.f;
    uint64_t b = h.b.id;

    /* Another cluster, another addressee, an unknown sender, no body. */
    Cairnpeer__Message msg = CAIRNPEER__MESSAGE__INIT;
    msg.type = CAIRNPEER__MESSAGE_TYPE__MSG_HEARTBEAT;
    Cairnpeer__Message *ptr = &msg;
    Cairnpeer__MessageBatch batch = CAIRNPEER__MESSAGE_BATCH__INIT;
    batch.n_messages = 1;
    batch.messages = &ptr;
    Cairnpeer__PeerEnvelope env = CAIRNPEER__PEER_ENVELOPE__INIT;
    env.body_case = CAIRNPEER__PEER_ENVELOPE__BODY_MESSAGES;
    env.messages = &batch;
    env.cluster_id = CLUSTER + 1;
    env.to = b;
    fake_send(f, &env);
    env.cluster_id = CLUSTER;
    env.to = b + 1;
    fake_send(f, &env);
    env.to = 0; /* "not known yet" is fine... */
    env.from = 0x555; /* ...but an unknown sender is not */
    fake_send(f, &env);
    env.from = b; /* nor ourselves */
    fake_send(f, &env);
    env.from = 0;
    env.body_case = CAIRNPEER__PEER_ENVELOPE__BODY__NOT_SET;
    fake_send(f, &env);

    /* Every truncation of a valid envelope, and random bytes. */
    env.body_case = CAIRNPEER__PEER_ENVELOPE__BODY_MESSAGES;
    env.cluster_id = CLUSTER;
    env.from = f->id;
    env.to = b;
    uint8_t buf[256];
    size_t n = cairnpeer__peer_envelope__get_packed_size(&env);
    assert_true(n < sizeof buf);
    cairnpeer__peer_envelope__pack(&env, buf);
    for (size_t i = 0; i < n; i++)
        fake_send_raw(f, buf, i);
    srand(99);
    for (int k = 0; k < 200; k++) {
        uint8_t junk[300];
        size_t len = (size_t)(rand() % (int)sizeof junk);
        for (size_t i = 0; i < len; i++)
            junk[i] = (uint8_t)rand();
        fake_send_raw(f, junk, len);
    }
    /* A batch of 100000 empty messages: 200 KB on the wire, ~16 MB decoded. */
    {
        size_t count = 100000;
        Cairnpeer__Message empty = CAIRNPEER__MESSAGE__INIT;
        Cairnpeer__Message **many = malloc(count * sizeof(*many));
        assert_non_null(many);
        for (size_t i = 0; i < count; i++)
            many[i] = &empty;
        Cairnpeer__MessageBatch big = CAIRNPEER__MESSAGE_BATCH__INIT;
        big.n_messages = count;
        big.messages = many;
        Cairnpeer__PeerEnvelope benv = CAIRNPEER__PEER_ENVELOPE__INIT;
        benv.to = b;
        benv.body_case = CAIRNPEER__PEER_ENVELOPE__BODY_MESSAGES;
        benv.messages = &big;
        fake_send(f, &benv);
        free(many);
    }
    /* A chunk and an ack of no stream, acks are silently ignored. */
    Cairnpeer__SnapshotAck ack = CAIRNPEER__SNAPSHOT_ACK__INIT;
    ack.snapshot_index = 5;
    ack.next_offset = 100;
    ack.ok = 1;
    Cairnpeer__PeerEnvelope aenv = CAIRNPEER__PEER_ENVELOPE__INIT;
    aenv.to = b;
    aenv.body_case = CAIRNPEER__PEER_ENVELOPE__BODY_SNAPSHOT_ACK;
    aenv.snapshot_ack = &ack;
    fake_send(f, &aenv);

    /* Then one good batch: it is the only one that arrives (same connection, in order). */
    fake_send_batch(f, b, 4242);
    assert_true(WAIT_FOR(batches(&h.b) >= 1, LONG_MS));
    fake_send_batch(f, b, 4243);
    assert_true(WAIT_FOR(batches(&h.b) >= 2, LONG_MS));
    assert_int_equal(batches(&h.b), 2);
    assert_int_equal(h.b.term[0], 4242);
    assert_int_equal(h.b.from[0], f->id);
    assert_true(stats_of(&h.b, f->id).recv_errors >= 2);
    settle(&h.b);
    member_stop(&h.b);
    fake_stop(f);
}

static int tcp_connect(const char *url)
{
    const char *colon = strrchr(url, ':');
    assert_non_null(colon);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    return fd;
}

/* True once the other side closed fd (reads return 0 or an error) within ms. */
static bool closed_by_peer(int fd, int ms)
{
    uint64_t end = now_ms() + (uint64_t)ms;
    while (now_ms() < end) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 50) > 0) {
            uint8_t b[64];
            ssize_t r = read(fd, b, sizeof b);
            if (r <= 0)
                return true;
        }
    }
    return false;
}

static void test_raw_tcp_garbage_and_absurd_lengths_are_survived(void **state)
{
    (void)state;
    struct hostile h;
    hostile_setup(&h);

    /* A wrong SP header. */
    int fd = tcp_connect(h.b.url);
    assert_int_equal(write(fd, "GET / HTTP/1.0\r\n\r\n", 18), 18);
    assert_true(closed_by_peer(fd, LONG_MS));
    close(fd);

    /* A right header (push0 talking to pull0), then a length of 2^63. */
    static const uint8_t hdr[8] = {0x00, 'S', 'P', 0x00, 0x00, 0x50, 0x00, 0x00};
    static const uint8_t huge[8] = {0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    fd = tcp_connect(h.b.url);
    assert_int_equal(write(fd, hdr, 8), 8);
    uint8_t theirs[8];
    size_t got = 0;
    while (got < 8) {
        ssize_t r = read(fd, theirs + got, 8 - got);
        assert_true(r > 0);
        got += (size_t)r;
    }
    assert_int_equal(theirs[5], 0x51); /* pull0 */
    assert_int_equal(write(fd, huge, 8), 8);
    assert_int_equal(write(fd, "xxxx", 4), 4);
    assert_true(closed_by_peer(fd, LONG_MS));
    close(fd);

    /* A right header and a message cut short by a hang-up. */
    fd = tcp_connect(h.b.url);
    assert_int_equal(write(fd, hdr, 8), 8);
    static const uint8_t len100[8] = {0, 0, 0, 0, 0, 0, 0, 100};
    assert_int_equal(write(fd, len100, 8), 8);
    assert_int_equal(write(fd, "abc", 3), 3);
    close(fd);

    fake_send_batch(&h.f, h.b.id, 5151);
    assert_true(WAIT_FOR(batches(&h.b) == 1, LONG_MS));
    assert_int_equal(h.b.term[0], 5151);
    /* New connections are still accepted (not only the one made before). */
    struct fake g;
    fake_start(&g, 0x78, h.b.url);
    add(&h.b, g.id, g.url);
    fake_send_batch(&g, h.b.id, 5252);
    assert_true(WAIT_FOR(batches(&h.b) == 2, LONG_MS));
    assert_int_equal(h.b.term[1], 5252);
    settle(&h.b);
    member_stop(&h.b);
    fake_stop(&g);
    fake_stop(&h.f);
}

/* ---------------------------------------------------------------- tests: TLS */

static char certdir[300];

static int sh(const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    return system(cmd);
}

static int make_ca(const char *name)
{
    if (sh("cd %s && openssl ecparam -name prime256v1 -genkey -noout -out %s.key 2>/dev/null", certdir, name))
        return -1;
    return sh("cd %s && openssl req -x509 -new -key %s.key -subj /CN=%s -days 2 -out %s.crt 2>/dev/null", certdir,
              name, name, name);
}

/* A key and certificate signed by ca with SAN san; cert and key in name.pem too. */
static int make_cert(const char *name, const char *ca, const char *san)
{
    if (sh("cd %s && openssl ecparam -name prime256v1 -genkey -noout -out %s.key 2>/dev/null", certdir, name) ||
        sh("cd %s && openssl req -new -key %s.key -subj /CN=%s -out %s.csr 2>/dev/null", certdir, name, name, name) ||
        sh("cd %s && printf 'subjectAltName=%s\\n' > %s.ext", certdir, san, name) ||
        sh("cd %s && openssl x509 -req -in %s.csr -CA %s.crt -CAkey %s.key -CAcreateserial -days 2 "
           "-extfile %s.ext -out %s.crt 2>/dev/null",
           certdir, name, ca, ca, name, name))
        return -1;
    return sh("cd %s && cat %s.crt %s.key > %s.pem", certdir, name, name, name);
}

static const char *cpath(const char *name)
{
    static char bufs[8][400];
    static int next;
    char *b = bufs[next++ % 8];
    snprintf(b, 400, "%s/%s", certdir, name);
    return b;
}

/* The certificates, made once by the first TLS test. */
static void make_certs(void)
{
    if (certdir[0])
        return;
    snprintf(certdir, sizeof certdir, "%s/certs", tmpdir);
    assert_int_equal(mkdir(certdir, 0700), 0);
    assert_int_equal(make_ca("ca"), 0);
    assert_int_equal(make_ca("otherca"), 0);
    assert_int_equal(make_cert("m1", "ca", "DNS:localhost"), 0);
    assert_int_equal(make_cert("m2", "ca", "DNS:localhost"), 0);
    assert_int_equal(make_cert("wrongname", "ca", "DNS:member-x.example"), 0);
    assert_int_equal(make_cert("stranger", "otherca", "DNS:localhost"), 0);
}

/* A TLS member listening on 127.0.0.1 whose peers dial it by the name localhost. */
static void tls_member(struct member *m, uint64_t id, const char *cert, const char *ca)
{
    char crt[64], key[64], cafile[64];
    make_certs();
    snprintf(crt, sizeof crt, "%s.crt", cert);
    snprintf(key, sizeof key, "%s.key", cert);
    snprintf(cafile, sizeof cafile, "%s.crt", ca);
    struct opts o = {.listen = "tls+tcp://127.0.0.1:0",
                     .tls = {.cert_file = cpath(crt), .key_file = cpath(key), .ca_file = cpath(cafile)}};
    member_start(m, id, &o);
    /* Dial by name: the URL's host is what the certificate must carry. */
    char *colon = strrchr(m->url, ':');
    char port[16];
    snprintf(port, sizeof port, "%s", colon + 1);
    snprintf(m->url, sizeof m->url, "tls+tcp://localhost:%s", port);
}

static void test_tls_members_talk(void **state)
{
    (void)state;
    struct member a, b;
    tls_member(&a, 0xa1, "m1", "ca");
    tls_member(&b, 0xb2, "m2", "ca");
    link_members(&a, &b);
    assert_int_equal(send_batch(&a, b.id, 1, 1), 0);
    assert_int_equal(send_batch(&b, a.id, 2, 1), 0);
    assert_true(WAIT_FOR(batches(&a) == 1 && batches(&b) == 1, LONG_MS));
    assert_int_equal(stats_of(&a, b.id).connected, 1);

    /* A snapshot goes over TLS too. */
    char path[300];
    uint8_t want[32], got[32];
    snprintf(path, sizeof path, "%s/tls.db", tmpdir);
    make_file(path, 300 * 1000, 11, want);
    Cairnpeer__Message msg;
    Cairnpeer__SnapshotMetadata meta;
    Cairnpeer__ConfState cs;
    msgsnap_init(&msg, &meta, &cs, b.id, 50, 2);
    assert_int_equal(peer_send_snapshot(a.t, b.id, &msg, path), 0);
    assert_true(WAIT_FOR(dones(&a) == 1 && snaps(&b) == 1, LONG_MS));
    assert_int_equal(a.done_ok[0], 1);
    size_t size;
    file_digest(b.snap_path, got, &size);
    assert_memory_equal(got, want, 32);
    unlink(b.snap_path);
    unlink(path);

    /* Reload: the same files change nothing; bad files are refused and change nothing. */
    char err[512];
    struct peer_tls same = {cpath("m1.crt"), cpath("m1.key"), cpath("ca.crt")};
    assert_int_equal(peer_reload_tls(a.t, &same, err, sizeof err), 0);
    struct peer_tls bad = {cpath("nonexistent.crt"), cpath("m1.key"), cpath("ca.crt")};
    assert_int_equal(peer_reload_tls(a.t, &bad, err, sizeof err), -CAIRN_E_CONFIG);
    assert_non_null(strstr(err, "nonexistent.crt"));
    struct peer_tls none = {NULL, NULL, NULL};
    assert_int_equal(peer_reload_tls(a.t, &none, err, sizeof err), -CAIRN_E_CONFIG);
    size_t before_a = batches(&a), before_b = batches(&b);
    assert_int_equal(send_batch(&a, b.id, 3, 1), 0);
    assert_int_equal(send_batch(&b, a.id, 4, 1), 0);
    assert_true(WAIT_FOR(batches(&b) > before_b && batches(&a) > before_a, LONG_MS));

    /* Changed files (certificate and key now in one PEM): a's listener is
     * restarted on the same port and its dialers dial again.  b stops
     * dialing a meanwhile, so no handshake is cut short (see park()). */
    char url_before[256], url_after[256];
    assert_int_equal(peer_listen_url(a.t, 0, url_before, sizeof url_before), 0);
    settle(&a);
    settle(&b);
    assert_int_equal(peer_remove(b.t, a.id), 0);
    assert_true(WAIT_FOR(!port_busy(a.url), LONG_MS));
    struct peer_tls combined = {cpath("m1.pem"), cpath("m1.pem"), cpath("ca.crt")};
    assert_int_equal(peer_reload_tls(a.t, &combined, err, sizeof err), 0);
    assert_int_equal(peer_listen_url(a.t, 0, url_after, sizeof url_after), 0);
    assert_string_equal(url_before, url_after);
    add(&b, a.id, a.url);
    before_a = batches(&a);
    before_b = batches(&b);
    assert_int_equal(send_batch(&a, b.id, 5, 1), 0);
    assert_int_equal(send_batch(&b, a.id, 6, 1), 0);
    /* Until the reload gave a's queues fresh sockets, the message to b was
     * lost in about one run in ten under load: it went to the connection the
     * redial was closing. */
    if (!WAIT_FOR(batches(&b) > before_b && batches(&a) > before_a, LONG_MS)) {
        struct peer_stats sa = stats_of(&a, b.id), sb = stats_of(&b, a.id);
        fail_msg("after the reload: a->b connected %d, sent %" PRIu64 ", dropped %" PRIu64 ", renewed %" PRIu64
                 ", b got %zu (had %zu); b->a connected %d, sent %" PRIu64 ", dropped %" PRIu64 ", a got %zu (had %zu)",
                 sa.connected, sa.sent, sa.dropped, sa.renewed, batches(&b), before_b, sb.connected, sb.sent,
                 sb.dropped, batches(&a), before_a);
    }
    stop_all(&a, &b, NULL);
}

static void test_tls_refuses_a_certificate_not_naming_the_host(void **state)
{
    (void)state;
    struct member a, b;
    static struct member c; /* parked: see park() */
    tls_member(&a, 0xa1, "m1", "ca");
    tls_member(&b, 0xb2, "m2", "ca");
    tls_member(&c, 0xc3, "wrongname", "ca"); /* from our CA, but names member-x.example */
    link_members(&a, &b);
    link_members(&a, &c);
    for (int i = 0; i < 5; i++)
        assert_int_equal(send_batch(&a, c.id, 9, 1), 0);
    assert_int_equal(send_batch(&a, b.id, 1, 1), 0);
    assert_true(WAIT_FOR(batches(&b) == 1, LONG_MS)); /* the good path works meanwhile */
    assert_false(WAIT_FOR(batches(&c) > 0, QUIET_MS));
    assert_int_equal(stats_of(&a, c.id).connected, 0);
    /* The other way round the name is not checked (the listener cannot:
     * PLATFORM-NOTES): c reaches a, which is why every member dials. */
    assert_true(send_until_delivered(&c, &a, 8));
    assert_int_equal(peer_remove(a.t, c.id), 0);
    park(&c);
    stop_all(&a, &b, NULL);
}

static void test_tls_refuses_a_certificate_from_another_ca(void **state)
{
    (void)state;
    struct member a;
    static struct member d; /* parked: see park() */
    tls_member(&a, 0xa1, "m1", "ca");
    tls_member(&d, 0xd4, "stranger", "ca"); /* trusts our CA, but its own cert is otherca's */
    link_members(&a, &d);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(send_batch(&a, d.id, 9, 1), 0);
        assert_int_equal(send_batch(&d, a.id, 9, 1), 0);
    }
    assert_false(WAIT_FOR(batches(&a) > 0 || batches(&d) > 0, QUIET_MS));
    assert_int_equal(stats_of(&a, d.id).connected, 0);
    assert_int_equal(stats_of(&d, a.id).connected, 0);
    /* d stops dialing a, and no handshake is left half done (see park()). */
    assert_int_equal(peer_remove(a.t, d.id), 0);
    assert_int_equal(peer_remove(d.t, a.id), 0);
    assert_true(WAIT_FOR(!port_busy(a.url), LONG_MS));
    /* a's listener, having refused handshakes, still takes a good member. */
    struct member b;
    tls_member(&b, 0xb2, "m2", "ca");
    link_members(&a, &b);
    assert_true(send_until_delivered(&b, &a, 6));
    assert_int_equal(a.term[0], 6);
    park(&d);
    stop_all(&a, &b, NULL);
}

/* ---------------------------------------------------------------- main */

static int group_setup(void **state)
{
    (void)state;
    log_setup("test_peer", LOG_TARGET_STDERR, LOG_LEVEL_WARNING);
    snprintf(tmpdir, sizeof tmpdir, "/tmp/cairn-test-peer-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    return sh("rm -rf %s", tmpdir) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_messages_flow_both_ways),
        cmocka_unit_test(test_unknown_peers_self_and_bad_urls),
        cmocka_unit_test(test_start_refuses_bad_options),
        cmocka_unit_test(test_queue_toward_a_dead_peer_overflows_without_blocking),
        cmocka_unit_test(test_a_restarted_peer_is_reconnected),
        cmocka_unit_test(test_a_peer_that_hangs_up_at_once_cannot_crash_the_sender),
        cmocka_unit_test(test_a_connection_that_takes_nothing_is_replaced),
        cmocka_unit_test(test_a_snapshot_streams_and_verifies_while_messages_flow),
        cmocka_unit_test(test_a_stalled_stream_never_holds_up_messages),
        cmocka_unit_test(test_corrupt_chunks_are_refused_and_partial_files_removed),
        cmocka_unit_test(test_refusals_past_the_log_limit_are_counted_in_the_next_line),
        cmocka_unit_test(test_stopping_removes_partial_files),
        cmocka_unit_test(test_bad_envelopes_are_dropped_and_the_member_keeps_working),
        cmocka_unit_test(test_raw_tcp_garbage_and_absurd_lengths_are_survived),
        cmocka_unit_test(test_tls_members_talk),
        cmocka_unit_test(test_tls_refuses_a_certificate_not_naming_the_host),
        cmocka_unit_test(test_tls_refuses_a_certificate_from_another_ca),
    };
    /* PEER_TEST=pattern runs only the matching tests (cmocka's filter). */
    if (getenv("PEER_TEST"))
        cmocka_set_test_filter(getenv("PEER_TEST"));
    int rc = cmocka_run_group_tests(tests, group_setup, group_teardown);
    if (getenv("PEER_DOOR_CHILD"))
        _exit(rc); /* see test_a_peer_that_hangs_up_at_once_cannot_crash_the_sender */
    return rc;
}
