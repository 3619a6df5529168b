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
 * same Apache login, or chatd refuses it.
 */
const params = new URLSearchParams(window.location.search);
const external = params.get('mode') === 'external';
converse.initialize({
    bosh_service_url: '/sso/http-bind',
    discover_connection_methods: false,
    authentication: external ? 'external' : 'prebind',
    prebind_url: external ? null : '/sso/prebind',
    auto_login: !external,
    keepalive: true,
    auto_reconnect: true,
    locked_domain: 'localhost',
    default_domain: 'localhost',
    muc_domain: 'conference.localhost',
    auto_join_rooms: ['lobby@conference.localhost'],
    muc_nickname_from_jid: true,
    view_mode: 'embedded',
    assets_path: '/converse',
    allow_registration: false,
    blacklisted_plugins: [
        'converse-bookmarks',
        'converse-bookmark-views',
        'converse-omemo',
    ],
    show_client_info: false,
    play_sounds: false,
    show_send_button: true,
    theme: 'concord',
    loglevel: params.get('debug') ? 'debug' : 'warn',
    i18n: 'en',
});
