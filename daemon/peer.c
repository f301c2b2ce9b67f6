/*
 * peer: the member-to-member transport over nng (see peer.h for the
 * interface).  It owns the sockets, the bounded per-peer send queues and
 * the snapshot streams; it knows PeerEnvelope and its bodies, not Raft.
 *
 * Threads and locks:
 *  - cfg_mu serialises the control calls (start/add/remove/reload/stop);
 *    only they create or destroy nng sockets, dialers and listeners, and
 *    none of nng's callbacks take it, so waiting on nng under it is safe.
 *  - mu guards the peer table, the send queues, the counters and the
 *    stream job queue.  nng's aio callbacks take it; nothing that waits
 *    for an nng callback is ever called with it held.
 *  - one receive aio on the pull socket handles envelopes in arrival
 *    order; it never touches the disk.
 *  - the stream thread owns every snapshot stream, in both directions:
 *    file reads and writes, sha256, fsync, acks and timeouts.  The other
 *    threads hand it jobs; it talks to peers only through the queues.
 *
 * Snapshot pacing: a stream goes over a second push0 socket (its own
 * connection, dialing the peer's first URL only, so chunks cannot overtake
 * each other), at most STREAM_WINDOW chunks ahead of the receiver's acks.
 * The separate connection keeps heartbeats out from behind megabytes of
 * chunks in one TCP send buffer; the window bounds the memory each side
 * holds and lets a dead receiver be noticed (no progress for
 * snapshot_timeout_ms).  Acks travel back over the receiver's ordinary
 * connection to the sender.
 */
#include "daemon/peer.h"
#include "daemon/lguard.h"
#include "daemon/sockclose.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/pipeline0/pull.h>
#include <nng/protocol/pipeline0/push.h>
#include <nng/supplemental/tls/tls.h>
#include <openssl/evp.h>

#include "base/crc32c.h"
#include "base/deadline.h"
#include "base/errors.h"
#include "base/log.h"

#define DEFAULT_MAX_QUEUE 4096
#define DEFAULT_MAX_RECV ((size_t)64 << 20)
#define DEFAULT_CHUNK ((size_t)1 << 20)
#define DEFAULT_SNAP_TIMEOUT_MS 30000
#define ENVELOPE_SLACK 4096      /* chunk header and MsgSnap around the data */
#define STALL_MS 2000            /* a Raft queue stuck this long is emptied */
#define STREAM_WINDOW 4          /* chunks in flight per stream */
#define MAX_PEERS 64             /* voters and learners, with room to spare */
#define RECONNECT_MIN_MS 100
#define RECONNECT_MAX_MS 2000    /* a restarted member is found within 2 s */
#define JOBS_MAX 1024            /* received chunks and acks waiting for the stream thread */
#define JOBS_MAX_BYTES ((size_t)256 << 20)
#define TICK_MS 200              /* stream timeouts are checked this often */
#define URL_TRY_MS 3000          /* a member with several peer URLs: the next one after this long unconnected */
#define TLS_FILE_MAX (1 << 20)
#define LOG_BURST 20             /* dropped-input events logged per window */
#define LOG_WINDOW_MS 10000
#define SHA256_LEN 32
#define DECODE_FACTOR 4          /* decoded bytes allowed per received byte... */
#define DECODE_SLACK ((size_t)1 << 20) /* ...plus this (a batch of heartbeats decodes to ~7x) */

/* ---------------------------------------------------------------- types */

/*
 * One push0 socket with one dialer, and a bounded queue behind one aio.
 *
 * A socket that lost a connection is never sent on again: nng 1.5.2's push0
 * can put a pipe that is closing back on its list of pipes ready to send
 * (the pipe's last send completing as it closes), and the socket's next
 * send, or any later change to that list, then touches freed memory (nng
 * issue 1653, fixed in nng 1.6; test_peer's door-slamming listener crashes
 * 1.5.2 within seconds).  So when a pipe goes (REM_POST, called before nng
 * frees it) the queue turns stale: its dialer is closed before it can
 * reconnect, sends stop, and the stream thread gives the queue a fresh
 * socket, dialled again, then closes the old one (closing does not walk
 * that list).  One dialer per socket keeps that list to one pipe at most.
 * A queue is renewed the same way when its send stalls while connected (a
 * connection nobody reads never closes) and when the TLS files change.
 */
struct sendq {
    struct peer_transport *t;
    struct peer *p;
    nng_socket sock;
    nng_dialer dialer;   /* valid if dialed (under t->mu) */
    bool dialed;
    size_t url;          /* which of the peer's URLs the dialer dials */
    uint64_t dialed_ms;  /* when it was started */
    nng_aio *aio;
    nng_aio *now_aio;    /* no callback, zero timeout: a send tried at once (sendq_send_now) */
    nng_msg **ring;
    size_t cap, head, len;
    bool busy;           /* aio in flight */
    bool closing;
    bool stale;          /* the socket lost a connection: no more sends on it, a fresh one comes */
    bool stream;         /* the snapshot stream's queue (first URL only) */
    bool flush_on_stall; /* Raft queue: drop everything when the send times out */
    size_t busy_bytes;   /* length of the message in the aio (gone from it once sent) */
    atomic_int pipes;    /* connections up (pipe callbacks) */
};

struct peer {
    uint64_t id;
    char *urls[CONFIG_MAX_URLS];
    size_t n_urls;
    struct sendq q;      /* Raft messages and snapshot acks */
    struct sendq sq;     /* snapshot chunks */
    uint64_t sent, dropped, recv_errors;
    uint64_t bytes_sent, bytes_recv;
    uint64_t renewed;    /* fresh sockets: after a lost connection, a stall while connected, a TLS reload */
    uint64_t hb_sent_ns; /* a heartbeat is out since then, its response not seen; 0: none */
    struct histogram rtt;
    uint64_t stream_seq; /* nonzero while a stream to this peer runs */
};

struct tls_material {
    char *cert, *key, *ca; /* PEM text; all NULL without TLS */
};

struct listener {
    char *url;           /* as bound (port filled in) */
    nng_listener l;
    bool tls;
};

enum job_kind { JOB_OSTART, JOB_OACK, JOB_ICHUNK, JOB_GONE };

struct job {
    struct job *next;
    enum job_kind kind;
    uint64_t peer;
    size_t bytes;
    void *ptr; /* struct ostream, Cairnpeer__SnapshotAck or Cairnpeer__SnapshotChunk */
};

/* An outgoing stream (stream thread only, once started). */
struct ostream {
    struct ostream *next;
    uint64_t peer, seq;
    int fd;
    uint64_t size, read_off, acked;
    uint64_t index, term;
    bool all_read;
    Cairnpeer__Message *msg; /* owned copy of the MsgSnap */
    EVP_MD_CTX *sha;
    uint64_t progress_ms;
};

/* An incoming stream (stream thread only). */
struct istream {
    struct istream *next;
    uint64_t peer, index, term, total, received;
    int fd;
    char path[PATH_MAX];
    EVP_MD_CTX *sha;
    Cairnpeer__Message *msg;
    uint64_t progress_ms;
};

struct peer_transport {
    uint64_t cluster_id, self_id;
    struct peer_callbacks cb;
    char *incoming_dir;
    size_t max_queue, max_recv, chunk;
    uint32_t snap_timeout_ms;

    pthread_mutex_t cfg_mu;
    struct tls_material tls;
    struct listener lis[CONFIG_MAX_URLS];
    size_t n_lis;
    struct lguard *guard; /* restarts a listener that stops taking connections (lguard.h) */
    /* A socket close was abandoned (sockclose.h): from then on the peers and
     * the transport, which its pipe callbacks use, are never freed. */
    atomic_bool close_abandoned;
    nng_socket rx;
    nng_aio *rx_aio;

    pthread_mutex_t mu;
    struct peer *peers[MAX_PEERS];
    size_t n_peers;
    bool stopping;
    uint64_t next_stream_seq;
    struct job *jhead, *jtail;
    size_t jn, jbytes;
    bool jstop;
    bool renew;          /* a queue went stale: the stream thread renews it */
    pthread_cond_t jcv;

    pthread_t thread;
    bool thread_started;
    struct ostream *outs;  /* stream thread only */
    struct istream *ins;   /* stream thread only */
    uint8_t *rbuf;         /* stream thread only: one chunk */

    struct log_limit log_limit; /* for events a remote party can cause at will */
};

/* ---------------------------------------------------------------- small helpers */

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static bool batch_has(const Cairnpeer__MessageBatch *b, Cairnpeer__MessageType type)
{
    for (size_t i = 0; b && i < b->n_messages; i++)
        if (b->messages[i] && b->messages[i]->type == type)
            return true;
    return false;
}

static int nng_to_errno(int rv)
{
    switch (rv) {
    case 0:
        return 0;
    case NNG_ENOMEM:
        return -ENOMEM;
    case NNG_EADDRINUSE:
        return -EADDRINUSE;
    case NNG_EADDRINVAL:
    case NNG_EINVAL:
    case NNG_ENOTSUP:
        return -CAIRN_E_CONFIG;
    case NNG_EPERM:
        return -EACCES;
    default:
        return -EIO;
    }
}

static bool url_is_tls(const char *url)
{
    return strncmp(url, "tls+", 4) == 0;
}

/* The host of scheme://host:port or scheme://[v6]:port into buf; -1 if none. */
static int url_host(const char *url, char *buf, size_t len)
{
    const char *h = strstr(url, "://");
    if (!h)
        return -1;
    h += 3;
    const char *end;
    if (*h == '[') {
        h++;
        end = strchr(h, ']');
    } else {
        end = strrchr(h, ':');
    }
    if (!end || end == h || (size_t)(end - h) >= len)
        return -1;
    memcpy(buf, h, (size_t)(end - h));
    buf[end - h] = '\0';
    return 0;
}

static bool host_is_ip(const char *host)
{
    unsigned char a[16];
    return inet_pton(AF_INET, host, a) == 1 || inet_pton(AF_INET6, host, a) == 1;
}

/* Where the message came from, for logs: "10.0.0.2:51514" or "unknown". */
static void remote_addr(nng_msg *msg, char *buf, size_t len)
{
    nng_sockaddr sa;
    char ip[INET6_ADDRSTRLEN];
    snprintf(buf, len, "unknown");
    if (!msg)
        return;
    nng_pipe p = nng_msg_get_pipe(msg);
    if (nng_pipe_id(p) <= 0 || nng_pipe_get_addr(p, NNG_OPT_REMADDR, &sa) != 0)
        return;
    if (sa.s_family == NNG_AF_INET && inet_ntop(AF_INET, &sa.s_in.sa_addr, ip, sizeof ip))
        snprintf(buf, len, "%s:%u", ip, (unsigned)ntohs(sa.s_in.sa_port));
    else if (sa.s_family == NNG_AF_INET6 && inet_ntop(AF_INET6, sa.s_in6.sa_addr, ip, sizeof ip))
        snprintf(buf, len, "[%s]:%u", ip, (unsigned)ntohs(sa.s_in6.sa_port));
    else if (sa.s_family == NNG_AF_IPC)
        snprintf(buf, len, "%s", sa.s_ipc.sa_path);
}

/* Log an envelope or chunk refused from `from` (0 if not known). */
static void log_refused(struct peer_transport *t, nng_msg *msg, uint64_t from, const char *what)
{
    uint64_t suppressed;
    if (!log_limit_pass(&t->log_limit, &suppressed))
        return;
    char addr[256];
    remote_addr(msg, addr, sizeof addr);
    log_warning(LOG_FIELDS(LOG_HEX("CAIRN_MEMBER", t->self_id), LOG_HEX("CAIRN_PEER", from),
                           LOG_STR("CAIRN_REMOTE_ADDR", addr), LOG_U64("CAIRN_SUPPRESSED", suppressed)),
                "peer transport: dropped input from member %016" PRIx64 " at %s: %s%s", from, addr, what,
                LOG_LIMIT_NOTE(suppressed));
}

/* Caller holds mu. */
static struct peer *find_peer(struct peer_transport *t, uint64_t id)
{
    for (size_t i = 0; i < t->n_peers; i++)
        if (t->peers[i]->id == id)
            return t->peers[i];
    return NULL;
}

/* ---------------------------------------------------------------- TLS */

static void tls_material_free(struct tls_material *m)
{
    free(m->cert);
    free(m->key);
    free(m->ca);
    memset(m, 0, sizeof(*m));
}

static int read_text_file(const char *path, char **out, char *err, size_t errlen)
{
    int rc = 0;
    char *buf = NULL;
    FILE *f = fopen(path, "re");
    if (!f) {
        rc = -errno;
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(-rc));
        return -CAIRN_E_CONFIG;
    }
    buf = malloc(TLS_FILE_MAX + 1);
    if (!buf) {
        fclose(f);
        return -ENOMEM;
    }
    size_t n = fread(buf, 1, TLS_FILE_MAX + 1, f);
    if (ferror(f) || n > TLS_FILE_MAX || n == 0) {
        snprintf(err, errlen, "cannot read %s: %s", path,
                 ferror(f) ? "read error" : n ? "larger than 1 MiB" : "empty file");
        rc = -CAIRN_E_CONFIG;
        free(buf);
        buf = NULL;
    } else {
        buf[n] = '\0';
    }
    fclose(f);
    *out = buf;
    return rc;
}

/* An nng TLS config from m; server_name for dialers (NULL for listeners). */
static int tls_config_make(const struct tls_material *m, nng_tls_mode mode, const char *server_name,
                           nng_tls_config **out, char *err, size_t errlen)
{
    nng_tls_config *cfg = NULL;
    const char *step = "allocate";
    int rv = nng_tls_config_alloc(&cfg, mode);
    if (rv == 0 && (step = "load the certificate and key", 1))
        rv = nng_tls_config_own_cert(cfg, m->cert, m->key, NULL);
    if (rv == 0 && (step = "load the CA", 1))
        rv = nng_tls_config_ca_chain(cfg, m->ca, NULL);
    if (rv == 0 && (step = "require peer certificates", 1))
        rv = nng_tls_config_auth_mode(cfg, NNG_TLS_AUTH_MODE_REQUIRED);
    if (rv == 0 && server_name && (step = "set the server name", 1))
        rv = nng_tls_config_server_name(cfg, server_name);
    if (rv != 0) {
        if (cfg)
            nng_tls_config_free(cfg);
        snprintf(err, errlen, "peer TLS: cannot %s: %s", step, nng_strerror(rv));
        return rv == NNG_ENOMEM ? -ENOMEM : -CAIRN_E_CONFIG;
    }
    *out = cfg;
    return 0;
}

static bool str_set(const char *s)
{
    return s && s[0];
}

static bool str_same(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

static bool tls_same(const struct tls_material *a, const struct tls_material *b)
{
    return str_same(a->cert, b->cert) && str_same(a->key, b->key) && str_same(a->ca, b->ca);
}

/* Read and check the TLS files of tls into *m (left empty without TLS). */
static int tls_load(const struct peer_tls *tls, struct tls_material *m, char *err, size_t errlen)
{
    memset(m, 0, sizeof(*m));
    bool any = tls && (str_set(tls->cert_file) || str_set(tls->key_file) || str_set(tls->ca_file));
    if (!any)
        return 0;
    if (!str_set(tls->cert_file) || !str_set(tls->key_file) || !str_set(tls->ca_file)) {
        snprintf(err, errlen, "peer TLS needs a certificate, a key and a CA file; %s is missing",
                 !str_set(tls->cert_file) ? "the certificate" : !str_set(tls->key_file) ? "the key" : "the CA");
        return -CAIRN_E_CONFIG;
    }
    int rc;
    if ((rc = read_text_file(tls->cert_file, &m->cert, err, errlen)) < 0 ||
        (rc = read_text_file(tls->key_file, &m->key, err, errlen)) < 0 ||
        (rc = read_text_file(tls->ca_file, &m->ca, err, errlen)) < 0) {
        tls_material_free(m);
        return rc;
    }
    /* Parse everything now, so a bad file fails here and not on each dial. */
    nng_tls_config *cfg;
    if ((rc = tls_config_make(m, NNG_TLS_MODE_SERVER, NULL, &cfg, err, errlen)) < 0) {
        tls_material_free(m);
        return rc;
    }
    nng_tls_config_free(cfg);
    if ((rc = tls_config_make(m, NNG_TLS_MODE_CLIENT, "localhost", &cfg, err, errlen)) < 0) {
        tls_material_free(m);
        return rc;
    }
    nng_tls_config_free(cfg);
    return 0;
}

/* ---------------------------------------------------------------- send queues */

static void sendq_cb(void *arg);

/* Take q's dialer, to close once mu is let go; mu held.  False if it has none. */
static bool sendq_take_dialer(struct sendq *q, nng_dialer *d)
{
    bool had = q->dialed;
    *d = q->dialer;
    q->dialed = false;
    return had;
}

/* Stop sending on q's socket and have the stream thread give q a fresh one (see struct sendq); mu held. */
static void sendq_mark_stale(struct sendq *q)
{
    q->stale = true;
    q->t->renew = true;
    pthread_cond_signal(&q->t->jcv);
}

/* sendq_mark_stale, taking the dialer too so it cannot reconnect; mu held.  Returns the dialer to close, once mu is let go. */
static bool sendq_go_stale(struct sendq *q, nng_dialer *d)
{
    bool had = sendq_take_dialer(q, d);
    sendq_mark_stale(q);
    return had;
}

static void pipe_cb(nng_pipe p, nng_pipe_ev ev, void *arg)
{
    struct sendq *q = arg;
    /* ADD_PRE and REM_POST come in pairs for every pipe nng reports at all. */
    if (ev == NNG_PIPE_EV_ADD_PRE) {
        atomic_fetch_add(&q->pipes, 1);
        return;
    }
    if (ev != NNG_PIPE_EV_REM_POST)
        return;
    atomic_fetch_sub(&q->pipes, 1);
    /* The pipe is not freed before this returns, nor can the dialer connect again. */
    nng_dialer d;
    bool close_it = false;
    pthread_mutex_lock(&q->t->mu);
    if (!q->closing && !q->stale && nng_socket_id(nng_pipe_socket(p)) == nng_socket_id(q->sock))
        close_it = sendq_go_stale(q, &d);
    pthread_mutex_unlock(&q->t->mu);
    if (close_it)
        nng_dialer_close(d);
}

/* A push0 socket for q, its pipe events reported to q. */
static int sendq_socket(struct sendq *q, nng_socket *out)
{
    nng_socket s;
    int rv = nng_push0_open(&s);
    if (rv != 0)
        return nng_to_errno(rv);
    nng_socket_set_ms(s, NNG_OPT_RECONNMINT, RECONNECT_MIN_MS);
    nng_socket_set_ms(s, NNG_OPT_RECONNMAXT, RECONNECT_MAX_MS);
    nng_socket_set_bool(s, NNG_OPT_TCP_KEEPALIVE, true); /* not every transport has it */
    if ((rv = nng_pipe_notify(s, NNG_PIPE_EV_ADD_PRE, pipe_cb, q)) != 0 ||
        (rv = nng_pipe_notify(s, NNG_PIPE_EV_REM_POST, pipe_cb, q)) != 0) {
        nng_close(s);
        return nng_to_errno(rv);
    }
    *out = s;
    return 0;
}

static int sendq_init(struct peer_transport *t, struct peer *p, struct sendq *q, size_t cap, bool stream)
{
    int rv;
    q->t = t;
    q->p = p;
    q->cap = cap;
    q->stream = stream;
    q->flush_on_stall = !stream;
    atomic_init(&q->pipes, 0);
    if (!(q->ring = calloc(cap, sizeof(*q->ring))))
        return -ENOMEM;
    if ((rv = nng_aio_alloc(&q->aio, sendq_cb, q)) != 0 || (rv = nng_aio_alloc(&q->now_aio, NULL, NULL)) != 0)
        return nng_to_errno(rv);
    nng_aio_set_timeout(q->aio, q->flush_on_stall ? STALL_MS : NNG_DURATION_INFINITE);
    nng_aio_set_timeout(q->now_aio, NNG_DURATION_ZERO);
    return sendq_socket(q, &q->sock);
}

static void sendq_close_dialer(struct sendq *q)
{
    nng_dialer d;
    pthread_mutex_lock(&q->t->mu);
    bool had = sendq_take_dialer(q, &d);
    pthread_mutex_unlock(&q->t->mu);
    if (had)
        nng_dialer_close(d);
}

/* Dial the peer's URL number q->url (replacing the dialer); cfg_mu held.  Errors name the URL in err. */
static int sendq_dial(struct peer_transport *t, struct sendq *q, char *err, size_t errlen)
{
    sendq_close_dialer(q);
    /* a stream keeps to the first URL: one connection, chunks in order */
    const char *url = q->p->urls[q->stream ? 0 : q->url % q->p->n_urls];
    nng_dialer d;
    int rv = nng_dialer_create(&d, q->sock, url);
    if (rv != 0) {
        snprintf(err, errlen, "peer URL %s: %s", url, nng_strerror(rv));
        return rv == NNG_ENOMEM ? -ENOMEM : -CAIRN_E_CONFIG;
    }
    if (url_is_tls(url)) {
        char host[256];
        nng_tls_config *cfg;
        if (url_host(url, host, sizeof host) < 0) {
            nng_dialer_close(d);
            snprintf(err, errlen, "peer URL %s: no host name", url);
            return -CAIRN_E_CONFIG;
        }
        int rc = tls_config_make(&t->tls, NNG_TLS_MODE_CLIENT, host, &cfg, err, errlen);
        if (rc < 0) {
            nng_dialer_close(d);
            return rc;
        }
        rv = nng_dialer_set_ptr(d, NNG_OPT_TLS_CONFIG, cfg);
        nng_tls_config_free(cfg); /* the dialer holds its own reference */
        if (rv != 0) {
            nng_dialer_close(d);
            snprintf(err, errlen, "peer URL %s: %s", url, nng_strerror(rv));
            return -CAIRN_E_CONFIG;
        }
    }
    /* Known to the pipe callback before it can connect, so a lost pipe closes it. */
    pthread_mutex_lock(&t->mu);
    if (q->stale) { /* the socket lost its connection meanwhile: the renewal dials its successor */
        pthread_mutex_unlock(&t->mu);
        nng_dialer_close(d);
        return 0;
    }
    q->dialer = d;
    q->dialed = true;
    q->dialed_ms = now_ms();
    pthread_mutex_unlock(&t->mu);
    /* Non-blocking: a peer that is down now is retried with backoff. */
    if ((rv = nng_dialer_start(d, NNG_FLAG_NONBLOCK)) != 0 && rv != NNG_ECLOSED) {
        sendq_close_dialer(q);
        snprintf(err, errlen, "peer URL %s: %s", url, nng_strerror(rv));
        return nng_to_errno(rv);
    }
    return 0;
}

/* Start sending the head of the queue; mu held. */
static void sendq_kick(struct sendq *q)
{
    nng_msg *m = q->ring[q->head];
    q->head = (q->head + 1) % q->cap;
    q->len--;
    q->busy = true;
    q->busy_bytes = nng_msg_len(m);
    nng_aio_set_msg(q->aio, m);
    nng_send_aio(q->sock, q->aio);
}

/*
 * Send m at once if the connection can take it now; mu held, the queue idle.
 * The aio has no callback and a zero timeout, so push0 completes it before
 * nng_send_aio returns: sent, or refused with m handed back when no
 * connection is free.  An async send's completion costs a task thread's
 * wake-up for the callback (sendq_cb), which on a small VM costs more than
 * the send; with one message at a time, the usual case at low load, this
 * way has none.  Returns false if m is still the caller's.
 */
static bool sendq_send_now(struct sendq *q, nng_msg *m)
{
    size_t len = nng_msg_len(m);
    nng_aio_set_msg(q->now_aio, m);
    nng_send_aio(q->sock, q->now_aio);
    nng_aio_cancel(q->now_aio); /* a no-op once done; were it not done, never wait for the network here */
    nng_aio_wait(q->now_aio);
    if (nng_aio_result(q->now_aio) != 0) {
        nng_aio_set_msg(q->now_aio, NULL);
        return false;
    }
    q->p->sent++;
    q->p->bytes_sent += len;
    return true;
}

/* Queue m; mu held.  On success m belongs to the queue (or is sent). */
static int sendq_push(struct sendq *q, nng_msg *m)
{
    if (q->closing)
        return -ENOENT;
    if (q->len == q->cap)
        return -EAGAIN;
    if (!q->busy && !q->stale && !q->len && sendq_send_now(q, m))
        return 0;
    q->ring[(q->head + q->len) % q->cap] = m;
    q->len++;
    if (!q->busy && !q->stale)
        sendq_kick(q);
    return 0;
}

/* Drop every queued message; mu held.  Returns how many. */
static size_t sendq_flush(struct sendq *q)
{
    size_t n = q->len;
    while (q->len) {
        nng_msg_free(q->ring[q->head]);
        q->head = (q->head + 1) % q->cap;
        q->len--;
    }
    return n;
}

static void sendq_cb(void *arg)
{
    struct sendq *q = arg;
    struct peer_transport *t = q->t;
    size_t flushed = 0;
    const char *state = "";
    int rv = nng_aio_result(q->aio);
    pthread_mutex_lock(&t->mu);
    if (rv != 0) {
        nng_msg_free(nng_aio_get_msg(q->aio));
        nng_aio_set_msg(q->aio, NULL);
        q->p->dropped++;
        if (rv == NNG_ETIMEDOUT && q->flush_on_stall) {
            flushed = sendq_flush(q);
            q->p->dropped += flushed;
            /* Connected, yet nothing left in STALL_MS: the connection is
             * not being read (a peer's end wedged, or a half-open
             * connection) and would hold the queue for good, since it
             * never closes.  A peer that is merely busy still reads: its
             * receive thread does not wait for its node loop.  The stream
             * thread gives the queue a fresh socket and closes this one
             * (not here: closing a dialer may wait for nng's callbacks). */
            if (!q->stale && !q->closing && atomic_load(&q->pipes) > 0) {
                sendq_mark_stale(q);
                state = " (connected, but it took nothing: reconnecting)";
            } else if (atomic_load(&q->pipes) == 0) {
                state = " (not connected)";
            }
        }
    } else {
        q->p->sent++;
        q->p->bytes_sent += q->busy_bytes;
    }
    q->busy = false;
    if (!q->closing && !q->stale && q->len)
        sendq_kick(q);
    uint64_t id = q->p->id;
    pthread_mutex_unlock(&t->mu);
    if (rv == NNG_ETIMEDOUT && q->flush_on_stall) {
        uint64_t suppressed;
        if (log_limit_pass(&t->log_limit, &suppressed))
            log_warning(LOG_FIELDS(LOG_HEX("CAIRN_MEMBER", t->self_id), LOG_HEX("CAIRN_PEER", id),
                                   LOG_U64("CAIRN_SUPPRESSED", suppressed)),
                        "peer transport: member %016" PRIx64 " unreachable for %d ms, dropped %zu queued messages%s%s",
                        id, STALL_MS, flushed + 1, state, LOG_LIMIT_NOTE(suppressed));
    }
}

/* Close s; if the close is abandoned, remember that t must leak what s's callbacks use. */
static void close_socket(struct peer_transport *t, nng_socket s, const char *what)
{
    if (!sock_close(s, what))
        atomic_store(&t->close_abandoned, true);
}

/* Stop and free q's nng objects and queue; q must be unreachable by others. */
static void sendq_fini(struct sendq *q)
{
    if (!q->t)
        return; /* never initialised */
    pthread_mutex_lock(&q->t->mu);
    q->closing = true;
    pthread_mutex_unlock(&q->t->mu);
    if (q->aio)
        nng_aio_stop(q->aio); /* the callback sees closing and does not resubmit */
    close_socket(q->t, q->sock, "peer send");
    if (q->aio) {
        nng_msg *m = nng_aio_get_msg(q->aio);
        if (m && q->busy)
            nng_msg_free(m);
        nng_aio_free(q->aio);
    }
    if (q->now_aio)
        nng_aio_free(q->now_aio); /* idle: used only under mu, and never left pending */
    if (q->ring) {
        while (q->len) {
            nng_msg_free(q->ring[q->head]);
            q->head = (q->head + 1) % q->cap;
            q->len--;
        }
        free(q->ring);
    }
}

static void peer_free(struct peer *p)
{
    if (!p)
        return;
    sendq_fini(&p->q);
    sendq_fini(&p->sq);
    for (size_t i = 0; i < p->n_urls; i++)
        free(p->urls[i]);
    if (!p->q.t || !atomic_load(&p->q.t->close_abandoned))
        free(p); /* else its queues' pipe callbacks may still come */
}

/* ---------------------------------------------------------------- envelopes */

/* Pack an envelope to `to` with the given body into *out. */
static int envelope_pack(struct peer_transport *t, uint64_t to, Cairnpeer__PeerEnvelope *env, nng_msg **out)
{
    env->cluster_id = t->cluster_id;
    env->from = t->self_id;
    env->to = to;
    size_t n = cairnpeer__peer_envelope__get_packed_size(env);
    if (n > t->max_recv)
        return -EMSGSIZE;
    nng_msg *m;
    if (nng_msg_alloc(&m, n) != 0)
        return -ENOMEM;
    cairnpeer__peer_envelope__pack(env, nng_msg_body(m));
    *out = m;
    return 0;
}

/* Queue m on peer `to`'s Raft queue (or its stream queue); takes m either way. */
static int queue_to(struct peer_transport *t, uint64_t to, nng_msg *m, bool stream)
{
    pthread_mutex_lock(&t->mu);
    struct peer *p = find_peer(t, to);
    int rc = p ? sendq_push(stream ? &p->sq : &p->q, m) : -ENOENT;
    if (rc == -EAGAIN)
        p->dropped++;
    pthread_mutex_unlock(&t->mu);
    if (rc < 0)
        nng_msg_free(m);
    return rc;
}

int peer_send(struct peer_transport *t, uint64_t to, const Cairnpeer__MessageBatch *batch)
{
    Cairnpeer__PeerEnvelope env = CAIRNPEER__PEER_ENVELOPE__INIT;
    env.body_case = CAIRNPEER__PEER_ENVELOPE__BODY_MESSAGES;
    env.messages = (Cairnpeer__MessageBatch *)batch;
    nng_msg *m;
    int rc = envelope_pack(t, to, &env, &m);
    if (rc < 0) {
        pthread_mutex_lock(&t->mu);
        struct peer *p = find_peer(t, to);
        if (p)
            p->dropped++;
        pthread_mutex_unlock(&t->mu);
        return p ? rc : -ENOENT;
    }
    /* Round trip: the first heartbeat out starts the clock, the next response from the peer stops it;
     * one lost is forgotten after STALL_MS so a dead peer does not leave the clock running. */
    if (batch_has(batch, CAIRNPEER__MESSAGE_TYPE__MSG_HEARTBEAT)) {
        uint64_t now = now_ns();
        pthread_mutex_lock(&t->mu);
        struct peer *p = find_peer(t, to);
        if (p && (!p->hb_sent_ns || now - p->hb_sent_ns > (uint64_t)STALL_MS * 1000000))
            p->hb_sent_ns = now;
        pthread_mutex_unlock(&t->mu);
    }
    return queue_to(t, to, m, false);
}

/* ---------------------------------------------------------------- stream jobs */

/* Hand a job to the stream thread; mu held.  bounded: input from the network. */
static int job_push_locked(struct peer_transport *t, enum job_kind kind, uint64_t peer, void *ptr, size_t bytes,
                           bool bounded)
{
    if (t->jstop)
        return -CAIRN_E_STOPPED;
    if (bounded && (t->jn >= JOBS_MAX || t->jbytes + bytes > JOBS_MAX_BYTES))
        return -EAGAIN;
    struct job *j = calloc(1, sizeof(*j));
    if (!j)
        return -ENOMEM;
    j->kind = kind;
    j->peer = peer;
    j->ptr = ptr;
    j->bytes = bytes;
    if (t->jtail)
        t->jtail->next = j;
    else
        t->jhead = j;
    t->jtail = j;
    t->jn++;
    t->jbytes += bytes;
    pthread_cond_signal(&t->jcv);
    return 0;
}

static int job_push(struct peer_transport *t, enum job_kind kind, uint64_t peer, void *ptr, size_t bytes,
                    bool bounded)
{
    pthread_mutex_lock(&t->mu);
    int rc = job_push_locked(t, kind, peer, ptr, bytes, bounded);
    pthread_mutex_unlock(&t->mu);
    return rc;
}

/* ---------------------------------------------------------------- receiving */

static void count_recv_error(struct peer_transport *t, uint64_t from)
{
    pthread_mutex_lock(&t->mu);
    struct peer *p = find_peer(t, from);
    if (p)
        p->recv_errors++;
    pthread_mutex_unlock(&t->mu);
}

/*
 * protobuf-c allocates a struct for every element of a repeated field, so
 * a few bytes on the wire (an empty Message or Entry is two) can cost a
 * hundred in memory.  Decoding gets a budget in proportion to the bytes
 * received; what needs more is refused rather than allowed to take
 * gigabytes.  The memory is plain malloc, so the usual free_unpacked(.., NULL)
 * frees it.
 */
struct decode_budget {
    size_t left;
    bool exceeded;
};

static void *budget_alloc(void *data, size_t size)
{
    struct decode_budget *b = data;
    if (size > b->left) {
        b->exceeded = true;
        return NULL;
    }
    b->left -= size;
    return malloc(size);
}

static void budget_free(void *data, void *ptr)
{
    (void)data;
    free(ptr);
}

/* One received envelope: check it, then hand its body on.  msg stays ours. */
static void handle_envelope(struct peer_transport *t, nng_msg *msg)
{
    size_t len = nng_msg_len(msg);
    struct decode_budget budget = {.left = DECODE_FACTOR * len + DECODE_SLACK};
    ProtobufCAllocator alloc = {.alloc = budget_alloc, .free = budget_free, .allocator_data = &budget};
    Cairnpeer__PeerEnvelope *env = cairnpeer__peer_envelope__unpack(&alloc, len, nng_msg_body(msg));
    if (!env) {
        log_refused(t, msg, 0,
                    budget.exceeded ? "envelope needs too much memory to decode (too many elements)"
                                    : "undecodable envelope");
        return;
    }
    uint64_t from = env->from;
    char why[160];
    if (env->cluster_id != t->cluster_id) {
        snprintf(why, sizeof why, "cluster %016" PRIx64 " is not ours (%016" PRIx64 ")", env->cluster_id,
                 t->cluster_id);
        log_refused(t, msg, from, why);
        goto out;
    }
    if (env->to != 0 && env->to != t->self_id) {
        snprintf(why, sizeof why, "addressed to member %016" PRIx64 ", not us", env->to);
        log_refused(t, msg, from, why);
        count_recv_error(t, from);
        goto out;
    }
    bool hb_resp = env->body_case == CAIRNPEER__PEER_ENVELOPE__BODY_MESSAGES &&
                   batch_has(env->messages, CAIRNPEER__MESSAGE_TYPE__MSG_HEARTBEAT_RESP);
    pthread_mutex_lock(&t->mu);
    struct peer *sender = from != t->self_id ? find_peer(t, from) : NULL;
    bool known = sender != NULL;
    if (sender) {
        sender->bytes_recv += len;
        if (hb_resp && sender->hb_sent_ns) {
            histogram_observe_ns(&sender->rtt, now_ns() - sender->hb_sent_ns);
            sender->hb_sent_ns = 0;
        }
    }
    pthread_mutex_unlock(&t->mu);
    if (!known) {
        log_refused(t, msg, from, "unknown sender");
        goto out;
    }
    switch (env->body_case) {
    case CAIRNPEER__PEER_ENVELOPE__BODY_MESSAGES: {
        Cairnpeer__MessageBatch *batch = env->messages;
        env->messages = NULL;
        env->body_case = CAIRNPEER__PEER_ENVELOPE__BODY__NOT_SET;
        if (t->cb.on_messages)
            t->cb.on_messages(t->cb.arg, from, batch);
        else
            cairnpeer__message_batch__free_unpacked(batch, NULL);
        break;
    }
    case CAIRNPEER__PEER_ENVELOPE__BODY_SNAPSHOT_CHUNK: {
        Cairnpeer__SnapshotChunk *c = env->snapshot_chunk;
        env->snapshot_chunk = NULL;
        env->body_case = CAIRNPEER__PEER_ENVELOPE__BODY__NOT_SET;
        if (job_push(t, JOB_ICHUNK, from, c, c->data.len, true) < 0) {
            cairnpeer__snapshot_chunk__free_unpacked(c, NULL);
            log_refused(t, msg, from, "snapshot chunk: too many chunks waiting to be written");
            count_recv_error(t, from);
        }
        break;
    }
    case CAIRNPEER__PEER_ENVELOPE__BODY_SNAPSHOT_ACK: {
        Cairnpeer__SnapshotAck *a = env->snapshot_ack;
        env->snapshot_ack = NULL;
        env->body_case = CAIRNPEER__PEER_ENVELOPE__BODY__NOT_SET;
        if (job_push(t, JOB_OACK, from, a, 0, true) < 0) {
            cairnpeer__snapshot_ack__free_unpacked(a, NULL);
            count_recv_error(t, from);
        }
        break;
    }
    default:
        log_refused(t, msg, from, "envelope without a body");
        count_recv_error(t, from);
        break;
    }
out:
    cairnpeer__peer_envelope__free_unpacked(env, NULL);
}

static void recv_cb(void *arg)
{
    struct peer_transport *t = arg;
    int rv = nng_aio_result(t->rx_aio);
    if (rv == NNG_ECLOSED || rv == NNG_ECANCELED)
        return;
    if (rv == 0) {
        nng_msg *msg = nng_aio_get_msg(t->rx_aio);
        nng_aio_set_msg(t->rx_aio, NULL);
        handle_envelope(t, msg);
        nng_msg_free(msg);
    }
    pthread_mutex_lock(&t->mu);
    bool stopping = t->stopping;
    pthread_mutex_unlock(&t->mu);
    if (!stopping)
        nng_recv_aio(t->rx, t->rx_aio);
}

/* ---------------------------------------------------------------- outgoing streams (stream thread) */

static void send_ack(struct peer_transport *t, uint64_t to, uint64_t index, uint64_t next, bool ok, const char *error)
{
    Cairnpeer__SnapshotAck a = CAIRNPEER__SNAPSHOT_ACK__INIT;
    a.snapshot_index = index;
    a.next_offset = next;
    a.ok = ok;
    if (error)
        a.error = (char *)error;
    Cairnpeer__PeerEnvelope env = CAIRNPEER__PEER_ENVELOPE__INIT;
    env.body_case = CAIRNPEER__PEER_ENVELOPE__BODY_SNAPSHOT_ACK;
    env.snapshot_ack = &a;
    nng_msg *m;
    if (envelope_pack(t, to, &env, &m) == 0)
        queue_to(t, to, m, false);
}

static void ostream_free(struct ostream *os)
{
    if (os->fd >= 0)
        close(os->fd);
    if (os->msg)
        cairnpeer__message__free_unpacked(os->msg, NULL);
    EVP_MD_CTX_free(os->sha);
    free(os);
}

/* End os (unlinked from t->outs by the caller): report once, free. */
static void ostream_end(struct peer_transport *t, struct ostream *os, bool ok, const char *why)
{
    pthread_mutex_lock(&t->mu);
    struct peer *p = find_peer(t, os->peer);
    if (p && p->stream_seq == os->seq) {
        p->stream_seq = 0;
        if (!ok) {
            /* Chunks still queued belong to a dead stream: drop them, so a
             * later stream to this peer starts clean. */
            p->dropped += sendq_flush(&p->sq);
            if (p->sq.busy)
                nng_aio_cancel(p->sq.aio);
        }
    }
    pthread_mutex_unlock(&t->mu);
    if (ok)
        log_info(LOG_FIELDS(LOG_HEX("CAIRN_PEER", os->peer), LOG_U64("CAIRN_INDEX", os->index),
                            LOG_U64("CAIRN_BYTES", os->size)),
                 "peer transport: snapshot at %" PRIu64 " (%" PRIu64 " bytes) delivered to %016" PRIx64, os->index,
                 os->size, os->peer);
    else
        log_warning(LOG_FIELDS(LOG_HEX("CAIRN_PEER", os->peer), LOG_U64("CAIRN_INDEX", os->index),
                               LOG_U64("CAIRN_OFFSET", os->acked)),
                    "peer transport: snapshot at %" PRIu64 " to %016" PRIx64 " failed at byte %" PRIu64 ": %s",
                    os->index, os->peer, os->acked, why);
    if (t->cb.on_snapshot_done)
        t->cb.on_snapshot_done(t->cb.arg, os->peer, ok ? 1 : 0);
    ostream_free(os);
}

static void ostream_unlink(struct peer_transport *t, struct ostream *os)
{
    for (struct ostream **pp = &t->outs; *pp; pp = &(*pp)->next)
        if (*pp == os) {
            *pp = os->next;
            return;
        }
}

static struct ostream *ostream_find(struct peer_transport *t, uint64_t peer)
{
    for (struct ostream *os = t->outs; os; os = os->next)
        if (os->peer == peer)
            return os;
    return NULL;
}

/* Read and queue chunks until the window is full.  0, or -1 with why set. */
static int ostream_fill(struct peer_transport *t, struct ostream *os, const char **why)
{
    while (!os->all_read && os->read_off - os->acked < (uint64_t)STREAM_WINDOW * t->chunk) {
        uint64_t left = os->size - os->read_off;
        size_t n = left < t->chunk ? (size_t)left : t->chunk;
        size_t got = 0;
        while (got < n) {
            ssize_t r = pread(os->fd, t->rbuf + got, n - got, (off_t)(os->read_off + got));
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0) {
                *why = r < 0 ? "cannot read the snapshot file" : "the snapshot file shrank while it was sent";
                return -1;
            }
            got += (size_t)r;
        }
        Cairnpeer__SnapshotChunk c = CAIRNPEER__SNAPSHOT_CHUNK__INIT;
        uint8_t digest[SHA256_LEN];
        c.snapshot_term = os->term;
        c.snapshot_index = os->index;
        c.offset = os->read_off;
        c.total_size = os->size;
        c.data.data = t->rbuf;
        c.data.len = n;
        c.crc32c = crc32c_extend(0, t->rbuf, n);
        if (os->read_off == 0)
            c.message = os->msg;
        EVP_DigestUpdate(os->sha, t->rbuf, n);
        if (os->read_off + n == os->size) {
            unsigned dlen = 0;
            EVP_DigestFinal_ex(os->sha, digest, &dlen);
            c.last = 1;
            c.sha256.data = digest;
            c.sha256.len = SHA256_LEN;
        }
        Cairnpeer__PeerEnvelope env = CAIRNPEER__PEER_ENVELOPE__INIT;
        env.body_case = CAIRNPEER__PEER_ENVELOPE__BODY_SNAPSHOT_CHUNK;
        env.snapshot_chunk = &c;
        nng_msg *m;
        int rc = envelope_pack(t, os->peer, &env, &m);
        if (rc == 0)
            rc = queue_to(t, os->peer, m, true);
        if (rc < 0) {
            *why = rc == -ENOENT ? "the peer was removed" : rc == -EMSGSIZE ? "chunk larger than max_recv_bytes"
                                                                            : "cannot queue a chunk";
            return -1;
        }
        os->read_off += n;
        os->all_read = c.last;
    }
    return 0;
}

static void ostream_start(struct peer_transport *t, struct ostream *os)
{
    const char *why = NULL;
    os->progress_ms = now_ms();
    os->next = t->outs;
    t->outs = os;
    if (ostream_fill(t, os, &why) < 0) {
        ostream_unlink(t, os);
        ostream_end(t, os, false, why);
    }
}

static void ostream_on_ack(struct peer_transport *t, uint64_t from, Cairnpeer__SnapshotAck *a)
{
    struct ostream *os = ostream_find(t, from);
    if (!os || a->snapshot_index != os->index)
        return; /* an ack of a stream that already ended */
    const char *why = NULL;
    char buf[300];
    if (!a->ok) {
        snprintf(buf, sizeof buf, "the receiver refused it: %.200s", a->error ? a->error : "");
        why = buf;
    } else if (a->next_offset == os->size && os->all_read) {
        os->acked = os->size;
        ostream_unlink(t, os);
        ostream_end(t, os, true, NULL);
        return;
    } else if (a->next_offset > os->acked && a->next_offset <= os->read_off) {
        os->acked = a->next_offset;
        os->progress_ms = now_ms();
        if (ostream_fill(t, os, &why) == 0)
            return;
    } else {
        return; /* a duplicate or stale ack */
    }
    ostream_unlink(t, os);
    ostream_end(t, os, false, why);
}

/* ---------------------------------------------------------------- incoming streams (stream thread) */

static struct istream *istream_find(struct peer_transport *t, uint64_t peer)
{
    for (struct istream *is = t->ins; is; is = is->next)
        if (is->peer == peer)
            return is;
    return NULL;
}

/* Unlink is from t->ins, remove its partial file, free it. */
static void istream_drop(struct peer_transport *t, struct istream *is)
{
    for (struct istream **pp = &t->ins; *pp; pp = &(*pp)->next)
        if (*pp == is) {
            *pp = is->next;
            break;
        }
    if (is->fd >= 0) {
        close(is->fd);
        unlink(is->path);
    }
    if (is->msg)
        cairnpeer__message__free_unpacked(is->msg, NULL);
    EVP_MD_CTX_free(is->sha);
    free(is);
}

/* Refuse a chunk from `from`: log it, drop its stream (if any), NACK. */
static void istream_refuse(struct peer_transport *t, uint64_t from, struct istream *is, uint64_t index,
                           const char *why)
{
    uint64_t at = is ? is->received : 0;
    uint64_t suppressed;
    if (log_limit_pass(&t->log_limit, &suppressed))
        log_warning(LOG_FIELDS(LOG_HEX("CAIRN_PEER", from), LOG_U64("CAIRN_INDEX", index),
                               LOG_U64("CAIRN_OFFSET", at), LOG_U64("CAIRN_SUPPRESSED", suppressed)),
                    "peer transport: snapshot at %" PRIu64 " from %016" PRIx64 " refused at byte %" PRIu64 ": %s%s",
                    index, from, at, why, LOG_LIMIT_NOTE(suppressed));
    if (is)
        istream_drop(t, is);
    count_recv_error(t, from);
    send_ack(t, from, index, at, false, why);
}

/* A first chunk: the MsgSnap must describe this stream's snapshot. */
static struct istream *istream_open(struct peer_transport *t, uint64_t from, Cairnpeer__SnapshotChunk *c,
                                    char *why, size_t whylen)
{
    const Cairnpeer__Message *msg = c->message;
    if (!msg || msg->type != CAIRNPEER__MESSAGE_TYPE__MSG_SNAP || !msg->snapshot ||
        msg->snapshot->index != c->snapshot_index || msg->snapshot->term != c->snapshot_term) {
        snprintf(why, whylen, "the first chunk does not carry the MsgSnap of snapshot %" PRIu64, c->snapshot_index);
        return NULL;
    }
    struct statvfs vfs;
    if (statvfs(t->incoming_dir, &vfs) == 0 && (uint64_t)vfs.f_bavail * vfs.f_frsize < c->total_size) {
        snprintf(why, whylen, "%" PRIu64 " bytes do not fit in %s", c->total_size, t->incoming_dir);
        return NULL;
    }
    struct istream *is = calloc(1, sizeof(*is));
    if (!is || !(is->sha = EVP_MD_CTX_new()) || EVP_DigestInit_ex(is->sha, EVP_sha256(), NULL) != 1) {
        if (is)
            EVP_MD_CTX_free(is->sha);
        free(is);
        snprintf(why, whylen, "out of memory");
        return NULL;
    }
    is->peer = from;
    is->index = c->snapshot_index;
    is->term = c->snapshot_term;
    is->total = c->total_size;
    snprintf(is->path, sizeof is->path, "%s/recv-%016" PRIx64 "-%016" PRIx64 "-%016" PRIx64 ".part",
             t->incoming_dir, from, is->term, is->index);
    unlink(is->path);
    is->fd = open(is->path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (is->fd < 0) {
        snprintf(why, whylen, "cannot create %s: %s", is->path, strerror(errno));
        EVP_MD_CTX_free(is->sha);
        free(is);
        return NULL;
    }
    is->msg = c->message;
    c->message = NULL;
    is->progress_ms = now_ms();
    is->next = t->ins;
    t->ins = is;
    return is;
}

static int write_all(int fd, const uint8_t *p, size_t n, uint64_t off)
{
    while (n) {
        ssize_t w = pwrite(fd, p, n, (off_t)off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return w < 0 ? -errno : -EIO;
        p += w;
        n -= (size_t)w;
        off += (uint64_t)w;
    }
    return 0;
}

/* The whole file is here and its sha256 matched: make it durable, hand it over. */
static void istream_complete(struct peer_transport *t, struct istream *is)
{
    char why[PATH_MAX + 64];
    char final[PATH_MAX];
    int rc = fdatasync(is->fd) < 0 ? -errno : 0;
    size_t plen = strlen(is->path);
    snprintf(final, sizeof final, "%.*s.snap", (int)(plen - strlen(".part")), is->path);
    if (rc == 0 && rename(is->path, final) < 0)
        rc = -errno;
    if (rc < 0) {
        snprintf(why, sizeof why, "cannot keep %s: %s", is->path, strerror(-rc));
        istream_refuse(t, is->peer, is, is->index, why);
        return;
    }
    close(is->fd);
    is->fd = -1; /* nothing to unlink any more: the file is the callee's */
    uint64_t from = is->peer, index = is->index, total = is->total;
    Cairnpeer__Message *msg = is->msg;
    is->msg = NULL;
    istream_drop(t, is);
    log_info(LOG_FIELDS(LOG_HEX("CAIRN_PEER", from), LOG_U64("CAIRN_INDEX", index), LOG_U64("CAIRN_BYTES", total),
                        LOG_STR("CAIRN_FILE", final)),
             "peer transport: snapshot at %" PRIu64 " (%" PRIu64 " bytes) received from %016" PRIx64, index, total,
             from);
    if (t->cb.on_snapshot) {
        t->cb.on_snapshot(t->cb.arg, from, msg, final);
    } else {
        unlink(final);
        cairnpeer__message__free_unpacked(msg, NULL);
    }
    send_ack(t, from, index, total, true, NULL);
}

static void istream_on_chunk(struct peer_transport *t, uint64_t from, Cairnpeer__SnapshotChunk *c)
{
    char why[PATH_MAX + 128];
    struct istream *is = istream_find(t, from);
    if (c->offset == 0) {
        if (is)
            istream_drop(t, is); /* the sender started over */
        if (!(is = istream_open(t, from, c, why, sizeof why))) {
            istream_refuse(t, from, NULL, c->snapshot_index, why);
            return;
        }
    } else if (!is || is->index != c->snapshot_index || is->term != c->snapshot_term) {
        snprintf(why, sizeof why, "chunk at byte %" PRIu64 " of no stream in progress", c->offset);
        istream_refuse(t, from, is, c->snapshot_index, why);
        return;
    }
    uint64_t len = c->data.len;
    why[0] = '\0';
    if (c->total_size != is->total)
        snprintf(why, sizeof why, "total size changed from %" PRIu64 " to %" PRIu64, is->total, c->total_size);
    else if (c->offset != is->received)
        snprintf(why, sizeof why, "chunk at byte %" PRIu64 " out of order (expected %" PRIu64 ")", c->offset,
                 is->received);
    else if (len > is->total - is->received)
        snprintf(why, sizeof why, "more data than the %" PRIu64 " bytes announced", is->total);
    else if (crc32c_extend(0, c->data.data, len) != c->crc32c)
        snprintf(why, sizeof why, "chunk at byte %" PRIu64 " fails its crc32c", c->offset);
    else if (!c->last && (len == 0 || is->received + len == is->total))
        snprintf(why, sizeof why, "chunk at byte %" PRIu64 " is %s without being the last", c->offset,
                 len ? "the end of the file" : "empty");
    else if (c->last && is->received + len != is->total)
        snprintf(why, sizeof why, "last chunk ends at byte %" PRIu64 " of %" PRIu64, is->received + len, is->total);
    if (why[0]) {
        istream_refuse(t, from, is, is->index, why);
        return;
    }
    int rc = write_all(is->fd, c->data.data, len, is->received);
    if (rc < 0) {
        snprintf(why, sizeof why, "cannot write %s: %s", is->path, strerror(-rc));
        istream_refuse(t, from, is, is->index, why);
        return;
    }
    EVP_DigestUpdate(is->sha, c->data.data, len);
    is->received += len;
    is->progress_ms = now_ms();
    if (!c->last) {
        send_ack(t, from, is->index, is->received, true, NULL);
        return;
    }
    uint8_t digest[SHA256_LEN];
    unsigned dlen = 0;
    EVP_DigestFinal_ex(is->sha, digest, &dlen);
    if (c->sha256.len != SHA256_LEN || memcmp(c->sha256.data, digest, SHA256_LEN) != 0) {
        istream_refuse(t, from, is, is->index, "sha256 of the whole file does not match");
        return;
    }
    istream_complete(t, is);
}

/* ---------------------------------------------------------------- the stream thread */

static void run_job(struct peer_transport *t, struct job *j, bool draining)
{
    switch (j->kind) {
    case JOB_OSTART:
        if (draining)
            ostream_end(t, j->ptr, false, "the transport is stopping");
        else
            ostream_start(t, j->ptr);
        break;
    case JOB_OACK:
        if (!draining)
            ostream_on_ack(t, j->peer, j->ptr);
        cairnpeer__snapshot_ack__free_unpacked(j->ptr, NULL);
        break;
    case JOB_ICHUNK:
        if (!draining)
            istream_on_chunk(t, j->peer, j->ptr);
        cairnpeer__snapshot_chunk__free_unpacked(j->ptr, NULL);
        break;
    case JOB_GONE: {
        struct ostream *os = ostream_find(t, j->peer);
        if (os) {
            ostream_unlink(t, os);
            ostream_end(t, os, false, "the peer was removed");
        }
        struct istream *is = istream_find(t, j->peer);
        if (is)
            istream_drop(t, is);
        break;
    }
    }
    free(j);
}

/* Streams without progress for snapshot_timeout_ms end. */
static void check_timeouts(struct peer_transport *t)
{
    uint64_t now = now_ms();
    for (struct ostream *os = t->outs, *next; os; os = next) {
        next = os->next;
        if (now - os->progress_ms > t->snap_timeout_ms) {
            ostream_unlink(t, os);
            ostream_end(t, os, false, "no acknowledgement within the snapshot timeout");
        }
    }
    for (struct istream *is = t->ins, *next; is; is = next) {
        next = is->next;
        if (now - is->progress_ms > t->snap_timeout_ms) {
            log_warning(LOG_FIELDS(LOG_HEX("CAIRN_PEER", is->peer), LOG_U64("CAIRN_INDEX", is->index),
                                   LOG_U64("CAIRN_OFFSET", is->received)),
                        "peer transport: snapshot at %" PRIu64 " from %016" PRIx64
                        " abandoned at byte %" PRIu64 ": no chunk within the snapshot timeout",
                        is->index, is->peer, is->received);
            istream_drop(t, is);
        }
    }
}

/* A fresh socket for stale q, dialled; cfg_mu held (p stays).  Returns the old socket to close. */
static nng_socket sendq_renew(struct peer_transport *t, struct peer *p, struct sendq *q)
{
    nng_socket ns, old = NNG_SOCKET_INITIALIZER;
    int rc = sendq_socket(q, &ns);
    if (rc < 0) {
        log_err(LOG_FIELDS(LOG_HEX("CAIRN_PEER", p->id)), "peer transport: no new socket for member %016" PRIx64
                ": %s; trying again", p->id, cairn_strerror(rc));
        return old;
    }
    pthread_mutex_lock(&t->mu);
    old = q->sock;
    q->sock = ns;
    q->stale = false;
    p->renewed++;
    pthread_mutex_unlock(&t->mu);
    char err[512] = "";
    if ((rc = sendq_dial(t, q, err, sizeof err)) < 0)
        log_err(LOG_FIELDS(LOG_HEX("CAIRN_PEER", p->id)), "peer transport: member %016" PRIx64 ": %s", p->id, err);
    pthread_mutex_lock(&t->mu);
    if (!q->closing && !q->stale && !q->busy && q->len)
        sendq_kick(q);
    pthread_mutex_unlock(&t->mu);
    return old;
}

/*
 * Renew every stale queue (see struct sendq), and move a member with several
 * peer URLs on to the next when the one dialled has not connected for
 * URL_TRY_MS.  The old sockets are closed last, with no lock held: closing
 * waits for their pipes, whose callbacks take mu.
 */
static void renew_queues(struct peer_transport *t, bool tick)
{
    nng_socket old[2 * MAX_PEERS];
    size_t n_old = 0;
    pthread_mutex_lock(&t->cfg_mu);
    pthread_mutex_lock(&t->mu);
    if (!t->renew && !tick) {
        pthread_mutex_unlock(&t->mu);
        pthread_mutex_unlock(&t->cfg_mu);
        return;
    }
    t->renew = false;
    uint64_t now = now_ms();
    struct sendq *todo[2 * MAX_PEERS];
    size_t n = 0;
    for (size_t i = 0; i < t->n_peers; i++) {
        struct peer *p = t->peers[i];
        struct sendq *qs[2] = {&p->q, &p->sq};
        for (int k = 0; k < 2; k++) {
            struct sendq *q = qs[k];
            if (q->closing)
                continue;
            if (!q->stale && !q->stream && p->n_urls > 1 && q->dialed && atomic_load(&q->pipes) == 0 &&
                now - q->dialed_ms >= URL_TRY_MS) {
                nng_dialer d;
                sendq_go_stale(q, &d);
                q->url++;
                pthread_mutex_unlock(&t->mu);
                nng_dialer_close(d);
                pthread_mutex_lock(&t->mu);
            }
            if (q->stale && now - q->dialed_ms >= RECONNECT_MIN_MS)
                todo[n++] = q; /* else at a later tick: a peer that hangs up at once is not redialled in a loop */
        }
    }
    pthread_mutex_unlock(&t->mu);
    for (size_t i = 0; i < n; i++) {
        nng_socket s = sendq_renew(t, todo[i]->p, todo[i]);
        if (nng_socket_id(s) > 0)
            old[n_old++] = s;
    }
    pthread_mutex_unlock(&t->cfg_mu);
    for (size_t i = 0; i < n_old; i++)
        close_socket(t, old[i], "peer send");
}

static void *stream_main(void *arg)
{
    pthread_setname_np(pthread_self(), "cairn-pstream"); /* top -H, perf and gdb show it */
    struct peer_transport *t = arg;
    uint64_t last_tick = now_ms();
    for (;;) {
        pthread_mutex_lock(&t->mu);
        if (!t->jhead && !t->jstop && !t->renew) {
            struct timespec ts;
            deadline_after_ns(&ts, (int64_t)TICK_MS * 1000000);
            pthread_cond_timedwait(&t->jcv, &t->mu, &ts);
        }
        struct job *j = t->jhead;
        if (j) {
            t->jhead = j->next;
            if (!t->jhead)
                t->jtail = NULL;
            t->jn--;
            t->jbytes -= j->bytes;
        }
        bool stop = t->jstop;
        pthread_mutex_unlock(&t->mu);
        if (j)
            run_job(t, j, stop);
        else if (stop)
            break;
        bool tick = now_ms() - last_tick >= TICK_MS;
        if (!stop)
            renew_queues(t, tick);
        if (tick) {
            check_timeouts(t);
            last_tick = now_ms();
        }
    }
    while (t->outs) {
        struct ostream *os = t->outs;
        t->outs = os->next;
        ostream_end(t, os, false, "the transport is stopping");
    }
    while (t->ins)
        istream_drop(t, t->ins);
    return NULL;
}

/* ---------------------------------------------------------------- control */

/* Remove "*.part" files a crash left in dir. */
static void remove_partials(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t n = strlen(de->d_name);
        if (n > 5 && !strncmp(de->d_name, "recv-", 5) && !strcmp(de->d_name + n - 5, ".part"))
            unlinkat(dirfd(d), de->d_name, 0);
    }
    closedir(d);
}

/* Start listener i on url (replacing the old one, if any); cfg_mu held. */
static int listener_start(struct peer_transport *t, struct listener *li, const char *url, char *err, size_t errlen)
{
    nng_listener l;
    int rv = nng_listener_create(&l, t->rx, url);
    if (rv != 0) {
        snprintf(err, errlen, "peer listen URL %s: %s", url, nng_strerror(rv));
        return rv == NNG_ENOMEM ? -ENOMEM : -CAIRN_E_CONFIG;
    }
    bool tls = url_is_tls(url);
    if (tls) {
        nng_tls_config *cfg;
        int rc = tls_config_make(&t->tls, NNG_TLS_MODE_SERVER, NULL, &cfg, err, errlen);
        if (rc < 0) {
            nng_listener_close(l);
            return rc;
        }
        rv = nng_listener_set_ptr(l, NNG_OPT_TLS_CONFIG, cfg);
        nng_tls_config_free(cfg);
        if (rv != 0) {
            nng_listener_close(l);
            snprintf(err, errlen, "peer listen URL %s: %s", url, nng_strerror(rv));
            return -CAIRN_E_CONFIG;
        }
    }
    if ((rv = nng_listener_start(l, 0)) != 0) {
        nng_listener_close(l);
        snprintf(err, errlen, "cannot listen on %s: %s", url, nng_strerror(rv));
        return nng_to_errno(rv);
    }
    /* Remember the URL as bound, so a restart (reload) binds the same port. */
    char bound[512];
    int port = 0;
    const char *colon = strrchr(url, ':');
    const char *sep = strstr(url, "://");
    if (strncmp(url, "ipc", 3) != 0 && colon && sep && colon > sep + 3 &&
        nng_listener_get_int(l, NNG_OPT_TCP_BOUND_PORT, &port) == 0 && port > 0)
        snprintf(bound, sizeof bound, "%.*s:%d", (int)(colon - url), url, port);
    else
        snprintf(bound, sizeof bound, "%s", url);
    char *copy = strdup(bound);
    if (!copy) {
        nng_listener_close(l);
        return -ENOMEM;
    }
    free(li->url);
    li->url = copy;
    li->l = l;
    li->tls = tls;
    /* The guard's probe presents our own certificate and, as it only tests that
     * connections get through, does not check the listener's. */
    nng_tls_config *probe = NULL;
    char perr[256];
    if (tls && tls_config_make(&t->tls, NNG_TLS_MODE_CLIENT, NULL, &probe, perr, sizeof perr) == 0)
        nng_tls_config_auth_mode(probe, NNG_TLS_AUTH_MODE_NONE);
    if (!tls || probe)
        lguard_set(t->guard, (size_t)(li - t->lis), copy, l, probe);
    if (probe)
        nng_tls_config_free(probe); /* the guard holds its own reference */
    return 0;
}

/* The guard's restart of listener i. */
static int listener_restart(void *arg, size_t i, char *err, size_t errlen)
{
    struct peer_transport *t = arg;
    pthread_mutex_lock(&t->cfg_mu);
    nng_listener_close(t->lis[i].l);
    char url[512];
    snprintf(url, sizeof url, "%s", t->lis[i].url);
    int rc = listener_start(t, &t->lis[i], url, err, errlen);
    pthread_mutex_unlock(&t->cfg_mu);
    return rc;
}

static void transport_free(struct peer_transport *t)
{
    pthread_mutex_lock(&t->mu);
    t->stopping = true;
    pthread_mutex_unlock(&t->mu);
    lguard_stop(t->guard); /* no listener restarts from here on */
    if (t->rx_aio)
        nng_aio_stop(t->rx_aio); /* after this, on_messages is never called again */
    close_socket(t, t->rx, "peer");
    if (!atomic_load(&t->close_abandoned))
        lguard_free(t->guard); /* else its pipe callback may still come */
    if (t->rx_aio)
        nng_aio_free(t->rx_aio);
    if (t->thread_started) {
        pthread_mutex_lock(&t->mu);
        t->jstop = true;
        pthread_cond_signal(&t->jcv);
        pthread_mutex_unlock(&t->mu);
        pthread_join(t->thread, NULL);
    }
    /* Jobs left only if the thread never ran. */
    while (t->jhead) {
        struct job *j = t->jhead;
        t->jhead = j->next;
        run_job(t, j, true);
    }
    for (size_t i = 0; i < t->n_peers; i++)
        peer_free(t->peers[i]);
    for (size_t i = 0; i < CONFIG_MAX_URLS; i++)
        free(t->lis[i].url);
    tls_material_free(&t->tls);
    free(t->rbuf);
    free(t->incoming_dir);
    if (atomic_load(&t->close_abandoned))
        return; /* the peers' pipe callbacks may still take t->mu */
    pthread_cond_destroy(&t->jcv);
    pthread_mutex_destroy(&t->log_limit.mu);
    pthread_mutex_destroy(&t->mu);
    pthread_mutex_destroy(&t->cfg_mu);
    free(t);
}

int peer_start(const struct peer_options *o, const struct peer_callbacks *cb, struct peer_transport **out,
               char *err, size_t errlen)
{
    int rc = 0, rv;
    *out = NULL;
    if (errlen)
        err[0] = '\0';
    if (!o || !o->self_id || !o->listen || !o->listen->n || o->listen->n > CONFIG_MAX_URLS || !o->incoming_dir) {
        snprintf(err, errlen, "peer transport: need a member ID, listen URLs and an incoming directory");
        return -CAIRN_E_CONFIG;
    }
    struct peer_transport *t = calloc(1, sizeof(*t));
    if (!t)
        return -ENOMEM;
    pthread_mutex_init(&t->cfg_mu, NULL);
    pthread_mutex_init(&t->mu, NULL);
    t->log_limit = (struct log_limit)LOG_LIMIT_INIT(LOG_BURST, LOG_WINDOW_MS);
    mono_cond_init(&t->jcv);
    t->cluster_id = o->cluster_id;
    t->self_id = o->self_id;
    if (cb)
        t->cb = *cb;
    t->max_queue = o->max_queue ? o->max_queue : DEFAULT_MAX_QUEUE;
    t->max_recv = o->max_recv_bytes ? o->max_recv_bytes : DEFAULT_MAX_RECV;
    t->chunk = o->chunk_bytes ? o->chunk_bytes : DEFAULT_CHUNK;
    t->snap_timeout_ms = o->snapshot_timeout_ms ? o->snapshot_timeout_ms : DEFAULT_SNAP_TIMEOUT_MS;
    if (t->chunk + ENVELOPE_SLACK > t->max_recv) {
        snprintf(err, errlen, "peer transport: snapshot chunks of %zu bytes do not fit in envelopes of %zu",
                 t->chunk, t->max_recv);
        rc = -CAIRN_E_CONFIG;
        goto fail;
    }
    if (!(t->incoming_dir = strdup(o->incoming_dir)) || !(t->rbuf = malloc(t->chunk))) {
        rc = -ENOMEM;
        goto fail;
    }
    if ((rc = tls_load(&o->tls, &t->tls, err, errlen)) < 0)
        goto fail;
    for (size_t i = 0; i < o->listen->n; i++)
        if (url_is_tls(o->listen->v[i].url) && !t->tls.cert) {
            snprintf(err, errlen, "peer listen URL %s needs the peer certificate, key and CA files",
                     o->listen->v[i].url);
            rc = -CAIRN_E_CONFIG;
            goto fail;
        }
    remove_partials(t->incoming_dir);

    if ((rv = nng_pull0_open(&t->rx)) != 0 || (rv = nng_socket_set_size(t->rx, NNG_OPT_RECVMAXSZ, t->max_recv)) != 0 ||
        (rv = nng_aio_alloc(&t->rx_aio, recv_cb, t)) != 0) {
        snprintf(err, errlen, "peer transport: %s", nng_strerror(rv));
        rc = nng_to_errno(rv);
        goto fail;
    }
    nng_socket_set_bool(t->rx, NNG_OPT_TCP_KEEPALIVE, true);
    if ((rc = lguard_start(t->rx, nng_push0_open, "peer", 5000, 5000, listener_restart, t, &t->guard)) < 0) {
        snprintf(err, errlen, "peer transport: cannot start the listener guard: %s", strerror(-rc));
        goto fail;
    }
    pthread_mutex_lock(&t->cfg_mu);
    for (size_t i = 0; i < o->listen->n && rc == 0; i++)
        if ((rc = listener_start(t, &t->lis[i], o->listen->v[i].url, err, errlen)) == 0)
            t->n_lis++;
    pthread_mutex_unlock(&t->cfg_mu);
    if (rc < 0)
        goto fail;
    if ((rc = -pthread_create(&t->thread, NULL, stream_main, t)) < 0) {
        snprintf(err, errlen, "peer transport: cannot start its thread: %s", strerror(-rc));
        goto fail;
    }
    t->thread_started = true;
    nng_recv_aio(t->rx, t->rx_aio);
    *out = t;
    return 0;
fail:
    transport_free(t);
    return rc;
}

int peer_listen_url(struct peer_transport *t, size_t i, char *buf, size_t len)
{
    int rc = 0;
    pthread_mutex_lock(&t->cfg_mu);
    if (i >= t->n_lis)
        rc = -ENOENT;
    else if ((size_t)snprintf(buf, len, "%s", t->lis[i].url) >= len)
        rc = -ENOSPC;
    pthread_mutex_unlock(&t->cfg_mu);
    return rc;
}

static bool same_urls(const struct peer *p, const char *const *urls, size_t n)
{
    if (p->n_urls != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (strcmp(p->urls[i], urls[i]) != 0)
            return false;
    return true;
}

/* Replace p's URLs and dial them on both sockets; cfg_mu held. */
static int peer_dial(struct peer_transport *t, struct peer *p, const char *const *urls, size_t n)
{
    char *copy[CONFIG_MAX_URLS] = {0};
    char err[512] = "";
    for (size_t i = 0; i < n; i++)
        if (!(copy[i] = strdup(urls[i]))) {
            for (size_t k = 0; k < i; k++)
                free(copy[k]);
            return -ENOMEM;
        }
    for (size_t i = 0; i < p->n_urls; i++)
        free(p->urls[i]);
    memcpy(p->urls, copy, sizeof(copy));
    p->n_urls = n;
    for (size_t i = 0; i < n; i++) {
        char host[256];
        if (url_is_tls(urls[i]) && url_host(urls[i], host, sizeof host) == 0 && host_is_ip(host))
            log_warning(LOG_FIELDS(LOG_HEX("CAIRN_PEER", p->id), LOG_STR("CAIRN_URL", urls[i])),
                        "peer transport: %s names its host by address; TLS checks the certificate against a "
                        "DNS name only, so this connection will be refused",
                        urls[i]);
    }
    int rc = sendq_dial(t, &p->q, err, sizeof err);
    if (rc == 0)
        rc = sendq_dial(t, &p->sq, err, sizeof err);
    if (rc < 0)
        log_err(LOG_FIELDS(LOG_HEX("CAIRN_PEER", p->id)), "peer transport: member %016" PRIx64 ": %s", p->id, err);
    return rc;
}

int peer_add(struct peer_transport *t, uint64_t id, const char *const *urls, size_t n_urls)
{
    if (id == t->self_id)
        return 0;
    if (id == 0 || !urls || n_urls == 0 || n_urls > CONFIG_MAX_URLS)
        return -EINVAL;
    for (size_t i = 0; i < n_urls; i++)
        if (!urls[i])
            return -EINVAL;
    int rc = 0;
    pthread_mutex_lock(&t->cfg_mu);
    for (size_t i = 0; i < n_urls; i++)
        if (url_is_tls(urls[i]) && !t->tls.cert) {
            log_err(LOG_FIELDS(LOG_HEX("CAIRN_PEER", id), LOG_STR("CAIRN_URL", urls[i])),
                    "peer transport: member %016" PRIx64 " at %s needs the peer TLS files", id, urls[i]);
            rc = -CAIRN_E_CONFIG;
            goto out;
        }
    pthread_mutex_lock(&t->mu);
    struct peer *p = find_peer(t, id);
    size_t n_peers = t->n_peers;
    pthread_mutex_unlock(&t->mu);
    if (p) {
        rc = same_urls(p, urls, n_urls) ? 0 : peer_dial(t, p, urls, n_urls);
        goto out;
    }
    if (n_peers == MAX_PEERS) {
        rc = -ENOSPC;
        goto out;
    }
    if (!(p = calloc(1, sizeof(*p)))) {
        rc = -ENOMEM;
        goto out;
    }
    p->id = id;
    if ((rc = sendq_init(t, p, &p->q, t->max_queue, false)) < 0 ||
        (rc = sendq_init(t, p, &p->sq, STREAM_WINDOW + 2, true)) < 0 || (rc = peer_dial(t, p, urls, n_urls)) < 0) {
        peer_free(p);
        goto out;
    }
    pthread_mutex_lock(&t->mu);
    t->peers[t->n_peers++] = p;
    pthread_mutex_unlock(&t->mu);
    log_info(LOG_FIELDS(LOG_HEX("CAIRN_PEER", id), LOG_STR("CAIRN_URL", urls[0])),
             "peer transport: member %016" PRIx64 " at %s%s", id, urls[0], n_urls > 1 ? " (and more)" : "");
out:
    pthread_mutex_unlock(&t->cfg_mu);
    return rc;
}

int peer_remove(struct peer_transport *t, uint64_t id)
{
    pthread_mutex_lock(&t->cfg_mu);
    pthread_mutex_lock(&t->mu);
    struct peer *p = NULL;
    for (size_t i = 0; i < t->n_peers; i++)
        if (t->peers[i]->id == id) {
            p = t->peers[i];
            t->peers[i] = t->peers[--t->n_peers];
            p->q.closing = p->sq.closing = true;
            break;
        }
    /* Queued behind anything already handed to the stream thread. */
    if (p)
        job_push_locked(t, JOB_GONE, id, NULL, 0, false);
    pthread_mutex_unlock(&t->mu);
    peer_free(p);
    pthread_mutex_unlock(&t->cfg_mu);
    return p ? 0 : -ENOENT;
}

int peer_send_snapshot(struct peer_transport *t, uint64_t to, const Cairnpeer__Message *msgsnap,
                       const char *db_path)
{
    if (!msgsnap || msgsnap->type != CAIRNPEER__MESSAGE_TYPE__MSG_SNAP || !msgsnap->snapshot || !db_path)
        return -EINVAL;
    pthread_mutex_lock(&t->mu);
    struct peer *p = find_peer(t, to);
    int rc = !p ? -ENOENT : p->stream_seq ? -EBUSY : 0;
    pthread_mutex_unlock(&t->mu);
    if (rc < 0)
        return rc;

    struct ostream *os = calloc(1, sizeof(*os));
    if (!os)
        return -ENOMEM;
    os->fd = open(db_path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (os->fd < 0 || fstat(os->fd, &st) < 0) {
        rc = -errno;
        goto fail;
    }
    os->peer = to;
    os->size = (uint64_t)st.st_size;
    os->index = msgsnap->snapshot->index;
    os->term = msgsnap->snapshot->term;
    /* Our own copy of the MsgSnap: the caller's may go before chunk 0 does. */
    size_t len = cairnpeer__message__get_packed_size(msgsnap);
    uint8_t *buf = malloc(len ? len : 1);
    if (buf) {
        cairnpeer__message__pack(msgsnap, buf);
        os->msg = cairnpeer__message__unpack(NULL, len, buf);
        free(buf);
    }
    if (!os->msg || !(os->sha = EVP_MD_CTX_new()) || EVP_DigestInit_ex(os->sha, EVP_sha256(), NULL) != 1) {
        rc = -ENOMEM;
        goto fail;
    }
    pthread_mutex_lock(&t->mu);
    p = find_peer(t, to);
    rc = !p ? -ENOENT : p->stream_seq ? -EBUSY : 0;
    if (rc == 0) {
        os->seq = ++t->next_stream_seq;
        rc = job_push_locked(t, JOB_OSTART, to, os, 0, false);
        if (rc == 0)
            p->stream_seq = os->seq;
    }
    pthread_mutex_unlock(&t->mu);
    if (rc < 0)
        goto fail;
    return 0;
fail:
    ostream_free(os);
    return rc;
}

int peer_reload_tls(struct peer_transport *t, const struct peer_tls *tls, char *err, size_t errlen)
{
    struct tls_material m;
    if (errlen)
        err[0] = '\0';
    int rc = tls_load(tls, &m, err, errlen);
    if (rc < 0)
        return rc;
    pthread_mutex_lock(&t->cfg_mu);
    bool needed = false;
    for (size_t i = 0; i < t->n_lis; i++)
        needed |= t->lis[i].tls;
    for (size_t i = 0; i < t->n_peers; i++)
        for (size_t k = 0; k < t->peers[i]->n_urls; k++)
            needed |= url_is_tls(t->peers[i]->urls[k]);
    if (needed && !m.cert) {
        pthread_mutex_unlock(&t->cfg_mu);
        tls_material_free(&m);
        snprintf(err, errlen, "peer TLS files are required by the tls+tcp:// URLs in use");
        return -CAIRN_E_CONFIG;
    }
    /* Most SIGHUPs change only the log level.  Restarting listeners is not
     * free under nng 1.5.2 (a listener closed while peers reconnect can
     * leak a few KiB), so nothing restarts unless the files changed. */
    if (tls_same(&m, &t->tls)) {
        pthread_mutex_unlock(&t->cfg_mu);
        tls_material_free(&m);
        return 0;
    }
    tls_material_free(&t->tls);
    t->tls = m;
    for (size_t i = 0; i < t->n_lis; i++) {
        if (!t->lis[i].tls)
            continue;
        nng_listener_close(t->lis[i].l);
        char url[512];
        snprintf(url, sizeof url, "%s", t->lis[i].url);
        int r = listener_start(t, &t->lis[i], url, err, errlen);
        if (r < 0 && rc == 0)
            rc = r;
    }
    /* Connections to TLS peers are made again with the new files: each such
     * queue gets a fresh socket from the stream thread (renew_queues, once
     * cfg_mu is let go), as after a lost connection.  Dialling again on the
     * same socket would close its pipe while sends still reach it: nng
     * 1.5.2's push0 may hand the next message to the closing pipe (lost) or
     * keep the freed pipe on its list (struct sendq).  The peer table does
     * not change while cfg_mu is held. */
    pthread_mutex_lock(&t->mu);
    for (size_t i = 0; i < t->n_peers; i++) {
        struct peer *p = t->peers[i];
        bool tlsurl = false;
        for (size_t k = 0; k < p->n_urls; k++)
            tlsurl |= url_is_tls(p->urls[k]);
        if (!tlsurl)
            continue;
        struct sendq *qs[2] = {&p->q, &p->sq};
        for (int k = 0; k < 2; k++)
            if (!qs[k]->closing) {
                sendq_mark_stale(qs[k]);
                qs[k]->dialed_ms = 0; /* renewed at once, not after RECONNECT_MIN_MS */
            }
    }
    pthread_mutex_unlock(&t->mu);
    pthread_mutex_unlock(&t->cfg_mu);
    if (rc == 0)
        log_notice(LOG_FIELDS(LOG_HEX("CAIRN_MEMBER", t->self_id)), "peer transport: TLS files reloaded");
    return rc;
}

size_t peer_stats(struct peer_transport *t, struct peer_stats *out, size_t max)
{
    pthread_mutex_lock(&t->mu);
    size_t n = t->n_peers;
    for (size_t i = 0; i < n && i < max; i++) {
        const struct peer *p = t->peers[i];
        out[i] = (struct peer_stats){.id = p->id,
                                     .connected = atomic_load(&p->q.pipes) > 0,
                                     .stream_connected = atomic_load(&p->sq.pipes) > 0,
                                     .sent = p->sent,
                                     .dropped = p->dropped,
                                     .recv_errors = p->recv_errors,
                                     .bytes_sent = p->bytes_sent,
                                     .bytes_received = p->bytes_recv,
                                     .renewed = p->renewed};
        histogram_read(&p->rtt, &out[i].rtt);
    }
    pthread_mutex_unlock(&t->mu);
    return n;
}

void peer_stop(struct peer_transport *t)
{
    if (!t)
        return;
    pthread_mutex_lock(&t->cfg_mu);
    pthread_mutex_unlock(&t->cfg_mu); /* any control call in progress has finished */
    transport_free(t);
}
