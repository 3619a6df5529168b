"""XEP-0124 features no stock client uses, end to end through httpd.

Why this file: `see-other-uri` (BoshSeeOtherURI) and multiple streams per
session (§multi) were covered only by the pure machine's unit tests; here
raw HTTP (python http.client, every byte written by the test) goes through
mod_bosh and the relay to chatd, and the test reads exactly what a client
would. Its own Stack: the server-wide BoshSeeOtherURI must not reach the
session-wide stack other tests use.
"""

import base64
import http.client
import os
import random
import shutil
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "scripts"))
import chatstack  # noqa: E402
from signin_util import private_stack  # noqa: E402

MPM = os.environ.get("MPM", "event")
NS_HTTPBIND = "http://jabber.org/protocol/httpbind"
NS_XBOSH = "urn:xmpp:xbosh"
NS_CLIENT = "jabber:client"
BODY = f"{{{NS_HTTPBIND}}}body"
# '&' on purpose: the <uri/> must carry it XML-escaped.
SEE_SERVER = "https://chat2.example.com/http-bind?from=a&b=1"
SEE_LOCATION = "https://other.example.org/bosh"


@pytest.fixture(scope="module")
def xstack():
    # Server-wide BoshSeeOtherURI, switched off where the tests' normal
    # endpoint lives; /moved inherits it, /moved2 overrides it.
    with private_stack("chattest96-", httpd_extra=f"""
BoshSeeOtherURI "{SEE_SERVER}"
<Location "/http-bind">
    BoshSeeOtherURI none
</Location>
<Location "/moved">
    SetHandler bosh
</Location>
<Location "/moved2">
    SetHandler bosh
    BoshSeeOtherURI {SEE_LOCATION}
</Location>
""") as st:
        yield st


class Answer:
    def __init__(self, resp):
        self.status = resp.status
        self.headers = {k.lower(): v for k, v in resp.getheaders()}
        self.raw = resp.read()
        self.body = ET.fromstring(self.raw) if self.raw.startswith(b"<") else None

    def get(self, name):
        return self.body.get(name) if self.body is not None else None

    def payloads(self):
        return list(self.body) if self.body is not None else []

    def __repr__(self):
        return f"<Answer {self.status} {self.raw[:600]!r}>"


def post(st, data, path="/http-bind", timeout=30):
    conn = http.client.HTTPConnection("127.0.0.1", st.http_port, timeout=timeout)
    try:
        conn.request("POST", path, body=data.encode() if isinstance(data, str) else data,
                     headers={"Content-Type": "text/xml; charset=utf-8"})
        return Answer(conn.getresponse())
    finally:
        conn.close()


def creation(rid, ver=" ver='1.6'", wait=10, hold=1):
    return (f"<body rid='{rid}' to='localhost' xml:lang='en' wait='{wait}' hold='{hold}'"
            f"{ver} xmpp:version='1.0' xmlns='{NS_HTTPBIND}' xmlns:xmpp='{NS_XBOSH}'/>")


# ---- see-other-uri ---------------------------------------------------------

def assert_see_other(ans, uri):
    assert ans.status == 200, ans
    assert ans.headers["content-type"].startswith("text/xml"), ans
    assert int(ans.headers["content-length"]) == len(ans.raw)
    esc = uri.replace("&", "&amp;").encode()
    assert ans.raw == (b"<body type='terminate' condition='see-other-uri' "
                       b"xmlns='http://jabber.org/protocol/httpbind'><uri>" + esc +
                       b"</uri></body>"), ans
    assert ans.body[0].tag == f"{{{NS_HTTPBIND}}}uri" and ans.body[0].text == uri


def test_see_other_uri_for_creation_and_sid_requests(xstack):
    for path, uri in (("/moved", SEE_SERVER), ("/moved2", SEE_LOCATION)):
        # creation, legacy creation (no ver: XEP-0124 has no HTTP code for it)
        assert_see_other(post(xstack, creation(random.randint(1, 1 << 40)), path), uri)
        assert_see_other(post(xstack, creation(random.randint(1, 1 << 40), ver=""),
                              path), uri)
        # a request of an existing session (created on the normal endpoint)
        rid = random.randint(1 << 20, 1 << 40)
        a = post(xstack, creation(rid))
        sid = a.get("sid")
        assert sid, a
        ans = post(xstack, f"<body rid='{rid + 1}' sid='{sid}' xmlns='{NS_HTTPBIND}'/>",
                   path)
        assert_see_other(ans, uri)
        # Nothing was relayed: chatd still expects rid+1, so a terminate
        # with it ends the session (had it been relayed, this would be a
        # repeated rid answered from the buffer, and the session would live).
        ans = post(xstack, f"<body rid='{rid + 1}' sid='{sid}' type='terminate' "
                           f"xmlns='{NS_HTTPBIND}'/>")
        assert ans.status == 200 and ans.get("type") == "terminate" \
            and ans.get("condition") is None, ans
        ans = post(xstack, f"<body rid='{rid + 2}' sid='{sid}' xmlns='{NS_HTTPBIND}'/>")
        assert ans.get("condition") == "item-not-found", ans
    # The normal endpoint ("BoshSeeOtherURI none") still creates sessions.
    assert post(xstack, creation(random.randint(1, 1 << 40))).get("sid")


def test_see_other_uri_bad_value_is_config_error():
    root = tempfile.mkdtemp(prefix="chattest96c-")
    st = chatstack.Stack(root, mpm=MPM, foreground=True,
                         httpd_extra="BoshSeeOtherURI ftp://x.example/\n")
    try:
        st.write_configs()
        out = chatstack.subprocess.run(st.httpd_cmd("-t"), capture_output=True, text=True)
        assert out.returncode != 0
        assert "BoshSeeOtherURI: 'ftp://x.example/' is not an absolute" in out.stderr, out
    finally:
        shutil.rmtree(root, ignore_errors=True)


# ---- multiple streams (§multi) ---------------------------------------------

class Session:
    """One BOSH session driven by hand: every request and answer logged."""

    def __init__(self, st):
        self.st = st
        self.rid = random.randint(1 << 20, 1 << 40)
        a = post(st, creation(self.rid, wait=5, hold=1))
        assert a.status == 200 and a.get("sid"), a
        self.creation = a
        self.sid = a.get("sid")

    def send(self, inner="", timeout=30, **attrs):
        self.rid += 1
        extra = "".join(f" {k.replace('_', ':')}='{v}'" for k, v in attrs.items())
        return post(self.st, f"<body rid='{self.rid}' sid='{self.sid}'{extra} "
                             f"xmlns='{NS_HTTPBIND}' xmlns:xmpp='{NS_XBOSH}'>{inner}</body>",
                    timeout=timeout)


def find(ans, local):
    return [e for e in ans.payloads() if e.tag.endswith("}" + local) or e.tag == local]


def poll_until(sess, pred, what, timeout=15):
    """Empty requests until an answer satisfies pred (the server holds each
    for at most `wait`); returns every answer seen."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        a = sess.send()
        seen.append(a)
        if pred(a):
            return seen
        assert a.status == 200 and a.get("type") != "terminate", (what, seen)
    raise AssertionError(f"timed out waiting for {what}: {seen}")


def sign_in(sess, stream, user, password, first_answer=None):
    """SASL PLAIN, restart and bind on one stream; returns the full JID."""
    tok = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
    a = sess.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>"
                  f"{tok}</auth>", stream=stream)
    seen = [a]
    if not find(a, "success"):
        seen += poll_until(sess, lambda x: find(x, "success") or find(x, "failure"),
                           "sasl success")
    ok = [x for x in seen if find(x, "success")]
    assert ok, seen
    assert ok[0].get("stream") == stream, ok[0]
    a = sess.send(stream=stream, xmpp_restart="true", to="localhost")
    if not find(a, "features"):
        seen = poll_until(sess, lambda x: find(x, "features"), "features after restart")
        a = seen[-1]
    assert a.get("stream") == stream, a
    a = sess.send(f"<iq type='set' id='b-{stream[:6]}' xmlns='{NS_CLIENT}'>"
                  f"<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>r</resource>"
                  f"</bind></iq>", stream=stream)
    if not find(a, "iq"):
        a = poll_until(sess, lambda x: find(x, "iq"), "bind result")[-1]
    iq = find(a, "iq")[0]
    assert iq.get("type") == "result" and a.get("stream") == stream, a
    jid = iq.find(".//{urn:ietf:params:xml:ns:xmpp-bind}jid").text
    assert jid.startswith(f"{user}@localhost/"), jid
    return jid


def test_multiple_streams_end_to_end(xstack):
    ua, ub = f"ma{random.getrandbits(24):x}", f"mb{random.getrandbits(24):x}"
    pa, pb = xstack.add_user(ua), xstack.add_user(ub)
    s = Session(xstack)
    stream_a = s.creation.get("stream")
    assert stream_a and len(stream_a) >= 16, s.creation

    # §multi-add: empty body with `to`, no `stream`
    add = s.send(to="localhost")
    assert add.status == 200 and add.get("type") != "terminate", add
    stream_b = add.get("stream")
    assert stream_b and stream_b != stream_a, add
    assert add.get("from") == "localhost", add
    # the new stream's features may come with the add answer or just after
    if not find(add, "features"):
        poll_until(s, lambda x: find(x, "features") and x.get("stream") == stream_b,
                   "features of the added stream")

    jid_a = sign_in(s, stream_a, ua, pa)
    jid_b = sign_in(s, stream_b, ub, pb)

    # A -> B: arrives on B's responses, body carrying stream=B
    a = s.send(f"<message to='{jid_b}' type='chat' xmlns='{NS_CLIENT}'>"
               f"<body>hello over two streams</body></message>", stream=stream_a)
    seen = [a] + ([] if find(a, "message") else
                  poll_until(s, lambda x: find(x, "message"), "message to B"))
    got = [x for x in seen if find(x, "message")][0]
    assert got.get("stream") == stream_b, got
    msg = find(got, "message")[0]
    assert msg.get("from") == jid_a and msg.get("to") == jid_b
    assert msg.find(f"{{{NS_CLIENT}}}body").text == "hello over two streams"

    # no `stream`: broadcast. A directed presence to a third party's bare
    # JID would be invisible; a <iq> ping to the server from each stream is
    # answered on each stream, which shows both received the payload.
    a = s.send(f"<iq type='get' id='bc1' xmlns='{NS_CLIENT}'>"
               f"<ping xmlns='urn:xmpp:ping'/></iq>")
    seen = [a]
    streams_answered = lambda: {x.get("stream") for x in seen for iq in find(x, "iq")
                                if iq.get("id") == "bc1" and iq.get("type") == "result"}
    deadline = time.monotonic() + 15
    while streams_answered() != {stream_a, stream_b} and time.monotonic() < deadline:
        seen.append(s.send())
    assert streams_answered() == {stream_a, stream_b}, seen
    for x in seen:
        for iq in find(x, "iq"):
            if iq.get("id") == "bc1":
                # one stream's reply is to that stream's user
                assert iq.get("to") == (jid_a if x.get("stream") == stream_a else jid_b), x

    # unknown stream: terminate item-not-found for that stream only
    a = s.send(stream="nosuchstream0123")
    assert a.status == 200, a
    assert (a.get("type"), a.get("condition"), a.get("stream")) == \
        ("terminate", "item-not-found", "nosuchstream0123"), a

    # close A; B keeps working
    a = s.send(stream=stream_a, type="terminate")
    assert a.status == 200 and a.get("condition") is None, a
    a = s.send(f"<iq type='get' id='after' xmlns='{NS_CLIENT}'>"
               f"<ping xmlns='urn:xmpp:ping'/></iq>", stream=stream_b)
    seen = [a] + ([] if find(a, "iq") else
                  poll_until(s, lambda x: find(x, "iq"), "ping on B after A closed"))
    pong = [x for x in seen if find(x, "iq")][0]
    assert find(pong, "iq")[0].get("id") == "after" and pong.get("stream") == stream_b
    assert all(x.get("type") != "terminate" or x.get("stream") == stream_a for x in seen), seen

    # close B: the last stream, the session ends
    a = s.send(stream=stream_b, type="terminate")
    assert a.status == 200 and a.get("condition") is None, a
    a = s.send()
    assert (a.get("type"), a.get("condition")) == ("terminate", "item-not-found"), a
