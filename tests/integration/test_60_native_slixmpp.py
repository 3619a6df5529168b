"""chatd's native port with a stock client: slixmpp (Debian python3-slixmpp).

What a desktop/mobile client meets on port 5222 (issue 6): STARTTLS with
the stack's self-signed certificate (slixmpp is told not to verify it),
SASL SCRAM-SHA-256 / SCRAM-SHA-1 / PLAIN, resource binding and conflicts,
the legacy session iq, `from` stamping, stanza errors, the server's own
iqs (disco, ping, version, time, vCard stored in Redis), 1:1 routing to
the best resource, directed presence, chatctl's session/user/room
commands; and, with raw sockets on a second chatd with tight caps and
PLAIN refused in the clear: stream errors for malformed XML and
too-large stanzas, and a client that stops reading is cut off without
stalling anyone else.
"""

import secrets
import signal
import socket
import tempfile
import time

import pytest

import chatstack
import outage
from native_client import NativeClient
from scenarios import elems, error_cond, iq, text_of

NS_STREAMS_ERR = "urn:ietf:params:xml:ns:xmpp-streams"


@pytest.fixture
def native(stack):
    """Factory: (user, password, resource, mech) -> a connected NativeClient."""
    made = []

    def make(user=None, password=None, resource="sx", mech="SCRAM-SHA-256", connect=True):
        if user is None:
            user = f"n{secrets.token_hex(3)}"
            password = stack.add_user(user)
        c = NativeClient("127.0.0.1", stack.xmpp_port, f"{user}@{stack.domain}/{resource}",
                         password, mech=mech)
        made.append(c)
        c.user, c.password = user, password
        c.bare = f"{user}@{stack.domain}"
        if connect:
            c.bound = c.connect()
        return c
    yield make
    for c in made:
        c.close()


def wait_until(pred, what, timeout=10):
    return outage.wait_until(pred, timeout, what)


@pytest.mark.parametrize("mech", ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"])
def test_starttls_and_sasl(native, mech):
    c = native(mech=mech)
    assert c.tls_version in ("TLSv1.2", "TLSv1.3")
    assert c.sasl_mech == mech
    assert c.bound == c.bare + "/sx"


def test_wrong_password(native, stack):
    user = f"n{secrets.token_hex(3)}"
    stack.add_user(user)
    c = native(user, "not-the-password", connect=False)
    m = len(c.events)
    c.send("connect")
    ev = c.wait_event(lambda e: e.get("event") == "status" and
                      e["status"] in ("AUTHFAIL", "CONNECTED"), 20, "auth result", start=m)
    assert ev["status"] == "AUTHFAIL"
    fail = c.wait_stanza(start=m, name="failure")
    assert "not-authorized" in fail["xml"]


def test_bind_conflict_and_session_iq(native):
    first = native(resource="desk")
    f0 = len(first.events)
    second = native(first.user, first.password, resource="desk")
    assert second.bound == first.bound
    err = first.wait_event(lambda e: e.get("event") == "stream_error", 10, "conflict", start=f0)
    assert err["cond"] == "conflict"
    # the legacy RFC 3921 session iq is answered
    s0 = len(second.events)
    second.send("raw", xml="<iq type='set' id='legacy1'>"
                           "<session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>")
    res = second.wait_stanza(start=s0, name="iq", id="legacy1")
    assert res["type"] == "result"


def test_from_is_stamped_and_stanza_errors(native, stack):
    a, b = native(), native()
    a.send("presence")
    b.send("presence")
    b0, a0 = len(b.events), len(a.events)
    a.send("raw", xml=f"<message to='{b.bare}' from='mallory@{stack.domain}/x' type='chat'>"
                      "<body>who am i</body></message>")
    got = b.wait_stanza(start=b0, name="message", body="who am i")
    assert got["from"] == a.bound

    # unknown iq: service-unavailable, to the server and to an account
    ev = iq(a, "iq_get", to=stack.domain, child="<query xmlns='urn:example:nothing'/>")
    assert ev["type"] == "error" and ev["cond"] == "service-unavailable"
    ev = iq(a, "iq_get", to=b.bare, child="<query xmlns='urn:example:nothing'/>")
    assert ev["type"] == "error" and ev["cond"] == "service-unavailable"
    # an iq get with no payload: bad-request
    a.send("raw", xml=f"<iq type='get' id='empty1' to='{stack.domain}'/>")
    err = a.wait_stanza(start=a0, name="iq", id="empty1")
    assert err["type"] == "error" and error_cond(err) == "bad-request"
    # a message to an account that does not exist comes back
    a.send("raw", xml=f"<message to='nobody{secrets.token_hex(3)}@{stack.domain}' id='m404' "
                      "type='chat'><body>hello?</body></message>")
    err = a.wait_stanza(start=a0, name="message", id="m404")
    assert err["type"] == "error" and error_cond(err) == "service-unavailable"


def test_server_iqs_and_vcard(native, stack):
    a, b = native(), native()
    info = iq(a, "iq_get", to=stack.domain,
              child="<query xmlns='http://jabber.org/protocol/disco#info'/>")
    feats = {f.get("var") for f in elems(info, "feature")}
    assert {"urn:xmpp:ping", "jabber:iq:version", "urn:xmpp:time", "vcard-temp"} <= feats
    items = iq(a, "iq_get", to=stack.domain,
               child="<query xmlns='http://jabber.org/protocol/disco#items'/>")
    assert stack.muc_domain in {i.get("jid") for i in elems(items, "item")}
    assert iq(a, "iq_get", to=stack.domain, child="<ping xmlns='urn:xmpp:ping'/>")["type"] == "result"
    ver = iq(a, "iq_get", to=stack.domain, child="<query xmlns='jabber:iq:version'/>")
    assert text_of(ver, "name") == "chatd"
    t = iq(a, "iq_get", to=stack.domain, child="<time xmlns='urn:xmpp:time'/>")
    assert text_of(t, "utc").endswith("Z") and text_of(t, "tzo")

    # vCard: empty at first, stored in Redis by a set, returned by a get
    # (to its owner and to anyone else)
    ev = iq(a, "vcard_get")
    assert ev["type"] == "result" and text_of(ev, "FN") is None
    name = f"Alice {secrets.token_hex(3)}"
    assert iq(a, "vcard_set", fn=name, nickname="al")["type"] == "result"
    assert name in stack.redis_cli("GET", f"chat:vcard:{a.user}")
    assert text_of(iq(a, "vcard_get"), "FN") == name
    other = iq(b, "vcard_get", jid=a.bare)
    assert text_of(other, "FN") == name and text_of(other, "NICKNAME") == "al"
    # nobody sets someone else's vCard
    b.send("raw", xml=f"<iq type='set' id='vc-steal' to='{a.bare}'>"
                      "<vCard xmlns='vcard-temp'><FN>Mallory</FN></vCard></iq>")
    err = b.wait_stanza(name="iq", id="vc-steal")
    assert err["type"] == "error"
    assert name in stack.redis_cli("GET", f"chat:vcard:{a.user}")


def test_best_resource_and_directed_presence(native):
    a = native()
    b_low = native(resource="phone")
    b_high = native(b_low.user, b_low.password, resource="desk")
    a.send("presence")
    lo0, hi0 = len(b_low.events), len(b_high.events)
    b_low.send("presence", priority=1)
    b_high.send("presence", priority=5)
    # each resource of b learns of the other (RFC 6121 4.2.2 / 4.4.2):
    # then the router has both available
    b_low.wait_stanza(start=lo0, name="presence", type=None, **{"from": b_high.bound})
    b_high.wait_stanza(start=hi0, name="presence", type=None, **{"from": b_low.bound})
    text = f"to the best {secrets.token_hex(3)}"
    a.send("chat", to=b_low.bare, body=text)
    got = b_high.wait_stanza(start=hi0, name="message", body=text)
    assert got["from"] == a.bound
    assert not b_low.stanzas(start=lo0, name="message", body=text)

    # directed presence to a non-contact, then unavailable reaches it too
    lo0 = len(b_low.events)
    a.send("raw", xml=f"<presence to='{b_low.bound}'><status>hi there</status></presence>")
    got = b_low.wait_stanza(start=lo0, name="presence", type=None, **{"from": a.bound})
    assert text_of(got, "status") == "hi there"
    a.send("unavailable")
    b_low.wait_stanza(start=lo0, name="presence", type="unavailable", **{"from": a.bound})
    assert not b_high.stanzas(start=hi0, name="presence", **{"from": a.bound})


def test_chatctl_sessions_users_rooms(native, stack):
    a = native(resource="ctl")
    out = stack.chatctl("sessions", "list").stdout
    line = next(l for l in out.splitlines() if a.bound in l)
    assert "c2s" in line
    assert a.user in stack.chatctl("users").stdout.split()

    # rooms list / destroy: the occupant is told
    room = f"ctl{secrets.token_hex(3)}@{stack.muc_domain}"
    a0 = len(a.events)
    a.send("join", room=room, nick="me")
    a.wait_stanza(start=a0, name="presence", **{"from": f"{room}/me"})
    assert room in stack.chatctl("rooms", "list").stdout
    stack.chatctl("rooms", "destroy", room)
    gone = a.wait_stanza(start=a0, name="presence", type="unavailable", **{"from": f"{room}/me"})
    assert elems(gone, "destroy")
    assert room not in stack.chatctl("rooms", "list").stdout

    # stats counts what just happened
    stats = stack.chatctl("stats").stdout
    assert "c2s" in stats

    # kick: the client sees a stream error, the session is gone
    a0 = len(a.events)
    stack.chatctl("sessions", "kick", a.bound)
    a.wait_event(lambda e: e.get("event") == "stream_error", 10, "kick", start=a0)
    wait_until(lambda: a.bound not in stack.chatctl("sessions", "list").stdout, "session gone")

    # passwd: the old password stops working, the new one works
    stack.chatctl("passwd", a.user, "new-" + a.password)
    again = native(a.user, "new-" + a.password, resource="ctl2")
    assert again.bound.endswith("/ctl2")
    old = native(a.user, a.password, resource="ctl3", connect=False)
    m = len(old.events)
    old.send("connect")
    ev = old.wait_event(lambda e: e.get("event") == "status" and
                        e["status"] in ("AUTHFAIL", "CONNECTED"), 20, "auth result", start=m)
    assert ev["status"] == "AUTHFAIL"
    # deluser: the account and its data go
    stack.chatctl("deluser", a.user)
    assert a.user not in stack.chatctl("users").stdout.split()
    assert stack.redis_cli("EXISTS", f"chat:user:{a.user}") == "0"


# -- a second chatd: tight caps, PLAIN only inside TLS ---------------------------
@pytest.fixture(scope="module")
def tight(stack):
    root = tempfile.mkdtemp(prefix="chattight-")
    # No flood buckets (issue 14): test_slow_reader_is_cut_off needs one
    # sender fast enough to fill a reader's max_output (many senders can).
    st = chatstack.Stack(root, chatd_extra={"plain_without_tls": "no", "max_stanza": "8192",
                                            "max_output": "65536", "stanza_rate": "0",
                                            "byte_rate": "0"})
    st.write_configs()
    try:
        st.start_redis()
        st.start_chatd()
    except chatstack.StackError as e:
        st.stop()
        pytest.fail(str(e), pytrace=False)
    yield st
    status = st.stop()
    assert status["chatd"] == 0, st.logs_tail()


class Raw:
    """A plaintext socket speaking just enough XMPP to look at errors."""

    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.data = b""

    def send(self, b):
        self.s.sendall(b)

    def read_until(self, needle, timeout=10):
        deadline = time.monotonic() + timeout
        while needle not in self.data:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {needle!r} within {timeout}s; got {self.data[-500:]!r}")
            self.s.settimeout(left)
            chunk = self.s.recv(65536)
            if not chunk:
                break
            self.data += chunk
        return self.data

    def read_to_eof(self, timeout=10):
        deadline = time.monotonic() + timeout
        while True:
            self.s.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = self.s.recv(65536)
            if not chunk:
                return self.data
            self.data += chunk

    def close(self):
        self.s.close()


HEADER = (b"<?xml version='1.0'?><stream:stream to='localhost' version='1.0' "
          b"xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>")


def test_plain_needs_tls_by_default(tight):
    r = Raw(tight.xmpp_port)
    r.send(HEADER)
    feats = r.read_until(b"</stream:features>").decode()
    assert "<starttls" in feats and "<required" in feats
    assert "SCRAM-SHA-256" in feats and ">PLAIN<" not in feats
    # PLAIN in the clear is refused
    r.send(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGEAYg==</auth>")
    assert b"<failure" in r.read_until(b"</failure>")
    r.close()


def test_stream_errors(tight):
    r = Raw(tight.xmpp_port)
    r.send(HEADER + b"<message><body>unclosed</bod></message>")
    out = r.read_to_eof().decode()
    assert f"<not-well-formed xmlns='{NS_STREAMS_ERR}'" in out.replace('"', "'")
    assert out.endswith("</stream:stream>")
    r.close()

    r = Raw(tight.xmpp_port)
    r.send(HEADER + b"<message><body>" + b"x" * 20000 + b"</body></message>")
    out = r.read_to_eof().decode()
    assert f"<policy-violation xmlns='{NS_STREAMS_ERR}'" in out.replace('"', "'")
    r.close()


def test_slow_reader_is_cut_off(tight):
    """A client that stops reading is disconnected once max_output is
    full; its sender is never stalled."""
    ua, ub = f"s{secrets.token_hex(3)}", f"s{secrets.token_hex(3)}"
    pa, pb = tight.add_user(ua), tight.add_user(ub)
    slow = NativeClient("127.0.0.1", tight.xmpp_port, f"{ua}@localhost/slow", pa)
    fast = NativeClient("127.0.0.1", tight.xmpp_port, f"{ub}@localhost/fast", pb)
    try:
        slow.bound = slow.connect()
        fast.bound = fast.connect()
        slow.send("presence")
        ok = iq(slow, "iq_get", to="localhost", child="<ping xmlns='urn:xmpp:ping'/>")
        assert ok["type"] == "result"
        # slow stops reading; its receive window shrinks to almost nothing
        slow.loop.call_soon_threadsafe(slow.x.transport.pause_reading)
        body = "y" * 7000
        batch = "".join(f"<message to='{slow.bound}' type='chat'><body>{body}</body></message>"
                        for _ in range(64))
        deadline = time.monotonic() + 30
        while slow.bound in tight.chatctl("sessions", "list").stdout:
            assert time.monotonic() < deadline, "slow reader still connected"
            fast.send("raw", xml=batch)
            # the sender is served all along
            assert iq(fast, "iq_get", to="localhost",
                      child="<ping xmlns='urn:xmpp:ping'/>", timeout=10)["type"] == "result"
        with open(tight.chatd_log) as f:
            assert "output over 65536 bytes, disconnecting" in f.read()
    finally:
        slow.close()
        fast.close()


def test_sighup_reloads_limits(tight):
    """SIGHUP reads chatd.conf again: a new max_sessions applies to the
    running daemon without a restart."""
    def reload(extra):
        tight.chatd_extra = extra
        tight._write_chatd_conf()
        with open(tight.chatd_log) as f:
            before = f.read().count("configuration reloaded")
        tight.procs["chatd"].send_signal(signal.SIGHUP)
        wait_until(lambda: open(tight.chatd_log).read().count("configuration reloaded") > before,
                   "reload logged")

    base = dict(tight.chatd_extra)
    reload({**base, "max_sessions": "1"})
    try:
        first = Raw(tight.xmpp_port)
        first.send(HEADER)
        first.read_until(b"</stream:features>")
        second = Raw(tight.xmpp_port)
        second.send(HEADER)
        out = second.read_to_eof().decode()
        assert "resource-constraint" in out, out
        first.close()
        second.close()
    finally:
        reload(base)
    third = Raw(tight.xmpp_port)
    third.send(HEADER)
    assert b"<mechanisms" in third.read_until(b"</stream:features>")
    third.close()
