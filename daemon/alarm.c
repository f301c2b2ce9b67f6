/*
 * Alarms, the quota and the corruption check (see alarm.h).  The alarm set
 * and the corruption check's current round are store records changed only
 * by committed entries, rewritten here in before_apply, so every member
 * decides alike even across restarts and snapshots; the memory copy is a
 * cache of those records.  The checker thread does what needs a clock or a
 * slow read (proposing checks as leader, hashing the store): never the node
 * thread.  Early refusals (admit) are a courtesy; before_apply is the law.
 */
#include "daemon/alarm.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/deadline.h"
#include "base/errors.h"
#include "base/log.h"
#include "daemon/alarm_internal.h"
#include "daemon/kvconv.h"
#include "daemon/msgids.h"
#include "proto/cairn.pb-c.h"
#include "proto/internal.pb-c.h"
#include "storage/mvcc.h"

/* etcd charges a put its key, value and this much for the revision's bookkeeping (quota.go kvOverhead) */
#define QUOTA_OVERHEAD 256
/* a member over its quota asks for NOSPACE at most this often (the first ask usually suffices) */
#define NOSPACE_PROPOSE_EVERY_MS 1000

struct alarms {
    const struct config *cfg;
    struct node *node;
    uint64_t self;

    pthread_mutex_t mu;     /* guards set (written on the node thread, read by any) and the checker fields */
    struct alarm_set set;
    struct hash_round round; /* node thread only: the mirror of the check record */
    int64_t hash_pending;    /* node thread: a check applied in the batch in progress (its revision) */

    /* checker thread, under mu */
    pthread_t thread;
    pthread_cond_t cond;
    int started, stopping;
    int is_leader;
    int64_t next_check_ms; /* when the leader proposes the next HashCheck */
    int64_t hash_rev;      /* > 0: hash the store at this revision and report */
    int reload;            /* the store was replaced: reload the records */
    struct node_reader_slot slot;

    int64_t last_nospace_ms; /* admit's rate limit (atomic) */
};

/* ---------------------------------------------------------------- the set (pure) */

const char *alarm_type_name(int type)
{
    switch (type) {
    case CAIRN__ALARM_TYPE__NONE: return "NONE";
    case CAIRN__ALARM_TYPE__NOSPACE: return "NOSPACE";
    case CAIRN__ALARM_TYPE__CORRUPT: return "CORRUPT";
    default: return "UNKNOWN";
    }
}

int alarm_set_has(const struct alarm_set *s, int type)
{
    for (size_t i = 0; i < s->n; i++)
        if (!type || s->a[i].type == type)
            return 1;
    return 0;
}

static int entry_cmp(const struct alarm_entry *x, uint64_t member, int type)
{
    if (x->member != member)
        return x->member < member ? -1 : 1;
    return x->type < type ? -1 : x->type > type;
}

/* Insert keeping the order; 1 if added, 0 if there, -CAIRN_E_TOO_MANY_REQUESTS if full. */
static int set_insert(struct alarm_set *s, uint64_t member, int type)
{
    size_t i = 0;
    while (i < s->n && entry_cmp(&s->a[i], member, type) < 0)
        i++;
    if (i < s->n && entry_cmp(&s->a[i], member, type) == 0)
        return 0;
    if (s->n == ALARM_MAX)
        return -CAIRN_E_TOO_MANY_REQUESTS;
    memmove(&s->a[i + 1], &s->a[i], (s->n - i) * sizeof(s->a[0]));
    s->a[i] = (struct alarm_entry){member, type};
    s->n++;
    return 1;
}

int alarm_set_change(struct alarm_set *s, int action, uint64_t member, int type, struct alarm_set *changed)
{
    if (changed)
        changed->n = 0;
    if (action == CAIRN__ALARM_REQUEST__ALARM_ACTION__ACTIVATE) {
        if (!member || type <= CAIRN__ALARM_TYPE__NONE || type > CAIRN__ALARM_TYPE__CORRUPT)
            return -CAIRN_E_INVALID_ARGUMENT;
        int rc = set_insert(s, member, type);
        if (rc > 0 && changed)
            set_insert(changed, member, type);
        return rc;
    }
    if (action != CAIRN__ALARM_REQUEST__ALARM_ACTION__DEACTIVATE)
        return -CAIRN_E_INVALID_ARGUMENT;
    size_t k = 0;
    int n = 0;
    for (size_t i = 0; i < s->n; i++) {
        const struct alarm_entry *e = &s->a[i];
        if ((!member || e->member == member) && (!type || e->type == type)) {
            if (changed)
                set_insert(changed, e->member, e->type);
            n++;
            continue;
        }
        s->a[k++] = *e;
    }
    s->n = k;
    return n;
}

/* The AlarmResponse views of s (pointers into the caller's arrays). */
static void set_view(const struct alarm_set *s, Cairn__AlarmResponse *out, Cairn__AlarmMember *ms,
                     Cairn__AlarmMember **ptrs)
{
    cairn__alarm_response__init(out);
    for (size_t i = 0; i < s->n; i++) {
        cairn__alarm_member__init(&ms[i]);
        ms[i].member_id = s->a[i].member;
        ms[i].alarm = (Cairn__AlarmType)s->a[i].type;
        ptrs[i] = &ms[i];
    }
    out->n_alarms = s->n;
    out->alarms = ptrs;
}

size_t alarm_set_packed_size(const struct alarm_set *s)
{
    Cairn__AlarmResponse r;
    Cairn__AlarmMember ms[ALARM_MAX], *ptrs[ALARM_MAX];
    set_view(s, &r, ms, ptrs);
    return cairn__alarm_response__get_packed_size(&r);
}

size_t alarm_set_pack(const struct alarm_set *s, uint8_t *buf)
{
    Cairn__AlarmResponse r;
    Cairn__AlarmMember ms[ALARM_MAX], *ptrs[ALARM_MAX];
    set_view(s, &r, ms, ptrs);
    return cairn__alarm_response__pack(&r, buf);
}

int alarm_set_unpack(struct alarm_set *s, const void *data, size_t len)
{
    s->n = 0;
    Cairn__AlarmResponse *r = cairn__alarm_response__unpack(NULL, len, data);
    if (!r)
        return -CAIRN_E_CORRUPT;
    for (size_t i = 0; i < r->n_alarms; i++)
        if (r->alarms[i] && r->alarms[i]->member_id && r->alarms[i]->alarm > CAIRN__ALARM_TYPE__NONE)
            set_insert(s, r->alarms[i]->member_id, r->alarms[i]->alarm);
    cairn__alarm_response__free_unpacked(r, NULL);
    return 0;
}

/* ---------------------------------------------------------------- the capped applier (pure) */

/* Does the txn (either branch, nested txns included) hold a put, or (writes) any write? */
static int txn_has(const struct mvcc_txn_req *t, int any_write)
{
    const struct mvcc_request *lists[2] = {t->success, t->failure};
    size_t ns[2] = {t->n_success, t->n_failure};
    for (int b = 0; b < 2; b++)
        for (size_t i = 0; i < ns[b]; i++) {
            const struct mvcc_request *op = &lists[b][i];
            if (op->type == MVCC_REQ_PUT || (any_write && op->type == MVCC_REQ_DELETE_RANGE))
                return 1;
            if (op->type == MVCC_REQ_TXN && txn_has(&op->txn, any_write))
                return 1;
        }
    return 0;
}

int alarm_capped(const struct alarm_set *s, const struct mvcc_request *req)
{
    if (!s->n)
        return 0;
    if (alarm_set_has(s, CAIRN__ALARM_TYPE__CORRUPT)) {
        switch (req->type) {
        case MVCC_REQ_PUT:
        case MVCC_REQ_DELETE_RANGE:
        case MVCC_REQ_COMPACT:
        case MVCC_REQ_LEASE_GRANT:
        case MVCC_REQ_LEASE_REVOKE:
            return CAIRN_E_CORRUPT;
        case MVCC_REQ_TXN:
            if (txn_has(&req->txn, 1))
                return CAIRN_E_CORRUPT;
            break;
        default:
            break;
        }
    }
    if (alarm_set_has(s, CAIRN__ALARM_TYPE__NOSPACE)) {
        if (req->type == MVCC_REQ_PUT || req->type == MVCC_REQ_LEASE_GRANT)
            return CAIRN_E_NO_SPACE;
        if (req->type == MVCC_REQ_TXN && txn_has(&req->txn, 0))
            return CAIRN_E_NO_SPACE;
    }
    return 0;
}

/* ---------------------------------------------------------------- check rounds (pure) */

int hash_round_add(struct hash_round *r, uint64_t member, uint32_t hash, int64_t compact_revision)
{
    for (size_t i = 0; i < r->n; i++)
        if (r->r[i].member == member)
            return 0;
    if (r->n == ALARM_MAX_REPORTS)
        return 0;
    r->r[r->n++] = (struct hash_report_entry){member, hash, compact_revision};
    return 1;
}

#define ROUND_VERSION 1
#define ROUND_HEADER 13    /* version byte, revision, count */
#define ROUND_REPORT 20    /* member, hash, compact revision */

static void put_le(uint8_t *p, uint64_t v, int bytes)
{
    for (int i = 0; i < bytes; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le(const uint8_t *p, int bytes)
{
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

size_t hash_round_packed_size(const struct hash_round *r)
{
    return ROUND_HEADER + r->n * ROUND_REPORT;
}

size_t hash_round_pack(const struct hash_round *r, uint8_t *buf)
{
    buf[0] = ROUND_VERSION;
    put_le(buf + 1, (uint64_t)r->revision, 8);
    put_le(buf + 9, r->n, 4);
    uint8_t *p = buf + ROUND_HEADER;
    for (size_t i = 0; i < r->n; i++, p += ROUND_REPORT) {
        put_le(p, r->r[i].member, 8);
        put_le(p + 8, r->r[i].hash, 4);
        put_le(p + 12, (uint64_t)r->r[i].compact_revision, 8);
    }
    return hash_round_packed_size(r);
}

int hash_round_unpack(struct hash_round *r, const void *data, size_t len)
{
    const uint8_t *b = data;
    memset(r, 0, sizeof(*r));
    if (len < ROUND_HEADER || b[0] != ROUND_VERSION)
        return -CAIRN_E_CORRUPT;
    uint64_t n = get_le(b + 9, 4);
    if (n > ALARM_MAX_REPORTS || len != ROUND_HEADER + n * ROUND_REPORT)
        return -CAIRN_E_CORRUPT;
    r->revision = (int64_t)get_le(b + 1, 8);
    r->n = n;
    const uint8_t *p = b + ROUND_HEADER;
    for (size_t i = 0; i < n; i++, p += ROUND_REPORT)
        r->r[i] = (struct hash_report_entry){get_le(p, 8), (uint32_t)get_le(p + 8, 4),
                                             (int64_t)get_le(p + 12, 8)};
    return 0;
}

size_t hash_round_outliers(const struct hash_round *r, uint64_t *out, size_t max, uint32_t *majority)
{
    /* the witnesses: the most common compact revision (ties: the larger, so every member picks alike) */
    int64_t compact = 0;
    size_t best = 0;
    for (size_t i = 0; i < r->n; i++) {
        size_t c = 0;
        for (size_t j = 0; j < r->n; j++)
            c += r->r[j].compact_revision == r->r[i].compact_revision;
        if (c > best || (c == best && r->r[i].compact_revision > compact)) {
            best = c;
            compact = r->r[i].compact_revision;
        }
    }
    for (size_t i = 0; i < r->n; i++) {
        if (r->r[i].compact_revision != compact)
            continue;
        size_t c = 0;
        for (size_t j = 0; j < r->n; j++)
            c += r->r[j].compact_revision == compact && r->r[j].hash == r->r[i].hash;
        if (2 * c <= best)
            continue;
        /* r->r[i].hash is the majority's */
        size_t k = 0;
        for (size_t j = 0; j < r->n; j++)
            if (r->r[j].compact_revision == compact && r->r[j].hash != r->r[i].hash) {
                if (k < max)
                    out[k] = r->r[j].member;
                k++;
            }
        if (majority)
            *majority = r->r[i].hash;
        return k < max ? k : max;
    }
    return 0;
}

/* ---------------------------------------------------------------- records */

static int read_records(struct mvcc_reader *rd, struct alarm_set *set, struct hash_round *round)
{
    struct mvcc_buf ns = {ALARM_RECORD_NS, strlen(ALARM_RECORD_NS)}, all = {NULL, 0};
    struct mvcc_record_list *l = NULL;
    int rc = mvcc_record_list(rd, ns, all, &l);
    if (rc < 0)
        return rc;
    set->n = 0;
    if (round)
        memset(round, 0, sizeof(*round));
    for (size_t i = 0; i < l->n && rc == 0; i++) {
        const struct mvcc_record *rec = &l->records[i];
        if (rec->name.len == strlen(ALARM_RECORD_NAME) && !memcmp(rec->name.data, ALARM_RECORD_NAME, rec->name.len))
            rc = alarm_set_unpack(set, rec->value.data, rec->value.len);
        else if (round && rec->name.len == strlen(ALARM_CHECK_RECORD_NAME) &&
                 !memcmp(rec->name.data, ALARM_CHECK_RECORD_NAME, rec->name.len))
            rc = hash_round_unpack(round, rec->value.data, rec->value.len);
    }
    mvcc_record_list_free(l);
    return rc;
}

static int load(struct alarms *a)
{
    int err = 0;
    struct mvcc_reader *rd = node_read_begin(a->node, &a->slot, &err);
    if (!rd)
        return err;
    struct alarm_set set;
    struct hash_round round;
    int rc = read_records(rd, &set, &round);
    node_read_end(a->node);
    if (rc < 0) {
        log_event(LOG_LEVEL_ERR, MSGID_CORRUPTION, NULL,
                  "the alarm records in the store do not decode (%s); treating the store as corrupt",
                  cairn_strerror(rc));
        return rc;
    }
    pthread_mutex_lock(&a->mu);
    a->set = set;
    a->round = round;
    pthread_mutex_unlock(&a->mu);
    return 0;
}

int alarm_describe(struct mvcc_reader *r, char **out, size_t max)
{
    struct alarm_set set;
    int rc = read_records(r, &set, NULL);
    if (rc < 0)
        return rc;
    size_t k = 0;
    for (size_t i = 0; i < set.n && k < max; i++) {
        const char *what = set.a[i].type == CAIRN__ALARM_TYPE__NOSPACE
                               ? "the store reached --quota-backend-bytes; puts, txns that put and lease grants "
                                 "are refused until you compact, defragment every member and disarm the alarm"
                               : "its store differs from the other members' (HashKV at the same revision); every "
                                 "write is refused; replace the member, then disarm the alarm";
        if (asprintf(&out[k], "%s alarm on member %016" PRIx64 ": %s", alarm_type_name(set.a[i].type),
                     set.a[i].member, what) < 0)
            break;
        k++;
    }
    return (int)k;
}

/* Rewrite req into the put (or, when empty, the delete) of the alarm set record. */
static int set_record_req(const struct alarm_set *s, struct mvcc_request *req, struct kvconv_arena *arena)
{
    memset(req, 0, sizeof(*req));
    req->record.ns = (struct mvcc_buf){ALARM_RECORD_NS, strlen(ALARM_RECORD_NS)};
    req->record.name = (struct mvcc_buf){ALARM_RECORD_NAME, strlen(ALARM_RECORD_NAME)};
    if (!s->n) {
        req->type = MVCC_REQ_RECORD_DELETE;
        return 0;
    }
    uint8_t *buf = kvconv_arena_alloc(arena, alarm_set_packed_size(s));
    if (!buf)
        return -ENOMEM;
    req->type = MVCC_REQ_RECORD_PUT;
    req->record.value = (struct mvcc_buf){buf, alarm_set_pack(s, buf)};
    return 0;
}

static int round_record_req(const struct hash_round *r, struct mvcc_request *req, struct kvconv_arena *arena)
{
    uint8_t *buf = kvconv_arena_alloc(arena, hash_round_packed_size(r));
    if (!buf)
        return -ENOMEM;
    memset(req, 0, sizeof(*req));
    req->type = MVCC_REQ_RECORD_PUT;
    req->record.ns = (struct mvcc_buf){ALARM_RECORD_NS, strlen(ALARM_RECORD_NS)};
    req->record.name = (struct mvcc_buf){ALARM_CHECK_RECORD_NAME, strlen(ALARM_CHECK_RECORD_NAME)};
    req->record.value = (struct mvcc_buf){buf, hash_round_pack(r, buf)};
    return 0;
}

/* ---------------------------------------------------------------- before_apply (node thread) */

static void publish_set(struct alarms *a, const struct alarm_set *s)
{
    pthread_mutex_lock(&a->mu);
    a->set = *s;
    pthread_mutex_unlock(&a->mu);
}

static void log_changes(const struct alarm_set *changed, int raised, uint64_t index, const char *why)
{
    for (size_t i = 0; i < changed->n; i++)
        log_event(raised ? LOG_LEVEL_WARNING : LOG_LEVEL_NOTICE, raised ? MSGID_ALARM_RAISED : MSGID_ALARM_CLEARED,
                  LOG_FIELDS(LOG_HEX("CAIRN_MEMBER", changed->a[i].member),
                             LOG_STR("CAIRN_ALARM", alarm_type_name(changed->a[i].type)),
                             LOG_U64("CAIRN_INDEX", index)),
                  "alarm %s %s on member %016" PRIx64 " (entry %" PRIu64 ")%s%s",
                  alarm_type_name(changed->a[i].type), raised ? "raised" : "disarmed", changed->a[i].member, index,
                  why ? ": " : "", why ? why : "");
}

static int apply_alarm(struct alarms *a, uint64_t index, const Cairn__AlarmRequest *q, struct mvcc_request *req,
                       struct kvconv_arena *arena)
{
    if (q->action == CAIRN__ALARM_REQUEST__ALARM_ACTION__GET)
        return 0;
    struct alarm_set next = a->set, changed;
    int rc = alarm_set_change(&next, q->action, q->member_id, q->alarm, &changed);
    if (rc < 0)
        return -rc;
    if (rc == 0)
        return 0; /* already so: a no-op, answered with what was asked */
    if ((rc = set_record_req(&next, req, arena)) < 0)
        return ENOMEM;
    publish_set(a, &next);
    log_changes(&changed, q->action == CAIRN__ALARM_REQUEST__ALARM_ACTION__ACTIVATE, index,
                q->alarm == CAIRN__ALARM_TYPE__NOSPACE && q->action == CAIRN__ALARM_REQUEST__ALARM_ACTION__ACTIVATE
                    ? "a write would have taken the store past --quota-backend-bytes"
                    : NULL);
    return 0;
}

/*
 * A new HashCheck: first judge the round it replaces (whoever reported);
 * raising CORRUPT takes this entry, and the old round is judged again at the
 * next check (its outliers then already raised, the new round starts).
 */
static int apply_hash_check(struct alarms *a, uint64_t index, const Cairnint__HashCheck *hc,
                            struct mvcc_request *req, struct kvconv_arena *arena)
{
    if (a->round.revision > 0) {
        uint64_t bad[ALARM_MAX_REPORTS];
        uint32_t majority = 0;
        size_t nb = hash_round_outliers(&a->round, bad, ALARM_MAX_REPORTS, &majority);
        struct alarm_set next = a->set, changed = {0}, one;
        for (size_t i = 0; i < nb; i++) {
            if (alarm_set_change(&next, CAIRN__ALARM_REQUEST__ALARM_ACTION__ACTIVATE, bad[i],
                                 CAIRN__ALARM_TYPE__CORRUPT, &one) > 0)
                changed.a[changed.n++] = one.a[0];
            uint32_t theirs = 0;
            for (size_t j = 0; j < a->round.n; j++)
                if (a->round.r[j].member == bad[i])
                    theirs = a->round.r[j].hash;
            log_event(LOG_LEVEL_CRIT, MSGID_CORRUPTION,
                      LOG_FIELDS(LOG_HEX("CAIRN_MEMBER", bad[i]), LOG_I64("CAIRN_REVISION", a->round.revision),
                                 LOG_U64("CAIRN_INDEX", index)),
                      "member %016" PRIx64 "'s store differs from the majority's at revision %" PRId64
                      ": HashKV %08" PRIx32 ", the majority %08" PRIx32 " (%zu reports)",
                      bad[i], a->round.revision, theirs, majority, a->round.n);
        }
        if (changed.n) {
            if (set_record_req(&next, req, arena) < 0)
                return ENOMEM;
            publish_set(a, &next);
            log_changes(&changed, 1, index, "HashKV differs from the other members'");
            return 0;
        }
    }
    struct hash_round fresh = {.revision = hc->revision};
    if (round_record_req(&fresh, req, arena) < 0)
        return ENOMEM;
    a->round = fresh;
    a->hash_pending = hc->revision;
    return 0;
}

static int apply_hash_report(struct alarms *a, const Cairnint__HashReport *hr, struct mvcc_request *req,
                             struct kvconv_arena *arena)
{
    if (hr->failed || hr->revision != a->round.revision || !a->round.revision)
        return 0; /* compacted meanwhile, or a round that is over */
    struct hash_round next = a->round;
    if (!hash_round_add(&next, hr->member_id, hr->hash, hr->compact_revision))
        return 0;
    if (round_record_req(&next, req, arena) < 0)
        return ENOMEM;
    a->round = next;
    return 0;
}

static int before_apply(void *arg, uint64_t index, const Cairnint__RaftRequest *rr, struct mvcc_request *req,
                        struct kvconv_arena *arena)
{
    struct alarms *a = arg;
    switch (rr->request_case) {
    case CAIRNINT__RAFT_REQUEST__REQUEST_ALARM:
        return rr->alarm ? apply_alarm(a, index, rr->alarm, req, arena) : 0;
    case CAIRNINT__RAFT_REQUEST__REQUEST_HASH_CHECK:
        return rr->hash_check ? apply_hash_check(a, index, rr->hash_check, req, arena) : 0;
    case CAIRNINT__RAFT_REQUEST__REQUEST_HASH_REPORT:
        return rr->hash_report ? apply_hash_report(a, rr->hash_report, req, arena) : 0;
    default:
        return alarm_capped(&a->set, req);
    }
}

static void on_applied(void *arg, const struct mvcc_entry *ents, size_t n, const struct mvcc_result *res)
{
    struct alarms *a = arg;
    (void)ents;
    (void)n;
    (void)res;
    if (!a->hash_pending)
        return;
    /* now the batch is committed a reader sees the revision asked for */
    pthread_mutex_lock(&a->mu);
    a->hash_rev = a->hash_pending;
    pthread_cond_signal(&a->cond);
    pthread_mutex_unlock(&a->mu);
    a->hash_pending = 0;
}

static void on_leader_changed(void *arg, uint64_t lead, uint64_t term, int is_self)
{
    struct alarms *a = arg;
    (void)lead;
    (void)term;
    pthread_mutex_lock(&a->mu);
    if (is_self && !a->is_leader)
        a->next_check_ms = mono_now_ms() + a->cfg->corrupt_check_ms;
    a->is_leader = is_self;
    pthread_cond_signal(&a->cond);
    pthread_mutex_unlock(&a->mu);
}

/* On the node thread, before the next apply: the mirror must match the new store at once. */
static void on_store_replaced(void *arg)
{
    struct alarms *a = arg;
    if (load(a) < 0) {
        pthread_mutex_lock(&a->mu);
        a->reload = 1; /* retried by the checker; meanwhile the old set stands */
        pthread_cond_signal(&a->cond);
        pthread_mutex_unlock(&a->mu);
    }
    a->hash_pending = 0;
}

/* ---------------------------------------------------------------- checker thread */

static void propose_check(struct alarms *a)
{
    struct node_info in;
    node_get_info(a->node, &in);
    if (in.revision <= 0)
        return;
    Cairnint__RaftRequest rr = CAIRNINT__RAFT_REQUEST__INIT;
    Cairnint__HashCheck hc = CAIRNINT__HASH_CHECK__INIT;
    hc.revision = in.revision;
    rr.request_case = CAIRNINT__RAFT_REQUEST__REQUEST_HASH_CHECK;
    rr.hash_check = &hc;
    int rc = node_propose_internal(a->node, &rr);
    log_debug(LOG_FIELDS(LOG_I64("CAIRN_REVISION", hc.revision)), "corruption check at revision %" PRId64 "%s%s",
              hc.revision, rc < 0 ? " not proposed: " : " proposed", rc < 0 ? cairn_strerror(rc) : "");
}

static void hash_and_report(struct alarms *a, int64_t rev)
{
    Cairnint__RaftRequest rr = CAIRNINT__RAFT_REQUEST__INIT;
    Cairnint__HashReport hr = CAIRNINT__HASH_REPORT__INIT;
    int err = 0, rc;
    uint32_t hash = 0;
    int64_t cur = 0, compact = 0;
    struct mvcc_reader *rd = node_read_begin(a->node, &a->slot, &err);
    if (!rd) {
        rc = err;
    } else {
        rc = mvcc_hash_kv(rd, rev, &hash, &cur, &compact);
        node_read_end(a->node);
    }
    hr.member_id = a->self;
    hr.revision = rev;
    hr.hash = hash;
    hr.compact_revision = compact;
    hr.failed = rc < 0;
    if (rc < 0)
        log_info(LOG_FIELDS(LOG_I64("CAIRN_REVISION", rev)),
                 "corruption check: cannot hash the store at revision %" PRId64 " (%s); reporting a failure", rev,
                 cairn_strerror(rc));
    rr.request_case = CAIRNINT__RAFT_REQUEST__REQUEST_HASH_REPORT;
    rr.hash_report = &hr;
    node_propose_internal(a->node, &rr);
}

static void *checker_main(void *arg)
{
    pthread_setname_np(pthread_self(), "cairn-alarm"); /* top -H, perf and gdb show it */
    struct alarms *a = arg;
    pthread_mutex_lock(&a->mu);
    while (!a->stopping) {
        int64_t now = mono_now_ms();
        if (a->reload) {
            a->reload = 0;
            pthread_mutex_unlock(&a->mu);
            load(a);
            pthread_mutex_lock(&a->mu);
            continue;
        }
        if (a->hash_rev > 0) {
            int64_t rev = a->hash_rev;
            a->hash_rev = 0;
            pthread_mutex_unlock(&a->mu);
            hash_and_report(a, rev);
            pthread_mutex_lock(&a->mu);
            continue;
        }
        int64_t wait_ms = 1000;
        if (a->is_leader && a->cfg->corrupt_check_ms) {
            if (now >= a->next_check_ms) {
                a->next_check_ms = now + a->cfg->corrupt_check_ms;
                pthread_mutex_unlock(&a->mu);
                propose_check(a);
                pthread_mutex_lock(&a->mu);
                continue;
            }
            if (a->next_check_ms - now < wait_ms)
                wait_ms = a->next_check_ms - now;
        }
        struct timespec ts;
        deadline_after_ns(&ts, (int64_t)wait_ms * 1000000);
        pthread_cond_timedwait(&a->cond, &a->mu, &ts);
    }
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

/* ---------------------------------------------------------------- admission (nng threads) */

static int request_grows(const Cairn__TxnRequest *t, int any_write);

static int ops_have(Cairn__RequestOp **ops, size_t n, int any_write)
{
    for (size_t i = 0; i < n; i++) {
        if (!ops[i])
            continue;
        if (ops[i]->request_case == CAIRN__REQUEST_OP__REQUEST_REQUEST_PUT)
            return 1;
        if (any_write && ops[i]->request_case == CAIRN__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE)
            return 1;
        if (ops[i]->request_case == CAIRN__REQUEST_OP__REQUEST_REQUEST_TXN &&
            request_grows(ops[i]->request_txn, any_write))
            return 1;
    }
    return 0;
}

static int request_grows(const Cairn__TxnRequest *t, int any_write)
{
    return t && (ops_have(t->success, t->n_success, any_write) || ops_have(t->failure, t->n_failure, any_write));
}

/* The member an alarm of type is on, for messages (the first one). */
static uint64_t alarm_member(struct alarms *a, int type)
{
    uint64_t m = 0;
    pthread_mutex_lock(&a->mu);
    for (size_t i = 0; i < a->set.n && !m; i++)
        if (a->set.a[i].type == type)
            m = a->set.a[i].member;
    pthread_mutex_unlock(&a->mu);
    return m;
}

static void propose_nospace(struct alarms *a)
{
    int64_t now = mono_now_ms(), last = __atomic_load_n(&a->last_nospace_ms, __ATOMIC_RELAXED);
    if (now - last < NOSPACE_PROPOSE_EVERY_MS ||
        !__atomic_compare_exchange_n(&a->last_nospace_ms, &last, now, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
        return;
    Cairnint__RaftRequest rr = CAIRNINT__RAFT_REQUEST__INIT;
    Cairn__AlarmRequest q = CAIRN__ALARM_REQUEST__INIT;
    q.action = CAIRN__ALARM_REQUEST__ALARM_ACTION__ACTIVATE;
    q.member_id = a->self;
    q.alarm = CAIRN__ALARM_TYPE__NOSPACE;
    rr.request_case = CAIRNINT__RAFT_REQUEST__REQUEST_ALARM;
    rr.alarm = &q;
    node_propose_internal(a->node, &rr);
}

static int admit(void *arg, const Cairn__Request *req, const Cairnint__RaftRequest *rr, size_t packed_bytes,
                 char *msg, size_t msglen)
{
    struct alarms *a = arg;
    (void)req;
    int grows = 0, writes = 0;
    switch (rr->request_case) {
    case CAIRNINT__RAFT_REQUEST__REQUEST_PUT:
    case CAIRNINT__RAFT_REQUEST__REQUEST_LEASE_GRANT:
        grows = writes = 1;
        break;
    case CAIRNINT__RAFT_REQUEST__REQUEST_TXN:
        grows = request_grows(rr->txn, 0);
        writes = request_grows(rr->txn, 1);
        break;
    case CAIRNINT__RAFT_REQUEST__REQUEST_DELETE_RANGE:
    case CAIRNINT__RAFT_REQUEST__REQUEST_COMPACTION:
    case CAIRNINT__RAFT_REQUEST__REQUEST_LEASE_REVOKE:
        writes = 1;
        break;
    default:
        return 0; /* alarms themselves, membership, checks */
    }
    if (writes && alarm_active(a, CAIRN__ALARM_TYPE__CORRUPT)) {
        snprintf(msg, msglen,
                 "CORRUPT alarm on member %016" PRIx64 ": its store differs from the other members'; every write is "
                 "refused until the member is replaced and the alarm disarmed (see the alarms table)",
                 alarm_member(a, CAIRN__ALARM_TYPE__CORRUPT));
        return CAIRN_E_CORRUPT;
    }
    if (!grows)
        return 0;
    if (alarm_active(a, CAIRN__ALARM_TYPE__NOSPACE)) {
        snprintf(msg, msglen,
                 "database space exceeded: NOSPACE alarm on member %016" PRIx64 "; only reads, deletes, compaction "
                 "and lease revokes are accepted until you compact, defragment every member and disarm the alarm",
                 alarm_member(a, CAIRN__ALARM_TYPE__NOSPACE));
        return CAIRN_E_NO_SPACE;
    }
    uint64_t quota = a->cfg->quota_backend_bytes;
    if (!quota)
        return 0;
    struct node_info in;
    node_get_info(a->node, &in);
    uint64_t cost = packed_bytes + QUOTA_OVERHEAD;
    if ((uint64_t)in.db_size + cost <= quota)
        return 0;
    propose_nospace(a);
    snprintf(msg, msglen,
             "database space exceeded: the store of member %016" PRIx64 " is %" PRId64 " bytes and this write "
             "(about %" PRIu64 " bytes) would pass --quota-backend-bytes (%" PRIu64 "); a NOSPACE alarm is raised: "
             "compact, defragment every member, then disarm it",
             a->self, in.db_size, cost, quota);
    return CAIRN_E_NO_SPACE;
}

void alarm_hooks(struct alarms *a, struct rpc_hooks *h)
{
    h->admit = admit;
    h->admit_arg = a;
}

int alarm_active(struct alarms *a, int type)
{
    if (!a)
        return 0;
    pthread_mutex_lock(&a->mu);
    int on = alarm_set_has(&a->set, type);
    pthread_mutex_unlock(&a->mu);
    return on;
}

/* ---------------------------------------------------------------- the Alarm route */

static void alarm_get_read(struct rpc_call *c, struct mvcc_reader *r, int err, void *arg)
{
    (void)arg;
    if (!r) {
        rpc_call_unreadable(c, err);
        return;
    }
    const Cairn__AlarmRequest *q = rpc_call_request(c)->alarm;
    struct alarm_set set, shown = {0};
    int rc = read_records(r, &set, NULL);
    if (rc < 0) {
        rpc_call_error(c, -rc, "the alarm record in the store does not decode: %s", cairn_strerror(rc));
        return;
    }
    for (size_t i = 0; i < set.n; i++)
        if ((!q->member_id || set.a[i].member == q->member_id) && (!q->alarm || set.a[i].type == (int)q->alarm))
            shown.a[shown.n++] = set.a[i];
    Cairn__Response resp = CAIRN__RESPONSE__INIT;
    Cairn__AlarmResponse body;
    Cairn__AlarmMember ms[ALARM_MAX], *ptrs[ALARM_MAX];
    set_view(&shown, &body, ms, ptrs);
    resp.body_case = CAIRN__RESPONSE__BODY_ALARM;
    resp.alarm = &body;
    rpc_call_reply(c, &resp, 0);
}

static void alarm_route(void *arg, struct rpc_call *c)
{
    const Cairn__AlarmRequest *q = rpc_call_request(c)->alarm;
    if (q->action == CAIRN__ALARM_REQUEST__ALARM_ACTION__GET) {
        rpc_call_read(c, 1, alarm_get_read, arg);
        return;
    }
    if (q->action == CAIRN__ALARM_REQUEST__ALARM_ACTION__ACTIVATE &&
        (!q->member_id || q->alarm == CAIRN__ALARM_TYPE__NONE)) {
        rpc_call_error(c, CAIRN_E_INVALID_ARGUMENT,
                       "an alarm is raised on one member and of one type: give member_id and alarm (NOSPACE or "
                       "CORRUPT)");
        return;
    }
    Cairnint__RaftRequest rr = CAIRNINT__RAFT_REQUEST__INIT;
    rr.request_case = CAIRNINT__RAFT_REQUEST__REQUEST_ALARM;
    rr.alarm = (Cairn__AlarmRequest *)q;
    rpc_call_propose(c, &rr);
}

size_t alarm_routes(struct alarms *a, struct rpc_route *out, size_t max)
{
    const struct rpc_route routes[] = {
        {CAIRN__REQUEST__BODY_ALARM, alarm_route, a, 0},
    };
    return rpc_routes_copy(out, max, routes, sizeof routes / sizeof routes[0]);
}

/* ---------------------------------------------------------------- life */

struct start_call {
    struct alarms *a;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    int rc; /* 1 until done */
};

/*
 * Load the records and start observing on the node thread, between two
 * applies: no entry can be applied after the load and before before_apply
 * sees it, nor judged by an empty mirror.
 */
static void start_on_node(struct node *n, void *arg, int stopping)
{
    struct start_call *sc = arg;
    struct alarms *a = sc->a;
    int rc = -CAIRN_E_STOPPED;
    if (!stopping && (rc = load(a)) == 0) {
        struct node_observer o = {.arg = a, .applied = on_applied, .leader_changed = on_leader_changed,
                                  .store_replaced = on_store_replaced, .before_apply = before_apply};
        rc = node_observe(n, &o);
    }
    pthread_mutex_lock(&sc->mu);
    sc->rc = rc;
    pthread_cond_signal(&sc->cond);
    pthread_mutex_unlock(&sc->mu);
}

int alarm_start(const struct config *cfg, struct node *n, struct alarms **out)
{
    struct alarms *a = calloc(1, sizeof(*a));
    if (!a)
        return -ENOMEM;
    a->cfg = cfg;
    a->node = n;
    struct node_info in;
    node_get_info(n, &in);
    a->self = in.member_id;
    pthread_mutex_init(&a->mu, NULL);
    mono_cond_init(&a->cond);
    node_reader_register(n, &a->slot);
    struct start_call sc = {.a = a, .rc = 1};
    pthread_mutex_init(&sc.mu, NULL);
    pthread_cond_init(&sc.cond, NULL);
    int rc = node_call(n, start_on_node, &sc);
    pthread_mutex_lock(&sc.mu);
    while (rc == 0 && sc.rc > 0)
        pthread_cond_wait(&sc.cond, &sc.mu);
    pthread_mutex_unlock(&sc.mu);
    if (rc == 0)
        rc = sc.rc;
    pthread_cond_destroy(&sc.cond);
    pthread_mutex_destroy(&sc.mu);
    if (rc < 0) {
        node_reader_unregister(n, &a->slot);
        pthread_cond_destroy(&a->cond);
        pthread_mutex_destroy(&a->mu);
        free(a);
        return rc;
    }
    /* from here the node holds a: on failure it is left to the exiting process */
    node_get_info(n, &in);
    if (in.lead == in.member_id)
        on_leader_changed(a, in.lead, in.term, 1);
    if ((rc = -pthread_create(&a->thread, NULL, checker_main, a)) < 0)
        return rc;
    a->started = 1;
    *out = a;
    return 0;
}

void alarm_stop(struct alarms *a)
{
    if (!a || !a->started)
        return;
    pthread_mutex_lock(&a->mu);
    a->stopping = 1;
    pthread_cond_signal(&a->cond);
    pthread_mutex_unlock(&a->mu);
    pthread_join(a->thread, NULL);
    a->started = 0;
    node_reader_unregister(a->node, &a->slot);
}

void alarm_free(struct alarms *a)
{
    if (!a)
        return;
    alarm_stop(a);
    pthread_cond_destroy(&a->cond);
    pthread_mutex_destroy(&a->mu);
    free(a);
}
