/* Conformance operator `infer` in C: one float32 inference call per batch; `best` class and its `score`. */
#include <stdlib.h>

#include "flumen.h"

static char *model_name = "mlp";
static flumen_model model;
static uint32_t id_col, qty_col, amount_col;

flumen_status flumen_open(const flumen_ctx *ctx) {
    flumen_cfg_key keys[] = {{"model", FLUMEN_CFG_STRING, &model_name, false, NULL}};
    if (flumen_config_parse(ctx, keys, 1)) return FLUMEN_ERR;
    if (flumen_input_column(ctx, 0, "id", FLUMEN_INT64, &id_col) ||
        flumen_input_column(ctx, 0, "qty", FLUMEN_INT64, &qty_col) ||
        flumen_input_column(ctx, 0, "amount", FLUMEN_FLOAT64, &amount_col))
        return FLUMEN_ERR;
    uint32_t reads[] = {id_col, qty_col, amount_col};
    if (flumen_plan_shape(ctx, 0, reads, 3, true)) return FLUMEN_ERR;
    if (flumen_plan_compute("best", FLUMEN_INT64, false) || flumen_plan_compute("score", FLUMEN_FLOAT32, false))
        return FLUMEN_ERR;
    return flumen_model_load(model_name, &model);
}

flumen_status flumen_process(uint32_t port, const flumen_batch *batch) {
    (void)port;
    const flumen_col *id = flumen_batch_column(batch, id_col);
    const flumen_col *qty = flumen_batch_column(batch, qty_col);
    const flumen_col *amount = flumen_batch_column(batch, amount_col);
    size_t rows = flumen_batch_rows(batch);
    if (rows == 0) return FLUMEN_OK;
    float *x = malloc(rows * 4 * sizeof *x);
    for (size_t i = 0; i < rows; i++) {
        x[i * 4 + 0] = (float)flumen_i64(id, i); /* int64 → float32, round to nearest */
        x[i * 4 + 1] = flumen_is_null(qty, i) ? 0.0f : (float)flumen_i64(qty, i);
        x[i * 4 + 2] = flumen_is_null(amount, i) ? 0.0f : (float)flumen_f64(amount, i);
        x[i * 4 + 3] = 1.0f;
    }
    flumen_tensor_f32 y;
    flumen_status st = flumen_infer_f32(model, x, rows, 4, &y);
    free(x);
    if (st) return st;
    if (y.rows != rows || y.cols != 3) {
        flumen_tensor_f32_free(&y);
        return flumen_fail(FLUMEN_INTERNAL, "the model's output is not [rows, 3]");
    }
    flumen_builder out[2];
    flumen_builder_init(&out[0], FLUMEN_INT64, rows);
    flumen_builder_init(&out[1], FLUMEN_FLOAT32, rows);
    for (size_t i = 0; i < rows; i++) {
        const float *row = y.data + i * 3;
        size_t best = 0;
        for (size_t k = 1; k < 3; k++)
            if (row[k] > row[best]) best = k; /* the first on ties */
        flumen_push_i64(&out[0], (int64_t)best);
        flumen_push_f32(&out[1], row[best]);
    }
    flumen_tensor_f32_free(&y);
    return flumen_emit(out, 2, rows, flumen_select_all());
}
