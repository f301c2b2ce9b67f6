/*
 * within: run a call that may never return on a thread of its own, and stop
 * waiting for it after a deadline.
 *
 * For teardown calls into a library that can block forever: nng 1.5.2's
 * nng_close is one (daemon/sockclose.h, docs/reliability.md).
 * The caller goes on when the deadline passes; the call keeps its thread,
 * and the bookkeeping is freed if it ever returns.  Whatever the call may
 * still touch (its argument, callbacks it can run) must then stay valid for
 * the life of the process: the caller leaks it on purpose.
 */
#ifndef CAIRN_BASE_WITHIN_H
#define CAIRN_BASE_WITHIN_H

/*
 * call_within: run fn(arg) on a new thread and wait up to ms milliseconds
 * for it.  0 once it has returned; -ETIMEDOUT if it has not by then (it is
 * abandoned, still running).  If no thread can be started, fn runs on the
 * caller's thread and the wait is unbounded.  Thread-safe.
 */
int call_within(void (*fn)(void *), void *arg, unsigned ms);

/* call_within_abandoned: how many calls in this process passed their deadline. */
unsigned call_within_abandoned(void);

#endif
