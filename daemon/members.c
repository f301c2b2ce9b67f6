/*
 * Membership (see members.h).  The set is kept packed in the store and
 * unpacked by whoever needs it; a change builds the new set by packing
 * borrowed pointers to the old members plus the changed one, which keeps
 * the memory rules trivial for a set of at most a few dozen members.
 */
#include "daemon/members.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/errors.h"
#include "daemon/boot.h"
#include "daemon/config.h"
#include "daemon/node.h"
#include "proto/cairn.pb-c.h"
#include "proto/internal.pb-c.h"
#include "raft/raft.h"
#include "storage/mvcc.h"

#define MAX_SET (2 * RAFT_MAX_MEMBERS)

/* ---------------------------------------------------------------- the set */

int members_read(struct mvcc_reader *r, Cairnint__MemberSet **out)
{
    struct mvcc_record_list *l = NULL;
    struct mvcc_buf ns = {MEMBERS_RECORD_NS, strlen(MEMBERS_RECORD_NS)};
    struct mvcc_buf name = {MEMBERS_RECORD_NAME, strlen(MEMBERS_RECORD_NAME)};
    int rc = mvcc_record_list(r, ns, name, &l);
    if (rc < 0)
        return rc;
    if (!l->n) {
        mvcc_record_list_free(l);
        return -CAIRN_E_NOT_FOUND;
    }
    *out = cairnint__member_set__unpack(NULL, l->records[0].value.len, l->records[0].value.data);
    mvcc_record_list_free(l);
    return *out ? 0 : -CAIRN_E_CORRUPT;
}

const Cairn__Member *members_find(const Cairnint__MemberSet *s, uint64_t id)
{
    for (size_t i = 0; s && i < s->n_members; i++)
        if (s->members[i]->id == id)
            return s->members[i];
    return NULL;
}

int members_is_removed(const Cairnint__MemberSet *s, uint64_t id)
{
    for (size_t i = 0; s && i < s->n_removed; i++)
        if (s->removed[i] == id)
            return 1;
    return 0;
}

uint64_t members_url_owner(const Cairnint__MemberSet *s, const char *url)
{
    for (size_t i = 0; s && i < s->n_members; i++)
        for (size_t k = 0; k < s->members[i]->n_peer_urls; k++)
            if (!strcmp(s->members[i]->peer_urls[k], url))
                return s->members[i]->id;
    return 0;
}

int members_change(const Cairnint__MemberSet *s, int kind, uint64_t id, const Cairn__Member *m, uint8_t **out,
                   size_t *out_len)
{
    Cairnint__MemberSet ns = CAIRNINT__MEMBER_SET__INIT;
    Cairn__Member *ptrs[MAX_SET + 1], changed;
    uint64_t removed[256];
    size_t n = 0, found = 0;
    const Cairn__Member *old = members_find(s, id);

    if (kind == RAFT_CC_ADD_VOTER || kind == RAFT_CC_ADD_LEARNER) {
        if (old && !(kind == RAFT_CC_ADD_VOTER && old->is_learner))
            return CAIRN_E_MEMBER_EXISTS;
        if (members_is_removed(s, id))
            return CAIRN_E_MEMBER_EXISTS;
    } else if (!old) {
        return CAIRN_E_MEMBER_NOT_FOUND;
    }
    if (kind == RAFT_CC_PROMOTE && !old->is_learner)
        return CAIRN_E_INVALID_ARGUMENT;
    if ((kind == RAFT_CC_ADD_VOTER || kind == RAFT_CC_ADD_LEARNER || kind == MEMBERS_UPDATE_URLS) && !m)
        return CAIRN_E_INVALID_ARGUMENT;

    for (size_t i = 0; s && i < s->n_members; i++) {
        if (s->members[i]->id != id) {
            if (n < MAX_SET)
                ptrs[n++] = s->members[i];
            continue;
        }
        found = 1;
        if (kind == RAFT_CC_REMOVE)
            continue;
        changed = *s->members[i];
        switch (kind) {
        case RAFT_CC_ADD_VOTER: /* etcd's "add a voter that is a learner": a promotion */
        case RAFT_CC_PROMOTE:
            changed.is_learner = 0;
            break;
        case MEMBERS_UPDATE_URLS:
            changed.n_peer_urls = m->n_peer_urls;
            changed.peer_urls = m->peer_urls;
            break;
        case MEMBERS_ATTRIBUTES:
            changed.name = m ? m->name : "";
            changed.n_client_urls = m ? m->n_client_urls : 0;
            changed.client_urls = m ? m->client_urls : NULL;
            break;
        default:
            break;
        }
        ptrs[n++] = &changed;
    }
    if (!found) { /* an add */
        if (n >= MAX_SET)
            return CAIRN_E_INVALID_ARGUMENT;
        changed = *m;
        changed.id = id;
        changed.is_learner = kind == RAFT_CC_ADD_LEARNER;
        changed.name = m->name ? m->name : "";
        changed.n_client_urls = 0;
        changed.client_urls = NULL;
        ptrs[n++] = &changed;
    }
    ns.n_members = n;
    ns.members = ptrs;
    ns.n_removed = s ? s->n_removed : 0;
    if (ns.n_removed > sizeof removed / sizeof removed[0] - 1)
        ns.n_removed = sizeof removed / sizeof removed[0] - 1; /* keep the newest */
    for (size_t i = 0; i < ns.n_removed; i++)
        removed[i] = s->removed[s->n_removed - ns.n_removed + i];
    if (kind == RAFT_CC_REMOVE)
        removed[ns.n_removed++] = id;
    ns.removed = removed;
    *out_len = cairnint__member_set__get_packed_size(&ns);
    *out = malloc(*out_len ? *out_len : 1);
    if (!*out)
        return ENOMEM;
    cairnint__member_set__pack(&ns, *out);
    return 0;
}

static int contains(const uint64_t *ids, size_t n, uint64_t id)
{
    for (size_t i = 0; i < n; i++)
        if (ids[i] == id)
            return 1;
    return 0;
}

int members_check_quorum(const uint64_t *voters, size_t n_voters, const uint64_t *active, size_t n_active,
                         int kind, uint64_t id)
{
    size_t started = 0;
    for (size_t i = 0; i < n_voters; i++)
        if (contains(active, n_active, voters[i]) && !(kind == RAFT_CC_REMOVE && voters[i] == id))
            started++;
    switch (kind) {
    case RAFT_CC_ADD_VOTER:
        /* the new voter is not started yet; one member growing to two is etcd's exception (restores) */
        if (n_voters == 1 && started == 1)
            return 0;
        /* and, as etcd, every voter must be reachable: a change made while one is down can lose quorum */
        if (started < n_voters)
            return CAIRN_E_UNHEALTHY;
        return started >= (n_voters + 1) / 2 + 1 ? 0 : CAIRN_E_UNHEALTHY;
    case RAFT_CC_PROMOTE:
        /* the learner has caught up (checked apart): it counts as started */
        return started + 1 >= (n_voters + 1) / 2 + 1 ? 0 : CAIRN_E_UNHEALTHY;
    case RAFT_CC_REMOVE:
        if (!contains(voters, n_voters, id))
            return 0; /* a learner: no quorum changes */
        return started >= (n_voters - 1) / 2 + 1 ? 0 : CAIRN_E_UNHEALTHY;
    default:
        return 0;
    }
}

/* ---------------------------------------------------------------- requests */

struct members {
    const struct config *cfg;
    struct node *node;
};

static void fill_list(Cairn__MemberListResponse *out, const Cairnint__MemberSet *s)
{
    out->n_members = s->n_members;
    out->members = s->members;
}

static void list_read(struct rpc_call *c, struct mvcc_reader *r, int err, void *arg)
{
    struct members *ms = arg;
    if (!r) {
        rpc_call_unreadable(c, err);
        return;
    }
    Cairnint__MemberSet *set = NULL;
    int rc = members_read(r, &set);
    if (rc < 0) {
        rpc_call_error(c, -rc, rc == -CAIRN_E_NOT_FOUND ? "this member's store holds no member list yet "
                                                          "(it has not caught up with the cluster)"
                                                        : NULL);
        return;
    }
    struct node_info info;
    node_get_info(ms->node, &info);
    Cairn__Response resp = CAIRN__RESPONSE__INIT;
    Cairn__MemberListResponse body = CAIRN__MEMBER_LIST_RESPONSE__INIT;
    fill_list(&body, set);
    body.leader_id = info.lead;
    resp.body_case = CAIRN__RESPONSE__BODY_MEMBER_LIST;
    resp.member_list = &body;
    rpc_call_reply(c, &resp, 0);
    cairnint__member_set__free_unpacked(set, NULL);
}

static void member_list(void *arg, struct rpc_call *c)
{
    rpc_call_read(c, rpc_call_request(c)->member_list->linearizable, list_read, arg);
}

/* Peer URLs as a member add or update gives them: each must parse as a URL cairnd can dial. */
static int check_urls(struct rpc_call *c, char **urls, size_t n)
{
    if (n == 0 || n > BOOT_MAX_URLS) {
        rpc_call_error(c, CAIRN_E_INVALID_ARGUMENT, "give between 1 and %d peer URLs", BOOT_MAX_URLS);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        struct config_url u;
        char why[256];
        if (config_parse_url(urls[i], &u, why, sizeof why) < 0) {
            rpc_call_error(c, CAIRN_E_INVALID_ARGUMENT, "peer URL '%s': %s", urls[i], why);
            return -1;
        }
        config_url_free(&u);
        for (size_t k = 0; k < i; k++)
            if (!strcmp(urls[k], urls[i])) {
                rpc_call_error(c, CAIRN_E_INVALID_ARGUMENT, "peer URL '%s' is given twice", urls[i]);
                return -1;
            }
    }
    return 0;
}

static void propose_change(struct members *ms, struct rpc_call *c, int kind, uint64_t id, const Cairn__Member *m)
{
    uint64_t req_id;
    if (rpc_call_wait(c, &req_id) < 0)
        return;
    int rc = node_propose_member_change(ms->node, req_id, kind, id, m);
    if (rc < 0)
        node_fail_waiter(ms->node, req_id, -rc);
}

static void member_add(void *arg, struct rpc_call *c)
{
    struct members *ms = arg;
    const Cairn__MemberAddRequest *req = rpc_call_request(c)->member_add;
    if (check_urls(c, req->peer_urls, req->n_peer_urls) < 0)
        return;
    Cairn__Member m = CAIRN__MEMBER__INIT;
    m.id = boot_member_id(ms->cfg->initial_cluster_token, (const char *const *)req->peer_urls, req->n_peer_urls);
    m.n_peer_urls = req->n_peer_urls;
    m.peer_urls = req->peer_urls;
    m.is_learner = req->is_learner;
    propose_change(ms, c, req->is_learner ? RAFT_CC_ADD_LEARNER : RAFT_CC_ADD_VOTER, m.id, &m);
}

/* Remove and promote: a change to an existing member named by ID. */
static void change_by_id(struct members *ms, struct rpc_call *c, int kind, uint64_t id, const char *whose)
{
    if (!id) {
        rpc_call_error(c, CAIRN_E_INVALID_ARGUMENT, "give the ID of the %s", whose);
        return;
    }
    propose_change(ms, c, kind, id, NULL);
}

static void member_remove(void *arg, struct rpc_call *c)
{
    change_by_id(arg, c, RAFT_CC_REMOVE, rpc_call_request(c)->member_remove->id, "member to remove");
}

static void member_promote(void *arg, struct rpc_call *c)
{
    change_by_id(arg, c, RAFT_CC_PROMOTE, rpc_call_request(c)->member_promote->id, "learner to promote");
}

static void member_update(void *arg, struct rpc_call *c)
{
    (void)arg;
    Cairn__MemberUpdateRequest *req = rpc_call_request(c)->member_update;
    if (!req->id) {
        rpc_call_error(c, CAIRN_E_INVALID_ARGUMENT, "give the ID of the member to update");
        return;
    }
    if (check_urls(c, req->peer_urls, req->n_peer_urls) < 0)
        return;
    Cairnint__RaftRequest rr = CAIRNINT__RAFT_REQUEST__INIT;
    rr.request_case = CAIRNINT__RAFT_REQUEST__REQUEST_MEMBER_UPDATE;
    rr.member_update = req;
    rpc_call_propose(c, &rr);
}

int members_start(const struct config *cfg, struct node *n, struct members **out)
{
    struct members *ms = calloc(1, sizeof(*ms));
    if (!ms)
        return -ENOMEM;
    ms->cfg = cfg;
    ms->node = n;
    *out = ms;
    return 0;
}

size_t members_routes(struct members *m, struct rpc_route *out, size_t max)
{
    const struct rpc_route routes[] = {
        {CAIRN__REQUEST__BODY_MEMBER_LIST, member_list, m, 1},
        {CAIRN__REQUEST__BODY_MEMBER_ADD, member_add, m, 0},
        {CAIRN__REQUEST__BODY_MEMBER_REMOVE, member_remove, m, 0},
        {CAIRN__REQUEST__BODY_MEMBER_UPDATE, member_update, m, 0},
        {CAIRN__REQUEST__BODY_MEMBER_PROMOTE, member_promote, m, 0},
    };
    return rpc_routes_copy(out, max, routes, sizeof routes / sizeof routes[0]);
}

void members_free(struct members *m)
{
    free(m);
}
