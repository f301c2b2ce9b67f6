/*
 * cairnd's configuration: one table of options, read from a file
 * (`name = value` lines), then CAIRN_* environment variables, then flags,
 * later sources winning; then checked as a whole.  Every error names the
 * option, where its value came from, and what is wrong with it.
 */
#ifndef CAIRN_DAEMON_CONFIG_H
#define CAIRN_DAEMON_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define CONFIG_MAX_URLS 8
#define CONFIG_MAX_MEMBERS 16

/* A parsed listen or advertise URL: tcp://host:port, tls+tcp://host:port, ipc:///path. */
struct config_url {
    char *url;    /* the whole URL as given (owned) */
    char *scheme; /* "tcp", "tls+tcp" or "ipc" (owned) */
    char *host;   /* host name or address without brackets; NULL for ipc (owned) */
    int port;     /* 0 for ipc */
    char *path;   /* socket path for ipc; NULL otherwise (owned) */
};

struct config_urls {
    size_t n;
    struct config_url v[CONFIG_MAX_URLS];
};

/* One entry of --initial-cluster: name=url[,name=url...]; a name may repeat for several URLs. */
struct config_member {
    char *name;
    struct config_urls peer_urls;
};

enum cluster_state { CLUSTER_STATE_NEW, CLUSTER_STATE_EXISTING };
enum auto_compaction_mode { AUTO_COMPACTION_PERIODIC, AUTO_COMPACTION_REVISION };

struct config {
    char *name;
    char *data_dir;
    char *config_file; /* the file read, or NULL */
    struct config_urls listen_client_urls;
    struct config_urls advertise_client_urls;
    struct config_urls listen_peer_urls;
    struct config_urls initial_advertise_peer_urls;
    struct config_url listen_admin_url; /* ipc:// socket for local admin */
    struct config_urls listen_metrics_urls;
    size_t n_members;
    struct config_member members[CONFIG_MAX_MEMBERS];
    enum cluster_state initial_cluster_state;
    char *initial_cluster_token;
    uint32_t heartbeat_ms;
    uint32_t election_ms;
    uint64_t snapshot_count;
    uint64_t snapshot_catchup_entries;
    uint32_t max_wal_files;
    uint32_t max_snapshots;
    uint64_t max_request_bytes;
    uint32_t max_txn_ops;
    uint64_t quota_backend_bytes;
    uint64_t value_cache_bytes;
    uint32_t request_timeout_ms;
    uint32_t slow_request_ms;
    uint32_t watch_idle_timeout_ms;
    uint32_t max_watchers;
    uint32_t max_watchers_per_connection;
    enum auto_compaction_mode auto_compaction_mode;
    char *auto_compaction_retention; /* "0" = off; hours or a duration (periodic), revisions (revision) */
    uint32_t corrupt_check_ms;       /* 0 = off */
    bool strict_reconfig_check;
    int log_level;
    int log_target;
    char *cert_file, *key_file, *trusted_ca_file;
    bool client_cert_auth;
    uint32_t auth_token_ttl;       /* seconds an auth token lives unused (docs/auth.md) */
    char *peer_cert_file, *peer_key_file, *peer_trusted_ca_file;
    bool insecure_listen;
};

/*
 * config_load: fill cfg from defaults, the config file (--config-file, or
 * $CONFIGURATION_DIRECTORY/cairnd.conf when systemd provides one and it
 * exists), the environment (CAIRN_NAME, CAIRN_DATA_DIR, ...: the option name
 * upper-cased with '-' as '_'), and argv (--name=value or --name value;
 * booleans also as bare --flag), in that order of precedence, lowest first.
 * envp is the environment to read (NULL: environ).  Then checks the whole.
 * Returns 0, or -CAIRN_E_CONFIG with a message for people in err (err_len
 * bytes).  On success the caller owns cfg's strings: config_free().
 * --help and --version are not handled here (see config_print_help).
 */
int config_load(struct config *cfg, int argc, char **argv, char **envp, char *err, size_t err_len);

/* config_free: release everything config_load allocated; cfg may be half-filled. */
void config_free(struct config *cfg);

/* config_print_help: every option with its default and meaning. */
void config_print_help(FILE *out);

/*
 * config_parse_url: parse one URL into u (caller frees with config_url_free).
 * Returns 0 or -CAIRN_E_CONFIG with the reason in err.
 */
int config_parse_url(const char *s, struct config_url *u, char *err, size_t err_len);
void config_url_free(struct config_url *u);

/* config_url_is_local: nonzero for ipc:// and for tcp on a loopback address or "localhost". */
int config_url_is_local(const struct config_url *u);

/* config_parse_duration_ms: "250", "250ms", "7s", "5m", "1h" -> milliseconds; -1 if malformed. */
int64_t config_parse_duration_ms(const char *s);

/* config_parse_size: "1048576", "512K", "1.5M" (MiB), "2G" -> bytes; -1 if malformed. */
int64_t config_parse_size(const char *s);

#endif
