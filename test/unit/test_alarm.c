/*
 * daemon/alarm's plain logic: the alarm set (raise, disarm with wildcards,
 * its record), the capped applier's decision for each request type, and the
 * corruption check's rounds (the record, who is an outlier and when nothing
 * can be decided).  No node, no threads.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "base/errors.h"
#include "daemon/alarm_internal.h"
#include "proto/cairn.pb-c.h"
#include "storage/mvcc.h"

enum { ACT = CAIRN__ALARM_REQUEST__ALARM_ACTION__ACTIVATE, DEACT = CAIRN__ALARM_REQUEST__ALARM_ACTION__DEACTIVATE };
enum { NOSPACE = CAIRN__ALARM_TYPE__NOSPACE, CORRUPT = CAIRN__ALARM_TYPE__CORRUPT };

/* --- the set ----------------------------------------------------------------- */

static void test_raise_is_idempotent_and_kept_in_order(void **state)
{
    (void)state;
    struct alarm_set s = {0}, ch;
    assert_int_equal(alarm_set_change(&s, ACT, 9, NOSPACE, &ch), 1);
    assert_int_equal(ch.n, 1);
    assert_int_equal(alarm_set_change(&s, ACT, 9, NOSPACE, &ch), 0);
    assert_int_equal(ch.n, 0);
    assert_int_equal(alarm_set_change(&s, ACT, 3, CORRUPT, NULL), 1);
    assert_int_equal(alarm_set_change(&s, ACT, 9, CORRUPT, NULL), 1);
    assert_int_equal(s.n, 3);
    assert_true(s.a[0].member == 3 && s.a[1].member == 9 && s.a[1].type == NOSPACE && s.a[2].type == CORRUPT);
    assert_true(alarm_set_has(&s, 0) && alarm_set_has(&s, NOSPACE) && alarm_set_has(&s, CORRUPT));
}

static void test_raise_needs_a_member_and_a_type(void **state)
{
    (void)state;
    struct alarm_set s = {0};
    assert_int_equal(alarm_set_change(&s, ACT, 0, NOSPACE, NULL), -CAIRN_E_INVALID_ARGUMENT);
    assert_int_equal(alarm_set_change(&s, ACT, 5, CAIRN__ALARM_TYPE__NONE, NULL), -CAIRN_E_INVALID_ARGUMENT);
    assert_int_equal(alarm_set_change(&s, ACT, 5, 7, NULL), -CAIRN_E_INVALID_ARGUMENT);
    assert_int_equal(alarm_set_change(&s, CAIRN__ALARM_REQUEST__ALARM_ACTION__GET, 5, NOSPACE, NULL),
                     -CAIRN_E_INVALID_ARGUMENT);
    assert_int_equal(s.n, 0);
}

static void test_disarm_with_wildcards(void **state)
{
    (void)state;
    struct alarm_set s = {0}, ch;
    alarm_set_change(&s, ACT, 1, NOSPACE, NULL);
    alarm_set_change(&s, ACT, 2, NOSPACE, NULL);
    alarm_set_change(&s, ACT, 2, CORRUPT, NULL);
    assert_int_equal(alarm_set_change(&s, DEACT, 0, CORRUPT, &ch), 1); /* every member, one type */
    assert_true(ch.n == 1 && ch.a[0].member == 2 && ch.a[0].type == CORRUPT);
    assert_int_equal(alarm_set_change(&s, DEACT, 2, 0, &ch), 1);       /* one member, every type */
    assert_int_equal(alarm_set_change(&s, DEACT, 7, 0, &ch), 0);       /* nothing matches */
    assert_int_equal(s.n, 1);
    alarm_set_change(&s, ACT, 4, CORRUPT, NULL);
    assert_int_equal(alarm_set_change(&s, DEACT, 0, 0, &ch), 2); /* everything */
    assert_int_equal(s.n, 0);
    assert_false(alarm_set_has(&s, 0));
}

static void test_the_set_is_bounded(void **state)
{
    (void)state;
    struct alarm_set s = {0};
    for (uint64_t m = 1; m <= ALARM_MAX; m++)
        assert_int_equal(alarm_set_change(&s, ACT, m, NOSPACE, NULL), 1);
    assert_int_equal(alarm_set_change(&s, ACT, 1000, NOSPACE, NULL), -CAIRN_E_TOO_MANY_REQUESTS);
    assert_int_equal(alarm_set_change(&s, ACT, 1, NOSPACE, NULL), 0);
}

static void test_the_record_round_trips_and_bad_bytes_are_refused(void **state)
{
    (void)state;
    struct alarm_set s = {0}, back;
    alarm_set_change(&s, ACT, 0x8e9e05c52164694dULL, NOSPACE, NULL);
    alarm_set_change(&s, ACT, 2, CORRUPT, NULL);
    uint8_t buf[1024];
    assert_true(alarm_set_packed_size(&s) <= sizeof buf);
    size_t n = alarm_set_pack(&s, buf);
    assert_int_equal(n, alarm_set_packed_size(&s));
    assert_int_equal(alarm_set_unpack(&back, buf, n), 0);
    assert_int_equal(back.n, 2);
    assert_memory_equal(back.a, s.a, 2 * sizeof(s.a[0]));
    /* it is a cairn.AlarmResponse, so clients can read it as one */
    Cairn__AlarmResponse *r = cairn__alarm_response__unpack(NULL, n, buf);
    assert_non_null(r);
    assert_int_equal(r->n_alarms, 2);
    cairn__alarm_response__free_unpacked(r, NULL);
    uint8_t junk[] = {0xff, 0xff, 0xff};
    assert_int_equal(alarm_set_unpack(&back, junk, sizeof junk), -CAIRN_E_CORRUPT);
    assert_int_equal(alarm_set_unpack(&back, NULL, 0), 0); /* an empty set packs to nothing */
    assert_int_equal(back.n, 0);
    assert_string_equal(alarm_type_name(NOSPACE), "NOSPACE");
    assert_string_equal(alarm_type_name(CORRUPT), "CORRUPT");
}

/* --- the capped applier ------------------------------------------------------ */

static struct mvcc_request req(enum mvcc_req_type t)
{
    struct mvcc_request r;
    memset(&r, 0, sizeof r);
    r.type = t;
    return r;
}

static void test_nothing_is_capped_without_alarms(void **state)
{
    (void)state;
    struct alarm_set s = {0};
    for (int t = MVCC_REQ_NOOP; t <= MVCC_REQ_RECORD_DELETE; t++) {
        struct mvcc_request r = req(t);
        assert_int_equal(alarm_capped(&s, &r), 0);
    }
}

static void test_nospace_refuses_what_adds_data(void **state)
{
    (void)state;
    struct alarm_set s = {0};
    alarm_set_change(&s, ACT, 1, NOSPACE, NULL);
    struct mvcc_request put = req(MVCC_REQ_PUT), del = req(MVCC_REQ_DELETE_RANGE), rng = req(MVCC_REQ_RANGE);
    struct mvcc_request grant = req(MVCC_REQ_LEASE_GRANT), revoke = req(MVCC_REQ_LEASE_REVOKE);
    struct mvcc_request compact = req(MVCC_REQ_COMPACT), rec = req(MVCC_REQ_RECORD_PUT);
    assert_int_equal(alarm_capped(&s, &put), CAIRN_E_NO_SPACE);
    assert_int_equal(alarm_capped(&s, &grant), CAIRN_E_NO_SPACE);
    assert_int_equal(alarm_capped(&s, &del), 0);
    assert_int_equal(alarm_capped(&s, &rng), 0);
    assert_int_equal(alarm_capped(&s, &revoke), 0);
    assert_int_equal(alarm_capped(&s, &compact), 0);
    assert_int_equal(alarm_capped(&s, &rec), 0);
    /* txns: a put in either branch, at any depth */
    struct mvcc_request reads[2] = {rng, del};
    struct mvcc_request txn = req(MVCC_REQ_TXN);
    txn.txn.success = reads;
    txn.txn.n_success = 2;
    assert_int_equal(alarm_capped(&s, &txn), 0);
    struct mvcc_request inner = req(MVCC_REQ_TXN);
    inner.txn.failure = &put;
    inner.txn.n_failure = 1;
    txn.txn.failure = &inner;
    txn.txn.n_failure = 1;
    assert_int_equal(alarm_capped(&s, &txn), CAIRN_E_NO_SPACE);
}

static void test_corrupt_refuses_every_write(void **state)
{
    (void)state;
    struct alarm_set s = {0};
    alarm_set_change(&s, ACT, 1, CORRUPT, NULL);
    alarm_set_change(&s, ACT, 1, NOSPACE, NULL); /* CORRUPT wins: it is the graver one */
    int writes[] = {MVCC_REQ_PUT, MVCC_REQ_DELETE_RANGE, MVCC_REQ_COMPACT, MVCC_REQ_LEASE_GRANT,
                    MVCC_REQ_LEASE_REVOKE};
    for (size_t i = 0; i < sizeof writes / sizeof writes[0]; i++) {
        struct mvcc_request r = req(writes[i]);
        assert_int_equal(alarm_capped(&s, &r), CAIRN_E_CORRUPT);
    }
    struct mvcc_request rng = req(MVCC_REQ_RANGE), del = req(MVCC_REQ_DELETE_RANGE);
    struct mvcc_request txn = req(MVCC_REQ_TXN);
    txn.txn.success = &rng;
    txn.txn.n_success = 1;
    assert_int_equal(alarm_capped(&s, &rng), 0);
    assert_int_equal(alarm_capped(&s, &txn), 0); /* a read-only txn */
    txn.txn.failure = &del;
    txn.txn.n_failure = 1;
    assert_int_equal(alarm_capped(&s, &txn), CAIRN_E_CORRUPT);
}

/* --- corruption-check rounds ------------------------------------------------- */

static void test_a_round_takes_one_report_per_member(void **state)
{
    (void)state;
    struct hash_round r = {.revision = 40};
    assert_int_equal(hash_round_add(&r, 1, 0xaa, 0), 1);
    assert_int_equal(hash_round_add(&r, 1, 0xbb, 0), 0); /* a replayed or repeated report */
    for (uint64_t m = 2; m <= ALARM_MAX_REPORTS; m++)
        assert_int_equal(hash_round_add(&r, m, 0xaa, 0), 1);
    assert_int_equal(hash_round_add(&r, 999, 0xaa, 0), 0);
    assert_int_equal(r.n, ALARM_MAX_REPORTS);
}

static void test_the_round_record_round_trips(void **state)
{
    (void)state;
    struct hash_round r = {.revision = 1234567890123LL}, back;
    hash_round_add(&r, 0x8e9e05c52164694dULL, 0xdeadbeef, 77);
    hash_round_add(&r, 2, 1, -1);
    uint8_t buf[2048];
    size_t n = hash_round_pack(&r, buf);
    assert_int_equal(n, hash_round_packed_size(&r));
    assert_int_equal(hash_round_unpack(&back, buf, n), 0);
    assert_int_equal(back.revision, r.revision);
    assert_int_equal(back.n, 2);
    assert_memory_equal(back.r, r.r, 2 * sizeof(r.r[0]));
    assert_int_equal(hash_round_unpack(&back, buf, n - 1), -CAIRN_E_CORRUPT);
    buf[0] = 99;
    assert_int_equal(hash_round_unpack(&back, buf, n), -CAIRN_E_CORRUPT);
    struct hash_round empty = {.revision = 5};
    n = hash_round_pack(&empty, buf);
    assert_int_equal(hash_round_unpack(&back, buf, n), 0);
    assert_true(back.revision == 5 && back.n == 0);
}

static void test_the_member_that_differs_from_the_majority_is_named(void **state)
{
    (void)state;
    struct hash_round r = {.revision = 10};
    uint64_t out[8];
    uint32_t maj = 0;
    hash_round_add(&r, 1, 0xaa, 3);
    hash_round_add(&r, 3, 0xbb, 3);
    assert_int_equal(hash_round_outliers(&r, out, 8, &maj), 0); /* one against one: nothing decided */
    hash_round_add(&r, 2, 0xaa, 3);
    assert_int_equal(hash_round_outliers(&r, out, 8, &maj), 1);
    assert_int_equal(out[0], 3);
    assert_int_equal(maj, 0xaa);
}

static void test_all_agree_or_no_majority_names_nobody(void **state)
{
    (void)state;
    struct hash_round r = {.revision = 10};
    uint64_t out[8];
    hash_round_add(&r, 1, 0xaa, 0);
    assert_int_equal(hash_round_outliers(&r, out, 8, NULL), 0);
    hash_round_add(&r, 2, 0xaa, 0);
    hash_round_add(&r, 3, 0xaa, 0);
    assert_int_equal(hash_round_outliers(&r, out, 8, NULL), 0);
    struct hash_round split = {.revision = 10};
    hash_round_add(&split, 1, 0xaa, 0);
    hash_round_add(&split, 2, 0xbb, 0);
    hash_round_add(&split, 3, 0xcc, 0);
    hash_round_add(&split, 4, 0xaa, 0);
    assert_int_equal(hash_round_outliers(&split, out, 8, NULL), 0); /* 2 of 4 is no majority */
    assert_int_equal(hash_round_outliers(&(struct hash_round){0}, out, 8, NULL), 0);
}

static void test_only_reports_at_the_same_compact_revision_are_compared(void **state)
{
    (void)state;
    /* member 4 hashed after a later compaction: it is no witness, even with another hash */
    struct hash_round r = {.revision = 10};
    uint64_t out[8];
    hash_round_add(&r, 1, 0xaa, 5);
    hash_round_add(&r, 2, 0xaa, 5);
    hash_round_add(&r, 3, 0xaa, 5);
    hash_round_add(&r, 4, 0xff, 8);
    assert_int_equal(hash_round_outliers(&r, out, 8, NULL), 0);
    hash_round_add(&r, 5, 0xbb, 5);
    assert_int_equal(hash_round_outliers(&r, out, 8, NULL), 1);
    assert_int_equal(out[0], 5);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_raise_is_idempotent_and_kept_in_order),
        cmocka_unit_test(test_raise_needs_a_member_and_a_type),
        cmocka_unit_test(test_disarm_with_wildcards),
        cmocka_unit_test(test_the_set_is_bounded),
        cmocka_unit_test(test_the_record_round_trips_and_bad_bytes_are_refused),
        cmocka_unit_test(test_nothing_is_capped_without_alarms),
        cmocka_unit_test(test_nospace_refuses_what_adds_data),
        cmocka_unit_test(test_corrupt_refuses_every_write),
        cmocka_unit_test(test_a_round_takes_one_report_per_member),
        cmocka_unit_test(test_the_round_record_round_trips),
        cmocka_unit_test(test_the_member_that_differs_from_the_majority_is_named),
        cmocka_unit_test(test_all_agree_or_no_majority_names_nobody),
        cmocka_unit_test(test_only_reports_at_the_same_compact_revision_are_compared),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
