/* Conformance operator `filter` in C: keeps the rows whose int64 `column` is non-null and >= `min`. */
#include "flumen.h"

static char *column;
static int64_t min;
static uint32_t col;

flumen_status flumen_open(const flumen_ctx *ctx) {
    flumen_cfg_key keys[] = {
        {"column", FLUMEN_CFG_STRING, &column, true, NULL},
        {"min", FLUMEN_CFG_INT, &min, true, NULL},
    };
    if (flumen_config_parse(ctx, keys, 2)) return FLUMEN_ERR;
    if (flumen_input_column(ctx, 0, column, FLUMEN_INT64, &col)) return FLUMEN_ERR;
    return flumen_plan_shape(ctx, 0, &col, 1, true); /* reads `column`, carries everything */
}

flumen_status flumen_process(uint32_t port, const flumen_batch *batch) {
    (void)port;
    const flumen_col *c = flumen_batch_column(batch, col);
    size_t rows = flumen_batch_rows(batch);
    flumen_mask keep;
    flumen_mask_init(&keep, rows);
    for (size_t i = 0; i < rows; i++)
        if (flumen_is_valid(c, i) && flumen_i64(c, i) >= min) flumen_mask_set(&keep, i);
    flumen_status st = flumen_keep(&keep);
    flumen_mask_free(&keep);
    return st;
}
