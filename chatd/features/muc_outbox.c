/*
 * muc_outbox: see muc_outbox.h.
 */
#include <stdlib.h>
#include <string.h>
#include "muc_outbox.h"

mob_box *mob_find(mob_set *s, const char *jid)
{
    for (mob_box *b = s->boxes; b; b = b->next)
        if (strcmp(b->jid, jid) == 0) return b;
    return NULL;
}

mob_box *mob_get(mob_set *s, const char *jid, unsigned keep)
{
    mob_box *b = mob_find(s, jid);
    if (b) { b->keep = keep; return b; }
    b = calloc(1, sizeof(*b));
    if (!b || !(b->jid = strdup(jid))) abort();
    b->keep = keep;
    b->next = s->boxes;
    s->boxes = b;
    return b;
}

/* Drop b's oldest entry (an in-flight one counts out of the flight: the
 * write's success then removes only what is left of it). */
static void drop_oldest(mob_set *s, mob_box *b)
{
    s->bytes -= b->len[0];
    free(b->e[0]);
    memmove(b->e, b->e + 1, (b->n - 1) * sizeof(*b->e));
    memmove(b->len, b->len + 1, (b->n - 1) * sizeof(*b->len));
    b->n--;
    if (b->inflight) b->inflight--;
}

unsigned mob_append(mob_set *s, mob_box *b, const char *xml, size_t len)
{
    if (b->n == b->alloc) {
        b->alloc = b->alloc ? b->alloc * 2 : 8;
        b->e = realloc(b->e, b->alloc * sizeof(*b->e));
        b->len = realloc(b->len, b->alloc * sizeof(*b->len));
        if (!b->e || !b->len) abort();
    }
    char *c = malloc(len + 1);
    if (!c) abort();
    memcpy(c, xml, len);
    c[len] = '\0';
    b->e[b->n] = c;
    b->len[b->n] = len;
    b->n++;
    s->bytes += len;
    while (b->n > (b->keep ? b->keep : 1)) drop_oldest(s, b);
    unsigned dropped = 0;
    while (s->cap_bytes && s->bytes > s->cap_bytes) {
        mob_box *from = b->n > 1 ? b : NULL;     /* keep the entry just added */
        for (mob_box *o = s->boxes; !from && o; o = o->next)
            if (o != b && o->n) from = o;
        if (!from) from = b;                      /* it alone is over the cap */
        drop_oldest(s, from);
        dropped++;
        if (!b->n) break;
    }
    return dropped;
}

void mob_sent(mob_box *b) { b->inflight = b->n; }

void mob_written(mob_set *s, mob_box *b)
{
    while (b->inflight) drop_oldest(s, b);
    b->attempts = 0;
    b->not_before = 0;
}

uint64_t mob_backoff_ms(unsigned attempts)
{
    uint64_t ms = MOB_BACKOFF_MIN_MS;
    for (unsigned i = 1; i < attempts && ms < MOB_BACKOFF_MAX_MS; i++) ms *= 2;
    return ms < MOB_BACKOFF_MAX_MS ? ms : MOB_BACKOFF_MAX_MS;
}

void mob_failed(mob_box *b, uint64_t now)
{
    b->inflight = 0;
    b->attempts++;
    b->not_before = now + mob_backoff_ms(b->attempts);
}

int mob_due(const mob_box *b, uint64_t now)
{
    return b->n && !b->inflight && now >= b->not_before;
}

static void box_free(mob_box *b)
{
    for (unsigned i = 0; i < b->n; i++) free(b->e[i]);
    free(b->e);
    free(b->len);
    free(b->jid);
    free(b);
}

void mob_release(mob_set *s, mob_box *b)
{
    if (b->n || b->inflight) return;
    for (mob_box **pp = &s->boxes; *pp; pp = &(*pp)->next)
        if (*pp == b) { *pp = b->next; box_free(b); return; }
}

void mob_sweep(mob_set *s, void (*gone)(mob_box *b, void *ud), void *ud)
{
    for (mob_box **pp = &s->boxes; *pp; ) {
        mob_box *b = *pp;
        if (b->n || b->inflight) { pp = &b->next; continue; }
        *pp = b->next;
        if (gone) gone(b, ud);
        box_free(b);
    }
}

void mob_free_all(mob_set *s)
{
    while (s->boxes) {
        mob_box *b = s->boxes;
        s->boxes = b->next;
        box_free(b);
    }
    s->bytes = 0;
}
