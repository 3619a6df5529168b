/*
 * bosh_sso.c - single sign-on: the site's own login signs people into chat
 * (issue 8).
 *
 * Why here and not in chatd: only httpd knows who its auth modules
 * authenticated (r->user). Where a location says `BoshAuthFromApache On`,
 * every relayed request carries that identity (RT_AUTH_USER, mapped to a
 * bare JID with `BoshAuthJID`) and chatd offers SASL EXTERNAL for exactly
 * it. Nothing the client sends (headers, body attributes) can set it: the
 * only input is r->user, and chatd believes the field only because it came
 * over the relay socket. chatd fixes the identity at session creation and
 * refuses later requests of the session that carry another one or none
 * (common/RELAY.md, "Vouched identities").
 *
 * The `bosh-prebind` handler answers {jid, sid, rid} for Converse.js's
 * prebind_url: chatd creates the session, runs EXTERNAL, the restart and
 * the bind itself (RT_PREBIND), and the page attaches with that rid.
 */
#include <string.h>

#include "httpd.h"
#include "http_config.h"
#include "http_core.h"
#include "http_log.h"
#include "http_protocol.h"
#include "http_request.h"
#include "http_ssl.h"
#include "apr_strings.h"
#include "apr_general.h"

#include "mod_bosh.h"
#include "bosh_auth.h"

#define JSON_TYPE "application/json"

/* ---- per-directory configuration ---- */

void *bosh_create_dir_config(apr_pool_t *p, char *dir)
{
    bosh_dir_conf *c = apr_pcalloc(p, sizeof(*c));
    (void)dir;
    c->auth_from_apache = BOSH_UNSET;
    return c;
}

void *bosh_merge_dir_config(apr_pool_t *p, void *basev, void *addv)
{
    bosh_dir_conf *base = basev, *add = addv;
    bosh_dir_conf *m = apr_pcalloc(p, sizeof(*m));

    m->auth_from_apache = add->auth_from_apache != BOSH_UNSET ? add->auth_from_apache
                                                              : base->auth_from_apache;
    m->auth_jid = add->auth_jid ? add->auth_jid : base->auth_jid;
    m->see_other_uri = add->see_other_uri ? add->see_other_uri : base->see_other_uri;
    if (add->name_set) {
        m->name_set = 1;
        m->name_source = add->name_source;
        m->name_key = add->name_key;
    }
    else {
        m->name_set = base->name_set;
        m->name_source = base->name_source;
        m->name_key = base->name_key;
    }
    return m;
}

const char *bosh_set_auth_from_apache(cmd_parms *cmd, void *dconf, int on)
{
    (void)cmd;
    ((bosh_dir_conf *)dconf)->auth_from_apache = on ? 1 : 0;
    return NULL;
}

const char *bosh_set_auth_jid(cmd_parms *cmd, void *dconf, const char *tmpl)
{
    if (!bosh_auth_template_ok(tmpl))
        return apr_psprintf(cmd->pool, "BoshAuthJID: '%s' must contain %%u exactly "
                            "once (%%%% for a literal %%), e.g. %%u@example.org", tmpl);
    ((bosh_dir_conf *)dconf)->auth_jid = tmpl;
    return NULL;
}

const char *bosh_set_auth_display_name(cmd_parms *cmd, void *dconf, const char *spec)
{
    bosh_dir_conf *c = dconf;
    const char *key;
    bosh_name_source src;

    if (strcasecmp(spec, "none") == 0) {
        c->name_set = 1;
        c->name_source = BOSH_NAME_NONE;
        c->name_key = NULL;
        return NULL;
    }
    src = bosh_auth_name_source(spec, &key);
    if (src == BOSH_NAME_NONE)
        return apr_psprintf(cmd->pool, "BoshAuthDisplayName: expected header:NAME, "
                            "env:NAME or none, got '%s'", spec);
    c->name_set = 1;
    c->name_source = src;
    c->name_key = key;
    return NULL;
}

/* ---- vouching ---- */

int bosh_vouch(request_rec *r, relay_call *call)
{
    bosh_dir_conf *dc = ap_get_module_config(r->per_dir_config, &bosh_module);
    const char *tmpl, *v = NULL;
    char jid[BOSH_AUTH_JID_MAX], name[BOSH_AUTH_NAME_MAX];

    call->auth_user = NULL;
    call->display_name = NULL;
    if (!dc || dc->auth_from_apache != 1 || !r->user || !*r->user)
        return 0;
    tmpl = dc->auth_jid ? dc->auth_jid : "%u";
    if (bosh_auth_map_jid(tmpl, r->user, jid, sizeof(jid)) != 0) {
        ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r,
                      "mod_bosh: authenticated user '%s' does not make a JID with "
                      "BoshAuthJID %s; not vouched for", r->user, tmpl);
        return 0;
    }
    call->auth_user = apr_pstrdup(r->pool, jid);
    if (dc->name_source == BOSH_NAME_HEADER)
        v = apr_table_get(r->headers_in, dc->name_key);
    else if (dc->name_source == BOSH_NAME_ENV)
        v = apr_table_get(r->subprocess_env, dc->name_key);
    if (v && bosh_auth_clean_name(v, name, sizeof(name)) > 0)
        call->display_name = apr_pstrdup(r->pool, name);
    return 1;
}

/* ---- prebind ---- */

static int send_json(request_rec *r, int status, const char *json, apr_size_t len,
                     unsigned retry_after)
{
    r->status = status;
    ap_set_content_type(r, JSON_TYPE);
    apr_table_setn(r->headers_out, "Cache-Control", "no-store");
    if (retry_after)
        apr_table_setn(r->headers_out, "Retry-After",
                       apr_psprintf(r->pool, "%u", retry_after));
    ap_set_content_length(r, len);
    if (!r->header_only && len)
        ap_rwrite(json, (int)len, r);
    ap_rflush(r);
    return OK;
}

static int send_json_error(request_rec *r, int status, const char *why,
                           unsigned retry_after)
{
    const char *json = apr_psprintf(r->pool, "{\"error\":\"%s\"}\n",
                                    ap_escape_quotes(r->pool, why));
    return send_json(r, status, json, strlen(json), retry_after);
}

/* 1 if Origin is listed by name in BoshAllowOrigin ("*" never counts:
 * a prebind signs the visitor in, so only origins the site named). */
static int origin_listed(request_rec *r, const char *origin)
{
    bosh_server_conf *conf = bosh_conf(r->server);
    const char *const *list = (const char *const *)conf->allow_origins->elts;
    int i;

    if (!origin)
        return 0;
    for (i = 0; i < conf->allow_origins->nelts; i++)
        if (strcmp(list[i], "*") != 0 && bosh_origin_allowed(origin, &list[i], 1))
            return 1;
    return 0;
}

/* Issue 13: a prebind signs the visitor's browser into chat with the
 * site's login, so another site must not be able to make that browser
 * ask for one (bosh_prebind_policy, bosh_route.h). OK, or the HTTP error
 * already answered. */
static int refuse_cross_site(request_rec *r)
{
    const char *site = apr_table_get(r->headers_in, "Sec-Fetch-Site");
    const char *origin = apr_table_get(r->headers_in, "Origin");
    const char *why;
    int listed = origin_listed(r, origin);
    int self = origin && r->hostname &&
               bosh_origin_is_self(origin, ap_http_scheme(r), r->hostname,
                                   ap_get_server_port(r));
    int status = bosh_prebind_policy(r->method_number == M_POST, site, origin,
                                     self, listed, &why);

    apr_table_mergen(r->headers_out, "Vary", "Origin");
    if (status == 0) {
        if (listed && !self) {
            /* A listed origin reads the answer with credentials, as it
             * may use /http-bind (bosh_handler.c add_cors). */
            apr_table_setn(r->headers_out, "Access-Control-Allow-Origin", origin);
            apr_table_setn(r->headers_out, "Access-Control-Allow-Credentials", "true");
        }
        return OK;
    }
    /* INFO, like every other refusal: the rate is the requester's. */
    ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r,
                  "mod_bosh: BOSH00101: prebind refused (%d): %s "
                  "(method %s, Sec-Fetch-Site %s, Origin %s)", status, why,
                  r->method, site ? site : "-", origin ? origin : "-");
    if (status == HTTP_METHOD_NOT_ALLOWED) {
        r->allowed = AP_METHOD_BIT << M_POST;
        ap_allow_methods(r, REPLACE_ALLOW, "POST", NULL);
        return HTTP_METHOD_NOT_ALLOWED;
    }
    if (ap_discard_request_body(r) != OK)
        r->connection->keepalive = AP_CONN_CLOSE;
    return send_json_error(r, HTTP_FORBIDDEN, why, 0);
}

/* A session-creation body, as a client would send it. rid: random, well
 * below 2^53 so that JavaScript counts on from it exactly. */
static const char *creation_body(request_rec *r, bosh_server_conf *conf)
{
    apr_uint32_t rnd = 0;

    apr_generate_random_bytes((unsigned char *)&rnd, sizeof(rnd));
    return apr_psprintf(r->pool,
        "<body xmlns='http://jabber.org/protocol/httpbind' xmlns:xmpp='urn:xmpp:xbosh'"
        " content='text/xml; charset=utf-8' hold='1' rid='%u' to=\"%s\" ver='1.6'"
        " wait='%d' xmpp:version='1.0'/>",
        (unsigned)(rnd % 1000000000u) + 1000u,
        ap_escape_html(r->pool, conf->domain), conf->max_wait);
}

int bosh_prebind_handler(request_rec *r)
{
    bosh_server_conf *conf;
    relay_call call;
    relay_call_status st = RELAY_CALL_UNAVAILABLE;
    const char *refuse;
    unsigned retry_after = 0;
    int rv;

    if (!r->handler || strcmp(r->handler, "bosh-prebind") != 0)
        return DECLINED;
    bosh_protect_answer(r);
    if (r->method_number != M_GET && r->method_number != M_POST) {
        r->allowed = AP_METHOD_BIT << M_POST;
        ap_allow_methods(r, REPLACE_ALLOW, "POST", NULL);
        return HTTP_METHOD_NOT_ALLOWED;
    }
    if ((rv = refuse_cross_site(r)) != OK)
        return rv;
    if ((rv = ap_discard_request_body(r)) != OK)
        return rv;
    conf = bosh_conf(r->server);

    memset(&call, 0, sizeof(call));
    if (!bosh_vouch(r, &call)) {
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r,
                      "mod_bosh: prebind without a vouched user (needs an auth "
                      "module, Require valid-user and BoshAuthFromApache On)");
        return send_json_error(r, HTTP_FORBIDDEN, "no authenticated user to sign in", 0);
    }
    call.body = creation_body(r, conf);
    call.body_len = strlen(call.body);
    call.client_addr = r->useragent_ip;
    call.secure = ap_ssl_conn_is_ssl(r->connection);
    call.confidential = bosh_request_confidential(r, conf);
    call.prebind = 1;

    refuse = bosh_create_session_for(r, &call, &st, &retry_after);
    if (refuse) {
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r,
                      "mod_bosh: prebind for %s refused: %s", call.auth_user, refuse);
        return send_json_error(r, HTTP_SERVICE_UNAVAILABLE, refuse,
                               retry_after ? retry_after : 5);
    }
    switch (st) {
    case RELAY_CALL_OK:
        if (!call.content_type || strncmp(call.content_type, JSON_TYPE,
                                          sizeof(JSON_TYPE) - 1) != 0) {
            /* A refusal before the session existed (BOSH or text body),
             * or a chatd that does not know RT_PREBIND. */
            int status = call.http_status == HTTP_SERVICE_UNAVAILABLE
                         ? HTTP_SERVICE_UNAVAILABLE : HTTP_BAD_GATEWAY;
            ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r,
                          "mod_bosh: prebind for %s: chatd answered %d %s, not JSON",
                          call.auth_user, call.http_status ? call.http_status : 200,
                          call.content_type ? call.content_type : "(no type)");
            rv = send_json_error(r, status, "chat server refused the session",
                                 call.retry_after);
        }
        else {
            rv = send_json(r, call.http_status ? call.http_status : HTTP_OK,
                           call.resp_body ? call.resp_body : "", call.resp_len,
                           call.retry_after);
        }
        relay_call_clear(&call);
        return rv;
    case RELAY_CALL_ABORTED:
        r->connection->keepalive = AP_CONN_CLOSE;
        r->connection->aborted = 1;
        return OK;
    case RELAY_CALL_UNAVAILABLE:
    case RELAY_CALL_BROKEN:
    default:
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r,
                      "mod_bosh: prebind for %s: chatd not reachable", call.auth_user);
        return send_json_error(r, HTTP_SERVICE_UNAVAILABLE, "chat server unreachable", 5);
    }
}
