"""XMPP over WebSocket (RFC 7395) through httpd's proxy (issue 17).

The demo site proxies /xmpp-websocket (mod_proxy_wstunnel, handing the
upgrade to mod_proxy_http's tunnel) to chatd's ws_listen Unix socket.
Everything here goes through httpd, as a browser would:

  - the RFC 6455 handshake and RFC 7395 framing, byte for byte, with a
    hand-written client (ws_client.py): <open/>, one element per message,
    each standalone XML, SCRAM sign-in and bind;
  - bad frames end the connection with the right close code;
  - a page from another site is refused (cross-site WebSocket hijacking),
    and so is a handshake without the xmpp subprotocol;
  - PLAIN is offered only when the browser's connection was https;
  - stock clients: Strophe.js over WebSocket chats with a native slixmpp
    user and a BOSH user, every message arriving exactly once;
  - the native port's protections hold (auth timeout);
  - XEP-0156 host-meta advertises the WebSocket URL next to BOSH;
  - Converse.js in Chromium, given websocket_url, signs in and chats.

One stack of our own: `plain_without_tls no` (the shared stack allows PLAIN
everywhere for its Strophe clients), a short auth timeout, and a TLS vhost.
"""

import http.client
import json
import os
import subprocess
import secrets
import shutil
import xml.etree.ElementTree as ET
import struct
import tempfile
import time

import pytest

import chatstack
import outage
from clients import BoshClient
from conftest import MPM
from ws_client import NS_FRAMING, NS_SASL, NS_STREAMS, Closed, WsClient, frame

AUTH_TIMEOUT = 8


@pytest.fixture(scope="module")
def wstack():
    root = tempfile.mkdtemp(prefix="chattest66-")
    mods = chatstack.APACHE_MODULES
    st = chatstack.Stack(root, mpm=MPM, foreground=True,
                         chatd_extra={"plain_without_tls": "no",
                                      "c2s_auth_timeout": str(AUTH_TIMEOUT)})
    st.tls_port = chatstack.free_port()
    st.httpd_extra = f"""
BoshHostMetaURL https://chat.example.com/http-bind
BoshHostMetaWebSocketURL wss://chat.example.com/xmpp-websocket
<LocationMatch "^/\\.well-known/host-meta(\\.json)?$">
    SetHandler bosh-hostmeta
</LocationMatch>
<IfModule !ssl_module>
    LoadModule ssl_module {mods}/mod_ssl.so
</IfModule>
Listen 127.0.0.1:{st.tls_port}
<VirtualHost 127.0.0.1:{st.tls_port}>
    SSLEngine on
    SSLCertificateFile "{st.tls_cert}"
    SSLCertificateKeyFile "{st.tls_key}"
</VirtualHost>
"""
    try:
        st.start()
    except chatstack.StackError as e:
        st.stop()
        pytest.fail(f"stack did not come up (files under {root}):\n{e}", pytrace=False)
    st.same_origin = f"http://127.0.0.1:{st.http_port}"
    st.open_clients = []
    yield st
    for c in st.open_clients:
        c.close()
    # Stop httpd only once chatd has seen every tunnel end: an open tunnel
    # holds its worker, and an httpd stop cannot end it (docs/operations.md,
    # "WebSockets and stopping httpd").
    outage.wait_until(lambda: "\nc2s_sessions 0\n" in "\n" + st.chatctl("stats").stdout,
                      30, "no sessions left in chatd")
    result = st.stop()
    with open(st.httpd_error_log, errors="replace") as f:
        log = f.read()
    # Every WebSocket was closed before the stop: no child had to be killed.
    assert "AH00045" not in log and "AH00046" not in log, log[-2000:]
    assert result["chatd"] == 0, st.logs_tail(20)
    shutil.rmtree(root, ignore_errors=True)


def ws(st, **kw):
    kw.setdefault("origin", st.same_origin)
    c = WsClient(st.http_port if not kw.get("tls") else st.tls_port, **kw)
    st.open_clients.append(c)
    return c


def user(st, prefix="w"):
    name = f"{prefix}{secrets.token_hex(3)}"
    return name, st.add_user(name)


# -- handshake and framing ----------------------------------------------------

def test_handshake_open_features_and_scram_signin(wstack):
    c = ws(wstack)
    assert c.status == 101, (c.status, c.headers)
    assert c.headers.get("sec-websocket-protocol") == "xmpp"
    opened, features = c.open_stream()
    # RFC 7395 3.4: the server's <open/> in the framing namespace.
    assert opened.tag == f"{{{NS_FRAMING}}}open"
    assert opened.get("from") == "localhost" and opened.get("version") == "1.0"
    assert opened.get("id")
    # Each message parsed on its own (ET.fromstring): namespaces declared in it.
    assert features.tag == f"{{{NS_STREAMS}}}features"
    mechs = WsClient.mechanisms(features)
    assert "SCRAM-SHA-256" in mechs and "SCRAM-SHA-1" in mechs
    # http, not https: no password in clear (issue 13's rule, WebSocket too).
    assert "PLAIN" not in mechs
    # No STARTTLS on a WebSocket: TLS is the browser's, to httpd.
    assert features.find("{urn:ietf:params:xml:ns:xmpp-tls}starttls") is None
    name, pw = user(wstack)
    jid = c.scram_sha1_login(name, pw)
    assert jid == f"{name}@localhost/ws"
    # A stanza with no xmlns of its own still reaches chatd as jabber:client,
    # and the answer declares its namespace in its own message.
    c.send_text("<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    res = c.recv_element()
    assert res.tag == "{jabber:client}iq" and res.get("type") == "result" and res.get("id") == "p1"


def test_client_close_gets_close_then_websocket_close(wstack):
    c = ws(wstack)
    c.open_stream()
    c.send_text(f"<close xmlns='{NS_FRAMING}'/>")
    code, _reason, texts = c.wait_close()
    assert texts and texts[-1].startswith("<close") and NS_FRAMING in texts[-1], texts
    assert code == 1000


def test_fragments_with_a_ping_between(wstack):
    c = ws(wstack)
    c.open_stream()
    name, pw = user(wstack)
    c.scram_sha1_login(name, pw)
    msg = "<iq type='get' id='frag' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>".encode()
    c.send_raw(frame(1, msg[:10], fin=False) + frame(9, b"are you there") +
               frame(0, msg[10:30], fin=False) + frame(0, msg[30:], fin=True))
    op, payload = c.recv_frame()
    assert (op, payload) == (10, b"are you there")      # the pong, at once
    res = c.recv_element()
    assert res.get("id") == "frag" and res.get("type") == "result"


BAD_FRAMES = [
    ("unmasked", lambda: frame(1, "<presence/>", mask=False), 1002),
    ("binary", lambda: frame(2, b"<presence/>"), 1003),
    ("bad utf-8", lambda: frame(1, b"<message><body>\xc0\xaf</body></message>"), 1007),
    ("continuation first", lambda: frame(0, "<presence/>"), 1002),
    ("fragmented ping", lambda: frame(9, b"x", fin=False), 1002),
    ("rsv1 without an extension", lambda: frame(1, "<presence/>", rsv=4), 1002),
    # 1 MiB announced, more than max_stanza: refused from the header alone.
    ("too big", lambda: struct.pack("!BBQ", 0x81, 0xFF, 1 << 20) + b"\0\0\0\0", 1009),
]


@pytest.mark.parametrize("what,make,code", BAD_FRAMES, ids=[b[0] for b in BAD_FRAMES])
def test_bad_frame_gets_its_close_code(wstack, what, make, code):
    c = ws(wstack)
    c.open_stream()
    c.send_raw(make())
    got, _reason, _texts = c.wait_close()
    assert got == code, f"{what}: closed with {got}"
    # And then the connection ends (no lingering tunnel).
    c.sock.settimeout(10)
    with pytest.raises(Closed):
        while True:
            c.recv_frame()


def test_two_elements_in_one_message_is_a_stream_error(wstack):
    c = ws(wstack)
    c.open_stream()
    name, pw = user(wstack)
    c.scram_sha1_login(name, pw)
    ping = "<iq type='get' id='{}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>"
    c.send_text(ping.format("one") + ping.format("two"))
    code, _reason, texts = c.wait_close()
    assert any("not-well-formed" in t for t in texts), texts
    assert not any("'two'" in t for t in texts), texts
    assert code == 1000


# -- who may connect ----------------------------------------------------------

def test_cross_origin_handshake_refused(wstack):
    c = ws(wstack, origin="https://evil.example")
    assert c.status == 403, (c.status, c.headers)
    # The same origin on another port is another origin.
    c = ws(wstack, origin=f"http://127.0.0.1:{wstack.http_port + 1}")
    assert c.status == 403


def test_without_xmpp_subprotocol_refused(wstack):
    c = ws(wstack, protocol="chat")
    assert c.status == 400 and b"xmpp" in c.body


def test_plain_only_when_the_browser_used_https(wstack):
    # Over TLS to httpd: httpd says https (X-Forwarded-Proto), PLAIN offered.
    c = ws(wstack, tls=True, origin=f"https://127.0.0.1:{wstack.tls_port}",
           host=f"127.0.0.1:{wstack.tls_port}")
    assert c.status == 101
    _, features = c.open_stream()
    assert "PLAIN" in WsClient.mechanisms(features)
    # Plain http claiming https: httpd overwrites the client's header.
    c = ws(wstack, extra_headers=["X-Forwarded-Proto: https"])
    assert c.status == 101
    _, features = c.open_stream()
    assert "PLAIN" not in WsClient.mechanisms(features)


def test_auth_timeout_holds_on_websocket(wstack):
    c = ws(wstack)
    c.open_stream()
    t0 = time.monotonic()
    code, _reason, texts = c.wait_close(timeout=AUTH_TIMEOUT + 30)
    assert any("connection-timeout" in t for t in texts), texts
    assert code == 1000
    assert time.monotonic() - t0 >= AUTH_TIMEOUT - 1


# -- stock clients: WebSocket, BOSH and native together -----------------------

@pytest.fixture
def trio(wstack):
    """A Strophe.js user over WebSocket, one over BOSH, one native (slixmpp)."""
    from native_client import NativeClient
    started = []
    wname, wpw = user(wstack, "ws")
    bname, bpw = user(wstack, "bo")
    nname, npw = user(wstack, "na")
    w = BoshClient(wstack.ws_url, f"{wname}@localhost/web", wpw, mech="SCRAM-SHA-256",
                   extra_args=["--origin", wstack.same_origin])
    started.append(w)
    b = BoshClient(wstack.bosh_url, f"{bname}@localhost/bosh", bpw, mech="SCRAM-SHA-256")
    started.append(b)
    n = NativeClient("127.0.0.1", wstack.xmpp_port, f"{nname}@localhost/nat", npw,
                     mech="SCRAM-SHA-256")
    started.append(n)
    try:
        w.full, b.full, n.full = w.connect(), b.connect(), n.connect()
        for c in (w, b, n):
            c.send("presence")
        yield w, b, n
    finally:
        for c in started:
            c.close()


def test_websocket_chats_with_native_and_bosh_exactly_once(trio):
    w, b, n = trio
    marks = {id(c): len(c.events) for c in trio}
    sent = []
    for frm, to in ((w, n), (n, w), (w, b), (b, w)):
        body = f"hi {secrets.token_hex(4)}"
        frm.send("chat", to=to.full, body=body)
        sent.append((to, body))
    for to, body in sent:
        to.wait_stanza(start=marks[id(to)], name="message", type="chat", body=body)
    # A last message each way, then count: nothing doubled on the way.
    for frm, to in ((n, w), (w, n), (b, w), (w, b)):
        body = f"last {secrets.token_hex(4)}"
        frm.send("chat", to=to.full, body=body)
        to.wait_stanza(start=marks[id(to)], name="message", type="chat", body=body)
    for to, body in sent:
        got = to.stanzas(start=marks[id(to)], name="message", type="chat", body=body)
        assert len(got) == 1, (body, got)


# -- XEP-0156 ---------------------------------------------------------------------

def host_meta(st, path):
    conn = http.client.HTTPConnection("127.0.0.1", st.http_port, timeout=10)
    conn.request("GET", path)
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    assert resp.status == 200, (resp.status, body)
    return body


def test_host_meta_advertises_websocket(wstack):
    xrd = ET.fromstring(host_meta(wstack, "/.well-known/host-meta"))
    links = [(link.get("rel"), link.get("href"))
             for link in xrd.iter("{http://docs.oasis-open.org/ns/xri/xrd-1.0}Link")]
    assert links == [("urn:xmpp:alt-connections:xbosh", "https://chat.example.com/http-bind"),
                     ("urn:xmpp:alt-connections:websocket",
                      "wss://chat.example.com/xmpp-websocket")]
    doc = json.loads(host_meta(wstack, "/.well-known/host-meta.json"))
    assert {"rel": "urn:xmpp:alt-connections:websocket",
            "href": "wss://chat.example.com/xmpp-websocket"} in doc["links"]


# -- Converse.js in Chromium ------------------------------------------------------

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} not installed")
def test_converse_in_chromium_over_websocket(wstack):
    script = os.path.join(chatstack.REPO, "tests", "browser", "websocket.mjs")
    (an, ap), (bn, bp) = user(wstack, "wa"), user(wstack, "wb")
    artifacts = os.path.join(wstack.root, "browser")
    r = subprocess.run(["node", script, "--base", wstack.base_url, "--alice", an,
                        "--alice-password", ap, "--bob", bn, "--bob-password", bp,
                        "--artifacts", artifacts],
                       capture_output=True, text=True, timeout=240, cwd=chatstack.REPO)
    steps = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    passed = [s["step"] for s in steps if s.get("ok")]
    assert r.returncode == 0, (f"browser run failed (exit {r.returncode}); passed: {passed}\n"
                               f"{r.stdout[-4000:]}\n{r.stderr[-2000:]}\nartifacts: {artifacts}")
    assert "both use /xmpp-websocket, not BOSH" in passed
    assert "bob -> room, alice sees it" in passed


# -- httpd stopping with WebSockets open ------------------------------------------

def test_graceful_restart_closes_the_old_childs_websockets(wstack):
    """A tunnel holds its httpd worker until one side closes. On a graceful
    restart the old child asks chatd (BoshWebSocketDrain) to close the
    WebSockets it carries: the browser gets stream error reset and close
    code 1001, and can reconnect at once through a new child."""
    c = ws(wstack)
    c.open_stream()
    name, pw = user(wstack)
    c.scram_sha1_login(name, pw)
    wstack.httpd_graceful()
    code, _reason, texts = c.wait_close(timeout=30)
    assert code == 1001, (code, texts)
    assert any("<reset" in t for t in texts), texts
    # The new generation serves WebSockets.
    c2 = ws(wstack)
    assert c2.status == 101
    c2.open_stream()
    assert c2.scram_sha1_login(name, pw) == f"{name}@localhost/ws"
