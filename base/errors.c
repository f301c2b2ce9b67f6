/*
 * Error messages and names for the CAIRN_ERRORS table, and errno fallback.
 * Pure lookups over static tables: no allocation, thread-safe.
 */
#include "base/errors.h"

#include <stddef.h>
#include <string.h>

struct errdesc {
    int code;
    const char *name;
    const char *msg;
};

static const struct errdesc errtab[] = {
#define CAIRN_ERRDESC_(name, off, msg) {CAIRN_ERR_BASE + (off), #name, msg},
    CAIRN_ERRORS(CAIRN_ERRDESC_)
#undef CAIRN_ERRDESC_
};

static const struct errdesc *lookup(int err)
{
    if (err < 0)
        err = -err;
    for (size_t i = 0; i < sizeof(errtab) / sizeof(errtab[0]); i++)
        if (errtab[i].code == err)
            return &errtab[i];
    return NULL;
}

int cairn_is_cairn_error(int err)
{
    return lookup(err) != NULL;
}

const char *cairn_strerror(int err)
{
    const struct errdesc *d = lookup(err);
    if (d)
        return d->msg;
    if (err < 0)
        err = -err;
    if (err == 0)
        return "success";
    if (err < CAIRN_ERR_BASE)
        return strerrordesc_np(err) ? strerrordesc_np(err) : "unknown system error";
    return "unknown error";
}

const char *cairn_errname(int err)
{
    const struct errdesc *d = lookup(err);
    if (d)
        return d->name;
    if (err < 0)
        err = -err;
    if (err == 0)
        return "OK";
    if (err < CAIRN_ERR_BASE && strerrorname_np(err))
        return strerrorname_np(err);
    return "UNKNOWN";
}
