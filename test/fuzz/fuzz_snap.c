/*
 * Fuzz target: the Raft snapshot metadata loader (storage/snap.c) on
 * arbitrary files.  The input is split on SEP into at most 4 files; each is
 * written as the .snap file its own header names (term, index at bytes
 * 16..32, the name a real file has; short files get names of their own),
 * then snap_load each, and snap_load_newest over the directory, which must
 * load a file snap_load accepted or rename the broken ones aside.  A loaded
 * snapshot's membership goes through raftmsg_conf_decode as daemon/boot.c
 * does.
 */
#include "test/fuzz/fuzz.h"

#include "base/errors.h"
#include "daemon/raftmsg.h"
#include "storage/snap.h"

#define SEP "\n%SNAP%\n"
#define SEP_LEN 8
#define MAX_FILES 4

static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static void check_meta(const struct snap_meta *m, uint64_t term, uint64_t index)
{
    FUZZ_CHECK(m->term == term && m->index == index);
    FUZZ_CHECK(m->conf_len <= SNAP_MAX_CONF);
    FUZZ_CHECK(m->conf_len == 0 || m->conf_state != NULL);
    FUZZ_CHECK(m->db_file != NULL && strlen(m->db_file) <= SNAP_MAX_DB_NAME);
    struct raft_conf_state cs;
    int rc = raftmsg_conf_decode(m->conf_state, m->conf_len, &cs);
    FUZZ_CHECK(rc == 0 || rc == -CAIRN_E_MALFORMED);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fd_before = fuzz_fd_probe();
    const char *dir = fuzz_dir("snap");
    struct snap_id ids[MAX_FILES];
    int ok[MAX_FILES];
    size_t nfiles = 0;
    const uint8_t *p = data, *end = data + size;

    while (nfiles < MAX_FILES && p <= end) {
        const uint8_t *sep = (size_t)(end - p) >= SEP_LEN ? memmem(p, (size_t)(end - p), SEP, SEP_LEN) : NULL;
        const uint8_t *f_end = sep ? sep : end;
        size_t n = (size_t)(f_end - p);
        struct snap_id *id = &ids[nfiles];
        if (n >= 32) {
            id->term = get64(p + 16);
            id->index = get64(p + 24);
        } else {
            id->term = 0xfffff0 + nfiles; /* out of the way of real names */
            id->index = n;
        }
        snprintf(id->name, sizeof id->name, "%016llx-%016llx.snap", (unsigned long long)id->term,
                 (unsigned long long)id->index);
        fuzz_write_file(dir, id->name, p, n);
        nfiles++;
        if (!sep)
            break;
        p = sep + SEP_LEN;
    }

    for (size_t i = 0; i < nfiles; i++) {
        struct snap_meta m;
        memset(&m, 0, sizeof m);
        int rc = snap_load(dir, ids[i].name, &m);
        FUZZ_CHECK(rc == 0 || rc == -CAIRN_E_CORRUPT);
        ok[i] = rc == 0;
        if (rc == 0)
            check_meta(&m, ids[i].term, ids[i].index);
        snap_meta_free(&m);
    }
    /* Two files of one name: the later write won, the earlier verdict is stale. */
    for (size_t i = 0; i < nfiles; i++)
        for (size_t j = i + 1; j < nfiles; j++)
            if (!strcmp(ids[i].name, ids[j].name))
                ok[i] = ok[j];
    int any_ok = 0;
    for (size_t i = 0; i < nfiles; i++)
        any_ok |= ok[i];

    struct snap_meta m;
    struct snap_load_info info;
    memset(&m, 0, sizeof m);
    int rc = snap_load_newest(dir, &m, &info);
    FUZZ_CHECK(rc == 0 || rc == -CAIRN_E_NOT_FOUND);
    FUZZ_CHECK((rc == 0) == any_ok);
    if (rc == 0) {
        size_t i;
        for (i = 0; i < nfiles; i++)
            if (ok[i] && !strcmp(ids[i].name, info.name))
                break;
        FUZZ_CHECK(i < nfiles);
        check_meta(&m, ids[i].term, ids[i].index);
        /* Nothing newer that verifies was passed over. */
        for (size_t j = 0; j < nfiles; j++)
            if (ok[j])
                FUZZ_CHECK(ids[j].index < m.index || (ids[j].index == m.index && ids[j].term <= m.term));
    }
    snap_meta_free(&m);
    fuzz_dir_clear();
    FUZZ_CHECK(fuzz_fd_probe() == fd_before);
    return 0;
}
