/*
 * lib.mjs: what the browser tests (two-users.mjs, sso.mjs) share, so the
 * two scripts hold only their own steps: argument parsing, the JSON step
 * report, the Chromium launch, and ChatUser, one user's browser context
 * on the demo page with what it did (console, BOSH bodies, requests that
 * left 127.0.0.1).
 *
 * Chromium is Debian's /usr/bin/chromium (or $CHROMIUM), started with
 * flags that keep it off the (closed) network; playwright-core gives each
 * context its own fresh profile. Every wait is a condition with a
 * deadline, never a sleep.
 */
import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';

export const STEP_TIMEOUT = 20000;
export const ROOM = 'lobby@conference.localhost';

/* --key value pairs; exits 2 naming the first missing required key. */
export function parseArgs(argv, prog, required) {
    const o = { artifacts: null };
    for (let i = 0; i < argv.length; i++) {
        if (argv[i].startsWith('--')) o[argv[i].slice(2)] = argv[++i];
    }
    for (const k of required) {
        if (!o[k]) {
            process.stderr.write(`${prog}: --${k} is required\n`);
            process.exit(2);
        }
    }
    return o;
}

export function report(obj) {
    process.stdout.write(JSON.stringify(obj) + '\n');
}

export async function step(name, fn) {
    const t0 = Date.now();
    await fn();
    report({ step: name, ok: true, ms: Date.now() - t0 });
}

export function launchBrowser() {
    return chromium.launch({
        executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
        headless: true,
        args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
               '--disable-background-networking', '--disable-component-update',
               '--disable-sync'],
    });
}

/* One user: a context, a page, and what the page did. httpCredentials
 * (optional) answer the site's HTTP Basic login; artifactPrefix is put
 * before the file names saveArtifacts writes. */
export class ChatUser {
    constructor(name, { httpCredentials = null, artifactPrefix = '', login = null } = {}) {
        this.name = name;
        this.login = login || name;    /* the account; name tells devices apart */
        this.httpCredentials = httpCredentials;
        this.artifactPrefix = artifactPrefix;
        this.console = [];
        this.boshBodies = [];      /* request bodies POSTed to .../http-bind */
        this.external = [];        /* requests that left 127.0.0.1 */
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
            if (u.hostname !== '127.0.0.1' && u.protocol.startsWith('http')) {
                this.external.push(r.url());
            }
            if (u.pathname.endsWith('/http-bind') && r.method() === 'POST') {
                this.boshBodies.push(r.postData() || '');
            }
        });
        await this.page.goto(url);
    }

    room() {
        return this.page.locator(`converse-muc[jid="${ROOM}"]`);
    }

    /* Sign in through Converse's login form (user name and password). */
    async signIn(password) {
        await this.page.locator('#converse-login-jid').fill(this.login, { timeout: STEP_TIMEOUT });
        await this.page.locator('#converse-login-password').fill(password);
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

    /* A one-to-one chat, opened as a person does: a click on the contact
     * in Converse's roster (so jid must be a contact). */
    chat(jid) {
        return this.page.locator(`converse-chat[jid="${jid}"]`);
    }

    async openChat(jid) {
        /* dispatched, not clicked at a point: in the demo's narrow
         * embedded layout the room's message pane overlaps the roster */
        await this.page.locator('converse-roster a.open-chat', { hasText: jid }).first()
            .dispatchEvent('click', {}, { timeout: STEP_TIMEOUT });
        await this.chat(jid).locator('textarea.chat-textarea')
            .waitFor({ state: 'visible', timeout: STEP_TIMEOUT });
    }

    /* As say(), in the one-to-one chat with jid. */
    async sayTo(jid, text) {
        const box = this.chat(jid).locator('textarea.chat-textarea');
        const mine = this.chat(jid).locator('.chat-msg__text', { hasText: text }).first();
        for (let attempt = 1; attempt <= 5; attempt++) {
            await box.fill(text);
            await box.press('Enter');
            try {
                await mine.waitFor({ state: 'visible', timeout: 4000 });
                return;
            } catch (e) {
                if (attempt === 5) throw new Error(
                    `"${text}" never showed in ${this.name}'s chat with ${jid} after 5 tries`);
            }
        }
    }

    async waitForChatText(jid, text) {
        await this.chat(jid).locator('.chat-msg__text', { hasText: text })
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
        const base = `${this.artifactPrefix}${this.name}`;
        try {
            await this.page.screenshot({ path: path.join(dir, `${base}.png`) });
        } catch { /* the page may be gone */ }
        fs.writeFileSync(path.join(dir, `${base}-console.log`), this.console.join('\n') + '\n');
        fs.writeFileSync(path.join(dir, `${base}-bosh.log`), this.boshBodies.join('\n') + '\n');
    }
}
