/*
 * chat.js: Converse.js settings for the demo site.
 *
 * BOSH at /http-bind (same origin, so no CORS) and Converse's login form
 * (user name and chat password). The settings shared with /sso/ (domain,
 * keepalive, the team room, plugins off) are in converse-common.js.
 */
import { baseSettings } from '/converse-common.js';

const params = new URLSearchParams(window.location.search);
converse.initialize({
    ...baseSettings(params),
    bosh_service_url: '/http-bind',
    authentication: 'login',
});
