/*
 * presence: RFC 6121 presence for local accounts.
 *
 * Broadcast (no 'to'): initial presence goes to contacts with
 * subscription from/both and to the user's own available resources, and
 * fetches the presence of contacts with to/both (our "probe": every
 * account is local, so we read their sessions directly) then flushes
 * offline messages. Directed presence is remembered per session and
 * undone by unavailable. Subscription stanzas change both rosters in two
 * steps: the sender's side (outbound) then the contact's side (inbound),
 * each run once that user's roster is loaded (roster_with).
 *
 * Issue 14: at most max_directed_presences remembered per session (more
 * is refused with a presence error); a roster that failed to load blocks
 * the presence that needs it instead of acting on an empty one; inbound
 * subscription requests are kept until answered (offline_subin_*).
 */
#include <stdlib.h>
#include <string.h>
#include "router.h"
#include "quota.h"
#include "muc.h"
#include "blocking.h"
#include "caps.h"
#include "pep.h"
#include "log.h"
#include "xmpp_internal.h"
#include "cluster.h"

static int type_is(const xs_node *st, const char *type)
{
    const char *t = xs_attr_get(st, "type");
    return strcmp(t ? t : "", type) == 0;
}

static int parse_priority(const xs_node *st)
{
    xs_node *p = xs_child(st, NS_CLIENT, "priority");
    if (!p) return 0;
    char *t = xs_text(p);
    long v = strtol(t, NULL, 10);
    free(t);
    return v < -128 ? -128 : v > 127 ? 127 : (int)v;
}

/* ---- directed presence bookkeeping ---- */

/* 1 remembered (or already), 0 refused: the session is at its cap. */
static int directed_add(chatd *d, rsession *rs, const char *to)
{
    for (jid_list *l = rs->directed; l; l = l->next)
        if (strcmp(l->jid, to) == 0) return 1;
    if (!quota_directed_admits(rs->ndirected, 0, d->cfg.max_directed_presences))
        return 0;
    jid_list *l = malloc(sizeof(*l));
    if (!l || !(l->jid = strdup(to))) abort();
    l->next = rs->directed;
    rs->directed = l;
    rs->ndirected++;
    return 1;
}

static void directed_remove(rsession *rs, const char *to)
{
    for (jid_list **pp = &rs->directed; *pp; pp = &(*pp)->next)
        if (strcmp((*pp)->jid, to) == 0) {
            jid_list *l = *pp;
            *pp = l->next;
            free(l->jid);
            free(l);
            rs->ndirected--;
            return;
        }
}

static void directed_clear(rsession *rs)
{
    while (rs->directed) directed_remove(rs, rs->directed->jid);
}

void presence_free_session(rsession *rs)
{
    directed_clear(rs);
    xs_free(rs->presence);
    rs->presence = NULL;
}

/* ---- sending ---- */

/* pres to every contact that may see us (from/both), as bare JIDs. */
static void send_to_subscribers(chatd *d, ruser *u, xs_node *pres)
{
    for (roster_item *it = u->roster; it; it = it->next) {
        if (!roster_sub_has_from(it->sub)) continue;
        xs_set_attr(pres, "to", it->jid);
        router_deliver(d, it->jid, pres);
    }
    xs_set_attr(pres, "to", NULL);
}

/* pres to u's available resources other than skip. */
static void send_to_own(ruser *u, rsession *skip, const xs_node *pres)
{
    for (rsession *s = u->sessions; s; s = s->next)
        if (s != skip && s->available) session_send(s, pres);
}

/* The current presence of every available session of u, to `to`. */
static void send_current_presence(chatd *d, ruser *u, const char *to)
{
    for (rsession *s = u ? u->sessions : NULL; s; s = s->next) {
        if (!s->available || !s->presence) continue;
        xs_node *p = xs_copy(s->presence);
        xs_set_attr(p, "to", to);
        router_deliver(d, to, p);
        xs_free(p);
    }
}

static void send_unavailable_all(chatd *d, ruser *u, const char *to)
{
    for (rsession *s = u ? u->sessions : NULL; s; s = s->next) {
        if (!s->available) continue;
        xs_node *p = stanza_new("presence", s->full, to, "unavailable", NULL);
        router_deliver(d, to, p);
        xs_free(p);
    }
}

/* Presence of contacts we are subscribed to (to/both), and of our own
 * other resources, delivered to the session that just became available. */
static void fetch_contacts_presence(chatd *d, ruser *u, rsession *rs)
{
    for (roster_item *it = u->roster; it; it = it->next) {
        if (!roster_sub_has_to(it->sub)) continue;
        jid j;
        if (jid_parse(it->jid, &j) < 0 || strcmp(j.domain, d->cfg.domain) != 0) continue;
        send_current_presence(d, router_user(d, j.local), rs->full);
        cluster_probe(d, j.local, rs->full);        /* issue 16: other nodes */
    }
    for (rsession *s = u->sessions; s; s = s->next)
        if (s != rs && s->available && s->presence) session_send(rs, s->presence);
    cluster_probe(d, u->local, rs->full);
}

void presence_send_current(chatd *d, const char *local, const char *to)
{
    send_current_presence(d, router_user(d, local), to);
}

/* A subscription stanza for the contact's side: where the contact's
 * roster is in memory (issue 16: another node when the contact is online
 * only there), else here. */
static void subscription_in(chatd *d, ruser *u, rsession *origin, xs_node *st);
static void to_contact_side(chatd *d, const char *local, xs_node *st)
{
    ruser *cu = router_user(d, local);
    if ((cu && cu->sessions) || !cluster_presence_in(d, local, st))
        roster_with(d, local, subscription_in, NULL, st);
}

void presence_inbound(chatd *d, const char *local, xs_node *st)
{
    roster_with(d, local, subscription_in, NULL, st);
}

static void broadcast_unavailable(chatd *d, rsession *rs, const xs_node *st)
{
    ruser *u = rs->user;
    xs_node *pres = stanza_new("presence", rs->full, NULL, "unavailable", NULL);
    if (st)
        for (xs_node *c = xs_child(st, NULL, NULL); c; c = xs_next_elem(c, NULL, NULL))
            xs_append_child(pres, xs_copy(c));
    int was_available = rs->available;
    rs->available = 0;
    if (was_available) {
        cluster_session_update(d, rs, 0);
        if (u->roster_state == ROSTER_LOADED) send_to_subscribers(d, u, pres);
        send_to_own(u, NULL, pres);
        cluster_send_available(d, u->local, pres);
    }
    for (jid_list *l = rs->directed; l; l = l->next) {
        xs_set_attr(pres, "to", l->jid);
        router_deliver(d, l->jid, pres);
    }
    directed_clear(rs);
    xs_free(rs->presence);
    rs->presence = NULL;
    xs_free(pres);
}

/* A broadcast presence (no 'to') once the roster is loaded. */
static void broadcast_action(chatd *d, ruser *u, rsession *rs, xs_node *st)
{
    (void)u;
    if (!rs) return;
    if (type_is(st, "unavailable")) {
        if (rs->available) session_send(rs, st);   /* own copy, like other resources */
        broadcast_unavailable(d, rs, st);
        muc_session_gone(d, rs->full);              /* rooms got directed presence */
        return;
    }
    int initial = !rs->available;
    xs_node *pres = xs_copy(st);
    xs_set_attr(pres, "from", rs->full);
    xs_set_attr(pres, "to", NULL);
    xs_free(rs->presence);
    rs->presence = pres;
    int old_priority = rs->priority;
    rs->priority = parse_priority(st);
    rs->available = 1;
    if (initial || old_priority != rs->priority) cluster_session_update(d, rs, 0);

    send_to_subscribers(d, rs->user, pres);
    send_to_own(rs->user, NULL, pres);
    cluster_send_available(d, rs->user->local, pres);
    if (initial) fetch_contacts_presence(d, rs->user, rs);
    caps_presence(d, rs, pres);     /* XEP-0115: which PEP events it wants */
    /* Until one read succeeded: a failed one is retried at the next
     * available presence instead of waiting for the next login. */
    offline_subin_flush(d, rs);
    if (rs->priority >= 0) offline_flush(d, rs);
}

/* The roster could not be loaded. Going unavailable needs no roster (the
 * subscribers are skipped, own resources and directed presence are told);
 * becoming available does: the client gets a 'wait' error and can retry. */
static void broadcast_failed(chatd *d, ruser *u, rsession *rs, xs_node *st)
{
    if (!rs) return;
    if (type_is(st, "unavailable")) broadcast_action(d, u, rs, st);
    else router_bounce(d, st, "wait", "internal-server-error");
}

void presence_session_gone(chatd *d, rsession *rs)
{
    if (!rs->available && !rs->directed) return;
    rs->available = 0;   /* do not send to the departing session itself */
    xs_node *pres = stanza_new("presence", rs->full, NULL, "unavailable", NULL);
    ruser *u = rs->user;
    if (u->roster_state == ROSTER_LOADED) send_to_subscribers(d, u, pres);
    send_to_own(u, rs, pres);
    for (jid_list *l = rs->directed; l; l = l->next) {
        xs_set_attr(pres, "to", l->jid);
        router_deliver(d, l->jid, pres);
    }
    xs_free(pres);
    presence_free_session(rs);
}

/* ---- subscriptions ---- */

/* Contact's side: st comes from the user's bare JID. */
static void subscription_in(chatd *d, ruser *u, rsession *origin, xs_node *st)
{
    (void)origin;
    char sender[JID_MAX + 1];
    if (!jid_bare_str(xs_attr_get(st, "from"), sender, sizeof(sender))) return;
    if (blocking_blocks(d, u->local, xs_attr_get(st, "from"))) return;  /* XEP-0191 */
    roster_item *it = roster_find(u, sender);

    if (type_is(st, "probe")) {
        if (it && roster_sub_has_from(it->sub))
            send_current_presence(d, u, xs_attr_get(st, "from"));
        return;
    }
    if (type_is(st, "subscribe")) {
        if (it && roster_sub_has_from(it->sub)) {
            /* Already approved: answer for the user (RFC 6121 §3.1.3). */
            xs_node *ok = stanza_new("presence", u->bare, sender, "subscribed", NULL);
            jid j;
            if (jid_parse(sender, &j) == 0) to_contact_side(d, j.local, ok);
            else xs_free(ok);
            return;
        }
        /* Kept until answered and shown at each login (RFC 6121 §3.1.3),
         * and shown now to the resources online. */
        offline_subin_store(d, u, st);
        user_send_available(u, st);
        return;
    }
    const char *type = xs_attr_get(st, "type");
    if (type && strcmp(type, "unsubscribe") == 0)
        offline_subin_clear(d, u, sender);      /* a request withdrawn */
    if (!it || !type || !roster_item_inbound(it, type)) return;
    roster_commit(d, u, it);
    user_send_available(u, st);
}

/* The user's side of a subscription stanza they sent. */
static void subscription_out(chatd *d, ruser *u, rsession *rs, xs_node *st)
{
    (void)rs;
    char contact[JID_MAX + 1];
    jid cj;
    if (jid_parse(xs_attr_get(st, "to"), &cj) < 0 || !jid_bare(&cj, contact, sizeof(contact)))
        return;
    if (strcmp(contact, u->bare) == 0) return;
    const char *type = xs_attr_get(st, "type");
    roster_item *it = roster_find(u, contact);
    int adds = strcmp(type, "subscribe") == 0 || strcmp(type, "subscribed") == 0;

    if (adds && !(it = roster_find_or_add_capped(d, u, contact))) {
        router_bounce(d, st, "cancel", "not-allowed");   /* roster full */
        return;
    }
    if (strcmp(type, "subscribed") == 0 || strcmp(type, "unsubscribed") == 0)
        offline_subin_clear(d, u, contact);     /* the request is answered */
    if (it && roster_item_outbound(it, type)) roster_commit(d, u, it);
    else if (strcmp(type, "subscribed") == 0) return;   /* nothing new to say */
    xs_node *fwd = stanza_new("presence", u->bare, contact, type, xs_attr_get(st, "id"));
    to_contact_side(d, cj.local, fwd);

    if (strcmp(type, "subscribed") == 0) {
        send_current_presence(d, u, contact);
        pep_subscribed(d, u, contact);          /* XEP-0163 §6.2: last items */
    }
    else if (strcmp(type, "unsubscribed") == 0) send_unavailable_all(d, u, contact);
}

/* ---- entry point ---- */

void presence_handle(chatd *d, rsession *rs, xs_node *st)
{
    const char *to = xs_attr_get(st, "to");
    const char *type = xs_attr_get(st, "type");
    if (!type) type = "";

    if (!to || !*to) {
        if (rs && (!*type || strcmp(type, "unavailable") == 0))
            roster_with_fail(d, rs->user->local, broadcast_action, broadcast_failed, rs, st);
        else
            xs_free(st);
        return;
    }
    jid j;
    if (jid_parse(to, &j) < 0 || !j.local[0]) { xs_free(st); return; }

    if (strcmp(type, "subscribe") == 0 || strcmp(type, "subscribed") == 0 ||
        strcmp(type, "unsubscribe") == 0 || strcmp(type, "unsubscribed") == 0) {
        if (rs) roster_with(d, rs->user->local, subscription_out, rs, st);
        else xs_free(st);
        return;
    }
    if (strcmp(type, "probe") == 0) {
        roster_with(d, j.local, subscription_in, NULL, st);
        return;
    }
    /* Directed presence (available, unavailable, error). */
    if (rs && !jid_same_bare(to, rs->full)) {
        if (!*type && !directed_add(d, rs, to)) {
            /* max_directed_presences: refused and said so, never dropped */
            router_bounce(d, st, "modify", "policy-violation");
            xs_free(st);
            return;
        }
        if (strcmp(type, "unavailable") == 0) directed_remove(rs, to);
    }
    router_deliver(d, to, st);
    xs_free(st);
}
