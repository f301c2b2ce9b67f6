/*
 * Move-leader (see leader.h).  The target is checked against the member set
 * in the store (the record cluster/members): it must be a voting member
 * that has started (has a name).  The wait polls node_get_info's leader
 * every tenth of an election timeout on an nng sleep aio; each waiting move
 * is on a list under one mutex so that a stop can wait for them to end.
 * A transfer not done after an election timeout is asked for once more.
 */
#include "daemon/leader.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nng/nng.h>

#include "base/deadline.h"
#include "base/errors.h"
#include "base/log.h"
#include "daemon/boot.h"
#include "proto/cairn.pb-c.h"
#include "proto/internal.pb-c.h"
#include "storage/mvcc.h"

struct move {
    struct leader_mover *lm;
    struct rpc_call *call;
    nng_aio *aio;
    uint64_t target;
    int64_t started_ms, retry_ms, deadline_ms;
    int retried;
    struct move *next, *prev;
};

struct leader_mover {
    const struct config *cfg;
    struct node *node;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    struct move *moves;
    int stopping;
};

static void reply_ok(struct rpc_call *c)
{
    Cairn__Response resp = CAIRN__RESPONSE__INIT;
    Cairn__MoveLeaderResponse body = CAIRN__MOVE_LEADER_RESPONSE__INIT;
    resp.body_case = CAIRN__RESPONSE__BODY_MOVE_LEADER;
    resp.move_leader = &body;
    rpc_call_reply(c, &resp, 0);
}

/* End a move: off the list, its aio freed (reap: this may run in the aio's own callback). */
static void move_end(struct move *m)
{
    struct leader_mover *lm = m->lm;
    pthread_mutex_lock(&lm->mu);
    if (m->prev)
        m->prev->next = m->next;
    else
        lm->moves = m->next;
    if (m->next)
        m->next->prev = m->prev;
    pthread_cond_broadcast(&lm->cond);
    pthread_mutex_unlock(&lm->mu);
    nng_aio_reap(m->aio);
    free(m);
}

/* Every tenth of an election timeout: has the leader moved? */
static void move_poll(void *arg)
{
    struct move *m = arg;
    struct leader_mover *lm = m->lm;
    struct node_info in;
    node_get_info(lm->node, &in);
    int stopping;
    pthread_mutex_lock(&lm->mu);
    stopping = lm->stopping;
    pthread_mutex_unlock(&lm->mu);
    if (in.lead == m->target) {
        log_notice(LOG_FIELDS(LOG_HEX("CAIRN_LEADER", m->target), LOG_U64("CAIRN_TERM", in.term),
                              LOG_I64("CAIRN_DURATION_MS", mono_now_ms() - m->started_ms)),
                   "move-leader: %016" PRIx64 " leads now (term %" PRIu64 ", after %" PRId64 " ms)", m->target,
                   in.term, mono_now_ms() - m->started_ms);
        reply_ok(m->call);
    } else if (stopping) {
        rpc_call_error(m->call, CAIRN_E_STOPPED,
                       "member is stopping; whether leadership moved to %016" PRIx64 " shows in Status", m->target);
    } else if (mono_now_ms() >= m->deadline_ms) {
        rpc_call_error(m->call, CAIRN_E_TIMEOUT,
                       "leadership did not move to %016" PRIx64 " within %" PRId64 " ms (the leader is %016" PRIx64
                       " now); check that the member is up, reachable and caught up, then retry",
                       m->target, m->deadline_ms - m->started_ms, in.lead);
    } else {
        if (!m->retried && mono_now_ms() >= m->retry_ms) {
            /* Raft drops a transfer that has not worked within an election timeout; its one MsgTimeoutNow
             * can be lost (a peer connection still coming up), so ask once more before giving up */
            m->retried = 1;
            node_transfer_leader(lm->node, m->target);
            log_info(LOG_FIELDS(LOG_HEX("CAIRN_PEER", m->target)),
                     "move-leader: %016" PRIx64 " does not lead yet; asking Raft again", m->target);
        }
        nng_sleep_aio((nng_duration)(lm->cfg->election_ms / 10 ? lm->cfg->election_ms / 10 : 1), m->aio);
        return;
    }
    move_end(m);
}

/* The member set from the store: the target must be a started voter. */
static void check_target(struct rpc_call *c, struct mvcc_reader *r, int err, void *arg)
{
    struct leader_mover *lm = arg;
    uint64_t target = rpc_call_request(c)->move_leader->target_id;
    if (!r) {
        rpc_call_unreadable(c, err);
        return;
    }
    struct mvcc_record_list *l = NULL;
    struct mvcc_buf ns = {MEMBERS_RECORD_NS, strlen(MEMBERS_RECORD_NS)};
    struct mvcc_buf name = {MEMBERS_RECORD_NAME, strlen(MEMBERS_RECORD_NAME)};
    int rc = mvcc_record_list(r, ns, name, &l);
    if (rc < 0) {
        rpc_call_unreadable(c, rc);
        return;
    }
    Cairnint__MemberSet *set =
        l->n ? cairnint__member_set__unpack(NULL, l->records[0].value.len, l->records[0].value.data) : NULL;
    mvcc_record_list_free(l);
    const Cairn__Member *t = NULL;
    for (size_t i = 0; set && i < set->n_members; i++)
        if (set->members[i]->id == target)
            t = set->members[i];
    int code = 0;
    char msg[256];
    if (!set) {
        code = CAIRN_E_UNAVAILABLE;
        snprintf(msg, sizeof msg, "this member's store holds no readable member set; try again on a healthy leader");
    } else if (!t) {
        code = CAIRN_E_MEMBER_NOT_FOUND;
        snprintf(msg, sizeof msg, "member %016" PRIx64 " is not in the cluster; see the members table", target);
    } else if (t->is_learner) {
        code = CAIRN_E_INVALID_ARGUMENT;
        snprintf(msg, sizeof msg, "member %016" PRIx64 " is a learner; promote it before moving leadership to it",
                 target);
    } else if (!t->name || !t->name[0]) {
        code = CAIRN_E_INVALID_ARGUMENT;
        snprintf(msg, sizeof msg, "member %016" PRIx64 " has not started yet; start it and let it catch up first",
                 target);
    }
    if (set)
        cairnint__member_set__free_unpacked(set, NULL);
    if (code) {
        rpc_call_error(c, code, "%s", msg);
        return;
    }

    struct move *m = calloc(1, sizeof(*m));
    if (!m || nng_aio_alloc(&m->aio, move_poll, m) != 0) {
        free(m);
        rpc_call_error(c, CAIRN_E_UNAVAILABLE, "out of memory on member; try again");
        return;
    }
    m->lm = lm;
    m->call = c;
    m->target = target;
    m->started_ms = mono_now_ms();
    /* Raft's transfer gives up after an election timeout; a second attempt starts a little after that
     * (once the first is surely dropped), and half an election timeout more lets the new leader be seen */
    m->retry_ms = m->started_ms + (int64_t)lm->cfg->election_ms * 6 / 5;
    m->deadline_ms = m->started_ms + (int64_t)lm->cfg->election_ms * 5 / 2;
    pthread_mutex_lock(&lm->mu);
    if (lm->stopping) {
        pthread_mutex_unlock(&lm->mu);
        nng_aio_free(m->aio);
        free(m);
        rpc_call_error(c, CAIRN_E_STOPPED, NULL);
        return;
    }
    m->next = lm->moves;
    if (m->next)
        m->next->prev = m;
    lm->moves = m;
    pthread_mutex_unlock(&lm->mu);
    if ((rc = node_transfer_leader(lm->node, target)) < 0) {
        rpc_call_error(c, rc == -CAIRN_E_STOPPED ? CAIRN_E_STOPPED : CAIRN_E_UNAVAILABLE,
                       "cannot start the transfer to %016" PRIx64 ": %s", target, cairn_strerror(rc));
        move_end(m);
        return;
    }
    log_info(LOG_FIELDS(LOG_HEX("CAIRN_PEER", target)), "move-leader: handing leadership to %016" PRIx64 " for %s",
             target, rpc_call_remote(c));
    nng_sleep_aio(0, m->aio);
}

static void move_leader(void *arg, struct rpc_call *c)
{
    struct leader_mover *lm = arg;
    uint64_t target = rpc_call_request(c)->move_leader->target_id;
    struct node_info in;
    node_get_info(lm->node, &in);
    if (in.lead == 0) {
        rpc_call_error(c, CAIRN_E_NO_LEADER, NULL);
    } else if (in.lead != in.member_id) {
        rpc_call_error(c, CAIRN_E_NOT_LEADER,
                       "member %016" PRIx64 " is not the leader; send MoveLeader to the leader, member %016" PRIx64,
                       in.member_id, in.lead);
    } else if (target == 0) {
        rpc_call_error(c, CAIRN_E_INVALID_ARGUMENT, "target_id is 0: name the member to hand leadership to");
    } else if (target == in.member_id) {
        reply_ok(c); /* it leads already */
    } else {
        rpc_call_read(c, 0, check_target, lm);
    }
}

size_t leader_routes(struct leader_mover *lm, struct rpc_route *out, size_t max)
{
    const struct rpc_route routes[] = {
        {CAIRN__REQUEST__BODY_MOVE_LEADER, move_leader, lm, 0},
    };
    return rpc_routes_copy(out, max, routes, sizeof routes / sizeof routes[0]);
}

int leader_start(const struct config *cfg, struct node *n, struct leader_mover **out)
{
    struct leader_mover *lm = calloc(1, sizeof(*lm));
    if (!lm)
        return -ENOMEM;
    lm->cfg = cfg;
    lm->node = n;
    pthread_mutex_init(&lm->mu, NULL);
    pthread_cond_init(&lm->cond, NULL);
    *out = lm;
    return 0;
}

void leader_stop(struct leader_mover *lm)
{
    if (!lm)
        return;
    pthread_mutex_lock(&lm->mu);
    lm->stopping = 1;
    /* no cancel: each move's next poll (a tenth of an election timeout away) answers STOPPED and ends it */
    while (lm->moves)
        pthread_cond_wait(&lm->cond, &lm->mu);
    pthread_mutex_unlock(&lm->mu);
    pthread_cond_destroy(&lm->cond);
    pthread_mutex_destroy(&lm->mu);
    free(lm);
}
