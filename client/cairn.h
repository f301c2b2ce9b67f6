/*
 * libcairn: the C client library of Cairn.  One struct cairn_client talks to
 * a cluster through a list of member endpoints (tcp://, tls+tcp://, ipc://),
 * one nng req0 socket per endpoint, many calls in flight per connection
 * through nng contexts.  It owns the connections, round-robin with fail-over,
 * the retry rules, the KV helpers and long-poll watches that resume on
 * another member; it does not cache, poll watches or keep leases alive on
 * its own.
 *
 * Installed as <cairn/cairn.h> beside <cairn/errors.h> and the generated
 * <cairn/proto/cairn.pb-c.h>; in the source tree it finds base/errors.h and
 * build/proto/ through the -I. -Ibuild the Makefile passes.
 *
 * Threads: every function may be called from any thread at the same time on
 * the same client, except cairn_close, which must be called once, after the
 * caller's other calls have returned, and never from a callback.
 *
 * Errors: functions return 0 or a negative code: -CAIRN_E_xxx from errors.h
 * (the code a member put in Response.error, negated), or -errno.  The codes
 * the library produces itself:
 *   -CAIRN_E_UNAVAILABLE  no member could be reached before the deadline; the
 *                         request was never handed to a connection, so a write
 *                         was certainly not applied.
 *   -CAIRN_E_TIMEOUT      the deadline passed, or the connection died, after
 *                         the request was sent: the outcome is unknown (a
 *                         write may or may not have been applied).
 *   -CAIRN_E_MALFORMED    a reply could not be decoded.
 *   -CAIRN_E_CONFIG       a bad configuration (the detail message says which).
 *   -ECANCELED            the client was closed while the call was in flight.
 *   -EAGAIN               too many asynchronous calls in flight.
 *   -EINVAL / -ENOMEM     bad arguments / out of memory.
 */
#ifndef CAIRN_CLIENT_CAIRN_H
#define CAIRN_CLIENT_CAIRN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * errors.h sits beside this header once installed (the quoted form searches
 * this header's own directory first); in the tree it is base/errors.h.
 */
#if defined(__has_include)
#if __has_include("errors.h")
#include "errors.h"
#else
#include "base/errors.h"
#endif
#else
#include "errors.h"
#endif
#ifndef CAIRN_BASE_ERRORS_H
#error "cairn.h: found an errors.h that is not Cairn's"
#endif

/* Generated from proto/cairn.proto: Cairn__Request, Cairn__Response, ... */
#include "proto/cairn.pb-c.h"

#ifdef __cplusplus
extern "C" {
#endif

struct cairn_client;

/* ------------------------------------------------------------ configuration */

/* TLS for tls+tcp:// endpoints.  Every path is a PEM file. */
struct cairn_tls {
    const char *ca_file;     /* CAs that sign the members' certificates; required for tls+tcp */
    const char *cert_file;   /* client certificate (mutual TLS); NULL = none */
    const char *key_file;    /* its private key; NULL = in cert_file */
    /*
     * The DNS name every member certificate must carry.  NULL = the host of
     * each endpoint URL, which must then be a DNS name (mbedTLS cannot check
     * IP address SANs).  The name is always set: without it nng would accept
     * any certificate the CA signed.
     */
    const char *server_name;
};

struct cairn_config {
    const char *const *endpoints; /* URLs, at least one, at most CAIRN_MAX_ENDPOINTS */
    size_t n_endpoints;
    struct cairn_tls tls;
    /*
     * How long one attempt waits for a connection to a member before moving
     * on to the next endpoint.  0 = CAIRN_DEFAULT_DIAL_TIMEOUT_MS.
     */
    int dial_timeout_ms;
    /* Deadline of a call that gives none.  0 = CAIRN_DEFAULT_CALL_TIMEOUT_MS. */
    int call_timeout_ms;
    /* Token put in every Request that carries none; NULL = none. */
    const char *auth_token;
    /* Largest reply accepted.  0 = CAIRN_DEFAULT_MAX_RESPONSE_BYTES. */
    size_t max_response_bytes;
    /* Bound on calls in flight (sync and async).  0 = CAIRN_DEFAULT_MAX_IN_FLIGHT. */
    unsigned max_in_flight;
    /*
     * Run the callbacks of asynchronous calls (cairn_call_async and the
     * watch functions) on the thread that read the reply, when nng lets it
     * (tcp:// endpoints, replies up to 16 KiB): one thread woken fewer per
     * call, tens of microseconds on a small machine.  That thread serves every
     * connection of the client, so a callback must then be short as well as
     * never block.  Synchronous calls always complete this way (their
     * callback only wakes the caller).
     */
    bool inline_callbacks;
};

#define CAIRN_MAX_ENDPOINTS 64
#define CAIRN_DEFAULT_DIAL_TIMEOUT_MS 2000
/* Above the member's --request-timeout (7 s) so its TIMEOUT reply arrives first. */
#define CAIRN_DEFAULT_CALL_TIMEOUT_MS 10000
/* 64 MiB: large ranges and snapshot chunks; nng's own default is 1 MiB. */
#define CAIRN_DEFAULT_MAX_RESPONSE_BYTES ((size_t)64 << 20)
#define CAIRN_DEFAULT_MAX_IN_FLIGHT 4096

/*
 * What went wrong with a call, or who answered it.  Filled on success too
 * (code 0, endpoint, attempts, member_id).
 */
struct cairn_error_detail {
    int code;                 /* the return value: 0 or negative */
    char message[512];        /* the member's message, or the library's; "" on success */
    int64_t compact_revision; /* with -CAIRN_E_COMPACTED: read at or after this revision */
    uint64_t member_id;       /* the member that answered (header or error), 0 if none */
    int endpoint;             /* index of the endpoint of the last attempt; -1 = none */
    int attempts;             /* attempts made (sends tried on an endpoint) */
};

/* Options of one call; zeroed or NULL means all defaults. */
struct cairn_call_opts {
    int timeout_ms; /* deadline of the whole call, retries included; 0 = the client's */
    /*
     * Send only to endpoint `endpoint` (an index into the configured list),
     * with no fail-over: for per-member calls like Status.
     */
    bool pinned;
    unsigned endpoint;
};

/*
 * cairn_open: create a client for cfg and start connecting to every endpoint
 * in the background (the connections come up while the first calls wait).
 * Copies everything it needs from cfg.  Returns 0 and *out, or a negative
 * code with err (may be NULL) saying which option is wrong.  The caller owns
 * *out and frees it with cairn_close.
 */
int cairn_open(const struct cairn_config *cfg, struct cairn_client **out,
               struct cairn_error_detail *err);

/*
 * cairn_close: cancel every call in flight (each completes once, with
 * -ECANCELED), wait for their callbacks to return, then close the contexts,
 * sockets and TLS configurations.  Blocks no longer than the callbacks take
 * plus 2 s per socket: a socket close nng has not finished by then is
 * abandoned, and that socket's memory is leaked rather than freed.  Must not
 * be called from a callback.  NULL is ignored.
 */
void cairn_close(struct cairn_client *c);

/* cairn_endpoint_count: how many endpoints c was opened with. */
size_t cairn_endpoint_count(const struct cairn_client *c);

/* cairn_endpoint_url: the URL of endpoint i (owned by c), or NULL if out of range. */
const char *cairn_endpoint_url(const struct cairn_client *c, size_t i);

/* cairn_endpoint_connected: nonzero if endpoint i has a live connection now. */
int cairn_endpoint_connected(const struct cairn_client *c, size_t i);

/*
 * cairn_set_auth_token: replace the token put in requests that carry none
 * (copied; NULL clears it).  Returns 0 or -ENOMEM.
 */
int cairn_set_auth_token(struct cairn_client *c, const char *token);

/* -------------------------------------------------------------- generic call */

/*
 * cairn_call: send req (not modified; the client's auth token is added when
 * req->auth_token is NULL or empty) and wait for the reply.
 *
 * Endpoints are taken round-robin, preferring connected ones.  A read (Range,
 * a Txn made only of ranges, History, Status, MemberList, the lease, alarm
 * and auth queries, HashKV) is retried on another endpoint, within the
 * deadline, when the connection fails or the member answers NO_LEADER,
 * UNAVAILABLE, STOPPED, LEARNER_NOT_SERVING, LEADER_TRANSFER,
 * TOO_MANY_REQUESTS or TIMEOUT.  Any request answered NOT_LEADER (a member
 * refusing what only the leader does, having done nothing: keep-alives,
 * MemberPromote, MoveLeader) is taken to the next endpoint too.  Any other
 * request is retried only while it was never handed to a connection; once
 * sent, a lost connection or the deadline gives -CAIRN_E_TIMEOUT (outcome
 * unknown) and it is never resent.
 *
 * Returns 0 with *resp (owned by the caller, freed with cairn_response_free)
 * or a negative code with *resp = NULL; a member's error reply becomes the
 * negated Response.error.code, its message and compact_revision in err.
 * resp and err may be NULL.
 */
int cairn_call(struct cairn_client *c, const Cairn__Request *req,
               const struct cairn_call_opts *opts, Cairn__Response **resp,
               struct cairn_error_detail *err);

/*
 * Completion of an asynchronous call: rc and err as cairn_call's; resp is
 * owned by the callback (free it with cairn_response_free), NULL on error.
 * err is valid only during the callback.  Runs on one of nng's threads: it
 * must not block (no cairn_call, no cairn_close), but may start new
 * asynchronous calls.
 */
typedef void (*cairn_callback)(void *arg, int rc, Cairn__Response *resp,
                               const struct cairn_error_detail *err);

/*
 * cairn_call_async: start req (packed at once; req may be freed on return)
 * and return.  On 0, cb(arg, ...) is called exactly once, possibly before
 * this function returns.  On a negative return (-EAGAIN, -ECANCELED,
 * -EINVAL, -ENOMEM) cb is never called.
 */
int cairn_call_async(struct cairn_client *c, const Cairn__Request *req,
                     const struct cairn_call_opts *opts, cairn_callback cb, void *arg);

/* cairn_response_free: free a response from this library.  NULL is ignored. */
void cairn_response_free(Cairn__Response *resp);

/* ---------------------------------------------------------------- KV helpers */

/* A byte string that is not copied: data may be NULL when len is 0. */
struct cairn_bytes {
    const void *data;
    size_t len;
};
/* CAIRN_STR("abc"): the bytes of a C string, without its NUL. */
#define CAIRN_STR(s) ((struct cairn_bytes){(s), __builtin_strlen(s)})

struct cairn_put {
    struct cairn_bytes key, value;
    int64_t lease;     /* 0 = none */
    bool prev_kv;      /* return the previous key-value in resp->put->prev_kv */
    bool ignore_value; /* keep the current value */
    bool ignore_lease; /* keep the current lease */
};

struct cairn_range {
    struct cairn_bytes key;
    struct cairn_bytes range_end; /* empty: only key; "\0": every key >= key */
    int64_t limit;                /* 0 = no limit */
    int64_t revision;             /* 0 = current */
    Cairn__RangeRequest__SortOrder sort_order;
    Cairn__RangeRequest__SortTarget sort_target;
    bool serializable, keys_only, count_only;
    int64_t min_mod_revision, max_mod_revision;
    int64_t min_create_revision, max_create_revision;
};

struct cairn_delete {
    struct cairn_bytes key;
    struct cairn_bytes range_end;
    bool prev_kv; /* return the deleted key-values in resp->delete_range->prev_kvs */
};

struct cairn_history {
    struct cairn_bytes key;
    struct cairn_bytes range_end;
    int64_t min_revision, max_revision; /* inclusive; 0 = unbounded */
    int64_t limit;                      /* records per page; 0 = the member's default */
    int64_t after_revision, after_sub;  /* continue after this record (next_revision/next_sub) */
    bool keys_only, serializable;
};

/*
 * cairn_put: Put.  Returns 0 or a negative code.  *resp (optional, owned by
 * the caller) holds the header and, with prev_kv, resp->put->prev_kv.
 */
int cairn_put(struct cairn_client *c, const struct cairn_put *put,
              const struct cairn_call_opts *opts, Cairn__Response **resp,
              struct cairn_error_detail *err);

/*
 * cairn_get: the current value of one key.  Returns 0 with *resp (required,
 * owned by the caller) and *kv pointing into it, or *kv = NULL when the key
 * does not exist; or a negative code.
 */
int cairn_get(struct cairn_client *c, struct cairn_bytes key,
              const struct cairn_call_opts *opts, Cairn__Response **resp,
              const Cairn__KeyValue **kv, struct cairn_error_detail *err);

/*
 * cairn_range_call: Range with every RangeRequest option.  The key-values
 * are in (*resp)->range->kvs, owned by *resp (required).
 */
int cairn_range_call(struct cairn_client *c, const struct cairn_range *r,
                     const struct cairn_call_opts *opts, Cairn__Response **resp,
                     struct cairn_error_detail *err);

/*
 * cairn_delete_range: DeleteRange.  *deleted (optional) gets the number of
 * keys deleted; *resp (optional) the reply with prev_kvs.
 */
int cairn_delete_range(struct cairn_client *c, const struct cairn_delete *d,
                       const struct cairn_call_opts *opts, int64_t *deleted,
                       Cairn__Response **resp, struct cairn_error_detail *err);

/*
 * cairn_compact: compact history below revision; with physical, return only
 * once the store has dropped it.
 */
int cairn_compact(struct cairn_client *c, int64_t revision, bool physical,
                  const struct cairn_call_opts *opts, struct cairn_error_detail *err);

/*
 * cairn_history_page: one page of History.  (*resp)->history has records,
 * more, next_revision and next_sub; give the last two back as after_revision
 * and after_sub for the next page.
 */
int cairn_history_page(struct cairn_client *c, const struct cairn_history *h,
                       const struct cairn_call_opts *opts, Cairn__Response **resp,
                       struct cairn_error_detail *err);

/*
 * cairn_history_each: every record of History h, page after page, handed to
 * fn in revision order (the record is valid during the call only).  fn
 * returns 0 to go on or anything else to stop, which cairn_history_each then
 * returns.  opts applies to each page.  Returns 0 or a negative code.
 */
typedef int (*cairn_history_fn)(void *arg, const Cairn__HistoryRecord *rec);
int cairn_history_each(struct cairn_client *c, const struct cairn_history *h,
                       const struct cairn_call_opts *opts, cairn_history_fn fn, void *arg,
                       struct cairn_error_detail *err);

/*
 * cairn_status: Status of one member: pin it with opts->pinned and
 * opts->endpoint, or any.  The answer is (*resp)->status, owned by *resp
 * (required).
 */
int cairn_status(struct cairn_client *c, const struct cairn_call_opts *opts,
                 Cairn__Response **resp, struct cairn_error_detail *err);

/* ----------------------------------------------------------------------- Txn */

/*
 * A transaction under construction: compares, then the operations to run if
 * they all hold (success) or else (failure).  Every byte string given is
 * copied.  Not thread-safe: build it in one thread.
 */
struct cairn_txn;

enum cairn_txn_branch { CAIRN_TXN_SUCCESS, CAIRN_TXN_FAILURE };

/* cairn_txn_new: an empty transaction, owned by the caller; NULL if out of memory. */
struct cairn_txn *cairn_txn_new(void);

/* cairn_txn_free: free t and everything it holds (nested txns included).  NULL is ignored. */
void cairn_txn_free(struct cairn_txn *t);

/*
 * cairn_txn_compare_int: compare target (VERSION, CREATE, MOD or LEASE) of
 * key (range_end: every key of a range; empty = the key alone) with v.
 * Returns 0, -EINVAL (target VALUE: use cairn_txn_compare_value) or -ENOMEM.
 */
int cairn_txn_compare_int(struct cairn_txn *t, struct cairn_bytes key,
                          struct cairn_bytes range_end,
                          Cairn__Compare__CompareTarget target,
                          Cairn__Compare__CompareResult result, int64_t v);

/* cairn_txn_compare_value: compare the value of key with value.  0 or -ENOMEM. */
int cairn_txn_compare_value(struct cairn_txn *t, struct cairn_bytes key,
                            struct cairn_bytes range_end,
                            Cairn__Compare__CompareResult result, struct cairn_bytes value);

/* cairn_txn_put / _range / _delete: add an operation to a branch.  0 or -ENOMEM. */
int cairn_txn_put(struct cairn_txn *t, enum cairn_txn_branch b, const struct cairn_put *put);
int cairn_txn_range(struct cairn_txn *t, enum cairn_txn_branch b, const struct cairn_range *r);
int cairn_txn_delete(struct cairn_txn *t, enum cairn_txn_branch b, const struct cairn_delete *d);

/*
 * cairn_txn_nest: add inner as an operation of t's branch b.  t takes
 * ownership of inner on success (0); on -ENOMEM or -EINVAL (inner == t) the
 * caller keeps it.
 */
int cairn_txn_nest(struct cairn_txn *t, enum cairn_txn_branch b, struct cairn_txn *inner);

/* cairn_txn_request: the TxnRequest t has built, owned by t (valid until it changes or is freed). */
const Cairn__TxnRequest *cairn_txn_request(const struct cairn_txn *t);

/*
 * cairn_txn_commit: send t (t stays the caller's).  Returns 0 with
 * *succeeded (optional) telling which branch ran and *resp (optional) the
 * reply, whose txn->responses answer the branch's operations in order.  A
 * Txn made only of ranges is a read and retried as one.
 */
int cairn_txn_commit(struct cairn_client *c, const struct cairn_txn *t,
                     const struct cairn_call_opts *opts, bool *succeeded,
                     Cairn__Response **resp, struct cairn_error_detail *err);

/* --------------------------------------------------------------------- Watch */

/*
 * A watch delivers every change to a key range from a start revision on,
 * in revision order, without a gap or a repeat.  On the wire it is a long
 * poll held by one member (the one that answered WatchCreate; watches are
 * not replicated): cairn_watch_next asks that member for what happened since
 * the last call.  When that member is lost to the watch (it stopped or died,
 * the connection failed, or it dropped the watch after 60 s without a poll),
 * cairn_watch_next creates it again on any member from the revision after
 * the last one it delivered, skipping the part of a fragmented revision
 * already delivered, and goes on: the caller sees one uninterrupted stream.
 * Events of one revision come in one reply unless the watch was created with
 * fragment and the revision is larger than the reply limit.
 *
 * A struct cairn_watch is used by one thread at a time, with at most one
 * cairn_watch_next or cairn_watch_poll (sync or async) in flight.  The library does not poll on
 * its own: a watch nobody polls is dropped by its member after its idle
 * timeout, and the next call resumes it elsewhere or there.
 */
struct cairn_watch;

struct cairn_watch_opts {
    struct cairn_bytes key;       /* required */
    struct cairn_bytes range_end; /* empty: key alone; "\0": every key >= key; else [key, range_end) */
    bool prefix;                  /* every key starting with key (range_end is then ignored) */
    int64_t start_revision;       /* first revision delivered, inclusive; 0 = after the current one */
    bool no_put, no_delete;       /* leave puts / deletes out */
    bool prev_kv;                 /* events carry the key's previous value when the member still has it */
    bool progress_notify;         /* etcd's flag; every reply carries progress_revision anyway */
    bool fragment;                /* a revision larger than the reply limit may come in several replies */
};

/*
 * cairn_watch_create: create a watch on some member (opts as any call).
 * Returns 0 with *out (the caller's, released by cairn_watch_cancel or
 * cairn_watch_free), or a negative code: -CAIRN_E_COMPACTED when
 * start_revision is no longer in the store (err->compact_revision is the
 * first revision a watch can start from), -CAIRN_E_TOO_MANY_WATCHERS, the
 * errors of cairn_call.
 */
int cairn_watch_create(struct cairn_client *c, const struct cairn_watch_opts *o,
                       const struct cairn_call_opts *opts, struct cairn_watch **out,
                       struct cairn_error_detail *err);

/* Completion of cairn_watch_create_async: w is the caller's on rc == 0, else NULL. */
typedef void (*cairn_watch_created_fn)(void *arg, int rc, struct cairn_watch *w,
                                       const struct cairn_error_detail *err);

/* cairn_watch_create_async: as cairn_watch_create; cb is called exactly once when 0 is returned. */
int cairn_watch_create_async(struct cairn_client *c, const struct cairn_watch_opts *o,
                             const struct cairn_call_opts *opts, cairn_watch_created_fn cb, void *arg);

/*
 * cairn_watch_next: wait up to timeout_ms (0: 10 s) for events, then return
 * 0 with *resp (required; the caller frees it with cairn_response_free):
 * (*resp)->watch_next->events, in revision order, at most about max_bytes
 * of them (0: 1 MiB; a revision is never cut unless the watch has fragment),
 * possibly none; ->fragment when the last revision continues in the next
 * reply; ->progress_revision: every matching event up to it has now been
 * delivered.  Resumes on another member as described above, within
 * timeout_ms plus the client's call timeout.  Errors: -CAIRN_E_COMPACTED
 * (the watch fell behind a compaction, or could not be resumed because of
 * one; err->compact_revision), -CAIRN_E_WATCH_CANCELED (canceled by
 * cairn_watch_cancel or the member, err->message says why; both end the
 * watch), -CAIRN_E_TOO_MANY_REQUESTS (the member has too many polls waiting;
 * call again later), -EBUSY (a call is in flight), and the errors of
 * cairn_call when no member could take the watch in time (call again).
 */
int cairn_watch_next(struct cairn_client *c, struct cairn_watch *w, int timeout_ms, size_t max_bytes,
                     Cairn__Response **resp, struct cairn_error_detail *err);

/* cairn_watch_next_async: as cairn_watch_next, the result to cb (see cairn_callback). */
int cairn_watch_next_async(struct cairn_client *c, struct cairn_watch *w, int timeout_ms,
                           size_t max_bytes, cairn_callback cb, void *arg);

/*
 * cairn_watch_poll: one long poll for n watches of c (1 to 4096, distinct,
 * none with a call in flight).  The member parks one request for all of
 * them, the way etcd's watch stream carries many watches: far fewer
 * messages than a cairn_watch_next each, and more watches than a member
 * parks polls for.  Waits up to timeout_ms (0: 10 s) until any of them has
 * events, then returns 0 with *out (the caller frees it with
 * cairn_watch_poll_free): for each ws[i], out->parts[i].next is its reply
 * as cairn_watch_next would have returned it (events, fragment,
 * progress_revision), or NULL when it had nothing this time; at the
 * deadline every watch has one.  out->parts[i].code is 0, or what ended
 * ws[i] (-CAIRN_E_COMPACTED, -CAIRN_E_WATCH_CANCELED; a later
 * cairn_watch_next returns it with the message).  max_bytes (0: 1 MiB)
 * bounds the whole reply; a watch left out for room goes first in a later
 * one.  The watches are kept on one member: a watch that has none, or is
 * on another, is made again there from the revision after the last one it
 * delivered (as cairn_watch_next resumes one), and when that member is
 * lost they all resume on another.  Errors: those of cairn_watch_next,
 * for the poll as a whole; -EINVAL for a bad set of watches.
 */
struct cairn_watch_part {
    Cairn__WatchNextResponse *next; /* in out->resp; NULL: nothing for this watch this time */
    int code;                       /* 0, or the code that ended the watch */
};

struct cairn_watch_poll {
    size_t n;                        /* as many parts as watches polled, in their order */
    struct cairn_watch_part *parts;
    Cairn__Response *resp;           /* holds the parts' replies (NULL when none came) */
};

int cairn_watch_poll(struct cairn_client *c, struct cairn_watch *const *ws, size_t n, int timeout_ms,
                     size_t max_bytes, struct cairn_watch_poll **out, struct cairn_error_detail *err);

/* Completion of cairn_watch_poll_async: p is the caller's on rc == 0 (free it with cairn_watch_poll_free), else NULL. */
typedef void (*cairn_watch_poll_fn)(void *arg, int rc, struct cairn_watch_poll *p,
                                    const struct cairn_error_detail *err);

/* cairn_watch_poll_async: as cairn_watch_poll; cb is called exactly once when 0 is returned. */
int cairn_watch_poll_async(struct cairn_client *c, struct cairn_watch *const *ws, size_t n, int timeout_ms,
                           size_t max_bytes, cairn_watch_poll_fn cb, void *arg);

/* cairn_watch_poll_free: release a poll's result.  NULL is ignored. */
void cairn_watch_poll_free(struct cairn_watch_poll *p);

/*
 * cairn_watch_cancel: tell the member to drop the watch and release w (do
 * not use it afterwards, even on error: a member that did not hear the
 * cancel drops the watch after its idle timeout).  A cairn_watch_next in
 * flight completes with -CAIRN_E_WATCH_CANCELED first.  Returns 0 or the
 * cancel call's error.
 */
int cairn_watch_cancel(struct cairn_client *c, struct cairn_watch *w, const struct cairn_call_opts *opts,
                       struct cairn_error_detail *err);

/* cairn_watch_cancel_async: as cairn_watch_cancel; cb gets a NULL resp on success. */
int cairn_watch_cancel_async(struct cairn_client *c, struct cairn_watch *w, const struct cairn_call_opts *opts,
                             cairn_callback cb, void *arg);

/* cairn_watch_free: release w without telling its member (after cairn_close, for instance).  NULL is ignored. */
void cairn_watch_free(struct cairn_watch *w);

/* cairn_watch_progress: every matching event up to this revision has been delivered by w. */
int64_t cairn_watch_progress(const struct cairn_watch *w);

/* cairn_watch_id: the member's ID of the watch now (it changes when the watch is resumed elsewhere; 0 if none). */
int64_t cairn_watch_id(const struct cairn_watch *w);

/* --- snapshot save, move leader --- */

/* What cairn_snapshot_save saved. */
struct cairn_snapshot_info {
    uint64_t size;      /* bytes in the file */
    int64_t revision;   /* the revision the copy holds */
    uint8_t sha256[32]; /* the file's SHA-256, checked against the member's */
    uint64_t member_id; /* the member the copy is of */
};

/*
 * cairn_snapshot_save: save a consistent copy of one member's store (a SQLite
 * database; `cairnd restore` makes a new cluster from it) to path.  It is
 * written to path.part, checked chunk by chunk (offsets, sizes) and against
 * the SHA-256 the member computed, synced, and renamed to path; then
 * path.sha256 is written beside it in sha256sum's format.  The copy is made
 * by whichever member answers the first request (pin one with opts->pinned
 * and opts->endpoint), and every chunk comes from that member.
 * opts->timeout_ms bounds each request, the first included (which waits for
 * the copy to be made).  Returns 0 and fills *info (may be NULL), or a
 * negative code with err saying what failed; path.part is removed then.
 */
int cairn_snapshot_save(struct cairn_client *c, const char *path, const struct cairn_call_opts *opts,
                        struct cairn_snapshot_info *info, struct cairn_error_detail *err);

/*
 * cairn_move_leader: ask the leader to hand leadership to member target_id
 * (a started voter) and wait until it leads.  Without opts->pinned the
 * call moves from member to member until the leader answers (the others
 * refuse with NOT_LEADER and change nothing).  Returns 0,
 * -CAIRN_E_NOT_LEADER (pinned to a follower: err names the leader),
 * -CAIRN_E_MEMBER_NOT_FOUND,
 * -CAIRN_E_INVALID_ARGUMENT (a learner, not started), -CAIRN_E_TIMEOUT
 * (leadership did not move within two and a half election timeouts), ...
 */
int cairn_move_leader(struct cairn_client *c, uint64_t target_id, const struct cairn_call_opts *opts,
                      struct cairn_error_detail *err);

/* --- maintenance: alarms, defragment --- */

/* One raised alarm.  type is a cairn.AlarmType: CAIRN__ALARM_TYPE__NOSPACE or CAIRN__ALARM_TYPE__CORRUPT. */
struct cairn_alarm {
    uint64_t member_id;
    int type;
};

/*
 * cairn_alarm_list: the cluster's raised alarms (a linearizable read of the
 * alarm set every member holds) into out, room for max; *n gets how many
 * there are, which may be more than max.  Returns 0 or a negative code.
 */
int cairn_alarm_list(struct cairn_client *c, const struct cairn_call_opts *opts, struct cairn_alarm *out,
                     size_t max, size_t *n, struct cairn_error_detail *err);

/*
 * cairn_alarm_disarm: disarm member_id's alarm of type (through Raft, so
 * every member stops refusing writes for it); member_id 0 means every member
 * and type 0 (NONE) every alarm.  Disarming what is not raised succeeds.  A
 * NOSPACE alarm comes back at the next write if the store is still over its
 * quota (compact, then cairn_defragment each member first); a CORRUPT one at
 * the next check if the member was not replaced.  Returns 0 or a negative code.
 */
int cairn_alarm_disarm(struct cairn_client *c, uint64_t member_id, int type, const struct cairn_call_opts *opts,
                       struct cairn_error_detail *err);

/* What cairn_defragment did. */
struct cairn_defrag_info {
    int64_t db_size_before, db_size_after; /* bytes of the member's store */
    uint32_t pause_ms;                     /* the longest time the member's applier was held */
    uint64_t member_id;                    /* the member that answered */
};

/*
 * cairn_defragment: give one member's free store pages back to the file
 * system (pin the member with opts->pinned and opts->endpoint; without, any
 * member answers).  The member works in short steps between applies, so it
 * keeps serving; the call lasts about a second per GiB freed: give
 * opts->timeout_ms room.  A second defragment on a member already doing one
 * is refused with -CAIRN_E_TOO_MANY_REQUESTS.  Returns 0 and fills *info (may
 * be NULL), or a negative code.
 */
int cairn_defragment(struct cairn_client *c, const struct cairn_call_opts *opts, struct cairn_defrag_info *info,
                     struct cairn_error_detail *err);

/* --- leases and membership --- */

/* cairn_lease_grant: a lease of ttl seconds (id 0: the member picks one); the ID and TTL granted (may be NULL). */
int cairn_lease_grant(struct cairn_client *c, int64_t ttl, int64_t id, const struct cairn_call_opts *opts,
                      int64_t *granted_id, int64_t *granted_ttl, struct cairn_error_detail *err);
/* cairn_lease_revoke: revoke lease id, deleting its keys in one revision. */
int cairn_lease_revoke(struct cairn_client *c, int64_t id, const struct cairn_call_opts *opts,
                       struct cairn_error_detail *err);
/* cairn_lease_keepalive: renew lease id (the leader serves it); *ttl (may be NULL) the TTL it runs for again. */
int cairn_lease_keepalive(struct cairn_client *c, int64_t id, const struct cairn_call_opts *opts, int64_t *ttl,
                          struct cairn_error_detail *err);
/* cairn_lease_time_to_live: (*resp)->lease_time_to_live: remaining and granted TTL, with keys the attached keys. */
int cairn_lease_time_to_live(struct cairn_client *c, int64_t id, bool keys, const struct cairn_call_opts *opts,
                             Cairn__Response **resp, struct cairn_error_detail *err);

/* cairn_member_list: (*resp)->member_list: every member and the leader's ID. */
int cairn_member_list(struct cairn_client *c, bool linearizable, const struct cairn_call_opts *opts,
                      Cairn__Response **resp, struct cairn_error_detail *err);
/*
 * cairn_member_add: add a member (a learner, preferably: it counts toward the
 * quorum only once promoted) with these peer URLs; *id (may be NULL) is its ID.
 * Start it with --initial-cluster-state existing and an --initial-cluster
 * listing today's members and itself.
 */
int cairn_member_add(struct cairn_client *c, const char *const *peer_urls, size_t n, bool learner,
                     const struct cairn_call_opts *opts, uint64_t *id, struct cairn_error_detail *err);
/* cairn_member_remove: remove member id (the member stops). */
int cairn_member_remove(struct cairn_client *c, uint64_t id, const struct cairn_call_opts *opts,
                        struct cairn_error_detail *err);
/* cairn_member_promote: make learner id a voter; -CAIRN_E_LEARNER_NOT_READY until it has caught up. */
int cairn_member_promote(struct cairn_client *c, uint64_t id, const struct cairn_call_opts *opts,
                         struct cairn_error_detail *err);
/* cairn_member_update: replace member id's peer URLs. */
int cairn_member_update(struct cairn_client *c, uint64_t id, const char *const *peer_urls, size_t n,
                        const struct cairn_call_opts *opts, struct cairn_error_detail *err);

/* --- auth: users, roles, permissions (docs/auth.md) --- */

/* Permission types, as cairn.Permission.Type. */
#define CAIRN_PERM_READ 0
#define CAIRN_PERM_WRITE 1
#define CAIRN_PERM_READWRITE 2

/* A permission of a role on a key (range_end empty), a prefix or a range [key, range_end), as etcd encodes them. */
struct cairn_permission {
    int type;                     /* CAIRN_PERM_* */
    struct cairn_bytes key;
    struct cairn_bytes range_end; /* empty: the key alone; "\0": every key from key on */
};

struct cairn_auth_status {
    bool enabled;
    uint64_t revision; /* grows with every change to users, roles or permissions */
};

/* cairn_auth_enable: turn auth on (the user "root" must exist and have the role "root"). */
int cairn_auth_enable(struct cairn_client *c, const struct cairn_call_opts *opts, struct cairn_error_detail *err);
/* cairn_auth_disable: turn auth off (root only); every token is void. */
int cairn_auth_disable(struct cairn_client *c, const struct cairn_call_opts *opts, struct cairn_error_detail *err);
int cairn_auth_status(struct cairn_client *c, const struct cairn_call_opts *opts, struct cairn_auth_status *out,
                      struct cairn_error_detail *err);

/*
 * cairn_authenticate: trade name and password for a token, which the client
 * then puts in every request (as cairn_set_auth_token).  The client keeps
 * name and password too: a synchronous call (cairn_call and every helper
 * built on it) answered "authentication failed: token expired/invalid" is
 * authenticated again and retried once; asynchronous calls are not.
 * token (may be NULL) gets a copy of the token (tokenlen bytes, 65 suffice),
 * ttl (may be NULL) its TTL in seconds.  cairn_set_auth_token(c, NULL) or
 * cairn_forget_credentials forgets them.
 */
int cairn_authenticate(struct cairn_client *c, const char *name, const char *password,
                       const struct cairn_call_opts *opts, char *token, size_t tokenlen, uint32_t *ttl,
                       struct cairn_error_detail *err);
/*
 * cairn_reauthenticate: authenticate again with the name and password
 * cairn_authenticate kept (for callers of cairn_call_async, whose calls are
 * not retried: after -CAIRN_E_INVALID_TOKEN, call this and send again).
 * 0 once a new token is in place; -CAIRN_E_INVALID_TOKEN when no credentials
 * are kept; else the Authenticate call's error.
 */
int cairn_reauthenticate(struct cairn_client *c, const struct cairn_call_opts *opts);
/* cairn_forget_credentials: drop the token, name and password cairn_authenticate kept. */
void cairn_forget_credentials(struct cairn_client *c);

/* cairn_user_add: password NULL adds a user without one (reached only through the ipc socket's uid rule). */
int cairn_user_add(struct cairn_client *c, const char *name, const char *password, const struct cairn_call_opts *opts,
                   struct cairn_error_detail *err);
int cairn_user_delete(struct cairn_client *c, const char *name, const struct cairn_call_opts *opts,
                      struct cairn_error_detail *err);
int cairn_user_change_password(struct cairn_client *c, const char *name, const char *password,
                               const struct cairn_call_opts *opts, struct cairn_error_detail *err);
int cairn_user_grant_role(struct cairn_client *c, const char *user, const char *role,
                          const struct cairn_call_opts *opts, struct cairn_error_detail *err);
int cairn_user_revoke_role(struct cairn_client *c, const char *user, const char *role,
                           const struct cairn_call_opts *opts, struct cairn_error_detail *err);
/* cairn_user_get: the user's roles, sorted: *roles is malloc'd (free with cairn_strv_free). */
int cairn_user_get(struct cairn_client *c, const char *name, const struct cairn_call_opts *opts, char ***roles,
                   size_t *n, struct cairn_error_detail *err);
/* cairn_user_list, cairn_role_list: every name, sorted (free with cairn_strv_free). */
int cairn_user_list(struct cairn_client *c, const struct cairn_call_opts *opts, char ***names, size_t *n,
                    struct cairn_error_detail *err);
int cairn_role_list(struct cairn_client *c, const struct cairn_call_opts *opts, char ***names, size_t *n,
                    struct cairn_error_detail *err);
int cairn_role_add(struct cairn_client *c, const char *name, const struct cairn_call_opts *opts,
                   struct cairn_error_detail *err);
/* cairn_role_delete: also takes the role from every user that has it. */
int cairn_role_delete(struct cairn_client *c, const char *name, const struct cairn_call_opts *opts,
                      struct cairn_error_detail *err);
/* cairn_role_get: the role's permissions in grant order; *perms is one allocation (keys inside it): free(*perms). */
int cairn_role_get(struct cairn_client *c, const char *name, const struct cairn_call_opts *opts,
                   struct cairn_permission **perms, size_t *n, struct cairn_error_detail *err);
/* cairn_role_grant_permission: granting the same key and range_end again replaces its type. */
int cairn_role_grant_permission(struct cairn_client *c, const char *role, const struct cairn_permission *p,
                                const struct cairn_call_opts *opts, struct cairn_error_detail *err);
int cairn_role_revoke_permission(struct cairn_client *c, const char *role, struct cairn_bytes key,
                                 struct cairn_bytes range_end, const struct cairn_call_opts *opts,
                                 struct cairn_error_detail *err);
/* cairn_strv_free: free n strings and the array.  NULL is fine. */
void cairn_strv_free(char **v, size_t n);

#ifdef __cplusplus
}
#endif

#endif
