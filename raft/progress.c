/*
 * What a leader knows about one peer: match/next indexes, the probe /
 * replicate / snapshot state machine, and the window of in-flight MsgApp
 * bounded by count and by bytes (the pipeline's back-pressure).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "raft/raft_internal.h"

int progress_init(struct progress *p, uint64_t id, uint32_t max_count, uint64_t max_bytes)
{
    memset(p, 0, sizeof(*p));
    p->id = id;
    p->ins_max = max_count;
    p->ins_max_bytes = max_bytes;
    p->ins = calloc(max_count, sizeof(*p->ins));
    return p->ins ? 0 : -ENOMEM;
}

void progress_free(struct progress *p)
{
    free(p->ins);
    p->ins = NULL;
}

static void ins_reset(struct progress *p)
{
    p->ins_start = p->ins_count = 0;
    p->ins_bytes = 0;
}

void progress_reset(struct progress *p, uint64_t next)
{
    p->match = 0;
    p->next = next;
    p->state = RAFT_PROGRESS_PROBE;
    p->probe_sent = false;
    p->recent_active = false;
    p->pending_snapshot = 0;
    p->commit_sent = 0;
    ins_reset(p);
}

bool progress_ins_full(const struct progress *p)
{
    return p->ins_count >= p->ins_max || (p->ins_max_bytes && p->ins_bytes >= p->ins_max_bytes);
}

bool progress_paused(const struct progress *p)
{
    switch (p->state) {
    case RAFT_PROGRESS_PROBE: return p->probe_sent;
    case RAFT_PROGRESS_REPLICATE: return progress_ins_full(p);
    default: return true;
    }
}

void progress_ins_add(struct progress *p, uint64_t index, uint64_t bytes)
{
    if (p->ins_count >= p->ins_max)
        return; /* callers check fullness first; never overwrite */
    uint32_t slot = (p->ins_start + p->ins_count) % p->ins_max;
    p->ins[slot].index = index;
    p->ins[slot].bytes = bytes;
    p->ins_count++;
    p->ins_bytes += bytes;
}

/* An ack up to index frees every in-flight message ending at or below it. */
void progress_ins_free_to(struct progress *p, uint64_t index)
{
    while (p->ins_count && p->ins[p->ins_start].index <= index) {
        p->ins_bytes -= p->ins[p->ins_start].bytes;
        p->ins_start = (p->ins_start + 1) % p->ins_max;
        p->ins_count--;
    }
    if (!p->ins_count)
        p->ins_start = 0;
}

void progress_ins_free_first(struct progress *p)
{
    if (p->ins_count)
        progress_ins_free_to(p, p->ins[p->ins_start].index);
}

void progress_become_probe(struct progress *p)
{
    if (p->state == RAFT_PROGRESS_SNAPSHOT) {
        uint64_t ps = p->pending_snapshot;
        p->next = (p->match + 1 > ps + 1) ? p->match + 1 : ps + 1;
    } else {
        p->next = p->match + 1;
    }
    p->state = RAFT_PROGRESS_PROBE;
    p->probe_sent = false;
    p->pending_snapshot = 0;
    ins_reset(p);
}

void progress_become_replicate(struct progress *p)
{
    p->state = RAFT_PROGRESS_REPLICATE;
    p->next = p->match + 1;
    p->probe_sent = false;
    p->pending_snapshot = 0;
    ins_reset(p);
}

void progress_become_snapshot(struct progress *p, uint64_t index)
{
    p->state = RAFT_PROGRESS_SNAPSHOT;
    p->pending_snapshot = index;
    p->probe_sent = false;
    ins_reset(p);
}

/* A successful MsgAppResp for n: returns true if match moved. */
bool progress_maybe_update(struct progress *p, uint64_t n)
{
    bool updated = false;
    if (p->match < n) {
        p->match = n;
        p->probe_sent = false;
        updated = true;
    }
    if (p->next < n + 1)
        p->next = n + 1;
    return updated;
}

/*
 * A rejected MsgApp whose prev index was `rejected`; match_hint is where the
 * leader thinks the logs agree.  Returns false for a stale rejection.
 */
bool progress_maybe_decr_to(struct progress *p, uint64_t rejected, uint64_t match_hint)
{
    if (p->state == RAFT_PROGRESS_REPLICATE) {
        if (rejected <= p->match)
            return false;
        p->next = p->match + 1;
        return true;
    }
    if (p->next - 1 != rejected)
        return false;
    uint64_t n = rejected < match_hint + 1 ? rejected : match_hint + 1;
    if (n < p->match + 1)
        n = p->match + 1;
    p->next = n ? n : 1;
    p->probe_sent = false;
    return true;
}
