/*
 * Fuzz target: cairnd's configuration (daemon/config.c).  The input is
 *
 *   config file [ SEP extra argv, NUL-separated [ SEP environment, NUL-separated ] ]
 *
 * The file is written to the scratch directory and loaded with config_load
 * through --config-file, the extra flags and environment on top (entries that
 * would name another config file are dropped: those paths are the operator's,
 * and /dev/zero would never end).  A load that succeeds must satisfy what
 * config.h promises (URLs parsed, limits within range, this member in the
 * cluster list).  Then every line of the file goes through
 * config_parse_url, config_parse_duration_ms and config_parse_size.
 */
#include "test/fuzz/fuzz.h"

#include "base/errors.h"
#include "daemon/config.h"

#define SEP "\n%ARGS%\n"
#define SEP_LEN 8
#define MAX_EXTRA 32

static void check_url(const struct config_url *u)
{
    FUZZ_CHECK(u->url && u->scheme);
    if (!strcmp(u->scheme, "ipc")) {
        FUZZ_CHECK(u->path && u->path[0] == '/' && !u->host && u->port == 0);
    } else {
        FUZZ_CHECK(!strcmp(u->scheme, "tcp") || !strcmp(u->scheme, "tls+tcp"));
        FUZZ_CHECK(u->host && u->host[0] && u->port >= 1 && u->port <= 65535 && !u->path);
    }
}

static void check_urls(const struct config_urls *l)
{
    FUZZ_CHECK(l->n <= CONFIG_MAX_URLS);
    for (size_t i = 0; i < l->n; i++)
        check_url(&l->v[i]);
}

static void check_config(const struct config *c)
{
    FUZZ_CHECK(c->name && c->name[0] && c->data_dir && c->data_dir[0]);
    check_urls(&c->listen_client_urls);
    check_urls(&c->advertise_client_urls);
    check_urls(&c->listen_peer_urls);
    check_urls(&c->initial_advertise_peer_urls);
    check_urls(&c->listen_metrics_urls);
    check_url(&c->listen_admin_url);
    FUZZ_CHECK(!strcmp(c->listen_admin_url.scheme, "ipc"));
    FUZZ_CHECK(c->listen_client_urls.n >= 1 && c->listen_peer_urls.n >= 1);
    FUZZ_CHECK(c->heartbeat_ms > 0 && c->election_ms >= 5ull * c->heartbeat_ms && c->election_ms <= 50000);
    FUZZ_CHECK(c->max_txn_ops > 0 && c->max_request_bytes >= 1024 && c->max_request_bytes <= 64ull << 20);
    FUZZ_CHECK(c->n_members >= 1 && c->n_members <= CONFIG_MAX_MEMBERS);
    int me = 0;
    for (size_t i = 0; i < c->n_members; i++) {
        FUZZ_CHECK(c->members[i].name != NULL);
        check_urls(&c->members[i].peer_urls);
        me |= !strcmp(c->members[i].name, c->name);
    }
    FUZZ_CHECK(me);
}

/* Split s[0..n) on NULs into v (at most max), skipping entries about the
 * config file's location. */
static size_t split(char *s, size_t n, char **v, size_t max)
{
    size_t k = 0;
    for (char *p = s; p < s + n && k < max; p += strlen(p) + 1) {
        if (strstr(p, "config-file") || strstr(p, "CONFIG_FILE") || strstr(p, "CONFIGURATION_DIRECTORY"))
            continue;
        v[k++] = p;
    }
    return k;
}

static void scalars(const char *text)
{
    const char *p = text;
    for (int lines = 0; *p && lines < 64; lines++) {
        size_t n = strcspn(p, "\n");
        char *line = fuzz_strndup((const uint8_t *)p, n);
        struct config_url u;
        char err[256];
        err[0] = '\0';
        if (config_parse_url(line, &u, err, sizeof err) == 0) {
            check_url(&u);
            (void)config_url_is_local(&u);
            struct config_url again;
            FUZZ_CHECK(config_parse_url(u.url, &again, err, sizeof err) == 0);
            FUZZ_CHECK(!strcmp(again.scheme, u.scheme) && again.port == u.port);
            config_url_free(&again);
            config_url_free(&u);
        } else {
            FUZZ_CHECK(err[0] != '\0');
            FUZZ_CHECK(u.url == NULL && u.scheme == NULL && u.host == NULL && u.path == NULL);
        }
        FUZZ_CHECK(config_parse_duration_ms(line) >= -1);
        FUZZ_CHECK(config_parse_size(line) >= -1);
        free(line);
        p += n;
        if (*p == '\n')
            p++;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fd_before = fuzz_fd_probe();
    const char *dir = fuzz_dir("config");
    const uint8_t *end = data + size;
    const uint8_t *s1 = size >= SEP_LEN ? memmem(data, size, SEP, SEP_LEN) : NULL;
    const uint8_t *file_end = s1 ? s1 : end;
    const uint8_t *args = s1 ? s1 + SEP_LEN : end;
    const uint8_t *s2 = (size_t)(end - args) >= SEP_LEN ? memmem(args, (size_t)(end - args), SEP, SEP_LEN) : NULL;
    const uint8_t *args_end = s2 ? s2 : end;
    const uint8_t *env = s2 ? s2 + SEP_LEN : end;

    fuzz_write_file(dir, "cairnd.conf", data, (size_t)(file_end - data));
    char path[256];
    snprintf(path, sizeof path, "%s/cairnd.conf", dir);

    char *argbuf = fuzz_strndup(args, (size_t)(args_end - args));
    char *envbuf = fuzz_strndup(env, (size_t)(end - env));
    char *argv[3 + MAX_EXTRA + 1], *envp[MAX_EXTRA + 1];
    argv[0] = "cairnd";
    argv[1] = "--config-file";
    argv[2] = path;
    size_t argc = 3 + split(argbuf, (size_t)(args_end - args), argv + 3, MAX_EXTRA);
    argv[argc] = NULL;
    size_t envc = split(envbuf, (size_t)(end - env), envp, MAX_EXTRA);
    envp[envc] = NULL;

    struct config cfg;
    char err[512];
    memset(err, 'x', sizeof err);
    int rc = config_load(&cfg, (int)argc, argv, envp, err, sizeof err);
    FUZZ_CHECK(rc == 0 || rc == -CAIRN_E_CONFIG);
    if (rc == 0) {
        check_config(&cfg);
        config_free(&cfg);
    } else {
        FUZZ_CHECK(memchr(err, '\0', sizeof err) != NULL && err[0] != '\0');
    }

    char *text = fuzz_strndup(data, (size_t)(file_end - data));
    scalars(text);
    free(text);
    free(argbuf);
    free(envbuf);
    fuzz_dir_clear();
    FUZZ_CHECK(fuzz_fd_probe() == fd_before);
    return 0;
}
