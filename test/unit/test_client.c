/*
 * libcairn against scripted in-process members (test_client_mock.h): every
 * KV helper round-trips, errors map with their detail, endpoints rotate and
 * fail over, reads retry and writes never resend once sent, deadlines hold,
 * many async calls complete exactly once, and close never hangs.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <sys/socket.h>
#include <unistd.h>

#include "client/cairn.h"
#include "test_client_mock.h"

/* Generous: deadlines that only a broken client would reach. */
#define LONG_MS 20000

static char tmpdir[256];

static int group_setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/cairn-client-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static struct cairn_client *open_client(const char *const *urls, size_t n, int dial_ms,
                                        int call_ms)
{
    struct cairn_config cfg = {.endpoints = urls, .n_endpoints = n,
                               .dial_timeout_ms = dial_ms, .call_timeout_ms = call_ms};
    struct cairn_client *c = NULL;
    struct cairn_error_detail err;
    int rv = cairn_open(&cfg, &c, &err);
    if (rv != 0)
        fail_msg("cairn_open: %s", err.message);
    return c;
}

struct connected_arg {
    struct cairn_client *c;
    size_t i;
};

static bool is_connected(void *arg)
{
    struct connected_arg *a = arg;
    return cairn_endpoint_connected(a->c, a->i);
}

static void wait_connected(struct cairn_client *c, size_t i)
{
    struct connected_arg a = {c, i};
    assert_true(poll_until(is_connected, &a, LONG_MS));
}

/* Members a (ID 1) and b (ID 2), and a client connected to both; a test
 * scripts a (error_code, drop_writes, ...) before its first call. */
static struct cairn_client *two_members(struct mock *a, struct mock *b)
{
    assert_int_equal(mock_start(a, "tcp://127.0.0.1:0", NULL, 1), 0);
    assert_int_equal(mock_start(b, "tcp://127.0.0.1:0", NULL, 2), 0);
    const char *urls[] = {a->url, b->url};
    struct cairn_client *c = open_client(urls, 2, 0, LONG_MS);
    wait_connected(c, 0);
    wait_connected(c, 1);
    return c;
}

static bool bytes_eq(ProtobufCBinaryData b, const char *s)
{
    return b.len == strlen(s) && memcmp(b.data, s, b.len) == 0;
}

/* ------------------------------------------------------------ round trips */

static void test_put_sends_every_option_and_returns_prev_kv(void **state)
{
    (void)state;
    struct mock m;
    assert_int_equal(mock_start(&m, "tcp://127.0.0.1:0", NULL, 11), 0);
    const char *urls[] = {m.url};
    struct cairn_client *c = open_client(urls, 1, 0, LONG_MS);

    Cairn__Response *resp = NULL;
    struct cairn_error_detail err;
    struct cairn_put put = {.key = CAIRN_STR("k1"), .value = CAIRN_STR("val"), .lease = 99,
                            .prev_kv = true, .ignore_lease = true};
    assert_int_equal(cairn_put(c, &put, NULL, &resp, &err), 0);
    assert_int_equal(err.code, 0);
    assert_int_equal(err.member_id, 11);
    assert_non_null(resp->put->prev_kv);
    assert_true(bytes_eq(resp->put->prev_kv->value, "old"));
    assert_true(bytes_eq(resp->put->prev_kv->key, "k1"));
    cairn_response_free(resp);

    Cairn__Request *seen = mock_last(&m);
    assert_int_equal(seen->body_case, CAIRN__REQUEST__BODY_PUT);
    assert_true(bytes_eq(seen->put->key, "k1"));
    assert_true(bytes_eq(seen->put->value, "val"));
    assert_int_equal(seen->put->lease, 99);
    assert_true(seen->put->prev_kv);
    assert_false(seen->put->ignore_value);
    assert_true(seen->put->ignore_lease);
    cairn__request__free_unpacked(seen, NULL);

    /* resp is optional */
    struct cairn_put put2 = {.key = CAIRN_STR("k2"), .ignore_value = true};
    assert_int_equal(cairn_put(c, &put2, NULL, NULL, NULL), 0);
    seen = mock_last(&m);
    assert_true(seen->put->ignore_value);
    cairn__request__free_unpacked(seen, NULL);

    cairn_close(c);
    mock_stop(&m);
}

static void test_get_finds_a_key_and_reports_a_missing_one(void **state)
{
    (void)state;
    struct mock m;
    assert_int_equal(mock_start(&m, "tcp://127.0.0.1:0", NULL, 1), 0);
    const char *urls[] = {m.url};
    struct cairn_client *c = open_client(urls, 1, 0, LONG_MS);

    Cairn__Response *resp = NULL;
    const Cairn__KeyValue *kv = NULL;
    assert_int_equal(cairn_get(c, CAIRN_STR("alpha"), NULL, &resp, &kv, NULL), 0);
    assert_non_null(kv);
    assert_true(bytes_eq(kv->value, "v:alpha"));
    assert_int_equal(kv->mod_revision, 7);
    cairn_response_free(resp);

    assert_int_equal(cairn_get(c, CAIRN_STR("missing"), NULL, &resp, &kv, NULL), 0);
    assert_null(kv);
    assert_non_null(resp);
    cairn_response_free(resp);

    cairn_close(c);
    mock_stop(&m);
}

static void test_range_sends_every_option(void **state)
{
    (void)state;
    struct mock m;
    assert_int_equal(mock_start(&m, "tcp://127.0.0.1:0", NULL, 1), 0);
    const char *urls[] = {m.url};
    struct cairn_client *c = open_client(urls, 1, 0, LONG_MS);

    struct cairn_range r = {
        .key = CAIRN_STR("a"), .range_end = CAIRN_STR("b"), .limit = 10, .revision = 42,
        .sort_order = CAIRN__RANGE_REQUEST__SORT_ORDER__DESCEND,
        .sort_target = CAIRN__RANGE_REQUEST__SORT_TARGET__MOD, .serializable = true,
        .keys_only = true, .count_only = true, .min_mod_revision = 1, .max_mod_revision = 2,
        .min_create_revision = 3, .max_create_revision = 4};
    Cairn__Response *resp = NULL;
    assert_int_equal(cairn_range_call(c, &r, NULL, &resp, NULL), 0);
    assert_int_equal(resp->range->n_kvs, 1);
    assert_int_equal(resp->range->count, 1);
    cairn_response_free(resp);

    Cairn__Request *seen = mock_last(&m);
    const Cairn__RangeRequest *q = seen->range;
    assert_true(bytes_eq(q->key, "a"));
    assert_true(bytes_eq(q->range_end, "b"));
    assert_int_equal(q->limit, 10);
    assert_int_equal(q->revision, 42);
    assert_int_equal(q->sort_order, CAIRN__RANGE_REQUEST__SORT_ORDER__DESCEND);
    assert_int_equal(q->sort_target, CAIRN__RANGE_REQUEST__SORT_TARGET__MOD);
    assert_true(q->serializable && q->keys_only && q->count_only);
    assert_int_equal(q->min_mod_revision, 1);
    assert_int_equal(q->max_mod_revision, 2);
    assert_int_equal(q->min_create_revision, 3);
    assert_int_equal(q->max_create_revision, 4);
    cairn__request__free_unpacked(seen, NULL);

    cairn_close(c);
    mock_stop(&m);
}

static void test_delete_range_counts_and_returns_prev_kvs(void **state)
{
    (void)state;
    struct mock m;
    assert_int_equal(mock_start(&m, "tcp://127.0.0.1:0", NULL, 1), 0);
    const char *urls[] = {m.url};
    struct cairn_client *c = open_client(urls, 1, 0, LONG_MS);

    struct cairn_delete d = {.key = CAIRN_STR("p/"), .range_end = CAIRN_STR("p0"), .prev_kv = true};
    int64_t deleted = 0;
    Cairn__Response *resp = NULL;
    assert_int_equal(cairn_delete_range(c, &d, NULL, &deleted, &resp, NULL), 0);
    assert_int_equal(deleted, 3);
    assert_int_equal(resp->delete_range->n_prev_kvs, 1);
    assert_true(bytes_eq(resp->delete_range->prev_kvs[0]->value, "gone"));
    cairn_response_free(resp);

    Cairn__Request *seen = mock_last(&m);
    assert_true(bytes_eq(seen->delete_range->key, "p/"));
    assert_true(bytes_eq(seen->delete_range->range_end, "p0"));
    assert_true(seen->delete_range->prev_kv);
    cairn__request__free_unpacked(seen, NULL);

    cairn_close(c);
    mock_stop(&m);
}

static void test_txn_builds_compares_ops_and_nested_txn(void **state)
{
    (void)state;
    struct mock m;
    assert_int_equal(mock_start(&m, "tcp://127.0.0.1:0", NULL, 1), 0);
    const char *urls[] = {m.url};
    struct cairn_client *c = open_client(urls, 1, 0, LONG_MS);

    struct cairn_txn *t = cairn_txn_new(), *inner = cairn_txn_new();
    char key[] = "a";
    assert_int_equal(cairn_txn_compare_int(t, (struct cairn_bytes){key, 1}, (struct cairn_bytes){0},
                                           CAIRN__COMPARE__COMPARE_TARGET__MOD,
                                           CAIRN__COMPARE__COMPARE_RESULT__EQUAL, 5), 0);
    key[0] = 'z'; /* the builder copied it */
    assert_int_equal(cairn_txn_compare_value(t, CAIRN_STR("b"), CAIRN_STR("c"),
                                             CAIRN__COMPARE__COMPARE_RESULT__NOT_EQUAL,
                                             CAIRN_STR("x")), 0);
    assert_int_equal(cairn_txn_compare_int(t, CAIRN_STR("b"), (struct cairn_bytes){0},
                                           CAIRN__COMPARE__COMPARE_TARGET__VALUE,
                                           CAIRN__COMPARE__COMPARE_RESULT__EQUAL, 1), -EINVAL);
    struct cairn_put put = {.key = CAIRN_STR("a"), .value = CAIRN_STR("1"), .prev_kv = true};
    assert_int_equal(cairn_txn_put(t, CAIRN_TXN_SUCCESS, &put), 0);
    struct cairn_range r = {.key = CAIRN_STR("b"), .limit = 3};
    assert_int_equal(cairn_txn_range(inner, CAIRN_TXN_SUCCESS, &r), 0);
    assert_int_equal(cairn_txn_nest(t, CAIRN_TXN_SUCCESS, inner), 0);
    assert_int_equal(cairn_txn_nest(t, CAIRN_TXN_SUCCESS, t), -EINVAL);
    struct cairn_delete d = {.key = CAIRN_STR("c")};
    assert_int_equal(cairn_txn_delete(t, CAIRN_TXN_FAILURE, &d), 0);

    bool ok = false;
    Cairn__Response *resp = NULL;
    assert_int_equal(cairn_txn_commit(c, t, NULL, &ok, &resp, NULL), 0);
    assert_true(ok);
    assert_int_equal(resp->txn->n_responses, 2);
    assert_int_equal(resp->txn->responses[0]->response_case,
                     CAIRN__RESPONSE_OP__RESPONSE_RESPONSE_PUT);
    assert_int_equal(resp->txn->responses[1]->response_case,
                     CAIRN__RESPONSE_OP__RESPONSE_RESPONSE_TXN);
    cairn_response_free(resp);

    Cairn__Request *seen = mock_last(&m);
    const Cairn__TxnRequest *q = seen->txn;
    assert_int_equal(q->n_compare, 2);
    assert_true(bytes_eq(q->compare[0]->key, "a"));
    assert_int_equal(q->compare[0]->target, CAIRN__COMPARE__COMPARE_TARGET__MOD);
    assert_int_equal(q->compare[0]->target_union_case, CAIRN__COMPARE__TARGET_UNION_MOD_REVISION);
    assert_int_equal(q->compare[0]->mod_revision, 5);
    assert_int_equal(q->compare[1]->target, CAIRN__COMPARE__COMPARE_TARGET__VALUE);
    assert_int_equal(q->compare[1]->result, CAIRN__COMPARE__COMPARE_RESULT__NOT_EQUAL);
    assert_true(bytes_eq(q->compare[1]->value, "x"));
    assert_true(bytes_eq(q->compare[1]->range_end, "c"));
    assert_int_equal(q->n_success, 2);
    assert_int_equal(q->success[0]->request_case, CAIRN__REQUEST_OP__REQUEST_REQUEST_PUT);
    assert_true(q->success[0]->request_put->prev_kv);
    assert_int_equal(q->success[1]->request_case, CAIRN__REQUEST_OP__REQUEST_REQUEST_TXN);
    assert_int_equal(q->success[1]->request_txn->n_success, 1);
    assert_int_equal(q->success[1]->request_txn->success[0]->request_range->limit, 3);
    assert_int_equal(q->n_failure, 1);
    assert_true(bytes_eq(q->failure[0]->request_delete_range->key, "c"));
    cairn__request__free_unpacked(seen, NULL);

    /* With no compares the mock takes the failure branch. */
    struct cairn_txn *t2 = cairn_txn_new();
    assert_int_equal(cairn_txn_delete(t2, CAIRN_TXN_FAILURE, &d), 0);
    ok = true;
    assert_int_equal(cairn_txn_commit(c, t2, NULL, &ok, NULL, NULL), 0);
    assert_false(ok);

    cairn_txn_free(t);
    cairn_txn_free(t2);
    cairn_close(c);
    mock_stop(&m);
}

static void test_compact_and_status(void **state)
{
    (void)state;
    struct mock m;
    assert_int_equal(mock_start(&m, "tcp://127.0.0.1:0", NULL, 5), 0);
    const char *urls[] = {m.url};
    struct cairn_client *c = open_client(urls, 1, 0, LONG_MS);

    assert_int_equal(cairn_compact(c, 17, true, NULL, NULL), 0);
    Cairn__Request *seen = mock_last(&m);
    assert_int_equal(seen->compact->revision, 17);
    assert_true(seen->compact->physical);
    cairn__request__free_unpacked(seen, NULL);

    Cairn__Response *resp = NULL;
    struct cairn_call_opts opts = {.pinned = true, .endpoint = 0};
    assert_int_equal(cairn_status(c, &opts, &resp, NULL), 0);
    assert_string_equal(resp->status->member_name, "mock-member");
    assert_int_equal(resp->header->member_id, 5);
    cairn_response_free(resp);

    cairn_close(c);
    mock_stop(&m);
}

struct hist_seen {
    int64_t revs[16];
    bool tomb[16];
    int n;
    int stop_after;
};

static int hist_collect(void *arg, const Cairn__HistoryRecord *rec)
{
    struct hist_seen *h = arg;
    h->revs[h->n] = rec->kv->mod_revision;
    h->tomb[h->n] = rec->tombstone;
    h->n++;
    return h->n == h->stop_after ? 99 : 0;
}

static void test_history_pages_through_every_record(void **state)
{
    (void)state;
    struct mock m;
    assert_int_equal(mock_start(&m, "tcp://127.0.0.1:0", NULL, 1), 0);
    const char *urls[] = {m.url};
    struct cairn_client *c = open_client(urls, 1, 0, LONG_MS);

    struct cairn_history h = {.key = CAIRN_STR("k"), .limit = 2};
    Cairn__Response *resp = NULL;
    assert_int_equal(cairn_history_page(c, &h, NULL, &resp, NULL), 0);
    assert_int_equal(resp->history->n_records, 2);
    assert_true(resp->history->more);
    assert_int_equal(resp->history->next_revision, 2);
    cairn_response_free(resp);

    struct hist_seen seen = {.n = 0};
    unsigned before = mock_count(&m, CAIRN__REQUEST__BODY_HISTORY);
    assert_int_equal(cairn_history_each(c, &h, NULL, hist_collect, &seen, NULL), 0);
    assert_int_equal(seen.n, 5);
    for (int i = 0; i < 5; i++)
        assert_int_equal(seen.revs[i], i + 1);
    assert_true(seen.tomb[3]);
    assert_false(seen.tomb[2]);
    assert_int_equal(mock_count(&m, CAIRN__REQUEST__BODY_HISTORY) - before, 3); /* 2+2+1 */

    struct hist_seen stop = {.n = 0, .stop_after = 3};
    assert_int_equal(cairn_history_each(c, &h, NULL, hist_collect, &stop, NULL), 99);
    assert_int_equal(stop.n, 3);

    cairn_close(c);
    mock_stop(&m);
}

static void test_generic_call_adds_the_auth_token(void **state)
{
    (void)state;
    struct mock m;
    assert_int_equal(mock_start(&m, "tcp://127.0.0.1:0", NULL, 1), 0);
    const char *urls[] = {m.url};
    struct cairn_config cfg = {.endpoints = urls, .n_endpoints = 1, .auth_token = "tok-1"};
    struct cairn_client *c = NULL;
    assert_int_equal(cairn_open(&cfg, &c, NULL), 0);

    Cairn__StatusRequest st = CAIRN__STATUS_REQUEST__INIT;
    Cairn__Request req = CAIRN__REQUEST__INIT;
    req.body_case = CAIRN__REQUEST__BODY_STATUS;
    req.status = &st;
    Cairn__Response *resp = NULL;
    assert_int_equal(cairn_call(c, &req, NULL, &resp, NULL), 0);
    assert_int_equal(resp->body_case, CAIRN__RESPONSE__BODY_STATUS);
    cairn_response_free(resp);
    Cairn__Request *seen = mock_last(&m);
    assert_string_equal(seen->auth_token, "tok-1");
    cairn__request__free_unpacked(seen, NULL);

    req.auth_token = "mine";
    assert_int_equal(cairn_call(c, &req, NULL, NULL, NULL), 0);
    seen = mock_last(&m);
    assert_string_equal(seen->auth_token, "mine");
    cairn__request__free_unpacked(seen, NULL);

    req.auth_token = NULL;
    assert_int_equal(cairn_set_auth_token(c, "tok-2"), 0);
    assert_int_equal(cairn_call(c, &req, NULL, NULL, NULL), 0);
    seen = mock_last(&m);
    assert_string_equal(seen->auth_token, "tok-2");
    cairn__request__free_unpacked(seen, NULL);

    cairn_close(c);
    mock_stop(&m);
}

/* ---------------------------------------------------------------- errors */

static void test_error_reply_maps_code_message_and_compact_revision(void **state)
{
    (void)state;
    struct mock m;
    assert_int_equal(mock_start(&m, "tcp://127.0.0.1:0", NULL, 9), 0);
    m.error_code = CAIRN_E_COMPACTED;
    m.error_compact_rev = 42;
    m.error_message = "required revision 3 has been compacted; compact revision is 42";
    const char *urls[] = {m.url};
    struct cairn_client *c = open_client(urls, 1, 0, LONG_MS);

    struct cairn_range r = {.key = CAIRN_STR("a"), .revision = 3};
    Cairn__Response *resp = (Cairn__Response *)&r; /* must be reset to NULL */
    struct cairn_error_detail err;
    assert_int_equal(cairn_range_call(c, &r, NULL, &resp, &err), -CAIRN_E_COMPACTED);
    assert_null(resp);
    assert_int_equal(err.code, -CAIRN_E_COMPACTED);
    assert_int_equal(err.compact_revision, 42);
    assert_int_equal(err.member_id, 9);
    assert_string_equal(err.message, m.error_message);
    /* COMPACTED is final: not retried. */
    assert_int_equal(err.attempts, 1);

    /* An errno value on the wire comes back as -errno. */
    pthread_mutex_lock(&m.mu);
    m.error_code = EPERM;
    m.error_message = NULL;
    pthread_mutex_unlock(&m.mu);
    struct cairn_put put = {.key = CAIRN_STR("a")};
    assert_int_equal(cairn_put(c, &put, NULL, NULL, &err), -EPERM);
    assert_string_equal(err.message, "scripted error");

    cairn_close(c);
    mock_stop(&m);
}

static void test_garbage_reply_is_malformed(void **state)
{
    (void)state;
    struct mock m;
    assert_int_equal(mock_start(&m, "tcp://127.0.0.1:0", NULL, 1), 0);
    m.garbage = true;
    const char *urls[] = {m.url};
    struct cairn_client *c = open_client(urls, 1, 0, LONG_MS);
    Cairn__Response *resp = NULL;
    const Cairn__KeyValue *kv = NULL;
    struct cairn_error_detail err;
    assert_int_equal(cairn_get(c, CAIRN_STR("a"), NULL, &resp, &kv, &err), -CAIRN_E_MALFORMED);
    assert_null(resp);
    assert_non_null(strstr(err.message, "not a Response"));
    cairn_close(c);
    mock_stop(&m);
}

static void test_open_rejects_bad_configuration(void **state)
{
    (void)state;
    struct cairn_client *c = NULL;
    struct cairn_error_detail err;
    const char *bad_scheme[] = {"http://127.0.0.1:1"};
    struct cairn_config cfg = {.endpoints = bad_scheme, .n_endpoints = 1};
    assert_int_equal(cairn_open(&cfg, &c, &err), -CAIRN_E_CONFIG);
    assert_null(c);
    assert_non_null(strstr(err.message, "http://127.0.0.1:1"));

    cfg.n_endpoints = 0;
    assert_int_equal(cairn_open(&cfg, &c, &err), -CAIRN_E_CONFIG);

    const char *tls_ip[] = {"tls+tcp://127.0.0.1:2479"};
    struct cairn_config t1 = {.endpoints = tls_ip, .n_endpoints = 1,
                              .tls = {.ca_file = "/nonexistent/ca.pem"}};
    assert_int_equal(cairn_open(&t1, &c, &err), -CAIRN_E_CONFIG);
    assert_non_null(strstr(err.message, "not a DNS name"));

    struct cairn_config t2 = {.endpoints = tls_ip, .n_endpoints = 1};
    assert_int_equal(cairn_open(&t2, &c, &err), -CAIRN_E_CONFIG);
    assert_non_null(strstr(err.message, "ca_file"));

    t1.tls.server_name = "localhost";
    assert_int_equal(cairn_open(&t1, &c, &err), -CAIRN_E_CONFIG);
    assert_non_null(strstr(err.message, "/nonexistent/ca.pem"));

    const char *ok[] = {"tcp://127.0.0.1:1"};
    struct cairn_config neg = {.endpoints = ok, .n_endpoints = 1, .call_timeout_ms = -5};
    assert_int_equal(cairn_open(&neg, &c, &err), -CAIRN_E_CONFIG);
}

/* cairn_watch_poll refuses a bad set before it sends anything (the rest is test_watch*.py's, on real members). */
static void test_watch_poll_rejects_a_bad_set(void **state)
{
    (void)state;
    struct mock m;
    assert_int_equal(mock_start(&m, "tcp://127.0.0.1:0", NULL, 1), 0);
    const char *urls[] = {m.url};
    struct cairn_client *c = open_client(urls, 1, 0, LONG_MS);
    struct cairn_watch *ws[2] = {NULL, NULL};
    struct cairn_watch_poll *p = (struct cairn_watch_poll *)&p; /* set to NULL on failure */
    assert_int_equal(cairn_watch_poll(c, ws, 0, 100, 0, &p, NULL), -EINVAL);
    assert_null(p);
    assert_int_equal(cairn_watch_poll(c, ws, 4097, 100, 0, &p, NULL), -EINVAL);
    assert_int_equal(cairn_watch_poll(c, ws, 2, 100, 0, &p, NULL), -EINVAL); /* NULL watches */
    assert_int_equal(cairn_watch_poll(c, ws, 1, -1, 0, &p, NULL), -EINVAL);
    assert_int_equal(cairn_watch_poll(c, ws, 1, 100, 0, NULL, NULL), -EINVAL);
    assert_int_equal(m.total, 0);
    cairn_watch_poll_free(NULL);
    cairn_close(c);
    mock_stop(&m);
}

/* --------------------------------------------------- endpoints and retries */

static void test_calls_rotate_round_robin_across_two_members(void **state)
{
    (void)state;
    struct mock a, b;
    struct cairn_client *c = two_members(&a, &b);

    unsigned a0 = mock_total(&a), b0 = mock_total(&b);
    uint64_t last = 0;
    for (int i = 0; i < 10; i++) {
        Cairn__Response *resp = NULL;
        const Cairn__KeyValue *kv;
        struct cairn_error_detail err;
        assert_int_equal(cairn_get(c, CAIRN_STR("k"), NULL, &resp, &kv, &err), 0);
        assert_int_not_equal(err.member_id, last); /* alternates */
        last = err.member_id;
        cairn_response_free(resp);
    }
    assert_int_equal(mock_total(&a) - a0, 5);
    assert_int_equal(mock_total(&b) - b0, 5);

    cairn_close(c);
    mock_stop(&a);
    mock_stop(&b);
}

static void test_read_fails_over_from_a_refused_member(void **state)
{
    (void)state;
    char down[64];
    struct mock b;
    refused_url(down, sizeof(down));
    assert_int_equal(mock_start(&b, "tcp://127.0.0.1:0", NULL, 2), 0);
    const char *urls[] = {down, b.url};
    /* Short dial timeout: an attempt on the refused member gives up quickly. */
    struct cairn_client *c = open_client(urls, 2, 200, LONG_MS);

    for (int i = 0; i < 6; i++) {
        Cairn__Response *resp = NULL;
        const Cairn__KeyValue *kv;
        struct cairn_error_detail err;
        assert_int_equal(cairn_get(c, CAIRN_STR("k"), NULL, &resp, &kv, &err), 0);
        assert_int_equal(err.endpoint, 1);
        assert_int_equal(err.member_id, 2);
        cairn_response_free(resp);
    }
    assert_int_equal(mock_count(&b, CAIRN__REQUEST__BODY_RANGE), 6);
    assert_false(cairn_endpoint_connected(c, 0));

    cairn_close(c);
    mock_stop(&b);
}

static void test_read_retries_elsewhere_after_no_leader(void **state)
{
    (void)state;
    struct mock a, b;
    struct cairn_client *c = two_members(&a, &b);
    a.error_code = CAIRN_E_NO_LEADER;

    /* The first call starts at endpoint 0. */
    Cairn__Response *resp = NULL;
    const Cairn__KeyValue *kv;
    struct cairn_error_detail err;
    assert_int_equal(cairn_get(c, CAIRN_STR("k"), NULL, &resp, &kv, &err), 0);
    assert_int_equal(err.attempts, 2);
    assert_int_equal(err.endpoint, 1);
    assert_int_equal(mock_count(&a, CAIRN__REQUEST__BODY_RANGE), 1);
    assert_int_equal(mock_count(&b, CAIRN__REQUEST__BODY_RANGE), 1);
    cairn_response_free(resp);

    cairn_close(c);
    mock_stop(&a);
    mock_stop(&b);
}

/* A member that refuses what only the leader does (NOT_LEADER) has done nothing: any call moves on. */
static void test_not_leader_refusal_moves_to_the_next_member(void **state)
{
    (void)state;
    struct mock a, b;
    struct cairn_client *c = two_members(&a, &b);
    a.error_code = CAIRN_E_NOT_LEADER;

    int64_t ttl = 0;
    struct cairn_error_detail err;
    assert_int_equal(cairn_lease_keepalive(c, 7, NULL, &ttl, &err), 0);
    assert_int_equal(ttl, 42);
    assert_int_equal(err.endpoint, 1);
    assert_int_equal(mock_count(&a, CAIRN__REQUEST__BODY_LEASE_KEEP_ALIVE), 1);
    assert_int_equal(mock_count(&b, CAIRN__REQUEST__BODY_LEASE_KEEP_ALIVE), 1);
    /* pinned to the refusing member: its answer, at once (asking it again cannot help) */
    struct cairn_call_opts pin = {.pinned = true, .endpoint = 0};
    assert_int_equal(cairn_lease_keepalive(c, 7, &pin, &ttl, &err), -CAIRN_E_NOT_LEADER);
    assert_int_equal(err.attempts, 1);
    assert_int_equal(mock_count(&a, CAIRN__REQUEST__BODY_LEASE_KEEP_ALIVE), 2);

    cairn_close(c);
    mock_stop(&a);
    mock_stop(&b);
}

/* A stopping member answers STOPPED only to what it had not proposed: a write
 * goes on to the next member, or, pinned, gets the answer. */
static void test_stopped_refusal_moves_a_write_to_the_next_member(void **state)
{
    (void)state;
    struct mock a, b;
    struct cairn_client *c = two_members(&a, &b);
    a.error_code = CAIRN_E_STOPPED;

    struct cairn_error_detail err;
    struct cairn_put put = {.key = CAIRN_STR("k"), .value = CAIRN_STR("v")};
    assert_int_equal(cairn_put(c, &put, NULL, NULL, &err), 0);
    assert_int_equal(err.endpoint, 1);
    assert_int_equal(err.attempts, 2);
    assert_int_equal(mock_count(&a, CAIRN__REQUEST__BODY_PUT), 1);
    assert_int_equal(mock_count(&b, CAIRN__REQUEST__BODY_PUT), 1);
    struct cairn_call_opts pin = {.pinned = true, .endpoint = 0};
    assert_int_equal(cairn_put(c, &put, &pin, NULL, &err), -CAIRN_E_STOPPED);
    assert_int_equal(err.attempts, 1);

    cairn_close(c);
    mock_stop(&a);
    mock_stop(&b);
}

static void *member_back_after(void *arg)
{
    struct mock *m = arg;
    nng_msleep(150);
    pthread_mutex_lock(&m->mu);
    m->error_code = 0;
    pthread_mutex_unlock(&m->mu);
    return NULL;
}

/* With one endpoint, a write refused STOPPED is asked again, after the
 * round's pause, until the member is back (a restart). */
static void test_a_write_rides_through_a_member_restart(void **state)
{
    (void)state;
    struct mock a;
    assert_int_equal(mock_start(&a, "tcp://127.0.0.1:0", NULL, 1), 0);
    a.error_code = CAIRN_E_STOPPED;
    const char *urls[] = {a.url};
    struct cairn_client *c = open_client(urls, 1, 0, LONG_MS);
    wait_connected(c, 0);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, member_back_after, &a), 0);
    struct cairn_error_detail err;
    struct cairn_put put = {.key = CAIRN_STR("k"), .value = CAIRN_STR("v")};
    assert_int_equal(cairn_put(c, &put, NULL, NULL, &err), 0);
    pthread_join(t, NULL);
    assert_true(err.attempts >= 2);
    assert_int_equal(mock_count(&a, CAIRN__REQUEST__BODY_PUT), (unsigned)err.attempts);
    cairn_close(c);
    mock_stop(&a);
}

static void test_write_is_not_retried_after_a_member_answered(void **state)
{
    (void)state;
    struct mock a, b;
    struct cairn_client *c = two_members(&a, &b);
    a.error_code = CAIRN_E_NO_LEADER;

    struct cairn_put put = {.key = CAIRN_STR("k"), .value = CAIRN_STR("v")};
    struct cairn_error_detail err;
    assert_int_equal(cairn_put(c, &put, NULL, NULL, &err), -CAIRN_E_NO_LEADER);
    assert_int_equal(err.attempts, 1);
    assert_int_equal(mock_count(&a, CAIRN__REQUEST__BODY_PUT), 1);
    assert_int_equal(mock_count(&b, CAIRN__REQUEST__BODY_PUT), 0);

    cairn_close(c);
    mock_stop(&a);
    mock_stop(&b);
}

struct async_one {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    int rc;
    struct cairn_error_detail err;
};

static void async_one_cb(void *arg, int rc, Cairn__Response *resp,
                         const struct cairn_error_detail *err)
{
    struct async_one *a = arg;
    cairn_response_free(resp);
    pthread_mutex_lock(&a->mu);
    a->rc = rc;
    a->err = *err;
    a->done = true;
    pthread_cond_signal(&a->cv);
    pthread_mutex_unlock(&a->mu);
}

static void async_one_wait(struct async_one *a)
{
    pthread_mutex_lock(&a->mu);
    while (!a->done)
        pthread_cond_wait(&a->cv, &a->mu);
    pthread_mutex_unlock(&a->mu);
}

static void test_write_to_a_refused_member_moves_on(void **state)
{
    (void)state;
    char down[64], later[300];
    refused_url(down, sizeof(down));
    snprintf(later, sizeof(later), "ipc://%s/later.sock", tmpdir);
    const char *urls[] = {down, later};
    struct cairn_client *c = open_client(urls, 2, 300, LONG_MS);

    /* Nothing listens anywhere yet, so the first attempt is endpoint 0's. */
    struct async_one a = {.done = false};
    pthread_mutex_init(&a.mu, NULL);
    pthread_cond_init(&a.cv, NULL);
    Cairn__PutRequest p = CAIRN__PUT_REQUEST__INIT;
    p.key = mock_bin("w");
    Cairn__Request req = CAIRN__REQUEST__INIT;
    req.body_case = CAIRN__REQUEST__BODY_PUT;
    req.put = &p;
    assert_int_equal(cairn_call_async(c, &req, NULL, async_one_cb, &a), 0);

    struct mock b;
    assert_int_equal(mock_start(&b, later, NULL, 2), 0);
    async_one_wait(&a);
    assert_int_equal(a.rc, 0);
    assert_int_equal(a.err.endpoint, 1);
    assert_true(a.err.attempts >= 2);
    assert_int_equal(mock_count(&b, CAIRN__REQUEST__BODY_PUT), 1);

    cairn_close(c);
    mock_stop(&b);
}

static void test_write_whose_member_dies_after_receiving_it_is_unknown_and_sent_once(void **state)
{
    (void)state;
    struct mock a, b;
    struct cairn_client *c = two_members(&a, &b);
    a.drop_writes = true;

    struct cairn_put put = {.key = CAIRN_STR("k"), .value = CAIRN_STR("v")};
    struct cairn_error_detail err;
    assert_int_equal(cairn_put(c, &put, NULL, NULL, &err), -CAIRN_E_TIMEOUT);
    assert_non_null(strstr(err.message, "outcome is unknown"));
    assert_int_equal(err.attempts, 1);
    assert_int_equal(err.endpoint, 0);

    /*
     * Let member A come back on the same socket: req0 would resend a pending
     * request on the new connection before anything else.  A read pinned to
     * A that completes proves the reconnection happened, and A still saw
     * the write once; B never saw it.
     */
    pthread_mutex_lock(&a.mu);
    a.drop_writes = false;
    pthread_mutex_unlock(&a.mu);
    wait_connected(c, 0);
    Cairn__Response *resp = NULL;
    struct cairn_call_opts pin = {.pinned = true, .endpoint = 0};
    const Cairn__KeyValue *kv;
    assert_int_equal(cairn_get(c, CAIRN_STR("k"), &pin, &resp, &kv, &err), 0);
    assert_int_equal(err.member_id, 1);
    cairn_response_free(resp);
    assert_int_equal(mock_count(&a, CAIRN__REQUEST__BODY_PUT), 1);
    assert_int_equal(mock_count(&b, CAIRN__REQUEST__BODY_PUT), 0);

    cairn_close(c);
    mock_stop(&a);
    mock_stop(&b);
}

static void test_write_to_a_killed_and_restarted_member_is_never_resent(void **state)
{
    (void)state;
    char url[300];
    snprintf(url, sizeof(url), "ipc://%s/killed.sock", tmpdir);
    struct mock a;
    assert_int_equal(mock_start(&a, url, NULL, 1), 0);
    a.drop_writes = true;
    const char *urls[] = {url};
    struct cairn_client *c = open_client(urls, 1, 0, LONG_MS);

    struct cairn_put put = {.key = CAIRN_STR("k"), .value = CAIRN_STR("v")};
    struct cairn_error_detail err;
    assert_int_equal(cairn_put(c, &put, NULL, NULL, &err), -CAIRN_E_TIMEOUT);
    assert_int_equal(mock_count(&a, CAIRN__REQUEST__BODY_PUT), 1);

    /* Kill the member outright and start a fresh one at the same address. */
    mock_stop(&a);
    struct mock a2;
    assert_int_equal(mock_start(&a2, url, NULL, 3), 0);
    Cairn__Response *resp = NULL;
    const Cairn__KeyValue *kv;
    assert_int_equal(cairn_get(c, CAIRN_STR("k"), NULL, &resp, &kv, &err), 0);
    assert_int_equal(err.member_id, 3);
    cairn_response_free(resp);
    assert_int_equal(mock_count(&a2, CAIRN__REQUEST__BODY_PUT), 0);

    cairn_close(c);
    mock_stop(&a2);
}

static void test_read_whose_connection_dies_is_retried(void **state)
{
    (void)state;
    struct mock a, b;
    struct cairn_client *c = two_members(&a, &b);
    a.drop_reads = 1;

    Cairn__Response *resp = NULL;
    const Cairn__KeyValue *kv;
    struct cairn_error_detail err;
    assert_int_equal(cairn_get(c, CAIRN_STR("k"), NULL, &resp, &kv, &err), 0);
    assert_int_equal(err.attempts, 2);
    assert_int_equal(err.member_id, 2);
    assert_int_equal(mock_count(&a, CAIRN__REQUEST__BODY_RANGE), 1);
    cairn_response_free(resp);

    /* A read-only Txn is a read too. */
    pthread_mutex_lock(&a.mu);
    a.drop_writes = true;
    pthread_mutex_unlock(&a.mu);
    wait_connected(c, 0);
    struct cairn_txn *t = cairn_txn_new();
    struct cairn_range r = {.key = CAIRN_STR("k")};
    assert_int_equal(cairn_txn_range(t, CAIRN_TXN_SUCCESS, &r), 0);
    /* Two calls so that one starts at endpoint 0, whatever the rotation. */
    for (int i = 0; i < 2; i++) {
        wait_connected(c, 0);
        assert_int_equal(cairn_txn_commit(c, t, NULL, NULL, NULL, &err), 0);
        assert_int_equal(err.member_id, 2);
    }
    assert_int_equal(mock_count(&a, CAIRN__REQUEST__BODY_TXN), 1);
    cairn_txn_free(t);

    cairn_close(c);
    mock_stop(&a);
    mock_stop(&b);
}

static void test_call_times_out_when_no_reply_comes(void **state)
{
    (void)state;
    struct mock m;
    assert_int_equal(mock_start(&m, "tcp://127.0.0.1:0", NULL, 1), 0);
    m.silent = true;
    const char *urls[] = {m.url};
    struct cairn_client *c = open_client(urls, 1, 0, LONG_MS);

    struct cairn_call_opts quick = {.timeout_ms = 200};
    struct cairn_put put = {.key = CAIRN_STR("k")};
    struct cairn_error_detail err;
    assert_int_equal(cairn_put(c, &put, &quick, NULL, &err), -CAIRN_E_TIMEOUT);
    assert_non_null(strstr(err.message, "no reply"));
    Cairn__Response *resp = NULL;
    const Cairn__KeyValue *kv;
    assert_int_equal(cairn_get(c, CAIRN_STR("k"), &quick, &resp, &kv, &err), -CAIRN_E_TIMEOUT);
    assert_null(resp);
    assert_int_equal(mock_count(&m, CAIRN__REQUEST__BODY_PUT), 1);

    cairn_close(c);
    mock_stop(&m);
}

static void test_nothing_reachable_is_unavailable_and_unsent(void **state)
{
    (void)state;
    char down[64];
    refused_url(down, sizeof(down));
    const char *urls[] = {down};
    struct cairn_client *c = open_client(urls, 1, 100, 400);
    struct cairn_put put = {.key = CAIRN_STR("k")};
    struct cairn_error_detail err;
    int rc = cairn_put(c, &put, NULL, NULL, &err);
    if (rc != -CAIRN_E_UNAVAILABLE)
        fail_msg("%d: %s (attempts %d)", rc, err.message, err.attempts);
    assert_non_null(strstr(err.message, "not sent"));
    assert_true(err.attempts >= 1);
    cairn_close(c);
}

/* --------------------------------------------------------------- async */

#define N_ASYNC 400

struct many {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int calls[N_ASYNC];
    int ok[N_ASYNC];
    int done;
};

struct many_arg {
    struct many *m;
    int i;
};

static void many_cb(void *arg, int rc, Cairn__Response *resp,
                    const struct cairn_error_detail *err)
{
    struct many_arg *a = arg;
    char want[32];
    (void)err;
    snprintf(want, sizeof(want), "v:key-%d", a->i);
    bool ok = rc == 0 && resp && resp->range && resp->range->n_kvs == 1 &&
              bytes_eq(resp->range->kvs[0]->value, want);
    cairn_response_free(resp);
    pthread_mutex_lock(&a->m->mu);
    a->m->calls[a->i]++;
    a->m->ok[a->i] = ok;
    a->m->done++;
    pthread_cond_broadcast(&a->m->cv);
    pthread_mutex_unlock(&a->m->mu);
}

static void test_many_async_calls_complete_exactly_once(void **state)
{
    (void)state;
    struct mock m;
    assert_int_equal(mock_start(&m, "tcp://127.0.0.1:0", NULL, 1), 0);
    const char *urls[] = {m.url};
    struct cairn_client *c = open_client(urls, 1, 0, LONG_MS);

    static struct many many;
    static struct many_arg args[N_ASYNC];
    static char keys[N_ASYNC][32];
    memset(&many, 0, sizeof(many));
    pthread_mutex_init(&many.mu, NULL);
    pthread_cond_init(&many.cv, NULL);
    for (int i = 0; i < N_ASYNC; i++) {
        Cairn__RangeRequest q = CAIRN__RANGE_REQUEST__INIT;
        Cairn__Request req = CAIRN__REQUEST__INIT;
        snprintf(keys[i], sizeof(keys[i]), "key-%d", i);
        q.key = mock_bin(keys[i]);
        req.body_case = CAIRN__REQUEST__BODY_RANGE;
        req.range = &q;
        args[i] = (struct many_arg){&many, i};
        assert_int_equal(cairn_call_async(c, &req, NULL, many_cb, &args[i]), 0);
    }
    pthread_mutex_lock(&many.mu);
    while (many.done < N_ASYNC)
        pthread_cond_wait(&many.cv, &many.mu);
    pthread_mutex_unlock(&many.mu);
    for (int i = 0; i < N_ASYNC; i++) {
        assert_int_equal(many.calls[i], 1);
        assert_true(many.ok[i]);
    }
    assert_int_equal(mock_count(&m, CAIRN__REQUEST__BODY_RANGE), N_ASYNC);

    cairn_close(c);
    /* Nothing arrives after close: still exactly once each. */
    for (int i = 0; i < N_ASYNC; i++)
        assert_int_equal(many.calls[i], 1);
    mock_stop(&m);
}

struct counted {
    pthread_mutex_t mu;
    int calls, cancelled;
};

static void counted_cb(void *arg, int rc, Cairn__Response *resp,
                       const struct cairn_error_detail *err)
{
    struct counted *k = arg;
    (void)err;
    cairn_response_free(resp);
    pthread_mutex_lock(&k->mu);
    k->calls++;
    k->cancelled += rc == -ECANCELED;
    pthread_mutex_unlock(&k->mu);
}

struct seen_arg {
    struct mock *m;
    unsigned n;
};

static bool mock_saw(void *arg)
{
    struct seen_arg *s = arg;
    return mock_total(s->m) >= s->n;
}

static void test_close_with_calls_in_flight_cancels_each_once(void **state)
{
    (void)state;
    char down[64];
    struct mock m;
    refused_url(down, sizeof(down));
    assert_int_equal(mock_start(&m, "tcp://127.0.0.1:0", NULL, 1), 0);
    m.silent = true;
    /* Calls waiting for a reply on one endpoint, for a connection on the other. */
    const char *urls[] = {m.url, down};
    struct cairn_config cfg = {.endpoints = urls, .n_endpoints = 2, .call_timeout_ms = 600000,
                               .dial_timeout_ms = 600000, .max_in_flight = 64};
    struct cairn_client *c = NULL;
    assert_int_equal(cairn_open(&cfg, &c, NULL), 0);
    wait_connected(c, 0);

    struct counted k = {.calls = 0};
    pthread_mutex_init(&k.mu, NULL);
    Cairn__PutRequest p = CAIRN__PUT_REQUEST__INIT;
    p.key = mock_bin("k");
    Cairn__Request req = CAIRN__REQUEST__INIT;
    req.body_case = CAIRN__REQUEST__BODY_PUT;
    req.put = &p;
    struct cairn_call_opts to_down = {.pinned = true, .endpoint = 1};
    for (int i = 0; i < 64; i++)
        assert_int_equal(cairn_call_async(c, &req, i % 2 ? &to_down : NULL, counted_cb, &k), 0);
    /* The bound holds. */
    assert_int_equal(cairn_call_async(c, &req, NULL, counted_cb, &k), -EAGAIN);
    struct seen_arg s = {&m, 1};
    assert_true(poll_until(mock_saw, &s, LONG_MS));

    cairn_close(c);
    assert_int_equal(k.calls, 64);
    assert_int_equal(k.cancelled, 64);
    mock_stop(&m);
}

/* ------------------------------------------------------------- threads */

#define N_THREADS 4
#define N_PER_THREAD 50

struct worker {
    pthread_t thread;
    struct cairn_client *c;
    int id, failures;
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    for (int i = 0; i < N_PER_THREAD; i++) {
        char key[32], want[40];
        snprintf(key, sizeof(key), "t%d-%d", w->id, i);
        snprintf(want, sizeof(want), "v:%s", key);
        struct cairn_put put = {.key = {key, strlen(key)}, .value = CAIRN_STR("x")};
        if (cairn_put(w->c, &put, NULL, NULL, NULL) != 0)
            w->failures++;
        Cairn__Response *resp = NULL;
        const Cairn__KeyValue *kv = NULL;
        if (cairn_get(w->c, (struct cairn_bytes){key, strlen(key)}, NULL, &resp, &kv, NULL) != 0 ||
            !kv || !bytes_eq(kv->value, want))
            w->failures++;
        cairn_response_free(resp);
    }
    return NULL;
}

/* Where an async call's callback ran, and what it got. */
struct where {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done, on_poller, ok;
    size_t key_len;
};

static void where_cb(void *arg, int rc, Cairn__Response *resp, const struct cairn_error_detail *err)
{
    struct where *w = arg;
    char name[32] = "";
    (void)err;
    pthread_getname_np(pthread_self(), name, sizeof name);
    pthread_mutex_lock(&w->mu);
    w->on_poller += strcmp(name, "nng:poll:epoll") == 0;
    w->ok += rc == 0 && resp->range && resp->range->n_kvs == 1 && resp->range->kvs[0]->key.len == w->key_len;
    w->done++;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    cairn_response_free(resp);
}

/* n gets of a key of key_len bytes (the members here send it back), one at
 * a time; returns how many of their callbacks ran on the poller. */
static int gets_on_poller(struct cairn_client *c, int n, size_t key_len)
{
    static char key[20000];
    struct where w = {.key_len = key_len};
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    assert_true(key_len <= sizeof key);
    memset(key, 'k', key_len);
    for (int i = 0; i < n; i++) {
        Cairn__RangeRequest q = CAIRN__RANGE_REQUEST__INIT;
        Cairn__Request req = CAIRN__REQUEST__INIT;
        q.key = (ProtobufCBinaryData){key_len, (uint8_t *)key};
        req.body_case = CAIRN__REQUEST__BODY_RANGE;
        req.range = &q;
        assert_int_equal(cairn_call_async(c, &req, NULL, where_cb, &w), 0);
        pthread_mutex_lock(&w.mu);
        while (w.done < i + 1)
            pthread_cond_wait(&w.cv, &w.mu);
        pthread_mutex_unlock(&w.mu);
    }
    assert_int_equal(w.ok, n);
    pthread_cond_destroy(&w.cv);
    pthread_mutex_destroy(&w.mu);
    return w.on_poller;
}

static void test_inline_callbacks_run_on_the_poller(void **state)
{
    (void)state;
    struct mock m;
    assert_int_equal(mock_start(&m, "tcp://127.0.0.1:0", NULL, 1), 0);
    m.delay_ms = 5; /* the reply comes after the call's receive is posted, as from a real member */
    const char *urls[] = {m.url};
    struct cairn_config cfg = {.endpoints = urls, .n_endpoints = 1, .call_timeout_ms = LONG_MS,
                               .inline_callbacks = true};
    struct cairn_client *c = NULL, *plain = open_client(urls, 1, 0, LONG_MS);
    assert_int_equal(cairn_open(&cfg, &c, NULL), 0);
    wait_connected(c, 0);
    wait_connected(plain, 0);

    /* A reply that was in before the receive is handed over on a task
     * thread, so only "some" is certain; the mock's delay makes that all,
     * short of a stalled machine. */
    int n = gets_on_poller(c, 10, 10);
    if (n < 1)
        fail_msg("none of 10 replies' callbacks ran on the poller with inline_callbacks");
    /* Without inline_callbacks the poller never runs a caller's callback. */
    assert_int_equal(gets_on_poller(plain, 10, 10), 0);
    /* Blocking calls, whose own callback is marked on either client. */
    struct cairn_put put = {.key = CAIRN_STR("k"), .value = CAIRN_STR("v")};
    for (int i = 0; i < 10; i++) {
        assert_int_equal(cairn_put(plain, &put, NULL, NULL, NULL), 0);
        assert_int_equal(cairn_put(c, &put, NULL, NULL, NULL), 0);
    }
    assert_int_equal(mock_count(&m, CAIRN__REQUEST__BODY_PUT), 20);
    cairn_close(c);
    cairn_close(plain);
    mock_stop(&m);
}

static bool read_full(int fd, void *buf, size_t len)
{
    for (size_t got = 0; got < len;) {
        ssize_t n = read(fd, (uint8_t *)buf + got, len - got);
        if (n <= 0)
            return false;
        got += (size_t)n;
    }
    return true;
}

/*
 * A member over a raw TCP socket that answers each Range with its key and
 * writes the reply in two pieces 30 ms apart, so that the poller reads the
 * end of it and would run the callback itself.
 */
struct split_member {
    int lfd;
    char url[64];
    pthread_t thread;
};

static void *split_member_main(void *arg)
{
    struct split_member *s = arg;
    int fd = accept(s->lfd, NULL, NULL);
    if (fd < 0)
        return NULL;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    static const uint8_t hello[8] = {0x00, 'S', 'P', 0x00, 0x00, 0x31, 0x00, 0x00}; /* rep0 */
    uint8_t peer[8], len8[8];
    if (!read_full(fd, peer, sizeof peer) || write(fd, hello, sizeof hello) != (ssize_t)sizeof hello)
        goto out;
    while (read_full(fd, len8, sizeof len8)) {
        uint64_t len = 0;
        for (int i = 0; i < 8; i++)
            len = len << 8 | len8[i];
        uint8_t *in = malloc(len), *out = NULL;
        if (!in || len < 4 || !read_full(fd, in, len)) {
            free(in);
            break;
        }
        Cairn__Request *req = cairn__request__unpack(NULL, len - 4, in + 4); /* after req0's request id */
        if (req && req->body_case == CAIRN__REQUEST__BODY_RANGE) {
            Cairn__KeyValue kv = CAIRN__KEY_VALUE__INIT, *kvs[1] = {&kv};
            Cairn__RangeResponse range = CAIRN__RANGE_RESPONSE__INIT;
            Cairn__Response resp = CAIRN__RESPONSE__INIT;
            kv.key = req->range->key;
            range.kvs = kvs;
            range.n_kvs = range.count = 1;
            resp.body_case = CAIRN__RESPONSE__BODY_RANGE;
            resp.range = &range;
            size_t body = 4 + cairn__response__get_packed_size(&resp), total = 8 + body;
            if ((out = malloc(total))) {
                for (int i = 0; i < 8; i++)
                    out[i] = (uint8_t)((uint64_t)body >> (56 - 8 * i));
                memcpy(out + 8, in, 4);
                cairn__response__pack(&resp, out + 12);
                size_t half = total / 2;
                bool ok = write(fd, out, half) == (ssize_t)half;
                usleep(30000);
                ok = ok && write(fd, out + half, total - half) == (ssize_t)(total - half);
                (void)ok; /* the client notices */
            }
        }
        cairn__request__free_unpacked(req, NULL);
        free(in);
        free(out);
    }
out:
    close(fd);
    return NULL;
}

static void split_member_start(struct split_member *s)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    assert_true((s->lfd = socket(AF_INET, SOCK_STREAM, 0)) >= 0);
    assert_int_equal(bind(s->lfd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(s->lfd, 1), 0);
    assert_int_equal(getsockname(s->lfd, (struct sockaddr *)&a, &alen), 0);
    snprintf(s->url, sizeof s->url, "tcp://127.0.0.1:%u", ntohs(a.sin_port));
    assert_int_equal(pthread_create(&s->thread, NULL, split_member_main, s), 0);
}

static void test_a_long_reply_read_by_the_poller_is_handed_to_a_task_thread(void **state)
{
    (void)state;
    static struct split_member s;
    split_member_start(&s);
    const char *urls[] = {s.url};
    struct cairn_config cfg = {.endpoints = urls, .n_endpoints = 1, .call_timeout_ms = LONG_MS,
                               .inline_callbacks = true};
    struct cairn_client *c = NULL;
    assert_int_equal(cairn_open(&cfg, &c, NULL), 0);
    wait_connected(c, 0);
    /* A short reply whose end the poller reads: its callback runs there
     * (all three, unless the machine stalls for the 30 ms between pieces). */
    assert_true(gets_on_poller(c, 3, 100) >= 1);
    /* Over 16 KiB: decoded, and the callback run, on a task thread. */
    assert_int_equal(gets_on_poller(c, 3, 20000), 0);
    cairn_close(c); /* the member's thread sees the connection end */
    pthread_join(s.thread, NULL);
    close(s.lfd);
}

static void test_blocking_calls_from_many_threads_share_one_client(void **state)
{
    (void)state;
    struct mock a, b;
    assert_int_equal(mock_start(&a, "tcp://127.0.0.1:0", NULL, 1), 0);
    assert_int_equal(mock_start(&b, "tcp://127.0.0.1:0", NULL, 2), 0);
    const char *urls[] = {a.url, b.url};
    struct cairn_client *c = open_client(urls, 2, 0, LONG_MS);
    assert_int_equal(cairn_endpoint_count(c), 2);
    assert_string_equal(cairn_endpoint_url(c, 1), b.url);
    assert_null(cairn_endpoint_url(c, 2));

    struct worker w[N_THREADS];
    for (int i = 0; i < N_THREADS; i++) {
        w[i] = (struct worker){.c = c, .id = i};
        assert_int_equal(pthread_create(&w[i].thread, NULL, worker_main, &w[i]), 0);
    }
    for (int i = 0; i < N_THREADS; i++) {
        pthread_join(w[i].thread, NULL);
        assert_int_equal(w[i].failures, 0);
    }
    unsigned puts = mock_count(&a, CAIRN__REQUEST__BODY_PUT) + mock_count(&b, CAIRN__REQUEST__BODY_PUT);
    unsigned gets = mock_count(&a, CAIRN__REQUEST__BODY_RANGE) + mock_count(&b, CAIRN__REQUEST__BODY_RANGE);
    assert_int_equal(puts, N_THREADS * N_PER_THREAD);
    assert_int_equal(gets, N_THREADS * N_PER_THREAD);

    cairn_close(c);
    mock_stop(&a);
    mock_stop(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_sends_every_option_and_returns_prev_kv),
        cmocka_unit_test(test_get_finds_a_key_and_reports_a_missing_one),
        cmocka_unit_test(test_range_sends_every_option),
        cmocka_unit_test(test_delete_range_counts_and_returns_prev_kvs),
        cmocka_unit_test(test_txn_builds_compares_ops_and_nested_txn),
        cmocka_unit_test(test_compact_and_status),
        cmocka_unit_test(test_history_pages_through_every_record),
        cmocka_unit_test(test_generic_call_adds_the_auth_token),
        cmocka_unit_test(test_error_reply_maps_code_message_and_compact_revision),
        cmocka_unit_test(test_garbage_reply_is_malformed),
        cmocka_unit_test(test_open_rejects_bad_configuration),
        cmocka_unit_test(test_watch_poll_rejects_a_bad_set),
        cmocka_unit_test(test_calls_rotate_round_robin_across_two_members),
        cmocka_unit_test(test_read_fails_over_from_a_refused_member),
        cmocka_unit_test(test_read_retries_elsewhere_after_no_leader),
        cmocka_unit_test(test_write_is_not_retried_after_a_member_answered),
        cmocka_unit_test(test_not_leader_refusal_moves_to_the_next_member),
        cmocka_unit_test(test_stopped_refusal_moves_a_write_to_the_next_member),
        cmocka_unit_test(test_a_write_rides_through_a_member_restart),
        cmocka_unit_test(test_write_to_a_refused_member_moves_on),
        cmocka_unit_test(test_write_whose_member_dies_after_receiving_it_is_unknown_and_sent_once),
        cmocka_unit_test(test_write_to_a_killed_and_restarted_member_is_never_resent),
        cmocka_unit_test(test_read_whose_connection_dies_is_retried),
        cmocka_unit_test(test_call_times_out_when_no_reply_comes),
        cmocka_unit_test(test_nothing_reachable_is_unavailable_and_unsent),
        cmocka_unit_test(test_many_async_calls_complete_exactly_once),
        cmocka_unit_test(test_inline_callbacks_run_on_the_poller),
        cmocka_unit_test(test_a_long_reply_read_by_the_poller_is_handed_to_a_task_thread),
        cmocka_unit_test(test_close_with_calls_in_flight_cancels_each_once),
        cmocka_unit_test(test_blocking_calls_from_many_threads_share_one_client),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
