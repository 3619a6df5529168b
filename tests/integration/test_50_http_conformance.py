"""XEP-0124 / XEP-0206 at the HTTP level, edge by edge (docs/conformance.md).

Raw HTTP only (http.client, sockets, and curl for HTTP/2), so each test
asserts the bytes a client sees. One stack of our own, because the edges
need configuration the shared one does not have: mod_ssl on a second
port (a session created over HTTPS, then used over HTTP), mod_http2 with
h2c, CORS origins, a mod_headers location that sets CORS itself, the
XEP-0156 host-meta handler, and a smaller BoshMaxBodySize.
"""

import gzip
import http.client
import json
import random
import select
import shutil
import socket
import ssl
import subprocess
import tempfile
import xml.etree.ElementTree as ET

import pytest

import chatstack
from conftest import MPM

NS_HTTPBIND = "http://jabber.org/protocol/httpbind"
NS_XBOSH = "urn:xmpp:xbosh"
NS_XRD = "http://docs.oasis-open.org/ns/xri/xrd-1.0"
BODY = f"{{{NS_HTTPBIND}}}body"
APP_ORIGIN = "https://app.example.com"
FIXED_ORIGIN = "https://fixed.example.com"
MAX_BODY = 16384


@pytest.fixture(scope="module")
def hstack():
    root = tempfile.mkdtemp(prefix="chattest50-")
    tls_port = chatstack.free_port()
    mods = chatstack.APACHE_MODULES
    st = chatstack.Stack(root, mpm=MPM, foreground=True)
    st.tls_port = tls_port
    st.httpd_extra = f"""
<IfModule !ssl_module>
    LoadModule ssl_module {mods}/mod_ssl.so
</IfModule>
<IfModule !http2_module>
    LoadModule http2_module {mods}/mod_http2.so
</IfModule>
Protocols h2c http/1.1
BoshMaxBodySize {MAX_BODY}
BoshAllowOrigin {APP_ORIGIN} *
BoshHostMetaURL https://chat.example.com/http-bind
<LocationMatch "^/\\.well-known/host-meta(\\.json)?$">
    SetHandler bosh-hostmeta
</LocationMatch>
<Location "/http-bind-hdr">
    SetHandler bosh
    Header always set Access-Control-Allow-Origin "{FIXED_ORIGIN}"
</Location>
Listen 127.0.0.1:{tls_port}
<VirtualHost 127.0.0.1:{tls_port}>
    SSLEngine on
    SSLCertificateFile "{st.tls_cert}"
    SSLCertificateKeyFile "{st.tls_key}"
    Protocols h2 http/1.1
    BoshAllowOrigin {APP_ORIGIN}
</VirtualHost>
"""
    try:
        st.start()
    except chatstack.StackError as e:
        st.stop()
        pytest.fail(f"stack did not come up (files under {root}):\n{e}", pytrace=False)
    yield st
    result = st.stop()
    assert all(code in (0, None) for code in result.values()), result
    shutil.rmtree(root, ignore_errors=True)


class Answer:
    def __init__(self, resp):
        self.status = resp.status
        self.header_list = [(k.lower(), v) for k, v in resp.getheaders()]
        self.headers = dict(self.header_list)
        self.raw = resp.read()
        self.data = self.raw
        if self.headers.get("content-encoding") == "gzip":
            self.data = gzip.decompress(self.raw)
        self.body = None
        if self.data and self.headers.get("content-type", "").startswith(("text/xml", "text/plain; charset=utf-8")) \
                and self.data.lstrip().startswith(b"<body"):
            self.body = ET.fromstring(self.data)

    def attr(self, name):
        return self.body.get(name) if self.body is not None else None

    def all(self, name):
        return [v for k, v in self.header_list if k == name.lower()]

    def __repr__(self):
        return f"<Answer {self.status} {self.header_list} {self.raw[:300]!r}>"


def tls_context():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def request(st, method, path, data=None, headers=None, tls=False, conn=None):
    own = conn is None
    if own:
        conn = (http.client.HTTPSConnection("127.0.0.1", st.tls_port, timeout=30,
                                            context=tls_context()) if tls else
                http.client.HTTPConnection("127.0.0.1", st.http_port, timeout=30))
    if isinstance(data, str):
        data = data.encode()
    conn.request(method, path, body=data, headers=headers or {})
    try:
        return Answer(conn.getresponse())
    finally:
        if own:
            conn.close()


def post(st, data, headers=None, path="/http-bind", **kw):
    h = {"Content-Type": "text/xml; charset=utf-8"}
    h.update(headers or {})
    return request(st, "POST", path, data, h, **kw)


def new_rid():
    return random.randint(1 << 20, 1 << 40)


def creation(rid, ver=True, extra=""):
    """wait='1': an empty request that is held costs one second at most."""
    v = "ver='1.6' " if ver else ""
    return (f"<body rid='{rid}' to='localhost' xml:lang='en' wait='1' hold='1' {v}"
            f"xmpp:version='1.0' xmlns='{NS_HTTPBIND}' xmlns:xmpp='{NS_XBOSH}'{extra}/>")


def empty(sid, rid, extra=""):
    return f"<body rid='{rid}' sid='{sid}' xmlns='{NS_HTTPBIND}'{extra}/>"


def terminate(st, sid, rid, **kw):
    return post(st, empty(sid, rid, " type='terminate'"), **kw)


def assert_hygiene(ans):
    assert "content-length" in ans.headers, ans
    assert int(ans.headers["content-length"]) == len(ans.raw), ans
    assert "transfer-encoding" not in ans.headers, ans


# ---- methods, content types, unknown headers ---------------------------------

def test_options_preflight_as_strophe_sends_it(hstack):
    ans = request(hstack, "OPTIONS", "/http-bind", headers={
        "Origin": APP_ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    assert ans.status == 200, ans
    assert ans.all("access-control-allow-origin") == [APP_ORIGIN], ans
    assert ans.all("access-control-allow-credentials") == ["true"], ans
    assert "POST" in ans.headers["access-control-allow-methods"], ans
    allowed = [h.strip().lower() for h in ans.headers["access-control-allow-headers"].split(",")]
    assert "content-type" in allowed, ans
    assert "Origin" in ans.headers.get("vary", ""), ans
    assert_hygiene(ans)


def test_wildcard_origin_gets_star_without_credentials(hstack):
    ans = request(hstack, "OPTIONS", "/http-bind", headers={
        "Origin": "https://elsewhere.example", "Access-Control-Request-Method": "POST"})
    assert ans.all("access-control-allow-origin") == ["*"], ans
    assert ans.all("access-control-allow-credentials") == [], ans


def test_origin_not_listed_gets_no_cors(hstack):
    """The TLS vhost lists only APP_ORIGIN (no *)."""
    ans = request(hstack, "OPTIONS", "/http-bind", tls=True, headers={
        "Origin": "https://elsewhere.example", "Access-Control-Request-Method": "POST"})
    assert ans.status == 200, ans
    assert ans.all("access-control-allow-origin") == [], ans
    assert ans.all("access-control-allow-credentials") == [], ans


def test_mod_headers_cors_is_not_duplicated(hstack):
    """`Header always set Access-Control-Allow-Origin` in the location wins;
    exactly one header of each kind reaches the client."""
    rid = new_rid()
    ans = post(hstack, creation(rid), {"Origin": APP_ORIGIN}, path="/http-bind-hdr")
    assert ans.status == 200, ans
    assert ans.all("access-control-allow-origin") == [FIXED_ORIGIN], ans
    # the demo site's `Header always set Cache-Control no-store` as well
    assert ans.all("cache-control") == ["no-store"], ans
    terminate(hstack, ans.attr("sid"), rid + 1)


def test_get_info_page_and_other_methods(hstack):
    ans = request(hstack, "GET", "/http-bind")
    assert ans.status == 200 and b"BOSH" in ans.data, ans
    assert_hygiene(ans)
    ans = request(hstack, "PUT", "/http-bind", data=b"x")
    assert ans.status == 405, ans
    assert "POST" in ans.headers.get("allow", ""), ans


@pytest.mark.parametrize("ctype", [None, "text/plain", "application/x-www-form-urlencoded",
                                   "application/octet-stream"])
def test_any_request_content_type_is_accepted(hstack, ctype):
    rid = new_rid()
    conn = http.client.HTTPConnection("127.0.0.1", hstack.http_port, timeout=30)
    conn.putrequest("POST", "/http-bind")
    data = creation(rid).encode()
    if ctype:
        conn.putheader("Content-Type", ctype)
    conn.putheader("Content-Length", str(len(data)))
    conn.putheader("X-Unknown-Header", "ignored")        # SHOULD ignore unknown headers
    conn.putheader("Pragma", "no-cache")
    conn.endheaders(data)
    ans = Answer(conn.getresponse())
    conn.close()
    assert ans.status == 200, ans
    assert ans.attr("sid"), ans
    assert ans.headers["content-type"].replace(" ", "") == "text/xml;charset=utf-8"
    assert_hygiene(ans)
    terminate(hstack, ans.attr("sid"), rid + 1)


def test_session_content_type_is_always_xml(hstack):
    """The creation's `content` is ignored (issue 13, docs/conformance.md):
    every answer is text/xml; charset=utf-8, whatever the client asked."""
    rid = new_rid()
    ans = post(hstack, creation(rid, extra=" content='text/plain; charset=utf-8'"))
    assert ans.headers["content-type"] == "text/xml; charset=utf-8", ans
    sid = ans.attr("sid")
    nxt = post(hstack, empty(sid, rid + 1))
    assert nxt.status == 200, nxt
    assert nxt.headers["content-type"] == "text/xml; charset=utf-8", nxt
    end = terminate(hstack, sid, rid + 2)
    assert end.headers["content-type"] == "text/xml; charset=utf-8", end


# ---- connections: keep-alive, pipelining, HTTP/2 ------------------------------

def test_keepalive_one_connection_many_requests(hstack):
    conn = http.client.HTTPConnection("127.0.0.1", hstack.http_port, timeout=30)
    rid = new_rid()
    first = request(hstack, "GET", "/http-bind", conn=conn)
    sock = conn.sock
    ans = post(hstack, creation(rid), conn=conn)
    sid = ans.attr("sid")
    poll = post(hstack, empty(sid, rid + 1), conn=conn)
    end = post(hstack, empty(sid, rid + 2, " type='terminate'"), conn=conn)
    assert conn.sock is sock, "httpd closed the keep-alive connection"
    for a in (first, ans, poll, end):
        assert a.status == 200, a
        assert_hygiene(a)
    conn.close()


def read_responses(f, n):
    """n HTTP/1.1 responses with Content-Length from a binary file."""
    out = []
    for _ in range(n):
        status = f.readline()
        headers = {}
        while True:
            line = f.readline()
            if line in (b"\r\n", b""):
                break
            k, _, v = line.decode().partition(":")
            headers[k.strip().lower()] = v.strip()
        out.append((int(status.split()[1]), headers, f.read(int(headers["content-length"]))))
    return out


def test_pipelined_requests_are_answered_in_order(hstack):
    rid = new_rid()
    b1 = creation(rid).encode()
    b2 = f"<body rid='5' sid='n1-{'0' * 32}' xmlns='{NS_HTTPBIND}'/>".encode()

    def req(b):
        return (b"POST /http-bind HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/xml\r\n"
                b"Content-Length: " + str(len(b)).encode() + b"\r\n\r\n" + b)
    with socket.create_connection(("127.0.0.1", hstack.http_port), timeout=30) as s:
        s.sendall(req(b1) + req(b2) + b"GET /http-bind HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answers = read_responses(s.makefile("rb"), 3)
    assert [a[0] for a in answers] == [200, 200, 200], answers
    sid = ET.fromstring(answers[0][2]).get("sid")
    assert sid, answers[0]
    assert ET.fromstring(answers[1][2]).get("condition") == "item-not-found", answers[1]
    assert b"BOSH endpoint" in answers[2][2]
    terminate(hstack, sid, rid + 1)


def curl(*args):
    r = subprocess.run(["curl", "-sS", "--max-time", "30", *args],
                       capture_output=True, timeout=40)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout


def parse_curl(out):
    head, _, body = out.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers.setdefault(k.strip().lower(), []).append(v.strip())
    return lines[0], headers, body


@pytest.mark.skipif(MPM == "prefork", reason="mod_http2 does not run under prefork")
def test_http2_cleartext_and_tls(hstack):
    rid = new_rid()
    out = curl("--http2-prior-knowledge", "-i", "-H", "Content-Type: text/xml",
               "--data-binary", creation(rid), hstack.bosh_url)
    status, headers, body = parse_curl(out)
    assert status.startswith("HTTP/2 200"), out[:300]
    assert headers["content-length"] == [str(len(body))], out[:300]
    sid = ET.fromstring(body).get("sid")
    assert sid
    # the same session over HTTP/2 on the TLS port (ALPN h2)
    out = curl("--http2", "-k", "-i", "-H", "Content-Type: text/xml", "--data-binary",
               empty(sid, rid + 1, " type='terminate'"),
               f"https://127.0.0.1:{hstack.tls_port}/http-bind")
    status, headers, body = parse_curl(out)
    assert status.startswith("HTTP/2 200"), out[:300]
    assert headers["content-length"] == [str(len(body))]
    assert ET.fromstring(body).tag == BODY


# ---- bodies: cap, complexity, gzip ---------------------------------------------

def big_body(ver=True):
    v = " ver='1.6'" if ver else ""
    payload = "<message to='a@localhost'><body>" + "x" * (MAX_BODY * 2) + "</body></message>"
    return f"<body rid='{new_rid()}' to='localhost'{v} xmlns='{NS_HTTPBIND}'>{payload}</body>"


def test_body_over_cap_is_clean_error(hstack):
    ans = post(hstack, big_body(ver=True))
    assert ans.status == 200 and ans.attr("type") == "terminate", ans
    assert ans.attr("condition") == "bad-request", ans
    assert_hygiene(ans)
    legacy = post(hstack, big_body(ver=False))
    assert legacy.status == 400, legacy


def test_many_tiny_nodes_within_cap_are_refused(hstack):
    """A long xmlns copied into thousands of 4-byte elements fits the byte
    cap but not the tree budget: bad-request, no allocation storm."""
    ns = "urn:" + "n" * 4000
    body = (f"<body rid='{new_rid()}' to='localhost' ver='1.6' xmlns='{NS_HTTPBIND}'>"
            f"<x xmlns='{ns}'>" + "<a/>" * 2500 + "</x></body>")
    assert len(body) < MAX_BODY
    ans = post(hstack, body)
    assert ans.status == 200 and ans.attr("condition") == "bad-request", ans


def test_gzip_request_and_response(hstack):
    """A gzipped creation request is inflated; the creation answer (about
    600 bytes with stream features) comes back gzipped with the length of
    the compressed bytes, and advertises accept='gzip'."""
    rid = new_rid()
    ans = post(hstack, gzip.compress(creation(rid).encode()),
               {"Content-Encoding": "gzip", "Accept-Encoding": "deflate, gzip"})
    assert ans.status == 200, ans
    assert ans.attr("accept") == "gzip", ans
    assert ans.headers.get("content-encoding") == "gzip", ans
    assert len(ans.raw) < len(ans.data)
    assert "Accept-Encoding" in ans.headers.get("vary", ""), ans
    assert_hygiene(ans)                                # length of the gzipped bytes
    sid = ans.attr("sid")
    # later answers never repeat accept (creation attributes only)
    poll = post(hstack, gzip.compress(empty(sid, rid + 1).encode()),
                {"Content-Encoding": "gzip", "Accept-Encoding": "gzip"})
    assert poll.status == 200 and poll.attr("accept") is None, poll
    terminate(hstack, sid, rid + 2)


@pytest.mark.parametrize("ae", [None, "identity", "gzip;q=0, identity", "br"])
def test_no_gzip_unless_accepted(hstack, ae):
    rid = new_rid()
    ans = post(hstack, creation(rid), {"Accept-Encoding": ae} if ae else {})
    assert ans.status == 200, ans
    assert "content-encoding" not in ans.headers, ans
    assert len(ans.raw) >= 512, "the answer would have been worth compressing"
    terminate(hstack, ans.attr("sid"), rid + 1)


def test_gzip_bomb_is_capped(hstack):
    bomb = (f"<body rid='{new_rid()}' to='localhost' ver='1.6' xmlns='{NS_HTTPBIND}'>"
            + " " * (8 << 20) + "</body>").encode()
    packed = gzip.compress(bomb)
    assert len(packed) < MAX_BODY
    ans = post(hstack, packed, {"Content-Encoding": "gzip"})
    assert ans.status == 200 and ans.attr("condition") == "bad-request", ans
    bad = post(hstack, b"\x1f\x8bnot gzip at all", {"Content-Encoding": "gzip"})
    assert bad.attr("condition") == "bad-request", bad


# ---- session creation: route, legacy codes -------------------------------------

def test_route_is_ignored_never_an_open_relay(hstack):
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(4)
    port = lsock.getsockname()[1]
    rid = new_rid()
    ans = post(hstack, creation(rid, extra=f" route='xmpp:127.0.0.1:{port}'"))
    assert ans.status == 200 and ans.attr("sid"), ans
    assert ans.attr("from") == "localhost", ans
    # chatd would have connected before answering; give it a second anyway
    readable, _, _ = select.select([lsock], [], [], 1.0)
    lsock.close()
    assert not readable, "the CM connected to the client-supplied route"
    terminate(hstack, ans.attr("sid"), rid + 1)


@pytest.mark.parametrize("ver", [True, False], ids=["ver", "legacy"])
def test_http_error_codes_only_for_legacy_clients(hstack, ver):
    rid = new_rid()
    ans = post(hstack, creation(rid, ver=ver))
    sid = ans.attr("sid")
    assert sid, ans
    # a rid far above the window: item-not-found
    far = post(hstack, empty(sid, rid + 1000))
    if ver:
        assert far.status == 200 and far.attr("condition") == "item-not-found", far
    else:
        assert far.status == 404 and far.raw == b"", far


# ---- security: once secure, always secure ---------------------------------------

def test_https_session_refuses_plaintext_and_survives(hstack):
    rid = new_rid()
    ans = post(hstack, creation(rid), tls=True)
    assert ans.status == 200, ans
    sid = ans.attr("sid")
    with socket.create_connection(("127.0.0.1", hstack.http_port), timeout=30) as s:
        data = empty(sid, rid + 1).encode()
        s.sendall(b"POST /http-bind HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/xml\r\n"
                  b"Content-Length: " + str(len(data)).encode() + b"\r\n\r\n" + data)
        got = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
    assert got == b"", f"plaintext request was answered: {got[:200]!r}"
    # same rid over HTTPS: the session is alive and the rid was not consumed
    again = post(hstack, empty(sid, rid + 1), tls=True)
    assert again.status == 200 and again.attr("type") is None, again
    end = terminate(hstack, sid, rid + 2, tls=True)
    assert end.status == 200, end


def test_http_session_may_move_to_https(hstack):
    rid = new_rid()
    ans = post(hstack, creation(rid))
    sid = ans.attr("sid")
    up = post(hstack, empty(sid, rid + 1), tls=True)
    assert up.status == 200 and up.attr("type") is None, up
    terminate(hstack, sid, rid + 2)


# ---- XEP-0156 -------------------------------------------------------------------

def test_host_meta_xml(hstack):
    ans = request(hstack, "GET", "/.well-known/host-meta")
    assert ans.status == 200, ans
    assert ans.headers["content-type"].startswith("application/xrd+xml"), ans
    assert ans.all("access-control-allow-origin") == ["*"], ans
    xrd = ET.fromstring(ans.data)
    assert xrd.tag == f"{{{NS_XRD}}}XRD"
    links = [(link.get("rel"), link.get("href")) for link in xrd.iter(f"{{{NS_XRD}}}Link")]
    assert links == [("urn:xmpp:alt-connections:xbosh", "https://chat.example.com/http-bind")]
    assert_hygiene(ans)


def test_host_meta_json(hstack):
    ans = request(hstack, "GET", "/.well-known/host-meta.json")
    assert ans.status == 200, ans
    assert ans.headers["content-type"].startswith("application/json"), ans
    doc = json.loads(ans.data)
    assert {"rel": "urn:xmpp:alt-connections:xbosh",
            "href": "https://chat.example.com/http-bind"} in doc["links"]
