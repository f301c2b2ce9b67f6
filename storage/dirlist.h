/*
 * Internal to storage/: listing the files of a directory that a parser
 * recognises (WAL segments, snapshot files), sorted.  Not part of any
 * public interface.
 */
#ifndef CAIRN_STORAGE_DIRLIST_H
#define CAIRN_STORAGE_DIRLIST_H

#include <stddef.h>

/* Fills *elem from a file name it recognises and returns nonzero, or returns 0. */
typedef int (*dirlist_parse_fn)(const char *name, void *elem);

/*
 * dirlist_read: every entry of dir that parse accepts, as elem_size-byte
 * elements sorted with cmp, in a malloc'd array the caller frees (*out may be
 * NULL when *n is 0).  Returns 0 or -errno (-ENOENT for a missing dir).
 */
int dirlist_read(const char *dir, size_t elem_size, dirlist_parse_fn parse,
                 int (*cmp)(const void *, const void *), void **out, size_t *n);

#endif
