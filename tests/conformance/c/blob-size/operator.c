/* Conformance operator `blob-size` in C: reads each referenced blob in 64 KiB pieces; `bytes` and byte `sum`. */
#include "flumen.h"

static char *column = "blob";
static uint32_t col;

flumen_status flumen_open(const flumen_ctx *ctx) {
    flumen_cfg_key keys[] = {{"column", FLUMEN_CFG_STRING, &column, false, NULL}};
    if (flumen_config_parse(ctx, keys, 1)) return FLUMEN_ERR;
    if (flumen_input_blob_column(ctx, 0, column, &col)) return FLUMEN_ERR;
    if (flumen_plan_shape(ctx, 0, &col, 1, true)) return FLUMEN_ERR;
    if (flumen_plan_compute("bytes", FLUMEN_INT64, true)) return FLUMEN_ERR;
    return flumen_plan_compute("sum", FLUMEN_INT64, true);
}

typedef struct {
    int64_t bytes, sum;
} totals;

static flumen_status add_chunk(const uint8_t *data, size_t len, void *user) {
    totals *t = user;
    t->bytes += (int64_t)len;
    for (size_t i = 0; i < len; i++) t->sum += data[i];
    return FLUMEN_OK;
}

flumen_status flumen_process(uint32_t port, const flumen_batch *batch) {
    (void)port;
    const flumen_col *blobs = flumen_batch_column(batch, col);
    size_t rows = flumen_batch_rows(batch);
    flumen_builder out[2];
    flumen_builder_init(&out[0], FLUMEN_INT64, rows);
    flumen_builder_init(&out[1], FLUMEN_INT64, rows);
    for (size_t i = 0; i < rows; i++) {
        if (flumen_is_null(blobs, i)) {
            flumen_push_null(&out[0]);
            flumen_push_null(&out[1]);
            continue;
        }
        flumen_blob_ref ref = flumen_blob_at(blobs, i);
        totals t = {0, 0};
        if (flumen_blob_read_chunks(&ref, add_chunk, &t)) {
            flumen_builder_free(&out[0]);
            flumen_builder_free(&out[1]);
            return FLUMEN_ERR;
        }
        flumen_push_i64(&out[0], t.bytes);
        flumen_push_i64(&out[1], t.sum);
    }
    return flumen_emit(out, 2, rows, flumen_select_all());
}
