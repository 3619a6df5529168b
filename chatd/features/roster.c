/*
 * roster: the user's contact list (RFC 6121 §2), cached per user while
 * any resource is online, kept in Redis hash chat:roster:<localpart>.
 *
 * Loading is asynchronous: roster_with queues the work (a roster iq, a
 * presence broadcast, one side of a subscription) and runs it in order
 * once HGETALL answers. Writes are single HSET/HDEL per item,
 * fire-and-forget. Changes are pushed to every resource that asked for
 * the roster.
 *
 * Fail closed (issue 14): when HGETALL fails, the queued work does not run
 * against an empty roster (that served an empty roster and let the next
 * change overwrite the stored items); each is refused with a 'wait' error
 * and the next use loads again. A write that fails drops the cached
 * roster (the next use reloads what Redis really holds), and a roster set
 * is answered only once its write is: result, or a 'wait' error. Reads
 * and writes of one roster are keyed to one connection, so they run in
 * Redis in the order issued. At most max_roster_items items per user.
 *
 * Roster versioning (RFC 6121 §2.6): the version is its own Redis key,
 * chat:roster-ver:<localpart>, an integer that every write increments in
 * the same script, before the write (a write that fails after the
 * increment leaves a new version for an unchanged roster: harmless; the
 * other order could leave a change under an old version). Its first value
 * is the time in microseconds, so a lost key never brings old versions
 * back. Pushes go out once Redis stored the change, carrying the version
 * the script returned; a roster answered while a write is outstanding or
 * after one failed carries a version no store ever has, so a client never
 * caches a state Redis does not hold under a real version.
 */
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <time.h>
#include "router.h"
#include "quota.h"
#include "log.h"
#include "xmpp_internal.h"

static unsigned long push_seq;

roster_item *roster_find(ruser *u, const char *bare)
{
    for (roster_item *it = u->roster; it; it = it->next)
        if (strcmp(it->jid, bare) == 0) return it;
    return NULL;
}

roster_item *roster_find_or_add(ruser *u, const char *bare)
{
    roster_item *it = roster_find(u, bare);
    if (it) return it;
    it = roster_item_new(bare);
    it->next = u->roster;
    u->roster = it;
    return it;
}

unsigned roster_count(const ruser *u)
{
    unsigned n = 0;
    for (const roster_item *it = u->roster; it; it = it->next) n++;
    return n;
}

roster_item *roster_find_or_add_capped(chatd *d, ruser *u, const char *bare)
{
    roster_item *it = roster_find(u, bare);
    if (it) return it;
    if (!quota_roster_admits(roster_count(u), 1, d->cfg.max_roster_items)) {
        log_info("roster: BOSH00250: %s is at max_roster_items (%u), not adding %s",
                 u->local, d->cfg.max_roster_items, bare);
        return NULL;
    }
    return roster_find_or_add(u, bare);
}

static void free_items(ruser *u)
{
    while (u->roster) {
        roster_item *it = u->roster;
        u->roster = it->next;
        roster_item_free(it);
    }
}

static void free_pending(pending_action *pa)
{
    xs_free(pa->stanza);
    free(pa->origin_full);
    free(pa);
}

void roster_user_free(chatd *d, ruser *u)
{
    (void)d;
    if (u->roster_req) redis_async_forget(u->roster_req);
    u->roster_req = NULL;
    free_items(u);
    free(u->roster_ver);
    u->roster_ver = NULL;
    while (u->pending) {
        pending_action *pa = u->pending;
        u->pending = pa->next;
        free_pending(pa);
    }
    u->pending_tail = NULL;
}

/* ---- writes ---- */

typedef struct write_ctx {
    chatd   *d;
    char    *local;
    xs_node *iq;            /* a roster set to answer, or NULL */
    char    *origin_full;   /* who sent it */
    xs_node *item;          /* the <item/> to push once stored */
} write_ctx;

#define VER_KEY "chat:roster-ver:"

/* KEYS: roster, version. ARGV: 'set' jid record | 'del' jid. The new
 * version, first value the time in microseconds. */
static const char LUA_WRITE[] =
    "if redis.call('EXISTS', KEYS[2]) == 0 then\n"
    "  local t = redis.call('TIME')\n"
    "  redis.call('SET', KEYS[2], t[1] .. string.format('%06d', tonumber(t[2])))\n"
    "end\n"
    "local v = redis.call('INCR', KEYS[2])\n"
    "if ARGV[1] == 'set' then redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])\n"
    "else redis.call('HDEL', KEYS[1], ARGV[2]) end\n"
    "return v\n";

/* KEYS: roster, version. {version, HGETALL} (the version created if absent). */
static const char LUA_LOAD[] =
    "if redis.call('EXISTS', KEYS[2]) == 0 then\n"
    "  local t = redis.call('TIME')\n"
    "  redis.call('SET', KEYS[2], t[1] .. string.format('%06d', tonumber(t[2])))\n"
    "end\n"
    "return {redis.call('GET', KEYS[2]), redis.call('HGETALL', KEYS[1])}\n";

static void push_stored(ruser *u, const xs_node *item, const char *ver);

/* The cache may no longer match Redis: the next use reloads it (not now:
 * an action may be holding items, and actions queued behind it expect the
 * roster they were queued for). */
static void roster_invalidate(chatd *d, const char *local)
{
    ruser *u = router_user(d, local);
    if (u) u->roster_stale = 1;
}

static void written(redisReply *reply, const char *err, void *ud)
{
    write_ctx *w = ud;
    if (!w->d->router) {            /* shutting down: the router is gone */
        xs_free(w->iq);
        xs_free(w->item);
        free(w->origin_full);
        free(w->local);
        free(w);
        return;
    }
    const char *why = err ? err : !reply ? "no reply"
                    : reply->type == REDIS_REPLY_ERROR ? reply->str : NULL;
    rsession *origin = w->origin_full ? router_session(w->d, w->origin_full) : NULL;
    ruser *u = router_user(w->d, w->local);
    if (u && u->roster_writes) u->roster_writes--;
    if (!why && reply->type != REDIS_REPLY_INTEGER) why = "unexpected reply";
    if (!why && u) {
        char ver[32];
        snprintf(ver, sizeof(ver), "%lld", reply->integer);
        free(u->roster_ver);
        if (!(u->roster_ver = strdup(ver))) abort();
        if (w->item) push_stored(u, w->item, ver);
    }
    if (why) {
        log_warn("roster: BOSH00257: write for %s failed, reloading it on next use: %s",
                 w->local, why);
        roster_invalidate(w->d, w->local);
        if (w->iq && origin) router_bounce(w->d, w->iq, "wait", "internal-server-error");
    } else if (w->iq && origin) {
        xs_node *res = iq_result(w->iq);
        xs_set_attr(res, "from", NULL);
        session_send(origin, res);
        xs_free(res);
    }
    xs_free(w->iq);
    xs_free(w->item);
    free(w->origin_full);
    free(w->local);
    free(w);
    if (u) router_user_release(u->d, u);    /* kept while its writes were out */
}

static write_ctx *write_ctx_new(chatd *d, ruser *u, const xs_node *iq, rsession *origin)
{
    write_ctx *w = calloc(1, sizeof(*w));
    if (!w || !(w->local = strdup(u->local))) abort();
    w->d = d;
    if (iq) w->iq = xs_copy(iq);
    if (origin && !(w->origin_full = strdup(origin->full))) abort();
    u->roster_writes++;
    return w;
}

void redis_log_error_cb(redisReply *reply, const char *err, void *ud)
{
    (void)ud;
    if (err) log_warn("redis: %s", err);
    else if (reply && reply->type == REDIS_REPLY_ERROR) log_warn("redis: %s", reply->str);
}

/* ---- loading ---- */

static void run_pending(chatd *d, ruser *u)
{
    pending_action *pa;
    while ((pa = u->pending)) {
        u->pending = pa->next;
        if (!u->pending) u->pending_tail = NULL;
        rsession *origin = pa->origin_full ? router_session(d, pa->origin_full) : NULL;
        u->running++;
        if (!pa->origin_full || origin) pa->fn(d, u, origin, pa->stanza);
        u->running--;
        free_pending(pa);
    }
}

/* The load failed: refuse everything that waited for it. The list is
 * taken first, so work queued meanwhile starts a new load of its own. */
static void fail_pending(chatd *d, ruser *u)
{
    pending_action *pa = u->pending;
    u->pending = u->pending_tail = NULL;
    while (pa) {
        pending_action *next = pa->next;
        rsession *origin = pa->origin_full ? router_session(d, pa->origin_full) : NULL;
        if (!pa->origin_full || origin) {
            if (pa->fail) pa->fail(d, u, origin, pa->stanza);
            else router_bounce(d, pa->stanza, "wait", "internal-server-error");
        }
        free_pending(pa);
        pa = next;
    }
}

static void roster_loaded(redisReply *reply, const char *err, void *ud)
{
    ruser *u = ud;
    chatd *d = u->d;
    u->roster_req = NULL;
    free_items(u);
    redisReply *ver = NULL;
    if (!err && reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == 2) {
        ver = reply->element[0];
        reply = reply->element[1];
    } else if (!err) {
        reply = NULL;
    }
    if (err || !reply || reply->type != REDIS_REPLY_ARRAY) {
        log_warn("roster: BOSH00251: cannot load %s, refusing its roster work: %s", u->local,
                 err ? err : (reply && reply->str) ? reply->str : "bad reply");
        u->roster_state = ROSTER_NONE;          /* retried next time */
        fail_pending(d, u);
        router_user_release(d, u);
        return;
    } else {
        for (size_t i = 0; i + 1 < reply->elements; i += 2) {
            redisReply *k = reply->element[i], *v = reply->element[i + 1];
            if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING) continue;
            roster_item *it = roster_item_new(k->str);
            if (roster_item_parse(it, v->str) < 0) {
                log_warn("roster: bad record for %s in %s", k->str, u->local);
                roster_item_free(it);
                continue;
            }
            it->next = u->roster;
            u->roster = it;
        }
        u->roster_state = ROSTER_LOADED;
        u->roster_stale = 0;
        free(u->roster_ver);
        u->roster_ver = NULL;
        if (ver && ver->type == REDIS_REPLY_STRING && !(u->roster_ver = strdup(ver->str)))
            abort();
    }
    run_pending(d, u);
    router_user_release(d, u);
}

void roster_with(chatd *d, const char *local, roster_action fn, rsession *origin,
                 xs_node *st)
{
    roster_with_fail(d, local, fn, NULL, origin, st);
}

void roster_with_fail(chatd *d, const char *local, roster_action fn, roster_action fail,
                      rsession *origin, xs_node *st)
{
    ruser *u = router_user_get(d, local);
    if (u->roster_state == ROSTER_LOADED && u->roster_stale && !u->pending && !u->running) {
        free_items(u);                          /* a write failed: reload */
        u->roster_state = ROSTER_NONE;
        u->roster_stale = 0;
    }
    if (u->roster_state == ROSTER_LOADED && !u->pending) {
        u->running++;
        fn(d, u, origin, st);
        u->running--;
        xs_free(st);
        router_user_release(d, u);
        return;
    }
    pending_action *pa = calloc(1, sizeof(*pa));
    if (!pa) abort();
    pa->fn = fn;
    pa->fail = fail;
    pa->stanza = st;
    if (origin && !(pa->origin_full = strdup(origin->full))) abort();
    if (u->pending_tail) u->pending_tail->next = pa;
    else u->pending = pa;
    u->pending_tail = pa;
    if (u->roster_state != ROSTER_NONE) return;

    u->roster_state = ROSTER_LOADING;
    /* NULL: the callback already ran (and may have freed u). */
    char key[300], vkey[300];
    snprintf(key, sizeof(key), "chat:roster:%s", local);
    snprintf(vkey, sizeof(vkey), VER_KEY "%s", local);
    redis_async_req *req = redis_async_command_keyed(d->redis, key, roster_loaded, u,
                                                     "EVAL %s 2 %s %s", LUA_LOAD, key, vkey);
    if (req) u->roster_req = req;
}

/* ---- changes ---- */

static void add_item_elem(xs_node *query, const roster_item *it, int removed)
{
    xs_node *e = xs_add_elem(query, NS_ROSTER, "item");
    xs_set_attr(e, "jid", it->jid);
    xs_set_attr(e, "subscription", removed ? "remove" : roster_sub_name(it->sub));
    if (removed) return;
    if (it->name) xs_set_attr(e, "name", it->name);
    if (it->ask) xs_set_attr(e, "ask", "subscribe");
    for (size_t i = 0; i < it->ngroups; i++) {
        xs_node *g = xs_add_elem(e, NS_ROSTER, "group");
        xs_add_text(g, it->groups[i], strlen(it->groups[i]));
    }
}

/* The <item/> of a push, built when the change is made. */
static xs_node *item_elem(const roster_item *it, int removed)
{
    xs_node *q = xs_new(NS_ROSTER, "query");
    add_item_elem(q, it, removed);
    xs_node *e = xs_child(q, NS_ROSTER, "item");
    xs_unlink(e);
    xs_free(q);
    return e;
}

/* Redis stored the change (version ver): push it to the interested. */
static void push_stored(ruser *u, const xs_node *item, const char *ver)
{
    for (rsession *rs = u->sessions; rs; rs = rs->next) {
        if (!rs->interested) continue;
        char id[32];
        snprintf(id, sizeof(id), "push%lu", ++push_seq);
        xs_node *iq = stanza_new("iq", NULL, rs->full, "set", id);
        xs_node *q = xs_add_elem(iq, NS_ROSTER, "query");
        if (rs->roster_ver_wanted) xs_set_attr(q, "ver", ver);
        xs_append_child(q, xs_copy(item));
        session_send(rs, iq);
        xs_free(iq);
    }
}

/* Persist it; answer iq (from origin) once Redis confirmed, if given. */
static void commit_answering(chatd *d, ruser *u, roster_item *it, const xs_node *iq,
                             rsession *origin)
{
    strbuf rec = STRBUF_INIT;
    char key[300], vkey[300];
    roster_item_format(it, &rec);
    snprintf(key, sizeof(key), "chat:roster:%s", u->local);
    snprintf(vkey, sizeof(vkey), VER_KEY "%s", u->local);
    write_ctx *w = write_ctx_new(d, u, iq, origin);
    w->item = item_elem(it, 0);
    redis_async_command_keyed(d->redis, key, written, w, "EVAL %s 2 %s %s set %s %s",
                              LUA_WRITE, key, vkey, it->jid, rec.data);
    sb_free(&rec);
}

void roster_commit(chatd *d, ruser *u, roster_item *it)
{
    commit_answering(d, u, it, NULL, NULL);
}

void roster_remove(chatd *d, ruser *u, const char *bare)
{
    for (roster_item **pp = &u->roster; *pp; pp = &(*pp)->next) {
        if (strcmp((*pp)->jid, bare) != 0) continue;
        roster_item *it = *pp;
        *pp = it->next;
        char key[300], vkey[300];
        snprintf(key, sizeof(key), "chat:roster:%s", u->local);
        snprintf(vkey, sizeof(vkey), VER_KEY "%s", u->local);
        write_ctx *w = write_ctx_new(d, u, NULL, NULL);
        w->item = item_elem(it, 1);
        redis_async_command_keyed(d->redis, key, written, w, "EVAL %s 2 %s %s del %s",
                                  LUA_WRITE, key, vkey, it->jid);
        roster_item_free(it);
        return;
    }
}

/* ---- jabber:iq:roster ---- */

static void roster_get(chatd *d, ruser *u, rsession *rs, xs_node *st)
{
    (void)d;
    if (!rs) return;
    rs->interested = 1;
    xs_node *res = iq_result(st);
    xs_set_attr(res, "from", NULL);
    xs_set_attr(res, "to", rs->full);
    xs_node *rq = xs_child(st, NS_ROSTER, "query");
    const char *asked = rq ? xs_attr_get(rq, "ver") : NULL;
    /* RFC 6121 §2.6: the version of what Redis holds, when the memory is
     * exactly that; else one that no stored roster ever has. */
    char ver[64];
    int real = u->roster_ver && !u->roster_writes && !u->roster_stale;
    static unsigned long transient;
    if (real) snprintf(ver, sizeof(ver), "%s", u->roster_ver);
    else snprintf(ver, sizeof(ver), "t%lx-%lu", (unsigned long)time(NULL), ++transient);
    rs->roster_ver_wanted = asked != NULL;
    if (asked && real && strcmp(asked, ver) == 0) {
        session_send(rs, res);      /* unchanged: an empty result (§2.6.3) */
        xs_free(res);
        return;
    }
    xs_node *q = xs_add_elem(res, NS_ROSTER, "query");
    if (asked) xs_set_attr(q, "ver", ver);
    for (roster_item *it = u->roster; it; it = it->next) add_item_elem(q, it, 0);
    session_send(rs, res);
    xs_free(res);
}

static void unsubscribe_both_ways(chatd *d, rsession *rs, const roster_item *it)
{
    if (roster_sub_has_to(it->sub) || it->ask)
        presence_handle(d, rs, stanza_new("presence", rs->full, it->jid, "unsubscribe", NULL));
    if (roster_sub_has_from(it->sub))
        presence_handle(d, rs, stanza_new("presence", rs->full, it->jid, "unsubscribed", NULL));
}

static void roster_set(chatd *d, ruser *u, rsession *rs, xs_node *st)
{
    if (!rs) return;
    xs_node *q = xs_child(st, NS_ROSTER, "query");
    xs_node *item = q ? xs_child(q, NS_ROSTER, "item") : NULL;
    char bare[JID_MAX + 1];
    jid j;
    if (!item || xs_next_elem(item, NS_ROSTER, "item") ||
        jid_parse(xs_attr_get(item, "jid"), &j) < 0 || j.resource[0] ||
        !jid_bare(&j, bare, sizeof(bare)) || strcmp(bare, u->bare) == 0) {
        router_bounce(d, st, "modify", "bad-request");
        return;
    }
    const char *sub = xs_attr_get(item, "subscription");
    if (sub && strcmp(sub, "remove") == 0) {
        roster_item *it = roster_find(u, bare);
        if (!it) { router_bounce(d, st, "cancel", "item-not-found"); return; }
        roster_item before = { .jid = bare, .sub = it->sub, .ask = it->ask };
        roster_remove(d, u, bare);
        unsubscribe_both_ways(d, rs, &before);
    } else {
        roster_item *it = roster_find_or_add_capped(d, u, bare);
        if (!it) {   /* roster full (max_roster_items): refuse the new item, keep all others */
            router_bounce(d, st, "cancel", "not-allowed");
            return;
        }
        roster_item_set_name(it, xs_attr_get(item, "name"));
        roster_item_clear_groups(it);
        for (xs_node *g = xs_child(item, NS_ROSTER, "group"); g;
             g = xs_next_elem(g, NS_ROSTER, "group")) {
            char *t = xs_text(g);
            roster_item_add_group(it, t);
            free(t);
        }
        commit_answering(d, u, it, st, rs);   /* answers once stored */
        return;
    }
    xs_node *res = iq_result(st);
    xs_set_attr(res, "from", NULL);
    session_send(rs, res);
    xs_free(res);
}

void roster_iq(chatd *d, rsession *rs, xs_node *st)
{
    const char *type = xs_attr_get(st, "type");
    if (!rs || !type) { xs_free(st); return; }
    if (strcmp(type, "get") == 0) roster_with(d, rs->user->local, roster_get, rs, st);
    else if (strcmp(type, "set") == 0) roster_with(d, rs->user->local, roster_set, rs, st);
    else xs_free(st);
}
