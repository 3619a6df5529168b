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

int bosh_status_handler(request_rec *r)
{
    bosh_child *ch = bosh_child_state;
    int json, i, cap_total, cap_max;
    unsigned cap_refusals;
    redis_pool_stats rs;

    if (!r->handler || strcmp(r->handler, "bosh-status") != 0)
        return DECLINED;
    if (r->method_number != M_GET)
        return HTTP_METHOD_NOT_ALLOWED;
    json = r->args && strstr(r->args, "json") != NULL;

    memset(&rs, 0, sizeof(rs));
    redis_cap_get(&cap_total, &cap_max, &cap_refusals);
    if (ch && ch->redis)
        redis_pool_get_stats(ch->redis, &rs);

    ap_set_content_type(r, json ? "application/json" : "text/plain; charset=utf-8");
    apr_table_setn(r->headers_out, "Cache-Control", "no-store");
    if (r->header_only)
        return OK;

    if (json) {
        ap_rprintf(r, "{\"pid\":%d,\"configured\":%s,\"stopping\":%s,"
                   "\"sessions_refused\":%u,\"bad_requests\":%u,\"relays\":[",
                   (int)getpid(), ch ? "true" : "false",
                   ch && ch->stopping ? "true" : "false",
                   ch ? ch->sessions_refused : 0, ch ? ch->bad_requests : 0);
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
                       "\"canceled\":%u,\"drains\":%u}", i ? "," : "",
                       json_str(r->pool, relay_client_node(rc)),
                       json_str(r->pool, relay_client_url(rc)),
                       st.connected ? "true" : "false", st.connects,
                       st.connect_failures, st.requests, st.responses, st.held,
                       st.broken, st.timeouts, st.canceled, st.drains);
        else
            ap_rprintf(r, "relay %s (%s): %s, connects %u, connect failures %u, "
                       "requests %u, responses %u, held now %u, broken %u, "
                       "timeouts %u, canceled %u, drains %u\n",
                       relay_client_node(rc), relay_client_url(rc),
                       st.connected ? "connected" : "not connected", st.connects,
                       st.connect_failures, st.requests, st.responses, st.held,
                       st.broken, st.timeouts, st.canceled, st.drains);
    }

    if (json) {
        if (ch && ch->redis)
            ap_rprintf(r, "],\"redis\":{\"address\":%s,\"in_use\":%d,\"idle\":%d,"
                       "\"total\":%d,\"max\":%d,\"opened\":%u,\"closed_idle\":%u,"
                       "\"waits\":%u,\"acquire_timeouts\":%u,\"failures\":%u,"
                       "\"total_cap_refusals\":%u,\"server_total\":%d,"
                       "\"server_max\":%d,\"server_refusals\":%u}}\n",
                       json_str(r->pool, redis_pool_address(ch->redis)), rs.in_use,
                       rs.idle, rs.total, rs.max, rs.opened, rs.closed_idle,
                       rs.waits, rs.acquire_timeouts, rs.failures,
                       rs.total_cap_refusals, cap_total, cap_max, cap_refusals);
        else
            ap_rputs("],\"redis\":null}\n", r);
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
    return OK;
}
