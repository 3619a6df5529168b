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
import { Strophe, $pres, $msg } from 'strophe.js';

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
    'PLAIN': Strophe.SASLPlain,
    'SCRAM-SHA-1': Strophe.SASLSHA1,
    'SCRAM-SHA-256': Strophe.SASLSHA256,
};
if (!mechanisms[opts.mech]) {
    process.stderr.write(`bosh-client: unknown --mech ${opts.mech}\n`);
    process.exit(2);
}

const conn = new Strophe.Connection(opts.url, { mechanisms: [mechanisms[opts.mech]] });
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

function connect() {
    conn.connect(opts.jid, opts.password, (status, cond) => {
        emit({ event: 'status', status: statusName[status] || String(status),
               cond: cond || null, jid: conn.jid || null });
        if (status === Strophe.Status.CONNECTED && !stanzaHandler) {
            stanzaHandler = conn.addHandler(onStanza, null, null, null, null, null);
        }
    });
}

function handle(cmd) {
    switch (cmd.cmd) {
    case 'connect':
        connect();
        break;
    case 'presence':
        conn.send($pres());
        break;
    case 'join': {
        const nick = cmd.nick || Strophe.getNodeFromJid(opts.jid);
        conn.send($pres({ to: `${cmd.room}/${nick}` })
            .c('x', { xmlns: Strophe.NS.MUC }));
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
