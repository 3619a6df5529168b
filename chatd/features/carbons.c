/*
 * carbons.c: XEP-0280 Message Carbons (see carbons.h).
 *
 * Why here and not in router.c: the router decides where a message goes;
 * this file only decides who else of the same user gets a copy, so the
 * rule (carbons_eligible) stays pure and unit-tested.
 *
 * Messages between two resources of the same account are not copied:
 * every resource of that user would get it twice (once as the message,
 * once as a carbon), and XEP-0280 leaves that case to the server.
 */
#include <string.h>
#include "carbons.h"
#include "router.h"
#include "xmpp_internal.h"

#define NS_HINTS    "urn:xmpp:hints"
#define NS_MUC_USER "http://jabber.org/protocol/muc#user"

int carbons_eligible(const xs_node *msg)
{
    if (!msg || !xs_is(msg, NS_CLIENT, "message")) return 0;
    const char *type = xs_attr_get(msg, "type");
    if (!type || !*type) type = "normal";
    if (strcmp(type, "chat") == 0) {
        /* eligible */
    } else if (strcmp(type, "normal") == 0) {
        if (!xs_child(msg, NS_CLIENT, "body")) return 0;
    } else {
        return 0;               /* groupchat, headline, error */
    }
    if (xs_child(msg, NS_CARBONS, "private")) return 0;
    if (xs_child(msg, NS_HINTS, "no-copy")) return 0;
    if (xs_child(msg, NS_CARBONS, "received") || xs_child(msg, NS_CARBONS, "sent"))
        return 0;
    if (xs_child(msg, NS_MUC_USER, "x")) return 0;
    return 1;
}

xs_node *carbons_wrap(const char *bare, const char *to, const char *dir,
                      const xs_node *msg)
{
    const char *type = xs_attr_get(msg, "type");
    xs_node *w = stanza_new("message", bare, to, type ? type : "normal", NULL);
    xs_node *d = xs_add_elem(w, NS_CARBONS, dir);
    xs_node *f = xs_add_elem(d, NS_FORWARD, "forwarded");
    xs_append_child(f, xs_copy(msg));
    return w;
}

int carbons_iq(chatd *d, rsession *rs, const xs_node *st)
{
    xs_node *q = xs_child(st, NULL, NULL);
    const char *type = xs_attr_get(st, "type");
    if (!rs || !q || !q->ns || strcmp(q->ns, NS_CARBONS) != 0) return -1;
    int enable = strcmp(q->name, "enable") == 0;
    if ((!enable && strcmp(q->name, "disable") != 0) || !type || strcmp(type, "set") != 0) {
        router_bounce(d, st, "modify", "bad-request");
        return 0;
    }
    rs->carbons = enable;
    xs_node *res = iq_result(st);
    if (!xs_attr_get(res, "from")) xs_set_attr(res, "from", rs->user->bare);
    session_send(rs, res);
    xs_free(res);
    return 0;
}

/* Same account on both ends? (bare compare of a JID string with u's.) */
static int same_account(const ruser *u, const char *addr)
{
    jid j;
    char bare[JID_MAX + 1];
    return addr && jid_parse(addr, &j) == 0 &&
           strcmp(jid_bare(&j, bare, sizeof(bare)), u->bare) == 0;
}

static void copy_to_others(ruser *u, rsession *skip, const char *dir, const xs_node *msg)
{
    for (rsession *rs = u->sessions; rs; rs = rs->next) {
        if (rs == skip || !rs->carbons) continue;
        xs_node *w = carbons_wrap(u->bare, rs->full, dir, msg);
        session_send(rs, w);
        xs_free(w);
    }
}

void carbons_received(ruser *u, rsession *to, const xs_node *msg)
{
    if (!u || !carbons_eligible(msg) || same_account(u, xs_attr_get(msg, "from")))
        return;
    copy_to_others(u, to, "received", msg);
}

void carbons_sent(rsession *origin, const xs_node *msg)
{
    if (!origin || !origin->user || !carbons_eligible(msg) ||
        same_account(origin->user, xs_attr_get(msg, "to")))
        return;
    copy_to_others(origin->user, origin, "sent", msg);
}
