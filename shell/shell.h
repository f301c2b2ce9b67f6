/*
 * cairn, the SQL admin shell: how its parts meet.  An in-memory SQLite
 * database holds virtual tables (vt_*.c) that read and write the cluster
 * through libcairn; engine.c runs statements, txn.c turns a statement or a
 * BEGIN ... COMMIT into one Raft Txn, output.c prints results, meta.c and
 * watch.c run backslash commands, complete.c feeds readline, main.c parses
 * options and reads input.  Nothing here is a public interface: the shell is
 * a program, not a library.
 */
#ifndef CAIRN_SHELL_SHELL_H
#define CAIRN_SHELL_SHELL_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <sqlite3.h>

#include "client/cairn.h"

/* Set by SIGINT: cancel what runs now (statement, watch, keep-alive). */
extern volatile sig_atomic_t shell_interrupted;

/* ------------------------------------------------------------------ bytes */

/* A growable byte buffer; p is NUL-terminated whenever n < cap. */
struct sbuf {
    char *p;
    size_t n, cap;
};

int sbuf_add(struct sbuf *b, const void *data, size_t n);
int sbuf_puts(struct sbuf *b, const char *s);
int sbuf_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sbuf_free(struct sbuf *b);

/* bytes_utf8: nonzero if s[0..n) is text: valid UTF-8 without control bytes but tab, CR, LF. */
int bytes_utf8(const void *s, size_t n);
/* bytes_quote: s as a double-quoted string with C escapes, for messages. */
int bytes_quote(struct sbuf *out, const void *s, size_t n, size_t max);
/* bytes_escape: s with non-printable bytes as \n \t \r \xNN (for tables). */
int bytes_escape(struct sbuf *out, const void *s, size_t n);
int bytes_base64(struct sbuf *out, const void *s, size_t n);
/* bytes_unbase64: decode; returns the length or -1 on bad input. */
long bytes_unbase64(const char *s, size_t n, uint8_t *out);
/* bytes_cmp: memcmp order, shorter first on a tie (the store's key order). */
int bytes_cmp(const void *a, size_t an, const void *b, size_t bn);
/* bytes_dup: a malloc'd copy (never NULL for n == 0 unless out of memory). */
void *bytes_dup(const void *s, size_t n);

/*
 * value_bytes: the bytes SQL value v stands for as a key or value: a BLOB's
 * bytes, otherwise its text (so 5 is "5").  NULL gives *n = 0 and returns
 * NULL.  The pointer is v's, valid until v changes.
 */
const uint8_t *value_bytes(sqlite3_value *v, size_t *n);
/* result_bytes: set ctx to TEXT if the bytes are UTF-8 without NUL, else BLOB (copied). */
void result_bytes(sqlite3_context *ctx, const void *s, size_t n);

/* ---------------------------------------------------------------- the txn */

/* A key read by the statement or transaction, with what was seen. */
struct rkey {
    uint8_t *key;
    size_t klen;
    int64_t mod, create, version, lease; /* mod 0: the key did not exist */
    bool in_span;                        /* read by a scan that records its span */
    bool used;                           /* slot taken (open addressing) */
};

/* A key range read by a scan at revision rev: [lo, hi), hi empty = no end; nseen keys came back. */
struct rspan {
    uint8_t *lo, *hi;
    size_t lolen, hilen;
    int64_t rev;
    size_t nseen;
};

enum wop_kind { WOP_PUT, WOP_DELETE };

/* A pending write: the merged effect of the transaction on one key. */
struct wop {
    uint8_t *key, *value;
    size_t klen, vlen;
    int64_t lease;
    enum wop_kind kind;
    bool ignore_value, ignore_lease; /* keep the stored value / lease */
};

/* An undo record: the pending op of a key before a write (present = false: none). */
struct wundo {
    struct wop prev;
    uint8_t *key;
    size_t klen;
    bool present;
};

struct shell_txn {
    bool recording;   /* remember the keys read (a write statement, or BEGIN) */
    int64_t snap_rev; /* revision every current read uses; 0 = not pinned yet */
    struct rkey *keys;
    size_t nkeys, keycap;
    bool keys_dropped; /* over the bound: some scanned keys only have their span */
    struct rspan *spans;
    size_t nspans, spancap;
    struct wop *pend; /* sorted by key */
    size_t npend, pendcap;
    struct wundo *undo;
    size_t nundo, undocap;
    size_t *sp; /* undo depth at each savepoint */
    size_t nsp, spcap;
};

/* --------------------------------------------------------------- the shell */

enum out_format { FMT_TABLE, FMT_JSON, FMT_CSV, FMT_LINE };

/* How to reach the cluster; strings are malloc'd and owned by struct conn_opts. */
struct conn_opts {
    char *endpoints; /* comma-separated URLs */
    char *cacert, *cert, *key, *server_name;
    int timeout_ms;
};

/* One typed cell handed to the output module; s is not owned. */
struct ocell {
    int type; /* SQLITE_NULL, _INTEGER, _FLOAT, _TEXT, _BLOB */
    int64_t i;
    double d;
    const char *s;
    size_t n;
};

struct out_state; /* output.c */

struct shell {
    sqlite3 *db;
    struct cairn_client *client;
    struct conn_opts conn;
    char **eps; /* the endpoint URLs as opened */
    size_t neps;
    bool serializable;
    bool trace; /* print each cluster call on stderr */
    int max_txn_ops;
    struct shell_txn txn;

    /* output */
    enum out_format format;
    bool expanded, timing, interactive, quiet;
    FILE *out;
    char *out_path;
    struct out_state *os;

    /* what the running statement did, for its footer */
    int64_t rev_lo, rev_hi;  /* revisions the results were read at */
    int64_t commit_rev;      /* revision of the commit this statement made; 0 = none */
    int64_t last_commit_rev; /* of the last commit of the session */
    struct sbuf notice;      /* lines from the tables (lease granted, ...) */
    const char *denied;      /* why the authorizer refused the statement being prepared */
};

/* -------------------------------------------------------------- conn.c */

/* conn_open: connect sh to sh->conn (or the default endpoint).  0 or -1 with the reason on stderr. */
int conn_open(struct shell *sh);
void conn_close(struct shell *sh);
void conn_opts_free(struct conn_opts *o);

/*
 * shell_call: cairn_call that Ctrl-C abandons (returns -EINTR, the reply is
 * dropped when it comes) unless uninterruptible.  Traces when sh->trace.
 * On failure msg (may be NULL) gets "NAME: the member's message".
 */
int shell_call(struct shell *sh, const Cairn__Request *req, const struct cairn_call_opts *opts,
               bool uninterruptible, Cairn__Response **resp, struct cairn_error_detail *err);
/* shell_call_expect: shell_call that insists on reply body want (a Cairn__Response__BodyCase); err required. */
int shell_call_expect(struct shell *sh, const Cairn__Request *req, int want,
                      const struct cairn_call_opts *opts, bool uninterruptible,
                      Cairn__Response **resp, struct cairn_error_detail *err);
/* shell_call_error: "what: CODE: message (compact revision N)" into a sqlite3_mprintf'd string. */
char *shell_call_error(const char *what, int rc, const struct cairn_error_detail *err);
/* shell_note_rev: the running statement's results were read at rev. */
void shell_note_rev(struct shell *sh, int64_t rev);
/* shell_sleep_ms: sleep, cut short by Ctrl-C; returns -EINTR if it was. */
int shell_sleep_ms(int ms);
/* member_id_parse: a member ID from SQL (hex text, 0x..., or an integer); 0 on failure. */
uint64_t member_id_parse(sqlite3_value *v);
/* member_id_text: the 16-digit hex form. */
void member_id_text(uint64_t id, char out[17]);
/* shell_find_member: the endpoint index of a member given by ID, name or URL; -1 if none answers. */
int shell_find_member(struct shell *sh, sqlite3_value *who, uint64_t *id, char **why);
/* shell_find_leader: the endpoint index of the member that leads; -1 if none. */
int shell_find_leader(struct shell *sh, uint64_t *leader_id, char **why);

/* --------------------------------------------------------------- txn.c */

void txn_init(struct shell_txn *t);
/* txn_reset: forget reads, writes and savepoints. */
void txn_reset(struct shell_txn *t);
void txn_free(struct shell_txn *t);
/* txn_note_key: record that key was read with kv (NULL: absent).  0 or SQLITE_NOMEM. */
int txn_note_key(struct shell_txn *t, const void *key, size_t klen, const Cairn__KeyValue *kv,
                 bool in_span);
/* txn_find_key: the recorded read of key, or NULL. */
const struct rkey *txn_find_key(const struct shell_txn *t, const void *key, size_t klen);
int txn_note_span(struct shell_txn *t, const void *lo, size_t lolen, const void *hi, size_t hilen,
                  int64_t rev, size_t nseen);
/* txn_pending_find: index of the first pending op with key >= key (npend if none). */
size_t txn_pending_find(const struct shell_txn *t, const void *key, size_t klen);
/* txn_pending_get: the pending op on key, or NULL. */
const struct wop *txn_pending_get(const struct shell_txn *t, const void *key, size_t klen);
/* txn_write: merge op (its buffers copied) into the pending writes.  0, or an SQLite code with *msg. */
int txn_write(struct shell_txn *t, const struct wop *op, char **msg);
void txn_savepoint(struct shell_txn *t, int n);
void txn_release(struct shell_txn *t, int n);
void txn_rollback_to(struct shell_txn *t, int n);
/* txn_discard_writes: drop the pending writes (ROLLBACK). */
void txn_discard_writes(struct shell_txn *t);
/*
 * txn_commit: send the pending writes as one Txn guarded by the reads.
 * 0 (nothing pending is 0 too) or an SQLite code with *msg saying which key
 * conflicted or what the member said.
 */
int txn_commit(struct shell *sh, char **msg);

/* --------------------------------------------------------------- vtabs */

int vt_keys_register(struct shell *sh);
int vt_revisions_register(struct shell *sh);
int vt_leases_register(struct shell *sh);
int vt_members_register(struct shell *sh);
int vt_alarms_register(struct shell *sh);
int vt_status_register(struct shell *sh);
/* users, roles, permissions (vt_users.c) */
int vt_users_register(struct shell *sh);
int functions_register(struct shell *sh);

/*
 * Plans shared by keys and revisions: the key constraints xBestIndex can
 * give the cluster, decoded in xFilter into points or one range.
 */
struct keyplan {
    bool empty;                /* no key can match */
    bool points;               /* only the keys in pts */
    uint8_t **pts;             /* sorted, unique, owned */
    size_t *ptlen, npts;
    uint8_t *lo, *hi;          /* [lo, hi): lo NULL = from the first key, hi NULL = no end */
    size_t lolen, hilen;
};

/* plan_key_op: the idxStr token for a usable key constraint op, or NULL. */
const char *plan_key_op(unsigned char op);
/* plan_key_apply: narrow p by token tok with value v.  0 or SQLITE_NOMEM. */
int plan_key_apply(struct keyplan *p, const char *tok, sqlite3_value *v);
/* plan_key_finish: intersect points with the range, sort them (descending if desc). */
int plan_key_finish(struct keyplan *p, bool desc);
void plan_key_free(struct keyplan *p);
/* prefix_end: the first key after every key starting with prefix; 0 length = no end. */
size_t prefix_end(const uint8_t *prefix, size_t n, uint8_t *out);
/* plan_prefix: the literal prefix of a LIKE ('%', '_') or GLOB ('*', '?', '[') pattern. */
size_t plan_prefix(const char *pat, size_t n, bool glob, bool *exact);

/* A small table's rows, for the cluster tables that fit in memory. */
struct vrows {
    int ncols;
    size_t nrows, cap;
    struct ocell *cells; /* nrows * ncols; TEXT and BLOB cells own their bytes */
    int64_t *rowids;
};
int vrows_add(struct vrows *r, int64_t rowid);
int vrows_int(struct vrows *r, int col, int64_t v);
int vrows_text(struct vrows *r, int col, const char *s, size_t n);
int vrows_bytes(struct vrows *r, int col, const void *s, size_t n); /* TEXT or BLOB by content */
void vrows_clear(struct vrows *r);
/* A cursor over vrows: tables embed it first in their cursor. */
struct vrows_cursor {
    sqlite3_vtab_cursor base;
    struct vrows rows;
    size_t at;
};
int vrows_cursor_open(sqlite3_vtab *vt, sqlite3_vtab_cursor **out);
int vrows_cursor_close(sqlite3_vtab_cursor *c);
int vrows_cursor_next(sqlite3_vtab_cursor *c);
int vrows_cursor_eof(sqlite3_vtab_cursor *c);
int vrows_cursor_column(sqlite3_vtab_cursor *c, sqlite3_context *ctx, int col);
int vrows_cursor_rowid(sqlite3_vtab_cursor *c, sqlite3_int64 *rowid);
/* vt_error: set vt's error message (printf-style) and return SQLITE_ERROR. */
int vt_error(sqlite3_vtab *vt, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* vt_call_error: set vt's message from a failed call and return the SQLite code for it. */
int vt_call_error(sqlite3_vtab *vt, const char *what, int rc, const struct cairn_error_detail *err);
/* vt_declare: declare the schema and the options every cairn table shares. */
int vt_declare(sqlite3 *db, const char *schema);

/* ------------------------------------------------------------ engine.c */

/* engine_open: the database, its tables and functions.  0 or -1 (printed). */
int engine_open(struct shell *sh);
void engine_close(struct shell *sh);
/* engine_run: run every statement of sql.  0, or -1 after printing the first error. */
int engine_run(struct shell *sh, const char *sql);
/* engine_table_names / columns for completion and \d: NULL-terminated static lists. */
extern const char *const engine_tables[];
/* shell_notice: a line the running statement reports (printed after it, or in its JSON summary). */
void shell_notice(struct shell *sh, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ------------------------------------------------------------ output.c */

int out_init(struct shell *sh);
void out_free(struct shell *sh);
/* out_start: a result with these column names begins. */
void out_start(struct shell *sh, int ncols, const char *const *names);
void out_row(struct shell *sh, const struct ocell *cells);
/* out_finish: end the result; extra (may be NULL) goes in the table footer. */
void out_finish(struct shell *sh, const char *extra);
/* out_abort: end a result cut short by an error: the rows so far, no footer. */
void out_abort(struct shell *sh);
/* out_command: the summary of a statement that returns no rows. */
void out_command(struct shell *sh, const char *command, int64_t rows, bool has_rows,
                 int64_t revision, bool pending);
/* out_error: print "error: msg" on stderr (one line). */
void out_error(struct shell *sh, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* out_text: a line of free text to the output (table/line formats) or stderr. */
void out_text(struct shell *sh, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* out_event: one watch event as a line (json: an object per line). */
void out_event(struct shell *sh, const char *type, const Cairn__KeyValue *kv);

/* -------------------------------------------------------------- meta.c */

/* meta_run: run one backslash command line.  0, -1 on error (printed), 1 for \q. */
int meta_run(struct shell *sh, const char *line);
extern const char *const meta_commands[];

/* ------------------------------------------------------------- watch.c */

int watch_run(struct shell *sh, const char *args);
int lease_keepalive_run(struct shell *sh, int64_t id);

/* ---------------------------------------------------------- complete.c */

void complete_init(struct shell *sh);

#endif
