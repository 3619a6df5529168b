/*
 * chat.js: Converse.js settings for the demo site.
 *
 * BOSH at /http-bind (same origin, so no CORS), login form with the domain
 * fixed to localhost, the session kept across page reloads (keepalive), the
 * team room joined on sign-in. Bookmarks and OMEMO are off: they store
 * server-side state (PEP) the demo does not need and would leave leftovers
 * between test runs.
 */
const params = new URLSearchParams(window.location.search);
converse.initialize({
    bosh_service_url: '/http-bind',
    discover_connection_methods: false,
    authentication: 'login',
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
