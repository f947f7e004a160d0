/* Conformance operator `window` in C: event-time tumbling windows per key, emitted at the watermark. */
#include <stdlib.h>

#include "flumen.h"

static int64_t size_ms = 1000;
static uint32_t key_col, ts_col, amount_col;

/* The open windows; `ids` maps (start, key) to an index into `wins`. */
typedef struct {
    int64_t start;
    flumen_bytes key; /* owned */
    int64_t count;
    double sum;
} window;
static window *wins;
static size_t nwins, capwins;
static flumen_keyset ids;
static int64_t last_wm = INT64_MIN;

flumen_status flumen_open(const flumen_ctx *ctx) {
    flumen_cfg_key keys[] = {{"size_ms", FLUMEN_CFG_INT, &size_ms, false, NULL}};
    if (flumen_config_parse(ctx, keys, 1)) return FLUMEN_ERR;
    if (size_ms <= 0) return flumen_fail(FLUMEN_INVALID_CONFIG, "config key `size_ms` must be an integer > 0");
    if (flumen_input_column(ctx, 0, "key", FLUMEN_UTF8, &key_col) ||
        flumen_input_column(ctx, 0, "ts", FLUMEN_INT64, &ts_col) ||
        flumen_input_column(ctx, 0, "amount", FLUMEN_FLOAT64, &amount_col))
        return FLUMEN_ERR;
    uint32_t reads[] = {key_col, ts_col, amount_col};
    if (flumen_plan_shape(ctx, 0, reads, 3, false)) return FLUMEN_ERR; /* carries nothing */
    if (flumen_plan_compute("key", FLUMEN_UTF8, false) || flumen_plan_compute("window_start", FLUMEN_INT64, false) ||
        flumen_plan_compute("count", FLUMEN_INT64, false) || flumen_plan_compute("sum", FLUMEN_FLOAT64, false))
        return FLUMEN_ERR;
    flumen_keyset_init(&ids);
    return FLUMEN_OK;
}

/* The window (start, key), made empty if new. */
static window *window_of(int64_t start, const uint8_t *key, size_t len) {
    flumen_buf id = {0};
    flumen_buf_i64(&id, start);
    flumen_buf_append(&id, key, len);
    uint32_t at = flumen_keyset_add(&ids, id.data, id.len);
    flumen_buf_free(&id);
    if (at == nwins) {
        if (nwins == capwins) {
            capwins = capwins ? capwins * 2 : 64;
            wins = realloc(wins, capwins * sizeof *wins);
            if (!wins) abort();
        }
        uint8_t *copy = malloc(len ? len : 1);
        if (!copy) abort();
        if (len) memcpy(copy, key, len);
        wins[nwins++] = (window){start, {copy, len}, 0, 0.0};
    }
    return &wins[at];
}

static int64_t floor_start(int64_t ts) {
    int64_t q = ts / size_ms;
    if (ts % size_ms != 0 && ts < 0) q--;
    return q * size_ms;
}

/* Whether the window starting at `start` ends at or before watermark `w`. */
static bool closed_by(int64_t start, int64_t w) {
    int64_t end;
    if (__builtin_add_overflow(start, size_ms, &end)) return false;
    return end <= w;
}

flumen_status flumen_process(uint32_t port, const flumen_batch *batch) {
    (void)port;
    const flumen_col *key = flumen_batch_column(batch, key_col);
    const flumen_col *ts = flumen_batch_column(batch, ts_col);
    const flumen_col *amount = flumen_batch_column(batch, amount_col);
    size_t rows = flumen_batch_rows(batch);
    for (size_t i = 0; i < rows; i++) {
        int64_t start = floor_start(flumen_i64(ts, i));
        if (last_wm != INT64_MIN && closed_by(start, last_wm)) continue; /* late */
        flumen_str k = flumen_utf8(key, i);
        window *w = window_of(start, k.ptr, k.len);
        w->count++;
        if (flumen_is_valid(amount, i)) w->sum += flumen_f64(amount, i);
    }
    return FLUMEN_OK;
}

static int by_start_then_key(const void *a, const void *b) {
    const window *x = a, *y = b;
    if (x->start != y->start) return x->start < y->start ? -1 : 1;
    size_t n = x->key.len < y->key.len ? x->key.len : y->key.len;
    int c = n ? memcmp(x->key.ptr, y->key.ptr, n) : 0;
    if (c) return c;
    return x->key.len < y->key.len ? -1 : x->key.len > y->key.len;
}

/* Rebuilds the id map after windows were removed. */
static void reindex(void) {
    flumen_keyset_free(&ids);
    flumen_keyset_init(&ids);
    flumen_buf id = {0};
    for (size_t i = 0; i < nwins; i++) {
        id.len = 0;
        flumen_buf_i64(&id, wins[i].start);
        flumen_buf_append(&id, wins[i].key.ptr, wins[i].key.len);
        flumen_keyset_add(&ids, id.data, id.len);
    }
    flumen_buf_free(&id);
}

flumen_status flumen_on_watermark(int64_t w) {
    if (w > last_wm) last_wm = w;
    size_t ndone = 0;
    for (size_t i = 0; i < nwins; i++) ndone += closed_by(wins[i].start, w);
    if (ndone == 0) return FLUMEN_OK;
    window *done = malloc(ndone * sizeof *done);
    size_t d = 0, kept = 0;
    for (size_t i = 0; i < nwins; i++) {
        if (closed_by(wins[i].start, w)) done[d++] = wins[i];
        else wins[kept++] = wins[i];
    }
    nwins = kept;
    reindex();
    qsort(done, ndone, sizeof *done, by_start_then_key);
    flumen_builder out[4];
    flumen_builder_init(&out[0], FLUMEN_UTF8, ndone);
    flumen_builder_init(&out[1], FLUMEN_INT64, ndone);
    flumen_builder_init(&out[2], FLUMEN_INT64, ndone);
    flumen_builder_init(&out[3], FLUMEN_FLOAT64, ndone);
    for (size_t i = 0; i < ndone; i++) {
        flumen_push_utf8(&out[0], done[i].key.ptr, done[i].key.len);
        flumen_push_i64(&out[1], done[i].start);
        flumen_push_i64(&out[2], done[i].count);
        flumen_push_f64(&out[3], done[i].sum);
        free((void *)done[i].key.ptr);
    }
    free(done);
    return flumen_emit(out, 4, ndone, flumen_select_all());
}

/* Snapshot: last watermark, window count, then per window start, count, sum, key length, key. */
flumen_status flumen_save(flumen_buf *out) {
    flumen_buf_i64(out, last_wm);
    flumen_buf_i64(out, (int64_t)nwins);
    for (size_t i = 0; i < nwins; i++) {
        flumen_buf_i64(out, wins[i].start);
        flumen_buf_i64(out, wins[i].count);
        flumen_buf_f64(out, wins[i].sum);
        flumen_buf_i64(out, (int64_t)wins[i].key.len);
        flumen_buf_append(out, wins[i].key.ptr, wins[i].key.len);
    }
    return FLUMEN_OK;
}

flumen_status flumen_restore(const uint8_t *data, size_t len) {
    const uint8_t *p = data, *end = data + len;
    int64_t wm, n;
    if (!flumen_read_i64(&p, end, &wm) || !flumen_read_i64(&p, end, &n) || n < 0)
        return flumen_fail(FLUMEN_INTERNAL, "malformed snapshot");
    last_wm = wm;
    for (int64_t i = 0; i < n; i++) {
        int64_t start, count, klen;
        double sum;
        if (!flumen_read_i64(&p, end, &start) || !flumen_read_i64(&p, end, &count) ||
            !flumen_read_f64(&p, end, &sum) || !flumen_read_i64(&p, end, &klen) || klen < 0 || klen > end - p)
            return flumen_fail(FLUMEN_INTERNAL, "malformed snapshot");
        window *w = window_of(start, p, (size_t)klen);
        w->count = count;
        w->sum = sum;
        p += klen;
    }
    return FLUMEN_OK;
}
