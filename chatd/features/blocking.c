/*
 * blocking.c: XEP-0191 Blocking Command (see blocking.h).
 *
 * Per account (ruser->blocklist): the items, and what arrived while the
 * list was loading (stanzas for the user, the user's blocklist iqs),
 * replayed in order once SMEMBERS answers, refused if it failed. Writes
 * (SADD/SREM/DEL) are keyed to the list's connection so they run in
 * Redis in the order issued; a block or unblock is answered, pushed and
 * applied in memory only once Redis stored it.
 */
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include "blocking.h"
#include "router.h"
#include "redis_async.h"
#include "log.h"
#include "xmpp_internal.h"

#define BLOCK_KEY "chat:blocklist:"
#define BLOCK_MAX_HELD 64       /* stanzas held per account while loading */
#define BLOCK_MAX_ITEMS 1000    /* per account */

enum { BL_NONE = 0, BL_LOADING, BL_LOADED, BL_FAILED };

typedef struct held {
    struct held *next;
    xs_node *st;            /* owned */
    char    *origin;        /* iq from this session (full JID), or NULL: a delivery */
} held;

struct blocklist {
    int       state;
    jid_list *items;
    size_t    nitems;
    redis_async_req *req;
    held     *held, *held_tail;
    size_t    nheld;
};

static unsigned long push_seq;

static char *xstrdup(const char *s)
{
    char *d = strdup(s);
    if (!d) abort();
    return d;
}

/* ---- matching (pure) ---- */

int blocking_item_matches(const char *item, const char *addr)
{
    jid i, a;
    if (!item || !addr || jid_parse(item, &i) < 0 || jid_parse(addr, &a) < 0) return 0;
    if (strcmp(i.domain, a.domain) != 0) return 0;
    if (i.local[0] && strcmp(i.local, a.local) != 0) return 0;
    if (i.resource[0] && strcmp(i.resource, a.resource) != 0) return 0;
    /* item without a localpart (domain or domain/resource) covers every
     * account of that domain; bare covers every resource. */
    return 1;
}

int blocking_candidates(const char *addr, char out[BLOCKING_CANDIDATES][JID_MAX + 1])
{
    jid a, forms[BLOCKING_CANDIDATES];
    for (int i = 0; i < BLOCKING_CANDIDATES; i++) out[i][0] = '\0';
    if (!addr || jid_parse(addr, &a) < 0) return 0;
    /* every (localpart?, resource?) combination blocking_item_matches accepts */
    for (int i = 0; i < BLOCKING_CANDIDATES; i++) {
        forms[i] = a;
        if (!(i & 1)) forms[i].local[0] = '\0';
        if (!(i & 2)) forms[i].resource[0] = '\0';
    }
    int n = 0;
    for (int i = 0; i < BLOCKING_CANDIDATES; i++) {
        if (((i & 1) && !a.local[0]) || ((i & 2) && !a.resource[0])) continue;
        if (jid_full(&forms[i], out[n], JID_MAX + 1)) n++;
    }
    return n;
}

/* ---- list state ---- */

static struct blocklist *list_of(ruser *u)
{
    if (!u->blocklist) {
        u->blocklist = calloc(1, sizeof(*u->blocklist));
        if (!u->blocklist) abort();
    }
    return u->blocklist;
}

static int listed(const struct blocklist *bl, const char *addr)
{
    for (jid_list *l = bl->items; l; l = l->next)
        if (blocking_item_matches(l->jid, addr)) return 1;
    return 0;
}

static int has_item(const struct blocklist *bl, const char *item)
{
    for (jid_list *l = bl->items; l; l = l->next)
        if (strcmp(l->jid, item) == 0) return 1;
    return 0;
}

static void add_item(struct blocklist *bl, const char *item)
{
    if (has_item(bl, item)) return;
    jid_list *l = malloc(sizeof(*l));
    if (!l) abort();
    l->jid = xstrdup(item);
    l->next = bl->items;
    bl->items = l;
    bl->nitems++;
}

static void remove_item(struct blocklist *bl, const char *item)
{
    for (jid_list **pp = &bl->items; *pp; pp = &(*pp)->next)
        if (strcmp((*pp)->jid, item) == 0) {
            jid_list *l = *pp;
            *pp = l->next;
            free(l->jid);
            free(l);
            bl->nitems--;
            return;
        }
}

static void clear_items(struct blocklist *bl)
{
    while (bl->items) remove_item(bl, bl->items->jid);
}

static void free_held(held *h)
{
    xs_free(h->st);
    free(h->origin);
    free(h);
}

void blocking_user_free(ruser *u)
{
    struct blocklist *bl = u->blocklist;
    if (!bl) return;
    if (bl->req) redis_async_forget(bl->req);
    clear_items(bl);
    while (bl->held) {
        held *h = bl->held;
        bl->held = h->next;
        free_held(h);
    }
    free(bl);
    u->blocklist = NULL;
}

static void replay(chatd *d, ruser *u)
{
    struct blocklist *bl = u->blocklist;
    held *h;
    while (bl && (h = bl->held)) {
        bl->held = h->next;
        if (!bl->held) bl->held_tail = NULL;
        bl->nheld--;
        if (h->origin) {
            rsession *rs = router_session(d, h->origin);
            /* A failed load answers its iqs (no reload from here: that
             * would loop on a Redis that keeps failing). */
            if (rs && bl->state == BL_LOADED) blocking_iq(d, rs, h->st);
            else if (rs) router_bounce(d, h->st, "wait", "internal-server-error");
        } else {
            router_deliver(d, xs_attr_get(h->st, "to"), h->st);
        }
        free_held(h);
        bl = u->blocklist;
    }
}

static void loaded(redisReply *reply, const char *err, void *ud)
{
    ruser *u = ud;
    struct blocklist *bl = u->blocklist;
    bl->req = NULL;
    clear_items(bl);
    if (err || !reply || reply->type != REDIS_REPLY_ARRAY) {
        log_warn("blocking: BOSH00450: cannot load the blocklist of %s, refusing stanzas "
                 "for it until it loads: %s", u->local,
                 err ? err : (reply && reply->str) ? reply->str : "bad reply");
        bl->state = BL_FAILED;
    } else {
        for (size_t i = 0; i < reply->elements; i++)
            if (reply->element[i]->type == REDIS_REPLY_STRING)
                add_item(bl, reply->element[i]->str);
        bl->state = BL_LOADED;
    }
    replay(u->d, u);
}

static void load(chatd *d, ruser *u)
{
    struct blocklist *bl = list_of(u);
    if (bl->state == BL_LOADING || bl->state == BL_LOADED) return;
    bl->state = BL_LOADING;
    char key[JID_MAX + sizeof(BLOCK_KEY)];
    snprintf(key, sizeof(key), BLOCK_KEY "%s", u->local);
    /* NULL: the callback already ran. */
    redis_async_req *req = redis_async_command_keyed(d->redis, key, loaded, u,
                                                     "SMEMBERS %s", key);
    if (req && u->blocklist && u->blocklist->state == BL_LOADING) u->blocklist->req = req;
}

void blocking_user_online(chatd *d, ruser *u)
{
    load(d, u);
}

/* Keep st until the list is known. 0 if held; -1 when too many wait. */
static int hold(struct blocklist *bl, const xs_node *st, const char *origin)
{
    if (bl->nheld >= BLOCK_MAX_HELD) return -1;
    held *h = calloc(1, sizeof(*h));
    if (!h) abort();
    h->st = xs_copy(st);
    if (origin) h->origin = xstrdup(origin);
    if (bl->held_tail) bl->held_tail->next = h;
    else bl->held = h;
    bl->held_tail = h;
    bl->nheld++;
    return 0;
}

/* ---- stanzas ---- */

static int kind_is(const xs_node *st, const char *name) { return xs_is(st, NS_CLIENT, name); }

static int type_is(const xs_node *st, const char *t)
{
    const char *v = xs_attr_get(st, "type");
    return strcmp(v ? v : "", t) == 0;
}

int blocking_inbound(chatd *d, const char *local, const xs_node *st)
{
    const char *from = xs_attr_get(st, "from");
    ruser *u = router_user(d, local);
    jid f;
    /* Offline accounts are not filtered (offline storage is not; see
     * docs/conformance.md); the server itself is never blocked. */
    if (!from || jid_parse(from, &f) < 0 || !f.local[0]) return 0;
    /* Errors pass: they answer something and carry no content (our own
     * bounce to a blocked sender must reach it). */
    if (type_is(st, "error")) return 0;
    int local_sender = strcmp(f.domain, d->cfg.domain) == 0;
    if (local_sender && strcmp(f.local, local) == 0) return 0;
    /* The sender blocked the recipient: broadcasts (presence to
     * subscribers) are server-generated and never pass blocking_outbound. */
    ruser *su = local_sender ? router_user(d, f.local) : NULL;
    const char *to = xs_attr_get(st, "to");
    if (su && su->blocklist && su->blocklist->state == BL_LOADED && to &&
        listed(su->blocklist, to))
        return 1;
    if (!u || !u->sessions) return 0;
    struct blocklist *bl = list_of(u);
    if (bl->state == BL_LOADED) {
        if (!listed(bl, from)) return 0;
        /* XEP-0191 §3.4: messages and get/set iqs bounce, presence is dropped. */
        if (kind_is(st, "message") || (kind_is(st, "iq") && (type_is(st, "get") || type_is(st, "set"))))
            router_bounce(d, st, "cancel", "service-unavailable");
        return 1;
    }
    if (bl->state == BL_LOADING && hold(bl, st, NULL) == 0) return 1;
    /* Unknown list (load failed, or too much waiting): fail closed. */
    if (!kind_is(st, "presence")) router_bounce(d, st, "wait", "internal-server-error");
    return 1;
}

int blocking_blocks(chatd *d, const char *local, const char *addr)
{
    ruser *u = router_user(d, local);
    return u && u->blocklist && u->blocklist->state == BL_LOADED && addr &&
           listed(u->blocklist, addr);
}

typedef struct offline_ctx {
    chatd   *d;
    char    *local;
    xs_node *st;        /* owned */
} offline_ctx;

static void offline_checked(redisReply *reply, const char *err, void *ud)
{
    offline_ctx *ctx = ud;
    const char *from = xs_attr_get(ctx->st, "from");
    int blocked = 0;
    if (!ctx->d->router) goto out;  /* shutting down */
    if (err || !reply || reply->type != REDIS_REPLY_ARRAY) {
        log_warn("blocking: BOSH00452: cannot read the blocklist of %s, refusing a "
                 "message for offline storage: %s", ctx->local,
                 err ? err : (reply && reply->str) ? reply->str : "bad reply");
        router_bounce(ctx->d, ctx->st, "wait", "internal-server-error");
        goto out;
    }
    for (size_t i = 0; i < reply->elements && !blocked; i++)
        blocked = reply->element[i]->type == REDIS_REPLY_STRING &&
                  blocking_item_matches(reply->element[i]->str, from);
    if (blocked) router_bounce(ctx->d, ctx->st, "cancel", "service-unavailable");
    else offline_store(ctx->d, ctx->local, ctx->st);
out:
    xs_free(ctx->st);
    free(ctx->local);
    free(ctx);
}

void blocking_offline_store(chatd *d, const char *local, const xs_node *st)
{
    /* Signed in but not available: blocking_inbound already asked the
     * in-memory list; store at once, in order with a presence's flush. */
    ruser *u = router_user(d, local);
    if (u && u->sessions) { offline_store(d, local, st); return; }
    offline_ctx *ctx = calloc(1, sizeof(*ctx));
    if (!ctx) abort();
    ctx->d = d;
    ctx->local = xstrdup(local);
    ctx->st = xs_copy(st);
    char key[JID_MAX + sizeof(BLOCK_KEY)];
    snprintf(key, sizeof(key), BLOCK_KEY "%s", local);
    /* Keyed: checks for one recipient answer in order, so stores stay in order. */
    redis_async_command_keyed(d->redis, key, offline_checked, ctx, "SMEMBERS %s", key);
}

/* <message type=error> with not-acceptable + <blocked/> (XEP-0191 §3.5). */
static void bounce_blocked(rsession *rs, const xs_node *st)
{
    const char *t = xs_attr_get(st, "type");
    if (t && strcmp(t, "error") == 0) return;
    if (kind_is(st, "iq") && !(type_is(st, "get") || type_is(st, "set"))) return;
    xs_node *err = stanza_new(st->name, xs_attr_get(st, "to"), xs_attr_get(st, "from"),
                              "error", xs_attr_get(st, "id"));
    xs_node *e = xs_add_elem(err, NS_CLIENT, "error");
    xs_set_attr(e, "type", "cancel");
    xs_add_elem(e, NS_STANZAS, "not-acceptable");
    xs_add_elem(e, NS_BLOCKING_ERRORS, "blocked");
    session_send(rs, err);      /* not routed: it comes "from" the blocked JID */
    xs_free(err);
}

int blocking_outbound(chatd *d, rsession *rs, const char *to, const xs_node *st)
{
    struct blocklist *bl = rs && rs->user ? rs->user->blocklist : NULL;
    /* Only a loaded list refuses: the user's own stanzas are not held. */
    if (!bl || bl->state != BL_LOADED || !to || !listed(bl, to)) return 0;
    (void)d;
    if (!kind_is(st, "presence")) bounce_blocked(rs, st);
    return 1;
}

/* ---- the iqs ---- */

typedef struct write_ctx {
    chatd   *d;
    char    *local;
    char    *origin;    /* full JID of the asking session */
    xs_node *iq;        /* the request (owned) */
    int      block;     /* 1 block, 0 unblock */
} write_ctx;

static void send_iq_result(chatd *d, rsession *rs, const xs_node *iq)
{
    (void)d;
    xs_node *res = iq_result(iq);
    xs_set_attr(res, "from", NULL);
    xs_set_attr(res, "to", rs->full);
    session_send(rs, res);
    xs_free(res);
}

static void push(ruser *u, const char *what, const xs_node *payload)
{
    for (rsession *s = u->sessions; s; s = s->next) {
        if (!s->blocklist_wanted) continue;
        char id[32];
        snprintf(id, sizeof(id), "block-push%lu", ++push_seq);
        xs_node *iq = stanza_new("iq", NULL, s->full, "set", id);
        xs_node *p = xs_add_elem(iq, NS_BLOCKING, what);
        for (xs_node *i = payload ? xs_child(payload, NS_BLOCKING, "item") : NULL; i;
             i = xs_next_elem(i, NS_BLOCKING, "item"))
            xs_set_attr(xs_add_elem(p, NS_BLOCKING, "item"), "jid", xs_attr_get(i, "jid"));
        session_send(s, iq);
        xs_free(iq);
    }
}

static void written(redisReply *reply, const char *err, void *ud)
{
    write_ctx *ctx = ud;
    chatd *d = ctx->d;
    if (!d->router) goto out;       /* shutting down: redis_async_free after xmpp_free */
    rsession *rs = router_session(d, ctx->origin);
    ruser *u = router_user(d, ctx->local);
    if (err || !reply || reply->type == REDIS_REPLY_ERROR) {
        log_warn("blocking: BOSH00451: storing the blocklist of %s failed: %s", ctx->local,
                 err ? err : reply ? reply->str : "no reply");
        /* What Redis holds is unknown now: load again before trusting it. */
        if (u && u->blocklist && u->blocklist->state == BL_LOADED) {
            u->blocklist->state = BL_NONE;
            load(d, u);
        }
        router_bounce(d, ctx->iq, "wait", "internal-server-error");
        goto out;
    }
    xs_node *p = xs_child(ctx->iq, NS_BLOCKING, ctx->block ? "block" : "unblock");
    if (u && u->blocklist) {
        struct blocklist *bl = u->blocklist;
        xs_node *first = xs_child(p, NS_BLOCKING, "item");
        if (!ctx->block && !first) clear_items(bl);
        for (xs_node *i = first; i; i = xs_next_elem(i, NS_BLOCKING, "item")) {
            const char *item = xs_attr_get(i, "jid");
            if (!ctx->block) { remove_item(bl, item); continue; }
            /* XEP-0191 §3.3: the blocked JID sees every available resource
             * go (before the item is listed, which would stop it). */
            for (rsession *s = u->sessions; s; s = s->next) {
                if (!s->available) continue;
                xs_node *un = stanza_new("presence", s->full, item, "unavailable", NULL);
                router_deliver(d, item, un);
                xs_free(un);
            }
            add_item(bl, item);
        }
        if (rs) send_iq_result(d, rs, ctx->iq);
        push(u, ctx->block ? "block" : "unblock", p);
    }
out:
    xs_free(ctx->iq);
    free(ctx->local);
    free(ctx->origin);
    free(ctx);
}

/* Items of a block/unblock, normalised in place; -1 if any is no JID. */
static int check_items(xs_node *p, size_t *n)
{
    *n = 0;
    for (xs_node *i = xs_child(p, NS_BLOCKING, "item"); i; i = xs_next_elem(i, NS_BLOCKING, "item")) {
        jid j;
        char norm[JID_MAX + 1];
        const char *v = xs_attr_get(i, "jid");
        if (!v || jid_parse(v, &j) < 0 || !jid_full(&j, norm, sizeof(norm))) return -1;
        xs_set_attr(i, "jid", norm);
        (*n)++;
    }
    return 0;
}

static void change(chatd *d, rsession *rs, const xs_node *st, xs_node *p, int block)
{
    ruser *u = rs->user;
    size_t n;
    xs_node *iq = xs_copy(st);
    p = xs_child(iq, NS_BLOCKING, block ? "block" : "unblock");
    if (check_items(p, &n) < 0) {
        router_bounce(d, st, "modify", "jid-malformed");
        xs_free(iq);
        return;
    }
    if ((block && n == 0) || (block && u->blocklist->nitems + n > BLOCK_MAX_ITEMS)) {
        router_bounce(d, st, "modify", block && n == 0 ? "bad-request" : "resource-constraint");
        xs_free(iq);
        return;
    }
    char key[JID_MAX + sizeof(BLOCK_KEY)];
    snprintf(key, sizeof(key), BLOCK_KEY "%s", u->local);
    write_ctx *ctx = calloc(1, sizeof(*ctx));
    if (!ctx) abort();
    ctx->d = d;
    ctx->local = xstrdup(u->local);
    ctx->origin = xstrdup(rs->full);
    ctx->iq = iq;
    ctx->block = block;
    if (!block && n == 0) {
        redis_async_command_keyed(d->redis, key, written, ctx, "DEL %s", key);
        return;
    }
    const char **argv = calloc(n + 2, sizeof(*argv));
    size_t *lens = calloc(n + 2, sizeof(*lens));
    if (!argv || !lens) abort();
    argv[0] = block ? "SADD" : "SREM";
    argv[1] = key;
    size_t k = 2;
    for (xs_node *i = xs_child(p, NS_BLOCKING, "item"); i; i = xs_next_elem(i, NS_BLOCKING, "item"))
        argv[k++] = xs_attr_get(i, "jid");
    for (size_t x = 0; x < k; x++) lens[x] = strlen(argv[x]);
    redis_async_commandargv_keyed(d->redis, key, written, ctx, (int)k, argv, lens);
    free(argv);
    free(lens);
}

int blocking_iq(chatd *d, rsession *rs, const xs_node *st)
{
    xs_node *p = xs_child(st, NULL, NULL);
    if (!rs || !p || !p->ns || strcmp(p->ns, NS_BLOCKING) != 0) return -1;
    int get = type_is(st, "get"), set = type_is(st, "set");
    int is_list = strcmp(p->name, "blocklist") == 0;
    int is_block = strcmp(p->name, "block") == 0;
    int is_unblock = strcmp(p->name, "unblock") == 0;
    if (!((get && is_list) || (set && (is_block || is_unblock)))) {
        router_bounce(d, st, "modify", "bad-request");
        return 0;
    }
    struct blocklist *bl = list_of(rs->user);
    if (bl->state != BL_LOADED) {
        if (bl->state == BL_FAILED || bl->state == BL_NONE) {
            bl->state = BL_NONE;
            load(d, rs->user);
            bl = rs->user->blocklist;
        }
        if (bl->state == BL_LOADED) return blocking_iq(d, rs, st);
        if (bl->state != BL_LOADING || hold(bl, st, rs->full) < 0)
            router_bounce(d, st, "wait", "internal-server-error");
        return 0;
    }
    if (is_list) {
        rs->blocklist_wanted = 1;
        xs_node *res = iq_result(st);
        xs_set_attr(res, "from", NULL);
        xs_set_attr(res, "to", rs->full);
        xs_node *q = xs_add_elem(res, NS_BLOCKING, "blocklist");
        for (jid_list *l = bl->items; l; l = l->next)
            xs_set_attr(xs_add_elem(q, NS_BLOCKING, "item"), "jid", l->jid);
        session_send(rs, res);
        xs_free(res);
        return 0;
    }
    change(d, rs, st, p, is_block);
    return 0;
}
