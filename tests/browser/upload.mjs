#!/usr/bin/env node
/*
 * upload.mjs: XEP-0363 file upload with Converse.js in Chromium (issue 17).
 *
 * alice and bob sign in on the demo page and sit in the lobby. alice
 * picks a picture with Converse's own upload button (the toolbar's file
 * input, as a user's file dialog would fill it); Converse asks chatd for
 * a slot, PUTs the file to httpd's /upload/ and posts the GET URL. bob's
 * Converse must show it as an image that really loaded from that URL
 * (naturalWidth > 0: served with an image type, not blocked by a header).
 *
 *   node tests/browser/upload.mjs --base http://127.0.0.1:8080/ \
 *        --alice-password X --bob-password Y [--artifacts DIR]
 *
 * One JSON line per step on stdout; exit 0 when every step passed. Every
 * wait is a condition with a deadline.
 */
import {
    ChatUser, STEP_TIMEOUT, launchBrowser, parseArgs, report, step,
} from './lib.mjs';

const opts = parseArgs(process.argv.slice(2), 'upload',
                       ['base', 'alice-password', 'bob-password']);
/* A 2x2 PNG, red and blue pixels. */
const PNG = Buffer.from(
    'iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAEElEQVR4nGP4zwAE/xkgFAAb8gP91pbyKwAAAABJRU5ErkJggg==',
    'base64');
const nonce = Math.random().toString(36).slice(2, 8);
const fileName = `team-photo-${nonce}.png`;
const uploadBase = new URL('upload/', opts.base).href;

const browser = await launchBrowser();
const alice = new ChatUser('alice');
const bob = new ChatUser('bob');
let failed = false;

/* The picture from the upload location, loaded, in u's room view. */
async function waitForImage(u) {
    const img = u.room().locator(`img.chat-image[src^="${uploadBase}"][src$="/${fileName}"]`).first();
    await img.waitFor({ state: 'visible', timeout: STEP_TIMEOUT });
    const deadline = Date.now() + STEP_TIMEOUT;
    for (;;) {
        const w = await img.evaluate((el) => (el.complete ? el.naturalWidth : -1));
        if (w > 0) return img.getAttribute('src');
        if (w === 0) throw new Error(`${u.name}: the image did not load`);
        if (Date.now() > deadline) throw new Error(`${u.name}: the image never finished loading`);
        await u.page.waitForTimeout(100);   /* polling interval, not synchronisation */
    }
}

try {
    await step('open pages', async () => {
        await alice.open(browser, opts.base);
        await bob.open(browser, opts.base);
    });
    await step('alice signs in and sees the lobby', () => alice.signIn(opts['alice-password']));
    await step('bob signs in and sees the lobby', () => bob.signIn(opts['bob-password']));

    await step("alice's room toolbar offers file upload", async () => {
        await alice.room().locator('input.fileupload')
            .waitFor({ state: 'attached', timeout: STEP_TIMEOUT });
    });
    let url;
    await step('alice uploads a picture with the upload button', async () => {
        const puts = [];
        alice.page.on('response', (r) => {
            if (r.request().method() === 'PUT') puts.push(r.status());
        });
        await alice.room().locator('input.fileupload').first().setInputFiles({
            name: fileName, mimeType: 'image/png', buffer: PNG,
        });
        url = await waitForImage(alice);
        if (!puts.includes(201)) throw new Error(`PUT statuses: ${JSON.stringify(puts)}`);
    });
    await step('bob sees the picture, loaded from the upload URL', async () => {
        const src = await waitForImage(bob);
        if (src !== url) throw new Error(`bob's image is ${src}, alice posted ${url}`);
    });
    await step('the GET answer is a nosniff attachment', async () => {
        const r = await bob.page.request.get(url);
        const h = r.headers();
        if (r.status() !== 200) throw new Error(`GET ${url}: ${r.status()}`);
        if (!(h['content-disposition'] || '').startsWith('attachment')) {
            throw new Error(`Content-Disposition: ${h['content-disposition']}`);
        }
        if (h['x-content-type-options'] !== 'nosniff') throw new Error('no nosniff');
        const body = await r.body();
        if (!body.equals(PNG)) throw new Error('the bytes differ from what alice uploaded');
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
