/*
 * iq_table: the namespace-to-handler table of iq_dispatch.h, and the
 * dispatcher that walks it.
 *
 * To serve a new iq: write `int handler(const iq_request *)` in the
 * feature's file and add one row here. The row's `to` says which
 * addressees it serves (an iq to someone else's account never reaches a
 * handler that only serves the owner), and `feature`, if set, is what the
 * server's disco#info advertises for it.
 */
#include <string.h>
#include "iq_dispatch.h"
#include "iq_server.h"
#include "carbons.h"
#include "blocking.h"
#include "mam.h"
#include "router.h"

/* Adapters for features whose handlers predate the table. */
static int carbons_row(const iq_request *r)  { return carbons_iq(r->d, r->rs, r->st); }
static int blocking_row(const iq_request *r) { return blocking_iq(r->d, r->rs, r->st); }
static int roster_row(const iq_request *r)
{
    roster_iq(r->d, r->rs, xs_copy(r->st));
    return 0;
}

static const iq_handler iq_table[] = {
    /* ns               element      addressed to              disco feature   handler */
    { NS_DISCO_INFO,  "query",     IQ_TO_ANY,                NS_DISCO_INFO,  iq_disco_info },
    { NS_DISCO_ITEMS, "query",     IQ_TO_ANY,                NS_DISCO_ITEMS, iq_disco_items },
    { NS_PING,        "ping",      IQ_TO_SERVER | IQ_TO_OWN, NS_PING,        iq_ping },
    { NS_VERSION,     "query",     IQ_TO_SERVER,             NS_VERSION,     iq_version },
    { NS_TIME,        "time",      IQ_TO_SERVER,             NS_TIME,        iq_time },
    { NS_VCARD,       "vCard",     IQ_TO_ANY,                NS_VCARD,       iq_vcard },
    { NS_ROSTER,      "query",     IQ_TO_OWN,                NS_ROSTER,      roster_row },
    { NS_SESSION,     "session",   IQ_TO_SERVER,             NS_SESSION,     iq_session },
    { NS_CARBONS,     NULL,        IQ_TO_SERVER | IQ_TO_OWN, NS_CARBONS,     carbons_row },  /* XEP-0280 */
    { NS_BLOCKING,    NULL,        IQ_TO_OWN,                NS_BLOCKING,    blocking_row }, /* XEP-0191 */
    { NS_MAM,         NULL,        IQ_TO_OWN,                NS_MAM,         mam_iq },       /* XEP-0313 */
    /* No payload is in this namespace: the row only advertises that the
     * query above takes the form fields before-id/after-id. */
    { NS_MAM_EXT,     NULL,        IQ_TO_OWN,                NS_MAM_EXT,     mam_iq },
};
#define IQ_TABLE_ROWS (sizeof(iq_table) / sizeof(iq_table[0]))

const iq_handler *iq_lookup(const char *ns, const char *name, unsigned to)
{
    if (!ns || !name) return NULL;
    for (size_t i = 0; i < IQ_TABLE_ROWS; i++) {
        const iq_handler *h = &iq_table[i];
        if ((h->to & to) && strcmp(h->ns, ns) == 0 && (!h->name || strcmp(h->name, name) == 0))
            return h;
    }
    return NULL;
}

void iq_foreach_feature(void (*fn)(const char *feature, void *ud), void *ud)
{
    iq_foreach_feature_to(IQ_TO_ANY, fn, ud);
}

void iq_foreach_feature_to(unsigned to, void (*fn)(const char *feature, void *ud), void *ud)
{
    for (size_t i = 0; i < IQ_TABLE_ROWS; i++) {
        const char *f = iq_table[i].feature;
        if (!f || !(iq_table[i].to & to)) continue;
        size_t j = 0;
        while (j < i && !((iq_table[j].to & to) && iq_table[j].feature &&
                          strcmp(iq_table[j].feature, f) == 0)) j++;
        if (j == i) fn(f, ud);   /* first row with this feature */
    }
}

void iq_dispatch(chatd *d, rsession *rs, const xs_node *st, const char *to_bare)
{
    const char *type = xs_attr_get(st, "type");
    if (!type || (strcmp(type, "get") != 0 && strcmp(type, "set") != 0)) return;
    const xs_node *q = xs_child(st, NULL, NULL);
    if (!q) { router_bounce(d, st, "modify", "bad-request"); return; }

    iq_request req = {
        .d = d, .rs = rs, .st = st, .q = q, .to_bare = to_bare,
        .get = strcmp(type, "get") == 0,
        .to = !to_bare ? IQ_TO_SERVER
            : (rs && strcmp(rs->user->bare, to_bare) == 0) ? IQ_TO_OWN : IQ_TO_OTHER,
    };
    const iq_handler *h = iq_lookup(q->ns, q->name, req.to);
    if (!h || h->fn(&req) != 0)
        router_bounce(d, st, "cancel", "service-unavailable");
}
