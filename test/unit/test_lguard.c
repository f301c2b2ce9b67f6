/*
 * daemon/lguard against the real nng: a listener whose probes never reach
 * the socket, and an address where nothing listens any more, are each
 * restarted once; a healthy listener is left alone.
 *
 * nng itself no longer wedges a listener in the way lguard was written for
 * (third_party/nng/handshake-failure.patch), so the wedge is made by
 * registering the wrong listener for the URL: the probe's pipe then arrives
 * from a listener the guard is not counting, which is what it saw when
 * nng's accept loop had stopped.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/reqrep0/req.h>

#include "daemon/lguard.h"

#define INTERVAL_MS 30
#define WAIT_MS 300

struct owner {
    nng_socket sock;
    struct lguard *guard;
    char url[2][160];
    nng_listener real[2]; /* what each slot should watch */
    _Atomic int restarts[2]; /* calls of restart_slot per slot (on the guard's thread) */
    bool listen_on_restart;
};

/* What rpc.c does, reduced: listen again if asked to, and register the listener. */
static int restart_slot(void *arg, size_t i, char *err, size_t errlen)
{
    struct owner *o = arg;
    o->restarts[i]++;
    if (o->listen_on_restart) {
        int rv = nng_listen(o->sock, o->url[i], &o->real[i], 0);
        if (rv != 0) {
            snprintf(err, errlen, "nng_listen %s: %s", o->url[i], nng_strerror(rv));
            return -EIO;
        }
    }
    lguard_set(o->guard, i, o->url[i], o->real[i], NULL);
    return 0;
}

static void setup_owner(struct owner *o, char *dir)
{
    memset(o, 0, sizeof *o);
    assert_non_null(mkdtemp(dir));
    for (int i = 0; i < 2; i++)
        snprintf(o->url[i], sizeof o->url[i], "ipc://%s/s%d.sock", dir, i);
    assert_int_equal(nng_rep0_open(&o->sock), 0);
    assert_int_equal(lguard_start(o->sock, nng_req0_open, "client", INTERVAL_MS, WAIT_MS, restart_slot, o, &o->guard),
                     0);
}

static void teardown_owner(struct owner *o, const char *dir)
{
    lguard_stop(o->guard);
    nng_close(o->sock);
    lguard_free(o->guard);
    rmdir(dir); /* nng unlinked its socket files on close */
}

/* Waits (bounded) until slot i was restarted want times, then a few more rounds to see it stay there. */
static void expect_restarts(struct owner *o, size_t i, int want)
{
    for (int waited = 0; o->restarts[i] < want && waited < 20000; waited += 10)
        usleep(10000);
    usleep((useconds_t)(WAIT_MS + 5 * INTERVAL_MS) * 1000);
    assert_int_equal(o->restarts[i], want);
}

static void test_a_listener_whose_probe_never_reaches_the_socket_is_restarted_once(void **state)
{
    (void)state;
    char dir[] = "/tmp/cairn-test-lguard-XXXXXX";
    struct owner o;
    setup_owner(&o, dir);
    for (int i = 0; i < 2; i++)
        assert_int_equal(nng_listen(o.sock, o.url[i], &o.real[i], 0), 0);
    lguard_set(o.guard, 0, o.url[0], o.real[1], NULL); /* slot 0's pipes will come from another listener */
    lguard_set(o.guard, 1, o.url[1], o.real[1], NULL); /* healthy */
    expect_restarts(&o, 0, 1);
    assert_int_equal(o.restarts[1], 0);
    assert_int_equal(lguard_restarts(o.guard), 1);
    teardown_owner(&o, dir);
}

static void test_an_address_where_nothing_listens_any_more_is_listened_on_again(void **state)
{
    (void)state;
    char dir[] = "/tmp/cairn-test-lguard-XXXXXX";
    struct owner o;
    setup_owner(&o, dir);
    o.listen_on_restart = true;
    assert_int_equal(nng_listen(o.sock, o.url[0], &o.real[0], 0), 0);
    lguard_set(o.guard, 0, o.url[0], o.real[0], NULL);
    assert_int_equal(nng_listener_close(o.real[0]), 0); /* the path is gone with it */
    expect_restarts(&o, 0, 1);
    assert_int_equal(lguard_restarts(o.guard), 1);
    /* and the listener the restart made serves a request */
    nng_socket c;
    char *buf = NULL;
    size_t sz;
    assert_int_equal(nng_req0_open(&c), 0);
    nng_setopt_ms(c, NNG_OPT_RECVTIMEO, 10000);
    nng_setopt_ms(o.sock, NNG_OPT_RECVTIMEO, 10000);
    assert_int_equal(nng_dial(c, o.url[0], NULL, 0), 0);
    assert_int_equal(nng_send(c, "ping", 4, 0), 0);
    assert_int_equal(nng_recv(o.sock, &buf, &sz, NNG_FLAG_ALLOC), 0);
    assert_int_equal(sz, 4);
    nng_free(buf, sz);
    assert_int_equal(nng_send(o.sock, "pong", 4, 0), 0);
    assert_int_equal(nng_recv(c, &buf, &sz, NNG_FLAG_ALLOC), 0);
    assert_memory_equal(buf, "pong", 4);
    nng_free(buf, sz);
    nng_close(c);
    teardown_owner(&o, dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_listener_whose_probe_never_reaches_the_socket_is_restarted_once),
        cmocka_unit_test(test_an_address_where_nothing_listens_any_more_is_listened_on_again),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
