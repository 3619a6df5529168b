/*
 * bosh_route: the pure decisions of mod_bosh, kept apart from httpd so
 * unit tests can drive them without linking the server.
 *
 *  - which chatd node a sid belongs to (the sid is "<node>-<hex>"),
 *  - parsing a BoshChatd endpoint ("unix:/path" or "tcp:host:port"),
 *  - round-robin choice of a node for a new session, skipping nodes
 *    that are known to be down,
 *  - the jittered Retry-After value sent with 503 (so a crowd of
 *    refused clients does not come back in the same second),
 *  - whether an unparsable body showed a `ver` attribute (then the
 *    client speaks BOSH 1.6+ and gets a terminate body, else HTTP 400),
 *  - whether an Origin is in the BoshAllowOrigin list.
 */
#ifndef MOD_BOSH_BOSH_ROUTE_H
#define MOD_BOSH_BOSH_ROUTE_H

#include <stddef.h>
#include <stdint.h>

#define BOSH_NODE_ID_MAX 64

typedef struct bosh_endpoint {
    int  is_unix;
    char path[108];          /* sun_path size on Linux */
    char host[256];
    int  port;
} bosh_endpoint;

/* Parse "unix:/path" or "tcp:host:port". Returns 0, or -1 with err filled. */
int bosh_endpoint_parse(const char *url, bosh_endpoint *out,
                        char *err, size_t errlen);

/* Copy the node id of sid (the part before the first '-') to out.
 * Returns 0, or -1 if sid has no '-', an empty or too long prefix,
 * or characters other than [A-Za-z0-9_.]. */
int bosh_sid_node(const char *sid, char *out, size_t outlen);

/* A node id is valid in BoshChatd if bosh_sid_node would accept it. */
int bosh_node_id_valid(const char *id);

/*
 * Pick a node for a new session. *cursor is the round-robin position
 * (advanced by the caller's counter); up[i] says whether node i is usable.
 * Returns the index of the first usable node at or after cursor % n,
 * or -1 if none is.
 */
int bosh_pick_node(unsigned cursor, const int *up, int n);

/* base + (rnd % (spread + 1)) seconds; never less than 1. */
unsigned bosh_retry_after(unsigned base, unsigned spread, uint32_t rnd);

/* 1 if the first <body ...> start tag in data has a `ver` attribute. */
int bosh_raw_has_ver(const char *data, size_t len);

/* 1 if origin equals one of the n allowed origins (exact, case-insensitive
 * on scheme and host as browsers send them lowercase) or one is "*". */
int bosh_origin_allowed(const char *origin, const char *const *allowed, int n);

/* 1 if origin (an Origin header value, scheme://host[:port]) names the
 * given scheme, host and port (port 0: the scheme's default). Host
 * compared case-insensitively, IPv6 brackets ignored, a default port may
 * be written or not. "null", paths and junk are never our origin. */
int bosh_origin_is_self(const char *origin, const char *scheme,
                        const char *host, unsigned port);

/*
 * Whether the bosh-prebind handler serves a request (issue 13): it signs
 * the visitor into chat, so another site must not make the visitor's
 * browser ask for it. method_post: 1 for POST, 0 for GET (other methods
 * are refused before). sec_fetch_site, origin: the request headers or
 * NULL. origin_self: Origin is this site; origin_listed: Origin is listed
 * by name in BoshAllowOrigin (never through "*").
 *  - POST; GET only with Sec-Fetch-Site: same-origin (stock Converse.js
 *    fetches prebind_url with a GET from its own page; a browser never
 *    lets a page set Sec-Fetch-*, and an old browser that does not send it
 *    gets 405 for a GET, so <img src>/links cannot trigger it);
 *  - Sec-Fetch-Site same-origin or none, or absent (non-browser clients,
 *    old browsers: Origin decides); same-site/cross-site only from a
 *    listed Origin;
 *  - Origin, when sent, is this site or listed.
 * Returns 0 (serve), 405 or 403 with *why set.
 */
int bosh_prebind_policy(int method_post, const char *sec_fetch_site,
                        const char *origin, int origin_self, int origin_listed,
                        const char **why);

#endif
