/*
 * SQL functions for what is not a table: compact, defragment,
 * snapshot_save, move_leader and keepalive act on the cluster (each is its
 * own request, outside any transaction, and only usable directly in a
 * statement, never from a view or trigger); printable, base64, unbase64,
 * unhex and prefix_end help with binary keys and ranges.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "shell/shell.h"

static struct shell *shell_of(sqlite3_context *ctx)
{
    return sqlite3_user_data(ctx);
}

static void call_failed(sqlite3_context *ctx, const char *what, int rc,
                        const struct cairn_error_detail *err)
{
    char *msg = shell_call_error(what, rc, err);
    sqlite3_result_error(ctx, msg ? msg : what, -1);
    if (rc == -EINTR)
        sqlite3_result_error_code(ctx, SQLITE_INTERRUPT);
    sqlite3_free(msg);
}

/* compact(revision [, physical]): drop history below revision; returns it. */
static void fn_compact(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    struct shell *sh = shell_of(ctx);
    if (sqlite3_value_numeric_type(argv[0]) != SQLITE_INTEGER || sqlite3_value_int64(argv[0]) < 1) {
        sqlite3_result_error(ctx, "compact(revision): revision must be a number (1 or more)", -1);
        return;
    }
    Cairn__Request req = CAIRN__REQUEST__INIT;
    Cairn__CompactionRequest q = CAIRN__COMPACTION_REQUEST__INIT;
    Cairn__Response *resp;
    struct cairn_error_detail err;
    q.revision = sqlite3_value_int64(argv[0]);
    q.physical = argc > 1 && sqlite3_value_int(argv[1]);
    req.body_case = CAIRN__REQUEST__BODY_COMPACT;
    req.compact = &q;
    int rc = shell_call_expect(sh, &req, CAIRN__RESPONSE__BODY_COMPACT, NULL, true, &resp, &err);
    if (rc != 0) {
        call_failed(ctx, "compact", rc, &err);
        return;
    }
    cairn_response_free(resp);
    sqlite3_result_int64(ctx, q.revision);
}

/* keepalive(lease): renew once; returns the TTL left, in seconds. */
static void fn_keepalive(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    struct shell *sh = shell_of(ctx);
    (void)argc;
    Cairn__Request req = CAIRN__REQUEST__INIT;
    Cairn__LeaseKeepAliveRequest q = CAIRN__LEASE_KEEP_ALIVE_REQUEST__INIT;
    Cairn__Response *resp;
    struct cairn_error_detail err;
    q.id = sqlite3_value_int64(argv[0]);
    req.body_case = CAIRN__REQUEST__BODY_LEASE_KEEP_ALIVE;
    req.lease_keep_alive = &q;
    int rc = shell_call_expect(sh, &req, CAIRN__RESPONSE__BODY_LEASE_KEEP_ALIVE, NULL, false, &resp, &err);
    if (rc != 0) {
        call_failed(ctx, "keepalive", rc, &err);
        return;
    }
    sqlite3_result_int64(ctx, resp->lease_keep_alive->ttl);
    cairn_response_free(resp);
}

static void human(struct sbuf *b, int64_t bytes)
{
    if (bytes >= 10 << 20)
        sbuf_printf(b, "%lld MiB", (long long)(bytes >> 20));
    else if (bytes >= 10 << 10)
        sbuf_printf(b, "%lld KiB", (long long)(bytes >> 10));
    else
        sbuf_printf(b, "%lld bytes", (long long)bytes);
}

static int defrag_one(struct shell *sh, size_t ep, struct sbuf *out, char **why)
{
    Cairn__Request req = CAIRN__REQUEST__INIT;
    Cairn__DefragmentRequest q = CAIRN__DEFRAGMENT_REQUEST__INIT;
    Cairn__Response *resp;
    struct cairn_error_detail err;
    struct cairn_call_opts o = {.pinned = true, .endpoint = (unsigned)ep, .timeout_ms = 120000};
    req.body_case = CAIRN__REQUEST__BODY_DEFRAGMENT;
    req.defragment = &q;
    int rc = shell_call_expect(sh, &req, CAIRN__RESPONSE__BODY_DEFRAGMENT, &o, true, &resp, &err);
    if (rc != 0) {
        char what[300];
        snprintf(what, sizeof what, "defragment %s", sh->eps[ep]);
        *why = shell_call_error(what, rc, &err);
        return -1;
    }
    const Cairn__DefragmentResponse *d = resp->defragment;
    sbuf_printf(out, "%s%s: ", out->n ? "; " : "", sh->eps[ep]);
    human(out, d->db_size_before);
    sbuf_puts(out, " -> ");
    human(out, d->db_size_after);
    sbuf_printf(out, " (applier paused %u ms)", d->pause_ms);
    cairn_response_free(resp);
    return 0;
}

/* defragment([member]): compact the store files of one member, or of every endpoint. */
static void fn_defragment(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    struct shell *sh = shell_of(ctx);
    struct sbuf out = {0};
    char *why = NULL;
    int rc = 0;
    if (argc == 0 || sqlite3_value_type(argv[0]) == SQLITE_NULL) {
        for (size_t i = 0; i < sh->neps && rc == 0; i++)
            rc = defrag_one(sh, i, &out, &why);
    } else {
        uint64_t id;
        int ep = shell_find_member(sh, argv[0], &id, &why);
        rc = ep < 0 ? -1 : defrag_one(sh, (size_t)ep, &out, &why);
    }
    if (rc != 0)
        sqlite3_result_error(ctx, why ? why : "defragment failed", -1);
    else
        sqlite3_result_text(ctx, out.p ? out.p : "", -1, SQLITE_TRANSIENT);
    sqlite3_free(why);
    sbuf_free(&out);
}

/* move_leader(member): hand leadership to member (ID, name or endpoint). */
static void fn_move_leader(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    struct shell *sh = shell_of(ctx);
    char *why = NULL;
    uint64_t target = 0, leader = 0;
    (void)argc;
    if (shell_find_member(sh, argv[0], &target, &why) < 0) {
        /* a member the shell has no endpoint for can still be named by ID */
        target = member_id_parse(argv[0]);
        if (!target) {
            sqlite3_result_error(ctx, why ? why : "move_leader: unknown member", -1);
            sqlite3_free(why);
            return;
        }
        sqlite3_free(why);
        why = NULL;
    }
    int ep = shell_find_leader(sh, &leader, &why);
    if (ep < 0) {
        char *m = sqlite3_mprintf("move_leader: %s", why ? why : "no leader");
        sqlite3_result_error(ctx, m, -1);
        sqlite3_free(m);
        sqlite3_free(why);
        return;
    }
    Cairn__Request req = CAIRN__REQUEST__INIT;
    Cairn__MoveLeaderRequest q = CAIRN__MOVE_LEADER_REQUEST__INIT;
    Cairn__Response *resp;
    struct cairn_error_detail err;
    struct cairn_call_opts o = {.pinned = true, .endpoint = (unsigned)ep};
    q.target_id = target;
    req.body_case = CAIRN__REQUEST__BODY_MOVE_LEADER;
    req.move_leader = &q;
    int rc = shell_call_expect(sh, &req, CAIRN__RESPONSE__BODY_MOVE_LEADER, &o, true, &resp, &err);
    if (rc != 0) {
        call_failed(ctx, "move_leader", rc, &err);
        return;
    }
    cairn_response_free(resp);
    char from[17], to[17];
    member_id_text(leader, from);
    member_id_text(target, to);
    char *m = sqlite3_mprintf("leadership moved from %s to %s", from, to);
    sqlite3_result_text(ctx, m, -1, sqlite3_free);
}

/* snapshot_save(path): pull a consistent copy of the store, check its SHA-256, write it to path. */
static void fn_snapshot_save(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    struct shell *sh = shell_of(ctx);
    const char *path = (const char *)sqlite3_value_text(argv[0]);
    (void)argc;
    if (!path || !path[0]) {
        sqlite3_result_error(ctx, "snapshot_save(path): give the file to write", -1);
        return;
    }
    char *part = sqlite3_mprintf("%s.part", path);
    int fd = part ? open(part, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600) : -1;
    if (fd < 0) {
        char *m = sqlite3_mprintf("snapshot_save: cannot create %s: %s", part ? part : path,
                                  strerror(errno));
        sqlite3_result_error(ctx, m, -1);
        sqlite3_free(m);
        sqlite3_free(part);
        return;
    }
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    uint64_t id = 0, offset = 0;
    int64_t revision = 0;
    struct cairn_call_opts o = {0};
    char *fail = NULL;
    bool done = false;
    while (!done && !fail) {
        Cairn__Request req = CAIRN__REQUEST__INIT;
        Cairn__SnapshotRequest q = CAIRN__SNAPSHOT_REQUEST__INIT;
        Cairn__Response *resp;
        struct cairn_error_detail err;
        q.snapshot_id = id;
        q.offset = offset;
        req.body_case = CAIRN__REQUEST__BODY_SNAPSHOT;
        req.snapshot = &q;
        int rc = shell_call_expect(sh, &req, CAIRN__RESPONSE__BODY_SNAPSHOT, id ? &o : NULL, false,
                                   &resp, &err);
        if (rc != 0) {
            fail = shell_call_error("snapshot_save", rc, &err);
            break;
        }
        if (!id) { /* the copy lives on the member that answered: stay with it */
            o.pinned = true;
            o.endpoint = err.endpoint >= 0 ? (unsigned)err.endpoint : 0;
        }
        const Cairn__SnapshotResponse *s = resp->snapshot;
        id = s->snapshot_id;
        revision = s->revision;
        if (s->offset != offset) {
            fail = sqlite3_mprintf("snapshot_save: the member sent offset %llu, expected %llu",
                                   (unsigned long long)s->offset, (unsigned long long)offset);
        } else if (s->blob.len && write(fd, s->blob.data, s->blob.len) != (ssize_t)s->blob.len) {
            fail = sqlite3_mprintf("snapshot_save: writing %s: %s", part, strerror(errno));
        } else {
            EVP_DigestUpdate(md, s->blob.data, s->blob.len);
            offset += s->blob.len;
            if ((done = s->done)) {
                uint8_t sum[32];
                unsigned int n = 0;
                EVP_DigestFinal_ex(md, sum, &n);
                if (s->sha256.len != 32 || memcmp(sum, s->sha256.data, 32) != 0)
                    fail = sqlite3_mprintf("snapshot_save: the SHA-256 of the %llu bytes received "
                                           "does not match the member's; the copy is damaged",
                                           (unsigned long long)offset);
            } else if (!s->blob.len) {
                fail = sqlite3_mprintf("snapshot_save: the member sent an empty chunk before the end");
            }
        }
        cairn_response_free(resp);
    }
    EVP_MD_CTX_free(md);
    if (!fail && fsync(fd) != 0)
        fail = sqlite3_mprintf("snapshot_save: fsync %s: %s", part, strerror(errno));
    close(fd);
    if (!fail && rename(part, path) != 0)
        fail = sqlite3_mprintf("snapshot_save: rename to %s: %s", path, strerror(errno));
    if (fail) {
        unlink(part);
        sqlite3_result_error(ctx, fail, -1);
        sqlite3_free(fail);
    } else {
        char *m = sqlite3_mprintf("%llu bytes at revision %lld written to %s",
                                  (unsigned long long)offset, (long long)revision, path);
        sqlite3_result_text(ctx, m, -1, sqlite3_free);
    }
    sqlite3_free(part);
}

/* ---------------------------------------------------------------- helpers */

static void fn_printable(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    size_t n;
    const uint8_t *b = value_bytes(argv[0], &n);
    if (!b)
        return;
    struct sbuf s = {0};
    /* backslashes doubled, so the escapes are unambiguous */
    size_t from = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i == n || b[i] == '\\') {
            bytes_escape(&s, b + from, i - from);
            if (i < n)
                sbuf_puts(&s, "\\\\");
            from = i + 1;
        }
    }
    sbuf_add(&s, "", 0);
    sqlite3_result_text(ctx, s.p ? s.p : "", (int)s.n, SQLITE_TRANSIENT);
    sbuf_free(&s);
}

static void fn_base64(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    size_t n;
    const uint8_t *b = value_bytes(argv[0], &n);
    if (!b)
        return;
    struct sbuf s = {0};
    bytes_base64(&s, b, n);
    sqlite3_result_text(ctx, s.p ? s.p : "", (int)s.n, SQLITE_TRANSIENT);
    sbuf_free(&s);
}

static void fn_unbase64(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    size_t n;
    const uint8_t *b = value_bytes(argv[0], &n);
    if (!b)
        return;
    uint8_t *out = malloc(n + 1);
    long len = out ? bytes_unbase64((const char *)b, n, out) : -1;
    if (len < 0)
        sqlite3_result_error(ctx, "unbase64: not base64", -1);
    else
        sqlite3_result_blob(ctx, out, (int)len, SQLITE_TRANSIENT);
    free(out);
}

static void fn_unhex(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    size_t n;
    const uint8_t *b = value_bytes(argv[0], &n);
    if (!b)
        return;
    uint8_t *out = malloc(n / 2 + 1);
    size_t o = 0;
    int hi = -1;
    for (size_t i = 0; out && i < n; i++) {
        int v = b[i] >= '0' && b[i] <= '9'   ? b[i] - '0'
                : b[i] >= 'a' && b[i] <= 'f' ? b[i] - 'a' + 10
                : b[i] >= 'A' && b[i] <= 'F' ? b[i] - 'A' + 10
                                             : -1;
        if (v < 0) {
            free(out);
            return; /* SQLite 3.41's unhex: NULL for what is not hex */
        }
        if (hi < 0) {
            hi = v;
        } else {
            out[o++] = (uint8_t)(hi << 4 | v);
            hi = -1;
        }
    }
    if (out && hi < 0)
        sqlite3_result_blob(ctx, out, (int)o, SQLITE_TRANSIENT);
    free(out);
}

static void fn_prefix_end(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    size_t n;
    const uint8_t *b = value_bytes(argv[0], &n);
    if (!b || !n)
        return;
    uint8_t *end = malloc(n);
    if (!end)
        return;
    size_t len = prefix_end(b, n, end);
    if (len)
        result_bytes(ctx, end, len);
    free(end);
}

static void fn_last_commit(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    (void)argv;
    struct shell *sh = shell_of(ctx);
    if (sh->last_commit_rev)
        sqlite3_result_int64(ctx, sh->last_commit_rev);
}

int functions_register(struct shell *sh)
{
    static const struct {
        const char *name;
        int nargs;
        bool pure;
        void (*fn)(sqlite3_context *, int, sqlite3_value **);
    } fns[] = {
        {"compact", 1, false, fn_compact},
        {"compact", 2, false, fn_compact},
        {"keepalive", 1, false, fn_keepalive},
        {"defragment", 0, false, fn_defragment},
        {"defragment", 1, false, fn_defragment},
        {"move_leader", 1, false, fn_move_leader},
        {"snapshot_save", 1, false, fn_snapshot_save},
        {"last_commit_revision", 0, false, fn_last_commit},
        {"printable", 1, true, fn_printable},
        {"base64", 1, true, fn_base64},
        {"unbase64", 1, true, fn_unbase64},
        {"prefix_end", 1, true, fn_prefix_end},
    };
    for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
        int flags = SQLITE_UTF8 | (fns[i].pure ? SQLITE_DETERMINISTIC | SQLITE_INNOCUOUS : SQLITE_DIRECTONLY);
        int rc = sqlite3_create_function_v2(sh->db, fns[i].name, fns[i].nargs, flags, sh, fns[i].fn,
                                            NULL, NULL, NULL);
        if (rc != SQLITE_OK)
            return rc;
    }
    /* unhex is SQLite's own from 3.41 on */
    if (sqlite3_libversion_number() < 3041000)
        return sqlite3_create_function_v2(sh->db, "unhex", 1,
                                          SQLITE_UTF8 | SQLITE_DETERMINISTIC | SQLITE_INNOCUOUS, sh,
                                          fn_unhex, NULL, NULL, NULL);
    return SQLITE_OK;
}
