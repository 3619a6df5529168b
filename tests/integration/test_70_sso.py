"""Single sign-on (issue 8): the site's own login signs people into chat.

The demo site (httpd-conf/demo-site.conf) protects /sso/ with HTTP Basic
(htpasswd written by scripts/chatstack.py: carol, dave). /sso/http-bind has
`BoshAuthFromApache On`, so mod_bosh vouches for r->user and chatd offers
SASL EXTERNAL for exactly that user; /sso/prebind answers {jid, sid, rid}.
The open /http-bind never vouches.

What a user sees is asserted: the BOSH bytes, what Strophe.js receives, the
account in Redis, what Converse.js shows in Chromium.
"""

import base64
import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.request

import pytest

import chatstack
from clients import BoshClient

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
BOSH = "xmlns='http://jabber.org/protocol/httpbind' xmlns:xmpp='urn:xmpp:xbosh'"
SASL = "urn:ietf:params:xml:ns:xmpp-sasl"


def basic(user, password):
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def post(url, body, headers=None):
    """POST a BOSH body; returns (status, text, headers)."""
    req = urllib.request.Request(url, data=body.encode(), method="POST",
                                 headers={"Content-Type": "text/xml; charset=utf-8",
                                          **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, r.read().decode(), r.headers
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), e.headers


def get(url, headers=None):
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, r.read().decode(), r.headers
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), e.headers


class RawSession:
    """A hand-driven BOSH session, so the bytes on the wire are visible."""

    def __init__(self, url, headers=None, extra_attrs=""):
        self.url = url
        self.headers = headers or {}
        self.rid = secrets.randbelow(10**9) + 1000
        st, text, _ = post(url, f"<body {BOSH} rid='{self.rid}' to='localhost' wait='5' "
                                f"hold='1' ver='1.6' xmpp:version='1.0' {extra_attrs}/>",
                           self.headers)
        assert st == 200, (st, text)
        m = re.search(r"sid='([^']+)'", text)
        assert m, text
        self.sid = m.group(1)
        self.features = text

    def send(self, payload="", url=None, headers=None, attrs=""):
        self.rid += 1
        return post(url or self.url,
                    f"<body {BOSH} rid='{self.rid}' sid='{self.sid}' {attrs}>{payload}</body>",
                    self.headers if headers is None else headers)

    def mechanisms(self):
        return re.findall(r"<mechanism>([^<]+)</mechanism>", self.features)

    def auth_external(self, authzid="", **kw):
        data = base64.b64encode(authzid.encode()).decode() if authzid else "="
        return self.send(f"<auth xmlns='{SASL}' mechanism='EXTERNAL'>{data}</auth>", **kw)


@pytest.fixture(scope="module")
def sso(stack):
    """The site passwords of carol and dave (users of the site, not of chat)."""
    return stack.sso_users


def client_log(c):
    if not c.stderr_path:
        return ""
    with open(c.stderr_path, errors="replace") as f:
        return f.read()


def test_auto_provision_creates_account_without_verifier(stack, sso):
    stack.redis_cli("DEL", "chat:user:carol")
    stack.redis_cli("SREM", "chat:users", "carol")
    # The client's own X-Remote-Name is dropped by the site (RequestHeader
    # unset); the name that counts is the one the server sets for carol.
    s = RawSession(stack.sso_bosh_url, {**basic("carol", sso["carol"]),
                                        "X-Remote-Name": "Mallory"})
    # A vouched stream offers EXTERNAL only: no client ever tries a password.
    assert s.mechanisms() == ["EXTERNAL"], s.features
    st, text, _ = s.auth_external()
    assert st == 200 and "<success" in text, text
    fields = stack.redis_cli("HGETALL", "chat:user:carol").splitlines()
    account = dict(zip(fields[0::2], fields[1::2]))
    assert account.get("provisioned") == "external", account
    assert account.get("name") == "Carol Example", account
    assert "created" in account
    assert not any(k.startswith("scram") for k in account), account
    assert stack.redis_cli("SISMEMBER", "chat:users", "carol") == "1"
    # No verifier: password sign-in is impossible for this account.
    plain = base64.b64encode(b"\0carol\0" + sso["carol"].encode()).decode()
    o = RawSession(stack.bosh_url)
    st, text, _ = o.send(f"<auth xmlns='{SASL}' mechanism='PLAIN'>{plain}</auth>")
    assert "not-authorized" in text and "<success" not in text, text


def test_strophe_external_signs_in_and_chats(stack, sso, users, bosh_client):
    log_dir = os.path.join(stack.root, "clients")
    os.makedirs(log_dir, exist_ok=True)
    sentinel = "NOT-SENT-" + secrets.token_hex(6)
    carol = BoshClient(stack.sso_bosh_url, "carol@localhost", sentinel, mech="EXTERNAL",
                       log_dir=log_dir, extra_args=["--header", "Authorization: " +
                                                    basic("carol", sso["carol"])["Authorization"]])
    try:
        jid = carol.connect()
        assert jid.startswith("carol@localhost/"), jid
        alice = bosh_client("alice@localhost", users["alice"])
        # to this session's full JID: the shared stack may hold other alice
        # sessions (browser tests' Converse) that a bare JID could reach instead
        alice_jid = alice.connect()
        alice.send("presence")
        mark = len(alice.events)
        carol.send("chat", to=alice_jid, body="hello from the site login")
        ev = alice.wait_stanza(start=mark, name="message", body="hello from the site login")
        assert ev["from"].startswith("carol@localhost/")
        sent = "\n".join(l for l in client_log(carol).splitlines() if l.startswith("SENT"))
        auths = re.findall(r"<auth[^>]*>([^<]*)</auth>", sent)
        assert auths and all("mechanism=\"EXTERNAL\"" in a or "mechanism='EXTERNAL'" in a
                             for a in re.findall(r"<auth[^>]*>", sent)), sent[-2000:]
        for a in auths:
            assert base64.b64decode(a or "") in (b"", b"carol@localhost"), a
        assert sentinel not in sent and sso["carol"] not in sent
    finally:
        carol.close()


def test_open_endpoint_never_offers_external(stack, sso):
    # Every way a client might claim an identity on the open endpoint.
    forged = {"X-Remote-User": "carol", "Remote-User": "carol",
              **basic("carol", sso["carol"])}
    s = RawSession(stack.bosh_url, forged, extra_attrs="authid='carol' from='carol@localhost'")
    assert "EXTERNAL" not in s.mechanisms(), s.features
    assert s.mechanisms(), s.features          # the password mechanisms are there
    st, text, _ = s.auth_external("carol@localhost")
    assert "<failure" in text and "invalid-mechanism" in text, text
    assert "<success" not in text


def test_client_side_identity_gains_nothing(stack, sso, new_user):
    carol = basic("carol", sso["carol"])
    # Authenticated as carol, asking for someone else: refused.
    other, _ = new_user("sso")
    s = RawSession(stack.sso_bosh_url, {**carol, "X-Remote-User": other})
    st, text, _ = s.auth_external(f"{other}@localhost")
    assert "invalid-authzid" in text and "<success" not in text, text
    # A wrong site password never reaches chat at all.
    st, text, _ = post(stack.sso_bosh_url, f"<body {BOSH} rid='5' to='localhost' wait='5' "
                                           "hold='1' ver='1.6'/>", basic("carol", "wrong"))
    assert st == 401, (st, text)

    # carol's vouched session, continued from the open endpoint (no Apache
    # login): refused without touching the session.
    v = RawSession(stack.sso_bosh_url, carol)
    st, text, _ = v.auth_external(url=stack.bosh_url, headers={})
    assert "policy-violation" in text and "<success" not in text, text
    v.rid -= 1                      # that rid never reached the session
    # ... or from the protected path by another site user.
    st, text, _ = v.auth_external(headers=basic("dave", sso["dave"]))
    assert "policy-violation" in text and "<success" not in text, text
    v.rid -= 1
    # The real owner carries on undisturbed.
    st, text, _ = v.auth_external()
    assert "<success" in text, text

    # A session made on the open endpoint does not become vouched later.
    o = RawSession(stack.bosh_url)
    st, text, _ = o.auth_external(url=stack.sso_bosh_url, headers=carol)
    assert "policy-violation" in text and "<success" not in text, text


def test_prebind_json_and_strophe_attach(stack, sso, users, bosh_client):
    st, text, hdrs = post(stack.prebind_url, "")
    assert st == 401                            # Apache's login first
    st, text, hdrs = post(stack.prebind_url, "", basic("dave", sso["dave"]))
    assert st == 200, (st, text)
    assert hdrs["Content-Type"].startswith("application/json")
    assert "no-store" in hdrs.get("Cache-Control", "")
    pre = json.loads(text)
    assert set(pre) == {"jid", "sid", "rid"}, pre
    assert pre["jid"].startswith("dave@localhost/")
    assert isinstance(pre["rid"], int)

    log_dir = os.path.join(stack.root, "clients")
    dave = BoshClient(stack.sso_bosh_url, "dave@localhost", "unused", mech="EXTERNAL",
                      log_dir=log_dir, extra_args=["--header", "Authorization: " +
                                                   basic("dave", sso["dave"])["Authorization"]])
    try:
        mark = len(dave.events)
        dave.send("attach", jid=pre["jid"], sid=pre["sid"], rid=pre["rid"])
        ev = dave.wait_event(lambda e: e.get("event") == "status" and
                             e["status"] in ("ATTACHED", "CONNFAIL", "DISCONNECTED"),
                             20, "ATTACHED", start=mark)
        assert ev["status"] == "ATTACHED", dave.dump()
        alice = bosh_client("alice@localhost", users["alice"])
        alice.connect()
        alice.send("presence")
        dave.send("presence")
        mark = len(alice.events)
        dave.send("chat", to="alice@localhost", body="prebound hello")
        ev = alice.wait_stanza(start=mark, name="message", body="prebound hello")
        assert ev["from"] == pre["jid"]
        # and back: the attached session receives
        mark = len(dave.events)
        alice.send("chat", to=pre["jid"], body="hi dave")
        dave.wait_stanza(start=mark, name="message", body="hi dave")
        sent = "\n".join(l for l in client_log(dave).splitlines() if l.startswith("SENT"))
        assert f"rid=\"{pre['rid']}\"" in sent or f"rid='{pre['rid']}'" in sent, sent[:800]
        assert "<auth" not in sent
    finally:
        dave.close()


def test_auto_provision_off_refuses_unknown_users(sso):
    """auto_provision no: a vouched user without an account cannot sign in
    (and nothing is created) until an operator adds the account."""
    root = tempfile.mkdtemp(prefix="chattest-sso-")
    st = chatstack.Stack(root, foreground=True, chatd_extra={"auto_provision": "no"})
    try:
        st.start()
        pw = st.sso_users["carol"]
        s = RawSession(st.sso_bosh_url, basic("carol", pw))
        assert "EXTERNAL" in s.mechanisms()
        code, text, _ = s.auth_external()
        assert "not-authorized" in text and "<success" not in text, text
        assert st.redis_cli("EXISTS", "chat:user:carol") == "0"
        code, text, _ = post(st.prebind_url, "", basic("carol", pw))
        assert code == 403 and "error" in json.loads(text), (code, text)
        st.add_user("carol")
        s = RawSession(st.sso_bosh_url, basic("carol", pw))
        code, text, _ = s.auth_external()
        assert "<success" in text, text
    finally:
        st.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} not installed")
def test_browser_converse_external_and_prebind(stack, sso, users):
    if not shutil.which("node"):
        pytest.fail("node is not installed (make deps)")
    artifacts = os.path.join(stack.root, "browser-sso")
    r = subprocess.run(
        ["node", os.path.join(REPO, "tests", "browser", "sso.mjs"), "--base", stack.base_url,
         "--carol-password", sso["carol"], "--dave-password", sso["dave"],
         "--alice-password", users["alice"], "--artifacts", artifacts],
        capture_output=True, text=True, timeout=240, cwd=REPO)
    steps = [json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")]
    passed = [s["step"] for s in steps if s.get("ok")]
    assert r.returncode == 0, (
        f"browser run failed (exit {r.returncode}); steps passed: {passed}\n"
        f"{r.stdout[-4000:]}\n{r.stderr[-2000:]}\nscreenshots/logs: {artifacts}")
    assert "carol signs in with EXTERNAL and sees the lobby" in passed
    assert "alice -> room, carol sees it" in passed
    assert "dave opens /sso/ (prebind) and is in the room without a form" in passed
