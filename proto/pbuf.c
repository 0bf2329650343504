/* proto/pbuf.c - see pbuf.h. */
#include "proto/pbuf.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* The budget is thread-local and armed only for the duration of an unpack;
 * alloc and free are otherwise plain malloc and free, so the same allocator
 * frees the message later, long after the budget is disarmed. */
static _Thread_local struct {
    bool armed;
    bool exceeded;
    size_t left;
} budget;

static void *budget_alloc(void *data, size_t size)
{
    (void)data;
    if (budget.armed) {
        if (size > budget.left) {
            budget.exceeded = true;
            return NULL;
        }
        budget.left -= size;
    }
    return malloc(size ? size : 1);
}

static void budget_free(void *data, void *p)
{
    (void)data;
    free(p);
}

static ProtobufCAllocator budget_allocator = {budget_alloc, budget_free, NULL};

slm_status slm_pb_unpack(const ProtobufCMessageDescriptor *d,
                         const uint8_t *buf, size_t len, size_t limit,
                         const char *what, ProtobufCMessage **out)
{
    static const uint8_t empty[1];
    *out = NULL;
    budget.armed = true;
    budget.exceeded = false;
    budget.left = limit;
    ProtobufCMessage *m =
        protobuf_c_message_unpack(d, &budget_allocator, len, buf ? buf : empty);
    budget.armed = false;
    if (!m) {
        if (budget.exceeded)
            return slm_fail(SLM_ERR_FORMAT,
                            "%s: parsing %zu bytes needs more than %zu bytes "
                            "of memory",
                            what, len, limit);
        return slm_fail(SLM_ERR_FORMAT, "%s: malformed protobuf (%zu bytes)",
                        what, len);
    }
    *out = m;
    return SLM_OK;
}

void slm_pb_free(ProtobufCMessage *m)
{
    if (m)
        protobuf_c_message_free_unpacked(m, &budget_allocator);
}

/* Field number 0 does not exist in protobuf, but protobuf-c accepts it when
 * the tag is encoded in more than one byte and keeps it as an unknown field,
 * which it then packs into bytes that it refuses . This walks
 * every sub-message through the descriptors; our schemas are not
 * recursive, so the depth is theirs. Other unknown fields are ignored, as
 * proto3 intends. */
slm_status slm_pb_check_field_zero(const char *what, const ProtobufCMessage *m)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (size_t i = 0; i < m->n_unknown_fields; i++)
        if (m->unknown_fields[i].tag == 0)
            return slm_fail(SLM_ERR_FORMAT, "%s: %s has a field numbered 0",
                            what, d->short_name);
    for (unsigned f = 0; f < d->n_fields; f++) {
        const ProtobufCFieldDescriptor *fd = &d->fields[f];
        if (fd->type != PROTOBUF_C_TYPE_MESSAGE)
            continue;
        const char *base = (const char *)m;
        if (fd->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            uint32_t which;
            memcpy(&which, base + fd->quantifier_offset, sizeof which);
            if (which != fd->id)
                continue;
        }
        if (fd->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n;
            ProtobufCMessage **subs;
            memcpy(&n, base + fd->quantifier_offset, sizeof n);
            memcpy(&subs, base + fd->offset, sizeof subs);
            for (size_t j = 0; j < n; j++)
                SLM_CHECK(slm_pb_check_field_zero(what, subs[j]));
        } else {
            ProtobufCMessage *sub;
            memcpy(&sub, base + fd->offset, sizeof sub);
            if (sub)
                SLM_CHECK(slm_pb_check_field_zero(what, sub));
        }
    }
    return SLM_OK;
}

static bool read_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    uint64_t x = 0;
    for (unsigned shift = 0; shift < 64 && *p < end; shift += 7) {
        const uint8_t b = *(*p)++;
        x |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = x;
            return true;
        }
    }
    return false;
}

/* Nesting is bounded by the schemas (a few levels); the cap only guards
 * against a descriptor that refers to itself. */
#define SLM_PB_MAX_DEPTH 16

/* The first string field holding a NUL, or NULL. Bytes it cannot walk end
 * the search quietly: protobuf-c has already accepted the message, so the
 * walk only needs to be as lenient. */
static const ProtobufCFieldDescriptor *
find_nul(const ProtobufCMessageDescriptor *d, const uint8_t *p, size_t n,
         int depth, const ProtobufCMessageDescriptor **in)
{
    const uint8_t *end = p + n;
    while (p < end && depth < SLM_PB_MAX_DEPTH) {
        uint64_t key, len;
        if (!read_varint(&p, end, &key))
            return NULL;
        switch (key & 7) {
        case 0:
            if (!read_varint(&p, end, &len))
                return NULL;
            continue;
        case 1:
        case 5: {
            const size_t w = (key & 7) == 1 ? 8 : 4;
            if ((size_t)(end - p) < w)
                return NULL;
            p += w;
            continue;
        }
        case 2:
            break;
        default:
            return NULL;
        }
        if (!read_varint(&p, end, &len) || len > (uint64_t)(end - p))
            return NULL;
        const ProtobufCFieldDescriptor *f =
            key >> 3 <= UINT32_MAX ? protobuf_c_message_descriptor_get_field(
                                         d, (unsigned)(key >> 3))
                                   : NULL;
        if (f && f->type == PROTOBUF_C_TYPE_STRING &&
            memchr(p, 0, (size_t)len)) {
            *in = d;
            return f;
        }
        if (f && f->type == PROTOBUF_C_TYPE_MESSAGE) {
            const ProtobufCFieldDescriptor *bad =
                find_nul(f->descriptor, p, (size_t)len, depth + 1, in);
            if (bad)
                return bad;
        }
        p += len;
    }
    return NULL;
}

slm_status slm_pb_check_nul(const char *what,
                            const ProtobufCMessageDescriptor *d,
                            const uint8_t *buf, size_t len)
{
    const ProtobufCMessageDescriptor *in = NULL;
    const ProtobufCFieldDescriptor *f = find_nul(d, buf, len, 0, &in);
    if (f)
        return slm_fail(SLM_ERR_FORMAT, "%s: %s.%s contains a NUL byte", what,
                        in->short_name, f->name);
    return SLM_OK;
}
