/*
 * iq_server: iqs the server answers itself, for the server's own JID
 * (disco, ping, version, time, vCard) and on behalf of an account's bare
 * JID (roster for its owner, disco, ping, vCard stored in Redis). Anything else
 * of type get/set gets service-unavailable (RFC 6120 §8.2.3); results
 * and errors addressed to us are dropped.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "router.h"
#include "log.h"
#include "users.h"
#include "xmpp_internal.h"
#include "carbons.h"
#include "blocking.h"

#define NS_PING     "urn:xmpp:ping"
#define NS_VERSION  "jabber:iq:version"
#define NS_TIME     "urn:xmpp:time"
#define NS_VCARD    "vcard-temp"
#define NS_SESSION  "urn:ietf:params:xml:ns:xmpp-session"
#define NS_MUC      "http://jabber.org/protocol/muc"

static const char *server_features[] = {
    NS_DISCO_INFO, NS_DISCO_ITEMS, NS_PING, NS_VERSION, NS_TIME, NS_VCARD,
    NS_ROSTER, NS_SESSION, NS_CARBONS, NS_BLOCKING, NULL
};

static void reply(chatd *d, rsession *rs, xs_node *res)
{
    if (rs && strcmp(xs_attr_get(res, "to") ? xs_attr_get(res, "to") : "", rs->full) == 0)
        session_send(rs, res);
    else
        router_deliver(d, xs_attr_get(res, "to"), res);
    xs_free(res);
}

static void add_identity(xs_node *q, const char *category, const char *type,
                         const char *name)
{
    xs_node *id = xs_add_elem(q, NS_DISCO_INFO, "identity");
    xs_set_attr(id, "category", category);
    xs_set_attr(id, "type", type);
    if (name) xs_set_attr(id, "name", name);
}

static void add_feature(xs_node *q, const char *var)
{
    xs_set_attr(xs_add_elem(q, NS_DISCO_INFO, "feature"), "var", var);
}

static void add_text_elem(xs_node *parent, const char *ns, const char *name,
                          const char *text)
{
    xs_node *e = xs_add_elem(parent, ns, name);
    xs_add_text(e, text, strlen(text));
}

/* Answers for the server's own JID. Returns the result, or NULL. */
static xs_node *server_answer(chatd *d, const xs_node *st, const xs_node *q, int get)
{
    xs_node *res = iq_result(st);
    if (!xs_attr_get(st, "to")) xs_set_attr(res, "from", d->cfg.domain);
    if (get && xs_is(q, NS_DISCO_INFO, "query") && !xs_attr_get(q, "node")) {
        xs_node *r = xs_add_elem(res, NS_DISCO_INFO, "query");
        add_identity(r, "server", "im", "chatd");
        for (const char **f = server_features; *f; f++) add_feature(r, *f);
    } else if (get && xs_is(q, NS_DISCO_ITEMS, "query") && !xs_attr_get(q, "node")) {
        xs_node *r = xs_add_elem(res, NS_DISCO_ITEMS, "query");
        if (d->cfg.muc_domain) {
            xs_node *it = xs_add_elem(r, NS_DISCO_ITEMS, "item");
            xs_set_attr(it, "jid", d->cfg.muc_domain);
            xs_set_attr(it, "name", "Chatrooms");
        }
    } else if (get && xs_is(q, NS_PING, "ping")) {
        /* empty result */
    } else if (get && xs_is(q, NS_VERSION, "query")) {
        xs_node *r = xs_add_elem(res, NS_VERSION, "query");
        add_text_elem(r, NS_VERSION, "name", "chatd");
        add_text_elem(r, NS_VERSION, "version", "0.1");
    } else if (get && xs_is(q, NS_TIME, "time")) {
        char stamp[32];
        xs_node *r = xs_add_elem(res, NS_TIME, "time");
        add_text_elem(r, NS_TIME, "tzo", "+00:00");
        add_text_elem(r, NS_TIME, "utc", xmpp_timestamp(stamp, sizeof(stamp), time(NULL)));
    } else if (get && xs_is(q, NS_VCARD, "vCard")) {
        xs_add_elem(res, NS_VCARD, "vCard");
    } else if (!get && xs_is(q, NS_SESSION, "session")) {
        /* RFC 3921 session establishment: a no-op today */
    } else {
        xs_free(res);
        return NULL;
    }
    return res;
}

/* Answers for an account's bare JID; own: the sender is that account. */
static xs_node *account_answer(const xs_node *st, const xs_node *q, int get, int own)
{
    xs_node *res = iq_result(st);
    if (get && xs_is(q, NS_DISCO_INFO, "query") && !xs_attr_get(q, "node")) {
        xs_node *r = xs_add_elem(res, NS_DISCO_INFO, "query");
        add_identity(r, "account", "registered", NULL);
        add_feature(r, NS_DISCO_INFO);
    } else if (get && xs_is(q, NS_DISCO_ITEMS, "query")) {
        xs_add_elem(res, NS_DISCO_ITEMS, "query");
    } else if (own && xs_is(q, NS_PING, "ping")) {
        /* empty result */
    } else {
        xs_free(res);
        return NULL;
    }
    return res;
}

/* ---- vCard-temp (XEP-0054): chat:vcard:<localpart> holds the owner's
 * last <vCard/>, serialized. Both directions go through Redis and the
 * answer is sent from the callback, so a get that follows a set (even on
 * another pooled connection) is only answered after the set is stored.
 * A user who never stored one still has a name when the site's single
 * sign-on gave one (the account's `name`, users.c): the get answers a
 * vCard with just that FN, so other people's clients show it. */

typedef struct vcard_ctx {
    chatd   *d;
    xs_node *iq;       /* the request (owned): where and how to answer */
    char    *local;    /* whose vCard (get) */
} vcard_ctx;

static void vcard_ctx_free(vcard_ctx *ctx)
{
    xs_free(ctx->iq);
    free(ctx->local);
    free(ctx);
}

static void vcard_answer(chatd *d, const xs_node *iq, xs_node *vcard)
{
    xs_node *res = iq_result(iq);
    if (vcard) xs_append_child(res, vcard);
    router_deliver(d, xs_attr_get(res, "to"), res);
    xs_free(res);
}

static void vcard_stored(redisReply *reply, const char *err, void *ud)
{
    vcard_ctx *ctx = ud;
    if (err || !reply || reply->type == REDIS_REPLY_ERROR) {
        log_warn("vcard: store failed: %s", err ? err : reply ? reply->str : "no reply");
        router_bounce(ctx->d, ctx->iq, "wait", "internal-server-error");
    } else {
        vcard_answer(ctx->d, ctx->iq, NULL);
    }
    vcard_ctx_free(ctx);
}

/* No vCard stored: the account's display name, if any, as FN. */
static void vcard_name_loaded(redisReply *reply, const char *err, void *ud)
{
    vcard_ctx *ctx = ud;
    if (err || !reply || reply->type == REDIS_REPLY_ERROR) {
        log_warn("vcard: reading the name of '%s' failed: %s", ctx->local,
                 err ? err : reply ? reply->str : "no reply");
        router_bounce(ctx->d, ctx->iq, "wait", "internal-server-error");
    } else {
        xs_node *vcard = xs_new(NS_VCARD, "vCard");
        if (reply->type == REDIS_REPLY_STRING && reply->len > 0) {
            xs_node *fn = xs_add_elem(vcard, NS_VCARD, "FN");
            xs_add_text(fn, reply->str, reply->len);
        }
        vcard_answer(ctx->d, ctx->iq, vcard);
    }
    vcard_ctx_free(ctx);
}

static void vcard_loaded(redisReply *reply, const char *err, void *ud)
{
    vcard_ctx *ctx = ud;
    xs_node *vcard = NULL;
    if (err || !reply || reply->type == REDIS_REPLY_ERROR) {
        log_warn("vcard: read failed: %s", err ? err : reply ? reply->str : "no reply");
        router_bounce(ctx->d, ctx->iq, "wait", "internal-server-error");
        goto out;
    }
    if (reply->type == REDIS_REPLY_NIL) {
        /* As in vcard_iq: on a dead Redis the callback has already run. */
        redis_async_command(ctx->d->redis, vcard_name_loaded, ctx,
                            "HGET " USERS_KEY_PREFIX "%s name", ctx->local);
        return;
    }
    if (reply->type == REDIS_REPLY_STRING) {
        char perr[128];
        if (xs_parse_document(reply->str, reply->len, reply->len + 1, &vcard,
                              perr, sizeof(perr)) != XS_OK || !xs_is(vcard, NS_VCARD, "vCard")) {
            log_warn("vcard: stored vCard unreadable: %s", perr);
            xs_free(vcard);
            vcard = NULL;
        }
    }
    if (!vcard) vcard = xs_new(NS_VCARD, "vCard");     /* unreadable: empty */
    vcard_answer(ctx->d, ctx->iq, vcard);
out:
    vcard_ctx_free(ctx);
}

/* A vCard get for any account, or a set by its owner. 0 if handled. */
static int vcard_iq(chatd *d, const xs_node *st, const xs_node *q, const char *to_bare,
                    int get, int own)
{
    if (!xs_is(q, NS_VCARD, "vCard") || (!get && !own)) return -1;
    jid j;
    if (jid_parse(to_bare, &j) < 0 || !j.local[0]) return -1;
    vcard_ctx *ctx = calloc(1, sizeof(*ctx));
    if (!ctx) abort();
    ctx->d = d;
    ctx->iq = xs_copy(st);
    if (get) {
        if (!(ctx->local = strdup(j.local))) abort();
        redis_async_command(d->redis, vcard_loaded, ctx, "GET chat:vcard:%s", j.local);
    } else {
        strbuf xml = STRBUF_INIT;
        xs_serialize(q, NULL, &xml);
        redis_async_command(d->redis, vcard_stored, ctx, "SET chat:vcard:%s %b",
                            j.local, xml.data, xml.len);
        sb_free(&xml);
    }
    return 0;
}

void iq_server_handle(chatd *d, rsession *rs, const xs_node *st, const char *to_bare)
{
    const char *type = xs_attr_get(st, "type");
    if (!type || (strcmp(type, "get") != 0 && strcmp(type, "set") != 0)) return;
    int get = strcmp(type, "get") == 0;
    xs_node *q = xs_child(st, NULL, NULL);
    if (!q) { router_bounce(d, st, "modify", "bad-request"); return; }

    /* XEP-0280 enable/disable: to the own account (or the server). */
    if (rs && (!to_bare || strcmp(rs->user->bare, to_bare) == 0) &&
        carbons_iq(d, rs, st) == 0)
        return;
    /* XEP-0191 blocklist/block/unblock: the own account only. */
    if (rs && to_bare && strcmp(rs->user->bare, to_bare) == 0 && blocking_iq(d, rs, st) == 0)
        return;

    xs_node *res;
    if (!to_bare) {
        res = server_answer(d, st, q, get);
    } else {
        int own = rs && strcmp(rs->user->bare, to_bare) == 0;
        if (own && xs_is(q, NS_ROSTER, "query")) {
            roster_iq(d, rs, xs_copy(st));
            return;
        }
        if (vcard_iq(d, st, q, to_bare, get, own) == 0) return;
        res = account_answer(st, q, get, own);
    }
    if (res) reply(d, rs, res);
    else router_bounce(d, st, "cancel", "service-unavailable");
}
