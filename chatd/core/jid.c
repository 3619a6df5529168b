/*
 * jid: see jid.h. Splitting follows RFC 7622 §3.1: the resource is
 * everything after the first '/', the localpart everything before the
 * first '@' that comes before that '/'.
 */
#include <string.h>
#include <ctype.h>
#include "jid.h"

int jid_local_valid(const char *local)
{
    size_t n = strlen(local);
    if (n == 0 || n > JID_PART_MAX) return 0;
    for (const unsigned char *p = (const unsigned char *)local; *p; p++) {
        if (*p < 0x21 || *p == 0x7f) return 0;
        if (strchr("\"&'/:<>@", *p)) return 0;
    }
    return 1;
}

static int domain_valid(const char *d)
{
    size_t n = strlen(d);
    if (n == 0 || n > JID_PART_MAX || d[n - 1] == '.' || d[0] == '.') return 0;
    for (const unsigned char *p = (const unsigned char *)d; *p; p++) {
        if (*p < 0x21 || *p == 0x7f) return 0;
        if (strchr("\"&'/<>@\\", *p)) return 0;
    }
    return 1;
}

static int resource_valid(const char *r)
{
    size_t n = strlen(r);
    if (n == 0 || n > JID_PART_MAX) return 0;
    for (const unsigned char *p = (const unsigned char *)r; *p; p++)
        if (*p < 0x20 || *p == 0x7f) return 0;
    return 1;
}

static int copy_part(char *dst, const char *src, size_t len, int fold)
{
    if (len > JID_PART_MAX) return -1;
    for (size_t i = 0; i < len; i++)
        dst[i] = fold ? (char)tolower((unsigned char)src[i]) : src[i];
    dst[len] = '\0';
    return 0;
}

int jid_parse(const char *s, jid *j)
{
    if (!s || !j) return -1;
    j->local[0] = j->domain[0] = j->resource[0] = '\0';
    const char *slash = strchr(s, '/');
    size_t head_len = slash ? (size_t)(slash - s) : strlen(s);
    const char *at = memchr(s, '@', head_len);
    const char *dom = at ? at + 1 : s;
    size_t dom_len = head_len - (size_t)(dom - s);

    if (at && copy_part(j->local, s, (size_t)(at - s), 1) < 0) return -1;
    if (copy_part(j->domain, dom, dom_len, 1) < 0) return -1;
    if (slash && copy_part(j->resource, slash + 1, strlen(slash + 1), 0) < 0) return -1;

    if (at && !jid_local_valid(j->local)) return -1;
    if (!domain_valid(j->domain)) return -1;
    if (slash && !resource_valid(j->resource)) return -1;
    return 0;
}

char *jid_bare(const jid *j, char *out, size_t outlen)
{
    size_t ll = strlen(j->local), dl = strlen(j->domain);
    size_t need = (ll ? ll + 1 : 0) + dl + 1;
    if (need > outlen) return NULL;
    char *p = out;
    if (ll) { memcpy(p, j->local, ll); p += ll; *p++ = '@'; }
    memcpy(p, j->domain, dl + 1);
    return out;
}

char *jid_full(const jid *j, char *out, size_t outlen)
{
    if (!jid_bare(j, out, outlen)) return NULL;
    if (!j->resource[0]) return out;
    size_t bl = strlen(out), rl = strlen(j->resource);
    if (bl + 1 + rl + 1 > outlen) return NULL;
    out[bl] = '/';
    memcpy(out + bl + 1, j->resource, rl + 1);
    return out;
}

char *jid_bare_str(const char *s, char *out, size_t outlen)
{
    jid j;
    if (jid_parse(s, &j) < 0) return NULL;
    return jid_bare(&j, out, outlen);
}

int jid_same_bare(const char *a, const char *b)
{
    jid ja, jb;
    if (jid_parse(a, &ja) < 0 || jid_parse(b, &jb) < 0) return 0;
    return strcmp(ja.local, jb.local) == 0 && strcmp(ja.domain, jb.domain) == 0;
}
