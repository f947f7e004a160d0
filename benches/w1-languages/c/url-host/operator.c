/* W1 per language: host = the host of an http(s) URL (utf8), in C, by a pointer scan of each value. */
#include "flumen.h"

static uint32_t url_col;

static int lower(int c) { return (c >= 'A' && c <= 'Z') ? c + 32 : c; }

flumen_status flumen_open(const flumen_ctx *ctx) {
    if (flumen_input_column(ctx, 0, "url", FLUMEN_UTF8, &url_col)) return FLUMEN_ERR;
    if (flumen_plan_shape(ctx, 0, &url_col, 1, true)) return FLUMEN_ERR;
    return flumen_plan_compute("host", FLUMEN_UTF8, true);
}

/* The host of `p[0..n)` as [*hs, *he), or false: after `http://` or `https://` (ASCII
 * case-insensitive), up to the first `/ ? #`, less `user@` and `:port` (a bracketed IPv6 host
 * keeps its brackets). */
static bool url_host(const uint8_t *p, size_t n, const uint8_t **hs, const uint8_t **he) {
    const uint8_t *e = p + n;
    if (n < 7 || lower(p[0]) != 'h' || lower(p[1]) != 't' || lower(p[2]) != 't' || lower(p[3]) != 'p') return false;
    const uint8_t *k = p + 4;
    if (lower(*k) == 's') k++;
    if (e - k < 3 || k[0] != ':' || k[1] != '/' || k[2] != '/') return false;
    const uint8_t *start = k + 3, *end = start, *host = start;
    for (; end < e; end++) {
        uint8_t c = *end;
        if (c == '/' || c == '?' || c == '#') break;
        if (c == '@') host = end + 1;
    }
    const uint8_t *stop = host;
    if (host < end && *host == '[') {
        while (stop < end && *stop != ']') stop++;
        if (stop == end) return false;
        stop++;
    } else {
        while (stop < end && *stop != ':') stop++;
    }
    if (stop == host) return false;
    *hs = host;
    *he = stop;
    return true;
}

flumen_status flumen_process(uint32_t port, const flumen_batch *batch) {
    (void)port;
    const flumen_col *url = flumen_batch_column(batch, url_col);
    size_t rows = flumen_batch_rows(batch);
    flumen_builder out;
    flumen_builder_init(&out, FLUMEN_UTF8, rows);
    for (size_t i = 0; i < rows; i++) {
        const uint8_t *hs, *he;
        if (flumen_is_null(url, i)) {
            flumen_push_null(&out);
            continue;
        }
        flumen_str s = flumen_utf8(url, i);
        if (url_host(s.ptr, s.len, &hs, &he)) flumen_push_utf8(&out, hs, (size_t)(he - hs));
        else flumen_push_null(&out);
    }
    return flumen_emit(&out, 1, rows, flumen_select_all());
}
