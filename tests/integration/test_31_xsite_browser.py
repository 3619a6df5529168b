"""Issue 13 in a real browser: another site cannot make the BOSH endpoint
serve script on the site's own origin.

The attack: a stranger opens a BOSH session of their own (any account
will do, here alice), has a message queued in it whose payload is markup
(an XHTML-IM body with <script> and <img onerror>, bob sends it), and
then gets a victim's browser to POST, from another site, a form whose
text/plain body is that session's next request. The answer, the queued
message, is shown as a page of the site. Before issue 13 the session's
`content='text/html'` made it an HTML page (script runs); even as
text/xml an XHTML-namespaced <script> in an XML document runs. Now every
answer is text/xml under `Content-Security-Policy: ... sandbox`, so
nothing runs: the marker the payload would set is absent and none of the
payload's /pwned requests is made. A cross-site GET of /http-bind is
checked too.

tests/browser/xsite.mjs drives Chromium (playwright-core); the attacker
page is served by playwright's router as http://evil.test/.
"""

import base64
import http.client
import json
import os
import random
import shutil
import subprocess
import time
import xml.etree.ElementTree as ET

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SCRIPT = os.path.join(REPO, "tests", "browser", "xsite.mjs")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
NS_HTTPBIND = "http://jabber.org/protocol/httpbind"
NS_XBOSH = "urn:xmpp:xbosh"
NS_CLIENT = "jabber:client"


def post(st, data):
    conn = http.client.HTTPConnection("127.0.0.1", st.http_port, timeout=30)
    try:
        conn.request("POST", "/http-bind", body=data.encode(),
                     headers={"Content-Type": "text/xml; charset=utf-8"})
        resp = conn.getresponse()
        raw = resp.read()
        assert resp.status == 200, (resp.status, raw)
        return ET.fromstring(raw)
    finally:
        conn.close()


def children(body, local):
    return [e for e in body.iter() if e.tag.endswith("}" + local)]


class Session:
    """A BOSH session driven by hand (hold=1: nothing is held between two
    of our requests, so what chatd sends to it waits in its queue)."""

    def __init__(self, st, content=""):
        self.st = st
        self.rid = random.randint(1 << 20, 1 << 40)
        extra = f" content='{content}'" if content else ""
        b = post(st, f"<body rid='{self.rid}' to='localhost' xml:lang='en' wait='5' "
                     f"hold='1' ver='1.6' xmpp:version='1.0' xmlns='{NS_HTTPBIND}' "
                     f"xmlns:xmpp='{NS_XBOSH}'{extra}/>")
        self.sid = b.get("sid")
        assert self.sid, ET.tostring(b)

    def send(self, inner="", **attrs):
        self.rid += 1
        extra = "".join(f" {k.replace('_', ':')}='{v}'" for k, v in attrs.items())
        return post(self.st, f"<body rid='{self.rid}' sid='{self.sid}'{extra} "
                             f"xmlns='{NS_HTTPBIND}' xmlns:xmpp='{NS_XBOSH}'>{inner}</body>")

    def until(self, local, what, first=None, timeout=20):
        b = first
        deadline = time.monotonic() + timeout
        while b is None or not children(b, local):
            assert time.monotonic() < deadline, f"no {what}"
            b = self.send()
            assert b.get("type") != "terminate", ET.tostring(b)
        return children(b, local)[0]

    def sign_in(self, user, password):
        tok = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        b = self.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' "
                      f"mechanism='PLAIN'>{tok}</auth>")
        self.until("success", "SASL success", b)
        b = self.send(xmpp_restart="true", to="localhost")
        self.until("features", "features after restart", b)
        b = self.send(f"<iq type='set' id='bind1' xmlns='{NS_CLIENT}'><bind "
                      f"xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
        return self.until("jid", "bind result", b).text


# What the payload does if it ever runs: a marker on <html> and a request
# to /pwned-<tag> on the site. No quotes or '&' in the script: chatd
# re-serializes the stanza, escaping them, and an HTML <script> would not
# decode the entities back.
def act(tag):
    return (f"document.documentElement.setAttribute(/data-pwned/.source,/{tag}/.source);"
            f"new Image().src=location.origin+String.fromCharCode(47)+/pwned-{tag}/.source")


def payload(tag):
    return (f"<html xmlns='http://jabber.org/protocol/xhtml-im'>"
            f"<body xmlns='http://www.w3.org/1999/xhtml'><p>hello</p>"
            f"<script>{act(tag + '-script')}</script>"
            f"<img src='x' onerror=\"{act(tag + '-img')}\"/></body></html>")


def prepare(stack, users, content):
    """alice's session with bob's message queued in it; returns
    (sid, next rid) for the victim's forged request."""
    alice = Session(stack, content)
    alice_jid = alice.sign_in("alice", users["alice"])
    bob = Session(stack)
    bob.sign_in("bob", users["bob"])
    tag = "".join(c if c.isalnum() else "-" for c in content) or "default"
    b = bob.send(f"<message to='{alice_jid}' type='chat' xmlns='{NS_CLIENT}'>"
                 f"<body>hi</body>{payload(tag)}</message>"
                 f"<iq type='get' id='sync' xmlns='{NS_CLIENT}'>"
                 f"<ping xmlns='urn:xmpp:ping'/></iq>")
    # chatd handles bob's stanzas in order on one loop: once the ping is
    # answered the message sits in alice's queue (no request of hers held).
    bob.until("iq", "ping result", b)
    bob.send(type="terminate")
    return alice.sid, alice.rid + 1


def form_case(name, stack, sid, rid):
    # text/plain form encoding writes "field=value\r\n": the '=' lands
    # inside an attribute value, the rest is XML whitespace.
    return {"name": name, "method": "POST", "action": stack.bosh_url,
            "field": f"<body rid='{rid}' sid='{sid}' xmlns='{NS_HTTPBIND}' x='",
            "value": "'/>"}


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} not installed")
def test_cross_site_answers_run_no_script(stack, users):
    if not shutil.which("node"):
        pytest.fail("node is not installed (make deps)")
    cases = []
    sid, rid = prepare(stack, users, "text/html")
    cases.append(form_case("form-post-content-html", stack, sid, rid))
    sid, rid = prepare(stack, users, "")
    cases.append(form_case("form-post-xml-with-xhtml-script", stack, sid, rid))
    cases.append({"name": "get", "method": "GET",
                  "action": stack.bosh_url + "?<script>document.documentElement."
                            "setAttribute('data-pwned','get')</script>"})
    artifacts = os.path.join(stack.root, "browser-xsite")
    os.makedirs(artifacts, exist_ok=True)
    cases_file = os.path.join(artifacts, "cases.json")
    with open(cases_file, "w") as f:
        json.dump(cases, f)
    r = subprocess.run(["node", SCRIPT, "--cases", cases_file, "--artifacts", artifacts],
                       capture_output=True, text=True, timeout=240, cwd=REPO)
    results = {}
    for line in r.stdout.splitlines():
        if line.startswith("{"):
            o = json.loads(line)
            results[o["case"]] = o
    assert r.returncode == 0 and len(results) == len(cases), (
        f"browser run failed (exit {r.returncode})\n{r.stdout[-4000:]}\n"
        f"{r.stderr[-2000:]}\nscreenshots: {artifacts}")

    problems = []
    for name, o in results.items():
        if o["status"] != 200:
            problems.append(f"{name}: status {o['status']}")
        if name.startswith("form-post") and not (
                "<script>" in o["text"] and "onerror" in o["text"]):
            # the forged request must have reached the prepared session
            problems.append(f"{name}: the answer does not carry the markup: {o['text'][:300]}")
        pwned = [u for u in o["requests"] if "/pwned-" in u]
        if pwned:
            problems.append(f"{name}: the answer ran the payload, requests {pwned}")
        if o.get("marker") is not None:
            problems.append(f"{name}: the answer ran the payload, marker {o['marker']}")
        if "sandbox" not in o["headers"].get("content-security-policy", ""):
            problems.append(f"{name}: no sandboxing CSP")
        if o["headers"].get("x-content-type-options") != "nosniff":
            problems.append(f"{name}: no X-Content-Type-Options: nosniff")
    with open(stack.httpd_access_log, errors="replace") as f:
        beacons = [l.strip() for l in f if "/pwned-" in l]
    if beacons:
        problems.append(f"payload requests reached httpd: {beacons}")
    assert not problems, "\n".join(problems) + "\n" + "\n".join(
        json.dumps({k: o.get(k) for k in ("case", "headers", "marker", "marker_error",
                                           "url", "requests", "console")})
        for o in results.values())
