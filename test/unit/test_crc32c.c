/* CRC-32C against the RFC 3720 (B.4) vectors, both code paths, and chaining. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "base/crc32c.h"

typedef uint32_t (*crc_fn)(uint32_t, const void *, size_t);

static void check_rfc3720(crc_fn f)
{
    unsigned char buf[32];

    memset(buf, 0, sizeof buf);
    assert_int_equal(f(0, buf, sizeof buf), 0x8A9136AA);
    memset(buf, 0xff, sizeof buf);
    assert_int_equal(f(0, buf, sizeof buf), 0x62A8AB43);
    for (int i = 0; i < 32; i++)
        buf[i] = (unsigned char)i;
    assert_int_equal(f(0, buf, sizeof buf), 0x46DD794E);
    for (int i = 0; i < 32; i++)
        buf[i] = (unsigned char)(31 - i);
    assert_int_equal(f(0, buf, sizeof buf), 0x113FDB5C);
    assert_int_equal(f(0, "123456789", 9), 0xE3069283);
    assert_int_equal(f(0, "", 0), 0);
}

static void test_software_matches_rfc3720_vectors(void **state)
{
    (void)state;
    check_rfc3720(crc32c_sw);
}

static void test_dispatched_matches_rfc3720_vectors(void **state)
{
    (void)state;
    check_rfc3720(crc32c_extend);
}

/* Chaining over any split, at any alignment, equals the CRC of the whole. */
static void test_chaining_equals_whole_at_every_split_and_alignment(void **state)
{
    (void)state;
    unsigned char raw[1100];
    for (size_t i = 0; i < sizeof raw; i++)
        raw[i] = (unsigned char)(i * 131 + 7);
    for (size_t off = 0; off < 8; off++) {
        const unsigned char *p = raw + off;
        size_t len = 1000 + off;
        uint32_t whole = crc32c_sw(0, p, len);
        assert_int_equal(crc32c_extend(0, p, len), whole);
        for (size_t cut = 0; cut <= len; cut += 37) {
            assert_int_equal(crc32c_extend(crc32c_extend(0, p, cut), p + cut, len - cut), whole);
            assert_int_equal(crc32c_sw(crc32c_sw(0, p, cut), p + cut, len - cut), whole);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_software_matches_rfc3720_vectors),
        cmocka_unit_test(test_dispatched_matches_rfc3720_vectors),
        cmocka_unit_test(test_chaining_equals_whole_at_every_split_and_alignment),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
