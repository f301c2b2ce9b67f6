/*
 * Byte strings in the shell: keys and values are any bytes, shown as text
 * when they are UTF-8 and escaped or base64'd when they are not.  A small
 * growable buffer for building messages and output.  No policy here about
 * where the bytes go.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "shell/shell.h"

int sbuf_add(struct sbuf *b, const void *data, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p)
            return -ENOMEM;
        b->p = p;
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->n, data, n);
    b->n += n;
    b->p[b->n] = '\0';
    return 0;
}

int sbuf_puts(struct sbuf *b, const char *s)
{
    return sbuf_add(b, s, strlen(s));
}

int sbuf_printf(struct sbuf *b, const char *fmt, ...)
{
    va_list ap;
    char small[256];
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -EINVAL;
    if ((size_t)n < sizeof small)
        return sbuf_add(b, small, (size_t)n);
    char *big = malloc((size_t)n + 1);
    if (!big)
        return -ENOMEM;
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    int rc = sbuf_add(b, big, (size_t)n);
    free(big);
    return rc;
}

void sbuf_free(struct sbuf *b)
{
    free(b->p);
    b->p = NULL;
    b->n = b->cap = 0;
}

/* utf8_len: length of the valid UTF-8 sequence at s (max n bytes), 0 if invalid. */
static size_t utf8_len(const uint8_t *s, size_t n)
{
    uint8_t c = s[0];
    size_t len;
    uint32_t cp;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    /* overlong forms, surrogates and beyond U+10FFFF are not UTF-8 */
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

int bytes_utf8(const void *s, size_t n)
{
    const uint8_t *p = s;
    size_t i = 0;
    while (i < n) {
        /* control bytes other than tab and line ends make it binary, not text */
        if ((p[i] < 0x20 && p[i] != '\t' && p[i] != '\n' && p[i] != '\r') || p[i] == 0x7f)
            return 0;
        size_t l = utf8_len(p + i, n - i);
        if (!l)
            return 0;
        i += l;
    }
    return 1;
}

static int escape_byte(struct sbuf *out, uint8_t c)
{
    switch (c) {
    case '\n':
        return sbuf_puts(out, "\\n");
    case '\t':
        return sbuf_puts(out, "\\t");
    case '\r':
        return sbuf_puts(out, "\\r");
    default:
        return sbuf_printf(out, "\\x%02x", c);
    }
}

int bytes_escape(struct sbuf *out, const void *s, size_t n)
{
    const uint8_t *p = s;
    size_t i = 0;
    int rc = 0;
    while (i < n && rc == 0) {
        size_t l = utf8_len(p + i, n - i);
        if (l == 1 && p[i] >= 0x20 && p[i] != 0x7f) {
            rc = sbuf_add(out, p + i, 1);
        } else if (l > 1) {
            rc = sbuf_add(out, p + i, l);
        } else {
            rc = escape_byte(out, p[i]);
            l = 1;
        }
        i += l;
    }
    return rc;
}

int bytes_quote(struct sbuf *out, const void *s, size_t n, size_t max)
{
    const uint8_t *p = s;
    size_t show = n > max ? max : n;
    bool text = bytes_utf8(s, show);
    int rc = sbuf_puts(out, "\"");
    for (size_t i = 0; i < show && rc == 0;) {
        /* whole characters when the bytes are text, else byte by byte */
        size_t l = text ? utf8_len(p + i, show - i) : 1;
        if (p[i] == '"')
            rc = sbuf_puts(out, "\\\"");
        else
            rc = bytes_escape(out, p + i, l);
        i += l ? l : 1;
    }
    if (rc == 0)
        rc = sbuf_puts(out, n > max ? "\"..." : "\"");
    return rc;
}

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int bytes_base64(struct sbuf *out, const void *s, size_t n)
{
    const uint8_t *p = s;
    char q[4];
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < n)
            v |= p[i + 2];
        q[0] = b64[(v >> 18) & 63];
        q[1] = b64[(v >> 12) & 63];
        q[2] = i + 1 < n ? b64[(v >> 6) & 63] : '=';
        q[3] = i + 2 < n ? b64[v & 63] : '=';
        rc = sbuf_add(out, q, 4);
    }
    if (rc == 0 && n == 0)
        rc = sbuf_add(out, "", 0);
    return rc;
}

long bytes_unbase64(const char *s, size_t n, uint8_t *out)
{
    uint32_t v = 0;
    int bits = 0;
    long o = 0;
    for (size_t i = 0; i < n; i++) {
        const char *c = s[i] ? strchr(b64, s[i]) : NULL;
        if (s[i] == '=')
            break;
        if (s[i] == '\n' || s[i] == '\r' || s[i] == ' ')
            continue;
        if (!c)
            return -1;
        v = (v << 6) | (uint32_t)(c - b64);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(v >> bits);
        }
    }
    return o;
}

int bytes_cmp(const void *a, size_t an, const void *b, size_t bn)
{
    size_t m = an < bn ? an : bn;
    int c = m ? memcmp(a, b, m) : 0;
    if (c)
        return c;
    return an < bn ? -1 : an > bn;
}

void *bytes_dup(const void *s, size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p && n)
        memcpy(p, s, n);
    return p;
}

const uint8_t *value_bytes(sqlite3_value *v, size_t *n)
{
    switch (sqlite3_value_type(v)) {
    case SQLITE_NULL:
        *n = 0;
        return NULL;
    case SQLITE_BLOB: {
        const uint8_t *p = sqlite3_value_blob(v);
        *n = (size_t)sqlite3_value_bytes(v);
        return p ? p : (const uint8_t *)"";
    }
    default: {
        const uint8_t *p = sqlite3_value_text(v);
        *n = (size_t)sqlite3_value_bytes(v);
        return p ? p : (const uint8_t *)"";
    }
    }
}

void result_bytes(sqlite3_context *ctx, const void *s, size_t n)
{
    if (bytes_utf8(s, n))
        sqlite3_result_text(ctx, n ? s : "", (int)n, SQLITE_TRANSIENT);
    else
        sqlite3_result_blob(ctx, s, (int)n, SQLITE_TRANSIENT);
}
