/*
 * private_storage.c: XEP-0049 with XEP-0402 bookmark compatibility (see
 * private_storage.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "private_storage.h"
#include "pep.h"
#include "router.h"
#include "redis_async.h"
#include "log.h"
#include "xmpp_internal.h"

/* ---- conversions (pure) ---- */

static int truthy(const char *v)
{
    return v && (strcmp(v, "true") == 0 || strcmp(v, "1") == 0);
}

static void copy_text_child(xs_node *to, const char *ns, const xs_node *from, const char *from_ns,
                            const char *name)
{
    xs_node *c = xs_child(from, from_ns, name);
    if (!c) return;
    char *t = xs_text(c);
    xs_add_text(xs_add_elem(to, ns, name), t, strlen(t));
    free(t);
}

xs_node *bookmark_to_native(const xs_node *old, char **id)
{
    const char *jid = xs_attr_get(old, "jid");
    if (!jid || !*jid) return NULL;
    xs_node *n = xs_new(NS_BOOKMARKS2, "conference");
    if (xs_attr_get(old, "name")) xs_set_attr(n, "name", xs_attr_get(old, "name"));
    xs_set_attr(n, "autojoin", truthy(xs_attr_get(old, "autojoin")) ? "true" : "false");
    copy_text_child(n, NS_BOOKMARKS2, old, NS_BOOKMARKS_OLD, "nick");
    copy_text_child(n, NS_BOOKMARKS2, old, NS_BOOKMARKS_OLD, "password");
    if (!(*id = strdup(jid))) abort();
    return n;
}

xs_node *bookmark_to_legacy(const char *id, const xs_node *nat)
{
    xs_node *o = xs_new(NS_BOOKMARKS_OLD, "conference");
    xs_set_attr(o, "jid", id);
    if (xs_attr_get(nat, "name")) xs_set_attr(o, "name", xs_attr_get(nat, "name"));
    xs_set_attr(o, "autojoin", truthy(xs_attr_get(nat, "autojoin")) ? "true" : "false");
    copy_text_child(o, NS_BOOKMARKS_OLD, nat, NS_BOOKMARKS2, "nick");
    copy_text_child(o, NS_BOOKMARKS_OLD, nat, NS_BOOKMARKS2, "password");
    return o;
}

/* ---- the scripts ---- */

/* KEYS: nodes, items, order, use. ARGV: node, config if new, max nodes,
 * items cap, bytes cap, then id, xml pairs. The node's items become
 * exactly these. Returns {'ok', config, removed ids...} or a refusal. */
static const char LUA_REPLACE[] =
    "local cfg = redis.call('HGET', KEYS[1], ARGV[1])\n"
    "local new = false\n"
    "if not cfg then\n"
    "  if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then return {'nodes'} end\n"
    "  cfg = ARGV[2]; new = true\n"
    "end\n"
    "local max = tonumber(string.match(cfg, ';max_items=(%d+);')) or 1\n"
    "if max > tonumber(ARGV[4]) then max = tonumber(ARGV[4]) end\n"
    "if (#ARGV - 5) / 2 > max then return {'items'} end\n"
    "local use = tonumber(redis.call('GET', KEYS[4]) or '0')\n"
    "local old = redis.call('LRANGE', KEYS[3], 0, -1)\n"
    "for _, id in ipairs(old) do use = use - redis.call('HSTRLEN', KEYS[2], id) end\n"
    "local keep = {}\n"
    "for i = 6, #ARGV, 2 do use = use + #ARGV[i + 1]; keep[ARGV[i]] = true end\n"
    "if use > tonumber(ARGV[5]) then return {'bytes'} end\n"
    "if new then redis.call('HSET', KEYS[1], ARGV[1], cfg) end\n"
    "redis.call('DEL', KEYS[2], KEYS[3])\n"
    "for i = 6, #ARGV, 2 do\n"
    "  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])\n"
    "  redis.call('LPUSH', KEYS[3], ARGV[i])\n"
    "end\n"
    "redis.call('SET', KEYS[4], math.max(use, 0))\n"
    "local out = {'ok', cfg}\n"
    "for _, id in ipairs(old) do if not keep[id] then out[#out + 1] = id end end\n"
    "return out\n";

/* KEYS: items, order. Returns {id, xml, ...}, newest first. */
static const char LUA_ALL[] =
    "local out = {}\n"
    "for _, id in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do\n"
    "  local x = redis.call('HGET', KEYS[1], id)\n"
    "  if x then out[#out + 1] = id; out[#out + 1] = x end\n"
    "end\n"
    "return out\n";

/* KEYS: the private hash. ARGV: field, xml, max fields. */
static const char LUA_PRIVATE_SET[] =
    "if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 and\n"
    "   redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then return 'full' end\n"
    "redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])\n"
    "return 'ok'\n";

/* ---- requests ---- */

typedef struct priv_ctx {
    chatd   *d;
    xs_node *iq;            /* the request (copy) */
    xs_node *payload;       /* set: what was stored (copy); get: the element asked for */
    char    *local;
    xs_node *event;         /* bookmarks set: the <items/> event of the new items */
} priv_ctx;

static priv_ctx *ctx_new(const iq_request *req, const char *local, const xs_node *payload)
{
    priv_ctx *c = calloc(1, sizeof(*c));
    if (!c || !(c->local = strdup(local))) abort();
    c->d = req->d;
    c->iq = xs_copy(req->st);
    c->payload = xs_copy(payload);
    return c;
}

static void ctx_free(priv_ctx *c)
{
    xs_free(c->iq);
    xs_free(c->payload);
    xs_free(c->event);
    free(c->local);
    free(c);
}

static void answer_with(priv_ctx *c, xs_node *content)
{
    xs_node *res = iq_result(c->iq);
    xs_node *q = xs_add_elem(res, NS_PRIVATE, "query");
    if (content) xs_append_child(q, content);
    router_deliver(c->d, xs_attr_get(res, "to"), res);
    xs_free(res);
}

static const char *reply_err(redisReply *r, const char *err, int want)
{
    return err ? err : !r ? "no reply" : r->type == REDIS_REPLY_ERROR ? r->str
         : (want >= 0 && r->type != want) ? "unexpected reply" : NULL;
}

/* get storage:bookmarks: the bookmarks:1 items, converted. */
static void bookmarks_loaded(redisReply *r, const char *err, void *ud)
{
    priv_ctx *c = ud;
    if (!c->d->router) { ctx_free(c); return; }   /* shutting down */
    const char *why = reply_err(r, err, REDIS_REPLY_ARRAY);
    if (why) {
        log_warn("private: BOSH00910: reading the bookmarks of %s failed: %s", c->local, why);
        router_bounce(c->d, c->iq, "wait", "internal-server-error");
        ctx_free(c);
        return;
    }
    xs_node *storage = xs_new(NS_BOOKMARKS_OLD, "storage");
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        redisReply *id = r->element[i], *x = r->element[i + 1];
        xs_node *conf = NULL;
        char perr[64];
        if (id->type != REDIS_REPLY_STRING || x->type != REDIS_REPLY_STRING ||
            xs_parse_document(x->str, x->len, x->len + 1, &conf, perr, sizeof(perr)) != XS_OK)
            continue;
        if (xs_is(conf, NS_BOOKMARKS2, "conference"))
            xs_append_child(storage, bookmark_to_legacy(id->str, conf));
        xs_free(conf);
    }
    answer_with(c, storage);
    ctx_free(c);
}

static void bookmarks_stored(redisReply *r, const char *err, void *ud)
{
    priv_ctx *c = ud;
    if (!c->d->router) { ctx_free(c); return; }   /* shutting down */
    const char *why = reply_err(r, err, REDIS_REPLY_ARRAY);
    const char *status = !why && r->elements && r->element[0]->type == REDIS_REPLY_STRING
                       ? r->element[0]->str : NULL;
    if (why || !status) {
        log_warn("private: BOSH00911: storing the bookmarks of %s failed: %s", c->local,
                 why ? why : "bad reply");
        router_bounce(c->d, c->iq, "wait", "internal-server-error");
    } else if (strcmp(status, "ok") != 0) {
        log_info("private: BOSH00912: bookmarks of %s refused: %s over the PEP limits",
                 c->local, status);
        router_bounce(c->d, c->iq, "modify", "not-acceptable");
    } else {
        answer_with(c, NULL);
        /* XEP-0402 clients of the same account see the change. */
        for (size_t i = 2; i < r->elements; i++)
            if (r->element[i]->type == REDIS_REPLY_STRING)
                xs_set_attr(xs_add_elem(c->event, NS_PUBSUB_EVENT, "retract"), "id",
                            r->element[i]->str);
        if (xs_child(c->event, NULL, NULL))
            pep_notify(c->d, c->local, NS_BOOKMARKS2, PEP_ACCESS_WHITELIST, c->event);
    }
    ctx_free(c);
}

static void bookmarks_set(const iq_request *req, const char *local, const xs_node *storage)
{
    chatd *d = req->d;
    char nodes[JID_MAX + 32], items[JID_MAX + 64], order[JID_MAX + 64], use[JID_MAX + 32];
    snprintf(nodes, sizeof(nodes), "chat:pep:%s", local);
    snprintf(items, sizeof(items), "chat:pep-items:%s:" NS_BOOKMARKS2, local);
    snprintf(order, sizeof(order), "chat:pep-order:%s:" NS_BOOKMARKS2, local);
    snprintf(use, sizeof(use), "chat:pep-use:%s", local);
    pep_config cfg;
    pep_config_default(NS_BOOKMARKS2, d->cfg.pep_max_items, &cfg);
    char cfgs[PEP_CONFIG_MAX], maxn[16], cap[16], bytes[16];
    pep_config_format(&cfg, 0, cfgs, sizeof(cfgs));
    snprintf(maxn, sizeof(maxn), "%u", d->cfg.pep_max_nodes);
    snprintf(cap, sizeof(cap), "%u", d->cfg.pep_max_items);
    snprintf(bytes, sizeof(bytes), "%u", d->cfg.pep_max_bytes);

    size_t n = 0;
    for (xs_node *cf = xs_child(storage, NS_BOOKMARKS_OLD, "conference"); cf;
         cf = xs_next_elem(cf, NS_BOOKMARKS_OLD, "conference")) n++;
    size_t argc = 12 + 2 * n;
    const char **argv = calloc(argc, sizeof(*argv));
    size_t *lens = calloc(argc, sizeof(*lens));
    char **owned = calloc(2 * n + 1, sizeof(*owned));
    if (!argv || !lens || !owned) abort();
    size_t k = 0, o = 0;
    argv[k++] = "EVAL"; argv[k++] = LUA_REPLACE; argv[k++] = "4";
    argv[k++] = nodes; argv[k++] = items; argv[k++] = order; argv[k++] = use;
    argv[k++] = NS_BOOKMARKS2; argv[k++] = cfgs; argv[k++] = maxn; argv[k++] = cap;
    argv[k++] = bytes;
    priv_ctx *c = ctx_new(req, local, NULL);
    c->event = xs_new(NS_PUBSUB_EVENT, "items");
    xs_set_attr(c->event, "node", NS_BOOKMARKS2);
    int too_big = 0;
    for (xs_node *cf = xs_child(storage, NS_BOOKMARKS_OLD, "conference"); cf;
         cf = xs_next_elem(cf, NS_BOOKMARKS_OLD, "conference")) {
        char *id = NULL;
        xs_node *nat = bookmark_to_native(cf, &id);
        if (!nat) continue;
        strbuf sb = STRBUF_INIT;
        xs_serialize(nat, NULL, &sb);
        if (sb.len > d->cfg.pep_max_item_bytes) too_big = 1;
        xs_node *it = xs_add_elem(c->event, NS_PUBSUB_EVENT, "item");
        xs_set_attr(it, "id", id);
        xs_append_child(it, nat);
        owned[o++] = id;
        char *xml = malloc(sb.len + 1);
        if (!xml) abort();
        memcpy(xml, sb.data ? sb.data : "", sb.len);
        xml[sb.len] = '\0';
        owned[o++] = xml;
        argv[k++] = id;
        argv[k++] = xml;
        sb_free(&sb);
    }
    for (size_t i = 0; i < k; i++) lens[i] = strlen(argv[i]);
    if (too_big) {
        router_bounce(d, req->st, "modify", "not-acceptable");
        ctx_free(c);
    } else {
        redis_async_commandargv_keyed(d->redis, nodes, bookmarks_stored, c, (int)k, argv, lens);
    }
    for (size_t i = 0; i < o; i++) free(owned[i]);
    free(owned);
    free(argv);
    free(lens);
}

/* other namespaces */
static void private_loaded(redisReply *r, const char *err, void *ud)
{
    priv_ctx *c = ud;
    if (!c->d->router) { ctx_free(c); return; }   /* shutting down */
    const char *why = reply_err(r, err, -1);
    if (why) {
        log_warn("private: BOSH00913: reading private data of %s failed: %s", c->local, why);
        router_bounce(c->d, c->iq, "wait", "internal-server-error");
    } else {
        xs_node *stored = NULL;
        char perr[64];
        if (r->type == REDIS_REPLY_STRING &&
            xs_parse_document(r->str, r->len, r->len + 1, &stored, perr, sizeof(perr)) != XS_OK)
            stored = NULL;
        /* Nothing stored: the empty element asked for (XEP-0049 §2.3). */
        answer_with(c, stored ? stored : xs_copy(c->payload));
    }
    ctx_free(c);
}

static void private_stored(redisReply *r, const char *err, void *ud)
{
    priv_ctx *c = ud;
    if (!c->d->router) { ctx_free(c); return; }   /* shutting down */
    const char *why = reply_err(r, err, -1);
    if (why) {
        log_warn("private: BOSH00914: storing private data of %s failed: %s", c->local, why);
        router_bounce(c->d, c->iq, "wait", "internal-server-error");
    } else if (r->type == REDIS_REPLY_STATUS || r->type == REDIS_REPLY_STRING) {
        if (strcmp(r->str, "ok") == 0) answer_with(c, NULL);
        else router_bounce(c->d, c->iq, "modify", "not-acceptable");
    } else {
        router_bounce(c->d, c->iq, "wait", "internal-server-error");
    }
    ctx_free(c);
}

int private_iq(const iq_request *req)
{
    if (!req->rs || req->to != IQ_TO_OWN) return -1;
    const xs_node *el = xs_child(req->q, NULL, NULL);
    /* Exactly one child, in a namespace of its own (XEP-0049 §3). */
    if (!el || xs_next_elem(el, NULL, NULL) || !el->ns[0] || strcmp(el->ns, NS_PRIVATE) == 0 ||
        strcmp(el->ns, NS_CLIENT) == 0) {
        router_bounce(req->d, req->st, "modify", "not-acceptable");
        return 0;
    }
    jid j;
    if (jid_parse(req->to_bare, &j) < 0) return -1;
    int bookmarks = xs_is(el, NS_BOOKMARKS_OLD, "storage");
    if (bookmarks && !req->get) { bookmarks_set(req, j.local, el); return 0; }

    priv_ctx *c = ctx_new(req, j.local, el);
    char key[JID_MAX + 32];
    if (bookmarks) {
        char items[JID_MAX + 64], order[JID_MAX + 64];
        snprintf(key, sizeof(key), "chat:pep:%s", j.local);
        snprintf(items, sizeof(items), "chat:pep-items:%s:" NS_BOOKMARKS2, j.local);
        snprintf(order, sizeof(order), "chat:pep-order:%s:" NS_BOOKMARKS2, j.local);
        /* all items, newest first; no node is no bookmarks */
        redis_async_command_keyed(req->d->redis, key, bookmarks_loaded, c,
                                  "EVAL %s 2 %s %s", LUA_ALL, items, order);
        return 0;
    }
    snprintf(key, sizeof(key), "chat:private:%s", j.local);
    size_t fl = strlen(el->ns) + strlen(el->name) + 2;
    char *field = malloc(fl);
    if (!field) abort();
    snprintf(field, fl, "%s %s", el->ns, el->name);
    if (req->get) {
        redis_async_command(req->d->redis, private_loaded, c, "HGET %s %s", key, field);
    } else {
        strbuf sb = STRBUF_INIT;
        xs_serialize(el, NULL, &sb);
        if (sb.len > req->d->cfg.pep_max_item_bytes) {
            router_bounce(req->d, req->st, "modify", "not-acceptable");
            ctx_free(c);
        } else {
            char maxn[16];
            snprintf(maxn, sizeof(maxn), "%u", req->d->cfg.pep_max_nodes);
            redis_async_command(req->d->redis, private_stored, c, "EVAL %s 1 %s %s %b %s",
                                LUA_PRIVATE_SET, key, field, sb.data ? sb.data : "", sb.len,
                                maxn);
        }
        sb_free(&sb);
    }
    free(field);
    return 0;
}
