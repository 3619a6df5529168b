"""Issue 13: nothing a stranger sends makes mod_bosh answer with something
a browser runs as script on the site's own origin.

Raw HTTP (http.client: every byte written by the test), so each test
asserts the headers a browser would get:
  - every kind of answer of every mod_bosh handler (BOSH POST, poll,
    terminate, errors, OPTIONS, GET, HEAD, httpd's own 405, prebind,
    bosh-status) carries the sandboxing CSP and X-Content-Type-Options:
    nosniff, and a site-wide `Header set` cannot take them away;
  - the session-creation `content` attribute never becomes the
    Content-Type (it used to: content='text/html' was answered text/html);
  - /sso/prebind refuses cross-site requests (Sec-Fetch-Site, Origin) and
    GET except from a same-origin script.
The browser side (a cross-site form POST rendering a prepared session's
answer) is test_31_xsite_browser.py.
"""

import base64
import http.client
import json
import random

import pytest

from signin_util import private_stack

NS_HTTPBIND = "http://jabber.org/protocol/httpbind"
NS_XBOSH = "urn:xmpp:xbosh"
APP_ORIGIN = "https://app.example.com"
BOSH_TYPE = "text/xml;charset=utf-8"


@pytest.fixture(scope="module")
def wstack():
    with private_stack("chattest97-", httpd_extra=f"""
BoshAllowOrigin {APP_ORIGIN}
# A site that sets its own headers on everything: ours must survive.
<Location "/http-bind-site">
    SetHandler bosh
    Header always set Content-Security-Policy "default-src 'self'"
    Header set X-Content-Type-Options "sniff-please"
    Header always set Referrer-Policy "same-origin"
</Location>
""") as st:
        yield st


class Answer:
    def __init__(self, resp):
        self.status = resp.status
        self.header_list = [(k.lower(), v) for k, v in resp.getheaders()]
        self.headers = dict(self.header_list)
        self.raw = resp.read()

    def all(self, name):
        return [v for k, v in self.header_list if k == name.lower()]

    def attr(self, name):
        import xml.etree.ElementTree as ET
        return ET.fromstring(self.raw).get(name)

    def __repr__(self):
        return f"<Answer {self.status} {self.header_list} {self.raw[:300]!r}>"


def request(st, method, path, data=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", st.http_port, timeout=30)
    try:
        if isinstance(data, str):
            data = data.encode()
        conn.request(method, path, body=data, headers=headers or {})
        return Answer(conn.getresponse())
    finally:
        conn.close()


def post(st, data, path="/http-bind", headers=None):
    h = {"Content-Type": "text/xml; charset=utf-8"}
    h.update(headers or {})
    return request(st, "POST", path, data, h)


def new_rid():
    return random.randint(1 << 20, 1 << 40)


def creation(rid, extra=""):
    return (f"<body rid='{rid}' to='localhost' xml:lang='en' wait='1' hold='1' ver='1.6' "
            f"xmpp:version='1.0' xmlns='{NS_HTTPBIND}' xmlns:xmpp='{NS_XBOSH}'{extra}/>")


def empty(sid, rid, extra=""):
    return f"<body rid='{rid}' sid='{sid}' xmlns='{NS_HTTPBIND}'{extra}/>"


def basic(user, password):
    return {"Authorization": "Basic " +
            base64.b64encode(f"{user}:{password}".encode()).decode()}


def assert_protected(ans, what):
    """The headers that keep an answer from running as script here."""
    csp = ans.all("content-security-policy")
    ours = [v for v in csp if "sandbox" in v and "default-src 'none'" in v
            and "frame-ancestors 'none'" in v]
    assert ours, (what, ans)
    assert ans.all("x-content-type-options") == ["nosniff"], (what, ans)
    assert ans.all("referrer-policy"), (what, ans)
    ctype = ans.headers.get("content-type", "").replace(" ", "").lower()
    # nothing a browser renders as a document with script
    for bad in ("text/html", "xhtml", "svg", "javascript", "text/xsl"):
        if bad == "text/html" and what in ("GET info page", "HEAD info page",
                                           "httpd 405", "status 405", "prebind 405"):
            continue    # fixed text from us or httpd, under the CSP sandbox
        assert bad not in ctype, (what, ans)


# ---- headers on every answer ------------------------------------------------

def test_every_bosh_answer_is_protected(wstack):
    st = wstack
    seen = {}
    rid = new_rid()
    a = post(st, creation(rid))
    assert a.status == 200, a
    sid = a.attr("sid")
    seen["creation"] = a
    seen["poll"] = post(st, empty(sid, rid + 1))
    seen["terminate"] = post(st, empty(sid, rid + 2, " type='terminate'"))
    seen["unknown sid"] = post(st, empty("n1-0123456789abcdef", 5))
    seen["bad body (terminate)"] = post(st, "<body ver='1.6' xmlns='bogus'/>")
    seen["bad legacy body (400)"] = post(st, "<nonsense")
    seen["OPTIONS preflight"] = request(st, "OPTIONS", "/http-bind", headers={
        "Origin": APP_ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    seen["GET info page"] = request(st, "GET", "/http-bind?<script>x</script>")
    seen["HEAD info page"] = request(st, "HEAD", "/http-bind")
    seen["httpd 405"] = request(st, "PUT", "/http-bind", data=b"x")
    seen["status"] = request(st, "GET", "/bosh-status")
    seen["status 405"] = request(st, "POST", "/bosh-status", data=b"x")
    assert seen["terminate"].status == 200
    assert seen["bad legacy body (400)"].status == 400, seen["bad legacy body (400)"]
    assert seen["httpd 405"].status == 405, seen["httpd 405"]
    assert seen["status 405"].status == 405, seen["status 405"]
    for what, ans in seen.items():
        assert_protected(ans, what)
    for what in ("creation", "poll", "terminate", "unknown sid", "bad body (terminate)",
                 "httpd 405", "OPTIONS preflight"):
        assert seen[what].all("cache-control") == ["no-store"], (what, seen[what])


def test_site_headers_do_not_remove_ours(wstack):
    """`Header set` for the whole site: our CSP is sent next to theirs (a
    browser enforces both), nosniff stays the only X-Content-Type-Options,
    their Referrer-Policy is kept."""
    rid = new_rid()
    a = post(wstack, creation(rid), path="/http-bind-site")
    assert a.status == 200, a
    assert "default-src 'self'" in a.all("content-security-policy"), a
    assert_protected(a, "creation on /http-bind-site")
    assert a.all("referrer-policy") == ["same-origin"], a
    post(wstack, empty(a.attr("sid"), rid + 1, " type='terminate'"), path="/http-bind-site")


# ---- the content attribute ----------------------------------------------------

@pytest.mark.parametrize("content", [
    "text/html",
    "text/html; charset=utf-8",
    "application/xhtml+xml",
    "image/svg+xml",
    "text/plain; charset=utf-8",
    "text/xml; charset=utf-8&#13;&#10;X-Injected: yes",
])
def test_content_attribute_never_sets_the_type(wstack, content):
    rid = new_rid()
    a = post(wstack, creation(rid, f" content='{content}'"))
    assert a.status == 200, a
    sid = a.attr("sid")
    assert sid, a
    nxt = post(wstack, empty(sid, rid + 1))
    end = post(wstack, empty(sid, rid + 2, " type='terminate'"))
    for ans in (a, nxt, end):
        assert ans.status == 200, ans
        assert ans.headers["content-type"].replace(" ", "").lower() == BOSH_TYPE, ans
        assert "x-injected" not in ans.headers, ans
        assert_protected(ans, f"content={content}")
    # the creation answer is still a valid XEP-0124 session creation
    # response: no `content` echoed, accept/sid/wait present
    assert a.attr("wait") and a.attr("requests") and a.attr("accept") == "gzip", a
    assert a.attr("content") is None, a


# ---- prebind refuses cross-site requests -------------------------------------

def prebind(st, method="POST", headers=None, user="dave"):
    h = basic(user, st.sso_users[user])
    h.update(headers or {})
    return request(st, method, "/sso/prebind", b"" if method == "POST" else None, h)


def allowed(ans):
    return {m.strip() for m in ans.headers.get("allow", "").split(",")}


def self_origin(st):
    return f"http://127.0.0.1:{st.http_port}"


def test_prebind_same_origin_is_served(wstack):
    for h in ({"Sec-Fetch-Site": "same-origin", "Origin": self_origin(wstack)},
              {"Origin": self_origin(wstack)},        # browser without fetch metadata
              {}):                                     # not a browser (curl)
        a = prebind(wstack, headers=h)
        assert a.status == 200, (h, a)
        assert set(json.loads(a.raw)) == {"jid", "sid", "rid"}, a
        assert_protected(a, "prebind 200")
        assert "access-control-allow-origin" not in a.headers, a
    # stock Converse.js fetches prebind_url with an XHR GET from its page
    a = prebind(wstack, "GET", {"Sec-Fetch-Site": "same-origin"})
    assert a.status == 200, a


@pytest.mark.parametrize("headers", [
    {"Sec-Fetch-Site": "cross-site", "Origin": "http://evil.example"},
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site", "Origin": "http://sub.127.0.0.1.example"},
    {"Origin": "http://evil.example"},                # browser without fetch metadata
    {"Origin": "null"},                               # sandboxed iframe, data: URL
    {"Sec-Fetch-Site": "cross-site", "Origin": "http://127.0.0.1"},  # other port
    {"Sec-Fetch-Site": "same-origin", "Origin": "http://evil.example"},
])
def test_prebind_cross_site_is_refused(wstack, headers):
    a = prebind(wstack, headers=headers)
    assert a.status == 403, (headers, a)
    assert "error" in json.loads(a.raw), a
    assert "access-control-allow-origin" not in a.headers, a
    assert_protected(a, "prebind 403")
    with open(wstack.httpd_error_log, errors="replace") as f:
        assert "BOSH00101: prebind refused" in f.read()


@pytest.mark.parametrize("headers", [{}, {"Sec-Fetch-Site": "cross-site"},
                                      {"Sec-Fetch-Site": "none"}])
def test_prebind_get_is_refused(wstack, headers):
    a = prebind(wstack, "GET", headers)
    assert a.status == 405, (headers, a)
    assert allowed(a) & {"GET", "POST"} == {"POST"}, a     # httpd adds TRACE
    assert_protected(a, "prebind 405")
    a = prebind(wstack, "PUT", headers)
    assert a.status == 405 and allowed(a) & {"GET", "POST"} == {"POST"}, a


def test_prebind_from_a_listed_origin(wstack):
    """BoshAllowOrigin names the origin: it may prebind, with CORS."""
    a = prebind(wstack, headers={"Sec-Fetch-Site": "cross-site", "Origin": APP_ORIGIN})
    assert a.status == 200, a
    assert a.headers.get("access-control-allow-origin") == APP_ORIGIN, a
    assert a.headers.get("access-control-allow-credentials") == "true", a
