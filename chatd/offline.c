/*
 * offline: messages (and subscription requests) for accounts with no
 * available resource, kept in Redis list chat:offline:<localpart>
 * (newest first, capped) and delivered after the next initial presence.
 *
 * Both directions are one Lua script so they are atomic across the
 * pool's connections: storing checks that the account exists (no lists
 * for made-up names) and trims; flushing reads and deletes together, so
 * two resources logging in at once cannot both get the messages.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "router.h"
#include "log.h"
#include "xmpp_internal.h"

#define OFFLINE_MAX 100

static const char store_script[] =
    "if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end "
    "redis.call('LPUSH', KEYS[1], ARGV[1]) "
    "redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[2]) - 1) "
    "return 1";

/* Nearly every sign-in finds nothing: then no DEL (one command less). */
static const char flush_script[] =
    "local m = redis.call('LRANGE', KEYS[1], 0, -1) "
    "if #m > 0 then redis.call('DEL', KEYS[1]) end "
    "return m";

typedef struct store_ctx {
    chatd   *d;
    xs_node *msg;      /* for the bounce when the account does not exist */
} store_ctx;

static void stored(redisReply *reply, const char *err, void *ud)
{
    store_ctx *ctx = ud;
    if (err) {
        log_warn("offline: store failed: %s", err);
    } else if (reply && reply->type == REDIS_REPLY_INTEGER && reply->integer == 0) {
        if (ctx->msg) router_bounce(ctx->d, ctx->msg, "cancel", "service-unavailable");
    } else if (reply && reply->type == REDIS_REPLY_ERROR) {
        log_warn("offline: store failed: %s", reply->str);
    }
    xs_free(ctx->msg);
    free(ctx);
}

void offline_store(chatd *d, const char *local, const xs_node *st)
{
    xs_node *copy = xs_copy(st);
    char stamp[32];
    xs_node *delay = xs_add_elem(copy, NS_DELAY, "delay");
    xs_set_attr(delay, "from", d->cfg.domain);
    xs_set_attr(delay, "stamp", xmpp_timestamp(stamp, sizeof(stamp), time(NULL)));
    strbuf xml = STRBUF_INIT;
    xs_serialize(copy, NULL, &xml);
    xs_free(copy);

    store_ctx *ctx = calloc(1, sizeof(*ctx));
    if (!ctx) abort();
    ctx->d = d;
    if (xs_is(st, NS_CLIENT, "message")) ctx->msg = xs_copy(st);
    redis_async_command(d->redis, stored, ctx,
                        "EVAL %s 2 chat:offline:%s chat:user:%s %b %d",
                        store_script, local, local, xml.data, xml.len, OFFLINE_MAX);
    sb_free(&xml);
}

static void flushed(redisReply *reply, const char *err, void *ud)
{
    rsession *rs = ud;
    rs->offline_req = NULL;
    if (err || !reply || reply->type != REDIS_REPLY_ARRAY) {
        log_warn("offline: cannot read messages for %s: %s", rs->full,
                 err ? err : (reply && reply->str) ? reply->str : "bad reply");
        return;
    }
    for (size_t i = reply->elements; i-- > 0; ) {   /* oldest first */
        redisReply *e = reply->element[i];
        if (e->type == REDIS_REPLY_STRING) c2s_deliver_raw(rs->c2s, e->str, e->len);
    }
}

void offline_flush(chatd *d, rsession *rs)
{
    if (rs->offline_req) return;
    redis_async_req *req = redis_async_command(d->redis, flushed, rs,
                                               "EVAL %s 1 chat:offline:%s",
                                               flush_script, rs->user->local);
    if (req) rs->offline_req = req;
}

void offline_forget(rsession *rs)
{
    if (rs->offline_req) redis_async_forget(rs->offline_req);
    rs->offline_req = NULL;
}
