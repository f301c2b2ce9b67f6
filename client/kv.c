/*
 * The KV helpers: Put, Get, Range, DeleteRange, Txn, Compact, History and
 * Status as plain C calls.  Each fills one Request, makes one generic call
 * (call.c: same retries, same errors) and checks that the reply carries the
 * body asked for.  The Txn builder owns copies of everything given to it.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "client/internal.h"

static ProtobufCBinaryData bin(struct cairn_bytes b)
{
    ProtobufCBinaryData d = {b.len, (uint8_t *)b.data};
    return d;
}

static void fill_put(Cairn__PutRequest *p, const struct cairn_put *put)
{
    p->key = bin(put->key);
    p->value = bin(put->value);
    p->lease = put->lease;
    p->prev_kv = put->prev_kv;
    p->ignore_value = put->ignore_value;
    p->ignore_lease = put->ignore_lease;
}

static void fill_range(Cairn__RangeRequest *q, const struct cairn_range *r)
{
    q->key = bin(r->key);
    q->range_end = bin(r->range_end);
    q->limit = r->limit;
    q->revision = r->revision;
    q->sort_order = r->sort_order;
    q->sort_target = r->sort_target;
    q->serializable = r->serializable;
    q->keys_only = r->keys_only;
    q->count_only = r->count_only;
    q->min_mod_revision = r->min_mod_revision;
    q->max_mod_revision = r->max_mod_revision;
    q->min_create_revision = r->min_create_revision;
    q->max_create_revision = r->max_create_revision;
}

static void fill_delete(Cairn__DeleteRangeRequest *q, const struct cairn_delete *d)
{
    q->key = bin(d->key);
    q->range_end = bin(d->range_end);
    q->prev_kv = d->prev_kv;
}

int cairn_put(struct cairn_client *c, const struct cairn_put *put,
              const struct cairn_call_opts *opts, Cairn__Response **resp,
              struct cairn_error_detail *err)
{
    Cairn__PutRequest p = CAIRN__PUT_REQUEST__INIT;
    Cairn__Request req = CAIRN__REQUEST__INIT;

    if (!put)
        return -EINVAL;
    fill_put(&p, put);
    req.body_case = CAIRN__REQUEST__BODY_PUT;
    req.put = &p;
    return client_call_expect(c, &req, CAIRN__RESPONSE__BODY_PUT, opts, resp, err);
}

int cairn_get(struct cairn_client *c, struct cairn_bytes key,
              const struct cairn_call_opts *opts, Cairn__Response **resp,
              const Cairn__KeyValue **kv, struct cairn_error_detail *err)
{
    struct cairn_range r = {.key = key};
    int rv;

    if (!resp || !kv)
        return -EINVAL;
    *kv = NULL;
    if ((rv = cairn_range_call(c, &r, opts, resp, err)) != 0)
        return rv;
    if ((*resp)->range->n_kvs > 0)
        *kv = (*resp)->range->kvs[0];
    return 0;
}

int cairn_range_call(struct cairn_client *c, const struct cairn_range *r,
                     const struct cairn_call_opts *opts, Cairn__Response **resp,
                     struct cairn_error_detail *err)
{
    Cairn__RangeRequest q = CAIRN__RANGE_REQUEST__INIT;
    Cairn__Request req = CAIRN__REQUEST__INIT;

    if (!r || !resp)
        return -EINVAL;
    fill_range(&q, r);
    req.body_case = CAIRN__REQUEST__BODY_RANGE;
    req.range = &q;
    return client_call_expect(c, &req, CAIRN__RESPONSE__BODY_RANGE, opts, resp, err);
}

int cairn_delete_range(struct cairn_client *c, const struct cairn_delete *d,
                       const struct cairn_call_opts *opts, int64_t *deleted,
                       Cairn__Response **resp, struct cairn_error_detail *err)
{
    Cairn__DeleteRangeRequest q = CAIRN__DELETE_RANGE_REQUEST__INIT;
    Cairn__Request req = CAIRN__REQUEST__INIT;
    Cairn__Response *r = NULL;
    int rv;

    if (!d)
        return -EINVAL;
    fill_delete(&q, d);
    req.body_case = CAIRN__REQUEST__BODY_DELETE_RANGE;
    req.delete_range = &q;
    if ((rv = client_call_expect(c, &req, CAIRN__RESPONSE__BODY_DELETE_RANGE, opts, &r, err)) != 0) {
        if (resp)
            *resp = NULL;
        return rv;
    }
    if (deleted)
        *deleted = r->delete_range->deleted;
    if (resp)
        *resp = r;
    else
        cairn_response_free(r);
    return 0;
}

int cairn_compact(struct cairn_client *c, int64_t revision, bool physical,
                  const struct cairn_call_opts *opts, struct cairn_error_detail *err)
{
    Cairn__CompactionRequest q = CAIRN__COMPACTION_REQUEST__INIT;
    Cairn__Request req = CAIRN__REQUEST__INIT;

    q.revision = revision;
    q.physical = physical;
    req.body_case = CAIRN__REQUEST__BODY_COMPACT;
    req.compact = &q;
    return client_call_expect(c, &req, CAIRN__RESPONSE__BODY_COMPACT, opts, NULL, err);
}

int cairn_history_page(struct cairn_client *c, const struct cairn_history *h,
                       const struct cairn_call_opts *opts, Cairn__Response **resp,
                       struct cairn_error_detail *err)
{
    Cairn__HistoryRequest q = CAIRN__HISTORY_REQUEST__INIT;
    Cairn__Request req = CAIRN__REQUEST__INIT;

    if (!h || !resp)
        return -EINVAL;
    q.key = bin(h->key);
    q.range_end = bin(h->range_end);
    q.min_revision = h->min_revision;
    q.max_revision = h->max_revision;
    q.limit = h->limit;
    q.after_revision = h->after_revision;
    q.after_sub = h->after_sub;
    q.keys_only = h->keys_only;
    q.serializable = h->serializable;
    req.body_case = CAIRN__REQUEST__BODY_HISTORY;
    req.history = &q;
    return client_call_expect(c, &req, CAIRN__RESPONSE__BODY_HISTORY, opts, resp, err);
}

int cairn_history_each(struct cairn_client *c, const struct cairn_history *h,
                       const struct cairn_call_opts *opts, cairn_history_fn fn, void *arg,
                       struct cairn_error_detail *err)
{
    struct cairn_history page;
    int rv;

    if (!h || !fn)
        return -EINVAL;
    page = *h;
    for (;;) {
        Cairn__Response *r = NULL;
        if ((rv = cairn_history_page(c, &page, opts, &r, err)) != 0)
            return rv;
        const Cairn__HistoryResponse *hr = r->history;
        for (size_t i = 0; i < hr->n_records; i++)
            if ((rv = fn(arg, hr->records[i])) != 0) {
                cairn_response_free(r);
                return rv;
            }
        bool more = hr->more;
        /* A page that says "more" must move forward, or this would never end. */
        bool forward = hr->next_revision > page.after_revision ||
                       (hr->next_revision == page.after_revision && hr->next_sub > page.after_sub);
        page.after_revision = hr->next_revision;
        page.after_sub = hr->next_sub;
        cairn_response_free(r);
        if (!more)
            return 0;
        if (!forward) {
            detail_set(err, -CAIRN_E_MALFORMED,
                       "History page says more records follow but does not advance past "
                       "revision %lld sub %lld",
                       (long long)page.after_revision, (long long)page.after_sub);
            return -CAIRN_E_MALFORMED;
        }
    }
}

int cairn_status(struct cairn_client *c, const struct cairn_call_opts *opts,
                 Cairn__Response **resp, struct cairn_error_detail *err)
{
    Cairn__StatusRequest q = CAIRN__STATUS_REQUEST__INIT;
    Cairn__Request req = CAIRN__REQUEST__INIT;

    if (!resp)
        return -EINVAL;
    req.body_case = CAIRN__REQUEST__BODY_STATUS;
    req.status = &q;
    return client_call_expect(c, &req, CAIRN__RESPONSE__BODY_STATUS, opts, resp, err);
}

/* ----------------------------------------------------------------------- Txn */

struct cairn_txn {
    Cairn__TxnRequest req;
    size_t cap_compare, cap_success, cap_failure;
    void **allocs; /* every compare, op, request and byte copy: freed together */
    size_t n_allocs, cap_allocs;
    struct cairn_txn **nested; /* owned inner transactions */
    size_t n_nested, cap_nested;
};

/* Room for need elements in arr: the array, maybe moved, or NULL (arr intact). */
static void *grow(void *arr, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return arr;
    size_t ncap = *cap ? *cap * 2 : 4;
    while (ncap < need)
        ncap *= 2;
    void *n = realloc(arr, ncap * elem);
    if (n)
        *cap = ncap;
    return n;
}

/* Zeroed memory owned by t. */
static void *txn_alloc(struct cairn_txn *t, size_t size)
{
    void *p, **a;
    if (!(a = grow(t->allocs, &t->cap_allocs, t->n_allocs + 1, sizeof(*a))))
        return NULL;
    t->allocs = a;
    if (!(p = calloc(1, size ? size : 1)))
        return NULL;
    t->allocs[t->n_allocs++] = p;
    return p;
}

/* A copy of b owned by t; false if out of memory. */
static bool txn_bytes(struct cairn_txn *t, struct cairn_bytes b, ProtobufCBinaryData *out)
{
    out->len = b.len;
    out->data = NULL;
    if (b.len == 0)
        return true;
    if (!(out->data = txn_alloc(t, b.len)))
        return false;
    memcpy(out->data, b.data, b.len);
    return true;
}

struct cairn_txn *cairn_txn_new(void)
{
    struct cairn_txn *t = calloc(1, sizeof(*t));
    if (t) {
        Cairn__TxnRequest init = CAIRN__TXN_REQUEST__INIT;
        t->req = init;
    }
    return t;
}

void cairn_txn_free(struct cairn_txn *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->n_nested; i++)
        cairn_txn_free(t->nested[i]);
    for (size_t i = 0; i < t->n_allocs; i++)
        free(t->allocs[i]);
    free(t->nested);
    free(t->allocs);
    free(t->req.compare);
    free(t->req.success);
    free(t->req.failure);
    free(t);
}

static Cairn__Compare *txn_new_compare(struct cairn_txn *t, struct cairn_bytes key,
                                       struct cairn_bytes range_end,
                                       Cairn__Compare__CompareResult result)
{
    Cairn__Compare *cmp, **a;
    if (!(a = grow(t->req.compare, &t->cap_compare, t->req.n_compare + 1, sizeof(*a))))
        return NULL;
    t->req.compare = a;
    if (!(cmp = txn_alloc(t, sizeof(*cmp))))
        return NULL;
    cairn__compare__init(cmp);
    if (!txn_bytes(t, key, &cmp->key) || !txn_bytes(t, range_end, &cmp->range_end))
        return NULL;
    cmp->result = result;
    /* Appended only once complete, so a failure leaves t as it was. */
    return cmp;
}

int cairn_txn_compare_int(struct cairn_txn *t, struct cairn_bytes key,
                          struct cairn_bytes range_end,
                          Cairn__Compare__CompareTarget target,
                          Cairn__Compare__CompareResult result, int64_t v)
{
    Cairn__Compare *cmp;

    if (!t || target == CAIRN__COMPARE__COMPARE_TARGET__VALUE)
        return -EINVAL;
    if (!(cmp = txn_new_compare(t, key, range_end, result)))
        return -ENOMEM;
    cmp->target = target;
    switch (target) {
    case CAIRN__COMPARE__COMPARE_TARGET__VERSION:
        cmp->target_union_case = CAIRN__COMPARE__TARGET_UNION_VERSION;
        cmp->version = v;
        break;
    case CAIRN__COMPARE__COMPARE_TARGET__CREATE:
        cmp->target_union_case = CAIRN__COMPARE__TARGET_UNION_CREATE_REVISION;
        cmp->create_revision = v;
        break;
    case CAIRN__COMPARE__COMPARE_TARGET__MOD:
        cmp->target_union_case = CAIRN__COMPARE__TARGET_UNION_MOD_REVISION;
        cmp->mod_revision = v;
        break;
    case CAIRN__COMPARE__COMPARE_TARGET__LEASE:
        cmp->target_union_case = CAIRN__COMPARE__TARGET_UNION_LEASE;
        cmp->lease = v;
        break;
    default:
        return -EINVAL;
    }
    t->req.compare[t->req.n_compare++] = cmp;
    return 0;
}

int cairn_txn_compare_value(struct cairn_txn *t, struct cairn_bytes key,
                            struct cairn_bytes range_end,
                            Cairn__Compare__CompareResult result, struct cairn_bytes value)
{
    Cairn__Compare *cmp;

    if (!t)
        return -EINVAL;
    if (!(cmp = txn_new_compare(t, key, range_end, result)))
        return -ENOMEM;
    cmp->target = CAIRN__COMPARE__COMPARE_TARGET__VALUE;
    cmp->target_union_case = CAIRN__COMPARE__TARGET_UNION_VALUE;
    if (!txn_bytes(t, value, &cmp->value))
        return -ENOMEM;
    t->req.compare[t->req.n_compare++] = cmp;
    return 0;
}

/* A new, empty operation slot on branch b; NULL if out of memory. */
static Cairn__RequestOp *txn_new_op(struct cairn_txn *t, enum cairn_txn_branch b)
{
    Cairn__RequestOp ***arr = b == CAIRN_TXN_SUCCESS ? &t->req.success : &t->req.failure;
    size_t *n = b == CAIRN_TXN_SUCCESS ? &t->req.n_success : &t->req.n_failure;
    size_t *cap = b == CAIRN_TXN_SUCCESS ? &t->cap_success : &t->cap_failure;
    Cairn__RequestOp *op, **a;

    if (!(a = grow(*arr, cap, *n + 1, sizeof(*a))))
        return NULL;
    *arr = a;
    if (!(op = txn_alloc(t, sizeof(*op))))
        return NULL;
    cairn__request_op__init(op);
    return op;
}

static void txn_append(struct cairn_txn *t, enum cairn_txn_branch b, Cairn__RequestOp *op)
{
    if (b == CAIRN_TXN_SUCCESS)
        t->req.success[t->req.n_success++] = op;
    else
        t->req.failure[t->req.n_failure++] = op;
}

int cairn_txn_put(struct cairn_txn *t, enum cairn_txn_branch b, const struct cairn_put *put)
{
    Cairn__RequestOp *op;
    Cairn__PutRequest *p;

    if (!t || !put)
        return -EINVAL;
    if (!(op = txn_new_op(t, b)) || !(p = txn_alloc(t, sizeof(*p))))
        return -ENOMEM;
    cairn__put_request__init(p);
    fill_put(p, put);
    if (!txn_bytes(t, put->key, &p->key) || !txn_bytes(t, put->value, &p->value))
        return -ENOMEM;
    op->request_case = CAIRN__REQUEST_OP__REQUEST_REQUEST_PUT;
    op->request_put = p;
    txn_append(t, b, op);
    return 0;
}

int cairn_txn_range(struct cairn_txn *t, enum cairn_txn_branch b, const struct cairn_range *r)
{
    Cairn__RequestOp *op;
    Cairn__RangeRequest *q;

    if (!t || !r)
        return -EINVAL;
    if (!(op = txn_new_op(t, b)) || !(q = txn_alloc(t, sizeof(*q))))
        return -ENOMEM;
    cairn__range_request__init(q);
    fill_range(q, r);
    if (!txn_bytes(t, r->key, &q->key) || !txn_bytes(t, r->range_end, &q->range_end))
        return -ENOMEM;
    op->request_case = CAIRN__REQUEST_OP__REQUEST_REQUEST_RANGE;
    op->request_range = q;
    txn_append(t, b, op);
    return 0;
}

int cairn_txn_delete(struct cairn_txn *t, enum cairn_txn_branch b, const struct cairn_delete *d)
{
    Cairn__RequestOp *op;
    Cairn__DeleteRangeRequest *q;

    if (!t || !d)
        return -EINVAL;
    if (!(op = txn_new_op(t, b)) || !(q = txn_alloc(t, sizeof(*q))))
        return -ENOMEM;
    cairn__delete_range_request__init(q);
    fill_delete(q, d);
    if (!txn_bytes(t, d->key, &q->key) || !txn_bytes(t, d->range_end, &q->range_end))
        return -ENOMEM;
    op->request_case = CAIRN__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE;
    op->request_delete_range = q;
    txn_append(t, b, op);
    return 0;
}

int cairn_txn_nest(struct cairn_txn *t, enum cairn_txn_branch b, struct cairn_txn *inner)
{
    Cairn__RequestOp *op;
    struct cairn_txn **a;

    if (!t || !inner || inner == t)
        return -EINVAL;
    if (!(a = grow(t->nested, &t->cap_nested, t->n_nested + 1, sizeof(*a))))
        return -ENOMEM;
    t->nested = a;
    if (!(op = txn_new_op(t, b)))
        return -ENOMEM;
    op->request_case = CAIRN__REQUEST_OP__REQUEST_REQUEST_TXN;
    op->request_txn = &inner->req;
    t->nested[t->n_nested++] = inner;
    txn_append(t, b, op);
    return 0;
}

const Cairn__TxnRequest *cairn_txn_request(const struct cairn_txn *t)
{
    return t ? &t->req : NULL;
}

int cairn_txn_commit(struct cairn_client *c, const struct cairn_txn *t,
                     const struct cairn_call_opts *opts, bool *succeeded,
                     Cairn__Response **resp, struct cairn_error_detail *err)
{
    Cairn__Request req = CAIRN__REQUEST__INIT;
    Cairn__Response *r = NULL;
    int rv;

    if (resp)
        *resp = NULL;
    if (!t)
        return -EINVAL;
    req.body_case = CAIRN__REQUEST__BODY_TXN;
    req.txn = (Cairn__TxnRequest *)&t->req; /* packed, never written */
    if ((rv = client_call_expect(c, &req, CAIRN__RESPONSE__BODY_TXN, opts, &r, err)) != 0)
        return rv;
    if (succeeded)
        *succeeded = r->txn->succeeded;
    if (resp)
        *resp = r;
    else
        cairn_response_free(r);
    return 0;
}
