/*
 * Optimistic transactions: what a statement (or BEGIN ... COMMIT) read and
 * what it means to write, and the one Raft Txn that commits the writes only
 * if every key read still has the mod_revision it was read at.  Scans also
 * guard their whole key range against new or changed keys.  The pending
 * writes are merged per key, kept sorted (the keys table overlays them on
 * reads) and undone to savepoints.  Reads are never undone.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "shell/shell.h"

/*
 * Keys remembered one by one from scans; beyond this the scan's span alone
 * guards them (a concurrent delete of a key read but not written then goes
 * unseen), so a huge scan does not hold every key in memory.
 */
#define SCANNED_KEYS_MAX 4096
/* Pending writes held before the commit refuses: far above what a member accepts (--max-txn-ops). */
#define PENDING_MAX 100000

void txn_init(struct shell_txn *t)
{
    memset(t, 0, sizeof *t);
}

static void wop_free(struct wop *w)
{
    free(w->key);
    free(w->value);
    w->key = w->value = NULL;
}

static void free_keys(struct shell_txn *t)
{
    for (size_t i = 0; i < t->keycap; i++)
        if (t->keys[i].used)
            free(t->keys[i].key);
    free(t->keys);
    t->keys = NULL;
    t->nkeys = t->keycap = 0;
    t->keys_dropped = false;
}

static void free_spans(struct shell_txn *t)
{
    for (size_t i = 0; i < t->nspans; i++) {
        free(t->spans[i].lo);
        free(t->spans[i].hi);
    }
    free(t->spans);
    t->spans = NULL;
    t->nspans = t->spancap = 0;
}

static void free_undo(struct shell_txn *t)
{
    for (size_t i = 0; i < t->nundo; i++) {
        free(t->undo[i].key);
        if (t->undo[i].present)
            wop_free(&t->undo[i].prev);
    }
    t->nundo = 0;
}

void txn_discard_writes(struct shell_txn *t)
{
    for (size_t i = 0; i < t->npend; i++)
        wop_free(&t->pend[i]);
    t->npend = 0;
    free_undo(t);
    t->nsp = 0;
}

void txn_reset(struct shell_txn *t)
{
    txn_discard_writes(t);
    free_keys(t);
    free_spans(t);
    t->snap_rev = 0;
    t->recording = false;
}

void txn_free(struct shell_txn *t)
{
    txn_reset(t);
    free(t->pend);
    free(t->undo);
    free(t->sp);
    memset(t, 0, sizeof *t);
}

/* ---------------------------------------------------------------- reads */

static uint64_t hash_key(const void *key, size_t n)
{
    const uint8_t *p = key;
    uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ULL;
    return h;
}

static struct rkey *slot_for(struct rkey *tab, size_t cap, const void *key, size_t klen)
{
    size_t i = hash_key(key, klen) & (cap - 1);
    while (tab[i].used && bytes_cmp(tab[i].key, tab[i].klen, key, klen) != 0)
        i = (i + 1) & (cap - 1);
    return &tab[i];
}

static int grow_keys(struct shell_txn *t)
{
    size_t cap = t->keycap ? t->keycap * 2 : 64;
    struct rkey *tab = calloc(cap, sizeof *tab);
    if (!tab)
        return SQLITE_NOMEM;
    for (size_t i = 0; i < t->keycap; i++)
        if (t->keys[i].used)
            *slot_for(tab, cap, t->keys[i].key, t->keys[i].klen) = t->keys[i];
    free(t->keys);
    t->keys = tab;
    t->keycap = cap;
    return SQLITE_OK;
}

const struct rkey *txn_find_key(const struct shell_txn *t, const void *key, size_t klen)
{
    if (!t->keycap)
        return NULL;
    struct rkey *s = slot_for(t->keys, t->keycap, key, klen);
    return s->used ? s : NULL;
}

int txn_note_key(struct shell_txn *t, const void *key, size_t klen, const Cairn__KeyValue *kv,
                 bool in_span)
{
    if (t->keycap && slot_for(t->keys, t->keycap, key, klen)->used)
        return SQLITE_OK; /* the first read is the one the transaction saw */
    if (in_span && t->nkeys >= SCANNED_KEYS_MAX) {
        t->keys_dropped = true;
        return SQLITE_OK;
    }
    if ((t->nkeys + 1) * 2 > t->keycap && grow_keys(t) != SQLITE_OK)
        return SQLITE_NOMEM;
    struct rkey *s = slot_for(t->keys, t->keycap, key, klen);
    if (!(s->key = bytes_dup(key, klen)))
        return SQLITE_NOMEM;
    s->klen = klen;
    s->mod = kv ? kv->mod_revision : 0;
    s->create = kv ? kv->create_revision : 0;
    s->version = kv ? kv->version : 0;
    s->lease = kv ? kv->lease : 0;
    s->in_span = in_span;
    s->used = true;
    t->nkeys++;
    return SQLITE_OK;
}

int txn_note_span(struct shell_txn *t, const void *lo, size_t lolen, const void *hi, size_t hilen,
                  int64_t rev, size_t nseen)
{
    if (t->nspans == t->spancap) {
        size_t cap = t->spancap ? t->spancap * 2 : 8;
        struct rspan *n = realloc(t->spans, cap * sizeof *n);
        if (!n)
            return SQLITE_NOMEM;
        t->spans = n;
        t->spancap = cap;
    }
    struct rspan *s = &t->spans[t->nspans];
    s->lo = bytes_dup(lo, lolen);
    s->hi = hilen ? bytes_dup(hi, hilen) : NULL;
    if (!s->lo || (hilen && !s->hi)) {
        free(s->lo);
        free(s->hi);
        return SQLITE_NOMEM;
    }
    s->lolen = lolen;
    s->hilen = hilen;
    s->rev = rev;
    s->nseen = nseen;
    t->nspans++;
    return SQLITE_OK;
}

/* --------------------------------------------------------------- writes */

size_t txn_pending_find(const struct shell_txn *t, const void *key, size_t klen)
{
    size_t lo = 0, hi = t->npend;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (bytes_cmp(t->pend[mid].key, t->pend[mid].klen, key, klen) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

const struct wop *txn_pending_get(const struct shell_txn *t, const void *key, size_t klen)
{
    size_t i = txn_pending_find(t, key, klen);
    if (i < t->npend && bytes_cmp(t->pend[i].key, t->pend[i].klen, key, klen) == 0)
        return &t->pend[i];
    return NULL;
}

static int wop_copy(struct wop *dst, const struct wop *src)
{
    *dst = *src;
    dst->key = bytes_dup(src->key, src->klen);
    dst->value = src->value ? bytes_dup(src->value, src->vlen) : NULL;
    if (!dst->key || (src->value && !dst->value)) {
        wop_free(dst);
        return SQLITE_NOMEM;
    }
    return SQLITE_OK;
}

static int push_undo(struct shell_txn *t, const void *key, size_t klen, const struct wop *prev)
{
    if (t->nundo == t->undocap) {
        size_t cap = t->undocap ? t->undocap * 2 : 16;
        struct wundo *n = realloc(t->undo, cap * sizeof *n);
        if (!n)
            return SQLITE_NOMEM;
        t->undo = n;
        t->undocap = cap;
    }
    struct wundo *u = &t->undo[t->nundo];
    memset(u, 0, sizeof *u);
    if (!(u->key = bytes_dup(key, klen)))
        return SQLITE_NOMEM;
    u->klen = klen;
    if (prev) {
        if (wop_copy(&u->prev, prev) != SQLITE_OK) {
            free(u->key);
            return SQLITE_NOMEM;
        }
        u->present = true;
    }
    t->nundo++;
    return SQLITE_OK;
}

/* merge: the effect of op after the pending p (both on one key) into out. */
static int merge(const struct wop *p, const struct wop *op, struct wop *out, char **msg)
{
    if (wop_copy(out, op) != SQLITE_OK)
        return SQLITE_NOMEM;
    if (op->kind == WOP_DELETE || p->kind == WOP_DELETE) {
        if (op->kind == WOP_PUT && (op->ignore_value || op->ignore_lease)) {
            wop_free(out);
            *msg = sqlite3_mprintf("the key was deleted earlier in this transaction");
            return SQLITE_CONSTRAINT;
        }
        return SQLITE_OK;
    }
    /* put after put: an ignored field keeps what the earlier put set */
    if (op->ignore_value && !p->ignore_value) {
        free(out->value);
        out->value = p->value ? bytes_dup(p->value, p->vlen) : NULL;
        out->vlen = p->vlen;
        out->ignore_value = false;
        if (p->value && !out->value) {
            wop_free(out);
            return SQLITE_NOMEM;
        }
    }
    if (op->ignore_lease && !p->ignore_lease) {
        out->lease = p->lease;
        out->ignore_lease = false;
    }
    return SQLITE_OK;
}

int txn_write(struct shell_txn *t, const struct wop *op, char **msg)
{
    size_t i = txn_pending_find(t, op->key, op->klen);
    bool exists = i < t->npend && bytes_cmp(t->pend[i].key, t->pend[i].klen, op->key, op->klen) == 0;
    struct wop merged;
    int rc;

    if (!exists && t->npend >= PENDING_MAX) {
        *msg = sqlite3_mprintf("more than %d keys written in one transaction; a member takes far "
                               "fewer in one Txn (--max-txn-ops): split the work",
                               PENDING_MAX);
        return SQLITE_ERROR;
    }
    rc = exists ? merge(&t->pend[i], op, &merged, msg) : wop_copy(&merged, op);
    if (rc != SQLITE_OK)
        return rc;
    if ((rc = push_undo(t, op->key, op->klen, exists ? &t->pend[i] : NULL)) != SQLITE_OK) {
        wop_free(&merged);
        return rc;
    }
    if (exists) {
        wop_free(&t->pend[i]);
        t->pend[i] = merged;
        return SQLITE_OK;
    }
    if (t->npend == t->pendcap) {
        size_t cap = t->pendcap ? t->pendcap * 2 : 16;
        struct wop *n = realloc(t->pend, cap * sizeof *n);
        if (!n) {
            wop_free(&merged);
            t->nundo--;
            free(t->undo[t->nundo].key);
            return SQLITE_NOMEM;
        }
        t->pend = n;
        t->pendcap = cap;
    }
    memmove(&t->pend[i + 1], &t->pend[i], (t->npend - i) * sizeof *t->pend);
    t->pend[i] = merged;
    t->npend++;
    return SQLITE_OK;
}

/* undo_one: revert the newest undo record. */
static void undo_one(struct shell_txn *t)
{
    struct wundo *u = &t->undo[--t->nundo];
    size_t i = txn_pending_find(t, u->key, u->klen);
    bool exists = i < t->npend && bytes_cmp(t->pend[i].key, t->pend[i].klen, u->key, u->klen) == 0;
    if (exists)
        wop_free(&t->pend[i]);
    if (u->present) {
        if (exists) {
            t->pend[i] = u->prev;
        } else { /* not reached: a record with a previous op always finds it */
            wop_free(&u->prev);
        }
    } else if (exists) {
        memmove(&t->pend[i], &t->pend[i + 1], (t->npend - i - 1) * sizeof *t->pend);
        t->npend--;
    }
    free(u->key);
}

void txn_savepoint(struct shell_txn *t, int n)
{
    if (n < 0)
        return;
    if ((size_t)n >= t->spcap) {
        size_t cap = (size_t)n + 8;
        size_t *p = realloc(t->sp, cap * sizeof *p);
        if (!p)
            return; /* a rollback to it then undoes everything: safe, only coarser */
        t->sp = p;
        t->spcap = cap;
    }
    for (size_t i = t->nsp; i < (size_t)n; i++)
        t->sp[i] = t->nundo;
    t->sp[n] = t->nundo;
    t->nsp = (size_t)n + 1;
}

void txn_release(struct shell_txn *t, int n)
{
    if (n >= 0 && (size_t)n < t->nsp)
        t->nsp = (size_t)n;
}

void txn_rollback_to(struct shell_txn *t, int n)
{
    size_t to = n >= 0 && (size_t)n < t->nsp ? t->sp[n] : 0;
    while (t->nundo > to)
        undo_one(t);
    if (n >= 0 && (size_t)n < t->nsp)
        t->nsp = (size_t)n + 1;
}

/* --------------------------------------------------------------- commit */

/* The Txn under construction: arrays sized for every compare and op. */
struct build {
    Cairn__Compare *cmp;
    Cairn__Compare **cmpp;
    Cairn__RequestOp *ops, **succ, **fail;
    Cairn__PutRequest *puts;
    Cairn__DeleteRangeRequest *dels;
    Cairn__RangeRequest *ranges;
    const struct rkey **ck; /* the read behind compare i, NULL for a span */
    const struct rspan **cs;
    uint8_t *span_ends; /* "\0" for spans without an end */
    size_t ncmp, nsucc;
};

static void build_free(struct build *b)
{
    free(b->cmp);
    free(b->cmpp);
    free(b->ops);
    free(b->succ);
    free(b->fail);
    free(b->puts);
    free(b->dels);
    free(b->ranges);
    free(b->ck);
    free(b->cs);
}

static ProtobufCBinaryData bin(const void *p, size_t n)
{
    ProtobufCBinaryData d = {n, (uint8_t *)p};
    return d;
}

static const uint8_t no_end[1] = {0};

static void add_key_compare(struct build *b, const struct rkey *k)
{
    size_t i = b->ncmp++;
    Cairn__Compare *c = &b->cmp[i];
    cairn__compare__init(c);
    c->key = bin(k->key, k->klen);
    c->target = CAIRN__COMPARE__COMPARE_TARGET__MOD;
    c->result = CAIRN__COMPARE__COMPARE_RESULT__EQUAL;
    c->target_union_case = CAIRN__COMPARE__TARGET_UNION_MOD_REVISION;
    c->mod_revision = k->mod;
    b->cmpp[i] = c;
    b->ck[i] = k;
    Cairn__RangeRequest *r = &b->ranges[i];
    cairn__range_request__init(r);
    r->key = c->key;
    r->keys_only = true;
    Cairn__RequestOp *op = &b->ops[b->nsucc + i];
    cairn__request_op__init(op);
    op->request_case = CAIRN__REQUEST_OP__REQUEST_REQUEST_RANGE;
    op->request_range = r;
    b->fail[i] = op;
}

/* A scan's guard: every key now in [lo, hi) was last written at or before rev. */
static void add_span_compare(struct build *b, const struct rspan *s)
{
    size_t i = b->ncmp++;
    Cairn__Compare *c = &b->cmp[i];
    cairn__compare__init(c);
    c->key = bin(s->lo, s->lolen);
    c->range_end = s->hilen ? bin(s->hi, s->hilen) : bin(no_end, 1);
    c->target = CAIRN__COMPARE__COMPARE_TARGET__MOD;
    c->result = CAIRN__COMPARE__COMPARE_RESULT__LESS;
    c->target_union_case = CAIRN__COMPARE__TARGET_UNION_MOD_REVISION;
    c->mod_revision = s->rev + 1;
    b->cmpp[i] = c;
    b->cs[i] = s;
    Cairn__RangeRequest *r = &b->ranges[i];
    cairn__range_request__init(r);
    r->key = c->key;
    r->range_end = c->range_end;
    r->keys_only = true;
    r->limit = 1;
    r->min_mod_revision = s->rev + 1;
    Cairn__RequestOp *op = &b->ops[b->nsucc + i];
    cairn__request_op__init(op);
    op->request_case = CAIRN__REQUEST_OP__REQUEST_REQUEST_RANGE;
    op->request_range = r;
    b->fail[i] = op;
}

static void add_write(struct build *b, const struct wop *w, size_t i)
{
    Cairn__RequestOp *op = &b->ops[i];
    cairn__request_op__init(op);
    if (w->kind == WOP_PUT) {
        Cairn__PutRequest *p = &b->puts[i];
        cairn__put_request__init(p);
        p->key = bin(w->key, w->klen);
        if (!w->ignore_value)
            p->value = bin(w->value, w->vlen);
        p->ignore_value = w->ignore_value;
        if (!w->ignore_lease)
            p->lease = w->lease;
        p->ignore_lease = w->ignore_lease;
        op->request_case = CAIRN__REQUEST_OP__REQUEST_REQUEST_PUT;
        op->request_put = p;
    } else {
        Cairn__DeleteRangeRequest *d = &b->dels[i];
        cairn__delete_range_request__init(d);
        d->key = bin(w->key, w->klen);
        op->request_case = CAIRN__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE;
        op->request_delete_range = d;
    }
    b->succ[i] = op;
}

/* conflict_message: which compare failed, from the failure branch's reads. */
static char *conflict_message(const struct build *b, const Cairn__TxnResponse *tr)
{
    struct sbuf m = {0};
    char *out = NULL;
    for (size_t i = 0; i < b->ncmp && i < tr->n_responses; i++) {
        const Cairn__ResponseOp *ro = tr->responses[i];
        if (!ro || ro->response_case != CAIRN__RESPONSE_OP__RESPONSE_RESPONSE_RANGE)
            continue;
        const Cairn__RangeResponse *rr = ro->response_range;
        const Cairn__KeyValue *kv = rr->n_kvs ? rr->kvs[0] : NULL;
        if (b->ck[i]) {
            const struct rkey *k = b->ck[i];
            int64_t now = kv ? kv->mod_revision : 0;
            if (now == k->mod)
                continue;
            sbuf_puts(&m, "conflict on key ");
            bytes_quote(&m, k->key, k->klen, 200);
            if (!k->mod)
                sbuf_printf(&m, ": it did not exist when read, now it has mod_revision %lld",
                            (long long)now);
            else if (!now)
                sbuf_printf(&m, ": read at mod_revision %lld, since deleted", (long long)k->mod);
            else
                sbuf_printf(&m, ": read at mod_revision %lld, now mod_revision %lld",
                            (long long)k->mod, (long long)now);
        } else if (kv) {
            const struct rspan *s = b->cs[i];
            sbuf_puts(&m, "conflict on key ");
            bytes_quote(&m, kv->key.data, kv->key.len, 200);
            sbuf_puts(&m, ": the range from ");
            bytes_quote(&m, s->lo, s->lolen, 200);
            if (s->hilen) {
                sbuf_puts(&m, " to ");
                bytes_quote(&m, s->hi, s->hilen, 200);
            }
            sbuf_printf(&m, " was read at revision %lld, the key now has mod_revision %lld",
                        (long long)s->rev, (long long)kv->mod_revision);
        } else {
            continue;
        }
        sbuf_puts(&m, "; nothing was written, retry the statement or transaction");
        break;
    }
    if (m.p)
        out = sqlite3_mprintf("%s", m.p);
    else
        out = sqlite3_mprintf("conflict: a key read by this transaction changed before it "
                              "committed; nothing was written, retry");
    sbuf_free(&m);
    return out;
}

/* A scan's whole range deleted: one DeleteRange, which its span compare guards. */
static void add_delete_range(struct build *b, const struct rspan *s, size_t i)
{
    Cairn__RequestOp *op = &b->ops[i];
    Cairn__DeleteRangeRequest *d = &b->dels[i];
    cairn__request_op__init(op);
    cairn__delete_range_request__init(d);
    d->key = bin(s->lo, s->lolen);
    d->range_end = s->hilen ? bin(s->hi, s->hilen) : bin(no_end, 1);
    op->request_case = CAIRN__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE;
    op->request_delete_range = d;
    b->succ[i] = op;
}

/*
 * coalesce: mark the spans whose every key read is deleted by the
 * transaction, and those deletes (covered), so that they go as one
 * DeleteRange each: DELETE FROM keys WHERE key LIKE 'tmp/%' is one
 * operation, not one per key.  The span's compare (nothing in it changed
 * since it was read) makes that exactly the keys read.
 */
static void coalesce(const struct shell_txn *t, bool *span_del, bool *covered)
{
    for (size_t s = 0; s < t->nspans; s++) {
        const struct rspan *sp = &t->spans[s];
        if (sp->nseen < 2)
            continue;
        size_t i0 = txn_pending_find(t, sp->lo, sp->lolen), i = i0;
        bool ok = true;
        for (; i < t->npend && (!sp->hilen || bytes_cmp(t->pend[i].key, t->pend[i].klen, sp->hi,
                                                        sp->hilen) < 0);
             i++)
            if (t->pend[i].kind != WOP_DELETE || covered[i])
                ok = false;
        if (!ok || i - i0 != sp->nseen)
            continue;
        span_del[s] = true;
        for (size_t j = i0; j < i; j++)
            covered[j] = true;
    }
}

int txn_commit(struct shell *sh, char **msg)
{
    struct shell_txn *t = &sh->txn;
    struct build b = {0};
    Cairn__Response *resp = NULL;
    struct cairn_error_detail err;
    int rc = SQLITE_OK;
    size_t budget = sh->max_txn_ops > 0 ? (size_t)sh->max_txn_ops : 128;
    bool *covered = NULL, *span_del = NULL;

    if (!t->npend)
        return SQLITE_OK;
    covered = calloc(t->npend + 1, sizeof *covered);
    span_del = calloc(t->nspans + 1, sizeof *span_del);
    if (!covered || !span_del) {
        rc = SQLITE_NOMEM;
        goto out;
    }
    coalesce(t, span_del, covered);
    size_t nwrites = 0;
    for (size_t i = 0; i < t->npend; i++)
        nwrites += !covered[i];
    for (size_t s = 0; s < t->nspans; s++)
        nwrites += span_del[s];
    if (nwrites > budget) {
        *msg = sqlite3_mprintf("the transaction writes %llu keys; one Txn holds at most %llu "
                               "operations (the member's --max-txn-ops; tell the shell with "
                               "--max-txn-ops): nothing was written, split it",
                               (unsigned long long)nwrites, (unsigned long long)budget);
        rc = SQLITE_ERROR;
        goto out;
    }
    /*
     * Every read key is compared while they fit; else the keys a span guards
     * that are not written drop out.  A key deleted by a DeleteRange never
     * needs its own: the span's compare covers it.
     */
    size_t nkeys = 0, nthin = 0;
    for (size_t i = 0; i < t->keycap; i++) {
        const struct rkey *k = &t->keys[i];
        if (!k->used)
            continue;
        size_t p = txn_pending_find(t, k->key, k->klen);
        bool written = p < t->npend && !bytes_cmp(t->pend[p].key, t->pend[p].klen, k->key, k->klen);
        if (written && covered[p])
            continue;
        nkeys++;
        nthin += !k->in_span || written;
    }
    bool thin = t->nspans + nkeys > budget;
    size_t want = t->nspans + (thin ? nthin : nkeys);
    if (want > budget) {
        *msg = sqlite3_mprintf("the transaction read %llu keys and ranges that its commit must "
                               "check, more than the %llu compares one Txn holds (--max-txn-ops): "
                               "nothing was written, narrow it",
                               (unsigned long long)want, (unsigned long long)budget);
        rc = SQLITE_ERROR;
        goto out;
    }
    size_t nops = nwrites + want;
    b.cmp = calloc(want + 1, sizeof *b.cmp);
    b.cmpp = calloc(want + 1, sizeof *b.cmpp);
    b.ops = calloc(nops + 1, sizeof *b.ops);
    b.succ = calloc(nwrites + 1, sizeof *b.succ);
    b.fail = calloc(want + 1, sizeof *b.fail);
    b.puts = calloc(nwrites + 1, sizeof *b.puts);
    b.dels = calloc(nwrites + 1, sizeof *b.dels);
    b.ranges = calloc(want + 1, sizeof *b.ranges);
    b.ck = calloc(want + 1, sizeof *b.ck);
    b.cs = calloc(want + 1, sizeof *b.cs);
    if (!b.cmp || !b.cmpp || !b.ops || !b.succ || !b.fail || !b.puts || !b.dels || !b.ranges ||
        !b.ck || !b.cs) {
        rc = SQLITE_NOMEM;
        goto out;
    }
    size_t j = 0;
    for (size_t s = 0; s < t->nspans; s++)
        if (span_del[s])
            add_delete_range(&b, &t->spans[s], j++);
    for (size_t i = 0; i < t->npend; i++)
        if (!covered[i])
            add_write(&b, &t->pend[i], j++);
    b.nsucc = j;
    for (size_t i = 0; i < t->keycap; i++) {
        const struct rkey *k = &t->keys[i];
        if (!k->used)
            continue;
        size_t p = txn_pending_find(t, k->key, k->klen);
        bool written = p < t->npend && !bytes_cmp(t->pend[p].key, t->pend[p].klen, k->key, k->klen);
        if (written && covered[p])
            continue;
        if (!thin || !k->in_span || written)
            add_key_compare(&b, k);
    }
    for (size_t i = 0; i < t->nspans; i++)
        add_span_compare(&b, &t->spans[i]);

    Cairn__TxnRequest tx = CAIRN__TXN_REQUEST__INIT;
    tx.n_compare = b.ncmp;
    tx.compare = b.cmpp;
    tx.n_success = b.nsucc;
    tx.success = b.succ;
    tx.n_failure = b.ncmp;
    tx.failure = b.fail;
    Cairn__Request req = CAIRN__REQUEST__INIT;
    req.body_case = CAIRN__REQUEST__BODY_TXN;
    req.txn = &tx;
    /* Not cancellable: once sent, only the reply tells whether it was applied. */
    int crc = shell_call(sh, &req, NULL, true, &resp, &err);
    if (crc != 0) {
        *msg = shell_call_error("commit", crc, &err);
        rc = SQLITE_ERROR;
        goto out;
    }
    if (resp->body_case != CAIRN__RESPONSE__BODY_TXN) {
        *msg = sqlite3_mprintf("commit: the member answered with something else than a Txn; the "
                               "outcome is unknown");
        rc = SQLITE_ERROR;
        goto out;
    }
    if (!resp->txn->succeeded) {
        *msg = conflict_message(&b, resp->txn);
        rc = SQLITE_ERROR;
        goto out;
    }
    sh->commit_rev = sh->last_commit_rev = resp->header ? resp->header->revision : 0;
    txn_discard_writes(t);
out:
    cairn_response_free(resp);
    build_free(&b);
    free(covered);
    free(span_del);
    if (rc == SQLITE_NOMEM && !*msg)
        *msg = sqlite3_mprintf("commit: out of memory");
    return rc;
}
