/*
 * pep_rules.c: XEP-0163 node configuration and access rules (pure; see
 * pep_rules.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "pep_rules.h"

static const char *access_names[] = { "open", "presence", "whitelist" };
static const char *send_names[] = { "never", "on_sub", "on_sub_and_presence" };

const char *pep_access_name(int a)
{
    return a >= 0 && a <= PEP_ACCESS_WHITELIST ? access_names[a] : "whitelist";
}

const char *pep_send_last_name(int s)
{
    return s >= 0 && s <= PEP_SEND_ON_SUB_AND_PRESENCE ? send_names[s] : "never";
}

static int lookup(const char *const *names, int n, const char *v)
{
    for (int i = 0; i < n; i++)
        if (strcmp(names[i], v) == 0) return i;
    return -1;
}

void pep_config_default(const char *node, unsigned cap, pep_config *c)
{
    memset(c, 0, sizeof(*c));
    c->access = PEP_ACCESS_PRESENCE;
    c->max_items = 1;
    c->send_last = PEP_SEND_ON_SUB_AND_PRESENCE;
    if (node && (strcmp(node, "urn:xmpp:bookmarks:1") == 0 ||
                 strcmp(node, "storage:bookmarks") == 0)) {
        c->access = PEP_ACCESS_WHITELIST;
        c->max_items = cap;
        c->send_last = PEP_SEND_NEVER;
    }
    if (c->max_items > cap) c->max_items = cap;
    if (c->max_items < 1) c->max_items = 1;
}

void pep_config_format(const pep_config *c, int only_mask, char *buf, size_t len)
{
    int n = snprintf(buf, len, ";");
    if (!only_mask || (c->mask & PEP_F_ACCESS))
        n += snprintf(buf + n, len > (size_t)n ? len - n : 0, "access_model=%s;",
                      pep_access_name(c->access));
    if (!only_mask || (c->mask & PEP_F_MAX))
        n += snprintf(buf + n, len > (size_t)n ? len - n : 0, "max_items=%u;", c->max_items);
    if (!only_mask || (c->mask & PEP_F_SEND_LAST))
        snprintf(buf + n, len > (size_t)n ? len - n : 0, "send_last_published_item=%s;",
                 pep_send_last_name(c->send_last));
    if (only_mask && !c->mask) buf[0] = '\0';   /* no precondition */
}

/* The value of ";key=" in s, copied into v; 0 if absent. */
static int field(const char *s, const char *key, char *v, size_t vlen)
{
    char needle[64];
    snprintf(needle, sizeof(needle), ";%s=", key);
    const char *p = strstr(s, needle);
    if (!p) return 0;
    p += strlen(needle);
    size_t n = strcspn(p, ";");
    if (n >= vlen) n = vlen - 1;
    memcpy(v, p, n);
    v[n] = '\0';
    return 1;
}

void pep_config_parse(const char *s, pep_config *c)
{
    char v[64];
    int i;
    if (!s) return;
    if (field(s, "access_model", v, sizeof(v)) &&
        (i = lookup(access_names, 3, v)) >= 0) c->access = i;
    if (field(s, "max_items", v, sizeof(v))) {
        unsigned long n = strtoul(v, NULL, 10);
        if (n >= 1 && n <= 1000000) c->max_items = (unsigned)n;
    }
    if (field(s, "send_last_published_item", v, sizeof(v)) &&
        (i = lookup(send_names, 3, v)) >= 0) c->send_last = i;
}

int pep_form_read(const xs_node *x, unsigned cap, pep_config *c)
{
    if (!x) return 0;
    for (xs_node *f = xs_child(x, NS_XDATA, "field"); f; f = xs_next_elem(f, NS_XDATA, "field")) {
        const char *var = xs_attr_get(f, "var");
        xs_node *ve = xs_child(f, NS_XDATA, "value");
        if (!var || !ve) continue;
        char *v = xs_text(ve);
        int bad = 0, i;
        if (strcmp(var, "pubsub#access_model") == 0) {
            if ((i = lookup(access_names, 3, v)) < 0) bad = 1;
            else { c->access = i; c->mask |= PEP_F_ACCESS; }
        } else if (strcmp(var, "pubsub#max_items") == 0) {
            char *end;
            unsigned long n = strcmp(v, "max") == 0 ? cap : strtoul(v, &end, 10);
            if (strcmp(v, "max") != 0 && (!*v || *end || v[0] == '-')) bad = 1;
            else if (n < 1 || n > cap) bad = 1;
            else { c->max_items = (unsigned)n; c->mask |= PEP_F_MAX; }
        } else if (strcmp(var, "pubsub#persist_items") == 0) {
            /* Every item is stored; a node that forgets cannot be promised. */
            if (strcmp(v, "true") != 0 && strcmp(v, "1") != 0) bad = 1;
        } else if (strcmp(var, "pubsub#send_last_published_item") == 0) {
            if ((i = lookup(send_names, 3, v)) < 0) bad = 1;
            else { c->send_last = i; c->mask |= PEP_F_SEND_LAST; }
        }
        free(v);
        if (bad) return -1;
    }
    return 0;
}

int pep_access_allows(int access, int is_owner, int has_presence_sub)
{
    if (is_owner) return 1;
    switch (access) {
    case PEP_ACCESS_OPEN:     return 1;
    case PEP_ACCESS_PRESENCE: return has_presence_sub;
    default:                  return 0;
    }
}

int pep_node_name_ok(const char *node)
{
    if (!node) return 0;
    size_t n = strlen(node);
    if (n < 1 || n > 255) return 0;
    for (const unsigned char *p = (const unsigned char *)node; *p; p++)
        if (*p <= ' ' || *p == 0x7f) return 0;
    return 1;
}
