/*
 * cairn-record's load processes: each picks operations by --mix weight over a
 * small key space, writes the invocation, makes one libcairn call, and writes
 * the completion (ok with the result, fail when the call certainly did not
 * take effect, info when its outcome is unknown).  Values are unique per
 * write ("p<P>.<ID>").  Keys "<prefix>kNNN" are read and written by every
 * operation but putl; leased keys "<prefix>lNNN" are written only by putl,
 * so lease expiry never touches what the linearizable reads look at.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "test/jepsen/record.h"

static struct cairn_bytes bytes_of(const char *s)
{
    return (struct cairn_bytes){s, strlen(s)};
}

static int pick_key(struct rec_proc *pr)
{
    return (int)(rec_rand(&pr->rng) % (uint64_t)pr->run->o.keys);
}

static int64_t header_rev(const Cairn__Response *r)
{
    return r && r->header ? r->header->revision : 0;
}

static void set_hint(struct rec_run *run, int k, const char *v)
{
    size_t n = strnlen(v, sizeof run->hint[k] - 1);
    pthread_mutex_lock(&run->hint_mu);
    memcpy(run->hint[k], v, n);
    run->hint[k][n] = '\0';
    pthread_mutex_unlock(&run->hint_mu);
}

static void get_hint(struct rec_run *run, int k, char *out, size_t len)
{
    pthread_mutex_lock(&run->hint_mu);
    snprintf(out, len, "%s", run->hint[k][0] ? run->hint[k] : "~");
    pthread_mutex_unlock(&run->hint_mu);
}

static void hint_from_kv(struct rec_run *run, int k, const Cairn__KeyValue *kv)
{
    char v[48];
    if (!kv) {
        set_hint(run, k, "~");
        return;
    }
    size_t n = kv->value.len < sizeof v - 1 ? kv->value.len : sizeof v - 1;
    memcpy(v, kv->value.data, n);
    v[n] = '\0';
    set_hint(run, k, v);
}

/* One operation in flight: its ID, and the line of its completion. */
struct call {
    struct rec_proc *pr;
    uint64_t id;
    bool write;
    struct rec_line l;
};

static void begin(struct call *x, struct rec_proc *pr, bool write, const struct rec_line *inv)
{
    x->pr = pr;
    x->write = write;
    x->id = atomic_fetch_add(&pr->run->next_id, 1) + 1;
    rec_write_op(pr->run, "inv", pr->p, x->id, inv->buf);
    rec_line_init(&x->l);
}

static void end_ok(struct call *x)
{
    rec_write_op(x->pr->run, "ok", x->pr->p, x->id, x->l.buf);
    atomic_fetch_add(&x->pr->run->n_ok, 1);
}

/* A failed call: reads never took effect; a write only if rec_write_not_applied says so. */
static void end_err(struct call *x, int rc)
{
    char word[64];
    rec_code_word(rc, word, sizeof word);
    bool certain = !x->write || rec_write_not_applied(rc);
    rec_write_op(x->pr->run, certain ? "fail" : "info", x->pr->p, x->id, word);
    atomic_fetch_add(certain ? &x->pr->run->n_fail : &x->pr->run->n_info, 1);
    if (!certain) {
        /*
         * Jepsen's rule: the unknown operation may still take effect at any
         * later time, so the process that made it never completes; this
         * thread goes on as a new process (one operation at a time each).
         */
        struct rec_proc *pr = x->pr;
        const struct rec_opts *o = &pr->run->o;
        pr->p += o->processes;
        if (pr->pin >= 0)
            rec_writef(pr->run, "meta pin %d %s", pr->p, o->n_names ? o->names[pr->pin] : o->endpoints[pr->pin]);
    }
}

static void new_value(struct rec_proc *pr, char *v, size_t len)
{
    snprintf(v, len, "p%d.%" PRIu64, pr->p, ++pr->seq);
}

static struct cairn_call_opts call_opts(const struct rec_proc *pr)
{
    return (struct cairn_call_opts){.timeout_ms = pr->run->o.timeout_ms};
}

/* ------------------------------------------------------------------ operations */

static void do_put(struct rec_proc *pr)
{
    struct rec_run *run = pr->run;
    int k = pick_key(pr);
    char v[48];
    struct rec_line inv;
    struct call x;
    new_value(pr, v, sizeof v);
    rec_line_init(&inv);
    rec_line_addf(&inv, "put %s %s", run->key_names[k], v);
    struct cairn_put put = {.key = bytes_of(run->key_names[k]), .value = bytes_of(v)};
    struct cairn_call_opts opts = call_opts(pr);
    Cairn__Response *resp = NULL;
    begin(&x, pr, true, &inv);
    int rc = cairn_put(pr->c, &put, &opts, &resp, NULL);
    if (rc) {
        end_err(&x, rc);
        return;
    }
    rec_line_addf(&x.l, "%" PRId64, header_rev(resp));
    end_ok(&x);
    rec_note_rev(run, header_rev(resp));
    set_hint(run, k, v);
    cairn_response_free(resp);
}

/* get and sget: a point read, linearizable or serializable on the pinned member. */
static void do_get(struct rec_proc *pr, bool serializable)
{
    struct rec_run *run = pr->run;
    int k = pick_key(pr);
    struct rec_line inv;
    struct call x;
    rec_line_init(&inv);
    rec_line_addf(&inv, "%s %s", serializable ? "sget" : "get", run->key_names[k]);
    struct cairn_range r = {.key = bytes_of(run->key_names[k]), .serializable = serializable};
    struct cairn_call_opts opts = call_opts(pr);
    if (serializable) {
        opts.pinned = true;
        opts.endpoint = (unsigned)pr->pin;
    }
    Cairn__Response *resp = NULL;
    begin(&x, pr, false, &inv);
    int rc = cairn_range_call(pr->c, &r, &opts, &resp, NULL);
    if (rc) {
        end_err(&x, rc);
        return;
    }
    const Cairn__KeyValue *kv = resp->range->n_kvs ? resp->range->kvs[0] : NULL;
    rec_line_addf(&x.l, "%" PRId64, header_rev(resp));
    rec_line_value(&x.l, kv ? kv->value.data : NULL, kv ? kv->value.len : 0, kv != NULL);
    rec_line_addf(&x.l, "%" PRId64, kv ? kv->mod_revision : 0);
    end_ok(&x);
    if (!serializable)
        rec_note_rev(run, header_rev(resp));
    hint_from_kv(run, k, kv);
    cairn_response_free(resp);
}

static void do_del(struct rec_proc *pr)
{
    struct rec_run *run = pr->run;
    int k = pick_key(pr);
    struct rec_line inv;
    struct call x;
    rec_line_init(&inv);
    rec_line_addf(&inv, "del %s", run->key_names[k]);
    struct cairn_delete d = {.key = bytes_of(run->key_names[k])};
    struct cairn_call_opts opts = call_opts(pr);
    Cairn__Response *resp = NULL;
    int64_t deleted = 0;
    begin(&x, pr, true, &inv);
    int rc = cairn_delete_range(pr->c, &d, &opts, &deleted, &resp, NULL);
    if (rc) {
        end_err(&x, rc);
        return;
    }
    rec_line_addf(&x.l, "%" PRId64 " %" PRId64, header_rev(resp), deleted);
    end_ok(&x);
    rec_note_rev(run, header_rev(resp));
    set_hint(run, k, "~");
    cairn_response_free(resp);
}

/* cas K E V: if K's value is E (E "~": K absent) put K V, else read K. */
static void do_cas(struct rec_proc *pr)
{
    struct rec_run *run = pr->run;
    int k = pick_key(pr);
    char v[48], e[48];
    struct rec_line inv;
    struct call x;
    /* Mostly the value last seen (so many succeed), sometimes "absent". */
    if (rec_rand(&pr->rng) % 8 == 0)
        snprintf(e, sizeof e, "~");
    else
        get_hint(run, k, e, sizeof e);
    new_value(pr, v, sizeof v);
    struct cairn_txn *t = cairn_txn_new();
    if (!t)
        return;
    struct cairn_bytes key = bytes_of(run->key_names[k]);
    int rc;
    if (!strcmp(e, "~"))
        rc = cairn_txn_compare_int(t, key, (struct cairn_bytes){0}, CAIRN__COMPARE__COMPARE_TARGET__CREATE,
                                   CAIRN__COMPARE__COMPARE_RESULT__EQUAL, 0);
    else
        rc = cairn_txn_compare_value(t, key, (struct cairn_bytes){0}, CAIRN__COMPARE__COMPARE_RESULT__EQUAL,
                                     bytes_of(e));
    struct cairn_put put = {.key = key, .value = bytes_of(v)};
    struct cairn_range get = {.key = key};
    if (!rc)
        rc = cairn_txn_put(t, CAIRN_TXN_SUCCESS, &put);
    if (!rc)
        rc = cairn_txn_range(t, CAIRN_TXN_FAILURE, &get);
    if (rc) {
        cairn_txn_free(t);
        return;
    }
    rec_line_init(&inv);
    rec_line_addf(&inv, "cas %s %s %s", run->key_names[k], e, v);
    struct cairn_call_opts opts = call_opts(pr);
    Cairn__Response *resp = NULL;
    bool ok = false;
    begin(&x, pr, true, &inv);
    rc = cairn_txn_commit(pr->c, t, &opts, &ok, &resp, NULL);
    cairn_txn_free(t);
    if (rc) {
        end_err(&x, rc);
        return;
    }
    if (ok) {
        rec_line_addf(&x.l, "%" PRId64 " 1", header_rev(resp));
        set_hint(run, k, v);
    } else {
        const Cairn__KeyValue *kv = NULL;
        Cairn__TxnResponse *tr = resp->txn;
        if (tr && tr->n_responses == 1 && tr->responses[0]->response_case == CAIRN__RESPONSE_OP__RESPONSE_RESPONSE_RANGE &&
            tr->responses[0]->response_range->n_kvs)
            kv = tr->responses[0]->response_range->kvs[0];
        rec_line_addf(&x.l, "%" PRId64 " 0", header_rev(resp));
        rec_line_value(&x.l, kv ? kv->value.data : NULL, kv ? kv->value.len : 0, kv != NULL);
        hint_from_kv(run, k, kv);
    }
    end_ok(&x);
    rec_note_rev(run, header_rev(resp));
    cairn_response_free(resp);
}

/*
 * 2 or 3 distinct keys of one group of --group consecutive keys, in
 * increasing order.  Multi-key transactions tie their keys together for the
 * checker (one model search per set of tied keys): groups keep those sets
 * small enough to search.
 */
static int pick_keys(struct rec_proc *pr, int *ks)
{
    const struct rec_opts *o = &pr->run->o;
    int groups = (o->keys + o->group - 1) / o->group;
    int g = (int)(rec_rand(&pr->rng) % (uint64_t)groups);
    int lo = g * o->group, size = o->keys - lo < o->group ? o->keys - lo : o->group;
    int n = 2 + (int)(rec_rand(&pr->rng) % 2);
    if (n > size)
        n = size;
    for (int i = 0; i < n; i++) {
        int k, dup;
        do {
            k = lo + (int)(rec_rand(&pr->rng) % (uint64_t)size);
            dup = 0;
            for (int j = 0; j < i; j++)
                dup |= ks[j] == k;
        } while (dup);
        ks[i] = k;
    }
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && ks[j - 1] > ks[j]; j--) {
            int tmp = ks[j];
            ks[j] = ks[j - 1];
            ks[j - 1] = tmp;
        }
    return n;
}

static void do_mput(struct rec_proc *pr)
{
    struct rec_run *run = pr->run;
    int ks[3];
    char vs[3][48];
    int n = pick_keys(pr, ks);
    struct cairn_txn *t = cairn_txn_new();
    struct rec_line inv;
    struct call x;
    if (!t)
        return;
    rec_line_init(&inv);
    rec_line_addf(&inv, "mput");
    for (int i = 0; i < n; i++) {
        new_value(pr, vs[i], sizeof vs[i]);
        struct cairn_put put = {.key = bytes_of(run->key_names[ks[i]]), .value = bytes_of(vs[i])};
        if (cairn_txn_put(t, CAIRN_TXN_SUCCESS, &put)) {
            cairn_txn_free(t);
            return;
        }
        rec_line_addf(&inv, "%s %s", run->key_names[ks[i]], vs[i]);
    }
    struct cairn_call_opts opts = call_opts(pr);
    Cairn__Response *resp = NULL;
    begin(&x, pr, true, &inv);
    int rc = cairn_txn_commit(pr->c, t, &opts, NULL, &resp, NULL);
    cairn_txn_free(t);
    if (rc) {
        end_err(&x, rc);
        return;
    }
    rec_line_addf(&x.l, "%" PRId64, header_rev(resp));
    end_ok(&x);
    rec_note_rev(run, header_rev(resp));
    for (int i = 0; i < n; i++)
        set_hint(run, ks[i], vs[i]);
    cairn_response_free(resp);
}

static void do_mget(struct rec_proc *pr)
{
    struct rec_run *run = pr->run;
    int ks[3];
    int n = pick_keys(pr, ks);
    struct cairn_txn *t = cairn_txn_new();
    struct rec_line inv;
    struct call x;
    if (!t)
        return;
    rec_line_init(&inv);
    rec_line_addf(&inv, "mget");
    for (int i = 0; i < n; i++) {
        struct cairn_range r = {.key = bytes_of(run->key_names[ks[i]])};
        if (cairn_txn_range(t, CAIRN_TXN_SUCCESS, &r)) {
            cairn_txn_free(t);
            return;
        }
        rec_line_addf(&inv, "%s", run->key_names[ks[i]]);
    }
    struct cairn_call_opts opts = call_opts(pr);
    Cairn__Response *resp = NULL;
    begin(&x, pr, false, &inv);
    int rc = cairn_txn_commit(pr->c, t, &opts, NULL, &resp, NULL);
    cairn_txn_free(t);
    if (rc) {
        end_err(&x, rc);
        return;
    }
    Cairn__TxnResponse *tr = resp->txn;
    if (!tr || tr->n_responses != (size_t)n) {
        end_err(&x, -CAIRN_E_MALFORMED);
        cairn_response_free(resp);
        return;
    }
    rec_line_addf(&x.l, "%" PRId64, header_rev(resp));
    for (int i = 0; i < n; i++) {
        const Cairn__ResponseOp *op = tr->responses[i];
        const Cairn__KeyValue *kv = NULL;
        if (op->response_case == CAIRN__RESPONSE_OP__RESPONSE_RESPONSE_RANGE && op->response_range->n_kvs)
            kv = op->response_range->kvs[0];
        rec_line_value(&x.l, kv ? kv->value.data : NULL, kv ? kv->value.len : 0, kv != NULL);
    }
    end_ok(&x);
    rec_note_rev(run, header_rev(resp));
    cairn_response_free(resp);
}

static void do_range(struct rec_proc *pr)
{
    struct rec_run *run = pr->run;
    int a = pick_key(pr), b = pick_key(pr);
    if (a > b) {
        int tmp = a;
        a = b;
        b = tmp;
    }
    b += 1 + (int)(rec_rand(&pr->rng) % 3); /* [a, b) holds at least one key name */
    char end[64];
    if (b >= run->o.keys)
        snprintf(end, sizeof end, "%skz", run->o.prefix); /* past every key name ('z' > '9') */
    else
        snprintf(end, sizeof end, "%s", run->key_names[b]);
    struct rec_line inv;
    struct call x;
    rec_line_init(&inv);
    rec_line_addf(&inv, "range %s %s", run->key_names[a], b >= run->o.keys ? end : run->key_names[b]);
    struct cairn_range r = {.key = bytes_of(run->key_names[a]), .range_end = bytes_of(end)};
    struct cairn_call_opts opts = call_opts(pr);
    Cairn__Response *resp = NULL;
    begin(&x, pr, false, &inv);
    int rc = cairn_range_call(pr->c, &r, &opts, &resp, NULL);
    if (rc) {
        end_err(&x, rc);
        return;
    }
    rec_line_addf(&x.l, "%" PRId64 " %zu", header_rev(resp), resp->range->n_kvs);
    for (size_t i = 0; i < resp->range->n_kvs; i++) {
        const Cairn__KeyValue *kv = resp->range->kvs[i];
        rec_line_value(&x.l, kv->key.data, kv->key.len, true);
        rec_line_value(&x.l, kv->value.data, kv->value.len, true);
    }
    end_ok(&x);
    rec_note_rev(run, header_rev(resp));
    cairn_response_free(resp);
}

/* ------------------------------------------------------------------ leases */

static void lease_grant(struct rec_proc *pr)
{
    int64_t ttl = 2 + (int64_t)(rec_rand(&pr->rng) % 4), id = 0, granted = 0;
    struct rec_line inv;
    struct call x;
    rec_line_init(&inv);
    rec_line_addf(&inv, "grant %" PRId64, ttl);
    struct cairn_call_opts opts = call_opts(pr);
    begin(&x, pr, true, &inv);
    int rc = cairn_lease_grant(pr->c, ttl, 0, &opts, &id, &granted, NULL);
    if (rc) {
        end_err(&x, rc);
        return;
    }
    rec_line_addf(&x.l, "%" PRId64 " %" PRId64, id, granted);
    end_ok(&x);
    pr->lease = id;
}

static void lease_keepalive(struct rec_proc *pr)
{
    struct rec_line inv;
    struct call x;
    int64_t ttl = 0;
    rec_line_init(&inv);
    rec_line_addf(&inv, "keepalive %" PRId64, pr->lease);
    struct cairn_call_opts opts = call_opts(pr);
    begin(&x, pr, true, &inv);
    int rc = cairn_lease_keepalive(pr->c, pr->lease, &opts, &ttl, NULL);
    if (rc == -CAIRN_E_LEASE_NOT_FOUND) {
        rc = 0; /* the format's "0 = the lease is gone" */
        ttl = 0;
    }
    if (rc) {
        end_err(&x, rc);
        return;
    }
    rec_line_addf(&x.l, "%" PRId64, ttl);
    end_ok(&x);
    if (ttl == 0)
        pr->lease = 0;
}

static void lease_put(struct rec_proc *pr)
{
    struct rec_run *run = pr->run;
    int k = (int)(rec_rand(&pr->rng) % (uint64_t)run->n_lease_keys);
    char v[48];
    struct rec_line inv;
    struct call x;
    new_value(pr, v, sizeof v);
    rec_line_init(&inv);
    rec_line_addf(&inv, "putl %s %s %" PRId64, run->lease_key_names[k], v, pr->lease);
    struct cairn_put put = {.key = bytes_of(run->lease_key_names[k]), .value = bytes_of(v), .lease = pr->lease};
    struct cairn_call_opts opts = call_opts(pr);
    Cairn__Response *resp = NULL;
    begin(&x, pr, true, &inv);
    int rc = cairn_put(pr->c, &put, &opts, &resp, NULL);
    if (rc) {
        end_err(&x, rc);
        if (rc == -CAIRN_E_LEASE_NOT_FOUND)
            pr->lease = 0;
        return;
    }
    rec_line_addf(&x.l, "%" PRId64, header_rev(resp));
    end_ok(&x);
    rec_note_rev(run, header_rev(resp));
    cairn_response_free(resp);
}

static void lease_revoke(struct rec_proc *pr)
{
    struct rec_line inv;
    struct call x;
    rec_line_init(&inv);
    rec_line_addf(&inv, "revoke %" PRId64, pr->lease);
    Cairn__LeaseRevokeRequest body = CAIRN__LEASE_REVOKE_REQUEST__INIT;
    Cairn__Request req = CAIRN__REQUEST__INIT;
    body.id = pr->lease;
    req.body_case = CAIRN__REQUEST__BODY_LEASE_REVOKE;
    req.lease_revoke = &body;
    struct cairn_call_opts opts = call_opts(pr);
    Cairn__Response *resp = NULL;
    begin(&x, pr, true, &inv);
    int rc = cairn_call(pr->c, &req, &opts, &resp, NULL);
    pr->lease = 0; /* revoked, gone, or unknown: this process leaves it alone now */
    if (rc) {
        end_err(&x, rc);
        return;
    }
    rec_line_addf(&x.l, "%" PRId64, header_rev(resp));
    end_ok(&x);
    rec_note_rev(pr->run, header_rev(resp));
    cairn_response_free(resp);
}

/* A lease operation: grant when the process holds none, else putl (most), keepalive or revoke. */
static void do_lease(struct rec_proc *pr)
{
    if (!pr->lease) {
        lease_grant(pr);
        return;
    }
    unsigned r = (unsigned)(rec_rand(&pr->rng) % 8);
    if (r < 4)
        lease_put(pr);
    else if (r < 7)
        lease_keepalive(pr);
    else
        lease_revoke(pr);
}

/* ------------------------------------------------------------------ the loop */

static bool more(struct rec_proc *pr)
{
    struct rec_run *run = pr->run;
    if (atomic_load(&run->stop))
        return false;
    if (run->deadline_ns && rec_now_ns() >= run->deadline_ns)
        return false;
    if (run->o.ops && atomic_fetch_add(&run->issued, 1) >= run->o.ops)
        return false;
    return true;
}

void *rec_process(void *arg)
{
    struct rec_proc *pr = arg;
    const unsigned *w = pr->run->o.weights;
    unsigned total = 0;
    for (int i = 0; i < OP_COUNT; i++)
        total += w[i];
    while (more(pr)) {
        unsigned r = (unsigned)(rec_rand(&pr->rng) % total);
        int op = 0;
        while (r >= w[op]) {
            r -= w[op];
            op++;
        }
        switch (op) {
        case OP_PUT: do_put(pr); break;
        case OP_GET: do_get(pr, false); break;
        case OP_SGET: do_get(pr, true); break;
        case OP_DEL: do_del(pr); break;
        case OP_CAS: do_cas(pr); break;
        case OP_MPUT: do_mput(pr); break;
        case OP_MGET: do_mget(pr); break;
        case OP_RANGE: do_range(pr); break;
        case OP_LEASE: do_lease(pr); break;
        default: break;
        }
    }
    return NULL;
}
