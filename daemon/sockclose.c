/*
 * sockclose: nng_close on its own thread, given up on after a deadline.
 * Why: sockclose.h.
 */
#include "daemon/sockclose.h"

#include <stdint.h>

#include "base/log.h"
#include "base/within.h"

static void close_by_id(void *arg)
{
    nng_socket s = NNG_SOCKET_INITIALIZER;
    s.id = (uint32_t)(uintptr_t)arg;
    nng_close(s);
}

bool sock_close(nng_socket s, const char *what)
{
    if (nng_socket_id(s) <= 0)
        return true;
    if (call_within(close_by_id, (void *)(uintptr_t)s.id, SOCK_CLOSE_MS) == 0)
        return true;
    log_warning(LOG_FIELDS(LOG_STR("CAIRN_SOCKET", what)),
                "closing the %s socket did not finish in %d ms; going on without it (nng could not release a "
                "connection; see docs/reliability.md, \"nng_close never returns\")",
                what, SOCK_CLOSE_MS);
    return false;
}

unsigned sock_close_abandoned(void)
{
    return call_within_abandoned();
}
