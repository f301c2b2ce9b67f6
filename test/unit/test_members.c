/*
 * daemon/members: the member set's rules (add, promote, remove, URL updates,
 * attributes; removed IDs never come back) and etcd's strict reconfiguration
 * check, including its one-to-two-members exception.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "base/errors.h"
#include "daemon/members.h"
#include "proto/cairn.pb-c.h"
#include "proto/internal.pb-c.h"
#include "raft/raft.h"

static Cairnint__MemberSet *apply(Cairnint__MemberSet *s, int kind, uint64_t id, const Cairn__Member *m, int want)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    assert_int_equal(members_change(s, kind, id, m, &buf, &len), want);
    if (want)
        return s;
    Cairnint__MemberSet *next = cairnint__member_set__unpack(NULL, len, buf);
    assert_non_null(next);
    free(buf);
    if (s)
        cairnint__member_set__free_unpacked(s, NULL);
    return next;
}

static Cairn__Member with_urls(char **urls, size_t n)
{
    Cairn__Member m = CAIRN__MEMBER__INIT;
    m.peer_urls = urls;
    m.n_peer_urls = n;
    return m;
}

static void test_add_promote_update_remove(void **state)
{
    (void)state;
    char *u1[] = {"tcp://a:1"}, *u2[] = {"tcp://b:1"}, *u2b[] = {"tcp://b:2", "tcp://b:3"};
    Cairn__Member m1 = with_urls(u1, 1), m2 = with_urls(u2, 1), m2b = with_urls(u2b, 2);
    Cairnint__MemberSet *s = apply(NULL, RAFT_CC_ADD_VOTER, 1, &m1, 0);
    s = apply(s, RAFT_CC_ADD_LEARNER, 2, &m2, 0);
    assert_int_equal(s->n_members, 2);
    assert_true(members_find(s, 2)->is_learner);
    assert_false(members_find(s, 1)->is_learner);
    assert_int_equal(members_url_owner(s, "tcp://b:1"), 2);
    assert_int_equal(members_url_owner(s, "tcp://c:1"), 0);

    /* the same ID again, and a voter promoted */
    apply(s, RAFT_CC_ADD_VOTER, 1, &m1, CAIRN_E_MEMBER_EXISTS);
    apply(s, RAFT_CC_PROMOTE, 1, NULL, CAIRN_E_INVALID_ARGUMENT);
    s = apply(s, RAFT_CC_PROMOTE, 2, NULL, 0);
    assert_false(members_find(s, 2)->is_learner);

    s = apply(s, MEMBERS_UPDATE_URLS, 2, &m2b, 0);
    assert_int_equal(members_find(s, 2)->n_peer_urls, 2);
    assert_string_equal(members_find(s, 2)->peer_urls[1], "tcp://b:3");
    apply(s, MEMBERS_UPDATE_URLS, 9, &m2b, CAIRN_E_MEMBER_NOT_FOUND);

    char *cu[] = {"tcp://a:9"};
    Cairn__Member attrs = CAIRN__MEMBER__INIT;
    attrs.name = "m1";
    attrs.client_urls = cu;
    attrs.n_client_urls = 1;
    s = apply(s, MEMBERS_ATTRIBUTES, 1, &attrs, 0);
    assert_string_equal(members_find(s, 1)->name, "m1");
    assert_string_equal(members_find(s, 1)->client_urls[0], "tcp://a:9");
    assert_string_equal(members_find(s, 1)->peer_urls[0], "tcp://a:1"); /* untouched */

    s = apply(s, RAFT_CC_REMOVE, 1, NULL, 0);
    assert_null(members_find(s, 1));
    assert_true(members_is_removed(s, 1));
    apply(s, RAFT_CC_REMOVE, 1, NULL, CAIRN_E_MEMBER_NOT_FOUND);
    /* an ID once removed never comes back */
    apply(s, RAFT_CC_ADD_VOTER, 1, &m1, CAIRN_E_MEMBER_EXISTS);
    cairnint__member_set__free_unpacked(s, NULL);
}

static void test_strict_quorum_check(void **state)
{
    (void)state;
    uint64_t v3[] = {1, 2, 3}, v1[] = {1};
    uint64_t all[] = {1, 2, 3}, two[] = {1, 2}, one[] = {1};
    /* adding a voter: every voter up, or etcd's 1 -> 2 exception */
    assert_int_equal(members_check_quorum(v3, 3, all, 3, RAFT_CC_ADD_VOTER, 4), 0);
    assert_int_equal(members_check_quorum(v3, 3, two, 2, RAFT_CC_ADD_VOTER, 4), CAIRN_E_UNHEALTHY);
    assert_int_equal(members_check_quorum(v1, 1, one, 1, RAFT_CC_ADD_VOTER, 2), 0);
    /* learners change no quorum */
    assert_int_equal(members_check_quorum(v3, 3, one, 1, RAFT_CC_ADD_LEARNER, 4), 0);
    assert_int_equal(members_check_quorum(v3, 3, one, 1, RAFT_CC_REMOVE, 9), 0);
    /* removing: the started voters left must be a quorum of the smaller set */
    assert_int_equal(members_check_quorum(v3, 3, two, 2, RAFT_CC_REMOVE, 3), 0);
    assert_int_equal(members_check_quorum(v3, 3, two, 2, RAFT_CC_REMOVE, 2), CAIRN_E_UNHEALTHY);
    assert_int_equal(members_check_quorum(v3, 3, all, 3, RAFT_CC_REMOVE, 2), 0);
    /* promoting: the caught-up learner counts */
    assert_int_equal(members_check_quorum(v3, 3, two, 2, RAFT_CC_PROMOTE, 4), 0);
    assert_int_equal(members_check_quorum(v3, 3, one, 1, RAFT_CC_PROMOTE, 4), CAIRN_E_UNHEALTHY);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_add_promote_update_remove),
        cmocka_unit_test(test_strict_quorum_check),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
