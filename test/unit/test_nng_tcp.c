/*
 * The tcp transport of the nng Cairn builds (third_party/nng/tcp-inline-read.patch):
 * a message whose header and body fit in the pipe's read-ahead buffer comes
 * in one read, bigger ones are read straight into their message, and
 * several read at once are handed over one by one.  Here messages of every
 * size around the buffer's edges arrive whole and in order; a byte stream
 * cut into pieces at odd places is put back together; a length over
 * NNG_OPT_RECVMAXSZ closes that connection only, after the messages before
 * it.  And the poller thread runs pull0's receive callbacks itself (Cairn's
 * peer transport), never req0's, and rep0's only for a receiver that marked
 * its aio (nng_aio_set_inline, third_party/nng/tcp-inline-rep.patch: the
 * daemon's request handlers); such a callback can hand its work on to a
 * task thread with nng_aio_begin and nng_aio_finish.  A req0 receiver's
 * callback runs there too while its aio is marked (libcairn's calls).  And replies queued on
 * a rep0 pipe leave in one batch (third_party/nng/tcp-rep-batch.patch), each
 * to its own request, over tcp:// and over tls+tcp://, where a message that
 * fits in a TLS record goes as one (tls-one-record.patch).  And a send the
 * sending thread writes at once completes the transport's and the
 * protocol's callbacks on that thread when nng_send_aio, nng_ctx_send or an
 * nng_defer_begin scope ends (tcp-send-defer.patch): a push0 pipe is free
 * again when nng_send_aio returns, and replies sent in one scope leave in
 * one write after the first, while the callers' own callbacks stay on the
 * task threads.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
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
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include <nng/nng.h>
#include <nng/supplemental/util/platform.h>
#include <nng/protocol/pipeline0/pull.h>
#include <nng/protocol/pipeline0/push.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/reqrep0/req.h>
#include <nng/supplemental/tls/tls.h>

#include "test/unit/wait_testutil.h"

#define LONG_MS 20000
#define READ_AHEAD 4096 /* TCPTRAN_RXBUF in the patch: the header and body together */
#define POLLER "nng:poll:epoll"

static void nap_us(long us)
{
    struct timespec ts = {0, us * 1000L};
    nanosleep(&ts, NULL);
}

/* Byte i of message k: differs between neighbouring messages and positions. */
static uint8_t pattern(uint32_t k, size_t i)
{
    return (uint8_t)(k * 131u + i * 7u + (i >> 8));
}

static void fill(uint8_t *p, uint32_t k, size_t len)
{
    for (size_t i = 0; i < len; i++)
        p[i] = pattern(k, i);
}

/* Receive one message on s and check it is message k of len bytes. */
static void expect_msg(nng_socket s, uint32_t k, size_t len)
{
    nng_msg *m;
    int rv = nng_recvmsg(s, &m, 0);
    if (rv != 0)
        fail_msg("message %u (%zu bytes): %s", k, len, nng_strerror(rv));
    if (nng_msg_len(m) != len)
        fail_msg("message %u: %zu bytes, expected %zu", k, nng_msg_len(m), len);
    const uint8_t *b = nng_msg_body(m);
    for (size_t i = 0; i < len; i++)
        if (b[i] != pattern(k, i))
            fail_msg("message %u (%zu bytes): byte %zu is %u, expected %u", k, len, i, b[i], pattern(k, i));
    nng_msg_free(m);
}

/* s listens on 127.0.0.1 (port 0); the URL to dial it in url. */
static void listen_here(nng_socket s, char *url, size_t urllen)
{
    nng_listener l;
    nng_sockaddr sa;
    assert_int_equal(nng_listen(s, "tcp://127.0.0.1:0", &l, 0), 0);
    assert_int_equal(nng_listener_get_addr(l, NNG_OPT_LOCADDR, &sa), 0);
    snprintf(url, urllen, "tcp://127.0.0.1:%u", ntohs(sa.s_in.sa_port));
}

/* A pull0 socket listening on 127.0.0.1; its URL in url. */
static nng_socket listen_pull(char *url, size_t urllen, size_t recvmax)
{
    nng_socket s;
    assert_int_equal(nng_pull0_open(&s), 0);
    assert_int_equal(nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, LONG_MS), 0);
    assert_int_equal(nng_socket_set_size(s, NNG_OPT_RECVMAXSZ, recvmax), 0);
    listen_here(s, url, urllen);
    return s;
}

/* A self-signed certificate for localhost, made with the openssl CLI by tls_setup (the tls group). */
static char tls_dir[64];
static nng_tls_config *tls_server, *tls_client;

/* A rep0 socket listening on 127.0.0.1 over tcp:// or tls+tcp:// (tls_setup's certificates), and a req0 socket dialed to it. */
static void rep_and_req(bool tls, nng_socket *rs, nng_socket *qs)
{
    char url[80];
    assert_int_equal(nng_rep0_open(rs), 0);
    assert_int_equal(nng_req0_open(qs), 0);
    if (!tls) {
        listen_here(*rs, url, sizeof url);
        assert_int_equal(nng_dial(*qs, url, NULL, 0), 0);
        return;
    }
    nng_listener l;
    nng_dialer d;
    nng_sockaddr sa;
    assert_int_equal(nng_listener_create(&l, *rs, "tls+tcp://127.0.0.1:0"), 0);
    assert_int_equal(nng_listener_set_ptr(l, NNG_OPT_TLS_CONFIG, tls_server), 0);
    assert_int_equal(nng_listener_start(l, 0), 0);
    assert_int_equal(nng_listener_get_addr(l, NNG_OPT_LOCADDR, &sa), 0);
    snprintf(url, sizeof url, "tls+tcp://127.0.0.1:%u", ntohs(sa.s_in.sa_port));
    assert_int_equal(nng_dialer_create(&d, *qs, url), 0);
    assert_int_equal(nng_dialer_set_ptr(d, NNG_OPT_TLS_CONFIG, tls_client), 0);
    assert_int_equal(nng_dialer_start(d, 0), 0);
}

static uint16_t port_of(const char *url)
{
    return (uint16_t)atoi(strrchr(url, ':') + 1);
}

/* A raw TCP connection that has done the SP handshake as a push0 socket. */
static int raw_push(const char *url)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port_of(url))};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    static const uint8_t hello[8] = {0x00, 'S', 'P', 0x00, 0x00, 0x50, 0x00, 0x00}; /* push0 */
    assert_int_equal(write(fd, hello, sizeof hello), (ssize_t)sizeof hello);
    uint8_t peer[8];
    size_t got = 0;
    while (got < sizeof peer) {
        ssize_t n = read(fd, peer + got, sizeof peer - got);
        assert_true(n > 0);
        got += (size_t)n;
    }
    assert_int_equal(peer[1], 'S');
    assert_int_equal(peer[2], 'P');
    return fd;
}

/* Append message k (len bytes, with its 8-byte length) to buf at *off. */
static void frame(uint8_t *buf, size_t *off, uint32_t k, size_t len)
{
    for (int i = 0; i < 8; i++)
        buf[*off + (size_t)i] = (uint8_t)((uint64_t)len >> (56 - 8 * i));
    fill(buf + *off + 8, k, len);
    *off += 8 + len;
}

static void write_all(int fd, const uint8_t *p, size_t len)
{
    while (len) {
        ssize_t n = write(fd, p, len);
        assert_true(n > 0);
        p += n;
        len -= (size_t)n;
    }
}

/* ---------------------------------------------------------------- sizes */

static const size_t edge_sizes[] = {
    0, 1, 7, 8, 9, 100,
    READ_AHEAD - 17, READ_AHEAD - 9, READ_AHEAD - 8, READ_AHEAD - 7, READ_AHEAD - 1,
    READ_AHEAD, READ_AHEAD + 1, 2 * READ_AHEAD, 65536, 1 << 20,
};
#define N_EDGE (sizeof edge_sizes / sizeof edge_sizes[0])
#define N_MIXED 3000

static size_t size_of_msg(uint32_t k)
{
    if (k < N_EDGE)
        return edge_sizes[k];
    /* Mostly small, so that many arrive in one read; now and then big. */
    uint32_t x = k * 2654435761u;
    return (x >> 28) == 0 ? (size_t)(x % 20000) : (size_t)(x % 600);
}

struct sender {
    const char *url;
    uint32_t n;
    int rv;
    atomic_bool done; /* the reader has them all: the socket may close */
};

static void *send_all(void *arg)
{
    struct sender *sd = arg;
    nng_socket s;
    if ((sd->rv = nng_push0_open(&s)) != 0)
        return NULL;
    nng_socket_set_int(s, NNG_OPT_SENDBUF, 1024); /* run ahead of the reader: reads find several */
    nng_socket_set_ms(s, NNG_OPT_SENDTIMEO, LONG_MS);
    if ((sd->rv = nng_dial(s, sd->url, NULL, 0)) == 0)
        for (uint32_t k = 0; k < sd->n && sd->rv == 0; k++) {
            size_t len = size_of_msg(k);
            nng_msg *m;
            if ((sd->rv = nng_msg_alloc(&m, len)) != 0)
                break;
            fill(nng_msg_body(m), k, len);
            if ((sd->rv = nng_sendmsg(s, m, 0)) != 0)
                nng_msg_free(m);
        }
    /* Closing drops what is still buffered: wait until the reader has it all. */
    for (uint64_t end = now_ms() + LONG_MS; !atomic_load(&sd->done) && now_ms() < end;)
        nng_msleep(10);
    nng_close(s);
    return NULL;
}

static void test_messages_of_every_size_arrive_whole_and_in_order(void **state)
{
    (void)state;
    char url[64];
    nng_socket s = listen_pull(url, sizeof url, 0);
    /* static: were a check to fail, the sender would still be using it. */
    static char surl[64];
    static struct sender sd;
    memcpy(surl, url, sizeof surl);
    sd = (struct sender){.url = surl, .n = N_EDGE + N_MIXED};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, send_all, &sd), 0);
    for (uint32_t k = 0; k < N_EDGE + N_MIXED; k++)
        expect_msg(s, k, size_of_msg(k));
    atomic_store(&sd.done, true);
    pthread_join(th, NULL);
    assert_int_equal(sd.rv, 0);
    nng_close(s);
}

/* ---------------------------------------------------------------- pieces */

static void test_a_stream_cut_at_odd_places_is_put_back_together(void **state)
{
    (void)state;
    char url[64];
    nng_socket s = listen_pull(url, sizeof url, 0);
    int fd = raw_push(url);
    static const size_t lens[] = {20, 5000, 0, READ_AHEAD - 8, 3, READ_AHEAD - 7, 1, 12000, 40};
    const size_t n = sizeof lens / sizeof lens[0];
    size_t total = 0;
    for (size_t k = 0; k < n; k++)
        total += 8 + lens[k];
    uint8_t *buf = malloc(total);
    assert_non_null(buf);
    size_t off = 0;
    for (size_t k = 0; k < n; k++)
        frame(buf, &off, (uint32_t)k, lens[k]);
    /* Pieces that end inside headers, inside bodies and across messages,
     * each given time to arrive on its own. */
    static const size_t cuts[] = {1, 3, 4, 7, 13, 1000, 8, 2, READ_AHEAD, 5, 999};
    for (size_t pos = 0, c = 0; pos < total; c++) {
        size_t len = cuts[c % (sizeof cuts / sizeof cuts[0])];
        if (len > total - pos)
            len = total - pos;
        write_all(fd, buf + pos, len);
        pos += len;
        nap_us(1000);
    }
    for (size_t k = 0; k < n; k++)
        expect_msg(s, (uint32_t)k, lens[k]);
    /* Then all of it again in one write: one read takes several messages. */
    write_all(fd, buf, total);
    for (size_t k = 0; k < n; k++)
        expect_msg(s, (uint32_t)k, lens[k]);
    free(buf);
    close(fd);
    nng_close(s);
}

/* ---------------------------------------------------------------- limits */

static bool closed_by_peer(int fd)
{
    uint8_t b;
    struct timeval tv = {0, 100 * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return read(fd, &b, 1) == 0 || errno == ECONNRESET;
}

static void test_a_length_over_the_limit_closes_that_connection_only(void **state)
{
    (void)state;
    char url[64];
    nng_socket s = listen_pull(url, sizeof url, 1000);
    uint8_t buf[64 + 1000];
    size_t off = 0;
    /* A good message and a refused length in one write: the good one is
     * delivered from the read-ahead, then the connection is closed. */
    int fd = raw_push(url);
    frame(buf, &off, 1, 10);
    uint8_t big[8] = {0, 0, 0, 0, 0, 0, 0x13, 0x88}; /* 5000 */
    memcpy(buf + off, big, sizeof big);
    off += sizeof big;
    write_all(fd, buf, off);
    expect_msg(s, 1, 10);
    assert_true(WAIT_FOR(closed_by_peer(fd), LONG_MS));
    close(fd);
    /* At the limit is allowed, on a new connection. */
    fd = raw_push(url);
    off = 0;
    frame(buf, &off, 2, 1000);
    write_all(fd, buf, off);
    expect_msg(s, 2, 1000);
    /* A length that no buffer could hold is refused as well. */
    static const uint8_t absurd[8] = {0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    write_all(fd, absurd, sizeof absurd);
    assert_true(WAIT_FOR(closed_by_peer(fd), LONG_MS));
    close(fd);
    nng_close(s);
}

/* ---------------------------------------------------------------- threads */

struct seen {
    nng_socket s;
    nng_aio *aio;
    atomic_int calls, on_poller;
    bool again; /* pull0: receive the next message from the callback */
    bool reply; /* rep0: send the request back */
};

static void note_thread(struct seen *w)
{
    char name[32] = "";
    pthread_getname_np(pthread_self(), name, sizeof name);
    if (strcmp(name, POLLER) == 0)
        atomic_fetch_add(&w->on_poller, 1);
}

/* A message was received (pull0, req0): take the next one if w->again. */
static void recv_cb(void *arg)
{
    struct seen *w = arg;
    if (nng_aio_result(w->aio) != 0)
        return;
    note_thread(w);
    nng_msg_free(nng_aio_get_msg(w->aio));
    if (w->again)
        nng_recv_aio(w->s, w->aio);
    atomic_fetch_add(&w->calls, 1);
}

static void test_pull0_callbacks_run_on_the_poller(void **state)
{
    (void)state;
    char url[64];
    static struct seen w; /* static: were a check to fail, its aio would still be live */
    w = (struct seen){.s = listen_pull(url, sizeof url, 0), .again = true};
    assert_int_equal(nng_aio_alloc(&w.aio, recv_cb, &w), 0);
    nng_recv_aio(w.s, w.aio);
    nng_socket p;
    assert_int_equal(nng_push0_open(&p), 0);
    assert_int_equal(nng_dial(p, url, NULL, 0), 0);
    /* The first may come before the new pipe's first read is posted, and
     * be read by that: it is not counted. */
    assert_int_equal(nng_send(p, "x", 1, 0), 0);
    assert_true(WAIT_FOR(atomic_load(&w.calls) == 1, LONG_MS));
    atomic_store(&w.on_poller, 0);
    /* The rest one at a time, each after the callback posted the next
     * receive: each is read by the poller, which hands it over itself. */
    for (int i = 0; i < 20; i++) {
        assert_int_equal(nng_send(p, "x", 1, 0), 0);
        assert_true(WAIT_FOR(atomic_load(&w.calls) == i + 2, LONG_MS));
    }
    if (atomic_load(&w.on_poller) != 20)
        fail_msg("%d of 20 receive callbacks ran on the poller", atomic_load(&w.on_poller));
    nng_close(p);
    nng_aio_stop(w.aio);
    nng_aio_free(w.aio);
    nng_close(w.s);
}

static void rep_cb(void *arg)
{
    struct seen *w = arg;
    if (nng_aio_result(w->aio) != 0)
        return;
    note_thread(w);
    if (w->reply) { /* got a request: send it back */
        w->reply = false;
        nng_send_aio(w->s, w->aio);
    } else { /* the reply went: take the next request */
        w->reply = true;
        nng_recv_aio(w->s, w->aio);
        atomic_fetch_add(&w->calls, 1);
    }
}

static void test_req0_and_rep0_callbacks_stay_off_the_poller(void **state)
{
    (void)state;
    nng_socket rs, qs;
    rep_and_req(false, &rs, &qs);
    static struct seen server, client; /* static: see test_pull0_callbacks_run_on_the_poller */
    server = (struct seen){.s = rs, .reply = true};
    assert_int_equal(nng_aio_alloc(&server.aio, rep_cb, &server), 0);
    nng_recv_aio(rs, server.aio);
    client = (struct seen){.s = qs};
    assert_int_equal(nng_aio_alloc(&client.aio, recv_cb, &client), 0);
    for (int i = 0; i < 20; i++) {
        uint32_t x = (uint32_t)i;
        assert_int_equal(nng_send(qs, &x, sizeof x, 0), 0);
        nng_recv_aio(qs, client.aio);
        assert_true(WAIT_FOR(atomic_load(&client.calls) == i + 1, LONG_MS));
    }
    assert_true(WAIT_FOR(atomic_load(&server.calls) == 20, LONG_MS));
    assert_int_equal(atomic_load(&server.on_poller), 0);
    assert_int_equal(atomic_load(&client.on_poller), 0);
    nng_close(qs);
    nng_close(rs);
    nng_aio_stop(client.aio);
    nng_aio_stop(server.aio);
    nng_aio_free(client.aio);
    nng_aio_free(server.aio);
}

/* A marked rep0 receiver: on each request, hand on to a task thread, reply from there. */
struct marked {
    nng_ctx ctx;
    nng_aio *aio;
    enum { M_RECV, M_HANDED_ON, M_SEND } state;
    atomic_int requests, on_poller, inline_now, handed_on_poller, handed_inline_now, listening;
};

static void marked_cb(void *arg)
{
    struct marked *w = arg;
    if (nng_aio_result(w->aio) != 0)
        return;
    char name[32] = "";
    pthread_getname_np(pthread_self(), name, sizeof name);
    bool poller = strcmp(name, POLLER) == 0;
    switch (w->state) {
    case M_RECV:
        atomic_fetch_add(&w->on_poller, poller);
        atomic_fetch_add(&w->inline_now, nng_aio_inline_now());
        atomic_fetch_add(&w->requests, 1);
        w->state = M_HANDED_ON;
        assert_true(nng_aio_begin(w->aio));
        nng_aio_finish(w->aio, 0); /* the message stays on the aio */
        break;
    case M_HANDED_ON:
        atomic_fetch_add(&w->handed_on_poller, poller);
        atomic_fetch_add(&w->handed_inline_now, nng_aio_inline_now());
        w->state = M_SEND;
        nng_ctx_send(w->ctx, w->aio); /* the request back as the reply */
        break;
    case M_SEND:
        w->state = M_RECV;
        nng_ctx_recv(w->ctx, w->aio);
        atomic_fetch_add(&w->listening, 1);
        break;
    }
}

static void test_a_marked_rep0_receiver_runs_on_the_poller_and_can_hand_on(void **state)
{
    (void)state;
    nng_socket rs, qs;
    rep_and_req(false, &rs, &qs);
    static struct marked w; /* static: see test_pull0_callbacks_run_on_the_poller */
    w = (struct marked){.state = M_RECV};
    assert_int_equal(nng_ctx_open(&w.ctx, rs), 0);
    assert_int_equal(nng_aio_alloc(&w.aio, marked_cb, &w), 0);
    nng_aio_set_inline(w.aio, true);
    assert_false(nng_aio_inline_now());
    nng_ctx_recv(w.ctx, w.aio);
    assert_int_equal(nng_socket_set_ms(qs, NNG_OPT_RECVTIMEO, LONG_MS), 0);
    for (int i = 0; i < 21; i++) {
        uint32_t x = (uint32_t)i, y = UINT32_MAX;
        size_t len = sizeof y;
        assert_int_equal(nng_send(qs, &x, sizeof x, 0), 0);
        assert_int_equal(nng_recv(qs, &y, &len, 0), 0);
        assert_int_equal(len, sizeof y);
        assert_int_equal(y, x);
        /* The reply can arrive before the send's completion posted the
         * next receive; a request that came before it would wait on the
         * pipe and be handed over by that receive, on a task thread. */
        assert_true(WAIT_FOR(atomic_load(&w.listening) == i + 1, LONG_MS));
        if (i == 0) { /* the first may be read before the pipe's first read is posted: not counted */
            atomic_store(&w.on_poller, 0);
            atomic_store(&w.inline_now, 0);
        }
    }
    assert_int_equal(atomic_load(&w.requests), 21);
    if (atomic_load(&w.on_poller) != 20)
        fail_msg("%d of 20 marked rep0 receive callbacks ran on the poller", atomic_load(&w.on_poller));
    assert_int_equal(atomic_load(&w.inline_now), 20);
    /* handed on: a task thread, where nothing runs inline */
    assert_int_equal(atomic_load(&w.handed_on_poller), 0);
    assert_int_equal(atomic_load(&w.handed_inline_now), 0);
    nng_close(qs);
    nng_aio_stop(w.aio);
    nng_ctx_close(w.ctx);
    nng_close(rs);
    nng_aio_free(w.aio);
}

/* A req0 context: sends a request, then notes which thread ran its reply's callback. */
struct asker {
    nng_ctx ctx;
    nng_aio *aio;
    bool sending;
    atomic_int listening, replies, on_poller, inline_now;
};

static void asker_cb(void *arg)
{
    struct asker *a = arg;
    if (nng_aio_result(a->aio) != 0)
        return;
    if (a->sending) {
        a->sending = false;
        nng_ctx_recv(a->ctx, a->aio);
        atomic_fetch_add(&a->listening, 1);
        return;
    }
    char name[32] = "";
    pthread_getname_np(pthread_self(), name, sizeof name);
    atomic_fetch_add(&a->on_poller, strcmp(name, POLLER) == 0);
    atomic_fetch_add(&a->inline_now, nng_aio_inline_now());
    nng_msg_free(nng_aio_get_msg(a->aio));
    nng_aio_set_msg(a->aio, NULL);
    atomic_fetch_add(&a->replies, 1);
}

/* n requests from a, each answered by rs only once a's receive is posted
 * (a reply that came before it would be handed over by the receive itself,
 * on a task thread); returns how many replies' callbacks ran on the poller. */
static int ask_and_answer(struct asker *a, nng_socket rs, int n)
{
    atomic_store(&a->listening, 0);
    atomic_store(&a->replies, 0);
    atomic_store(&a->on_poller, 0);
    atomic_store(&a->inline_now, 0);
    for (int i = 0; i < n; i++) {
        nng_msg *m;
        assert_int_equal(nng_msg_alloc(&m, 0), 0);
        assert_int_equal(nng_msg_append_u32(m, (uint32_t)i), 0);
        a->sending = true;
        nng_aio_set_msg(a->aio, m);
        nng_ctx_send(a->ctx, a->aio);
        nng_msg *q;
        assert_int_equal(nng_recvmsg(rs, &q, 0), 0);
        assert_true(WAIT_FOR(atomic_load(&a->listening) == i + 1, LONG_MS));
        assert_int_equal(nng_sendmsg(rs, q, 0), 0);
        assert_true(WAIT_FOR(atomic_load(&a->replies) == i + 1, LONG_MS));
    }
    assert_int_equal(atomic_load(&a->inline_now), atomic_load(&a->on_poller));
    return atomic_load(&a->on_poller);
}

static void test_a_marked_req0_receiver_runs_on_the_poller_until_unmarked(void **state)
{
    (void)state;
    nng_socket rs, qs;
    rep_and_req(false, &rs, &qs);
    assert_int_equal(nng_socket_set_ms(rs, NNG_OPT_RECVTIMEO, LONG_MS), 0);
    static struct asker a; /* static: see test_pull0_callbacks_run_on_the_poller */
    a = (struct asker){0};
    assert_int_equal(nng_ctx_open(&a.ctx, qs), 0);
    assert_int_equal(nng_aio_alloc(&a.aio, asker_cb, &a), 0);
    nng_aio_set_inline(a.aio, true);
    int n = ask_and_answer(&a, rs, 20);
    if (n != 20)
        fail_msg("%d of 20 marked req0 receive callbacks ran on the poller", n);
    nng_aio_set_inline(a.aio, false);
    n = ask_and_answer(&a, rs, 20);
    if (n != 0)
        fail_msg("%d of 20 req0 receive callbacks ran on the poller after the mark was taken back", n);
    nng_close(qs);
    nng_aio_stop(a.aio);
    nng_close(rs);
    nng_aio_free(a.aio);
}

/* ---------------------------------------------------------------- reply batches */

/* The value of a pipe's statistic (tx_msgs, ...): depth-first through nng's statistics. */
static bool pipe_stat(nng_stat *st, int pipe_id, const char *name, uint64_t *out)
{
    for (; st; st = nng_stat_next(st)) {
        if (strcmp(nng_stat_name(st), "pipe") == 0) {
            nng_stat *id = nng_stat_find(st, "id");
            nng_stat *v = nng_stat_find(st, name);
            if (id && v && (int)nng_stat_value(id) == pipe_id) {
                *out = nng_stat_value(v);
                return true;
            }
        }
        if (pipe_stat(nng_stat_child(st), pipe_id, name, out))
            return true;
    }
    return false;
}

#define QUEUED 20
#define BIG_REPLY (8u << 20)

/* ---------------------------------------------------------------- TLS */

static int tls_setup(void **state)
{
    (void)state;
    char cmd[512], pem[128];
    snprintf(tls_dir, sizeof tls_dir, "/tmp/cairn-nng-tls-XXXXXX");
    if (!mkdtemp(tls_dir))
        return -1;
    snprintf(cmd, sizeof cmd,
             "cd %s && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout s.key "
             "-out s.crt -subj /CN=localhost -addext subjectAltName=DNS:localhost -days 2 2>/dev/null && "
             "cat s.crt s.key > s.pem",
             tls_dir);
    if (system(cmd) != 0)
        return -1;
    snprintf(pem, sizeof pem, "%s/s.pem", tls_dir);
    if (nng_tls_config_alloc(&tls_server, NNG_TLS_MODE_SERVER) != 0 ||
        nng_tls_config_cert_key_file(tls_server, pem, NULL) != 0 ||
        nng_tls_config_auth_mode(tls_server, NNG_TLS_AUTH_MODE_NONE) != 0 ||
        nng_tls_config_alloc(&tls_client, NNG_TLS_MODE_CLIENT) != 0 ||
        nng_tls_config_auth_mode(tls_client, NNG_TLS_AUTH_MODE_NONE) != 0 ||
        nng_tls_config_server_name(tls_client, "localhost") != 0)
        return -1;
    return 0;
}

static int tls_teardown(void **state)
{
    (void)state;
    char cmd[128];
    nng_tls_config_free(tls_server);
    nng_tls_config_free(tls_client);
    snprintf(cmd, sizeof cmd, "rm -rf %s", tls_dir);
    return system(cmd) == 0 ? 0 : -1;
}

/*
 * Over TLS a message whose length, header and body fit in a TLS record's
 * payload (16 KiB) goes as one record (third_party/nng/tls-one-record.patch),
 * a bigger one as before: requests and replies of sizes around that edge
 * come back whole.
 */
static void test_tls_messages_around_the_record_size_arrive_whole(void **state)
{
    (void)state;
    nng_socket rs, qs;
    rep_and_req(true, &rs, &qs);
    assert_int_equal(nng_socket_set_size(qs, NNG_OPT_RECVMAXSZ, 0), 0);
    assert_int_equal(nng_socket_set_size(rs, NNG_OPT_RECVMAXSZ, 0), 0);
    assert_int_equal(nng_socket_set_ms(rs, NNG_OPT_RECVTIMEO, LONG_MS), 0);
    assert_int_equal(nng_socket_set_ms(qs, NNG_OPT_RECVTIMEO, LONG_MS), 0);
    /* the request carries req0's 4-byte header, the reply rep0's: 8 + 4 + body */
    static const size_t sizes[] = {0, 1, 100, 16370, 16371, 16372, 16373, 16380, 16384, 16385, 40000, 300000};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        size_t len = sizes[k];
        nng_msg *m, *got;
        assert_int_equal(nng_msg_alloc(&m, len), 0);
        fill(nng_msg_body(m), (uint32_t)k, len);
        assert_int_equal(nng_sendmsg(qs, m, 0), 0);
        assert_int_equal(nng_recvmsg(rs, &got, 0), 0); /* the server sends the request back */
        assert_int_equal(nng_msg_len(got), len);
        assert_int_equal(nng_sendmsg(rs, got, 0), 0);
        assert_int_equal(nng_recvmsg(qs, &got, 0), 0);
        if (nng_msg_len(got) != len)
            fail_msg("size %zu came back as %zu bytes", len, nng_msg_len(got));
        for (size_t i = 0; i < len; i++)
            if (((uint8_t *)nng_msg_body(got))[i] != pattern((uint32_t)k, i))
                fail_msg("size %zu: byte %zu is wrong", len, i);
        nng_msg_free(got);
    }
    nng_close(qs);
    nng_close(rs);
}

/* QUEUED + 1 requests on one connection, each carrying its number, each taken by a server context of its own. */
struct in_flight {
    nng_socket rs, qs;
    nng_ctx sctx[QUEUED + 1], cctx[QUEUED + 1];
    nng_aio *saio[QUEUED + 1], *caio[QUEUED + 1];
};

/* Sets up f and waits for every server context to hold its request; returns the server's pipe. */
static int requests_in_flight(struct in_flight *f, bool tls, void (*server_cb)(void *))
{
    rep_and_req(tls, &f->rs, &f->qs);
    assert_int_equal(nng_socket_set_size(f->qs, NNG_OPT_RECVMAXSZ, 0), 0); /* replies of any size */
    for (int i = 0; i <= QUEUED; i++) {
        assert_int_equal(nng_ctx_open(&f->sctx[i], f->rs), 0);
        assert_int_equal(nng_ctx_open(&f->cctx[i], f->qs), 0);
        assert_int_equal(nng_aio_alloc(&f->saio[i], server_cb, NULL), 0);
        assert_int_equal(nng_aio_alloc(&f->caio[i], NULL, NULL), 0);
        nng_aio_set_timeout(f->saio[i], LONG_MS);
        nng_aio_set_timeout(f->caio[i], LONG_MS);
        nng_ctx_recv(f->sctx[i], f->saio[i]);
    }
    for (uint32_t i = 0; i <= QUEUED; i++) {
        nng_msg *m;
        assert_int_equal(nng_msg_alloc(&m, 0), 0);
        assert_int_equal(nng_msg_append_u32(m, i), 0);
        nng_aio_set_msg(f->caio[i], m);
        nng_ctx_send(f->cctx[i], f->caio[i]);
        nng_aio_wait(f->caio[i]);
        assert_int_equal(nng_aio_result(f->caio[i]), 0);
        nng_ctx_recv(f->cctx[i], f->caio[i]);
    }
    int pipe_id = -1;
    for (int i = 0; i <= QUEUED; i++) {
        nng_aio_wait(f->saio[i]);
        assert_int_equal(nng_aio_result(f->saio[i]), 0);
        pipe_id = nng_pipe_id(nng_msg_get_pipe(nng_aio_get_msg(f->saio[i])));
    }
    return pipe_id;
}

/* Every server context's reply sent. */
static void sends_done(struct in_flight *f)
{
    for (int i = 0; i <= QUEUED; i++) {
        nng_aio_wait(f->saio[i]);
        assert_int_equal(nng_aio_result(f->saio[i]), 0);
    }
}

/* The reply to request i, checked to carry its number, which is trimmed off. */
static nng_msg *reply_to(struct in_flight *f, uint32_t i)
{
    nng_aio_wait(f->caio[i]);
    if (nng_aio_result(f->caio[i]) != 0)
        fail_msg("request %u: no reply: %s", i, nng_strerror(nng_aio_result(f->caio[i])));
    nng_msg *m = nng_aio_get_msg(f->caio[i]);
    uint32_t k = UINT32_MAX;
    assert_int_equal(nng_msg_trim_u32(m, &k), 0);
    assert_int_equal(k, i);
    return m;
}

/* How many times the server's pipe pipe_id sent. */
static uint64_t pipe_sends(int pipe_id)
{
    nng_stat *st = NULL;
    uint64_t tx = 0;
    assert_int_equal(nng_stats_get(&st), 0);
    assert_true(pipe_stat(st, pipe_id, "tx_msgs", &tx));
    nng_stats_free(st);
    return tx;
}

static void in_flight_close(struct in_flight *f)
{
    nng_close(f->qs);
    nng_close(f->rs);
    for (int i = 0; i <= QUEUED; i++) {
        nng_aio_free(f->saio[i]);
        nng_aio_free(f->caio[i]);
    }
}

static void replies_leave_in_a_batch(bool tls)
{
    static struct in_flight f; /* static: see test_pull0_callbacks_run_on_the_poller */
    int pipe_id = requests_in_flight(&f, tls, NULL);
    /* The first answered takes a while to write, so the other 20 replies
     * queue on the pipe behind it. */
    uint32_t asked[QUEUED + 1];
    for (int i = 0; i <= QUEUED; i++) {
        nng_msg *m = nng_aio_get_msg(f.saio[i]);
        assert_int_equal(nng_msg_trim_u32(m, &asked[i]), 0);
        nng_msg_clear(m);
        size_t len = i == 0 ? BIG_REPLY : 4 + (size_t)asked[i] * 37; /* sizes that differ */
        assert_int_equal(nng_msg_append_u32(m, asked[i]), 0);
        assert_int_equal(nng_msg_realloc(m, len), 0);
        memset((uint8_t *)nng_msg_body(m) + 4, (int)asked[i], len - 4);
    }
    for (int i = 0; i <= QUEUED; i++)
        nng_ctx_send(f.sctx[i], f.saio[i]);
    sends_done(&f);
    /* each reply reached its own request, whole */
    for (uint32_t i = 0; i <= QUEUED; i++) {
        nng_msg *m = reply_to(&f, i);
        size_t want = i == asked[0] ? BIG_REPLY - 4 : (size_t)i * 37;
        assert_int_equal(nng_msg_len(m), want);
        for (size_t j = 0; j < want; j++)
            if (((uint8_t *)nng_msg_body(m))[j] != (uint8_t)i)
                fail_msg("reply %u: byte %zu is wrong", i, j);
        nng_msg_free(m);
    }
    /* fewer sends than replies on the server's pipe: the queued ones went together */
    uint64_t tx = pipe_sends(pipe_id);
    print_message("the server's pipe sent %" PRIu64 " times for %d replies (%s)\n", tx, QUEUED + 1, tls ? "tls+tcp" : "tcp");
    if (tx >= QUEUED + 1)
        fail_msg("%" PRIu64 " sends for %d replies: none went in a batch", tx, QUEUED + 1);
    in_flight_close(&f);
}

/* Small replies to 21 requests, sent in one nng_defer_begin scope. */
static pthread_t sender;
static atomic_int sent_on_sender;

static void sent_cb(void *arg)
{
    (void)arg;
    atomic_fetch_add(&sent_on_sender, pthread_equal(pthread_self(), sender) != 0);
}

static void test_replies_sent_in_a_defer_scope_leave_together(void **state)
{
    (void)state;
    static struct in_flight f; /* static: see test_pull0_callbacks_run_on_the_poller */
    int pipe_id = requests_in_flight(&f, false, sent_cb); /* each request goes back as its reply */
    atomic_store(&sent_on_sender, 0);
    sender = pthread_self();
    nng_defer_begin();
    for (int i = 0; i <= QUEUED; i++)
        nng_ctx_send(f.sctx[i], f.saio[i]);
    nng_defer_end();
    sends_done(&f);
    for (uint32_t i = 0; i <= QUEUED; i++) {
        nng_msg *m = reply_to(&f, i);
        assert_int_equal(nng_msg_len(m), 0);
        nng_msg_free(m);
    }
    /* The first went at once; its completion waited for the scope's end,
     * and the pipe with it, so the other 20 queued and went in one write. */
    uint64_t tx = pipe_sends(pipe_id);
    if (tx != 2)
        fail_msg("the server's pipe sent %" PRIu64 " times for %d replies, not 2", tx, QUEUED + 1);
    /* and the senders' own callbacks ran on task threads, not here */
    assert_int_equal(atomic_load(&sent_on_sender), 0);
    in_flight_close(&f);
}

/* cairnd's peer sends: no buffer, no callback, no wait; each must find the pipe free. */
static void test_a_push0_pipe_is_free_again_when_nng_send_aio_returns(void **state)
{
    (void)state;
    char url[64];
    nng_socket pl = listen_pull(url, sizeof url, 0), ps;
    assert_int_equal(nng_push0_open(&ps), 0);
    assert_int_equal(nng_socket_set_int(ps, NNG_OPT_SENDBUF, 0), 0);
    assert_int_equal(nng_dial(ps, url, NULL, 0), 0);
    uint8_t first[4];
    fill(first, 0, sizeof first);
    assert_int_equal(nng_send(ps, first, sizeof first, 0), 0); /* waits for the connection */
    expect_msg(pl, 0, sizeof first);
    uint32_t k;
    nng_aio *aio;
    assert_int_equal(nng_aio_alloc(&aio, NULL, NULL), 0);
    nng_defer_end(); /* a caller's stray end, with no scope open, changes nothing */
    for (k = 1; k <= 50; k++) {
        nng_msg *m;
        assert_int_equal(nng_msg_alloc(&m, 0), 0);
        assert_int_equal(nng_msg_append(m, &k, sizeof k), 0);
        nng_aio_set_msg(aio, m);
        nng_aio_set_timeout(aio, NNG_DURATION_ZERO);
        nng_send_aio(ps, aio);
        nng_aio_wait(aio);
        if (nng_aio_result(aio) != 0)
            fail_msg("send %u right after the one before: %s", k, nng_strerror(nng_aio_result(aio)));
    }
    for (k = 1; k <= 50; k++) {
        nng_msg *m = NULL;
        assert_int_equal(nng_recvmsg(pl, &m, 0), 0);
        uint32_t got;
        assert_int_equal(nng_msg_len(m), sizeof got);
        memcpy(&got, nng_msg_body(m), sizeof got);
        assert_int_equal(got, k);
        nng_msg_free(m);
    }
    nng_aio_free(aio);
    nng_close(ps);
    nng_close(pl);
}

static void test_replies_queued_on_a_rep0_pipe_leave_in_a_batch(void **state)
{
    (void)state;
    replies_leave_in_a_batch(false);
}

static void test_replies_queued_on_a_rep0_pipe_leave_in_a_batch_over_tls(void **state)
{
    (void)state;
    replies_leave_in_a_batch(true);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_messages_of_every_size_arrive_whole_and_in_order),
        cmocka_unit_test(test_a_stream_cut_at_odd_places_is_put_back_together),
        cmocka_unit_test(test_a_length_over_the_limit_closes_that_connection_only),
        cmocka_unit_test(test_pull0_callbacks_run_on_the_poller),
        cmocka_unit_test(test_req0_and_rep0_callbacks_stay_off_the_poller),
        cmocka_unit_test(test_a_marked_rep0_receiver_runs_on_the_poller_and_can_hand_on),
        cmocka_unit_test(test_a_marked_req0_receiver_runs_on_the_poller_until_unmarked),
        cmocka_unit_test(test_replies_queued_on_a_rep0_pipe_leave_in_a_batch),
        cmocka_unit_test(test_replies_sent_in_a_defer_scope_leave_together),
        cmocka_unit_test(test_a_push0_pipe_is_free_again_when_nng_send_aio_returns),
    };
    const struct CMUnitTest tls_tests[] = {
        cmocka_unit_test(test_tls_messages_around_the_record_size_arrive_whole),
        cmocka_unit_test(test_replies_queued_on_a_rep0_pipe_leave_in_a_batch_over_tls),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    return failed + cmocka_run_group_tests_name("tls", tls_tests, tls_setup, tls_teardown);
}
