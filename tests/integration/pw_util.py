"""pw_util: raw BOSH / native sign-in steps for the password tests
(test_83_plain_offer.py, test_84_auth_throttle.py): one creation, one SASL
exchange, with the headers (X-Forwarded-For / -Proto) and port each test
needs, returning what the client sees."""

import base64
import http.client
import re
import ssl
import time

import signin_util

NS_HTTPBIND = signin_util.NS_HTTPBIND
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"


def tls_context():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class Bosh:
    """One BOSH session over one keep-alive connection."""

    def __init__(self, port, tls=False, headers=None, timeout=30):
        self.conn = (http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout,
                                                 context=tls_context()) if tls
                     else http.client.HTTPConnection("127.0.0.1", port, timeout=timeout))
        self.headers = {"Content-Type": "text/xml; charset=utf-8"}
        self.headers.update(headers or {})
        self.rid = signin_util.new_rid()
        self.sid = None

    def post(self, data):
        self.conn.request("POST", "/http-bind", body=data, headers=self.headers)
        resp = self.conn.getresponse()
        return resp.status, resp.read().decode("utf-8", "replace")

    def create(self):
        status, text = self.post(signin_util.creation_body(self.rid))
        assert status == 200, (status, text)
        m = re.search(r"sid='([^']+)'|sid=\"([^\"]+)\"", text)
        assert m, text
        self.sid = m.group(1) or m.group(2)
        return text

    def send(self, payload=""):
        self.rid += 1
        return self.post((f"<body rid='{self.rid}' sid='{self.sid}' "
                          f"xmlns='{NS_HTTPBIND}'>{payload}</body>").encode())[1]

    def until(self, pattern, timeout=20):
        """Poll with empty requests until the answers so far match."""
        got = ""
        deadline = time.monotonic() + timeout
        while not re.search(pattern, got):
            assert time.monotonic() < deadline, f"no {pattern!r} in {got!r}"
            got += self.send()
        return got

    def plain(self, user, password):
        cred = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        got = self.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{cred}</auth>")
        if not re.search(r"<success|<failure", got):
            got += self.until(r"<success|<failure")
        return got

    def close(self):
        try:
            if self.sid:
                self.rid += 1
                self.post((f"<body rid='{self.rid}' sid='{self.sid}' type='terminate' "
                           f"xmlns='{NS_HTTPBIND}'/>").encode())
        except (OSError, http.client.HTTPException):
            pass
        self.conn.close()


def mechanisms(features_xml):
    return re.findall(r"<mechanism>([^<]+)</mechanism>", features_xml)


def features(bosh):
    """The stream features of a fresh session (in the creation answer, or
    the next one)."""
    text = bosh.create()
    if "<mechanisms" not in text:
        text += bosh.until(r"</mechanisms>")
    return text


def scram_first(bosh, user, mech="SCRAM-SHA-256"):
    """Send a SCRAM client-first for user; returns the decoded
    server-first ('r=...,s=...,i=...')."""
    first = base64.b64encode(f"n,,n={user},r=abcdefghijklmnop".encode()).decode()
    got = bosh.send(f"<auth xmlns='{NS_SASL}' mechanism='{mech}'>{first}</auth>")
    if "<challenge" not in got and "<failure" not in got:
        got += bosh.until(r"<challenge|<failure")
    m = re.search(r"<challenge[^>]*>([^<]*)</challenge>", got)
    assert m, got
    return base64.b64decode(m.group(1)).decode()


def signin_bound(bosh, user, password, resource="r"):
    """PLAIN, restart, bind: returns the full JID."""
    pw_ok = bosh.plain(user, password)
    assert "<success" in pw_ok, pw_ok
    bosh.rid += 1
    text = bosh.post((f"<body rid='{bosh.rid}' sid='{bosh.sid}' to='localhost' "
                      f"xml:lang='en' xmpp:restart='true' xmlns='{NS_HTTPBIND}' "
                      f"xmlns:xmpp='urn:xmpp:xbosh'/>").encode())[1]
    if "<bind" not in text:
        text += bosh.until(r"<bind")
    got = bosh.send(f"<iq type='set' id='b1' xmlns='jabber:client'>"
                    f"<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                    f"<resource>{resource}</resource></bind></iq>")
    if "</jid>" not in got:
        got += bosh.until(r"</jid>")
    return re.search(r"<jid>([^<]+)</jid>", got).group(1)
