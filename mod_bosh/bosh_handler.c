/*
 * bosh_handler.c - the `bosh` handler: one BOSH HTTP request in, one out.
 *
 * POST: read the body (capped), validate it with bosh_body_parse so bad
 * input never crosses the relay, then
 *   - no sid (session creation): sign-in gate in Redis (borrowed from the
 *     pool for one command, never held across the wait), pick a chatd node
 *     round-robin, relay;
 *   - sid: the node is the sid prefix; relay. No Redis on this path.
 * The worker thread is parked until chatd answers (relay_client.c); while
 * parked it notices a client that went away and a child that is stopping.
 * Every answer has a Content-Length and Cache-Control: no-store.
 *
 * GET answers a short info page, OPTIONS a CORS preflight.
 */
#include <poll.h>
#include <string.h>
#include <strings.h>

#include "httpd.h"
#include "http_config.h"
#include "http_core.h"
#include "http_log.h"
#include "http_protocol.h"
#include "http_request.h"
#include "http_ssl.h"
#include "apr_strings.h"
#include "apr_atomic.h"
#include "apr_portable.h"
#include "apr_general.h"

#include "mod_bosh.h"
#include "../common/bosh_body.h"
#include "../common/admission.h"

#define BOSH_CONTENT_TYPE   "text/xml; charset=utf-8"
#define RETRY_AFTER_BASE    5     /* seconds */
#define RETRY_AFTER_SPREAD  10    /* + 0..10 s, so refused clients spread out */
#define RELAY_SAFETY_S      15    /* deadline beyond BoshMaxWait */
#define CORS_MAX_AGE        "86400"

/* Write a complete response: status, type, length, body. */
static int send_response(request_rec *r, int status, const char *ctype,
                         const char *body, apr_size_t len, unsigned retry_after)
{
    r->status = status;
    ap_set_content_type(r, apr_pstrdup(r->pool, ctype));
    apr_table_setn(r->headers_out, "Cache-Control", "no-store");
    if (retry_after)
        apr_table_setn(r->headers_out, "Retry-After",
                       apr_psprintf(r->pool, "%u", retry_after));
    ap_set_content_length(r, len);
    if (!r->header_only && len)
        ap_rwrite(body, (int)len, r);
    ap_rflush(r);
    return OK;
}

static int send_terminate(request_rec *r, const char *condition)
{
    const char *body = apr_psprintf(r->pool,
        "<body type='terminate' condition='%s' xmlns='" BOSH_NS "'/>", condition);
    return send_response(r, HTTP_OK, BOSH_CONTENT_TYPE, body, strlen(body), 0);
}

static unsigned jittered_retry_after(void)
{
    uint32_t rnd = 0;
    apr_generate_random_bytes((unsigned char *)&rnd, sizeof(rnd));
    return bosh_retry_after(RETRY_AFTER_BASE, RETRY_AFTER_SPREAD, rnd);
}

/* 503 for a refused session creation: retryable, fast, says why.
 * retry_after 0: pick a jittered one here. */
static int send_unavailable(request_rec *r, bosh_child *ch, const char *why,
                            unsigned retry_after)
{
    const char *body = apr_psprintf(r->pool, "%s\n", why);
    if (ch)
        apr_atomic_inc32(&ch->sessions_refused);
    ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r,
                  "mod_bosh: session creation refused: %s", why);
    return send_response(r, HTTP_SERVICE_UNAVAILABLE, "text/plain; charset=utf-8",
                         body, strlen(body),
                         retry_after ? retry_after : jittered_retry_after());
}

/* Access-Control-Allow-Origin for allowed origins only. Returns 1 if set. */
static int add_cors(request_rec *r, bosh_server_conf *conf)
{
    const char *origin = apr_table_get(r->headers_in, "Origin");

    apr_table_mergen(r->headers_out, "Vary", "Origin");
    if (!bosh_origin_allowed(origin,
                             (const char *const *)conf->allow_origins->elts,
                             conf->allow_origins->nelts))
        return 0;
    apr_table_setn(r->headers_out, "Access-Control-Allow-Origin", origin);
    return 1;
}

static int handle_options(request_rec *r, bosh_server_conf *conf)
{
    if (add_cors(r, conf)) {
        apr_table_setn(r->headers_out, "Access-Control-Allow-Methods", "POST, OPTIONS");
        apr_table_setn(r->headers_out, "Access-Control-Allow-Headers", "Content-Type");
        apr_table_setn(r->headers_out, "Access-Control-Max-Age", CORS_MAX_AGE);
    }
    apr_table_setn(r->headers_out, "Allow", "POST, GET, OPTIONS");
    return send_response(r, HTTP_OK, "text/plain; charset=utf-8", "", 0, 0);
}

static int handle_get(request_rec *r, bosh_server_conf *conf)
{
    const char *page = apr_psprintf(r->pool,
        "<!DOCTYPE html>\n<html><head><title>BOSH</title></head><body>\n"
        "<h1>BOSH endpoint</h1>\n<p>This is an XMPP over BOSH (XEP-0124, "
        "XEP-0206) endpoint for the domain <b>%s</b>. Point a BOSH client "
        "here; it speaks POST.</p>\n</body></html>\n",
        ap_escape_html(r->pool, conf->domain));
    return send_response(r, HTTP_OK, "text/html; charset=utf-8", page,
                         strlen(page), 0);
}

/* Read the request body into *data. *too_big is set (and reading stops)
 * past max bytes. Returns OK or an HTTP error status. */
static int read_body(request_rec *r, apr_size_t max, char **data,
                     apr_size_t *len, int *too_big)
{
    apr_size_t total = 0;
    long n;
    char *buf;
    int rv;

    *data = NULL;
    *len = 0;
    *too_big = 0;
    if ((rv = ap_setup_client_block(r, REQUEST_CHUNKED_DECHUNK)) != OK)
        return rv;
    if (r->remaining > (apr_off_t)max) {
        *too_big = 1;
        return OK;
    }
    buf = apr_palloc(r->pool, max + 1);
    if (ap_should_client_block(r)) {
        while ((n = ap_get_client_block(r, buf + total, max + 1 - total)) > 0) {
            total += (apr_size_t)n;
            if (total > max) {
                *too_big = 1;
                return OK;
            }
        }
        if (n < 0)
            return HTTP_BAD_REQUEST;
    }
    buf[total] = '\0';
    *data = buf;
    *len = total;
    return OK;
}

/* Admission (common/admission.h): the operators' sign-in switch, the
 * server-wide sign-in rate and the per-address cap, in one Redis script.
 * The connection is borrowed for that one round trip only. Returns NULL
 * to admit, else the reason for a 503 (*retry_after set, jittered). */
static const char *admit_new_session(request_rec *r, bosh_child *ch,
                                     bosh_server_conf *conf, unsigned *retry_after)
{
    redisContext *c;
    redis_pool_status st;
    admission_config cfg;
    admission_result res;
    char err[256];
    int rc, broken;

    *retry_after = 0;
    if (!ch->redis)
        return NULL;
    st = redis_pool_acquire(ch->redis, &c);
    if (st == RP_TIMEOUT)
        return "sign-in is busy (no Redis connection free); try again shortly";
    if (st == RP_TOTAL_CAP)
        return "sign-in is busy (BoshRedisMaxTotal reached); try again shortly";
    if (st != RP_OK)
        return "sign-in is unavailable (Redis unreachable); try again shortly";

    admission_config_defaults(&cfg);
    cfg.rate = conf->signin_rate;
    cfg.burst = (unsigned)conf->signin_burst;
    cfg.per_addr_per_min = (unsigned)conf->signin_per_addr;
    err[0] = '\0';
    rc = admission_check(c, &cfg, r->useragent_ip, &res, err, sizeof(err));
    broken = c->err != 0;
    redis_pool_release(ch->redis, c, broken);

    if (rc != 0) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r,
                      "mod_bosh: Redis %s: admission failed: %s",
                      redis_pool_address(ch->redis), err);
        return "sign-in is unavailable (Redis error); try again shortly";
    }
    if (res.verdict == ADMIT_OK)
        return NULL;
    *retry_after = res.retry_after_s;
    return res.reason[0] ? apr_pstrdup(r->pool, res.reason)
                         : "sign-in refused; try again later";
}

/* What a parked request checks every tick. */
typedef struct wait_ctx {
    request_rec *r;
    int          client_fd;     /* -1: cannot watch the client socket */
} wait_ctx;

static int wait_tick(void *ud)
{
    wait_ctx *w = ud;

    /* Prefork never calls child_stopping on a graceful restart; notice it
     * here and DRAIN, so chatd answers at once and the child can exit. */
    if (bosh_child_is_stopping())
        bosh_child_drain(1);
    if (w->client_fd >= 0) {
        struct pollfd pfd = { w->client_fd, POLLRDHUP, 0 };
        if (poll(&pfd, 1, 0) > 0 &&
            (pfd.revents & (POLLRDHUP | POLLHUP | POLLERR)))
            return 1;
    }
    return 0;
}

static relay_client *find_node(bosh_child *ch, const char *id)
{
    int i;
    for (i = 0; i < ch->nrelays; i++)
        if (ch->relays[i] && strcmp(relay_client_node(ch->relays[i]), id) == 0)
            return ch->relays[i];
    return NULL;
}

/* Relay to one node, or (for a new session, rc == NULL) to the next usable
 * node round-robin, falling over to the others if a connect fails. */
static relay_call_status relay(request_rec *r, bosh_child *ch, relay_client *rc,
                               relay_call *call, int64_t deadline)
{
    wait_ctx w;
    apr_socket_t *sock = ap_get_conn_socket(r->connection);
    apr_os_sock_t fd = -1;
    relay_call_status st = RELAY_CALL_UNAVAILABLE;
    int *up, i, first;

    w.r = r;
    w.client_fd = (sock && apr_os_sock_get(&fd, sock) == APR_SUCCESS) ? fd : -1;
    if (rc)
        return relay_client_call(rc, call, deadline, wait_tick, &w);

    up = apr_pcalloc(r->pool, sizeof(int) * (ch->nrelays + 1));
    for (i = 0; i < ch->nrelays; i++)
        up[i] = ch->relays[i] && relay_client_usable(ch->relays[i]);
    first = bosh_pick_node(apr_atomic_inc32(&ch->rr_cursor), up, ch->nrelays);
    if (first < 0)
        return RELAY_CALL_UNAVAILABLE;
    for (i = 0; i < ch->nrelays; i++) {
        int idx = (first + i) % ch->nrelays;
        if (!up[idx])
            continue;
        st = relay_client_call(ch->relays[idx], call, deadline, wait_tick, &w);
        if (st != RELAY_CALL_UNAVAILABLE)
            break;
    }
    return st;
}

static int handle_post(request_rec *r, bosh_server_conf *conf, bosh_child *ch)
{
    char *data, err[256], node[BOSH_NODE_ID_MAX];
    apr_size_t len;
    int too_big, rv;
    bosh_body b;
    const char *sid = NULL, *refuse;
    relay_client *rc = NULL;
    relay_call call;
    relay_call_status st;
    int64_t deadline;

    rv = read_body(r, (apr_size_t)conf->max_body, &data, &len, &too_big);
    if (rv != OK)
        return rv;
    if (too_big) {
        r->connection->keepalive = AP_CONN_CLOSE;   /* leave the rest unread */
        if (ch)
            apr_atomic_inc32(&ch->bad_requests);
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r,
                      "mod_bosh: request body larger than BoshMaxBodySize %d",
                      conf->max_body);
        return send_terminate(r, "bad-request");
    }

    memset(&b, 0, sizeof(b));
    if (bosh_body_parse(data, len, (size_t)conf->max_body, &b, err, sizeof(err)) != 0) {
        if (ch)
            apr_atomic_inc32(&ch->bad_requests);
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r,
                      "mod_bosh: invalid BOSH body: %s", err);
        bosh_body_free(&b);
        if (bosh_raw_has_ver(data, len))
            return send_terminate(r, "bad-request");
        return send_response(r, HTTP_BAD_REQUEST, "text/plain; charset=utf-8",
                             "bad request\n", 12, 0);
    }
    if (b.sid)
        sid = apr_pstrdup(r->pool, b.sid);
    refuse = (!sid && b.to && strcasecmp(b.to, conf->domain) != 0) ? "host-unknown" : NULL;
    bosh_body_free(&b);
    if (refuse) {
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r,
                      "mod_bosh: session for a domain we do not serve");
        return send_terminate(r, refuse);
    }
    if (!ch || ch->nrelays == 0) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r,
                      "mod_bosh: no BoshChatd configured");
        return send_terminate(r, "remote-connection-failed");
    }

    if (sid) {
        if (bosh_sid_node(sid, node, sizeof(node)) != 0 ||
            !(rc = find_node(ch, node))) {
            ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r,
                          "mod_bosh: sid %s names no known chatd node", sid);
            return send_terminate(r, "item-not-found");
        }
    }
    else {
        unsigned retry_after = 0;
        if (!conf->signin)
            return send_unavailable(r, ch, "sign-in is closed (BoshSignin off)", 0);
        if ((refuse = admit_new_session(r, ch, conf, &retry_after)) != NULL)
            return send_unavailable(r, ch, refuse, retry_after);
    }

    memset(&call, 0, sizeof(call));
    call.body = data;
    call.body_len = len;
    call.client_addr = r->useragent_ip;
    call.secure = ap_ssl_conn_is_ssl(r->connection);
    call.sid = sid;
    deadline = relay_now_ms() + (int64_t)(conf->max_wait + RELAY_SAFETY_S) * 1000;
    st = relay(r, ch, rc, &call, deadline);

    switch (st) {
    case RELAY_CALL_OK:
        rv = send_response(r, call.http_status ? call.http_status : HTTP_OK,
                           call.content_type ? call.content_type : BOSH_CONTENT_TYPE,
                           call.resp_body ? call.resp_body : "", call.resp_len,
                           call.retry_after);
        relay_call_clear(&call);
        return rv;
    case RELAY_CALL_ABORTED:
        /* The client is gone; nothing to write to. */
        r->connection->keepalive = AP_CONN_CLOSE;
        r->connection->aborted = 1;
        return OK;
    case RELAY_CALL_UNAVAILABLE:
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r,
                      "mod_bosh: no chatd node reachable%s%s",
                      rc ? " for node " : "", rc ? relay_client_node(rc) : "");
        return send_terminate(r, "remote-connection-failed");
    case RELAY_CALL_BROKEN:
    default:
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r,
                      "mod_bosh: relay broke before chatd answered%s",
                      sid ? "; answering 503 so the client resends its rid" : "");
        /* With a session, chatd buffered its answer: a 5xx makes the
         * client resend the same rid (XEP-0124 broken connections), which
         * recovers it. A terminate would throw the session away. */
        if (sid)
            return send_response(r, HTTP_SERVICE_UNAVAILABLE,
                                 "text/plain; charset=utf-8",
                                 "relay interrupted; resend\n", 26, 1);
        return send_terminate(r, "remote-connection-failed");
    }
}

int bosh_handler(request_rec *r)
{
    bosh_server_conf *conf;

    if (!r->handler || strcmp(r->handler, "bosh") != 0)
        return DECLINED;
    conf = bosh_conf(r->server);

    switch (r->method_number) {
    case M_OPTIONS:
        return handle_options(r, conf);
    case M_GET:
        add_cors(r, conf);
        return handle_get(r, conf);
    case M_POST:
        add_cors(r, conf);
        return handle_post(r, conf, bosh_child_state);
    default:
        r->allowed = (AP_METHOD_BIT << M_POST) | (AP_METHOD_BIT << M_GET) |
                     (AP_METHOD_BIT << M_OPTIONS);
        return HTTP_METHOD_NOT_ALLOWED;
    }
}
