/*
 * libcairn over tls+tcp:// against an in-process member with certificates
 * made by the openssl CLI in a temporary directory (EC P-256; a CA, a server
 * certificate with DNS SAN localhost, client certificates from that CA and
 * from another): the right CA and name connect, a wrong CA or a wrong server
 * name never does, and mutual TLS wants a client certificate from the CA.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <unistd.h>

#include "client/cairn.h"
#include "test_client_mock.h"

#define LONG_MS 20000

static char dir[256];

static char *path(const char *name)
{
    static char bufs[8][512];
    static int next;
    char *b = bufs[next++ % 8];
    snprintf(b, 512, "%s/%s", dir, name);
    return b;
}

static int sh(const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    return system(cmd);
}

/* A key and a certificate signed by ca, with SAN san (or none). */
static int make_cert(const char *name, const char *ca, const char *san)
{
    if (sh("cd %s && openssl ecparam -name prime256v1 -genkey -noout -out %s.key 2>/dev/null", dir,
           name) != 0 ||
        sh("cd %s && openssl req -new -key %s.key -subj /CN=%s -out %s.csr 2>/dev/null", dir, name,
           name, name) != 0)
        return -1;
    if (san && sh("cd %s && printf 'subjectAltName=%s\\n' > %s.ext", dir, san, name) != 0)
        return -1;
    if (sh("cd %s && openssl x509 -req -in %s.csr -CA %s.crt -CAkey %s.key -CAcreateserial "
           "-days 2 %s%s%s -out %s.crt 2>/dev/null",
           dir, name, ca, ca, san ? "-extfile " : "", san ? name : "", san ? ".ext" : "",
           name) != 0)
        return -1;
    return sh("cd %s && cat %s.crt %s.key > %s.pem", dir, name, name, name);
}

static int make_ca(const char *name)
{
    if (sh("cd %s && openssl ecparam -name prime256v1 -genkey -noout -out %s.key 2>/dev/null", dir,
           name) != 0)
        return -1;
    return sh("cd %s && openssl req -x509 -new -key %s.key -subj /CN=%s -days 2 -out %s.crt "
              "2>/dev/null",
              dir, name, name, name);
}

static int group_setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/cairn-client-tls-XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    if (make_ca("ca") || make_ca("otherca") || make_cert("server", "ca", "DNS:localhost") ||
        make_cert("client", "ca", NULL) || make_cert("stranger", "otherca", NULL))
        return -1;
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    return sh("rm -rf %s", dir) == 0 ? 0 : -1;
}

/* A member on tls+tcp://127.0.0.1:<port>; with require_client, mutual TLS against ca. */
static void start_tls_member(struct mock *m, nng_tls_config **tls, bool require_client)
{
    assert_int_equal(nng_tls_config_alloc(tls, NNG_TLS_MODE_SERVER), 0);
    assert_int_equal(nng_tls_config_cert_key_file(*tls, path("server.pem"), NULL), 0);
    if (require_client) {
        assert_int_equal(nng_tls_config_ca_file(*tls, path("ca.crt")), 0);
        assert_int_equal(nng_tls_config_auth_mode(*tls, NNG_TLS_AUTH_MODE_REQUIRED), 0);
    } else {
        assert_int_equal(nng_tls_config_auth_mode(*tls, NNG_TLS_AUTH_MODE_NONE), 0);
    }
    assert_int_equal(mock_start(m, "tls+tcp://127.0.0.1:0", *tls, 4), 0);
}

static void stop_tls_member(struct mock *m, nng_tls_config *tls)
{
    mock_stop(m);
    nng_tls_config_free(tls);
}

/* Status through a client for url with tls; returns the call's code. */
static int status_via(const char *url, struct cairn_tls tls, int call_ms,
                      struct cairn_error_detail *err)
{
    const char *urls[] = {url};
    struct cairn_config cfg = {.endpoints = urls, .n_endpoints = 1, .tls = tls,
                               .dial_timeout_ms = 300, .call_timeout_ms = call_ms};
    struct cairn_client *c = NULL;
    int rv = cairn_open(&cfg, &c, err);
    if (rv != 0)
        fail_msg("cairn_open: %s", err->message);
    Cairn__Response *resp = NULL;
    rv = cairn_status(c, NULL, &resp, err);
    if (rv == 0)
        assert_string_equal(resp->status->member_name, "mock-member");
    cairn_response_free(resp);
    cairn_close(c);
    return rv;
}

static void test_right_ca_and_server_name_connect(void **state)
{
    (void)state;
    struct mock m;
    nng_tls_config *tls;
    start_tls_member(&m, &tls, false);
    struct cairn_error_detail err;
    struct cairn_tls t = {.ca_file = path("ca.crt"), .server_name = "localhost"};
    assert_int_equal(status_via(m.url, t, LONG_MS, &err), 0);
    assert_int_equal(err.member_id, 4);

    /* Without an explicit name, the URL's host is the name. */
    char url[128];
    snprintf(url, sizeof(url), "tls+tcp://localhost%s", strrchr(m.url, ':'));
    struct cairn_tls by_host = {.ca_file = path("ca.crt")};
    assert_int_equal(status_via(url, by_host, LONG_MS, &err), 0);
    assert_int_equal(mock_count(&m, CAIRN__REQUEST__BODY_STATUS), 2);
    stop_tls_member(&m, tls);
}

static void test_wrong_ca_is_refused(void **state)
{
    (void)state;
    struct mock m;
    nng_tls_config *tls;
    start_tls_member(&m, &tls, false);
    struct cairn_error_detail err;
    struct cairn_tls t = {.ca_file = path("otherca.crt"), .server_name = "localhost"};
    assert_int_equal(status_via(m.url, t, 1000, &err), -CAIRN_E_UNAVAILABLE);
    assert_int_equal(mock_total(&m), 0);
    stop_tls_member(&m, tls);
}

static void test_server_name_mismatch_is_refused(void **state)
{
    (void)state;
    struct mock m;
    nng_tls_config *tls;
    start_tls_member(&m, &tls, false);
    struct cairn_error_detail err;
    struct cairn_tls t = {.ca_file = path("ca.crt"), .server_name = "member-7.example"};
    assert_int_equal(status_via(m.url, t, 1000, &err), -CAIRN_E_UNAVAILABLE);
    assert_int_equal(mock_total(&m), 0);
    /* The same member with the right name works: the name was the only fault. */
    t.server_name = "localhost";
    assert_int_equal(status_via(m.url, t, LONG_MS, &err), 0);
    stop_tls_member(&m, tls);
}

static void test_mutual_tls_wants_a_client_certificate_from_the_ca(void **state)
{
    (void)state;
    struct mock m;
    nng_tls_config *tls;
    start_tls_member(&m, &tls, true);
    struct cairn_error_detail err;

    struct cairn_tls none = {.ca_file = path("ca.crt"), .server_name = "localhost"};
    assert_int_equal(status_via(m.url, none, 1000, &err), -CAIRN_E_UNAVAILABLE);

    struct cairn_tls stranger = {.ca_file = path("ca.crt"), .server_name = "localhost",
                                 .cert_file = path("stranger.crt"),
                                 .key_file = path("stranger.key")};
    assert_int_equal(status_via(m.url, stranger, 1000, &err), -CAIRN_E_UNAVAILABLE);
    assert_int_equal(mock_total(&m), 0);

    struct cairn_tls separate = {.ca_file = path("ca.crt"), .server_name = "localhost",
                                 .cert_file = path("client.crt"), .key_file = path("client.key")};
    assert_int_equal(status_via(m.url, separate, LONG_MS, &err), 0);

    struct cairn_tls combined = {.ca_file = path("ca.crt"), .server_name = "localhost",
                                 .cert_file = path("client.pem")};
    assert_int_equal(status_via(m.url, combined, LONG_MS, &err), 0);
    assert_int_equal(mock_total(&m), 2);
    stop_tls_member(&m, tls);
}

static void test_unreadable_client_certificate_is_a_config_error(void **state)
{
    (void)state;
    const char *urls[] = {"tls+tcp://localhost:1"};
    struct cairn_config cfg = {.endpoints = urls, .n_endpoints = 1,
                               .tls = {.ca_file = path("ca.crt"), .cert_file = path("nope.crt")}};
    struct cairn_client *c = NULL;
    struct cairn_error_detail err;
    assert_int_equal(cairn_open(&cfg, &c, &err), -CAIRN_E_CONFIG);
    assert_non_null(strstr(err.message, "nope.crt"));
    /* A key that is not a key. */
    cfg.tls.cert_file = path("client.crt");
    cfg.tls.key_file = path("ca.crt");
    assert_int_equal(cairn_open(&cfg, &c, &err), -CAIRN_E_CONFIG);
    assert_non_null(strstr(err.message, "not a usable certificate and key"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_right_ca_and_server_name_connect),
        cmocka_unit_test(test_wrong_ca_is_refused),
        cmocka_unit_test(test_server_name_mismatch_is_refused),
        cmocka_unit_test(test_mutual_tls_wants_a_client_certificate_from_the_ca),
        cmocka_unit_test(test_unreadable_client_certificate_is_a_config_error),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
