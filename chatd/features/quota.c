/*
 * quota: see quota.h.
 */
#include "quota.h"

static unsigned long long share_of(unsigned long long cap, unsigned pct,
                                   unsigned long long floor)
{
    unsigned long long s = cap / 100 * pct + cap % 100 * pct / 100;
    if (s < floor) s = floor;
    return s > cap ? cap : s;
}

offline_limits quota_offline_limits(const chatd_config *c)
{
    offline_limits l;
    unsigned pct = c->offline_sender_share ? c->offline_sender_share : 100;
    if (pct > 100) pct = 100;
    l.max_n = c->offline_max_messages;
    l.max_bytes = c->offline_max_bytes;
    l.share_n = share_of(l.max_n, pct, 1);
    l.share_bytes = share_of(l.max_bytes, pct, 0);
    return l;
}

int quota_offline_admits(const offline_limits *l, const offline_usage *u,
                         unsigned long long len)
{
    return u->n + 1 <= l->max_n && u->bytes + len <= l->max_bytes &&
           u->sender_n + 1 <= l->share_n && u->sender_bytes + len <= l->share_bytes;
}

int quota_roster_admits(unsigned items_before, int is_new, unsigned cap)
{
    return !is_new || items_before < cap;
}

int quota_directed_admits(unsigned count, int known, unsigned cap)
{
    return known || count < cap;
}
