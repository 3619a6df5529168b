#!/usr/bin/env node
/*
 * sign-in.mjs: one user signs in on a demo site in a real browser and
 * says something in the lobby. The short path: "does the demo work at
 * all" for a `make run` somewhere else (test_12_fresh_checkout.py), where
 * two-users.mjs covers the chat itself.
 *
 *   node tests/browser/sign-in.mjs --base http://127.0.0.1:8080/ \
 *        --user erin --password X [--artifacts DIR]
 *
 * Prints one JSON line per step on stdout; exits 0 when every step passed.
 * Chromium, the step report and ChatUser come from lib.mjs.
 */
import {
    ChatUser, launchBrowser, parseArgs, report, step,
} from './lib.mjs';

const opts = parseArgs(process.argv.slice(2), 'sign-in', ['base', 'user', 'password']);
const text = `hello from ${opts.user} ${Math.random().toString(36).slice(2, 8)}`;

const browser = await launchBrowser();
const user = new ChatUser(opts.user);
let failed = false;

try {
    await step('open page', () => user.open(browser, opts.base));
    await step('signs in and sees the lobby', () => user.signIn(opts.password));
    await step('says something in the lobby', async () => {
        await user.say(text);           /* waits until the room shows it */
    });
    await step('no request left 127.0.0.1', async () => {
        if (user.external.length) {
            throw new Error(`external requests: ${user.external.slice(0, 5).join(' ')}`);
        }
    });
} catch (e) {
    failed = true;
    report({ step: 'failed', ok: false, error: String(e && e.message || e) });
    report({ user: user.name, console_tail: user.console.slice(-15) });
} finally {
    await user.saveArtifacts(opts.artifacts);
    await browser.close();
}
process.exit(failed ? 1 : 0);
