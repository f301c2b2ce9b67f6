/*
 * daemon/kvconv: every API-layer check with the message it gives, and round
 * trips of real writes: RaftRequest protobuf -> packed entry -> mvcc_request
 * -> mvcc_apply on a store in a temporary directory -> Response protobuf ->
 * packed -> unpacked and checked field by field.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "base/errors.h"
#include "daemon/kvconv.h"
#include "storage/mvcc.h"

/* --- building requests ------------------------------------------------------ */

/* Everything a test builds lives here; freed by the teardown. */
static struct kvconv_arena ta;

static void *talloc(size_t n)
{
    void *p = kvconv_arena_alloc(&ta, n);
    assert_non_null(p);
    memset(p, 0, n);
    return p;
}

/* A range_end of one zero byte: every key from key on. */
static const char FROM_KEY[] = "";

static ProtobufCBinaryData bin(const char *s)
{
    if (s == FROM_KEY)
        return (ProtobufCBinaryData){1, (uint8_t *)FROM_KEY};
    return (ProtobufCBinaryData){s ? strlen(s) : 0, (uint8_t *)s};
}

static ProtobufCBinaryData binn(const void *p, size_t n)
{
    return (ProtobufCBinaryData){n, (uint8_t *)p};
}

static Cairn__RangeRequest *mk_range(const char *k, const char *end)
{
    Cairn__RangeRequest *r = talloc(sizeof(*r));
    cairn__range_request__init(r);
    r->key = bin(k);
    r->range_end = bin(end);
    return r;
}

static Cairn__PutRequest *mk_put(const char *k, const char *v)
{
    Cairn__PutRequest *r = talloc(sizeof(*r));
    cairn__put_request__init(r);
    r->key = bin(k);
    r->value = bin(v);
    return r;
}

static Cairn__DeleteRangeRequest *mk_del(const char *k, const char *end)
{
    Cairn__DeleteRangeRequest *r = talloc(sizeof(*r));
    cairn__delete_range_request__init(r);
    r->key = bin(k);
    r->range_end = bin(end);
    return r;
}

static Cairn__Compare *mk_cmp(const char *k, Cairn__Compare__CompareTarget target,
                              Cairn__Compare__CompareResult result, int64_t n, const char *value)
{
    Cairn__Compare *c = talloc(sizeof(*c));
    cairn__compare__init(c);
    c->key = bin(k);
    c->target = target;
    c->result = result;
    c->target_union_case = (Cairn__Compare__TargetUnionCase)(CAIRN__COMPARE__TARGET_UNION_VERSION + target);
    switch (target) {
    case CAIRN__COMPARE__COMPARE_TARGET__VERSION:
        c->version = n;
        break;
    case CAIRN__COMPARE__COMPARE_TARGET__CREATE:
        c->create_revision = n;
        break;
    case CAIRN__COMPARE__COMPARE_TARGET__MOD:
        c->mod_revision = n;
        break;
    case CAIRN__COMPARE__COMPARE_TARGET__VALUE:
        c->value = bin(value);
        break;
    default:
        c->lease = n;
    }
    return c;
}

#define EQ CAIRN__COMPARE__COMPARE_RESULT__EQUAL
#define GT CAIRN__COMPARE__COMPARE_RESULT__GREATER
#define T_VERSION CAIRN__COMPARE__COMPARE_TARGET__VERSION
#define T_CREATE CAIRN__COMPARE__COMPARE_TARGET__CREATE
#define T_MOD CAIRN__COMPARE__COMPARE_TARGET__MOD
#define T_VALUE CAIRN__COMPARE__COMPARE_TARGET__VALUE
#define T_LEASE CAIRN__COMPARE__COMPARE_TARGET__LEASE

static Cairn__RequestOp *op_new(Cairn__RequestOp__RequestCase c, void *body)
{
    Cairn__RequestOp *op = talloc(sizeof(*op));
    cairn__request_op__init(op);
    op->request_case = c;
    op->request_put = body; /* every member of the union is a pointer */
    return op;
}

static Cairn__RequestOp *op_put(const char *k, const char *v)
{
    return op_new(CAIRN__REQUEST_OP__REQUEST_REQUEST_PUT, mk_put(k, v));
}

static Cairn__RequestOp *op_del(const char *k, const char *end)
{
    return op_new(CAIRN__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE, mk_del(k, end));
}

static Cairn__RequestOp *op_range(const char *k, const char *end)
{
    return op_new(CAIRN__REQUEST_OP__REQUEST_REQUEST_RANGE, mk_range(k, end));
}

/* NULL-terminated lists, copied into the test arena. */
#define OPS(...) ((Cairn__RequestOp *[]){__VA_ARGS__, NULL})
#define CMPS(...) ((Cairn__Compare *[]){__VA_ARGS__, NULL})

static void **list_copy(void **l, size_t *n)
{
    *n = 0;
    while (l && l[*n])
        (*n)++;
    if (*n == 0)
        return NULL;
    void **c = talloc(*n * sizeof(*c));
    memcpy(c, l, *n * sizeof(*c));
    return c;
}

static Cairn__TxnRequest *mk_txn(Cairn__Compare **c, Cairn__RequestOp **s, Cairn__RequestOp **f)
{
    Cairn__TxnRequest *t = talloc(sizeof(*t));
    cairn__txn_request__init(t);
    t->compare = (Cairn__Compare **)list_copy((void **)c, &t->n_compare);
    t->success = (Cairn__RequestOp **)list_copy((void **)s, &t->n_success);
    t->failure = (Cairn__RequestOp **)list_copy((void **)f, &t->n_failure);
    return t;
}

static Cairn__RequestOp *op_txn(Cairn__TxnRequest *t)
{
    return op_new(CAIRN__REQUEST_OP__REQUEST_REQUEST_TXN, t);
}

/* A txn whose success list is n puts of distinct keys (prefix%d), for counting. */
static Cairn__TxnRequest *txn_of_puts(const char *prefix, size_t n)
{
    Cairn__TxnRequest *t = talloc(sizeof(*t));
    cairn__txn_request__init(t);
    t->n_success = n;
    t->success = talloc(n * sizeof(*t->success));
    for (size_t i = 0; i < n; i++) {
        char *k = talloc(32);
        snprintf(k, 32, "%s%zu", prefix, i);
        t->success[i] = op_put(k, "v");
    }
    return t;
}

static Cairn__Request *req_new(Cairn__Request__BodyCase c, void *body)
{
    Cairn__Request *r = talloc(sizeof(*r));
    cairn__request__init(r);
    r->body_case = c;
    r->range = body;
    return r;
}

#define REQ_TXN(t) req_new(CAIRN__REQUEST__BODY_TXN, (t))
#define REQ_PUT(p) req_new(CAIRN__REQUEST__BODY_PUT, (p))
#define REQ_RANGE(p) req_new(CAIRN__REQUEST__BODY_RANGE, (p))

/* --- checking validation ------------------------------------------------------------------- */

static char last_msg[512];

/* kvconv_validate(r) returns -code and its message holds every string given. */
static void expect_fail_(const char *file, int line, const Cairn__Request *r,
                         const struct kvconv_limits *lim, int code, ...)
{
    int rc = kvconv_validate(r, lim, last_msg, sizeof(last_msg));
    if (rc != -code) {
        print_error("%s:%d: expected %s, got %s: %s\n", file, line, cairn_errname(code),
                    cairn_errname(rc), last_msg);
        fail();
    }
    if (strncmp(last_msg, cairn_strerror(code), strlen(cairn_strerror(code))) != 0) {
        print_error("%s:%d: message does not start with the code's text: %s\n", file, line,
                    last_msg);
        fail();
    }
    va_list ap;
    va_start(ap, code);
    for (const char *s = va_arg(ap, const char *); s; s = va_arg(ap, const char *)) {
        if (!strstr(last_msg, s)) {
            print_error("%s:%d: message lacks '%s': %s\n", file, line, s, last_msg);
            va_end(ap);
            fail();
        }
    }
    va_end(ap);
}
#define expect_fail(r, lim, code, ...) expect_fail_(__FILE__, __LINE__, r, lim, code, __VA_ARGS__, NULL)

static void expect_ok_(const char *file, int line, const Cairn__Request *r,
                       const struct kvconv_limits *lim)
{
    int rc = kvconv_validate(r, lim, last_msg, sizeof(last_msg));
    if (rc != 0) {
        print_error("%s:%d: expected success, got %s: %s\n", file, line, cairn_errname(rc), last_msg);
        fail();
    }
}
#define expect_ok(r, lim) expect_ok_(__FILE__, __LINE__, r, lim)

static int arena_setup(void **state)
{
    (void)state;
    kvconv_arena_init(&ta);
    return 0;
}

static int arena_teardown(void **state)
{
    (void)state;
    kvconv_arena_free(&ta);
    return 0;
}

/* --- validation -------------------------------------------------------------------------------- */

static void test_well_formed_requests_pass(void **state)
{
    (void)state;
    expect_ok(REQ_RANGE(mk_range("a", "b")), NULL);
    expect_ok(REQ_PUT(mk_put("a", "1")), NULL);
    Cairn__PutRequest *p = mk_put("a", NULL);
    p->ignore_value = p->ignore_lease = 1;
    expect_ok(REQ_PUT(p), NULL);
    expect_ok(req_new(CAIRN__REQUEST__BODY_DELETE_RANGE, mk_del("a", FROM_KEY)), NULL);
    Cairn__TxnRequest *t = mk_txn(
        CMPS(mk_cmp("a", T_VERSION, EQ, 0, NULL), mk_cmp("a", T_CREATE, EQ, 1, NULL),
             mk_cmp("a", T_MOD, GT, 1, NULL), mk_cmp("a", T_VALUE, EQ, 0, "x"),
             mk_cmp("a", T_LEASE, EQ, 0, NULL)),
        OPS(op_put("a", "1"), op_range("a", NULL),
            op_txn(mk_txn(NULL, OPS(op_put("b", "1")), OPS(op_put("b", "2"))))),
        OPS(op_del("a", NULL)));
    expect_ok(REQ_TXN(t), NULL);
    /* requests kvconv does not look into pass */
    Cairn__StatusRequest st = CAIRN__STATUS_REQUEST__INIT;
    expect_ok(req_new(CAIRN__REQUEST__BODY_STATUS, &st), NULL);
    assert_string_equal(last_msg, "");
}

static void test_empty_key_is_refused_with_where(void **state)
{
    (void)state;
    expect_fail(REQ_RANGE(mk_range("", NULL)), NULL, CAIRN_E_KEY_EMPTY, "range");
    expect_fail(REQ_PUT(mk_put("", "v")), NULL, CAIRN_E_KEY_EMPTY, "put");
    expect_fail(req_new(CAIRN__REQUEST__BODY_DELETE_RANGE, mk_del("", "z")), NULL,
                CAIRN_E_KEY_EMPTY, "delete-range");
    expect_fail(REQ_TXN(mk_txn(CMPS(mk_cmp("a", T_VERSION, EQ, 0, NULL),
                                    mk_cmp("", T_VERSION, EQ, 0, NULL)),
                               NULL, NULL)),
                NULL, CAIRN_E_KEY_EMPTY, "compare at compare[1]");
    expect_fail(REQ_TXN(mk_txn(NULL, OPS(op_put("a", "1")),
                               OPS(op_txn(mk_txn(NULL, NULL, OPS(op_range("b", NULL), op_del("", NULL))))))),
                NULL, CAIRN_E_KEY_EMPTY, "delete-range at failure[0].failure[1]");
    Cairn__HistoryRequest h = CAIRN__HISTORY_REQUEST__INIT;
    expect_fail(req_new(CAIRN__REQUEST__BODY_HISTORY, &h), NULL, CAIRN_E_KEY_EMPTY, "history");
    Cairn__WatchCreateRequest w = CAIRN__WATCH_CREATE_REQUEST__INIT;
    expect_fail(req_new(CAIRN__REQUEST__BODY_WATCH_CREATE, &w), NULL, CAIRN_E_KEY_EMPTY, "watch");
}

static void test_ignore_value_and_ignore_lease_refuse_a_value_and_a_lease(void **state)
{
    (void)state;
    Cairn__PutRequest *p = mk_put("k1", "abc");
    p->ignore_value = 1;
    expect_fail(REQ_PUT(p), NULL, CAIRN_E_VALUE_PROVIDED, "put (key \"k1\")", "3-byte value");
    p = mk_put("k2", NULL);
    p->ignore_lease = 1;
    p->lease = 77;
    expect_fail(REQ_PUT(p), NULL, CAIRN_E_LEASE_PROVIDED, "put (key \"k2\")", "lease 77");
    /* the same inside a txn names the op */
    Cairn__RequestOp *op = op_put("k3", "x");
    op->request_put->ignore_value = 1;
    expect_fail(REQ_TXN(mk_txn(NULL, OPS(op_range("a", NULL), op), NULL)), NULL,
                CAIRN_E_VALUE_PROVIDED, "put at success[1] (key \"k3\")");
}

static void test_negative_numbers_are_invalid(void **state)
{
    (void)state;
    Cairn__RangeRequest *r = mk_range("a", NULL);
    r->limit = -1;
    expect_fail(REQ_RANGE(r), NULL, CAIRN_E_INVALID_ARGUMENT, "range (key \"a\")", "limit -1");
    r = mk_range("a", NULL);
    r->revision = -3;
    expect_fail(REQ_RANGE(r), NULL, CAIRN_E_INVALID_ARGUMENT, "revision -3");
    r = mk_range("a", NULL);
    r->max_create_revision = -9;
    expect_fail(REQ_RANGE(r), NULL, CAIRN_E_INVALID_ARGUMENT, "max_create_revision -9");
    r = mk_range("a", NULL);
    r->limit = -2;
    expect_fail(REQ_TXN(mk_txn(NULL, NULL, OPS(op_new(CAIRN__REQUEST_OP__REQUEST_REQUEST_RANGE, r)))),
                NULL, CAIRN_E_INVALID_ARGUMENT, "range at failure[0]", "limit -2");
    Cairn__HistoryRequest h = CAIRN__HISTORY_REQUEST__INIT;
    h.key = bin("h");
    h.after_sub = -1;
    expect_fail(req_new(CAIRN__REQUEST__BODY_HISTORY, &h), NULL, CAIRN_E_INVALID_ARGUMENT,
                "after_sub -1");
    Cairn__WatchCreateRequest w = CAIRN__WATCH_CREATE_REQUEST__INIT;
    w.key = bin("w");
    w.start_revision = -5;
    expect_fail(req_new(CAIRN__REQUEST__BODY_WATCH_CREATE, &w), NULL, CAIRN_E_INVALID_ARGUMENT,
                "start_revision -5");
    Cairn__LeaseGrantRequest g = CAIRN__LEASE_GRANT_REQUEST__INIT;
    g.ttl = -10;
    expect_fail(req_new(CAIRN__REQUEST__BODY_LEASE_GRANT, &g), NULL, CAIRN_E_INVALID_ARGUMENT,
                "negative TTL (-10 s)");
    Cairn__HashKVRequest hk = CAIRN__HASH_KVREQUEST__INIT;
    hk.revision = -1;
    expect_fail(req_new(CAIRN__REQUEST__BODY_HASH_KV, &hk), NULL, CAIRN_E_INVALID_ARGUMENT,
                "revision -1");
}

static void test_unknown_enum_values_are_invalid(void **state)
{
    (void)state;
    Cairn__RangeRequest *r = mk_range("a", NULL);
    r->sort_order = (Cairn__RangeRequest__SortOrder)3;
    expect_fail(REQ_RANGE(r), NULL, CAIRN_E_INVALID_ARGUMENT, "unknown sort_order 3");
    r = mk_range("a", NULL);
    r->sort_target = (Cairn__RangeRequest__SortTarget)5;
    expect_fail(REQ_RANGE(r), NULL, CAIRN_E_INVALID_ARGUMENT, "unknown sort_target 5");
    Cairn__Compare *c = mk_cmp("a", T_VERSION, EQ, 0, NULL);
    c->result = (Cairn__Compare__CompareResult)4;
    expect_fail(REQ_TXN(mk_txn(CMPS(c), NULL, NULL)), NULL, CAIRN_E_INVALID_ARGUMENT,
                "compare at compare[0] (key \"a\")", "unknown result 4");
    c = mk_cmp("a", T_VERSION, EQ, 0, NULL);
    c->target = (Cairn__Compare__CompareTarget)-1;
    expect_fail(REQ_TXN(mk_txn(CMPS(c), NULL, NULL)), NULL, CAIRN_E_INVALID_ARGUMENT,
                "unknown target -1");
    Cairn__WatchCreateRequest w = CAIRN__WATCH_CREATE_REQUEST__INIT;
    Cairn__WatchCreateRequest__FilterType filters[] = {CAIRN__WATCH_CREATE_REQUEST__FILTER_TYPE__NOPUT,
                                                       (Cairn__WatchCreateRequest__FilterType)2};
    w.key = bin("w");
    w.n_filters = 2;
    w.filters = filters;
    expect_fail(req_new(CAIRN__REQUEST__BODY_WATCH_CREATE, &w), NULL, CAIRN_E_INVALID_ARGUMENT,
                "unknown filter 2");
    w.n_filters = 1;
    expect_ok(req_new(CAIRN__REQUEST__BODY_WATCH_CREATE, &w), NULL);
    Cairn__AlarmRequest al = CAIRN__ALARM_REQUEST__INIT;
    al.action = (Cairn__AlarmRequest__AlarmAction)7;
    expect_fail(req_new(CAIRN__REQUEST__BODY_ALARM, &al), NULL, CAIRN_E_INVALID_ARGUMENT,
                "unknown action 7");
    al.action = CAIRN__ALARM_REQUEST__ALARM_ACTION__GET;
    al.alarm = (Cairn__AlarmType)3;
    expect_fail(req_new(CAIRN__REQUEST__BODY_ALARM, &al), NULL, CAIRN_E_INVALID_ARGUMENT,
                "unknown alarm type 3");
    Cairn__Permission perm = CAIRN__PERMISSION__INIT;
    perm.perm_type = (Cairn__Permission__Type)3;
    perm.key = bin("p");
    Cairn__RoleGrantPermissionRequest gp = CAIRN__ROLE_GRANT_PERMISSION_REQUEST__INIT;
    gp.perm = &perm;
    expect_fail(req_new(CAIRN__REQUEST__BODY_ROLE_GRANT_PERMISSION, &gp), NULL,
                CAIRN_E_INVALID_ARGUMENT, "unknown type 3");
    gp.perm = NULL;
    expect_fail(req_new(CAIRN__REQUEST__BODY_ROLE_GRANT_PERMISSION, &gp), NULL,
                CAIRN_E_INVALID_ARGUMENT, "without a permission");
}

static void test_compare_value_must_match_its_target(void **state)
{
    (void)state;
    Cairn__Compare *c = mk_cmp("a", T_MOD, EQ, 5, NULL);
    c->target_union_case = CAIRN__COMPARE__TARGET_UNION_VERSION;
    expect_fail(REQ_TXN(mk_txn(CMPS(c), NULL, NULL)), NULL, CAIRN_E_INVALID_ARGUMENT,
                "target MOD but sets version; set mod_revision");
    c = mk_cmp("a", T_VALUE, EQ, 0, "x");
    c->target_union_case = CAIRN__COMPARE__TARGET_UNION__NOT_SET;
    expect_fail(REQ_TXN(mk_txn(CMPS(mk_cmp("b", T_LEASE, EQ, 0, NULL), c), NULL, NULL)), NULL,
                CAIRN_E_INVALID_ARGUMENT, "compare[1] (key \"a\") has target VALUE but no value",
                "set value");
    c = mk_cmp("a", T_LEASE, EQ, 0, NULL);
    c->target_union_case = (Cairn__Compare__TargetUnionCase)42;
    expect_fail(REQ_TXN(mk_txn(NULL, OPS(op_txn(mk_txn(CMPS(c), NULL, NULL))), NULL)), NULL,
                CAIRN_E_INVALID_ARGUMENT, "success[0].compare[0]", "unknown target_union 42");
}

static void test_txn_op_without_request_is_invalid(void **state)
{
    (void)state;
    Cairn__RequestOp *empty = op_new(CAIRN__REQUEST_OP__REQUEST__NOT_SET, NULL);
    expect_fail(REQ_TXN(mk_txn(NULL, OPS(op_put("a", "1")), OPS(op_range("a", NULL), empty))),
                NULL, CAIRN_E_INVALID_ARGUMENT, "failure[1] carries no request");
    Cairn__RequestOp *null_put = op_new(CAIRN__REQUEST_OP__REQUEST_REQUEST_PUT, NULL);
    expect_fail(REQ_TXN(mk_txn(NULL, OPS(null_put), NULL)), NULL, CAIRN_E_INVALID_ARGUMENT,
                "success[0] carries no request");
    expect_fail(req_new(CAIRN__REQUEST__BODY_TXN, NULL), NULL, CAIRN_E_INVALID_ARGUMENT,
                "txn body is missing");
}

static void test_too_many_txn_ops_counted_as_etcd_3_4(void **state)
{
    (void)state;
    /* each list alone is held to the limit */
    expect_ok(REQ_TXN(txn_of_puts("k", 128)), NULL);
    expect_fail(REQ_TXN(txn_of_puts("k", 129)), NULL, CAIRN_E_TOO_MANY_TXN_OPS,
                "the txn has 129 success operations, over its limit of 128");
    Cairn__TxnRequest *t = txn_of_puts("k", 3);
    t->n_failure = t->n_success;
    t->failure = t->success;
    t->n_success = 0;
    struct kvconv_limits lim = {.max_txn_ops = 2};
    expect_fail(REQ_TXN(t), &lim, CAIRN_E_TOO_MANY_TXN_OPS, "3 failure operations", "limit of 2");
    Cairn__TxnRequest *tc = mk_txn(CMPS(mk_cmp("a", T_VERSION, EQ, 0, NULL),
                                        mk_cmp("b", T_VERSION, EQ, 0, NULL),
                                        mk_cmp("c", T_VERSION, EQ, 0, NULL)),
                                   NULL, NULL);
    expect_fail(REQ_TXN(tc), &lim, CAIRN_E_TOO_MANY_TXN_OPS, "3 compares");

    /* a nested txn's limit is its parent's less the parent's largest list */
    Cairn__TxnRequest *inner = txn_of_puts("in", 64);
    Cairn__TxnRequest *outer = txn_of_puts("out", 64);
    outer->success[63] = op_txn(inner);
    expect_ok(REQ_TXN(outer), NULL);
    outer->success[63] = op_txn(txn_of_puts("in", 65));
    expect_fail(REQ_TXN(outer), NULL, CAIRN_E_TOO_MANY_TXN_OPS,
                "the txn at success[63] has 65 success operations, over its limit of 64",
                "--max-txn-ops 128 less 64");
    /* compares count in the parent's largest list too */
    lim.max_txn_ops = 5;
    Cairn__TxnRequest *p3 = mk_txn(CMPS(mk_cmp("a", T_VERSION, EQ, 0, NULL),
                                        mk_cmp("b", T_VERSION, EQ, 0, NULL),
                                        mk_cmp("c", T_VERSION, EQ, 0, NULL)),
                                   OPS(op_txn(txn_of_puts("n", 2))), NULL);
    expect_ok(REQ_TXN(p3), &lim);
    p3->success[0] = op_txn(txn_of_puts("n", 3));
    expect_fail(REQ_TXN(p3), &lim, CAIRN_E_TOO_MANY_TXN_OPS, "success[0] has 3", "limit of 2");
}

static void test_duplicate_keys_as_etcd_check_intervals(void **state)
{
    (void)state;
    /* put vs put in one list */
    expect_fail(REQ_TXN(mk_txn(NULL, OPS(op_put("a", "1"), op_range("a", NULL), op_put("a", "2")), NULL)),
                NULL, CAIRN_E_DUPLICATE_KEY, "key \"a\" is put at success[0] and at success[2]");
    /* the two branches of the top txn are checked apart */
    expect_ok(REQ_TXN(mk_txn(NULL, OPS(op_put("a", "1")), OPS(op_put("a", "2"), op_del("b", NULL)))), NULL);
    /* put vs delete of the single key, of a range, of every key from */
    expect_fail(REQ_TXN(mk_txn(NULL, OPS(op_del("a", NULL), op_put("a", "1")), NULL)), NULL,
                CAIRN_E_DUPLICATE_KEY, "key \"a\" is put at success[1] and deleted by the delete-range at success[0]");
    expect_fail(REQ_TXN(mk_txn(NULL, NULL, OPS(op_put("m", "1"), op_del("a", "z")))), NULL,
                CAIRN_E_DUPLICATE_KEY, "delete-range at failure[1] of \"a\" up to \"z\"");
    expect_fail(REQ_TXN(mk_txn(NULL, OPS(op_put("zz", "1"), op_del("b", FROM_KEY)), NULL)), NULL,
                CAIRN_E_DUPLICATE_KEY, "of \"b\" and every key after");
    /* ranges that miss: end excluded, empty range, below from-key */
    expect_ok(REQ_TXN(mk_txn(NULL, OPS(op_put("z", "1"), op_del("c", "z"), op_put("b", "1"),
                                       op_del("q", "c"), op_put("a0", "1"), op_del("zz", FROM_KEY)),
                             NULL)),
              NULL);
    /* then vs else of one nested txn: only one runs */
    Cairn__TxnRequest *n1 = mk_txn(NULL, OPS(op_put("k", "1")), OPS(op_put("k", "2"), op_del("j", NULL)));
    expect_ok(REQ_TXN(mk_txn(NULL, OPS(op_txn(n1)), NULL)), NULL);
    /* nested put vs an outer put, in either order */
    expect_fail(REQ_TXN(mk_txn(NULL, OPS(op_put("k", "0"), op_txn(n1)), NULL)), NULL,
                CAIRN_E_DUPLICATE_KEY, "key \"k\" is put at success[0] and at success[1].");
    expect_fail(REQ_TXN(mk_txn(NULL, OPS(op_txn(n1), op_put("k", "0")), NULL)), NULL,
                CAIRN_E_DUPLICATE_KEY, "key \"k\"", "success[1]");
    /* nested put vs an outer delete */
    expect_fail(REQ_TXN(mk_txn(NULL, OPS(op_txn(n1), op_del("a", "z")), NULL)), NULL,
                CAIRN_E_DUPLICATE_KEY, "is put at success[0].success[0]", "delete-range at success[1]");
    /* puts in two sibling nested txns, from their else branches */
    Cairn__TxnRequest *n2 = mk_txn(NULL, OPS(op_put("x", "1")), OPS(op_put("k", "3")));
    expect_fail(REQ_TXN(mk_txn(NULL, OPS(op_txn(n1), op_txn(n2)), NULL)), NULL,
                CAIRN_E_DUPLICATE_KEY, "key \"k\"", "success[1].failure[0]");
    /* a delete in an earlier nested txn vs a put in a later one */
    Cairn__TxnRequest *d1 = mk_txn(NULL, NULL, OPS(op_del("k", NULL)));
    expect_fail(REQ_TXN(mk_txn(NULL, OPS(op_txn(d1), op_txn(n1)), NULL)), NULL,
                CAIRN_E_DUPLICATE_KEY, "deleted by the delete-range at success[0].failure[0]");
    /* etcd's asymmetry, kept so the check agrees with mvcc_apply: a put in an
     * earlier nested txn vs a delete in a later one passes */
    expect_ok(REQ_TXN(mk_txn(NULL, OPS(op_txn(n1), op_txn(d1)), NULL)), NULL);
    /* deeper: conflicts found inside a nested branch name the full path */
    Cairn__TxnRequest *deep = mk_txn(NULL, NULL, OPS(op_txn(mk_txn(NULL, OPS(op_put("d", "1"), op_del("c", "e")), NULL))));
    expect_fail(REQ_TXN(mk_txn(NULL, OPS(op_range("a", NULL), op_txn(deep)), NULL)), NULL,
                CAIRN_E_DUPLICATE_KEY, "success[1].failure[0].success[0]",
                "success[1].failure[0].success[1]");
}

/* Many puts against many deletes, all legal: the check is not quadratic. */
static void test_duplicate_key_check_handles_big_txns(void **state)
{
    (void)state;
    enum { N = 20000 };
    Cairn__TxnRequest *puts = txn_of_puts("p", N);
    Cairn__TxnRequest *dels = talloc(sizeof(*dels));
    cairn__txn_request__init(dels);
    dels->n_failure = N;
    dels->failure = talloc(N * sizeof(*dels->failure));
    for (size_t i = 0; i < N; i++) {
        char *k = talloc(32);
        snprintf(k, 32, "p%zu", i);
        dels->failure[i] = op_del(k, NULL);
    }
    /* puts in success, deletes of the same keys in failure of one nested txn */
    puts->n_failure = dels->n_failure;
    puts->failure = dels->failure;
    Cairn__TxnRequest *top = mk_txn(NULL, OPS(op_txn(puts), op_range("a", NULL)), NULL);
    struct kvconv_limits lim = {.max_txn_ops = 2 * N, .max_request_bytes = 64 << 20};
    expect_ok(REQ_TXN(top), &lim);
    /* one real conflict among them is still found */
    top = mk_txn(NULL, OPS(op_txn(puts), op_put("p12345", "x")), NULL);
    expect_fail(REQ_TXN(top), &lim, CAIRN_E_DUPLICATE_KEY, "key \"p12345\"", "success[1]");
}

static void test_request_over_max_request_bytes_is_too_large(void **state)
{
    (void)state;
    static char big[2 << 20];
    memset(big, 'v', sizeof(big) - 1);
    expect_fail(REQ_PUT(mk_put("a", big)), NULL, CAIRN_E_REQUEST_TOO_LARGE, "over the limit of 1572864",
                "--max-request-bytes");
    struct kvconv_limits lim = {.max_request_bytes = 3 << 20};
    expect_ok(REQ_PUT(mk_put("a", big)), &lim);
    lim.max_request_bytes = 10;
    expect_fail(REQ_PUT(mk_put("a", "0123456789")), &lim, CAIRN_E_REQUEST_TOO_LARGE, "the request is 17 bytes");
    /* the size as received, when given, is the one judged (the daemon's: no second packing) */
    lim = (struct kvconv_limits){.max_request_bytes = 100, .wire_bytes = 101};
    expect_fail(REQ_PUT(mk_put("a", "v")), &lim, CAIRN_E_REQUEST_TOO_LARGE, "the request is 101 bytes");
    lim.wire_bytes = 100;
    expect_ok(REQ_PUT(mk_put("a", "v")), &lim);
}

/* Prepend a length-delimited field (tag, length) before the len bytes at *p. */
static size_t wrap_field(uint8_t **p, size_t len, unsigned field)
{
    uint8_t head[16];
    size_t n = 0;
    head[n++] = (uint8_t)(field << 3 | 2);
    for (size_t v = len;; v >>= 7) {
        head[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        if (v <= 0x7f)
            break;
    }
    *p -= n;
    memcpy(*p, head, n);
    return len + n;
}

/*
 * A committed entry is decoded as strictly as a client's request: one whose
 * txns nest 20,000 deep (protobuf-c would recurse through ~32 MiB of stack
 * and crash the applier) is refused with the reason, not decoded.
 */
static void test_entry_nested_too_deep_is_refused(void **state)
{
    (void)state;
    enum { LEVELS = 20000 };
    size_t cap = (size_t)LEVELS * 12 + 64;
    uint8_t *buf = malloc(cap), *p = buf + cap;
    size_t len = 0; /* the innermost TxnRequest is empty */
    for (int i = 0; i < LEVELS; i++) {
        len = wrap_field(&p, len, 4); /* RequestOp.request_txn */
        len = wrap_field(&p, len, 2); /* TxnRequest.success */
    }
    len = wrap_field(&p, len, 12); /* RaftRequest.txn */
    char why[200] = "";
    assert_null(kvconv_entry_unpack(p, len, NULL, why, sizeof why));
    assert_non_null(strstr(why, "nested too deep"));
    free(buf);
    /* and a well-formed entry decodes */
    Cairnint__RaftRequest rr = CAIRNINT__RAFT_REQUEST__INIT;
    Cairn__PutRequest put = CAIRN__PUT_REQUEST__INIT;
    put.key = binn("k", 1);
    rr.request_case = CAIRNINT__RAFT_REQUEST__REQUEST_PUT;
    rr.put = &put;
    rr.id = 7;
    uint8_t out[64];
    size_t n = cairnint__raft_request__pack(&rr, out);
    Cairnint__RaftRequest *back = kvconv_entry_unpack(out, n, NULL, why, sizeof why);
    assert_non_null(back);
    assert_int_equal(back->id, 7);
    cairnint__raft_request__free_unpacked(back, NULL);
    struct kvconv_arena a; /* and into an arena, as the applier does */
    kvconv_arena_init(&a);
    back = kvconv_entry_unpack(out, n, &a, why, sizeof why);
    assert_non_null(back);
    assert_int_equal(back->id, 7);
    assert_int_equal(back->put->key.len, 1);
    kvconv_arena_free(&a);
}

static void test_messages_escape_and_truncate_keys(void **state)
{
    (void)state;
    static const char odd[] = {'a', '"', '\\', 1, (char)0xff, '\n', 'z'};
    Cairn__PutRequest *p = mk_put(NULL, "v");
    p->key = binn(odd, sizeof(odd));
    p->ignore_value = 1;
    expect_fail(REQ_PUT(p), NULL, CAIRN_E_VALUE_PROVIDED, "(key \"a\\\"\\\\\\x01\\xff\\nz\")");
    char longkey[300];
    memset(longkey, 'k', sizeof(longkey));
    p->key = binn(longkey, sizeof(longkey));
    expect_fail(REQ_PUT(p), NULL, CAIRN_E_VALUE_PROVIDED, "kkkk...\" (300 bytes)");
    assert_null(strstr(last_msg, "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk")); /* 65 */
    /* a short buffer is filled and terminated; no buffer at all is fine */
    char small[16];
    memset(small, 'X', sizeof(small));
    assert_int_equal(kvconv_validate(REQ_PUT(p), NULL, small, sizeof(small)), -CAIRN_E_VALUE_PROVIDED);
    assert_int_equal(strlen(small), sizeof(small) - 1);
    assert_int_equal(kvconv_validate(REQ_PUT(p), NULL, NULL, 0), -CAIRN_E_VALUE_PROVIDED);
    char buf[32];
    assert_string_equal(kvconv_escape("a\0b", 3, buf, sizeof(buf)), "\"a\\x00b\"");
}

static void test_request_without_body_is_invalid_or_unsupported(void **state)
{
    (void)state;
    Cairn__Request r = CAIRN__REQUEST__INIT;
    expect_fail(&r, NULL, CAIRN_E_INVALID_ARGUMENT, "no body");
    /* field 127, unknown to this version: a newer client's request type */
    static const uint8_t unknown[] = {0xf8, 0x07, 0x01};
    Cairn__Request *u = cairn__request__unpack(NULL, sizeof unknown, unknown);
    assert_non_null(u);
    expect_fail(u, NULL, CAIRN_E_UNSUPPORTED, "no body this member knows");
    cairn__request__free_unpacked(u, NULL);
    expect_fail(NULL, NULL, CAIRN_E_INVALID_ARGUMENT, "no request");
}

/* --- conversions without a store --------------------------------------------------------------- */

static void test_range_and_history_requests_convert_field_by_field(void **state)
{
    (void)state;
    Cairn__RangeRequest *r = mk_range("a", "b");
    r->limit = 3;
    r->revision = 4;
    r->sort_order = CAIRN__RANGE_REQUEST__SORT_ORDER__DESCEND;
    r->sort_target = CAIRN__RANGE_REQUEST__SORT_TARGET__MOD;
    r->keys_only = 1;
    r->count_only = 1;
    r->min_mod_revision = 5;
    r->max_mod_revision = 6;
    r->min_create_revision = 7;
    r->max_create_revision = 8;
    struct mvcc_range_req m;
    kvconv_range_req(r, &m);
    assert_ptr_equal(m.key.data, r->key.data);
    assert_int_equal(m.key.len, 1);
    assert_ptr_equal(m.range_end.data, r->range_end.data);
    assert_int_equal(m.limit, 3);
    assert_int_equal(m.revision, 4);
    assert_int_equal(m.sort_order, MVCC_SORT_DESCEND);
    assert_int_equal(m.sort_target, MVCC_SORT_MOD);
    assert_true(m.keys_only && m.count_only);
    assert_int_equal(m.min_mod_revision, 5);
    assert_int_equal(m.max_mod_revision, 6);
    assert_int_equal(m.min_create_revision, 7);
    assert_int_equal(m.max_create_revision, 8);

    Cairn__HistoryRequest h = CAIRN__HISTORY_REQUEST__INIT;
    h.key = bin("k");
    h.range_end = bin("l");
    h.min_revision = 2;
    h.max_revision = 9;
    h.limit = 10;
    h.after_revision = 4;
    h.after_sub = 1;
    struct mvcc_history_req mh;
    kvconv_history_req(&h, &mh);
    assert_ptr_equal(mh.key.data, h.key.data);
    assert_int_equal(mh.range_end.len, 1);
    assert_int_equal(mh.min_revision, 2);
    assert_int_equal(mh.max_revision, 9);
    assert_int_equal(mh.limit, 10);
    assert_int_equal(mh.after_main, 4);
    assert_int_equal(mh.after_sub, 1);
}

static void test_entry_req_refuses_what_the_store_does_not_apply(void **state)
{
    (void)state;
    struct kvconv_arena a;
    struct mvcc_request m;
    kvconv_arena_init(&a);
    Cairnint__RaftRequest rr = CAIRNINT__RAFT_REQUEST__INIT;
    assert_int_equal(kvconv_entry_req(&rr, &m, &a), -CAIRN_E_MALFORMED);
    assert_int_equal(m.type, MVCC_REQ_NOOP);
    assert_int_equal(kvconv_entry_req(NULL, &m, &a), -CAIRN_E_MALFORMED);
    /* alarms and membership are no-ops for the store (node observers turn them into records) */
    Cairn__AlarmRequest al = CAIRN__ALARM_REQUEST__INIT;
    rr.request_case = CAIRNINT__RAFT_REQUEST__REQUEST_ALARM;
    rr.alarm = &al;
    m.type = MVCC_REQ_PUT;
    assert_int_equal(kvconv_entry_req(&rr, &m, &a), 0);
    assert_int_equal(m.type, MVCC_REQ_NOOP);
    /* so is auth (daemon/auth.c's before_apply writes its record) */
    Cairn__AuthEnableRequest ae = CAIRN__AUTH_ENABLE_REQUEST__INIT;
    rr.request_case = CAIRNINT__RAFT_REQUEST__REQUEST_AUTH_ENABLE;
    rr.auth_enable = &ae;
    m.type = MVCC_REQ_PUT;
    assert_int_equal(kvconv_entry_req(&rr, &m, &a), 0);
    assert_int_equal(m.type, MVCC_REQ_NOOP);
    /* a txn kvconv_validate would have refused for its shape */
    Cairn__Compare *c = mk_cmp("a", T_MOD, EQ, 1, NULL);
    c->target_union_case = CAIRN__COMPARE__TARGET_UNION_VALUE;
    rr.request_case = CAIRNINT__RAFT_REQUEST__REQUEST_TXN;
    rr.txn = mk_txn(NULL, OPS(op_put("a", "1"), op_txn(mk_txn(CMPS(c), NULL, NULL))), NULL);
    assert_int_equal(kvconv_entry_req(&rr, &m, &a), -CAIRN_E_MALFORMED);
    assert_int_equal(m.type, MVCC_REQ_NOOP);
    rr.txn = mk_txn(NULL, NULL, OPS(op_new(CAIRN__REQUEST_OP__REQUEST__NOT_SET, NULL)));
    assert_int_equal(kvconv_entry_req(&rr, &m, &a), -CAIRN_E_MALFORMED);
    rr.txn = NULL;
    assert_int_equal(kvconv_entry_req(&rr, &m, &a), -CAIRN_E_MALFORMED);

    /* lease checkpoints convert into an array in the arena */
    Cairnint__LeaseCheckpoint cp1 = CAIRNINT__LEASE_CHECKPOINT__INIT, cp2 = CAIRNINT__LEASE_CHECKPOINT__INIT;
    cp1.id = 5;
    cp1.remaining_ttl = 50;
    cp2.id = 6;
    cp2.remaining_ttl = 60;
    Cairnint__LeaseCheckpoint *cps[] = {&cp1, &cp2};
    Cairnint__LeaseCheckpointRequest lc = CAIRNINT__LEASE_CHECKPOINT_REQUEST__INIT;
    lc.n_checkpoints = 2;
    lc.checkpoints = cps;
    rr.request_case = CAIRNINT__RAFT_REQUEST__REQUEST_LEASE_CHECKPOINT;
    rr.lease_checkpoint = &lc;
    assert_int_equal(kvconv_entry_req(&rr, &m, &a), 0);
    assert_int_equal(m.type, MVCC_REQ_LEASE_CHECKPOINT);
    assert_int_equal(m.lease_checkpoint.n, 2);
    assert_int_equal(m.lease_checkpoint.checkpoints[1].id, 6);
    assert_int_equal(m.lease_checkpoint.checkpoints[1].remaining_ttl, 60);
    cps[1] = NULL;
    assert_int_equal(kvconv_entry_req(&rr, &m, &a), -CAIRN_E_MALFORMED);
    kvconv_arena_free(&a);
}

static void test_arena_serves_its_first_kilobyte_inline(void **state)
{
    (void)state;
    struct kvconv_arena a;
    kvconv_arena_init(&a);
    /* a point read's reply fits inside the arena: no malloc */
    char *p = kvconv_arena_alloc(&a, KVCONV_ARENA_INLINE / 2);
    assert_non_null(p);
    assert_true(p >= a.inline_.bytes && p < a.inline_.bytes + KVCONV_ARENA_INLINE);
    assert_int_equal(a.a.n_blocks, 0);
    char *s = kvconv_arena_strdup(&a, "hello");
    assert_string_equal(s, "hello");
    assert_string_equal(kvconv_arena_strdup(&a, NULL), "");
    assert_non_null(kvconv_arena_alloc(&a, KVCONV_ARENA_INLINE)); /* past it: a block */
    assert_int_equal(a.a.n_blocks, 1);
    kvconv_arena_free(&a);
    assert_int_equal(a.a.n_blocks, 0);
    p = kvconv_arena_alloc(&a, 10); /* after a free, inline again */
    assert_true(p >= a.inline_.bytes && p < a.inline_.bytes + KVCONV_ARENA_INLINE);
    kvconv_arena_free(&a);
}

static void test_error_and_header_helpers(void **state)
{
    (void)state;
    struct kvconv_arena a;
    kvconv_arena_init(&a);
    Cairn__Response out = CAIRN__RESPONSE__INIT;
    out.body_case = CAIRN__RESPONSE__BODY_PUT;
    kvconv_error(&out, -CAIRN_E_NO_LEADER, NULL, &a);
    assert_int_equal(out.body_case, CAIRN__RESPONSE__BODY__NOT_SET);
    assert_int_equal(out.error->code, CAIRN_E_NO_LEADER);
    assert_string_equal(out.error->message, cairn_strerror(CAIRN_E_NO_LEADER));
    char msg[] = "temporary";
    kvconv_error(&out, ETIMEDOUT, msg, &a);
    msg[0] = 'X'; /* copied */
    assert_int_equal(out.error->code, ETIMEDOUT);
    assert_string_equal(out.error->message, "temporary");
    kvconv_errorf(&out, CAIRN_E_NOT_FOUND, &a, "watch %d of %s", 7, "conn");
    assert_string_equal(out.error->message, "watch 7 of conn");
    assert_int_equal(kvconv_header(&out, 11, 22, 33, 44, &a), 0);
    assert_int_equal(out.header->cluster_id, 11);
    assert_int_equal(out.header->member_id, 22);
    assert_int_equal(out.header->revision, 33);
    assert_int_equal(out.header->raft_term, 44);
    kvconv_arena_free(&a);
}

/* --- round trips through a real store ------------------------------------------------------------------ */

struct fx {
    char dir[64];
    struct mvcc_store *s;
    struct mvcc_reader *r;
    uint64_t index;
    Cairn__Response *last; /* the last round trip's reply */
};

static int store_setup(void **state)
{
    char err[256];
    struct fx *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    snprintf(f->dir, sizeof(f->dir), "/tmp/test_kvconv.XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    assert_int_equal(mvcc_open(f->dir, NULL, &f->s, err, sizeof(err)), 0);
    assert_int_equal(mvcc_reader_open(f->s, &f->r), 0);
    kvconv_arena_init(&ta);
    *state = f;
    return 0;
}

static int store_teardown(void **state)
{
    struct fx *f = *state;
    char cmd[128];
    if (f->last)
        cairn__response__free_unpacked(f->last, NULL);
    mvcc_reader_close(f->r);
    mvcc_close(f->s);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    kvconv_arena_free(&ta);
    free(f);
    return 0;
}

static Cairnint__RaftRequest *rr_new(Cairnint__RaftRequest__RequestCase c, void *body)
{
    Cairnint__RaftRequest *rr = talloc(sizeof(*rr));
    cairnint__raft_request__init(rr);
    rr->id = 1;
    rr->request_case = c;
    rr->put = body;
    return rr;
}

#define RR_PUT(p) rr_new(CAIRNINT__RAFT_REQUEST__REQUEST_PUT, (p))
#define RR_DEL(d) rr_new(CAIRNINT__RAFT_REQUEST__REQUEST_DELETE_RANGE, (d))
#define RR_TXN(t) rr_new(CAIRNINT__RAFT_REQUEST__REQUEST_TXN, (t))

static Cairnint__RaftRequest *rr_grant(int64_t id, int64_t ttl)
{
    Cairn__LeaseGrantRequest *g = talloc(sizeof(*g));
    cairn__lease_grant_request__init(g);
    g->id = id;
    g->ttl = ttl;
    return rr_new(CAIRNINT__RAFT_REQUEST__REQUEST_LEASE_GRANT, g);
}

static Cairnint__RaftRequest *rr_revoke(int64_t id)
{
    Cairn__LeaseRevokeRequest *g = talloc(sizeof(*g));
    cairn__lease_revoke_request__init(g);
    g->id = id;
    return rr_new(CAIRNINT__RAFT_REQUEST__REQUEST_LEASE_REVOKE, g);
}

static Cairnint__RaftRequest *rr_compact(int64_t rev)
{
    Cairn__CompactionRequest *c = talloc(sizeof(*c));
    cairn__compaction_request__init(c);
    c->revision = rev;
    return rr_new(CAIRNINT__RAFT_REQUEST__REQUEST_COMPACTION, c);
}

/*
 * Apply rr as the next entry, the way the node will: pack it (the log),
 * unpack it, convert, apply, convert the response back, drop the entry (the
 * reply must not borrow from it), pack the reply, free the mvcc result and
 * the arena, unpack the reply.  The reply stays valid until the next call.
 */
static Cairn__Response *roundtrip(struct fx *f, const Cairnint__RaftRequest *rr)
{
    size_t len = cairnint__raft_request__get_packed_size(rr);
    uint8_t *buf = malloc(len + 1);
    assert_non_null(buf);
    assert_int_equal(cairnint__raft_request__pack(rr, buf), len);
    Cairnint__RaftRequest *e = cairnint__raft_request__unpack(NULL, len, buf);
    assert_non_null(e);

    struct kvconv_arena a;
    kvconv_arena_init(&a);
    struct mvcc_entry ent = {.index = ++f->index, .term = 1};
    assert_int_equal(kvconv_entry_req(e, &ent.req, &a), 0);
    struct mvcc_result *res = NULL;
    assert_int_equal(mvcc_apply(f->s, &ent, 1, &res), 0);
    const struct mvcc_response *mr = &res->entries[0].resp;
    Cairn__Response out = CAIRN__RESPONSE__INIT;
    assert_int_equal(kvconv_header(&out, 1, 2, mr->revision, 3, &a), 0);
    assert_int_equal(kvconv_write_resp(e, mr, &out, &a), 0);
    cairnint__raft_request__free_unpacked(e, NULL);
    free(buf);

    len = cairn__response__get_packed_size(&out);
    buf = malloc(len + 1);
    assert_non_null(buf);
    assert_int_equal(cairn__response__pack(&out, buf), len);
    mvcc_result_free(res);
    kvconv_arena_free(&a);
    if (f->last)
        cairn__response__free_unpacked(f->last, NULL);
    f->last = cairn__response__unpack(NULL, len, buf);
    free(buf);
    assert_non_null(f->last);
    assert_non_null(f->last->header);
    assert_int_equal(f->last->header->member_id, 2);
    return f->last;
}

/* A successful reply: no error, the body expected. */
static Cairn__Response *roundtrip_ok(struct fx *f, const Cairnint__RaftRequest *rr,
                                     Cairn__Response__BodyCase body)
{
    Cairn__Response *r = roundtrip(f, rr);
    if (r->error)
        print_error("unexpected error %u: %s\n", r->error->code, r->error->message);
    assert_null(r->error);
    assert_int_equal(r->body_case, body);
    return r;
}

/* A failed reply: code, no body; returns the error. */
static Cairn__Error *reply_error(const Cairn__Response *r, int code)
{
    if (!r->error) {
        print_error("expected %s, got a reply without error\n", cairn_errname(code));
        fail();
    }
    assert_int_equal(r->body_case, CAIRN__RESPONSE__BODY__NOT_SET);
    assert_int_equal(r->error->code, code);
    return r->error;
}

static int64_t put_ok(struct fx *f, const char *k, const char *v, int64_t lease)
{
    Cairn__PutRequest *p = mk_put(k, v);
    p->lease = lease;
    return roundtrip_ok(f, RR_PUT(p), CAIRN__RESPONSE__BODY_PUT)->header->revision;
}

static void assert_bin(ProtobufCBinaryData b, const char *s)
{
    if (b.len != strlen(s) || (b.len && memcmp(b.data, s, b.len) != 0)) {
        print_error("expected \"%s\", got \"%.*s\"\n", s, (int)b.len, (const char *)b.data);
        fail();
    }
}

static void assert_kv(const Cairn__KeyValue *kv, const char *k, const char *v, int64_t create,
                      int64_t mod, int64_t version, int64_t lease)
{
    assert_non_null(kv);
    assert_bin(kv->key, k);
    assert_bin(kv->value, v);
    assert_int_equal(kv->create_revision, create);
    assert_int_equal(kv->mod_revision, mod);
    assert_int_equal(kv->version, version);
    assert_int_equal(kv->lease, lease);
}

static void test_put_with_prev_kv(void **state)
{
    struct fx *f = *state;
    int64_t r1 = put_ok(f, "a", "v1", 0);
    Cairn__PutRequest *p = mk_put("a", "v2");
    p->prev_kv = 1;
    Cairn__Response *r = roundtrip_ok(f, RR_PUT(p), CAIRN__RESPONSE__BODY_PUT);
    assert_int_equal(r->header->revision, r1 + 1);
    assert_kv(r->put->prev_kv, "a", "v1", r1, r1, 1, 0);
    /* without prev_kv, or for a new key, none */
    r = roundtrip_ok(f, RR_PUT(mk_put("a", "v3")), CAIRN__RESPONSE__BODY_PUT);
    assert_null(r->put->prev_kv);
    p = mk_put("new", "x");
    p->prev_kv = 1;
    r = roundtrip_ok(f, RR_PUT(p), CAIRN__RESPONSE__BODY_PUT);
    assert_null(r->put->prev_kv);
}

static void test_delete_range_with_prev_kvs(void **state)
{
    struct fx *f = *state;
    int64_t ra = put_ok(f, "a", "1", 0);
    int64_t rb = put_ok(f, "b", "2", 0);
    put_ok(f, "c", "3", 0);
    Cairn__DeleteRangeRequest *d = mk_del("a", "c");
    d->prev_kv = 1;
    Cairn__Response *r = roundtrip_ok(f, RR_DEL(d), CAIRN__RESPONSE__BODY_DELETE_RANGE);
    assert_int_equal(r->delete_range->deleted, 2);
    assert_int_equal(r->delete_range->n_prev_kvs, 2);
    assert_kv(r->delete_range->prev_kvs[0], "a", "1", ra, ra, 1, 0);
    assert_kv(r->delete_range->prev_kvs[1], "b", "2", rb, rb, 1, 0);
    r = roundtrip_ok(f, RR_DEL(mk_del("c", NULL)), CAIRN__RESPONSE__BODY_DELETE_RANGE);
    assert_int_equal(r->delete_range->deleted, 1);
    assert_int_equal(r->delete_range->n_prev_kvs, 0);
}

static void test_txn_with_every_compare_target_a_nested_txn_and_ranges(void **state)
{
    struct fx *f = *state;
    roundtrip_ok(f, rr_grant(5, 100), CAIRN__RESPONSE__BODY_LEASE_GRANT);
    int64_t ra = put_ok(f, "a", "va", 5);
    int64_t rb = put_ok(f, "b", "vb", 0);
    put_ok(f, "b", "vb", 0); /* b: version 2 */
    int64_t rb2 = rb + 1;

    Cairn__TxnRequest *nested = mk_txn(CMPS(mk_cmp("b", T_VERSION, EQ, 2, NULL)),
                                       OPS(op_put("d", "vd"), op_range("c", NULL)),
                                       OPS(op_del("b", NULL)));
    Cairn__RangeRequest *rng = mk_range("a", "z");
    rng->keys_only = 1;
    Cairn__TxnRequest *t = mk_txn(
        CMPS(mk_cmp("b", T_VERSION, EQ, 2, NULL), mk_cmp("a", T_CREATE, EQ, ra, NULL),
             mk_cmp("b", T_MOD, EQ, rb2, NULL), mk_cmp("b", T_VALUE, EQ, 0, "vb"),
             mk_cmp("a", T_LEASE, EQ, 5, NULL)),
        OPS(op_put("c", "vc"), op_new(CAIRN__REQUEST_OP__REQUEST_REQUEST_RANGE, rng), op_txn(nested)),
        OPS(op_del("a", NULL)));
    expect_ok(REQ_TXN(t), NULL);
    Cairn__Response *r = roundtrip_ok(f, RR_TXN(t), CAIRN__RESPONSE__BODY_TXN);
    int64_t rt = rb2 + 1;
    assert_int_equal(r->header->revision, rt);
    Cairn__TxnResponse *tr = r->txn;
    assert_true(tr->succeeded);
    assert_int_equal(tr->n_responses, 3);
    assert_int_equal(tr->responses[0]->response_case, CAIRN__RESPONSE_OP__RESPONSE_RESPONSE_PUT);
    assert_null(tr->responses[0]->response_put->prev_kv);
    /* the range sees the txn's own put of c, without values */
    assert_int_equal(tr->responses[1]->response_case, CAIRN__RESPONSE_OP__RESPONSE_RESPONSE_RANGE);
    Cairn__RangeResponse *rr = tr->responses[1]->response_range;
    assert_int_equal(rr->n_kvs, 3);
    assert_int_equal(rr->count, 3);
    assert_kv(rr->kvs[0], "a", "", ra, ra, 1, 5);
    assert_kv(rr->kvs[1], "b", "", rb, rb2, 2, 0);
    assert_kv(rr->kvs[2], "c", "", rt, rt, 1, 0);
    /* the nested txn took its success branch: put d, range c */
    assert_int_equal(tr->responses[2]->response_case, CAIRN__RESPONSE_OP__RESPONSE_RESPONSE_TXN);
    Cairn__TxnResponse *nr = tr->responses[2]->response_txn;
    assert_true(nr->succeeded);
    assert_int_equal(nr->n_responses, 2);
    assert_int_equal(nr->responses[0]->response_case, CAIRN__RESPONSE_OP__RESPONSE_RESPONSE_PUT);
    assert_int_equal(nr->responses[1]->response_case, CAIRN__RESPONSE_OP__RESPONSE_RESPONSE_RANGE);
    assert_int_equal(nr->responses[1]->response_range->n_kvs, 1);
    assert_kv(nr->responses[1]->response_range->kvs[0], "c", "vc", rt, rt, 1, 0);

    /* a compare that fails takes the failure branch */
    Cairn__RequestOp *del = op_del("a", NULL);
    del->request_delete_range->prev_kv = 1;
    t = mk_txn(CMPS(mk_cmp("a", T_VALUE, EQ, 0, "other")), OPS(op_put("x", "1")), OPS(del));
    r = roundtrip_ok(f, RR_TXN(t), CAIRN__RESPONSE__BODY_TXN);
    assert_false(r->txn->succeeded);
    assert_int_equal(r->txn->n_responses, 1);
    Cairn__DeleteRangeResponse *dr = r->txn->responses[0]->response_delete_range;
    assert_int_equal(dr->deleted, 1);
    assert_kv(dr->prev_kvs[0], "a", "va", ra, ra, 1, 5);
}

static void test_compaction_and_its_errors(void **state)
{
    struct fx *f = *state;
    put_ok(f, "a", "1", 0);
    put_ok(f, "a", "2", 0);
    int64_t cur = put_ok(f, "a", "3", 0);
    Cairn__Response *r = roundtrip_ok(f, rr_compact(cur - 1), CAIRN__RESPONSE__BODY_COMPACT);
    assert_int_equal(r->header->revision, cur);
    r = roundtrip(f, rr_compact(cur - 2));
    reply_error(r, CAIRN_E_COMPACTED);
    assert_int_equal(r->error->compact_revision, cur - 1);
    char want[128];
    snprintf(want, sizeof(want), "compaction at revision %lld; the store is already compacted at revision %lld",
             (long long)(cur - 2), (long long)(cur - 1));
    assert_non_null(strstr(r->error->message, want));
    r = roundtrip(f, rr_compact(cur + 10));
    reply_error(r, CAIRN_E_FUTURE_REV);
    snprintf(want, sizeof(want), "the current revision is %lld", (long long)cur);
    assert_non_null(strstr(r->error->message, want));
}

static void test_lease_grant_and_revoke(void **state)
{
    struct fx *f = *state;
    Cairn__Response *r = roundtrip_ok(f, rr_grant(42, 30), CAIRN__RESPONSE__BODY_LEASE_GRANT);
    assert_int_equal(r->lease_grant->id, 42);
    assert_int_equal(r->lease_grant->ttl, 30);
    put_ok(f, "leased", "v", 42);
    put_ok(f, "kept", "v", 0);
    r = roundtrip(f, rr_grant(42, 30));
    reply_error(r, CAIRN_E_LEASE_EXISTS);
    assert_non_null(strstr(r->error->message, "lease 42"));
    r = roundtrip(f, rr_grant(0, 30));
    reply_error(r, CAIRN_E_LEASE_NOT_FOUND);
    assert_non_null(strstr(r->error->message, "lease ID 0 cannot be granted"));

    roundtrip_ok(f, rr_revoke(42), CAIRN__RESPONSE__BODY_LEASE_REVOKE);
    struct mvcc_range_req q = {.key = {"a", 1}, .range_end = {"z", 1}};
    struct mvcc_range_result *res;
    assert_int_equal(mvcc_range(f->r, &q, &res, NULL), 0);
    assert_int_equal(res->resp.n_kvs, 1);
    assert_memory_equal(res->resp.kvs[0].key.data, "kept", 4);
    mvcc_range_result_free(res);
    r = roundtrip(f, rr_revoke(42));
    reply_error(r, CAIRN_E_LEASE_NOT_FOUND);
    assert_non_null(strstr(r->error->message, "lease 42"));
}

static void test_put_with_unknown_lease_names_the_lease_and_key(void **state)
{
    struct fx *f = *state;
    int64_t before = put_ok(f, "x", "1", 0);
    Cairn__PutRequest *p = mk_put("my/key", "v");
    p->lease = 99;
    Cairn__Response *r = roundtrip(f, RR_PUT(p));
    reply_error(r, CAIRN_E_LEASE_NOT_FOUND);
    assert_non_null(strstr(r->error->message, cairn_strerror(CAIRN_E_LEASE_NOT_FOUND)));
    assert_non_null(strstr(r->error->message, "lease 99 of the put (key \"my/key\")"));
    assert_bin(r->error->key, "my/key");
    assert_int_equal(r->header->revision, before); /* nothing written */
    p = mk_put("nokey", NULL);
    p->ignore_value = 1;
    r = roundtrip(f, RR_PUT(p));
    reply_error(r, CAIRN_E_KEY_NOT_FOUND);
    assert_non_null(strstr(r->error->message, "put with ignore_value (key \"nokey\")"));
    assert_bin(r->error->key, "nokey");
}

static void test_txn_errors_name_the_op_that_caused_them(void **state)
{
    struct fx *f = *state;
    int64_t cur = put_ok(f, "a", "1", 0);
    /* an unknown lease, in a nested txn */
    Cairn__RequestOp *lp = op_put("leased", "v");
    lp->request_put->lease = 7;
    Cairn__TxnRequest *t = mk_txn(NULL, OPS(op_range("a", NULL), op_txn(mk_txn(NULL, OPS(lp), NULL))), NULL);
    Cairn__Response *r = roundtrip(f, RR_TXN(t));
    reply_error(r, CAIRN_E_LEASE_NOT_FOUND);
    assert_non_null(strstr(r->error->message, "lease 7 of the put at success[1].success[0] (key \"leased\")"));
    assert_bin(r->error->key, "leased");
    /* two suspects: both named, no single key */
    Cairn__RequestOp *lp2 = op_put("other", "v");
    lp2->request_put->lease = 8;
    t = mk_txn(NULL, OPS(lp), OPS(lp2));
    r = roundtrip(f, RR_TXN(t));
    reply_error(r, CAIRN_E_LEASE_NOT_FOUND);
    assert_non_null(strstr(r->error->message, "lease 7 of the put at success[0] (key \"leased\"); or lease 8"));
    assert_int_equal(r->error->key.len, 0);
    /* a range in the future */
    Cairn__RequestOp *fr = op_range("a", NULL);
    fr->request_range->revision = cur + 5;
    r = roundtrip(f, RR_TXN(mk_txn(NULL, OPS(fr), NULL)));
    reply_error(r, CAIRN_E_FUTURE_REV);
    char want[128];
    snprintf(want, sizeof(want), "range at success[0] (key \"a\") at revision %lld; the current revision is %lld",
             (long long)(cur + 5), (long long)cur);
    assert_non_null(strstr(r->error->message, want));
    /* duplicate keys that skipped kvconv_validate are caught by mvcc and named here */
    r = roundtrip(f, RR_TXN(mk_txn(NULL, OPS(op_del("k", "l"), op_put("k1", "v")), NULL)));
    reply_error(r, CAIRN_E_DUPLICATE_KEY);
    assert_non_null(strstr(r->error->message, "key \"k1\" is put at success[1] and deleted by the delete-range at success[0]"));
    assert_bin(r->error->key, "k1");
    /* and a shape error mvcc sees: a put with a value and ignore_value */
    Cairn__RequestOp *iv = op_put("z", "v");
    iv->request_put->ignore_value = 1;
    r = roundtrip(f, RR_TXN(mk_txn(NULL, OPS(iv), NULL)));
    reply_error(r, CAIRN_E_VALUE_PROVIDED);
    assert_non_null(strstr(r->error->message, "put at success[0] (key \"z\") has a 1-byte value"));
}

/* An entry kvconv_entry_req refuses is applied as a no-op; its waiter hears why, not "success". */
static void test_refused_entry_is_answered_malformed_not_success(void **state)
{
    struct fx *f = *state;
    Cairn__Compare *c = mk_cmp("a", T_MOD, EQ, 1, NULL);
    c->target_union_case = CAIRN__COMPARE__TARGET_UNION__NOT_SET;
    Cairnint__RaftRequest *rr = RR_TXN(mk_txn(CMPS(c), OPS(op_put("a", "1")), NULL));
    struct kvconv_arena a;
    kvconv_arena_init(&a);
    struct mvcc_entry e = {.index = ++f->index, .term = 1};
    assert_int_equal(kvconv_entry_req(rr, &e.req, &a), -CAIRN_E_MALFORMED);
    assert_int_equal(e.req.type, MVCC_REQ_NOOP);
    struct mvcc_result *res;
    assert_int_equal(mvcc_apply(f->s, &e, 1, &res), 0);
    Cairn__Response out = CAIRN__RESPONSE__INIT;
    assert_int_equal(kvconv_write_resp(rr, &res->entries[0].resp, &out, &a), 0);
    reply_error(&out, CAIRN_E_MALFORMED);
    assert_non_null(strstr(out.error->message, "the committed txn was not applied"));
    assert_non_null(strstr(out.error->message, "compare at compare[0] (key \"a\") has target MOD but no value"));
    /* a request for another module (a hash report) leaves the reply to that module */
    Cairnint__HashReport hr = CAIRNINT__HASH_REPORT__INIT;
    Cairn__Response out2 = CAIRN__RESPONSE__INIT;
    assert_int_equal(kvconv_write_resp(rr_new(CAIRNINT__RAFT_REQUEST__REQUEST_HASH_REPORT, &hr),
                                       &res->entries[0].resp, &out2, &a), 0);
    assert_null(out2.error);
    assert_int_equal(out2.body_case, CAIRN__RESPONSE__BODY__NOT_SET);
    mvcc_result_free(res);
    kvconv_arena_free(&a);
}

static struct mvcc_response *apply_mvcc(struct fx *f, struct mvcc_request req, struct mvcc_result **res)
{
    struct mvcc_entry e = {.index = ++f->index, .term = 1, .req = req};
    assert_int_equal(mvcc_apply(f->s, &e, 1, res), 0);
    return &(*res)->entries[0].resp;
}

static void mput(struct fx *f, const char *k, const char *v)
{
    struct mvcc_result *res;
    struct mvcc_request req = {.type = MVCC_REQ_PUT, .put = {.key = {k, strlen(k)}, .value = {v, strlen(v)}}};
    assert_int_equal(apply_mvcc(f, req, &res)->err, 0);
    mvcc_result_free(res);
}

/* Pack msg and unpack it again with the given descriptor's unpacker. */
static void *repack(const ProtobufCMessage *msg)
{
    size_t len = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = malloc(len + 1);
    assert_non_null(buf);
    assert_int_equal(protobuf_c_message_pack(msg, buf), len);
    ProtobufCMessage *out = protobuf_c_message_unpack(msg->descriptor, NULL, len, buf);
    free(buf);
    assert_non_null(out);
    return out;
}

static void test_range_and_history_responses_from_real_results(void **state)
{
    struct fx *f = *state;
    mput(f, "k1", "one");
    mput(f, "k2", "two");
    mput(f, "k1", "uno");
    struct mvcc_result *res;
    struct mvcc_request del = {.type = MVCC_REQ_DELETE_RANGE, .del = {.key = {"k2", 2}}};
    apply_mvcc(f, del, &res);
    mvcc_result_free(res);

    struct kvconv_arena a;
    kvconv_arena_init(&a);
    Cairn__RangeRequest *q = mk_range("k", "l");
    struct mvcc_range_req mq;
    struct mvcc_range_result *rr;
    Cairn__RangeResponse out;
    /* plain, at the revision before the delete (the first write is revision 2) */
    q->revision = 4;
    kvconv_range_req(q, &mq);
    assert_int_equal(mvcc_range(f->r, &mq, &rr, NULL), 0);
    assert_int_equal(kvconv_range_resp(&rr->resp, &out, &a), 0);
    Cairn__RangeResponse *u = repack(&out.base);
    mvcc_range_result_free(rr);
    assert_int_equal(u->n_kvs, 2);
    assert_int_equal(u->count, 2);
    assert_kv(u->kvs[0], "k1", "uno", 2, 4, 2, 0);
    assert_kv(u->kvs[1], "k2", "two", 3, 3, 1, 0);
    cairn__range_response__free_unpacked(u, NULL);
    /* keys_only with a limit */
    q->revision = 4;
    q->keys_only = 1;
    q->limit = 1;
    kvconv_range_req(q, &mq);
    assert_int_equal(mvcc_range(f->r, &mq, &rr, NULL), 0);
    assert_int_equal(kvconv_range_resp(&rr->resp, &out, &a), 0);
    u = repack(&out.base);
    mvcc_range_result_free(rr);
    assert_int_equal(u->n_kvs, 1);
    assert_true(u->more);
    assert_int_equal(u->count, 2);
    assert_kv(u->kvs[0], "k1", "", 2, 4, 2, 0);
    cairn__range_response__free_unpacked(u, NULL);
    /* count_only, now */
    q->revision = 0;
    q->keys_only = 0;
    q->limit = 0;
    q->count_only = 1;
    kvconv_range_req(q, &mq);
    assert_int_equal(mvcc_range(f->r, &mq, &rr, NULL), 0);
    assert_int_equal(kvconv_range_resp(&rr->resp, &out, &a), 0);
    u = repack(&out.base);
    mvcc_range_result_free(rr);
    assert_int_equal(u->n_kvs, 0);
    assert_int_equal(u->count, 1);
    cairn__range_response__free_unpacked(u, NULL);

    /* history: every revision with the tombstone, in two pages */
    Cairn__HistoryRequest hq = CAIRN__HISTORY_REQUEST__INIT;
    hq.key = bin("k");
    hq.range_end = bin("l");
    hq.limit = 3;
    struct mvcc_history_req mh;
    struct mvcc_history_result *hr;
    Cairn__HistoryResponse hout;
    kvconv_history_req(&hq, &mh);
    assert_int_equal(mvcc_history(f->r, &mh, &hr), 0);
    assert_int_equal(kvconv_history_resp(hr, false, &hout, &a), 0);
    Cairn__HistoryResponse *h = repack(&hout.base);
    mvcc_history_result_free(hr);
    assert_int_equal(h->n_records, 3);
    assert_true(h->more);
    assert_kv(h->records[0]->kv, "k1", "one", 2, 2, 1, 0);
    assert_kv(h->records[2]->kv, "k1", "uno", 2, 4, 2, 0);
    assert_false(h->records[2]->tombstone);
    hq.after_revision = h->next_revision;
    hq.after_sub = h->next_sub;
    cairn__history_response__free_unpacked(h, NULL);
    kvconv_history_req(&hq, &mh);
    assert_int_equal(mvcc_history(f->r, &mh, &hr), 0);
    assert_int_equal(kvconv_history_resp(hr, true, &hout, &a), 0);
    h = repack(&hout.base);
    mvcc_history_result_free(hr);
    assert_int_equal(h->n_records, 1);
    assert_false(h->more);
    assert_true(h->records[0]->tombstone);
    assert_bin(h->records[0]->kv->key, "k2");
    assert_int_equal(h->records[0]->kv->mod_revision, 5);
    assert_int_equal(h->records[0]->kv->version, 0);
    cairn__history_response__free_unpacked(h, NULL);
    /* keys_only drops history values */
    hq.after_revision = hq.after_sub = 0;
    kvconv_history_req(&hq, &mh);
    assert_int_equal(mvcc_history(f->r, &mh, &hr), 0);
    assert_int_equal(kvconv_history_resp(hr, true, &hout, &a), 0);
    assert_int_equal(hout.records[0]->kv->value.len, 0);
    assert_bin(hout.records[0]->kv->key, "k1");
    mvcc_history_result_free(hr);
    kvconv_arena_free(&a);
}

static void test_events_for_watchers(void **state)
{
    struct fx *f = *state;
    mput(f, "e", "1");
    struct mvcc_result *res;
    struct mvcc_request req = {.type = MVCC_REQ_PUT, .put = {.key = {"e", 1}, .value = {"2", 1}}};
    apply_mvcc(f, req, &res);
    assert_int_equal(res->n_events, 1);
    struct kvconv_arena a;
    kvconv_arena_init(&a);
    Cairn__Event ev;
    assert_int_equal(kvconv_event(&res->events[0], true, &ev, &a), 0);
    Cairn__Event *u = repack(&ev.base);
    assert_int_equal(u->type, CAIRN__EVENT__EVENT_TYPE__PUT);
    assert_kv(u->kv, "e", "2", 2, 3, 2, 0);
    assert_kv(u->prev_kv, "e", "1", 2, 2, 1, 0);
    cairn__event__free_unpacked(u, NULL);
    assert_int_equal(kvconv_event(&res->events[0], false, &ev, &a), 0);
    assert_null(ev.prev_kv);
    mvcc_result_free(res);

    struct mvcc_request del = {.type = MVCC_REQ_DELETE_RANGE, .del = {.key = {"e", 1}}};
    apply_mvcc(f, del, &res);
    assert_int_equal(kvconv_event(&res->events[0], true, &ev, &a), 0);
    u = repack(&ev.base);
    assert_int_equal(u->type, CAIRN__EVENT__EVENT_TYPE__DELETE);
    assert_bin(u->kv->key, "e");
    assert_int_equal(u->kv->mod_revision, 4);
    assert_kv(u->prev_kv, "e", "2", 2, 3, 2, 0);
    cairn__event__free_unpacked(u, NULL);
    Cairn__KeyValue kv;
    kvconv_kv(&res->events[0].kv, &kv);
    assert_ptr_equal(kv.key.data, res->events[0].kv.key.data); /* borrowed */
    mvcc_result_free(res);
    kvconv_arena_free(&a);
}

/* --- the duplicate-key check against mvcc_apply's own ------------------------------------------ */

static uint64_t rng_state;

static uint32_t rnd(uint32_t n)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state % n);
}

static const char *const rkeys[] = {"a", "b", "c", "d", "e"};

static Cairn__TxnRequest *rand_txn(int depth);

static Cairn__RequestOp *rand_op(int depth)
{
    uint32_t r = rnd(10);
    const char *k = rkeys[rnd(5)];
    if (r < 4 || (r >= 8 && depth >= 3))
        return op_put(k, "v");
    if (r < 7) {
        uint32_t e = rnd(4);
        return op_del(k, e == 0 ? NULL : e == 1 ? FROM_KEY : rkeys[rnd(5)]);
    }
    if (r == 7)
        return op_range(k, NULL);
    return op_txn(rand_txn(depth + 1));
}

static Cairn__RequestOp **rand_list(int depth, size_t *n)
{
    *n = rnd(4);
    Cairn__RequestOp **l = *n ? talloc(*n * sizeof(*l)) : NULL;
    for (size_t i = 0; i < *n; i++)
        l[i] = rand_op(depth);
    return l;
}

static Cairn__TxnRequest *rand_txn(int depth)
{
    Cairn__TxnRequest *t = talloc(sizeof(*t));
    cairn__txn_request__init(t);
    t->success = rand_list(depth, &t->n_success);
    t->failure = rand_list(depth, &t->n_failure);
    return t;
}

/*
 * kvconv's checkIntervals (sorted, tagged) and mvcc_apply's (a literal port
 * of etcd's) must agree on every txn, or a request kvconv_validate passes
 * could fail at apply, or the other way round.  Random nested txns over five
 * keys with puts, single, ranged, empty and from-key deletes.
 */
static void test_duplicate_check_agrees_with_mvcc_apply(void **state)
{
    struct fx *f = *state;
    enum { ROUNDS = 20, BATCH = 100 };
    size_t dups = 0, clean = 0;
    rng_state = 0x9e3779b97f4a7c15ull;
    for (int round = 0; round < ROUNDS; round++) {
        struct kvconv_arena a;
        struct mvcc_entry ents[BATCH];
        int verdict[BATCH];
        Cairn__TxnRequest *txns[BATCH];
        kvconv_arena_init(&a);
        for (int i = 0; i < BATCH; i++) {
            txns[i] = rand_txn(0);
            verdict[i] = kvconv_validate(REQ_TXN(txns[i]), NULL, last_msg, sizeof(last_msg));
            assert_true(verdict[i] == 0 || verdict[i] == -CAIRN_E_DUPLICATE_KEY);
            ents[i] = (struct mvcc_entry){.index = ++f->index, .term = 1};
            assert_int_equal(kvconv_entry_req(RR_TXN(txns[i]), &ents[i].req, &a), 0);
        }
        struct mvcc_result *res;
        assert_int_equal(mvcc_apply(f->s, ents, BATCH, &res), 0);
        for (int i = 0; i < BATCH; i++) {
            int err = res->entries[i].resp.err;
            if (err != verdict[i]) {
                Cairn__Request *req = REQ_TXN(txns[i]);
                kvconv_validate(req, NULL, last_msg, sizeof(last_msg));
                print_error("round %d txn %d: kvconv says %s (%s), mvcc_apply %s\n", round, i,
                            cairn_errname(verdict[i]), last_msg, cairn_errname(err));
                fail();
            }
            if (err)
                dups++;
            else
                clean++;
        }
        mvcc_result_free(res);
        kvconv_arena_free(&a);
    }
    /* both outcomes were exercised */
    assert_true(dups > ROUNDS * BATCH / 10);
    assert_true(clean > ROUNDS * BATCH / 10);
}

/* A range of 100k keys: two arrays in the arena, not 200k mallocs, and all freed. */
static void test_range_of_100k_keys_in_one_arena(void **state)
{
    struct fx *f = *state;
    enum { N = 100000, BATCH = 5000 };
    static char keys[N][8];
    struct mvcc_entry *ents = calloc(BATCH, sizeof(*ents));
    assert_non_null(ents);
    for (size_t i = 0; i < N; i += BATCH) {
        for (size_t j = 0; j < BATCH; j++) {
            snprintf(keys[i + j], sizeof(keys[0]), "%07zu", i + j);
            ents[j] = (struct mvcc_entry){.index = ++f->index, .term = 1,
                                          .req = {.type = MVCC_REQ_PUT,
                                                  .put = {.key = {keys[i + j], 7}, .value = {"v", 1}}}};
        }
        struct mvcc_result *res;
        assert_int_equal(mvcc_apply(f->s, ents, BATCH, &res), 0);
        mvcc_result_free(res);
    }
    free(ents);

    struct mvcc_range_req q = {.key = {"0", 1}, .range_end = {"\0", 1}};
    struct mvcc_range_result *rr;
    assert_int_equal(mvcc_range(f->r, &q, &rr, NULL), 0);
    assert_int_equal(rr->resp.n_kvs, N);
    struct kvconv_arena a;
    kvconv_arena_init(&a);
    Cairn__RangeResponse out;
    assert_int_equal(kvconv_range_resp(&rr->resp, &out, &a), 0);
    size_t need = N * (sizeof(Cairn__KeyValue) + sizeof(Cairn__KeyValue *));
    assert_in_range(a.a.allocated, need, need + (1 << 20));
    assert_in_range(a.a.n_blocks, 1, 3);
    Cairn__RangeResponse *u = repack(&out.base);
    mvcc_range_result_free(rr);
    kvconv_arena_free(&a);
    assert_int_equal(u->n_kvs, N);
    assert_int_equal(u->count, N);
    assert_bin(u->kvs[0]->key, "0000000");
    assert_bin(u->kvs[N - 1]->key, "0099999");
    assert_int_equal(u->kvs[N - 1]->mod_revision, N + 1); /* the first write is revision 2 */
    cairn__range_response__free_unpacked(u, NULL);
}

int main(void)
{
#define A(name) cmocka_unit_test_setup_teardown(name, arena_setup, arena_teardown)
#define S(name) cmocka_unit_test_setup_teardown(name, store_setup, store_teardown)
    const struct CMUnitTest tests[] = {
        A(test_well_formed_requests_pass),
        A(test_empty_key_is_refused_with_where),
        A(test_ignore_value_and_ignore_lease_refuse_a_value_and_a_lease),
        A(test_negative_numbers_are_invalid),
        A(test_unknown_enum_values_are_invalid),
        A(test_compare_value_must_match_its_target),
        A(test_txn_op_without_request_is_invalid),
        A(test_too_many_txn_ops_counted_as_etcd_3_4),
        A(test_duplicate_keys_as_etcd_check_intervals),
        A(test_duplicate_key_check_handles_big_txns),
        A(test_request_over_max_request_bytes_is_too_large),
        A(test_entry_nested_too_deep_is_refused),
        A(test_messages_escape_and_truncate_keys),
        A(test_request_without_body_is_invalid_or_unsupported),
        A(test_range_and_history_requests_convert_field_by_field),
        A(test_entry_req_refuses_what_the_store_does_not_apply),
        A(test_arena_serves_its_first_kilobyte_inline),
        A(test_error_and_header_helpers),
        S(test_put_with_prev_kv),
        S(test_delete_range_with_prev_kvs),
        S(test_txn_with_every_compare_target_a_nested_txn_and_ranges),
        S(test_compaction_and_its_errors),
        S(test_lease_grant_and_revoke),
        S(test_put_with_unknown_lease_names_the_lease_and_key),
        S(test_txn_errors_name_the_op_that_caused_them),
        S(test_refused_entry_is_answered_malformed_not_success),
        S(test_range_and_history_responses_from_real_results),
        S(test_events_for_watchers),
        S(test_duplicate_check_agrees_with_mvcc_apply),
        S(test_range_of_100k_keys_in_one_arena),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
