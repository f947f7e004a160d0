/* Conformance operator `count` in C: a keyed running count kept in the host's value state `count`. */
#include <stdlib.h>

#include "flumen.h"

static char *key_name = "key";
static uint32_t key_col;

flumen_status flumen_open(const flumen_ctx *ctx) {
    flumen_cfg_key keys[] = {{"key", FLUMEN_CFG_STRING, &key_name, false, NULL}};
    if (flumen_config_parse(ctx, keys, 1)) return FLUMEN_ERR;
    if (flumen_input_column(ctx, 0, key_name, FLUMEN_UTF8, &key_col)) return FLUMEN_ERR;
    if (flumen_plan_shape(ctx, 0, &key_col, 1, true)) return FLUMEN_ERR;
    return flumen_plan_compute("count", FLUMEN_INT64, false);
}

flumen_status flumen_process(uint32_t port, const flumen_batch *batch) {
    (void)port;
    const flumen_col *key = flumen_batch_column(batch, key_col);
    size_t rows = flumen_batch_rows(batch);
    if (rows == 0) return FLUMEN_OK;
    /* The batch's distinct keys, in the shared key encoding, and each row's key id. */
    flumen_keyset distinct;
    flumen_keyset_init(&distinct);
    uint32_t *row_key = malloc(rows * sizeof *row_key);
    flumen_buf enc = {0};
    for (size_t i = 0; i < rows; i++) {
        enc.len = 0;
        if (flumen_is_null(key, i)) {
            flumen_buf_append(&enc, "\0", 1);
        } else {
            flumen_str s = flumen_utf8(key, i);
            flumen_buf_append(&enc, "\x04", 1);
            flumen_buf_append(&enc, s.ptr, s.len);
        }
        row_key[i] = flumen_keyset_add(&distinct, enc.data, enc.len);
    }
    flumen_buf_free(&enc);
    int64_t *counts = malloc(distinct.len * sizeof *counts);
    flumen_builder out;
    flumen_builder_init(&out, FLUMEN_INT64, rows);
    flumen_status st = flumen_state_get_many_i64("count", distinct.keys, distinct.len, counts, NULL);
    if (st == FLUMEN_OK) {
        for (size_t i = 0; i < rows; i++) flumen_push_i64(&out, ++counts[row_key[i]]);
        st = flumen_state_set_many_i64("count", distinct.keys, counts, distinct.len);
    }
    if (st == FLUMEN_OK) st = flumen_emit(&out, 1, rows, flumen_select_all());
    flumen_builder_free(&out);
    free(counts);
    free(row_key);
    flumen_keyset_free(&distinct);
    return st;
}
