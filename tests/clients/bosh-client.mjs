#!/usr/bin/env node
/*
 * bosh-client.mjs: a scriptable XMPP-over-BOSH client for the integration
 * tests, built on the stock Strophe.js 5 library (the same code Converse.js
 * runs in browsers), so the tests exercise mod_bosh + chatd with a real
 * client rather than with hand-written bodies only.
 *
 *   node tests/clients/bosh-client.mjs --url http://127.0.0.1:8080/http-bind \
 *        --jid alice@localhost --password secret [--mech PLAIN] [--debug]
 *
 * With --url ws://127.0.0.1:8080/xmpp-websocket [--origin http://...] the
 * same client speaks XMPP over WebSocket (RFC 7395) instead of BOSH.
 *
 * Protocol: one JSON command per line on stdin, one JSON event per line on
 * stdout. Every command may carry an "id"; it is echoed in the "done" event
 * that follows the command.
 *
 *   {"cmd":"connect"}                                  -> {"event":"status",...}
 *   {"cmd":"presence"}                                 initial presence
 *   {"cmd":"join","room":"lobby@conference.localhost","nick":"alice"}
 *   {"cmd":"groupchat","to":"lobby@conference.localhost","body":"hi"}
 *   {"cmd":"chat","to":"bob@localhost","body":"hi"}
 *   {"cmd":"raw","xml":"<iq .../>"}                    any stanza, verbatim
 *   {"cmd":"disconnect"}  {"cmd":"quit"}
 *   {"cmd":"attach","jid":..,"sid":..,"rid":..}      prebind: continue a
 *        session the server signed in (status ATTACHED); --mech EXTERNAL
 *        and --header 'Authorization: Basic ..' serve the SSO path (issue 8)
 *
 * More commands (tests/integration/test_61_same_scenarios.py runs the same
 * scenarios with slixmpp, tests/integration/native_client.py); the ones
 * that send an iq report its answer as {"event":"iq","id":<cmd id>,
 * "type":"result"|"error"|"timeout","cond":..,"xml":..}:
 *   {"cmd":"presence","priority":5,"status":"here"}   (both optional)
 *   {"cmd":"unavailable"}
 *   {"cmd":"roster_get","id":..}  {"cmd":"roster_add","jid":..,"name":..,"id":..}
 *   {"cmd":"roster_remove","jid":..,"id":..}
 *   {"cmd":"subscribe","to":..}  {"cmd":"subscribed","to":..}
 *   {"cmd":"join",...,"password":"pw","maxstanzas":5}   (both optional)
 *   {"cmd":"leave","room":..,"nick":..}  {"cmd":"subject","room":..,"subject":..}
 *   {"cmd":"room_config","room":..,"fields":{"var":value},"id":..}
 *        fetch the owner form, change the given fields, submit all fields
 *   {"cmd":"kick","room":..,"nick":..,"id":..}  {"cmd":"ban","room":..,"jid":..,"id":..}
 *   {"cmd":"vcard_set","fn":..,"nickname":..,"id":..}  {"cmd":"vcard_get","jid":..,"id":..}
 *   {"cmd":"iq_get","to":..,"child":"<query xmlns='..'/>","id":..}
 *
 * Events: {"event":"status","status":"CONNECTED","cond":null,"jid":...},
 *         {"event":"stanza","name":"message","from":..,"to":..,"type":..,
 *          "id":..,"body":..,"xml":"<message .../>"},
 *         {"event":"done","id":..}, {"event":"error","message":..}.
 *
 * Strophe under Node needs an XMLHttpRequest; xhr2 provides one but without
 * responseXML, and Strophe then drops every reply. The subclass below adds a
 * responseXML getter that parses responseText with xmldom.
 */
import readline from 'node:readline';
import XHR2 from 'xhr2';
import { DOMParser } from '@xmldom/xmldom';
import { Strophe, $pres, $msg, $iq } from 'strophe.js';

class XMLHttpRequestWithXML extends XHR2 {
    get responseXML() {
        if (this.readyState !== 4 || !this.responseText) return null;
        try {
            return new DOMParser({ onError: () => {} })
                .parseFromString(this.responseText, 'text/xml');
        } catch {
            return null;
        }
    }
}
globalThis.XMLHttpRequest = XMLHttpRequestWithXML;

function parseArgs(argv) {
    const opts = { mech: 'PLAIN', debug: false };
    for (let i = 0; i < argv.length; i++) {
        const a = argv[i];
        if (a === '--debug') opts.debug = true;
        else if (a.startsWith('--')) opts[a.slice(2)] = argv[++i];
    }
    for (const k of ['url', 'jid', 'password']) {
        if (!opts[k]) {
            process.stderr.write(`bosh-client: --${k} is required\n`);
            process.exit(2);
        }
    }
    return opts;
}

const opts = parseArgs(process.argv.slice(2));

/* A ws:// or wss:// --url makes Strophe speak XMPP over WebSocket (RFC
 * 7395) instead of BOSH: the same client, commands and events (issue 17).
 * Node 20 has no global WebSocket; the `ws` package provides one. A
 * browser always sends Origin; --origin sends one too (the page's). */
if (/^wss?:/.test(opts.url)) {
    const { WebSocket: NodeWebSocket } = await import('ws');
    globalThis.WebSocket = class extends NodeWebSocket {
        constructor(url, protocols) {
            super(url, protocols, opts.origin ? { origin: opts.origin } : {});
        }
    };
}

/* stdout carries only our JSON events: library logging goes to stderr. */
for (const level of ['log', 'debug', 'info', 'warn', 'error']) {
    console[level] = (...args) => process.stderr.write(args.join(' ') + '\n');
}
Strophe.setLogLevel(opts.debug ? Strophe.LogLevel.DEBUG : Strophe.LogLevel.WARN);

function emit(obj) {
    process.stdout.write(JSON.stringify(obj) + '\n');
}

const statusName = {};
for (const [name, value] of Object.entries(Strophe.Status)) statusName[value] = name;

/* Only the mechanism asked for, so a test states which one it exercises. */
const mechanisms = {
    /* Issue 8: the site vouches (BoshAuthFromApache); no password is sent. */
    'EXTERNAL': Strophe.SASLExternal,
    'PLAIN': Strophe.SASLPlain,
    'SCRAM-SHA-1': Strophe.SASLSHA1,
    'SCRAM-SHA-256': Strophe.SASLSHA256,
};
if (!mechanisms[opts.mech]) {
    process.stderr.write(`bosh-client: unknown --mech ${opts.mech}\n`);
    process.exit(2);
}

/* --header 'Name: value' (one): sent with every BOSH request, e.g. the
 * site's HTTP Basic credentials for a BoshAuthFromApache location. */
const customHeaders = {};
for (const h of [].concat(opts.header || [])) {
    const i = h.indexOf(':');
    if (i > 0) customHeaders[h.slice(0, i).trim()] = h.slice(i + 1).trim();
}
const conn = new Strophe.Connection(opts.url, { mechanisms: [mechanisms[opts.mech]], customHeaders });
if (opts.debug) {
    conn.rawInput = (data) => process.stderr.write(`RECV ${data}\n`);
    conn.rawOutput = (data) => process.stderr.write(`SENT ${data}\n`);
}

function childText(el, name) {
    const kids = el.getElementsByTagName(name);
    return kids.length ? kids[0].textContent : null;
}

function onStanza(el) {
    emit({
        event: 'stanza',
        name: el.tagName,
        from: el.getAttribute('from'),
        to: el.getAttribute('to'),
        type: el.getAttribute('type'),
        id: el.getAttribute('id'),
        body: childText(el, 'body'),
        xml: Strophe.serialize(el),
    });
    return true; /* keep the handler */
}

let stanzaHandler = null;

const NS_MUC_ADMIN = 'http://jabber.org/protocol/muc#admin';
const NS_MUC_OWNER = 'http://jabber.org/protocol/muc#owner';
const NS_XDATA = 'jabber:x:data';

function iqError(el) {
    if (!el) return null;
    const errs = el.getElementsByTagName('error');
    if (!errs.length) return null;
    for (let c = errs[0].firstChild; c; c = c.nextSibling) {
        if (c.nodeType === 1 && c.tagName !== 'text') return c.tagName;
    }
    return null;
}

/* Send an iq; report the answer as an "iq" event carrying the command's id. */
function sendIQ(cmd, iq, onResult) {
    conn.sendIQ(iq, (el) => {
        if (onResult) {
            onResult(el);
            return;
        }
        emit({ event: 'iq', id: cmd.id ?? null, type: 'result', cond: null,
               xml: Strophe.serialize(el) });
    }, (el) => {
        emit({ event: 'iq', id: cmd.id ?? null, type: el ? 'error' : 'timeout',
               cond: iqError(el), xml: el ? Strophe.serialize(el) : '' });
    }, 15000);
}

function formValue(v) {
    if (v === true) return '1';
    if (v === false) return '0';
    return String(v);
}

/* What Converse does: fetch the owner form, submit it with changes. */
function roomConfig(cmd) {
    const get = $iq({ type: 'get', to: cmd.room }).c('query', { xmlns: NS_MUC_OWNER });
    sendIQ(cmd, get, (res) => {
        const want = cmd.fields || {};
        const x = res.getElementsByTagNameNS(NS_XDATA, 'x')[0];
        const have = new Set();
        const submit = $iq({ type: 'set', to: cmd.room })
            .c('query', { xmlns: NS_MUC_OWNER }).c('x', { xmlns: NS_XDATA, type: 'submit' });
        for (const f of x ? Array.from(x.getElementsByTagName('field')) : []) {
            const v = f.getAttribute('var');
            if (!v || f.getAttribute('type') === 'fixed') continue;
            have.add(v);
            const field = { var: v };
            if (f.getAttribute('type')) field.type = f.getAttribute('type');
            submit.c('field', field);
            if (v in want) {
                const values = Array.isArray(want[v]) ? want[v] : [want[v]];
                for (const one of values) submit.c('value').t(formValue(one)).up();
            } else {
                for (const val of Array.from(f.getElementsByTagName('value'))) {
                    if (val.parentNode === f) submit.c('value').t(val.textContent).up();
                }
            }
            submit.up();
        }
        for (const v of Object.keys(want)) {
            if (!have.has(v)) {
                emit({ event: 'iq', id: cmd.id ?? null, type: 'error',
                       cond: `form has no field ${v}`, xml: Strophe.serialize(res) });
                return;
            }
        }
        sendIQ(cmd, submit.tree());
    });
}

/* wait: optional BOSH 'wait' (Strophe's default 60). Strophe's retry
 * back-off after a 5xx is min(1.1 * wait, sends^3) s, so a short wait lets
 * a test watch the whole retry schedule, give-up included, quickly. */
function connect(wait) {
    conn.connect(opts.jid, opts.password, (status, cond) => {
        emit({ event: 'status', status: statusName[status] || String(status),
               cond: cond || null, jid: conn.jid || null });
        if (status === Strophe.Status.CONNECTED && !stanzaHandler) {
            stanzaHandler = conn.addHandler(onStanza, null, null, null, null, null);
        }
    }, wait);
}

/* Prebind: continue a session the server already signed in and bound
 * ({"cmd":"attach","jid":..,"sid":..,"rid":..}); status ATTACHED. */
function attach(cmd) {
    conn.attach(cmd.jid, cmd.sid, cmd.rid, (status, cond) => {
        emit({ event: 'status', status: statusName[status] || String(status),
               cond: cond || null, jid: conn.jid || null });
        if ((status === Strophe.Status.ATTACHED || status === Strophe.Status.CONNECTED) &&
            !stanzaHandler) {
            stanzaHandler = conn.addHandler(onStanza, null, null, null, null, null);
        }
    });
}

function handle(cmd) {
    switch (cmd.cmd) {
    case 'attach':
        attach(cmd);
        break;
    case 'connect':
        connect(cmd.wait);
        break;
    case 'presence': {
        const p = $pres();
        if (cmd.priority !== undefined && cmd.priority !== null)
            p.c('priority').t(String(cmd.priority)).up();
        if (cmd.status) p.c('status').t(cmd.status).up();
        conn.send(p);
        break;
    }
    case 'unavailable':
        conn.send($pres({ type: 'unavailable' }));
        break;
    case 'join': {
        const nick = cmd.nick || Strophe.getNodeFromJid(opts.jid);
        const p = $pres({ to: `${cmd.room}/${nick}` }).c('x', { xmlns: Strophe.NS.MUC });
        if (cmd.password) p.c('password').t(cmd.password).up();
        if (cmd.maxstanzas !== undefined && cmd.maxstanzas !== null)
            p.c('history', { maxstanzas: String(cmd.maxstanzas) }).up();
        conn.send(p);
        break;
    }
    case 'leave':
        conn.send($pres({ to: `${cmd.room}/${cmd.nick}`, type: 'unavailable' }));
        break;
    case 'subject':
        conn.send($msg({ to: cmd.room, type: 'groupchat' }).c('subject').t(cmd.subject));
        break;
    case 'roster_get':
        sendIQ(cmd, $iq({ type: 'get' }).c('query', { xmlns: Strophe.NS.ROSTER }));
        break;
    case 'roster_add': {
        const item = { jid: cmd.jid };
        if (cmd.name) item.name = cmd.name;
        sendIQ(cmd, $iq({ type: 'set' }).c('query', { xmlns: Strophe.NS.ROSTER }).c('item', item));
        break;
    }
    case 'roster_remove':
        sendIQ(cmd, $iq({ type: 'set' }).c('query', { xmlns: Strophe.NS.ROSTER })
            .c('item', { jid: cmd.jid, subscription: 'remove' }));
        break;
    case 'subscribe':
    case 'subscribed':
        conn.send($pres({ to: cmd.to, type: cmd.cmd }));
        break;
    case 'room_config':
        roomConfig(cmd);
        break;
    case 'kick': {
        const item = { nick: cmd.nick, role: 'none' };
        const iq = $iq({ type: 'set', to: cmd.room }).c('query', { xmlns: NS_MUC_ADMIN }).c('item', item);
        if (cmd.reason) iq.c('reason').t(cmd.reason);
        sendIQ(cmd, iq);
        break;
    }
    case 'ban': {
        const iq = $iq({ type: 'set', to: cmd.room }).c('query', { xmlns: NS_MUC_ADMIN })
            .c('item', { jid: cmd.jid, affiliation: 'outcast' });
        if (cmd.reason) iq.c('reason').t(cmd.reason);
        sendIQ(cmd, iq);
        break;
    }
    case 'vcard_set': {
        const iq = $iq({ type: 'set' }).c('vCard', { xmlns: 'vcard-temp' }).c('FN').t(cmd.fn).up();
        if (cmd.nickname) iq.c('NICKNAME').t(cmd.nickname).up();
        sendIQ(cmd, iq);
        break;
    }
    case 'vcard_get': {
        const attrs = { type: 'get' };
        if (cmd.jid) attrs.to = cmd.jid;
        sendIQ(cmd, $iq(attrs).c('vCard', { xmlns: 'vcard-temp' }));
        break;
    }
    case 'iq_get': {
        const attrs = { type: 'get' };
        if (cmd.to) attrs.to = cmd.to;
        const child = new DOMParser().parseFromString(cmd.child, 'text/xml').documentElement;
        sendIQ(cmd, $iq(attrs).cnode(child).tree());
        break;
    }
    case 'groupchat':
        conn.send($msg({ to: cmd.to, type: 'groupchat', id: cmd.msgid || conn.getUniqueId('gc') })
            .c('body').t(cmd.body));
        break;
    case 'chat':
        conn.send($msg({ to: cmd.to, type: 'chat', id: cmd.msgid || conn.getUniqueId('chat') })
            .c('body').t(cmd.body));
        break;
    case 'raw': {
        const doc = new DOMParser().parseFromString(cmd.xml, 'text/xml');
        conn.send(doc.documentElement);
        break;
    }
    case 'disconnect':
        conn.disconnect(cmd.reason || 'bye');
        break;
    case 'quit':
        conn.flush();
        emit({ event: 'done', id: cmd.id ?? null });
        process.exit(0);
        break;
    default:
        emit({ event: 'error', message: `unknown command ${cmd.cmd}` });
        return;
    }
    emit({ event: 'done', id: cmd.id ?? null });
}

const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (line) => {
    if (!line.trim()) return;
    let cmd;
    try {
        cmd = JSON.parse(line);
    } catch (e) {
        emit({ event: 'error', message: `bad json: ${e.message}` });
        return;
    }
    try {
        handle(cmd);
    } catch (e) {
        emit({ event: 'error', message: String(e && e.stack || e) });
    }
});
rl.on('close', () => process.exit(0));

process.on('uncaughtException', (e) => {
    emit({ event: 'error', message: String(e && e.stack || e) });
});

emit({ event: 'ready' });
