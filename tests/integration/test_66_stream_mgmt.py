"""Issue 17: XEP-0198 Stream Management on the native port.

What a user sees: a phone that loses its network for a moment resumes its
session and gets every message sent meanwhile, once; one that does not
come back in time finds them in offline storage at its next login, once;
its contacts see it go offline only when the resumption time is over; and
nobody can resume someone else's session with its id.

A plain socket client (raw_native.RawNative) speaks the protocol, so the
tests see the bytes: <sm/> feature, <enabled/>, <r/>/<a h=/> counts,
<resumed/>/<failed/>. The connection is cut without </stream:stream>
(SO_LINGER 0: the server sees a reset, like a dropped network).
"""

import secrets
import socket
import struct
import time

import pytest

from outage import wait_until
from raw_native import NS_CLIENT, NS_STREAMS, RawNative, esc
from signin_util import private_stack
import base64

NS_SM = "urn:xmpp:sm:3"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_DELAY = "urn:xmpp:delay"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"


def is_(el, ns, name):
    return el.tag == f"{{{ns}}}{name}"


def is_stanza(el):
    return el.tag in (f"{{{NS_CLIENT}}}message", f"{{{NS_CLIENT}}}presence",
                      f"{{{NS_CLIENT}}}iq")


class SMClient(RawNative):
    """RawNative plus XEP-0198 bookkeeping: h counts the stanzas received
    since <enabled/> (or since the h given in <resume/>)."""

    def __init__(self, port, **kw):
        super().__init__(port, **kw)
        self.count_from = None      # index in self.stanzas where counting starts
        self.h_base = 0
        self.sm_id = None
        self.features = None

    def h(self):
        if self.count_from is None:
            return 0
        return (self.h_base + sum(1 for e in self.stanzas[self.count_from:]
                                  if is_stanza(e))) % (1 << 32)

    def authenticate(self, user, password):
        """Stream, SASL PLAIN, restart: the features offered to a signed-in
        stream (where <sm/> and <bind/> are)."""
        self.user = user
        self.open_stream()
        self.wait(lambda e: e.tag == f"{{{NS_STREAMS}}}features", what="features")
        cred = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        n = len(self.stanzas)
        self.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>"
                  f"{cred}</auth>")
        el = self.wait(lambda e: e.tag.endswith("}success") or e.tag.endswith("}failure"),
                       what="SASL answer", start=n)
        assert el.tag.endswith("}success")
        n = len(self.stanzas)
        self.open_stream()
        self.features = self.wait(lambda e: e.tag == f"{{{NS_STREAMS}}}features",
                                  what="features after SASL", start=n)
        return self.features

    def bind(self, resource):
        self.send(f"<iq type='set' id='bind1'><bind xmlns='{NS_BIND}'>"
                  f"<resource>{esc(resource)}</resource></bind></iq>")
        iq = self.wait(lambda e: is_(e, NS_CLIENT, "iq") and e.get("id") == "bind1",
                       what="bind")
        self.jid = iq.find(f".//{{{NS_BIND}}}jid").text
        return self.jid

    def enable(self, resume=True, max_=None):
        n = len(self.stanzas)
        attrs = " resume='true'" if resume else ""
        if max_ is not None:
            attrs += f" max='{max_}'"
        self.send(f"<enable xmlns='{NS_SM}'{attrs}/>")
        el = self.wait(lambda e: is_(e, NS_SM, "enabled") or is_(e, NS_SM, "failed"),
                       what="enable answer", start=n)
        assert is_(el, NS_SM, "enabled"), el.tag
        self.count_from = len(self.stanzas)
        self.h_base = 0
        self.sm_id = el.get("id")
        return el

    def resume(self, previd, h):
        n = len(self.stanzas)
        self.send(f"<resume xmlns='{NS_SM}' previd='{esc(previd)}' h='{h}'/>")
        el = self.wait(lambda e: is_(e, NS_SM, "resumed") or is_(e, NS_SM, "failed"),
                       what="resume answer", start=n)
        if is_(el, NS_SM, "resumed"):
            self.count_from = self.stanzas.index(el) + 1
            self.h_base = h
            self.sm_id = previd
        return el

    def ack_request(self):
        """<r/>: the server's <a h=/> (how many of ours it handled)."""
        n = len(self.stanzas)
        self.send(f"<r xmlns='{NS_SM}'/>")
        return int(self.wait(lambda e: is_(e, NS_SM, "a"), what="<a/>", start=n).get("h"))

    def ack(self):
        self.send(f"<a xmlns='{NS_SM}' h='{self.h()}'/>")

    def cut(self):
        """Drop the connection the way a network does: no </stream:stream>,
        a reset instead of a FIN."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()
        self.closed = True


def login(stack, user, password, resource):
    c = SMClient(stack.xmpp_port)
    c.authenticate(user, password)
    c.bind(resource)
    return c


def sync(c, tag="sync"):
    """Everything c sent before this is handled: one connection is read in
    order, so the ping's answer comes after."""
    n = len(c.stanzas)
    c.send(f"<iq type='get' id='{tag}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    c.wait(lambda e: is_(e, NS_CLIENT, "iq") and e.get("id") == tag, what=tag, start=n)


def bodies(clients):
    out = []
    for c in clients:
        out += c.bodies()
    return out


def befriend(stack, a, b):
    """Mutual presence subscriptions, written before sign-in."""
    for x, y in ((a, b), (b, a)):
        stack.redis_cli("HSET", f"chat:roster:{x}", f"{y}@{stack.domain}",
                        "sub=both;ask=;name=;groups=")


def stat(stack, name):
    for line in stack.chatctl("stats").stdout.splitlines():
        k, _, v = line.partition(" ")
        if k == name:
            return int(v)
    raise AssertionError(f"no {name} in chatctl stats")


def detached(stack, full_jid):
    """chatctl sessions lists the session as waiting for a resume."""
    return f"{full_jid} detached" in stack.chatctl("sessions", "list").stdout


def test_sm_offered_enabled_and_counted(stack, new_user):
    (a, apw), (b, bpw) = new_user("sma"), new_user("smb")
    alice = SMClient(stack.xmpp_port)
    feats = alice.authenticate(a, apw)
    assert feats.find(f"{{{NS_SM}}}sm") is not None, "no <sm xmlns='urn:xmpp:sm:3'/> feature"
    # <enable/> before bind is refused, the stream goes on
    n = len(alice.stanzas)
    alice.send(f"<enable xmlns='{NS_SM}'/>")
    f = alice.wait(lambda e: is_(e, NS_SM, "failed"), what="failed", start=n)
    assert f.find(f"{{{NS_STANZAS}}}unexpected-request") is not None
    alice.bind("phone")
    en = alice.enable(resume=True)
    assert en.get("resume") == "true" and len(en.get("id") or "") >= 32
    assert int(en.get("max")) > 0
    # the server counts what it handled of ours: nothing yet, then three
    assert alice.ack_request() == 0
    alice.presence()
    sync(alice, "s1")
    sync(alice, "s2")
    assert alice.ack_request() == 3
    # the server asks for acks (sm_ack_every, 10 by default) as it sends
    bob = login(stack, b, bpw, "desk")
    n = len(alice.stanzas)
    for i in range(12):
        bob.chat(alice.jid, f"count {i}")
    alice.wait(lambda e: is_(e, NS_SM, "r"), what="the server's <r/>", start=n)
    alice.wait(lambda e: is_(e, NS_CLIENT, "message") and
               e.findtext(f"{{{NS_CLIENT}}}body") == "count 11", what="count 11", start=n)
    alice.ack()
    # an ack for more than was sent ends the stream
    alice.send(f"<a xmlns='{NS_SM}' h='{alice.h() + 5}'/>")
    alice.wait_closed()
    assert alice.stream_error == "undefined-condition"
    bob.close()


def test_resume_after_cut_delivers_missed_messages_once(stack, new_user):
    (a, apw), (b, bpw) = new_user("sma"), new_user("smb")
    befriend(stack, a, b)
    alice = login(stack, a, apw, "phone")
    alice.enable()
    alice.presence()
    bob = login(stack, b, bpw, "desk")
    bob.presence()
    alice.wait(lambda e: is_(e, NS_CLIENT, "presence") and
               (e.get("from") or "").startswith(f"{b}@"), what="bob online")
    bob.chat(alice.jid, "before the cut")
    alice.wait(lambda e: "before the cut" in alice.bodies(), what="first message")
    alice.ack()
    sync(alice)
    h = alice.h()
    previd = alice.sm_id
    sent_before = alice.ack_request()
    alice.cut()

    b0 = len(bob.stanzas)
    for i in range(5):
        bob.chat(alice.jid, f"missed {i}")
    sync(bob)
    wait_until(lambda: detached(stack, alice.jid), 20, "session detached")

    alice2 = SMClient(stack.xmpp_port)
    alice2.authenticate(a, apw)
    r = alice2.resume(previd, h)
    assert is_(r, NS_SM, "resumed"), r.tag
    assert r.get("previd") == previd
    assert int(r.get("h")) == sent_before          # <r/>, <a/> are not stanzas
    bob.chat(alice.jid, "after the resume")
    alice2.wait(lambda e: "after the resume" in alice2.bodies(), what="live message")
    got = bodies([alice, alice2])
    for i in range(5):
        assert got.count(f"missed {i}") == 1, got
    assert got.count("before the cut") == 1, got
    # no one saw alice go offline
    assert not [e for e in bob.stanzas[b0:] if is_(e, NS_CLIENT, "presence")
                and e.get("type") == "unavailable" and (e.get("from") or "").startswith(a)]
    # the resumed stream is the same session: counting goes on
    assert alice2.ack_request() == sent_before
    alice2.ack()
    alice2.close()
    bob.close()


def test_resume_while_old_connection_open_closes_it(stack, new_user):
    (a, apw), (b, bpw) = new_user("sma"), new_user("smb")
    alice = login(stack, a, apw, "phone")
    alice.enable()
    bob = login(stack, b, bpw, "desk")
    bob.chat(alice.jid, "one")
    alice.wait(lambda e: "one" in alice.bodies(), what="one")
    alice2 = SMClient(stack.xmpp_port)
    alice2.authenticate(a, apw)
    r = alice2.resume(alice.sm_id, 0)            # alice never acked "one"
    assert is_(r, NS_SM, "resumed")
    alice.wait_closed()
    assert alice.stream_error == "conflict"
    alice2.wait(lambda e: "one" in alice2.bodies(), what="one resent")
    bob.chat(alice.jid, "two")
    alice2.wait(lambda e: "two" in alice2.bodies(), what="two")
    assert alice2.bodies().count("one") == 1
    alice2.close()
    bob.close()


def test_resume_after_timeout_fails_and_messages_wait_offline_once(stack, new_user):
    (a, apw), (b, bpw) = new_user("sma"), new_user("smb")
    alice = login(stack, a, apw, "phone")
    en = alice.enable(max_=2)                    # the client asks for 2 s
    assert en.get("max") == "2"
    alice.presence()
    bob = login(stack, b, bpw, "desk")
    bob.chat(alice.jid, "seen and acked")
    alice.wait(lambda e: "seen and acked" in alice.bodies(), what="first")
    alice.ack()
    sync(alice)
    previd, h = alice.sm_id, alice.h()
    alice.cut()
    bob.chat(alice.jid, "while away 1")
    bob.chat(f"{a}@{stack.domain}", "while away 2")
    sync(bob)
    # after the timeout the two unacknowledged messages are in Redis
    wait_until(lambda: int(stack.redis_cli("LLEN", f"chat:offline:{a}")) == 2, 30,
               "unacked messages in offline storage")
    alice2 = SMClient(stack.xmpp_port)
    alice2.authenticate(a, apw)
    r = alice2.resume(previd, h)
    assert is_(r, NS_SM, "failed")
    assert r.find(f"{{{NS_STANZAS}}}item-not-found") is not None
    alice2.bind("phone2")
    alice2.presence()
    alice2.wait(lambda e: "while away 2" in alice2.bodies(), what="offline messages")
    sync(alice2)
    got = alice2.bodies()
    assert got.count("while away 1") == 1 and got.count("while away 2") == 1, got
    assert "seen and acked" not in got
    for e in alice2.stanzas:
        if is_(e, NS_CLIENT, "message") and (e.findtext(f"{{{NS_CLIENT}}}body") or
                                              "").startswith("while away"):
            d = e.findall(f"{{{NS_DELAY}}}delay")
            assert len(d) == 1 and d[0].get("stamp"), "one delay stamp"
    wait_until(lambda: int(stack.redis_cli("LLEN", f"chat:offline:{a}")) == 0, 20,
               "offline list emptied")
    alice2.close()
    bob.close()


def test_another_users_previd_is_refused(stack, new_user):
    (a, apw), (m, mpw) = new_user("sma"), new_user("smm")
    alice = login(stack, a, apw, "phone")
    alice.enable()
    previd = alice.sm_id
    alice.cut()
    wait_until(lambda: detached(stack, alice.jid), 20, "session detached")
    mallory = SMClient(stack.xmpp_port)
    mallory.authenticate(m, mpw)
    r = mallory.resume(previd, 0)
    assert is_(r, NS_SM, "failed")
    assert r.find(f"{{{NS_STANZAS}}}item-not-found") is not None
    r = mallory.resume("0" * 32, 0)
    assert is_(r, NS_SM, "failed")
    mallory.close()
    # alice's session was not touched by the attempt
    alice2 = SMClient(stack.xmpp_port)
    alice2.authenticate(a, apw)
    assert is_(alice2.resume(previd, 0), NS_SM, "resumed")
    alice2.close()


def test_no_resume_unavailable_only_after_the_timeout(stack, new_user):
    (a, apw), (b, bpw) = new_user("sma"), new_user("smb")
    befriend(stack, a, b)
    bob = login(stack, b, bpw, "desk")
    bob.presence()
    alice = login(stack, a, apw, "phone")
    alice.enable(max_=4)
    alice.presence()
    bob.wait(lambda e: is_(e, NS_CLIENT, "presence") and e.get("type") is None and
             (e.get("from") or "").startswith(f"{a}@"), what="alice online")
    b0 = len(bob.stanzas)
    t0 = time.monotonic()
    alice.cut()
    un = bob.wait(lambda e: is_(e, NS_CLIENT, "presence") and e.get("type") == "unavailable"
                  and (e.get("from") or "").startswith(f"{a}@"),
                  timeout=40, what="alice unavailable", start=b0)
    assert time.monotonic() - t0 >= 3.5, "unavailable before the resumption time ran out"
    assert un is not None
    bob.close()


def test_clean_close_ends_at_once(stack, new_user):
    """</stream:stream> is a goodbye, not a drop: nothing to resume."""
    (a, apw), (b, bpw) = new_user("sma"), new_user("smb")
    befriend(stack, a, b)
    bob = login(stack, b, bpw, "desk")
    bob.presence()
    alice = login(stack, a, apw, "phone")
    alice.enable()
    alice.presence()
    bob.wait(lambda e: is_(e, NS_CLIENT, "presence") and e.get("type") is None and
             (e.get("from") or "").startswith(f"{a}@"), what="alice online")
    previd = alice.sm_id
    b0 = len(bob.stanzas)
    alice.close()
    bob.wait(lambda e: is_(e, NS_CLIENT, "presence") and e.get("type") == "unavailable"
             and (e.get("from") or "").startswith(f"{a}@"), timeout=10,
             what="alice unavailable at once", start=b0)
    alice2 = SMClient(stack.xmpp_port)
    alice2.authenticate(a, apw)
    assert is_(alice2.resume(previd, 0), NS_SM, "failed")
    alice2.close()
    bob.close()


def test_slixmpp_resumes_after_a_drop(stack, new_user):
    """A stock client: slixmpp 1.8's xep_0198 enables resumption, loses its
    TCP connection (transport aborted, no </stream:stream>), connects
    again, resumes, and gets what bob sent meanwhile, once."""
    import asyncio
    import ssl
    import threading
    import slixmpp

    (a, apw), (b, bpw) = new_user("sma"), new_user("smb")
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    events, cond = [], threading.Condition()

    def note(kind, value=None):
        with cond:
            events.append((kind, value))
            cond.notify_all()

    def wait_for(pred, what, timeout=30):
        deadline = time.monotonic() + timeout
        with cond:
            while not any(pred(e) for e in events):
                left = deadline - time.monotonic()
                assert left > 0, f"{what}: not within {timeout}s; events {events[-8:]}"
                cond.wait(left)

    def build():
        x = slixmpp.ClientXMPP(f"{a}@{stack.domain}/sx", apw)
        x.loop = loop
        x.ssl_context.check_hostname = False
        x.ssl_context.verify_mode = ssl.CERT_NONE
        x.register_plugin("xep_0198")
        x.add_event_handler("sm_enabled", lambda s: note("sm_enabled", s["id"]))
        x.add_event_handler("session_resumed", lambda s: note("resumed"))
        x.add_event_handler("sm_failed", lambda s: note("sm_failed"))
        x.add_event_handler("session_start", lambda e: x.send_presence())
        x.add_event_handler("disconnected", lambda e: note("disconnected"))
        x.add_event_handler("message", lambda m: note("body", m["body"]))
        x.connect(("127.0.0.1", stack.xmpp_port))
        return x

    async def make():               # slixmpp objects live on their own loop
        return build()
    x = asyncio.run_coroutine_threadsafe(make(), loop).result(10)
    try:
        wait_for(lambda e: e[0] == "sm_enabled" and e[1], "slixmpp <enabled id=/>")
        bob = login(stack, b, bpw, "desk")
        bob.chat(f"{a}@{stack.domain}/sx", "before")
        wait_for(lambda e: e == ("body", "before"), "first message")
        loop.call_soon_threadsafe(x.abort)
        wait_for(lambda e: e[0] == "disconnected", "slixmpp disconnected")
        wait_until(lambda: detached(stack, f"{a}@{stack.domain}/sx"), 20, "session detached")
        for i in range(3):
            bob.chat(f"{a}@{stack.domain}/sx", f"meanwhile {i}")
        sync(bob)
        loop.call_soon_threadsafe(lambda: x.connect(("127.0.0.1", stack.xmpp_port)))
        wait_for(lambda e: e[0] in ("resumed", "sm_failed"), "resume answer")
        assert ("resumed", None) in events, events
        bob.chat(f"{a}@{stack.domain}/sx", "after")
        wait_for(lambda e: e == ("body", "after"), "live message after the resume")
        got = [v for k, v in events if k == "body"]
        assert got == ["before", "meanwhile 0", "meanwhile 1", "meanwhile 2", "after"], got
        bob.close()
    finally:
        n = sum(1 for e in events if e[0] == "disconnected")
        loop.call_soon_threadsafe(x.disconnect)     # </stream:stream>: ends it
        with cond:
            cond.wait_for(lambda: sum(1 for e in events if e[0] == "disconnected") > n, 10)

        async def stop():           # as native_client.NativeClient.close does
            me = asyncio.current_task()
            for t in asyncio.all_tasks():
                if t is not me:
                    t.cancel()
        asyncio.run_coroutine_threadsafe(stop(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


# A stack of its own for the limits: 5 unacknowledged stanzas at most,
# 2 live sessions per address (every test client is 127.0.0.1).
@pytest.fixture(scope="module")
def smstack():
    with private_stack("chatsm-", chatd_extra={"sm_max_unacked": "5",
                                               "max_sessions_per_addr": "2"}) as st:
        yield st


def test_unacked_bound_ends_the_session_and_keeps_the_messages(smstack):
    st = smstack
    a, apw = "smq" + secrets.token_hex(3), None
    apw = st.add_user(a)
    b = "smr" + secrets.token_hex(3)
    bpw = st.add_user(b)
    alice = login(st, a, apw, "phone")
    alice.enable()                                  # and never acknowledges
    bob = login(st, b, bpw, "desk")
    for i in range(7):
        bob.chat(alice.jid, f"pile {i}")
    alice.wait_closed()
    assert alice.stream_error == "policy-violation"
    assert stat(st, "sm_overflows") >= 1
    # what alice never acknowledged is routed again: offline, all of it
    wait_until(lambda: int(st.redis_cli("LLEN", f"chat:offline:{a}")) == 7, 20,
               "unacknowledged messages in offline storage")
    bob.close()
    alice2 = login(st, a, apw, "laptop")
    alice2.presence()
    alice2.wait(lambda e: "pile 6" in alice2.bodies(), what="stored messages")
    sync(alice2)
    got = alice2.bodies()
    assert sorted(got) == [f"pile {i}" for i in range(7)], got
    alice2.close()


def test_detached_session_keeps_its_address_slot(smstack):
    st = smstack
    a = "sms" + secrets.token_hex(3)
    apw = st.add_user(a)
    b = "smt" + secrets.token_hex(3)
    bpw = st.add_user(b)
    alice = login(st, a, apw, "phone")
    alice.enable()
    previd = alice.sm_id
    alice.cut()
    wait_until(lambda: detached(st, alice.jid), 20, "session detached")
    bob = login(st, b, bpw, "desk")                 # the second slot
    carol = RawNative(st.xmpp_port)
    carol.open_stream()
    carol.wait_closed()
    assert carol.stream_error == "policy-violation", "a third session from the address"
    bob.close()
    wait_until(lambda: f"{b}@" not in st.chatctl("sessions", "list").stdout, 20, "bob gone")
    alice2 = SMClient(st.xmpp_port)
    alice2.authenticate(a, apw)
    assert is_(alice2.resume(previd, 0), NS_SM, "resumed")
    alice2.close()


def test_not_offered_over_bosh(stack, new_user, bosh_client):
    """BOSH has its own acks (rid/ack): no <sm/> feature, and an <enable/>
    sent anyway is refused without ending the session."""
    a, apw = new_user("smw")
    w = bosh_client(f"{a}@{stack.domain}/web", apw, mech="SCRAM-SHA-256")
    w.connect()

    def received():
        with open(w.stderr_path, encoding="utf-8", errors="replace") as f:
            return "".join(line for line in f if line.startswith("RECV "))
    assert "urn:xmpp:csi:0" in received(), "stream features not in the client's log"
    assert "urn:xmpp:sm:3" not in received(), "<sm/> offered over BOSH"
    w.send("raw", xml=f"<enable xmlns='{NS_SM}' resume='true'/>")
    wait_until(lambda: "feature-not-implemented" in received(), 20, "<failed/> over BOSH")
    assert "<enabled" not in received()
    w.send("raw", xml="<iq type='get' id='still' to='localhost'>"
                      "<ping xmlns='urn:xmpp:ping'/></iq>")
    w.wait_stanza(name="iq", id="still", type="result", what="the session goes on")


@pytest.fixture(scope="module")
def pingstack():
    # c2s_auth_timeout too: the idle ping starts after the sign-in deadline
    with private_stack("chatsmp-", chatd_extra={"c2s_auth_timeout": "3",
                                                "c2s_ping_idle": "2",
                                                "c2s_ping_timeout": "2"}) as st:
        yield st


def test_unanswered_ping_keeps_the_session_for_resumption(pingstack):
    """The XEP-0199 liveness check (issue 14) still closes a silent
    connection with connection-timeout; with resumption on, that is a
    drop like any other: the session waits for the client to resume."""
    st = pingstack
    a = "smp" + secrets.token_hex(3)
    apw = st.add_user(a)
    b = "smo" + secrets.token_hex(3)
    bpw = st.add_user(b)
    alice = login(st, a, apw, "phone")
    alice.enable()
    h = alice.h()
    previd = alice.sm_id
    # alice goes silent: reads nothing, answers nothing
    wait_until(lambda: detached(st, alice.jid), 40, "session detached after the ping")
    assert stat(st, "ping_timeouts") >= 1
    alice.wait_closed()
    assert alice.stream_error == "connection-timeout"
    bob = login(st, b, bpw, "desk")
    bob.chat(alice.jid, "while silent")
    sync(bob)
    bob.close()
    alice2 = SMClient(st.xmpp_port)
    alice2.authenticate(a, apw)
    assert is_(alice2.resume(previd, h), NS_SM, "resumed")
    alice2.wait(lambda e: "while silent" in alice2.bodies(), what="message after resume")
    # the server's unanswered ping is resent too: answering it is enough
    ping = alice2.wait(lambda e: is_(e, NS_CLIENT, "iq") and e.get("type") == "get",
                       what="the ping, resent")
    alice2.send(f"<iq type='result' id='{ping.get('id')}' to='localhost'/>")
    sync(alice2)
    assert alice2.bodies().count("while silent") == 1
    alice2.ack()            # else a clean close routes it again (at least once)
    alice2.close()
