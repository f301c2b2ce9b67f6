/*
 * The two meta-commands that run until Ctrl-C: \watch, a long-poll watch
 * (WatchCreate, then WatchNext on the member that holds the watch) printing
 * each event, and \lease keepalive, renewing a lease a few times per TTL.
 * Ctrl-C is their normal end, not an error.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "shell/shell.h"

#define POLL_MS 1000 /* one WatchNext waits this long for events */

/* parse_watch: PREFIX [FROM REV], PREFIX optionally quoted.  The prefix is malloc'd. */
static int parse_watch(const char *args, char **prefix, int64_t *from)
{
    *prefix = NULL;
    *from = 0;
    const char *p = args ? args : "";
    while (*p == ' ' || *p == '\t')
        p++;
    struct sbuf b = {0};
    if (*p == '\'' || *p == '"') {
        char q = *p++;
        while (*p && !(*p == q && p[1] != q)) {
            if (*p == q)
                p++; /* '' inside quotes is one quote */
            sbuf_add(&b, p++, 1);
        }
        if (*p != q) {
            sbuf_free(&b);
            return -1;
        }
        p++;
    } else {
        while (*p && *p != ' ' && *p != '\t')
            sbuf_add(&b, p++, 1);
    }
    sbuf_add(&b, "", 0);
    while (*p == ' ' || *p == '\t')
        p++;
    if (*p) {
        char *end;
        if (strncasecmp(p, "from", 4) != 0 || (p[4] != ' ' && p[4] != '\t')) {
            sbuf_free(&b);
            return -1;
        }
        long long v = strtoll(p + 5, &end, 10);
        while (*end == ' ' || *end == '\t')
            end++;
        if (v < 1 || *end) {
            sbuf_free(&b);
            return -1;
        }
        *from = v;
    }
    *prefix = b.p;
    return 0;
}

static void cancel_watch(struct shell *sh, int64_t id, const struct cairn_call_opts *pin)
{
    Cairn__Request req = CAIRN__REQUEST__INIT;
    Cairn__WatchCancelRequest q = CAIRN__WATCH_CANCEL_REQUEST__INIT;
    Cairn__Response *resp = NULL;
    struct cairn_call_opts o = *pin;
    o.timeout_ms = 2000;
    q.watch_id = id;
    req.body_case = CAIRN__REQUEST__BODY_WATCH_CANCEL;
    req.watch_cancel = &q;
    shell_call(sh, &req, &o, true, &resp, NULL);
    cairn_response_free(resp);
}

int watch_run(struct shell *sh, const char *args)
{
    char *prefix;
    int64_t from;
    if (parse_watch(args, &prefix, &from) != 0) {
        out_error(sh, "usage: \\watch PREFIX [FROM REVISION]");
        return -1;
    }
    static const uint8_t all[1] = {0};
    size_t plen = strlen(prefix);
    uint8_t *end = malloc(plen + 1);
    size_t elen = end && plen ? prefix_end((const uint8_t *)prefix, plen, end) : 0;
    Cairn__Request req = CAIRN__REQUEST__INIT;
    Cairn__WatchCreateRequest cq = CAIRN__WATCH_CREATE_REQUEST__INIT;
    Cairn__Response *resp = NULL;
    struct cairn_error_detail err;
    cq.key.data = plen ? (uint8_t *)prefix : (uint8_t *)all;
    cq.key.len = plen ? plen : 1;
    cq.range_end.data = elen ? end : (uint8_t *)all;
    cq.range_end.len = elen ? elen : 1;
    cq.start_revision = from;
    req.body_case = CAIRN__REQUEST__BODY_WATCH_CREATE;
    req.watch_create = &cq;
    int rc = shell_call_expect(sh, &req, CAIRN__RESPONSE__BODY_WATCH_CREATE, NULL, false, &resp, &err);
    free(end);
    if (rc != 0) {
        char *m = shell_call_error("\\watch", rc, &err);
        if (rc == -EINTR)
            rc = 0;
        else
            out_error(sh, "%s", m);
        sqlite3_free(m);
        free(prefix);
        shell_interrupted = 0;
        return rc ? -1 : 0;
    }
    const Cairn__WatchCreateResponse *wc = resp->watch_create;
    if (wc->canceled) {
        out_error(sh, "\\watch: the member refused the watch: %s%s",
                  wc->cancel_reason && wc->cancel_reason[0] ? wc->cancel_reason : "canceled",
                  wc->compact_revision ? " (history before the compact revision is gone)" : "");
        cairn_response_free(resp);
        free(prefix);
        return -1;
    }
    int64_t id = wc->watch_id;
    struct cairn_call_opts pin = {.pinned = true,
                                  .endpoint = err.endpoint >= 0 ? (unsigned)err.endpoint : 0,
                                  .timeout_ms = POLL_MS + 5000};
    int64_t hdr = resp->header ? resp->header->revision : 0;
    cairn_response_free(resp);
    struct sbuf q = {0};
    bytes_quote(&q, prefix, plen, 200);
    if (from)
        out_text(sh, "watching %s from revision %lld; Ctrl-C stops", q.p, (long long)from);
    else
        out_text(sh, "watching %s after revision %lld; Ctrl-C stops", q.p, (long long)hdr);
    sbuf_free(&q);
    free(prefix);

    int result = 0;
    while (!shell_interrupted) {
        Cairn__WatchNextRequest nq = CAIRN__WATCH_NEXT_REQUEST__INIT;
        Cairn__Request nreq = CAIRN__REQUEST__INIT;
        nq.watch_id = id;
        nq.timeout_ms = POLL_MS;
        nreq.body_case = CAIRN__REQUEST__BODY_WATCH_NEXT;
        nreq.watch_next = &nq;
        rc = shell_call_expect(sh, &nreq, CAIRN__RESPONSE__BODY_WATCH_NEXT, &pin, false, &resp, &err);
        if (rc == -EINTR)
            break;
        if (rc != 0) {
            char *m = shell_call_error("\\watch", rc, &err);
            out_error(sh, "%s", m);
            sqlite3_free(m);
            result = -1;
            break;
        }
        const Cairn__WatchNextResponse *wn = resp->watch_next;
        for (size_t i = 0; i < wn->n_events; i++) {
            const Cairn__Event *ev = wn->events[i];
            if (ev && ev->kv)
                out_event(sh, ev->type == CAIRN__EVENT__EVENT_TYPE__DELETE ? "DELETE" : "PUT", ev->kv);
        }
        if (wn->canceled) {
            out_error(sh, "\\watch: canceled by the member: %s",
                      wn->cancel_reason && wn->cancel_reason[0] ? wn->cancel_reason : "no reason given");
            cairn_response_free(resp);
            return -1;
        }
        cairn_response_free(resp);
    }
    cancel_watch(sh, id, &pin);
    shell_interrupted = 0; /* Ctrl-C ended the watch, as it should */
    return result;
}

int lease_keepalive_run(struct shell *sh, int64_t id)
{
    int result = 0;
    out_text(sh, "keeping lease %lld alive; Ctrl-C stops", (long long)id);
    while (!shell_interrupted) {
        Cairn__Request req = CAIRN__REQUEST__INIT;
        Cairn__LeaseKeepAliveRequest q = CAIRN__LEASE_KEEP_ALIVE_REQUEST__INIT;
        Cairn__Response *resp;
        struct cairn_error_detail err;
        q.id = id;
        req.body_case = CAIRN__REQUEST__BODY_LEASE_KEEP_ALIVE;
        req.lease_keep_alive = &q;
        int rc = shell_call_expect(sh, &req, CAIRN__RESPONSE__BODY_LEASE_KEEP_ALIVE, NULL, false, &resp,
                                   &err);
        if (rc == -EINTR)
            break;
        if (rc != 0) {
            char *m = shell_call_error("\\lease keepalive", rc, &err);
            out_error(sh, "%s", m);
            sqlite3_free(m);
            result = -1;
            break;
        }
        int64_t ttl = resp->lease_keep_alive->ttl;
        cairn_response_free(resp);
        if (ttl <= 0) {
            out_error(sh, "\\lease keepalive: lease %lld has expired or was revoked", (long long)id);
            result = -1;
            break;
        }
        out_text(sh, "lease %lld: ttl %lld s", (long long)id, (long long)ttl);
        /* etcd's keep-alive rhythm: a third of the TTL */
        int wait = (int)(ttl * 1000 / 3);
        if (shell_sleep_ms(wait < 500 ? 500 : wait) != 0)
            break;
    }
    shell_interrupted = 0;
    return result;
}
