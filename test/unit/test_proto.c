/*
 * The wire schemas: a nested Txn survives an encode/decode round trip through
 * the Request envelope, and truncated or random input is refused, not crashed on.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "proto/cairn.pb-c.h"
#include "proto/peer.pb-c.h"

static ProtobufCBinaryData bin(const char *s)
{
    ProtobufCBinaryData b = {strlen(s), (uint8_t *)s};
    return b;
}

/* Request{txn: compare mod(a) = 5; success: put a=1, txn{range b}; failure: delete c} */
static uint8_t *encode_nested_txn(size_t *len)
{
    Cairn__Compare cmp = CAIRN__COMPARE__INIT;
    cmp.target = CAIRN__COMPARE__COMPARE_TARGET__MOD;
    cmp.result = CAIRN__COMPARE__COMPARE_RESULT__EQUAL;
    cmp.key = bin("a");
    cmp.target_union_case = CAIRN__COMPARE__TARGET_UNION_MOD_REVISION;
    cmp.mod_revision = 5;
    Cairn__Compare *cmps[] = {&cmp};

    Cairn__PutRequest put = CAIRN__PUT_REQUEST__INIT;
    put.key = bin("a");
    put.value = bin("1");
    Cairn__RequestOp op_put = CAIRN__REQUEST_OP__INIT;
    op_put.request_case = CAIRN__REQUEST_OP__REQUEST_REQUEST_PUT;
    op_put.request_put = &put;

    Cairn__RangeRequest rng = CAIRN__RANGE_REQUEST__INIT;
    rng.key = bin("b");
    Cairn__RequestOp op_rng = CAIRN__REQUEST_OP__INIT;
    op_rng.request_case = CAIRN__REQUEST_OP__REQUEST_REQUEST_RANGE;
    op_rng.request_range = &rng;
    Cairn__RequestOp *inner_ops[] = {&op_rng};
    Cairn__TxnRequest inner = CAIRN__TXN_REQUEST__INIT;
    inner.n_success = 1;
    inner.success = inner_ops;
    Cairn__RequestOp op_txn = CAIRN__REQUEST_OP__INIT;
    op_txn.request_case = CAIRN__REQUEST_OP__REQUEST_REQUEST_TXN;
    op_txn.request_txn = &inner;

    Cairn__DeleteRangeRequest del = CAIRN__DELETE_RANGE_REQUEST__INIT;
    del.key = bin("c");
    Cairn__RequestOp op_del = CAIRN__REQUEST_OP__INIT;
    op_del.request_case = CAIRN__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE;
    op_del.request_delete_range = &del;

    Cairn__RequestOp *succ[] = {&op_put, &op_txn};
    Cairn__RequestOp *fail[] = {&op_del};
    Cairn__TxnRequest txn = CAIRN__TXN_REQUEST__INIT;
    txn.n_compare = 1;
    txn.compare = cmps;
    txn.n_success = 2;
    txn.success = succ;
    txn.n_failure = 1;
    txn.failure = fail;

    Cairn__Request req = CAIRN__REQUEST__INIT;
    req.auth_token = "tok";
    req.body_case = CAIRN__REQUEST__BODY_TXN;
    req.txn = &txn;

    *len = cairn__request__get_packed_size(&req);
    uint8_t *buf = malloc(*len);
    assert_non_null(buf);
    assert_int_equal(cairn__request__pack(&req, buf), *len);
    return buf;
}

static void test_nested_txn_round_trips_through_the_request_envelope(void **state)
{
    (void)state;
    size_t len;
    uint8_t *buf = encode_nested_txn(&len);
    Cairn__Request *r = cairn__request__unpack(NULL, len, buf);
    assert_non_null(r);
    assert_string_equal(r->auth_token, "tok");
    assert_int_equal(r->body_case, CAIRN__REQUEST__BODY_TXN);
    assert_int_equal(r->txn->n_compare, 1);
    assert_int_equal(r->txn->compare[0]->mod_revision, 5);
    assert_int_equal(r->txn->n_success, 2);
    assert_memory_equal(r->txn->success[0]->request_put->value.data, "1", 1);
    Cairn__TxnRequest *inner = r->txn->success[1]->request_txn;
    assert_non_null(inner);
    assert_int_equal(inner->success[0]->request_case, CAIRN__REQUEST_OP__REQUEST_REQUEST_RANGE);
    assert_memory_equal(r->txn->failure[0]->request_delete_range->key.data, "c", 1);
    cairn__request__free_unpacked(r, NULL);
    free(buf);
}

static void test_every_truncation_of_a_request_is_refused_or_parses_cleanly(void **state)
{
    (void)state;
    size_t len;
    uint8_t *buf = encode_nested_txn(&len);
    size_t refused = 0;
    for (size_t cut = 0; cut < len; cut++) {
        uint8_t *copy = malloc(cut ? cut : 1); /* exact size, so ASan sees any overread */
        memcpy(copy, buf, cut);
        Cairn__Request *r = cairn__request__unpack(NULL, cut, copy);
        if (r)
            cairn__request__free_unpacked(r, NULL);
        else
            refused++;
        free(copy);
    }
    assert_true(refused > len / 2); /* most cuts land inside a field */
    free(buf);
}

static void test_random_bytes_never_crash_the_decoders(void **state)
{
    (void)state;
    uint32_t x = 12345;
    for (int i = 0; i < 20000; i++) {
        uint8_t b[64];
        size_t n = (size_t)(i % 64);
        for (size_t j = 0; j < n; j++) {
            x = x * 1103515245 + 12345;
            b[j] = (uint8_t)(x >> 16);
        }
        Cairn__Request *r = cairn__request__unpack(NULL, n, b);
        if (r)
            cairn__request__free_unpacked(r, NULL);
        Cairnpeer__PeerEnvelope *e = cairnpeer__peer_envelope__unpack(NULL, n, b);
        if (e)
            cairnpeer__peer_envelope__free_unpacked(e, NULL);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nested_txn_round_trips_through_the_request_envelope),
        cmocka_unit_test(test_every_truncation_of_a_request_is_refused_or_parses_cleanly),
        cmocka_unit_test(test_random_bytes_never_crash_the_decoders),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
