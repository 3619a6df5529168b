/*
 * iq_await: iqs the server itself sends to a client (e.g. the XEP-0115
 * disco#info query for an unknown caps hash) and the answers it waits for.
 *
 * An answer is taken only from the full JID the query went to and with
 * its id, so one client cannot answer for another. At most IQ_AWAIT_MAX
 * wait at once; the oldest is given up (callback with NULL) to make room,
 * so a client that never answers costs a bounded amount of memory.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "iq_dispatch.h"
#include "router.h"

#define IQ_AWAIT_MAX 256

typedef struct awaiting {
    struct awaiting *next;
    char *id, *to;
    iq_reply_fn fn;
    void *ud;
} awaiting;

static awaiting *head;
static unsigned count;
static unsigned long seq;

static void drop(awaiting *a, const xs_node *reply)
{
    a->fn(reply, a->ud);
    free(a->id);
    free(a->to);
    free(a);
}

void iq_await_send(chatd *d, rsession *rs, xs_node *iq, iq_reply_fn fn, void *ud)
{
    char id[40];
    snprintf(id, sizeof(id), "srv%lu", ++seq);
    xs_set_attr(iq, "id", id);
    xs_set_attr(iq, "to", rs->full);
    if (!xs_attr_get(iq, "from")) xs_set_attr(iq, "from", d->cfg.domain);
    if (count >= IQ_AWAIT_MAX) {            /* give up the oldest (the tail) */
        awaiting **pp = &head;
        while ((*pp)->next) pp = &(*pp)->next;
        awaiting *old = *pp;
        *pp = NULL;
        count--;
        drop(old, NULL);
    }
    awaiting *a = calloc(1, sizeof(*a));
    if (!a || !(a->id = strdup(id)) || !(a->to = strdup(rs->full))) abort();
    a->fn = fn;
    a->ud = ud;
    a->next = head;
    head = a;
    count++;
    session_send(rs, iq);
}

int iq_await_reply(const xs_node *st)
{
    const char *id = xs_attr_get(st, "id"), *from = xs_attr_get(st, "from");
    if (!id || !from) return 0;
    for (awaiting **pp = &head; *pp; pp = &(*pp)->next)
        if (strcmp((*pp)->id, id) == 0 && strcmp((*pp)->to, from) == 0) {
            awaiting *a = *pp;
            *pp = a->next;
            count--;
            drop(a, st);
            return 1;
        }
    return 0;
}

void iq_await_free(void)
{
    while (head) {
        awaiting *a = head;
        head = a->next;
        drop(a, NULL);
    }
    count = 0;
}
