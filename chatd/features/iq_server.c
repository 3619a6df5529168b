/*
 * iq_server: iqs the server answers itself, for the server's own JID
 * (disco, ping, version, time, vCard) and on behalf of an account's bare
 * JID (disco, ping, vCard stored in Redis). Each function here is one row
 * of the iq table (router/iq_table.c), which routes by namespace and
 * addressee and answers service-unavailable for what no row serves.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "router.h"
#include "log.h"
#include "users.h"
#include "iq_server.h"

static void reply(chatd *d, rsession *rs, xs_node *res)
{
    if (rs && strcmp(xs_attr_get(res, "to") ? xs_attr_get(res, "to") : "", rs->full) == 0)
        session_send(rs, res);
    else
        router_deliver(d, xs_attr_get(res, "to"), res);
    xs_free(res);
}

/* A result for req, from the domain when the request had no 'to'. */
static xs_node *result_for(const iq_request *req)
{
    xs_node *res = iq_result(req->st);
    if (req->to == IQ_TO_SERVER && !xs_attr_get(req->st, "to"))
        xs_set_attr(res, "from", req->d->cfg.domain);
    return res;
}

static void add_identity(xs_node *q, const char *category, const char *type,
                         const char *name)
{
    xs_node *id = xs_add_elem(q, NS_DISCO_INFO, "identity");
    xs_set_attr(id, "category", category);
    xs_set_attr(id, "type", type);
    if (name) xs_set_attr(id, "name", name);
}

static void add_feature(const char *var, void *q)
{
    xs_set_attr(xs_add_elem(q, NS_DISCO_INFO, "feature"), "var", var);
}

static void add_text_elem(xs_node *parent, const char *ns, const char *name,
                          const char *text)
{
    xs_node *e = xs_add_elem(parent, ns, name);
    xs_add_text(e, text, strlen(text));
}

/* XEP-0030 disco#info: the server lists the iq table's features; an
 * account is a registered account, which to its owner also lists what
 * the table serves at the bare JID (XEP-0313: the archive is queried
 * there). Nodes are not served. */
int iq_disco_info(const iq_request *req)
{
    if (!req->get || xs_attr_get(req->q, "node")) return -1;
    xs_node *res = result_for(req);
    xs_node *r = xs_add_elem(res, NS_DISCO_INFO, "query");
    if (req->to == IQ_TO_SERVER) {
        add_identity(r, "server", "im", "chatd");
        iq_foreach_feature(add_feature, r);
    } else if (req->to == IQ_TO_OWN) {
        add_identity(r, "account", "registered", NULL);
        iq_foreach_feature_to(IQ_TO_OWN, add_feature, r);
    } else {
        add_identity(r, "account", "registered", NULL);
        add_feature(NS_DISCO_INFO, r);
    }
    reply(req->d, req->rs, res);
    return 0;
}

/* XEP-0030 disco#items: the server's items are its MUC service. */
int iq_disco_items(const iq_request *req)
{
    if (!req->get || (req->to == IQ_TO_SERVER && xs_attr_get(req->q, "node"))) return -1;
    xs_node *res = result_for(req);
    xs_node *r = xs_add_elem(res, NS_DISCO_ITEMS, "query");
    if (req->to == IQ_TO_SERVER && req->d->cfg.muc_domain) {
        xs_node *it = xs_add_elem(r, NS_DISCO_ITEMS, "item");
        xs_set_attr(it, "jid", req->d->cfg.muc_domain);
        xs_set_attr(it, "name", "Chatrooms");
    }
    reply(req->d, req->rs, res);
    return 0;
}

/* XEP-0199 ping of the server or of the sender's own account. */
int iq_ping(const iq_request *req)
{
    if (!req->get) return -1;
    reply(req->d, req->rs, result_for(req));
    return 0;
}

/* XEP-0092 software version. */
int iq_version(const iq_request *req)
{
    if (!req->get) return -1;
    xs_node *res = result_for(req);
    xs_node *r = xs_add_elem(res, NS_VERSION, "query");
    add_text_elem(r, NS_VERSION, "name", "chatd");
    add_text_elem(r, NS_VERSION, "version", "0.1");
    reply(req->d, req->rs, res);
    return 0;
}

/* XEP-0202 entity time, in UTC. */
int iq_time(const iq_request *req)
{
    if (!req->get) return -1;
    char stamp[32];
    xs_node *res = result_for(req);
    xs_node *r = xs_add_elem(res, NS_TIME, "time");
    add_text_elem(r, NS_TIME, "tzo", "+00:00");
    add_text_elem(r, NS_TIME, "utc", xmpp_timestamp(stamp, sizeof(stamp), time(NULL)));
    reply(req->d, req->rs, res);
    return 0;
}

/* RFC 3921 session establishment: a no-op kept for old clients. */
int iq_session(const iq_request *req)
{
    if (req->get) return -1;
    reply(req->d, req->rs, result_for(req));
    return 0;
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

/* XEP-0054: a vCard get for the server (always empty) or any account, or
 * a set by the account's owner. */
int iq_vcard(const iq_request *req)
{
    chatd *d = req->d;
    const xs_node *st = req->st, *q = req->q;
    int get = req->get;
    if (req->to == IQ_TO_SERVER) {
        if (!get) return -1;
        xs_node *res = result_for(req);
        xs_add_elem(res, NS_VCARD, "vCard");
        reply(d, req->rs, res);
        return 0;
    }
    if (!get && req->to != IQ_TO_OWN) return -1;
    jid j;
    if (jid_parse(req->to_bare, &j) < 0 || !j.local[0]) return -1;
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
