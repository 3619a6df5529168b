/*
 * roster_item: see roster_item.h.
 */
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include "roster_item.h"

static char *xstrdup(const char *s)
{
    char *d = strdup(s);
    if (!d) abort();
    return d;
}

roster_item *roster_item_new(const char *jid)
{
    roster_item *it = calloc(1, sizeof(*it));
    if (!it) abort();
    it->jid = xstrdup(jid);
    return it;
}

void roster_item_clear_groups(roster_item *it)
{
    for (size_t i = 0; i < it->ngroups; i++) free(it->groups[i]);
    free(it->groups);
    it->groups = NULL;
    it->ngroups = 0;
}

void roster_item_free(roster_item *it)
{
    if (!it) return;
    roster_item_clear_groups(it);
    free(it->name);
    free(it->jid);
    free(it);
}

void roster_item_set_name(roster_item *it, const char *name)
{
    free(it->name);
    it->name = (name && *name) ? xstrdup(name) : NULL;
}

void roster_item_add_group(roster_item *it, const char *group)
{
    if (!group || !*group) return;
    for (size_t i = 0; i < it->ngroups; i++)
        if (strcmp(it->groups[i], group) == 0) return;
    char **g = realloc(it->groups, (it->ngroups + 1) * sizeof(*g));
    if (!g) abort();
    it->groups = g;
    it->groups[it->ngroups++] = xstrdup(group);
}

static const char *sub_names[] = { "none", "to", "from", "both" };

const char *roster_sub_name(roster_sub s) { return sub_names[s & 3]; }

int roster_sub_parse(const char *s)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(s, sub_names[i]) == 0) return i;
    return -1;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Decode %XX in [s, s+len) into out (NUL-terminated, at most len+1 bytes). */
static int unescape(const char *s, size_t len, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '%') {
            if (i + 2 >= len) return -1;
            int h = hexval(s[i + 1]), l = hexval(s[i + 2]);
            if (h < 0 || l < 0) return -1;
            out[o++] = (char)(h * 16 + l);
            i += 2;
        } else {
            out[o++] = s[i];
        }
    }
    out[o] = '\0';
    return 0;
}

static void put_escaped(strbuf *out, const char *s)
{
    for (; *s; s++) {
        if (*s == '%' || *s == ';' || *s == ',' || *s == '=')
            sb_printf(out, "%%%02X", (unsigned char)*s);
        else
            sb_putc(out, *s);
    }
}

static int parse_groups(roster_item *it, const char *v, size_t len)
{
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || v[i] == ',') {
            if (i > start) {
                char *g = malloc(i - start + 1);
                if (!g) abort();
                if (unescape(v + start, i - start, g) < 0) { free(g); return -1; }
                roster_item_add_group(it, g);
                free(g);
            }
            start = i + 1;
        }
    }
    return 0;
}

int roster_item_parse(roster_item *it, const char *record)
{
    it->sub = SUB_NONE;
    it->ask = 0;
    roster_item_set_name(it, NULL);
    roster_item_clear_groups(it);

    const char *p = record;
    while (*p) {
        const char *end = strchr(p, ';');
        size_t flen = end ? (size_t)(end - p) : strlen(p);
        const char *eq = memchr(p, '=', flen);
        if (!eq) return -1;
        size_t klen = (size_t)(eq - p);
        const char *v = eq + 1;
        size_t vlen = flen - klen - 1;
        char *val = malloc(vlen + 1);
        if (!val) abort();
        int rc = 0;
        if (klen == 6 && memcmp(p, "groups", 6) == 0) {
            rc = parse_groups(it, v, vlen);
        } else if (unescape(v, vlen, val) < 0) {
            rc = -1;
        } else if (klen == 3 && memcmp(p, "sub", 3) == 0) {
            int s = roster_sub_parse(val);
            if (s < 0) rc = -1; else it->sub = (roster_sub)s;
        } else if (klen == 3 && memcmp(p, "ask", 3) == 0) {
            it->ask = strcmp(val, "subscribe") == 0;
        } else if (klen == 4 && memcmp(p, "name", 4) == 0) {
            roster_item_set_name(it, val);
        }
        free(val);
        if (rc < 0) return -1;
        p = end ? end + 1 : p + flen;
    }
    return 0;
}

void roster_item_format(const roster_item *it, strbuf *out)
{
    sb_printf(out, "sub=%s;ask=%s;name=", roster_sub_name(it->sub),
              it->ask ? "subscribe" : "");
    if (it->name) put_escaped(out, it->name);
    sb_puts(out, ";groups=");
    for (size_t i = 0; i < it->ngroups; i++) {
        if (i) sb_putc(out, ',');
        put_escaped(out, it->groups[i]);
    }
}

int roster_item_outbound(roster_item *it, const char *type)
{
    if (strcmp(type, "subscribe") == 0) {
        if (roster_sub_has_to(it->sub) || it->ask) return 0;
        it->ask = 1;
        return 1;
    }
    if (strcmp(type, "subscribed") == 0) {
        if (roster_sub_has_from(it->sub)) return 0;
        it->sub = roster_sub_with(it->sub, SUB_FROM);
        return 1;
    }
    if (strcmp(type, "unsubscribe") == 0) {
        if (!roster_sub_has_to(it->sub) && !it->ask) return 0;
        it->sub = roster_sub_without(it->sub, SUB_TO);
        it->ask = 0;
        return 1;
    }
    if (strcmp(type, "unsubscribed") == 0) {
        if (!roster_sub_has_from(it->sub)) return 0;
        it->sub = roster_sub_without(it->sub, SUB_FROM);
        return 1;
    }
    return 0;
}

int roster_item_inbound(roster_item *it, const char *type)
{
    if (strcmp(type, "subscribed") == 0) {
        if (!it->ask) return 0;                 /* nobody asked: ignore */
        it->sub = roster_sub_with(it->sub, SUB_TO);
        it->ask = 0;
        return 1;
    }
    if (strcmp(type, "unsubscribe") == 0) {
        if (!roster_sub_has_from(it->sub)) return 0;
        it->sub = roster_sub_without(it->sub, SUB_FROM);
        return 1;
    }
    if (strcmp(type, "unsubscribed") == 0) {
        if (!roster_sub_has_to(it->sub) && !it->ask) return 0;
        it->sub = roster_sub_without(it->sub, SUB_TO);
        it->ask = 0;
        return 1;
    }
    return 0;
}
