/*
 * bosh_status.c - the `bosh-status` handler: this child's counters.
 *
 * Each httpd child has its own relay connections and Redis pool, so the
 * page describes the child that served it (its pid is shown). Text by
 * default, JSON with ?json.
 */
#include <string.h>
#include <unistd.h>

#include "httpd.h"
#include "http_protocol.h"
#include "apr_strings.h"

#include "mod_status.h"

#include "mod_bosh.h"
#include "redis_cap.h"

static const char *json_str(apr_pool_t *p, const char *s)
{
    /* Node ids and URLs come from the config; escape the JSON specials. */
    const char *c;
    char *out = apr_palloc(p, strlen(s) * 2 + 3), *o = out;
    *o++ = '"';
    for (c = s; *c; c++) {
        if (*c == '"' || *c == '\\')
            *o++ = '\\';
        *o++ = (unsigned char)*c < 0x20 ? '?' : *c;
    }
    *o++ = '"';
    *o = '\0';
    return out;
}

/* Every child's Redis counters (shared memory, redis_cap.c), summed. */
typedef struct children_sum {
    request_rec *r;
    int          mode;          /* 0 text, 1 JSON, 2 server-status?auto, 3 html */
    int          n;
    unsigned     conns, in_use, idle, waits, timeouts, failures;
} children_sum;

static void child_row(const redis_cap_child_stats *st, void *ud)
{
    children_sum *sum = ud;

    sum->conns += st->conns;
    sum->in_use += st->in_use;
    sum->idle += st->idle;
    sum->waits += st->waits;
    sum->timeouts += st->acquire_timeouts;
    sum->failures += st->failures;
    if (sum->mode == 1)
        ap_rprintf(sum->r, "%s{\"pid\":%u,\"connections\":%u,\"in_use\":%u,"
                   "\"idle\":%u,\"waits\":%u,\"acquire_timeouts\":%u,"
                   "\"failures\":%u}", sum->n ? "," : "", st->pid, st->conns,
                   st->in_use, st->idle, st->waits, st->acquire_timeouts,
                   st->failures);
    else if (sum->mode != 2)
        ap_rprintf(sum->r, "redis child %u: connections %u, in use %u, idle %u, "
                   "waits %u, acquire timeouts %u, failures %u\n", st->pid,
                   st->conns, st->in_use, st->idle, st->waits,
                   st->acquire_timeouts, st->failures);
    sum->n++;
}

static void all_children(request_rec *r, int json)
{
    children_sum sum;

    memset(&sum, 0, sizeof(sum));
    sum.r = r;
    sum.mode = json;
    if (json)
        ap_rputs(",\"redis_children\":[", r);
    redis_cap_foreach(child_row, &sum);
    if (json)
        ap_rprintf(r, "],\"redis_all\":{\"children\":%d,\"connections\":%u,"
                   "\"in_use\":%u,\"idle\":%u,\"waits\":%u,\"acquire_timeouts\":%u,"
                   "\"failures\":%u}", sum.n, sum.conns, sum.in_use, sum.idle,
                   sum.waits, sum.timeouts, sum.failures);
    else
        ap_rprintf(r, "redis, sum of %d children: connections %u, in use %u, "
                   "idle %u, waits %u, acquire timeouts %u, failures %u\n", sum.n,
                   sum.conns, sum.in_use, sum.idle, sum.waits, sum.timeouts,
                   sum.failures);
}

int bosh_status_handler(request_rec *r)
{
    bosh_child *ch = bosh_child_state;
    int json, i, cap_total, cap_max;
    unsigned cap_refusals;
    redis_pool_stats rs;
    bosh_held_counts held;

    if (!r->handler || strcmp(r->handler, "bosh-status") != 0)
        return DECLINED;
    bosh_protect_answer(r);
    if (r->method_number != M_GET)
        return HTTP_METHOD_NOT_ALLOWED;
    json = r->args && strstr(r->args, "json") != NULL;

    memset(&rs, 0, sizeof(rs));
    bosh_held_get(&held);
    redis_cap_get(&cap_total, &cap_max, &cap_refusals);
    if (ch && ch->redis)
        redis_pool_get_stats(ch->redis, &rs);

    ap_set_content_type(r, json ? "application/json" : "text/plain; charset=utf-8");
    apr_table_setn(r->headers_out, "Cache-Control", "no-store");
    if (r->header_only)
        return OK;

    if (json) {
        ap_rprintf(r, "{\"pid\":%d,\"configured\":%s,\"stopping\":%s,"
                   "\"sessions_refused\":%u,\"bad_requests\":%u,",
                   (int)getpid(), ch ? "true" : "false",
                   ch && ch->stopping ? "true" : "false",
                   ch ? ch->sessions_refused : 0, ch ? ch->bad_requests : 0);
        ap_rprintf(r, "\"sessions_admitted\":%u,\"refused\":{\"gate\":%u,"
                   "\"rate\":%u,\"address\":%u,\"busy\":%u,\"chatd\":%u,"
                   "\"workers\":%u},",
                   ch ? ch->sessions_admitted : 0, ch ? ch->refused_gate : 0,
                   ch ? ch->refused_rate : 0, ch ? ch->refused_addr : 0,
                   ch ? ch->refused_busy : 0, ch ? ch->refused_chatd : 0,
                   ch ? ch->refused_workers : 0);
        ap_rprintf(r, "\"held\":{\"child\":%u,\"child_limit\":%d,"
                   "\"server\":%s,\"server_peak\":%s,\"server_limit\":%d,"
                   "\"share\":%d,\"workers\":%d,\"refused_server\":%s},"
                   "\"relays\":[",
                   held.child, bosh_budget.child_max_held,
                   held.shared ? apr_itoa(r->pool, (int)held.server) : "null",
                   held.shared ? apr_itoa(r->pool, (int)held.server_peak) : "null",
                   bosh_budget.max_held, bosh_budget.share, bosh_budget.workers,
                   held.shared ? apr_itoa(r->pool, (int)held.refused) : "null");
    }
    else {
        ap_rprintf(r, "mod_bosh status (this child)\npid: %d\n", (int)getpid());
        if (!ch) {
            ap_rputs("not configured (no BoshChatd / BoshRedis)\n", r);
            return OK;
        }
        ap_rprintf(r, "stopping: %s\nsessions refused: %u\nbad requests: %u\n",
                   ch->stopping ? "yes" : "no", ch->sessions_refused,
                   ch->bad_requests);
        ap_rprintf(r, "sessions admitted: %u\nrefused by gate: %u\n"
                   "refused by rate: %u\nrefused by address cap: %u\n"
                   "refused, redis busy or down: %u\nrefused by chatd: %u\n",
                   ch->sessions_admitted, ch->refused_gate, ch->refused_rate,
                   ch->refused_addr, ch->refused_busy, ch->refused_chatd);
        ap_rprintf(r, "refused, workers held (BoshMaxHeldShare): %u\n"
                   "held requests, this child: %u of %d\n",
                   ch->refused_workers, held.child, bosh_budget.child_max_held);
        if (held.shared)
            ap_rprintf(r, "held requests, all children: %u now, %u recent peak, "
                       "of %d (BoshMaxHeldShare %d%% of %d workers); new sessions "
                       "refused for it, all children: %u\n", held.server,
                       held.server_peak, bosh_budget.max_held, bosh_budget.share,
                       bosh_budget.workers, held.refused);
    }

    for (i = 0; ch && i < ch->nrelays; i++) {
        relay_client_stats st;
        relay_client *rc = ch->relays[i];
        if (!rc)
            continue;
        relay_client_get_stats(rc, &st);
        if (json)
            ap_rprintf(r, "%s{\"node\":%s,\"url\":%s,\"connected\":%s,"
                       "\"connects\":%u,\"connect_failures\":%u,\"requests\":%u,"
                       "\"responses\":%u,\"held\":%u,\"broken\":%u,\"timeouts\":%u,"
                       "\"canceled\":%u,\"drains\":%u,\"pings\":%u,"
                       "\"ping_timeouts\":%u,\"healthy\":%s}", i ? "," : "",
                       json_str(r->pool, relay_client_node(rc)),
                       json_str(r->pool, relay_client_url(rc)),
                       st.connected ? "true" : "false", st.connects,
                       st.connect_failures, st.requests, st.responses, st.held,
                       st.broken, st.timeouts, st.canceled, st.drains,
                       st.pings, st.ping_timeouts, st.unhealthy ? "false" : "true");
        else
            ap_rprintf(r, "relay %s (%s): %s, connects %u, connect failures %u, "
                       "requests %u, responses %u, held now %u, broken %u, "
                       "timeouts %u, canceled %u, drains %u, pings %u, "
                       "ping timeouts %u%s\n",
                       relay_client_node(rc), relay_client_url(rc),
                       st.connected ? "connected" : "not connected", st.connects,
                       st.connect_failures, st.requests, st.responses, st.held,
                       st.broken, st.timeouts, st.canceled, st.drains,
                       st.pings, st.ping_timeouts,
                       st.unhealthy ? ", OUT OF SERVICE (no PONG)" : "");
    }

    if (json) {
        if (ch && ch->redis)
            ap_rprintf(r, "],\"redis\":{\"address\":%s,\"in_use\":%d,\"idle\":%d,"
                       "\"total\":%d,\"max\":%d,\"opened\":%u,\"closed_idle\":%u,"
                       "\"waits\":%u,\"acquire_timeouts\":%u,\"failures\":%u,"
                       "\"total_cap_refusals\":%u,\"server_total\":%d,"
                       "\"server_max\":%d,\"server_refusals\":%u}",
                       json_str(r->pool, redis_pool_address(ch->redis)), rs.in_use,
                       rs.idle, rs.total, rs.max, rs.opened, rs.closed_idle,
                       rs.waits, rs.acquire_timeouts, rs.failures,
                       rs.total_cap_refusals, cap_total, cap_max, cap_refusals);
        else
            ap_rputs("],\"redis\":null", r);
        all_children(r, 1);
        ap_rputs("}\n", r);
    }
    else if (ch && ch->redis) {
        ap_rprintf(r, "redis %s: in use %d, idle %d, total %d of %d, opened %u, "
                   "closed idle %u, waits %u, acquire timeouts %u, failures %u, "
                   "refused by total cap %u\n"
                   "redis, all children: %d of %d (BoshRedisMaxTotal), refusals %u\n",
                   redis_pool_address(ch->redis), rs.in_use, rs.idle, rs.total,
                   rs.max, rs.opened, rs.closed_idle, rs.waits,
                   rs.acquire_timeouts, rs.failures, rs.total_cap_refusals,
                   cap_total, cap_max, cap_refusals);
    }
    else {
        ap_rputs("redis: not configured\n", r);
    }
    if (!json)
        all_children(r, 0);
    return OK;
}

/* mod_status (server-status): the Redis pool of every child, from the
 * shared-memory slots, and the totals. */
int bosh_status_hook(request_rec *r, int flags)
{
    int cap_total, cap_max;
    unsigned cap_refusals;
    children_sum sum;
    bosh_held_counts held;

    if (!bosh_child_state)
        return OK;
    /* Held requests against the worker budget (BoshMaxHeldShare). */
    bosh_held_get(&held);
    if (flags & AP_STATUS_SHORT)
        ap_rprintf(r, "BoshHeldRequests: %u\nBoshHeldPeak: %u\nBoshHeldLimit: %d\n"
                   "BoshHeldRefused: %u\n", held.server, held.server_peak,
                   bosh_budget.max_held, held.refused);
    else
        ap_rprintf(r, "<hr />\n<h2>mod_bosh held requests</h2>\n<pre>\nheld now %u, "
                   "recent peak %u, of %d (BoshMaxHeldShare %d%% of %d workers); "
                   "new sessions refused for it: %u\n</pre>\n", held.server,
                   held.server_peak, bosh_budget.max_held, bosh_budget.share,
                   bosh_budget.workers, held.refused);
    if (!bosh_child_state->redis)
        return OK;
    redis_cap_get(&cap_total, &cap_max, &cap_refusals);
    memset(&sum, 0, sizeof(sum));
    sum.r = r;
    sum.mode = (flags & AP_STATUS_SHORT) ? 2 : 3;
    if (sum.mode == 3)
        ap_rputs("<hr />\n<h2>mod_bosh Redis pool</h2>\n<pre>\n", r);
    redis_cap_foreach(child_row, &sum);
    if (sum.mode == 2)
        ap_rprintf(r, "BoshRedisChildren: %d\nBoshRedisConnections: %d\n"
                   "BoshRedisMaxTotal: %d\nBoshRedisInUse: %u\nBoshRedisIdle: %u\n"
                   "BoshRedisWaits: %u\nBoshRedisAcquireTimeouts: %u\n"
                   "BoshRedisFailures: %u\nBoshRedisTotalCapRefusals: %u\n",
                   sum.n, cap_total, cap_max, sum.in_use, sum.idle, sum.waits,
                   sum.timeouts, sum.failures, cap_refusals);
    else
        ap_rprintf(r, "all children: connections %d of %d (BoshRedisMaxTotal), in use %u, "
                   "idle %u, waits %u, acquire timeouts %u, failures %u, "
                   "total cap refusals %u\n</pre>\n", cap_total, cap_max,
                   sum.in_use, sum.idle, sum.waits, sum.timeouts, sum.failures,
                   cap_refusals);
    return OK;
}
