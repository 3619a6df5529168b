#!/usr/bin/env node
/*
 * two-devices.mjs: one person on two browsers (XEP-0280 Message Carbons as
 * Converse.js shows it).
 *
 * Three isolated Chromium contexts on the demo page: the account --user on
 * two of them ("desk" and "laptop"), --peer on the third. The peer writes
 * to the user: both of the user's browsers show it. The user answers from
 * the desk: the laptop shows the answer too, in the same conversation.
 *
 *   node tests/browser/two-devices.mjs --base URL --user U --user-password P \
 *        --peer V --peer-password Q [--artifacts DIR]
 *
 * One JSON line per step on stdout; exit 0 when every step passed. Every
 * wait is a condition with a deadline, never a sleep.
 */
import {
    ChatUser, launchBrowser, parseArgs, report, step,
} from './lib.mjs';

const opts = parseArgs(process.argv.slice(2), 'two-devices',
                       ['base', 'user', 'user-password', 'peer', 'peer-password']);
const nonce = Math.random().toString(36).slice(2, 8);
const userJid = `${opts.user}@localhost`;
const peerJid = `${opts.peer}@localhost`;

const browser = await launchBrowser();
const desk = new ChatUser('desk', { login: opts.user });
const laptop = new ChatUser('laptop', { login: opts.user });
const peer = new ChatUser('peer', { login: opts.peer });
const everyone = [desk, laptop, peer];
let failed = false;

try {
    await step('open pages', async () => {
        for (const u of everyone) await u.open(browser, opts.base);
    });
    await step('the user signs in on two browsers, the peer on one', async () => {
        await desk.signIn(opts['user-password']);
        await laptop.signIn(opts['user-password']);
        await peer.signIn(opts['peer-password']);
    });
    await step('both of the user\'s browsers asked for carbons', async () => {
        for (const u of [desk, laptop]) {
            if (!u.boshBodies.some((b) => /<enable[^>]+urn:xmpp:carbons:2/.test(b))) {
                throw new Error(`${u.name} never sent <enable xmlns='urn:xmpp:carbons:2'/>`);
            }
        }
    });
    await step('one-to-one chats open', async () => {
        await desk.openChat(peerJid);
        await laptop.openChat(peerJid);
        await peer.openChat(userJid);
    });
    const m1 = `to you on every device ${nonce}`;
    await step('peer -> user: desk and laptop both show it', async () => {
        await peer.sayTo(userJid, m1);
        await desk.waitForChatText(peerJid, m1);
        await laptop.waitForChatText(peerJid, m1);
    });
    const m2 = `answered from the desk ${nonce}`;
    await step('user answers on the desk: peer and laptop show it', async () => {
        await desk.sayTo(peerJid, m2);
        await peer.waitForChatText(userJid, m2);
        await laptop.waitForChatText(peerJid, m2);
    });
    await step('each message shows once on the laptop', async () => {
        for (const m of [m1, m2]) {
            const n = await laptop.chat(peerJid).locator('.chat-msg__text', { hasText: m }).count();
            if (n !== 1) throw new Error(`"${m}" shows ${n} times on the laptop`);
        }
    });
} catch (e) {
    failed = true;
    report({ step: 'failed', ok: false, error: String(e && e.message || e) });
    for (const u of everyone) {
        await u.saveArtifacts(opts.artifacts);
        report({ user: u.name, console_tail: u.console.slice(-15) });
    }
} finally {
    await browser.close();
}
process.exit(failed ? 1 : 0);
