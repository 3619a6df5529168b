"""A user on several devices (issue 17), with stock clients.

XEP-0280 Message Carbons: slixmpp's xep_0280 plugin enables carbons on two
native resources of one account; a third person's message to one resource
reaches the other as a <received/> carbon, a message the first sends as a
<sent/> carbon; <private/> messages and sessions that never enabled
carbons get no copies. The same across transports: a slixmpp resource and
a Strophe.js (BOSH) resource of one account.

XEP-0352 Client State Indication: slixmpp's xep_0352 plugin sees the
stream feature and says <inactive/>; contacts' presence churn is held
(latest per contact), messages with a body arrive at once, <active/>
delivers what was held.

XEP-0191 Blocking Command: slixmpp's xep_0191 plugin blocks a contact:
pushes to the other resource, unavailable presence to the contact, its
messages bounced, ours to it refused with <blocked/>, the list kept in
Redis and loaded at the next sign-in; a list that cannot be loaded
refuses stanzas for the user (fail closed).

"Gets nothing" is checked without sleeping: after the event that would
have produced a copy, a marker stanza is sent along a path that chatd
handles after it; once the marker arrived, an earlier copy would have too.
"""

import secrets
import time
import xml.etree.ElementTree as ET

import pytest

from clients import BoshClient
from native_client import NativeClient, error_condition
from scenarios import elems, iq, text_of

NS_CARBONS = "urn:xmpp:carbons:2"
NS_FORWARD = "urn:xmpp:forward:0"


class DeviceClient(NativeClient):
    """slixmpp with the stock XEP-0280 and XEP-0352 plugins."""

    def _build(self, jid, password):
        super()._build(jid, password)
        self.x.register_plugin("xep_0280")
        self.x.register_plugin("xep_0352")
        self.x.register_plugin("xep_0191")
        self.x.add_event_handler("csi_enabled", lambda _f: self._emit({"event": "csi_enabled"}))

    async def _cmd_carbons_enable(self, kw):
        await self._iq(kw, self.x["xep_0280"].enable())

    async def _cmd_carbons_disable(self, kw):
        await self._iq(kw, self.x["xep_0280"].disable())

    async def _cmd_blocked_get(self, kw):
        await self._iq(kw, self.x["xep_0191"].get_blocked())

    async def _cmd_block(self, kw):
        await self._iq(kw, self.x["xep_0191"].block([kw["jid"]]))

    async def _cmd_unblock(self, kw):
        await self._iq(kw, self.x["xep_0191"].unblock([kw["jid"]]))

    def _cmd_csi_inactive(self, kw):
        self.x["xep_0352"].send_inactive()

    def _cmd_csi_active(self, kw):
        self.x["xep_0352"].send_active()


@pytest.fixture
def dev(stack):
    """Factory: (user, password, resource) -> a signed-in DeviceClient."""
    made = []

    def make(user=None, password=None, resource="dev"):
        if user is None:
            user = f"d{secrets.token_hex(3)}"
            password = stack.add_user(user)
        c = DeviceClient("127.0.0.1", stack.xmpp_port, f"{user}@{stack.domain}/{resource}",
                         password)
        made.append(c)
        c.user, c.password = user, password
        c.bare = f"{user}@{stack.domain}"
        c.bound = c.connect()
        return c
    yield make
    for c in made:
        c.close()


def carbon(ev):
    """(direction, forwarded message element) of a carbon event, or None."""
    if ev.get("event") != "stanza" or ev.get("name") != "message":
        return None
    root = ET.fromstring(ev["xml"])
    for d in ("received", "sent"):
        w = root.find(f"{{{NS_CARBONS}}}{d}")
        if w is not None:
            return d, w.find(f"{{{NS_FORWARD}}}forwarded").find("{jabber:client}message")
    return None


def carbons(c, start=0):
    return [(ev, carbon(ev)) for ev in c.events[start:] if carbon(ev)]


def inner_body(msg):
    b = msg.find("{jabber:client}body")
    return b.text if b is not None else None


def wait_carbon(c, direction, body, start=0, timeout=20):
    def pred(ev):
        cb = carbon(ev)
        return cb is not None and cb[0] == direction and inner_body(cb[1]) == body
    ev = c.wait_event(pred, timeout, f"{direction} carbon of {body!r}", start)
    return carbon(ev)[1], ev


def enable(c):
    ev = iq(c, "carbons_enable")
    assert ev["type"] == "result", ev


def test_carbons_between_two_native_resources(dev, stack):
    a = dev(resource="desk")
    b = dev(a.user, a.password, resource="phone")
    quiet = dev(a.user, a.password, resource="tablet")     # never enables carbons
    other = dev()

    info = iq(a, "iq_get", to=stack.domain,
              child="<query xmlns='http://jabber.org/protocol/disco#info'/>")
    assert NS_CARBONS in {f.get("var") for f in elems(info, "feature")}
    enable(a)
    enable(b)

    # received: a message to a's full JID reaches a, and b as a carbon
    b0, q0, a0 = len(b.events), len(quiet.events), len(a.events)
    text = f"to desk {secrets.token_hex(3)}"
    other.send("chat", to=a.bound, body=text)
    got = a.wait_stanza(start=a0, name="message", body=text)
    assert got["from"] == other.bound
    fwd, ev = wait_carbon(b, "received", text, start=b0)
    assert ev["from"] == a.bare and ev["to"] == b.bound
    assert fwd.get("from") == other.bound and fwd.get("to") == a.bound
    # the addressed resource gets no carbon of its own message
    assert not carbons(a, a0)

    # sent: what a sends shows up on b
    d0 = len(other.events)
    reply = f"from desk {secrets.token_hex(3)}"
    a.send("chat", to=other.bound, body=reply)
    other.wait_stanza(start=d0, name="message", body=reply)
    fwd, ev = wait_carbon(b, "sent", reply, start=b0)
    assert fwd.get("from") == a.bound and fwd.get("to") == other.bound

    # <private/>: no copy; the carbon of the next (normal) message is the marker
    secret = f"private {secrets.token_hex(3)}"
    a.send("raw", xml=f"<message to='{other.bound}' type='chat'><body>{secret}</body>"
                      f"<private xmlns='{NS_CARBONS}'/></message>")
    other.wait_stanza(start=d0, name="message", body=secret)
    marker = f"marker {secrets.token_hex(3)}"
    a.send("chat", to=other.bound, body=marker)
    wait_carbon(b, "sent", marker, start=b0)
    assert secret not in [inner_body(m) for _e, (_d, m) in carbons(b, b0)]

    # the session that never enabled carbons got none of the above
    ping = f"to tablet {secrets.token_hex(3)}"
    other.send("chat", to=quiet.bound, body=ping)
    quiet.wait_stanza(start=q0, name="message", body=ping)
    assert not carbons(quiet, q0), carbons(quiet, q0)

    # disable: b gets no further copies (marker: a carbon re-enabled later)
    assert iq(b, "carbons_disable")["type"] == "result"
    b1 = len(b.events)
    after = f"after disable {secrets.token_hex(3)}"
    other.send("chat", to=a.bound, body=after)
    a.wait_stanza(start=a0, name="message", body=after)
    enable(b)
    last = f"re-enabled {secrets.token_hex(3)}"
    other.send("chat", to=a.bound, body=last)
    wait_carbon(b, "received", last, start=b1)
    assert after not in [inner_body(m) for _e, (_d, m) in carbons(b, b1)]


def test_carbons_across_native_and_bosh(dev, stack):
    """One account on slixmpp (native) and Strophe.js (BOSH): same routing."""
    a = dev(resource="native")
    other = dev()
    w = BoshClient(stack.bosh_url, f"{a.user}@{stack.domain}/web", a.password,
                   mech="SCRAM-SHA-256")
    try:
        w_full = w.connect()
        enable(a)
        w0 = len(w.events)
        w.send("raw", xml="<iq type='set' id='carb1'>"
                          f"<enable xmlns='{NS_CARBONS}'/></iq>")
        res = w.wait_stanza(start=w0, name="iq", id="carb1")
        assert res["type"] == "result"

        # to the native resource -> received carbon on the web one
        text = f"to native {secrets.token_hex(3)}"
        other.send("chat", to=a.bound, body=text)
        fwd, ev = wait_carbon(w, "received", text, start=w0)
        assert ev["to"] == w_full and fwd.get("from") == other.bound

        # sent from the web -> sent carbon on the native one
        a0, d0 = len(a.events), len(other.events)
        reply = f"from web {secrets.token_hex(3)}"
        w.send("chat", to=other.bound, body=reply)
        got = other.wait_stanza(start=d0, name="message", body=reply)
        assert got["from"] == w_full
        fwd, ev = wait_carbon(a, "sent", reply, start=a0)
        assert ev["to"] == a.bound and fwd.get("from") == w_full
    finally:
        w.close()


def befriend(stack, a, *others):
    """Mutual presence subscriptions, written to Redis before sign-in
    (the roster is loaded at session start)."""
    for o in others:
        stack.redis_cli("HSET", f"chat:roster:{a}", f"{o}@{stack.domain}",
                        "sub=both;ask=;name=;groups=")
        stack.redis_cli("HSET", f"chat:roster:{o}", f"{a}@{stack.domain}",
                        "sub=both;ask=;name=;groups=")


def sync(c):
    """Wait until chatd has handled everything c sent so far: one
    connection is read in order, so a ping's answer comes after."""
    assert iq(c, "iq_get", to=c.bare.split("@", 1)[1],
              child="<ping xmlns='urn:xmpp:ping'/>")["type"] == "result"


def presences(c, frm, start):
    return [e for e in c.stanzas(start, name="presence") if e["from"] == frm]


def test_csi_holds_presence_churn_until_active(dev, stack):
    users = {}
    for tag in ("me", "bo", "ca"):
        name = f"{tag}{secrets.token_hex(3)}"
        users[tag] = (name, stack.add_user(name))
    befriend(stack, users["me"][0], users["bo"][0], users["ca"][0])
    a = dev(*users["me"], resource="phone")
    assert any(e.get("event") == "csi_enabled" for e in a.events), \
        "no urn:xmpp:csi:0 stream feature"
    b = dev(*users["bo"], resource="b")
    c = dev(*users["ca"], resource="c")
    stranger = dev()
    a0 = len(a.events)
    a.send("presence")
    b.send("presence", status="b-start")
    c.send("presence", status="c-start")
    a.wait_stanza(start=a0, name="presence", **{"from": b.bound})
    a.wait_stanza(start=a0, name="presence", **{"from": c.bound})

    a.send("csi_inactive")
    sync(a)
    a1 = len(a.events)
    for st in ("b-one", "b-two", "b-three"):
        b.send("presence", status=st)
    for st in ("c-one", "c-two"):
        c.send("presence", status=st)
    sync(b)
    sync(c)
    # a message with a body arrives at once, the churn does not
    text = f"urgent {secrets.token_hex(3)}"
    stranger.send("chat", to=a.bound, body=text)
    a.wait_stanza(start=a1, name="message", body=text)
    assert not presences(a, b.bound, a1) and not presences(a, c.bound, a1), a.dump()

    # b writes: b's latest presence comes first (order kept), then the message
    hello = f"hello {secrets.token_hex(3)}"
    b.send("chat", to=a.bound, body=hello)
    msg = a.wait_stanza(start=a1, name="message", body=hello)
    got_b = presences(a, b.bound, a1)
    assert [text_of(e, "status") for e in got_b] == ["b-three"]
    assert a.events.index(got_b[0]) < a.events.index(msg)
    assert not presences(a, c.bound, a1)

    # active: the latest of c, once
    a.send("csi_active")
    a.wait_stanza(start=a1, name="presence", **{"from": c.bound})
    sync(a)
    assert [text_of(e, "status") for e in presences(a, c.bound, a1)] == ["c-two"]

    # active again: presence flows at once
    a2 = len(a.events)
    c.send("presence", status="c-live")
    got = a.wait_stanza(start=a2, name="presence", **{"from": c.bound})
    assert text_of(got, "status") == "c-live"


def test_csi_over_bosh(dev, stack, bosh_client):
    """Strophe.js over BOSH sees the feature and the same holding."""
    me, bo = (f"{t}{secrets.token_hex(3)}" for t in ("wm", "wb"))
    pw, b_pw = stack.add_user(me), stack.add_user(bo)
    befriend(stack, me, bo)
    w = bosh_client(f"{me}@{stack.domain}/web", pw, mech="SCRAM-SHA-256")
    w_full = w.connect()
    with open(w.stderr_path, encoding="utf-8", errors="replace") as f:
        assert "urn:xmpp:csi:0" in f.read(), "no CSI stream feature over BOSH"
    b = dev(bo, b_pw, resource="b")
    w0 = len(w.events)
    w.send("presence")
    b.send("presence", status="b-start")
    w.wait_stanza(start=w0, name="presence", **{"from": b.bound})

    def w_sync(tag):
        w.send("raw", xml=f"<iq type='get' id='{tag}' to='{stack.domain}'>"
                          "<ping xmlns='urn:xmpp:ping'/></iq>")
        assert w.wait_stanza(start=w0, name="iq", id=tag)["type"] == "result"

    w.send("raw", xml="<inactive xmlns='urn:xmpp:csi:0'/>")
    w_sync("csi-sync-1")
    w1 = len(w.events)
    for st in ("b-one", "b-two"):
        b.send("presence", status=st)
    sync(b)
    w_sync("csi-sync-2")        # a held request was answered since: still nothing
    assert not presences(w, b.bound, w1), w.dump()
    w.send("raw", xml="<active xmlns='urn:xmpp:csi:0'/>")
    w.wait_stanza(start=w1, name="presence", **{"from": b.bound})
    w_sync("csi-sync-3")
    assert [text_of(e, "status") for e in presences(w, b.bound, w1)] == ["b-two"]
    assert w_full.startswith(f"{me}@")


def blocked_items(ev):
    return {i.get("jid") for i in elems(ev, "item")}


def test_blocking_command(dev, stack):
    me, bo, ca = (f"{t}{secrets.token_hex(3)}" for t in ("bm", "bb", "bc"))
    pw, b_pw = stack.add_user(me), stack.add_user(bo)
    befriend(stack, me, bo)
    a1 = dev(me, pw, resource="one")
    a2 = dev(me, pw, resource="two")
    b = dev(bo, b_pw, resource="b")
    c = dev(ca, stack.add_user(ca), resource="c")
    info = iq(a1, "iq_get", to=stack.domain,
              child="<query xmlns='http://jabber.org/protocol/disco#info'/>")
    assert "urn:xmpp:blocking" in {f.get("var") for f in elems(info, "feature")}
    for x in (a1, a2):
        ev = iq(x, "blocked_get")
        assert ev["type"] == "result" and blocked_items(ev) == set(), ev
    b0 = len(b.events)
    a1.send("presence")
    a2.send("presence")
    b.send("presence")
    b.wait_stanza(start=b0, name="presence", type=None, **{"from": a1.bound})
    b.wait_stanza(start=b0, name="presence", type=None, **{"from": a2.bound})

    a2_0, b0 = len(a2.events), len(b.events)
    assert iq(a1, "block", jid=b.bare)["type"] == "result"
    push = a2.wait_stanza(start=a2_0, name="iq", type="set",
                          xml=lambda x: x and "urn:xmpp:blocking" in x and "block" in x)
    assert blocked_items(push) == {b.bare} and elems(push, "block")
    for x in (a1, a2):
        b.wait_stanza(start=b0, name="presence", type="unavailable", **{"from": x.bound})
    assert stack.redis_cli("SISMEMBER", f"chat:blocklist:{me}", b.bare) == "1"

    # b's message bounces and never reaches a; the marker from c does
    a1_0 = len(a1.events)
    spam = f"spam {secrets.token_hex(3)}"
    b.send("chat", to=a1.bound, body=spam, msgid="spam1")
    err = b.wait_stanza(start=b0, name="message", id="spam1")
    assert err["type"] == "error" and error_condition(err) == "service-unavailable"
    marker = f"marker {secrets.token_hex(3)}"
    c.send("chat", to=a1.bound, body=marker)
    a1.wait_stanza(start=a1_0, name="message", body=marker)
    assert not a1.stanzas(a1_0, name="message", body=spam)
    # b's presence no longer reaches a
    b.send("presence", status="still here")
    sync(b)
    c.send("chat", to=a1.bound, body=marker + "2")
    a1.wait_stanza(start=a1_0, name="message", body=marker + "2")
    assert not presences(a1, b.bound, a1_0)

    # what a sends to b is refused with <blocked/>
    a1.send("chat", to=b.bound, body="hello?", msgid="tob1")
    err = a1.wait_stanza(start=a1_0, name="message", id="tob1")
    assert err["type"] == "error" and error_condition(err) == "not-acceptable"
    assert elems(err, "blocked")
    assert not b.stanzas(b0, name="message", body="hello?")

    # a blocked stranger's subscription request never reaches a
    d = dev()
    assert iq(a1, "block", jid=d.bare)["type"] == "result"
    d.send("subscribe", to=a1.bare)
    sync(d)
    c.send("chat", to=a1.bound, body=marker + "3")
    a1.wait_stanza(start=a1_0, name="message", body=marker + "3")
    assert not [e for e in a1.stanzas(a1_0, name="presence", type="subscribe")
                if e["from"].startswith(d.bare)]

    # the sign-in path loads the list from Redis
    a3 = dev(me, pw, resource="three")
    assert blocked_items(iq(a3, "blocked_get")) == {b.bare, d.bare}

    # a offline: b's message is not stored for later, c's is
    a0s = [len(x.events) for x in (a1, a2, a3)]
    for x in (a1, a2, a3):
        x.close()
    deadline = time.monotonic() + 20
    while f"{me}@" in stack.chatctl("sessions", "list").stdout:
        assert time.monotonic() < deadline, "a's sessions did not end"
        time.sleep(0.05)        # polling interval, not synchronisation
    b1 = len(b.events)
    later = f"while away {secrets.token_hex(3)}"
    b.send("chat", to=f"{me}@{stack.domain}", body=later, msgid="away1")
    err = b.wait_stanza(start=b1, name="message", id="away1")
    assert err["type"] == "error" and error_condition(err) == "service-unavailable"
    kept = f"kept {secrets.token_hex(3)}"
    c.send("chat", to=f"{me}@{stack.domain}", body=kept)
    deadline = time.monotonic() + 20
    while kept not in stack.redis_cli("LRANGE", f"chat:offline:{me}", 0, -1):
        assert time.monotonic() < deadline, "c's message was not stored"
        time.sleep(0.05)        # polling interval, not synchronisation
    assert later not in stack.redis_cli("LRANGE", f"chat:offline:{me}", 0, -1)
    a1 = dev(me, pw, resource="back")
    a1.send("presence")
    a1.wait_stanza(name="message", body=kept)
    assert not a1.stanzas(name="message", body=later)
    a2 = dev(me, pw, resource="two")
    assert iq(a2, "blocked_get")["type"] == "result"
    a1_0 = len(a1.events)

    # unblock: pushed, and b's messages flow again
    a2_0 = len(a2.events)
    assert iq(a1, "unblock", jid=b.bare)["type"] == "result"
    a2.wait_stanza(start=a2_0, name="iq", type="set",
                   xml=lambda x: x and "unblock" in x and b.bare in x)
    assert stack.redis_cli("SISMEMBER", f"chat:blocklist:{me}", b.bare) == "0"
    ok = f"friends again {secrets.token_hex(3)}"
    b.send("chat", to=a1.bound, body=ok)
    a1.wait_stanza(start=a1_0, name="message", body=ok)


def test_blocklist_that_cannot_load_fails_closed(dev, stack):
    me = f"bf{secrets.token_hex(3)}"
    pw = stack.add_user(me)
    # a key of the wrong type: SMEMBERS fails as on a broken Redis
    stack.redis_cli("SET", f"chat:blocklist:{me}", "not a set")
    a = dev(me, pw, resource="a")
    c = dev()
    ev = iq(a, "blocked_get")
    assert ev["type"] == "error" and ev["cond"] == "internal-server-error", ev
    a0, c0 = len(a.events), len(c.events)
    text = f"unchecked {secrets.token_hex(3)}"
    c.send("chat", to=a.bound, body=text, msgid="fc1")
    err = c.wait_stanza(start=c0, name="message", id="fc1")
    assert err["type"] == "error" and error_condition(err) == "internal-server-error"
    sync(a)
    assert not a.stanzas(a0, name="message", body=text)
    # repaired: the next blocklist iq loads it and messages flow
    stack.redis_cli("DEL", f"chat:blocklist:{me}")
    assert iq(a, "blocked_get")["type"] == "result"
    c.send("chat", to=a.bound, body=text)
    a.wait_stanza(start=a0, name="message", body=text)


def _eval_calls(stack):
    for line in stack.redis_cli("INFO", "commandstats").splitlines():
        if line.startswith("cmdstat_eval:"):
            return int(line.split("calls=", 1)[1].split(",", 1)[0])
    return 0


def test_blocked_strangers_subscription_is_not_kept_while_away(dev, stack):
    """XEP-0191 for an account with no session: the blocklist is only in
    Redis then, and a blocked stranger's subscription request must not be
    stored for the next sign-in (a friend's request is)."""
    me = f"bs{secrets.token_hex(3)}"
    pw = stack.add_user(me)
    a = dev(me, pw, resource="one")
    d, c = dev(), dev()
    assert iq(a, "block", jid=d.bare)["type"] == "result"
    a.close()
    deadline = time.monotonic() + 20
    while f"{me}@" in stack.chatctl("sessions", "list").stdout:
        assert time.monotonic() < deadline, "the session did not end"
        time.sleep(0.05)        # polling interval, not synchronisation

    # the stranger's request is handled (its store script ran) before the friend's
    before = _eval_calls(stack)
    d.send("subscribe", to=f"{me}@{stack.domain}")
    deadline = time.monotonic() + 20
    while _eval_calls(stack) <= before:
        assert time.monotonic() < deadline, "the subscription request was never handled"
        time.sleep(0.05)        # polling interval, not synchronisation
    c.send("subscribe", to=f"{me}@{stack.domain}")
    deadline = time.monotonic() + 20
    while c.bare not in stack.redis_cli("HKEYS", f"chat:subin:{me}"):
        assert time.monotonic() < deadline, "the friend's request was not kept"
        time.sleep(0.05)        # polling interval, not synchronisation
    assert d.bare not in stack.redis_cli("HKEYS", f"chat:subin:{me}")

    # at sign-in the kept requests are shown together: the friend's, not the stranger's
    back = dev(me, pw, resource="back")
    back.send("presence")
    back.wait_stanza(name="presence", type="subscribe", **{"from": c.bare})
    assert not [e for e in back.stanzas(name="presence", type="subscribe")
                if e["from"].startswith(d.bare)]
