/*
 * cairnd's configuration: the embedded defaults, the precedence of flags over
 * environment over file, and an error naming option and source for each kind
 * of bad value.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "base/errors.h"
#include "base/log.h"
#include "daemon/config.h"

#define ARGV(...) ((char *[]){"cairnd", __VA_ARGS__, NULL})

static char err[512];

static int load(struct config *c, char **argv, char **envp)
{
    static char *empty_env[] = {NULL};
    int argc = 0;
    while (argv[argc])
        argc++;
    err[0] = '\0';
    return config_load(c, argc, argv, envp ? envp : empty_env, err, sizeof err);
}

/* Loads and expects failure; returns the message. */
static const char *load_fails(char **argv, char **envp)
{
    struct config c;
    assert_int_equal(load(&c, argv, envp), -CAIRN_E_CONFIG);
    assert_true(strlen(err) > 10);
    return err;
}

static char *write_file(const char *text)
{
    static char path[64];
    strcpy(path, "/tmp/cairn-test-conf-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

static void test_no_arguments_gives_the_embedded_one_member_defaults(void **state)
{
    (void)state;
    struct config c;
    char *argv[] = {"cairnd", NULL};
    char cwd[1024], want[1200];
    assert_int_equal(load(&c, argv, NULL), 0);
    assert_string_equal(c.name, "default");
    assert_string_equal(c.data_dir, "cairn.data");
    assert_int_equal(c.listen_client_urls.n, 1);
    assert_string_equal(c.listen_client_urls.v[0].url, "tcp://127.0.0.1:2479");
    assert_string_equal(c.listen_client_urls.v[0].host, "127.0.0.1");
    assert_int_equal(c.listen_client_urls.v[0].port, 2479);
    assert_string_equal(c.advertise_client_urls.v[0].url, "tcp://127.0.0.1:2479");
    assert_string_equal(c.listen_peer_urls.v[0].url, "tcp://127.0.0.1:2480");
    assert_string_equal(c.initial_advertise_peer_urls.v[0].url, "tcp://127.0.0.1:2480");
    assert_int_equal(c.n_members, 1);
    assert_string_equal(c.members[0].name, "default");
    assert_string_equal(c.members[0].peer_urls.v[0].url, "tcp://127.0.0.1:2480");
    assert_non_null(getcwd(cwd, sizeof cwd));
    snprintf(want, sizeof want, "ipc://%s/cairn.data/cairnd.sock", cwd);
    assert_string_equal(c.listen_admin_url.url, want);
    assert_int_equal(c.listen_metrics_urls.n, 0);
    assert_int_equal(c.initial_cluster_state, CLUSTER_STATE_NEW);
    assert_int_equal(c.heartbeat_ms, 100);
    assert_int_equal(c.election_ms, 1000);
    assert_int_equal(c.snapshot_count, 10000);
    assert_int_equal(c.snapshot_catchup_entries, 5000);
    assert_int_equal(c.max_request_bytes, 1572864);
    assert_int_equal(c.max_txn_ops, 128);
    assert_int_equal(c.quota_backend_bytes, 2ull << 30);
    assert_int_equal(c.value_cache_bytes, 8ull << 20);
    assert_int_equal(c.request_timeout_ms, 7000);
    assert_int_equal(c.slow_request_ms, 300);
    assert_int_equal(c.log_level, LOG_LEVEL_INFO);
    assert_false(c.client_cert_auth);
    config_free(&c);
}

static void test_flags_win_over_environment_which_wins_over_file(void **state)
{
    (void)state;
    struct config c;
    char *path = write_file("# a comment\n\nname = from-file\nheartbeat-interval = 50\n"
                            "election-timeout = \"2s\"\nsnapshot-count=7\n");
    char flag[128];
    snprintf(flag, sizeof flag, "--config-file=%s", path);
    char *env[] = {"CAIRN_NAME=from-env", "CAIRN_HEARTBEAT_INTERVAL=70", NULL};

    assert_int_equal(load(&c, ARGV(flag, "--name", "from-flag"), env), 0);
    assert_string_equal(c.name, "from-flag");
    assert_int_equal(c.heartbeat_ms, 70);    /* env over file */
    assert_int_equal(c.election_ms, 2000);   /* file over default */
    assert_int_equal(c.snapshot_count, 7);
    assert_string_equal(c.members[0].name, "from-flag"); /* derived default follows the name */
    config_free(&c);

    assert_int_equal(load(&c, ARGV(flag), env), 0);
    assert_string_equal(c.name, "from-env");
    config_free(&c);

    char *env2[] = {NULL};
    assert_int_equal(load(&c, ARGV(flag), env2), 0);
    assert_string_equal(c.name, "from-file");
    assert_int_equal(c.heartbeat_ms, 50);
    config_free(&c);
    unlink(path);
}

static void test_systemd_directories_supply_defaults(void **state)
{
    (void)state;
    struct config c;
    char dir[] = "/tmp/cairn-test-cfgdir-XXXXXX", path[128];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/cairnd.conf", dir);
    FILE *f = fopen(path, "w");
    fputs("name = from-conf-dir\n", f);
    fclose(f);
    char e1[128], e2[] = "STATE_DIRECTORY=/var/lib/cairn";
    snprintf(e1, sizeof e1, "CONFIGURATION_DIRECTORY=%s", dir);
    char *env[] = {e1, e2, NULL};
    char *argv[] = {"cairnd", NULL};
    assert_int_equal(load(&c, argv, env), 0);
    assert_string_equal(c.name, "from-conf-dir");
    assert_string_equal(c.data_dir, "/var/lib/cairn");
    assert_string_equal(c.listen_admin_url.url, "ipc:///var/lib/cairn/cairnd.sock");
    assert_string_equal(c.config_file, path);
    config_free(&c);
    unlink(path);
    rmdir(dir);
}

static void test_three_member_cluster_with_tls_loads(void **state)
{
    (void)state;
    struct config c;
    char *argv[] = {"cairnd", "--name", "m2",
                    "--listen-peer-urls", "tls+tcp://10.77.0.2:2480",
                    "--listen-client-urls", "tls+tcp://10.77.0.2:2479,ipc:///run/cairn/client.sock",
                    "--initial-cluster", "m1=tls+tcp://m1:2480,m2=tls+tcp://10.77.0.2:2480,m3=tls+tcp://m3:2480",
                    "--initial-cluster-state", "existing",
                    "--cert-file", "/c.pem", "--key-file", "/k.pem",
                    "--peer-cert-file", "/p.pem", "--peer-key-file", "/pk.pem", "--peer-trusted-ca-file", "/ca.pem",
                    "--client-cert-auth", "--trusted-ca-file", "/ca.pem", NULL};
    assert_int_equal(load(&c, argv, NULL), 0);
    assert_int_equal(c.n_members, 3);
    assert_string_equal(c.members[2].peer_urls.v[0].host, "m3");
    assert_int_equal(c.listen_client_urls.n, 2);
    assert_string_equal(c.listen_client_urls.v[1].path, "/run/cairn/client.sock");
    assert_int_equal(c.initial_cluster_state, CLUSTER_STATE_EXISTING);
    assert_true(c.client_cert_auth);
    config_free(&c);
}

static void test_bad_values_name_the_option_and_where_it_came_from(void **state)
{
    (void)state;
    const char *m = load_fails(ARGV("--heartbeat-interval", "fast"), NULL);
    assert_non_null(strstr(m, "--heartbeat-interval"));
    assert_non_null(strstr(m, "flag"));
    assert_non_null(strstr(m, "'fast'"));

    char *env[] = {"CAIRN_MAX_TXN_OPS=-3", NULL};
    char *argv[] = {"cairnd", NULL};
    m = load_fails(argv, env);
    assert_non_null(strstr(m, "--max-txn-ops"));
    assert_non_null(strstr(m, "environment CAIRN_MAX_TXN_OPS"));

    char *path = write_file("name = x\nquota-backend-bytes = lots\n");
    char flag[128];
    snprintf(flag, sizeof flag, "--config-file=%s", path);
    m = load_fails(ARGV(flag), NULL);
    assert_non_null(strstr(m, "--quota-backend-bytes"));
    assert_non_null(strstr(m, ":2"));
    unlink(path);

    path = write_file("name = x\nbogus-option = 1\n");
    snprintf(flag, sizeof flag, "--config-file=%s", path);
    m = load_fails(ARGV(flag), NULL);
    assert_non_null(strstr(m, "unknown option 'bogus-option'"));
    assert_non_null(strstr(m, ":2"));
    unlink(path);

    m = load_fails(ARGV("--config-file=/nonexistent/cairnd.conf"), NULL);
    assert_non_null(strstr(m, "/nonexistent/cairnd.conf"));
    m = load_fails(ARGV("--no-such-flag"), NULL);
    assert_non_null(strstr(m, "--no-such-flag"));
    m = load_fails(ARGV("positional"), NULL);
    assert_non_null(strstr(m, "positional"));
    m = load_fails(ARGV("--name"), NULL);
    assert_non_null(strstr(m, "needs a value"));
}

static void test_inconsistent_settings_are_refused(void **state)
{
    (void)state;
    const char *m = load_fails(ARGV("--election-timeout", "300"), NULL);
    assert_non_null(strstr(m, "5x"));
    m = load_fails(ARGV("--listen-client-urls", "tcp://0.0.0.0:2479"), NULL);
    assert_non_null(strstr(m, "--insecure-listen"));
    struct config c;
    assert_int_equal(load(&c, ARGV("--listen-client-urls", "tcp://0.0.0.0:2479", "--insecure-listen"), NULL), 0);
    config_free(&c);
    m = load_fails(ARGV("--listen-client-urls", "tls+tcp://127.0.0.1:2479"), NULL);
    assert_non_null(strstr(m, "--cert-file"));
    m = load_fails(ARGV("--listen-peer-urls", "tls+tcp://127.0.0.1:2480"), NULL);
    assert_non_null(strstr(m, "--peer-trusted-ca-file"));
    m = load_fails(ARGV("--client-cert-auth"), NULL);
    assert_non_null(strstr(m, "--trusted-ca-file"));
    m = load_fails(ARGV("--initial-cluster", "other=tcp://127.0.0.1:2480"), NULL);
    assert_non_null(strstr(m, "'default' is not in it"));
    m = load_fails(ARGV("--initial-cluster", "default=tcp://127.0.0.1:9999"), NULL);
    assert_non_null(strstr(m, "tcp://127.0.0.1:9999"));
    m = load_fails(ARGV("--listen-client-urls", "http://127.0.0.1:2479"), NULL);
    assert_non_null(strstr(m, "unsupported scheme 'http'"));
    m = load_fails(ARGV("--listen-client-urls", "tcp://127.0.0.1:99999"), NULL);
    assert_non_null(strstr(m, "port"));
    m = load_fails(ARGV("--listen-admin-url", "tcp://127.0.0.1:1"), NULL);
    assert_non_null(strstr(m, "ipc://"));
    m = load_fails(ARGV("--initial-cluster-state", "old"), NULL);
    assert_non_null(strstr(m, "'old'"));
    m = load_fails(ARGV("--value-cache-bytes", "65G"), NULL);
    assert_non_null(strstr(m, "--value-cache-bytes"));
    assert_int_equal(load(&c, ARGV("--value-cache-bytes", "0"), NULL), 0);
    assert_int_equal(c.value_cache_bytes, 0);
    config_free(&c);
}

static void test_durations_and_sizes_parse_with_units(void **state)
{
    (void)state;
    assert_int_equal(config_parse_duration_ms("250"), 250);
    assert_int_equal(config_parse_duration_ms("250ms"), 250);
    assert_int_equal(config_parse_duration_ms("7s"), 7000);
    assert_int_equal(config_parse_duration_ms("1.5s"), 1500);
    assert_int_equal(config_parse_duration_ms("5m"), 300000);
    assert_int_equal(config_parse_duration_ms("1h"), 3600000);
    assert_int_equal(config_parse_duration_ms("7 s"), -1);
    assert_int_equal(config_parse_duration_ms("-1"), -1);
    assert_int_equal(config_parse_duration_ms("x"), -1);
    assert_int_equal(config_parse_size("1572864"), 1572864);
    assert_int_equal(config_parse_size("1.5M"), 1572864);
    assert_int_equal(config_parse_size("512K"), 524288);
    assert_int_equal(config_parse_size("2GiB"), 2147483648LL);
    assert_int_equal(config_parse_size("2X"), -1);
    assert_int_equal(config_parse_size(""), -1);
}

static void test_ipv6_and_local_urls(void **state)
{
    (void)state;
    struct config_url u;
    char why[256];
    assert_int_equal(config_parse_url("tcp://[::1]:2479", &u, why, sizeof why), 0);
    assert_string_equal(u.host, "::1");
    assert_int_equal(u.port, 2479);
    assert_true(config_url_is_local(&u));
    config_url_free(&u);
    assert_int_equal(config_parse_url("tcp://10.0.0.1:2479", &u, why, sizeof why), 0);
    assert_false(config_url_is_local(&u));
    config_url_free(&u);
    assert_int_equal(config_parse_url("ipc://relative", &u, why, sizeof why), -CAIRN_E_CONFIG);
    assert_int_equal(config_parse_url("tcp://:2479", &u, why, sizeof why), -CAIRN_E_CONFIG);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_arguments_gives_the_embedded_one_member_defaults),
        cmocka_unit_test(test_flags_win_over_environment_which_wins_over_file),
        cmocka_unit_test(test_systemd_directories_supply_defaults),
        cmocka_unit_test(test_three_member_cluster_with_tls_loads),
        cmocka_unit_test(test_bad_values_name_the_option_and_where_it_came_from),
        cmocka_unit_test(test_inconsistent_settings_are_refused),
        cmocka_unit_test(test_durations_and_sizes_parse_with_units),
        cmocka_unit_test(test_ipv6_and_local_urls),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
