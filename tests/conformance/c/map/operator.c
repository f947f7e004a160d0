/* Conformance operator `map` in C: out = amount * qty (float64, null if either is null); aborts on `fail_on_id`. */
#include <stdlib.h>

#include "flumen.h"

static char *out_name = "total";
static int64_t fail_on_id;
static bool fail_set;
static uint32_t id_col, qty_col, amount_col;

flumen_status flumen_open(const flumen_ctx *ctx) {
    flumen_cfg_key keys[] = {
        {"out", FLUMEN_CFG_STRING, &out_name, false, NULL},
        {"fail_on_id", FLUMEN_CFG_INT, &fail_on_id, false, &fail_set},
    };
    if (flumen_config_parse(ctx, keys, 2)) return FLUMEN_ERR;
    if (flumen_input_column(ctx, 0, "id", FLUMEN_INT64, &id_col) ||
        flumen_input_column(ctx, 0, "qty", FLUMEN_INT64, &qty_col) ||
        flumen_input_column(ctx, 0, "amount", FLUMEN_FLOAT64, &amount_col))
        return FLUMEN_ERR;
    uint32_t reads[] = {id_col, qty_col, amount_col};
    if (flumen_plan_shape(ctx, 0, reads, 3, true)) return FLUMEN_ERR;
    return flumen_plan_compute(out_name, FLUMEN_FLOAT64, true);
}

flumen_status flumen_process(uint32_t port, const flumen_batch *batch) {
    (void)port;
    const flumen_col *id = flumen_batch_column(batch, id_col);
    const flumen_col *qty = flumen_batch_column(batch, qty_col);
    const flumen_col *amount = flumen_batch_column(batch, amount_col);
    size_t rows = flumen_batch_rows(batch);
    if (fail_set) {
        for (size_t i = 0; i < rows; i++) {
            if (flumen_is_valid(id, i) && flumen_i64(id, i) == fail_on_id) {
                flumen_msg m;
                flumen_msg_init(&m);
                flumen_msg_i64(flumen_msg_str(&m, "map: failing on id "), fail_on_id);
                flumen_panic(m.text); /* logs the message, then abort() */
            }
        }
    }
    flumen_builder out;
    flumen_builder_init(&out, FLUMEN_FLOAT64, rows);
    for (size_t i = 0; i < rows; i++) {
        if (flumen_is_null(qty, i) || flumen_is_null(amount, i)) flumen_push_null(&out);
        else flumen_push_f64(&out, flumen_f64(amount, i) * (double)flumen_i64(qty, i));
    }
    return flumen_emit(&out, 1, rows, flumen_select_all());
}
