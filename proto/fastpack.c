/*
 * proto/fastpack: envelope messages packed as protobuf-c packs them
 * (fastpack.h says which and why).  The rules are protobuf-c's for proto3:
 * a plain field is written unless it is zero, empty or NULL; a oneof member
 * only when its case is set (a NULL message or string is not written); fields
 * in descriptor order; a field is its tag, then a varint, or a length and
 * the bytes.
 */
#include "proto/fastpack.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

enum { WIRE_VARINT = 0, WIRE_LEN = 2 };

static size_t varint_size(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static size_t put_varint(uint8_t *out, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        out[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    out[n++] = (uint8_t)v;
    return n;
}

/* A field's value as the wire has it: a varint, or length-prefixed bytes (a
 * message's bytes are packed by protobuf-c later). */
struct value {
    int wire;
    uint64_t varint;
    const void *bytes; /* WIRE_LEN: the bytes, or the message */
    size_t len;
    bool message;
};

/* A oneof member whose case is not set: most fields of an envelope.  The
 * loops test this first and inline, as it is all they do for those fields. */
static inline bool unset_oneof(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f)
{
    return (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
           *(const uint32_t *)((const char *)m + f->quantifier_offset) != f->id;
}

/* Reads field f of m (not an unset oneof member).  Returns 1 if it is
 * written, 0 if not, -1 if this file cannot say (protobuf-c must pack the
 * message). */
static int field_value(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f, struct value *v)
{
    const char *member = (const char *)m + f->offset;
    bool oneof = (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) != 0;
    if (!oneof && f->label != PROTOBUF_C_LABEL_NONE)
        return -1;
    v->wire = WIRE_VARINT;
    v->message = false;
    switch (f->type) {
    case PROTOBUF_C_TYPE_BOOL:
        v->varint = *(const protobuf_c_boolean *)member ? 1 : 0;
        break;
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_ENUM:
        v->varint = (uint64_t)(int64_t) * (const int32_t *)member; /* negative: ten bytes, as protobuf-c */
        break;
    case PROTOBUF_C_TYPE_UINT32:
        v->varint = *(const uint32_t *)member;
        break;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_UINT64:
        v->varint = *(const uint64_t *)member;
        break;
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(const char *const *)member;
        if (!s || (oneof ? s == f->default_value : !*s))
            return 0;
        *v = (struct value){.wire = WIRE_LEN, .bytes = s, .len = strlen(s)};
        return 1;
    }
    case PROTOBUF_C_TYPE_BYTES: {
        const ProtobufCBinaryData *b = (const ProtobufCBinaryData *)member;
        if (!oneof && !b->len)
            return 0;
        *v = (struct value){.wire = WIRE_LEN, .bytes = b->data, .len = b->len};
        return 1;
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessage *sub = *(const ProtobufCMessage *const *)member;
        if (!sub || (oneof && (const void *)sub == f->default_value))
            return 0;
        *v = (struct value){.wire = WIRE_LEN, .bytes = sub, .message = true};
        return 1;
    }
    default:
        return -1; /* sint, fixed, float and double: not in an envelope */
    }
    return oneof || v->varint != 0;
}

/*
 * A descriptor's fields in the order fastpack visits them: each plain field,
 * and each oneof once, as the range of its members (protoc-c writes a
 * oneof's members next to each other, in field-number order).  Visiting a
 * oneof is then reading its case and finding that member, not testing each
 * of its forty members.  Built once per descriptor, on first use; a
 * descriptor whose oneof members are not contiguous, or that has too many
 * steps, is walked field by field.
 */
#define LAYOUT_MAX_STEPS 16
#define LAYOUT_SLOTS 8

struct step {
    unsigned first, last; /* field indexes: one plain field, or a oneof's members */
    bool oneof;
};

struct fastpack_layout {
    bool usable;
    unsigned n_steps;
    struct step step[LAYOUT_MAX_STEPS];
};

static struct {
    _Atomic(const ProtobufCMessageDescriptor *) d; /* published after l */
    struct fastpack_layout *l;
} layouts[LAYOUT_SLOTS];
static pthread_mutex_t layouts_mu = PTHREAD_MUTEX_INITIALIZER;

static void layout_build(const ProtobufCMessageDescriptor *d, struct fastpack_layout *l)
{
    l->usable = true;
    for (unsigned i = 0; i < d->n_fields && l->usable;) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        unsigned last = i;
        bool oneof = (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) != 0;
        while (oneof && last + 1 < d->n_fields && (d->fields[last + 1].flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
               d->fields[last + 1].quantifier_offset == f->quantifier_offset)
            last++;
        for (unsigned k = 0; k < l->n_steps && oneof; k++) /* the same oneof met again: not contiguous */
            if (l->step[k].oneof && d->fields[l->step[k].first].quantifier_offset == f->quantifier_offset)
                l->usable = false;
        if (l->n_steps == LAYOUT_MAX_STEPS)
            l->usable = false;
        else
            l->step[l->n_steps++] = (struct step){.first = i, .last = last, .oneof = oneof};
        i = last + 1;
    }
}

/* d's layout, or NULL to walk it field by field. */
static const struct fastpack_layout *layout_of(const ProtobufCMessageDescriptor *d)
{
    for (unsigned i = 0; i < LAYOUT_SLOTS; i++) {
        const ProtobufCMessageDescriptor *x = atomic_load_explicit(&layouts[i].d, memory_order_acquire);
        if (x == d)
            return layouts[i].l->usable ? layouts[i].l : NULL;
        if (!x)
            break;
    }
    const struct fastpack_layout *found = NULL;
    pthread_mutex_lock(&layouts_mu);
    for (unsigned i = 0; i < LAYOUT_SLOTS; i++) {
        const ProtobufCMessageDescriptor *x = atomic_load_explicit(&layouts[i].d, memory_order_relaxed);
        if (x == d) {
            found = layouts[i].l;
            break;
        }
        if (x)
            continue;
        struct fastpack_layout *l = calloc(1, sizeof(*l)); /* kept for the life of the process */
        if (l) {
            layout_build(d, l);
            layouts[i].l = l;
            atomic_store_explicit(&layouts[i].d, d, memory_order_release);
            found = l;
        }
        break;
    }
    pthread_mutex_unlock(&layouts_mu);
    return found && found->usable ? found : NULL;
}

/* The fields of m that may be written, in order: *at is the cursor (0 to
 * start); NULL at the end. */
static const ProtobufCFieldDescriptor *next_field(const ProtobufCMessage *m, const struct fastpack_layout *l,
                                                   unsigned *at)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    if (!l) {
        while (*at < d->n_fields) {
            const ProtobufCFieldDescriptor *f = &d->fields[(*at)++];
            if (!unset_oneof(m, f))
                return f;
        }
        return NULL;
    }
    while (*at < l->n_steps) {
        unsigned s = (*at)++;
        const ProtobufCFieldDescriptor *f = &d->fields[l->step[s].first];
        if (!l->step[s].oneof)
            return f;
        uint32_t which = *(const uint32_t *)((const char *)m + f->quantifier_offset);
        if (!which)
            continue;
        const ProtobufCFieldDescriptor *sel = protobuf_c_message_descriptor_get_field(d, which);
        if (sel && sel >= f && sel <= &d->fields[l->step[s].last])
            return sel;
    }
    return NULL;
}

size_t fastpack_size(const ProtobufCMessage *m, struct fastpack_plan *plan)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    plan->size = 0;
    plan->fallback = false;
    plan->n_parts = 0;
    if (m->n_unknown_fields)
        goto fallback;
    const struct fastpack_layout *l = plan->layout = layout_of(d);
    const ProtobufCFieldDescriptor *f;
    for (unsigned at = 0; (f = next_field(m, l, &at));) {
        struct value v;
        int rc = field_value(m, f, &v);
        if (rc < 0)
            goto fallback;
        if (rc == 0)
            continue;
        size_t size = varint_size((uint64_t)f->id << 3);
        if (v.wire == WIRE_VARINT) {
            plan->size += size + varint_size(v.varint);
            continue;
        }
        if (v.message) {
            if (plan->n_parts == FASTPACK_MAX_PARTS)
                goto fallback;
            v.len = protobuf_c_message_get_packed_size(v.bytes);
            plan->part[plan->n_parts++] = v.len;
        }
        plan->size += size + varint_size(v.len) + v.len;
    }
    return plan->size;
fallback:
    *plan = (struct fastpack_plan){.fallback = true, .size = protobuf_c_message_get_packed_size(m)};
    return plan->size;
}

size_t fastpack_pack(const ProtobufCMessage *m, const struct fastpack_plan *plan, uint8_t *out)
{
    if (plan->fallback)
        return protobuf_c_message_pack(m, out);
    const ProtobufCFieldDescriptor *f;
    size_t at = 0, part = 0;
    for (unsigned cur = 0; (f = next_field(m, plan->layout, &cur));) {
        struct value v;
        if (field_value(m, f, &v) <= 0)
            continue; /* < 0 cannot happen: fastpack_size fell back */
        at += put_varint(out + at, ((uint64_t)f->id << 3) | (uint64_t)v.wire);
        if (v.wire == WIRE_VARINT) {
            at += put_varint(out + at, v.varint);
            continue;
        }
        if (v.message) {
            v.len = plan->part[part++];
            at += put_varint(out + at, v.len);
            at += protobuf_c_message_pack(v.bytes, out + at);
            continue;
        }
        at += put_varint(out + at, v.len);
        if (v.len)
            memcpy(out + at, v.bytes, v.len);
        at += v.len;
    }
    return at;
}

void *fastpack_dup(const ProtobufCMessage *m, size_t *len)
{
    struct fastpack_plan plan;
    *len = fastpack_size(m, &plan);
    void *buf = malloc(*len ? *len : 1);
    if (buf)
        fastpack_pack(m, &plan, buf);
    return buf;
}
