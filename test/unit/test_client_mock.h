/*
 * A scripted stand-in for a Cairn member, for libcairn's unit tests: a real
 * nng rep0 socket (tcp, tls+tcp or ipc) served by one thread, that decodes
 * each Request, counts it, remembers the last one, and answers with canned
 * KV replies or with what the test scripted (an error, no reply, a dropped
 * connection, garbage).  Header-only (static inline) so only the client
 * tests that include it compile it.
 */
#ifndef CAIRN_TEST_CLIENT_MOCK_H
#define CAIRN_TEST_CLIENT_MOCK_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/supplemental/tls/tls.h>
#include <nng/supplemental/util/platform.h>

#include "proto/cairn.pb-c.h"

#define MOCK_BODIES 80 /* above the largest Request body case */

struct mock {
    nng_socket sock;
    nng_listener listener;
    char url[512];
    uint64_t member_id;
    pthread_t thread;
    bool started;
    int stop;                    /* atomic: mock_stop asks the thread to leave */

    pthread_mutex_t mu;
    /* What the mock saw, under mu. */
    unsigned counts[MOCK_BODIES];
    unsigned total;
    Cairn__Request *last;
    /* What it does, under mu; set by the test. */
    uint32_t error_code;         /* answer every request with this error */
    int64_t error_compact_rev;
    const char *error_message;
    uint32_t read_error_code;    /* answer reads (Range) only with this error */
    bool silent;                 /* never answer */
    bool drop_writes;            /* close the connection on Put/Delete/Txn, no answer */
    int drop_reads;              /* close the connection on this many Ranges */
    bool garbage;                /* answer bytes that are no Response */
    int delay_ms;                /* wait this long before each answer */
    int64_t revision;
};

static inline ProtobufCBinaryData mock_bin(const char *s)
{
    ProtobufCBinaryData b = {strlen(s), (uint8_t *)s};
    return b;
}

static inline unsigned mock_count(struct mock *m, int body)
{
    pthread_mutex_lock(&m->mu);
    unsigned n = m->counts[body];
    pthread_mutex_unlock(&m->mu);
    return n;
}

static inline unsigned mock_total(struct mock *m)
{
    pthread_mutex_lock(&m->mu);
    unsigned n = m->total;
    pthread_mutex_unlock(&m->mu);
    return n;
}

/* A copy of the last request seen (caller frees with cairn__request__free_unpacked), or NULL. */
static inline Cairn__Request *mock_last(struct mock *m)
{
    Cairn__Request *copy = NULL;
    pthread_mutex_lock(&m->mu);
    if (m->last) {
        size_t len = cairn__request__get_packed_size(m->last);
        uint8_t *buf = malloc(len + 1);
        cairn__request__pack(m->last, buf);
        copy = cairn__request__unpack(NULL, len, buf);
        free(buf);
    }
    pthread_mutex_unlock(&m->mu);
    return copy;
}

/* The canned answer to req, packed into a new nng message. */
static inline nng_msg *mock_answer(struct mock *m, const Cairn__Request *req)
{
    Cairn__Response resp = CAIRN__RESPONSE__INIT;
    Cairn__ResponseHeader hdr = CAIRN__RESPONSE_HEADER__INIT;
    Cairn__Error error = CAIRN__ERROR__INIT;
    Cairn__PutResponse put = CAIRN__PUT_RESPONSE__INIT;
    Cairn__RangeResponse range = CAIRN__RANGE_RESPONSE__INIT;
    Cairn__DeleteRangeResponse del = CAIRN__DELETE_RANGE_RESPONSE__INIT;
    Cairn__TxnResponse txn = CAIRN__TXN_RESPONSE__INIT;
    Cairn__CompactionResponse compact = CAIRN__COMPACTION_RESPONSE__INIT;
    Cairn__HistoryResponse hist = CAIRN__HISTORY_RESPONSE__INIT;
    Cairn__StatusResponse status = CAIRN__STATUS_RESPONSE__INIT;
    Cairn__LeaseKeepAliveResponse keepalive = CAIRN__LEASE_KEEP_ALIVE_RESPONSE__INIT;
    Cairn__KeyValue kv = CAIRN__KEY_VALUE__INIT, prev = CAIRN__KEY_VALUE__INIT;
    Cairn__KeyValue *kvs[1] = {&kv}, *prevs[1] = {&prev};
    Cairn__HistoryRecord recs[5], *rec_ptrs[5];
    Cairn__KeyValue rec_kvs[5];
    Cairn__ResponseOp rops[8], *rop_ptrs[8];
    Cairn__PutResponse rop_put = CAIRN__PUT_RESPONSE__INIT;
    Cairn__RangeResponse rop_range = CAIRN__RANGE_RESPONSE__INIT;
    Cairn__DeleteRangeResponse rop_del = CAIRN__DELETE_RANGE_RESPONSE__INIT;
    Cairn__TxnResponse rop_txn = CAIRN__TXN_RESPONSE__INIT;
    char value[300];
    nng_msg *msg = NULL;

    hdr.member_id = m->member_id;
    hdr.cluster_id = 77;
    hdr.revision = ++m->revision;
    resp.header = &hdr;

    uint32_t code = m->error_code;
    if (!code && m->read_error_code && req->body_case == CAIRN__REQUEST__BODY_RANGE)
        code = m->read_error_code;
    if (code) {
        error.code = code;
        error.message = (char *)(m->error_message ? m->error_message : "scripted error");
        error.compact_revision = m->error_compact_rev;
        error.member_id = m->member_id;
        resp.error = &error;
        goto pack;
    }

    switch (req->body_case) {
    case CAIRN__REQUEST__BODY_PUT:
        resp.body_case = CAIRN__RESPONSE__BODY_PUT;
        resp.put = &put;
        if (req->put->prev_kv) {
            prev.key = req->put->key;
            prev.value = mock_bin("old");
            prev.version = 1;
            put.prev_kv = &prev;
        }
        break;
    case CAIRN__REQUEST__BODY_RANGE:
        resp.body_case = CAIRN__RESPONSE__BODY_RANGE;
        resp.range = &range;
        if (!(req->range->key.len == 7 && memcmp(req->range->key.data, "missing", 7) == 0)) {
            snprintf(value, sizeof(value), "v:%.*s", (int)req->range->key.len,
                     (const char *)req->range->key.data);
            kv.key = req->range->key;
            kv.value = mock_bin(value);
            kv.mod_revision = 7;
            kv.create_revision = 5;
            kv.version = 2;
            range.kvs = kvs;
            range.n_kvs = 1;
            range.count = 1;
        }
        break;
    case CAIRN__REQUEST__BODY_DELETE_RANGE:
        resp.body_case = CAIRN__RESPONSE__BODY_DELETE_RANGE;
        resp.delete_range = &del;
        del.deleted = 3;
        if (req->delete_range->prev_kv) {
            prev.key = req->delete_range->key;
            prev.value = mock_bin("gone");
            del.prev_kvs = prevs;
            del.n_prev_kvs = 1;
        }
        break;
    case CAIRN__REQUEST__BODY_TXN: {
        /* Succeeds when it has compares; answers each op of the branch taken. */
        const Cairn__TxnRequest *t = req->txn;
        txn.succeeded = t->n_compare > 0;
        Cairn__RequestOp **ops = txn.succeeded ? t->success : t->failure;
        size_t n = txn.succeeded ? t->n_success : t->n_failure;
        for (size_t i = 0; i < n && i < 8; i++) {
            cairn__response_op__init(&rops[i]);
            switch (ops[i]->request_case) {
            case CAIRN__REQUEST_OP__REQUEST_REQUEST_PUT:
                rops[i].response_case = CAIRN__RESPONSE_OP__RESPONSE_RESPONSE_PUT;
                rops[i].response_put = &rop_put;
                break;
            case CAIRN__REQUEST_OP__REQUEST_REQUEST_RANGE:
                rops[i].response_case = CAIRN__RESPONSE_OP__RESPONSE_RESPONSE_RANGE;
                rops[i].response_range = &rop_range;
                break;
            case CAIRN__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE:
                rops[i].response_case = CAIRN__RESPONSE_OP__RESPONSE_RESPONSE_DELETE_RANGE;
                rops[i].response_delete_range = &rop_del;
                break;
            default:
                rops[i].response_case = CAIRN__RESPONSE_OP__RESPONSE_RESPONSE_TXN;
                rops[i].response_txn = &rop_txn;
                break;
            }
            rop_ptrs[i] = &rops[i];
            txn.n_responses = i + 1;
        }
        txn.responses = rop_ptrs;
        resp.body_case = CAIRN__RESPONSE__BODY_TXN;
        resp.txn = &txn;
        break;
    }
    case CAIRN__REQUEST__BODY_COMPACT:
        resp.body_case = CAIRN__RESPONSE__BODY_COMPACT;
        resp.compact = &compact;
        break;
    case CAIRN__REQUEST__BODY_HISTORY: {
        /* Five records at revisions 1..5, sub 0, `limit` (default 2) per page. */
        int64_t limit = req->history->limit > 0 ? req->history->limit : 2;
        size_t n = 0;
        for (int64_t rev = req->history->after_revision + 1; rev <= 5 && (int64_t)n < limit;
             rev++, n++) {
            cairn__history_record__init(&recs[n]);
            cairn__key_value__init(&rec_kvs[n]);
            rec_kvs[n].key = req->history->key;
            rec_kvs[n].mod_revision = rev;
            recs[n].kv = &rec_kvs[n];
            recs[n].tombstone = rev == 4;
            rec_ptrs[n] = &recs[n];
        }
        hist.records = rec_ptrs;
        hist.n_records = n;
        hist.next_revision = req->history->after_revision + (int64_t)n;
        hist.more = hist.next_revision < 5;
        resp.body_case = CAIRN__RESPONSE__BODY_HISTORY;
        resp.history = &hist;
        break;
    }
    case CAIRN__REQUEST__BODY_STATUS:
        status.version = (char *)"mock";
        status.member_name = (char *)"mock-member";
        status.leader = 1;
        status.raft_term = 3;
        resp.body_case = CAIRN__RESPONSE__BODY_STATUS;
        resp.status = &status;
        break;
    case CAIRN__REQUEST__BODY_LEASE_KEEP_ALIVE:
        keepalive.id = req->lease_keep_alive->id;
        keepalive.ttl = 42;
        resp.body_case = CAIRN__RESPONSE__BODY_LEASE_KEEP_ALIVE;
        resp.lease_keep_alive = &keepalive;
        break;
    default:
        error.code = 1000 + 107; /* UNSUPPORTED */
        error.message = (char *)"the mock does not know this request";
        resp.error = &error;
        break;
    }
pack:
    if (nng_msg_alloc(&msg, cairn__response__get_packed_size(&resp)) != 0)
        return NULL;
    cairn__response__pack(&resp, nng_msg_body(msg));
    return msg;
}

static inline bool mock_is_write(const Cairn__Request *req)
{
    return req->body_case == CAIRN__REQUEST__BODY_PUT ||
           req->body_case == CAIRN__REQUEST__BODY_DELETE_RANGE ||
           req->body_case == CAIRN__REQUEST__BODY_TXN;
}

static inline void *mock_thread(void *arg)
{
    struct mock *m = arg;
    for (;;) {
        nng_msg *msg = NULL;
        int rv = nng_recvmsg(m->sock, &msg, 0);
        if (rv == NNG_ECLOSED || __atomic_load_n(&m->stop, __ATOMIC_RELAXED))
            break;
        if (rv != 0)
            continue;
        Cairn__Request *req = cairn__request__unpack(NULL, nng_msg_len(msg), nng_msg_body(msg));
        nng_pipe pipe = nng_msg_get_pipe(msg);
        nng_msg_free(msg);
        if (!req)
            continue;
        nng_msg *reply = NULL;
        bool drop = false;
        pthread_mutex_lock(&m->mu);
        if ((int)req->body_case < MOCK_BODIES)
            m->counts[req->body_case]++;
        m->total++;
        if (m->last)
            cairn__request__free_unpacked(m->last, NULL);
        m->last = req;
        if (m->drop_writes && mock_is_write(req))
            drop = true;
        else if (m->drop_reads > 0 && req->body_case == CAIRN__REQUEST__BODY_RANGE) {
            m->drop_reads--;
            drop = true;
        } else if (m->garbage) {
            if (nng_msg_alloc(&reply, 0) == 0)
                nng_msg_append(reply, "\xff\xff\xff\xff garbage", 12);
        } else if (!m->silent) {
            reply = mock_answer(m, req);
        }
        int delay_ms = m->delay_ms;
        pthread_mutex_unlock(&m->mu);
        if (delay_ms > 0)
            nng_msleep(delay_ms);
        if (drop) {
            /* The member "dies" holding the request: connection gone, no answer. */
            nng_pipe_close(pipe);
        } else if (reply && nng_sendmsg(m->sock, reply, 0) != 0) {
            nng_msg_free(reply);
        }
    }
    return NULL;
}

/*
 * mock_start: serve url (port 0 allowed: m->url gets the real one), with tls
 * (server side, may be NULL).  Returns 0 or an nng error.
 */
static inline int mock_start(struct mock *m, const char *url, nng_tls_config *tls,
                             uint64_t member_id)
{
    int rv;
    memset(m, 0, sizeof(*m));
    pthread_mutex_init(&m->mu, NULL);
    m->member_id = member_id;
    if ((rv = nng_rep0_open(&m->sock)) != 0)
        return rv;
    /* The thread wakes every 50 ms to see whether mock_stop wants it gone: nng 1.5.2's
     * nng_close can hang while another thread is blocked in nng_recvmsg on the socket. */
    nng_socket_set_ms(m->sock, NNG_OPT_RECVTIMEO, 50);
    nng_socket_set_ms(m->sock, NNG_OPT_SENDTIMEO, 1000);
    if ((rv = nng_listener_create(&m->listener, m->sock, url)) != 0)
        goto fail;
    if (tls && (rv = nng_listener_set_ptr(m->listener, NNG_OPT_TLS_CONFIG, tls)) != 0)
        goto fail;
    if ((rv = nng_listener_start(m->listener, 0)) != 0)
        goto fail;
    snprintf(m->url, sizeof(m->url), "%s", url);
    if (strncmp(url, "ipc://", 6) != 0) {
        nng_sockaddr sa;
        if ((rv = nng_listener_get_addr(m->listener, NNG_OPT_LOCADDR, &sa)) != 0)
            goto fail;
        const char *colon = strrchr(url, ':');
        snprintf(m->url, sizeof(m->url), "%.*s:%u", (int)(colon - url), url,
                 (unsigned)ntohs(sa.s_in.sa_port));
    }
    if ((rv = pthread_create(&m->thread, NULL, mock_thread, m)) != 0)
        goto fail;
    m->started = true;
    return 0;
fail:
    nng_close(m->sock);
    return rv;
}

/* mock_stop: the member "dies": its thread stops answering, then the socket closes; free what it kept. */
static inline void mock_stop(struct mock *m)
{
    if (!m->started)
        return;
    __atomic_store_n(&m->stop, 1, __ATOMIC_RELAXED);
    pthread_join(m->thread, NULL);
    nng_close(m->sock);
    if (m->last)
        cairn__request__free_unpacked(m->last, NULL);
    m->last = NULL;
    pthread_mutex_destroy(&m->mu);
    m->started = false;
}

/*
 * A tcp URL on 127.0.0.1 that refuses connections: a socket bound to a fresh
 * port but never listening.  It stays open (for the life of the test
 * process) so no later listener can be given the same port.
 */
static inline void refused_url(char *buf, size_t len)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
    socklen_t salen = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &salen) != 0) {
        snprintf(buf, len, "tcp://127.0.0.1:1"); /* port 1: refused on loopback too */
        return;
    }
    snprintf(buf, len, "tcp://127.0.0.1:%u", (unsigned)ntohs(sa.sin_port));
}

/* Poll pred(arg) until true or deadline_ms pass; returns its last value. */
static inline bool poll_until(bool (*pred)(void *), void *arg, int deadline_ms)
{
    nng_time end = nng_clock() + (nng_time)deadline_ms;
    while (!pred(arg)) {
        if (nng_clock() >= end)
            return pred(arg);
        nng_msleep(5); /* a poll interval, not a wait for the condition */
    }
    return true;
}

#endif
