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
 * Chromium is Debian's /usr/bin/chromium, started with flags that keep it
 * off the (closed) network; playwright-core gives each context its own
 * fresh profile.
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
    for (const k of ['base', 'alice-password', 'bob-password']) {
        if (!o[k]) {
            process.stderr.write(`two-users: --${k} is required\n`);
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

/* One signed-in user: a context, a page, and what the page did. */
class User {
    constructor(name, password) {
        this.name = name;
        this.password = password;
        this.console = [];
        this.boshBodies = [];      /* request bodies POSTed to /http-bind */
        this.external = [];        /* requests that left 127.0.0.1 */
    }

    async open(browser) {
        this.context = await browser.newContext({ viewport: { width: 1100, height: 760 } });
        this.page = await this.context.newPage();
        this.page.on('console', (m) => this.console.push(`${m.type()}: ${m.text()}`));
        this.page.on('pageerror', (e) => this.console.push(`pageerror: ${e.message}`));
        this.page.on('request', (r) => {
            const url = new URL(r.url());
            if (url.hostname !== '127.0.0.1' && url.protocol.startsWith('http')) {
                this.external.push(r.url());
            }
            if (url.pathname === '/http-bind' && r.method() === 'POST') {
                this.boshBodies.push(r.postData() || '');
            }
        });
        await this.page.goto(opts.base);
    }

    room() {
        return this.page.locator(`converse-muc[jid="${ROOM}"]`);
    }

    async signIn() {
        await this.page.locator('#converse-login-jid').fill(this.name, { timeout: STEP_TIMEOUT });
        await this.page.locator('#converse-login-password').fill(this.password);
        await this.page.locator('#converse-login-password').press('Enter');
        await this.waitInRoom();
    }

    /* The room view is shown and its message box is usable. */
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

    /* The sid of the latest BOSH request, or of the creation response. */
    lastSid() {
        for (let i = this.boshBodies.length - 1; i >= 0; i--) {
            const m = /\ssid=['"]([^'"]+)['"]/.exec(this.boshBodies[i]);
            if (m) return m[1];
        }
        return null;
    }

    async saveArtifacts(dir) {
        if (!dir || !this.page) return;
        fs.mkdirSync(dir, { recursive: true });
        try {
            await this.page.screenshot({ path: path.join(dir, `${this.name}.png`) });
        } catch { /* the page may be gone */ }
        fs.writeFileSync(path.join(dir, `${this.name}-console.log`), this.console.join('\n') + '\n');
        fs.writeFileSync(path.join(dir, `${this.name}-bosh.log`), this.boshBodies.join('\n') + '\n');
    }
}

const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
           '--disable-background-networking', '--disable-component-update',
           '--disable-sync'],
});

const alice = new User('alice', opts['alice-password']);
const bob = new User('bob', opts['bob-password']);
let failed = false;

try {
    await step('open pages', async () => {
        await alice.open(browser);
        await bob.open(browser);
    });
    await step('alice signs in and sees the lobby', () => alice.signIn());
    await step('bob signs in and sees the lobby', () => bob.signIn());

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
