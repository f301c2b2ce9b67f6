/*
 * Logging for every Cairn binary: one call per event, with a printf-style
 * message and typed structured fields.  Under journald the event goes out in
 * journald's native protocol, each field a journal field (CAIRN_TERM=5), so
 * `journalctl CAIRN_PEER=...` filters work; elsewhere it is one logfmt line on
 * stderr.  Thread-safe: each event is written with a single system call.
 */
#ifndef CAIRN_BASE_LOG_H
#define CAIRN_BASE_LOG_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Levels are syslog priorities, so they map to PRIORITY= unchanged. */
enum log_level {
    LOG_LEVEL_CRIT = 2,
    LOG_LEVEL_ERR = 3,
    LOG_LEVEL_WARNING = 4,
    LOG_LEVEL_NOTICE = 5,
    LOG_LEVEL_INFO = 6,
    LOG_LEVEL_DEBUG = 7,
};

enum log_target {
    LOG_TARGET_AUTO,    /* journal if stderr is connected to it (JOURNAL_STREAM), else stderr */
    LOG_TARGET_JOURNAL, /* always journald's native protocol */
    LOG_TARGET_STDERR,  /* always logfmt lines on stderr */
};

enum log_kv_type { LOG_KV_END, LOG_KV_STR, LOG_KV_U64, LOG_KV_I64, LOG_KV_HEX, LOG_KV_F64 };

/* One structured field.  Build them with the LOG_* macros below. */
struct log_kv {
    const char *key; /* journal field name: upper case, digits, '_' (e.g. "CAIRN_PEER") */
    enum log_kv_type type;
    union {
        const char *s;
        uint64_t u;
        int64_t i;
        double f;
    } v;
};

#define LOG_STR(k, x) ((struct log_kv){.key = (k), .type = LOG_KV_STR, .v.s = (x)})
#define LOG_U64(k, x) ((struct log_kv){.key = (k), .type = LOG_KV_U64, .v.u = (uint64_t)(x)})
#define LOG_I64(k, x) ((struct log_kv){.key = (k), .type = LOG_KV_I64, .v.i = (int64_t)(x)})
#define LOG_HEX(k, x) ((struct log_kv){.key = (k), .type = LOG_KV_HEX, .v.u = (uint64_t)(x)})
#define LOG_F64(k, x) ((struct log_kv){.key = (k), .type = LOG_KV_F64, .v.f = (double)(x)})
/* A field list: LOG_FIELDS(LOG_U64("CAIRN_TERM", t), LOG_STR("CAIRN_PEER", p)). */
#define LOG_FIELDS(...) ((const struct log_kv[]){__VA_ARGS__, {.key = NULL, .type = LOG_KV_END}})

/*
 * log_setup: choose where events go and the lowest level that is emitted.
 * ident becomes SYSLOG_IDENTIFIER (the string must outlive logging).  Call
 * once at start, and again on SIGHUP to change the level.  Returns 0.
 */
int log_setup(const char *ident, enum log_target target, enum log_level level);

/* log_set_level: change the threshold alone (e.g. on reload). */
void log_set_level(enum log_level level);

/* log_enabled: nonzero if events at level are emitted; lets callers skip costly field building. */
int log_enabled(enum log_level level);

/* log_parse_level: "debug", "info", "notice", "warning" (or "warn"), "err" (or "error"), "crit"; -1 if unknown. */
int log_parse_level(const char *s);

/* log_parse_target: "auto", "journal", "stderr"; -1 if unknown. */
int log_parse_target(const char *s);

/* log_level_name: "info" etc., for display. */
const char *log_level_name(enum log_level level);

/* log_using_journal: nonzero if events currently go to journald. */
int log_using_journal(void);

/*
 * log_emit: emit one event.  message_id is a 128-bit ID in 32 hex digits for
 * catalogued events (units/cairn.catalog), or NULL.  fields is a LOG_FIELDS
 * list or NULL.  Never fails visibly: an event that cannot be written is lost
 * rather than blocking or crashing the caller.
 */
void log_emit(enum log_level level, const char *file, int line, const char *func,
              const char *message_id, const struct log_kv *fields, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));

/*
 * log_limit: at most `burst` events of one kind per window of `window_ms`,
 * for events that load or a remote party can cause at will (slow requests,
 * refused peer input), so that a storm of them cannot flood the journal or
 * slow the member further.  Declare one with LOG_LIMIT_INIT; thread-safe.
 */
struct log_limit {
    unsigned burst;
    uint64_t window_ms;
    pthread_mutex_t mu;
    uint64_t window_start_ms; /* CLOCK_MONOTONIC */
    unsigned count;           /* events let through in this window */
    uint64_t refused;         /* events refused in this window */
};
#define LOG_LIMIT_INIT(burst_, window_ms_) \
    {.burst = (burst_), .window_ms = (window_ms_), .mu = PTHREAD_MUTEX_INITIALIZER}

/* log_limit_pass: true if this event may be logged.  *refused is the number
 * of events refused in the window before (nonzero only for the first event
 * of a new window), for the message to mention. */
bool log_limit_pass(struct log_limit *l, uint64_t *refused);

/* log_limit_note: " (N earlier ones not logged)" in buf for a message to end
 * with, or "" when refused is 0; returns buf (LOG_LIMIT_NOTE_LEN holds any N). */
#define LOG_LIMIT_NOTE_LEN 48
const char *log_limit_note(char *buf, size_t len, uint64_t refused);
/* LOG_LIMIT_NOTE: the same, in a buffer that lives until the end of the
 * enclosing block: for the argument list of the log call itself. */
#define LOG_LIMIT_NOTE(refused) log_limit_note((char[LOG_LIMIT_NOTE_LEN]){0}, LOG_LIMIT_NOTE_LEN, (refused))

#define log_event(level, msgid, fields, ...) \
    log_emit((level), __FILE__, __LINE__, __func__, (msgid), (fields), __VA_ARGS__)
#define log_debug(fields, ...) log_event(LOG_LEVEL_DEBUG, NULL, fields, __VA_ARGS__)
#define log_info(fields, ...) log_event(LOG_LEVEL_INFO, NULL, fields, __VA_ARGS__)
#define log_notice(fields, ...) log_event(LOG_LEVEL_NOTICE, NULL, fields, __VA_ARGS__)
#define log_warning(fields, ...) log_event(LOG_LEVEL_WARNING, NULL, fields, __VA_ARGS__)
#define log_err(fields, ...) log_event(LOG_LEVEL_ERR, NULL, fields, __VA_ARGS__)
#define log_crit(fields, ...) log_event(LOG_LEVEL_CRIT, NULL, fields, __VA_ARGS__)

#endif
