/* The error table: codes are distinct, messages and names resolve both ways. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "base/errors.h"

static const int all_codes[] = {
#define X_(name, off, msg) CAIRN_E_##name,
    CAIRN_ERRORS(X_)
#undef X_
};
#define NCODES (sizeof(all_codes) / sizeof(all_codes[0]))

static void test_codes_are_distinct_and_above_errno(void **state)
{
    (void)state;
    for (size_t i = 0; i < NCODES; i++) {
        assert_true(all_codes[i] > CAIRN_ERR_BASE);
        for (size_t j = i + 1; j < NCODES; j++)
            assert_int_not_equal(all_codes[i], all_codes[j]);
    }
}

static void test_every_code_has_a_message_and_name_either_sign(void **state)
{
    (void)state;
    for (size_t i = 0; i < NCODES; i++) {
        assert_true(cairn_is_cairn_error(all_codes[i]));
        assert_true(cairn_is_cairn_error(-all_codes[i]));
        assert_string_equal(cairn_strerror(all_codes[i]), cairn_strerror(-all_codes[i]));
        assert_true(strlen(cairn_strerror(all_codes[i])) > 5);
        assert_string_not_equal(cairn_errname(all_codes[i]), "UNKNOWN");
    }
    assert_string_equal(cairn_errname(-CAIRN_E_COMPACTED), "COMPACTED");
    assert_non_null(strstr(cairn_strerror(-CAIRN_E_TIMEOUT), "unknown"));
}

static void test_errno_values_fall_back_to_libc(void **state)
{
    (void)state;
    assert_false(cairn_is_cairn_error(-ENOSPC));
    assert_string_equal(cairn_errname(-ENOSPC), "ENOSPC");
    assert_string_equal(cairn_strerror(-ENOSPC), "No space left on device");
    assert_string_equal(cairn_strerror(0), "success");
    assert_string_equal(cairn_errname(CAIRN_ERR_BASE + 999), "UNKNOWN");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_codes_are_distinct_and_above_errno),
        cmocka_unit_test(test_every_code_has_a_message_and_name_either_sign),
        cmocka_unit_test(test_errno_values_fall_back_to_libc),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
