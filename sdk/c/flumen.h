/* flumen.h — Flumen's C SDK (also usable from Zig): write an operator as a few callbacks over
 * pointer + length views of Arrow columns; the SDK implements the component's exports.
 *
 * An operator defines:
 *
 *   flumen_status flumen_open(const flumen_ctx *ctx);                          required
 *   flumen_status flumen_process(uint32_t port, const flumen_batch *batch);     required
 *   flumen_status flumen_finish(void);                                         optional
 *   flumen_status flumen_on_watermark(int64_t watermark);                      optional
 *   flumen_status flumen_save(flumen_buf *out);                                optional
 *   flumen_status flumen_restore(const uint8_t *data, size_t len);             optional
 *
 * (the optional ones have weak defaults that do nothing). Each returns FLUMEN_OK, or the value of
 * flumen_fail(...) / a failed SDK call, which becomes the WIT `error` of that export.
 *
 * `open` parses its config (flumen_config_parse), looks its columns up (flumen_input_column),
 * declares what it reads, what it carries and what it computes (flumen_plan_*), and returns.
 * `process` reads column views (flumen_batch_column), builds computed columns (flumen_builder) and
 * emits them with a selection (flumen_emit), or only keeps rows (flumen_keep).
 *
 * Memory ownership, in one place:
 *  - Views (flumen_col, flumen_str, flumen_bytes from a batch or the context) borrow the SDK's
 *    copy of the call's arguments: valid until the callback returns. Copy what you keep.
 *  - Strings parsed by flumen_config_parse are malloc'd by the SDK and live for the instance.
 *  - Builders own their buffers; flumen_emit takes them over and resets the builders (reuse
 *    them, or call flumen_builder_free for ones never emitted).
 *  - Results of host calls the SDK returns to you (flumen_values, flumen_blob_data,
 *    flumen_tensor_f32) are yours: release them with the matching *_free function (which calls
 *    the generated wit-bindgen `*_free` functions or free()).
 *  - flumen_buf passed to flumen_save is filled by you; the SDK hands it to the host and frees it.
 *
 * No stdio: messages are built with flumen_msg (append strings and numbers), so a component
 * imports nothing from WASI. Error messages from the SDK start with FLUMEN_OPERATOR_NAME ": "
 * (build.sh defines it from plugin.toml's `name`).
 */
#ifndef FLUMEN_H
#define FLUMEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- status and errors */

/* 0: success; anything else: the call failed and the error set by flumen_fail is reported. */
typedef int flumen_status;
#define FLUMEN_OK 0
#define FLUMEN_ERR 1

typedef enum {
    FLUMEN_INVALID_CONFIG = 0,
    FLUMEN_INVALID_INPUT = 1,
    FLUMEN_LIMIT = 2,
    FLUMEN_INTERNAL = 3,
} flumen_error_kind;

/* A message under construction, cut (never overflowing) at 1023 bytes; always NUL-terminated. */
typedef struct {
    char text[1024];
    size_t len;
} flumen_msg;

void flumen_msg_init(flumen_msg *m);
flumen_msg *flumen_msg_str(flumen_msg *m, const char *s);
flumen_msg *flumen_msg_strn(flumen_msg *m, const char *s, size_t len);
flumen_msg *flumen_msg_i64(flumen_msg *m, int64_t v);
flumen_msg *flumen_msg_u64(flumen_msg *m, uint64_t v);

/* Records the error of the current call (the last one wins) and returns FLUMEN_ERR.
 * flumen_fail_msg prefixes nothing; flumen_fail prefixes "<operator name>: ". */
flumen_status flumen_fail(flumen_error_kind kind, const char *message);
flumen_status flumen_fail_msg(flumen_error_kind kind, const flumen_msg *m);
/* Logs `message` at error level (when the log capability is linked in) and aborts the instance:
 * the C way to fail "naturally" (a trap); the failure policy decides what follows. */
_Noreturn void flumen_panic(const char *message);

/* The operator's name, for messages ("filter"); build.sh passes -DFLUMEN_OPERATOR_NAME="...". */
extern const char *const flumen_operator_name;

/* ---------------------------------------------------------------- views */

typedef struct {
    const uint8_t *ptr;
    size_t len;
} flumen_bytes;

/* A UTF-8 string view (not NUL-terminated). */
typedef flumen_bytes flumen_str;

static inline bool flumen_str_eq(flumen_str s, const char *c) {
    size_t n = strlen(c);
    return s.len == n && (n == 0 || memcmp(s.ptr, c, n) == 0);
}

/* The Arrow types the SDK reads and builds (others show as FLUMEN_OTHER). */
typedef enum {
    FLUMEN_OTHER = 0,
    FLUMEN_NULLTYPE,
    FLUMEN_BOOL,
    FLUMEN_INT8,
    FLUMEN_INT16,
    FLUMEN_INT32,
    FLUMEN_INT64,
    FLUMEN_UINT8,
    FLUMEN_UINT16,
    FLUMEN_UINT32,
    FLUMEN_UINT64,
    FLUMEN_FLOAT32,
    FLUMEN_FLOAT64,
    FLUMEN_UTF8,
    FLUMEN_BINARY,
    FLUMEN_FIXED_SIZE_BINARY,
    FLUMEN_STRUCT,
} flumen_type;

/* "int64", "utf8", … for messages. */
const char *flumen_type_name(flumen_type t);

/* One column of a batch: Arrow buffers borrowed from the call's arguments.
 * Row i's validity is bit (validity_offset + i) of `validity` (LSB first; NULL: all valid);
 * its value is element (offset + i) of `values` (fixed width) or, for utf8/binary, bytes
 * [offsets[offset+i], offsets[offset+i+1]) of `values`. A struct's children follow it. */
typedef struct flumen_col {
    flumen_type type;
    int32_t width; /* bytes per value of fixed-size-binary */
    size_t len;
    size_t offset;
    const uint8_t *validity;
    size_t validity_offset;
    const uint8_t *values;
    size_t values_len;
    const uint8_t *offsets; /* utf8/binary: int32 little-endian offsets */
    size_t offsets_len;
    const struct flumen_col *children; /* struct: its child columns, in order */
    uint32_t num_children;
} flumen_col;

static inline bool flumen_is_null(const flumen_col *c, size_t i) {
    if (c->type == FLUMEN_NULLTYPE) return true;
    if (!c->validity) return false;
    size_t b = c->validity_offset + i;
    return ((c->validity[b >> 3] >> (b & 7)) & 1) == 0;
}
static inline bool flumen_is_valid(const flumen_col *c, size_t i) { return !flumen_is_null(c, i); }

/* Values (meaningless, but safe to read, at null rows). Loads go through memcpy: buffers need
 * no alignment. */
static inline int64_t flumen_i64(const flumen_col *c, size_t i) {
    int64_t v; memcpy(&v, c->values + (c->offset + i) * 8, 8); return v;
}
static inline uint64_t flumen_u64(const flumen_col *c, size_t i) {
    uint64_t v; memcpy(&v, c->values + (c->offset + i) * 8, 8); return v;
}
static inline int32_t flumen_i32(const flumen_col *c, size_t i) {
    int32_t v; memcpy(&v, c->values + (c->offset + i) * 4, 4); return v;
}
static inline double flumen_f64(const flumen_col *c, size_t i) {
    double v; memcpy(&v, c->values + (c->offset + i) * 8, 8); return v;
}
static inline float flumen_f32(const flumen_col *c, size_t i) {
    float v; memcpy(&v, c->values + (c->offset + i) * 4, 4); return v;
}
static inline bool flumen_bool(const flumen_col *c, size_t i) {
    size_t b = c->offset + i;
    return ((c->values[b >> 3] >> (b & 7)) & 1) != 0;
}
/* utf8 and binary: the value's bytes, no copy. */
static inline flumen_str flumen_utf8(const flumen_col *c, size_t i) {
    int32_t a, b;
    memcpy(&a, c->offsets + (c->offset + i) * 4, 4);
    memcpy(&b, c->offsets + (c->offset + i + 1) * 4, 4);
    flumen_str s = {c->values + a, (size_t)(b - a)};
    return s;
}
static inline flumen_bytes flumen_binary(const flumen_col *c, size_t i) { return flumen_utf8(c, i); }
/* fixed-size-binary: `width` bytes. */
static inline const uint8_t *flumen_fsb(const flumen_col *c, size_t i) {
    return c->values + (c->offset + i) * (size_t)c->width;
}

/* A `flumen.blob` reference: the four children of a blob column at one row. */
typedef struct {
    const uint8_t *digest; /* 32 bytes */
    uint64_t size;
    flumen_str media_type;
    const uint8_t *token; /* 16 bytes */
} flumen_blob_ref;

/* Row i of a blob column (check flumen_is_null first); struct offsets apply to the children. */
flumen_blob_ref flumen_blob_at(const flumen_col *blob_col, size_t i);

/* A batch handed to flumen_process: holds the columns the plan reads, nothing else. */
typedef struct flumen_batch flumen_batch;
size_t flumen_batch_rows(const flumen_batch *b);
/* The column that was top-level column `input_column` of the port's input schema (the index
 * flumen_input_column returned at open), or NULL when the plan does not read it. */
const flumen_col *flumen_batch_column(const flumen_batch *b, uint32_t input_column);

/* ---------------------------------------------------------------- open: context and plan */

typedef struct flumen_ctx flumen_ctx;

flumen_str flumen_ctx_operator_id(const flumen_ctx *ctx);
uint32_t flumen_ctx_subtask(const flumen_ctx *ctx);
uint32_t flumen_ctx_parallelism(const flumen_ctx *ctx);
flumen_str flumen_ctx_config_json(const flumen_ctx *ctx);
uint32_t flumen_ctx_num_inputs(const flumen_ctx *ctx);
uint32_t flumen_input_num_columns(const flumen_ctx *ctx, uint32_t port);

/* Top-level column `name` of input `port`: its index, or -1. */
int32_t flumen_input_find(const flumen_ctx *ctx, uint32_t port, const char *name);
flumen_type flumen_input_type(const flumen_ctx *ctx, uint32_t port, uint32_t column);
bool flumen_input_is_blob(const flumen_ctx *ctx, uint32_t port, uint32_t column);

/* Looks `name` up in input `port` and checks its type (FLUMEN_OTHER: any type); on success
 * stores its index in *index. Fails with invalid-config naming the column:
 * "<op>: no column `x` in input 0" or "<op>: column `x` must be int64, not utf8". */
flumen_status flumen_input_column(const flumen_ctx *ctx, uint32_t port, const char *name, flumen_type type,
                                  uint32_t *index);
/* The same for a `flumen.blob` column (struct of digest, size, media_type, token). */
flumen_status flumen_input_blob_column(const flumen_ctx *ctx, uint32_t port, const char *name, uint32_t *index);

/* The plan, declared during flumen_open, in one of two ways:
 *
 *  - flumen_plan_shape(ctx, port, reads, n, carry_all): `process` receives only the `n` columns
 *    `reads` of input `port` (any order; NULL: all columns; non-NULL with n = 0: none), and when `carry_all` the output
 *    starts with every input column of that port, carried unchanged, in order;
 *  - then flumen_plan_compute(name, type, nullable) appends a computed output column.
 *
 * Without carried columns every output column is computed and emits may come from any callback. */
flumen_status flumen_plan_shape(const flumen_ctx *ctx, uint32_t port, const uint32_t *reads, size_t n,
                                bool carry_all);
flumen_status flumen_plan_compute(const char *name, flumen_type type, bool nullable);

/* ---------------------------------------------------------------- config */

typedef enum {
    FLUMEN_CFG_STRING, /* out: char ** (malloc'd, NUL-terminated, kept for the instance) */
    FLUMEN_CFG_INT,    /* out: int64_t * (JSON integers only) */
    FLUMEN_CFG_FLOAT,  /* out: double * (integers accepted) */
    FLUMEN_CFG_BOOL,   /* out: bool * */
} flumen_cfg_kind;

typedef struct {
    const char *key;
    flumen_cfg_kind kind;
    void *out;     /* keeps its default when the key is absent */
    bool required; /* absent → invalid config naming the key */
    bool *present; /* optional: set to whether the key was given */
} flumen_cfg_key;

/* Parses the config (a flat JSON object) into `keys`. An unknown key, a value of the wrong
 * kind, a missing required key or malformed JSON fails with invalid-config naming the key. */
flumen_status flumen_config_parse(const flumen_ctx *ctx, const flumen_cfg_key *keys, size_t n);

/* ---------------------------------------------------------------- builders and emit */

typedef struct {
    flumen_type type;
    size_t len;
    size_t null_count;
    uint8_t *validity; /* built lazily: stays NULL while no null was pushed */
    size_t validity_cap;
    uint8_t *values;
    size_t values_len; /* bytes (bool: bytes of the bitmap in use) */
    size_t values_cap;
    int32_t *offsets; /* utf8/binary: len + 1 entries */
    size_t offsets_cap;
} flumen_builder;

/* types: FLUMEN_INT64, FLUMEN_INT32, FLUMEN_FLOAT64, FLUMEN_FLOAT32, FLUMEN_BOOL, FLUMEN_UTF8,
 * FLUMEN_BINARY, FLUMEN_UINT64. `rows`: capacity hint. */
void flumen_builder_init(flumen_builder *b, flumen_type type, size_t rows);
void flumen_builder_free(flumen_builder *b);
void flumen_push_null(flumen_builder *b);
void flumen_push_i64(flumen_builder *b, int64_t v);
void flumen_push_u64(flumen_builder *b, uint64_t v);
void flumen_push_i32(flumen_builder *b, int32_t v);
void flumen_push_f64(flumen_builder *b, double v);
void flumen_push_f32(flumen_builder *b, float v);
void flumen_push_bool(flumen_builder *b, bool v);
void flumen_push_utf8(flumen_builder *b, const void *ptr, size_t len);
/* Appends a utf8/binary value of `len` bytes and returns where to write them (valid until the
 * next push). */
uint8_t *flumen_push_utf8_uninit(flumen_builder *b, size_t len);

/* Which input rows the carried columns take. */
typedef enum { FLUMEN_SELECT_ALL, FLUMEN_SELECT_MASK, FLUMEN_SELECT_INDICES } flumen_selection_kind;
typedef struct {
    flumen_selection_kind kind;
    const uint8_t *mask; /* ceil(rows / 8) bytes, LSB first */
    size_t mask_len;
    const uint32_t *indices;
    size_t num_indices;
} flumen_selection;

static inline flumen_selection flumen_select_all(void) {
    flumen_selection s = {FLUMEN_SELECT_ALL, NULL, 0, NULL, 0};
    return s;
}
static inline flumen_selection flumen_select_mask(const uint8_t *mask, size_t mask_len) {
    flumen_selection s = {FLUMEN_SELECT_MASK, mask, mask_len, NULL, 0};
    return s;
}
static inline flumen_selection flumen_select_indices(const uint32_t *idx, size_t n) {
    flumen_selection s = {FLUMEN_SELECT_INDICES, NULL, 0, idx, n};
    return s;
}

/* A row mask for `rows` rows (bits cleared); free with flumen_mask_free. */
typedef struct {
    uint8_t *bits;
    size_t rows;
    size_t bytes;
    size_t count; /* rows set */
} flumen_mask;
void flumen_mask_init(flumen_mask *m, size_t rows);
static inline void flumen_mask_set(flumen_mask *m, size_t i) {
    uint8_t bit = (uint8_t)(1u << (i & 7));
    if (!(m->bits[i >> 3] & bit)) { m->bits[i >> 3] |= bit; m->count++; }
}
void flumen_mask_free(flumen_mask *m);

/* Emits one output batch: the computed columns `cols` (in the order of flumen_plan_compute,
 * all of the same length) and, when the plan carries columns, the selection of input rows
 * they take. Takes over the builders' buffers and resets them. With no computed columns,
 * pass n = 0 and the number of selected rows in `rows`. */
flumen_status flumen_emit(flumen_builder *cols, size_t n, size_t rows, flumen_selection sel);
/* Keeps the rows set in `mask` (an operator that computes no column, e.g. a filter). */
flumen_status flumen_keep(const flumen_mask *mask);

/* ---------------------------------------------------------------- growable bytes */

typedef struct {
    uint8_t *data;
    size_t len;
    size_t cap;
} flumen_buf;
void flumen_buf_append(flumen_buf *b, const void *data, size_t len);
void flumen_buf_i64(flumen_buf *b, int64_t v); /* little-endian */
void flumen_buf_f64(flumen_buf *b, double v);
void flumen_buf_free(flumen_buf *b);
/* Little-endian readers over a byte range; false when fewer than 8 bytes are left. */
bool flumen_read_i64(const uint8_t **p, const uint8_t *end, int64_t *v);
bool flumen_read_f64(const uint8_t **p, const uint8_t *end, double *v);

/* ---------------------------------------------------------------- log */

typedef enum { FLUMEN_TRACE, FLUMEN_DEBUG, FLUMEN_INFO, FLUMEN_WARN, FLUMEN_ERROR } flumen_level;
/* Imports the `log` capability when used. */
bool flumen_log_enabled(flumen_level level);
void flumen_log(flumen_level level, const char *message);
void flumen_log_msg(flumen_level level, const flumen_msg *m);

/* ---------------------------------------------------------------- state (capability "state") */

/* Key encoding shared by every SDK: a tag byte, then the value. Writes into `out` (capacity
 * 1 + len for strings, 9 for integers) and returns the key's length. */
size_t flumen_key_utf8(const uint8_t *s, size_t len, uint8_t *out);
size_t flumen_key_binary(const uint8_t *s, size_t len, uint8_t *out);
size_t flumen_key_i64(int64_t v, uint8_t out[9]);
size_t flumen_key_bool(bool v, uint8_t out[2]);

/* Values read from the host; values[i].ptr == NULL: no value under key i. */
typedef struct {
    flumen_bytes *values;
    size_t len;
    void *owner_; /* the SDK's record of the host's lists */
} flumen_values;
void flumen_values_free(flumen_values *v);

/* One host call per 65 536 keys (one call for any ordinary batch). */
flumen_status flumen_state_get_many(const char *name, const flumen_bytes *keys, size_t n, flumen_values *out);
flumen_status flumen_state_set_many(const char *name, const flumen_bytes *keys, const flumen_bytes *values,
                                    size_t n);
/* Values as 8-byte little-endian int64; out[i] = 0 and present[i] = false (present may be
 * NULL) when absent. A value of another length is an internal error. */
flumen_status flumen_state_get_many_i64(const char *name, const flumen_bytes *keys, size_t n, int64_t *out,
                                        bool *present);
flumen_status flumen_state_set_many_i64(const char *name, const flumen_bytes *keys, const int64_t *values,
                                        size_t n);

/* Distinct byte keys → dense ids 0, 1, 2 … in first-seen order (e.g. a batch's distinct state
 * keys). Copies the keys. */
typedef struct {
    flumen_bytes *keys; /* by id */
    size_t len;
    uint32_t *slots_; /* open addressing: id + 1, 0 = empty */
    size_t cap_;
    size_t keys_cap_;
} flumen_keyset;
void flumen_keyset_init(flumen_keyset *s);
uint32_t flumen_keyset_add(flumen_keyset *s, const uint8_t *key, size_t len);
/* The id of `key`, or -1. */
int64_t flumen_keyset_find(const flumen_keyset *s, const uint8_t *key, size_t len);
void flumen_keyset_free(flumen_keyset *s);

/* ---------------------------------------------------------------- blobs (capability "blobs") */

/* Reads the whole blob through blobs.read in 64 KiB pieces from offset 0 until a read returns
 * no bytes, calling `chunk` for each piece (borrowed: valid during the call). */
typedef flumen_status (*flumen_chunk_fn)(const uint8_t *data, size_t len, void *user);
flumen_status flumen_blob_read_chunks(const flumen_blob_ref *ref, flumen_chunk_fn chunk, void *user);
/* The same, collected into one malloc'd buffer: free(out->data) (flumen_buf_free). */
flumen_status flumen_blob_read_all(const flumen_blob_ref *ref, flumen_buf *out);

/* ---------------------------------------------------------------- inference (capability "inference") */

typedef uint32_t flumen_model; /* a resource handle; 0 = none */
flumen_status flumen_model_load(const char *name, flumen_model *out);
void flumen_model_drop(flumen_model m);

/* A float32 tensor [rows, cols] (row-major); data is malloc'd: flumen_tensor_f32_free. */
typedef struct {
    float *data;
    size_t rows;
    size_t cols;
} flumen_tensor_f32;
void flumen_tensor_f32_free(flumen_tensor_f32 *t);

/* One call: a single float32 input [rows, cols] → the model's first output, which must be
 * float32 of 2 dimensions (or 1: cols = 1). Errors name the model and the infer-error case. */
flumen_status flumen_infer_f32(flumen_model m, const float *x, size_t rows, size_t cols, flumen_tensor_f32 *out);

/* ---------------------------------------------------------------- callbacks (yours) */

flumen_status flumen_open(const flumen_ctx *ctx);
flumen_status flumen_process(uint32_t port, const flumen_batch *batch);
flumen_status flumen_finish(void);
flumen_status flumen_on_watermark(int64_t watermark);
flumen_status flumen_save(flumen_buf *out);
flumen_status flumen_restore(const uint8_t *data, size_t len);

#ifdef __cplusplus
}
#endif
#endif
