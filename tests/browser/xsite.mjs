#!/usr/bin/env node
/*
 * xsite.mjs: what a browser makes of a BOSH answer it is sent to by
 * another site (issue 13), for test_31_xsite_browser.py.
 *
 * For each case an attacker page on http://evil.test/ (served by
 * playwright's router, so no second server and no DNS) navigates the
 * top-level page to the BOSH endpoint: a form POST (enctype text/plain,
 * which lets the page write a whole <body/> of its choosing) or a plain
 * GET link. The answer is then shown as a document of the site's origin,
 * exactly as a victim's browser would show it. Reported per case: the
 * answer's status, headers and text, whether the marker attribute a
 * payload script sets on <html> is there, and every request the answer
 * document made (payload scripts ask for /pwned?...).
 *
 *   node tests/browser/xsite.mjs --cases cases.json [--artifacts DIR]
 *
 * cases.json: [{"name", "action" (absolute URL), "method" "POST"|"GET",
 *               "field", "value"}]. One JSON line per case on stdout.
 */
import fs from 'node:fs';
import path from 'node:path';
import { launchBrowser, parseArgs, report, STEP_TIMEOUT } from './lib.mjs';

const opts = parseArgs(process.argv.slice(2), 'xsite', ['cases']);
const cases = JSON.parse(fs.readFileSync(opts.cases, 'utf8'));

function attackerPage(c) {
    const esc = (s) => s.replace(/&/g, '&amp;').replace(/"/g, '&quot;')
        .replace(/</g, '&lt;').replace(/>/g, '&gt;');
    if (c.method === 'GET') {
        return `<!DOCTYPE html><html><body><a id="go" href="${esc(c.action)}">go</a>
<script>document.getElementById('go').click();</script></body></html>`;
    }
    return `<!DOCTYPE html><html><body>
<form id="f" method="POST" enctype="text/plain" action="${esc(c.action)}">
<input type="hidden" name="${esc(c.field)}" value="${esc(c.value)}"></form>
<script>document.getElementById('f').submit();</script></body></html>`;
}

const browser = await launchBrowser();
let failed = 0;
try {
    for (const c of cases) {
        const context = await browser.newContext();
        const page = await context.newPage();
        const requests = [];
        const consoleLines = [];
        await context.route('http://evil.test/**', (route) => route.fulfill({
            status: 200, contentType: 'text/html; charset=utf-8', body: attackerPage(c),
        }));
        page.on('request', (r) => requests.push(r.url()));
        page.on('console', (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
        page.on('pageerror', (e) => consoleLines.push(`pageerror: ${e.message}`));
        const target = new URL(c.action);
        const out = { case: c.name };
        try {
            const answer = page.waitForResponse(
                (r) => r.url().startsWith(target.origin + target.pathname) &&
                       r.request().isNavigationRequest(), { timeout: STEP_TIMEOUT });
            await page.goto(`http://evil.test/${encodeURIComponent(c.name)}`);
            const resp = await answer;
            await page.waitForURL((u) => u.href.startsWith(target.origin), { timeout: STEP_TIMEOUT });
            await page.waitForLoadState('load', { timeout: STEP_TIMEOUT });
            out.status = resp.status();
            out.headers = await resp.allHeaders();
            out.text = await resp.text();
            /* A script of the payload may run a little after load (an
             * <img> error): settle on requests going quiet first. */
            await page.waitForLoadState('networkidle', { timeout: STEP_TIMEOUT }).catch(() => {});
            try {
                out.marker = await page.evaluate(
                    () => document.documentElement.getAttribute('data-pwned'));
            } catch (e) {
                out.marker_error = String(e.message || e).slice(0, 200);
            }
            out.url = page.url();
        } catch (e) {
            out.error = String(e.stack || e).slice(0, 800);
            failed++;
        }
        out.requests = requests;
        out.console = consoleLines;
        if (opts.artifacts) {
            fs.mkdirSync(opts.artifacts, { recursive: true });
            try {
                await page.screenshot({ path: path.join(opts.artifacts, `${c.name}.png`) });
            } catch { /* the page may be gone */ }
        }
        report(out);
        await context.close();
    }
} finally {
    await browser.close();
}
process.exit(failed ? 1 : 0);
