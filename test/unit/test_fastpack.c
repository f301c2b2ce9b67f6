/*
 * proto/fastpack writes exactly protobuf-c's bytes: every body of the three
 * envelopes (cairn.Request, cairn.Response, cairnint.RaftRequest), with and
 * without their plain fields; oneof scalars and empty bytes (cairn.Compare);
 * and the messages it leaves to protobuf-c (repeated fields, unknown
 * fields).  A field added to an envelope is covered without a change here:
 * the bodies are found by walking the descriptors.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "proto/cairn.pb-c.h"
#include "proto/fastpack.h"
#include "proto/internal.pb-c.h"

/* Packs m both ways and compares; returns whether fastpack fell back. */
static bool same_bytes(const ProtobufCMessage *m)
{
    size_t want_len = protobuf_c_message_get_packed_size(m);
    uint8_t *want = malloc(want_len + 1), *got = malloc(want_len + 16);
    assert_non_null(want);
    assert_non_null(got);
    assert_int_equal(protobuf_c_message_pack(m, want), want_len);
    struct fastpack_plan plan;
    assert_int_equal(fastpack_size(m, &plan), want_len);
    memset(got, 0xee, want_len + 16);
    assert_int_equal(fastpack_pack(m, &plan, got), want_len);
    assert_memory_equal(got, want, want_len);
    assert_int_equal(got[want_len], 0xee); /* nothing written past the end */
    size_t dup_len = 0;
    uint8_t *dup = fastpack_dup(m, &dup_len);
    assert_non_null(dup);
    assert_int_equal(dup_len, want_len);
    assert_memory_equal(dup, want, want_len);
    free(dup);
    free(want);
    free(got);
    return plan.fallback;
}

/* A zeroed message of descriptor d, initialised; in one malloc. */
static ProtobufCMessage *new_message(const ProtobufCMessageDescriptor *d)
{
    ProtobufCMessage *m = calloc(1, d->sizeof_message);
    assert_non_null(m);
    protobuf_c_message_init(d, m);
    return m;
}

/* For every oneof member of envelope env: set it (an empty body, then NULL)
 * and compare, with the envelope's plain fields as they are. */
static void every_body(ProtobufCMessage *env)
{
    const ProtobufCMessageDescriptor *d = env->descriptor;
    int bodies = 0;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (!(f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF))
            continue;
        assert_int_equal(f->type, PROTOBUF_C_TYPE_MESSAGE); /* an envelope's bodies are messages */
        uint32_t *which = (uint32_t *)((char *)env + f->quantifier_offset);
        ProtobufCMessage **slot = (ProtobufCMessage **)((char *)env + f->offset);
        ProtobufCMessage *body = new_message(f->descriptor);
        *which = f->id;
        *slot = body;
        assert_false(same_bytes(env));
        *slot = NULL; /* a case without its message: nothing written, as protobuf-c */
        assert_false(same_bytes(env));
        *which = 0;
        free(body);
        bodies++;
    }
    assert_true(bodies >= 10);
}

static void test_every_response_body_with_and_without_header_and_error(void **state)
{
    (void)state;
    Cairn__Response r = CAIRN__RESPONSE__INIT;
    every_body(&r.base);
    Cairn__ResponseHeader h = CAIRN__RESPONSE_HEADER__INIT;
    h.cluster_id = 0x1234567890abcdefULL;
    h.member_id = 1;
    h.revision = 300; /* a two-byte varint */
    h.raft_term = 0;  /* zero: not written */
    r.header = &h;
    every_body(&r.base);
    Cairn__Error e = CAIRN__ERROR__INIT;
    e.code = 7;
    e.message = "no such key";
    r.error = &e;
    every_body(&r.base);
}

static void test_a_point_reads_reply(void **state)
{
    (void)state;
    uint8_t value[256];
    memset(value, 'v', sizeof value);
    Cairn__KeyValue kv = CAIRN__KEY_VALUE__INIT;
    kv.key = (ProtobufCBinaryData){5, (uint8_t *)"key/1"};
    kv.value = (ProtobufCBinaryData){sizeof value, value};
    kv.create_revision = 5;
    kv.mod_revision = 90000;
    kv.version = 3;
    Cairn__KeyValue *kvs[1] = {&kv};
    Cairn__RangeResponse rr = CAIRN__RANGE_RESPONSE__INIT;
    rr.n_kvs = 1;
    rr.kvs = kvs;
    rr.count = 1;
    Cairn__ResponseHeader h = CAIRN__RESPONSE_HEADER__INIT;
    h.cluster_id = 42;
    h.member_id = 0xffffffffffffffffULL; /* a ten-byte varint */
    h.revision = 90000;
    h.raft_term = 2;
    Cairn__Response r = CAIRN__RESPONSE__INIT;
    r.header = &h;
    r.body_case = CAIRN__RESPONSE__BODY_RANGE;
    r.range = &rr;
    assert_false(same_bytes(&r.base));
    assert_true(same_bytes(&rr.base)); /* repeated kvs: protobuf-c packs it */
}

static void test_every_request_body_with_and_without_a_token(void **state)
{
    (void)state;
    Cairn__Request r = CAIRN__REQUEST__INIT;
    every_body(&r.base);
    r.auth_token = ""; /* empty: not written */
    every_body(&r.base);
    r.auth_token = "token.abc";
    every_body(&r.base);
}

static void test_every_raft_request_body_with_its_plain_fields(void **state)
{
    (void)state;
    Cairnint__RaftRequest r = CAIRNINT__RAFT_REQUEST__INIT;
    every_body(&r.base);
    r.id = 1ULL << 40;
    r.proposer = 3;
    r.auth_user = "alice";
    r.auth_revision = 9;
    Cairnint__AuthPassword pw = CAIRNINT__AUTH_PASSWORD__INIT;
    r.auth_password = &pw;
    every_body(&r.base);
}

static void test_oneof_scalars_and_empty_bytes_are_written(void **state)
{
    (void)state;
    Cairn__Compare c = CAIRN__COMPARE__INIT;
    c.result = CAIRN__COMPARE__COMPARE_RESULT__LESS;
    c.target = CAIRN__COMPARE__COMPARE_TARGET__MOD;
    c.key = (ProtobufCBinaryData){1, (uint8_t *)"k"};
    assert_false(same_bytes(&c.base));
    c.target_union_case = CAIRN__COMPARE__TARGET_UNION_MOD_REVISION;
    c.mod_revision = 0; /* a oneof scalar is written even when zero */
    assert_false(same_bytes(&c.base));
    c.mod_revision = -1;
    assert_false(same_bytes(&c.base));
    c.target_union_case = CAIRN__COMPARE__TARGET_UNION_VALUE;
    c.value = (ProtobufCBinaryData){0, NULL}; /* and oneof bytes even when empty */
    assert_false(same_bytes(&c.base));
    c.range_end = (ProtobufCBinaryData){1, (uint8_t *)"\0"};
    assert_false(same_bytes(&c.base));
}

static void test_unknown_fields_are_left_to_protobuf_c(void **state)
{
    (void)state;
    /* a Response with header (field 1) and an unknown field 999 (varint 5) */
    Cairn__ResponseHeader h = CAIRN__RESPONSE_HEADER__INIT;
    h.member_id = 7;
    Cairn__Response r = CAIRN__RESPONSE__INIT;
    r.header = &h;
    uint8_t buf[64];
    size_t n = cairn__response__pack(&r, buf);
    buf[n++] = (uint8_t)(((999 << 3) & 0x7f) | 0x80);
    buf[n++] = (uint8_t)((999 << 3) >> 7);
    buf[n++] = 5;
    Cairn__Response *u = cairn__response__unpack(NULL, n, buf);
    assert_non_null(u);
    assert_int_equal(u->base.n_unknown_fields, 1);
    assert_true(same_bytes(&u->base));
    cairn__response__free_unpacked(u, NULL);
}

/* Sets every plain field of m that is not a message: integers to a value
 * that needs several bytes (negative for signed ones), strings and bytes to
 * a few bytes.  Repeated fields, messages and oneofs stay unset. */
static void fill(ProtobufCMessage *m)
{
    static uint8_t bytes[3] = {1, 0, 2};
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        char *member = (char *)m + f->offset;
        if (f->label != PROTOBUF_C_LABEL_NONE || (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF))
            continue;
        switch (f->type) {
        case PROTOBUF_C_TYPE_BOOL: *(protobuf_c_boolean *)member = 1; break;
        case PROTOBUF_C_TYPE_INT32:
        case PROTOBUF_C_TYPE_ENUM: *(int32_t *)member = -3; break;
        case PROTOBUF_C_TYPE_UINT32: *(uint32_t *)member = 300; break;
        case PROTOBUF_C_TYPE_INT64: *(int64_t *)member = -70000; break;
        case PROTOBUF_C_TYPE_UINT64: *(uint64_t *)member = 1ULL << 63; break;
        case PROTOBUF_C_TYPE_STRING: *(const char **)member = "s"; break;
        case PROTOBUF_C_TYPE_BYTES: *(ProtobufCBinaryData *)member = (ProtobufCBinaryData){sizeof bytes, bytes}; break;
        default: break;
        }
    }
}

/* Every body message on its own, filled: many descriptors, more than the
 * layout cache holds, so both of fastpack's ways through the fields run. */
static void test_every_body_message_filled(void **state)
{
    (void)state;
    const ProtobufCMessageDescriptor *envs[] = {&cairn__request__descriptor, &cairn__response__descriptor,
                                                &cairnint__raft_request__descriptor};
    int packed_here = 0;
    for (size_t e = 0; e < sizeof envs / sizeof envs[0]; e++)
        for (unsigned i = 0; i < envs[e]->n_fields; i++) {
            const ProtobufCFieldDescriptor *f = &envs[e]->fields[i];
            if (f->type != PROTOBUF_C_TYPE_MESSAGE)
                continue;
            ProtobufCMessage *m = new_message(f->descriptor);
            fill(m);
            if (!same_bytes(m))
                packed_here++;
            free(m);
        }
    assert_true(packed_here >= 20); /* most bodies have no repeated field */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_response_body_with_and_without_header_and_error),
        cmocka_unit_test(test_a_point_reads_reply),
        cmocka_unit_test(test_every_request_body_with_and_without_a_token),
        cmocka_unit_test(test_every_raft_request_body_with_its_plain_fields),
        cmocka_unit_test(test_oneof_scalars_and_empty_bytes_are_written),
        cmocka_unit_test(test_unknown_fields_are_left_to_protobuf_c),
        cmocka_unit_test(test_every_body_message_filled),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
