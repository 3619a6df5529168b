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
 * wait is a condition with a deadline.
 */
import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';

const STEP_TIMEOUT = 20000;
const ROOM = 'lobby@conference.localhost';

function parseArgs(argv) {
    const o = { artifacts: null };
    for (let i = 0; i < argv.length; i++) {
        if (argv[i].startsWith('--')) o[argv[i].slice(2)] = argv[++i];
    }
    for (const k of ['base', 'carol-password', 'dave-password', 'alice-password']) {
        if (!o[k]) {
            process.stderr.write(`sso: --${k} is required\n`);
            process.exit(2);
        }
    }
    return o;
}

const opts = parseArgs(process.argv.slice(2));
const nonce = Math.random().toString(36).slice(2, 8);

function report(obj) {
    process.stdout.write(JSON.stringify(obj) + '\n');
}

async function step(name, fn) {
    const t0 = Date.now();
    await fn();
    report({ step: name, ok: true, ms: Date.now() - t0 });
}

class User {
    constructor(label, httpCredentials) {
        this.label = label;
        this.httpCredentials = httpCredentials;
        this.console = [];
        this.boshBodies = [];
        this.boshHeaders = [];
    }

    async open(browser, url) {
        const o = { viewport: { width: 1100, height: 760 } };
        if (this.httpCredentials) o.httpCredentials = this.httpCredentials;
        this.context = await browser.newContext(o);
        this.page = await this.context.newPage();
        this.page.on('console', (m) => this.console.push(`${m.type()}: ${m.text()}`));
        this.page.on('pageerror', (e) => this.console.push(`pageerror: ${e.message}`));
        this.page.on('request', (r) => {
            const u = new URL(r.url());
            if (u.pathname.endsWith('/http-bind') && r.method() === 'POST') {
                this.boshBodies.push(r.postData() || '');
            }
        });
        await this.page.goto(url);
    }

    room() {
        return this.page.locator(`converse-muc[jid="${ROOM}"]`);
    }

    async waitInRoom() {
        await this.room().locator('textarea.chat-textarea')
            .waitFor({ state: 'visible', timeout: STEP_TIMEOUT });
    }

    /* Type and send. Right after a page load Converse may show the
     * textarea before its key handlers are wired (seen as a page error
     * "reading 'onKeyDown'" and a message that was never sent), so wait
     * until the message shows in our own room view, typing it again if
     * Converse did not take it. What others receive is asserted apart. */
    async say(text) {
        const box = this.room().locator('textarea.chat-textarea');
        const mine = this.room().locator('.chat-msg__text', { hasText: text }).first();
        for (let attempt = 1; attempt <= 5; attempt++) {
            await box.fill(text);
            await box.press('Enter');
            try {
                await mine.waitFor({ state: 'visible', timeout: 4000 });
                return;
            } catch (e) {
                if (attempt === 5) throw new Error(
                    `"${text}" never showed in ${this.name}'s own view after 5 tries`);
            }
        }
    }

    async waitForText(text) {
        await this.room().locator('.chat-msg__text', { hasText: text })
            .first().waitFor({ state: 'visible', timeout: STEP_TIMEOUT });
    }

    async saveArtifacts(dir) {
        if (!dir || !this.page) return;
        fs.mkdirSync(dir, { recursive: true });
        try {
            await this.page.screenshot({ path: path.join(dir, `sso-${this.label}.png`) });
        } catch { /* the page may be gone */ }
        fs.writeFileSync(path.join(dir, `sso-${this.label}-console.log`), this.console.join('\n') + '\n');
        fs.writeFileSync(path.join(dir, `sso-${this.label}-bosh.log`), this.boshBodies.join('\n') + '\n');
    }
}

/* A site user's BOSH bodies: only EXTERNAL, never the site password. */
function checkNoPassword(u) {
    const pw = u.httpCredentials.password;
    const b64 = Buffer.from(pw).toString('base64').replace(/=+$/, '');
    for (const body of u.boshBodies) {
        if (body.includes(pw) || body.includes(b64)) {
            throw new Error(`${u.label}'s site password went over BOSH: ${body.slice(0, 200)}`);
        }
        const m = /<auth[^>]*mechanism=['"]([^'"]+)['"]/.exec(body);
        if (m && m[1] !== 'EXTERNAL') throw new Error(`${u.label} used SASL ${m[1]}`);
    }
}

const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
           '--disable-background-networking', '--disable-component-update',
           '--disable-sync'],
});

const carolCreds = { username: 'carol', password: opts['carol-password'] };
const carol = new User('carol-external', carolCreds);
const alice = new User('alice', null);
const dave = new User('dave-prebind', { username: 'dave', password: opts['dave-password'] });
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
        await alice.page.locator('#converse-login-jid').fill('alice', { timeout: STEP_TIMEOUT });
        await alice.page.locator('#converse-login-password').fill(opts['alice-password']);
        await alice.page.locator('#converse-login-password').press('Enter');
        await alice.waitInRoom();
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
        report({ user: u.label, console_tail: u.console.slice(-15) });
    }
} finally {
    await browser.close();
}
process.exit(failed ? 1 : 0);
