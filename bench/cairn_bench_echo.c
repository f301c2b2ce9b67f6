/*
 * cairn-bench's echo server: nng rep0 on a loopback TCP port, one context
 * per request the client may have in flight, each answering whatever
 * arrives with one Response packed at start (a Put's reply with a header,
 * as small as cairnd's).  No decoding, no copying but the reply's: what is
 * left is nng's request/reply path and libcairn, the ceiling a member
 * cannot beat on the same machine.
 *
 * By default the server is this program in a child process forked before
 * nng starts, so that, like a member, it has its own nng threads: nng 1.5
 * runs all of a process's socket I/O through one poller thread, and a
 * server sharing it with the client measures a lower ceiling than a real
 * member meets (--echo-inproc shows it).  Like cairnd's, its contexts
 * are marked inline: the poller thread that reads a request runs the
 * callback that answers it.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

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
    pid_t child;   /* the forked server, 0 when in this process */
    int ctl;       /* the pipe to the child: closing it stops the child */
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

static int serve(size_t contexts, struct echo_server **out, char *url, size_t url_len)
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
        /* As cairnd's request contexts: a request the poller reads is answered there (nng_aio_set_inline). */
        nng_aio_set_inline(w->aio, true);
        e->n = i + 1;
        nng_ctx_recv(w->ctx, w->aio);
    }
    snprintf(url, url_len, "tcp://127.0.0.1:%d", port);
    *out = e;
    return 0;

fail_sock:
    echo_stop(e, NULL);
    return -1;
fail:
    free(e->reply);
    free(e);
    return -1;
}

/* The child: serve, tell the parent the URL, then wait for the pipe to close. */
static void echo_child(size_t contexts, int up, int ctl)
{
    struct echo_server *e;
    char url[128] = "";
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (serve(contexts, &e, url, sizeof(url)) != 0)
        _exit(1);
    if (write(up, url, strlen(url) + 1) < 0)
        _exit(1);
    close(up);
    char c;
    while (read(ctl, &c, 1) < 0 && errno == EINTR)
        ;
    _exit(0);
}

int echo_start(size_t contexts, bool inproc, struct echo_server **out, char *url, size_t url_len)
{
    int up[2], ctl[2];
    if (inproc)
        return serve(contexts, out, url, url_len);
    if (pipe(up) != 0 || pipe(ctl) != 0) {
        fprintf(stderr, "cairn-bench: echo server: pipe: %s\n", strerror(errno));
        return -1;
    }
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "cairn-bench: echo server: fork: %s\n", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        close(up[0]);
        close(ctl[1]);
        echo_child(contexts, up[1], ctl[0]);
    }
    close(up[1]);
    close(ctl[0]);
    struct echo_server *e = calloc(1, sizeof(*e));
    ssize_t n = 0, got;
    while ((size_t)n < url_len - 1 && (got = read(up[0], url + n, url_len - 1 - (size_t)n)) != 0) {
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            break;
        n += got;
        if (url[n - 1] == '\0')
            break;
    }
    close(up[0]);
    url[n] = '\0';
    if (!e || n == 0 || strncmp(url, "tcp://", 6) != 0) {
        fprintf(stderr, "cairn-bench: the echo server did not start\n");
        close(ctl[1]);
        waitpid(pid, NULL, 0);
        free(e);
        return -1;
    }
    e->child = pid;
    e->ctl = ctl[1];
    *out = e;
    return 0;
}

void echo_stop(struct echo_server *e, double *child_cpu_s)
{
    if (!e)
        return;
    if (e->child) {
        struct rusage ru = {0};
        int st;
        close(e->ctl);
        for (int i = 0; i < 100 && wait4(e->child, &st, WNOHANG, &ru) == 0; i++)
            usleep(20000);
        if (kill(e->child, 0) == 0) {
            kill(e->child, SIGKILL);
            wait4(e->child, &st, 0, &ru);
        }
        if (child_cpu_s)
            *child_cpu_s = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
        free(e);
        return;
    }
    nng_close(e->sock);
    for (size_t i = 0; i < e->n; i++) {
        nng_aio_stop(e->w[i].aio);
        nng_aio_free(e->w[i].aio);
    }
    free(e->w);
    free(e->reply);
    free(e);
}
