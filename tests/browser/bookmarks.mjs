#!/usr/bin/env node
/*
 * bookmarks.mjs: PEP bookmarks in Converse.js (issue 17), in two phases
 * that tests/integration/test_32_browser_bookmarks.py runs with its own
 * checks in between.
 *
 *   --phase bookmark: alice signs in on the demo page, opens a second room
 *     (#converse/room?jid=...); Converse bookmarks it with autojoin and
 *     publishes the bookmark to her PEP service. Waits until chatd answered
 *     that publish with a result; reports which node Converse used.
 *   --phase autojoin: a fresh browser context (no local storage) signs in
 *     as alice; Converse reads her bookmarks from the server and joins the
 *     room by itself.
 *
 *   node tests/browser/bookmarks.mjs --base URL --user alice --password X
 *        --room room@conference.localhost --phase bookmark|autojoin [--artifacts DIR]
 *
 * One JSON line per step on stdout; exit 0 when every step passed.
 */
import {
    ChatUser, launchBrowser, parseArgs, report, step, waitUntil, STEP_TIMEOUT,
} from './lib.mjs';

const opts = parseArgs(process.argv.slice(2), 'bookmarks',
                       ['base', 'user', 'password', 'room', 'phase']);
const browser = await launchBrowser();
const alice = new ChatUser(opts.user, { artifactPrefix: `${opts.phase}-` });
const roomView = () => alice.page.locator(`converse-muc[jid="${opts.room}"]`);
let failed = false;

/* The id of the iq that publishes a bookmark of the room, if sent. */
function publishIds() {
    const ids = [];
    for (const b of alice.boshBodies) {
        for (const m of b.matchAll(/<iq\b([^>]*)>((?:(?!<\/iq>)[\s\S])*)<\/iq>/g)) {
            const pub = /<publish node=["'](urn:xmpp:bookmarks:1|storage:bookmarks)["']/.exec(m[2]);
            const id = /\sid=["']([^"']+)["']/.exec(m[1]);
            if (pub && id && m[2].includes(opts.room)) ids.push({ id: id[1], node: pub[1] });
        }
    }
    return ids;
}

function answered(id) {
    const re = new RegExp(`<iq\\b[^>]*\\sid=["']${id.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}["'][^>]*>`);
    return alice.boshAnswers.some((a) => {
        const m = re.exec(a);
        return m && /type=["']result["']/.test(m[0]);
    });
}

try {
    await step('open page and sign in', async () => {
        await alice.open(browser, opts.base);
        await alice.signIn(opts.password);
    });
    if (opts.phase === 'bookmark') {
        await step('open the second room', async () => {
            await alice.page.evaluate((room) => { location.hash = `#converse/room?jid=${room}`; },
                                      opts.room);
            await roomView().waitFor({ state: 'attached', timeout: STEP_TIMEOUT });
        });
        let used = null;
        await step('Converse publishes the bookmark and chatd stores it', async () => {
            await waitUntil(() => publishIds().some((p) => answered(p.id) && (used = p.node)),
                            'a bookmark publish answered with a result');
        });
        report({ step: 'bookmark node', ok: true, node: used });
    } else {
        /* The demo's embedded view shows one room at a time (the lobby),
         * so the join is seen on the wire, and by the room's occupants
         * (the pytest side). */
        await step('Converse joins the bookmarked room by itself', async () => {
            await waitUntil(() => alice.boshBodies.some((b) =>
                new RegExp(`<presence\\b[^>]*to=["']${opts.room}/`).test(b)),
                'a join presence to the room');
        });
    }
} catch (e) {
    failed = true;
    report({ step: 'failed', ok: false, error: String(e && e.message || e) });
    await alice.saveArtifacts(opts.artifacts);
    report({ user: alice.name, console_tail: alice.console.slice(-15) });
} finally {
    if (!failed && opts.artifacts) await alice.saveArtifacts(opts.artifacts);
    await browser.close();
}
process.exit(failed ? 1 : 0);
