#!/usr/bin/env node
/*
 * sso.mjs: the site's own login signs people into chat (issue 8), in a real
 * browser.
 *
 * carol is a user of the site only (HTTP Basic on /sso/, htpasswd written by
 * scripts/chatstack.py); alice has a chat password. carol opens
 * /sso/?mode=external: Converse's login form has no password field, she
 * types her user name, Converse signs in with SASL EXTERNAL. alice signs in
 * on / with her password. They exchange room messages. Then dave (another
 * site user) opens /sso/ (prebind) and is in the room without any form.
 * No BOSH request of carol's or dave's carries a SASL mechanism other than
 * EXTERNAL, nor their site passwords.
 *
 *   node tests/browser/sso.mjs --base http://127.0.0.1:8080/ \
 *        --carol-password X --dave-password Z --alice-password Y [--artifacts DIR]
 *
 * One JSON line per step on stdout; exit 0 when every step passed. Every
 * wait is a condition with a deadline. Shared parts (Chromium, the step
 * report, ChatUser) are in lib.mjs.
 */
import {
    ChatUser, STEP_TIMEOUT, launchBrowser, parseArgs, report, step,
} from './lib.mjs';

const opts = parseArgs(process.argv.slice(2), 'sso',
                       ['base', 'carol-password', 'dave-password', 'alice-password']);
const nonce = Math.random().toString(36).slice(2, 8);

/* A site user's BOSH bodies: only EXTERNAL, never the site password. */
function checkNoPassword(u) {
    const pw = u.httpCredentials.password;
    const b64 = Buffer.from(pw).toString('base64').replace(/=+$/, '');
    for (const body of u.boshBodies) {
        if (body.includes(pw) || body.includes(b64)) {
            throw new Error(`${u.name}'s site password went over BOSH: ${body.slice(0, 200)}`);
        }
        const m = /<auth[^>]*mechanism=['"]([^'"]+)['"]/.exec(body);
        if (m && m[1] !== 'EXTERNAL') throw new Error(`${u.name} used SASL ${m[1]}`);
    }
}

const browser = await launchBrowser();

const carolCreds = { username: 'carol', password: opts['carol-password'] };
const carol = new ChatUser('carol-external', { httpCredentials: carolCreds, artifactPrefix: 'sso-' });
const alice = new ChatUser('alice', { artifactPrefix: 'sso-' });
const dave = new ChatUser('dave-prebind', {
    httpCredentials: { username: 'dave', password: opts['dave-password'] },
    artifactPrefix: 'sso-',
});
let failed = false;

try {
    await step('carol opens /sso/?mode=external: no password field', async () => {
        await carol.open(browser, new URL('/sso/?mode=external', opts.base).href);
        await carol.page.locator('#converse-login-jid').waitFor({ state: 'visible', timeout: STEP_TIMEOUT });
        if (await carol.page.locator('#converse-login-password').count() > 0) {
            throw new Error('the external login form shows a password field');
        }
    });
    await step('carol signs in with EXTERNAL and sees the lobby', async () => {
        await carol.page.locator('#converse-login-jid').fill('carol');
        await carol.page.locator('#converse-login-jid').press('Enter');
        await carol.waitInRoom();
        if (!carol.boshBodies.some((b) => /mechanism=['"]EXTERNAL['"]/.test(b))) {
            throw new Error('no EXTERNAL <auth/> was sent');
        }
    });
    await step('alice signs in with her password', async () => {
        await alice.open(browser, opts.base);
        await alice.signIn(opts['alice-password']);
    });
    const m1 = `hello from carol ${nonce}`;
    await step('carol -> room, alice sees it', async () => {
        await carol.say(m1);
        await alice.waitForText(m1);
    });
    const m2 = `hi carol, alice here ${nonce}`;
    await step('alice -> room, carol sees it', async () => {
        await alice.say(m2);
        await carol.waitForText(m2);
    });
    await step('dave opens /sso/ (prebind) and is in the room without a form', async () => {
        await dave.open(browser, new URL('/sso/', opts.base).href);
        await dave.waitInRoom();
        const m3 = `prebound dave ${nonce}`;
        await dave.say(m3);
        await alice.waitForText(m3);
    });
    await step('no password and no other mechanism over BOSH', async () => {
        checkNoPassword(carol);
        checkNoPassword(dave);
        if (dave.boshBodies.some((b) => /<auth\b/.test(b))) {
            throw new Error('the prebound page authenticated itself');
        }
    });
} catch (e) {
    failed = true;
    report({ step: 'failed', ok: false, error: String(e && e.message || e) });
    for (const u of [carol, alice, dave]) {
        await u.saveArtifacts(opts.artifacts);
        report({ user: u.name, console_tail: u.console.slice(-15) });
    }
} finally {
    await browser.close();
}
process.exit(failed ? 1 : 0);
