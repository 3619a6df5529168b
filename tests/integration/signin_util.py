"""signin_util: helpers shared by test_80_signin_gate.py and test_81_storm.py.

A private stack per test module (these tests close the sign-in gate, set a
sign-in rate or a per-address cap: the session-wide stack other tests use
must never see that), raw BOSH creation requests, the server-wide sign-in
counters the admission script keeps in Redis (common/admission.h), and a
raw native XMPP login for the BOSH + native consistency checks.
"""

import base64
import contextlib
import http.client
import json
import os
import random
import shutil
import socket
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "scripts"))
import chatstack  # noqa: E402
import outage  # noqa: E402

NS_HTTPBIND = "http://jabber.org/protocol/httpbind"
NS_XBOSH = "urn:xmpp:xbosh"

STATS_KEY = "chat:signin:stats"
SEC_PREFIX = "chat:signin:sec:"


@contextlib.contextmanager
def private_stack(prefix, **kw):
    """A Stack of its own (event MPM unless MPM says otherwise), stopped
    and removed afterwards; kept on failure for its logs."""
    root = tempfile.mkdtemp(prefix=prefix)
    st = chatstack.Stack(root, mpm=os.environ.get("MPM", "event"), foreground=True, **kw)
    ok = False
    try:
        st.start()
        yield st
        ok = True
    finally:
        st.stop()
        if ok and not os.environ.get("KEEP_STACK"):
            shutil.rmtree(root, ignore_errors=True)
        else:
            sys.stderr.write(f"\n[signin tests] stack files kept in {root}\n")


def new_rid():
    return random.randint(1 << 20, 1 << 40)


def creation_body(rid, to="localhost", wait=10):
    return (f"<body rid='{rid}' to='{to}' xml:lang='en' wait='{wait}' hold='1' "
            f"content='text/xml; charset=utf-8' ver='1.6' xmpp:version='1.0' "
            f"xmlns='{NS_HTTPBIND}' xmlns:xmpp='{NS_XBOSH}'/>").encode()


class Answer:
    def __init__(self, resp):
        self.status = resp.status
        self.headers = {k.lower(): v for k, v in resp.getheaders()}
        self.raw = resp.read()
        self.text = self.raw.decode("utf-8", "replace")
        self.body = None
        if self.raw and self.headers.get("content-type", "").startswith("text/xml"):
            self.body = ET.fromstring(self.raw)

    def attr(self, name):
        return self.body.get(name) if self.body is not None else None

    def __repr__(self):
        return f"<Answer {self.status} {self.headers} {self.raw[:300]!r}>"


def post(conn, data):
    """POST one body on an open HTTPConnection (keep-alive: the next
    request on conn is served by the same httpd child)."""
    conn.request("POST", "/http-bind", body=data,
                 headers={"Content-Type": "text/xml; charset=utf-8"})
    return Answer(conn.getresponse())


def connection(stack, timeout=30):
    return http.client.HTTPConnection("127.0.0.1", stack.http_port, timeout=timeout)


def create(stack, conn=None):
    """One raw session creation; returns (Answer, rid)."""
    own = conn is None
    conn = conn or connection(stack)
    rid = new_rid()
    try:
        return post(conn, creation_body(rid)), rid
    finally:
        if own:
            conn.close()


def terminate(stack, sid, rid):
    conn = connection(stack)
    try:
        return post(conn, (f"<body rid='{rid}' sid='{sid}' type='terminate' "
                           f"xmlns='{NS_HTTPBIND}'/>").encode())
    finally:
        conn.close()


def child_status(stack):
    """bosh-status JSON of whichever httpd child serves this request."""
    conn = connection(stack, timeout=10)
    try:
        conn.request("GET", "/bosh-status?json")
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def refusal_counters(stack, expect, timeout=10):
    """The status page describes one child (a 503 also closes the
    connection, so the next request may reach another child). Poll fresh
    connections, keep each child's latest counters (by pid) and sum them
    until the sums equal expect ({"gate": n, ...} under "refused", or a
    top-level key), or the deadline passes. Returns the sums."""
    latest = {}
    deadline = time.monotonic() + timeout

    def sums():
        out = {}
        for k in expect:
            out[k] = sum((s["refused"][k] if k in s.get("refused", {}) else s[k])
                         for s in latest.values())
        return out
    while True:
        st = child_status(stack)
        latest[st["pid"]] = st
        got = sums()
        if got == expect or time.monotonic() > deadline:
            return got


def signin_stats(stack):
    """The admission script's server-wide counters."""
    out = stack.redis_cli("HGETALL", STATS_KEY).split("\n")
    d = {out[i]: int(out[i + 1]) for i in range(0, len(out) - 1, 2)}
    return {k: d.get(k, 0) for k in ("admitted", "closed", "rate", "address")}


def per_second_admitted(stack):
    """{unix second (Redis clock): admissions} for the last 120 s."""
    keys = [k for k in stack.redis_cli("--scan", "--pattern", SEC_PREFIX + "*").split("\n") if k]
    if not keys:
        return {}
    vals = stack.redis_cli("MGET", *keys).split("\n")
    return {int(k[len(SEC_PREFIX):]): int(v) for k, v in zip(keys, vals)}


def wait_until(what, check, timeout, interval=0.05):
    """outage.wait_until, in the argument order of this module's callers."""
    return outage.wait_until(check, timeout, what, interval)


def native_login(stack, user, password, timeout=10):
    """A native client on chatd's port up to its SASL <auth> (PLAIN, no
    TLS: the test stack allows it). Returns everything chatd sent after
    the <auth>, until it closes the stream or the timeout."""
    s = socket.create_connection(("127.0.0.1", stack.xmpp_port), timeout=timeout)
    try:
        s.sendall(b"<?xml version='1.0'?><stream:stream to='localhost' version='1.0' "
                  b"xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>")
        got = b""
        deadline = time.monotonic() + timeout
        while b"</stream:features>" not in got and b"</stream:stream>" not in got:
            if time.monotonic() > deadline:
                raise AssertionError(f"no stream features: {got!r}")
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        if b"</stream:stream>" in got:
            return got.decode("utf-8", "replace")
        cred = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        s.sendall(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>"
                  f"{cred}</auth>".encode())
        after = b""
        while b"</stream:stream>" not in after and b"<success" not in after:
            if time.monotonic() > deadline:
                break
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            after += chunk
        return after.decode("utf-8", "replace")
    finally:
        s.close()
