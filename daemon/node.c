/*
 * The node thread: Raft, the WAL, the store's writer and the peer transport,
 * driven by one loop (DESIGN.md, "A write").  Everything else reaches it
 * through the inbox (one mutex, one condition variable).  Snapshot data for
 * lagging followers is copied and streamed by a helper thread so the loop
 * never waits on it.  It deliberately holds no client state: writes wait in
 * the wait table, reads in daemon/reads.c.
 */
#include "daemon/node.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "base/deadline.h"
#include "base/errors.h"
#include "base/log.h"
#include "base/offload.h"
#include "daemon/ckpt.h"
#include "daemon/msgids.h"
#include "daemon/kvconv.h"
#include "daemon/members.h"
#include "daemon/peer.h"
#include "daemon/raftmsg.h"
#include "proto/cairn.pb-c.h"
#include "proto/fastpack.h"
#include "proto/internal.pb-c.h"
#include "proto/peer.pb-c.h"
#include "raft/raft.h"
#include "storage/mvcc.h"
#include "storage/snap.h"
#include "storage/wal.h"

#define INBOX_MAX 65536             /* queued items before proposals are refused */
#define PROPOSE_BATCH 1024          /* proposals per raft_propose_batch */
#define DRAIN_MAX 8                 /* inbox takes between Readies in one turn of the node loop */
#define SLOW_SYNC_NS 1000000000LL   /* fdatasync slower than this is logged (issue 6: > 1 s) */
#define SLOW_APPLY_NS 100000000LL   /* an apply batch slower than this is logged */
#define COMPACT_STEP_ROWS 1000      /* etcd's compaction batch */
#define STORE_SIZE_NS 100000000LL   /* the store's size is read again at most this often after applies */
#define CHECKPOINT_RETRY_NS 100000000LL /* an owed checkpoint is retried this often (a kept read lasts 100 ms) */

enum item_type { IT_PROPOSE, IT_READ_INDEX, IT_PEER, IT_SNAP_RECEIVED, IT_SNAP_DONE, IT_SNAP_READY, IT_CALL,
                 IT_TRANSFER, IT_MEMBER };

struct item {
    struct item *next;
    enum item_type type;
    uint64_t id;   /* PROPOSE: request id; READ_INDEX: ctx; PEER/SNAP_*: the peer */
    void *data;    /* PROPOSE: payload; PEER: MessageBatch; SNAP_RECEIVED: Message; SNAP_READY: path */
    size_t len;
    int ok;        /* SNAP_DONE */
    char *path;    /* SNAP_RECEIVED: the file */
    node_call_fn fn; /* CALL: run on the node thread with data as its argument */
    int kind;        /* MEMBER: RAFT_CC_ type; id is the waiter, data a packed MemberChange */
    uint64_t member; /* MEMBER: the member changed */
    int64_t until_ns; /* PROPOSE, parked: when it stops waiting for a leader */
    int refused;      /* PROPOSE, parked: the code raft refused it with */
};

/* A snapshot to stream to a follower: made by the sender thread. */
struct snap_job {
    struct snap_job *next;
    uint64_t to;
    Cairnpeer__Message *msg; /* owned copy of the MsgSnap */
};

struct node {
    const struct config *cfg;
    struct wait_table *waits;
    struct node_hooks hooks;
    pthread_mutex_t obs_mu;
    struct node_observer observers[NODE_MAX_OBSERVERS];
    size_t n_observers;
    uint64_t cluster_id, self_id;
    struct raft *raft;
    struct wal *wal;
    struct mvcc_store *store;
    struct peer_transport *peers;
    char wal_dir[4200], snap_dir[4200], db_dir[4200], incoming_dir[4200];

    pthread_t thread;
    pthread_mutex_t mu;      /* inbox, stopping */
    pthread_cond_t cond;
    struct item *head, *tail;
    size_t inbox_len;
    size_t n_parked;         /* writes waiting for a leader (node thread; read atomically) */
    int stopping;
    int held;                /* Readies wait for node_release (atomic) */

    pthread_rwlock_t gate;   /* readers hold it shared; the node exclusive to replace the store */
    pthread_mutex_t slots_mu;
    struct node_reader_slot *slots;

    pthread_mutex_t info_mu;
    struct node_info info;
    uint64_t next_id;        /* atomic */

    /* node-thread state */
    uint64_t applied, applied_term, snap_index, lead;
    uint64_t durable_term, durable_vote; /* the hard state's term and vote as last made durable */
    int store_changed;       /* compacted or replaced since publish() last read the store's status */
    int store_grew;          /* applied since: its size is read again within STORE_SIZE_NS */
    int64_t store_sized_ns;  /* when publish() last read it */
    int checkpoint_owed;     /* node_checkpoint_owed: retry a passive checkpoint until complete */
    int64_t checkpoint_tried_ns;
    int64_t store_revision, store_compact_revision, store_db_size, store_db_in_use;
    struct raft_conf_state conf;
    struct offload *wal_writer; /* a leader's WAL write while it applies (handle_ready) */
    /* moving averages (1/8 per sample) for size_solo_slice: the WAL's
     * fdatasync, and an apply's duration and entries */
    double sync_ns_avg, apply_ns_avg, apply_entries_avg;
    char *pending_snap_path; /* a received snapshot waiting for raft to accept it */
    uint64_t pending_snap_index;
    int64_t next_tick_ns;
    uint64_t unreachable[2 * RAFT_MAX_MEMBERS];
    size_t n_unreachable;
    int64_t watchdog_ns, watchdog_last; /* half of WATCHDOG_USEC; 0: off (atomic) */
    struct node_stats stats; /* counters updated with relaxed atomics */
    uint64_t solo_read_index; /* raft_solo_read_index, for node_solo_read_index (atomic) */
    Cairnint__MemberSet *mset; /* the member set as of the last apply (node thread) */
    struct item *parked_head, *parked_tail; /* writes waiting for a leader, oldest first (park) */
    int attrs_published;       /* this member's name and client URLs are in the set */
    int64_t attrs_next_ns;     /* when to propose them (again) */

    /* snapshot sender */
    pthread_t snap_thread;
    pthread_cond_t snap_cond; /* the sender thread waits here (under mu) */
    struct snap_job *snap_head;
    int snap_busy[2 * RAFT_MAX_MEMBERS]; /* unused slots are 0 */
    struct node_reader_slot snap_slot;
    int snap_thread_started;

    /* The store's checkpointer (ckpt.h), and the local snapshot waiting for
     * its sync (take_snapshot, then snapshot_synced). */
    struct ckpt *ckpt;
    struct {
        int active;               /* node thread */
        struct raft_snapshot_meta meta;
        int64_t t0;
        struct item *done;        /* the IT_CALL the checkpointer queues: made beforehand, so it cannot fail */
        int rc;                   /* written by the checkpointer before it queues done */
    } snap_sync;
};

static int load_members(struct node *n, const struct boot_state *bs);
static void sync_peers(struct node *n, const Cairnint__MemberSet *old);
static Cairnint__MemberSet *copy_set(const Cairnint__MemberSet *s);

/* ---------------------------------------------------------------- inbox */

static int inbox_push(struct node *n, struct item *it, int bounded)
{
    pthread_mutex_lock(&n->mu);
    if (n->stopping || (bounded && n->inbox_len >= INBOX_MAX)) {
        int rc = n->stopping ? -CAIRN_E_STOPPED : -CAIRN_E_TOO_MANY_REQUESTS;
        pthread_mutex_unlock(&n->mu);
        return rc;
    }
    it->next = NULL;
    if (n->tail)
        n->tail->next = it;
    else
        n->head = it;
    n->tail = it;
    __atomic_store_n(&n->inbox_len, n->inbox_len + 1, __ATOMIC_RELAXED); /* node_get_info reads it unlocked */
    pthread_cond_signal(&n->cond);
    pthread_mutex_unlock(&n->mu);
    return 0;
}

static void item_free(struct item *it)
{
    if (it->type == IT_PEER && it->data)
        cairnpeer__message_batch__free_unpacked(it->data, NULL);
    else if (it->type == IT_SNAP_RECEIVED && it->data)
        cairnpeer__message__free_unpacked(it->data, NULL);
    else if (it->type != IT_CALL)
        free(it->data);
    if (it->path) {
        unlink(it->path);
        free(it->path);
    }
    free(it);
}

int node_propose(struct node *n, uint64_t id, void *data, size_t len)
{
    struct item *it = calloc(1, sizeof(*it));
    if (!it) {
        free(data);
        return -ENOMEM;
    }
    it->type = IT_PROPOSE;
    it->id = id;
    it->data = data;
    it->len = len;
    int rc = inbox_push(n, it, 1);
    if (rc < 0) {
        free(data);
        free(it);
    }
    return rc;
}

/* Queue a small item that owns no memory (unbounded: the caller is not a client). */
static int push_small(struct node *n, enum item_type type, uint64_t id, node_call_fn fn, void *arg)
{
    struct item *it = calloc(1, sizeof(*it));
    if (!it)
        return -ENOMEM;
    it->type = type;
    it->id = id;
    it->fn = fn;
    it->data = arg;
    int rc = inbox_push(n, it, 0);
    if (rc < 0)
        free(it);
    return rc;
}

int node_read_index(struct node *n, uint64_t ctx)
{
    return push_small(n, IT_READ_INDEX, ctx, NULL, NULL);
}

uint64_t node_solo_read_index(struct node *n)
{
    return __atomic_load_n(&n->solo_read_index, __ATOMIC_ACQUIRE);
}

/* Publish raft's solo read index (raft.h says when it must be). */
static void publish_solo_read_index(struct node *n)
{
    __atomic_store_n(&n->solo_read_index, raft_solo_read_index(n->raft), __ATOMIC_RELEASE);
}

int node_call(struct node *n, node_call_fn fn, void *arg)
{
    return push_small(n, IT_CALL, 0, fn, arg);
}

struct mvcc_store *node_writer(struct node *n)
{
    return n->store;
}

int node_transfer_leader(struct node *n, uint64_t to)
{
    return push_small(n, IT_TRANSFER, to, NULL, NULL);
}

#define STAT_ADD(n, field, v) __atomic_add_fetch(&(n)->stats.field, (v), __ATOMIC_RELAXED)

void node_get_stats(struct node *n, struct node_stats *st)
{
#define STAT_LOAD(field) st->field = __atomic_load_n(&n->stats.field, __ATOMIC_RELAXED)
    STAT_LOAD(proposals_committed);
    STAT_LOAD(proposals_applied);
    STAT_LOAD(proposals_failed);
    STAT_LOAD(proposals_parked);
    STAT_LOAD(leader_changes);
    STAT_LOAD(snapshots_taken);
    STAT_LOAD(snapshots_installed);
    STAT_LOAD(snapshot_sends_ok);
    STAT_LOAD(snapshot_sends_failed);
    STAT_LOAD(slow_applies);
    STAT_LOAD(slow_fsyncs);
#undef STAT_LOAD
    histogram_read(&n->stats.wal_fsync, &st->wal_fsync);
    histogram_read(&n->stats.store_checkpoint, &st->store_checkpoint);
    histogram_read(&n->stats.backend_commit, &st->backend_commit);
}

uint64_t node_next_request_id(struct node *n)
{
    return __atomic_add_fetch(&n->next_id, 1, __ATOMIC_RELAXED);
}

void node_get_info(struct node *n, struct node_info *info)
{
    pthread_mutex_lock(&n->info_mu);
    *info = n->info;
    pthread_mutex_unlock(&n->info_mu);
    /* a gauge: not worth the inbox's lock, which every request would take */
    info->proposals_pending =
        __atomic_load_n(&n->inbox_len, __ATOMIC_RELAXED) + __atomic_load_n(&n->n_parked, __ATOMIC_RELAXED);
}

/* ---------------------------------------------------------------- peer callbacks (nng threads) */

static void on_messages(void *arg, uint64_t from, Cairnpeer__MessageBatch *batch)
{
    struct node *n = arg;
    struct item *it = calloc(1, sizeof(*it));
    if (!it) {
        cairnpeer__message_batch__free_unpacked(batch, NULL);
        return;
    }
    it->type = IT_PEER;
    it->id = from;
    it->data = batch;
    if (inbox_push(n, it, 0) < 0)
        item_free(it);
}

static void on_snapshot(void *arg, uint64_t from, Cairnpeer__Message *msg, const char *path)
{
    struct node *n = arg;
    struct item *it = calloc(1, sizeof(*it));
    char *p = strdup(path);
    if (!it || !p) {
        free(it);
        free(p);
        unlink(path);
        cairnpeer__message__free_unpacked(msg, NULL);
        return;
    }
    it->type = IT_SNAP_RECEIVED;
    it->id = from;
    it->data = msg;
    it->path = p;
    if (inbox_push(n, it, 0) < 0)
        item_free(it);
}

static void on_snapshot_done(void *arg, uint64_t to, int ok)
{
    struct node *n = arg;
    struct item *it = calloc(1, sizeof(*it));
    if (!it)
        return; /* raft retries the snapshot after its own timeout */
    it->type = IT_SNAP_DONE;
    it->id = to;
    it->ok = ok;
    if (inbox_push(n, it, 0) < 0)
        free(it);
}

/* ---------------------------------------------------------------- readers */

void node_reader_register(struct node *n, struct node_reader_slot *slot)
{
    slot->r = NULL;
    slot->keep = false;
    pthread_mutex_lock(&n->slots_mu);
    slot->next = n->slots;
    n->slots = slot;
    pthread_mutex_unlock(&n->slots_mu);
}

void node_reader_unregister(struct node *n, struct node_reader_slot *slot)
{
    pthread_rwlock_rdlock(&n->gate);
    pthread_mutex_lock(&n->slots_mu);
    for (struct node_reader_slot **pp = &n->slots; *pp; pp = &(*pp)->next)
        if (*pp == slot) {
            *pp = slot->next;
            break;
        }
    pthread_mutex_unlock(&n->slots_mu);
    if (slot->r)
        mvcc_reader_close(slot->r);
    slot->r = NULL;
    pthread_rwlock_unlock(&n->gate);
}

struct mvcc_reader *node_read_begin(struct node *n, struct node_reader_slot *slot, int *err)
{
    pthread_rwlock_rdlock(&n->gate);
    if (!slot->r) {
        int rc = n->store ? mvcc_reader_open(n->store, &slot->r) : -CAIRN_E_STOPPED;
        if (rc < 0) {
            slot->r = NULL;
            pthread_rwlock_unlock(&n->gate);
            *err = rc;
            return NULL;
        }
        mvcc_reader_keep(slot->r, slot->keep);
    }
    return slot->r;
}

void node_read_end(struct node *n)
{
    pthread_rwlock_unlock(&n->gate);
}

void node_reader_idle(struct node *n, struct node_reader_slot *slot)
{
    /* never waits: while the store is being replaced, its readers are closed anyway */
    if (pthread_rwlock_tryrdlock(&n->gate) != 0)
        return;
    if (slot->r)
        mvcc_reader_idle(slot->r);
    pthread_rwlock_unlock(&n->gate);
}

/* Close every reader so the store can be closed; the caller holds the gate exclusively. */
static void close_readers(struct node *n)
{
    pthread_mutex_lock(&n->slots_mu);
    for (struct node_reader_slot *s = n->slots; s; s = s->next) {
        if (s->r)
            mvcc_reader_close(s->r);
        s->r = NULL;
    }
    pthread_mutex_unlock(&n->slots_mu);
}

/* ---------------------------------------------------------------- observers */

int node_observe(struct node *n, const struct node_observer *o)
{
    int rc = -ENOSPC;
    pthread_mutex_lock(&n->obs_mu);
    if (n->n_observers < NODE_MAX_OBSERVERS) {
        n->observers[n->n_observers++] = *o;
        rc = 0;
    }
    pthread_mutex_unlock(&n->obs_mu);
    return rc;
}

static size_t observers(struct node *n, struct node_observer *out)
{
    pthread_mutex_lock(&n->obs_mu);
    size_t k = n->n_observers;
    memcpy(out, n->observers, k * sizeof(*out));
    pthread_mutex_unlock(&n->obs_mu);
    return k;
}

int node_propose_internal(struct node *n, Cairnint__RaftRequest *rr)
{
    rr->id = node_next_request_id(n);
    rr->proposer = n->self_id;
    size_t len;
    void *buf = fastpack_dup(&rr->base, &len);
    if (!buf)
        return -ENOMEM;
    return node_propose(n, rr->id, buf, len);
}

void node_checkpoint_owed(struct node *n)
{
    n->checkpoint_owed = 1;
    n->checkpoint_tried_ns = mono_now_ns();
}

/* An owed checkpoint, tried again once readers had time to move on. */
static void retry_checkpoint(struct node *n)
{
    int64_t now = mono_now_ns();
    if (!n->checkpoint_owed || now - n->checkpoint_tried_ns < CHECKPOINT_RETRY_NS)
        return;
    n->checkpoint_tried_ns = now;
    int rc = mvcc_checkpoint(n->store);
    if (rc == 0)
        return;
    n->checkpoint_owed = 0;
    n->store_changed = 1; /* the file has the store's size now */
    if (rc < 0)
        log_err(NULL, "checkpoint of the store failed: %s", cairn_strerror(rc));
    else
        log_info(NULL, "the store's checkpoint reached the end of its WAL: the file has the store's size");
}

/* ---------------------------------------------------------------- published state */

static void publish(struct node *n)
{
    struct raft_basic_status bs;
    raft_basic_status(n->raft, &bs);
    int64_t now = mono_now_ns();
    if (n->store_changed || (n->store_grew && now - n->store_sized_ns >= STORE_SIZE_NS)) {
        /* a query on the store: only after it changed, not every turn of the loop */
        n->store_grew = 0;
        n->store_sized_ns = now;
        struct mvcc_status ms = {0};
        mvcc_store_status(n->store, &ms);
        n->store_revision = ms.revision;
        n->store_compact_revision = ms.compact_revision;
        n->store_db_size = ms.db_size;
        n->store_db_in_use = ms.db_size_in_use;
        n->store_changed = 0;
    }
    pthread_mutex_lock(&n->info_mu);
    n->info.term = bs.term;
    n->info.lead = bs.lead;
    n->info.role = bs.role;
    n->info.commit = bs.commit;
    n->info.applied = n->applied;
    n->info.last_index = wal_last_index(n->wal);
    n->info.snapshot_index = n->snap_index;
    n->info.revision = n->store_revision;
    n->info.compact_revision = n->store_compact_revision;
    n->info.db_size = n->store_db_size;
    n->info.db_size_in_use = n->store_db_in_use;
    /* not a voter (yet): a learner, or a member that joined and has not caught up with its addition */
    n->info.is_learner = 1;
    for (uint32_t i = 0; i < n->conf.n_voters; i++)
        if (n->conf.voters[i] == n->self_id)
            n->info.is_learner = 0;
    pthread_mutex_unlock(&n->info_mu);
}

/* ---------------------------------------------------------------- peers */

static int add_peers(struct node *n)
{
    for (size_t i = 0; n->mset && i < n->mset->n_members; i++) {
        const Cairn__Member *m = n->mset->members[i];
        if (m->id == n->self_id)
            continue;
        int rc = peer_add(n->peers, m->id, (const char *const *)m->peer_urls, m->n_peer_urls);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* ---------------------------------------------------------------- snapshot sender */

static int peer_slot(struct node *n, uint64_t id)
{
    for (uint32_t i = 0; i < n->conf.n_voters; i++)
        if (n->conf.voters[i] == id)
            return (int)i;
    for (uint32_t i = 0; i < n->conf.n_learners; i++)
        if (n->conf.learners[i] == id)
            return RAFT_MAX_MEMBERS + (int)i;
    return -1;
}

/* The sender thread: copy the store (online backup) and hand the file to the transport. */
static void *snap_main(void *arg)
{
    pthread_setname_np(pthread_self(), "cairn-snapsend"); /* top -H, perf and gdb show it */
    struct node *n = arg;
    for (;;) {
        pthread_mutex_lock(&n->mu);
        while (!n->snap_head && !n->stopping)
            pthread_cond_wait(&n->snap_cond, &n->mu);
        if (n->stopping) {
            pthread_mutex_unlock(&n->mu);
            break;
        }
        struct snap_job *job = n->snap_head;
        n->snap_head = job->next;
        pthread_mutex_unlock(&n->mu);

        char path[4300];
        snprintf(path, sizeof path, "%s/send-%016" PRIx64 "-%016" PRIx64 ".db", n->incoming_dir, job->to,
                 job->msg->snapshot ? job->msg->snapshot->index : 0);
        int err = 0, rc;
        uint64_t copy_index = 0;
        int64_t t0 = mono_now_ns();
        struct mvcc_reader *r = node_read_begin(n, &n->snap_slot, &err);
        rc = r ? mvcc_snapshot_write(r, path, &copy_index) : err;
        if (r)
            node_read_end(n);
        if (rc == 0)
            rc = peer_send_snapshot(n->peers, job->to, job->msg, path);
        if (rc < 0) {
            log_warning(LOG_FIELDS(LOG_HEX("CAIRN_PEER", job->to)),
                        "cannot send a snapshot to %016" PRIx64 ": %s", job->to, cairn_strerror(rc));
            unlink(path);
            on_snapshot_done(n, job->to, 0);
        } else {
            log_notice(LOG_FIELDS(LOG_HEX("CAIRN_PEER", job->to), LOG_U64("CAIRN_INDEX", copy_index),
                                  LOG_U64("CAIRN_DURATION_MS", (mono_now_ns() - t0) / 1000000)),
                       "sending a snapshot of the store (applied to %" PRIu64 ") to %016" PRIx64, copy_index,
                       job->to);
        }
        cairnpeer__message__free_unpacked(job->msg, NULL);
        free(job);
    }
    return NULL;
}

/* The sender names its copies send-<peer>-<index>.db; once a stream ended they go. */
static void remove_sent_copies(struct node *n, uint64_t to)
{
    char prefix[64];
    snprintf(prefix, sizeof prefix, "send-%016" PRIx64 "-", to);
    DIR *d = opendir(n->incoming_dir);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d)))
        if (!strncmp(de->d_name, prefix, strlen(prefix)))
            unlinkat(dirfd(d), de->d_name, 0);
    closedir(d);
}

/* Queue a MsgSnap for the sender thread (one stream per follower at a time). */
static int queue_snapshot(struct node *n, const Cairnpeer__Message *pb)
{
    int slot = peer_slot(n, pb->to);
    if (slot < 0 || n->snap_busy[slot])
        return -EBUSY;
    size_t len = cairnpeer__message__get_packed_size(pb);
    uint8_t *buf = malloc(len ? len : 1);
    struct snap_job *job = calloc(1, sizeof(*job));
    if (!buf || !job) {
        free(buf);
        free(job);
        return -ENOMEM;
    }
    cairnpeer__message__pack(pb, buf);
    job->msg = cairnpeer__message__unpack(NULL, len, buf);
    free(buf);
    if (!job->msg) {
        free(job);
        return -ENOMEM;
    }
    job->to = pb->to;
    n->snap_busy[slot] = 1;
    pthread_mutex_lock(&n->mu);
    struct snap_job **pp = &n->snap_head;
    while (*pp)
        pp = &(*pp)->next;
    *pp = job;
    pthread_cond_signal(&n->snap_cond);
    pthread_mutex_unlock(&n->mu);
    return 0;
}

/* ---------------------------------------------------------------- the Ready steps */

static void note_unreachable(struct node *n, uint64_t id)
{
    for (size_t i = 0; i < n->n_unreachable; i++)
        if (n->unreachable[i] == id)
            return;
    if (n->n_unreachable < 2 * RAFT_MAX_MEMBERS)
        n->unreachable[n->n_unreachable++] = id;
}

/* Which of a Ready's messages a send_messages call sends. */
enum send_part { SEND_NOW, SEND_AFTER_APPLY, SEND_NEVER };

/*
 * A leader's append without entries only tells a follower the new commit
 * index (or probes it): nobody waits for it.  The client whose entry this
 * Ready commits waits for the apply and the reply, and each send costs the
 * node thread a system call that runs the loopback receiver's TCP stack too
 * (~50 us each on the test machine), so these go after the replies.  Raft
 * takes messages late, or in another order, as a network would deliver them.
 *
 * Not when the Ready commits a membership change: applying it may remove a
 * member from the transport, and that member learns of its own removal only
 * from this commit index (test_membership's removal of the member a client
 * talks to waited for it forever).
 */
static bool may_defer(const struct raft_ready *rd)
{
    if (rd->role != RAFT_LEADER)
        return false;
    for (size_t i = 0; i < rd->n_committed; i++)
        if (rd->committed[i].type == RAFT_ENTRY_CONF_CHANGE)
            return false;
    return true;
}

/*
 * An append without entries that the same Ready's append with entries to the
 * same member makes redundant: that one says as much (the same term, a
 * commit index as high) and is sent first anyway.  Under load the acks that
 * commit a batch and the next proposals are stepped together, and each
 * follower would get the commit index twice, once more after the apply:
 * one more message for nng to carry and one more wake-up for the follower.
 */
static bool superseded(const struct raft_ready *rd, const struct raft_message *m)
{
    if (m->type != RAFT_MSG_APP || m->n_entries)
        return false;
    for (size_t i = 0; i < rd->n_msgs; i++) {
        const struct raft_message *o = &rd->msgs[i];
        if (o->type == RAFT_MSG_APP && o->n_entries && o->to == m->to && o->term == m->term && o->commit >= m->commit)
            return true;
    }
    return false;
}

static enum send_part part_of(bool defer, const struct raft_ready *rd, const struct raft_message *m)
{
    if (defer && m->type == RAFT_MSG_APP && m->n_entries == 0)
        return superseded(rd, m) ? SEND_NEVER : SEND_AFTER_APPLY;
    return SEND_NOW;
}

/* Step 5: the messages of one part, grouped per destination into one envelope each; MsgSnap to the sender thread. */
static void send_messages(struct node *n, const struct raft_ready *rd, enum send_part part)
{
    size_t i = 0, mine = 0;
    if (!rd->n_msgs)
        return;
    /* Which messages this call sends, decided once (part_of looks through
     * the whole Ready); each is cleared when it goes into an envelope. */
    bool *todo = malloc(rd->n_msgs * sizeof(*todo));
    if (!todo)
        return;
    bool defer = may_defer(rd);
    for (i = 0; i < rd->n_msgs; i++) {
        todo[i] = part_of(defer, rd, &rd->msgs[i]) == part;
        mine += todo[i];
    }
    if (!mine) {
        free(todo);
        return;
    }
    Cairnpeer__Message *pbs = calloc(rd->n_msgs, sizeof(*pbs));
    Cairnpeer__Message **ptrs = calloc(rd->n_msgs, sizeof(*ptrs));
    struct raftmsg_buf *bufs = calloc(rd->n_msgs, sizeof(*bufs));
    if (!pbs || !ptrs || !bufs)
        goto out;
    for (i = 0; i < rd->n_msgs; i++) {
        if (!todo[i])
            continue;
        uint64_t to = rd->msgs[i].to;
        size_t k = 0;
        for (size_t j = i; j < rd->n_msgs; j++) {
            if (!todo[j] || rd->msgs[j].to != to)
                continue;
            todo[j] = false;
            if (raftmsg_to_pb(&rd->msgs[j], &pbs[j], &bufs[j]) < 0)
                continue;
            if (rd->msgs[j].type == RAFT_MSG_SNAP) {
                if (queue_snapshot(n, &pbs[j]) == -EBUSY)
                    continue; /* a stream to it is running; its report will come */
                continue;
            }
            ptrs[k++] = &pbs[j];
        }
        if (!k)
            continue;
        Cairnpeer__MessageBatch batch = CAIRNPEER__MESSAGE_BATCH__INIT;
        batch.n_messages = k;
        batch.messages = ptrs;
        int rc = peer_send(n->peers, to, &batch);
        if (rc < 0)
            note_unreachable(n, to);
    }
out:
    if (bufs)
        for (i = 0; i < rd->n_msgs; i++)
            raftmsg_buf_release(&bufs[i]);
    free(bufs);
    free(ptrs);
    free(pbs);
    free(todo);
}

/* Step 1: replace the store by the received copy, then record the snapshot. */
static int install_snapshot(struct node *n, const struct raft_snapshot_meta *sm)
{
    char why[512] = "";
    int rc;
    if (!n->pending_snap_path || n->pending_snap_index != sm->index) {
        log_event(LOG_LEVEL_CRIT, MSGID_CORRUPTION, LOG_FIELDS(LOG_U64("CAIRN_INDEX", sm->index)),
                 "raft accepted a snapshot at index %" PRIu64 " whose data is not here", sm->index);
        return -CAIRN_E_CORRUPT;
    }
    int64_t t0 = mono_now_ns();
    pthread_rwlock_wrlock(&n->gate);
    close_readers(n);
    ckpt_store_closing(n->ckpt);
    /* reopened as boot opened it: the lease minimum is applied state, and
     * the page cache's size is the member's RSS */
    struct mvcc_options opts = mvcc_options_of(n->store);
    mvcc_close(n->store);
    n->store = NULL;
    rc = mvcc_restore(n->db_dir, n->pending_snap_path, why, sizeof why);
    int rc2 = mvcc_open(n->db_dir, &opts, &n->store, why[0] ? why + strlen(why) : why,
                        sizeof why - strlen(why));
    pthread_rwlock_unlock(&n->gate);
    if (rc < 0 || rc2 < 0) {
        log_event(LOG_LEVEL_CRIT, MSGID_STORAGE_FAILURE, LOG_FIELDS(LOG_U64("CAIRN_INDEX", sm->index)), "cannot install the snapshot at %" PRIu64 ": %s",
                 sm->index, why);
        return rc < 0 ? rc : rc2;
    }
    unlink(n->pending_snap_path);
    free(n->pending_snap_path);
    n->pending_snap_path = NULL;
    struct node_observer obs[NODE_MAX_OBSERVERS];
    for (size_t k = 0, nk = observers(n, obs); k < nk; k++)
        if (obs[k].store_replaced)
            obs[k].store_replaced(obs[k].arg);

    uint8_t *conf = NULL;
    size_t conf_len = 0;
    if ((rc = raftmsg_conf_encode(&sm->conf_state, &conf, &conf_len)) < 0)
        return rc;
    struct wal_snapshot ws = {.index = sm->index, .term = sm->term};
    struct snap_meta meta = {.term = sm->term, .index = sm->index, .conf_state = conf, .conf_len = conf_len};
    if ((rc = wal_save_snapshot(n->wal, &ws)) == 0)
        rc = snap_save(n->snap_dir, &meta);
    free(conf);
    if (rc < 0)
        return rc;
    struct mvcc_status st = {0};
    mvcc_store_status(n->store, &st);
    n->applied = st.consistent_index;
    n->applied_term = st.consistent_term;
    n->snap_index = sm->index;
    n->conf = sm->conf_state;
    n->store_changed = 1;
    STAT_ADD(n, snapshots_installed, 1);
    /* the member set came with the snapshot: connect to whoever joined or changed URLs meanwhile */
    Cairnint__MemberSet *old = copy_set(n->mset);
    if (load_members(n, NULL) == 0)
        sync_peers(n, old);
    if (old)
        cairnint__member_set__free_unpacked(old, NULL);
    n->attrs_published = 0;
    log_event(LOG_LEVEL_NOTICE, MSGID_SNAPSHOT_INSTALLED, LOG_FIELDS(LOG_U64("CAIRN_INDEX", sm->index), LOG_U64("CAIRN_TERM", sm->term),
                          LOG_I64("CAIRN_REVISION", st.revision),
                          LOG_U64("CAIRN_DURATION_MS", (mono_now_ns() - t0) / 1000000)),
               "installed a snapshot at index %" PRIu64 " (store applied to %" PRIu64 ", revision %" PRId64 ")",
               sm->index, st.consistent_index, st.revision);
    return 0;
}

/* avg moves an eighth of the way to x (starts at the first sample).  A
 * sample above twice the average counts as twice the average: one stalled
 * fdatasync (15 ms here, among 0.1-0.3 ms ones) would otherwise hold the
 * average up for dozens of Readies, while a disk that stays slow still
 * pulls it up by an eighth per sample. */
static void moving_average(double *avg, double x)
{
    if (*avg > 0 && x > 2 * *avg)
        x = 2 * *avg;
    *avg = *avg > 0 ? *avg + (x - *avg) / 8 : x;
}

/* Steps 1-4: make the Ready's snapshot, entries and hard state durable. */
static int persist(struct node *n, const struct raft_ready *rd)
{
    int rc;
    if (rd->snapshot && (rc = install_snapshot(n, rd->snapshot)) < 0)
        return rc;
    if (!rd->n_entries && !rd->hard_state_changed)
        return 0;
    struct wal_entry stack[64], *ents = stack;
    if (rd->n_entries > 64 && !(ents = malloc(rd->n_entries * sizeof(*ents))))
        return -ENOMEM;
    for (size_t i = 0; i < rd->n_entries; i++)
        ents[i] = (struct wal_entry){.index = rd->entries[i].index, .term = rd->entries[i].term,
                                     .type = rd->entries[i].type, .data = rd->entries[i].data,
                                     .len = rd->entries[i].len};
    struct wal_hardstate hs = {rd->hard_state.term, rd->hard_state.vote, rd->hard_state.commit};
    uint64_t sync_ns = 0;
    if (!rd->must_sync && !rd->n_entries)
        rc = wal_write_state(n->wal, &hs); /* commit index only: durable with the next sync (raft.h) */
    else
        rc = wal_save(n->wal, rd->hard_state_changed ? &hs : NULL, ents, rd->n_entries, &sync_ns);
    if (ents != stack)
        free(ents);
    if (rc == 0 && sync_ns) {
        histogram_observe_ns(&n->stats.wal_fsync, sync_ns);
        moving_average(&n->sync_ns_avg, (double)sync_ns);
    }
    if (rc == 0 && (int64_t)sync_ns > SLOW_SYNC_NS) {
        STAT_ADD(n, slow_fsyncs, 1);
        log_event(LOG_LEVEL_WARNING, MSGID_SLOW_FSYNC, LOG_FIELDS(LOG_U64("CAIRN_DURATION_MS", sync_ns / 1000000)),
                    "slow fdatasync of the WAL: %" PRIu64 " ms (expected under 10 ms; check the disk)",
                    sync_ns / 1000000);
    }
    return rc;
}

/* ---------------------------------------------------------------- membership */

/* Answer waiter id with a packed Response (the header is filled here). */
static void reply_packed(struct node *n, uint64_t id, Cairn__Response *resp, int64_t revision, int code)
{
    Cairn__ResponseHeader hdr = CAIRN__RESPONSE_HEADER__INIT;
    struct raft_basic_status bs;
    raft_basic_status(n->raft, &bs);
    hdr.cluster_id = n->cluster_id;
    hdr.member_id = n->self_id;
    hdr.revision = revision ? revision : n->store_revision;
    hdr.raft_term = bs.term;
    resp->header = &hdr;
    size_t len;
    uint8_t *buf = fastpack_dup(&resp->base, &len);
    if (!buf) {
        wait_fire(n->waits, id, NULL, 0, ENOMEM);
        return;
    }
    if (!wait_fire(n->waits, id, buf, len, code))
        free(buf);
}

static void reply_error_msg(struct node *n, uint64_t id, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void reply_error_msg(struct node *n, uint64_t id, int code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    Cairn__Response resp = CAIRN__RESPONSE__INIT;
    Cairn__Error e = CAIRN__ERROR__INIT;
    e.code = (uint32_t)code;
    e.message = msg;
    e.member_id = n->self_id;
    resp.error = &e;
    reply_packed(n, id, &resp, 0, code);
}

void node_fail_waiter(struct node *n, uint64_t req_id, int code)
{
    wait_fire(n->waits, req_id, NULL, 0, code);
}

/* The answer to an applied membership change: the member list (and the member added). */
static void reply_members(struct node *n, uint64_t id, int kind, uint64_t member, int64_t revision)
{
    Cairn__Response resp = CAIRN__RESPONSE__INIT;
    Cairn__MemberAddResponse add = CAIRN__MEMBER_ADD_RESPONSE__INIT;
    Cairn__MemberRemoveResponse rm = CAIRN__MEMBER_REMOVE_RESPONSE__INIT;
    Cairn__MemberPromoteResponse pr = CAIRN__MEMBER_PROMOTE_RESPONSE__INIT;
    Cairn__MemberUpdateResponse up = CAIRN__MEMBER_UPDATE_RESPONSE__INIT;
    size_t nm = n->mset ? n->mset->n_members : 0;
    Cairn__Member **ms = n->mset ? n->mset->members : NULL;
    switch (kind) {
    case RAFT_CC_ADD_VOTER:
    case RAFT_CC_ADD_LEARNER:
        add.member = (Cairn__Member *)members_find(n->mset, member);
        add.n_members = nm;
        add.members = ms;
        resp.body_case = CAIRN__RESPONSE__BODY_MEMBER_ADD;
        resp.member_add = &add;
        break;
    case RAFT_CC_REMOVE:
        rm.n_members = nm;
        rm.members = ms;
        resp.body_case = CAIRN__RESPONSE__BODY_MEMBER_REMOVE;
        resp.member_remove = &rm;
        break;
    case RAFT_CC_PROMOTE:
        pr.n_members = nm;
        pr.members = ms;
        resp.body_case = CAIRN__RESPONSE__BODY_MEMBER_PROMOTE;
        resp.member_promote = &pr;
        break;
    default:
        up.n_members = nm;
        up.members = ms;
        resp.body_case = CAIRN__RESPONSE__BODY_MEMBER_UPDATE;
        resp.member_update = &up;
        break;
    }
    reply_packed(n, id, &resp, revision, 0);
}

int node_propose_member_change(struct node *n, uint64_t req_id, int kind, uint64_t id, const Cairn__Member *m)
{
    Cairnint__MemberChange mc = CAIRNINT__MEMBER_CHANGE__INIT;
    mc.id = req_id;
    mc.proposer = n->self_id;
    mc.member = (Cairn__Member *)m;
    struct item *it = calloc(1, sizeof(*it));
    size_t len = cairnint__member_change__get_packed_size(&mc);
    void *buf = malloc(len ? len : 1);
    if (!it || !buf) {
        free(it);
        free(buf);
        return -ENOMEM;
    }
    cairnint__member_change__pack(&mc, buf);
    it->type = IT_MEMBER;
    it->id = req_id;
    it->data = buf;
    it->len = len;
    it->kind = kind;
    it->member = id;
    int rc = inbox_push(n, it, 1);
    if (rc < 0)
        item_free(it);
    return rc;
}

/*
 * The voters this member knows to be up: connected now (a dead member's
 * connection drops at once) and, on the leader, heard from within the last
 * election timeout too (Raft's recent activity alone lags a kill by up to an
 * election timeout, long enough to let a quorum-losing change through).
 */
static size_t active_voters(struct node *n, const struct raft_status *st, uint64_t *out)
{
    size_t k = 0;
    out[k++] = n->self_id;
    struct peer_stats ps[2 * RAFT_MAX_MEMBERS];
    size_t np = peer_stats(n->peers, ps, 2 * RAFT_MAX_MEMBERS);
    for (size_t i = 0; i < np && k < 2 * RAFT_MAX_MEMBERS; i++) {
        if (!ps[i].connected)
            continue;
        int recent = st->role != RAFT_LEADER;
        for (uint32_t j = 0; j < st->n_progress; j++)
            if (st->progress[j].id == ps[i].id)
                recent = st->progress[j].recent_active;
        if (recent)
            out[k++] = ps[i].id;
    }
    return k;
}

/* A MemberAdd/Remove/Promote from a client of this member: check it, then propose it. */
static void member_change_item(struct node *n, struct item *it)
{
    int kind = it->kind;
    uint64_t id = it->member, req = it->id;
    const Cairn__Member *old = members_find(n->mset, id);
    struct raft_status *st = calloc(1, sizeof(*st));
    Cairnint__MemberChange *mc = cairnint__member_change__unpack(NULL, it->len, it->data);
    if (!st || !mc) {
        wait_fire(n->waits, req, NULL, 0, ENOMEM);
        goto out;
    }
    raft_status(n->raft, st);
    /* Only a leader that has applied all it committed knows the set is as new
     * as anything a client was told (member items run after the ready loop). */
    bool current = st->role == RAFT_LEADER && n->applied >= st->commit;
    /* Only the leader can judge a promotion, and a follower may not yet have
     * applied the learner's addition: NOT_LEADER first, which the client
     * takes to its next endpoint, rather than "no such member". */
    if (kind == RAFT_CC_PROMOTE && st->role != RAFT_LEADER) {
        reply_error_msg(n, req, CAIRN_E_NOT_LEADER,
                        "only the leader knows whether a learner has caught up: send MemberPromote to the "
                        "leader, member %016" PRIx64,
                        st->lead);
        goto out;
    }
    if (kind == RAFT_CC_ADD_VOTER || kind == RAFT_CC_ADD_LEARNER) {
        if (old) {
            reply_error_msg(n, req, CAIRN_E_MEMBER_EXISTS, "member %016" PRIx64 " (%s) already has these peer URLs",
                            id, old->name[0] ? old->name : "not started yet");
            goto out;
        }
        if (members_is_removed(n->mset, id)) {
            reply_error_msg(n, req, CAIRN_E_MEMBER_EXISTS,
                            "member ID %016" PRIx64 " (from these peer URLs) was removed from the cluster and IDs "
                            "are never reused: give the new member other peer URLs (another port)",
                            id);
            goto out;
        }
        for (size_t i = 0; mc->member && i < mc->member->n_peer_urls; i++) {
            uint64_t owner = members_url_owner(n->mset, mc->member->peer_urls[i]);
            if (owner) {
                reply_error_msg(n, req, CAIRN_E_PEER_URL_EXISTS, "peer URL %s is already used by member %016" PRIx64,
                                mc->member->peer_urls[i], owner);
                goto out;
            }
        }
        if (kind == RAFT_CC_ADD_LEARNER && n->conf.n_learners >= 1) {
            reply_error_msg(n, req, CAIRN_E_TOO_MANY_LEARNERS,
                            "the cluster already has a learner (etcd's limit is one): promote or remove it first");
            goto out;
        }
    } else if (!old && (current || kind == RAFT_CC_PROMOTE)) {
        reply_error_msg(n, req, CAIRN_E_MEMBER_NOT_FOUND, "no member %016" PRIx64 " in the cluster", id);
        goto out;
    }
    /* else a removal this member cannot judge: it may not yet have applied the
     * member's addition, which the client may already have been told of.  The
     * applier judges it against the set at its place in the log, and answers
     * MEMBER_NOT_FOUND from there if it must. */
    if (kind == RAFT_CC_PROMOTE) {
        if (!old->is_learner) {
            reply_error_msg(n, req, CAIRN_E_INVALID_ARGUMENT, "member %016" PRIx64 " is a voter already", id);
            goto out;
        }
        uint64_t have = 0;
        for (uint32_t i = 0; i < st->n_progress; i++)
            if (st->progress[i].id == id)
                have = st->progress[i].match;
        /* etcd's rule: the learner holds at least 90% of the leader's log */
        if (have * 10 < st->last_index * 9) {
            reply_error_msg(n, req, CAIRN_E_LEARNER_NOT_READY,
                            "learner %016" PRIx64 " has %" PRIu64 " of the leader's %" PRIu64
                            " entries; promote it once it has caught up",
                            id, have, st->last_index);
            goto out;
        }
    }
    if (n->cfg->strict_reconfig_check) {
        uint64_t active[2 * RAFT_MAX_MEMBERS];
        size_t na = active_voters(n, st, active);
        if (members_check_quorum(n->conf.voters, n->conf.n_voters, active, na, kind, id)) {
            reply_error_msg(n, req, CAIRN_E_UNHEALTHY,
                            "unhealthy cluster: %zu of %u voters are reachable from this member; the change "
                            "could leave the cluster without quorum (--strict-reconfig-check)",
                            na, n->conf.n_voters);
            goto out;
        }
    }
    int rc = raft_propose_conf_change(n->raft, (uint32_t)kind, id, it->data, it->len);
    if (rc == -CAIRN_E_PROPOSAL_DROPPED)
        reply_error_msg(n, req, CAIRN_E_PROPOSAL_DROPPED,
                        "another membership change is still being applied, or there is no leader; retry shortly");
    else if (rc < 0)
        wait_fire(n->waits, req, NULL, 0, -rc);
    else
        log_notice(LOG_FIELDS(LOG_HEX("CAIRN_PEER", id)), "proposed a membership change: %s %016" PRIx64,
                   kind == RAFT_CC_REMOVE ? "remove" : kind == RAFT_CC_PROMOTE ? "promote" : "add", id);
out:
    if (mc)
        cairnint__member_change__free_unpacked(mc, NULL);
    free(st);
}

/* Make n->mset the set packed in buf (taken) and have the store write it with entry me. */
static int set_members(struct node *n, uint8_t *buf, size_t len, struct mvcc_request *req, struct kvconv_arena *a)
{
    Cairnint__MemberSet *s = cairnint__member_set__unpack(NULL, len, buf);
    uint8_t *copy = kvconv_arena_alloc(a, len ? len : 1);
    if (!s || !copy) {
        free(buf);
        if (s)
            cairnint__member_set__free_unpacked(s, NULL);
        return -ENOMEM;
    }
    memcpy(copy, buf, len);
    free(buf);
    if (n->mset)
        cairnint__member_set__free_unpacked(n->mset, NULL);
    n->mset = s;
    memset(req, 0, sizeof(*req));
    req->type = MVCC_REQ_RECORD_PUT;
    req->record.ns = (struct mvcc_buf){MEMBERS_RECORD_NS, strlen(MEMBERS_RECORD_NS)};
    req->record.name = (struct mvcc_buf){MEMBERS_RECORD_NAME, strlen(MEMBERS_RECORD_NAME)};
    req->record.value = (struct mvcc_buf){copy, len};
    return 0;
}

/* A committed membership change (conf change or member_update/attributes): the new set, or a code refusing it. */
static int apply_member_change(struct node *n, uint64_t index, int kind, uint64_t id, const Cairn__Member *m,
                               struct mvcc_request *req, struct kvconv_arena *a)
{
    if (kind == MEMBERS_UPDATE_URLS)
        for (size_t i = 0; m && i < m->n_peer_urls; i++) {
            uint64_t owner = members_url_owner(n->mset, m->peer_urls[i]);
            if (owner && owner != id)
                return CAIRN_E_PEER_URL_EXISTS;
        }
    uint8_t *buf = NULL;
    size_t len = 0;
    int code = members_change(n->mset, kind, id, m, &buf, &len);
    if (code) {
        if (kind != MEMBERS_ATTRIBUTES)
            log_warning(LOG_FIELDS(LOG_U64("CAIRN_INDEX", index), LOG_HEX("CAIRN_PEER", id)),
                        "membership change at index %" PRIu64 " for %016" PRIx64 " leaves the member set as it "
                        "was: %s",
                        index, id, cairn_strerror(-code));
        return code;
    }
    int rc = set_members(n, buf, len, req, a);
    return rc < 0 ? -rc : 0;
}

/* Both members exist and have the same peer URLs, in the same order. */
static int same_peer_urls(const Cairn__Member *a, const Cairn__Member *b)
{
    if (!a || !b || a->n_peer_urls != b->n_peer_urls)
        return 0;
    for (size_t k = 0; k < a->n_peer_urls; k++)
        if (strcmp(a->peer_urls[k], b->peer_urls[k]))
            return 0;
    return 1;
}

/* Make the peer transport match the member set after a change (old: the set before). */
static void sync_peers(struct node *n, const Cairnint__MemberSet *old)
{
    for (size_t i = 0; old && i < old->n_members; i++) {
        const Cairn__Member *o = old->members[i];
        if (o->id != n->self_id && !same_peer_urls(o, members_find(n->mset, o->id)))
            peer_remove(n->peers, o->id);
    }
    for (size_t i = 0; n->mset && i < n->mset->n_members; i++) {
        const Cairn__Member *m = n->mset->members[i];
        if (m->id == n->self_id || same_peer_urls(m, members_find(old, m->id)))
            continue;
        int rc = peer_add(n->peers, m->id, (const char *const *)m->peer_urls, m->n_peer_urls);
        if (rc < 0)
            log_err(LOG_FIELDS(LOG_HEX("CAIRN_PEER", m->id)), "cannot connect to new member %016" PRIx64 ": %s",
                    m->id, cairn_strerror(rc));
    }
    if (members_is_removed(n->mset, n->self_id) && !n->info.removed) {
        log_event(LOG_LEVEL_WARNING, MSGID_MEMBER_REMOVED, LOG_FIELDS(LOG_HEX("CAIRN_MEMBER", n->self_id)),
                  "this member (%016" PRIx64 ") was removed from the cluster; it stops", n->self_id);
        pthread_mutex_lock(&n->info_mu);
        n->info.removed = 1;
        pthread_mutex_unlock(&n->info_mu);
    }
}

/* Copy of a set, so sync_peers can compare before and after a batch. */
static Cairnint__MemberSet *copy_set(const Cairnint__MemberSet *s)
{
    if (!s)
        return NULL;
    size_t len = cairnint__member_set__get_packed_size(s);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        return NULL;
    cairnint__member_set__pack(s, buf);
    Cairnint__MemberSet *c = cairnint__member_set__unpack(NULL, len, buf);
    free(buf);
    return c;
}

/* The set in the store (at start and after a snapshot install); the boot members for a store without one. */
static int load_members(struct node *n, const struct boot_state *bs)
{
    struct mvcc_reader *r = NULL;
    Cairnint__MemberSet *s = NULL;
    int rc = mvcc_reader_open(n->store, &r);
    if (rc == 0) {
        rc = members_read(r, &s);
        mvcc_reader_close(r);
    }
    if (rc == -CAIRN_E_NOT_FOUND && bs) {
        /* a member joining from nothing, or a store older than the record: --initial-cluster's view */
        uint8_t *buf = NULL;
        size_t len = 0;
        if ((rc = boot_pack_member_set(bs->members, bs->n_members, &buf, &len)) < 0)
            return rc;
        s = cairnint__member_set__unpack(NULL, len, buf);
        free(buf);
        rc = s ? 0 : -ENOMEM;
    }
    if (rc < 0)
        return rc;
    if (n->mset)
        cairnint__member_set__free_unpacked(n->mset, NULL);
    n->mset = s;
    return 0;
}

/* A started member tells the cluster its name and client URLs (etcd's publish), until its record shows them. */
static void publish_attributes(struct node *n)
{
    if (n->attrs_published || !n->lead || mono_now_ns() < n->attrs_next_ns)
        return;
    const struct config *c = n->cfg;
    const struct config_urls *cu = c->advertise_client_urls.n ? &c->advertise_client_urls : &c->listen_client_urls;
    const Cairn__Member *me = members_find(n->mset, n->self_id);
    if (!me)
        return; /* not in the set (yet): a joining member before its snapshot */
    int same = !strcmp(me->name, c->name) && me->n_client_urls == cu->n;
    for (size_t i = 0; same && i < cu->n; i++)
        same = !strcmp(me->client_urls[i], cu->v[i].url);
    if (same) {
        n->attrs_published = 1;
        return;
    }
    char *urls[CONFIG_MAX_URLS];
    for (size_t i = 0; i < cu->n; i++)
        urls[i] = cu->v[i].url;
    Cairn__Member m = CAIRN__MEMBER__INIT;
    m.id = n->self_id;
    m.name = c->name;
    m.n_client_urls = cu->n;
    m.client_urls = urls;
    Cairnint__RaftRequest rr = CAIRNINT__RAFT_REQUEST__INIT;
    rr.request_case = CAIRNINT__RAFT_REQUEST__REQUEST_MEMBER_ATTRIBUTES;
    rr.member_attributes = &m;
    node_propose_internal(n, &rr);
    n->attrs_next_ns = mono_now_ns() + 2000000000LL; /* until it shows in the set */
}

/* The committed entries of one Ready, decoded for the store and kept until the replies are built. */
struct apply_batch {
    struct mvcc_entry *ents;
    Cairnint__RaftRequest **rrs;   /* in arena; NULL for no-ops and conf changes */
    int *refused;                  /* a before_apply hook's positive CAIRN_E_ code, or 0 */
    Cairnint__MemberChange **mcs;  /* conf changes: their context (waiter, member) */
    int *kinds;                    /* conf changes: RAFT_CC_ type; member_update: MEMBERS_UPDATE_URLS */
    uint64_t *member_ids;          /* the member a membership change is about */
    Cairnint__MemberSet *old_set;  /* the member set before the batch changed it (NULL: unchanged) */
    size_t n;
    struct kvconv_arena arena;
};

static void reply_write(struct node *n, const Cairnint__RaftRequest *rr, const struct mvcc_applied *ap,
                        uint64_t term)
{
    Cairn__Response resp = CAIRN__RESPONSE__INIT;
    Cairn__ResponseHeader hdr = CAIRN__RESPONSE_HEADER__INIT;
    struct kvconv_arena a;
    kvconv_arena_init(&a);
    hdr.cluster_id = n->cluster_id;
    hdr.member_id = n->self_id;
    hdr.revision = ap->resp.revision;
    hdr.raft_term = term;
    resp.header = &hdr;
    int rc = kvconv_write_resp(rr, &ap->resp, &resp, &a);
    size_t len = 0;
    uint8_t *buf = NULL;
    if (rc == 0)
        buf = fastpack_dup(&resp.base, &len);
    kvconv_arena_free(&a);
    if (!buf) {
        wait_fire(n->waits, rr->id, NULL, 0, rc < 0 ? -rc : ENOMEM);
        return;
    }
    /* the code travels beside the packed reply (which carries it too) for the request counters */
    if (!wait_fire(n->waits, rr->id, buf, len, ap->resp.err < 0 ? -ap->resp.err : 0))
        free(buf);
}

/* Step 6: apply the committed entries in one store transaction, then answer the writes waiting on them. */
static int apply_committed(struct node *n, const struct raft_ready *rd)
{
    struct apply_batch b = {0};
    int rc = 0;
    if (!rd->n_committed)
        return 0;
    kvconv_arena_init(&b.arena);
    b.ents = calloc(rd->n_committed, sizeof(*b.ents));
    b.rrs = calloc(rd->n_committed, sizeof(*b.rrs));
    b.refused = calloc(rd->n_committed, sizeof(*b.refused));
    b.mcs = calloc(rd->n_committed, sizeof(*b.mcs));
    b.kinds = calloc(rd->n_committed, sizeof(*b.kinds));
    b.member_ids = calloc(rd->n_committed, sizeof(*b.member_ids));
    if (!b.ents || !b.rrs || !b.refused || !b.mcs || !b.kinds || !b.member_ids) {
        rc = -ENOMEM;
        goto out;
    }
    struct node_observer obs[NODE_MAX_OBSERVERS];
    size_t nobs = observers(n, obs);
    STAT_ADD(n, proposals_committed, rd->n_committed);
    for (size_t i = 0; i < rd->n_committed; i++) {
        const struct raft_entry *e = &rd->committed[i];
        struct mvcc_entry *me = &b.ents[b.n++];
        me->index = e->index;
        me->term = e->term;
        me->req.type = MVCC_REQ_NOOP;
        if (e->type == RAFT_ENTRY_CONF_CHANGE) {
            struct raft_conf_change cc;
            int r = raft_apply_conf_change(n->raft, e, &cc, &n->conf);
            publish_solo_read_index(n); /* 0 once another voter counts, before anything later is acknowledged */
            if (r < 0)
                log_err(LOG_FIELDS(LOG_U64("CAIRN_INDEX", e->index)),
                        "conf change at index %" PRIu64 " not applied: %s", e->index, cairn_strerror(r));
            else
                log_event(LOG_LEVEL_NOTICE, cc.type == RAFT_CC_REMOVE ? MSGID_MEMBER_REMOVED : MSGID_MEMBER_ADDED,
                          LOG_FIELDS(LOG_U64("CAIRN_INDEX", e->index), LOG_HEX("CAIRN_PEER", cc.node_id)),
                          "membership change at index %" PRIu64 ": %s member %016" PRIx64, e->index,
                          cc.type == RAFT_CC_REMOVE ? "removed" : cc.type == RAFT_CC_PROMOTE ? "promoted"
                          : cc.type == RAFT_CC_ADD_LEARNER ? "added learner" : "added voter",
                          cc.node_id);
            if (e->index <= n->applied)
                continue; /* the store's member set has it already */
            if (r < 0 && raft_conf_change_decode(e->data, e->len, &cc) < 0)
                continue;
            b.mcs[i] = cc.context_len ? cairnint__member_change__unpack(NULL, cc.context_len, cc.context) : NULL;
            b.kinds[i] = (int)cc.type;
            b.member_ids[i] = cc.node_id;
            if (!b.old_set && !(b.old_set = copy_set(n->mset))) {
                rc = -ENOMEM;
                goto out;
            }
            b.refused[i] = r < 0 ? CAIRN_E_INVALID_ARGUMENT
                                 : apply_member_change(n, e->index, (int)cc.type, cc.node_id,
                                                       b.mcs[i] ? b.mcs[i]->member : NULL, &me->req, &b.arena);
            if (b.refused[i] == ENOMEM) {
                rc = -ENOMEM;
                goto out;
            }
            continue;
        }
        if (e->index <= n->applied || e->len == 0)
            continue; /* replayed below the store's consistent index, or the leader's empty entry */
        char why[200];
        /* into the batch's arena: freeing a batch of puts field by field cost a
         * thousand instructions a put (docs/performance.md, session 10) */
        Cairnint__RaftRequest *rr = kvconv_entry_unpack(e->data, e->len, &b.arena, why, sizeof why);
        if (!rr) {
            log_event(LOG_LEVEL_ERR, MSGID_CORRUPTION, LOG_FIELDS(LOG_U64("CAIRN_INDEX", e->index)),
                    "committed entry %" PRIu64 ": %s; applied as a no-op", e->index, why);
            continue;
        }
        b.rrs[i] = rr;
        int cr = kvconv_entry_req(rr, &me->req, &b.arena);
        if (cr == -ENOMEM) {
            /* a no-op here would make this member diverge from the others */
            rc = cr;
            goto out;
        }
        if (cr < 0) {
            me->req.type = MVCC_REQ_NOOP;
            if (rr->request_case != CAIRNINT__RAFT_REQUEST__REQUEST__NOT_SET)
                log_warning(LOG_FIELDS(LOG_U64("CAIRN_INDEX", e->index)),
                            "committed entry %" PRIu64 " holds a request this version does not apply (%d)",
                            e->index, (int)rr->request_case);
        }
        if ((rr->request_case == CAIRNINT__RAFT_REQUEST__REQUEST_MEMBER_UPDATE && rr->member_update) ||
            (rr->request_case == CAIRNINT__RAFT_REQUEST__REQUEST_MEMBER_ATTRIBUTES && rr->member_attributes)) {
            Cairn__Member upd = CAIRN__MEMBER__INIT;
            const Cairn__Member *m = rr->member_attributes;
            int kind = MEMBERS_ATTRIBUTES;
            if (rr->request_case == CAIRNINT__RAFT_REQUEST__REQUEST_MEMBER_UPDATE) {
                upd.id = rr->member_update->id;
                upd.n_peer_urls = rr->member_update->n_peer_urls;
                upd.peer_urls = rr->member_update->peer_urls;
                m = &upd;
                kind = MEMBERS_UPDATE_URLS;
            }
            b.kinds[i] = kind;
            b.member_ids[i] = m->id;
            if (!b.old_set && !(b.old_set = copy_set(n->mset))) {
                rc = -ENOMEM;
                goto out;
            }
            b.refused[i] = apply_member_change(n, e->index, kind, m->id, m, &me->req, &b.arena);
            if (b.refused[i] == ENOMEM) {
                rc = -ENOMEM;
                goto out;
            }
        }
        for (size_t k = 0; k < nobs && !b.refused[i]; k++) {
            if (!obs[k].before_apply)
                continue;
            int code = obs[k].before_apply(obs[k].arg, e->index, rr, &me->req, &b.arena);
            if (code > 0) {
                b.refused[i] = code;
                me->req.type = MVCC_REQ_NOOP;
            }
        }
    }
    bool event_values = false;
    for (size_t k = 0; k < nobs; k++)
        if (obs[k].wants_event_values && obs[k].wants_event_values(obs[k].arg))
            event_values = true;
    mvcc_set_event_values(n->store, event_values);
    int64_t t0 = mono_now_ns();
    struct mvcc_result *res = NULL;
    rc = mvcc_apply(n->store, b.ents, b.n, &res);
    int64_t took = mono_now_ns() - t0;
    if (rc < 0) {
        log_event(LOG_LEVEL_CRIT, MSGID_STORAGE_FAILURE, LOG_FIELDS(LOG_U64("CAIRN_INDEX", b.ents[0].index)),
                 "the store failed to apply entries %" PRIu64 "-%" PRIu64 ": %s; stopping", b.ents[0].index,
                 b.ents[b.n - 1].index, cairn_strerror(rc));
        goto out;
    }
    histogram_observe_ns(&n->stats.backend_commit, (uint64_t)took);
    STAT_ADD(n, proposals_applied, b.n);
    if (took > SLOW_APPLY_NS)
        STAT_ADD(n, slow_applies, 1);
    if (took > SLOW_APPLY_NS)
        log_event(LOG_LEVEL_WARNING, MSGID_SLOW_APPLY, LOG_FIELDS(LOG_U64("CAIRN_DURATION_MS", took / 1000000), LOG_U64("CAIRN_ENTRIES", b.n)),
                    "slow apply: %zu entries took %" PRId64 " ms", b.n, took / 1000000);
    n->applied = rd->committed[rd->n_committed - 1].index;
    n->applied_term = rd->committed[rd->n_committed - 1].term;
    /* The batch's result says the revision; the size (quota, metrics) is read
     * at most every STORE_SIZE_NS, not after every batch (two statements and
     * a tenth of a small batch's instructions).  Compaction changes what
     * readers may ask for: read at once. */
    n->store_revision = res->revision;
    n->store_grew = 1;
    for (size_t k = 0; k < b.n; k++)
        if (b.ents[k].req.type == MVCC_REQ_COMPACT)
            n->store_changed = 1;
    for (size_t k = 0; k < nobs; k++)
        if (obs[k].applied)
            obs[k].applied(obs[k].arg, b.ents, b.n, res);
    /* published before any reply goes out: a client that saw its write acknowledged sees it counted */
    pthread_mutex_lock(&n->info_mu);
    n->info.applied = n->applied;
    n->info.revision = res->revision;
    pthread_mutex_unlock(&n->info_mu);

    struct raft_basic_status bs;
    raft_basic_status(n->raft, &bs);
    uint64_t term = bs.term;
    if (b.old_set)
        sync_peers(n, b.old_set);
    /* The replies leave together after the loop, a large batch's from the
     * wait table's sender thread: sending one takes nng's socket lock, which
     * nng's threads contend for under load (wait.h). */
    wait_hold(n->waits);
    for (size_t i = 0; i < res->n_entries; i++) {
        Cairnint__RaftRequest *rr = b.rrs[i];
        const Cairnint__MemberChange *mc = b.mcs[i];
        if (mc && mc->proposer == n->self_id) {
            if (b.refused[i])
                wait_fire(n->waits, mc->id, NULL, 0, b.refused[i]);
            else
                reply_members(n, mc->id, b.kinds[i], b.member_ids[i], res->revision);
        }
        if (!rr || rr->proposer != n->self_id || res->entries[i].skipped)
            continue;
        if (b.refused[i])
            wait_fire(n->waits, rr->id, NULL, 0, b.refused[i]);
        else if (b.kinds[i] == MEMBERS_UPDATE_URLS)
            reply_members(n, rr->id, b.kinds[i], b.member_ids[i], res->revision);
        else
            reply_write(n, rr, &res->entries[i], term);
    }
    wait_release(n->waits);
    mvcc_result_free(res);
out:
    for (size_t i = 0; i < b.n; i++) {
        if (b.mcs && b.mcs[i])
            cairnint__member_change__free_unpacked(b.mcs[i], NULL);
    }
    if (b.old_set)
        cairnint__member_set__free_unpacked(b.old_set, NULL);
    free(b.rrs);
    free(b.mcs);
    free(b.kinds);
    free(b.member_ids);
    free(b.refused);
    free(b.ents);
    kvconv_arena_free(&b.arena);
    return rc;
}

/*
 * A local snapshot: the store is made durable, then the WAL and raft may
 * forget what it covers.  The sync (a checkpoint of SQLite's WAL, then an
 * fdatasync: 4-36 ms measured at 15k puts/s, every 10,000 entries) runs on
 * the checkpointer's thread while this one goes on applying; finish_snapshot
 * takes it from there.  Everything applied up to meta's index was committed
 * before the sync was asked for, so the sync covers it.
 */
static void snapshot_synced(struct node *n, void *arg, int stopping);

static void take_snapshot(struct node *n)
{
    struct item *it = calloc(1, sizeof(*it));
    if (!it) {
        log_err(NULL, "snapshot at %" PRIu64 " not taken: %s", n->applied, strerror(ENOMEM));
        n->snap_index = n->applied; /* try again after another snapshot-count entries */
        return;
    }
    it->type = IT_CALL;
    it->fn = snapshot_synced;
    n->snap_sync.done = it;
    n->snap_sync.active = 1;
    n->snap_sync.t0 = mono_now_ns();
    n->snap_sync.meta = (struct raft_snapshot_meta){.index = n->applied, .term = n->applied_term};
    raft_conf_state(n->raft, &n->snap_sync.meta.conf_state);
    ckpt_sync(n->ckpt);
}

/* The store is durable at least to meta's index: save the snapshot's record and let go of the log below it. */
static int finish_snapshot(struct node *n, const struct raft_snapshot_meta *snap, int64_t t0)
{
    uint8_t *conf = NULL;
    size_t conf_len = 0;
    int rc;
    struct raft_snapshot_meta meta = *snap;
    if ((rc = raftmsg_conf_encode(&meta.conf_state, &conf, &conf_len)) < 0)
        return rc;
    struct wal_snapshot ws = {.index = meta.index, .term = meta.term};
    struct snap_meta sm = {.term = meta.term, .index = meta.index, .conf_state = conf, .conf_len = conf_len};
    if ((rc = wal_save_snapshot(n->wal, &ws)) == 0 && (rc = snap_save(n->snap_dir, &sm)) == 0)
        rc = raft_compact(n->raft, &meta, n->cfg->snapshot_catchup_entries);
    free(conf);
    if (rc < 0)
        return rc;
    n->snap_index = meta.index;
    int r1 = wal_release_to(n->wal, meta.index);
    int r2 = snap_purge(n->snap_dir, n->cfg->max_snapshots ? n->cfg->max_snapshots : UINT32_MAX);
    if (r1 < 0 || r2 < 0)
        log_warning(NULL, "purging old WAL segments or snapshots failed: %s",
                    cairn_strerror(r1 < 0 ? r1 : r2));
    STAT_ADD(n, snapshots_taken, 1);
    log_event(LOG_LEVEL_INFO, MSGID_SNAPSHOT_TAKEN, LOG_FIELDS(LOG_U64("CAIRN_INDEX", meta.index), LOG_U64("CAIRN_TERM", meta.term),
                        LOG_U64("CAIRN_DURATION_MS", (mono_now_ns() - t0) / 1000000)),
             "snapshot taken at index %" PRIu64 " (term %" PRIu64 ")", meta.index, meta.term);
    return 0;
}

static void soft_state(struct node *n, const struct raft_ready *rd)
{
    if (!rd->soft_state_changed || rd->lead == n->lead)
        return;
    struct raft_basic_status bs;
    raft_basic_status(n->raft, &bs);
    uint64_t term = bs.term;
    if (rd->lead)
        STAT_ADD(n, leader_changes, 1);
    if (rd->lead)
        log_event(LOG_LEVEL_NOTICE, MSGID_LEADER_ELECTED, LOG_FIELDS(LOG_HEX("CAIRN_LEADER", rd->lead), LOG_U64("CAIRN_TERM", term)),
                   "%s %016" PRIx64 " is the leader at term %" PRIu64,
                   rd->lead == n->self_id ? "this member" : "member", rd->lead, term);
    else
        log_event(LOG_LEVEL_WARNING, MSGID_LEADER_LOST, LOG_FIELDS(LOG_HEX("CAIRN_LEADER", n->lead), LOG_U64("CAIRN_TERM", term)),
                    "lost the leader %016" PRIx64 " at term %" PRIu64, n->lead, term);
    n->lead = rd->lead;
    if (n->hooks.leader_changed)
        n->hooks.leader_changed(n->hooks.arg, rd->lead, term);
    struct node_observer obs[NODE_MAX_OBSERVERS];
    for (size_t k = 0, nk = observers(n, obs); k < nk; k++)
        if (obs[k].leader_changed)
            obs[k].leader_changed(obs[k].arg, rd->lead, term, rd->lead == n->self_id);
}

/* persist() on the WAL writer's thread (offload.h). */
struct persist_job {
    struct node *n;
    const struct raft_ready *rd;
};

static int persist_job(void *arg)
{
    struct persist_job *j = arg;
    return persist(j->n, j->rd);
}

/*
 * Whether a leader whose messages are already out (early) may write this
 * Ready's entries to the WAL while it applies the Ready's committed ones.
 * In a leader's steady state each Ready writes the proposals that came in
 * and applies what the one before it committed; one after the other, the
 * rest of the process waited on the node thread for both.  Done at once,
 * three members took 11-24% more puts at 64 in flight, and one member no
 * fewer (docs/performance.md, session 18).
 *
 * Only when the apply cannot depend on the write: every committed entry is
 * on this member's disk since an earlier Ready (raft.h's apply rule, and
 * its exception), and the Ready writes entries, so there is an fdatasync to
 * hide (a commit index alone is not synced).  Not with a membership change
 * to apply: that Ready goes one step after another, as it always did.  The
 * store may then get ahead of the commit index the WAL holds, if the member
 * stops between the two; that is safe, since those entries are committed
 * and durable, and a restart skips what the store already has (as after a
 * follower applies a commit index it has not yet written).
 */
static bool persist_while_applying(const struct raft_ready *rd)
{
    if (!rd->n_entries || !raft_ready_committed_durable(rd))
        return false;
    for (size_t i = 0; i < rd->n_committed; i++)
        if (rd->committed[i].type == RAFT_ENTRY_CONF_CHANGE)
            return false;
    return true;
}

/* apply_committed, timed for size_solo_slice: all of it, replies included,
 * since all of it runs beside the WAL's write (the store's share alone is
 * the backend_commit histogram's). */
static int timed_apply(struct node *n, const struct raft_ready *rd)
{
    int64_t t0 = mono_now_ns();
    int rc = apply_committed(n, rd);
    if (rd->n_committed) {
        moving_average(&n->apply_ns_avg, (double)(mono_now_ns() - t0));
        moving_average(&n->apply_entries_avg, (double)rd->n_committed);
    }
    return rc;
}

/*
 * How many new entries a lone voter's Ready writes (raft_config's
 * solo_ready_entries).  Sliced, a burst of proposals is written one slice
 * per Ready while the slice before is applied (docs/raft.md), and the
 * replies to the first slice leave after one sync and one slice's apply
 * instead of after the whole burst's.  That pays while a slice takes longer
 * to apply than the disk takes to sync: on a fast disk (0.1-0.3 ms here)
 * slices of 64 took one member's put 256 from 44.5k to 48.1k/s.  On a slow
 * one every extra sync is time nothing else fills: with fdatasync made 5 ms
 * slow, slices of 64 halved the same row (19.4k to 10.5k/s), and at 1 ms
 * cost 17%.  So a slice is at least SOLO_SLICE_MIN entries, and at least
 * as many as take twice the average sync to apply, at the average apply
 * cost per entry: on a slow disk a burst goes in one Ready, as before.
 */
#define SOLO_SLICE_MIN 64
static void size_solo_slice(struct node *n)
{
    double slice = SOLO_SLICE_MIN;
    if (n->apply_ns_avg > 0 && n->apply_entries_avg > 0 && n->sync_ns_avg > 0) {
        double balanced = 2 * n->sync_ns_avg / (n->apply_ns_avg / n->apply_entries_avg);
        if (balanced > slice)
            slice = balanced < UINT32_MAX ? balanced : UINT32_MAX;
    }
    raft_set_solo_ready_entries(n->raft, (uint32_t)slice);
}

static int handle_ready(struct node *n)
{
    struct raft_ready rd;
    int rc = raft_ready(n->raft, &rd);
    if (rc < 0)
        return rc;
    soft_state(n, &rd);
    /* Before the entries committed here are applied and acknowledged (a
     * linearizable read must see them), and before a vote for another
     * member leaves: linearizable reads on a lone voter take this index
     * without a round through this thread (daemon/reads.c). */
    publish_solo_read_index(n);
    /* A leader whose term and vote this Ready leaves alone sends first and
     * writes its own entries while the followers write theirs (the Raft
     * thesis, 10.2.1; raft.h's contract says why that is safe).  The leader's
     * fdatasync leaves the critical path of a write: one fewer disk sync
     * between a client's put and its reply. */
    bool early = rd.role == RAFT_LEADER && !rd.snapshot &&
                 (!rd.hard_state_changed ||
                  (rd.hard_state.term == n->durable_term && rd.hard_state.vote == n->durable_vote));
    if (early)
        send_messages(n, &rd, SEND_NOW);
    bool overlap = early && persist_while_applying(&rd);
    int apply_rc = 0;
    if (overlap) {
        struct persist_job job = {n, &rd};
        offload_begin(n->wal_writer, persist_job, &job);
        apply_rc = timed_apply(n, &rd);
        rc = offload_end(n->wal_writer);
    } else {
        rc = persist(n, &rd);
    }
    if (rc < 0) {
        log_event(LOG_LEVEL_CRIT, MSGID_STORAGE_FAILURE, NULL, "cannot persist to the WAL: %s; stopping", cairn_strerror(rc));
        return rc;
    }
    if (rd.hard_state_changed && rd.must_sync) {
        n->durable_term = rd.hard_state.term;
        n->durable_vote = rd.hard_state.vote;
    }
    if (!early)
        send_messages(n, &rd, SEND_NOW);
    if (!overlap)
        apply_rc = timed_apply(n, &rd);
    if (apply_rc < 0)
        return apply_rc;
    send_messages(n, &rd, SEND_AFTER_APPLY);
    for (size_t i = 0; i < rd.n_reads; i++) {
        uint64_t ctx = 0;
        if (rd.reads[i].context_len == sizeof ctx)
            memcpy(&ctx, rd.reads[i].context, sizeof ctx);
        if (n->hooks.read_ready)
            n->hooks.read_ready(n->hooks.arg, ctx, rd.reads[i].index);
    }
    size_t n_committed = rd.n_committed; /* raft_advance clears rd */
    raft_advance(n->raft, &rd);
    for (size_t i = 0; i < n->n_unreachable; i++)
        raft_report_unreachable(n->raft, n->unreachable[i]);
    n->n_unreachable = 0;
    if (n_committed && n->hooks.applied)
        n->hooks.applied(n->hooks.arg, n->applied);
    if (n_committed && mvcc_wal_frames(n->store) >= MVCC_WAL_FRAMES_DUE)
        ckpt_due(n->ckpt);
    if (n->cfg->snapshot_count && n->applied >= n->snap_index + n->cfg->snapshot_count && !n->snap_sync.active)
        take_snapshot(n);
    size_solo_slice(n);
    return 0;
}

/* The checkpointer's answer to take_snapshot (IT_CALL). */
static void snapshot_synced(struct node *n, void *arg, int stopping)
{
    (void)arg;
    if (stopping)
        return;
    n->snap_sync.active = 0;
    const struct raft_snapshot_meta *sm = &n->snap_sync.meta;
    int rc = n->snap_sync.rc;
    if (sm->index <= n->snap_index)
        return; /* a snapshot from the leader was installed meanwhile, past this one */
    if (rc == 0)
        rc = finish_snapshot(n, sm, n->snap_sync.t0);
    if (rc < 0) {
        log_err(NULL, "snapshot at %" PRIu64 " failed: %s", sm->index, cairn_strerror(rc));
        n->snap_index = n->applied; /* try again after another snapshot-count entries */
    }
}

/* The checkpointer's view of the store: the readers' share of the gate. */
static struct mvcc_store *ckpt_hold(void *arg)
{
    struct node *n = arg;
    pthread_rwlock_rdlock(&n->gate);
    return n->store;
}

static void ckpt_release(void *arg)
{
    struct node *n = arg;
    pthread_rwlock_unlock(&n->gate);
}

/* One sync at a time: snap_sync says which. */
static void ckpt_synced(void *arg, int rc)
{
    struct node *n = arg;
    struct item *it = n->snap_sync.done;
    n->snap_sync.done = NULL;
    n->snap_sync.rc = rc;
    if (inbox_push(n, it, 0) < 0)
        free(it); /* stopping */
}

/* ---------------------------------------------------------------- inbox processing */

static void fail_proposals(struct node *n, struct item **items, size_t k, int rc)
{
    STAT_ADD(n, proposals_failed, k);
    int code = rc < 0 ? -rc : rc;
    if (code == ENOMEM || code == EBUSY)
        code = CAIRN_E_PROPOSAL_DROPPED;
    for (size_t i = 0; i < k; i++)
        wait_fire(n->waits, items[i]->id, NULL, 0, code);
}

/*
 * Writes that find no leader wait for one.  Raft refuses a proposal while
 * this member knows no leader (a follower during an election, a candidate,
 * a leader that lost its quorum) or while the leader hands leadership over.
 * Nothing was proposed, so instead of answering NO_LEADER at once the
 * write waits here, oldest first, and is proposed as soon as Raft takes
 * it: a client's write rides through an election as it does in etcd, whose
 * proposals wait for a leader too.  The wait is bounded by half the
 * request timeout, so the answer when no leader comes is still NO_LEADER
 * ("not proposed"), before the wait table's TIMEOUT ("outcome unknown")
 * could fire.  Only the node thread touches the list.
 */
static bool parks(int rc)
{
    return rc == -CAIRN_E_NO_LEADER || rc == -CAIRN_E_LEADER_TRANSFER;
}

static void park(struct node *n, struct item **items, size_t k, int rc)
{
    int64_t until = mono_now_ns() + (int64_t)n->cfg->request_timeout_ms * 1000000LL / 2;
    for (size_t i = 0; i < k; i++) {
        struct item *it = items[i];
        it->next = NULL;
        if (!it->until_ns) { /* first refusal; a retried one keeps its place and its deadline */
            it->until_ns = until;
            STAT_ADD(n, proposals_parked, 1);
        }
        it->refused = -rc;
        if (n->parked_tail)
            n->parked_tail->next = it;
        else
            n->parked_head = it;
        n->parked_tail = it;
    }
    __atomic_store_n(&n->n_parked, n->n_parked + k, __ATOMIC_RELAXED);
}

/* Propose items (up to PROPOSE_BATCH) in one batch; each is freed, or parked. */
static void propose_items(struct node *n, struct item **items, size_t k)
{
    int rc;
    if (n->parked_head) {
        rc = -n->parked_tail->refused; /* behind the writes already waiting, in order */
    } else {
        struct raft_buf bufs[PROPOSE_BATCH];
        for (size_t i = 0; i < k; i++)
            bufs[i] = (struct raft_buf){items[i]->data, items[i]->len};
        rc = raft_propose_batch(n->raft, bufs, k);
    }
    if (parks(rc) && n->n_parked + k <= INBOX_MAX) {
        park(n, items, k, rc);
        return;
    }
    if (rc < 0)
        fail_proposals(n, items, k, rc);
    for (size_t i = 0; i < k; i++)
        item_free(items[i]);
}

/* Propose the parked writes if Raft takes them now; answer those whose wait is over. */
static void unpark(struct node *n, int64_t now)
{
    struct item *list = n->parked_head, *tail = n->parked_tail;
    size_t left = n->n_parked;
    n->parked_head = n->parked_tail = NULL;
    __atomic_store_n(&n->n_parked, 0, __ATOMIC_RELAXED);
    while (list) {
        struct item *batch[PROPOSE_BATCH];
        size_t k = 0;
        for (; list && k < PROPOSE_BATCH; list = list->next)
            batch[k++] = list;
        left -= k;
        propose_items(n, batch, k);
        if (n->parked_head && list) { /* refused again: the rest stays behind the batch, in order */
            n->parked_tail->next = list;
            n->parked_tail = tail;
            __atomic_store_n(&n->n_parked, n->n_parked + left, __ATOMIC_RELAXED);
            break;
        }
    }
    while (n->parked_head && n->parked_head->until_ns <= now) {
        struct item *it = n->parked_head;
        n->parked_head = it->next;
        if (!n->parked_head)
            n->parked_tail = NULL;
        __atomic_store_n(&n->n_parked, n->n_parked - 1, __ATOMIC_RELAXED);
        fail_proposals(n, &it, 1, -it->refused);
        item_free(it);
    }
}

static void step_peer(struct node *n, struct item *it)
{
    Cairnpeer__MessageBatch *batch = it->data;
    for (size_t i = 0; i < batch->n_messages; i++) {
        struct raft_message m;
        struct raftmsg_buf b;
        memset(&b, 0, sizeof b);
        int rc = raftmsg_from_pb(batch->messages[i], &m, &b);
        if (rc == 0 && m.from != it->id)
            rc = -CAIRN_E_CLUSTER_MISMATCH;
        if (rc == 0)
            rc = raft_step(n->raft, &m);
        if (rc < 0 && rc != -EBUSY)
            log_debug(LOG_FIELDS(LOG_HEX("CAIRN_PEER", it->id)), "dropped a message from %016" PRIx64 ": %s",
                      it->id, cairn_strerror(rc));
        raftmsg_buf_release(&b);
    }
}

static void snapshot_received(struct node *n, struct item *it)
{
    Cairnpeer__Message *pb = it->data;
    if (!pb->snapshot) {
        return;
    }
    if (n->pending_snap_path) {
        unlink(n->pending_snap_path);
        free(n->pending_snap_path);
    }
    n->pending_snap_path = it->path; /* taken from the item */
    it->path = NULL;
    n->pending_snap_index = pb->snapshot->index;
    struct raft_message m;
    struct raftmsg_buf b;
    memset(&b, 0, sizeof b);
    int rc = raftmsg_from_pb(pb, &m, &b);
    if (rc == 0)
        rc = raft_step(n->raft, &m);
    raftmsg_buf_release(&b);
    log_info(LOG_FIELDS(LOG_HEX("CAIRN_PEER", it->id), LOG_U64("CAIRN_INDEX", pb->snapshot->index)),
             "received a snapshot at index %" PRIu64 " from %016" PRIx64 "%s%s", pb->snapshot->index, it->id,
             rc < 0 ? ": " : "", rc < 0 ? cairn_strerror(rc) : "");
}

/* Steps and proposes what came in; returns the membership changes, which
 * member_items runs once the ready loop has applied what this made committed. */
static struct item *process(struct node *n, struct item *list)
{
    struct item *props[PROPOSE_BATCH], *members = NULL, **members_tail = &members;
    size_t k = 0;
    while (list) {
        struct item *it = list;
        list = it->next;
        if (it->type == IT_PROPOSE) {
            props[k++] = it;
            if (k == PROPOSE_BATCH) {
                propose_items(n, props, k);
                k = 0;
            }
            continue;
        }
        switch (it->type) {
        case IT_READ_INDEX: {
            int rc = raft_read_index(n->raft, &it->id, sizeof it->id);
            if (rc < 0 && n->hooks.read_ready)
                n->hooks.read_ready(n->hooks.arg, it->id, 0); /* index 0: failed, retry later */
            break;
        }
        case IT_PEER:
            step_peer(n, it);
            break;
        case IT_MEMBER:
            it->next = NULL;
            *members_tail = it;
            members_tail = &it->next;
            continue;
        case IT_CALL:
            it->fn(n, it->data, 0);
            n->store_changed = 1; /* it may have changed the store's size (defragment) */
            break;
        case IT_TRANSFER: {
            int rc = raft_transfer_leader(n->raft, it->id);
            log_notice(LOG_FIELDS(LOG_HEX("CAIRN_PEER", it->id)), "leadership transfer to %016" PRIx64 "%s%s",
                       it->id, rc < 0 ? " refused: " : " started", rc < 0 ? cairn_strerror(rc) : "");
            break;
        }
        case IT_SNAP_RECEIVED:
            snapshot_received(n, it);
            break;
        case IT_SNAP_DONE: {
            int slot = peer_slot(n, it->id);
            if (slot >= 0)
                n->snap_busy[slot] = 0;
            raft_report_snapshot(n->raft, it->id, it->ok);
            if (it->ok)
                STAT_ADD(n, snapshot_sends_ok, 1);
            else
                STAT_ADD(n, snapshot_sends_failed, 1);
            remove_sent_copies(n, it->id);
            log_info(LOG_FIELDS(LOG_HEX("CAIRN_PEER", it->id)), "snapshot stream to %016" PRIx64 " %s", it->id,
                     it->ok ? "completed" : "failed");
            break;
        }
        default:
            break;
        }
        item_free(it);
    }
    if (k)
        propose_items(n, props, k);
    return members;
}

static void member_items(struct node *n, struct item *list)
{
    while (list) {
        struct item *it = list;
        list = it->next;
        member_change_item(n, it);
        item_free(it);
    }
}

/* The watchdog is fed from this loop only, so a wedged loop gets the member restarted. */
static void watchdog(struct node *n)
{
#ifdef CAIRN_DEBUG_FAULTS
    /* test builds only: <data-dir>/hang-node-loop wedges the loop while it exists */
    char path[4300];
    snprintf(path, sizeof path, "%s/hang-node-loop", n->cfg->data_dir);
    while (access(path, F_OK) == 0)
        usleep(100000);
#endif
    int64_t every = __atomic_load_n(&n->watchdog_ns, __ATOMIC_RELAXED);
    if (!every)
        return;
    int64_t now = mono_now_ns();
    if (now - n->watchdog_last >= every) {
        sd_notify(0, "WATCHDOG=1");
        n->watchdog_last = now;
    }
}

void node_set_watchdog(struct node *n, uint64_t usec)
{
    __atomic_store_n(&n->watchdog_ns, (int64_t)(usec * 1000 / 2), __ATOMIC_RELAXED);
}

/* The inbox's items, oldest first, leaving it empty; under mu. */
static struct item *take_inbox(struct node *n)
{
    struct item *list = n->head;
    n->head = n->tail = NULL;
    __atomic_store_n(&n->inbox_len, 0, __ATOMIC_RELAXED);
    return list;
}

static void *node_main(void *arg)
{
    pthread_setname_np(pthread_self(), "cairn-node"); /* top -H, perf and gdb show it */
    struct node *n = arg;
    int64_t tick_ns = (int64_t)n->cfg->heartbeat_ms * 1000000LL;
    n->next_tick_ns = mono_now_ns() + tick_ns;
    for (;;) {
        pthread_mutex_lock(&n->mu);
        while (!n->head && !n->stopping) {
            int64_t now = mono_now_ns();
            if (now >= n->next_tick_ns || (!__atomic_load_n(&n->held, __ATOMIC_ACQUIRE) && raft_has_ready(n->raft)))
                break;
            struct timespec ts;
            deadline_after_ns(&ts, n->next_tick_ns - now);
            pthread_cond_timedwait(&n->cond, &n->mu, &ts);
        }
        if (n->stopping) {
            pthread_mutex_unlock(&n->mu);
            break;
        }
        struct item *list = take_inbox(n);
        pthread_mutex_unlock(&n->mu);

        struct item *members = process(n, list), **members_tail = &members;
        int64_t now = mono_now_ns();
        if (now >= n->next_tick_ns) {
            raft_tick(n->raft);
            /* after a long stall (SIGSTOP, a slow disk) tick once, not once per missed interval */
            n->next_tick_ns = now - n->next_tick_ns > 10 * tick_ns ? now + tick_ns : n->next_tick_ns + tick_ns;
            wait_expire(n->waits, now, CAIRN_E_TIMEOUT);
        }
        if (n->parked_head)
            unpark(n, now);
        for (int drained = 0; !__atomic_load_n(&n->held, __ATOMIC_ACQUIRE) && raft_has_ready(n->raft);) {
            if (handle_ready(n) < 0) {
                /* the WAL or the store failed: the member cannot go on safely */
                log_crit(NULL, "the node loop stopped on a storage failure; the member must be restarted");
                _exit(70);
            }
            /* What came in meanwhile joins the next Ready.  A leader's
             * proposals then go to the WAL in the same Ready that applies
             * what this one committed, and the two run at once
             * (persist_while_applying); taken only after the loop, they
             * would make a Ready of their own, written while nothing is
             * applied.  A few times per turn, and not past the tick: the
             * turn's end (ticks, compaction steps, the watchdog) must
             * still come round under a steady load. */
            if (++drained > DRAIN_MAX || mono_now_ns() >= n->next_tick_ns)
                continue;
            pthread_mutex_lock(&n->mu);
            list = take_inbox(n);
            pthread_mutex_unlock(&n->mu);
            if (list) {
                while (*members_tail)
                    members_tail = &(*members_tail)->next;
                *members_tail = process(n, list);
            }
        }
        member_items(n, members);
        if (mvcc_compact_pending(n->store)) {
            bool done = false;
            int rc = mvcc_compact_step(n->store, COMPACT_STEP_ROWS, &done);
            if (rc < 0)
                log_err(NULL, "compaction step failed: %s", cairn_strerror(rc));
        }
        retry_checkpoint(n);
        publish(n);
        publish_attributes(n);
        watchdog(n);
    }
    return NULL;
}

/* ---------------------------------------------------------------- start and stop */

/*
 * The store never applies an entry before the WAL holds it durably, so on a
 * sound disk the store's applied index is at most the WAL's last index.  A
 * store ahead of its WAL means the WAL lost writes an fdatasync had vouched
 * for.  With other voters that is survivable: those entries were committed,
 * the leader sends them again, and the apply skips what the store has.  The
 * only voter, though, would append new entries at those indexes and skip
 * them as applied, acknowledged writes dropped without a word: it does not
 * start.  test_wal_failure.py plays such a disk.
 */
static int check_store_within_wal(struct node *n, char *err, size_t errlen)
{
    uint64_t last = wal_last_index(n->wal);
    if (n->applied <= last)
        return 0;
    size_t voters = 0;
    bool me = false;
    for (size_t i = 0; n->mset && i < n->mset->n_members; i++) {
        if (n->mset->members[i]->is_learner)
            continue;
        voters++;
        me |= n->mset->members[i]->id == n->self_id;
    }
    if (voters > 1 || !me) {
        log_event(LOG_LEVEL_ERR, MSGID_CORRUPTION,
                  LOG_FIELDS(LOG_U64("CAIRN_INDEX", n->applied), LOG_U64("CAIRN_WAL_INDEX", last)),
                  "the store has applied entries up to index %" PRIu64 " but the WAL in %s ends at %" PRIu64
                  ": the WAL lost writes its fdatasync had reported durable (check the disk); the leader "
                  "will send those entries again",
                  n->applied, n->wal_dir, last);
        return 0;
    }
    snprintf(err, errlen,
             "the store has applied entries up to index %" PRIu64 " but the WAL in %s ends at %" PRIu64
             ": the WAL lost writes its fdatasync had reported durable (check the disk), and as the only "
             "voter this member would give those indexes to new writes and drop them; restore it from a "
             "backup (cairnd restore)",
             n->applied, n->wal_dir, last);
    return -CAIRN_E_CORRUPT;
}

int node_start(const struct config *cfg, struct boot_state *bs, struct wait_table *waits,
               const struct node_hooks *hooks, struct node **out, char *err, size_t errlen)
{
    int rc;
    struct node *n = calloc(1, sizeof(*n));
    if (!n)
        return -ENOMEM;
    n->cfg = cfg;
    n->waits = waits;
    n->held = 1; /* until node_release: the parts register their observers first */
    n->hooks = *hooks;
    n->cluster_id = bs->cluster_id;
    n->self_id = bs->self_id;
    snprintf(n->wal_dir, sizeof n->wal_dir, "%s", bs->wal_dir);
    snprintf(n->snap_dir, sizeof n->snap_dir, "%s", bs->snap_dir);
    snprintf(n->db_dir, sizeof n->db_dir, "%s", bs->db_dir);
    snprintf(n->incoming_dir, sizeof n->incoming_dir, "%s", bs->incoming_dir);
    pthread_mutex_init(&n->mu, NULL);
    mono_cond_init(&n->cond);
    pthread_cond_init(&n->snap_cond, NULL);
    pthread_rwlock_init(&n->gate, NULL);
    pthread_mutex_init(&n->slots_mu, NULL);
    pthread_mutex_init(&n->info_mu, NULL);
    pthread_mutex_init(&n->obs_mu, NULL);
    struct timespec rt;
    clock_gettime(CLOCK_REALTIME, &rt);
    /* IDs from the wall clock: a restarted member never reuses one still in its log */
    n->next_id = (uint64_t)rt.tv_sec * 1000000000ULL + (uint64_t)rt.tv_nsec;

    struct raft_config rc_cfg = {
        .id = bs->self_id,
        .seed = n->next_id ^ bs->self_id,
        .election_tick = (int)(cfg->election_ms / cfg->heartbeat_ms),
        .heartbeat_tick = 1,
        .pre_vote = 1,
        .check_quorum = 1,
        .max_inflight_msgs = 256,
        .max_msg_bytes = 1u << 20,
        .max_committed_bytes = 8u << 20,
        .max_uncommitted_bytes = 64u << 20,
        /* the only voter writes a burst of proposals a slice at a time,
         * and applies each slice while it writes the next; sized after
         * each Ready from the disk's speed (size_solo_slice) */
        .solo_ready_entries = SOLO_SLICE_MIN,
    };
    if ((rc = raft_new(&rc_cfg, &bs->restore, &n->raft)) < 0) {
        snprintf(err, errlen, "cannot start raft from the recovered state: %s", cairn_strerror(rc));
        goto fail;
    }
    n->snap_index = bs->restore.snapshot.index;
    n->durable_term = bs->restore.hard_state.term;
    n->durable_vote = bs->restore.hard_state.vote;
    n->conf = bs->restore.snapshot.conf_state;
    boot_release_restore(bs);
    n->wal = bs->wal;
    n->store = bs->store;
    bs->wal = NULL;
    bs->store = NULL;
    struct mvcc_status st = {0};
    mvcc_store_status(n->store, &st);
    n->applied = st.consistent_index;
    n->applied_term = st.consistent_term;
    n->store_changed = 1;
    n->info.cluster_id = n->cluster_id;
    n->info.member_id = n->self_id;
    if ((rc = load_members(n, bs)) < 0) {
        snprintf(err, errlen, "cannot read the member list from the store: %s", cairn_strerror(rc));
        goto fail;
    }
    if (members_is_removed(n->mset, n->self_id)) {
        snprintf(err, errlen,
                 "this member (%016" PRIx64 ") was removed from the cluster and cannot come back with this data "
                 "directory; move %s away and add the member again (member add, then start it with "
                 "--initial-cluster-state existing)",
                 n->self_id, cfg->data_dir);
        rc = -CAIRN_E_CONFIG;
        goto fail;
    }
    if ((rc = check_store_within_wal(n, err, errlen)) < 0)
        goto fail;

    struct peer_options po = {
        .cluster_id = n->cluster_id,
        .self_id = n->self_id,
        .listen = &cfg->listen_peer_urls,
        .tls = {cfg->peer_cert_file, cfg->peer_key_file, cfg->peer_trusted_ca_file},
        .incoming_dir = n->incoming_dir,
    };
    struct peer_callbacks cb = {.arg = n, .on_messages = on_messages, .on_snapshot = on_snapshot,
                                .on_snapshot_done = on_snapshot_done};
    if ((rc = peer_start(&po, &cb, &n->peers, err, errlen)) < 0)
        goto fail;
    if ((rc = add_peers(n)) < 0) {
        snprintf(err, errlen, "cannot set up the peer connections: %s", cairn_strerror(rc));
        goto fail;
    }
    if (n->conf.n_voters == 1 && n->conf.voters[0] == n->self_id && !n->conf.n_learners)
        raft_campaign(n->raft); /* alone: no reason to wait an election timeout for the first leader */
    publish(n);
    node_reader_register(n, &n->snap_slot);
    if ((rc = -pthread_create(&n->snap_thread, NULL, snap_main, n)) < 0) {
        snprintf(err, errlen, "cannot start the snapshot thread: %s", strerror(-rc));
        goto fail;
    }
    n->snap_thread_started = 1;
    struct ckpt_ops ko = {.arg = n, .hold = ckpt_hold, .release = ckpt_release, .synced = ckpt_synced,
                          .durations = &n->stats.store_checkpoint};
    if ((rc = ckpt_start(&ko, &n->ckpt)) < 0) {
        snprintf(err, errlen, "cannot start the checkpointer thread: %s", strerror(-rc));
        goto fail;
    }
    if ((rc = offload_start("cairn-wal", &n->wal_writer)) < 0) {
        snprintf(err, errlen, "cannot start the WAL writer thread: %s", strerror(-rc));
        goto fail;
    }
    if ((rc = -pthread_create(&n->thread, NULL, node_main, n)) < 0) {
        snprintf(err, errlen, "cannot start the node thread: %s", strerror(-rc));
        goto fail;
    }
    *out = n;
    return 0;
fail:
    offload_stop(n->wal_writer);
    ckpt_stop(n->ckpt);
    if (n->snap_thread_started) {
        pthread_mutex_lock(&n->mu);
        n->stopping = 1;
        pthread_cond_broadcast(&n->snap_cond);
        pthread_mutex_unlock(&n->mu);
        pthread_join(n->snap_thread, NULL);
        node_reader_unregister(n, &n->snap_slot);
    }
    if (n->peers)
        peer_stop(n->peers);
    raft_free(n->raft);
    if (n->store) {
        bs->store = n->store;
        bs->wal = n->wal;
    }
    if (n->mset)
        cairnint__member_set__free_unpacked(n->mset, NULL);
    free(n);
    return rc;
}

void node_release(struct node *n)
{
    pthread_mutex_lock(&n->mu);
    __atomic_store_n(&n->held, 0, __ATOMIC_RELEASE);
    pthread_cond_signal(&n->cond);
    pthread_mutex_unlock(&n->mu);
}

void node_stop(struct node *n)
{
    if (!n)
        return;
    pthread_mutex_lock(&n->mu);
    n->stopping = 1;
    pthread_cond_broadcast(&n->cond);
    pthread_cond_broadcast(&n->snap_cond);
    pthread_mutex_unlock(&n->mu);
    pthread_join(n->thread, NULL);
    pthread_join(n->snap_thread, NULL);
    offload_stop(n->wal_writer);
    ckpt_stop(n->ckpt); /* before the store closes: its connection must go first */
    peer_stop(n->peers); /* after this no callback pushes into the inbox */
    node_reader_unregister(n, &n->snap_slot);
    if (n->parked_tail) { /* the writes still waiting for a leader go first, as they came first */
        n->parked_tail->next = n->head;
        n->head = n->parked_head;
        n->parked_head = n->parked_tail = NULL;
    }
    struct item *it = n->head;
    while (it) {
        struct item *next = it->next;
        if (it->type == IT_PROPOSE || it->type == IT_MEMBER)
            wait_fire(n->waits, it->id, NULL, 0, CAIRN_E_STOPPED);
        else if (it->type == IT_CALL)
            it->fn(n, it->data, 1);
        item_free(it);
        it = next;
    }
    while (n->snap_head) {
        struct snap_job *j = n->snap_head;
        n->snap_head = j->next;
        cairnpeer__message__free_unpacked(j->msg, NULL);
        free(j);
    }
    if (n->pending_snap_path) {
        unlink(n->pending_snap_path);
        free(n->pending_snap_path);
    }
    raft_free(n->raft);
    int rc = mvcc_sync(n->store);
    if (rc < 0)
        log_err(NULL, "closing the store: %s", cairn_strerror(rc));
    mvcc_close(n->store);
    wal_close(n->wal);
    pthread_rwlock_destroy(&n->gate);
    pthread_cond_destroy(&n->cond);
    pthread_cond_destroy(&n->snap_cond);
    pthread_mutex_destroy(&n->mu);
    pthread_mutex_destroy(&n->slots_mu);
    pthread_mutex_destroy(&n->info_mu);
    pthread_mutex_destroy(&n->obs_mu);
    if (n->mset)
        cairnint__member_set__free_unpacked(n->mset, NULL);
    free(n);
}

size_t node_peer_stats(struct node *n, struct peer_stats *out, size_t max)
{
    return peer_stats(n->peers, out, max);
}

int node_reload_peer_tls(struct node *n, char *err, size_t errlen)
{
    const struct config *c = n->cfg;
    if (!c->peer_cert_file || !c->peer_cert_file[0])
        return 0;
    struct peer_tls tls = {c->peer_cert_file, c->peer_key_file, c->peer_trusted_ca_file};
    return peer_reload_tls(n->peers, &tls, err, errlen);
}
