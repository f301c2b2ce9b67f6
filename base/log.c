/*
 * Event logging to journald (native protocol, through libsystemd's
 * sd_journal_sendv) or to stderr as logfmt.  Owns only the configuration
 * below; events are formatted on the caller's stack, never queued.
 */
#include "base/log.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define SD_JOURNAL_SUPPRESS_LOCATION /* we send CODE_* ourselves */
#include <systemd/sd-journal.h>

#define MAX_FIELDS 32
#define MSG_MAX 4096
#define LINE_MAX_BYTES 8192

static const char *log_ident = "cairn";
static atomic_int log_level = LOG_LEVEL_INFO;
static atomic_int log_journal = 0;

static const char *const level_names[] = {
    [LOG_LEVEL_CRIT] = "crit",       [LOG_LEVEL_ERR] = "err",   [LOG_LEVEL_WARNING] = "warning",
    [LOG_LEVEL_NOTICE] = "notice",   [LOG_LEVEL_INFO] = "info", [LOG_LEVEL_DEBUG] = "debug",
};

/* systemd sets JOURNAL_STREAM to "device:inode" of the stream it connected to
 * stderr; if our stderr is still that stream, the journal is listening. */
static int stderr_is_journal(void)
{
    const char *e = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;

    if (!e || sscanf(e, "%llu:%llu", &dev, &ino) != 2)
        return 0;
    if (fstat(STDERR_FILENO, &st) < 0)
        return 0;
    return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

int log_setup(const char *ident, enum log_target target, enum log_level level)
{
    if (ident)
        log_ident = ident;
    log_set_level(level);
    if (target == LOG_TARGET_JOURNAL)
        atomic_store(&log_journal, 1);
    else if (target == LOG_TARGET_STDERR)
        atomic_store(&log_journal, 0);
    else
        atomic_store(&log_journal, stderr_is_journal());
    return 0;
}

void log_set_level(enum log_level level)
{
    if (level < LOG_LEVEL_CRIT)
        level = LOG_LEVEL_CRIT;
    if (level > LOG_LEVEL_DEBUG)
        level = LOG_LEVEL_DEBUG;
    atomic_store(&log_level, (int)level);
}

int log_enabled(enum log_level level)
{
    return (int)level <= atomic_load(&log_level);
}

int log_using_journal(void)
{
    return atomic_load(&log_journal);
}

int log_parse_level(const char *s)
{
    static const struct {
        const char *name;
        int level;
    } names[] = {
        {"debug", LOG_LEVEL_DEBUG}, {"info", LOG_LEVEL_INFO},       {"notice", LOG_LEVEL_NOTICE},
        {"warning", LOG_LEVEL_WARNING}, {"warn", LOG_LEVEL_WARNING}, {"err", LOG_LEVEL_ERR},
        {"error", LOG_LEVEL_ERR},   {"crit", LOG_LEVEL_CRIT},
    };
    for (size_t i = 0; s && i < sizeof(names) / sizeof(names[0]); i++)
        if (strcmp(s, names[i].name) == 0)
            return names[i].level;
    return -1;
}

int log_parse_target(const char *s)
{
    if (!s)
        return -1;
    if (strcmp(s, "auto") == 0)
        return LOG_TARGET_AUTO;
    if (strcmp(s, "journal") == 0)
        return LOG_TARGET_JOURNAL;
    if (strcmp(s, "stderr") == 0)
        return LOG_TARGET_STDERR;
    return -1;
}

const char *log_level_name(enum log_level level)
{
    if (level < LOG_LEVEL_CRIT || level > LOG_LEVEL_DEBUG)
        return "unknown";
    return level_names[level];
}

/* Formats one field's value into buf; returns buf. */
static const char *kv_value(const struct log_kv *kv, char *buf, size_t len)
{
    switch (kv->type) {
    case LOG_KV_STR:
        return kv->v.s ? kv->v.s : "";
    case LOG_KV_U64:
        snprintf(buf, len, "%" PRIu64, kv->v.u);
        break;
    case LOG_KV_I64:
        snprintf(buf, len, "%" PRId64, kv->v.i);
        break;
    case LOG_KV_HEX:
        snprintf(buf, len, "%016" PRIx64, kv->v.u);
        break;
    case LOG_KV_F64:
        snprintf(buf, len, "%.3f", kv->v.f);
        break;
    case LOG_KV_END:
        buf[0] = '\0';
        break;
    }
    return buf;
}

static void send_journal(enum log_level level, const char *file, int line, const char *func,
                         const char *message_id, const struct log_kv *fields, const char *msg)
{
    struct iovec iov[MAX_FIELDS + 8];
    char fixed[6][128];
    char *owned[MAX_FIELDS];
    int n = 0, nowned = 0;

    /* MESSAGE= may hold newlines: sd_journal_sendv switches to the binary-safe
     * form for such fields itself. */
    char *m = NULL;
    if (asprintf(&m, "MESSAGE=%s", msg) < 0)
        return;
    iov[n++] = (struct iovec){m, strlen(m)};
    snprintf(fixed[0], sizeof fixed[0], "PRIORITY=%d", (int)level);
    snprintf(fixed[1], sizeof fixed[1], "CODE_FILE=%s", file);
    snprintf(fixed[2], sizeof fixed[2], "CODE_LINE=%d", line);
    snprintf(fixed[3], sizeof fixed[3], "CODE_FUNC=%s", func);
    snprintf(fixed[4], sizeof fixed[4], "SYSLOG_IDENTIFIER=%s", log_ident);
    for (int i = 0; i < 5; i++)
        iov[n++] = (struct iovec){fixed[i], strlen(fixed[i])};
    if (message_id) {
        snprintf(fixed[5], sizeof fixed[5], "MESSAGE_ID=%s", message_id);
        iov[n++] = (struct iovec){fixed[5], strlen(fixed[5])};
    }
    for (const struct log_kv *kv = fields; kv && kv->key && nowned < MAX_FIELDS; kv++) {
        char num[64];
        char *f = NULL;
        if (asprintf(&f, "%s=%s", kv->key, kv_value(kv, num, sizeof num)) < 0)
            break;
        owned[nowned++] = f;
        iov[n++] = (struct iovec){f, strlen(f)};
    }
    sd_journal_sendv(iov, n);
    for (int i = 0; i < nowned; i++)
        free(owned[i]);
    free(m);
}

/* Appends s to the line, quoted logfmt-style if it needs to be. */
static size_t put_value(char *out, size_t pos, size_t cap, const char *s)
{
    int quote = (*s == '\0');
    for (const char *p = s; *p && !quote; p++)
        if (*p == ' ' || *p == '=' || *p == '"' || (unsigned char)*p < 0x20 || *p == 0x7f)
            quote = 1;
    if (!quote)
        return pos + (size_t)snprintf(out + pos, pos < cap ? cap - pos : 0, "%s", s);
    if (pos < cap)
        out[pos] = '"';
    pos++;
    for (const char *p = s; *p; p++) {
        unsigned char c = (unsigned char)*p;
        char esc[8];
        if (c == '"' || c == '\\')
            snprintf(esc, sizeof esc, "\\%c", c);
        else if (c == '\n')
            snprintf(esc, sizeof esc, "\\n");
        else if (c < 0x20 || c == 0x7f)
            snprintf(esc, sizeof esc, "\\x%02x", c);
        else
            snprintf(esc, sizeof esc, "%c", c);
        pos += (size_t)snprintf(out + (pos < cap ? pos : cap), pos < cap ? cap - pos : 0, "%s", esc);
    }
    if (pos < cap)
        out[pos] = '"';
    return pos + 1;
}

/* stderr: key names lose their CAIRN_ prefix and are lower-cased, so a line
 * reads `time=... level=notice msg="leader elected" term=5 member=...`. */
static void send_stderr(enum log_level level, const char *message_id, const struct log_kv *fields,
                        const char *msg)
{
    char line[LINE_MAX_BYTES];
    size_t cap = sizeof line - 2, pos = 0;
    struct timespec ts;
    struct tm tm;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    pos += strftime(line, cap, "time=%Y-%m-%dT%H:%M:%S", &tm);
    pos += (size_t)snprintf(line + pos, cap - pos, ".%03ldZ level=%s msg=", ts.tv_nsec / 1000000,
                            log_level_name(level));
    pos = put_value(line, pos, cap, msg);
    if (message_id && pos < cap)
        pos += (size_t)snprintf(line + pos, cap - pos, " msgid=%s", message_id);
    for (const struct log_kv *kv = fields; kv && kv->key && pos < cap; kv++) {
        char key[64], num[64];
        const char *k = strncmp(kv->key, "CAIRN_", 6) == 0 ? kv->key + 6 : kv->key;
        size_t i;
        for (i = 0; k[i] && i < sizeof key - 1; i++)
            key[i] = (k[i] >= 'A' && k[i] <= 'Z') ? (char)(k[i] + 32) : k[i];
        key[i] = '\0';
        pos += (size_t)snprintf(line + pos, cap - pos, " %s=", key);
        pos = put_value(line, pos, cap, kv_value(kv, num, sizeof num));
    }
    if (pos > cap)
        pos = cap; /* truncated: still one whole line */
    line[pos++] = '\n';
    ssize_t r;
    do
        r = write(STDERR_FILENO, line, pos);
    while (r < 0 && errno == EINTR);
}

void log_emit(enum log_level level, const char *file, int line, const char *func,
              const char *message_id, const struct log_kv *fields, const char *fmt, ...)
{
    char msg[MSG_MAX];
    va_list ap;

    if (!log_enabled(level))
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (atomic_load(&log_journal))
        send_journal(level, file, line, func, message_id, fields, msg);
    else
        send_stderr(level, message_id, fields, msg);
}

bool log_limit_pass(struct log_limit *l, uint64_t *refused)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t now = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    pthread_mutex_lock(&l->mu);
    *refused = 0;
    if (l->window_start_ms == 0 || now - l->window_start_ms >= l->window_ms) {
        *refused = l->refused;
        l->window_start_ms = now;
        l->count = 0;
        l->refused = 0;
    }
    bool ok = l->count < l->burst;
    if (ok)
        l->count++;
    else
        l->refused++;
    pthread_mutex_unlock(&l->mu);
    return ok;
}

const char *log_limit_note(char *buf, size_t len, uint64_t refused)
{
    if (refused)
        snprintf(buf, len, " (%" PRIu64 " earlier ones not logged)", refused);
    else if (len)
        buf[0] = 0;
    return buf;
}
