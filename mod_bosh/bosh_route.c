/*
 * bosh_route.c - pure routing and policy helpers for mod_bosh.
 * See bosh_route.h for why these live apart from httpd.
 */
#include <string.h>
#include <stdlib.h>
#include <stdio.h>
#include <strings.h>
#include "bosh_route.h"

static int node_char_ok(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '_' || c == '.';
}

int bosh_endpoint_parse(const char *url, bosh_endpoint *out,
                        char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    if (strncmp(url, "unix:", 5) == 0) {
        const char *path = url + 5;
        if (path[0] != '/') {
            snprintf(err, errlen, "unix socket path must be absolute: %s", url);
            return -1;
        }
        if (strlen(path) >= sizeof(out->path)) {
            snprintf(err, errlen, "unix socket path too long: %s", url);
            return -1;
        }
        out->is_unix = 1;
        strcpy(out->path, path);
        return 0;
    }
    if (strncmp(url, "tcp:", 4) == 0) {
        const char *hp = url + 4;
        const char *colon = strrchr(hp, ':');
        char *end;
        long port;
        size_t hlen;

        if (!colon || colon == hp) {
            snprintf(err, errlen, "expected tcp:host:port, got %s", url);
            return -1;
        }
        hlen = (size_t)(colon - hp);
        /* [v6addr]:port */
        if (hp[0] == '[' && hlen >= 2 && hp[hlen - 1] == ']') {
            hp++;
            hlen -= 2;
        }
        if (hlen == 0 || hlen >= sizeof(out->host)) {
            snprintf(err, errlen, "bad host in %s", url);
            return -1;
        }
        port = strtol(colon + 1, &end, 10);
        if (*end || end == colon + 1 || port < 1 || port > 65535) {
            snprintf(err, errlen, "bad port in %s", url);
            return -1;
        }
        memcpy(out->host, hp, hlen);
        out->host[hlen] = '\0';
        out->port = (int)port;
        return 0;
    }
    snprintf(err, errlen, "relay URL must start with unix: or tcp: (%s)", url);
    return -1;
}

int bosh_sid_node(const char *sid, char *out, size_t outlen)
{
    const char *dash;
    size_t n, i;

    if (!sid || !(dash = strchr(sid, '-')))
        return -1;
    n = (size_t)(dash - sid);
    if (n == 0 || n >= outlen || n >= BOSH_NODE_ID_MAX)
        return -1;
    for (i = 0; i < n; i++)
        if (!node_char_ok(sid[i]))
            return -1;
    memcpy(out, sid, n);
    out[n] = '\0';
    return 0;
}

int bosh_node_id_valid(const char *id)
{
    size_t i, n = strlen(id);

    if (n == 0 || n >= BOSH_NODE_ID_MAX)
        return 0;
    for (i = 0; i < n; i++)
        if (!node_char_ok(id[i]))
            return 0;
    return 1;
}

int bosh_pick_node(unsigned cursor, const int *up, int n)
{
    int i;

    if (n <= 0)
        return -1;
    for (i = 0; i < n; i++) {
        int idx = (int)((cursor + (unsigned)i) % (unsigned)n);
        if (up[idx])
            return idx;
    }
    return -1;
}

unsigned bosh_retry_after(unsigned base, unsigned spread, uint32_t rnd)
{
    unsigned v = base + (spread ? rnd % (spread + 1) : 0);
    return v ? v : 1;
}

int bosh_raw_has_ver(const char *data, size_t len)
{
    const char *p = data, *end = data + len;
    char quote = 0;

    /* Find "<body" (possibly prefixed, e.g. <b:body) after any prolog. */
    while (p < end) {
        const char *lt = memchr(p, '<', (size_t)(end - p));
        const char *name;
        if (!lt)
            return 0;
        name = lt + 1;
        if (name < end && (*name == '?' || *name == '!')) {
            p = name;
            continue;
        }
        /* skip an optional prefix */
        while (name < end && *name != ':' && *name != ' ' && *name != '>' &&
               *name != '/' && *name != '\t' && *name != '\r' && *name != '\n')
            name++;
        if (name < end && *name == ':')
            name++;
        else
            name = lt + 1;
        if (end - name >= 4 && memcmp(name, "body", 4) == 0) {
            p = name + 4;
            break;
        }
        return 0;
    }
    /* Walk the start tag's attributes, outside quoted values. */
    for (; p < end; p++) {
        char c = *p;
        if (quote) {
            if (c == quote)
                quote = 0;
            continue;
        }
        if (c == '\'' || c == '"') {
            quote = c;
            continue;
        }
        if (c == '>')
            return 0;
        if ((c == ' ' || c == '\t' || c == '\r' || c == '\n') &&
            end - p > 3 && memcmp(p + 1, "ver", 3) == 0) {
            const char *q = p + 4;
            while (q < end && (*q == ' ' || *q == '\t' || *q == '\r' || *q == '\n'))
                q++;
            if (q < end && *q == '=')
                return 1;
        }
    }
    return 0;
}

int bosh_origin_allowed(const char *origin, const char *const *allowed, int n)
{
    int i;

    if (!origin || !*origin)
        return 0;
    for (i = 0; i < n; i++) {
        if (strcmp(allowed[i], "*") == 0 || strcasecmp(allowed[i], origin) == 0)
            return 1;
    }
    return 0;
}

/* Copy the host of [p, end) lowercased and without IPv6 brackets. */
static int copy_host(const char *p, size_t n, char *out, size_t outlen)
{
    size_t i;

    if (n >= 2 && p[0] == '[' && p[n - 1] == ']') {
        p++;
        n -= 2;
    }
    if (n == 0 || n >= outlen)
        return -1;
    for (i = 0; i < n; i++)
        out[i] = (char)((p[i] >= 'A' && p[i] <= 'Z') ? p[i] - 'A' + 'a' : p[i]);
    out[n] = '\0';
    return 0;
}

int bosh_origin_is_self(const char *origin, const char *scheme,
                        const char *host, unsigned port)
{
    char oh[256], sh[256];
    const char *h, *hend, *colon = NULL, *q;
    unsigned oport, dport;
    size_t sl;

    if (!origin || !scheme || !host)
        return 0;
    sl = strlen(scheme);
    if (strncasecmp(origin, scheme, sl) != 0 || strncmp(origin + sl, "://", 3) != 0)
        return 0;
    dport = strcasecmp(scheme, "https") == 0 ? 443 : 80;
    h = origin + sl + 3;
    if (*h == '[') {
        hend = strchr(h, ']');
        if (!hend)
            return 0;
        hend++;
    }
    else {
        hend = h + strcspn(h, ":");
    }
    if (*hend == ':')
        colon = hend;
    else if (*hend != '\0')
        return 0;                       /* a path, user info, query ... */
    oport = dport;
    if (colon) {
        unsigned long v = 0;
        if (!colon[1])
            return 0;
        for (q = colon + 1; *q; q++) {
            if (*q < '0' || *q > '9' || (v = v * 10 + (unsigned)(*q - '0')) > 65535)
                return 0;
        }
        oport = (unsigned)v;
    }
    if (copy_host(h, (size_t)(hend - h), oh, sizeof(oh)) != 0 ||
        copy_host(host, strlen(host), sh, sizeof(sh)) != 0)
        return 0;
    return strcmp(oh, sh) == 0 && oport == (port ? port : dport);
}

int bosh_prebind_policy(int method_post, const char *sec_fetch_site,
                        const char *origin, int origin_self, int origin_listed,
                        const char **why)
{
    int same_origin_fetch = sec_fetch_site &&
                            strcasecmp(sec_fetch_site, "same-origin") == 0;

    *why = NULL;
    if (!method_post && !same_origin_fetch) {
        *why = "prebind takes POST (GET only from a same-origin script, "
               "Sec-Fetch-Site: same-origin)";
        return 405;
    }
    if (sec_fetch_site && !same_origin_fetch &&
        strcasecmp(sec_fetch_site, "none") != 0) {
        if (strcasecmp(sec_fetch_site, "same-site") != 0 &&
            strcasecmp(sec_fetch_site, "cross-site") != 0) {
            *why = "unknown Sec-Fetch-Site value";
            return 403;
        }
        if (!origin || !origin_listed) {
            *why = "cross-site request (Sec-Fetch-Site) from an origin not "
                   "listed in BoshAllowOrigin";
            return 403;
        }
    }
    if (origin && !origin_self && !origin_listed) {
        *why = "Origin is neither this site nor listed in BoshAllowOrigin";
        return 403;
    }
    return 0;
}
