/*
 * The cairn-history 1 file (test/jepsen/HISTORY.md): a strict parser into
 * operations, watch streams, the revision log and fault records, and a small
 * writer the recorder uses to emit each record kind.  It judges nothing:
 * test/jepsen/check.h does.  Strings (keys, values, codes) are interned: an
 * operation holds uint32_t ids and hist_str() turns one back into text.
 */
#ifndef CAIRN_JEPSEN_HISTORY_H
#define CAIRN_JEPSEN_HISTORY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* The completion time of an operation whose outcome is unknown. */
#define HIST_INF INT64_MAX
/* The string id of "~" (absent): id 0 is always it. */
#define HIST_ABSENT 0u
/* Longest line the parser accepts (a range result of many keys is long). */
#define HIST_MAX_LINE (4u * 1024 * 1024)

enum hist_kind {
    HK_PUT, HK_GET, HK_SGET, HK_DEL, HK_CAS, HK_MPUT, HK_MGET, HK_RANGE,
    HK_GRANT, HK_KEEPALIVE, HK_PUTL, HK_REVOKE,
    HK_NKINDS
};

enum hist_status {
    HS_PENDING, /* only while parsing: no completion yet */
    HS_OK,
    HS_FAIL,
    HS_INFO,
};

/*
 * One client operation.  Arrays point into the history's arena.
 *   put/putl K V:  keys[0]=K vals[0]=V (putl: lease)
 *   get/sget/del K: keys[0]=K
 *   cas K E V:     keys[0]=K expect=E vals[0]=V
 *   mput:          keys[i], vals[i], nkeys pairs;  mget: keys[i]
 *   range A B:     keys[0]=A keys[1]=B (B = HIST_ABSENT: no end), nkeys = 2
 *   grant TTL:     ttl;  keepalive/revoke LEASE: lease
 * Result (status HS_OK), -1 where the kind has none:
 *   rev; modrev (get/sget); n (del N, cas 1/0, range N);
 *   rvals: get/sget V (1), mget V1..Vn (nkeys), cas failure CUR (1), range values (n);
 *   rkeys: range keys (n);  res_lease/res_ttl: grant LEASE TTL, keepalive TTL.
 */
struct hist_op {
    uint32_t process;
    uint64_t id;
    int64_t inv, ret; /* ns; ret = HIST_INF unless ok/fail */
    enum hist_kind kind;
    enum hist_status status;
    uint32_t inv_line, end_line; /* end_line 0: no completion in the file */
    uint32_t nkeys;
    uint32_t *keys;
    uint32_t *vals;
    uint32_t expect;
    int64_t lease, ttl;
    int64_t rev, modrev, n;
    uint32_t *rvals, *rkeys;
    int64_t res_lease, res_ttl;
    uint32_t code; /* fail/info CODE */
};

/* One event as a watcher delivered it, or one event of the revision log. */
struct hist_event {
    int64_t t; /* delivery time; 0 in the log */
    int64_t rev;
    bool put;
    uint32_t key, val; /* val HIST_ABSENT for a delete */
    int64_t lease;     /* log only: the put's LEASE, 0 if none */
    uint32_t line;
};

struct hist_watch {
    uint64_t id;
    int64_t start_t;
    uint32_t key; /* the key, or the prefix (whose token ends in '/') */
    bool prefix;
    int64_t start_rev;
    struct hist_event *ev;
    size_t nev, capev;
    bool ended;
    int64_t end_t;
    uint32_t reason;
    uint32_t line;
};

struct hist_fault {
    int64_t t;
    bool start;
    uint32_t name;
    char *args; /* the rest of the line, "" if none */
    uint32_t line;
};

struct hist_meta {
    char *name, *value; /* value: the rest of the line */
};

struct hist_strtab;
struct hist_arena;

struct history {
    struct hist_op *ops; /* in invocation order of the file */
    size_t nops;
    struct hist_watch *watches;
    size_t nwatches;
    struct hist_event *log; /* in file order */
    size_t nlog;
    bool has_log; /* a logstart was read */
    int64_t logstart, logend; /* logend -1 if no logend record */
    struct hist_fault *faults;
    size_t nfaults;
    struct hist_meta *meta;
    size_t nmeta;
    int64_t tmin, tmax;    /* earliest and latest time in the file */
    size_t nunfinished;    /* invocations without completion, read as info */
    uint32_t maxprocess;
    /* private */
    size_t capops, capwatches, caplog, capfaults, capmeta;
    struct hist_strtab *strs;
    struct hist_arena *arena;
};

/*
 * hist_parse_file / hist_parse_buf: read a whole history.  Returns 0 and
 * *out (free with hist_free), or a negative code and a message in err
 * ("line 12: ok for unknown operation id 7"): -EINVAL for a malformed file,
 * -errno when the file cannot be read, -ENOMEM.  An invocation without a
 * completion at the end of the file is read as info (counted in nunfinished).
 */
int hist_parse_file(const char *path, struct history **out, char *err, size_t errlen);
int hist_parse_buf(const char *buf, size_t len, struct history **out, char *err, size_t errlen);
void hist_free(struct history *h);

/* The text of string id; "~" for HIST_ABSENT; "?" for an id not in h. */
const char *hist_str(const struct history *h, uint32_t id);
/* The id of s if the history holds it, else UINT32_MAX. */
uint32_t hist_lookup(const struct history *h, const char *s);
/* How many string ids exist (ids are 0 .. hist_nstr()-1). */
uint32_t hist_nstr(const struct history *h);
/* "put", "get", ... */
const char *hist_kind_name(enum hist_kind k);
/* The value of meta NAME (the first one), or NULL. */
const char *hist_meta_get(const struct history *h, const char *name);

/*
 * hist_format_op: "p3 #117 put k1 v9 -> ok 42 [1.234567890s .. 1.234600000s]"
 * into buf (always terminated; times relative to h->tmin).  Returns buf.
 */
char *hist_format_op(const struct history *h, const struct hist_op *op, char *buf, size_t len);
/* A time relative to h->tmin as "1.234567890s" ("inf" for HIST_INF), in buf. */
char *hist_format_time(const struct history *h, int64_t t, char *buf, size_t len);

/*
 * The writer.  Each function writes one whole record (one fwrite, so lines
 * from several threads sharing f never interleave) and returns 0, -EINVAL if
 * a token is not one (empty, holds a space or newline; keys and values outside
 * [A-Za-z0-9._/:-]), or -EIO.  Numbers are written by the caller as tokens
 * in args/res (e.g. "42"), so one call serves every operation kind.
 */
int hist_write_header(FILE *f);
int hist_write_meta(FILE *f, const char *name, const char *value);
int hist_write_inv(FILE *f, unsigned p, uint64_t id, int64_t t, const char *op,
                   const char *const *args, size_t nargs);
int hist_write_ok(FILE *f, unsigned p, uint64_t id, int64_t t, const char *const *res, size_t nres);
int hist_write_fail(FILE *f, unsigned p, uint64_t id, int64_t t, const char *code);
int hist_write_info(FILE *f, unsigned p, uint64_t id, int64_t t, const char *code);
/* key_or_prefix: a prefix ends in '/'. */
int hist_write_watch_start(FILE *f, uint64_t w, int64_t t, const char *key_or_prefix, int64_t start_rev);
/* val NULL or "~" for a delete. */
int hist_write_event(FILE *f, uint64_t w, int64_t t, int64_t rev, bool put, const char *key,
                     const char *val);
int hist_write_watch_end(FILE *f, uint64_t w, int64_t t, const char *reason);
int hist_write_logstart(FILE *f, int64_t rev);
/* lease 0: none. */
int hist_write_log(FILE *f, int64_t rev, bool put, const char *key, const char *val, int64_t lease);
int hist_write_logend(FILE *f, int64_t rev);
/* args: the rest of the line (may hold spaces, not newlines), NULL for none. */
int hist_write_fault(FILE *f, int64_t t, bool start, const char *name, const char *args);

#endif
