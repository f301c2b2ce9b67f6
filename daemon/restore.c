/*
 * cairnd restore: check a saved snapshot, then build <data-dir>/member from
 * it the way a new cluster's bootstrap does (daemon/boot.c), so that every
 * member restored from the same file with the same --initial-cluster and
 * token starts as one new cluster holding the snapshot's keys, revisions
 * and leases.  It never touches a data directory that holds anything.
 *
 * The checks: the file is a Cairn store and SQLite's integrity check passes
 * (every page is read); and when FILE.sha256 lies beside it (libcairn's
 * cairn_snapshot_save writes one, in sha256sum's format), the file's SHA-256
 * must match it.  Without one the hash is not checked and the output says so:
 * a copy made by other means (cp of a stopped member's mvcc.db) still
 * restores.
 */
#include "daemon/restore.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>

#include "base/errors.h"
#include "daemon/boot.h"
#include "daemon/config.h"
#include "storage/mvcc.h"

#define EXIT_CONFIG 78 /* sysexits' EX_CONFIG, as cairnd */

static void usage(FILE *out)
{
    fprintf(out, "usage: cairnd restore SNAPSHOT --data-dir DIR --name NAME --initial-cluster NAME=URL,...\n"
                 "                      [--initial-cluster-token TOKEN] [--initial-advertise-peer-urls URL,...]\n"
                 "Makes DIR (missing or empty) a member of a new cluster holding SNAPSHOT's data.  Restore every\n"
                 "member from the same file with the same --initial-cluster and token, then start each with\n"
                 "--initial-cluster-state new.  Other cairnd options are accepted and ignored, so the member's\n"
                 "own flags can be given as they are.\n");
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The file's SHA-256 as 64 lowercase hex digits. */
static int file_sha256(const char *path, char hex[65])
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -errno;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int rc = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) ? 0 : -ENOMEM;
    static unsigned char buf[1 << 20];
    size_t n;
    while (rc == 0 && (n = fread(buf, 1, sizeof buf, f)) > 0)
        EVP_DigestUpdate(ctx, buf, n);
    if (rc == 0 && ferror(f))
        rc = -EIO;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (rc == 0) {
        EVP_DigestFinal_ex(ctx, md, &mdlen);
        for (unsigned i = 0; i < 32; i++)
            snprintf(hex + 2 * i, 3, "%02x", md[i]);
    }
    EVP_MD_CTX_free(ctx);
    fclose(f);
    return rc;
}

/*
 * The hash FILE.sha256 gives, in *want: 1 found, 0 no such file, negative
 * when it exists but cannot be read or does not start with 64 hex digits.
 */
static int sidecar_sha256(const char *path, char want[65], char *side, size_t sidelen)
{
    snprintf(side, sidelen, "%s.sha256", path);
    FILE *f = fopen(side, "r");
    if (!f)
        return errno == ENOENT ? 0 : -errno;
    char line[256] = "";
    int ok = fgets(line, sizeof line, f) != NULL;
    fclose(f);
    if (!ok || strspn(line, "0123456789abcdefABCDEF") < 64)
        return -CAIRN_E_MALFORMED;
    for (int i = 0; i < 64; i++)
        want[i] = (char)(line[i] | 0x20); /* lower case */
    want[64] = 0;
    return 1;
}

int restore_main(int argc, char **argv)
{
    if (argc < 3 || argv[2][0] == '-') {
        if (argc >= 3 && (!strcmp(argv[2], "--help") || !strcmp(argv[2], "-h"))) {
            usage(stdout);
            return 0;
        }
        fprintf(stderr, "cairnd restore: name the snapshot file first\n");
        usage(stderr);
        return EXIT_CONFIG;
    }
    const char *snapshot = argv[2];
    /* the options as cairnd would read them: argv without "restore SNAPSHOT" */
    char **args = calloc((size_t)argc, sizeof(*args));
    if (!args)
        return 1;
    int nargs = 0;
    args[nargs++] = argv[0];
    for (int i = 3; i < argc; i++)
        args[nargs++] = argv[i];
    struct config cfg;
    char err[2048] = "";
    int rc = config_load(&cfg, nargs, args, NULL, err, sizeof err);
    free(args);
    if (rc < 0) {
        fprintf(stderr, "cairnd restore: %s\n", err);
        usage(stderr);
        return EXIT_CONFIG;
    }
    int code = 1;
    double t0 = now_s();

    /* 1. the hash, when the file came with one */
    char want[65] = "", got[65] = "", side[4200];
    char hash_note[4300];
    rc = sidecar_sha256(snapshot, want, side, sizeof side);
    if (rc < 0) {
        fprintf(stderr, "cairnd restore: %s: %s; expected a SHA-256 in hex as sha256sum writes it\n", side,
                rc == -CAIRN_E_MALFORMED ? "does not start with 64 hex digits" : strerror(-rc));
        goto out;
    }
    if (rc == 1) {
        int hrc = file_sha256(snapshot, got);
        if (hrc < 0) {
            fprintf(stderr, "cairnd restore: cannot read %s: %s\n", snapshot, strerror(-hrc));
            code = hrc == -ENOENT ? EXIT_CONFIG : 1;
            goto out;
        }
        if (strcmp(got, want)) {
            fprintf(stderr,
                    "cairnd restore: %s is damaged or is not the file %s describes: its SHA-256 is %s, "
                    "%s says %s; use an intact copy of the snapshot\n",
                    snapshot, side, got, side, want);
            goto out;
        }
        snprintf(hash_note, sizeof hash_note, "its SHA-256 matches %s", side);
    } else {
        snprintf(hash_note, sizeof hash_note, "no %s beside it, so its SHA-256 was not checked", side);
    }

    /* 2. SQLite's own check of every page, and what the copy holds */
    struct mvcc_status st;
    rc = mvcc_snapshot_check(snapshot, true, &st, err, sizeof err);
    if (rc < 0) {
        fprintf(stderr, "cairnd restore: %s; nothing was written\n", err);
        code = rc == -ENOENT || rc == -EINVAL ? EXIT_CONFIG : 1;
        goto out;
    }
    printf("checked %s: a Cairn store at revision %" PRId64 " (compacted to %" PRId64 "), %" PRId64
           " bytes; SQLite's integrity check passed; %s\n",
           snapshot, st.revision, st.compact_revision, st.db_size, hash_note);

    /* 3. the member directory */
    struct boot_restore_info info;
    rc = boot_restore(&cfg, snapshot, &info, err, sizeof err);
    if (rc < 0) {
        fprintf(stderr, "cairnd restore: %s\n", err);
        code = rc == -CAIRN_E_CONFIG ? EXIT_CONFIG : 1;
        goto out;
    }
    printf("restored into %s: member '%s' (%016" PRIx64 ") of the new cluster %016" PRIx64
           " (token '%s') with %zu member(s); revision %" PRId64 ", every key, revision and lease kept; "
           "alarms cleared; took %.2f s\n",
           info.member_dir, cfg.name, info.self_id, info.cluster_id, cfg.initial_cluster_token, info.n_members,
           info.revision, now_s() - t0);
    printf("next: restore the other members from the same file with the same --initial-cluster and "
           "--initial-cluster-token, then start every member with --initial-cluster-state new\n");
    code = 0;
out:
    config_free(&cfg);
    return code;
}
