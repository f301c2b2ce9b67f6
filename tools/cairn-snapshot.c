/*
 * cairn-snapshot: save a member's store through libcairn (Snapshot), or move
 * the leadership (MoveLeader).  An operator's tool and the integration
 * tests' way to drive both; restoring is `cairnd restore`.
 *
 *   cairn-snapshot save ENDPOINTS FILE      FILE and FILE.sha256; one line of JSON on stdout
 *   cairn-snapshot move-leader ENDPOINTS ID leadership to member ID (hex)
 *
 * ENDPOINTS is a comma-separated list of client URLs; save uses the first
 * that answers.  Exit 0 done, 1 failed, 2 bad usage.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/errors.h"
#include "client/cairn.h"

static void usage(void)
{
    fprintf(stderr, "usage: cairn-snapshot save ENDPOINTS FILE\n"
                    "       cairn-snapshot move-leader ENDPOINTS MEMBER_ID_HEX\n");
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    if (argc != 4 || (strcmp(argv[1], "save") && strcmp(argv[1], "move-leader"))) {
        usage();
        return 2;
    }
    char *list = strdup(argv[2]);
    const char *eps[CAIRN_MAX_ENDPOINTS];
    size_t n = 0;
    for (char *save = NULL, *t = strtok_r(list, ",", &save); t && n < CAIRN_MAX_ENDPOINTS;
         t = strtok_r(NULL, ",", &save))
        eps[n++] = t;
    struct cairn_config cfg = {.endpoints = eps, .n_endpoints = n, .call_timeout_ms = 60000};
    struct cairn_client *c = NULL;
    struct cairn_error_detail err = {0};
    int rc = cairn_open(&cfg, &c, &err);
    if (rc < 0) {
        fprintf(stderr, "cairn-snapshot: %s\n", err.message[0] ? err.message : cairn_strerror(rc));
        free(list);
        return 2;
    }
    if (!strcmp(argv[1], "save")) {
        struct cairn_snapshot_info info;
        double t0 = now_s();
        rc = cairn_snapshot_save(c, argv[3], NULL, &info, &err);
        double took = now_s() - t0;
        if (rc == 0) {
            printf("{\"file\": \"%s\", \"bytes\": %" PRIu64 ", \"revision\": %" PRId64 ", \"member_id\": \"%016" PRIx64
                   "\", \"seconds\": %.3f, \"mb_per_s\": %.1f, \"sha256\": \"",
                   argv[3], info.size, info.revision, info.member_id, took,
                   took > 0 ? (double)info.size / 1048576.0 / took : 0.0);
            for (int i = 0; i < 32; i++)
                printf("%02x", info.sha256[i]);
            printf("\"}\n");
        }
    } else {
        char *end;
        errno = 0;
        unsigned long long id = strtoull(argv[3], &end, 16);
        if (*end || errno || !id) {
            fprintf(stderr, "cairn-snapshot: '%s' is not a member ID in hex\n", argv[3]);
            cairn_close(c);
            free(list);
            return 2;
        }
        rc = cairn_move_leader(c, id, NULL, &err);
        if (rc == 0)
            printf("member %016llx leads now\n", id);
    }
    if (rc < 0)
        fprintf(stderr, "cairn-snapshot: %s failed: %s\n", argv[1], err.message[0] ? err.message : cairn_strerror(rc));
    cairn_close(c);
    free(list);
    return rc < 0 ? 1 : 0;
}
