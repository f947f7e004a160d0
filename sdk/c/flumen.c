/* flumen.c — Flumen's C SDK: implements the component's exports (transform, snapshot, event-time) over
 * the bindings wit-bindgen generated in gen/, and the helpers flumen.h declares. */

#include <stdlib.h>
#include <string.h>

#include "flumen.h"
#include "operator.h"

#ifndef FLUMEN_OPERATOR_NAME
#define FLUMEN_OPERATOR_NAME "operator"
#endif
const char *const flumen_operator_name = FLUMEN_OPERATOR_NAME;


/* ---------------------------------------------------------------- allocation */

static void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) abort();
    return q;
}

static size_t grow_cap(size_t cap, size_t need) {
    size_t c = cap ? cap : 64;
    while (c < need) c *= 2;
    return c;
}

/* ---------------------------------------------------------------- messages */

void flumen_msg_init(flumen_msg *m) {
    m->len = 0;
    m->text[0] = 0;
}

flumen_msg *flumen_msg_strn(flumen_msg *m, const char *s, size_t len) {
    size_t room = sizeof m->text - 1 - m->len;
    if (len > room) len = room;
    memcpy(m->text + m->len, s, len);
    m->len += len;
    m->text[m->len] = 0;
    return m;
}

flumen_msg *flumen_msg_str(flumen_msg *m, const char *s) { return flumen_msg_strn(m, s, strlen(s)); }

flumen_msg *flumen_msg_u64(flumen_msg *m, uint64_t v) {
    char d[24];
    size_t n = 0;
    do {
        d[sizeof d - 1 - n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return flumen_msg_strn(m, d + sizeof d - n, n);
}

flumen_msg *flumen_msg_i64(flumen_msg *m, int64_t v) {
    if (v < 0) {
        flumen_msg_strn(m, "-", 1);
        return flumen_msg_u64(m, (uint64_t)0 - (uint64_t)v);
    }
    return flumen_msg_u64(m, (uint64_t)v);
}

/* "<operator name>: " */
static void msg_prefix(flumen_msg *m) {
    flumen_msg_init(m);
    flumen_msg_str(m, flumen_operator_name);
    flumen_msg_str(m, ": ");
}

/* ---------------------------------------------------------------- growable bytes */

void flumen_buf_append(flumen_buf *b, const void *data, size_t len) {
    if (b->len + len > b->cap) {
        b->cap = grow_cap(b->cap, b->len + len);
        b->data = xrealloc(b->data, b->cap);
    }
    if (len) memcpy(b->data + b->len, data, len);
    b->len += len;
}

void flumen_buf_i64(flumen_buf *b, int64_t v) {
    uint8_t le[8];
    for (int i = 0; i < 8; i++) le[i] = (uint8_t)((uint64_t)v >> (8 * i));
    flumen_buf_append(b, le, 8);
}

void flumen_buf_f64(flumen_buf *b, double v) {
    int64_t bits;
    memcpy(&bits, &v, 8);
    flumen_buf_i64(b, bits);
}

void flumen_buf_free(flumen_buf *b) {
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

bool flumen_read_i64(const uint8_t **p, const uint8_t *end, int64_t *v) {
    if (end - *p < 8) return false;
    uint64_t u = 0;
    for (int i = 0; i < 8; i++) u |= (uint64_t)(*p)[i] << (8 * i);
    *v = (int64_t)u;
    *p += 8;
    return true;
}

bool flumen_read_f64(const uint8_t **p, const uint8_t *end, double *v) {
    int64_t bits;
    if (!flumen_read_i64(p, end, &bits)) return false;
    memcpy(v, &bits, 8);
    return true;
}

/* ---------------------------------------------------------------- masks */

void flumen_mask_init(flumen_mask *m, size_t rows) {
    m->rows = rows;
    m->bytes = (rows + 7) / 8;
    m->bits = calloc(m->bytes ? m->bytes : 1, 1);
    if (!m->bits) abort();
    m->count = 0;
}

void flumen_mask_free(flumen_mask *m) {
    free(m->bits);
    m->bits = NULL;
    m->rows = m->bytes = m->count = 0;
}

/* ---------------------------------------------------------------- builders */

static size_t builder_width(flumen_type t) {
    switch (t) {
    case FLUMEN_INT64: case FLUMEN_UINT64: case FLUMEN_FLOAT64: return 8;
    case FLUMEN_INT32: case FLUMEN_UINT32: case FLUMEN_FLOAT32: return 4;
    case FLUMEN_INT16: case FLUMEN_UINT16: return 2;
    case FLUMEN_INT8: case FLUMEN_UINT8: return 1;
    default: return 0; /* bool, utf8, binary */
    }
}

static bool builder_is_var(flumen_type t) { return t == FLUMEN_UTF8 || t == FLUMEN_BINARY; }

static void builder_reserve_values(flumen_builder *b, size_t need) {
    if (need > b->values_cap) {
        b->values_cap = grow_cap(b->values_cap, need);
        b->values = xrealloc(b->values, b->values_cap);
    }
}

void flumen_builder_init(flumen_builder *b, flumen_type type, size_t rows) {
    memset(b, 0, sizeof *b);
    b->type = type;
    size_t w = builder_width(type);
    if (w) builder_reserve_values(b, rows * w);
    if (builder_is_var(type)) {
        b->offsets_cap = rows + 1 > 16 ? rows + 1 : 16;
        b->offsets = xrealloc(NULL, b->offsets_cap * 4);
        b->offsets[0] = 0;
        builder_reserve_values(b, rows * 8);
    }
}

void flumen_builder_free(flumen_builder *b) {
    free(b->validity);
    free(b->values);
    free(b->offsets);
    flumen_type t = b->type;
    memset(b, 0, sizeof *b);
    b->type = t;
}

/* Marks row b->len valid or not, before len grows. */
static void builder_mark(flumen_builder *b, bool valid) {
    size_t i = b->len;
    if (!valid && !b->validity) {
        /* First null: every earlier row was valid. */
        b->validity_cap = grow_cap(0, i / 8 + 1);
        b->validity = xrealloc(NULL, b->validity_cap);
        memset(b->validity, 0xff, b->validity_cap);
    }
    if (b->validity) {
        if (i / 8 + 1 > b->validity_cap) {
            size_t old = b->validity_cap;
            b->validity_cap = grow_cap(old, i / 8 + 1);
            b->validity = xrealloc(b->validity, b->validity_cap);
            memset(b->validity + old, 0xff, b->validity_cap - old);
        }
        if (!valid) {
            b->validity[i >> 3] &= (uint8_t)~(1u << (i & 7));
            b->null_count++;
        }
    }
}

static void builder_push_fixed(flumen_builder *b, const void *v, size_t w) {
    builder_mark(b, true);
    builder_reserve_values(b, b->values_len + w);
    memcpy(b->values + b->values_len, v, w);
    b->values_len += w;
    b->len++;
}

static void builder_push_offset(flumen_builder *b) {
    if (b->len + 2 > b->offsets_cap) {
        b->offsets_cap = grow_cap(b->offsets_cap, b->len + 2);
        b->offsets = xrealloc(b->offsets, b->offsets_cap * 4);
    }
    b->offsets[b->len + 1] = (int32_t)b->values_len;
}

static void builder_push_bit(flumen_builder *b, bool v) {
    size_t i = b->len;
    builder_reserve_values(b, i / 8 + 1);
    if ((i & 7) == 0) b->values[i >> 3] = 0;
    if (v) b->values[i >> 3] |= (uint8_t)(1u << (i & 7));
    b->values_len = i / 8 + 1;
}

void flumen_push_null(flumen_builder *b) {
    builder_mark(b, false);
    size_t w = builder_width(b->type);
    if (w) {
        builder_reserve_values(b, b->values_len + w);
        memset(b->values + b->values_len, 0, w);
        b->values_len += w;
    } else if (builder_is_var(b->type)) {
        builder_push_offset(b);
    } else if (b->type == FLUMEN_BOOL) {
        builder_push_bit(b, false);
    }
    b->len++;
}

void flumen_push_i64(flumen_builder *b, int64_t v) { builder_push_fixed(b, &v, 8); }
void flumen_push_u64(flumen_builder *b, uint64_t v) { builder_push_fixed(b, &v, 8); }
void flumen_push_i32(flumen_builder *b, int32_t v) { builder_push_fixed(b, &v, 4); }
void flumen_push_f64(flumen_builder *b, double v) { builder_push_fixed(b, &v, 8); }
void flumen_push_f32(flumen_builder *b, float v) { builder_push_fixed(b, &v, 4); }

void flumen_push_bool(flumen_builder *b, bool v) {
    builder_mark(b, true);
    builder_push_bit(b, v);
    b->len++;
}

uint8_t *flumen_push_utf8_uninit(flumen_builder *b, size_t len) {
    builder_mark(b, true);
    builder_reserve_values(b, b->values_len + len);
    uint8_t *at = b->values + b->values_len;
    b->values_len += len;
    builder_push_offset(b);
    b->len++;
    return at;
}

void flumen_push_utf8(flumen_builder *b, const void *ptr, size_t len) {
    uint8_t *at = flumen_push_utf8_uninit(b, len);
    if (len) memcpy(at, ptr, len);
}

/* ---------------------------------------------------------------- key set */

static uint64_t hash_bytes(const uint8_t *p, size_t n) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

void flumen_keyset_init(flumen_keyset *s) { memset(s, 0, sizeof *s); }

int64_t flumen_keyset_find(const flumen_keyset *s, const uint8_t *key, size_t len) {
    if (!s->cap_) return -1;
    size_t mask = s->cap_ - 1;
    for (size_t i = hash_bytes(key, len) & mask;; i = (i + 1) & mask) {
        uint32_t slot = s->slots_[i];
        if (!slot) return -1;
        flumen_bytes k = s->keys[slot - 1];
        if (k.len == len && (len == 0 || memcmp(k.ptr, key, len) == 0)) return slot - 1;
    }
}

uint32_t flumen_keyset_add(flumen_keyset *s, const uint8_t *key, size_t len) {
    int64_t found = flumen_keyset_find(s, key, len);
    if (found >= 0) return (uint32_t)found;
    if ((s->len + 1) * 2 > s->cap_) {
        size_t cap = s->cap_ ? s->cap_ * 2 : 16;
        free(s->slots_);
        s->slots_ = calloc(cap, sizeof(uint32_t));
        if (!s->slots_) abort();
        s->cap_ = cap;
        for (size_t id = 0; id < s->len; id++) {
            size_t i = hash_bytes(s->keys[id].ptr, s->keys[id].len) & (cap - 1);
            while (s->slots_[i]) i = (i + 1) & (cap - 1);
            s->slots_[i] = (uint32_t)id + 1;
        }
    }
    if (s->len == s->keys_cap_) {
        s->keys_cap_ = grow_cap(s->keys_cap_, s->len + 1);
        s->keys = xrealloc(s->keys, s->keys_cap_ * sizeof *s->keys);
    }
    uint8_t *copy = xrealloc(NULL, len);
    if (len) memcpy(copy, key, len);
    s->keys[s->len].ptr = copy;
    s->keys[s->len].len = len;
    size_t i = hash_bytes(key, len) & (s->cap_ - 1);
    while (s->slots_[i]) i = (i + 1) & (s->cap_ - 1);
    s->slots_[i] = (uint32_t)s->len + 1;
    return (uint32_t)s->len++;
}

void flumen_keyset_free(flumen_keyset *s) {
    for (size_t i = 0; i < s->len; i++) free((void *)s->keys[i].ptr);
    free(s->keys);
    free(s->slots_);
    memset(s, 0, sizeof *s);
}

/* ---------------------------------------------------------------- key encoding */

size_t flumen_key_utf8(const uint8_t *s, size_t len, uint8_t *out) {
    out[0] = 0x04;
    if (len) memcpy(out + 1, s, len);
    return len + 1;
}

size_t flumen_key_binary(const uint8_t *s, size_t len, uint8_t *out) {
    out[0] = 0x05;
    if (len) memcpy(out + 1, s, len);
    return len + 1;
}

size_t flumen_key_i64(int64_t v, uint8_t out[9]) {
    uint64_t u = (uint64_t)v ^ (1ull << 63); /* big-endian, sign bit flipped: byte order = value order */
    out[0] = 0x02;
    for (int i = 0; i < 8; i++) out[1 + i] = (uint8_t)(u >> (56 - 8 * i));
    return 9;
}

size_t flumen_key_bool(bool v, uint8_t out[2]) {
    out[0] = 0x01;
    out[1] = v ? 1 : 0;
    return 2;
}

/* ---------------------------------------------------------------- JSON config reader */

/* A reader over a flat JSON object: string, integer, float, bool and null values. */
typedef struct {
    const char *p;
    const char *end;
} json_in;

static void json_ws(json_in *j) {
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r')) j->p++;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static bool json_hex4(json_in *j, uint32_t *out) {
    if (j->end - j->p < 4) return false;
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(j->p[i]);
        if (h < 0) return false;
        v = v * 16 + (uint32_t)h;
    }
    j->p += 4;
    *out = v;
    return true;
}

static void put_utf8(flumen_buf *b, uint32_t cp) {
    uint8_t u[4];
    size_t n;
    if (cp < 0x80) { u[0] = (uint8_t)cp; n = 1; }
    else if (cp < 0x800) { u[0] = (uint8_t)(0xc0 | cp >> 6); u[1] = (uint8_t)(0x80 | (cp & 0x3f)); n = 2; }
    else if (cp < 0x10000) {
        u[0] = (uint8_t)(0xe0 | cp >> 12); u[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
        u[2] = (uint8_t)(0x80 | (cp & 0x3f)); n = 3;
    } else {
        u[0] = (uint8_t)(0xf0 | cp >> 18); u[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3f));
        u[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f)); u[3] = (uint8_t)(0x80 | (cp & 0x3f)); n = 4;
    }
    flumen_buf_append(b, u, n);
}

/* Reads a JSON string (at its opening quote) into `out`, unescaped, NUL-terminated. */
static bool json_string(json_in *j, flumen_buf *out) {
    out->len = 0;
    if (j->p >= j->end || *j->p != '"') return false;
    j->p++;
    while (j->p < j->end) {
        char c = *j->p++;
        if (c == '"') {
            flumen_buf_append(out, "", 1);
            out->len--;
            return true;
        }
        if ((unsigned char)c < 0x20) return false;
        if (c != '\\') { flumen_buf_append(out, &c, 1); continue; }
        if (j->p >= j->end) return false;
        char e = *j->p++;
        uint32_t cp;
        switch (e) {
        case '"': case '\\': case '/': flumen_buf_append(out, &e, 1); break;
        case 'b': flumen_buf_append(out, "\b", 1); break;
        case 'f': flumen_buf_append(out, "\f", 1); break;
        case 'n': flumen_buf_append(out, "\n", 1); break;
        case 'r': flumen_buf_append(out, "\r", 1); break;
        case 't': flumen_buf_append(out, "\t", 1); break;
        case 'u':
            if (!json_hex4(j, &cp)) return false;
            if (cp >= 0xd800 && cp < 0xdc00) {
                uint32_t lo;
                if (j->end - j->p < 6 || j->p[0] != '\\' || j->p[1] != 'u') return false;
                j->p += 2;
                if (!json_hex4(j, &lo) || lo < 0xdc00 || lo > 0xdfff) return false;
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            } else if (cp >= 0xdc00 && cp < 0xe000) {
                return false;
            }
            put_utf8(out, cp);
            break;
        default: return false;
        }
    }
    return false;
}

typedef enum { JV_STRING, JV_INT, JV_FLOAT, JV_BOOL, JV_NULL } json_kind;

/* Parses a decimal number without libc's locale-dependent strtod: integers exactly (when they fit
 * in int64), other numbers as the nearest double via a correctly rounded path for the common
 * cases (up to 19 significant digits and small exponents) and a scaled fallback beyond. */
static bool json_number(json_in *j, json_kind *kind, int64_t *iv, double *dv) {
    const char *s = j->p;
    bool neg = false;
    if (s < j->end && *s == '-') { neg = true; s++; }
    if (s >= j->end || *s < '0' || *s > '9') return false;
    if (*s == '0' && s + 1 < j->end && s[1] >= '0' && s[1] <= '9') return false;
    uint64_t mant = 0;
    int digits = 0, exp10 = 0;
    bool is_int = true, overflow = false;
    for (; s < j->end && *s >= '0' && *s <= '9'; s++) {
        if (digits < 19) { mant = mant * 10 + (uint64_t)(*s - '0'); if (mant) digits++; }
        else { exp10++; overflow = true; }
    }
    if (s < j->end && *s == '.') {
        is_int = false;
        s++;
        if (s >= j->end || *s < '0' || *s > '9') return false;
        for (; s < j->end && *s >= '0' && *s <= '9'; s++) {
            if (digits < 19) { mant = mant * 10 + (uint64_t)(*s - '0'); if (mant) digits++; exp10--; }
        }
    }
    if (s < j->end && (*s == 'e' || *s == 'E')) {
        is_int = false;
        s++;
        bool eneg = false;
        if (s < j->end && (*s == '+' || *s == '-')) { eneg = *s == '-'; s++; }
        if (s >= j->end || *s < '0' || *s > '9') return false;
        int e = 0;
        for (; s < j->end && *s >= '0' && *s <= '9'; s++) if (e < 100000) e = e * 10 + (*s - '0');
        exp10 += eneg ? -e : e;
    }
    j->p = s;
    if (is_int && !overflow && (mant <= (uint64_t)INT64_MAX || (neg && mant == (uint64_t)INT64_MAX + 1))) {
        *kind = JV_INT;
        *iv = neg ? (int64_t)(0 - mant) : (int64_t)mant;
        *dv = (double)*iv;
        return true;
    }
    static const double pow10[] = {1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
                                   1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
    double d = (double)mant;
    if (mant < (1ull << 53) && exp10 >= -22 && exp10 <= 22) {
        d = exp10 < 0 ? d / pow10[-exp10] : d * pow10[exp10]; /* exact operands: correctly rounded */
    } else {
        while (exp10 > 22) { d *= 1e22; exp10 -= 22; }
        while (exp10 < -22) { d /= 1e22; exp10 += 22; }
        d = exp10 < 0 ? d / pow10[-exp10] : d * pow10[exp10];
    }
    *kind = JV_FLOAT;
    *dv = neg ? -d : d;
    return true;
}

static bool json_lit(json_in *j, const char *lit) {
    size_t n = strlen(lit);
    if ((size_t)(j->end - j->p) < n || memcmp(j->p, lit, n) != 0) return false;
    j->p += n;
    return true;
}

static flumen_status cfg_error(const char *what, const char *key, const char *tail) {
    flumen_msg m;
    msg_prefix(&m);
    flumen_msg_str(&m, what);
    if (key) {
        flumen_msg_str(&m, " `");
        flumen_msg_str(&m, key);
        flumen_msg_str(&m, "`");
    }
    if (tail) flumen_msg_str(&m, tail);
    return flumen_fail_msg(FLUMEN_INVALID_CONFIG, &m);
}

static const char *cfg_kind_name(flumen_cfg_kind k) {
    switch (k) {
    case FLUMEN_CFG_STRING: return "a string";
    case FLUMEN_CFG_INT: return "an integer";
    case FLUMEN_CFG_FLOAT: return "a number";
    default: return "a boolean";
    }
}

static flumen_status config_parse_text(const char *text, size_t len, const flumen_cfg_key *keys, size_t n) {
    json_in j = {text, text + len};
    flumen_buf key = {0}, sval = {0};
    bool seen[64] = {0};
    flumen_status st = FLUMEN_OK;
    if (n > 64) return cfg_error("too many config keys declared", NULL, NULL);
    json_ws(&j);
    if (j.p == j.end) goto check_required; /* no config at all */
    if (*j.p != '{') { st = cfg_error("config is not a JSON object", NULL, NULL); goto out; }
    j.p++;
    json_ws(&j);
    if (j.p < j.end && *j.p == '}') { j.p++; goto done; }
    for (;;) {
        json_ws(&j);
        if (!json_string(&j, &key)) { st = cfg_error("malformed config JSON", NULL, NULL); goto out; }
        json_ws(&j);
        if (j.p >= j.end || *j.p != ':') { st = cfg_error("malformed config JSON", NULL, NULL); goto out; }
        j.p++;
        json_ws(&j);
        size_t k = 0;
        while (k < n && !(strlen(keys[k].key) == key.len && memcmp(keys[k].key, key.data, key.len) == 0)) k++;
        if (k == n) {
            st = cfg_error("unknown config key", (const char *)key.data, NULL);
            goto out;
        }
        json_kind kind;
        int64_t iv = 0;
        double dv = 0;
        bool bv = false;
        if (j.p < j.end && *j.p == '"') {
            if (!json_string(&j, &sval)) { st = cfg_error("malformed string for config key", keys[k].key, NULL); goto out; }
            kind = JV_STRING;
        } else if (json_lit(&j, "true")) { kind = JV_BOOL; bv = true; }
        else if (json_lit(&j, "false")) { kind = JV_BOOL; bv = false; }
        else if (json_lit(&j, "null")) { kind = JV_NULL; }
        else if (!json_number(&j, &kind, &iv, &dv)) {
            st = cfg_error("config key", keys[k].key, ": unsupported or malformed value (flat values only)");
            goto out;
        }
        const flumen_cfg_key *d = &keys[k];
        if (kind != JV_NULL) {
            bool ok = true;
            switch (d->kind) {
            case FLUMEN_CFG_STRING:
                if ((ok = kind == JV_STRING)) {
                    char *copy = xrealloc(NULL, sval.len + 1);
                    memcpy(copy, sval.data, sval.len);
                    copy[sval.len] = 0;
                    *(char **)d->out = copy; /* kept for the instance's lifetime */
                }
                break;
            case FLUMEN_CFG_INT:
                if ((ok = kind == JV_INT)) *(int64_t *)d->out = iv;
                break;
            case FLUMEN_CFG_FLOAT:
                if ((ok = kind == JV_INT || kind == JV_FLOAT)) *(double *)d->out = dv;
                break;
            case FLUMEN_CFG_BOOL:
                if ((ok = kind == JV_BOOL)) *(bool *)d->out = bv;
                break;
            }
            if (!ok) {
                flumen_msg m;
                msg_prefix(&m);
                flumen_msg_str(&m, "config key `");
                flumen_msg_str(&m, d->key);
                flumen_msg_str(&m, "` must be ");
                flumen_msg_str(&m, cfg_kind_name(d->kind));
                st = flumen_fail_msg(FLUMEN_INVALID_CONFIG, &m);
                goto out;
            }
            seen[k] = true;
        }
        json_ws(&j);
        if (j.p < j.end && *j.p == ',') { j.p++; continue; }
        if (j.p < j.end && *j.p == '}') { j.p++; break; }
        st = cfg_error("malformed config JSON", NULL, NULL);
        goto out;
    }
done:
    json_ws(&j);
    if (j.p != j.end) { st = cfg_error("malformed config JSON (text after the object)", NULL, NULL); goto out; }
check_required:
    for (size_t k = 0; k < n; k++) {
        if (keys[k].present) *keys[k].present = seen[k];
        if (keys[k].required && !seen[k]) {
            st = cfg_error("missing required config key", keys[k].key, NULL);
            goto out;
        }
    }
out:
    flumen_buf_free(&key);
    flumen_buf_free(&sval);
    return st;
}

typedef exports_flumen_dataflow_transform_context_t wit_ctx;
typedef flumen_dataflow_types_field_t wit_field;
typedef flumen_dataflow_types_schema_t wit_schema;
typedef flumen_dataflow_types_column_t wit_column;

/* ---------------------------------------------------------------- the error of the current call */

static struct {
    bool set;
    flumen_error_kind kind;
    flumen_msg msg;
} g_error;

flumen_status flumen_fail_msg(flumen_error_kind kind, const flumen_msg *m) {
    g_error.set = true;
    g_error.kind = kind;
    g_error.msg = *m;
    return FLUMEN_ERR;
}

flumen_status flumen_fail(flumen_error_kind kind, const char *message) {
    flumen_msg m;
    flumen_msg_init(&m);
    size_t n = strlen(flumen_operator_name);
    /* Prefix "<name>: " unless the message already starts with it. */
    if (!(strncmp(message, flumen_operator_name, n) == 0 && message[n] == ':')) {
        flumen_msg_str(&m, flumen_operator_name);
        flumen_msg_str(&m, ": ");
    }
    flumen_msg_str(&m, message);
    return flumen_fail_msg(kind, &m);
}

/* Hands the recorded error (or a generic one) to the export's `err`, malloc'd: the generated
 * post-return function frees it. */
static void take_error(flumen_dataflow_types_error_t *err, const char *call) {
    if (!g_error.set) {
        flumen_msg m;
        msg_prefix(&m);
        flumen_msg_str(flumen_msg_str(&m, call), " failed");
        flumen_fail_msg(FLUMEN_INTERNAL, &m);
    }
    err->kind = (flumen_dataflow_types_error_kind_t)g_error.kind;
    operator_string_dup_n(&err->message, g_error.msg.text, g_error.msg.len);
    g_error.set = false;
}

/* Records an error the host returned, prefixed with what the SDK was doing, and frees it. */
static flumen_status host_error(flumen_dataflow_types_error_t *e, const char *doing, const char *name) {
    flumen_msg m;
    msg_prefix(&m);
    flumen_msg_str(&m, doing);
    if (name) flumen_msg_str(flumen_msg_str(flumen_msg_str(&m, " `"), name), "`");
    flumen_msg_str(&m, ": ");
    flumen_msg_strn(&m, (const char *)e->message.ptr, e->message.len);
    flumen_error_kind kind = (flumen_error_kind)e->kind;
    flumen_dataflow_types_error_free(e);
    return flumen_fail_msg(kind, &m);
}

/* ---------------------------------------------------------------- log */

bool flumen_log_enabled(flumen_level level) { return flumen_dataflow_log_enabled((flumen_dataflow_log_level_t)level); }

void flumen_log(flumen_level level, const char *message) {
    operator_string_t s = {(uint8_t *)message, strlen(message)};
    flumen_dataflow_log_log((flumen_dataflow_log_level_t)level, &s);
}

void flumen_log_msg(flumen_level level, const flumen_msg *m) {
    operator_string_t s = {(uint8_t *)m->text, m->len};
    flumen_dataflow_log_log((flumen_dataflow_log_level_t)level, &s);
}

_Noreturn void flumen_panic(const char *message) {
    flumen_log(FLUMEN_ERROR, message);
    abort();
}

/* ---------------------------------------------------------------- schemas */

struct flumen_ctx {
    wit_ctx *w;
};

static flumen_type type_of(const flumen_dataflow_types_data_type_t *t) {
    switch (t->tag) {
    case FLUMEN_DATAFLOW_TYPES_DATA_TYPE_NULL: return FLUMEN_NULLTYPE;
    case FLUMEN_DATAFLOW_TYPES_DATA_TYPE_BOOLEAN: return FLUMEN_BOOL;
    case FLUMEN_DATAFLOW_TYPES_DATA_TYPE_INT8: return FLUMEN_INT8;
    case FLUMEN_DATAFLOW_TYPES_DATA_TYPE_INT16: return FLUMEN_INT16;
    case FLUMEN_DATAFLOW_TYPES_DATA_TYPE_INT32: return FLUMEN_INT32;
    case FLUMEN_DATAFLOW_TYPES_DATA_TYPE_INT64: return FLUMEN_INT64;
    case FLUMEN_DATAFLOW_TYPES_DATA_TYPE_UINT8: return FLUMEN_UINT8;
    case FLUMEN_DATAFLOW_TYPES_DATA_TYPE_UINT16: return FLUMEN_UINT16;
    case FLUMEN_DATAFLOW_TYPES_DATA_TYPE_UINT32: return FLUMEN_UINT32;
    case FLUMEN_DATAFLOW_TYPES_DATA_TYPE_UINT64: return FLUMEN_UINT64;
    case FLUMEN_DATAFLOW_TYPES_DATA_TYPE_FLOAT32: return FLUMEN_FLOAT32;
    case FLUMEN_DATAFLOW_TYPES_DATA_TYPE_FLOAT64: return FLUMEN_FLOAT64;
    case FLUMEN_DATAFLOW_TYPES_DATA_TYPE_UTF8: return FLUMEN_UTF8;
    case FLUMEN_DATAFLOW_TYPES_DATA_TYPE_BINARY: return FLUMEN_BINARY;
    case FLUMEN_DATAFLOW_TYPES_DATA_TYPE_FIXED_SIZE_BINARY: return FLUMEN_FIXED_SIZE_BINARY;
    case FLUMEN_DATAFLOW_TYPES_DATA_TYPE_RECORD: return FLUMEN_STRUCT;
    default: return FLUMEN_OTHER;
    }
}

static uint8_t wit_tag_of(flumen_type t) {
    switch (t) {
    case FLUMEN_NULLTYPE: return FLUMEN_DATAFLOW_TYPES_DATA_TYPE_NULL;
    case FLUMEN_BOOL: return FLUMEN_DATAFLOW_TYPES_DATA_TYPE_BOOLEAN;
    case FLUMEN_INT8: return FLUMEN_DATAFLOW_TYPES_DATA_TYPE_INT8;
    case FLUMEN_INT16: return FLUMEN_DATAFLOW_TYPES_DATA_TYPE_INT16;
    case FLUMEN_INT32: return FLUMEN_DATAFLOW_TYPES_DATA_TYPE_INT32;
    case FLUMEN_INT64: return FLUMEN_DATAFLOW_TYPES_DATA_TYPE_INT64;
    case FLUMEN_UINT8: return FLUMEN_DATAFLOW_TYPES_DATA_TYPE_UINT8;
    case FLUMEN_UINT16: return FLUMEN_DATAFLOW_TYPES_DATA_TYPE_UINT16;
    case FLUMEN_UINT32: return FLUMEN_DATAFLOW_TYPES_DATA_TYPE_UINT32;
    case FLUMEN_UINT64: return FLUMEN_DATAFLOW_TYPES_DATA_TYPE_UINT64;
    case FLUMEN_FLOAT32: return FLUMEN_DATAFLOW_TYPES_DATA_TYPE_FLOAT32;
    case FLUMEN_FLOAT64: return FLUMEN_DATAFLOW_TYPES_DATA_TYPE_FLOAT64;
    case FLUMEN_UTF8: return FLUMEN_DATAFLOW_TYPES_DATA_TYPE_UTF8;
    case FLUMEN_BINARY: return FLUMEN_DATAFLOW_TYPES_DATA_TYPE_BINARY;
    default: return 255;
    }
}

const char *flumen_type_name(flumen_type t) {
    switch (t) {
    case FLUMEN_NULLTYPE: return "null";
    case FLUMEN_BOOL: return "boolean";
    case FLUMEN_INT8: return "int8";
    case FLUMEN_INT16: return "int16";
    case FLUMEN_INT32: return "int32";
    case FLUMEN_INT64: return "int64";
    case FLUMEN_UINT8: return "uint8";
    case FLUMEN_UINT16: return "uint16";
    case FLUMEN_UINT32: return "uint32";
    case FLUMEN_UINT64: return "uint64";
    case FLUMEN_FLOAT32: return "float32";
    case FLUMEN_FLOAT64: return "float64";
    case FLUMEN_UTF8: return "utf8";
    case FLUMEN_BINARY: return "binary";
    case FLUMEN_FIXED_SIZE_BINARY: return "fixed-size-binary";
    case FLUMEN_STRUCT: return "struct";
    default: return "an unsupported type";
    }
}

/* The pre-order index just past field i and its descendants. */
static size_t subtree_end(const flumen_dataflow_types_list_field_t *f, size_t i) {
    if (i >= f->len) return f->len;
    uint32_t n = f->ptr[i].children;
    i++;
    for (uint32_t k = 0; k < n; k++) i = subtree_end(f, i);
    return i;
}

/* The pre-order index of top-level field `col`, or f->len. */
static size_t preorder_of(const flumen_dataflow_types_list_field_t *f, uint32_t col) {
    size_t i = 0;
    for (uint32_t c = 0; c < col && i < f->len; c++) i = subtree_end(f, i);
    return i;
}

static uint32_t top_level_count(const flumen_dataflow_types_list_field_t *f) {
    uint32_t n = 0;
    for (size_t i = 0; i < f->len; i = subtree_end(f, i)) n++;
    return n;
}

static const wit_field *input_field(const flumen_ctx *ctx, uint32_t port, uint32_t column) {
    if (port >= ctx->w->inputs.len) return NULL;
    const flumen_dataflow_types_list_field_t *f = &ctx->w->inputs.ptr[port].fields;
    size_t i = preorder_of(f, column);
    return i < f->len ? &f->ptr[i] : NULL;
}

flumen_str flumen_ctx_operator_id(const flumen_ctx *ctx) {
    flumen_str s = {ctx->w->operator_id.ptr, ctx->w->operator_id.len};
    return s;
}
uint32_t flumen_ctx_subtask(const flumen_ctx *ctx) { return ctx->w->subtask; }
uint32_t flumen_ctx_parallelism(const flumen_ctx *ctx) { return ctx->w->parallelism; }
flumen_str flumen_ctx_config_json(const flumen_ctx *ctx) {
    flumen_str s = {ctx->w->config.ptr, ctx->w->config.len};
    return s;
}
uint32_t flumen_ctx_num_inputs(const flumen_ctx *ctx) { return (uint32_t)ctx->w->inputs.len; }
uint32_t flumen_input_num_columns(const flumen_ctx *ctx, uint32_t port) {
    return port < ctx->w->inputs.len ? top_level_count(&ctx->w->inputs.ptr[port].fields) : 0;
}

int32_t flumen_input_find(const flumen_ctx *ctx, uint32_t port, const char *name) {
    if (port >= ctx->w->inputs.len) return -1;
    const flumen_dataflow_types_list_field_t *f = &ctx->w->inputs.ptr[port].fields;
    int32_t col = 0;
    size_t want = strlen(name);
    for (size_t i = 0; i < f->len; i = subtree_end(f, i), col++) {
        const operator_string_t *n = &f->ptr[i].name;
        if (n->len == want && memcmp(n->ptr, name, want) == 0) return col;
    }
    return -1;
}

flumen_type flumen_input_type(const flumen_ctx *ctx, uint32_t port, uint32_t column) {
    const wit_field *f = input_field(ctx, port, column);
    return f ? type_of(&f->data_type) : FLUMEN_OTHER;
}

static bool meta_is(const operator_list_tuple2_string_string_t *md, const char *key, const char *value) {
    for (size_t i = 0; i < md->len; i++) {
        flumen_str k = {md->ptr[i].f0.ptr, md->ptr[i].f0.len}, v = {md->ptr[i].f1.ptr, md->ptr[i].f1.len};
        if (flumen_str_eq(k, key) && flumen_str_eq(v, value)) return true;
    }
    return false;
}

static bool field_is(const wit_field *f, const char *name, uint8_t tag, int32_t width) {
    flumen_str n = {f->name.ptr, f->name.len};
    return flumen_str_eq(n, name) && f->data_type.tag == tag && f->children == 0 &&
           (tag != FLUMEN_DATAFLOW_TYPES_DATA_TYPE_FIXED_SIZE_BINARY || f->data_type.val.fixed_size_binary == width);
}

bool flumen_input_is_blob(const flumen_ctx *ctx, uint32_t port, uint32_t column) {
    const wit_field *f = input_field(ctx, port, column);
    if (!f) return false;
    const operator_list_tuple2_string_string_t *md = &f->metadata;
    bool tagged = meta_is(md, "ARROW:extension:name", "flumen.blob") ||
                  meta_is(md, "ARROW:extension:name", "flumen.image") ||
                  meta_is(md, "ARROW:extension:name", "flumen.video");
    return tagged && f->data_type.tag == FLUMEN_DATAFLOW_TYPES_DATA_TYPE_RECORD && f->children == 4 &&
           field_is(f + 1, "digest", FLUMEN_DATAFLOW_TYPES_DATA_TYPE_FIXED_SIZE_BINARY, 32) &&
           field_is(f + 2, "size", FLUMEN_DATAFLOW_TYPES_DATA_TYPE_UINT64, 0) &&
           field_is(f + 3, "media_type", FLUMEN_DATAFLOW_TYPES_DATA_TYPE_UTF8, 0) &&
           field_is(f + 4, "token", FLUMEN_DATAFLOW_TYPES_DATA_TYPE_FIXED_SIZE_BINARY, 16);
}

static flumen_status no_column(uint32_t port, const char *name) {
    flumen_msg m;
    msg_prefix(&m);
    flumen_msg_str(flumen_msg_str(flumen_msg_str(&m, "no column `"), name), "` in input ");
    flumen_msg_u64(&m, port);
    return flumen_fail_msg(FLUMEN_INVALID_CONFIG, &m);
}

flumen_status flumen_input_column(const flumen_ctx *ctx, uint32_t port, const char *name, flumen_type type,
                                  uint32_t *index) {
    int32_t col = flumen_input_find(ctx, port, name);
    if (col < 0) return no_column(port, name);
    flumen_type have = flumen_input_type(ctx, port, (uint32_t)col);
    if (type != FLUMEN_OTHER && have != type) {
        flumen_msg m;
        msg_prefix(&m);
        flumen_msg_str(flumen_msg_str(flumen_msg_str(&m, "column `"), name), "` must be ");
        flumen_msg_str(flumen_msg_str(flumen_msg_str(&m, flumen_type_name(type)), ", not "), flumen_type_name(have));
        return flumen_fail_msg(FLUMEN_INVALID_CONFIG, &m);
    }
    *index = (uint32_t)col;
    return FLUMEN_OK;
}

flumen_status flumen_input_blob_column(const flumen_ctx *ctx, uint32_t port, const char *name, uint32_t *index) {
    int32_t col = flumen_input_find(ctx, port, name);
    if (col < 0) return no_column(port, name);
    if (!flumen_input_is_blob(ctx, port, (uint32_t)col)) {
        flumen_msg m;
        msg_prefix(&m);
        flumen_msg_str(flumen_msg_str(flumen_msg_str(&m, "column `"), name),
                       "` must be a flumen.blob column (struct of digest, size, media_type, token), not ");
        flumen_msg_str(&m, flumen_type_name(flumen_input_type(ctx, port, (uint32_t)col)));
        return flumen_fail_msg(FLUMEN_INVALID_CONFIG, &m);
    }
    *index = (uint32_t)col;
    return FLUMEN_OK;
}

flumen_status flumen_config_parse(const flumen_ctx *ctx, const flumen_cfg_key *keys, size_t n) {
    return config_parse_text((const char *)ctx->w->config.ptr, ctx->w->config.len, keys, n);
}

/* ---------------------------------------------------------------- the plan */

/* What open declared; kept for the instance's lifetime. */
static struct {
    wit_ctx ctx; /* the context `open` received (owned, never freed: column lookups use it) */
    bool opened;
    /* Output schema fields in pre-order, and the carried entry of each top-level field. */
    wit_field *fields;
    size_t nfields, capfields;
    operator_option_u32_t *carried;
    size_t ncarried, capcarried;
    bool carries;
    /* Reads: per port, NULL for all columns, else a sorted list. */
    uint32_t **reads;
    size_t *nreads;
    /* Per port, per top-level input column: its position in a received batch's flattened columns, or -1. */
    int64_t **position;
    uint32_t *ncols;
    flumen_type *computed; /* types of the computed columns, in order */
    size_t ncomputed;
} g_plan;

static void copy_string(operator_string_t *dst, const operator_string_t *src) {
    operator_string_dup_n(dst, (const char *)src->ptr, src->len);
}

/* A deep, malloc'd copy of a field (the post-return function frees the plan). */
static void copy_field(wit_field *dst, const wit_field *src) {
    copy_string(&dst->name, &src->name);
    dst->data_type = src->data_type;
    if (src->data_type.tag == FLUMEN_DATAFLOW_TYPES_DATA_TYPE_TIMESTAMP && src->data_type.val.timestamp.timezone.is_some)
        copy_string(&dst->data_type.val.timestamp.timezone.val, &src->data_type.val.timestamp.timezone.val);
    dst->nullable = src->nullable;
    dst->children = src->children;
    dst->metadata.len = src->metadata.len;
    dst->metadata.ptr = src->metadata.len ? xrealloc(NULL, src->metadata.len * sizeof *src->metadata.ptr) : NULL;
    for (size_t i = 0; i < src->metadata.len; i++) {
        copy_string(&dst->metadata.ptr[i].f0, &src->metadata.ptr[i].f0);
        copy_string(&dst->metadata.ptr[i].f1, &src->metadata.ptr[i].f1);
    }
}

static wit_field *plan_field(void) {
    if (g_plan.nfields == g_plan.capfields) {
        g_plan.capfields = grow_cap(g_plan.capfields, g_plan.nfields + 1);
        g_plan.fields = xrealloc(g_plan.fields, g_plan.capfields * sizeof *g_plan.fields);
    }
    wit_field *f = &g_plan.fields[g_plan.nfields++];
    memset(f, 0, sizeof *f);
    return f;
}

static void plan_carried(bool some, uint32_t col) {
    if (g_plan.ncarried == g_plan.capcarried) {
        g_plan.capcarried = grow_cap(g_plan.capcarried, g_plan.ncarried + 1);
        g_plan.carried = xrealloc(g_plan.carried, g_plan.capcarried * sizeof *g_plan.carried);
    }
    g_plan.carried[g_plan.ncarried].is_some = some;
    g_plan.carried[g_plan.ncarried].val = col;
    g_plan.ncarried++;
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

flumen_status flumen_plan_shape(const flumen_ctx *ctx, uint32_t port, const uint32_t *reads, size_t n,
                                bool carry_all) {
    size_t nports = ctx->w->inputs.len;
    if (port >= nports) return flumen_fail(FLUMEN_INTERNAL, "flumen_plan_shape: no such input port");
    uint32_t ncols = top_level_count(&ctx->w->inputs.ptr[port].fields);
    if (reads) { /* NULL: every column; non-NULL with n == 0: none */
        uint32_t *sorted = xrealloc(NULL, (n ? n : 1) * sizeof *sorted);
        if (n) memcpy(sorted, reads, n * sizeof *sorted);
        qsort(sorted, n, sizeof *sorted, cmp_u32);
        size_t m = 0;
        for (size_t i = 0; i < n; i++) {
            if (sorted[i] >= ncols) {
                free(sorted);
                return flumen_fail(FLUMEN_INTERNAL, "flumen_plan_shape: reads a column past the input's last");
            }
            if (m == 0 || sorted[m - 1] != sorted[i]) sorted[m++] = sorted[i];
        }
        free(g_plan.reads[port]);
        g_plan.reads[port] = sorted;
        g_plan.nreads[port] = m;
    }
    if (carry_all) {
        const flumen_dataflow_types_list_field_t *f = &ctx->w->inputs.ptr[port].fields;
        uint32_t col = 0;
        for (size_t i = 0; i < f->len; col++) {
            size_t end = subtree_end(f, i);
            plan_carried(true, col);
            for (; i < end; i++) copy_field(plan_field(), &f->ptr[i]);
        }
        g_plan.carries = true;
    }
    return FLUMEN_OK;
}

flumen_status flumen_plan_compute(const char *name, flumen_type type, bool nullable) {
    uint8_t tag = wit_tag_of(type);
    if (tag == 255) return flumen_fail(FLUMEN_INTERNAL, "flumen_plan_compute: the SDK cannot build columns of this type");
    wit_field *f = plan_field();
    operator_string_dup(&f->name, name);
    f->data_type.tag = tag;
    f->nullable = nullable;
    plan_carried(false, 0);
    g_plan.computed = xrealloc(g_plan.computed, (g_plan.ncomputed + 1) * sizeof *g_plan.computed);
    g_plan.computed[g_plan.ncomputed++] = type;
    return FLUMEN_OK;
}

/* Where each read column sits in a received batch's flattened columns. */
static void plan_positions(void) {
    size_t nports = g_plan.ctx.inputs.len;
    for (size_t p = 0; p < nports; p++) {
        const flumen_dataflow_types_list_field_t *f = &g_plan.ctx.inputs.ptr[p].fields;
        uint32_t ncols = top_level_count(f);
        g_plan.ncols[p] = ncols;
        g_plan.position[p] = xrealloc(NULL, (ncols ? ncols : 1) * sizeof(int64_t));
        int64_t pos = 0;
        size_t r = 0, i = 0;
        for (uint32_t c = 0; c < ncols; c++) {
            size_t end = subtree_end(f, i);
            bool read = !g_plan.reads[p];
            if (!read && r < g_plan.nreads[p] && g_plan.reads[p][r] == c) { read = true; r++; }
            g_plan.position[p][c] = read ? pos : -1;
            if (read) pos += (int64_t)(end - i);
            i = end;
        }
    }
}

bool exports_flumen_dataflow_transform_open(exports_flumen_dataflow_transform_context_t *w,
                                            exports_flumen_dataflow_transform_operator_plan_t *ret,
                                            exports_flumen_dataflow_transform_error_t *err) {
    g_plan.ctx = *w; /* keep the context: views of input schemas point into it */
    size_t nports = w->inputs.len;
    g_plan.reads = calloc(nports ? nports : 1, sizeof *g_plan.reads);
    g_plan.nreads = calloc(nports ? nports : 1, sizeof *g_plan.nreads);
    g_plan.position = calloc(nports ? nports : 1, sizeof *g_plan.position);
    g_plan.ncols = calloc(nports ? nports : 1, sizeof *g_plan.ncols);
    if (!g_plan.reads || !g_plan.nreads || !g_plan.position || !g_plan.ncols) abort();
    flumen_ctx ctx = {&g_plan.ctx};
    if (flumen_open(&ctx) != FLUMEN_OK) {
        take_error(err, "open");
        return false;
    }
    plan_positions();
    g_plan.opened = true;

    /* The plan, malloc'd: the generated post-return function frees it. */
    ret->schema.fields.ptr = g_plan.fields;
    ret->schema.fields.len = g_plan.nfields;
    ret->schema.metadata.ptr = NULL;
    ret->schema.metadata.len = 0;
    g_plan.fields = NULL;
    g_plan.nfields = g_plan.capfields = 0;
    if (g_plan.carries) {
        ret->carried.ptr = g_plan.carried;
        ret->carried.len = g_plan.ncarried;
    } else {
        free(g_plan.carried);
        ret->carried.ptr = NULL;
        ret->carried.len = 0;
    }
    g_plan.carried = NULL;
    bool any_reads = false;
    for (size_t p = 0; p < nports; p++) any_reads |= g_plan.reads[p] != NULL;
    ret->reads.len = any_reads ? nports : 0;
    ret->reads.ptr = any_reads ? xrealloc(NULL, nports * sizeof *ret->reads.ptr) : NULL;
    for (size_t p = 0; any_reads && p < nports; p++) {
        operator_option_list_u32_t *r = &ret->reads.ptr[p];
        r->is_some = g_plan.reads[p] != NULL;
        r->val.len = g_plan.nreads[p];
        r->val.ptr = NULL;
        if (r->is_some && r->val.len) {
            r->val.ptr = xrealloc(NULL, r->val.len * sizeof(uint32_t));
            memcpy(r->val.ptr, g_plan.reads[p], r->val.len * sizeof(uint32_t));
        }
    }
    return true;
}

/* ---------------------------------------------------------------- batches */

struct flumen_batch {
    size_t rows;
    uint32_t port;
    flumen_col *cols; /* one per flattened column */
    size_t ncols;
};

size_t flumen_batch_rows(const flumen_batch *b) { return b->rows; }

const flumen_col *flumen_batch_column(const flumen_batch *b, uint32_t input_column) {
    if (b->port >= g_plan.ctx.inputs.len || input_column >= g_plan.ncols[b->port]) return NULL;
    int64_t pos = g_plan.position[b->port][input_column];
    return pos < 0 || (size_t)pos >= b->ncols ? NULL : &b->cols[pos];
}

/* The received schema's fields in flattened order, for port `port`: the read subtrees. */
static flumen_status view_batch(uint32_t port, flumen_dataflow_types_batch_t *in, flumen_batch *out) {
    out->rows = (size_t)in->num_rows;
    out->port = port;
    out->ncols = in->columns.len;
    out->cols = calloc(out->ncols ? out->ncols : 1, sizeof *out->cols);
    if (!out->cols) abort();
    if (port >= g_plan.ctx.inputs.len) return flumen_fail(FLUMEN_INVALID_INPUT, "batch on an unknown input port");
    const flumen_dataflow_types_list_field_t *f = &g_plan.ctx.inputs.ptr[port].fields;
    size_t k = 0, i = 0;
    for (uint32_t c = 0; c < g_plan.ncols[port]; c++) {
        size_t end = subtree_end(f, i);
        if (g_plan.position[port][c] >= 0) {
            for (size_t j = i; j < end; j++, k++) {
                if (k >= out->ncols) return flumen_fail(FLUMEN_INVALID_INPUT, "batch has fewer columns than the plan reads");
                const wit_field *fd = &f->ptr[j];
                const wit_column *w = &in->columns.ptr[k];
                flumen_col *col = &out->cols[k];
                col->type = type_of(&fd->data_type);
                col->width = fd->data_type.tag == FLUMEN_DATAFLOW_TYPES_DATA_TYPE_FIXED_SIZE_BINARY
                                 ? fd->data_type.val.fixed_size_binary : 0;
                col->len = (size_t)w->len;
                col->offset = (size_t)w->offset;
                if (w->validity.is_some) {
                    col->validity = w->validity.val.bits.ptr;
                    col->validity_offset = (size_t)w->validity.val.offset;
                }
                const operator_list_u8_t *bufs = w->buffers.ptr;
                size_t nb = w->buffers.len;
                if ((col->type == FLUMEN_UTF8 || col->type == FLUMEN_BINARY) && nb >= 2) {
                    col->offsets = bufs[0].ptr;
                    col->offsets_len = bufs[0].len;
                    col->values = bufs[1].ptr;
                    col->values_len = bufs[1].len;
                } else if (nb >= 1) {
                    col->values = bufs[0].ptr;
                    col->values_len = bufs[0].len;
                }
                col->num_children = fd->children;
                col->children = fd->children ? &out->cols[k + 1] : NULL;
            }
        }
        i = end;
    }
    return FLUMEN_OK;
}

flumen_blob_ref flumen_blob_at(const flumen_col *c, size_t i) {
    size_t row = c->offset + i; /* a struct's offset applies to its children */
    flumen_blob_ref r;
    r.digest = flumen_fsb(&c->children[0], row);
    r.size = flumen_u64(&c->children[1], row);
    r.media_type = flumen_utf8(&c->children[2], row);
    r.token = flumen_fsb(&c->children[3], row);
    return r;
}

bool exports_flumen_dataflow_transform_process(uint32_t port, exports_flumen_dataflow_transform_batch_t *input,
                                               exports_flumen_dataflow_transform_error_t *err) {
    flumen_batch b;
    flumen_status st = view_batch(port, input, &b);
    if (st == FLUMEN_OK) st = flumen_process(port, &b);
    free(b.cols);
    exports_flumen_dataflow_transform_batch_free(input); /* the export owns its arguments */
    if (st != FLUMEN_OK) {
        take_error(err, "process");
        return false;
    }
    return true;
}

bool exports_flumen_dataflow_transform_finish(exports_flumen_dataflow_transform_error_t *err) {
    if (flumen_finish() != FLUMEN_OK) {
        take_error(err, "finish");
        return false;
    }
    return true;
}

/* ---------------------------------------------------------------- emit */

static operator_list_u8_t owned_list(uint8_t *p, size_t len) {
    operator_list_u8_t l = {p, len};
    return l;
}

/* Turns a builder into a WIT column, taking its buffers over. */
static void column_from(flumen_builder *b, wit_column *c) {
    c->len = b->len;
    c->offset = 0;
    c->validity.is_some = b->validity != NULL;
    if (b->validity) {
        size_t bytes = (b->len + 7) / 8;
        if (b->len % 8) b->validity[bytes - 1] &= (uint8_t)((1u << (b->len % 8)) - 1); /* bits past the end clear */
        c->validity.val.bits = owned_list(b->validity, bytes);
        c->validity.val.offset = 0;
    }
    bool var = b->type == FLUMEN_UTF8 || b->type == FLUMEN_BINARY;
    c->buffers.len = var ? 2 : 1;
    c->buffers.ptr = xrealloc(NULL, c->buffers.len * sizeof *c->buffers.ptr);
    if (var) {
        c->buffers.ptr[0] = owned_list((uint8_t *)b->offsets, (b->len + 1) * 4);
        c->buffers.ptr[1] = owned_list(b->values, b->values_len);
    } else {
        c->buffers.ptr[0] = owned_list(b->values, b->type == FLUMEN_BOOL ? (b->len + 7) / 8 : b->values_len);
    }
    flumen_type t = b->type;
    memset(b, 0, sizeof *b); /* the column owns the buffers now */
    b->type = t;
}

static void free_columns(wit_column *cols, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (cols[i].validity.is_some) free(cols[i].validity.val.bits.ptr);
        for (size_t k = 0; k < cols[i].buffers.len; k++) free(cols[i].buffers.ptr[k].ptr);
        free(cols[i].buffers.ptr);
    }
    free(cols);
}

flumen_status flumen_emit(flumen_builder *builders, size_t n, size_t rows, flumen_selection sel) {
    if (n != g_plan.ncomputed) {
        for (size_t i = 0; i < n; i++) flumen_builder_free(&builders[i]);
        return flumen_fail(FLUMEN_INTERNAL, "flumen_emit: the number of columns differs from the plan's computed columns");
    }
    if (n) rows = builders[0].len;
    for (size_t i = 0; i < n; i++) {
        if (builders[i].len != rows || builders[i].type != g_plan.computed[i]) {
            for (size_t k = 0; k < n; k++) flumen_builder_free(&builders[k]);
            return flumen_fail(FLUMEN_INTERNAL,
                               "flumen_emit: a column's length or type differs from the first's or from the plan");
        }
    }
    flumen_dataflow_types_batch_t batch;
    batch.num_rows = rows;
    batch.columns.len = n;
    batch.columns.ptr = xrealloc(NULL, (n ? n : 1) * sizeof(wit_column));
    for (size_t i = 0; i < n; i++) column_from(&builders[i], &batch.columns.ptr[i]);
    flumen_dataflow_types_selection_t s;
    memset(&s, 0, sizeof s);
    switch (sel.kind) {
    case FLUMEN_SELECT_ALL: s.tag = FLUMEN_DATAFLOW_TYPES_SELECTION_ALL; break;
    case FLUMEN_SELECT_MASK:
        s.tag = FLUMEN_DATAFLOW_TYPES_SELECTION_MASK;
        s.val.mask.ptr = (uint8_t *)sel.mask; /* borrowed for the call */
        s.val.mask.len = sel.mask_len;
        break;
    case FLUMEN_SELECT_INDICES:
        s.tag = FLUMEN_DATAFLOW_TYPES_SELECTION_INDICES;
        s.val.indices.ptr = (uint32_t *)sel.indices;
        s.val.indices.len = sel.num_indices;
        break;
    }
    flumen_dataflow_types_error_t e;
    bool ok = flumen_dataflow_output_emit(&batch, &s, &e);
    free_columns(batch.columns.ptr, n);
    return ok ? FLUMEN_OK : host_error(&e, "emit", NULL);
}

flumen_status flumen_keep(const flumen_mask *mask) {
    return flumen_emit(NULL, 0, mask->count, flumen_select_mask(mask->bits, mask->bytes));
}

/* ---------------------------------------------------------------- snapshot and event time */

__attribute__((weak)) flumen_status flumen_finish(void) { return FLUMEN_OK; }
__attribute__((weak)) flumen_status flumen_on_watermark(int64_t watermark) { return FLUMEN_OK; }
__attribute__((weak)) flumen_status flumen_save(flumen_buf *out) { return FLUMEN_OK; }
__attribute__((weak)) flumen_status flumen_restore(const uint8_t *data, size_t len) { return FLUMEN_OK; }

bool exports_flumen_dataflow_snapshot_save(operator_list_u8_t *ret, exports_flumen_dataflow_snapshot_error_t *err) {
    flumen_buf b = {0};
    if (flumen_save(&b) != FLUMEN_OK) {
        flumen_buf_free(&b);
        take_error(err, "save");
        return false;
    }
    if (b.len == 0) flumen_buf_free(&b); /* post-return frees only non-empty lists */
    ret->ptr = b.data;
    ret->len = b.len;
    return true;
}

bool exports_flumen_dataflow_snapshot_restore(operator_list_u8_t *data, exports_flumen_dataflow_snapshot_error_t *err) {
    flumen_status st = flumen_restore(data->ptr, data->len);
    operator_list_u8_free(data);
    if (st != FLUMEN_OK) {
        take_error(err, "restore");
        return false;
    }
    return true;
}

bool exports_flumen_dataflow_event_time_on_watermark(int64_t watermark, exports_flumen_dataflow_event_time_error_t *err) {
    if (flumen_on_watermark(watermark) != FLUMEN_OK) {
        take_error(err, "on_watermark");
        return false;
    }
    return true;
}

/* ---------------------------------------------------------------- state */

/* Most keys in one *-many host call: bounds each call's argument and result lists. */
#define MANY_CHUNK ((size_t)1 << 16)

typedef struct {
    size_t n;
    operator_list_option_list_u8_t lists[];
} values_owner;

void flumen_values_free(flumen_values *v) {
    values_owner *o = v->owner_;
    if (o) {
        for (size_t i = 0; i < o->n; i++) operator_list_option_list_u8_free(&o->lists[i]);
        free(o);
    }
    free(v->values);
    memset(v, 0, sizeof *v);
}

flumen_status flumen_state_get_many(const char *name, const flumen_bytes *keys, size_t n, flumen_values *out) {
    size_t chunks = (n + MANY_CHUNK - 1) / MANY_CHUNK;
    values_owner *o = xrealloc(NULL, sizeof *o + chunks * sizeof o->lists[0]);
    o->n = 0;
    out->values = xrealloc(NULL, (n ? n : 1) * sizeof *out->values);
    out->len = n;
    out->owner_ = o;
    operator_string_t sname = {(uint8_t *)name, strlen(name)};
    for (size_t at = 0; at < n; at += MANY_CHUNK) {
        size_t m = n - at < MANY_CHUNK ? n - at : MANY_CHUNK;
        operator_list_list_u8_t ks = {xrealloc(NULL, m * sizeof(operator_list_u8_t)), m};
        for (size_t i = 0; i < m; i++) ks.ptr[i] = owned_list((uint8_t *)keys[at + i].ptr, keys[at + i].len);
        operator_list_option_list_u8_t got;
        flumen_dataflow_types_error_t e;
        bool ok = flumen_dataflow_state_value_get_many(&sname, &ks, &got, &e);
        free(ks.ptr);
        if (!ok) {
            flumen_values_free(out);
            return host_error(&e, "state", name);
        }
        o->lists[o->n++] = got;
        if (got.len != m) {
            flumen_values_free(out);
            return flumen_fail(FLUMEN_INTERNAL, "state: value-get-many returned a different number of values");
        }
        for (size_t i = 0; i < m; i++) {
            flumen_bytes v = {NULL, 0};
            if (got.ptr[i].is_some) {
                v.ptr = got.ptr[i].val.ptr ? got.ptr[i].val.ptr : (const uint8_t *)"";
                v.len = got.ptr[i].val.len;
            }
            out->values[at + i] = v;
        }
    }
    return FLUMEN_OK;
}

flumen_status flumen_state_set_many(const char *name, const flumen_bytes *keys, const flumen_bytes *values,
                                    size_t n) {
    operator_string_t sname = {(uint8_t *)name, strlen(name)};
    for (size_t at = 0; at < n; at += MANY_CHUNK) {
        size_t m = n - at < MANY_CHUNK ? n - at : MANY_CHUNK;
        operator_list_tuple2_list_u8_list_u8_t es = {xrealloc(NULL, m * sizeof(operator_tuple2_list_u8_list_u8_t)), m};
        for (size_t i = 0; i < m; i++) {
            es.ptr[i].f0 = owned_list((uint8_t *)keys[at + i].ptr, keys[at + i].len);
            es.ptr[i].f1 = owned_list((uint8_t *)values[at + i].ptr, values[at + i].len);
        }
        flumen_dataflow_types_error_t e;
        bool ok = flumen_dataflow_state_value_set_many(&sname, &es, &e);
        free(es.ptr);
        if (!ok) return host_error(&e, "state", name);
    }
    return FLUMEN_OK;
}

flumen_status flumen_state_get_many_i64(const char *name, const flumen_bytes *keys, size_t n, int64_t *out,
                                        bool *present) {
    flumen_values v;
    if (flumen_state_get_many(name, keys, n, &v)) return FLUMEN_ERR;
    for (size_t i = 0; i < n; i++) {
        out[i] = 0;
        if (present) present[i] = v.values[i].ptr != NULL;
        if (!v.values[i].ptr) continue;
        const uint8_t *p = v.values[i].ptr;
        if (v.values[i].len != 8 || !flumen_read_i64(&p, p + 8, &out[i])) {
            flumen_values_free(&v);
            flumen_msg m;
            msg_prefix(&m);
            flumen_msg_str(flumen_msg_str(flumen_msg_str(&m, "state `"), name), "` holds a value that is not 8 bytes");
            return flumen_fail_msg(FLUMEN_INTERNAL, &m);
        }
    }
    flumen_values_free(&v);
    return FLUMEN_OK;
}

flumen_status flumen_state_set_many_i64(const char *name, const flumen_bytes *keys, const int64_t *values, size_t n) {
    uint8_t *le = xrealloc(NULL, (n ? n : 1) * 8);
    flumen_bytes *vs = xrealloc(NULL, (n ? n : 1) * sizeof *vs);
    for (size_t i = 0; i < n; i++) {
        for (int k = 0; k < 8; k++) le[i * 8 + k] = (uint8_t)((uint64_t)values[i] >> (8 * k));
        vs[i].ptr = le + i * 8;
        vs[i].len = 8;
    }
    flumen_status st = flumen_state_set_many(name, keys, vs, n);
    free(vs);
    free(le);
    return st;
}

/* ---------------------------------------------------------------- blobs */

flumen_status flumen_blob_read_chunks(const flumen_blob_ref *ref, flumen_chunk_fn chunk, void *user) {
    flumen_dataflow_blobs_blob_ref_t r;
    r.digest = owned_list((uint8_t *)ref->digest, 32); /* borrowed for the calls */
    r.size = ref->size;
    r.media_type.ptr = (uint8_t *)ref->media_type.ptr;
    r.media_type.len = ref->media_type.len;
    r.token = owned_list((uint8_t *)ref->token, 16);
    for (uint64_t offset = 0;;) {
        operator_list_u8_t got;
        flumen_dataflow_types_error_t e;
        if (!flumen_dataflow_blobs_read(&r, offset, 65536, &got, &e)) return host_error(&e, "blobs.read", NULL);
        if (got.len == 0) {
            operator_list_u8_free(&got);
            return FLUMEN_OK;
        }
        flumen_status st = chunk(got.ptr, got.len, user);
        offset += got.len;
        operator_list_u8_free(&got);
        if (st != FLUMEN_OK) return st;
    }
}

static flumen_status append_chunk(const uint8_t *data, size_t len, void *user) {
    flumen_buf_append(user, data, len);
    return FLUMEN_OK;
}

flumen_status flumen_blob_read_all(const flumen_blob_ref *ref, flumen_buf *out) {
    return flumen_blob_read_chunks(ref, append_chunk, out);
}

/* ---------------------------------------------------------------- inference */

static flumen_status infer_error(flumen_dataflow_inference_infer_error_t *e, const char *doing, const char *model) {
    static const char *const cases[] = {"unknown model", "mismatch", "deadline exceeded", "refused", "backend"};
    flumen_msg m;
    msg_prefix(&m);
    flumen_msg_str(&m, doing);
    if (model) flumen_msg_str(flumen_msg_str(flumen_msg_str(&m, " `"), model), "`");
    flumen_msg_str(&m, ": ");
    flumen_msg_str(&m, e->tag < 5 ? cases[e->tag] : "error");
    flumen_msg_str(&m, ": ");
    flumen_msg_strn(&m, (const char *)e->val.unknown_model.ptr, e->val.unknown_model.len); /* every case is a string */
    flumen_error_kind kind = e->tag == FLUMEN_DATAFLOW_INFERENCE_INFER_ERROR_UNKNOWN_MODEL ? FLUMEN_INVALID_CONFIG
                             : e->tag == FLUMEN_DATAFLOW_INFERENCE_INFER_ERROR_MISMATCH ? FLUMEN_INVALID_INPUT
                             : e->tag == FLUMEN_DATAFLOW_INFERENCE_INFER_ERROR_REFUSED ? FLUMEN_LIMIT
                                                                                        : FLUMEN_INTERNAL;
    flumen_dataflow_inference_infer_error_free(e);
    return flumen_fail_msg(kind, &m);
}

flumen_status flumen_model_load(const char *name, flumen_model *out) {
    operator_string_t s = {(uint8_t *)name, strlen(name)};
    flumen_dataflow_inference_own_model_t m;
    flumen_dataflow_inference_infer_error_t e;
    if (!flumen_dataflow_inference_load(&s, &m, &e)) return infer_error(&e, "loading model", name);
    *out = (flumen_model)m.__handle;
    return FLUMEN_OK;
}

void flumen_model_drop(flumen_model m) {
    flumen_dataflow_inference_own_model_t own = {(int32_t)m};
    if (m) flumen_dataflow_inference_model_drop_own(own);
}

void flumen_tensor_f32_free(flumen_tensor_f32 *t) {
    free(t->data);
    memset(t, 0, sizeof *t);
}

flumen_status flumen_infer_f32(flumen_model model, const float *x, size_t rows, size_t cols, flumen_tensor_f32 *out) {
    memset(out, 0, sizeof *out);
    uint64_t shape[2] = {rows, cols};
    flumen_dataflow_inference_tensor_t in;
    in.dtype = FLUMEN_DATAFLOW_INFERENCE_TENSOR_TYPE_FLOAT32;
    in.shape.ptr = shape;
    in.shape.len = 2;
    in.data = owned_list((uint8_t *)x, rows * cols * 4); /* little-endian, as wasm is */
    flumen_dataflow_inference_list_tensor_t ins = {&in, 1}, outs;
    flumen_dataflow_inference_infer_error_t e;
    flumen_dataflow_inference_own_model_t own = {(int32_t)model};
    if (!flumen_dataflow_inference_method_model_infer(flumen_dataflow_inference_borrow_model(own), &ins, NULL, &outs, &e))
        return infer_error(&e, "infer", NULL);
    flumen_status st = FLUMEN_OK;
    if (outs.len == 0 || outs.ptr[0].dtype != FLUMEN_DATAFLOW_INFERENCE_TENSOR_TYPE_FLOAT32 ||
        outs.ptr[0].shape.len < 1 || outs.ptr[0].shape.len > 2) {
        st = flumen_fail(FLUMEN_INTERNAL, "infer: the model's first output is not a float32 tensor of 1 or 2 dimensions");
    } else {
        const flumen_dataflow_inference_tensor_t *t = &outs.ptr[0];
        out->rows = (size_t)t->shape.ptr[0];
        out->cols = t->shape.len == 2 ? (size_t)t->shape.ptr[1] : 1;
        if (t->data.len != out->rows * out->cols * 4) {
            st = flumen_fail(FLUMEN_INTERNAL, "infer: the output's data does not match its shape");
        } else {
            out->data = xrealloc(NULL, t->data.len ? t->data.len : 1);
            memcpy(out->data, t->data.ptr, t->data.len);
        }
    }
    flumen_dataflow_inference_list_tensor_free(&outs);
    return st;
}
