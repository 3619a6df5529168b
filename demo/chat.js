/*
 * chat.js: Converse.js settings for the demo site.
 *
 * BOSH at /http-bind (same origin, so no CORS) and Converse's login form
 * (user name and chat password). The settings shared with /sso/ (domain,
 * keepalive, the team room, plugins off) are in converse-common.js.
 *
 * ?transport=websocket: XMPP over WebSocket (RFC 7395) at /xmpp-websocket
 * instead, which httpd proxies to chatd (docs/embedding.md). Converse
 * needs an absolute ws:// or wss:// URL: the page's own scheme decides.
 */
import { baseSettings } from '/converse-common.js';

const params = new URLSearchParams(window.location.search);
const transport = params.get('transport') === 'websocket'
    ? { websocket_url: `${window.location.protocol === 'https:' ? 'wss' : 'ws'}://`
                       + `${window.location.host}/xmpp-websocket` }
    : { bosh_service_url: '/http-bind' };
converse.initialize({
    ...baseSettings(params),
    ...transport,
    authentication: 'login',
});
