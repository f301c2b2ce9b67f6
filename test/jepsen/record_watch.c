/*
 * cairn-record's watchers: each thread keeps one libcairn watch on the key
 * prefix and writes every event as delivered.  libcairn resumes a watch on
 * another member by itself (that is part of what is checked); when the watch
 * ends (compacted, canceled) or keeps failing, the thread starts a new watch
 * from the revision after its progress, which is a new watcher in the
 * history (`watch W T start ...`).  After the load the watchers catch up to
 * the last revision any reply carried, within --watch-drain, then end.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "test/jepsen/record.h"

#define WATCH_POLL_MS 500
#define WATCH_MAX_ERRORS 5 /* consecutive failed polls before the watch is made anew */

static void nap_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

struct wstate {
    struct rec_run *run;
    struct cairn_client *c;
    struct cairn_watch *w;
    int id;            /* W in the history */
    int64_t next;      /* the revision the next watch starts from */
    char prefix_tok[64];
};

static void end_watch(struct wstate *s, const char *reason, bool cancel)
{
    if (!s->w)
        return;
    int64_t prog = cairn_watch_progress(s->w);
    if (prog + 1 > s->next)
        s->next = prog + 1;
    rec_writef(s->run, "watch %d %" PRIu64 " end %s", s->id, rec_now_ns(), reason);
    if (cancel) {
        struct cairn_call_opts opts = {.timeout_ms = 1000};
        cairn_watch_cancel(s->c, s->w, &opts, NULL); /* releases w whatever it returns */
    } else {
        cairn_watch_free(s->w);
    }
    s->w = NULL;
}

/* Create the watch from s->next; a compacted start moves to the first revision still there. */
static int start_watch(struct wstate *s)
{
    struct rec_run *run = s->run;
    struct cairn_watch_opts wo = {.key = {run->o.prefix, strlen(run->o.prefix)}, .prefix = true,
                                  .start_revision = s->next};
    struct cairn_call_opts opts = {.timeout_ms = run->o.timeout_ms};
    struct cairn_error_detail err = {0};
    int rc = cairn_watch_create(s->c, &wo, &opts, &s->w, &err);
    if (rc == -CAIRN_E_COMPACTED && err.compact_revision > s->next) {
        s->next = err.compact_revision;
        return rc;
    }
    if (rc)
        return rc;
    s->id = atomic_fetch_add(&run->next_watch, 1);
    atomic_fetch_add(&run->n_watch_starts, 1);
    rec_writef(run, "watch %d %" PRIu64 " start %s %" PRId64, s->id, rec_now_ns(), s->prefix_tok, s->next);
    return 0;
}

static void write_events(struct wstate *s, const Cairn__WatchNextResponse *wn)
{
    uint64_t t = rec_now_ns();
    for (size_t i = 0; i < wn->n_events; i++) {
        const Cairn__Event *ev = wn->events[i];
        const Cairn__KeyValue *kv = ev->kv;
        struct rec_line l;
        rec_line_init(&l);
        bool del = ev->type == CAIRN__EVENT__EVENT_TYPE__DELETE;
        rec_line_addf(&l, "event %d %" PRIu64 " %" PRId64 " %s", s->id, t, kv ? kv->mod_revision : 0,
                      del ? "del" : "put");
        rec_line_value(&l, kv ? kv->key.data : NULL, kv ? kv->key.len : 0, kv != NULL);
        if (del)
            rec_line_addf(&l, "~");
        else
            rec_line_value(&l, kv ? kv->value.data : NULL, kv ? kv->value.len : 0, kv != NULL);
        rec_writef(s->run, "%s", l.buf);
        atomic_fetch_add(&s->run->n_events, 1);
    }
}

void *rec_watcher(void *arg)
{
    struct rec_watcher_arg *a = arg;
    struct rec_run *run = a->run;
    struct wstate s = {.run = run, .next = a->start_rev};
    char why[600], word[64];
    uint64_t drain_end = 0;
    int errors = 0;

    snprintf(s.prefix_tok, sizeof s.prefix_tok, "%s", run->o.prefix);
    if (rec_open_client(run, &s.c, why, sizeof why) != 0) {
        fprintf(stderr, "cairn-record: watcher %d: cannot open a client: %s\n", a->index, why);
        return NULL;
    }
    for (;;) {
        uint64_t now = rec_now_ns();
        if (atomic_load(&run->stop)) {
            if (!drain_end)
                drain_end = now + (uint64_t)(run->o.watch_drain_s * 1e9);
            int64_t target = atomic_load(&run->max_rev);
            if (now >= drain_end || (s.w && cairn_watch_progress(s.w) >= target)) {
                end_watch(&s, now >= drain_end ? "drain-timeout" : "done", true);
                break;
            }
        }
        if (!s.w) {
            int rc = start_watch(&s);
            if (rc == -CAIRN_E_COMPACTED)
                continue; /* again from the compact revision */
            if (rc) {
                nap_ms(100);
                continue;
            }
            errors = 0;
        }
        Cairn__Response *resp = NULL;
        struct cairn_error_detail err = {0};
        int rc = cairn_watch_next(s.c, s.w, WATCH_POLL_MS, 0, &resp, &err);
        if (rc == 0) {
            errors = 0;
            if (resp->watch_next)
                write_events(&s, resp->watch_next);
            cairn_response_free(resp);
            continue;
        }
        if (rc == -CAIRN_E_COMPACTED) {
            end_watch(&s, "compacted", false);
            if (err.compact_revision > s.next)
                s.next = err.compact_revision;
        } else if (rc == -CAIRN_E_WATCH_CANCELED) {
            end_watch(&s, "canceled", false);
        } else if (rc == -CAIRN_E_TOO_MANY_REQUESTS || rc == -EBUSY) {
            nap_ms(50);
        } else if (++errors >= WATCH_MAX_ERRORS) {
            char reason[80];
            snprintf(reason, sizeof reason, "error-%s", rec_code_word(rc, word, sizeof word));
            end_watch(&s, reason, true);
            nap_ms(100);
        } else {
            nap_ms(50);
        }
    }
    cairn_close(s.c);
    return NULL;
}
