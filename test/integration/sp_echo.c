/*
 * sp_echo: a real nng rep0 server for test_cairnwire.py, to check cairnwire's
 * SP framing against nng itself.  Serves argv[1] (tcp://127.0.0.1:0 or
 * ipc:///path) with 8 contexts; each request body is answered with "echo:"
 * and the body.  A body starting "delay:N:" is answered after N ms, so
 * replies can overtake each other.  Prints the bound URL on stdout, serves
 * until stdin closes.  Built by the test itself: cc sp_echo.c -lnng.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>

#define NCTX 8

struct worker {
    nng_ctx ctx;
    nng_aio *aio;
    nng_msg *msg;
    enum { RECV, WAIT, SEND } state;
};

static struct worker workers[NCTX];

static void worker_cb(void *arg)
{
    struct worker *w = arg;
    switch (w->state) {
    case RECV:
        if (nng_aio_result(w->aio) != 0)
            return; /* closed */
        w->msg = nng_aio_get_msg(w->aio);
        w->state = WAIT;
        {
            const char *body = nng_msg_body(w->msg);
            size_t len = nng_msg_len(w->msg);
            int ms = 0;
            if (len > 6 && memcmp(body, "delay:", 6) == 0)
                ms = atoi(body + 6);
            nng_sleep_aio(ms, w->aio);
        }
        return;
    case WAIT:
        nng_msg_insert(w->msg, "echo:", 5);
        nng_aio_set_msg(w->aio, w->msg);
        w->state = SEND;
        nng_ctx_send(w->ctx, w->aio);
        return;
    case SEND:
        if (nng_aio_result(w->aio) != 0) {
            nng_msg_free(nng_aio_get_msg(w->aio));
            nng_aio_set_msg(w->aio, NULL);
        }
        w->state = RECV;
        nng_ctx_recv(w->ctx, w->aio);
        return;
    }
}

int main(int argc, char **argv)
{
    nng_socket sock;
    nng_listener l;
    int rv;

    if (argc != 2) {
        fprintf(stderr, "usage: sp_echo URL\n");
        return 2;
    }
    if ((rv = nng_rep0_open(&sock)) != 0 || (rv = nng_listener_create(&l, sock, argv[1])) != 0 ||
        (rv = nng_listener_start(l, 0)) != 0) {
        fprintf(stderr, "sp_echo: %s: %s\n", argv[1], nng_strerror(rv));
        return 1;
    }
    for (int i = 0; i < NCTX; i++) {
        if (nng_ctx_open(&workers[i].ctx, sock) != 0 ||
            nng_aio_alloc(&workers[i].aio, worker_cb, &workers[i]) != 0)
            return 1;
        workers[i].state = RECV;
        nng_ctx_recv(workers[i].ctx, workers[i].aio);
    }
    if (strncmp(argv[1], "ipc://", 6) == 0) {
        printf("%s\n", argv[1]);
    } else {
        nng_sockaddr sa;
        if (nng_listener_get_addr(l, NNG_OPT_LOCADDR, &sa) != 0)
            return 1;
        printf("tcp://127.0.0.1:%u\n", (unsigned)ntohs(sa.s_in.sa_port));
    }
    fflush(stdout);
    while (getchar() != EOF)
        ;
    for (int i = 0; i < NCTX; i++)
        nng_aio_stop(workers[i].aio);
    nng_close(sock);
    return 0;
}
