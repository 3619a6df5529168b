#!/usr/bin/env node
/*
 * two-users.mjs: the demo site end to end in a real browser.
 *
 * Two isolated Chromium contexts (alice, bob) sign in through the demo page's
 * Converse.js login form, see the lobby room, exchange a room message; bob
 * reloads the page and must come back still signed in (Converse keepalive:
 * the same BOSH sid, resumed with the next rid) and exchange messages again.
 *
 *   node tests/browser/two-users.mjs --base http://127.0.0.1:8080/ \
 *        --alice-password X --bob-password Y [--artifacts DIR]
 *
 * Prints one JSON line per step on stdout; exits 0 when every step passed.
 * It saves a screenshot, the console log and the BOSH request bodies of each
 * user in --artifacts (when given) at the end, passed or failed. Every wait is a condition with a deadline, never a sleep.
 *
 * Chromium, the step report and the per-user page (ChatUser) come from
 * lib.mjs, shared with sso.mjs.
 */
import {
    ChatUser, launchBrowser, parseArgs, report, step,
} from './lib.mjs';

const opts = parseArgs(process.argv.slice(2), 'two-users',
                       ['base', 'alice-password', 'bob-password']);
const nonce = Math.random().toString(36).slice(2, 8);

const browser = await launchBrowser();

const alice = new ChatUser('alice');
const bob = new ChatUser('bob');
let failed = false;

try {
    await step('open pages', async () => {
        await alice.open(browser, opts.base);
        await bob.open(browser, opts.base);
    });
    await step('alice signs in and sees the lobby', () => alice.signIn(opts['alice-password']));
    await step('bob signs in and sees the lobby', () => bob.signIn(opts['bob-password']));

    const m1 = `hello from alice ${nonce}`;
    await step('alice -> room, bob sees it', async () => {
        await alice.say(m1);
        await bob.waitForText(m1);
        await alice.waitForText(m1);          /* the room reflects it back */
    });
    const m2 = `hi alice, bob here ${nonce}`;
    await step('bob -> room, alice sees it', async () => {
        await bob.say(m2);
        await alice.waitForText(m2);
    });

    const sidBefore = bob.lastSid();
    const sentBefore = bob.boshBodies.length;
    await step('bob reloads and is still signed in', async () => {
        await bob.page.reload();
        await bob.waitInRoom();
        if (await bob.page.locator('#converse-login-jid').count() > 0) {
            throw new Error('login form shown after reload: keepalive did not resume');
        }
        const after = bob.boshBodies.slice(sentBefore);
        const created = after.filter((b) => !/\ssid=/.test(b));
        if (created.length) {
            throw new Error(`a new BOSH session was created after reload: ${created[0]}`);
        }
        if (sidBefore && bob.lastSid() !== sidBefore) {
            throw new Error(`sid changed across reload: ${sidBefore} -> ${bob.lastSid()}`);
        }
    });

    const m3 = `back after reload ${nonce}`;
    await step('bob (reloaded) -> room, alice sees it', async () => {
        await bob.say(m3);
        await alice.waitForText(m3);
    });
    const m4 = `welcome back bob ${nonce}`;
    await step('alice -> room, reloaded bob sees it', async () => {
        await alice.say(m4);
        await bob.waitForText(m4);
    });

    await step('no request left 127.0.0.1', async () => {
        const ext = [...alice.external, ...bob.external];
        if (ext.length) throw new Error(`external requests: ${ext.slice(0, 5).join(' ')}`);
    });
} catch (e) {
    failed = true;
    report({ step: 'failed', ok: false, error: String(e && e.message || e) });
    for (const u of [alice, bob]) {
        await u.saveArtifacts(opts.artifacts);
        report({ user: u.name, console_tail: u.console.slice(-15) });
    }
} finally {
    if (!failed && opts.artifacts) {
        for (const u of [alice, bob]) await u.saveArtifacts(opts.artifacts);
    }
    await browser.close();
}
process.exit(failed ? 1 : 0);
