/*
 * cairn-bench's echo server: nng rep0 on a loopback TCP port in the same
 * process, one context per request the client may have in flight, each
 * answering whatever arrives with one Response packed at start (a Put's
 * reply with a header, as small as cairnd's).  No decoding, no copying but
 * the reply's: what is left is nng's request/reply path and libcairn, the
 * ceiling a member cannot beat on the same machine.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>

#include "bench/cairn_bench.h"

struct echo_worker {
    struct echo_server *e;
    nng_ctx ctx;
    nng_aio *aio;
    bool sending;
};

struct echo_server {
    nng_socket sock;
    struct echo_worker *w;
    size_t n;
    uint8_t *reply;
    size_t reply_len;
};

static void echo_cb(void *arg)
{
    struct echo_worker *w = arg;
    nng_msg *msg;

    if (w->sending) {
        if (nng_aio_result(w->aio) != 0) {
            nng_msg_free(nng_aio_get_msg(w->aio));
            nng_aio_set_msg(w->aio, NULL);
        }
        w->sending = false;
        nng_ctx_recv(w->ctx, w->aio);
        return;
    }
    if (nng_aio_result(w->aio) != 0)
        return; /* closed */
    msg = nng_aio_get_msg(w->aio);
    /* Reuse the request's message: rep0 keeps the routing header in the context. */
    nng_msg_clear(msg);
    if (nng_msg_append(msg, w->e->reply, w->e->reply_len) != 0) {
        nng_msg_free(msg);
        nng_ctx_recv(w->ctx, w->aio);
        return;
    }
    nng_aio_set_msg(w->aio, msg);
    w->sending = true;
    nng_ctx_send(w->ctx, w->aio);
}

int echo_start(size_t contexts, struct echo_server **out, char *url, size_t url_len)
{
    struct echo_server *e = calloc(1, sizeof(*e));
    Cairn__Response resp = CAIRN__RESPONSE__INIT;
    Cairn__ResponseHeader hdr = CAIRN__RESPONSE_HEADER__INIT;
    Cairn__PutResponse put = CAIRN__PUT_RESPONSE__INIT;
    nng_listener l;
    int port = 0, rv;

    if (!e)
        return -1;
    /* Typical values: a 64-bit cluster and member ID, a revision in the millions. */
    hdr.cluster_id = 0x8e9e05c52164694dull;
    hdr.member_id = 0x10276657743932ull;
    hdr.revision = 12345678;
    hdr.raft_term = 2;
    resp.header = &hdr;
    resp.body_case = CAIRN__RESPONSE__BODY_PUT;
    resp.put = &put;
    e->reply_len = cairn__response__get_packed_size(&resp);
    if (!(e->reply = malloc(e->reply_len)))
        goto fail;
    cairn__response__pack(&resp, e->reply);

    if ((rv = nng_rep0_open(&e->sock)) != 0) {
        fprintf(stderr, "cairn-bench: echo server: nng_rep0_open: %s\n", nng_strerror(rv));
        goto fail;
    }
    nng_socket_set_size(e->sock, NNG_OPT_RECVMAXSZ, 0);
    if ((rv = nng_listener_create(&l, e->sock, "tcp://127.0.0.1:0")) != 0 ||
        (rv = nng_listener_start(l, 0)) != 0 ||
        (rv = nng_listener_get_int(l, NNG_OPT_TCP_BOUND_PORT, &port)) != 0) {
        fprintf(stderr, "cairn-bench: echo server: listen on tcp://127.0.0.1:0: %s\n", nng_strerror(rv));
        goto fail_sock;
    }
    if (!(e->w = calloc(contexts, sizeof(*e->w))))
        goto fail_sock;
    for (size_t i = 0; i < contexts; i++) {
        struct echo_worker *w = &e->w[i];
        w->e = e;
        if ((rv = nng_ctx_open(&w->ctx, e->sock)) != 0 || (rv = nng_aio_alloc(&w->aio, echo_cb, w)) != 0) {
            fprintf(stderr, "cairn-bench: echo server: context %zu: %s\n", i, nng_strerror(rv));
            goto fail_sock;
        }
        e->n = i + 1;
        nng_ctx_recv(w->ctx, w->aio);
    }
    snprintf(url, url_len, "tcp://127.0.0.1:%d", port);
    *out = e;
    return 0;

fail_sock:
    echo_stop(e);
    return -1;
fail:
    free(e->reply);
    free(e);
    return -1;
}

void echo_stop(struct echo_server *e)
{
    if (!e)
        return;
    nng_close(e->sock);
    for (size_t i = 0; i < e->n; i++) {
        nng_aio_stop(e->w[i].aio);
        nng_aio_free(e->w[i].aio);
    }
    free(e->w);
    free(e->reply);
    free(e);
}
