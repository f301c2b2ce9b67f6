/*
 * cairn-wal: offline inspection of a member's WAL and snapshot files, for an
 * operator looking at a stopped member (etcd keeps such tools apart from the
 * server too).  Read-only: it never repairs, truncates or renames anything.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/errors.h"
#include "storage/snap.h"
#include "storage/wal.h"

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: cairn-wal dump WAL_DIR\n"
            "       cairn-wal snapshots SNAP_DIR\n"
            "       cairn-wal --help | --version\n\n"
            "dump       print every record of every segment (offset, type, index, term, CRC)\n"
            "           and where the log is damaged.  Exit status: 0 intact, 1 only a torn\n"
            "           tail (a crash mid-write; the member cuts it on start), 2 corrupt\n"
            "           (the member refuses to start), 3 the directory cannot be read.\n"
            "snapshots  list the snapshot files, newest first, and check each checksum.\n"
            "           Exit status: 0 all valid, 2 some damaged, 3 cannot read.\n"
            "Typically WAL_DIR is <data-dir>/member/wal and SNAP_DIR <data-dir>/member/snap.\n");
}

static int dump(const char *dir)
{
    int rc = wal_dump(dir, stdout);
    if (rc == 0 || rc == 1)
        return rc;
    if (rc == -CAIRN_E_CORRUPT)
        return 2;
    fprintf(stderr, "cairn-wal: cannot read %s: %s\n", dir, cairn_strerror(rc));
    return 3;
}

static int snapshots(const char *dir)
{
    struct snap_id *ids = NULL;
    size_t n = 0;
    int bad = 0, rc = snap_list(dir, &ids, &n);

    if (rc < 0) {
        fprintf(stderr, "cairn-wal: cannot list %s: %s\n", dir, cairn_strerror(rc));
        return 3;
    }
    printf("%-40s %12s %12s %8s  %s\n", "file", "term", "index", "status", "state-machine copy");
    for (size_t i = 0; i < n; i++) {
        const char *name = ids[i].name;
        struct snap_meta m;
        rc = snap_load(dir, name, &m);
        if (rc == 0) {
            printf("%-40s %12llu %12llu %8s  %s\n", name, (unsigned long long)m.term,
                   (unsigned long long)m.index, "ok", m.db_file && m.db_file[0] ? m.db_file : "-");
            snap_meta_free(&m);
        } else {
            printf("%-40s %12llu %12llu %8s  %s\n", name, (unsigned long long)ids[i].term,
                   (unsigned long long)ids[i].index, "DAMAGED", cairn_strerror(rc));
            bad = 1;
        }
    }
    if (n == 0)
        printf("(no snapshot files)\n");
    free(ids);
    return bad ? 2 : 0;
}

int main(int argc, char **argv)
{
    if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        usage(stdout);
        return 0;
    }
    if (argc == 2 && !strcmp(argv[1], "--version")) {
        printf("cairn-wal %s\n", CAIRN_VERSION);
        return 0;
    }
    if (argc == 3 && !strcmp(argv[1], "dump"))
        return dump(argv[2]);
    if (argc == 3 && !strcmp(argv[1], "snapshots"))
        return snapshots(argv[2]);
    usage(stderr);
    return 3;
}
