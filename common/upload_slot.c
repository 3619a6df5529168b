/*
 * upload_slot: sign and check XEP-0363 upload slots, clean file names
 * (see upload_slot.h). OpenSSL's HMAC and CRYPTO_memcmp; nothing else.
 */
#include "upload_slot.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

int upload_id_valid(const char *id)
{
    size_t i;
    if (!id) return 0;
    for (i = 0; i < UPLOAD_ID_LEN; i++)
        if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f')))
            return 0;
    return id[UPLOAD_ID_LEN] == '\0';
}

static int name_byte_ok(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
}

void upload_name_sanitize(const char *in, char *out)
{
    char tmp[UPLOAD_NAME_MAX * 4 + 1];
    const char *base = in ? in : "";
    const char *p;
    size_t n = 0, len;

    for (p = base; *p; p++)
        if (*p == '/' || *p == '\\')
            base = p + 1;
    /* Map, collapse runs of '_', drop leading dots and dashes. */
    for (p = base; *p && n < sizeof(tmp) - 1; p++) {
        unsigned char c = (unsigned char)*p;
        char m = name_byte_ok(c) ? (char)c : '_';
        if (n == 0 && (m == '.' || m == '-'))
            continue;
        if (m == '_' && n > 0 && tmp[n - 1] == '_')
            continue;
        tmp[n++] = m;
    }
    tmp[n] = '\0';
    /* Too long: keep the head and the extension (if it is short). */
    len = n;
    if (len > UPLOAD_NAME_MAX) {
        const char *dot = strrchr(tmp, '.');
        size_t ext = dot ? strlen(dot) : 0;
        if (ext > 16 || ext >= UPLOAD_NAME_MAX)
            ext = 0;
        memmove(tmp + UPLOAD_NAME_MAX - ext, tmp + len - ext, ext);
        len = UPLOAD_NAME_MAX;
        tmp[len] = '\0';
        /* The cut may leave "__" at the seam or a leading '.' cannot
         * appear (the head is unchanged); collapse the seam. */
        {
            size_t i, j = 0;
            for (i = 0; i < len; i++) {
                if (tmp[i] == '_' && j > 0 && tmp[j - 1] == '_')
                    continue;
                tmp[j++] = tmp[i];
            }
            tmp[j] = '\0';
            len = j;
        }
    }
    if (len == 0 || strcmp(tmp, "_") == 0)
        strcpy(out, "file");
    else
        memcpy(out, tmp, len + 1);
}

int upload_name_is_clean(const char *name)
{
    char s[UPLOAD_NAME_MAX + 1];
    if (!name || !*name || strlen(name) > UPLOAD_NAME_MAX)
        return 0;
    upload_name_sanitize(name, s);
    return strcmp(s, name) == 0;
}

int upload_ctype_normalize(const char *in, char *out)
{
    size_t n = 0;
    const char *e;
    if (!in) in = "";
    while (*in == ' ' || *in == '\t') in++;
    e = in + strlen(in);
    while (e > in && (e[-1] == ' ' || e[-1] == '\t')) e--;
    if ((size_t)(e - in) > UPLOAD_CTYPE_MAX)
        return -1;
    for (; in < e; in++) {
        unsigned char c = (unsigned char)*in;
        if (c < 0x20 || c >= 0x7f)
            return -1;
        out[n++] = (char)((c >= 'A' && c <= 'Z') ? c + 32 : c);
    }
    out[n] = '\0';
    return 0;
}

/* "<len>:<bytes>\n" for each field, a version tag first. Returns the new
 * length, or (size_t)-1 when buf is full. */
static size_t put_field(char *buf, size_t n, size_t cap, const char *v)
{
    size_t len = strlen(v);
    int hl = snprintf(buf + n, cap - n, "%zu:", len);
    if (hl < 0 || (size_t)hl >= cap - n || len + 1 > cap - n - (size_t)hl)
        return (size_t)-1;
    n += (size_t)hl;
    memcpy(buf + n, v, len);
    n += len;
    buf[n++] = '\n';
    return n;
}

static int mac(const unsigned char *key, size_t keylen, const upload_slot *s,
               unsigned char out[32])
{
    char buf[2048], size[32], exp[32];
    const char *fields[7];
    unsigned int outlen = 0;
    size_t n = 0, i;

    if (!key || keylen < UPLOAD_KEY_MIN || !upload_id_valid(s->id) ||
        !upload_name_is_clean(s->name) || !s->user || !s->content_type)
        return -1;
    snprintf(size, sizeof(size), "%llu", s->size);
    snprintf(exp, sizeof(exp), "%lld", s->expires);
    fields[0] = "xep0363-slot-v1";
    fields[1] = s->id;
    fields[2] = s->name;
    fields[3] = size;
    fields[4] = s->content_type;
    fields[5] = exp;
    fields[6] = s->user;
    for (i = 0; i < 7; i++)
        if ((n = put_field(buf, n, sizeof(buf), fields[i])) == (size_t)-1)
            return -1;
    if (!HMAC(EVP_sha256(), key, (int)keylen, (const unsigned char *)buf, n,
              out, &outlen) || outlen != 32)
        return -1;
    return 0;
}

int upload_slot_sign(const unsigned char *key, size_t keylen,
                     const upload_slot *s, char *sig)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char m[32];
    int i;
    if (mac(key, keylen, s, m) != 0)
        return -1;
    for (i = 0; i < 32; i++) {
        sig[2 * i] = hex[m[i] >> 4];
        sig[2 * i + 1] = hex[m[i] & 15];
    }
    sig[UPLOAD_SIG_HEX] = '\0';
    OPENSSL_cleanse(m, sizeof(m));
    return 0;
}

int upload_slot_verify(const unsigned char *key, size_t keylen,
                       const upload_slot *s, const char *sig)
{
    char want[UPLOAD_SIG_HEX + 1];
    int ok;
    if (!sig || strlen(sig) != UPLOAD_SIG_HEX)
        return 0;
    if (upload_slot_sign(key, keylen, s, want) != 0)
        return 0;
    /* Same length by now: the time depends on nothing the client chose. */
    ok = CRYPTO_memcmp(want, sig, UPLOAD_SIG_HEX) == 0;
    OPENSSL_cleanse(want, sizeof(want));
    return ok;
}

int upload_slot_expired(const upload_slot *s, long long now)
{
    return s->expires < now;
}

const char *upload_serve_type(const char *name)
{
    static const struct { const char *ext, *type; } safe[] = {
        { "png", "image/png" }, { "jpg", "image/jpeg" }, { "jpeg", "image/jpeg" },
        { "gif", "image/gif" }, { "webp", "image/webp" }, { "avif", "image/avif" },
        { "mp3", "audio/mpeg" }, { "ogg", "audio/ogg" }, { "oga", "audio/ogg" },
        { "opus", "audio/ogg" }, { "m4a", "audio/mp4" }, { "wav", "audio/wav" },
        { "mp4", "video/mp4" }, { "webm", "video/webm" }, { "ogv", "video/ogg" },
        { "pdf", "application/pdf" }, { "txt", "text/plain; charset=utf-8" },
    };
    const char *dot = name ? strrchr(name, '.') : NULL;
    size_t i;
    if (dot)
        for (i = 0; i < sizeof(safe) / sizeof(safe[0]); i++)
            if (strcasecmp(dot + 1, safe[i].ext) == 0)
                return safe[i].type;
    return "application/octet-stream";
}

size_t upload_query_escape(const char *s, char *out, size_t outlen)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = 0;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        int plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                    (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' || c == '~';
        if (n + (plain ? 1 : 3) >= outlen)
            return (size_t)-1;
        if (plain) {
            out[n++] = (char)c;
        } else {
            out[n++] = '%';
            out[n++] = hex[c >> 4];
            out[n++] = hex[c & 15];
        }
    }
    if (n >= outlen)
        return (size_t)-1;
    out[n] = '\0';
    return n;
}
