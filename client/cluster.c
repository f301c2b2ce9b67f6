/*
 * Leases and membership (cairn.h): one request each, through cairn_call, so
 * they get its endpoint rotation and retries.  Keep-alives and promotions
 * that reach a follower come back NOT_LEADER, which cairn_call takes to the
 * next endpoint.
 */
#include <errno.h>
#include <string.h>

#include "base/errors.h"
#include "client/cairn.h"
#include "client/internal.h"

int cairn_lease_grant(struct cairn_client *c, int64_t ttl, int64_t id, const struct cairn_call_opts *opts,
                      int64_t *granted_id, int64_t *granted_ttl, struct cairn_error_detail *err)
{
    Cairn__LeaseGrantRequest q = CAIRN__LEASE_GRANT_REQUEST__INIT;
    Cairn__Request req = CAIRN__REQUEST__INIT;
    Cairn__Response *r = NULL;
    q.ttl = ttl;
    q.id = id;
    req.body_case = CAIRN__REQUEST__BODY_LEASE_GRANT;
    req.lease_grant = &q;
    int rc = client_call_expect(c, &req, CAIRN__RESPONSE__BODY_LEASE_GRANT, opts, &r, err);
    if (rc < 0)
        return rc;
    if (granted_id)
        *granted_id = r->lease_grant->id;
    if (granted_ttl)
        *granted_ttl = r->lease_grant->ttl;
    cairn_response_free(r);
    return 0;
}

int cairn_lease_revoke(struct cairn_client *c, int64_t id, const struct cairn_call_opts *opts,
                       struct cairn_error_detail *err)
{
    Cairn__LeaseRevokeRequest q = CAIRN__LEASE_REVOKE_REQUEST__INIT;
    Cairn__Request req = CAIRN__REQUEST__INIT;
    q.id = id;
    req.body_case = CAIRN__REQUEST__BODY_LEASE_REVOKE;
    req.lease_revoke = &q;
    return client_call_expect(c, &req, CAIRN__RESPONSE__BODY_LEASE_REVOKE, opts, NULL, err);
}

int cairn_lease_keepalive(struct cairn_client *c, int64_t id, const struct cairn_call_opts *opts, int64_t *ttl,
                          struct cairn_error_detail *err)
{
    Cairn__LeaseKeepAliveRequest q = CAIRN__LEASE_KEEP_ALIVE_REQUEST__INIT;
    Cairn__Request req = CAIRN__REQUEST__INIT;
    Cairn__Response *r = NULL;
    q.id = id;
    req.body_case = CAIRN__REQUEST__BODY_LEASE_KEEP_ALIVE;
    req.lease_keep_alive = &q;
    int rc = client_call_expect(c, &req, CAIRN__RESPONSE__BODY_LEASE_KEEP_ALIVE, opts, &r, err);
    if (rc < 0)
        return rc;
    if (ttl)
        *ttl = r->lease_keep_alive->ttl;
    cairn_response_free(r);
    return 0;
}

int cairn_lease_time_to_live(struct cairn_client *c, int64_t id, bool keys, const struct cairn_call_opts *opts,
                             Cairn__Response **resp, struct cairn_error_detail *err)
{
    Cairn__LeaseTimeToLiveRequest q = CAIRN__LEASE_TIME_TO_LIVE_REQUEST__INIT;
    Cairn__Request req = CAIRN__REQUEST__INIT;
    if (!resp)
        return -EINVAL;
    q.id = id;
    q.keys = keys;
    req.body_case = CAIRN__REQUEST__BODY_LEASE_TIME_TO_LIVE;
    req.lease_time_to_live = &q;
    return client_call_expect(c, &req, CAIRN__RESPONSE__BODY_LEASE_TIME_TO_LIVE, opts, resp, err);
}

int cairn_member_list(struct cairn_client *c, bool linearizable, const struct cairn_call_opts *opts,
                      Cairn__Response **resp, struct cairn_error_detail *err)
{
    Cairn__MemberListRequest q = CAIRN__MEMBER_LIST_REQUEST__INIT;
    Cairn__Request req = CAIRN__REQUEST__INIT;
    if (!resp)
        return -EINVAL;
    q.linearizable = linearizable;
    req.body_case = CAIRN__REQUEST__BODY_MEMBER_LIST;
    req.member_list = &q;
    return client_call_expect(c, &req, CAIRN__RESPONSE__BODY_MEMBER_LIST, opts, resp, err);
}

int cairn_member_add(struct cairn_client *c, const char *const *peer_urls, size_t n, bool learner,
                     const struct cairn_call_opts *opts, uint64_t *id, struct cairn_error_detail *err)
{
    Cairn__MemberAddRequest q = CAIRN__MEMBER_ADD_REQUEST__INIT;
    Cairn__Request req = CAIRN__REQUEST__INIT;
    Cairn__Response *r = NULL;
    q.peer_urls = (char **)peer_urls;
    q.n_peer_urls = n;
    q.is_learner = learner;
    req.body_case = CAIRN__REQUEST__BODY_MEMBER_ADD;
    req.member_add = &q;
    int rc = client_call_expect(c, &req, CAIRN__RESPONSE__BODY_MEMBER_ADD, opts, &r, err);
    if (rc < 0)
        return rc;
    if (id)
        *id = r->member_add->member ? r->member_add->member->id : 0;
    cairn_response_free(r);
    return 0;
}

/* Remove and promote: a member ID in, nothing but success out. */
static int member_by_id(struct cairn_client *c, uint64_t id, bool promote, const struct cairn_call_opts *opts,
                        struct cairn_error_detail *err)
{
    Cairn__MemberRemoveRequest rm = CAIRN__MEMBER_REMOVE_REQUEST__INIT;
    Cairn__MemberPromoteRequest pr = CAIRN__MEMBER_PROMOTE_REQUEST__INIT;
    Cairn__Request req = CAIRN__REQUEST__INIT;
    rm.id = pr.id = id;
    if (promote) {
        req.body_case = CAIRN__REQUEST__BODY_MEMBER_PROMOTE;
        req.member_promote = &pr;
    } else {
        req.body_case = CAIRN__REQUEST__BODY_MEMBER_REMOVE;
        req.member_remove = &rm;
    }
    return client_call_expect(c, &req,
                              promote ? CAIRN__RESPONSE__BODY_MEMBER_PROMOTE : CAIRN__RESPONSE__BODY_MEMBER_REMOVE,
                              opts, NULL, err);
}

int cairn_member_remove(struct cairn_client *c, uint64_t id, const struct cairn_call_opts *opts,
                        struct cairn_error_detail *err)
{
    return member_by_id(c, id, false, opts, err);
}

int cairn_member_promote(struct cairn_client *c, uint64_t id, const struct cairn_call_opts *opts,
                         struct cairn_error_detail *err)
{
    return member_by_id(c, id, true, opts, err);
}

int cairn_member_update(struct cairn_client *c, uint64_t id, const char *const *peer_urls, size_t n,
                        const struct cairn_call_opts *opts, struct cairn_error_detail *err)
{
    Cairn__MemberUpdateRequest q = CAIRN__MEMBER_UPDATE_REQUEST__INIT;
    Cairn__Request req = CAIRN__REQUEST__INIT;
    q.id = id;
    q.peer_urls = (char **)peer_urls;
    q.n_peer_urls = n;
    req.body_case = CAIRN__REQUEST__BODY_MEMBER_UPDATE;
    req.member_update = &q;
    return client_call_expect(c, &req, CAIRN__RESPONSE__BODY_MEMBER_UPDATE, opts, NULL, err);
}
