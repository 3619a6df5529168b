#!/usr/bin/env node
/*
 * websocket.mjs: Converse.js over XMPP-over-WebSocket (RFC 7395) in a real
 * browser: the demo page with ?transport=websocket gives Converse a
 * websocket_url (ws://<site>/xmpp-websocket, proxied by httpd to chatd).
 * Two users sign in (SCRAM: the site is plain http) and exchange room
 * messages; neither page may fall back to BOSH.
 *
 *   node tests/browser/websocket.mjs --base http://127.0.0.1:8080/ \
 *        --alice USER --alice-password X --bob USER --bob-password Y [--artifacts DIR]
 *
 * One JSON line per step on stdout; exits 0 when every step passed.
 */
import { ChatUser, launchBrowser, parseArgs, report, step } from './lib.mjs';

const opts = parseArgs(process.argv.slice(2), 'websocket',
                       ['base', 'alice', 'alice-password', 'bob', 'bob-password']);
const nonce = Math.random().toString(36).slice(2, 8);
const url = new URL('/?transport=websocket', opts.base).toString();

const browser = await launchBrowser();
const alice = new ChatUser(opts.alice, { artifactPrefix: 'ws-' });
const bob = new ChatUser(opts.bob, { artifactPrefix: 'ws-' });
const sockets = { [opts.alice]: [], [opts.bob]: [] };
let failed = false;

try {
    await step('open pages', async () => {
        for (const u of [alice, bob]) {
            await u.open(browser, url);
            u.page.on('websocket', (ws) => sockets[u.name].push(ws.url()));
        }
    });
    await step('alice signs in over WebSocket and sees the lobby',
               () => alice.signIn(opts['alice-password']));
    await step('bob signs in over WebSocket and sees the lobby',
               () => bob.signIn(opts['bob-password']));
    await step('both use /xmpp-websocket, not BOSH', async () => {
        for (const u of [alice, bob]) {
            if (!sockets[u.name].some((s) => s.endsWith('/xmpp-websocket'))) {
                throw new Error(`${u.name} opened no WebSocket to /xmpp-websocket: ${sockets[u.name]}`);
            }
            if (u.boshBodies.length) throw new Error(`${u.name} used BOSH: ${u.boshBodies[0]}`);
        }
    });
    const m1 = `ws hello from alice ${nonce}`;
    await step('alice -> room, bob sees it', async () => {
        await alice.say(m1);
        await bob.waitForText(m1);
    });
    const m2 = `ws hi alice, bob here ${nonce}`;
    await step('bob -> room, alice sees it', async () => {
        await bob.say(m2);
        await alice.waitForText(m2);
    });
} catch (e) {
    failed = true;
    report({ step: 'failed', ok: false, error: String(e && e.stack || e) });
    for (const u of [alice, bob]) report({ user: u.name, console_tail: u.console.slice(-15) });
} finally {
    await alice.saveArtifacts(opts.artifacts);
    await bob.saveArtifacts(opts.artifacts);
    await browser.close();
}
process.exit(failed ? 1 : 0);
