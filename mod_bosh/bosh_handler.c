/*
 * bosh_handler.c - the `bosh` handler: one BOSH HTTP request in, one out.
 *
 * POST: read the body (capped), validate it (bosh_body_check_with, one
 * parser per thread) so bad input never crosses the relay, then
 *   - no sid (session creation): the worker budget (BoshMaxHeldShare, see
 *     check_worker_budget), sign-in gate in Redis (borrowed from the
 *     pool for one command, never held across the wait), pick a chatd node
 *     round-robin, relay;
 *   - sid: the node is the sid prefix; relay. No Redis on this path.
 * The worker thread is parked until chatd answers (relay_client.c); while
 * parked it notices a client that went away and a child that is stopping.
 * Every answer has a Content-Length and Cache-Control: no-store; it is
 * gzipped (whole, Content-Length of the compressed bytes, never chunked)
 * when Accept-Encoding allows and it is long enough, and a request body
 * sent with Content-Encoding: gzip is inflated within BoshMaxBodySize.
 *
 * GET answers a short info page, OPTIONS a CORS preflight.
 *
 * This endpoint lives at the site's own origin, so nothing a stranger
 * sends may make an answer that a browser runs as script there
 * (issue 13): every answer is `text/xml; charset=utf-8` whatever the
 * session's `content` attribute asked for (docs/conformance.md), and
 * every answer, errors included, carries a CSP that sandboxes it and
 * X-Content-Type-Options: nosniff (bosh_headers_filter).
 */
#include <poll.h>
#include <pthread.h>
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
#include "apr_uri.h"

#include "mod_bosh.h"
#include "bosh_gzip.h"
#include "redis_cap.h"
#include "../common/bosh_body.h"
#include "../common/admission.h"
#include "../common/relay_proto.h"

#define BOSH_CONTENT_TYPE   "text/xml; charset=utf-8"
#define TEXT_CONTENT_TYPE   "text/plain; charset=utf-8"
#define RETRY_AFTER_BASE    5     /* seconds */
#define RETRY_AFTER_SPREAD  10    /* + 0..10 s, so refused clients spread out */
#define RELAY_SAFETY_S      15    /* deadline beyond BoshMaxWait */
#define CORS_MAX_AGE        "86400"
/* No script, plugin, style or frame from an answer, ever, and no framing
 * of it: `sandbox` alone already gives the document an opaque origin
 * with scripts off, should a browser render one. */
#define BOSH_CSP "default-src 'none'; frame-ancestors 'none'; sandbox"
/* Request headers a BOSH client may send cross-origin: Strophe.js and
 * Converse.js send only Content-Type (text/xml is not a "simple" type). */
#define CORS_ALLOW_HEADERS  "Content-Type, Content-Encoding"

/* Headers this module sets that an administrator may also set with
 * mod_headers (`Header [always] set ...`). bosh_headers_filter runs after
 * mod_headers and keeps exactly one of each: the administrator's. */
static const char *const managed_headers[] = {
    "Access-Control-Allow-Origin", "Access-Control-Allow-Credentials",
    "Access-Control-Allow-Methods", "Access-Control-Allow-Headers",
    "Access-Control-Max-Age", "Cache-Control", NULL
};

typedef struct last_value {
    const char *v;
    int         n;
} last_value;

static int keep_last(void *rec, const char *key, const char *value)
{
    last_value *lv = rec;
    (void)key;
    lv->v = value;
    lv->n++;
    return 1;
}

/* Within one table, later values were added later (by mod_headers). */
static void dedupe(apr_table_t *t, const char *name)
{
    last_value lv = { NULL, 0 };
    apr_table_do(keep_last, &lv, t, name, NULL);
    if (lv.n > 1)
        apr_table_set(t, name, lv.v);
}

/* 1 if one of the values of `name` in t is exactly v. */
static int has_value(apr_table_t *t, const char *name, const char *v)
{
    const apr_array_header_t *arr = apr_table_elts(t);
    const apr_table_entry_t *e = (const apr_table_entry_t *)arr->elts;
    int i;

    for (i = 0; i < arr->nelts; i++)
        if (e[i].key && strcasecmp(e[i].key, name) == 0 && e[i].val &&
            strcmp(e[i].val, v) == 0)
            return 1;
    return 0;
}

/* The headers that keep an answer from running as script on the site's
 * origin. Applied last (after mod_headers), so a site-wide `Header set`
 * cannot take them away: our CSP is added next to any other one (a
 * browser enforces every CSP header it gets, so the sandbox holds), nosniff
 * is the only X-Content-Type-Options value. Referrer-Policy,
 * Cross-Origin-Resource-Policy and Cache-Control are ours only where
 * neither we nor the site set one (final: from the filter, once every
 * other header is known). */
static void security_headers(request_rec *r, int final)
{
    if (!has_value(r->headers_out, "Content-Security-Policy", BOSH_CSP) &&
        !has_value(r->err_headers_out, "Content-Security-Policy", BOSH_CSP))
        apr_table_addn(r->err_headers_out, "Content-Security-Policy", BOSH_CSP);
    apr_table_unset(r->headers_out, "X-Content-Type-Options");
    apr_table_setn(r->err_headers_out, "X-Content-Type-Options", "nosniff");
    if (!final)
        return;
    if (!apr_table_get(r->headers_out, "Referrer-Policy") &&
        !apr_table_get(r->err_headers_out, "Referrer-Policy"))
        apr_table_setn(r->err_headers_out, "Referrer-Policy", "no-referrer");
    /* httpd's own error answers (405 ...) have no Cache-Control of ours;
     * bosh-hostmeta sets its own max-age. */
    if (!apr_table_get(r->headers_out, "Cache-Control") &&
        !apr_table_get(r->err_headers_out, "Cache-Control"))
        apr_table_setn(r->err_headers_out, "Cache-Control", "no-store");
    /* Only no-cors loads (<script src>, <img>) from other sites are
     * refused; CORS requests (BoshAllowOrigin) are not affected. */
    if (!apr_table_get(r->headers_out, "Cross-Origin-Resource-Policy") &&
        !apr_table_get(r->err_headers_out, "Cross-Origin-Resource-Policy"))
        apr_table_setn(r->err_headers_out, "Cross-Origin-Resource-Policy", "same-origin");
}

apr_status_t bosh_headers_filter(ap_filter_t *f, apr_bucket_brigade *bb)
{
    request_rec *r = f->r;
    int i;

    for (i = 0; managed_headers[i]; i++) {
        const char *name = managed_headers[i];
        /* `Header always` writes err_headers_out, which httpd sends in
         * addition to headers_out: then ours must go. */
        if (apr_table_get(r->err_headers_out, name)) {
            apr_table_unset(r->headers_out, name);
            dedupe(r->err_headers_out, name);
        }
        else {
            dedupe(r->headers_out, name);
        }
    }
    security_headers(r, 1);
    ap_remove_output_filter(f);
    return ap_pass_brigade(f->next, bb);
}

void bosh_protect_answer(request_rec *r)
{
    ap_filter_t *f;

    for (f = r->output_filters; f; f = f->next)
        if (f->frec && f->frec->name && strcasecmp(f->frec->name, BOSH_HEADERS_FILTER) == 0)
            return;
    ap_add_output_filter(BOSH_HEADERS_FILTER, NULL, r, r->connection);
    /* The two that matter most in err_headers_out at once as well: they
     * then go out even on an answer that never passes the filter. */
    security_headers(r, 0);
}

/* What chatd said an answer is, reduced to the two types this endpoint
 * ever sends: its plain-text refusals stay text/plain, everything else
 * is BOSH XML. Never a type a browser would run (text/html, image/svg+xml,
 * application/xhtml+xml ...), whatever chatd or the client asked for. */
static const char *answer_type(const char *from_chatd)
{
    if (from_chatd && strncasecmp(from_chatd, "text/plain", 10) == 0)
        return TEXT_CONTENT_TYPE;
    return BOSH_CONTENT_TYPE;
}

/* One document parser per worker thread, kept from one body to the next
 * (bosh_body_parse_with: XML_ParserReset instead of creating and freeing
 * an expat parser, which was a third of a small body's parse; issue 15,
 * bench/exchange-cost). A thread's parser is freed when the thread ends. */
static pthread_key_t parser_key;
static pthread_once_t parser_once = PTHREAD_ONCE_INIT;
static int parser_key_ok;

static void parser_destroy(void *p)
{
    xs_parser_free(p);
}

static void parser_key_init(void)
{
    parser_key_ok = pthread_key_create(&parser_key, parser_destroy) == 0;
}

/* This thread's parser, or NULL (then bosh_body_parse_with makes one for
 * the body, as before). */
static xs_parser *thread_parser(void)
{
    xs_parser *p;

    pthread_once(&parser_once, parser_key_init);
    if (!parser_key_ok)
        return NULL;
    p = pthread_getspecific(parser_key);
    if (!p && (p = xs_doc_parser_new()) != NULL &&
        pthread_setspecific(parser_key, p) != 0) {
        xs_parser_free(p);
        p = NULL;
    }
    return p;
}

/* Write a complete response: status, type, length, body. The body is
 * gzipped when the client accepts it and it is worth it. */
static int send_response(request_rec *r, int status, const char *ctype,
                         const char *body, apr_size_t len, unsigned retry_after)
{
    char *gz;
    apr_size_t gz_len;

    r->status = status;
    bosh_protect_answer(r);
    ap_set_content_type(r, apr_pstrdup(r->pool, ctype));
    apr_table_setn(r->headers_out, "Cache-Control", "no-store");
    apr_table_mergen(r->headers_out, "Vary", "Accept-Encoding");
    if (retry_after)
        apr_table_setn(r->headers_out, "Retry-After",
                       apr_psprintf(r->pool, "%u", retry_after));
    if (len >= BOSH_GZIP_MIN &&
        bosh_accepts_gzip(apr_table_get(r->headers_in, "Accept-Encoding")) &&
        bosh_gzip(r->pool, body, len, &gz, &gz_len) == 0 && gz_len < len) {
        apr_table_setn(r->headers_out, "Content-Encoding", "gzip");
        body = gz;
        len = gz_len;
    }
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
 * retry_after 0: pick a jittered one here. quiet: no log line per request
 * (the caller logs a summary). */
static int send_unavailable_q(request_rec *r, bosh_child *ch, const char *why,
                              unsigned retry_after, int quiet)
{
    const char *body = apr_psprintf(r->pool, "%s\n", why);
    if (ch)
        apr_atomic_inc32(&ch->sessions_refused);
    if (!quiet)
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r,
                      "mod_bosh: session creation refused: %s", why);
    return send_response(r, HTTP_SERVICE_UNAVAILABLE, "text/plain; charset=utf-8",
                         body, strlen(body),
                         retry_after ? retry_after : jittered_retry_after());
}

static int send_unavailable(request_rec *r, bosh_child *ch, const char *why,
                            unsigned retry_after)
{
    return send_unavailable_q(r, ch, why, retry_after, 0);
}

/* CORS for allowed origins only (BoshAllowOrigin). An origin listed by
 * name is echoed with Access-Control-Allow-Credentials: true; one allowed
 * only through "*" gets "*" and never credentials (browsers refuse the
 * pair, and a wildcard must not open cookie-bearing requests). Returns 1
 * if the origin is allowed. */
static int add_cors(request_rec *r, bosh_server_conf *conf)
{
    const char *origin = apr_table_get(r->headers_in, "Origin");
    const char *const *list = (const char *const *)conf->allow_origins->elts;
    int i, star = 0;

    apr_table_mergen(r->headers_out, "Vary", "Origin");
    if (!origin || !*origin)
        return 0;
    for (i = 0; i < conf->allow_origins->nelts; i++) {
        if (strcmp(list[i], "*") == 0)
            star = 1;
        else if (bosh_origin_allowed(origin, &list[i], 1)) {
            apr_table_setn(r->headers_out, "Access-Control-Allow-Origin", origin);
            apr_table_setn(r->headers_out, "Access-Control-Allow-Credentials", "true");
            return 1;
        }
    }
    if (!star)
        return 0;
    apr_table_setn(r->headers_out, "Access-Control-Allow-Origin", "*");
    return 1;
}

static int handle_options(request_rec *r, bosh_server_conf *conf)
{
    if (add_cors(r, conf)) {
        apr_table_setn(r->headers_out, "Access-Control-Allow-Methods",
                       "POST, GET, OPTIONS");
        apr_table_setn(r->headers_out, "Access-Control-Allow-Headers",
                       CORS_ALLOW_HEADERS);
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
 * past max bytes. Returns OK or an HTTP error status.
 * The buffer is sized to what arrives (Content-Length, or doubled as a
 * chunked body grows), never to BoshMaxBodySize up front: it lives in the
 * request pool for as long as the request is held, and with thousands of
 * held requests a 64 KiB buffer each was most of httpd's memory per
 * session (docs/benchmarks.md). */
static int read_body(request_rec *r, apr_size_t max, char **data,
                     apr_size_t *len, int *too_big)
{
    apr_size_t total = 0, cap;
    long n = 0;
    char *buf;
    int rv;

    *data = NULL;
    *len = 0;
    *too_big = 0;
    if ((rv = ap_setup_client_block(r, REQUEST_CHUNKED_DECHUNK)) != OK)
        return rv;
    /* Even when too big, what fits is read (and returned): it tells
     * whether the client sent `ver` (legacy clients get HTTP 400). */
    if (r->remaining > (apr_off_t)max)
        *too_big = 1;
    if (r->remaining > 0 && r->remaining <= (apr_off_t)max)
        cap = (apr_size_t)r->remaining + 2;   /* +1 to see EOF, +1 for NUL */
    else
        cap = max + 2 < 4096 ? max + 2 : 4096;
    buf = apr_palloc(r->pool, cap);
    if (ap_should_client_block(r)) {
        while (total <= max) {
            if (total + 1 >= cap) {             /* chunked body outgrew it */
                apr_size_t bigger = cap * 2 < max + 2 ? cap * 2 : max + 2;
                char *grown = apr_palloc(r->pool, bigger);
                memcpy(grown, buf, total);
                buf = grown;
                cap = bigger;
            }
            n = ap_get_client_block(r, buf + total, cap - 1 - total);
            if (n <= 0)
                break;
            total += (apr_size_t)n;
        }
        if (total > max)
            *too_big = 1;
        else if (n < 0)
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
 * to admit, else the reason for a 503 (*retry_after set, jittered) and
 * *counter, the status-page counter to bump. */
static const char *admit_new_session(request_rec *r, bosh_child *ch,
                                     bosh_server_conf *conf, unsigned *retry_after,
                                     apr_uint32_t **counter)
{
    redisContext *c;
    redis_pool_status st;
    admission_config cfg;
    admission_result res;
    char err[256];
    int rc, broken;

    *retry_after = 0;
    *counter = &ch->refused_busy;
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
    /* -READONLY / -LOADING: this server is no longer (or not yet) the
     * master (failover); the connection must not be reused, the next one
     * asks the sentinels (redis_pool.c). */
    broken = c->err != 0 || (rc != 0 && redis_error_means_failover(err));
    redis_pool_release(ch->redis, c, broken);

    if (rc != 0) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r,
                      "mod_bosh: Redis %s: admission failed: %s",
                      redis_pool_address(ch->redis), err);
        return "sign-in is unavailable (Redis error); try again shortly";
    }
    if (res.verdict == ADMIT_OK)
        return NULL;
    *counter = res.verdict == ADMIT_CLOSED ? &ch->refused_gate
             : res.verdict == ADMIT_RATE ? &ch->refused_rate : &ch->refused_addr;
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
    /* Only a session's requests count as held (BoshMaxHeldShare): chatd
     * answers a creation at once, it is as short as a page of the site,
     * and counting a burst of them would refuse sign-ins that cost no
     * worker for long. */
    if (rc) {
        bosh_held_enter();
        st = relay_client_call(rc, call, deadline, wait_tick, &w);
        bosh_held_leave();
        return st;
    }

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

/*
 * The worker budget (worker_budget.h, BoshMaxHeldShare) for a NEW session.
 * Returns NULL to go on, else the reason for the 503.
 *
 * Only new sessions are refused. A request of an existing session is
 * always relayed and held as before: with hold=1 (chatd's bosh_max_hold)
 * its arrival makes chatd answer that session's previous held request,
 * so existing sessions swap one held request for another and never grow
 * the count; only a new session adds one. Refusing or cutting short an
 * existing session's poll would not give a worker back either: the
 * client polls again at once (an empty answer) or retries (a 5xx), and a
 * session in that loop keeps a worker busy more of the time than one
 * held request does, while its user sees errors.
 *
 * The server-wide figure is the highest of now and the last two seconds
 * (redis_cap.c): a message to a big room answers every held request at
 * once, and for the few milliseconds until the clients poll again the
 * count is low although every one of those sessions still needs its
 * worker.
 */
static const char *check_worker_budget(request_rec *r, bosh_child *ch)
{
    bosh_held_counts h;
    unsigned n;

    bosh_held_get(&h);
    switch (worker_budget_admit(&bosh_budget, h.shared ? (long)h.server_peak : -1,
                                (long)h.child)) {
    case WB_ADMIT:
        return NULL;
    case WB_FULL_SERVER:
    case WB_FULL_CHILD:
    default:
        break;
    }
    apr_atomic_inc32(&ch->refused_workers);
    if ((n = bosh_held_refused()) != 0)
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, r->server,
                     "mod_bosh: BOSH00400: %u new BOSH session(s) refused since "
                     "the last report: held requests fill BoshMaxHeldShare %d%% "
                     "of httpd's workers (%u held of %d allowed server-wide, %d "
                     "per child); the rest stay for the site. Raise "
                     "MaxRequestWorkers to carry more chat users "
                     "(httpd-conf/bosh-mpm.conf)", n, bosh_budget.share,
                     h.server_peak, bosh_budget.max_held,
                     bosh_budget.child_max_held);
    return apr_psprintf(r->pool, "chat is full on this server: BoshMaxHeldShare "
                        "%d%% of its %d workers already hold chat requests and "
                        "the rest are kept for the site; try again shortly",
                        bosh_budget.share, bosh_budget.workers);
}

/* A 200 `<body ...>` start tag that is not a terminate: a new session. */
static int is_creation_answer(const relay_call *call)
{
    const char *gt;
    if ((call->http_status && call->http_status != HTTP_OK) || !call->resp_body ||
        call->resp_len < 7 || strncmp(call->resp_body, "<body ", 6) != 0)
        return 0;
    gt = memchr(call->resp_body, '>', call->resp_len);
    return gt && !memmem(call->resp_body, (size_t)(gt - call->resp_body),
                         "type='terminate'", 16);
}

/* BoshSeeOtherURI URL|none: where set, this endpoint relays nothing and
 * answers every POST with terminate `see-other-uri` (XEP-0124
 * §errorstatus-terminal), the operator's way to move clients to another
 * connection manager. `none` turns an inherited one off for a location.
 * The URL is stored XML-escaped, ready for the <uri/> element. */
const char *bosh_set_see_other_uri(cmd_parms *cmd, void *dconf, const char *url)
{
    apr_uri_t u;

    if (strcasecmp(url, "none") == 0) {
        ((bosh_dir_conf *)dconf)->see_other_uri = "";
        return NULL;
    }
    if (apr_uri_parse(cmd->pool, url, &u) != APR_SUCCESS || !u.scheme ||
        (strcasecmp(u.scheme, "http") != 0 && strcasecmp(u.scheme, "https") != 0) ||
        !u.hostname || !*u.hostname)
        return apr_psprintf(cmd->pool, "BoshSeeOtherURI: '%s' is not an absolute "
                            "http(s) URL (or none)", url);
    ((bosh_dir_conf *)dconf)->see_other_uri = ap_escape_html(cmd->pool, url);
    return NULL;
}

/* The see-other-uri answer. XEP-0124 has no HTTP code for it, so legacy
 * clients (no `ver`) get the same 200 body. The request body was read
 * (within BoshMaxBodySize) so the connection stays usable. */
static int send_see_other(request_rec *r, const char *uri, int too_big)
{
    const char *body = apr_psprintf(r->pool,
        "<body type='terminate' condition='see-other-uri' xmlns='" BOSH_NS "'>"
        "<uri>%s</uri></body>", uri);
    if (too_big)
        r->connection->keepalive = AP_CONN_CLOSE;   /* leave the rest unread */
    ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r,
                  "mod_bosh: BoshSeeOtherURI: sending the client to %s", uri);
    return send_response(r, HTTP_OK, BOSH_CONTENT_TYPE, body, strlen(body), 0);
}

/* bosh_request_confidential (mod_bosh.h). The proxy check uses the TCP
 * peer (c->client_addr), which mod_remoteip's header mode leaves alone, so
 * it works with or without mod_remoteip. Of a list of X-Forwarded-Proto
 * values the last counts: it is the one our trusted proxy added. */
int bosh_request_confidential(request_rec *r, const bosh_server_conf *conf)
{
    const char *xfp, *last;
    size_t n;
    int i, trusted = 0;
    if (ap_ssl_conn_is_ssl(r->connection))
        return 1;
    if (!conf->trusted_proxies || !conf->trusted_proxies->nelts ||
        !r->connection->client_addr)
        return 0;
    for (i = 0; i < conf->trusted_proxies->nelts && !trusted; i++)
        trusted = apr_ipsubnet_test(((apr_ipsubnet_t **)conf->trusted_proxies->elts)[i],
                                    r->connection->client_addr);
    if (!trusted || !(xfp = apr_table_get(r->headers_in, "X-Forwarded-Proto")))
        return 0;
    last = strrchr(xfp, ',');
    last = last ? last + 1 : xfp;
    while (*last == ' ' || *last == '\t') last++;
    n = strcspn(last, " \t");
    return n == 5 && strncasecmp(last, "https", 5) == 0 && last[n + strspn(last + n, " \t")] == '\0';
}

static int handle_post(request_rec *r, bosh_server_conf *conf, bosh_child *ch)
{
    bosh_dir_conf *dc = ap_get_module_config(r->per_dir_config, &bosh_module);
    char *data, err[256], node[BOSH_NODE_ID_MAX];
    apr_size_t len;
    int too_big, rv;
    bosh_body b;
    const char *sid = NULL, *refuse;
    relay_client *rc = NULL;
    relay_call call;
    relay_call_status st;
    int64_t deadline;
    const char *cenc;

    rv = read_body(r, (apr_size_t)conf->max_body, &data, &len, &too_big);
    if (rv != OK)
        return rv;
    if (dc && dc->see_other_uri && *dc->see_other_uri)
        return send_see_other(r, dc->see_other_uri, too_big);
    if (!too_big && (cenc = apr_table_get(r->headers_in, "Content-Encoding")) &&
        strcasecmp(cenc, "identity") != 0) {
        /* We advertise accept='gzip' (XEP-0124 §session-response). */
        bosh_gunzip_status gs = BOSH_GUNZIP_BAD;
        if (strcasecmp(cenc, "gzip") == 0 || strcasecmp(cenc, "x-gzip") == 0)
            gs = bosh_gunzip(r->pool, data, len, (size_t)conf->max_body, &data, &len);
        if (gs == BOSH_GUNZIP_TOO_BIG) {
            too_big = 1;
            len = 0;
        }
        else if (gs != BOSH_GUNZIP_OK) {
            if (ch)
                apr_atomic_inc32(&ch->bad_requests);
            ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r,
                          "mod_bosh: request body with Content-Encoding %s "
                          "that does not inflate", cenc);
            return send_terminate(r, "bad-request");
        }
    }
    if (too_big) {
        r->connection->keepalive = AP_CONN_CLOSE;   /* leave the rest unread */
        if (ch)
            apr_atomic_inc32(&ch->bad_requests);
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r,
                      "mod_bosh: request body larger than BoshMaxBodySize %d",
                      conf->max_body);
        /* Legacy (no `ver` in what we read): HTTP 400, §errorstatus-http. */
        if (len && !bosh_raw_has_ver(data, len))
            return send_response(r, HTTP_BAD_REQUEST, "text/plain; charset=utf-8",
                                 "request body too large\n", 23, 0);
        return send_terminate(r, "bad-request");
    }

    memset(&b, 0, sizeof(b));
    /* Validate only: mod_bosh reads sid and to; chatd builds the tree. */
    if (bosh_body_check_with(thread_parser(), data, len, (size_t)conf->max_body, &b,
                             err, sizeof(err)) != 0) {
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
        apr_uint32_t *counter = NULL;
        if (!conf->signin) {
            apr_atomic_inc32(&ch->refused_gate);
            return send_unavailable(r, ch, "sign-in is closed (BoshSignin off)", 0);
        }
        if ((refuse = check_worker_budget(r, ch)) != NULL)
            return send_unavailable_q(r, ch, refuse, 0, 1);
        if ((refuse = admit_new_session(r, ch, conf, &retry_after, &counter)) != NULL) {
            apr_atomic_inc32(counter);
            return send_unavailable(r, ch, refuse, retry_after);
        }
        apr_atomic_inc32(&ch->sessions_admitted);
    }

    memset(&call, 0, sizeof(call));
    call.body = data;
    call.body_len = len;
    call.client_addr = r->useragent_ip;
    call.secure = ap_ssl_conn_is_ssl(r->connection);
    call.confidential = bosh_request_confidential(r, conf);
    call.sid = sid;
    bosh_vouch(r, &call);       /* RT_AUTH_USER, BoshAuthFromApache On only */
    deadline = relay_now_ms() + (int64_t)(conf->max_wait + RELAY_SAFETY_S) * 1000;
    st = relay(r, ch, rc, &call, deadline);

    switch (st) {
    case RELAY_CALL_OK:
        if (!sid && call.http_status == HTTP_SERVICE_UNAVAILABLE) {
            /* chatd refused the creation (its per-address live-session cap) */
            apr_atomic_inc32(&ch->refused_chatd);
            apr_atomic_inc32(&ch->sessions_refused);
        }
        if (call.http_status == RELAY_STATUS_CLOSE) {
            /* XEP-0124 §security: a session created over HTTPS refuses
             * plaintext requests. chatd kept the session and did not
             * consume the rid; the client gets no answer at all. */
            ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r,
                          "mod_bosh: plaintext request for a session created "
                          "over HTTPS; connection closed");
            relay_call_clear(&call);
            r->connection->keepalive = AP_CONN_CLOSE;
            r->connection->aborted = 1;
            return OK;
        }
        if (!sid && is_creation_answer(&call)) {
            /* mod_bosh, not chatd, decompresses requests, so mod_bosh
             * adds accept='gzip' to the creation answer. */
            static const char tag[] = "<body accept='gzip' ";
            char *with = apr_palloc(r->pool, call.resp_len + sizeof(tag));
            memcpy(with, tag, sizeof(tag) - 1);
            memcpy(with + sizeof(tag) - 1, call.resp_body + 6, call.resp_len - 6);
            rv = send_response(r, HTTP_OK,
                               answer_type(call.content_type), with,
                               call.resp_len - 6 + sizeof(tag) - 1,
                               call.retry_after);
            relay_call_clear(&call);
            return rv;
        }
        rv = send_response(r, call.http_status ? call.http_status : HTTP_OK,
                           answer_type(call.content_type),
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
        /* A new session is retryable: 503 with Retry-After, at once, like
         * any other refused creation (issue 14: a stopped node must not
         * park the worker). */
        if (!sid)
            return send_unavailable(r, ch, "no chat server is answering right now", 0);
        if (rc) {
            /* Out of service after a missed PONG: chatd is stopped or
             * unreachable, not necessarily gone, and may still hold this
             * session. A 503 makes the client resend its rid later
             * (XEP-0124 broken connections) instead of ending a session
             * that may well survive; if chatd did die, the resend gets
             * item-not-found from the restarted one. */
            relay_client_stats rs;
            relay_client_get_stats(rc, &rs);
            if (rs.unhealthy)
                return send_response(r, HTTP_SERVICE_UNAVAILABLE,
                                     "text/plain; charset=utf-8",
                                     "chat server not answering; resend\n", 34,
                                     jittered_retry_after());
        }
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
        return send_unavailable(r, ch, "the chat server stopped answering", 0);
    }
}

/* Session creation for the prebind handler (bosh_sso.c): the same sign-in
 * switch, admission and node choice as a client's creation request.
 * Returns NULL once relayed (*st says how it went), else the reason for a
 * 503 (*retry_after set; 0 = pick one). */
const char *bosh_create_session_for(request_rec *r, relay_call *call,
                                    relay_call_status *st, unsigned *retry_after)
{
    bosh_server_conf *conf = bosh_conf(r->server);
    bosh_child *ch = bosh_child_state;
    apr_uint32_t *counter = NULL;
    const char *refuse;

    *retry_after = 0;
    if (!ch || ch->nrelays == 0)
        return "no BoshChatd configured";
    if (!conf->signin) {
        apr_atomic_inc32(&ch->refused_gate);
        apr_atomic_inc32(&ch->sessions_refused);
        return "sign-in is closed (BoshSignin off)";
    }
    if ((refuse = check_worker_budget(r, ch)) != NULL) {
        apr_atomic_inc32(&ch->sessions_refused);
        return refuse;
    }
    if ((refuse = admit_new_session(r, ch, conf, retry_after, &counter)) != NULL) {
        apr_atomic_inc32(counter);
        apr_atomic_inc32(&ch->sessions_refused);
        return refuse;
    }
    apr_atomic_inc32(&ch->sessions_admitted);
    *st = relay(r, ch, NULL, call,
                relay_now_ms() + (int64_t)(conf->max_wait + RELAY_SAFETY_S) * 1000);
    return NULL;
}

int bosh_handler(request_rec *r)
{
    bosh_server_conf *conf;

    if (!r->handler || strcmp(r->handler, "bosh") != 0)
        return DECLINED;
    conf = bosh_conf(r->server);
    bosh_protect_answer(r);     /* the 405 below and httpd's errors too */

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
        /* The 405's Allow header comes from allowed_methods. */
        ap_allow_methods(r, REPLACE_ALLOW, "POST", "GET", "OPTIONS", NULL);
        return HTTP_METHOD_NOT_ALLOWED;
    }
}
