/*
 * TLS for tls+tcp:// endpoints: one nng client configuration per endpoint,
 * because each carries the server name its member's certificate must show.
 * nng 1.5.2 with mbedTLS 2.28 checks no host name unless one is set, and
 * cannot match IP address SANs (PLATFORM-NOTES.md), so a name is always set
 * and an IP address as the name is refused up front with a clear message.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/internal.h"

/* A PEM file read whole and NUL-terminated (nng wants strings); NULL on failure. */
static char *read_pem(const char *path, int *err)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t len = 0, cap = 0, n;

    if (!f) {
        *err = errno;
        return NULL;
    }
    do {
        if (cap - len < 4096) {
            char *b = realloc(buf, cap + 65536);
            if (!b) {
                *err = ENOMEM;
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = b;
            cap += 65536;
        }
        n = fread(buf + len, 1, cap - len - 1, f);
        len += n;
    } while (n > 0);
    if (ferror(f)) {
        *err = EIO;
        free(buf);
        fclose(f);
        return NULL;
    }
    fclose(f);
    buf[len] = '\0';
    return buf;
}

static bool is_ip_literal(const char *host)
{
    unsigned char addr[16];
    return inet_pton(AF_INET, host, addr) == 1 || inet_pton(AF_INET6, host, addr) == 1;
}

/*
 * tls_client_config: a client TLS configuration for an endpoint whose URL
 * host is url_host: verify the member against tls->ca_file, with the server
 * name tls->server_name or url_host, and present tls->cert_file if given.
 * Returns 0 and *out (owned by the caller, nng_tls_config_free), or
 * -CAIRN_E_CONFIG / -ENOMEM with err saying what is wrong.
 */
int tls_client_config(const struct cairn_tls *tls, const char *url_host,
                      nng_tls_config **out, struct cairn_error_detail *err)
{
    nng_tls_config *cfg = NULL;
    const char *name = tls->server_name && tls->server_name[0] ? tls->server_name : url_host;
    char *cert = NULL, *key = NULL;
    int rv, e = 0;

    *out = NULL;
    if (!tls->ca_file || !tls->ca_file[0]) {
        detail_set(err, -CAIRN_E_CONFIG,
                   "tls+tcp endpoint needs tls.ca_file, the CA that signs the members' certificates");
        return -CAIRN_E_CONFIG;
    }
    if (!name || !name[0] || is_ip_literal(name)) {
        detail_set(err, -CAIRN_E_CONFIG,
                   "TLS server name \"%s\" is not a DNS name: mbedTLS cannot check IP "
                   "addresses; use a host name in the URL or set tls.server_name to a DNS "
                   "name in the member's certificate",
                   name ? name : "");
        return -CAIRN_E_CONFIG;
    }
    if ((rv = nng_tls_config_alloc(&cfg, NNG_TLS_MODE_CLIENT)) != 0) {
        detail_set(err, -ENOMEM, "TLS configuration: %s", nng_strerror(rv));
        return -ENOMEM;
    }
    if ((rv = nng_tls_config_auth_mode(cfg, NNG_TLS_AUTH_MODE_REQUIRED)) != 0)
        goto nng_fail;
    if ((rv = nng_tls_config_ca_file(cfg, tls->ca_file)) != 0) {
        detail_set(err, -CAIRN_E_CONFIG, "tls.ca_file %s: cannot load it (%s)", tls->ca_file,
                   nng_strerror(rv));
        goto fail;
    }
    if ((rv = nng_tls_config_server_name(cfg, name)) != 0)
        goto nng_fail;
    if (tls->cert_file && tls->cert_file[0]) {
        if (!(cert = read_pem(tls->cert_file, &e))) {
            detail_set(err, -CAIRN_E_CONFIG, "tls.cert_file %s: %s", tls->cert_file, strerror(e));
            goto fail;
        }
        const char *key_path = tls->key_file && tls->key_file[0] ? tls->key_file : tls->cert_file;
        if (!(key = read_pem(key_path, &e))) {
            detail_set(err, -CAIRN_E_CONFIG, "tls.key_file %s: %s", key_path, strerror(e));
            goto fail;
        }
        if ((rv = nng_tls_config_own_cert(cfg, cert, key, NULL)) != 0) {
            detail_set(err, -CAIRN_E_CONFIG,
                       "tls.cert_file %s / key %s: not a usable certificate and key (%s)",
                       tls->cert_file, key_path, nng_strerror(rv));
            goto fail;
        }
    }
    free(cert);
    free(key);
    *out = cfg;
    return 0;

nng_fail:
    detail_set(err, -CAIRN_E_CONFIG, "TLS configuration: %s", nng_strerror(rv));
fail:
    free(cert);
    free(key);
    nng_tls_config_free(cfg);
    return -CAIRN_E_CONFIG;
}
