/*
 * Directory listings for the WAL and snapshot code: one readdir loop into a
 * growing array, then a sort.  Owns nothing beyond the array it returns.
 */
#include "storage/dirlist.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

int dirlist_read(const char *dir, size_t elem_size, dirlist_parse_fn parse,
                 int (*cmp)(const void *, const void *), void **out, size_t *n)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    char *elems = NULL, *grown;
    size_t cnt = 0, cap = 0;
    int rc = 0;

    if (!d)
        return -errno;
    while ((errno = 0, de = readdir(d)) != NULL) {
        if (cnt == cap) {
            cap = cap ? cap * 2 : 16;
            grown = realloc(elems, cap * elem_size);
            if (!grown) {
                rc = -ENOMEM;
                goto out;
            }
            elems = grown;
        }
        if (parse(de->d_name, elems + cnt * elem_size))
            cnt++;
    }
    if (errno)
        rc = -errno;
out:
    closedir(d);
    if (rc < 0) {
        free(elems);
        return rc;
    }
    if (cnt)
        qsort(elems, cnt, elem_size, cmp);
    *out = elems;
    *n = cnt;
    return 0;
}
