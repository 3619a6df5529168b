"""Issue 14: one client cannot fill another user's data, and chatd fails
closed when Redis fails (offline storage, rosters, presence).

A private stack with tight caps (offline_max_messages 4, a 50% sender
share, offline_max_bytes 8192, max_roster_items 3, max_directed_presences
2) and Redis' DEBUG command enabled, so a test can make Redis sleep past
chatd's 2 s command deadline while a roster loads, an offline list is
flushed or a message is stored. Real slixmpp clients on the native port;
The Redis-failure tests run with Strophe.js over BOSH (clients.BoshClient)
too: web users meet the same errors. Every assertion is about what a
client receives (or what Redis holds).
"""

import secrets
import socket

import pytest

import os

import outage
from clients import BoshClient
from native_client import NativeClient, error_condition
from signin_util import private_stack

NS_ROSTER = "jabber:iq:roster"
CAPS = {
    "offline_max_messages": "4",
    "offline_sender_share": "50",
    "offline_max_bytes": "8192",
    "max_roster_items": "3",
    "max_directed_presences": "2",
}


@pytest.fixture(scope="module")
def st():
    with private_stack("chat-i14-", chatd_extra=CAPS,
                       redis_extra="enable-debug-command yes") as s:
        yield s


@pytest.fixture
def client(st):
    made = []

    def make(user, password, resource="t", presence=True, kind="native"):
        jid = f"{user}@{st.domain}/{resource}"
        if kind == "bosh":
            log_dir = os.path.join(st.root, "clients")
            os.makedirs(log_dir, exist_ok=True)
            c = BoshClient(st.bosh_url, jid, password, mech="SCRAM-SHA-256", log_dir=log_dir)
        else:
            c = NativeClient("127.0.0.1", st.xmpp_port, jid, password)
        made.append(c)
        c.connect()
        if presence:
            c.send("presence")
        return c
    yield make
    for c in made:
        c.close()


def new_user(st, prefix):
    name = f"{prefix}{secrets.token_hex(3)}"
    return name, st.add_user(name)


def raw(c, xml):
    c.send("raw", xml=xml)


def stanza_error(ev):
    """(error type, condition) of a received stanza."""
    import xml.etree.ElementTree as ET
    el = ET.fromstring(ev["xml"])
    err = next((e for e in el.iter() if e.tag.split("}")[-1] == "error"), None)
    return (err.get("type") if err is not None else None), error_condition(ev)


class RedisAsleep:
    """DEBUG SLEEP on a raw connection; entered once Redis is seen asleep
    (a PING on a second connection goes unanswered), left once the sleep
    answered. chatd's command deadline is 2 s: the sleep outlasts it."""

    def __init__(self, st, seconds=5):
        self.st, self.seconds = st, seconds

    def __enter__(self):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(self.seconds + 20)
        self.s.connect(self.st.redis_sock)
        self.s.sendall(b"DEBUG SLEEP %d\r\n" % self.seconds)

        def asleep():
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as p:
                p.settimeout(0.3)
                p.connect(self.st.redis_sock)
                p.sendall(b"PING\r\n")
                try:
                    p.recv(64)
                    return False
                except socket.timeout:
                    return True
        outage.wait_until(asleep, 5, "redis asleep")
        return self

    def __exit__(self, *exc):
        reply = self.s.recv(64)
        self.s.close()
        assert reply.startswith(b"+OK"), reply


def chat(c, to, body, msgid):
    c.send("chat", to=to, body=body, msgid=msgid)


# -- rosters: fail closed ------------------------------------------------------

KINDS = pytest.mark.parametrize("kind", ["native", "bosh"])


@KINDS
def test_roster_load_failure_fails_closed(st, client, kind):
    alice, apw = new_user(st, "ra")
    bob, _ = new_user(st, "rb")
    bob_jid = f"{bob}@{st.domain}"
    st.redis_cli("HSET", f"chat:roster:{alice}", bob_jid, "sub=both;ask=;name=Bob;groups=")
    a = client(alice, apw, presence=False, kind=kind)   # roster not loaded yet
    m = len(a.events)
    with RedisAsleep(st):
        raw(a, f"<iq type='get' id='rg1'><query xmlns='{NS_ROSTER}'/></iq>")
        raw(a, f"<presence type='subscribe' to='{bob_jid}' id='sub1'/>")
        got = a.wait_stanza(30, start=m, name="iq", id="rg1")
    # The client is told to wait, never served an empty roster ...
    assert got["type"] == "error", got
    assert stanza_error(got) == ("wait", "internal-server-error"), got
    # ... nothing was written from the roster that was never read ...
    assert st.redis_cli("HGET", f"chat:roster:{alice}", bob_jid) == \
        "sub=both;ask=;name=Bob;groups="
    # ... and the subscription that needed it was refused, not half done.
    sub = a.wait_stanza(30, start=m, name="presence", id="sub1")
    assert sub["type"] == "error" and stanza_error(sub)[0] == "wait", sub
    # The next use loads again and serves the stored roster.
    m = len(a.events)
    raw(a, f"<iq type='get' id='rg2'><query xmlns='{NS_ROSTER}'/></iq>")
    ok = a.wait_stanza(20, start=m, name="iq", id="rg2")
    assert ok["type"] == "result" and bob_jid in ok["xml"] and "both" in ok["xml"], ok


def test_roster_cap(st, client):
    alice, apw = new_user(st, "rc")
    a = client(alice, apw, presence=False)
    for i in range(4):
        raw(a, f"<iq type='set' id='set{i}'><query xmlns='{NS_ROSTER}'>"
               f"<item jid='c{i}@{st.domain}'/></query></iq>")
    res = [a.wait_stanza(20, name="iq", id=f"set{i}") for i in range(4)]
    assert [r["type"] for r in res] == ["result", "result", "result", "error"], res
    assert stanza_error(res[3]) == ("cancel", "not-allowed"), res[3]
    # Changing an item already there is fine at the cap; nothing was dropped.
    raw(a, f"<iq type='set' id='ren'><query xmlns='{NS_ROSTER}'>"
           f"<item jid='c0@{st.domain}' name='Zero'/></query></iq>")
    assert a.wait_stanza(20, name="iq", id="ren")["type"] == "result"
    assert sorted(st.redis_cli("HKEYS", f"chat:roster:{alice}").split()) == \
        [f"c{i}@{st.domain}" for i in range(3)]
    # A subscription that would add a 4th item is refused too.
    raw(a, f"<presence type='subscribe' to='c9@{st.domain}' id='s9'/>")
    e = a.wait_stanza(20, name="presence", id="s9")
    assert e["type"] == "error" and stanza_error(e)[1] == "not-allowed", e


# -- offline storage -----------------------------------------------------------

def test_offline_quota_refuses_new_keeps_others(st, client):
    alice, _apw = new_user(st, "oa")
    bob, bpw = new_user(st, "ob")
    carol, cpw = new_user(st, "oc")
    to = f"{alice}@{st.domain}"
    b = client(bob, bpw)
    c = client(carol, cpw)
    for i in range(3):                         # share: 2 of 4 per sender
        chat(b, to, f"b{i}", f"b{i}")
    e = b.wait_stanza(20, name="message", id="b2")
    assert e["type"] == "error" and stanza_error(e) == ("wait", "resource-constraint"), e
    for i in range(2):
        chat(c, to, f"c{i}", f"c{i}")
    outage.wait_until(lambda: st.redis_cli("LLEN", f"chat:offline:{alice}") == "4",
                      20, "4 stored")
    chat(c, to, "c2", "c2")                    # list full
    e = c.wait_stanza(20, name="message", id="c2")
    assert stanza_error(e) == ("wait", "resource-constraint"), e
    assert not b.stanzas(name="message", id="b0") and not b.stanzas(name="message", id="b1")

    # Byte share: 4096 of 8192 per sender.
    dave, dpw = new_user(st, "od")
    d = client(dave, dpw)
    erin, _ = new_user(st, "oe")
    chat(d, f"{erin}@{st.domain}", "y" * 5000, "big")
    e = d.wait_stanza(20, name="message", id="big")
    assert stanza_error(e) == ("wait", "resource-constraint"), e
    chat(d, f"{erin}@{st.domain}", "y" * 3000, "fits")
    outage.wait_until(lambda: st.redis_cli("LLEN", f"chat:offline:{erin}") == "1",
                      20, "the smaller one stored")

    # Alice gets everything that was accepted, oldest first, none of the rest.
    a = client(alice, _apw)
    for body in ("b0", "b1", "c0", "c1"):
        a.wait_stanza(20, name="message", body=body)
    bodies = [s["body"] for s in a.stanzas(name="message")]
    assert bodies == ["b0", "b1", "c0", "c1"], bodies
    outage.wait_until(lambda: st.redis_cli("EXISTS", f"chat:offline:{alice}",
                                           f"chat:offline-use:{alice}",
                                           f"chat:offline-lease:{alice}") == "0",
                      20, "list, usage and lease gone")


@KINDS
def test_offline_store_failure_is_bounced(st, client, kind):
    alice, _ = new_user(st, "fa")
    bob, bpw = new_user(st, "fb")
    b = client(bob, bpw, kind=kind)
    b.wait_event(lambda e: e.get("event") == "stanza" and e["name"] == "presence", 20)
    with RedisAsleep(st):
        chat(b, f"{alice}@{st.domain}", "lost?", "m1")
        e = b.wait_stanza(30, name="message", id="m1")
    assert e["type"] == "error" and stanza_error(e) == ("wait", "internal-server-error"), e


@KINDS
def test_offline_flush_survives_lost_reply(st, client, kind):
    alice, apw = new_user(st, "la")
    bob, bpw = new_user(st, "lb")
    b = client(bob, bpw)
    for i in range(2):
        chat(b, f"{alice}@{st.domain}", f"keep{i}", f"k{i}")
    b.send("subscribe", to=f"{alice}@{st.domain}")
    outage.wait_until(lambda: st.redis_cli("LLEN", f"chat:offline:{alice}") == "2" and
                      st.redis_cli("HLEN", f"chat:subin:{alice}") == "1", 20, "2 stored")
    a = client(alice, apw, presence=False, kind=kind)
    raw(a, f"<iq type='get' id='g'><query xmlns='{NS_ROSTER}'/></iq>")
    a.wait_stanza(20, name="iq", id="g")         # roster loaded: presence needs no Redis
    with RedisAsleep(st):
        a.send("presence")          # the flush runs in Redis, its answer is lost
        outage.wait_until(lambda: f"cannot read messages for {alice}@"
                          in open(st.chatd_log).read(), 30, "flush failed in chatd")
    # Nothing was removed: the next presence of the same session gets them.
    assert st.redis_cli("LLEN", f"chat:offline:{alice}") == "2"
    a.send("presence")
    for i in range(2):
        a.wait_stanza(20, name="message", body=f"keep{i}")
    a.wait_stanza(20, name="presence", type="subscribe")   # the request too
    outage.wait_until(lambda: st.redis_cli("LLEN", f"chat:offline:{alice}") == "0",
                      20, "removed once delivered")


# -- presence ------------------------------------------------------------------

def test_directed_presence_cap(st, client):
    alice, apw = new_user(st, "da")
    a = client(alice, apw)
    for i in range(3):
        raw(a, f"<presence to='p{i}@{st.domain}/r' id='dp{i}'/>")
    e = a.wait_stanza(20, name="presence", id="dp2")
    assert e["type"] == "error" and stanza_error(e)[1] == "policy-violation", e
    assert not a.stanzas(name="presence", id="dp0") and not a.stanzas(name="presence", id="dp1")
    # Undoing one makes room.
    raw(a, f"<presence to='p0@{st.domain}/r' type='unavailable'/>")
    raw(a, f"<presence to='p2@{st.domain}/r' id='dp2b'/>")
    raw(a, f"<iq type='get' id='sync' to='{st.domain}'><ping xmlns='urn:xmpp:ping'/></iq>")
    a.wait_stanza(20, name="iq", id="sync")
    assert not a.stanzas(name="presence", id="dp2b")


def test_unsolicited_subscribed_is_ignored(st, client):
    alice, apw = new_user(st, "ua")
    bob, bpw = new_user(st, "ub")
    ajid, bjid = f"{alice}@{st.domain}", f"{bob}@{st.domain}"
    a = client(alice, apw)
    b = client(bob, bpw)
    raw(a, f"<iq type='get' id='g'><query xmlns='{NS_ROSTER}'/></iq>")
    a.wait_stanza(20, name="iq", id="g")
    raw(a, f"<iq type='set' id='add'><query xmlns='{NS_ROSTER}'><item jid='{bjid}'/>"
           f"</query></iq>")
    a.wait_stanza(20, name="iq", id="add")
    m = len(a.events)
    raw(b, f"<presence type='subscribed' to='{ajid}'/>")   # alice never asked
    chat(b, ajid, "sync", "sync")
    a.wait_stanza(20, start=m, name="message", body="sync")
    pushes = [s for s in a.stanzas(start=m, name="iq") if "subscription=\"to\"" in s["xml"]
              or "subscription='to'" in s["xml"]]
    assert not pushes, pushes
    assert not a.stanzas(start=m, name="presence", type="subscribed")
    assert st.redis_cli("HGET", f"chat:roster:{alice}", bjid).startswith("sub=none;")


def test_subscription_request_kept_until_answered(st, client):
    alice, apw = new_user(st, "sa")
    bob, bpw = new_user(st, "sb")
    ajid, bjid = f"{alice}@{st.domain}", f"{bob}@{st.domain}"
    a = client(alice, apw)
    b = client(bob, bpw)
    a.wait_event(lambda e: e.get("event") == "stanza" and e["name"] == "presence", 20)
    b.send("subscribe", to=ajid)
    a.wait_stanza(20, name="presence", type="subscribe")      # seen while online
    a.close()
    # Not answered: shown again at the next login (RFC 6121 3.1.3).
    a2 = client(alice, apw, resource="again")
    ev = a2.wait_stanza(20, name="presence", type="subscribe")
    assert ev["from"] == bjid, ev
    a2.send("subscribed", to=bjid)
    outage.wait_until(lambda: st.redis_cli("HEXISTS", f"chat:subin:{alice}", bjid) == "0",
                      20, "request cleared once answered")


def test_deluser_removes_quota_usage_and_pending_requests(st, client):
    alice, _ = new_user(st, "xa")
    bob, bpw = new_user(st, "xb")
    b = client(bob, bpw)
    chat(b, f"{alice}@{st.domain}", "hello", "h1")
    b.send("subscribe", to=f"{alice}@{st.domain}")
    keys = [f"chat:offline:{alice}", f"chat:offline-use:{alice}", f"chat:subin:{alice}"]
    outage.wait_until(lambda: st.redis_cli("EXISTS", *keys) == "3", 20, "stored")
    st.chatctl("deluser", alice)
    assert st.redis_cli("EXISTS", *keys, f"chat:offline-lease:{alice}") == "0"


@KINDS
def test_roster_write_failure_is_reported(st, client, kind):
    alice, apw = new_user(st, "wa")
    a = client(alice, apw, presence=False, kind=kind)
    raw(a, f"<iq type='get' id='g'><query xmlns='{NS_ROSTER}'/></iq>")
    a.wait_stanza(20, name="iq", id="g")          # loaded: the set needs no read
    with RedisAsleep(st):
        raw(a, f"<iq type='set' id='w1'><query xmlns='{NS_ROSTER}'>"
               f"<item jid='w1@{st.domain}'/></query></iq>")
        got = a.wait_stanza(30, name="iq", id="w1")
    # Not confirmed by Redis: the client is told to wait, not "done".
    assert got["type"] == "error" and stanza_error(got) == ("wait", "internal-server-error"), got
    # The next read shows what Redis really holds, whatever that is.
    m = len(a.events)
    raw(a, f"<iq type='get' id='g2'><query xmlns='{NS_ROSTER}'/></iq>")
    g2 = a.wait_stanza(20, start=m, name="iq", id="g2")
    stored = f"w1@{st.domain}" in st.redis_cli("HKEYS", f"chat:roster:{alice}").split()
    assert g2["type"] == "result" and (f"w1@{st.domain}" in g2["xml"]) == stored, g2


def test_offline_flush_in_batches_within_max_output():
    """A full offline list bigger than the session's output cap arrives
    whole: it is handed over in batches (each acked before the next), not
    in one write that max_output cuts off together with the session."""
    # byte_rate off: with max_output this small its burst (a quarter of it)
    # is below one of these messages, and this test is about the flush.
    caps = dict(CAPS, max_output="4096", byte_rate="0")
    with private_stack("chat-i14b-", chatd_extra=caps) as s:
        alice, apw = new_user(s, "ba")
        senders = [new_user(s, f"s{i}") for i in range(2)]
        clients = []
        try:
            for name, pw in senders:
                c = NativeClient("127.0.0.1", s.xmpp_port, f"{name}@{s.domain}/t", pw)
                clients.append(c)
                c.connect()
                for i in range(2):                   # 2 x ~1.9 KB each: 7.8 KB in all
                    chat(c, f"{alice}@{s.domain}", f"{name}-{i}-" + "z" * 1650, f"{name}{i}")
            outage.wait_until(lambda: s.redis_cli("LLEN", f"chat:offline:{alice}") == "4",
                              20, "4 stored")
            a = NativeClient("127.0.0.1", s.xmpp_port, f"{alice}@{s.domain}/t", apw)
            clients.append(a)
            a.connect()
            a.send("presence")
            for name, _ in senders:
                for i in range(2):
                    a.wait_stanza(30, name="message",
                                  body=lambda b, p=f"{name}-{i}-": bool(b) and b.startswith(p))
            assert not [e for e in a.events if e.get("event") == "status"
                        and e["status"] == "DISCONNECTED"]
            outage.wait_until(lambda: s.redis_cli("LLEN", f"chat:offline:{alice}") == "0",
                              20, "removed once delivered")
        finally:
            for c in clients:
                c.close()


def test_offline_storage_off_bounces_service_unavailable():
    with private_stack("chat-i14c-", chatd_extra=dict(CAPS, offline_max_messages="0")) as s:
        alice, _ = new_user(s, "za")
        bob, bpw = new_user(s, "zb")
        b = NativeClient("127.0.0.1", s.xmpp_port, f"{bob}@{s.domain}/t", bpw)
        try:
            b.connect()
            chat(b, f"{alice}@{s.domain}", "anyone?", "z1")
            e = b.wait_stanza(20, name="message", id="z1")
            assert stanza_error(e) == ("cancel", "service-unavailable"), e
            assert s.redis_cli("EXISTS", f"chat:offline:{alice}") == "0"
        finally:
            b.close()
