/*
 * The checks that read the revision log, each linear in the history (up to a
 * logarithm): acknowledged writes are in the log and the log holds only
 * clients' writes; every ok read equals the log's state at its revision; the
 * revisions respect real time (and a pinned member's serializable reads never
 * go back); no lease expired before its TTL.  The watches are check_watch.c.
 */
#include "test/jepsen/check_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* --- the log per key ------------------------------------------------------------- */

int log_index_build(struct log_index *li, const struct history *h)
{
    memset(li, 0, sizeof(*li));
    li->h = h;
    li->nstr = hist_nstr(h);
    li->kstart = calloc(li->nstr + 1, sizeof(uint32_t));
    li->kcount = calloc(li->nstr + 1, sizeof(uint32_t));
    li->ev = malloc((h->nlog + 1) * sizeof(uint32_t));
    li->val_writer = calloc(li->nstr + 1, sizeof(uint32_t));
    if (!li->kstart || !li->kcount || !li->ev || !li->val_writer) {
        log_index_free(li);
        return -ENOMEM;
    }
    for (size_t i = 0; i < h->nlog; i++)
        li->kcount[h->log[i].key]++;
    uint32_t sum = 0;
    for (uint32_t k = 0; k < li->nstr; k++) {
        li->kstart[k] = sum;
        sum += li->kcount[k];
        li->kcount[k] = 0;
    }
    /* The log is in revision order (the parser insists), so each slice is too. */
    for (size_t i = 0; i < h->nlog; i++) {
        uint32_t k = h->log[i].key;
        li->ev[li->kstart[k] + li->kcount[k]++] = (uint32_t)i;
    }
    for (size_t i = 0; i < h->nops; i++) {
        const struct hist_op *op = &h->ops[i];
        if (!op->vals)
            continue;
        for (uint32_t j = 0; j < op->nkeys; j++)
            if (op->vals[j] != HIST_ABSENT && !li->val_writer[op->vals[j]])
                li->val_writer[op->vals[j]] = (uint32_t)i + 1;
    }
    return 0;
}

void log_index_free(struct log_index *li)
{
    free(li->kstart);
    free(li->kcount);
    free(li->ev);
    free(li->val_writer);
    memset(li, 0, sizeof(*li));
}

uint32_t log_key_upper(const struct log_index *li, uint32_t key, int64_t rev)
{
    if (key >= li->nstr)
        return 0;
    const uint32_t *s = li->ev + li->kstart[key];
    uint32_t lo = 0, hi = li->kcount[key];
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (li->h->log[s[mid]].rev <= rev)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

int log_state_at(const struct log_index *li, uint32_t key, int64_t rev, uint32_t *val, int64_t *modrev,
                 int64_t *lease)
{
    uint32_t up = log_key_upper(li, key, rev);
    if (up > 0) {
        const struct hist_event *e = &li->h->log[li->ev[li->kstart[key] + up - 1]];
        *val = e->put ? e->val : HIST_ABSENT;
        *modrev = e->put ? e->rev : 0;
        *lease = e->put ? e->lease : 0;
        return 1;
    }
    if (li->h->logstart <= 1) {
        *val = HIST_ABSENT;
        *modrev = 0;
        *lease = 0;
        return 1;
    }
    return 0;
}

const struct hist_event *log_event_at(const struct log_index *li, uint32_t key, int64_t rev)
{
    uint32_t up = log_key_upper(li, key, rev);
    if (up == 0)
        return NULL;
    const struct hist_event *e = &li->h->log[li->ev[li->kstart[key] + up - 1]];
    return e->rev == rev ? e : NULL;
}

/* "k = v (put at revision 12, lease 7)" or "k absent (deleted at 14)" or "k: the log cannot tell". */
static void sb_state(struct sb *b, const struct log_index *li, uint32_t key, int64_t rev)
{
    const struct history *h = li->h;
    uint32_t up = log_key_upper(li, key, rev);
    if (up == 0) {
        if (h->logstart <= 1)
            sb_printf(b, "%s absent (no event of it up to revision %" PRId64 ")", hist_str(h, key), rev);
        else
            sb_printf(b, "%s unknown (no event of it in [%" PRId64 ", %" PRId64 "])", hist_str(h, key), h->logstart,
                      rev);
        return;
    }
    const struct hist_event *e = &h->log[li->ev[li->kstart[key] + up - 1]];
    if (e->put) {
        sb_printf(b, "%s = %s (put at revision %" PRId64, hist_str(h, key), hist_str(h, e->val), e->rev);
        if (e->lease)
            sb_printf(b, ", lease %" PRId64, e->lease);
        sb_printf(b, ", log line %" PRIu32 ")", e->line);
    } else
        sb_printf(b, "%s absent (deleted at revision %" PRId64 ", log line %" PRIu32 ")", hist_str(h, key), e->rev,
                  e->line);
}

static bool skip_without_log(const struct history *h, struct check_result *res)
{
    if (h->has_log)
        return false;
    res->verdict = CV_SKIPPED;
    snprintf(res->note, sizeof(res->note), "no revision log in the file (logstart/log/logend)");
    return true;
}

/* --- acknowledged writes ------------------------------------------------------------ */

static int check_one_write(const struct log_index *li, const struct check_opts *o, struct check_result *res,
                           const struct hist_op *op, uint32_t key, bool put, uint32_t val, int64_t lease)
{
    const struct history *h = li->h;
    if (op->rev < h->logstart) {
        res->nunchecked++;
        return 0;
    }
    res->nchecked++;
    const struct hist_event *e = op->rev <= h->logend ? log_event_at(li, key, op->rev) : NULL;
    if (e && e->put == put && (!put || (e->val == val && e->lease == lease)))
        return 0;
    struct sb b = {0};
    if (op->rev > h->logend)
        sb_printf(&b, "acknowledged at revision %" PRId64 ", beyond the log's last revision %" PRId64 ":\n", op->rev,
                  h->logend);
    else if (!e)
        sb_printf(&b, "acknowledged at revision %" PRId64 ", but the log has no event of %s there:\n", op->rev,
                  hist_str(h, key));
    else
        sb_printf(&b, "acknowledged at revision %" PRId64 ", but the log has %s %s %s lease %" PRId64
                      " there (line %" PRIu32 "):\n",
                  op->rev, e->put ? "put" : "del", hist_str(h, key), hist_str(h, e->val), e->lease, e->line);
    sb_op(&b, h, op, NULL);
    sb_printf(&b, "  the log's state of the key at that revision: ");
    sb_state(&b, li, key, op->rev <= h->logend ? op->rev : h->logend);
    sb_printf(&b, "\n");
    return finding_add(res, o, e && put && e->val == val ? "wrong-lease" : "lost-write", hist_str(h, key),
                       sb_take(&b));
}

int check_log_writes(const struct history *h, const struct check_opts *o, struct check_result *res)
{
    if (skip_without_log(h, res))
        return 0;
    struct log_index li;
    int rc = log_index_build(&li, h);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < h->nops && rc == 0; i++) {
        const struct hist_op *op = &h->ops[i];
        if (op->status != HS_OK || !op_is_write(op))
            continue;
        for (uint32_t j = 0; j < op->nkeys && rc == 0; j++) {
            bool put = op->kind != HK_DEL;
            rc = check_one_write(&li, o, res, op, op->keys[j], put, put ? op->vals[j] : HIST_ABSENT,
                                 op->kind == HK_PUTL ? op->lease : 0);
        }
    }
    /* The other way: every put in the log came from one operation that did not fail, once. */
    uint8_t *seen = calloc(li.nstr + 1, 1);
    if (!seen)
        rc = -ENOMEM;
    for (size_t i = 0; i < h->nlog && rc == 0; i++) {
        const struct hist_event *e = &h->log[i];
        if (!e->put)
            continue;
        res->nchecked++;
        uint32_t w = li.val_writer[e->val];
        const struct hist_op *op = w ? &h->ops[w - 1] : NULL;
        bool key_ok = false;
        for (uint32_t j = 0; op && j < op->nkeys; j++)
            key_ok |= op->keys[j] == e->key && op->vals[j] == e->val;
        struct sb b = {0};
        const char *kind = NULL;
        if (!op || !key_ok) {
            kind = "phantom-write";
            sb_printf(&b, "the log puts %s = %s at revision %" PRId64 " (log line %" PRIu32
                          "), but no operation wrote that value to that key\n",
                      hist_str(h, e->key), hist_str(h, e->val), e->rev, e->line);
            if (op)
                sb_op(&b, h, op, "  the value's writer: ");
        } else if (op->status == HS_FAIL) {
            kind = "failed-write-applied";
            sb_printf(&b, "the log puts %s = %s at revision %" PRId64 " (log line %" PRIu32
                          "), but its operation failed (a failure means it did not take effect):\n",
                      hist_str(h, e->key), hist_str(h, e->val), e->rev, e->line);
            sb_op(&b, h, op, NULL);
        } else if (seen[e->val]) {
            kind = "duplicate-write";
            sb_printf(&b, "the log puts %s = %s a second time at revision %" PRId64 " (log line %" PRIu32
                          "): the write was applied twice\n",
                      hist_str(h, e->key), hist_str(h, e->val), e->rev, e->line);
            sb_op(&b, h, op, NULL);
        }
        seen[e->val] = 1;
        if (kind)
            rc = finding_add(res, o, kind, hist_str(h, e->key), sb_take(&b));
        free(b.s);
    }
    free(seen);
    log_index_free(&li);
    return rc;
}

/* --- reads at a revision ------------------------------------------------------------ */

/* One key of a read: the op saw val (and modrev if >= 0) at rev. */
static int check_read_key(const struct log_index *li, const struct check_opts *o, struct check_result *res,
                          const struct hist_op *op, uint32_t key, int64_t rev, uint32_t val, int64_t modrev,
                          const char *what)
{
    const struct history *h = li->h;
    uint32_t lval;
    int64_t lmod, lease;
    if (!log_state_at(li, key, rev, &lval, &lmod, &lease)) {
        res->nunchecked++;
        return 0;
    }
    res->nchecked++;
    if (lval == val && (modrev < 0 || lmod == modrev))
        return 0;
    struct sb b = {0};
    sb_printf(&b, "%s %s = %s", what, hist_str(h, key), hist_str(h, val));
    if (modrev >= 0)
        sb_printf(&b, " (modified at %" PRId64 ")", modrev);
    sb_printf(&b, " at revision %" PRId64 ", but the log says ", rev);
    sb_state(&b, li, key, rev);
    sb_printf(&b, "\n");
    sb_op(&b, h, op, NULL);
    /* Where the value read does come from, if anywhere: the sign of a stale or future read. */
    if (val != HIST_ABSENT) {
        for (uint32_t j = 0; j < li->kcount[key]; j++) {
            const struct hist_event *e = &h->log[li->ev[li->kstart[key] + j]];
            if (e->put && e->val == val) {
                sb_printf(&b, "  the log has that value at revision %" PRId64 " (%s than the read's revision)\n",
                          e->rev, e->rev > rev ? "later" : "earlier");
                break;
            }
        }
    }
    const char *kind = lval == val ? "wrong-modrev" : op->kind == HK_SGET ? "sget-not-in-log" : "read-not-in-log";
    return finding_add(res, o, kind, hist_str(h, key), sb_take(&b));
}

/* Distinct keys of the log sorted by text, for ranges. */
struct sorted_keys {
    uint32_t *k;
    size_t n;
};

static const struct history *sort_h;
static int cmp_key_text(const void *a, const void *b)
{
    return strcmp(hist_str(sort_h, *(const uint32_t *)a), hist_str(sort_h, *(const uint32_t *)b));
}

static int check_range(const struct log_index *li, const struct check_opts *o, struct check_result *res,
                       const struct hist_op *op, const struct sorted_keys *sk)
{
    const struct history *h = li->h;
    const char *lo = hist_str(h, op->keys[0]);
    const char *hi = op->keys[1] == HIST_ABSENT ? NULL : hist_str(h, op->keys[1]);
    size_t a = 0, b = sk->n;
    while (a < b) { /* first log key >= lo */
        size_t m = a + (b - a) / 2;
        if (strcmp(hist_str(h, sk->k[m]), lo) < 0)
            a = m + 1;
        else
            b = m;
    }
    int64_t r = 0;
    int rc = 0;
    /* Merge the log's keys in [lo, hi) with the result's keys. */
    while (rc == 0) {
        const char *lk = a < sk->n ? hist_str(h, sk->k[a]) : NULL;
        if (lk && hi && strcmp(lk, hi) >= 0)
            lk = NULL;
        const char *rk = r < op->n ? hist_str(h, op->rkeys[r]) : NULL;
        if (!lk && !rk)
            break;
        int c = !lk ? 1 : !rk ? -1 : strcmp(lk, rk);
        if (c < 0) { /* a log key the result lacks: it must be absent at REV */
            rc = check_read_key(li, o, res, op, sk->k[a], op->rev, HIST_ABSENT, -1, "range read");
            a++;
        } else if (c > 0) { /* a result key the log never had */
            rc = check_read_key(li, o, res, op, op->rkeys[r], op->rev, op->rvals[r], -1, "range read");
            r++;
        } else {
            rc = check_read_key(li, o, res, op, sk->k[a], op->rev, op->rvals[r], -1, "range read");
            a++;
            r++;
        }
    }
    return rc;
}

int check_log_reads(const struct history *h, const struct check_opts *o, struct check_result *res)
{
    if (skip_without_log(h, res))
        return 0;
    struct log_index li;
    int rc = log_index_build(&li, h);
    if (rc < 0)
        return rc;
    struct sorted_keys sk = {0};
    sk.k = malloc((li.nstr + 1) * sizeof(uint32_t));
    if (!sk.k)
        rc = -ENOMEM;
    for (uint32_t k = 0; rc == 0 && k < li.nstr; k++)
        if (li.kcount[k])
            sk.k[sk.n++] = k;
    sort_h = h;
    if (rc == 0)
        qsort(sk.k, sk.n, sizeof(uint32_t), cmp_key_text);
    for (size_t i = 0; i < h->nops && rc == 0; i++) {
        const struct hist_op *op = &h->ops[i];
        if (op->status != HS_OK || op->rev < 0 || op->kind == HK_GRANT || op->kind == HK_KEEPALIVE)
            continue;
        if (op->rev > h->logend) {
            struct sb b = {0};
            sb_printf(&b, "answered at revision %" PRId64 ", beyond the store's last revision %" PRId64
                          " (logend): a revision from the future\n",
                      op->rev, h->logend);
            sb_op(&b, h, op, NULL);
            res->nchecked++;
            rc = finding_add(res, o, "future-revision", op->nkeys ? hist_str(h, op->keys[0]) : "", sb_take(&b));
            continue;
        }
        if (h->logstart > 1 && op->rev < h->logstart) {
            if (op->kind != HK_PUT && op->kind != HK_PUTL && op->kind != HK_MPUT && op->kind != HK_REVOKE)
                res->nunchecked++;
            continue;
        }
        switch (op->kind) {
        case HK_GET:
        case HK_SGET:
            rc = check_read_key(&li, o, res, op, op->keys[0], op->rev, op->rvals[0], op->modrev,
                                op->kind == HK_GET ? "get read" : "sget read");
            break;
        case HK_MGET:
            for (uint32_t j = 0; j < op->nkeys && rc == 0; j++)
                rc = check_read_key(&li, o, res, op, op->keys[j], op->rev, op->rvals[j], -1, "mget read");
            break;
        case HK_DEL:
            if (op->n == 0)
                rc = check_read_key(&li, o, res, op, op->keys[0], op->rev, HIST_ABSENT, -1, "del found");
            break;
        case HK_CAS:
            if (op->n == 0)
                rc = check_read_key(&li, o, res, op, op->keys[0], op->rev, op->rvals[0], -1,
                                    "cas failed and read");
            else if (op->rev - 1 >= h->logstart || h->logstart <= 1)
                rc = check_read_key(&li, o, res, op, op->keys[0], op->rev - 1, op->expect, -1,
                                    "cas succeeded, so it compared");
            break;
        case HK_RANGE:
            rc = check_range(&li, o, res, op, &sk);
            break;
        default:
            break;
        }
    }
    free(sk.k);
    log_index_free(&li);
    return rc;
}

/* --- real-time order of revisions ------------------------------------------------------ */

static const struct hist_op *cmp_ops;
static int cmp_inv(const void *a, const void *b)
{
    const struct hist_op *x = &cmp_ops[*(const uint32_t *)a], *y = &cmp_ops[*(const uint32_t *)b];
    return x->inv < y->inv ? -1 : x->inv > y->inv;
}
static int cmp_ret(const void *a, const void *b)
{
    const struct hist_op *x = &cmp_ops[*(const uint32_t *)a], *y = &cmp_ops[*(const uint32_t *)b];
    return x->ret < y->ret ? -1 : x->ret > y->ret;
}

/*
 * For each op B of set (n indexes into h->ops, all ok with a REV), the ops
 * of the set that completed before B was invoked must have revisions <=
 * REV(B), and < REV(B) when B is a write (strict) -- a write always makes a
 * revision above every one already seen.
 */
static int sweep(const struct history *h, const struct check_opts *o, struct check_result *res, uint32_t *set,
                 size_t n, bool strict_writes, const char *kind, const char *group)
{
    uint32_t *byret = malloc((n + 1) * sizeof(uint32_t));
    if (!byret)
        return -ENOMEM;
    memcpy(byret, set, n * sizeof(uint32_t));
    cmp_ops = h->ops;
    qsort(set, n, sizeof(uint32_t), cmp_inv);
    qsort(byret, n, sizeof(uint32_t), cmp_ret);
    size_t j = 0;
    int64_t maxrev = -1;
    const struct hist_op *maxop = NULL;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const struct hist_op *b = &h->ops[set[i]];
        while (j < n && h->ops[byret[j]].ret < b->inv) {
            const struct hist_op *a = &h->ops[byret[j++]];
            if (a->rev > maxrev) {
                maxrev = a->rev;
                maxop = a;
            }
        }
        if (!maxop)
            continue;
        res->nchecked++;
        bool wr = strict_writes && op_is_write(b);
        if (b->rev > maxrev || (!wr && b->rev == maxrev))
            continue;
        struct sb s = {0};
        sb_printf(&s, "%s%s was invoked after %s completed, yet its revision %" PRId64 " is %s %" PRId64 "%s:\n",
                  group ? group : "", wr ? "a write" : "a read", wr ? "an operation" : "a write or read",
                  b->rev, b->rev == maxrev ? "equal to" : "below", maxrev,
                  wr ? " (a write makes a new revision above every one already observed)"
                     : " (its answer is older than one already given)");
        sb_op(&s, h, maxop, "  earlier:  ");
        sb_op(&s, h, b, "  later:    ");
        rc = finding_add(res, o, kind, b->nkeys && b->kind != HK_RANGE ? hist_str(h, b->keys[0]) : "",
                         sb_take(&s));
    }
    free(byret);
    return rc;
}

int check_rev_order(const struct history *h, const struct check_opts *o, struct check_result *res)
{
    uint32_t *set = malloc((h->nops + 1) * sizeof(uint32_t));
    uint32_t *group = malloc((h->maxprocess + 2) * sizeof(uint32_t));
    if (!set || !group) {
        free(set);
        free(group);
        return -ENOMEM;
    }
    size_t n = 0;
    for (size_t i = 0; i < h->nops; i++) {
        const struct hist_op *op = &h->ops[i];
        if (op->status == HS_OK && op->rev >= 0 && op->kind != HK_SGET)
            set[n++] = (uint32_t)i;
    }
    int rc = sweep(h, o, res, set, n, true, "revision-went-back", NULL);

    /* Serializable reads, per member: the processes pinned to one member form one group. */
    for (uint32_t p = 0; p <= h->maxprocess; p++)
        group[p] = p + 1; /* by default each process alone; below, the pinned ones by member */
    for (size_t i = 0; i < h->nmeta; i++) {
        if (strcmp(h->meta[i].name, "pin") != 0)
            continue;
        unsigned long p;
        char member[128];
        if (sscanf(h->meta[i].value, "%lu %127s", &p, member) == 2 && p <= h->maxprocess) {
            uint32_t id = hist_lookup(h, member);
            /* Members are named by a string the history may not hold otherwise: use the meta index. */
            group[p] = 0x80000000u | (uint32_t)(id != UINT32_MAX ? id : (uint32_t)i);
            for (size_t k = 0; k < i; k++) { /* the same member named by an earlier pin line */
                unsigned long q;
                char m2[128];
                if (strcmp(h->meta[k].name, "pin") == 0 && sscanf(h->meta[k].value, "%lu %127s", &q, m2) == 2 &&
                    strcmp(m2, member) == 0 && q <= h->maxprocess) {
                    group[p] = group[q];
                    break;
                }
            }
        }
    }
    for (uint32_t p = 0; p <= h->maxprocess && rc == 0; p++) {
        bool first = true;
        for (uint32_t q = 0; q < p; q++)
            first &= group[q] != group[p];
        if (!first)
            continue;
        n = 0;
        for (size_t i = 0; i < h->nops; i++) {
            const struct hist_op *op = &h->ops[i];
            if (op->status == HS_OK && op->kind == HK_SGET && group[op->process] == group[p])
                set[n++] = (uint32_t)i;
        }
        char g[160];
        if (group[p] & 0x80000000u) {
            const char *member = "?";
            for (size_t i = 0; i < h->nmeta; i++) {
                unsigned long q;
                static char m2[128];
                if (strcmp(h->meta[i].name, "pin") == 0 && sscanf(h->meta[i].value, "%lu %127s", &q, m2) == 2 &&
                    q == p) {
                    member = m2;
                    break;
                }
            }
            snprintf(g, sizeof(g), "on member %s: a serializable ", member);
        } else
            snprintf(g, sizeof(g), "in process %" PRIu32 ": a serializable ", p);
        rc = sweep(h, o, res, set, n, false, "sget-went-back", g);
    }
    free(set);
    free(group);
    return rc;
}

/* --- leases ------------------------------------------------------------------------ */

struct lease_life {
    int64_t lease;
    int64_t until; /* the lease is alive at least until this time */
    uint32_t op;   /* the grant or keep-alive that says so */
};

static int cmp_life(const void *a, const void *b)
{
    const struct lease_life *x = a, *y = b;
    return x->lease < y->lease ? -1 : x->lease > y->lease;
}

static const struct lease_life *find_life(const struct lease_life *l, size_t n, int64_t lease)
{
    size_t a = 0, b = n;
    while (a < b) {
        size_t m = a + (b - a) / 2;
        if (l[m].lease < lease)
            a = m + 1;
        else
            b = m;
    }
    return a < n && l[a].lease == lease ? &l[a] : NULL;
}

/* Pairs (lease or key, revision) sorted by both, for the client deletes and revokes. */
static int cmp_pair(const void *a, const void *b)
{
    const struct lease_life *x = a, *y = b;
    if (x->lease != y->lease)
        return x->lease < y->lease ? -1 : 1;
    return x->until < y->until ? -1 : x->until > y->until;
}

static bool find_pair(const struct lease_life *l, size_t n, const struct lease_life *want)
{
    return n && bsearch(want, l, n, sizeof(*l), cmp_pair) != NULL;
}

/* Does ok op read key as absent at a revision in [from, to)? */
static bool sees_absent(const struct hist_op *op, uint32_t key, int64_t from, int64_t to, const struct history *h)
{
    if (op->status != HS_OK || op->rev < from || op->rev >= to)
        return false;
    switch (op->kind) {
    case HK_GET: case HK_SGET:
        return op->keys[0] == key && op->rvals[0] == HIST_ABSENT;
    case HK_DEL:
        return op->keys[0] == key && op->n == 0;
    case HK_CAS:
        return op->keys[0] == key && op->n == 0 && op->rvals[0] == HIST_ABSENT;
    case HK_MGET:
        for (uint32_t j = 0; j < op->nkeys; j++)
            if (op->keys[j] == key)
                return op->rvals[j] == HIST_ABSENT;
        return false;
    case HK_RANGE: {
        const char *k = hist_str(h, key);
        if (strcmp(k, hist_str(h, op->keys[0])) < 0 ||
            (op->keys[1] != HIST_ABSENT && strcmp(k, hist_str(h, op->keys[1])) >= 0))
            return false;
        for (int64_t j = 0; j < op->n; j++)
            if (op->rkeys[j] == key)
                return false;
        return true;
    }
    default:
        return false;
    }
}

int check_leases(const struct history *h, const struct check_opts *o, struct check_result *res)
{
    if (skip_without_log(h, res))
        return 0;
    struct log_index li;
    int rc = log_index_build(&li, h);
    if (rc < 0)
        return rc;
    struct lease_life *life = malloc((h->nops + 1) * sizeof(*life));
    /* Per key: the earliest-completing ok op reading it absent is found by a scan of its readers. */
    uint32_t *kcnt = calloc(li.nstr + 1, sizeof(uint32_t)), *kst = calloc(li.nstr + 2, sizeof(uint32_t));
    uint32_t *readers = NULL, *ranges = NULL;
    struct lease_life *okdel = NULL, *okrev = NULL;
    size_t nlife = 0, nranges = 0, nokdel = 0, nokrev = 0;
    if (!life || !kcnt || !kst) {
        rc = -ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < h->nops; i++) {
        const struct hist_op *op = &h->ops[i];
        if (op->status != HS_OK)
            continue;
        int64_t lease = op->kind == HK_GRANT ? op->res_lease : op->kind == HK_KEEPALIVE ? op->lease : 0;
        if (lease && op->res_ttl > 0) {
            int64_t until = op->inv + op->res_ttl * 1000000000;
            life[nlife++] = (struct lease_life){lease, until, (uint32_t)i};
        }
        if (op->kind == HK_GET || op->kind == HK_SGET || op->kind == HK_DEL || op->kind == HK_CAS ||
            op->kind == HK_MGET)
            for (uint32_t j = 0; j < op->nkeys; j++)
                kcnt[op->keys[j]]++;
        if (op->kind == HK_RANGE)
            nranges++;
    }
    /* Client deletes and revokes: (key or lease, REV) when ok, (key or lease, -1) when unknown. */
    okdel = malloc((h->nops + 1) * sizeof(*okdel));
    okrev = malloc((h->nops + 1) * sizeof(*okrev));
    if (!okdel || !okrev) {
        rc = -ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < h->nops; i++) {
        const struct hist_op *op = &h->ops[i];
        if (op->status == HS_FAIL)
            continue;
        int64_t r = op->status == HS_OK ? op->rev : -1;
        if (op->kind == HK_DEL && (op->status != HS_OK || op->n == 1))
            okdel[nokdel++] = (struct lease_life){op->keys[0], r, 0};
        else if (op->kind == HK_REVOKE)
            okrev[nokrev++] = (struct lease_life){op->lease, r, 0};
    }
    qsort(okdel, nokdel, sizeof(*okdel), cmp_pair);
    qsort(okrev, nokrev, sizeof(*okrev), cmp_pair);
    /* Keep, per lease, the latest guarantee. */
    qsort(life, nlife, sizeof(*life), cmp_life);
    size_t m = 0;
    for (size_t i = 0; i < nlife; i++) {
        if (m && life[m - 1].lease == life[i].lease) {
            if (life[i].until > life[m - 1].until)
                life[m - 1] = life[i];
        } else
            life[m++] = life[i];
    }
    nlife = m;
    uint32_t sum = 0;
    for (uint32_t k = 0; k < li.nstr; k++) {
        kst[k] = sum;
        sum += kcnt[k];
        kcnt[k] = 0;
    }
    readers = malloc((sum + 1) * sizeof(uint32_t));
    ranges = malloc((nranges + 1) * sizeof(uint32_t));
    if (!readers || !ranges) {
        rc = -ENOMEM;
        goto out;
    }
    nranges = 0;
    for (size_t i = 0; i < h->nops; i++) {
        const struct hist_op *op = &h->ops[i];
        if (op->status != HS_OK)
            continue;
        if (op->kind == HK_GET || op->kind == HK_SGET || op->kind == HK_DEL || op->kind == HK_CAS ||
            op->kind == HK_MGET)
            for (uint32_t j = 0; j < op->nkeys; j++)
                readers[kst[op->keys[j]] + kcnt[op->keys[j]]++] = (uint32_t)i;
        if (op->kind == HK_RANGE)
            ranges[nranges++] = (uint32_t)i;
    }
    for (size_t i = 0; i < h->nlog && rc == 0; i++) {
        const struct hist_event *e = &h->log[i];
        if (e->put)
            continue;
        uint32_t pos = log_key_upper(&li, e->key, e->rev - 1);
        if (pos == 0)
            continue; /* its put is below logstart: which lease, the log cannot say */
        const struct hist_event *prev = &h->log[li.ev[li.kstart[e->key] + pos - 1]];
        if (!prev->put || !prev->lease)
            continue;
        /* A client's delete or revoke at this revision, or one whose outcome is unknown? */
        struct lease_life kd = {e->key, e->rev, 0}, kl = {prev->lease, e->rev, 0};
        bool client = find_pair(okdel, nokdel, &kd) || find_pair(okrev, nokrev, &kl);
        kd.until = kl.until = -1;
        bool maybe = find_pair(okdel, nokdel, &kd) || find_pair(okrev, nokrev, &kl);
        if (client)
            continue;
        if (maybe) {
            res->nunchecked++;
            continue;
        }
        res->nchecked++;
        const struct lease_life *l = find_life(life, nlife, prev->lease);
        if (!l)
            continue;
        uint32_t next = log_key_upper(&li, e->key, e->rev);
        int64_t to = next < li.kcount[e->key] ? h->log[li.ev[li.kstart[e->key] + next]].rev : INT64_MAX;
        const struct hist_op *first = NULL;
        for (uint32_t j = 0; j < kcnt[e->key]; j++) {
            const struct hist_op *op = &h->ops[readers[kst[e->key] + j]];
            if (sees_absent(op, e->key, e->rev, to, h) && (!first || op->ret < first->ret))
                first = op;
        }
        for (size_t j = 0; j < nranges; j++) {
            const struct hist_op *op = &h->ops[ranges[j]];
            if (sees_absent(op, e->key, e->rev, to, h) && (!first || op->ret < first->ret))
                first = op;
        }
        if (!first || first->ret >= l->until)
            continue;
        struct sb b = {0};
        char t1[32], t2[32];
        sb_printf(&b, "%s, attached to lease %" PRId64 " (log line %" PRIu32 "), was deleted by the lease's expiry "
                      "at revision %" PRId64 " (log line %" PRIu32 ", no client delete or revoke there),\n"
                      "  and a read completed at %s saw it gone, but the lease was granted until at least %s "
                      "(%.3f s later):\n",
                  hist_str(h, e->key), prev->lease, prev->line, e->rev, e->line,
                  hist_format_time(h, first->ret, t1, sizeof(t1)), hist_format_time(h, l->until, t2, sizeof(t2)),
                  (double)(l->until - first->ret) / 1e9);
        sb_op(&b, h, &h->ops[l->op], "  lease:  ");
        sb_op(&b, h, first, "  read:   ");
        rc = finding_add(res, o, "lease-expired-early", hist_str(h, e->key), sb_take(&b));
    }
out:
    free(okdel);
    free(okrev);
    free(life);
    free(kcnt);
    free(kst);
    free(readers);
    free(ranges);
    log_index_free(&li);
    return rc;
}
