/*
 * model/safetensors.h - Hugging Face safetensors files, single and sharded:
 * header validation, the tensor table, read-only mapping of the data, and a
 * float32 reader for a row/column slice (so a shard reads only its part).
 *
 * On-disk format (https://github.com/huggingface/safetensors), little-endian:
 *   u64 N                  the header's length in bytes
 *   N bytes of JSON        one object (UTF-8, may end in spaces):
 *       "<tensor name>": {"dtype": "F32" | "F16" | "BF16" | ...,
 *                         "shape": [d0, d1, ...],
 *                         "data_offsets": [begin, end]},
 *       ...
 *       "__metadata__": {"<key>": "<string>", ...}    optional
 *   the data section       every tensor's bytes, row-major (C order), at
 *                          [begin, end) counted from the byte after the
 *                          header
 * A sharded checkpoint is a directory with model.safetensors.index.json,
 *   {"metadata": {...}, "weight_map": {"<tensor name>": "<file name>", ...}}
 * and the files it names, in the same directory.
 *
 * Nothing in a file is trusted. What is accepted, and why:
 *   - N at most SLM_ST_MAX_HEADER_BYTES (the Rust crate's MAX_HEADER_SIZE)
 *     and within the file; the header starts with '{' and is one JSON object
 *     without duplicate names (jansson, JSON_REJECT_DUPLICATES).
 *   - A tensor entry has exactly the three keys above: a key we do not know
 *     might change how the bytes are to be read, and guessing is worse than
 *     refusing. __metadata__ must map strings to strings; it is kept.
 *   - dtype F32, F16 or BF16; any other (I8, F64, F8_E4M3, BOOL, ...) is
 *     refused naming the tensor and dtype (SLM_ERR_UNSUPPORTED).
 *   - shape: at most SLM_ST_MAX_RANK integers in [0, SLM_ST_MAX_DIM], whose
 *     product (with the zeros left out, so every partial product is safe to
 *     compute later) fits in size_t; data_offsets: two integers (not reals),
 *     0 <= begin <= end, end - begin == elements x element size, end within
 *     the data section.
 *   - The tensors tile the data section exactly: sorted by (begin, end),
 *     each begins where the previous ended, the first at 0 and the last at
 *     the end of the file. So no two tensors overlap, there are no holes and
 *     no trailing bytes. This is what the safetensors crate's
 *     Metadata::validate requires (InvalidOffset, MetadataIncompleteBuffer),
 *     and what every writer produces; a hole or a tail is a file that was
 *     edited or truncated, and an overlap would let one tensor alias another.
 *   - Sharded: every file name in weight_map is a plain name (not empty, no
 *     '/' or '\\', not "." or ".."), so the index cannot reach outside its
 *     directory; every tensor the index names is in the file it names; no
 *     tensor is in two files; and a tensor in a file that the index does not
 *     list, or lists under another file, is refused: the index and its shards
 *     disagree (a shard of another export), and loading would hide that.
 *     The index's "metadata" (total_size) and other top-level keys are
 *     ignored: nothing in them says how bytes are read.
 * Tensor data need not be aligned (N and the offsets are arbitrary): read it
 * with memcpy or slm_safetensors_read_f32, never through a cast pointer.
 */
#ifndef SLM_MODEL_SAFETENSORS_H
#define SLM_MODEL_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

/* Hard limits. The header limit is the Rust crate's; the others are far
 * above any released model (DeepSeek-V3, 671B parameters, has ~92k tensors in
 * 163 files; Llama 3.1 405B has 191 files) and bound the work a file can
 * ask for. */
#define SLM_ST_MAX_HEADER_BYTES 100000000u /* also caps the index file */
#define SLM_ST_MAX_TENSORS      (1u << 20) /* in all files together */
#define SLM_ST_MAX_FILES        4096u      /* shards of one index */
#define SLM_ST_MAX_RANK         8u
#define SLM_ST_MAX_DIM          2147483647u /* the engine's sizes are int32 */
#define SLM_ST_MAX_NAME         1024u       /* bytes of a tensor name */

typedef enum {
    SLM_ST_F32,
    SLM_ST_F16,
    SLM_ST_BF16,
} slm_st_dtype;

/* "F32", "F16", "BF16", as in the file. */
const char *slm_safetensors_dtype_name(slm_st_dtype dt);
/* Bytes per element: 4, 2, 2. */
size_t slm_safetensors_dtype_size(slm_st_dtype dt);

/* One tensor, as validated. Borrowed from its slm_safetensors_t. */
typedef struct {
    const char *name; /* NUL-terminated; as in the file */
    slm_st_dtype dtype;
    size_t rank;                   /* 0 .. SLM_ST_MAX_RANK */
    size_t shape[SLM_ST_MAX_RANK]; /* (rank); entries past rank are 0 */
    size_t n_elements;             /* product of shape (1 for rank 0) */
    const void *data;              /* (nbytes), not necessarily aligned */
    size_t nbytes;                 /* n_elements * dtype size */
    size_t file;                   /* for slm_safetensors_file_name */
    uint64_t offset;               /* of data, from the start of its file */
} slm_st_tensor;

typedef struct slm_safetensors slm_safetensors_t;

/* Opens a checkpoint. `path` is a .safetensors file, an index
 * (a file whose name ends in ".index.json"), or a directory holding
 * model.safetensors or, failing that, model.safetensors.index.json (the
 * order transformers looks in). Every file is mapped read-only
 * (PROT_READ, MAP_PRIVATE) and validated as above before *out is set.
 * Errors name the file, the tensor or field, and the value. On success the
 * caller owns *out and releases it with slm_safetensors_destroy. */
slm_status slm_safetensors_open(const char *path, slm_safetensors_t **out);

/* Validates one safetensors file held in data(len) and builds its table,
 * without mapping anything: the same code slm_safetensors_open runs on each
 * mapped file (fuzzed). `what` names the buffer in messages and is copied.
 * On success the caller owns *out (destroy it as above); it borrows `data`,
 * which must outlive it. On failure *out is left untouched. */
slm_status slm_safetensors_parse(const uint8_t *data, size_t len,
                                 const char *what, slm_safetensors_t **out);

/* Accepts NULL; sets *st to NULL. Every pointer it handed out dies. */
void slm_safetensors_destroy(slm_safetensors_t **st);

/* Tensors in all files together. */
size_t slm_safetensors_count(const slm_safetensors_t *st);

/* The i-th tensor in name order (strcmp), i < count: the caller's bug
 * otherwise. Borrowed; valid while st lives. */
const slm_st_tensor *slm_safetensors_at(const slm_safetensors_t *st, size_t i);

/* The tensor called `name`, or NULL. Borrowed; valid while st lives. */
const slm_st_tensor *slm_safetensors_find(const slm_safetensors_t *st,
                                          const char *name);

/* Files behind st: 1 for a single file; the shards in name order for an
 * index. The name is the path as opened (or `what` for a parsed buffer).
 * Borrowed; valid while st lives. file < file_count: the caller's bug
 * otherwise. */
size_t slm_safetensors_file_count(const slm_safetensors_t *st);
const char *slm_safetensors_file_name(const slm_safetensors_t *st, size_t file);

/* The value of `key` in file `file`'s __metadata__, or NULL if it has none.
 * Borrowed; valid while st lives. */
const char *slm_safetensors_metadata(const slm_safetensors_t *st, size_t file,
                                     const char *key);

/* Reads rows [row0, row0 + n_rows) x columns [col0, col0 + n_cols) of t as
 * float32 into out(n_rows, n_cols), row-major, converting F16 and BF16
 * exactly (kernels/cpu/half.c). A 2-D tensor is (shape[0], shape[1]); a 1-D
 * tensor is one row of shape[0]; a scalar is (1, 1). Fails with
 * SLM_ERR_INVALID for a tensor of rank > 2 and SLM_ERR_RANGE for a slice
 * outside the tensor, naming both; out is untouched then. */
slm_status slm_safetensors_read_f32(const slm_st_tensor *t, size_t row0,
                                    size_t n_rows, size_t col0, size_t n_cols,
                                    float *out);

#endif
