/*
 * gen_corpus OUTDIR: writes raw seed inputs for every fuzz target into
 * OUTDIR/NAME/, made with the project's own writers (protobuf-c packing,
 * wal_save, snap_save, mvcc_snapshot_write), so the seeds are real files and
 * messages, plus near-valid variants (torn, truncated, odd).  `make
 * fuzz-seeds` runs it and lets each fuzzer keep (-merge=1) the seeds that add
 * coverage into test/fuzz/corpus/NAME.  Deterministic: same tree, same seeds.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon/raftmsg.h"
#include "proto/cairn.pb-c.h"
#include "proto/internal.pb-c.h"
#include "proto/peer.pb-c.h"
#include "raft/raft.h"
#include "storage/mvcc.h"
#include "storage/snap.h"
#include "storage/wal.h"

static const char *out_root;
static int n_written;

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "gen_corpus: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

/* Append-only byte buffer. */
struct buf {
    uint8_t *p;
    size_t n, cap;
};

static void buf_add(struct buf *b, const void *d, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        if (!b->p)
            die("out of memory");
    }
    if (n)
        memcpy(b->p + b->n, d, n);
    b->n += n;
}

static void buf_add64(struct buf *b, uint64_t v)
{
    uint8_t le[8];
    for (int i = 0; i < 8; i++)
        le[i] = (uint8_t)(v >> (8 * i));
    buf_add(b, le, 8);
}

static void seed(const char *target, const char *name, const void *data, size_t len)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", out_root, target);
    mkdir(out_root, 0755);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/%s/%s", out_root, target, name);
    FILE *f = fopen(path, "wb");
    if (!f || (len && fwrite(data, 1, len, f) != len) || fclose(f) != 0)
        die("cannot write %s: %s", path, strerror(errno));
    n_written++;
}

static uint8_t *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        die("cannot read %s: %s", path, strerror(errno));
    struct buf b = {0};
    uint8_t chunk[4096];
    size_t r;
    while ((r = fread(chunk, 1, sizeof chunk, f)) > 0)
        buf_add(&b, chunk, r);
    fclose(f);
    *len = b.n;
    return b.p;
}

static void rm_rf(const char *dir)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        die("cannot remove %s", dir);
}

/* --- request ------------------------------------------------------------------- */

/* Fill a message's plain fields with something non-empty (keys, values,
 * small numbers), so the validator gets past "key is empty". */
static void fill_plain(ProtobufCMessage *m)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->label == PROTOBUF_C_LABEL_REPEATED || (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF))
            continue;
        void *at = (char *)m + f->offset;
        switch (f->type) {
        case PROTOBUF_C_TYPE_BYTES:
            if (!strcmp(f->name, "key"))
                *(ProtobufCBinaryData *)at = (ProtobufCBinaryData){3, (uint8_t *)"foo"};
            break;
        case PROTOBUF_C_TYPE_INT64:
        case PROTOBUF_C_TYPE_UINT64:
            *(int64_t *)at = 1;
            break;
        default:
            break;
        }
    }
}

static void pack_request(const char *name, const Cairn__Request *r)
{
    size_t n = cairn__request__get_packed_size(r);
    uint8_t *p = malloc(n + 1);
    cairn__request__pack(r, p);
    seed("request", name, p, n);
    free(p);
}

static void gen_request(void)
{
    const ProtobufCMessageDescriptor *d = &cairn__request__descriptor;
    Cairn__Request empty = CAIRN__REQUEST__INIT;
    pack_request("empty", &empty);
    /* Every body, once empty and once with its plain fields set. */
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->type != PROTOBUF_C_TYPE_MESSAGE || !(f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF))
            continue;
        const ProtobufCMessageDescriptor *sd = f->descriptor;
        for (int filled = 0; filled < 2; filled++) {
            ProtobufCMessage *sub = calloc(1, sd->sizeof_message);
            sd->message_init(sub);
            if (filled)
                fill_plain(sub);
            Cairn__Request r = CAIRN__REQUEST__INIT;
            *(uint32_t *)((char *)&r + f->quantifier_offset) = f->id;
            *(ProtobufCMessage **)((char *)&r + f->offset) = sub;
            char name[128];
            snprintf(name, sizeof name, "%s-%s", f->name, filled ? "filled" : "empty");
            pack_request(name, &r);
            free(sub);
        }
    }

    /* A txn with every kind of compare and op, a nested txn, and a duplicate. */
    Cairn__Compare cmps[5];
    Cairn__Compare *pcmps[5];
    for (int i = 0; i < 5; i++) {
        cairn__compare__init(&cmps[i]);
        pcmps[i] = &cmps[i];
        cmps[i].key = (ProtobufCBinaryData){1, (uint8_t *)"abcde" + i};
        cmps[i].target = (Cairn__Compare__CompareTarget)i;
        cmps[i].result = (Cairn__Compare__CompareResult)(i % 4);
    }
    cmps[0].target_union_case = CAIRN__COMPARE__TARGET_UNION_VERSION;
    cmps[0].version = 2;
    cmps[1].target_union_case = CAIRN__COMPARE__TARGET_UNION_CREATE_REVISION;
    cmps[1].create_revision = 3;
    cmps[2].target_union_case = CAIRN__COMPARE__TARGET_UNION_MOD_REVISION;
    cmps[2].mod_revision = 4;
    cmps[2].range_end = (ProtobufCBinaryData){1, (uint8_t *)"\0"};
    cmps[3].target_union_case = CAIRN__COMPARE__TARGET_UNION_VALUE;
    cmps[3].value = (ProtobufCBinaryData){1, (uint8_t *)"v"};
    cmps[4].target_union_case = CAIRN__COMPARE__TARGET_UNION_LEASE;
    cmps[4].lease = 5;

    Cairn__PutRequest put = CAIRN__PUT_REQUEST__INIT;
    put.key = (ProtobufCBinaryData){1, (uint8_t *)"k"};
    put.value = (ProtobufCBinaryData){5, (uint8_t *)"value"};
    put.prev_kv = 1;
    Cairn__RangeRequest rng = CAIRN__RANGE_REQUEST__INIT;
    rng.key = (ProtobufCBinaryData){1, (uint8_t *)"a"};
    rng.range_end = (ProtobufCBinaryData){1, (uint8_t *)"b"};
    rng.limit = 10;
    rng.sort_order = CAIRN__RANGE_REQUEST__SORT_ORDER__DESCEND;
    rng.sort_target = CAIRN__RANGE_REQUEST__SORT_TARGET__MOD;
    Cairn__DeleteRangeRequest del = CAIRN__DELETE_RANGE_REQUEST__INIT;
    del.key = (ProtobufCBinaryData){1, (uint8_t *)"p"};
    del.range_end = (ProtobufCBinaryData){1, (uint8_t *)"q"};
    Cairn__TxnRequest inner = CAIRN__TXN_REQUEST__INIT;
    Cairn__RequestOp inner_op = CAIRN__REQUEST_OP__INIT;
    Cairn__PutRequest put2 = put;
    put2.key = (ProtobufCBinaryData){1, (uint8_t *)"z"};
    inner_op.request_case = CAIRN__REQUEST_OP__REQUEST_REQUEST_PUT;
    inner_op.request_put = &put2;
    Cairn__RequestOp *inner_ops[1] = {&inner_op};
    inner.success = inner_ops;
    inner.n_success = 1;

    Cairn__RequestOp ops[4];
    Cairn__RequestOp *pops[4];
    for (int i = 0; i < 4; i++) {
        cairn__request_op__init(&ops[i]);
        pops[i] = &ops[i];
    }
    ops[0].request_case = CAIRN__REQUEST_OP__REQUEST_REQUEST_PUT;
    ops[0].request_put = &put;
    ops[1].request_case = CAIRN__REQUEST_OP__REQUEST_REQUEST_RANGE;
    ops[1].request_range = &rng;
    ops[2].request_case = CAIRN__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE;
    ops[2].request_delete_range = &del;
    ops[3].request_case = CAIRN__REQUEST_OP__REQUEST_REQUEST_TXN;
    ops[3].request_txn = &inner;

    Cairn__TxnRequest txn = CAIRN__TXN_REQUEST__INIT;
    txn.compare = pcmps;
    txn.n_compare = 5;
    txn.success = pops;
    txn.n_success = 4;
    txn.failure = pops + 1;
    txn.n_failure = 2;
    Cairn__Request r = CAIRN__REQUEST__INIT;
    r.body_case = CAIRN__REQUEST__BODY_TXN;
    r.txn = &txn;
    pack_request("txn-all-kinds", &r);

    /* put vs put of one key in a txn: DUPLICATE_KEY */
    Cairn__RequestOp *dup[2] = {&ops[0], &ops[0]};
    txn.success = dup;
    txn.n_success = 2;
    txn.n_failure = 0;
    pack_request("txn-duplicate-put", &r);
    /* put inside the deleted range */
    put2.key = (ProtobufCBinaryData){2, (uint8_t *)"pa"};
    Cairn__RequestOp *pd[2] = {&ops[2], &ops[3]};
    txn.success = pd;
    pack_request("txn-put-in-deleted-range", &r);

    r.body_case = CAIRN__REQUEST__BODY_RANGE;
    r.range = &rng;
    r.auth_token = "token";
    pack_request("range-with-token", &r);
    rng.range_end = (ProtobufCBinaryData){1, (uint8_t *)"\0"};
    rng.revision = -1;
    pack_request("range-negative-revision", &r);
}

/* --- peer ---------------------------------------------------------------------- */

static void pack_message(const char *name, const Cairnpeer__Message *m)
{
    size_t n = cairnpeer__message__get_packed_size(m);
    uint8_t *p = malloc(n + 1);
    cairnpeer__message__pack(m, p);
    seed("peer", name, p, n);
    free(p);
}

static void gen_peer(void)
{
    /* A normal entry: a RaftRequest put as the leader writes it. */
    Cairn__PutRequest put = CAIRN__PUT_REQUEST__INIT;
    put.key = (ProtobufCBinaryData){3, (uint8_t *)"key"};
    put.value = (ProtobufCBinaryData){5, (uint8_t *)"value"};
    Cairnint__RaftRequest rr = CAIRNINT__RAFT_REQUEST__INIT;
    rr.id = 42;
    rr.proposer = 1;
    rr.request_case = CAIRNINT__RAFT_REQUEST__REQUEST_PUT;
    rr.put = &put;
    size_t rr_len = cairnint__raft_request__get_packed_size(&rr);
    uint8_t *rr_buf = malloc(rr_len);
    cairnint__raft_request__pack(&rr, rr_buf);

    /* A conf change entry with its MemberChange context. */
    Cairn__Member mem = CAIRN__MEMBER__INIT;
    char *urls[1] = {"tcp://127.0.0.1:2480"};
    mem.id = 7;
    mem.name = "m7";
    mem.peer_urls = urls;
    mem.n_peer_urls = 1;
    Cairnint__MemberChange mc = CAIRNINT__MEMBER_CHANGE__INIT;
    mc.id = 9;
    mc.proposer = 1;
    mc.member = &mem;
    size_t mc_len = cairnint__member_change__get_packed_size(&mc);
    uint8_t *mc_buf = malloc(mc_len);
    cairnint__member_change__pack(&mc, mc_buf);
    struct raft_conf_change cc = {.type = RAFT_CC_ADD_VOTER, .node_id = 7, .context = mc_buf, .context_len = mc_len};
    uint8_t cc_buf[512];
    int cc_len = raft_conf_change_encode(&cc, cc_buf, sizeof cc_buf);
    if (cc_len < 0)
        die("raft_conf_change_encode: %d", cc_len);

    Cairnpeer__Entry e[3];
    Cairnpeer__Entry *pe[3] = {&e[0], &e[1], &e[2]};
    for (int i = 0; i < 3; i++) {
        cairnpeer__entry__init(&e[i]);
        e[i].term = 2;
        e[i].index = 10 + (uint64_t)i;
    }
    e[1].data = (ProtobufCBinaryData){rr_len, rr_buf};
    e[2].type = CAIRNPEER__ENTRY_TYPE__ENTRY_CONF_CHANGE;
    e[2].data = (ProtobufCBinaryData){(size_t)cc_len, cc_buf};

    uint64_t voters[3] = {1, 2, 3}, learners[1] = {4};
    Cairnpeer__ConfState cs = CAIRNPEER__CONF_STATE__INIT;
    cs.voters = voters;
    cs.n_voters = 3;
    cs.learners = learners;
    cs.n_learners = 1;
    Cairnpeer__SnapshotMetadata sm = CAIRNPEER__SNAPSHOT_METADATA__INIT;
    sm.conf_state = &cs;
    sm.index = 100;
    sm.term = 3;

    for (int t = 0; t <= 17; t++) {
        Cairnpeer__Message m = CAIRNPEER__MESSAGE__INIT;
        m.type = (Cairnpeer__MessageType)t;
        m.from = 1;
        m.to = 2;
        m.term = 3;
        m.log_term = 2;
        m.index = 9;
        m.commit = 8;
        if (t == CAIRNPEER__MESSAGE_TYPE__MSG_APP || t == CAIRNPEER__MESSAGE_TYPE__MSG_PROP) {
            m.entries = pe;
            m.n_entries = 3;
        }
        if (t == CAIRNPEER__MESSAGE_TYPE__MSG_SNAP)
            m.snapshot = &sm;
        if (t == CAIRNPEER__MESSAGE_TYPE__MSG_READ_INDEX || t == CAIRNPEER__MESSAGE_TYPE__MSG_READ_INDEX_RESP)
            m.context = (ProtobufCBinaryData){8, (uint8_t *)"\1\2\3\4\5\6\7\10"};
        char name[64];
        snprintf(name, sizeof name, "msg-type-%02d", t);
        pack_message(name, &m);
        if (t == CAIRNPEER__MESSAGE_TYPE__MSG_APP_RESP) {
            m.reject = 1;
            m.reject_hint = 5;
            m.reject_hint_term = 1;
            pack_message("msg-app-resp-reject", &m);
        }
    }
    /* A snapshot whose learner is also a voter: refused. */
    learners[0] = 2;
    Cairnpeer__Message m = CAIRNPEER__MESSAGE__INIT;
    m.type = CAIRNPEER__MESSAGE_TYPE__MSG_SNAP;
    m.snapshot = &sm;
    pack_message("msg-snap-learner-is-voter", &m);
    learners[0] = 4;

    /* Bare configurations, for raftmsg_conf_decode. */
    struct raft_conf_state rcs;
    memset(&rcs, 0, sizeof rcs);
    rcs.n_voters = 3;
    rcs.voters[0] = 1;
    rcs.voters[1] = 2;
    rcs.voters[2] = 3;
    rcs.n_learners = 1;
    rcs.learners[0] = 4;
    uint8_t *enc;
    size_t enc_len;
    if (raftmsg_conf_encode(&rcs, &enc, &enc_len) < 0)
        die("raftmsg_conf_encode failed");
    seed("peer", "conf-state", enc, enc_len);
    free(enc);
    free(rr_buf);
    free(mc_buf);
}

/* --- wal ----------------------------------------------------------------------- */

#define WAL_SEP "\n%SEG%\n"

/* Pack the segments of dir into fuzz_wal's container, read at snapshot snap.
 * cut > 0: drop that many bytes from the end of the last segment (torn). */
static void pack_wal(const char *name, const char *dir, uint64_t snap_index, uint64_t snap_term, size_t cut)
{
    char cmd[600], line[512];
    snprintf(cmd, sizeof cmd, "ls '%s' | grep '\\.wal$' | sort", dir);
    FILE *ls = popen(cmd, "r");
    if (!ls)
        die("popen: %s", strerror(errno));
    char names[32][64];
    int n = 0;
    while (n < 32 && fgets(line, sizeof line, ls)) {
        line[strcspn(line, "\n")] = '\0';
        if (strlen(line) >= sizeof names[0])
            die("odd segment name %s", line);
        memcpy(names[n++], line, strlen(line) + 1);
    }
    pclose(ls);
    struct buf b = {0};
    buf_add64(&b, snap_index);
    buf_add64(&b, snap_term);
    unsigned long long prev = 0;
    for (int i = 0; i < n; i++) {
        unsigned long long seq, first;
        if (sscanf(names[i], "%16llx-%16llx.wal", &seq, &first) != 2)
            die("odd segment name %s", names[i]);
        if (i)
            buf_add(&b, WAL_SEP, strlen(WAL_SEP));
        uint8_t step = (uint8_t)(i == 0 ? seq : seq - prev);
        prev = seq;
        buf_add(&b, &step, 1);
        buf_add64(&b, first);
        char path[1024];
        snprintf(path, sizeof path, "%.512s/%.64s", dir, names[i]);
        size_t len;
        uint8_t *data = slurp(path, &len);
        if (i == n - 1 && cut < len)
            len -= cut;
        buf_add(&b, data, len);
        free(data);
    }
    seed("wal", name, b.p, b.n);
    free(b.p);
}

static void gen_wal(const char *tmp)
{
    char dir[512];
    snprintf(dir, sizeof dir, "%s/wal", tmp);
    rm_rf(dir);
    struct wal_options opts = {.segment_size = 1024, .no_preallocate = 1};
    struct wal_metadata meta = {.member_id = 1, .cluster_id = 2, .blob = "cluster-init", .blob_len = 12};
    struct wal *w;
    struct wal_error err;
    if (wal_create(dir, &meta, &opts, &w, &err) < 0)
        die("wal_create: %s", err.msg);
    wal_close(w);
    pack_wal("fresh", dir, 0, 0, 0);

    if (wal_open(dir, NULL, &opts, &w, &err) < 0)
        die("wal_open: %s", err.msg);
    char data[200];
    memset(data, 'd', sizeof data);
    uint64_t idx = 1;
    for (int batch = 0; batch < 6; batch++) {
        struct wal_entry ents[3];
        for (int i = 0; i < 3; i++)
            ents[i] = (struct wal_entry){.index = idx++, .term = 1 + (uint64_t)batch / 3, .type = (uint32_t)(i == 2),
                                         .data = data, .len = (size_t)(batch * 30 + i)};
        struct wal_hardstate hs = {.term = 1 + (uint64_t)batch / 3, .vote = 1, .commit = idx - 2};
        if (wal_save(w, &hs, ents, 3, NULL) < 0)
            die("wal_save failed");
        if (batch == 3) {
            struct wal_snapshot s = {.index = 6, .term = 1};
            if (wal_save_snapshot(w, &s) < 0)
                die("wal_save_snapshot failed");
        }
    }
    /* Overwrite from index 15 (a new leader's log). */
    struct wal_entry over = {.index = 15, .term = 3, .data = "new", .len = 3};
    if (wal_save(w, NULL, &over, 1, NULL) < 0)
        die("wal_save failed");
    wal_close(w);
    pack_wal("segments", dir, 0, 0, 0);
    pack_wal("segments-at-snapshot", dir, 6, 1, 0);
    pack_wal("segments-snapshot-wrong-term", dir, 6, 2, 0);
    pack_wal("segments-torn-tail", dir, 0, 0, 5);
    pack_wal("segments-torn-header", dir, 0, 0, 20);
}

/* --- snap ---------------------------------------------------------------------- */

#define SNAP_SEP "\n%SNAP%\n"

static void gen_snap(const char *tmp)
{
    char dir[512];
    snprintf(dir, sizeof dir, "%s/snap", tmp);
    rm_rf(dir);
    mkdir(dir, 0755);
    struct raft_conf_state cs;
    memset(&cs, 0, sizeof cs);
    cs.n_voters = 3;
    cs.voters[0] = 1;
    cs.voters[1] = 2;
    cs.voters[2] = 3;
    cs.n_learners = 1;
    cs.learners[0] = 4;
    uint8_t *conf;
    size_t conf_len;
    if (raftmsg_conf_encode(&cs, &conf, &conf_len) < 0)
        die("raftmsg_conf_encode failed");
    struct snap_meta metas[3] = {
        {.term = 1, .index = 10, .conf_state = conf, .conf_len = conf_len, .db_file = "0000000000000001-000000000000000a.db"},
        {.term = 2, .index = 20, .conf_state = NULL, .conf_len = 0, .db_file = NULL},
        {.term = 2, .index = 30, .conf_state = "\x0a\x01", .conf_len = 2, .db_file = "/abs/path.db"},
    };
    struct buf all = {0};
    for (int i = 0; i < 3; i++) {
        if (snap_save(dir, &metas[i]) < 0)
            die("snap_save failed");
        char path[600];
        snprintf(path, sizeof path, "%s/%016llx-%016llx.snap", dir, (unsigned long long)metas[i].term,
                 (unsigned long long)metas[i].index);
        size_t len;
        uint8_t *d = slurp(path, &len);
        char name[32];
        snprintf(name, sizeof name, "snap-%d", i);
        seed("snap", name, d, len);
        if (i)
            buf_add(&all, SNAP_SEP, strlen(SNAP_SEP));
        if (i == 2)
            d[len - 1] ^= 1; /* the newest is broken: load falls back */
        buf_add(&all, d, len);
        free(d);
    }
    seed("snap", "three-newest-broken", all.p, all.n);
    free(all.p);
    free(conf);
}

/* --- mvcc_snap ----------------------------------------------------------------- */

static void gen_mvcc_snap(const char *tmp)
{
    char dir[512], path[600];
    snprintf(dir, sizeof dir, "%s/mvcc", tmp);
    rm_rf(dir);
    mkdir(dir, 0755);
    struct mvcc_store *s;
    char err[256];
    if (mvcc_open(dir, NULL, &s, err, sizeof err) < 0)
        die("mvcc_open: %s", err);
    snprintf(path, sizeof path, "%s/empty.snapdb", tmp);
    struct mvcc_reader *r;
    if (mvcc_reader_open(s, &r) < 0 || mvcc_snapshot_write(r, path, NULL) < 0)
        die("mvcc_snapshot_write failed");
    mvcc_reader_close(r);
    size_t len;
    uint8_t *d = slurp(path, &len);
    seed("mvcc_snap", "empty-store", d, len);
    free(d);

    struct mvcc_entry ents[6];
    memset(ents, 0, sizeof ents);
    for (int i = 0; i < 6; i++) {
        ents[i].index = 1 + (uint64_t)i;
        ents[i].term = 1;
    }
    ents[0].req.type = MVCC_REQ_LEASE_GRANT;
    ents[0].req.lease_grant = (struct mvcc_lease_grant_req){.id = 77, .ttl = 60};
    for (int i = 1; i < 5; i++) {
        ents[i].req.type = MVCC_REQ_PUT;
        ents[i].req.put.key = (struct mvcc_buf){i < 3 ? "a" : "b", 1};
        ents[i].req.put.value = (struct mvcc_buf){"value", 5};
        ents[i].req.put.lease = i == 4 ? 77 : 0;
    }
    ents[5].req.type = MVCC_REQ_DELETE_RANGE;
    ents[5].req.del.key = (struct mvcc_buf){"a", 1};
    struct mvcc_result *res;
    if (mvcc_apply(s, ents, 6, &res) < 0)
        die("mvcc_apply failed");
    mvcc_result_free(res);
    snprintf(path, sizeof path, "%s/some.snapdb", tmp);
    if (mvcc_reader_open(s, &r) < 0 || mvcc_snapshot_write(r, path, NULL) < 0)
        die("mvcc_snapshot_write failed");
    mvcc_reader_close(r);
    mvcc_close(s);
    d = slurp(path, &len);
    seed("mvcc_snap", "store-with-keys-and-lease", d, len);
    seed("mvcc_snap", "store-truncated", d, len / 2);
    free(d);
    rm_rf(dir);
}

/* --- config -------------------------------------------------------------------- */

static void gen_config(void)
{
    static const char *const files[][2] = {
        {"minimal", "name = m1\n"},
        {"full",
         "# a three-member cluster\n"
         "name = m1\n"
         "data-dir = /var/lib/cairn\n"
         "listen-client-urls = tcp://127.0.0.1:2379, ipc:///run/cairn/c.sock\n"
         "advertise-client-urls = tcp://127.0.0.1:2379\n"
         "listen-peer-urls = tcp://127.0.0.1:2380\n"
         "initial-advertise-peer-urls = tcp://127.0.0.1:2380\n"
         "initial-cluster = m1=tcp://127.0.0.1:2380,m2=tcp://127.0.0.1:2381,m3=tcp://[::1]:2382\n"
         "initial-cluster-state = existing\n"
         "initial-cluster-token = \"tok\"\n"
         "heartbeat-interval = 100ms\n"
         "election-timeout = 1s\n"
         "snapshot-count = 10000\n"
         "max-request-bytes = 1.5M\n"
         "quota-backend-bytes = 2GiB\n"
         "request-timeout = 7s\n"
         "watch-idle-timeout = 1m\n"
         "auto-compaction-mode = revision\n"
         "auto-compaction-retention = 1000\n"
         "corrupt-check-time = 1h\n"
         "strict-reconfig-check = off\n"
         "log-level = debug\n"
         "log-target = stderr\n"
         "listen-metrics-urls = tcp://127.0.0.1:9090\n"},
        {"tls",
         "name = a\n"
         "listen-client-urls = tls+tcp://10.0.0.1:2379\n"
         "cert-file = /c.pem\nkey-file = /k.pem\ntrusted-ca-file = /ca.pem\nclient-cert-auth = true\n"
         "listen-peer-urls = tls+tcp://10.0.0.1:2380\n"
         "peer-cert-file = /p.pem\npeer-key-file = /pk.pem\npeer-trusted-ca-file = /pca.pem\n"},
        {"insecure", "listen-client-urls = tcp://0.0.0.0:2379\ninsecure-listen = yes\n"},
        {"bad-election", "heartbeat-interval = 500\nelection-timeout = 1000\n"},
        {"bad-line", "name\n"},
        {"unknown-option", "colour = blue\n"},
        {"scalars", "250ms\n7s\n5m\n1h\n512K\n1.5M\n2G\n1T\nipc:///x\n[::1]:80\ntcp://h:0\n"},
    };
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
        seed("config", files[i][0], files[i][1], strlen(files[i][1]));
    /* The file, then flags, then the environment (NUL-separated). */
    static const char args_env[] = "name = m1\n"
                                   "\n%ARGS%\n"
                                   "--heartbeat-interval=50\0--election-timeout\0" "500\0--strict-reconfig-check\0"
                                   "\n%ARGS%\n"
                                   "CAIRN_NAME=m1\0CAIRN_MAX_TXN_OPS=64\0STATE_DIRECTORY=/var/lib/x";
    seed("config", "args-and-env", args_env, sizeof args_env - 1);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: gen_corpus OUTDIR\n");
        return 2;
    }
    out_root = argv[1];
    char tmp[64];
    snprintf(tmp, sizeof tmp, "/tmp/cairn-gen-corpus-%ld", (long)getpid());
    if (mkdir(tmp, 0700) < 0)
        die("cannot create %s: %s", tmp, strerror(errno));
    gen_request();
    gen_peer();
    gen_wal(tmp);
    gen_snap(tmp);
    gen_mvcc_snap(tmp);
    gen_config();
    rm_rf(tmp);
    printf("gen_corpus: %d seeds in %s\n", n_written, out_root);
    return 0;
}
