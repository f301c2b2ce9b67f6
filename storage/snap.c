/*
 * Snapshot metadata files: atomic save, verified load with fall-back past
 * broken files, listing and purging.  Each file is one checksummed blob;
 * nothing is cached between calls.  The state-machine copy a snapshot names
 * is written by storage/mvcc; this module only deletes it when purging.
 */
#include "storage/snap.h"
#include "storage/dirlist.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/crc32c.h"
#include "base/errors.h"

/*
 * Layout (little-endian):
 *   "CAIRNSNP" | u32 version=1 | u32 conf_len | u64 term | u64 index |
 *   u32 db_len | u32 0 | conf[conf_len] | db_name[db_len] | u32 crc32c
 * The CRC covers every byte before it.
 */
#define SNAP_MAGIC "CAIRNSNP"
#define SNAP_VERSION 1
#define SNAP_FIXED 40u
#define SNAP_NAME_LEN 38 /* 16 + 1 + 16 + ".snap" */

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get64(const uint8_t *p)
{
    return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

static void snap_name(char *buf, size_t len, uint64_t term, uint64_t index)
{
    snprintf(buf, len, "%016llx-%016llx.snap", (unsigned long long)term,
             (unsigned long long)index);
}

static int parse_name(const char *name, struct snap_id *id)
{
    char check[SNAP_NAME_LEN + 1];
    unsigned long long term, index;

    if (strlen(name) != SNAP_NAME_LEN || sscanf(name, "%16llx-%16llx.snap", &term, &index) != 2)
        return 0;
    snap_name(check, sizeof check, term, index);
    if (strcmp(check, name) != 0)
        return 0;
    id->term = term;
    id->index = index;
    memcpy(id->name, name, SNAP_NAME_LEN + 1);
    return 1;
}

static int fsync_path(const char *dir)
{
    int rc = 0, fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    if (fsync(fd) < 0)
        rc = -errno;
    close(fd);
    return rc;
}

int snap_save(const char *dir, const struct snap_meta *meta)
{
    char name[SNAP_NAME_LEN + 1], path[4200], tmp[4210];
    size_t db_len, total;
    uint8_t *buf = NULL;
    int fd = -1, rc = 0;

    if (!dir || !meta || (meta->conf_len && !meta->conf_state) || meta->conf_len > SNAP_MAX_CONF)
        return -CAIRN_E_INVALID_ARGUMENT;
    db_len = meta->db_file ? strlen(meta->db_file) : 0;
    if (db_len > SNAP_MAX_DB_NAME)
        return -CAIRN_E_INVALID_ARGUMENT;
    snap_name(name, sizeof name, meta->term, meta->index);
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, name) >= sizeof path)
        return -ENAMETOOLONG;
    snprintf(tmp, sizeof tmp, "%s.tmp", path);

    total = SNAP_FIXED + meta->conf_len + db_len + 4;
    buf = malloc(total);
    if (!buf)
        return -ENOMEM;
    memcpy(buf, SNAP_MAGIC, 8);
    put32(buf + 8, SNAP_VERSION);
    put32(buf + 12, (uint32_t)meta->conf_len);
    put64(buf + 16, meta->term);
    put64(buf + 24, meta->index);
    put32(buf + 32, (uint32_t)db_len);
    put32(buf + 36, 0);
    if (meta->conf_len)
        memcpy(buf + SNAP_FIXED, meta->conf_state, meta->conf_len);
    if (db_len)
        memcpy(buf + SNAP_FIXED + meta->conf_len, meta->db_file, db_len);
    put32(buf + total - 4, crc32c_extend(0, buf, total - 4));

    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        rc = -errno;
        goto out;
    }
    for (size_t done = 0; done < total;) {
        ssize_t r = write(fd, buf + done, total - done);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            rc = r < 0 ? -errno : -EIO;
            goto out;
        }
        done += (size_t)r;
    }
    if (fsync(fd) < 0) {
        rc = -errno;
        goto out;
    }
    if (close(fd) < 0) {
        fd = -1;
        rc = -errno;
        goto out;
    }
    fd = -1;
    if (rename(tmp, path) < 0) {
        rc = -errno;
        goto out;
    }
    rc = fsync_path(dir);
out:
    if (fd >= 0)
        close(fd);
    if (rc < 0)
        unlink(tmp);
    free(buf);
    return rc;
}

void snap_meta_free(struct snap_meta *m)
{
    if (!m)
        return;
    free((void *)m->conf_state);
    free((void *)m->db_file);
    memset(m, 0, sizeof *m);
}

/* Read all of a (small) file. */
static int slurp(const char *path, uint8_t **buf, size_t *len)
{
    struct stat st;
    uint8_t *b = NULL;
    size_t got = 0;
    int rc = 0, fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0)
        return -errno;
    if (fstat(fd, &st) < 0) {
        rc = -errno;
        goto out;
    }
    if ((uint64_t)st.st_size > SNAP_FIXED + 4 + SNAP_MAX_CONF + SNAP_MAX_DB_NAME) {
        rc = -CAIRN_E_CORRUPT;
        goto out;
    }
    b = malloc((size_t)st.st_size + 1);
    if (!b) {
        rc = -ENOMEM;
        goto out;
    }
    while (got < (size_t)st.st_size) {
        ssize_t r = read(fd, b + got, (size_t)st.st_size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = -errno;
            goto out;
        }
        if (r == 0)
            break;
        got += (size_t)r;
    }
    *buf = b;
    *len = got;
    b = NULL;
out:
    free(b);
    close(fd);
    return rc;
}

int snap_load(const char *dir, const char *name, struct snap_meta *out)
{
    char path[4200];
    struct snap_id id;
    uint8_t *buf = NULL;
    size_t len = 0;
    uint32_t conf_len, db_len;
    void *conf = NULL;
    char *db = NULL;
    int rc;

    if (!dir || !name || !out)
        return -CAIRN_E_INVALID_ARGUMENT;
    if (!parse_name(name, &id))
        return -CAIRN_E_INVALID_ARGUMENT;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    rc = slurp(path, &buf, &len);
    if (rc < 0)
        return rc;
    rc = -CAIRN_E_CORRUPT;
    if (len < SNAP_FIXED + 4 || memcmp(buf, SNAP_MAGIC, 8) != 0 || get32(buf + 8) != SNAP_VERSION)
        goto out;
    conf_len = get32(buf + 12);
    db_len = get32(buf + 32);
    if (conf_len > SNAP_MAX_CONF || db_len > SNAP_MAX_DB_NAME ||
        (uint64_t)SNAP_FIXED + conf_len + db_len + 4 != len)
        goto out;
    if (crc32c_extend(0, buf, len - 4) != get32(buf + len - 4))
        goto out;
    /* A valid file under another snapshot's name is as wrong as a bad CRC. */
    if (get64(buf + 16) != id.term || get64(buf + 24) != id.index)
        goto out;
    conf = malloc(conf_len ? conf_len : 1);
    db = malloc(db_len + 1);
    if (!conf || !db) {
        rc = -ENOMEM;
        goto out;
    }
    memcpy(conf, buf + SNAP_FIXED, conf_len);
    memcpy(db, buf + SNAP_FIXED + conf_len, db_len);
    db[db_len] = '\0';
    out->term = id.term;
    out->index = id.index;
    out->conf_state = conf;
    out->conf_len = conf_len;
    out->db_file = db;
    conf = db = NULL;
    rc = 0;
out:
    free(conf);
    free(db);
    free(buf);
    return rc;
}

static int id_cmp_newest_first(const void *a, const void *b)
{
    const struct snap_id *x = a, *y = b;
    if (x->index != y->index)
        return x->index > y->index ? -1 : 1;
    return x->term > y->term ? -1 : x->term < y->term;
}

static int parse_snap(const char *name, void *elem)
{
    return parse_name(name, elem);
}

int snap_list(const char *dir, struct snap_id **out, size_t *n)
{
    void *ids;
    int rc;

    if (!dir || !out || !n)
        return -CAIRN_E_INVALID_ARGUMENT;
    rc = dirlist_read(dir, sizeof **out, parse_snap, id_cmp_newest_first, &ids, n);
    if (rc == 0)
        *out = ids;
    return rc;
}

int snap_load_newest(const char *dir, struct snap_meta *out, struct snap_load_info *info)
{
    struct snap_id *ids;
    size_t n;
    int rc, renamed = 0;

    if (!out)
        return -CAIRN_E_INVALID_ARGUMENT;
    if (info)
        memset(info, 0, sizeof *info);
    rc = snap_list(dir, &ids, &n);
    if (rc < 0)
        return rc;
    rc = -CAIRN_E_NOT_FOUND;
    for (size_t i = 0; i < n; i++) {
        int r = snap_load(dir, ids[i].name, out);
        if (r == 0) {
            if (info)
                snprintf(info->name, sizeof info->name, "%s", ids[i].name);
            rc = 0;
            break;
        }
        if (r != -CAIRN_E_CORRUPT) {
            rc = r;
            break;
        }
        /* Keep the evidence for an operator, out of the way of later loads. */
        char from[4200], to[4210];
        snprintf(from, sizeof from, "%s/%s", dir, ids[i].name);
        snprintf(to, sizeof to, "%s.broken", from);
        if (rename(from, to) < 0) {
            rc = -errno;
            break;
        }
        renamed = 1;
        if (info && info->broken++ == 0)
            snprintf(info->broken_name, sizeof info->broken_name, "%s", ids[i].name);
    }
    if (renamed) {
        int r = fsync_path(dir);
        if (rc == 0 && r < 0) {
            snap_meta_free(out);
            rc = r;
        }
    }
    free(ids);
    return rc;
}

/* Is name a plain file name (not a path) that a kept snapshot refers to? */
static int referenced(const char *db, char **kept, size_t nkept)
{
    for (size_t i = 0; i < nkept; i++)
        if (kept[i] && strcmp(kept[i], db) == 0)
            return 1;
    return 0;
}

int snap_purge(const char *dir, unsigned keep)
{
    struct snap_id *ids;
    char **kept_db = NULL;
    size_t n, nkept;
    int rc, changed = 0;

    if (!dir)
        return -CAIRN_E_INVALID_ARGUMENT;
    if (keep == 0)
        keep = SNAP_DEFAULT_KEEP;
    rc = snap_list(dir, &ids, &n);
    if (rc < 0)
        return rc;
    nkept = n < keep ? n : keep;
    kept_db = calloc(nkept ? nkept : 1, sizeof *kept_db);
    if (!kept_db) {
        rc = -ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < nkept; i++) {
        struct snap_meta m;
        if (snap_load(dir, ids[i].name, &m) == 0) {
            kept_db[i] = (char *)m.db_file;
            free((void *)m.conf_state);
        }
    }
    for (size_t i = nkept; i < n; i++) {
        struct snap_meta m;
        char path[4200];
        if (snap_load(dir, ids[i].name, &m) == 0) {
            if (m.db_file[0] && !strchr(m.db_file, '/') && !referenced(m.db_file, kept_db, nkept)) {
                snprintf(path, sizeof path, "%s/%s", dir, m.db_file);
                if (unlink(path) < 0 && errno != ENOENT && rc == 0)
                    rc = -errno;
            }
            snap_meta_free(&m);
        }
        snprintf(path, sizeof path, "%s/%s", dir, ids[i].name);
        if (unlink(path) < 0 && errno != ENOENT && rc == 0)
            rc = -errno;
        changed = 1;
    }
    /* Temporaries of saves that never completed. */
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            size_t l = strlen(de->d_name);
            if (l > 9 && strcmp(de->d_name + l - 9, ".snap.tmp") == 0) {
                char path[4200];
                snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
                unlink(path);
                changed = 1;
            }
        }
        closedir(d);
    }
    if (changed) {
        int r = fsync_path(dir);
        if (rc == 0)
            rc = r;
    }
out:
    if (kept_db)
        for (size_t i = 0; i < nkept; i++)
            free(kept_db[i]);
    free(kept_db);
    free(ids);
    return rc;
}
