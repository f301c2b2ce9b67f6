/*
 * cairn-record's revision log: after the load (and, in the harness, after
 * every fault is healed) read every revision the store still holds under the
 * key prefix with the History API and append it to the history, so the
 * checker knows the total order of the writes.  One linearizable read fixes
 * the revision the log ends at; the pages are gathered in memory and written
 * only once complete, and the whole read is retried (any member, until a
 * quorum answers) within --log-timeout.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "test/jepsen/record.h"

#define LOG_PAGE 1000

/* Read the log once into *text (malloc'd, the caller frees).  0 or a negative code with *why. */
static int read_log(struct rec_run *run, struct cairn_client *c, char **text, char *why, size_t whylen)
{
    const char *prefix = run->o.prefix;
    size_t plen = strlen(prefix);
    char end[64];
    struct cairn_call_opts opts = {.timeout_ms = run->o.timeout_ms > 5000 ? run->o.timeout_ms : 5000};
    struct cairn_error_detail err = {0};
    Cairn__Response *resp = NULL;
    const Cairn__KeyValue *kv = NULL;
    size_t size = 0;
    char *buf = NULL;
    FILE *m = NULL;
    int rc;

    memcpy(end, prefix, plen);
    end[plen - 1]++; /* the prefix is printable ASCII: its last byte + 1 ends the range */
    end[plen] = '\0';

    /* The revision the log ends at: a linearizable read's header. */
    rc = cairn_get(c, (struct cairn_bytes){prefix, plen}, &opts, &resp, &kv, &err);
    if (rc) {
        snprintf(why, whylen, "linearizable read for the log's end: %s", err.message[0] ? err.message : cairn_strerror(rc));
        return rc;
    }
    int64_t logend = resp->header ? resp->header->revision : 0;
    cairn_response_free(resp);
    resp = NULL;

    if (!(m = open_memstream(&buf, &size)))
        return -ENOMEM;
    struct cairn_history h = {.key = {prefix, plen}, .range_end = {end, plen}, .max_revision = logend,
                              .limit = LOG_PAGE};
    int64_t logstart = 0;
    for (int page = 0; page < 1000000; page++) {
        rc = cairn_history_page(c, &h, &opts, &resp, &err);
        if (rc) {
            snprintf(why, whylen, "history page %d: %s", page, err.message[0] ? err.message : cairn_strerror(rc));
            goto out;
        }
        const Cairn__HistoryResponse *hr = resp->history;
        if (!logstart) {
            /*
             * Compaction at C drops, per key, every row at or below C but the
             * newest, and that one too if it is a tombstone: only revisions
             * above C are whole.
             */
            logstart = hr->compact_revision > 0 ? hr->compact_revision + 1 : 1;
            fprintf(m, "logstart %" PRId64 "\n", logstart);
        }
        for (size_t i = 0; i < hr->n_records; i++) {
            const Cairn__HistoryRecord *r = hr->records[i];
            const Cairn__KeyValue *rk = r->kv;
            if (!rk || rk->mod_revision < logstart)
                continue;
            struct rec_line l;
            rec_line_init(&l);
            rec_line_addf(&l, "log %" PRId64 " %s", rk->mod_revision, r->tombstone ? "del" : "put");
            rec_line_value(&l, rk->key.data, rk->key.len, true);
            if (r->tombstone)
                rec_line_addf(&l, "~");
            else
                rec_line_value(&l, rk->value.data, rk->value.len, true);
            if (!r->tombstone && rk->lease)
                rec_line_addf(&l, "%" PRId64, rk->lease);
            fprintf(m, "%s\n", l.buf);
        }
        bool more_pages = hr->more;
        h.after_revision = hr->next_revision;
        h.after_sub = hr->next_sub;
        cairn_response_free(resp);
        resp = NULL;
        if (!more_pages)
            break;
    }
    fprintf(m, "logend %" PRId64 "\n", logend);
    rc = 0;
out:
    fclose(m);
    if (rc == 0)
        *text = buf;
    else
        free(buf);
    return rc;
}

int rec_write_log(struct rec_run *run)
{
    struct cairn_client *c = NULL;
    char why[700] = "";
    char *text = NULL;
    int rc;
    uint64_t deadline = rec_now_ns() + (uint64_t)(run->o.log_timeout_s * 1e9);

    if ((rc = rec_open_client(run, &c, why, sizeof why)) != 0) {
        fprintf(stderr, "cairn-record: revision log: cannot open a client: %s\n", why);
        return rc;
    }
    int attempts = 0;
    do {
        attempts++;
        if ((rc = read_log(run, c, &text, why, sizeof why)) == 0)
            break;
        struct timespec ts = {0, 250 * 1000000};
        nanosleep(&ts, NULL);
    } while (rec_now_ns() < deadline);
    cairn_close(c);
    if (rc) {
        fprintf(stderr, "cairn-record: no revision log within %g s (%d attempts); the last error: %s\n",
                run->o.log_timeout_s, attempts, why);
        rec_writef(run, "# no revision log: %s", why);
        return rc;
    }
    pthread_mutex_lock(&run->h.mu);
    fputs(text, run->h.f);
    fflush(run->h.f);
    pthread_mutex_unlock(&run->h.mu);
    free(text);
    return 0;
}
