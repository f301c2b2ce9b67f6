/* daemon/compactor: the retention option and etcd's periodic compactor arithmetic, on a simulated clock. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "base/errors.h"
#include "daemon/compactor.h"

#define MIN 60000LL
#define HOUR (60 * MIN)

static int64_t parse(enum auto_compaction_mode mode, const char *s)
{
    int64_t v = -1;
    char err[256] = "";
    int rc = compactor_parse_retention(mode, s, &v, err, sizeof err);
    if (rc < 0) {
        assert_int_equal(rc, -CAIRN_E_CONFIG);
        assert_non_null(strstr(err, "--auto-compaction-retention"));
        return -1;
    }
    return v;
}

static void test_periodic_retention_is_hours_or_a_duration(void **state)
{
    (void)state;
    assert_int_equal(parse(AUTO_COMPACTION_PERIODIC, "0"), 0);
    assert_int_equal(parse(AUTO_COMPACTION_PERIODIC, "1"), HOUR);
    assert_int_equal(parse(AUTO_COMPACTION_PERIODIC, "0.5"), 30 * MIN);
    assert_int_equal(parse(AUTO_COMPACTION_PERIODIC, "72"), 72 * HOUR);
    assert_int_equal(parse(AUTO_COMPACTION_PERIODIC, "30m"), 30 * MIN);
    assert_int_equal(parse(AUTO_COMPACTION_PERIODIC, "5s"), 5000);
    assert_int_equal(parse(AUTO_COMPACTION_PERIODIC, "1500ms"), 1500);
    assert_int_equal(parse(AUTO_COMPACTION_PERIODIC, "abc"), -1);
    assert_int_equal(parse(AUTO_COMPACTION_PERIODIC, "-1"), -1);
    assert_int_equal(parse(AUTO_COMPACTION_PERIODIC, ""), -1);
    assert_int_equal(parse(AUTO_COMPACTION_PERIODIC, "5ms"), -1); /* too short to mean anything */
}

static void test_revision_retention_is_a_whole_number(void **state)
{
    (void)state;
    assert_int_equal(parse(AUTO_COMPACTION_REVISION, "0"), 0);
    assert_int_equal(parse(AUTO_COMPACTION_REVISION, "1000"), 1000);
    assert_int_equal(parse(AUTO_COMPACTION_REVISION, "1h"), -1);
    assert_int_equal(parse(AUTO_COMPACTION_REVISION, "1.5"), -1);
    assert_int_equal(parse(AUTO_COMPACTION_REVISION, "-3"), -1);
}

static void test_intervals_follow_etcd(void **state)
{
    (void)state;
    struct compactor_periodic p;
    assert_int_equal(compactor_periodic_init(&p, HOUR, 0), 0);
    assert_int_equal(p.compact_ms, HOUR);
    assert_int_equal(p.retry_ms, 6 * MIN);
    assert_int_equal(p.retentions, 11);
    compactor_periodic_free(&p);
    assert_int_equal(compactor_periodic_init(&p, 24 * HOUR, 0), 0);
    assert_int_equal(p.compact_ms, HOUR); /* compacts every hour, keeping a day */
    assert_int_equal(p.retry_ms, 6 * MIN);
    assert_int_equal(p.retentions, 241);
    compactor_periodic_free(&p);
    assert_int_equal(compactor_periodic_init(&p, 5000, 0), 0);
    assert_int_equal(p.compact_ms, 5000);
    assert_int_equal(p.retry_ms, 500);
    assert_int_equal(p.retentions, 11);
    compactor_periodic_free(&p);
}

/*
 * Run the compactor's loop as compactor.c does (sample, wait a retry
 * interval, maybe compact) until `until`; the revision at time t is t / 1000
 * (one write a second).  Records each compaction's time and revision.
 */
struct run {
    int64_t at[64], rev[64];
    int n;
};

static void simulate(struct compactor_periodic *p, int64_t until, int fail_first, struct run *out)
{
    memset(out, 0, sizeof(*out));
    for (int64_t t = 0; t < until;) {
        compactor_periodic_sample(p, t / 1000);
        t += p->retry_ms;
        int64_t r = 0;
        if (!compactor_periodic_due(p, t, &r))
            continue;
        if (fail_first-- > 0)
            continue; /* the proposal failed: tried again a retry interval later */
        assert_true(out->n < 64);
        out->at[out->n] = t;
        out->rev[out->n++] = r;
        compactor_periodic_done(p, t);
    }
}

static void test_one_hour_compacts_hourly_to_the_revision_an_hour_old(void **state)
{
    (void)state;
    struct compactor_periodic p;
    struct run r;
    assert_int_equal(compactor_periodic_init(&p, HOUR, 0), 0);
    simulate(&p, 3 * HOUR + 1, 0, &r);
    assert_int_equal(r.n, 3);
    /* first after a whole retention, to what was current then */
    assert_int_equal(r.at[0], HOUR);
    assert_int_equal(r.rev[0], 0);
    /* then every hour, to the oldest of the 11 samples: 66 minutes old (etcd keeps period/retry + 1) */
    for (int i = 1; i < 3; i++) {
        assert_int_equal(r.at[i], (i + 1) * HOUR);
        assert_int_equal(r.rev[i], ((i + 1) * HOUR - HOUR - 6 * MIN) / 1000);
    }
    compactor_periodic_free(&p);
}

static void test_a_day_compacts_every_hour_keeping_a_day(void **state)
{
    (void)state;
    struct compactor_periodic p;
    struct run r;
    assert_int_equal(compactor_periodic_init(&p, 24 * HOUR, 0), 0);
    simulate(&p, 27 * HOUR + 1, 0, &r);
    assert_int_equal(r.n, 4); /* at 24 h, 25 h, 26 h, 27 h */
    assert_int_equal(r.at[0], 24 * HOUR);
    assert_int_equal(r.rev[0], 0);
    for (int i = 1; i < 4; i++) {
        assert_int_equal(r.at[i], (24 + i) * HOUR);
        int64_t age = r.at[i] - r.rev[i] * 1000;
        assert_true(age >= 24 * HOUR && age <= 24 * HOUR + 6 * MIN);
    }
    compactor_periodic_free(&p);
}

static void test_a_failed_compaction_is_retried_a_retry_interval_later(void **state)
{
    (void)state;
    struct compactor_periodic p;
    struct run r;
    assert_int_equal(compactor_periodic_init(&p, 5000, 0), 0);
    simulate(&p, 6001, 1, &r);
    assert_int_equal(r.n, 1);
    assert_int_equal(r.at[0], 5500);
    assert_int_equal(r.rev[0], 0); /* the oldest sample: 5.5 s old */
    compactor_periodic_free(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_periodic_retention_is_hours_or_a_duration),
        cmocka_unit_test(test_revision_retention_is_a_whole_number),
        cmocka_unit_test(test_intervals_follow_etcd),
        cmocka_unit_test(test_one_hour_compacts_hourly_to_the_revision_an_hour_old),
        cmocka_unit_test(test_a_day_compacts_every_hour_keeping_a_day),
        cmocka_unit_test(test_a_failed_compaction_is_retried_a_retry_interval_later),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
