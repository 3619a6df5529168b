/*
 * bosh_auth.c - pure string helpers for vouching: the BoshAuthJID template,
 * the BoshAuthDisplayName source, the display name clean-up. No httpd
 * here; bosh_sso.c does the request side. See bosh_auth.h.
 */
#include <string.h>
#include <strings.h>

#include "bosh_auth.h"

int bosh_auth_template_ok(const char *tmpl)
{
    int users = 0;

    if (!tmpl || !*tmpl || strlen(tmpl) >= BOSH_AUTH_JID_MAX)
        return 0;
    for (; *tmpl; tmpl++) {
        if (*tmpl != '%')
            continue;
        tmpl++;
        if (*tmpl == 'u')
            users++;
        else if (*tmpl != '%')
            return 0;
    }
    return users == 1;
}

static int user_char_ok(unsigned char c)
{
    if (c <= 0x20 || c == 0x7f)
        return 0;
    return strchr("\"&'/:<>@", c) == NULL;
}

int bosh_auth_map_jid(const char *tmpl, const char *user, char *out, size_t outlen)
{
    size_t n = 0, ulen;
    const char *u;

    if (!user || !*user || !bosh_auth_template_ok(tmpl) || outlen == 0)
        return -1;
    for (u = user; *u; u++)
        if (!user_char_ok((unsigned char)*u))
            return -1;
    ulen = strlen(user);
    for (; *tmpl; tmpl++) {
        const char *piece = tmpl;
        size_t plen = 1;
        if (*tmpl == '%') {
            tmpl++;
            if (*tmpl == 'u') {
                piece = user;
                plen = ulen;
            }
            /* else "%%": piece is the first '%' */
        }
        if (n + plen >= outlen)
            return -1;
        memcpy(out + n, piece, plen);
        n += plen;
    }
    out[n] = '\0';
    return 0;
}

bosh_name_source bosh_auth_name_source(const char *spec, const char **key)
{
    *key = NULL;
    if (!spec)
        return BOSH_NAME_NONE;
    if (strncasecmp(spec, "header:", 7) == 0 && spec[7]) {
        *key = spec + 7;
        return BOSH_NAME_HEADER;
    }
    if (strncasecmp(spec, "env:", 4) == 0 && spec[4]) {
        *key = spec + 4;
        return BOSH_NAME_ENV;
    }
    return BOSH_NAME_NONE;
}

size_t bosh_auth_clean_name(const char *in, char *out, size_t outlen)
{
    size_t n = 0;

    if (!outlen)
        return 0;
    out[0] = '\0';
    if (!in)
        return 0;
    while (*in == ' ' || *in == '\t')
        in++;
    for (; *in; in++) {
        unsigned char c = (unsigned char)*in;
        if (c < 0x20 || c == 0x7f)
            continue;
        if (n + 1 >= outlen)
            break;
        out[n++] = (char)c;
    }
    /* Do not end inside a UTF-8 sequence: drop a cut-off lead/continuation. */
    if (n && ((unsigned char)out[n - 1] & 0x80)) {
        size_t start = n;
        while (start > 0 && ((unsigned char)out[start - 1] & 0xC0) == 0x80)
            start--;
        if (start > 0) {
            unsigned char lead = (unsigned char)out[start - 1];
            size_t want = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
            if (n - (start - 1) < want)
                n = start - 1;
        }
        else {
            n = 0;
        }
    }
    while (n && (out[n - 1] == ' ' || out[n - 1] == '\t'))
        n--;
    out[n] = '\0';
    return n;
}
