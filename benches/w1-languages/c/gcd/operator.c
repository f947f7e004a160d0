/* W1 per language: g = gcd(a, b) over two int32 columns in C (Stein's binary GCD; nulls propagate). */
#include "flumen.h"

static uint32_t a_col, b_col;

static uint32_t gcd_u32(uint32_t a, uint32_t b) {
    if (a == 0) return b;
    if (b == 0) return a;
    int shift = __builtin_ctz(a | b);
    a >>= __builtin_ctz(a);
    for (;;) {
        b >>= __builtin_ctz(b);
        if (a > b) {
            uint32_t t = a;
            a = b;
            b = t;
        }
        b -= a;
        if (b == 0) return a << shift;
    }
}

static uint32_t uabs(int32_t v) { return v < 0 ? 0u - (uint32_t)v : (uint32_t)v; }

flumen_status flumen_open(const flumen_ctx *ctx) {
    if (flumen_input_column(ctx, 0, "a", FLUMEN_INT32, &a_col) ||
        flumen_input_column(ctx, 0, "b", FLUMEN_INT32, &b_col))
        return FLUMEN_ERR;
    uint32_t reads[] = {a_col, b_col};
    if (flumen_plan_shape(ctx, 0, reads, 2, true)) return FLUMEN_ERR;
    return flumen_plan_compute("g", FLUMEN_INT32, true);
}

flumen_status flumen_process(uint32_t port, const flumen_batch *batch) {
    (void)port;
    const flumen_col *a = flumen_batch_column(batch, a_col);
    const flumen_col *b = flumen_batch_column(batch, b_col);
    size_t rows = flumen_batch_rows(batch);
    flumen_builder g;
    flumen_builder_init(&g, FLUMEN_INT32, rows);
    if (!a->validity && !b->validity) {
        for (size_t i = 0; i < rows; i++) flumen_push_i32(&g, (int32_t)gcd_u32(uabs(flumen_i32(a, i)), uabs(flumen_i32(b, i))));
    } else {
        for (size_t i = 0; i < rows; i++) {
            if (flumen_is_null(a, i) || flumen_is_null(b, i)) flumen_push_null(&g);
            else flumen_push_i32(&g, (int32_t)gcd_u32(uabs(flumen_i32(a, i)), uabs(flumen_i32(b, i))));
        }
    }
    return flumen_emit(&g, 1, rows, flumen_select_all());
}
