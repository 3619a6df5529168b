"""BOSH at the HTTP level, with hand-written bodies (XEP-0124 / XEP-0206).

python's http.client talks to /http-bind directly, so every byte of the
request is what the test says, and every header of the answer is checked.
"""

import http.client
import random
import socket
import xml.etree.ElementTree as ET

import pytest

NS_HTTPBIND = "http://jabber.org/protocol/httpbind"
NS_XBOSH = "urn:xmpp:xbosh"
NS_STREAM = "http://etherx.jabber.org/streams"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
BODY = f"{{{NS_HTTPBIND}}}body"


class Answer:
    def __init__(self, resp):
        self.status = resp.status
        self.headers = {k.lower(): v for k, v in resp.getheaders()}
        self.raw = resp.read()
        self.body = None
        if self.raw and self.headers.get("content-type", "").startswith("text/xml"):
            self.body = ET.fromstring(self.raw)

    def attr(self, name):
        return self.body.get(name) if self.body is not None else None

    def __repr__(self):
        return f"<Answer {self.status} {self.headers} {self.raw[:500]!r}>"


def post(stack, data, headers=None, timeout=30):
    if isinstance(data, str):
        data = data.encode()
    conn = http.client.HTTPConnection("127.0.0.1", stack.http_port, timeout=timeout)
    h = {"Content-Type": "text/xml; charset=utf-8"}
    h.update(headers or {})
    conn.request("POST", "/http-bind", body=data, headers=h)
    try:
        return Answer(conn.getresponse())
    finally:
        conn.close()


def new_rid():
    return random.randint(1 << 20, 1 << 40)


def creation_body(rid, to="localhost", wait=10, hold=1, extra=""):
    return (f"<body rid='{rid}' to='{to}' xml:lang='en' wait='{wait}' hold='{hold}' "
            f"content='text/xml; charset=utf-8' ver='1.6' xmpp:version='1.0' "
            f"xmlns='{NS_HTTPBIND}' xmlns:xmpp='{NS_XBOSH}'{extra}/>")


def assert_terminate(ans, condition):
    assert ans.status == 200, ans
    assert ans.body is not None and ans.body.tag == BODY, ans
    assert ans.attr("type") == "terminate", ans
    assert ans.attr("condition") == condition, ans


def assert_http_hygiene(ans):
    """XEP-0124 §overview: Content-Length, no chunking, text/xml utf-8."""
    assert "content-length" in ans.headers, ans
    assert int(ans.headers["content-length"]) == len(ans.raw)
    assert "chunked" not in ans.headers.get("transfer-encoding", "")
    assert ans.headers["content-type"].replace(" ", "").lower() == "text/xml;charset=utf-8"


def terminate(stack, sid, rid):
    return post(stack, f"<body rid='{rid}' sid='{sid}' type='terminate' xmlns='{NS_HTTPBIND}'>"
                       f"<presence type='unavailable' xmlns='jabber:client'/></body>")


@pytest.fixture
def session(stack):
    """A fresh BOSH session: (creation answer, sid, next rid). Terminated after."""
    rid = new_rid()
    ans = post(stack, creation_body(rid))
    sid = ans.attr("sid")
    state = {"rid": rid + 1}
    yield ans, sid, state
    if sid:
        terminate(stack, sid, state["rid"])


def test_session_creation_attributes(session):
    ans, sid, _ = session
    assert ans.status == 200, ans
    assert_http_hygiene(ans)
    assert ans.body.tag == BODY
    assert ans.attr("type") in (None, ""), ans
    assert sid and sid.startswith("n1-"), ans          # node id prefix routes later requests
    assert len(sid) >= 3 + 32, "sid should carry at least 128 random bits"
    hold = int(ans.attr("hold"))
    assert hold == 1
    assert int(ans.attr("requests")) > hold
    assert 0 < int(ans.attr("wait")) <= 10                # never above the client's wait
    assert ans.attr("ver")
    assert tuple(map(int, ans.attr("ver").split("."))) <= (1, 11)
    assert ans.body.get(f"{{{NS_XBOSH}}}restartlogic") == "true"
    assert ans.body.get(f"{{{NS_XBOSH}}}version") == "1.0"
    assert int(ans.attr("inactivity")) > 0


def test_session_creation_offers_sasl(stack, session):
    ans, sid, state = session
    features = ans.body.find(f"{{{NS_STREAM}}}features")
    if features is None:
        # XEP-0206 allows features in a later response: poll once
        poll = post(stack, f"<body rid='{state['rid']}' sid='{sid}' xmlns='{NS_HTTPBIND}'/>")
        state["rid"] += 1
        assert poll.status == 200, poll
        features = poll.body.find(f"{{{NS_STREAM}}}features")
    assert features is not None, "no stream:features after creation + one poll"
    mechs = [m.text for m in features.iter(f"{{{NS_SASL}}}mechanism")]
    assert mechs, features
    assert "PLAIN" in mechs or any(m.startswith("SCRAM-") for m in mechs)


def test_sessions_get_distinct_sids(stack):
    sids = set()
    for _ in range(3):
        rid = new_rid()
        ans = post(stack, creation_body(rid))
        assert ans.status == 200, ans
        sids.add(ans.attr("sid"))
        terminate(stack, ans.attr("sid"), rid + 1)
    assert len(sids) == 3


def test_terminate_answers_empty_body(stack):
    rid = new_rid()
    ans = post(stack, creation_body(rid))
    sid = ans.attr("sid")
    end = terminate(stack, sid, rid + 1)
    assert end.status == 200, end
    assert_http_hygiene(end)
    # the session is gone afterwards
    again = post(stack, f"<body rid='{rid + 2}' sid='{sid}' xmlns='{NS_HTTPBIND}'/>")
    assert_terminate(again, "item-not-found")


@pytest.mark.parametrize("data", [
    f"<body xmlns='{NS_HTTPBIND}' rid='1' ver='1.6'><unclosed></body>",
    f"<body rid='7' ver='1.6' xmlns='{NS_HTTPBIND}'>text at wrapper level</body>",
    f"<body rid='8' ver='1.6' xmlns='{NS_HTTPBIND}'><!-- comment --></body>",
    f"<!DOCTYPE body [<!ENTITY x 'y'>]><body rid='9' ver='1.6' xmlns='{NS_HTTPBIND}'>&x;</body>",
], ids=["unclosed", "wrapper-text", "comment", "dtd"])
def test_malformed_body_is_terminate_bad_request(stack, data):
    """A client that speaks ver >= 1.6 gets 200 + terminate (XEP-0124 §errorstatus)."""
    ans = post(stack, data)
    assert_terminate(ans, "bad-request")
    assert_http_hygiene(ans)


@pytest.mark.parametrize("data", [
    "this is not xml",
    f"<body xmlns='{NS_HTTPBIND}' rid='1'><unclosed></body>",
    f"<notbody xmlns='{NS_HTTPBIND}' rid='5' ver='1.6'/>",
], ids=["not-xml", "unclosed-no-ver", "not-a-body"])
def test_malformed_legacy_body_is_http_400(stack, data):
    """No ver (or no <body/> at all to carry one): treated as a legacy
    client, which gets the HTTP condition (400)."""
    ans = post(stack, data)
    assert ans.status == 400, ans
    assert "content-length" in ans.headers


def test_oversized_body_gets_clean_error(stack):
    """1 MiB, far above BoshMaxBodySize (64 KiB default): refused cleanly
    (413, or 200 + terminate) without hanging, and httpd still serves."""
    payload = "<message to='bob@localhost'><body>" + "x" * (1 << 20) + "</body></message>"
    data = (f"<body rid='{new_rid()}' to='localhost' wait='10' hold='1' ver='1.6' "
            f"xmlns='{NS_HTTPBIND}'>{payload}</body>").encode()
    with socket.create_connection(("127.0.0.1", stack.http_port), timeout=15) as s:
        head = (f"POST /http-bind HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Content-Type: text/xml; charset=utf-8\r\n"
                f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n").encode()
        try:
            s.sendall(head + data)
        except (BrokenPipeError, ConnectionResetError):
            pass                    # the server may answer before reading it all
        reply = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                reply += chunk
        except ConnectionResetError:
            pass
    status_line = reply.split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.1 "), reply[:200]
    status = int(status_line.split()[1])
    if status == 200:
        assert b"type='terminate'" in reply or b'type="terminate"' in reply, reply[:500]
    else:
        assert status == 413, reply[:300]
    # and the server is fine afterwards
    ans = post(stack, f"<body rid='1' ver='1.6' xmlns='{NS_HTTPBIND}'>junk</body>")
    assert_terminate(ans, "bad-request")


def post_chunked(stack, data, chunk_size):
    """POST with Transfer-Encoding: chunked, as a streaming client would."""
    conn = http.client.HTTPConnection("127.0.0.1", stack.http_port, timeout=30)
    chunks = [data[i:i + chunk_size] for i in range(0, len(data), chunk_size)]
    conn.request("POST", "/http-bind", body=iter(chunks), encode_chunked=True,
                 headers={"Content-Type": "text/xml; charset=utf-8"})
    try:
        return Answer(conn.getresponse())
    finally:
        conn.close()


def test_chunked_body_larger_than_first_read_buffer(stack):
    """A chunked body has no Content-Length, so mod_bosh grows its buffer as
    the body arrives (it starts at 4 KiB): a 20 KB creation body sent in
    1 KB chunks must arrive whole and create a session."""
    rid = new_rid()
    data = creation_body(rid, extra=" " * 20000).encode()
    assert len(data) > 20000
    ans = post_chunked(stack, data, 1000)
    assert ans.status == 200, ans
    sid = ans.attr("sid")
    assert sid, ans
    terminate(stack, sid, rid + 1)


def test_chunked_body_over_the_limit_is_refused(stack):
    """The same growth stops at BoshMaxBodySize (64 KiB by default): a
    chunked body past it gets bad-request, not a session."""
    data = creation_body(new_rid(), extra=" " * 70000).encode()
    ans = post_chunked(stack, data, 4096)
    assert_terminate(ans, "bad-request")


def test_unknown_sid_is_item_not_found(stack):
    ans = post(stack, f"<body rid='{new_rid()}' sid='n1-{'0' * 32}' xmlns='{NS_HTTPBIND}'/>")
    assert_terminate(ans, "item-not-found")
    assert_http_hygiene(ans)


def test_unknown_node_prefix_is_item_not_found(stack):
    ans = post(stack, f"<body rid='{new_rid()}' sid='zz-{'a' * 32}' xmlns='{NS_HTTPBIND}'/>")
    assert_terminate(ans, "item-not-found")


def test_domain_not_served_is_host_unknown(stack):
    ans = post(stack, creation_body(new_rid(), to="example.org"))
    assert_terminate(ans, "host-unknown")
    assert_http_hygiene(ans)


def test_get_returns_info_page(stack):
    conn = http.client.HTTPConnection("127.0.0.1", stack.http_port, timeout=10)
    conn.request("GET", "/http-bind")
    r = conn.getresponse()
    body = r.read()
    assert r.status == 200
    assert r.getheader("Content-Length") is not None
    assert body.strip(), "GET /http-bind should explain itself"
    assert r.getheader("Content-Type", "").split(";")[0] in ("text/html", "text/plain")


def test_empty_poll_is_answered_within_wait(stack):
    """A held request comes back empty when `wait` (2 s here) runs out."""
    rid = new_rid()
    ans = post(stack, creation_body(rid, wait=2))
    sid = ans.attr("sid")
    assert sid, ans
    rid += 1
    # drain whatever the server still has for us (features), then hold
    for _ in range(3):
        poll = post(stack, f"<body rid='{rid}' sid='{sid}' xmlns='{NS_HTTPBIND}'/>", timeout=10)
        rid += 1
        assert poll.status == 200, poll
        assert poll.attr("type") in (None, ""), poll
        if len(poll.body) == 0:
            break
    else:
        pytest.fail("server never answered an empty poll with an empty body")
    terminate(stack, sid, rid)
