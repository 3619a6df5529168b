/*
 * pep.c: XEP-0163 PEP on account bare JIDs (see pep.h).
 *
 * Every request is answered from the Redis reply's callback; the request
 * (a copy) travels in a small context. Events are built once per publish
 * and handed to each interested session through router_deliver.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "pep.h"
#include "caps.h"
#include "router.h"
#include "redis_async.h"
#include "log.h"
#include "xmpp_internal.h"

#define NS_INTERNAL "urn:chatd:internal"
#define PEP_KEY "chat:pep:"

/* ---- the scripts ---- */

/* KEYS: nodes, items, order, use. ARGV: node, precondition, new config,
 * max nodes, id, item xml, items cap, bytes cap. */
static const char LUA_PUBLISH[] =
    "local cfg = redis.call('HGET', KEYS[1], ARGV[1])\n"
    "local new = false\n"
    "if not cfg then\n"
    "  if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[4]) then return {'nodes'} end\n"
    "  cfg = ARGV[3]; new = true\n"
    "else\n"
    "  for kv in string.gmatch(ARGV[2], '[^;]+') do\n"
    "    if not string.find(cfg, ';' .. kv .. ';', 1, true) then return {'precondition', cfg} end\n"
    "  end\n"
    "end\n"
    "local max = tonumber(string.match(cfg, ';max_items=(%d+);')) or 1\n"
    "if max > tonumber(ARGV[7]) then max = tonumber(ARGV[7]) end\n"
    "local use = tonumber(redis.call('GET', KEYS[4]) or '0')\n"
    "local freed = redis.call('HSTRLEN', KEYS[2], ARGV[5])\n"
    "if freed == 0 and redis.call('HEXISTS', KEYS[2], ARGV[5]) == 0 then\n"
    "  for _, old in ipairs(redis.call('LRANGE', KEYS[3], max - 1, -1)) do\n"
    "    freed = freed + redis.call('HSTRLEN', KEYS[2], old)\n"
    "  end\n"
    "end\n"
    "if use - freed + #ARGV[6] > tonumber(ARGV[8]) then return {'bytes'} end\n"
    "if new then redis.call('HSET', KEYS[1], ARGV[1], cfg) end\n"
    "use = use + #ARGV[6] - redis.call('HSTRLEN', KEYS[2], ARGV[5])\n"
    "redis.call('HSET', KEYS[2], ARGV[5], ARGV[6])\n"
    "redis.call('LREM', KEYS[3], 0, ARGV[5])\n"
    "redis.call('LPUSH', KEYS[3], ARGV[5])\n"
    "while redis.call('LLEN', KEYS[3]) > max do\n"
    "  local old = redis.call('RPOP', KEYS[3])\n"
    "  use = use - redis.call('HSTRLEN', KEYS[2], old)\n"
    "  redis.call('HDEL', KEYS[2], old)\n"
    "end\n"
    "redis.call('SET', KEYS[4], math.max(use, 0))\n"
    "return {'ok', cfg}\n";

/* KEYS: nodes, items, order, use. ARGV: node, id. */
static const char LUA_RETRACT[] =
    "local cfg = redis.call('HGET', KEYS[1], ARGV[1])\n"
    "if not cfg then return {'node'} end\n"
    "local len = redis.call('HSTRLEN', KEYS[2], ARGV[2])\n"
    "if redis.call('HDEL', KEYS[2], ARGV[2]) == 0 then return {'item'} end\n"
    "redis.call('LREM', KEYS[3], 0, ARGV[2])\n"
    "local use = tonumber(redis.call('GET', KEYS[4]) or '0') - len\n"
    "redis.call('SET', KEYS[4], math.max(use, 0))\n"
    "return {'ok', cfg}\n";

/* KEYS: nodes, items, order. ARGV: node, how many (0: all), ids...
 * Returns {} (no node) or {cfg, id, item, id, item, ...}, newest first. */
static const char LUA_ITEMS[] =
    "local cfg = redis.call('HGET', KEYS[1], ARGV[1])\n"
    "if not cfg then return {} end\n"
    "local out = {cfg}\n"
    "local ids\n"
    "if #ARGV > 2 then ids = {unpack(ARGV, 3)}\n"
    "else\n"
    "  local n = tonumber(ARGV[2])\n"
    "  ids = redis.call('LRANGE', KEYS[3], 0, n > 0 and n - 1 or -1)\n"
    "end\n"
    "for _, id in ipairs(ids) do\n"
    "  local x = redis.call('HGET', KEYS[2], id)\n"
    "  if x then out[#out + 1] = id; out[#out + 1] = x end\n"
    "end\n"
    "return out\n";

/* KEYS: nodes, items, order, use. ARGV: node, fields to set (";k=v;..."), cap.
 * Returns {'node'} or {'ok', new config}; trims to a lowered max_items. */
static const char LUA_CONFIGURE[] =
    "local cfg = redis.call('HGET', KEYS[1], ARGV[1])\n"
    "if not cfg then return {'node'} end\n"
    "for k, v in string.gmatch(ARGV[2], '([%w_#]+)=([^;]*)') do\n"
    "  cfg = string.gsub(cfg, ';' .. k .. '=[^;]*;', function() return ';' .. k .. '=' .. v .. ';' end)\n"
    "end\n"
    "redis.call('HSET', KEYS[1], ARGV[1], cfg)\n"
    "local max = tonumber(string.match(cfg, ';max_items=(%d+);')) or 1\n"
    "if max > tonumber(ARGV[3]) then max = tonumber(ARGV[3]) end\n"
    "local use = tonumber(redis.call('GET', KEYS[4]) or '0')\n"
    "while redis.call('LLEN', KEYS[3]) > max do\n"
    "  local old = redis.call('RPOP', KEYS[3])\n"
    "  use = use - redis.call('HSTRLEN', KEYS[2], old)\n"
    "  redis.call('HDEL', KEYS[2], old)\n"
    "end\n"
    "redis.call('SET', KEYS[4], math.max(use, 0))\n"
    "return {'ok', cfg}\n";

/* Last items for a session's +notify list, of several accounts at once
 * (one round trip at sign-in, however long the roster). Keys are built
 * here from the prefix: chatd uses one Redis, not a cluster.
 * ARGV: self localpart, number of nodes, nodes..., localparts...
 * Returns {local, node, id, item, ...}: nodes that exist, whose
 * send_last_published_item is not 'never', that the reader may see
 * (whitelist: only its own account; presence/open: the caller passes
 * only contacts with a subscription). */
static const char LUA_LAST[] =
    "local nn = tonumber(ARGV[2])\n"
    "local out = {}\n"
    "for i = 3 + nn, #ARGV do\n"
    "  local who = ARGV[i]\n"
    "  for j = 3, 2 + nn do\n"
    "    local node = ARGV[j]\n"
    "    local cfg = redis.call('HGET', 'chat:pep:' .. who, node)\n"
    "    if cfg and not string.find(cfg, ';send_last_published_item=never;', 1, true)\n"
    "       and (who == ARGV[1] or not string.find(cfg, ';access_model=whitelist;', 1, true)) then\n"
    "      local id = redis.call('LINDEX', 'chat:pep-order:' .. who .. ':' .. node, 0)\n"
    "      local x = id and redis.call('HGET', 'chat:pep-items:' .. who .. ':' .. node, id)\n"
    "      if x then out[#out + 1] = who; out[#out + 1] = node; out[#out + 1] = id;"
    " out[#out + 1] = x end\n"
    "    end\n"
    "  end\n"
    "end\n"
    "return out\n";

/* ---- helpers ---- */

typedef struct keys {
    char nodes[JID_MAX + 32], items[JID_MAX + 300], order[JID_MAX + 300], use[JID_MAX + 32];
} keys;

static void keys_for(keys *k, const char *local, const char *node)
{
    snprintf(k->nodes, sizeof(k->nodes), PEP_KEY "%s", local);
    snprintf(k->items, sizeof(k->items), "chat:pep-items:%s:%s", local, node);
    snprintf(k->order, sizeof(k->order), "chat:pep-order:%s:%s", local, node);
    snprintf(k->use, sizeof(k->use), "chat:pep-use:%s", local);
}

static char *xstrdup(const char *s)
{
    char *d = strdup(s ? s : "");
    if (!d) abort();
    return d;
}

/* An error answer to iq (from/to swapped) with an optional XEP-0060
 * application condition. */
static void pep_error(chatd *d, const xs_node *iq, const char *type, const char *cond,
                      const char *pubsub_cond)
{
    const char *back = xs_attr_get(iq, "from");
    if (!back) return;
    xs_node *err = stanza_new("iq", xs_attr_get(iq, "to"), back, "error", xs_attr_get(iq, "id"));
    xs_node *e = xs_add_elem(err, NS_CLIENT, "error");
    xs_set_attr(e, "type", type);
    xs_add_elem(e, NS_STANZAS, cond);
    if (pubsub_cond) xs_add_elem(e, NS_PUBSUB_ERRORS, pubsub_cond);
    router_deliver(d, back, err);
    xs_free(err);
}

static void answer(chatd *d, xs_node *res)
{
    router_deliver(d, xs_attr_get(res, "to"), res);
    xs_free(res);
}

static const char *reply_err(redisReply *r, const char *err)
{
    return err ? err : !r ? "no reply" : r->type == REDIS_REPLY_ERROR ? r->str
         : r->type != REDIS_REPLY_ARRAY ? "unexpected reply" : NULL;
}

static const char *elem_str(redisReply *r, size_t i)
{
    return i < r->elements && r->element[i]->type == REDIS_REPLY_STRING ? r->element[i]->str : NULL;
}

typedef struct op_ctx {
    chatd   *d;
    xs_node *iq;        /* the request (copy) */
    char    *local;     /* the node owner */
    char    *node;
    xs_node *event;     /* publish/retract: the <items/> of the event, ready */
    int      notify;    /* retract: notify='true' */
    int      is_owner;
} op_ctx;

static op_ctx *ctx_new(const iq_request *req, const char *local, const char *node)
{
    op_ctx *c = calloc(1, sizeof(*c));
    if (!c) abort();
    c->d = req->d;
    c->iq = xs_copy(req->st);
    c->local = xstrdup(local);
    c->node = xstrdup(node);
    c->is_owner = req->to == IQ_TO_OWN;
    return c;
}

static void ctx_free(op_ctx *c)
{
    xs_free(c->iq);
    xs_free(c->event);
    free(c->local);
    free(c->node);
    free(c);
}

static int run_script(chatd *d, const char *key, redis_async_cb cb, void *ud,
                      const char *script, int nkeys, const char **args, const size_t *lens,
                      int nargs)
{
    const char *argv[48];
    size_t argvlen[48];
    char nk[8];
    if (nargs + 3 > 48) return -1;
    snprintf(nk, sizeof(nk), "%d", nkeys);
    argv[0] = "EVAL"; argvlen[0] = 4;
    argv[1] = script; argvlen[1] = strlen(script);
    argv[2] = nk; argvlen[2] = strlen(nk);
    for (int i = 0; i < nargs; i++) {
        argv[3 + i] = args[i];
        argvlen[3 + i] = lens ? lens[i] : strlen(args[i]);
    }
    redis_async_commandargv_keyed(d->redis, key, cb, ud, nargs + 3, argv, argvlen);
    return 0;
}

/* ---- events ---- */

/* The event message for `items` (an <items/> in NS_PUBSUB_EVENT), from
 * the owner's bare JID. */
static xs_node *event_message(const char *from_bare, const xs_node *items)
{
    static unsigned long seq;
    char id[32];
    snprintf(id, sizeof(id), "pep%lu", ++seq);
    xs_node *m = stanza_new("message", from_bare, NULL, "headline", id);
    xs_node *ev = xs_add_elem(m, NS_PUBSUB_EVENT, "event");
    xs_append_child(ev, xs_copy(items));
    return m;
}

/* Does s want events of node? Converse.js 14 announces only
 * storage:bookmarks+notify, yet uses XEP-0402 when #compat is advertised
 * and handles urn:xmpp:bookmarks:1 events: a client that asked for the old
 * bookmarks node gets the native one's events too. */
static int wants(const rsession *s, const char *node)
{
    return caps_wants(s, node) ||
           (strcmp(node, "urn:xmpp:bookmarks:1") == 0 && caps_wants(s, "storage:bookmarks"));
}

static void send_event(chatd *d, rsession *s, xs_node *msg)
{
    xs_set_attr(msg, "to", s->full);
    router_deliver(d, s->full, msg);
}

/* The owner's roster is loaded: the event to the owner's sessions and,
 * unless whitelisted, to subscribed contacts' sessions that want it.
 * st is <pep access=.. node=..><message/></pep> (NS_INTERNAL). */
static void notify_action(chatd *d, ruser *u, rsession *origin, xs_node *st)
{
    (void)origin;
    const char *node = xs_attr_get(st, "node");
    int access = atoi(xs_attr_get(st, "access"));
    xs_node *msg = xs_child(st, NS_CLIENT, "message");
    if (!node || !msg) return;
    for (rsession *s = u->sessions; s; s = s->next)
        if (s->available && wants(s, node)) send_event(d, s, msg);
    if (access == PEP_ACCESS_WHITELIST || u->roster_state != ROSTER_LOADED) return;
    for (roster_item *it = u->roster; it; it = it->next) {
        jid j;
        if (!roster_sub_has_from(it->sub) || jid_parse(it->jid, &j) < 0 ||
            strcmp(j.domain, d->cfg.domain) != 0)
            continue;
        ruser *cu = router_user(d, j.local);
        for (rsession *s = cu ? cu->sessions : NULL; s; s = s->next)
            if (s->available && wants(s, node)) send_event(d, s, msg);
    }
}

/* The roster could not be read: only the owner's own sessions. */
static void notify_own_only(chatd *d, ruser *u, rsession *origin, xs_node *st)
{
    xs_set_attr(st, "access", "2");
    notify_action(d, u, origin, st);
}

static void notify(chatd *d, const char *local, const char *owner_bare, const char *node,
                   int access, const xs_node *items)
{
    xs_node *w = xs_new(NS_INTERNAL, "pep");
    char a[8];
    snprintf(a, sizeof(a), "%d", access);
    xs_set_attr(w, "access", a);
    xs_set_attr(w, "node", node);
    xs_append_child(w, event_message(owner_bare, items));
    roster_with_fail(d, local, notify_action, notify_own_only, NULL, w);
}

void pep_notify(chatd *d, const char *local, const char *node, int access,
                const xs_node *items)
{
    char bare[JID_MAX + 1];
    snprintf(bare, sizeof(bare), "%s@%s", local, d->cfg.domain);
    notify(d, local, bare, node, access, items);
}

/* ---- publish ---- */

static void published(redisReply *r, const char *err, void *ud)
{
    op_ctx *c = ud;
    if (!c->d->router) { ctx_free(c); return; }   /* shutting down */
    const char *why = reply_err(r, err);
    const char *status = why ? NULL : elem_str(r, 0);
    if (why || !status) {
        log_warn("pep: BOSH00901: publish to %s of %s failed: %s", c->node, c->local,
                 why ? why : "bad reply");
        pep_error(c->d, c->iq, "wait", "internal-server-error", NULL);
    } else if (strcmp(status, "nodes") == 0) {
        log_info("pep: BOSH00902: %s is at pep_max_nodes (%u), not creating %s", c->local,
                 c->d->cfg.pep_max_nodes, c->node);
        pep_error(c->d, c->iq, "cancel", "policy-violation", NULL);
    } else if (strcmp(status, "bytes") == 0) {
        log_info("pep: BOSH00903: %s is at pep_max_bytes (%u), not storing an item of %s",
                 c->local, c->d->cfg.pep_max_bytes, c->node);
        pep_error(c->d, c->iq, "wait", "resource-constraint", NULL);
    } else if (strcmp(status, "precondition") == 0) {
        pep_error(c->d, c->iq, "cancel", "conflict", "precondition-not-met");
    } else {
        pep_config cfg;
        pep_config_default(c->node, c->d->cfg.pep_max_items, &cfg);
        pep_config_parse(elem_str(r, 1), &cfg);
        xs_node *res = iq_result(c->iq);
        xs_node *ps = xs_add_elem(res, NS_PUBSUB, "pubsub");
        xs_node *pub = xs_add_elem(ps, NS_PUBSUB, "publish");
        xs_set_attr(pub, "node", c->node);
        xs_node *item = xs_child(c->event, NS_PUBSUB_EVENT, "item");
        xs_set_attr(xs_add_elem(pub, NS_PUBSUB, "item"), "id", xs_attr_get(item, "id"));
        answer(c->d, res);
        char bare[JID_MAX + 1];
        snprintf(bare, sizeof(bare), "%s@%s", c->local, c->d->cfg.domain);
        notify(c->d, c->local, bare, c->node, cfg.access, c->event);
    }
    ctx_free(c);
}

static void do_publish(const iq_request *req, const xs_node *pub, const char *node)
{
    chatd *d = req->d;
    xs_node *item = xs_child(pub, NS_PUBSUB, "item");
    xs_node *payload = item ? xs_child(item, NULL, NULL) : NULL;
    if (!payload) { pep_error(d, req->st, "modify", "bad-request", "item-required"); return; }
    if (xs_next_elem(payload, NULL, NULL)) {
        pep_error(d, req->st, "modify", "bad-request", "invalid-payload");
        return;
    }
    pep_config cfg;
    pep_config_default(node, d->cfg.pep_max_items, &cfg);
    xs_node *po = xs_child(req->q, NS_PUBSUB, "publish-options");
    if (po && pep_form_read(xs_child(po, NS_XDATA, "x"), d->cfg.pep_max_items, &cfg) < 0) {
        pep_error(d, req->st, "cancel", "conflict", "precondition-not-met");
        return;
    }
    char id[128];
    const char *given = xs_attr_get(item, "id");
    if (given && *given && strlen(given) < sizeof(id)) snprintf(id, sizeof(id), "%s", given);
    else if (given && *given) { pep_error(d, req->st, "modify", "bad-request", NULL); return; }
    else {
        static unsigned long seq;
        snprintf(id, sizeof(id), "%lx-%lx", (unsigned long)time(NULL), ++seq);
    }
    /* The event carries the item as the publisher sent it. */
    xs_node *ev_items = xs_new(NS_PUBSUB_EVENT, "items");
    xs_set_attr(ev_items, "node", node);
    xs_node *ev_item = xs_add_elem(ev_items, NS_PUBSUB_EVENT, "item");
    xs_set_attr(ev_item, "id", id);
    xs_append_child(ev_item, xs_copy(payload));

    strbuf xml = STRBUF_INIT;
    xs_serialize(payload, NULL, &xml);
    if (xml.len > d->cfg.pep_max_item_bytes) {
        log_info("pep: BOSH00904: item of %zu bytes for %s refused (pep_max_item_bytes %u)",
                 xml.len, node, d->cfg.pep_max_item_bytes);
        pep_error(d, req->st, "modify", "not-acceptable", "payload-too-big");
        sb_free(&xml);
        xs_free(ev_items);
        return;
    }
    jid j;
    jid_parse(req->to_bare, &j);
    op_ctx *c = ctx_new(req, j.local, node);
    c->event = ev_items;
    keys k;
    keys_for(&k, j.local, node);
    char pre[PEP_CONFIG_MAX], full[PEP_CONFIG_MAX], maxn[16], cap[16], bytes[16];
    pep_config_format(&cfg, 1, pre, sizeof(pre));
    pep_config_format(&cfg, 0, full, sizeof(full));
    snprintf(maxn, sizeof(maxn), "%u", d->cfg.pep_max_nodes);
    snprintf(cap, sizeof(cap), "%u", d->cfg.pep_max_items);
    snprintf(bytes, sizeof(bytes), "%u", d->cfg.pep_max_bytes);
    const char *args[] = { k.nodes, k.items, k.order, k.use, node, pre, full, maxn, id,
                           xml.data ? xml.data : "", cap, bytes };
    size_t lens[12];
    for (int i = 0; i < 12; i++) lens[i] = strlen(args[i]);
    lens[9] = xml.len;
    run_script(d, k.nodes, published, c, LUA_PUBLISH, 4, args, lens, 12);
    sb_free(&xml);
}

/* ---- retract ---- */

static void retracted(redisReply *r, const char *err, void *ud)
{
    op_ctx *c = ud;
    if (!c->d->router) { ctx_free(c); return; }   /* shutting down */
    const char *why = reply_err(r, err);
    const char *status = why ? NULL : elem_str(r, 0);
    if (why || !status) {
        log_warn("pep: BOSH00905: retract from %s of %s failed: %s", c->node, c->local,
                 why ? why : "bad reply");
        pep_error(c->d, c->iq, "wait", "internal-server-error", NULL);
    } else if (strcmp(status, "ok") != 0) {
        pep_error(c->d, c->iq, "cancel", "item-not-found", NULL);
    } else {
        answer(c->d, iq_result(c->iq));
        if (c->notify) {
            pep_config cfg;
            pep_config_default(c->node, c->d->cfg.pep_max_items, &cfg);
            pep_config_parse(elem_str(r, 1), &cfg);
            char bare[JID_MAX + 1];
            snprintf(bare, sizeof(bare), "%s@%s", c->local, c->d->cfg.domain);
            notify(c->d, c->local, bare, c->node, cfg.access, c->event);
        }
    }
    ctx_free(c);
}

static void do_retract(const iq_request *req, const xs_node *rt, const char *node)
{
    xs_node *item = xs_child(rt, NS_PUBSUB, "item");
    const char *id = item ? xs_attr_get(item, "id") : NULL;
    if (!id || !*id) { pep_error(req->d, req->st, "modify", "bad-request", "item-required"); return; }
    jid j;
    jid_parse(req->to_bare, &j);
    op_ctx *c = ctx_new(req, j.local, node);
    const char *n = xs_attr_get(rt, "notify");
    c->notify = n && (strcmp(n, "true") == 0 || strcmp(n, "1") == 0);
    c->event = xs_new(NS_PUBSUB_EVENT, "items");
    xs_set_attr(c->event, "node", node);
    xs_set_attr(xs_add_elem(c->event, NS_PUBSUB_EVENT, "retract"), "id", id);
    keys k;
    keys_for(&k, j.local, node);
    const char *args[] = { k.nodes, k.items, k.order, k.use, node, id };
    run_script(req->d, k.nodes, retracted, c, LUA_RETRACT, 4, args, NULL, 6);
}

/* ---- items ---- */

/* The answer is built; a reader who is not the owner of a 'presence'
 * node needs the owner's roster: st is the result, 'to' the reader. */
static void items_presence_check(chatd *d, ruser *u, rsession *origin, xs_node *st)
{
    (void)origin;
    char reader[JID_MAX + 1];
    roster_item *it = u->roster_state == ROSTER_LOADED && jid_bare_str(xs_attr_get(st, "to"),
                          reader, sizeof(reader)) ? roster_find(u, reader) : NULL;
    if (it && roster_sub_has_from(it->sub)) {
        router_deliver(d, xs_attr_get(st, "to"), st);
        return;
    }
    /* pep_error swaps from/to: build the request's shape back. */
    xs_node *req = stanza_new("iq", xs_attr_get(st, "to"), xs_attr_get(st, "from"), "get",
                              xs_attr_get(st, "id"));
    if (u->roster_state == ROSTER_LOADED)
        pep_error(d, req, "auth", "not-authorized", "presence-subscription-required");
    else
        pep_error(d, req, "wait", "internal-server-error", NULL);
    xs_free(req);
}

static void items_loaded(redisReply *r, const char *err, void *ud)
{
    op_ctx *c = ud;
    if (!c->d->router) { ctx_free(c); return; }   /* shutting down */
    const char *why = reply_err(r, err);
    if (why) {
        log_warn("pep: BOSH00906: reading %s of %s failed: %s", c->node, c->local, why);
        pep_error(c->d, c->iq, "wait", "internal-server-error", NULL);
        goto out;
    }
    if (r->elements == 0) {
        pep_error(c->d, c->iq, "cancel", "item-not-found", NULL);
        goto out;
    }
    pep_config cfg;
    pep_config_default(c->node, c->d->cfg.pep_max_items, &cfg);
    pep_config_parse(elem_str(r, 0), &cfg);
    if (!c->is_owner && cfg.access == PEP_ACCESS_WHITELIST) {
        pep_error(c->d, c->iq, "cancel", "not-allowed", "closed-node");
        goto out;
    }
    xs_node *res = iq_result(c->iq);
    xs_node *items = xs_add_elem(xs_add_elem(res, NS_PUBSUB, "pubsub"), NS_PUBSUB, "items");
    xs_set_attr(items, "node", c->node);
    for (size_t i = 1; i + 1 < r->elements; i += 2) {
        const char *id = elem_str(r, i);
        redisReply *x = r->element[i + 1];
        xs_node *payload = NULL;
        char perr[64];
        if (!id || x->type != REDIS_REPLY_STRING ||
            xs_parse_document(x->str, x->len, x->len + 1, &payload, perr, sizeof(perr)) != XS_OK)
            continue;
        xs_node *item = xs_add_elem(items, NS_PUBSUB, "item");
        xs_set_attr(item, "id", id);
        xs_append_child(item, payload);
    }
    if (c->is_owner || cfg.access == PEP_ACCESS_OPEN) answer(c->d, res);
    else {
        roster_with_fail(c->d, c->local, items_presence_check, items_presence_check, NULL, res);
    }
out:
    ctx_free(c);
}

static void do_items(const iq_request *req, const xs_node *items, const char *node)
{
    jid j;
    jid_parse(req->to_bare, &j);
    op_ctx *c = ctx_new(req, j.local, node);
    keys k;
    keys_for(&k, j.local, node);
    const char *args[40];
    int n = 0;
    char max[16];
    const char *m = xs_attr_get(items, "max_items");
    snprintf(max, sizeof(max), "%lu", m ? strtoul(m, NULL, 10) : 0UL);
    args[n++] = k.nodes; args[n++] = k.items; args[n++] = k.order;
    args[n++] = node; args[n++] = max;
    for (xs_node *it = xs_child(items, NS_PUBSUB, "item"); it && n < 40;
         it = xs_next_elem(it, NS_PUBSUB, "item"))
        if (xs_attr_get(it, "id")) args[n++] = xs_attr_get(it, "id");
    run_script(req->d, k.nodes, items_loaded, c, LUA_ITEMS, 3, args, NULL, n);
}

int pep_iq(const iq_request *req)
{
    if (!req->rs || !req->to_bare) return -1;
    const xs_node *ps = req->q;
    if (!xs_is(ps, NS_PUBSUB, "pubsub")) return -1;
    xs_node *op = xs_child(ps, NS_PUBSUB, NULL);
    while (op && strcmp(op->name, "publish-options") == 0) op = xs_next_elem(op, NS_PUBSUB, NULL);
    if (!op) { pep_error(req->d, req->st, "modify", "bad-request", NULL); return 0; }
    const char *node = xs_attr_get(op, "node");
    if (req->get && strcmp(op->name, "items") == 0) {
        if (!pep_node_name_ok(node)) { pep_error(req->d, req->st, "modify", "bad-request", "nodeid-required"); return 0; }
        do_items(req, op, node);
        return 0;
    }
    if (req->get) { pep_error(req->d, req->st, "cancel", "feature-not-implemented", "unsupported"); return 0; }
    if (req->to != IQ_TO_OWN) { pep_error(req->d, req->st, "auth", "forbidden", NULL); return 0; }
    if (strcmp(op->name, "publish") != 0 && strcmp(op->name, "retract") != 0) {
        pep_error(req->d, req->st, "cancel", "feature-not-implemented", "unsupported");
        return 0;
    }
    if (!pep_node_name_ok(node)) { pep_error(req->d, req->st, "modify", "bad-request", "nodeid-required"); return 0; }
    if (strcmp(op->name, "publish") == 0) do_publish(req, op, node);
    else do_retract(req, op, node);
    return 0;
}

/* ---- owner: configure ---- */

static void add_field(xs_node *x, const char *var, const char *type, const char *value)
{
    xs_node *f = xs_add_elem(x, NS_XDATA, "field");
    xs_set_attr(f, "var", var);
    if (type) xs_set_attr(f, "type", type);
    xs_node *v = xs_add_elem(f, NS_XDATA, "value");
    xs_add_text(v, value, strlen(value));
}

static void config_loaded(redisReply *r, const char *err, void *ud)
{
    op_ctx *c = ud;
    if (!c->d->router) { ctx_free(c); return; }   /* shutting down */
    const char *why = reply_err(r, err);
    if (why) {
        log_warn("pep: BOSH00907: configuring %s of %s failed: %s", c->node, c->local, why);
        pep_error(c->d, c->iq, "wait", "internal-server-error", NULL);
    } else if (r->elements == 0 || (elem_str(r, 0) && strcmp(elem_str(r, 0), "node") == 0)) {
        pep_error(c->d, c->iq, "cancel", "item-not-found", NULL);
    } else if (strcmp(xs_attr_get(c->iq, "type"), "set") == 0) {
        answer(c->d, iq_result(c->iq));
    } else {
        pep_config cfg;
        pep_config_default(c->node, c->d->cfg.pep_max_items, &cfg);
        pep_config_parse(elem_str(r, 0), &cfg);
        xs_node *res = iq_result(c->iq);
        xs_node *conf = xs_add_elem(xs_add_elem(res, NS_PUBSUB_OWNER, "pubsub"),
                                    NS_PUBSUB_OWNER, "configure");
        xs_set_attr(conf, "node", c->node);
        xs_node *x = xs_add_elem(conf, NS_XDATA, "x");
        xs_set_attr(x, "type", "form");
        add_field(x, "FORM_TYPE", "hidden", NS_PUBSUB "#node_config");
        add_field(x, "pubsub#access_model", "list-single", pep_access_name(cfg.access));
        char n[16];
        snprintf(n, sizeof(n), "%u", cfg.max_items);
        add_field(x, "pubsub#max_items", "text-single", n);
        add_field(x, "pubsub#persist_items", "boolean", "1");
        add_field(x, "pubsub#send_last_published_item", "list-single",
                  pep_send_last_name(cfg.send_last));
        answer(c->d, res);
    }
    ctx_free(c);
}

int pep_owner_iq(const iq_request *req)
{
    if (!req->rs || req->to != IQ_TO_OWN || !xs_is(req->q, NS_PUBSUB_OWNER, "pubsub")) return -1;
    xs_node *conf = xs_child(req->q, NS_PUBSUB_OWNER, "configure");
    if (!conf) {
        pep_error(req->d, req->st, "cancel", "feature-not-implemented", "unsupported");
        return 0;
    }
    const char *node = xs_attr_get(conf, "node");
    if (!pep_node_name_ok(node)) { pep_error(req->d, req->st, "modify", "bad-request", "nodeid-required"); return 0; }
    jid j;
    jid_parse(req->to_bare, &j);
    keys k;
    keys_for(&k, j.local, node);
    if (req->get) {
        op_ctx *c = ctx_new(req, j.local, node);
        const char *args[] = { k.nodes, k.items, k.order, node, "0", "-" };
        run_script(req->d, k.nodes, config_loaded, c, LUA_ITEMS, 3, args, NULL, 6);
        return 0;
    }
    pep_config cfg;
    pep_config_default(node, req->d->cfg.pep_max_items, &cfg);
    cfg.mask = 0;
    xs_node *x = xs_child(conf, NS_XDATA, "x");
    const char *xt = x ? xs_attr_get(x, "type") : NULL;
    if (xt && strcmp(xt, "cancel") == 0) { answer(req->d, iq_result(req->st)); return 0; }
    if (!x || pep_form_read(x, req->d->cfg.pep_max_items, &cfg) < 0) {
        pep_error(req->d, req->st, "modify", "not-acceptable", NULL);
        return 0;
    }
    char set[PEP_CONFIG_MAX], cap[16];
    pep_config_format(&cfg, 1, set, sizeof(set));
    snprintf(cap, sizeof(cap), "%u", req->d->cfg.pep_max_items);
    op_ctx *c = ctx_new(req, j.local, node);
    const char *args[] = { k.nodes, k.items, k.order, k.use, node, set, cap };
    run_script(req->d, k.nodes, config_loaded, c, LUA_CONFIGURE, 4, args, NULL, 7);
    return 0;
}

/* ---- disco ---- */

static const char *const features[] = {
    NS_PUBSUB, NS_PUBSUB "#publish", NS_PUBSUB "#publish-options",
    NS_PUBSUB "#retrieve-items", NS_PUBSUB "#retract-items", NS_PUBSUB "#persistent-items",
    NS_PUBSUB "#item-ids", NS_PUBSUB "#access-open", NS_PUBSUB "#access-presence",
    NS_PUBSUB "#access-whitelist", NS_PUBSUB "#auto-create", NS_PUBSUB "#auto-subscribe",
    NS_PUBSUB "#filtered-notifications", NS_PUBSUB "#last-published",
    NS_PUBSUB "#config-node", NS_PUBSUB "#config-node-max",
    /* XEP-0402 §5.2: private storage bookmarks are these (private_storage.c) */
    "urn:xmpp:bookmarks:1#compat",
};

void pep_disco_account(xs_node *q)
{
    xs_node *id = xs_add_elem(q, NS_DISCO_INFO, "identity");
    xs_set_attr(id, "category", "pubsub");
    xs_set_attr(id, "type", "pep");
    for (size_t i = 0; i < sizeof(features) / sizeof(features[0]); i++)
        xs_set_attr(xs_add_elem(q, NS_DISCO_INFO, "feature"), "var", features[i]);
}

/* ---- last items ---- */

typedef struct last_ctx {
    chatd *d;
    char  *full;        /* the session to send to */
} last_ctx;

static void last_loaded(redisReply *r, const char *err, void *ud)
{
    last_ctx *c = ud;
    if (!c->d->router) { free(c->full); free(c); return; }   /* shutting down */
    const char *why = reply_err(r, err);
    rsession *rs = router_session(c->d, c->full);
    if (why) log_warn("pep: BOSH00908: last items for %s not read: %s", c->full, why);
    for (size_t i = 0; !why && rs && i + 3 < r->elements; i += 4) {
        const char *who = elem_str(r, i), *node = elem_str(r, i + 1), *id = elem_str(r, i + 2);
        redisReply *x = r->element[i + 3];
        xs_node *payload = NULL;
        char perr[64];
        if (!who || !node || !id || x->type != REDIS_REPLY_STRING ||
            xs_parse_document(x->str, x->len, x->len + 1, &payload, perr, sizeof(perr)) != XS_OK)
            continue;
        char from[JID_MAX + 1];
        snprintf(from, sizeof(from), "%s@%s", who, c->d->cfg.domain);
        xs_node *items = xs_new(NS_PUBSUB_EVENT, "items");
        xs_set_attr(items, "node", node);
        xs_node *item = xs_add_elem(items, NS_PUBSUB_EVENT, "item");
        xs_set_attr(item, "id", id);
        xs_append_child(item, payload);
        xs_node *msg = event_message(from, items);
        send_event(c->d, rs, msg);
        xs_free(msg);
        xs_free(items);
    }
    free(c->full);
    free(c);
}

/* Ask for the last items of `locals` (self_local: the reader's own
 * account, whitelist nodes included) that rs wants. */
static void send_last(chatd *d, rsession *rs, const char *self_local,
                      const char **locals, size_t nlocals)
{
    if (!rs->pep_notify || !nlocals) return;
    size_t cap = 2 + 32 + nlocals;
    const char **argv = calloc(cap + 3, sizeof(*argv));
    size_t *lens = calloc(cap + 3, sizeof(*lens));
    char *notify = xstrdup(rs->pep_notify);
    if (!argv || !lens) abort();
    char nn[16];
    size_t n = 3, nodes = 0;
    argv[0] = "EVAL"; argv[1] = LUA_LAST; argv[2] = "0";
    argv[n++] = self_local;
    argv[n++] = nn;
    for (char *save = NULL, *t = strtok_r(notify, "\n", &save); t && nodes < 32;
         t = strtok_r(NULL, "\n", &save), nodes++)
        argv[n++] = t;
    snprintf(nn, sizeof(nn), "%zu", nodes);
    for (size_t i = 0; i < nlocals; i++) argv[n++] = locals[i];
    for (size_t i = 0; i < n; i++) lens[i] = strlen(argv[i]);
    if (nodes) {
        last_ctx *c = calloc(1, sizeof(*c));
        if (!c) abort();
        c->d = d;
        c->full = xstrdup(rs->full);
        redis_async_commandargv(d->redis, last_loaded, c, (int)n, argv, lens);
    }
    free(notify);
    free(argv);
    free(lens);
}

/* rs's user's roster is loaded: its own account and its contacts with
 * subscription to/both (whose presence it receives). */
static void interest_action(chatd *d, ruser *u, rsession *rs, xs_node *st)
{
    (void)st;
    if (!rs || !rs->pep_notify) return;
    size_t n = 1;
    for (roster_item *it = u->roster; it; it = it->next) n++;
    const char **locals = calloc(n, sizeof(*locals));
    char (*buf)[JID_MAX + 1] = calloc(n, sizeof(*buf));
    if (!locals || !buf) abort();
    size_t k = 0;
    locals[k++] = u->local;
    for (roster_item *it = u->roster; it; it = it->next) {
        jid j;
        if (!roster_sub_has_to(it->sub) || jid_parse(it->jid, &j) < 0 ||
            strcmp(j.domain, d->cfg.domain) != 0 || strcmp(j.local, u->local) == 0)
            continue;
        snprintf(buf[k], sizeof(buf[k]), "%s", j.local);
        locals[k] = buf[k];
        k++;
    }
    send_last(d, rs, u->local, locals, k);
    free(locals);
    free(buf);
}

static void interest_failed(chatd *d, ruser *u, rsession *rs, xs_node *st)
{
    (void)st;
    if (!rs) return;
    const char *own = u->local;
    send_last(d, rs, u->local, &own, 1);   /* no roster: own account only */
}

void pep_interest(chatd *d, rsession *rs)
{
    if (!rs->bound || !rs->user) return;
    roster_with_fail(d, rs->user->local, interest_action, interest_failed, rs,
                     xs_new(NS_INTERNAL, "interest"));
}

void pep_subscribed(chatd *d, ruser *owner, const char *contact_bare)
{
    jid j;
    if (jid_parse(contact_bare, &j) < 0 || strcmp(j.domain, d->cfg.domain) != 0) return;
    ruser *cu = router_user(d, j.local);
    const char *who = owner->local;
    for (rsession *s = cu ? cu->sessions : NULL; s; s = s->next)
        if (s->available) send_last(d, s, j.local, &who, 1);
}
