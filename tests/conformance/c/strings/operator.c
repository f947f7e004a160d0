/* Conformance operator `strings` in C: `upper` (ASCII upper case) and `chars` (code points) of a utf8 column. */
#include "flumen.h"

static char *column = "text";
static uint32_t col;

flumen_status flumen_open(const flumen_ctx *ctx) {
    flumen_cfg_key keys[] = {{"column", FLUMEN_CFG_STRING, &column, false, NULL}};
    if (flumen_config_parse(ctx, keys, 1)) return FLUMEN_ERR;
    if (flumen_input_column(ctx, 0, column, FLUMEN_UTF8, &col)) return FLUMEN_ERR;
    if (flumen_plan_shape(ctx, 0, &col, 1, true)) return FLUMEN_ERR;
    if (flumen_plan_compute("upper", FLUMEN_UTF8, true)) return FLUMEN_ERR;
    return flumen_plan_compute("chars", FLUMEN_INT64, true);
}

flumen_status flumen_process(uint32_t port, const flumen_batch *batch) {
    (void)port;
    const flumen_col *text = flumen_batch_column(batch, col);
    size_t rows = flumen_batch_rows(batch);
    flumen_builder out[2];
    flumen_builder_init(&out[0], FLUMEN_UTF8, rows);
    flumen_builder_init(&out[1], FLUMEN_INT64, rows);
    for (size_t i = 0; i < rows; i++) {
        if (flumen_is_null(text, i)) {
            flumen_push_null(&out[0]);
            flumen_push_null(&out[1]);
            continue;
        }
        flumen_str s = flumen_utf8(text, i);
        uint8_t *up = flumen_push_utf8_uninit(&out[0], s.len);
        int64_t chars = 0;
        for (size_t k = 0; k < s.len; k++) {
            uint8_t c = s.ptr[k];
            up[k] = (c >= 'a' && c <= 'z') ? (uint8_t)(c - 'a' + 'A') : c;
            chars += (c & 0xc0) != 0x80; /* count every byte that starts a code point */
        }
        flumen_push_i64(&out[1], chars);
    }
    return flumen_emit(out, 2, rows, flumen_select_all());
}
