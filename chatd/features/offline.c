/*
 * offline: what waits in Redis for an account's next login: messages for
 * accounts with no available resource (list chat:offline:<localpart>,
 * newest first) and inbound subscription requests not yet answered (hash
 * chat:subin:<localpart>, contact bare JID -> the request).
 *
 * Every step is one Lua script, atomic across the pool's connections.
 *
 * Storing (issue 14): within per-recipient caps on entries and bytes and a
 * per-sender share of both (quota.h), kept in hash chat:offline-use:<lp>.
 * Over a cap the NEW message is refused (<resource-constraint/>, type
 * wait) and nothing stored is dropped, so one sender cannot push out
 * everyone else's messages. A store that fails (Redis down or slow) is
 * bounced too (<internal-server-error/>, type wait): the sender is told.
 * Each entry is "<sender bare JID> <stanza>" so the usage can be given
 * back exactly when it is delivered.
 *
 * Delivering is deliver-then-delete. A flush reads the list (LRANGE) and
 * takes a lease (chat:offline-lease:<lp> = the session's token, 60 s),
 * the stanzas are handed to the session through the router, then an ack
 * removes exactly that many from the old end (new ones are pushed at the
 * other) and drops the lease. Guarantee: a message leaves Redis only after
 * it was queued on a bound session of its recipient. If the read's answer,
 * the ack or chatd itself is lost in between, nothing was removed: the
 * same session retries at its next presence, any session after the lease
 * ran out (at-least-once; a duplicate is possible only then). The lease
 * keeps two resources signing in at once from both getting the messages.
 * Queued is not read: a client that drops its connection right after is
 * in the same place as with any message sent to it (BOSH keeps the
 * session's unacknowledged answers for a resent rid, XEP-0124 §9).
 *
 * Failover (issue 16): Redis replicates asynchronously, so a store the
 * master answered may be gone after a failover (the old master keeps
 * taking writes until the sentinels have promoted a replica and chatd has
 * noticed; its data is then thrown away). With redis_wait_replicas > 0
 * (the default with sentinels) a store counts only once WAIT says that
 * many replicas have it; until then it is tried again, with a jittered
 * back-off, for up to OFFLINE_STORE_RETRY_MS (the failover), and only then
 * bounced. Trying again is safe: in that mode the script first looks for
 * the very same entry (LPOS) and does not add it twice.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "router.h"
#include "quota.h"
#include "blocking.h"
#include "log.h"
#include "xmpp_internal.h"

#define OFFLINE_LEASE_MS 60000
/* How long a store that is not yet safe on a replica is tried again: a
 * failover (sentinels agree, promote, chatd notices) fits in it. */
#define OFFLINE_STORE_RETRY_MS 20000

/* KEYS: list, account hash, usage hash.  ARGV: entry, sender, max_n,
 * max_bytes, share_n, share_bytes, once.  0: no such account, -1: over a
 * cap (quota_offline_admits is the same rule in C), 1: stored (once = 1:
 * or already there, a retried store). */
static const char store_script[] =
    "if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end "
    "if ARGV[7] == '1' and redis.call('LPOS', KEYS[1], ARGV[1]) then return 1 end "
    "local len = #ARGV[1] "
    "local n = redis.call('LLEN', KEYS[1]) "
    "if n == 0 then redis.call('DEL', KEYS[3]) end "   /* no stale usage */
    "local u = redis.call('HMGET', KEYS[3], 'bytes', 'n:'..ARGV[2], 'b:'..ARGV[2]) "
    "local bytes, sn, sb = tonumber(u[1] or 0), tonumber(u[2] or 0), tonumber(u[3] or 0) "
    "if n + 1 > tonumber(ARGV[3]) or bytes + len > tonumber(ARGV[4]) or "
    "   sn + 1 > tonumber(ARGV[5]) or sb + len > tonumber(ARGV[6]) then return -1 end "
    "redis.call('LPUSH', KEYS[1], ARGV[1]) "
    "redis.call('HINCRBY', KEYS[3], 'bytes', len) "
    "redis.call('HINCRBY', KEYS[3], 'n:'..ARGV[2], 1) "
    "redis.call('HINCRBY', KEYS[3], 'b:'..ARGV[2], len) "
    "return 1";

/* KEYS: list, lease.  ARGV: token, lease ms.  nil: another session holds
 * the lease; else every entry, newest first. Nearly every sign-in finds
 * nothing: then no lease (one write less). */
static const char flush_script[] =
    "local cur = redis.call('GET', KEYS[2]) "
    "if cur and cur ~= ARGV[1] then return false end "
    "local m = redis.call('LRANGE', KEYS[1], 0, -1) "
    "if #m > 0 then redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2]) end "
    "return m";

/* KEYS: list, lease, usage.  ARGV: token, count.  Removes the count oldest
 * entries (the ones delivered) and gives their usage back. Entries from
 * before issue 14 start with '<' and were never counted. */
static const char ack_script[] =
    "if redis.call('GET', KEYS[2]) ~= ARGV[1] then return -1 end "
    "local done = 0 "
    "for i = 1, tonumber(ARGV[2]) do "
    "  local e = redis.call('RPOP', KEYS[1]) "
    "  if not e then break end "
    "  done = done + 1 "
    "  if string.sub(e, 1, 1) ~= '<' then "
    "    local s = string.match(e, '^(%S+) ') "
    "    if s then "
    "      redis.call('HINCRBY', KEYS[3], 'bytes', -#e) "
    "      if redis.call('HINCRBY', KEYS[3], 'n:'..s, -1) <= 0 then "
    "        redis.call('HDEL', KEYS[3], 'n:'..s, 'b:'..s) "
    "      else redis.call('HINCRBY', KEYS[3], 'b:'..s, -#e) end "
    "    end "
    "  end "
    "end "
    "redis.call('DEL', KEYS[2]) "
    "if redis.call('LLEN', KEYS[1]) == 0 then redis.call('DEL', KEYS[3]) end "
    "return done";

/* KEYS: subin hash, account hash, blocklist set.  ARGV: contact, request,
 * cap, then the blocklist items that would match the sender (XEP-0191:
 * blocking_candidates; "" for none).
 * 0: no such account, -1: full, -2: the account blocks the sender,
 * 1: kept (a repeat replaces the old one). The blocklist is asked here
 * because the account may have no session, so no list in memory. */
static const char subin_script[] =
    "if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end "
    "for i = 4, #ARGV do "
    "  if ARGV[i] ~= '' and redis.call('SISMEMBER', KEYS[3], ARGV[i]) == 1 then return -2 end "
    "end "
    "if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 and "
    "   redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then return -1 end "
    "redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) "
    "return 1";

typedef struct store_ctx {
    chatd   *d;
    xs_node *st;       /* for the bounce */
    /* a message store, kept to try it again (NULL for subscription requests) */
    char    *local;
    strbuf   entry;
    char     sender[JID_MAX + 1];
    unsigned attempt;
    uint64_t since;
} store_ctx;

static void store_ctx_free(store_ctx *ctx)
{
    xs_free(ctx->st);
    free(ctx->local);
    sb_free(&ctx->entry);
    free(ctx);
}

static void store_send(store_ctx *ctx);

static void store_retry(loop *l, void *ud)
{
    (void)l;
    store_send(ud);
}

/* The answer to a store: 1 kept; 0 no such account; -1 over a quota. */
static void stored(redisReply *reply, const char *err, void *ud)
{
    store_ctx *ctx = ud;
    const char *why = err ? err : !reply ? "no reply"
                    : reply->type == REDIS_REPLY_ERROR ? reply->str
                    : reply->type != REDIS_REPLY_INTEGER ? "bad reply" : NULL;
    if (why && ctx->local && ctx->d->cfg.redis_wait_replicas > 0 && !ctx->d->stopping &&
        loop_now_ms(ctx->d->loop) - ctx->since < OFFLINE_STORE_RETRY_MS) {
        /* Redis down, failing over, or the write not yet on a replica:
         * the sender waits a little rather than get a bounce. */
        unsigned ms = redis_backoff_ms(ctx->attempt++, 100, 2000, (uint32_t)random());
        if (ctx->attempt == 1)
            log_info("offline: BOSH00714: store for %s not safe yet (%s); trying again",
                     xs_attr_get(ctx->st, "to"), why);
        loop_timer_add(ctx->d->loop, ms, store_retry, ctx);
        return;
    }
    if (why) {
        log_warn("offline: BOSH00252: cannot store for %s, bouncing it: %s",
                 xs_attr_get(ctx->st, "to"), why);
        router_bounce(ctx->d, ctx->st, "wait", "internal-server-error");
    } else if (reply->integer == 0) {
        router_bounce(ctx->d, ctx->st, "cancel", "service-unavailable");
    } else if (reply->integer == -2) {
        /* XEP-0191: presence from a blocked JID is dropped, not answered. */
        log_debug("offline: %s blocks %s, its subscription request is dropped",
                  xs_attr_get(ctx->st, "to"), xs_attr_get(ctx->st, "from"));
    } else if (reply->integer < 0) {
        log_info("offline: BOSH00253: %s is over its quota for stored stanzas "
                 "(offline_max_*, offline_sender_share or max_roster_items), refusing one from %s",
                 xs_attr_get(ctx->st, "to"), xs_attr_get(ctx->st, "from"));
        router_bounce(ctx->d, ctx->st, "wait", "resource-constraint");
    } else if (ctx->attempt) {
        log_info("offline: BOSH00715: stored for %s after %u more tries",
                 xs_attr_get(ctx->st, "to"), ctx->attempt);
    }
    store_ctx_free(ctx);
}

static store_ctx *store_ctx_new(chatd *d, const xs_node *st)
{
    store_ctx *ctx = calloc(1, sizeof(*ctx));
    if (!ctx) abort();
    ctx->d = d;
    ctx->st = xs_copy(st);
    sb_init(&ctx->entry);
    return ctx;
}

/* Sender's bare JID, the key of its share ("-" for the server's own). */
static const char *sender_key(const xs_node *st, char *buf, size_t len)
{
    const char *from = xs_attr_get(st, "from");
    return from && jid_bare_str(from, buf, len) ? buf : "-";
}

static void store_send(store_ctx *ctx)
{
    chatd *d = ctx->d;
    offline_limits l = quota_offline_limits(&d->cfg);
    int durable = d->cfg.redis_wait_replicas > 0;
    char key[300], use[300], acct[300], n[4][24];
    snprintf(key, sizeof(key), "chat:offline:%s", ctx->local);
    snprintf(acct, sizeof(acct), "chat:user:%s", ctx->local);
    snprintf(use, sizeof(use), "chat:offline-use:%s", ctx->local);
    snprintf(n[0], sizeof(n[0]), "%llu", (unsigned long long)l.max_n);
    snprintf(n[1], sizeof(n[1]), "%llu", (unsigned long long)l.max_bytes);
    snprintf(n[2], sizeof(n[2]), "%llu", (unsigned long long)l.share_n);
    snprintf(n[3], sizeof(n[3]), "%llu", (unsigned long long)l.share_bytes);
    const char *argv[] = { "EVAL", store_script, "3", key, acct, use, ctx->entry.data,
                           ctx->sender, n[0], n[1], n[2], n[3], durable ? "1" : "0" };
    size_t lens[13];
    for (int i = 0; i < 13; i++) lens[i] = strlen(argv[i]);
    lens[6] = ctx->entry.len;
    /* Keyed: the stores for one recipient run in the order they came (on
     * any connection the messages of one sender could overtake). */
    redis_async_commandargv_keyed_durable(d->redis, key, (int)d->cfg.redis_wait_replicas,
                                          (int)d->cfg.redis_wait_timeout, stored, ctx,
                                          13, argv, lens);
}

void offline_store(chatd *d, const char *local, const xs_node *st)
{
    if (!d->cfg.offline_max_messages || !d->cfg.offline_max_bytes) {
        /* storage off: what RFC 6121 §8.5.2 asks of a server without it */
        router_bounce(d, st, "cancel", "service-unavailable");
        return;
    }
    store_ctx *ctx = store_ctx_new(d, st);
    xs_node *copy = xs_copy(st);
    char stamp[32];
    /* A message already stamped by this server (XEP-0198: one a session
     * never acknowledged, stamped when it first arrived) keeps that
     * stamp: it is the truer one, and one delay from us is enough. */
    xs_node *had = xs_child(copy, NS_DELAY, "delay");
    const char *had_from = had ? xs_attr_get(had, "from") : NULL;
    if (!had_from || strcmp(had_from, d->cfg.domain) != 0) {
        xs_node *delay = xs_add_elem(copy, NS_DELAY, "delay");
        xs_set_attr(delay, "from", d->cfg.domain);
        xs_set_attr(delay, "stamp", xmpp_timestamp(stamp, sizeof(stamp), time(NULL)));
    }
    const char *sk = sender_key(st, ctx->sender, sizeof(ctx->sender));
    if (sk != ctx->sender) snprintf(ctx->sender, sizeof(ctx->sender), "%s", sk);
    sb_printf(&ctx->entry, "%s ", ctx->sender);
    xs_serialize(copy, NULL, &ctx->entry);
    xs_free(copy);
    ctx->local = strdup(local);
    if (!ctx->local) abort();
    ctx->since = loop_now_ms(d->loop);
    store_send(ctx);
}

/* ---- flush ---- */

static void acked(redisReply *reply, const char *err, void *ud)
{
    rsession *rs = ud;
    rs->offline_req = NULL;
    if (err || !reply || reply->type != REDIS_REPLY_INTEGER || reply->integer < 0) {
        log_warn("offline: BOSH00254: delivered messages for %s not removed (sent again "
                 "later): %s", rs->full,
                 err ? err : reply && reply->type == REDIS_REPLY_INTEGER ? "lease lost"
                 : (reply && reply->str) ? reply->str : "bad reply");
        rs->offline_done = 0;
        return;
    }
    if (rs->offline_more) {                 /* the next batch */
        rs->offline_done = 0;
        offline_flush(rs->user->d, rs);
    }
}

static void flushed(redisReply *reply, const char *err, void *ud)
{
    rsession *rs = ud;
    chatd *d = rs->user->d;
    rs->offline_req = NULL;
    if (reply && reply->type == REDIS_REPLY_NIL) {   /* another resource has them */
        rs->offline_done = 1;
        return;
    }
    if (err || !reply || reply->type != REDIS_REPLY_ARRAY) {
        log_warn("offline: BOSH00255: cannot read messages for %s (kept, retried at its "
                 "next presence): %s", rs->full,
                 err ? err : (reply && reply->str) ? reply->str : "bad reply");
        return;
    }
    rs->offline_done = 1;
    if (reply->elements == 0) return;
    /* Batches of at most half the session's output cap, so a full list
     * cannot push the client over max_output (which would drop it and
     * what it was sent); the next batch follows the ack. */
    size_t budget = d->cfg.max_output / 2, used = 0, taken = 0;
    for (size_t i = reply->elements; i-- > 0; taken++) {   /* oldest first */
        redisReply *e = reply->element[i];
        if (e->type != REDIS_REPLY_STRING) continue;
        const char *xml = e->str;
        size_t len = e->len;
        if (len && xml[0] != '<') {                  /* "<sender> <stanza>" */
            const char *sp = memchr(xml, ' ', len);
            if (!sp) continue;
            len -= (size_t)(sp + 1 - xml);
            xml = sp + 1;
        }
        if (used && used + len > budget) break;
        session_send_raw(rs, xml, len);
        used += len;
    }
    rs->offline_more = taken < reply->elements;
    const char *local = rs->user->local;
    char key[300];
    snprintf(key, sizeof(key), "chat:offline:%s", local);
    /* Issued even if rs goes away meanwhile (forget only drops our
     * callback): what was handed over is removed either way. */
    redis_async_req *req = redis_async_command_keyed(
        d->redis, key, acked, rs,
        "EVAL %s 3 %s chat:offline-lease:%s chat:offline-use:%s %s %llu",
        ack_script, key, local, local, rs->offline_token, (unsigned long long)taken);
    if (req) rs->offline_req = req;
}

void offline_flush(chatd *d, rsession *rs)
{
    if (rs->offline_req || rs->offline_done) return;
    char key[300];
    snprintf(key, sizeof(key), "chat:offline:%s", rs->user->local);
    redis_async_req *req = redis_async_command_keyed(d->redis, key, flushed, rs,
                                                     "EVAL %s 2 %s chat:offline-lease:%s %s %d",
                                                     flush_script, key, rs->user->local,
                                                     rs->offline_token, OFFLINE_LEASE_MS);
    if (req) rs->offline_req = req;
}

void offline_forget(rsession *rs)
{
    if (rs->offline_req) redis_async_forget(rs->offline_req);
    rs->offline_req = NULL;
    if (rs->subin_req) redis_async_forget(rs->subin_req);
    rs->subin_req = NULL;
}

/* ---- pending subscription requests (RFC 6121 §3.1.3) ---- */

void offline_subin_store(chatd *d, ruser *u, const xs_node *st)
{
    char sender[JID_MAX + 1];
    if (!jid_bare_str(xs_attr_get(st, "from"), sender, sizeof(sender))) return;
    xs_node *copy = xs_copy(st);
    char stamp[32];
    xs_node *delay = xs_add_elem(copy, NS_DELAY, "delay");
    xs_set_attr(delay, "from", d->cfg.domain);
    xs_set_attr(delay, "stamp", xmpp_timestamp(stamp, sizeof(stamp), time(NULL)));
    xs_set_attr(copy, "to", u->bare);
    strbuf xml = STRBUF_INIT;
    xs_serialize(copy, NULL, &xml);
    xs_free(copy);
    char cand[BLOCKING_CANDIDATES][JID_MAX + 1];
    blocking_candidates(xs_attr_get(st, "from"), cand);
    redis_async_command(d->redis, stored, store_ctx_new(d, st),
                        "EVAL %s 3 chat:subin:%s chat:user:%s chat:blocklist:%s %s %b %u %s %s %s %s",
                        subin_script, u->local, u->local, u->local, sender, xml.data, xml.len,
                        d->cfg.max_roster_items, cand[0], cand[1], cand[2], cand[3]);
    sb_free(&xml);
}

void offline_subin_clear(chatd *d, ruser *u, const char *contact_bare)
{
    redis_async_command(d->redis, redis_log_error_cb, NULL, "HDEL chat:subin:%s %s",
                        u->local, contact_bare);
}

static void subin_read(redisReply *reply, const char *err, void *ud)
{
    rsession *rs = ud;
    rs->subin_req = NULL;
    if (err || !reply || reply->type != REDIS_REPLY_ARRAY) {
        log_warn("offline: BOSH00256: cannot read pending subscription requests for %s "
                 "(retried at its next presence): %s",
                 rs->full, err ? err : (reply && reply->str) ? reply->str : "bad reply");
        return;
    }
    rs->subin_done = 1;
    for (size_t i = 0; i < reply->elements; i++) {
        redisReply *e = reply->element[i];
        if (e->type == REDIS_REPLY_STRING) session_send_raw(rs, e->str, e->len);
    }
}

void offline_subin_flush(chatd *d, rsession *rs)
{
    if (rs->subin_req || rs->subin_done) return;
    redis_async_req *req = redis_async_command(d->redis, subin_read, rs,
                                               "HVALS chat:subin:%s", rs->user->local);
    if (req) rs->subin_req = req;
}
