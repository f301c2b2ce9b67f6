/*
 * What the check_*.c files share: a growing string for report texts, adding
 * a finding to a result, and the revision log indexed per key.
 */
#ifndef CAIRN_JEPSEN_CHECK_INTERNAL_H
#define CAIRN_JEPSEN_CHECK_INTERNAL_H

#include "test/jepsen/check.h"

/* A growing, always terminated string; on no memory it stops growing (ok = false). */
struct sb {
    char *s;
    size_t len, cap;
    bool nomem;
};
void sb_printf(struct sb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* One operation as a report line: "  p3 #117 put k v -> ok 42 [t0 .. t1]  (line 12)\n". */
void sb_op(struct sb *b, const struct history *h, const struct hist_op *op, const char *prefix);
/* Take the text (caller frees); b is empty after. */
char *sb_take(struct sb *b);

/*
 * finding_add: count a violation in res and keep it if fewer than
 * o->max_findings are kept.  text is taken (freed here if not kept).
 * Returns 0 or -ENOMEM.
 */
int finding_add(struct check_result *res, const struct check_opts *o, const char *kind, const char *key,
                char *text);

/* The revision log per key: events of one key in revision order. */
struct log_index {
    const struct history *h;
    uint32_t nstr;
    uint32_t *kstart, *kcount; /* per string id: a slice of ev */
    uint32_t *ev;              /* indexes into h->log */
    uint32_t *val_writer;      /* per string id: index + 1 of the op that wrote this value, 0 none */
};
int log_index_build(struct log_index *li, const struct history *h);
void log_index_free(struct log_index *li);
/*
 * log_state_at: key's value at revision rev by the log.  Returns 1 and
 * *val (HIST_ABSENT if absent), *modrev (0 if absent), *lease (0 if none); or
 * 0 when the log cannot tell (no event of key at or below rev and the log
 * does not start at revision 1).
 */
int log_state_at(const struct log_index *li, uint32_t key, int64_t rev, uint32_t *val, int64_t *modrev,
                 int64_t *lease);
/* The position in the key's slice of the first event with revision > rev (0..kcount). */
uint32_t log_key_upper(const struct log_index *li, uint32_t key, int64_t rev);
/* The log event of key at revision rev, or NULL. */
const struct hist_event *log_event_at(const struct log_index *li, uint32_t key, int64_t rev);

/*
 * log_rebuild (check_rebuild.c): when h's log is compacted (logstart > 1)
 * and its prefix watchers together delivered every revision from the first
 * write up to logstart, make *out a shallow copy of h whose log starts at 1:
 * those revisions' events (the first watcher's that delivered each), then
 * h's log.  Returns 1 (free *ev_out once done with *out); 0 when it does not
 * apply or cannot (why then says why, "" if the log was not compacted);
 * -ENOMEM.
 */
int log_rebuild(const struct history *h, struct history *out, struct hist_event **ev_out, char *why, size_t whylen);

/* Does the op write (create a revision) when ok? */
bool op_is_write(const struct hist_op *op);

#endif
