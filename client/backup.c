/*
 * libcairn: snapshot save and move-leader.  A snapshot is pulled from one
 * member in chunks (the first request starts a copy there; every later one
 * names it and the next offset), written to PATH.part, checked against the
 * SHA-256 the member sends with the last chunk, synced and renamed to PATH;
 * PATH.sha256 (sha256sum's format) is written beside it for `cairnd
 * restore` and for people.  SHA-256 is computed here, not with OpenSSL:
 * libcairn links only nng and protobuf-c.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/errors.h"
#include "client/cairn.h"
#include "client/internal.h"

/* ---------------------------------------------------------------- SHA-256 (FIPS 180-4) */

struct sha256 {
    uint32_t h[8];
    uint64_t len;
    uint8_t buf[64];
    size_t n;
};

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_block(struct sha256 *s, const uint8_t *p)
{
    uint32_t w[64], a, b, c, d, e, f, g, h;
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    a = s->h[0], b = s->h[1], c = s->h[2], d = s->h[3], e = s->h[4], f = s->h[5], g = s->h[6], h = s->h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = h + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
        uint32_t t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        h = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
    }
    s->h[0] += a, s->h[1] += b, s->h[2] += c, s->h[3] += d;
    s->h[4] += e, s->h[5] += f, s->h[6] += g, s->h[7] += h;
}

static void sha256_init(struct sha256 *s)
{
    static const uint32_t iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(s->h, iv, sizeof iv);
    s->len = 0;
    s->n = 0;
}

static void sha256_update(struct sha256 *s, const uint8_t *p, size_t len)
{
    s->len += len;
    if (s->n) {
        size_t take = 64 - s->n < len ? 64 - s->n : len;
        memcpy(s->buf + s->n, p, take);
        s->n += take, p += take, len -= take;
        if (s->n < 64)
            return;
        sha256_block(s, s->buf);
        s->n = 0;
    }
    for (; len >= 64; p += 64, len -= 64)
        sha256_block(s, p);
    memcpy(s->buf, p, len);
    s->n = len;
}

static void sha256_final(struct sha256 *s, uint8_t out[32])
{
    uint64_t bits = s->len * 8;
    uint8_t pad[72] = {0x80};
    size_t padlen = (s->n < 56 ? 56 : 120) - s->n;
    for (int i = 0; i < 8; i++)
        pad[padlen + (size_t)i] = (uint8_t)(bits >> (56 - 8 * i));
    sha256_update(s, pad, padlen + 8);
    for (int i = 0; i < 8; i++)
        for (int k = 0; k < 4; k++)
            out[4 * i + k] = (uint8_t)(s->h[i] >> (24 - 8 * k));
}

/* ---------------------------------------------------------------- snapshot save */

#define CHUNK_ATTEMPTS 3 /* a chunk request is idempotent: retried on a lost connection or a busy member */

static int fsync_dir_of(const char *path)
{
    char *copy = strdup(path);
    if (!copy)
        return -ENOMEM;
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    free(copy);
    if (fd < 0)
        return -errno;
    int rc = fsync(fd) < 0 ? -errno : 0;
    close(fd);
    return rc;
}

static int write_all(int fd, const void *p, size_t len, uint64_t off)
{
    const uint8_t *b = p;
    while (len) {
        ssize_t n = pwrite(fd, b, len, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        b += n, len -= (size_t)n, off += (uint64_t)n;
    }
    return 0;
}

/* PATH.sha256 in sha256sum's format ("<hex>  <name>"), written whole or not at all. */
static int write_sidecar(const char *path, const uint8_t sha[32])
{
    char side[4200], tmp[4300], line[4200 + 80];
    char *copy = strdup(path);
    if (!copy)
        return -ENOMEM;
    snprintf(side, sizeof side, "%s.sha256", path);
    snprintf(tmp, sizeof tmp, "%s.tmp", side);
    int n = 0;
    for (int i = 0; i < 32; i++)
        n += snprintf(line + n, sizeof line - (size_t)n, "%02x", sha[i]);
    n += snprintf(line + n, sizeof line - (size_t)n, "  %s\n", basename(copy));
    free(copy);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    int rc = write_all(fd, line, (size_t)n, 0);
    if (rc == 0 && fsync(fd) < 0)
        rc = -errno;
    close(fd);
    if (rc == 0 && rename(tmp, side) < 0)
        rc = -errno;
    if (rc < 0)
        unlink(tmp);
    return rc;
}

/* One Snapshot request, retried while the member is busy or the connection failed. */
static int snapshot_call(struct cairn_client *c, uint64_t id, uint64_t offset, const struct cairn_call_opts *opts,
                         Cairn__Response **resp, struct cairn_error_detail *err)
{
    Cairn__SnapshotRequest q = CAIRN__SNAPSHOT_REQUEST__INIT;
    Cairn__Request req = CAIRN__REQUEST__INIT;
    q.snapshot_id = id;
    q.offset = offset;
    req.body_case = CAIRN__REQUEST__BODY_SNAPSHOT;
    req.snapshot = &q;
    int rc = 0;
    /* the first request is not retried: each starts another copy on the member */
    for (int attempt = 0; attempt < (id ? CHUNK_ATTEMPTS : 1); attempt++) {
        rc = client_call_expect(c, &req, CAIRN__RESPONSE__BODY_SNAPSHOT, opts, resp, err);
        if (rc == -CAIRN_E_MALFORMED)
            return rc;
        if (rc != -CAIRN_E_TIMEOUT && rc != -CAIRN_E_UNAVAILABLE && rc != -CAIRN_E_TOO_MANY_REQUESTS)
            break;
    }
    return rc;
}

int cairn_snapshot_save(struct cairn_client *c, const char *path, const struct cairn_call_opts *opts,
                        struct cairn_snapshot_info *info, struct cairn_error_detail *err)
{
    char part[4200];
    struct cairn_call_opts o = opts ? *opts : (struct cairn_call_opts){0};
    struct cairn_error_detail d0, *e = err ? err : &d0;
    Cairn__Response *resp = NULL;
    struct sha256 sha;
    uint8_t got[32];
    uint64_t id = 0, offset = 0, total = 0;
    int64_t revision = 0;
    uint64_t member = 0;
    int fd = -1, rc;

    if (!c || !path || !*path)
        return -EINVAL;
    if (snprintf(part, sizeof part, "%s.part", path) >= (int)sizeof part)
        return -ENAMETOOLONG;
    fd = open(part, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        rc = -errno;
        detail_set(e, rc, "cannot create %s: %s", part, strerror(errno));
        return rc;
    }
    sha256_init(&sha);
    for (;;) {
        if ((rc = snapshot_call(c, id, offset, &o, &resp, e)) < 0)
            goto fail;
        const Cairn__SnapshotResponse *r = resp->snapshot;
        if (id == 0) {
            /* every later chunk comes from the member that holds the copy */
            id = r->snapshot_id;
            total = r->total_size;
            revision = r->revision;
            member = resp->header ? resp->header->member_id : 0;
            if (e->endpoint >= 0) {
                o.pinned = true;
                o.endpoint = (unsigned)e->endpoint;
            }
        }
        if (r->snapshot_id != id || r->offset != offset || r->total_size != total ||
            r->blob.len > total - offset || (!r->done && r->blob.len == 0) ||
            (r->done && offset + r->blob.len != total)) {
            detail_set(e, -CAIRN_E_MALFORMED,
                       "snapshot %016llx: the member sent %zu bytes at offset %llu of %llu (snapshot %016llx) where "
                       "offset %llu of %llu was asked for; nothing was saved",
                       (unsigned long long)id, r->blob.len, (unsigned long long)r->offset,
                       (unsigned long long)r->total_size, (unsigned long long)r->snapshot_id,
                       (unsigned long long)offset, (unsigned long long)total);
            rc = -CAIRN_E_MALFORMED;
            goto fail;
        }
        if ((rc = write_all(fd, r->blob.data, r->blob.len, offset)) < 0) {
            detail_set(e, rc, "cannot write %s at offset %llu: %s", part, (unsigned long long)offset, strerror(-rc));
            goto fail;
        }
        sha256_update(&sha, r->blob.data, r->blob.len);
        offset += r->blob.len;
        if (r->done) {
            sha256_final(&sha, got);
            if (r->sha256.len != 32 || memcmp(r->sha256.data, got, 32)) {
                detail_set(e, -CAIRN_E_CORRUPT,
                           "snapshot %016llx: the %llu bytes received do not have the SHA-256 the member sent; "
                           "nothing was saved: save it again",
                           (unsigned long long)id, (unsigned long long)total);
                rc = -CAIRN_E_CORRUPT;
                goto fail;
            }
            break;
        }
        cairn_response_free(resp);
        resp = NULL;
    }
    cairn_response_free(resp);
    resp = NULL;
    if (fsync(fd) < 0) {
        rc = -errno;
        detail_set(e, rc, "cannot sync %s: %s", part, strerror(errno));
        goto fail;
    }
    close(fd);
    fd = -1;
    if (rename(part, path) < 0) {
        rc = -errno;
        detail_set(e, rc, "cannot rename %s to %s: %s", part, path, strerror(errno));
        goto fail;
    }
    if ((rc = fsync_dir_of(path)) < 0 || (rc = write_sidecar(path, got)) < 0) {
        detail_set(e, rc, "saved %s but cannot write %s.sha256 beside it: %s", path, path, strerror(-rc));
        return rc;
    }
    if (info) {
        info->size = total;
        info->revision = revision;
        info->member_id = member;
        memcpy(info->sha256, got, 32);
    }
    return 0;
fail:
    cairn_response_free(resp);
    if (fd >= 0)
        close(fd);
    unlink(part);
    return rc;
}

/* ---------------------------------------------------------------- move leader */

int cairn_move_leader(struct cairn_client *c, uint64_t target_id, const struct cairn_call_opts *opts,
                      struct cairn_error_detail *err)
{
    Cairn__MoveLeaderRequest q = CAIRN__MOVE_LEADER_REQUEST__INIT;
    Cairn__Request req = CAIRN__REQUEST__INIT;
    q.target_id = target_id;
    req.body_case = CAIRN__REQUEST__BODY_MOVE_LEADER;
    req.move_leader = &q;
    if (!c)
        return -EINVAL;
    /* Only the leader serves it; cairn_call takes a follower's NOT_LEADER refusal (which changed
     * nothing) on to the next member until the leader answers. */
    return client_call_expect(c, &req, CAIRN__RESPONSE__BODY_MOVE_LEADER, opts, NULL, err);
}
