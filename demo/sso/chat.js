/*
 * chat.js for /sso/: Converse.js signed in by the site's own login.
 *
 * Default: prebind. /sso/prebind (SetHandler bosh-prebind) returns
 * {jid, sid, rid} of a session chatd has already signed in and bound for
 * the user Apache authenticated; Converse attaches to it. No form at all.
 * ?mode=external: the login form asks only for the user name and Converse
 * signs in with SASL EXTERNAL; chatd accepts exactly the user Apache
 * authenticated for /sso/http-bind.
 * Either way the BOSH URL is /sso/http-bind: every request must carry the
 * same Apache login, or chatd refuses it. The settings shared with / are
 * in ../converse-common.js.
 */
import { baseSettings } from '/converse-common.js';

const params = new URLSearchParams(window.location.search);
const external = params.get('mode') === 'external';
converse.initialize({
    ...baseSettings(params),
    bosh_service_url: '/sso/http-bind',
    authentication: external ? 'external' : 'prebind',
    prebind_url: external ? null : '/sso/prebind',
    auto_login: !external,
});
