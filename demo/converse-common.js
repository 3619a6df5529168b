/*
 * converse-common.js: the Converse.js settings both demo pages share
 * (/ with a chat password, /sso/ behind the site's own login), so each
 * page's chat.js states only how it signs in and where its BOSH URL is.
 *
 * Domain fixed to localhost, the session kept across page reloads
 * (keepalive), the team room joined on sign-in. Bookmarks and OMEMO are
 * off: they store server-side state (PEP) the demo does not need and would
 * leave leftovers between test runs. ?debug=1 turns on Converse's debug log.
 *
 * History needs no setting: chatd advertises XEP-0313 archives (on the
 * account and in each room's disco#info), so Converse loads a room's and a
 * chat's earlier messages from the archive on join / on opening, and older
 * pages when scrolled up (tests/browser/mam.mjs). Without an archive this
 * Converse asks a room for no join history at all.
 */
export function baseSettings(params) {
    return {
        discover_connection_methods: false,
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
    };
}
