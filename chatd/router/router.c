/*
 * router: where stanzas go (see router.h).
 *
 * Two maps: full JID -> rsession and localpart -> ruser (whose sessions
 * form a list). chatd is single-threaded, so no locks. The router never
 * touches Redis on the path of an online 1:1 message: only offline
 * storage (offline.c) and rosters (roster.c) do.
 */
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <apr_pools.h>
#include <apr_hash.h>
#include "router.h"
#include "muc.h"
#include "muc_room.h"
#include "carbons.h"
#include "csi.h"
#include "blocking.h"
#include "mam.h"
#include "caps.h"
#include "log.h"
#include "xmpp_internal.h"
#include "iq_dispatch.h"
#include "upload.h"
#include "cluster.h"

struct router {
    apr_pool_t *pool;
    apr_hash_t *sessions;   /* full JID -> rsession */
    apr_hash_t *users;      /* localpart -> ruser */
};

static char *xstrdup(const char *s)
{
    char *d = strdup(s);
    if (!d) abort();
    return d;
}

int router_init(chatd *d)
{
    struct router *r = calloc(1, sizeof(*r));
    if (!r) return -1;
    if (apr_pool_create(&r->pool, NULL) != APR_SUCCESS) { free(r); return -1; }
    r->sessions = apr_hash_make(r->pool);
    r->users = apr_hash_make(r->pool);
    d->router = r;
    return 0;
}

void router_free(chatd *d)
{
    struct router *r = d->router;
    if (!r) return;
    apr_hash_index_t *hi;
    for (hi = apr_hash_first(NULL, r->sessions); hi; hi = apr_hash_next(hi)) {
        rsession *rs = apr_hash_this_val(hi);
        *c2s_router_slot(rs->c2s) = NULL;
        offline_forget(rs);
        presence_free_session(rs);
        free(rs->offline_token);
        csi_queue_free(rs->csi);
        caps_session_free(rs);
        free(rs->full);
        free(rs);
    }
    for (hi = apr_hash_first(NULL, r->users); hi; hi = apr_hash_next(hi)) {
        ruser *u = apr_hash_this_val(hi);
        roster_user_free(d, u);
        blocking_user_free(u);
        free(u->local);
        free(u->bare);
        free(u);
    }
    iq_await_free();
    apr_pool_destroy(r->pool);
    free(r);
    d->router = NULL;
}

/* ---- lookups ---- */

rsession *router_session(chatd *d, const char *full)
{
    return full ? apr_hash_get(d->router->sessions, full, APR_HASH_KEY_STRING) : NULL;
}

rsession *router_session_of(c2s *s)
{
    return s ? *c2s_router_slot(s) : NULL;
}

ruser *router_user(chatd *d, const char *local)
{
    return apr_hash_get(d->router->users, local, APR_HASH_KEY_STRING);
}

ruser *router_user_get(chatd *d, const char *local)
{
    ruser *u = router_user(d, local);
    if (u) return u;
    u = calloc(1, sizeof(*u));
    if (!u) abort();
    u->d = d;
    u->local = xstrdup(local);
    size_t n = strlen(local) + 1 + strlen(d->cfg.domain) + 1;
    u->bare = malloc(n);
    if (!u->bare) abort();
    snprintf(u->bare, n, "%s@%s", local, d->cfg.domain);
    apr_hash_set(d->router->users, u->local, APR_HASH_KEY_STRING, u);
    return u;
}

void router_user_release(chatd *d, ruser *u)
{
    if (u->sessions || u->pending || u->roster_state == ROSTER_LOADING || u->roster_writes)
        return;
    apr_hash_set(d->router->users, u->local, APR_HASH_KEY_STRING, NULL);
    roster_user_free(d, u);
    blocking_user_free(u);
    free(u->local);
    free(u->bare);
    free(u);
}

/* ---- binding ---- */

/* Take rs out of the maps: rooms, unavailable presence, user list. */
static void session_detach(chatd *d, rsession *rs)
{
    if (!rs->bound) return;
    cluster_session_gone(d, rs->full);
    muc_session_gone(d, rs->full);
    presence_session_gone(d, rs);
    offline_forget(rs);
    if (router_session(d, rs->full) == rs)
        apr_hash_set(d->router->sessions, rs->full, APR_HASH_KEY_STRING, NULL);
    ruser *u = rs->user;
    for (rsession **pp = &u->sessions; *pp; pp = &(*pp)->next)
        if (*pp == rs) { *pp = rs->next; break; }
    rs->bound = 0;
    rs->next = NULL;
    router_user_release(d, u);
    rs->user = NULL;
}

int router_bind(chatd *d, c2s *s, const char *full_jid)
{
    jid j;
    char full[JID_MAX + 1];
    if (jid_parse(full_jid, &j) < 0 || !j.local[0] || !j.resource[0] ||
        strcmp(j.domain, d->cfg.domain) != 0 || !jid_full(&j, full, sizeof(full)))
        return -1;
    if (*c2s_router_slot(s)) return -1;          /* bound already */

    rsession *old = router_session(d, full);
    if (old) {
        log_info("router: %s bound again, closing the older session", full);
        session_detach(d, old);
        c2s_close(old->c2s, "conflict", NULL);
    }
    rsession *rs = calloc(1, sizeof(*rs));
    if (!rs) abort();
    rs->c2s = s;
    rs->full = xstrdup(full);
    /* Names this session's lease on its offline list (offline.c): unique
     * across sessions, nodes and restarts. */
    static unsigned long bind_seq;
    char token[JID_MAX + 96];
    snprintf(token, sizeof(token), "%s %s %ld %lu", d->cfg.node_id, full,
             (long)time(NULL), ++bind_seq);
    rs->offline_token = xstrdup(token);
    rs->bound = 1;
    rs->user = router_user_get(d, j.local);
    rs->next = rs->user->sessions;
    rs->user->sessions = rs;
    apr_hash_set(d->router->sessions, rs->full, APR_HASH_KEY_STRING, rs);
    *c2s_router_slot(s) = rs;
    blocking_user_online(d, rs->user);      /* XEP-0191: load the blocklist */
    cluster_session_update(d, rs, 1);       /* issue 16: other nodes route here */
    return 0;
}

void router_session_gone(chatd *d, c2s *s)
{
    rsession *rs = *c2s_router_slot(s);
    if (!rs) return;
    session_detach(d, rs);
    presence_free_session(rs);
    free(rs->offline_token);
    csi_queue_free(rs->csi);        /* the client is gone: nothing to flush to */
    caps_session_free(rs);
    free(rs->full);
    free(rs);
    *c2s_router_slot(s) = NULL;
}

int router_session_takeover(chatd *d, c2s *from, c2s *to)
{
    (void)d;
    rsession *rs = *c2s_router_slot(from);
    if (!rs || *c2s_router_slot(to)) return -1;
    rs->c2s = to;
    *c2s_router_slot(to) = rs;
    *c2s_router_slot(from) = NULL;
    return 0;
}

/* ---- building stanzas ---- */

xs_node *stanza_new(const char *name, const char *from, const char *to,
                    const char *type, const char *id)
{
    xs_node *n = xs_new(NS_CLIENT, name);
    if (from) xs_set_attr(n, "from", from);
    if (to)   xs_set_attr(n, "to", to);
    if (type) xs_set_attr(n, "type", type);
    if (id)   xs_set_attr(n, "id", id);
    return n;
}

xs_node *iq_result(const xs_node *st)
{
    return stanza_new("iq", xs_attr_get(st, "to"), xs_attr_get(st, "from"),
                      "result", xs_attr_get(st, "id"));
}

void router_bounce(chatd *d, const xs_node *st, const char *type,
                   const char *condition)
{
    const char *t = xs_attr_get(st, "type");
    const char *back = xs_attr_get(st, "from");
    if ((t && strcmp(t, "error") == 0) || !back) return;
    if (xs_is(st, NS_CLIENT, "iq") && t && strcmp(t, "result") == 0) return;
    const char *from = xs_attr_get(st, "to");
    xs_node *err = stanza_new(st->name, from ? from : d->cfg.domain, back,
                              "error", xs_attr_get(st, "id"));
    xs_node *e = xs_add_elem(err, NS_CLIENT, "error");
    xs_set_attr(e, "type", type);
    xs_add_elem(e, NS_STANZAS, condition);
    router_deliver(d, back, err);
    xs_free(err);
}

/* ---- delivery ---- */

/* XEP-0352: while rs->csi is set (client inactive) every stanza is offered
 * to csi.c, which holds the unimportant ones and emits them through here. */
static void csi_emit_raw(void *ud, const char *xml, size_t len)
{
    c2s_deliver_raw(((rsession *)ud)->c2s, xml, len);
}

void session_send(rsession *rs, const xs_node *st)
{
    if (!rs->csi) { c2s_deliver(rs->c2s, st); return; }
    strbuf sb = STRBUF_INIT;
    xs_serialize(st, NS_CLIENT, &sb);
    if (!csi_offer(rs->csi, st, sb.data, sb.len, csi_emit_raw, rs))
        c2s_deliver_raw(rs->c2s, sb.data, sb.len);
    sb_free(&sb);
}

void session_send_raw(rsession *rs, const char *xml, size_t len)
{
    xs_node *st = NULL;
    char err[64];
    /* Inactive: parse the fan-out bytes to classify them (idle phones only). */
    if (rs->csi && xs_parse_document(xml, len, len + 1, &st, err, sizeof(err)) == XS_OK &&
        csi_offer(rs->csi, st, xml, len, csi_emit_raw, rs)) {
        xs_free(st);
        return;
    }
    xs_free(st);
    c2s_deliver_raw(rs->c2s, xml, len);
}

void router_client_state(chatd *d, c2s *s, int active)
{
    (void)d;
    rsession *rs = router_session_of(s);
    if (!rs) return;
    if (!active && !rs->csi) {
        rs->csi = csi_queue_new(CSI_QUEUE_MAX);
    } else if (active && rs->csi) {
        csi_queue *q = rs->csi;
        rs->csi = NULL;
        csi_flush(q, csi_emit_raw, rs);
        csi_queue_free(q);
    }
}

rsession *user_best_session(ruser *u)
{
    rsession *best = NULL;
    for (rsession *rs = u ? u->sessions : NULL; rs; rs = rs->next)
        if (rs->available && rs->priority >= 0 &&
            (!best || rs->priority > best->priority))
            best = rs;
    return best;
}

void user_send_available(ruser *u, const xs_node *st)
{
    for (rsession *rs = u ? u->sessions : NULL; rs; rs = rs->next)
        if (rs->available) session_send(rs, st);
}

static int type_is(const xs_node *st, const char *type)
{
    const char *t = xs_attr_get(st, "type");
    return strcmp(t ? t : "", type) == 0;
}

static void deliver_local(chatd *d, const jid *to, const xs_node *st, int here_only);

/* RFC 6121 §8.5: a message to a local account. origin: the local session
 * that sent it (NULL: server-generated, or relayed from another node),
 * whose messages are archived (XEP-0313, mam.c: in memory, written later)
 * and delivered with the archive's stanza-id. here_only: it came from
 * another node, which already chose this one (issue 16): never sent on. */
static void deliver_message(chatd *d, const jid *to, const xs_node *st, rsession *origin,
                            int here_only)
{
    if (blocking_inbound(d, to->local, st)) return;     /* XEP-0191 */
    char bare[JID_MAX + 1];
    xs_node *stamped = origin ? mam_archive_chat(d, origin->full,
                                                 jid_bare(to, bare, sizeof(bare)), st)
                              : NULL;
    deliver_local(d, to, stamped ? stamped : st, here_only);
    xs_free(stamped);
}

static void deliver_local(chatd *d, const jid *to, const xs_node *st, int here_only)
{
    const char *type = xs_attr_get(st, "type");
    if (!type) type = "normal";
    int is_error = strcmp(type, "error") == 0;
    int is_groupchat = strcmp(type, "groupchat") == 0;
    int is_headline = strcmp(type, "headline") == 0;

    if (to->resource[0]) {
        char full[JID_MAX + 1];
        rsession *rs = router_session(d, jid_full(to, full, sizeof(full)));
        if (rs) {
            session_send(rs, st);
            carbons_received(rs->user, rs, st);     /* XEP-0280 */
            return;
        }
        const char *node = here_only ? NULL : cluster_node_of(d, full);
        if (node) { cluster_send(d, node, full, st); return; }
        if (is_groupchat) { router_bounce(d, st, "cancel", "service-unavailable"); return; }
        if (is_error || is_headline) return;
    }
    ruser *u = router_user(d, to->local);
    rsession *best = user_best_session(u);
    /* Issue 16: the best resource may be on another node (a tie stays here). */
    int rprio = 0;
    const char *rnode = here_only ? NULL : cluster_best_node(d, to->local, &rprio);
    if (rnode && is_headline) {
        cluster_send_available(d, to->local, st);
        if (!best) return;
    } else if (rnode && !is_groupchat && (!best || rprio > best->priority)) {
        char bare[JID_MAX + 1];
        cluster_send(d, rnode, jid_bare(to, bare, sizeof(bare)), st);
        return;
    }
    if (best && is_headline) {
        for (rsession *rs = u->sessions; rs; rs = rs->next)
            if (rs->available && rs->priority >= 0) session_send(rs, st);
        return;
    }
    if (best && !is_groupchat) {
        session_send(best, st);
        carbons_received(u, best, st);              /* XEP-0280 */
        return;
    }
    if (is_groupchat) { router_bounce(d, st, "cancel", "service-unavailable"); return; }
    if (is_error || is_headline) return;
    blocking_offline_store(d, to->local, st);   /* XEP-0191 check, then offline_store */
}

static void deliver(chatd *d, const char *to, const xs_node *st, int here_only)
{
    jid j;
    if (!to || jid_parse(to, &j) < 0 || strcmp(j.domain, d->cfg.domain) != 0 || !j.local[0])
        return;
    if (xs_is(st, NS_CLIENT, "message")) { deliver_message(d, &j, st, NULL, here_only); return; }
    if (blocking_inbound(d, j.local, st)) return;       /* XEP-0191 */

    if (j.resource[0]) {
        char full[JID_MAX + 1];
        rsession *rs = router_session(d, jid_full(&j, full, sizeof(full)));
        const char *node = rs || here_only ? NULL : cluster_node_of(d, full);
        if (rs) session_send(rs, st);
        else if (node) cluster_send(d, node, full, st);
        else if (xs_is(st, NS_CLIENT, "iq") && (type_is(st, "get") || type_is(st, "set")))
            router_bounce(d, st, "cancel", "service-unavailable");
        return;
    }
    if (xs_is(st, NS_CLIENT, "presence")) {
        user_send_available(router_user(d, j.local), st);
        if (!here_only) cluster_send_available(d, j.local, st);
    }
}

void router_deliver(chatd *d, const char *to, const xs_node *st)
{
    deliver(d, to, st, 0);
}

void router_deliver_local(chatd *d, const char *to, const xs_node *st)
{
    deliver(d, to, st, 1);
}

/* ---- delivery for rooms (muc.c): here or on the occupant's node ---- */

int router_session_known(chatd *d, const char *full)
{
    return router_session(d, full) != NULL || cluster_node_of(d, full) != NULL;
}

void router_send_to(chatd *d, const char *full, const xs_node *st)
{
    rsession *rs = router_session(d, full);
    const char *node;
    if (rs) session_send(rs, st);
    else if ((node = cluster_node_of(d, full))) cluster_send(d, node, full, st);
}

void router_send_raw_to(chatd *d, cluster_fanout *fo, const char *full, const char *xml,
                        size_t len, strbuf *scratch)
{
    rsession *rs = router_session(d, full);
    if (rs) {
        sb_reset(scratch);
        muc_splice_to(xml, len, full, scratch);
        session_send_raw(rs, scratch->data, scratch->len);
        return;
    }
    if (fo && cluster_fanout_add(d, fo, full) >= 0) return;
    cluster_fanout one;
    cluster_fanout_init(&one);
    if (cluster_fanout_add(d, &one, full) > 0) cluster_fanout_flush(d, &one, xml, len);
}

/* ---- routing ---- */

static void route_iq(chatd *d, rsession *rs, const jid *to, xs_node *st)
{
    if (!to->local[0]) {
        if (to->resource[0]) router_bounce(d, st, "cancel", "service-unavailable");
        else iq_dispatch(d, rs, st, NULL);
        return;
    }
    char addr[JID_MAX + 1];
    if (!to->resource[0]) {
        iq_dispatch(d, rs, st, jid_bare(to, addr, sizeof(addr)));
        return;
    }
    rsession *target = router_session(d, jid_full(to, addr, sizeof(addr)));
    const char *node = target ? NULL : cluster_node_of(d, addr);
    if (target && blocking_inbound(d, to->local, st)) return;   /* XEP-0191 */
    if (target) session_send(target, st);
    else if (node) cluster_send(d, node, addr, st);   /* issue 16 */
    else if (type_is(st, "get") || type_is(st, "set"))
        router_bounce(d, st, "cancel", "service-unavailable");
}

void router_route(chatd *d, c2s *origin, xs_node *stanza)
{
    rsession *rs = router_session_of(origin);
    const char *to = xs_attr_get(stanza, "to");
    int is_presence = xs_is(stanza, NS_CLIENT, "presence");
    int is_iq = xs_is(stanza, NS_CLIENT, "iq");
    int is_message = xs_is(stanza, NS_CLIENT, "message");

    if (!is_presence && !is_iq && !is_message) { xs_free(stanza); return; }
    if (is_presence && (!to || !*to)) { presence_handle(d, rs, stanza); return; }
    if (!to || !*to) {
        /* RFC 6120 §10.3: no 'to' means the sender's own account. */
        if (!rs) { xs_free(stanza); return; }
        xs_set_attr(stanza, "to", rs->user->bare);
        to = xs_attr_get(stanza, "to");
    }

    jid j;
    if (jid_parse(to, &j) < 0) {
        if (!is_presence) router_bounce(d, stanza, "modify", "jid-malformed");
        xs_free(stanza);
        return;
    }
    /* XEP-0191: nothing reaches a JID the sender blocked. */
    if (rs && blocking_outbound(d, rs, to, stanza)) { xs_free(stanza); return; }
    /* XEP-0359: stanza-ids by our accounts or rooms are ours to give. */
    if (is_message) mam_strip_stanza_ids(d, stanza);
    /* XEP-0280: the sender's other devices see what it sent (local
     * accounts and room occupants; anything else bounces below). */
    if (is_message && rs &&
        (strcmp(j.domain, d->cfg.domain) == 0 ||
         (d->cfg.muc_domain && strcmp(j.domain, d->cfg.muc_domain) == 0)))
        carbons_sent(rs, stanza);
    if (d->cfg.muc_domain && strcmp(j.domain, d->cfg.muc_domain) == 0) {
        /* issue 16: a room owned by another node gets it from there */
        if (!cluster_room_route(d, origin, stanza)) muc_route(d, origin, stanza);
        xs_free(stanza);
        return;
    }
    if (upload_is_service(d, j.domain)) {        /* XEP-0363: only iqs, to the service */
        if (is_iq && !j.local[0] && !j.resource[0])
            iq_dispatch_service(d, rs, stanza, IQ_TO_UPLOAD);
        else if (!is_presence)
            router_bounce(d, stanza, "cancel", "service-unavailable");
        xs_free(stanza);
        return;
    }
    if (strcmp(j.domain, d->cfg.domain) != 0) {
        if (!is_presence) router_bounce(d, stanza, "cancel", "remote-server-not-found");
        xs_free(stanza);
        return;
    }
    if (is_presence) {
        if (j.local[0]) presence_handle(d, rs, stanza);
        else xs_free(stanza);
        return;
    }
    if (is_iq) route_iq(d, rs, &j, stanza);
    else if (j.local[0]) deliver_message(d, &j, stanza, rs, 0);
    xs_free(stanza);
}

/* ---- admin ---- */

void router_foreach_session(chatd *d, void (*fn)(c2s *s, const char *full, void *ud),
                            void *ud)
{
    if (!d->router) return;
    for (apr_hash_index_t *hi = apr_hash_first(NULL, d->router->sessions); hi;
         hi = apr_hash_next(hi)) {
        rsession *rs = apr_hash_this_val(hi);
        fn(rs->c2s, rs->full, ud);
    }
}
