/*
 * libcairn: alarms (list, disarm) and defragment.  Thin wrappers over the
 * Alarm and Defragment requests that copy the answer into plain structs so
 * callers need no protobuf; a defragment is per member (pin one with the
 * call options), an alarm change goes through Raft on any member.
 */
#include <errno.h>
#include <stdlib.h>

#include "base/errors.h"
#include "client/cairn.h"
#include "client/internal.h"

static int alarm_call(struct cairn_client *c, int action, uint64_t member_id, int type,
                      const struct cairn_call_opts *opts, Cairn__Response **resp, struct cairn_error_detail *err)
{
    Cairn__AlarmRequest q = CAIRN__ALARM_REQUEST__INIT;
    Cairn__Request req = CAIRN__REQUEST__INIT;
    q.action = (Cairn__AlarmRequest__AlarmAction)action;
    q.member_id = member_id;
    q.alarm = (Cairn__AlarmType)type;
    req.body_case = CAIRN__REQUEST__BODY_ALARM;
    req.alarm = &q;
    return client_call_expect(c, &req, CAIRN__RESPONSE__BODY_ALARM, opts, resp, err);
}

int cairn_alarm_list(struct cairn_client *c, const struct cairn_call_opts *opts, struct cairn_alarm *out,
                     size_t max, size_t *n, struct cairn_error_detail *err)
{
    Cairn__Response *resp = NULL;
    if (!c || !n || (max && !out))
        return -EINVAL;
    *n = 0;
    int rc = alarm_call(c, CAIRN__ALARM_REQUEST__ALARM_ACTION__GET, 0, CAIRN__ALARM_TYPE__NONE, opts, &resp, err);
    if (rc != 0)
        return rc;
    for (size_t i = 0; i < resp->alarm->n_alarms; i++) {
        const Cairn__AlarmMember *m = resp->alarm->alarms[i];
        if (!m)
            continue;
        if (*n < max)
            out[*n] = (struct cairn_alarm){m->member_id, (int)m->alarm};
        (*n)++;
    }
    cairn_response_free(resp);
    return 0;
}

int cairn_alarm_disarm(struct cairn_client *c, uint64_t member_id, int type, const struct cairn_call_opts *opts,
                       struct cairn_error_detail *err)
{
    Cairn__Response *resp = NULL;
    if (!c || type < 0)
        return -EINVAL;
    int rc = alarm_call(c, CAIRN__ALARM_REQUEST__ALARM_ACTION__DEACTIVATE, member_id, type, opts, &resp, err);
    cairn_response_free(resp);
    return rc;
}

int cairn_defragment(struct cairn_client *c, const struct cairn_call_opts *opts, struct cairn_defrag_info *info,
                     struct cairn_error_detail *err)
{
    Cairn__DefragmentRequest q = CAIRN__DEFRAGMENT_REQUEST__INIT;
    Cairn__Request req = CAIRN__REQUEST__INIT;
    Cairn__Response *resp = NULL;
    if (!c)
        return -EINVAL;
    req.body_case = CAIRN__REQUEST__BODY_DEFRAGMENT;
    req.defragment = &q;
    int rc = client_call_expect(c, &req, CAIRN__RESPONSE__BODY_DEFRAGMENT, opts, &resp, err);
    if (rc != 0)
        return rc;
    if (info)
        *info = (struct cairn_defrag_info){.db_size_before = resp->defragment->db_size_before,
                                           .db_size_after = resp->defragment->db_size_after,
                                           .pause_ms = resp->defragment->pause_ms,
                                           .member_id = resp->header ? resp->header->member_id : 0};
    cairn_response_free(resp);
    return 0;
}
