#!/usr/bin/env node
/*
 * mam.mjs: Converse.js shows what the server archived (XEP-0313), in a
 * real browser on the demo page.
 *
 * The caller (tests/integration/test_32_browser_mam.py) has already, with
 * slixmpp: had alice's other device and bob exchange 1:1 messages, put bob
 * in alice's roster, and filled the lobby with more messages than
 * Converse's first archive page (50) and the join history (20). Here alice
 * signs in from a fresh browser profile (nothing cached):
 *   - the lobby shows the newest room messages, not the oldest; scrolling
 *     up loads the oldest (an archive query "before" the first shown);
 *   - the chat with bob shows the 1:1 messages sent from the other device,
 *     and still does after a page reload.
 *
 *   node tests/browser/mam.mjs --base URL --alice NAME --alice-password PW
 *        --bob-jid JID --one 'text1|text2' --room-first TEXT --room-last TEXT
 *        [--artifacts DIR]
 *
 * One JSON line per step on stdout; exit 0 when every step passed. Every
 * wait is a condition with a deadline, never a sleep.
 */
import {
    ChatUser, STEP_TIMEOUT, launchBrowser, parseArgs, report, step,
} from './lib.mjs';

const opts = parseArgs(process.argv.slice(2), 'mam',
                       ['base', 'alice', 'alice-password', 'bob-jid', 'one',
                        'room-first', 'room-last']);
const oneToOne = opts.one.split('|');
const browser = await launchBrowser();
const alice = new ChatUser(opts.alice, { artifactPrefix: 'mam-' });
let failed = false;

function chat(user) {
    return user.page.locator(`converse-chat[jid="${opts['bob-jid']}"]`);
}

/* Open the chat with bob as a user does: click him in the contacts. */
async function openChat(user) {
    await user.page.getByText(opts['bob-jid'], { exact: true }).first()
        .click({ timeout: STEP_TIMEOUT });
}

async function waitInChat(user, text) {
    await chat(user).locator('.chat-msg__text', { hasText: text }).first()
        .waitFor({ state: 'visible', timeout: STEP_TIMEOUT });
}

/* Scroll every scrollable box of the room view to its top, until text
 * shows or the deadline passes (each scroll may load one older page). */
async function scrollUpUntil(user, text) {
    const target = user.room().locator('.chat-msg__text', { hasText: text }).first();
    const deadline = Date.now() + 3 * STEP_TIMEOUT;
    while (Date.now() < deadline) {
        if (await target.count() > 0) {
            await target.waitFor({ state: 'attached', timeout: STEP_TIMEOUT });
            return;
        }
        await user.room().evaluate((room) => {
            /* to the top of the history (Converse's message list may be
             * column-reverse, where the top is a negative scrollTop), then
             * the oldest thing shown into view, as a user's wheel does */
            for (const el of room.querySelectorAll('*')) {
                const s = getComputedStyle(el).overflowY;
                if ((s === 'auto' || s === 'scroll') && el.scrollHeight > el.clientHeight) {
                    el.scrollTop = -el.scrollHeight;
                    el.dispatchEvent(new Event('scroll'));
                }
            }
            const top = room.querySelector('converse-mam-placeholder, .chat-msg');
            if (top) top.scrollIntoView({ block: 'start' });
        });
        /* let Converse ask the archive and render: wait for a change in
         * the number of messages shown, bounded */
        const before = await user.room().locator('.chat-msg__text').count();
        try {
            await user.page.waitForFunction(
                ([sel, n]) => document.querySelectorAll(sel).length !== n,
                [`converse-muc .chat-msg__text`, before], { timeout: 2000 });
        } catch { /* nothing new yet: scroll again */ }
    }
    throw new Error(`"${text}" never showed after scrolling up`);
}

try {
    /* CONVERSE_DEBUG=1: Converse logs every stanza to the console log */
    const url = process.env.CONVERSE_DEBUG ? `${opts.base}?debug=1` : opts.base;
    await step('open page', () => alice.open(browser, url));
    await step('alice signs in and sees the lobby', () => alice.signIn(opts['alice-password']));

    await step('the lobby shows the newest archived messages', async () => {
        await alice.waitForText(opts['room-last']);
        const first = await alice.room().locator('.chat-msg__text', { hasText: opts['room-first'] }).count();
        if (first) throw new Error('the oldest room message is already shown: nothing to scroll back to');
    });
    await step('scrolling up in the lobby loads older messages', () =>
        scrollUpUntil(alice, opts['room-first']));
    report({ shown: await alice.room().locator('.chat-msg__text').allTextContents() });

    await step('the chat with bob shows the 1:1 messages from the other device', async () => {
        await openChat(alice);
        for (const t of oneToOne) await waitInChat(alice, t);
    });
    await step('after a reload the chat with bob still shows them', async () => {
        await alice.page.reload();
        /* signed in again (keepalive), whichever chat Converse shows first */
        await openChat(alice);
        if (await alice.page.locator('#converse-login-jid').count() > 0) {
            throw new Error('login form shown after reload');
        }
        for (const t of oneToOne) await waitInChat(alice, t);
    });
} catch (e) {
    failed = true;
    report({ step: 'failed', ok: false, error: String(e && e.message || e) });
    await alice.saveArtifacts(opts.artifacts);
    report({ user: alice.name, console_tail: alice.console.slice(-15).map((l) => l.slice(0, 2000)) });
} finally {
    if (!failed && opts.artifacts) await alice.saveArtifacts(opts.artifacts);
    await browser.close();
}
process.exit(failed ? 1 : 0);
