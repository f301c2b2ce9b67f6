/*
 * Logging: logfmt lines on stderr, level filtering, journal detection through
 * JOURNAL_STREAM, and journald's native protocol read back off a socket bound
 * where journald's would be (in a private mount namespace, so the host's
 * journal is untouched).
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "base/log.h"

#define TEST_MSGID "0d3a8c7e5b2f4e61a9c1d2e3f4a5b6c7"

/* Runs emit() with stderr pointed at a temporary file; returns what was written (caller frees). */
static char *capture_stderr(void (*emit)(void))
{
    char path[] = "/tmp/cairn-test-log-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    int saved = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    emit();
    dup2(saved, STDERR_FILENO);
    close(saved);
    off_t len = lseek(fd, 0, SEEK_END);
    char *buf = calloc(1, (size_t)len + 1);
    assert_int_equal(pread(fd, buf, (size_t)len, 0), len);
    close(fd);
    return buf;
}

static void emit_leader(void)
{
    log_setup("cairn-test", LOG_TARGET_STDERR, LOG_LEVEL_INFO);
    log_event(LOG_LEVEL_NOTICE, TEST_MSGID,
              LOG_FIELDS(LOG_U64("CAIRN_TERM", 5), LOG_STR("CAIRN_PEER", "node-2"),
                         LOG_HEX("CAIRN_MEMBER", 0xabcULL), LOG_I64("CAIRN_DELTA", -3)),
              "leader elected in term %d", 5);
    log_debug(NULL, "this is below the threshold");
}

static void test_stderr_line_is_logfmt_with_fields(void **state)
{
    (void)state;
    char *out = capture_stderr(emit_leader);
    assert_int_equal(strncmp(out, "time=", 5), 0);
    assert_non_null(strstr(out, " level=notice msg=\"leader elected in term 5\""));
    assert_non_null(strstr(out, " msgid=" TEST_MSGID));
    assert_non_null(strstr(out, " term=5"));
    assert_non_null(strstr(out, " peer=node-2"));
    assert_non_null(strstr(out, " member=0000000000000abc"));
    assert_non_null(strstr(out, " delta=-3"));
    assert_null(strstr(out, "threshold")); /* debug filtered at info */
    assert_int_equal(strchr(out, '\n')[1], '\0'); /* exactly one line */
    free(out);
}

static void emit_awkward(void)
{
    log_setup("cairn-test", LOG_TARGET_STDERR, LOG_LEVEL_DEBUG);
    log_warning(LOG_FIELDS(LOG_STR("CAIRN_KEY", "a \"b\"\nc=d"), LOG_STR("CAIRN_EMPTY", "")),
                "two\nlines");
}

static void test_stderr_quotes_and_escapes_awkward_values(void **state)
{
    (void)state;
    char *out = capture_stderr(emit_awkward);
    assert_non_null(strstr(out, "level=warning msg=\"two\\nlines\""));
    assert_non_null(strstr(out, " key=\"a \\\"b\\\"\\nc=d\""));
    assert_non_null(strstr(out, " empty=\"\""));
    assert_int_equal(strchr(out, '\n')[1], '\0');
    free(out);
}

static void test_levels_and_targets_parse(void **state)
{
    (void)state;
    assert_int_equal(log_parse_level("debug"), LOG_LEVEL_DEBUG);
    assert_int_equal(log_parse_level("warn"), LOG_LEVEL_WARNING);
    assert_int_equal(log_parse_level("err"), LOG_LEVEL_ERR);
    assert_int_equal(log_parse_level("crit"), LOG_LEVEL_CRIT);
    assert_int_equal(log_parse_level("loud"), -1);
    assert_int_equal(log_parse_target("journal"), LOG_TARGET_JOURNAL);
    assert_int_equal(log_parse_target("syslog"), -1);
    log_set_level(LOG_LEVEL_WARNING);
    assert_true(log_enabled(LOG_LEVEL_ERR));
    assert_false(log_enabled(LOG_LEVEL_NOTICE));
}

static void test_auto_target_follows_journal_stream(void **state)
{
    (void)state;
    struct stat st;
    char val[64];
    assert_int_equal(fstat(STDERR_FILENO, &st), 0);
    snprintf(val, sizeof val, "%llu:%llu", (unsigned long long)st.st_dev, (unsigned long long)st.st_ino);
    setenv("JOURNAL_STREAM", val, 1);
    log_setup("cairn-test", LOG_TARGET_AUTO, LOG_LEVEL_INFO);
    assert_true(log_using_journal());
    snprintf(val, sizeof val, "%llu:%llu", (unsigned long long)st.st_dev, (unsigned long long)st.st_ino + 1);
    setenv("JOURNAL_STREAM", val, 1);
    log_setup("cairn-test", LOG_TARGET_AUTO, LOG_LEVEL_INFO);
    assert_false(log_using_journal());
    unsetenv("JOURNAL_STREAM");
    log_setup("cairn-test", LOG_TARGET_AUTO, LOG_LEVEL_INFO);
    assert_false(log_using_journal());
}

/* Finds FIELD in a native-protocol datagram; returns its value (malloc'd) or NULL. */
static char *journal_field(const char *dgram, size_t len, const char *name)
{
    size_t nl = strlen(name);
    const char *p = dgram, *end = dgram + len;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol)
            return NULL;
        const char *eq = memchr(p, '=', (size_t)(eol - p));
        if (eq) { /* NAME=value\n */
            if ((size_t)(eq - p) == nl && memcmp(p, name, nl) == 0)
                return strndup(eq + 1, (size_t)(eol - eq - 1));
            p = eol + 1;
        } else { /* NAME\n <le64 length> value \n */
            uint64_t vlen;
            if (eol + 1 + 8 > end)
                return NULL;
            memcpy(&vlen, eol + 1, 8);
            const char *v = eol + 1 + 8;
            if (vlen > (uint64_t)(end - v))
                return NULL;
            if ((size_t)(eol - p) == nl && memcmp(p, name, nl) == 0)
                return strndup(v, (size_t)vlen);
            p = v + vlen + 1;
        }
    }
    return NULL;
}

static int expect_field(const char *d, size_t n, const char *name, const char *want)
{
    char *v = journal_field(d, n, name);
    int ok = v && strcmp(v, want) == 0;
    if (!ok)
        fprintf(stderr, "journal field %s: got '%s', want '%s'\n", name, v ? v : "(missing)", want);
    free(v);
    return ok;
}

/* In a child with its own mount namespace: tmpfs over /run, our socket where
 * journald's lives, one event sent, the datagram parsed field by field. */
static int journal_child(void)
{
    if (unshare(CLONE_NEWNS) < 0)
        return 77;
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
        mount("tmpfs", "/run", "tmpfs", 0, "size=1m") < 0)
        return 77;
    if (mkdir("/run/systemd", 0755) < 0 || mkdir("/run/systemd/journal", 0755) < 0)
        return 2;
    int s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    strcpy(sa.sun_path, "/run/systemd/journal/socket");
    if (s < 0 || bind(s, (struct sockaddr *)&sa, sizeof sa) < 0)
        return 3;

    log_setup("cairn-test", LOG_TARGET_JOURNAL, LOG_LEVEL_DEBUG);
    log_event(LOG_LEVEL_NOTICE, TEST_MSGID,
              LOG_FIELDS(LOG_U64("CAIRN_TERM", 7), LOG_STR("CAIRN_PEER", "node-3"),
                         LOG_STR("CAIRN_NOTE", "multi\nline")),
              "leader elected in term %d", 7);

    static char d[65536];
    ssize_t n = recv(s, d, sizeof d, MSG_DONTWAIT);
    if (n <= 0)
        return 4;
    int ok = expect_field(d, (size_t)n, "MESSAGE", "leader elected in term 7") &&
             expect_field(d, (size_t)n, "PRIORITY", "5") &&
             expect_field(d, (size_t)n, "MESSAGE_ID", TEST_MSGID) &&
             expect_field(d, (size_t)n, "CAIRN_TERM", "7") &&
             expect_field(d, (size_t)n, "CAIRN_PEER", "node-3") &&
             expect_field(d, (size_t)n, "CAIRN_NOTE", "multi\nline") &&
             expect_field(d, (size_t)n, "SYSLOG_IDENTIFIER", "cairn-test") &&
             expect_field(d, (size_t)n, "CODE_FUNC", "journal_child");
    char *file = journal_field(d, (size_t)n, "CODE_FILE");
    char *line = journal_field(d, (size_t)n, "CODE_LINE");
    ok = ok && file && strstr(file, "test_log.c") && line && atoi(line) > 0;
    free(file);
    free(line);
    return ok ? 0 : 5;
}

static void test_journal_events_arrive_as_separate_fields(void **state)
{
    (void)state;
    if (geteuid() != 0)
        skip(); /* needs a private mount namespace; CI runs as root */
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(journal_child());
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    if (WEXITSTATUS(st) == 77)
        skip(); /* no mount namespaces here (e.g. a restricted container) */
    assert_int_equal(WEXITSTATUS(st), 0);
}

static void test_a_limit_lets_a_burst_through_per_window_and_counts_the_rest(void **state)
{
    (void)state;
    struct log_limit l = LOG_LIMIT_INIT(3, 100);
    uint64_t refused = 99;
    for (int i = 0; i < 3; i++) {
        assert_true(log_limit_pass(&l, &refused));
        assert_int_equal(refused, 0);
    }
    assert_false(log_limit_pass(&l, &refused));
    assert_false(log_limit_pass(&l, &refused));
    /* the first event of a later window passes and hears of the two refused */
    struct timespec ts = {0, 150 * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
    assert_true(log_limit_pass(&l, &refused));
    assert_int_equal(refused, 2);
    assert_true(log_limit_pass(&l, &refused));
    assert_int_equal(refused, 0);
    char buf[48];
    assert_string_equal(log_limit_note(buf, sizeof buf, 2), " (2 earlier ones not logged)");
    assert_string_equal(log_limit_note(buf, sizeof buf, 0), "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stderr_line_is_logfmt_with_fields),
        cmocka_unit_test(test_stderr_quotes_and_escapes_awkward_values),
        cmocka_unit_test(test_levels_and_targets_parse),
        cmocka_unit_test(test_auto_target_follows_journal_stream),
        cmocka_unit_test(test_journal_events_arrive_as_separate_fields),
        cmocka_unit_test(test_a_limit_lets_a_burst_through_per_window_and_counts_the_rest),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
