/*
 * offload: a thread that runs one call at a time for its owner, while the
 * owner does something else, and gives back the call's result when the
 * owner asks for it.  The node thread writes a leader's WAL on one while it
 * applies the entries committed before (daemon/node.c, handle_ready).
 *
 * One owner thread calls offload_begin and offload_end, alternately; a
 * begin without its end, or an end without a begin, is the owner's bug.
 * Everything the call touches belongs to it between the two.
 */
#ifndef CAIRN_BASE_OFFLOAD_H
#define CAIRN_BASE_OFFLOAD_H

struct offload;

typedef int (*offload_fn)(void *arg);

/* offload_start: start the thread, named name (at most 15 characters: top
 * -H and perf show it).  0, or -errno. */
int offload_start(const char *name, struct offload **out);

/* offload_begin: fn(arg) starts on the thread. */
void offload_begin(struct offload *o, offload_fn fn, void *arg);

/* offload_end: wait until the call offload_begin started returns, and
 * return what it returned. */
int offload_end(struct offload *o);

/* offload_stop: stop the thread and free o (no call may be under way).
 * NULL is ignored. */
void offload_stop(struct offload *o);

#endif
