/* Polyglot example, step 3 (C): `fingerprint`, the 64-bit FNV-1a hash of the clean text
 * (as a signed int64): equal reviews get equal fingerprints, at C speed. */
#include "flumen.h"

static uint32_t clean_col;

flumen_status flumen_open(const flumen_ctx *ctx) {
    if (flumen_input_column(ctx, 0, "clean", FLUMEN_UTF8, &clean_col)) return FLUMEN_ERR;
    if (flumen_plan_shape(ctx, 0, &clean_col, 1, true)) return FLUMEN_ERR;
    return flumen_plan_compute("fingerprint", FLUMEN_INT64, false);
}

flumen_status flumen_process(uint32_t port, const flumen_batch *batch) {
    (void)port;
    const flumen_col *clean = flumen_batch_column(batch, clean_col);
    size_t rows = flumen_batch_rows(batch);
    flumen_builder out;
    flumen_builder_init(&out, FLUMEN_INT64, rows);
    for (size_t i = 0; i < rows; i++) {
        flumen_str s = flumen_utf8(clean, i);
        uint64_t h = 0xcbf29ce484222325ull;
        for (size_t k = 0; k < s.len; k++) h = (h ^ (uint8_t)s.ptr[k]) * 0x100000001b3ull;
        flumen_push_i64(&out, (int64_t)h);
    }
    return flumen_emit(&out, 1, rows, flumen_select_all());
}
