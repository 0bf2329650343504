/* model/safetensors.c - safetensors files and sharded indexes; the format and
 * what is accepted are described in safetensors.h. JSON through jansson. */
#include "model/safetensors.h"

#include <assert.h>
#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/checked.h"
#include "common/file.h"
#include "kernels/kernels.h"

/* The 8-byte little-endian header length. */
#define LEN_BYTES 8u
/* A shard's file name, like NAME_MAX. */
#define MAX_FILE_NAME 255u

typedef struct {
    char *path;       /* as opened, or the parse's `what`; for messages */
    const char *base; /* the plain name the index uses (inside path) */
    slm_file_map map; /* empty for a parsed buffer, which is borrowed */
    json_t *metadata; /* the __metadata__ object (own reference), or NULL */
    char *names;      /* this file's tensor names, each NUL-terminated */
} st_file;

struct slm_safetensors {
    st_file *files; /* (n_files) */
    size_t n_files;
    slm_st_tensor *tensors; /* (n_tensors), in name order once complete */
    size_t n_tensors;
    size_t cap_tensors;
};

/* ---- messages --------------------------------------------------------- */

/* Names, dtypes and JSON values come from the file, and messages end up in
 * terminals and logs: show at most SHOW_MAX bytes of them, with anything but
 * printable ASCII as '?'. Returned by value so that several can appear in
 * one slm_fail call (a temporary lives to the end of the full expression). */
#define SHOW_MAX 96
typedef struct {
    char s[SHOW_MAX + 8]; /* room for "..." and quotes */
} shown;

static shown show(const char *s)
{
    shown out;
    size_t i = 0;
    for (; s[i] != '\0' && i < SHOW_MAX; i++)
        out.s[i] = s[i] >= 0x20 && s[i] < 0x7f ? s[i] : '?';
    if (s[i] != '\0') {
        memcpy(out.s + i, "...", 3);
        i += 3;
    }
    out.s[i] = '\0';
    return out;
}

/* A JSON value as a message shows it: 12, 1.5, 'text', an array, ... */
static shown show_value(const json_t *v)
{
    shown out;
    switch (json_typeof(v)) {
    case JSON_INTEGER:
        snprintf(out.s, sizeof out.s, "%" JSON_INTEGER_FORMAT,
                 json_integer_value(v));
        break;
    case JSON_REAL: {
        /* "0.0", not "0": the message is that it is not an integer */
        const int n =
            snprintf(out.s, sizeof out.s, "%.17g", json_real_value(v));
        if (n > 0 && (size_t)n + 2 < sizeof out.s &&
            strspn(out.s, "-0123456789") == (size_t)n)
            memcpy(out.s + n, ".0", 3);
        break;
    }
    case JSON_STRING:
        snprintf(out.s, sizeof out.s, "'%.*s'", SHOW_MAX + 3,
                 show(json_string_value(v)).s);
        break;
    case JSON_OBJECT:
        snprintf(out.s, sizeof out.s, "an object");
        break;
    case JSON_ARRAY:
        snprintf(out.s, sizeof out.s, "an array");
        break;
    case JSON_TRUE:
        snprintf(out.s, sizeof out.s, "true");
        break;
    case JSON_FALSE:
        snprintf(out.s, sizeof out.s, "false");
        break;
    default:
        snprintf(out.s, sizeof out.s, "null");
        break;
    }
    return out;
}

/* "[10, 4]"; fits: at most 8 dims of at most 10 digits. */
typedef struct {
    char s[SLM_ST_MAX_RANK * 12 + 4];
} shape_text;

static shape_text show_shape(const slm_st_tensor *t)
{
    shape_text out;
    size_t at = 0;
    out.s[at++] = '[';
    for (size_t i = 0; i < t->rank; i++)
        at += (size_t)snprintf(out.s + at, sizeof out.s - at, "%s%zu",
                               i ? ", " : "", t->shape[i]);
    snprintf(out.s + at, sizeof out.s - at, "]");
    return out;
}

/* ---- dtypes ----------------------------------------------------------- */

const char *slm_safetensors_dtype_name(slm_st_dtype dt)
{
    switch (dt) {
    case SLM_ST_F32:
        return "F32";
    case SLM_ST_F16:
        return "F16";
    case SLM_ST_BF16:
        return "BF16";
    }
    return "?";
}

size_t slm_safetensors_dtype_size(slm_st_dtype dt)
{
    return dt == SLM_ST_F32 ? 4 : 2;
}

static bool parse_dtype(const char *s, slm_st_dtype *out)
{
    static const slm_st_dtype all[] = {SLM_ST_F32, SLM_ST_F16, SLM_ST_BF16};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (strcmp(s, slm_safetensors_dtype_name(all[i])) == 0) {
            *out = all[i];
            return true;
        }
    return false;
}

/* ---- one file --------------------------------------------------------- */

/* A JSON integer >= 0, as data offsets and dims must be. */
static slm_status get_count(const char *what, const char *tensor,
                            const char *field, size_t i, const json_t *v,
                            uint64_t *out)
{
    if (!json_is_integer(v))
        return slm_fail(SLM_ERR_FORMAT,
                        "%s: tensor '%s': %s[%zu] = %s is not an integer", what,
                        show(tensor).s, field, i, show_value(v).s);
    const json_int_t x = json_integer_value(v);
    if (x < 0)
        return slm_fail(SLM_ERR_FORMAT,
                        "%s: tensor '%s': %s[%zu] = %" JSON_INTEGER_FORMAT
                        " is negative",
                        what, show(tensor).s, field, i, x);
    *out = (uint64_t)x;
    return SLM_OK;
}

static slm_status parse_shape(const char *what, const char *name,
                              const json_t *shape, slm_st_tensor *t)
{
    if (!json_is_array(shape))
        return slm_fail(SLM_ERR_FORMAT,
                        "%s: tensor '%s': shape is %s, not an array", what,
                        show(name).s, show_value(shape).s);
    const size_t rank = json_array_size(shape);
    if (rank > SLM_ST_MAX_RANK)
        return slm_fail(SLM_ERR_FORMAT,
                        "%s: tensor '%s': shape has %zu dimensions (at most "
                        "%u)",
                        what, show(name).s, rank, SLM_ST_MAX_RANK);
    t->rank = rank;
    /* The product without the zeros: a zero-element tensor may not hide
     * dims whose product overflows, since a reader computes partial
     * products (rows x cols) before it looks at the other dims. */
    size_t product = 1;
    bool zero = false;
    for (size_t i = 0; i < rank; i++) {
        uint64_t d = 0;
        SLM_CHECK(
            get_count(what, name, "shape", i, json_array_get(shape, i), &d));
        if (d > SLM_ST_MAX_DIM)
            return slm_fail(SLM_ERR_FORMAT,
                            "%s: tensor '%s': shape[%zu] = %llu exceeds the "
                            "limit of %u",
                            what, show(name).s, i, (unsigned long long)d,
                            SLM_ST_MAX_DIM);
        t->shape[i] = (size_t)d;
        if (d == 0)
            zero = true;
        else if (!slm_size_mul(product, (size_t)d, &product))
            return slm_fail(SLM_ERR_FORMAT,
                            "%s: tensor '%s': shape %s has more elements "
                            "than size_t can count",
                            what, show(name).s, show_shape(t).s);
    }
    t->n_elements = zero ? 0 : product;
    if (!slm_size_mul(t->n_elements, slm_safetensors_dtype_size(t->dtype),
                      &t->nbytes))
        return slm_fail(SLM_ERR_FORMAT,
                        "%s: tensor '%s': shape %s of %s overflows size_t "
                        "bytes",
                        what, show(name).s, show_shape(t).s,
                        slm_safetensors_dtype_name(t->dtype));
    return SLM_OK;
}

/* Validates one tensor entry against a data section of dsize bytes that
 * starts `base` bytes into the file at `data`. */
static slm_status parse_tensor(const char *what, const char *name,
                               const json_t *v, const uint8_t *data,
                               size_t base, size_t dsize, slm_st_tensor *t)
{
    if (!json_is_object(v))
        return slm_fail(SLM_ERR_FORMAT,
                        "%s: tensor '%s': entry is %s, not an object", what,
                        show(name).s, show_value(v).s);
    const json_t *dtype = NULL, *shape = NULL, *offsets = NULL;
    const char *key;
    json_t *x;
    json_object_foreach((json_t *)v, key, x)
    {
        if (strcmp(key, "dtype") == 0)
            dtype = x;
        else if (strcmp(key, "shape") == 0)
            shape = x;
        else if (strcmp(key, "data_offsets") == 0)
            offsets = x;
        else
            return slm_fail(SLM_ERR_FORMAT,
                            "%s: tensor '%s': unknown key '%s' (an entry "
                            "has only dtype, shape and data_offsets)",
                            what, show(name).s, show(key).s);
    }
    const char *missing = !dtype     ? "dtype"
                          : !shape   ? "shape"
                          : !offsets ? "data_offsets"
                                     : NULL;
    if (missing)
        return slm_fail(SLM_ERR_FORMAT, "%s: tensor '%s': no %s", what,
                        show(name).s, missing);
    if (!json_is_string(dtype))
        return slm_fail(SLM_ERR_FORMAT,
                        "%s: tensor '%s': dtype is %s, not a string", what,
                        show(name).s, show_value(dtype).s);
    if (!parse_dtype(json_string_value(dtype), &t->dtype))
        return slm_fail(SLM_ERR_UNSUPPORTED,
                        "%s: tensor '%s': dtype '%s' is not supported (F32, "
                        "F16 and BF16 are)",
                        what, show(name).s, show(json_string_value(dtype)).s);
    SLM_CHECK(parse_shape(what, name, shape, t));
    if (!json_is_array(offsets) || json_array_size(offsets) != 2)
        return slm_fail(SLM_ERR_FORMAT,
                        "%s: tensor '%s': data_offsets is %s, not an array "
                        "[begin, end]",
                        what, show(name).s,
                        json_is_array(offsets) ? "an array of another length"
                                               : show_value(offsets).s);
    uint64_t begin = 0, end = 0;
    SLM_CHECK(get_count(what, name, "data_offsets", 0,
                        json_array_get(offsets, 0), &begin));
    SLM_CHECK(get_count(what, name, "data_offsets", 1,
                        json_array_get(offsets, 1), &end));
    if (begin > end)
        return slm_fail(SLM_ERR_FORMAT,
                        "%s: tensor '%s': data_offsets [%llu, %llu] begin "
                        "after they end",
                        what, show(name).s, (unsigned long long)begin,
                        (unsigned long long)end);
    if (end > dsize)
        return slm_fail(SLM_ERR_FORMAT,
                        "%s: tensor '%s': data_offsets [%llu, %llu] run past "
                        "the end of the data section (%zu bytes): truncated?",
                        what, show(name).s, (unsigned long long)begin,
                        (unsigned long long)end, dsize);
    if (end - begin != t->nbytes)
        return slm_fail(SLM_ERR_FORMAT,
                        "%s: tensor '%s': data_offsets [%llu, %llu] hold %llu "
                        "bytes, but shape %s of %s needs %zu",
                        what, show(name).s, (unsigned long long)begin,
                        (unsigned long long)end,
                        (unsigned long long)(end - begin), show_shape(t).s,
                        slm_safetensors_dtype_name(t->dtype), t->nbytes);
    /* In range: begin <= end <= dsize, and base + dsize is the file size. */
    t->offset = (uint64_t)base + begin;
    t->data = data + base + (size_t)begin;
    return SLM_OK;
}

static slm_status parse_metadata(const char *what, const json_t *meta)
{
    if (!json_is_object(meta))
        return slm_fail(SLM_ERR_FORMAT,
                        "%s: __metadata__ is %s, not an object of strings",
                        what, show_value(meta).s);
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)meta, key, v)
    {
        if (!json_is_string(v))
            return slm_fail(SLM_ERR_FORMAT,
                            "%s: __metadata__ '%s' is %s, not a string", what,
                            show(key).s, show_value(v).s);
    }
    return SLM_OK;
}

static slm_status reserve_tensors(slm_safetensors_t *st, const char *what,
                                  size_t more)
{
    size_t need;
    if (!slm_size_add(st->n_tensors, more, &need) || need > SLM_ST_MAX_TENSORS)
        return slm_fail(SLM_ERR_FORMAT,
                        "%s: %zu more tensors would exceed the limit of %u "
                        "(in all files together)",
                        what, more, SLM_ST_MAX_TENSORS);
    if (need <= st->cap_tensors)
        return SLM_OK;
    size_t cap = st->cap_tensors * 2;
    if (cap < need)
        cap = need;
    if (cap > SLM_ST_MAX_TENSORS)
        cap = SLM_ST_MAX_TENSORS;
    /* cap <= 2^20 entries of ~130 bytes: no overflow. */
    slm_st_tensor *t = realloc(st->tensors, cap * sizeof *t);
    if (!t)
        return slm_fail(SLM_ERR_NOMEM, "%s: out of memory for %zu tensors",
                        what, cap);
    st->tensors = t;
    st->cap_tensors = cap;
    return SLM_OK;
}

/* Tensors in file order; ties (zero-byte tensors) by name, so that the
 * messages do not depend on qsort. */
static int by_offset(const void *pa, const void *pb)
{
    const slm_st_tensor *a = *(const slm_st_tensor *const *)pa;
    const slm_st_tensor *b = *(const slm_st_tensor *const *)pb;
    if (a->offset != b->offset)
        return a->offset < b->offset ? -1 : 1;
    if (a->nbytes != b->nbytes)
        return a->nbytes < b->nbytes ? -1 : 1;
    return strcmp(a->name, b->name);
}

/* The tensors t(n) must tile [base, base + dsize) exactly. */
static slm_status check_tiling(const char *what, const slm_st_tensor *t,
                               size_t n, size_t base, size_t dsize)
{
    if (n == 0) {
        if (dsize == 0)
            return SLM_OK;
        return slm_fail(SLM_ERR_FORMAT,
                        "%s: no tensors, but a data section of %zu bytes", what,
                        dsize);
    }
    const slm_st_tensor **order = malloc(n * sizeof *order);
    if (!order)
        return slm_fail(SLM_ERR_NOMEM, "%s: out of memory", what);
    for (size_t i = 0; i < n; i++)
        order[i] = &t[i];
    qsort(order, n, sizeof *order, by_offset);
    slm_status rc = SLM_OK;
    size_t pos = 0; /* in the data section */
    for (size_t i = 0; i < n && rc == SLM_OK; i++) {
        const slm_st_tensor *c = order[i];
        const size_t b = (size_t)c->offset - base;
        if (b < pos) {
            const slm_st_tensor *p = order[i - 1]; /* pos > 0: i > 0 */
            const size_t pb = (size_t)p->offset - base;
            rc = slm_fail(SLM_ERR_FORMAT,
                          "%s: tensor '%s' at data_offsets [%zu, %zu] "
                          "overlaps tensor '%s' at [%zu, %zu]",
                          what, show(c->name).s, b, b + c->nbytes,
                          show(p->name).s, pb, pb + p->nbytes);
        } else if (b > pos) {
            rc = slm_fail(SLM_ERR_FORMAT,
                          "%s: bytes [%zu, %zu) of the data section belong "
                          "to no tensor (a hole before tensor '%s'); the "
                          "tensors must cover it exactly",
                          what, pos, b, show(c->name).s);
        }
        pos = b + c->nbytes;
    }
    free(order);
    if (rc == SLM_OK && pos != dsize)
        rc = slm_fail(SLM_ERR_FORMAT,
                      "%s: the data section is %zu bytes but the tensors end "
                      "at %zu: %zu trailing bytes",
                      what, dsize, pos, dsize - pos);
    return rc;
}

static uint64_t load_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/* Validates file `fi` of st, held in data(len), and appends its tensors to
 * st's table. On failure the table keeps only the earlier files' tensors. */
static slm_status parse_file(slm_safetensors_t *st, size_t fi,
                             const uint8_t *data, size_t len)
{
    st_file *f = &st->files[fi];
    const char *what = f->path;
    if (len < LEN_BYTES)
        return slm_fail(SLM_ERR_FORMAT,
                        "%s: %zu bytes, too short for the 8-byte header "
                        "length: truncated or not a safetensors file",
                        what, len);
    const uint64_t n = load_le64(data);
    if (n > SLM_ST_MAX_HEADER_BYTES)
        return slm_fail(SLM_ERR_FORMAT,
                        "%s: header length %llu exceeds the limit of %u "
                        "bytes: not a safetensors file?",
                        what, (unsigned long long)n, SLM_ST_MAX_HEADER_BYTES);
    if (n > len - LEN_BYTES)
        return slm_fail(SLM_ERR_FORMAT,
                        "%s: header length %llu runs past the end of the "
                        "file (%zu bytes after the length): truncated?",
                        what, (unsigned long long)n, len - LEN_BYTES);
    const size_t hlen = (size_t)n, base = LEN_BYTES + hlen;
    const size_t dsize = len - base;
    if (hlen == 0 || data[LEN_BYTES] != '{')
        return slm_fail(SLM_ERR_FORMAT,
                        "%s: the header does not start with '{': not a "
                        "safetensors file",
                        what);
    json_error_t je;
    json_t *root = json_loadb((const char *)data + LEN_BYTES, hlen,
                              JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return slm_fail(SLM_ERR_FORMAT,
                        "%s: the header is not valid JSON: %s (at byte %d of "
                        "the header)",
                        what, show(je.text).s, je.position);
    slm_status rc = SLM_OK;
    if (!json_is_object(root)) {
        rc = slm_fail(SLM_ERR_FORMAT, "%s: the header is not a JSON object",
                      what);
        goto done;
    }
    /* Pass 1: bound the count and the names, and size the name arena. */
    const json_t *meta = json_object_get(root, "__metadata__");
    const size_t count = json_object_size(root) - (meta ? 1 : 0);
    SLM_CHECK_GOTO(reserve_tensors(st, what, count), rc, done);
    size_t arena = 1;
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v)
    {
        if (v == meta)
            continue;
        const size_t kl = strlen(key); /* jansson refuses NUL in keys */
        if (kl > SLM_ST_MAX_NAME) {
            rc = slm_fail(SLM_ERR_FORMAT,
                          "%s: tensor name '%s' is %zu bytes (at most %u)",
                          what, show(key).s, kl, SLM_ST_MAX_NAME);
            goto done;
        }
        arena += kl + 1; /* <= 2^20 names of <= 1025 bytes: no overflow */
    }
    f->names = malloc(arena);
    if (!f->names) {
        rc =
            slm_fail(SLM_ERR_NOMEM, "%s: out of memory for tensor names", what);
        goto done;
    }
    if (meta) {
        SLM_CHECK_GOTO(parse_metadata(what, meta), rc, done);
        f->metadata = json_incref((json_t *)meta);
    }
    /* Pass 2: every entry. */
    /* NULL while no file has had a tensor: NULL + 0 is undefined */
    slm_st_tensor *table = st->tensors ? st->tensors + st->n_tensors : NULL;
    size_t k = 0, at = 0;
    json_object_foreach(root, key, v)
    {
        if (v == meta)
            continue;
        slm_st_tensor *t = &table[k];
        memset(t, 0, sizeof *t);
        const size_t kl = strlen(key);
        memcpy(f->names + at, key, kl + 1);
        t->name = f->names + at;
        t->file = fi;
        at += kl + 1;
        SLM_CHECK_GOTO(parse_tensor(what, t->name, v, data, base, dsize, t), rc,
                       done);
        k++;
    }
    SLM_CHECK_GOTO(check_tiling(what, table, k, base, dsize), rc, done);
    st->n_tensors += k;
done:
    json_decref(root);
    return rc;
}

/* ---- the whole checkpoint -------------------------------------------- */

static int by_name(const void *pa, const void *pb)
{
    const slm_st_tensor *a = pa, *b = pb;
    return strcmp(a->name, b->name);
}

/* Sorts the table by name and refuses a tensor in two files (one file
 * cannot hold a name twice: JSON_REJECT_DUPLICATES). */
static slm_status finish(slm_safetensors_t *st)
{
    if (st->n_tensors > 1)
        qsort(st->tensors, st->n_tensors, sizeof *st->tensors, by_name);
    for (size_t i = 1; i < st->n_tensors; i++) {
        const slm_st_tensor *a = &st->tensors[i - 1], *b = &st->tensors[i];
        if (strcmp(a->name, b->name) == 0)
            return slm_fail(SLM_ERR_FORMAT, "tensor '%s' is in both %s and %s",
                            show(a->name).s, st->files[a->file].path,
                            st->files[b->file].path);
    }
    return SLM_OK;
}

static slm_status alloc_files(slm_safetensors_t *st, size_t n, const char *what)
{
    st->files = calloc(n, sizeof *st->files);
    if (!st->files)
        return slm_fail(SLM_ERR_NOMEM, "%s: out of memory", what);
    st->n_files = n;
    return SLM_OK;
}

static char *dup_str(const char *s)
{
    const size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

static slm_status new_table(slm_safetensors_t **out, const char *what)
{
    *out = calloc(1, sizeof **out);
    if (!*out)
        return slm_fail(SLM_ERR_NOMEM, "%s: out of memory", what);
    return SLM_OK;
}

slm_status slm_safetensors_parse(const uint8_t *data, size_t len,
                                 const char *what, slm_safetensors_t **out)
{
    slm_safetensors_t *st = NULL;
    slm_status rc;
    SLM_CHECK(new_table(&st, what));
    SLM_CHECK_GOTO(alloc_files(st, 1, what), rc, fail);
    st->files[0].path = dup_str(what);
    if (!st->files[0].path) {
        rc = slm_fail(SLM_ERR_NOMEM, "%s: out of memory", what);
        goto fail;
    }
    st->files[0].base = st->files[0].path;
    SLM_CHECK_GOTO(parse_file(st, 0, data, len), rc, fail);
    SLM_CHECK_GOTO(finish(st), rc, fail);
    *out = st;
    return SLM_OK;
fail:
    slm_safetensors_destroy(&st);
    return rc;
}

/* Maps `path` as file fi of st and parses it. */
static slm_status map_and_parse(slm_safetensors_t *st, size_t fi)
{
    st_file *f = &st->files[fi];
    SLM_CHECK(slm_file_map_open(f->path, &f->map));
    return parse_file(st, fi, f->map.data, f->map.size);
}

static slm_status open_single(slm_safetensors_t *st, const char *path)
{
    SLM_CHECK(alloc_files(st, 1, path));
    st->files[0].path = dup_str(path);
    if (!st->files[0].path)
        return slm_fail(SLM_ERR_NOMEM, "%s: out of memory", path);
    const char *slash = strrchr(st->files[0].path, '/');
    st->files[0].base = slash ? slash + 1 : st->files[0].path;
    SLM_CHECK(map_and_parse(st, 0));
    return finish(st);
}

/* "<dir>/<name>" in a new string, or NULL. */
static char *join(const char *dir, const char *name)
{
    const size_t dl = strlen(dir), nl = strlen(name);
    char *p = malloc(dl + 1 + nl + 1);
    if (p) {
        memcpy(p, dir, dl);
        p[dl] = '/';
        memcpy(p + dl + 1, name, nl + 1);
    }
    return p;
}

/* A name the index may use for a shard: a file in its own directory (no
 * '/', not "." or ".."). Printable ASCII only, and no '\\': every writer
 * names shards model-00001-of-00002.safetensors, and a name with control
 * characters or a Windows separator is not one of theirs; it also goes
 * into messages. */
static bool plain_file_name(const char *s)
{
    const size_t n = strlen(s);
    if (n == 0 || n > MAX_FILE_NAME || strcmp(s, ".") == 0 ||
        strcmp(s, "..") == 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] < 0x20 || s[i] > 0x7e || s[i] == '/' || s[i] == '\\')
            return false;
    return true;
}

static int by_string(const void *pa, const void *pb)
{
    return strcmp(*(const char *const *)pa, *(const char *const *)pb);
}

/* The shards' plain names, sorted and unique, borrowed from weight_map. */
static slm_status shard_names(const char *what, json_t *wm, const char ***out,
                              size_t *n_out)
{
    const size_t n = json_object_size(wm);
    if (n == 0)
        return slm_fail(SLM_ERR_FORMAT, "%s: weight_map is empty", what);
    if (n > SLM_ST_MAX_TENSORS)
        return slm_fail(SLM_ERR_FORMAT,
                        "%s: weight_map names %zu tensors (at most %u)", what,
                        n, SLM_ST_MAX_TENSORS);
    const char **names = malloc(n * sizeof *names);
    if (!names)
        return slm_fail(SLM_ERR_NOMEM, "%s: out of memory", what);
    size_t k = 0;
    const char *key;
    json_t *v;
    json_object_foreach(wm, key, v)
    {
        if (!json_is_string(v) || !plain_file_name(json_string_value(v))) {
            free(names);
            return slm_fail(SLM_ERR_FORMAT,
                            "%s: weight_map['%s'] = %s is not the plain name "
                            "of a file in the index's directory",
                            what, show(key).s, show_value(v).s);
        }
        names[k++] = json_string_value(v);
    }
    qsort(names, n, sizeof *names, by_string);
    size_t u = 0;
    for (size_t i = 0; i < n; i++)
        if (u == 0 || strcmp(names[u - 1], names[i]) != 0)
            names[u++] = names[i];
    if (u > SLM_ST_MAX_FILES) {
        free(names);
        return slm_fail(SLM_ERR_FORMAT,
                        "%s: weight_map names %zu files (at most %u)", what, u,
                        SLM_ST_MAX_FILES);
    }
    *out = names;
    *n_out = u;
    return SLM_OK;
}

/* Every tensor of the shards is where weight_map says, and every name in
 * weight_map is in a shard. */
static slm_status check_weight_map(const slm_safetensors_t *st,
                                   const char *what, json_t *wm)
{
    for (size_t i = 0; i < st->n_tensors; i++) {
        const slm_st_tensor *t = &st->tensors[i];
        const st_file *f = &st->files[t->file];
        const json_t *v = json_object_get(wm, t->name);
        if (!v)
            return slm_fail(SLM_ERR_FORMAT,
                            "%s: holds tensor '%s', which the index %s does "
                            "not list",
                            f->path, show(t->name).s, what);
        if (strcmp(json_string_value(v), f->base) != 0)
            return slm_fail(SLM_ERR_FORMAT,
                            "%s: holds tensor '%s', which the index %s "
                            "places in '%s'",
                            f->path, show(t->name).s, what,
                            show(json_string_value(v)).s);
    }
    const char *key;
    json_t *v;
    json_object_foreach(wm, key, v)
    {
        if (!slm_safetensors_find(st, key))
            return slm_fail(SLM_ERR_FORMAT,
                            "%s: places tensor '%s' in '%s', which has no "
                            "such tensor",
                            what, show(key).s, show(json_string_value(v)).s);
    }
    return SLM_OK;
}

/* `dir` is the index's directory, as a prefix for its shards' names. */
static slm_status open_index(slm_safetensors_t *st, const char *path,
                             const char *dir)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    SLM_CHECK(slm_file_read_all(path, SLM_ST_MAX_HEADER_BYTES, &buf, &len));
    json_error_t je;
    json_t *root =
        json_loadb((const char *)buf, len, JSON_REJECT_DUPLICATES, &je);
    free(buf);
    if (!root)
        return slm_fail(SLM_ERR_FORMAT,
                        "%s: not valid JSON: %s (line %d, column %d)", path,
                        show(je.text).s, je.line, je.column);
    slm_status rc = SLM_OK;
    const char **names = NULL;
    size_t n_files = 0;
    json_t *wm =
        json_is_object(root) ? json_object_get(root, "weight_map") : NULL;
    if (!wm || !json_is_object(wm)) {
        rc = slm_fail(SLM_ERR_FORMAT,
                      "%s: not an index: no \"weight_map\" object", path);
        goto done;
    }
    SLM_CHECK_GOTO(shard_names(path, wm, &names, &n_files), rc, done);
    SLM_CHECK_GOTO(alloc_files(st, n_files, path), rc, done);
    const size_t dl = strlen(dir);
    for (size_t i = 0; i < n_files; i++) {
        st_file *f = &st->files[i];
        f->path = join(dir, names[i]);
        if (!f->path) {
            rc = slm_fail(SLM_ERR_NOMEM, "%s: out of memory", path);
            goto done;
        }
        f->base = f->path + dl + 1;
        SLM_CHECK_GOTO(map_and_parse(st, i), rc, done);
    }
    SLM_CHECK_GOTO(finish(st), rc, done);
    SLM_CHECK_GOTO(check_weight_map(st, path, wm), rc, done);
done:
    free(names);
    json_decref(root);
    return rc;
}

static bool is_regular(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

static bool ends_with(const char *s, const char *suffix)
{
    const size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static slm_status open_path(slm_safetensors_t *st, const char *path)
{
    struct stat sb;
    if (stat(path, &sb) != 0)
        return slm_fail(SLM_ERR_IO, "%s: cannot open: %s", path,
                        strerror(errno));
    if (S_ISDIR(sb.st_mode)) {
        slm_status rc;
        char *single = join(path, "model.safetensors");
        char *index = join(path, "model.safetensors.index.json");
        if (!single || !index)
            rc = slm_fail(SLM_ERR_NOMEM, "%s: out of memory", path);
        else if (is_regular(single))
            rc = open_single(st, single);
        else if (is_regular(index))
            rc = open_index(st, index, path);
        else
            rc = slm_fail(SLM_ERR_IO,
                          "%s: a directory without model.safetensors or "
                          "model.safetensors.index.json",
                          path);
        free(single);
        free(index);
        return rc;
    }
    if (!ends_with(path, ".index.json"))
        return open_single(st, path);
    const char *slash = strrchr(path, '/');
    if (!slash)
        return open_index(st, path, ".");
    const size_t dl = (size_t)(slash - path);
    char *dir = malloc(dl + 1);
    if (!dir)
        return slm_fail(SLM_ERR_NOMEM, "%s: out of memory", path);
    memcpy(dir, path, dl);
    dir[dl] = '\0';
    /* "/x.index.json": the root directory, whose prefix is "" */
    slm_status rc = open_index(st, path, dir);
    free(dir);
    return rc;
}

slm_status slm_safetensors_open(const char *path, slm_safetensors_t **out)
{
    slm_safetensors_t *st = NULL;
    SLM_CHECK(new_table(&st, path));
    slm_status rc = open_path(st, path);
    if (rc != SLM_OK) {
        slm_safetensors_destroy(&st);
        return rc;
    }
    *out = st;
    return SLM_OK;
}

void slm_safetensors_destroy(slm_safetensors_t **st)
{
    if (!st || !*st)
        return;
    slm_safetensors_t *s = *st;
    for (size_t i = 0; i < s->n_files; i++) {
        st_file *f = &s->files[i];
        slm_file_unmap(&f->map);
        json_decref(f->metadata);
        free(f->names);
        free(f->path);
    }
    free(s->files);
    free(s->tensors);
    free(s);
    *st = NULL;
}

/* ---- queries ---------------------------------------------------------- */

size_t slm_safetensors_count(const slm_safetensors_t *st)
{
    return st->n_tensors;
}

const slm_st_tensor *slm_safetensors_at(const slm_safetensors_t *st, size_t i)
{
    assert(i < st->n_tensors); /* the caller's bug */
    return &st->tensors[i];
}

const slm_st_tensor *slm_safetensors_find(const slm_safetensors_t *st,
                                          const char *name)
{
    if (st->n_tensors == 0)
        return NULL;
    slm_st_tensor key;
    key.name = name;
    return bsearch(&key, st->tensors, st->n_tensors, sizeof key, by_name);
}

size_t slm_safetensors_file_count(const slm_safetensors_t *st)
{
    return st->n_files;
}

const char *slm_safetensors_file_name(const slm_safetensors_t *st, size_t file)
{
    assert(file < st->n_files); /* the caller's bug */
    return st->files[file].path;
}

const char *slm_safetensors_metadata(const slm_safetensors_t *st, size_t file,
                                     const char *key)
{
    assert(file < st->n_files); /* the caller's bug */
    const json_t *m = st->files[file].metadata;
    /* parse_metadata proved every value a string */
    return m ? json_string_value(json_object_get(m, key)) : NULL;
}

slm_status slm_safetensors_read_f32(const slm_st_tensor *t, size_t row0,
                                    size_t n_rows, size_t col0, size_t n_cols,
                                    float *out)
{
    if (t->rank > 2)
        return slm_fail(SLM_ERR_INVALID,
                        "tensor '%s': shape %s has rank %zu; read_f32 reads "
                        "scalars, 1-D and 2-D tensors",
                        show(t->name).s, show_shape(t).s, t->rank);
    const size_t rows = t->rank == 2 ? t->shape[0] : 1;
    const size_t cols = t->rank == 2   ? t->shape[1]
                        : t->rank == 1 ? t->shape[0]
                                       : 1;
    if (row0 > rows || n_rows > rows - row0 || col0 > cols ||
        n_cols > cols - col0)
        return slm_fail(SLM_ERR_RANGE,
                        "tensor '%s': rows [%zu, +%zu) x columns [%zu, +%zu) "
                        "are outside its (%zu, %zu)",
                        show(t->name).s, row0, n_rows, col0, n_cols, rows,
                        cols);
    if (n_rows == 0 || n_cols == 0)
        return SLM_OK; /* out may be NULL */
    const size_t es = slm_safetensors_dtype_size(t->dtype);
    const uint8_t *src = t->data;
    for (size_t r = 0; r < n_rows; r++) {
        /* Within nbytes, which fits size_t: (row0 + r) < rows and
         * col0 + n_cols <= cols. */
        const uint8_t *p = src + ((row0 + r) * cols + col0) * es;
        float *dst = out + r * n_cols;
        /* The file is little-endian, as is every host we build for. */
        if (t->dtype == SLM_ST_F32) {
            memcpy(dst, p, n_cols * sizeof(float));
            continue;
        }
        /* The data may be unaligned for uint16_t: convert through an
         * aligned buffer. */
        uint16_t half[256];
        for (size_t c = 0; c < n_cols;) {
            size_t k = n_cols - c;
            if (k > sizeof half / sizeof half[0])
                k = sizeof half / sizeof half[0];
            memcpy(half, p + c * 2, k * 2);
            if (t->dtype == SLM_ST_F16)
                slm_cpu_f16_to_f32(dst + c, half, k);
            else
                slm_cpu_bf16_to_f32(dst + c, half, k);
            c += k;
        }
    }
    return SLM_OK;
}
