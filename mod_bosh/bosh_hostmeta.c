/*
 * bosh_hostmeta.c - the `bosh-hostmeta` handler: XEP-0156 discovery.
 *
 * A web client that knows only the user's domain (Converse.js with
 * discover_connection_methods) fetches https://<domain>/.well-known/host-meta
 * (XRD, XML) or /.well-known/host-meta.json (JRD) and looks for a Link
 * with rel urn:xmpp:alt-connections:xbosh (BOSH) or
 * urn:xmpp:alt-connections:websocket (RFC 7395). We serve both from the
 * BoshHostMetaURL and BoshHostMetaWebSocketURL directives; the path
 * decides which format. The
 * document is public, so any origin may read it (Access-Control-Allow-Origin
 * *), as XEP-0156 §3 asks.
 *
 *   <LocationMatch "^/\.well-known/host-meta(\.json)?$">
 *       SetHandler bosh-hostmeta
 *   </LocationMatch>
 *   BoshHostMetaURL https://chat.example.com/http-bind
 *   BoshHostMetaWebSocketURL wss://chat.example.com/xmpp-websocket
 */
#include <string.h>

#include "httpd.h"
#include "http_config.h"
#include "http_log.h"
#include "http_protocol.h"
#include "http_request.h"
#include "apr_strings.h"

#include "mod_bosh.h"

#define XRD_NS     "http://docs.oasis-open.org/ns/xri/xrd-1.0"
#define XBOSH_REL  "urn:xmpp:alt-connections:xbosh"
#define WS_REL     "urn:xmpp:alt-connections:websocket"

/* URLs are checked at configuration time (no quotes, controls, spaces),
 * so they need no escaping in either format; escape anyway for XML. */
static const char *xrd(request_rec *r, apr_array_header_t *urls,
                       apr_array_header_t *ws_urls)
{
    char *doc = apr_pstrcat(r->pool, "<?xml version='1.0' encoding='utf-8'?>\n"
                            "<XRD xmlns='" XRD_NS "'>\n", NULL);
    int i;
    for (i = 0; i < urls->nelts; i++)
        doc = apr_pstrcat(r->pool, doc, "  <Link rel='" XBOSH_REL "' href='",
                          ap_escape_html(r->pool, APR_ARRAY_IDX(urls, i, const char *)),
                          "'/>\n", NULL);
    for (i = 0; i < ws_urls->nelts; i++)
        doc = apr_pstrcat(r->pool, doc, "  <Link rel='" WS_REL "' href='",
                          ap_escape_html(r->pool, APR_ARRAY_IDX(ws_urls, i, const char *)),
                          "'/>\n", NULL);
    return apr_pstrcat(r->pool, doc, "</XRD>\n", NULL);
}

static const char *jrd(request_rec *r, apr_array_header_t *urls,
                       apr_array_header_t *ws_urls)
{
    char *doc = "{\"links\":[";
    int i, n = 0;
    for (i = 0; i < urls->nelts; i++)
        doc = apr_pstrcat(r->pool, doc, n++ ? "," : "",
                          "{\"rel\":\"" XBOSH_REL "\",\"href\":\"",
                          APR_ARRAY_IDX(urls, i, const char *), "\"}", NULL);
    for (i = 0; i < ws_urls->nelts; i++)
        doc = apr_pstrcat(r->pool, doc, n++ ? "," : "",
                          "{\"rel\":\"" WS_REL "\",\"href\":\"",
                          APR_ARRAY_IDX(ws_urls, i, const char *), "\"}", NULL);
    return apr_pstrcat(r->pool, doc, "]}\n", NULL);
}

int bosh_hostmeta_handler(request_rec *r)
{
    bosh_server_conf *conf;
    const char *doc, *ctype;
    size_t ulen, len;
    int json;

    if (!r->handler || strcmp(r->handler, "bosh-hostmeta") != 0)
        return DECLINED;
    bosh_protect_answer(r);
    conf = bosh_conf(r->server);
    r->allowed = (AP_METHOD_BIT << M_GET) | (AP_METHOD_BIT << M_OPTIONS);
    if (r->method_number == M_OPTIONS) {
        apr_table_setn(r->headers_out, "Access-Control-Allow-Origin", "*");
        apr_table_setn(r->headers_out, "Access-Control-Allow-Methods", "GET");
        apr_table_setn(r->headers_out, "Access-Control-Allow-Headers", "Accept");
        apr_table_setn(r->headers_out, "Allow", "GET, HEAD, OPTIONS");
        ap_set_content_length(r, 0);
        return OK;
    }
    if (r->method_number != M_GET) {
        ap_allow_methods(r, REPLACE_ALLOW, "GET", "OPTIONS", NULL);
        return HTTP_METHOD_NOT_ALLOWED;
    }
    if ((!conf->hostmeta_urls || conf->hostmeta_urls->nelts == 0) &&
        (!conf->hostmeta_ws_urls || conf->hostmeta_ws_urls->nelts == 0)) {
        ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r,
                      "mod_bosh: BOSH00853: bosh-hostmeta handler but no BoshHostMetaURL "
                      "or BoshHostMetaWebSocketURL");
        return HTTP_NOT_FOUND;
    }
    ulen = strlen(r->uri);
    json = ulen >= 5 && strcmp(r->uri + ulen - 5, ".json") == 0;
    doc = json ? jrd(r, conf->hostmeta_urls, conf->hostmeta_ws_urls)
               : xrd(r, conf->hostmeta_urls, conf->hostmeta_ws_urls);
    ctype = json ? "application/json" : "application/xrd+xml; charset=utf-8";
    len = strlen(doc);

    ap_set_content_type(r, ctype);
    apr_table_setn(r->headers_out, "Access-Control-Allow-Origin", "*");
    apr_table_setn(r->headers_out, "Cache-Control", "max-age=3600");
    ap_set_content_length(r, len);
    if (!r->header_only)
        ap_rwrite(doc, (int)len, r);
    return OK;
}
