"""XEP-0163 PEP with stock slixmpp (issue 17): XEP-0402 bookmarks and
XEP-0084 avatars on the account's bare JID.

Clients announce what they want with XEP-0115 caps: slixmpp's xep_0163 /
xep_0084 plugins put "<node>+notify" in their disco#info, chatd asks for
it once (node#ver) and sends events only to sessions that asked.

- the account's disco#info: identity pubsub/pep and #publish-options
  (what Converse checks before it uses PEP bookmarks);
- a bookmark published with publish-options whitelist reaches the user's
  other resource as a headline event, and nobody else: a contact's items
  request is refused (closed-node), the owner reads it back;
- avatar metadata (presence access) reaches contacts with a subscription
  (event, and the last item when a contact's next session comes online),
  a stranger's items request is refused (presence-subscription-required);
- limits: payload-too-big, pep_max_nodes, max_items trimming, and a
  publish-options precondition that does not match (conflict).

"Gets nothing" is checked without sleeping: after the event that would
have produced a notification, a marker message is sent from the same
publisher session; chatd handles one connection in order, so once the
marker arrived an earlier notification would have too.
"""

import asyncio
import base64
import hashlib
import secrets
import xml.etree.ElementTree as ET

import pytest

from native_client import NativeClient
from scenarios import iq

NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_EVENT = "http://jabber.org/protocol/pubsub#event"
NS_ERRORS = "http://jabber.org/protocol/pubsub#errors"
NS_BM = "urn:xmpp:bookmarks:1"
NS_AV_DATA = "urn:xmpp:avatar:data"
NS_AV_META = "urn:xmpp:avatar:metadata"


class PepClient(NativeClient):
    """slixmpp with the stock PEP, caps and avatar plugins, and an
    interest in XEP-0402 bookmarks."""

    def _build(self, jid, password):
        super()._build(jid, password)
        self.x.register_plugin("xep_0060")
        self.x.register_plugin("xep_0115")
        self.x.register_plugin("xep_0163")
        self.x.register_plugin("xep_0084")

    async def _cmd_online(self, kw):
        """Announce the interests in caps, send available presence, and
        return once chatd knows them: chatd reads a connection in order,
        so a ping's answer comes after it handled the presence (and sent
        its caps query, if the ver was new), and a second ping's after it
        handled our answer to that query."""
        if kw.get("bookmarks", True):
            self.x["xep_0030"].add_feature(f"{NS_BM}+notify")
        if kw.get("old_bookmarks"):
            self.x["xep_0030"].add_feature("storage:bookmarks+notify")
        await self.x["xep_0115"].update_caps(broadcast=False)
        answered = asyncio.Event()
        asked = []

        def seen_in(st):
            if st.xml.get("type") == "get" and st.xml.find(
                    "{http://jabber.org/protocol/disco#info}query[@node]") is not None:
                asked.append(st)
            return st

        def seen_out(st):
            if st.xml.get("type") == "result" and st.xml.find(
                    "{http://jabber.org/protocol/disco#info}query[@node]") is not None:
                answered.set()
            return st
        self.x.add_filter("in", seen_in)
        self.x.add_filter("out", seen_out)
        try:
            self.x.send_presence()
            await self.x["xep_0199"].ping(self.x.boundjid.domain, timeout=20)
            if asked:
                await asyncio.wait_for(answered.wait(), 20)
                await self.x["xep_0199"].ping(self.x.boundjid.domain, timeout=20)
        finally:
            self.x.del_filter("in", seen_in)
            self.x.del_filter("out", seen_out)
        self._emit({"event": "online", "id": kw.get("id")})

    async def _cmd_avatar(self, kw):
        data = kw["data"]
        await self._iq(kw, self.x["xep_0084"].publish_avatar(data))
        aid = hashlib.sha1(data).hexdigest()
        await self._iq({"id": kw["id"] + "-meta"}, self.x["xep_0084"].publish_avatar_metadata(
            {"id": aid, "type": "image/png", "bytes": len(data)}))


@pytest.fixture
def pep(stack):
    made = []

    def make(user=None, password=None, resource="r", bookmarks=True, old_bookmarks=False):
        if user is None:
            user = f"p{secrets.token_hex(3)}"
            password = stack.add_user(user)
        c = PepClient("127.0.0.1", stack.xmpp_port, f"{user}@{stack.domain}/{resource}",
                      password)
        made.append(c)
        c.user, c.password = user, password
        c.bare = f"{user}@{stack.domain}"
        c.bound = c.connect()
        mark = len(c.events)
        c.send("online", id="online", bookmarks=bookmarks, old_bookmarks=old_bookmarks)
        c.wait_event(lambda e: e.get("event") == "online", 20, "online", mark)
        return c
    yield make
    for c in made:
        c.close()


def account(stack):
    user = f"p{secrets.token_hex(3)}"
    return user, stack.add_user(user)


def befriend(stack, a, b):
    """Mutual subscriptions, written before sign-in (the roster is loaded
    with the first presence)."""
    for x, y in ((a, b), (b, a)):
        stack.redis_cli("HSET", f"chat:roster:{x}", f"{y}@{stack.domain}",
                        "sub=both;ask=;name=;groups=")


def publish_xml(node, item_id, payload, options=None):
    opts = ""
    if options:
        fields = "".join(f"<field var='pubsub#{k}'><value>{v}</value></field>"
                         for k, v in options.items())
        opts = ("<publish-options><x xmlns='jabber:x:data' type='submit'>"
                "<field var='FORM_TYPE' type='hidden'>"
                f"<value>{NS_PUBSUB}#publish-options</value></field>{fields}</x>"
                "</publish-options>")
    return (f"<pubsub xmlns='{NS_PUBSUB}'><publish node='{node}'>"
            f"<item id='{item_id}'>{payload}</item></publish>{opts}</pubsub>")


def bookmark(room, autojoin="true"):
    return f"<conference xmlns='{NS_BM}' name='Team' autojoin='{autojoin}'><nick>me</nick></conference>"


BM_OPTIONS = {"persist_items": "true", "max_items": "max",
              "send_last_published_item": "never", "access_model": "whitelist"}


def items(c, owner, node):
    return iq(c, "iq_get", to=owner, child=f"<pubsub xmlns='{NS_PUBSUB}'><items node='{node}'/></pubsub>")


def pubsub_error(ev):
    """(condition, pubsub#errors condition) of an iq error event."""
    root = ET.fromstring(ev["xml"])
    err = next((c for c in root if c.tag.split("}")[-1] == "error"), None)
    assert err is not None, ev["xml"]
    cond = app = None
    for c in err:
        ns, name = c.tag[1:].split("}", 1)
        if ns == "urn:ietf:params:xml:ns:xmpp-stanzas" and name != "text":
            cond = name
        elif ns == NS_ERRORS:
            app = name
    return cond, app


def events(c, start, node):
    """PEP event messages for node since start: (from, <items/> element)."""
    out = []
    for ev in c.stanzas(start, name="message"):
        root = ET.fromstring(ev["xml"])
        e = root.find(f"{{{NS_EVENT}}}event")
        its = e.find(f"{{{NS_EVENT}}}items") if e is not None else None
        if its is not None and its.get("node") == node:
            out.append((ev["from"], its))
    return out


def wait_event(c, start, node, timeout=20):
    c.wait_event(lambda e: e.get("event") == "stanza" and e.get("name") == "message"
                 and f"node=\"{node}\"" in e["xml"] and NS_EVENT in e["xml"],
                 timeout, f"PEP event on {node}", start)
    return events(c, start, node)


def marker(sender, receivers):
    """A chat message from sender to each receiver, waited for."""
    body = "marker-" + secrets.token_hex(4)
    marks = [len(r.events) for r in receivers]
    for r in receivers:
        sender.send("chat", to=r.bound, body=body)
    for r, m in zip(receivers, marks):
        r.wait_stanza(start=m, name="message", body=body)


def test_account_disco_announces_pep(pep):
    a = pep()
    info = iq(a, "iq_get", to=a.bare, child="<query xmlns='http://jabber.org/protocol/disco#info'/>")
    root = ET.fromstring(info["xml"])
    q = root.find("{http://jabber.org/protocol/disco#info}query")
    ids = {(i.get("category"), i.get("type")) for i in q.findall("{http://jabber.org/protocol/disco#info}identity")}
    feats = {f.get("var") for f in q.findall("{http://jabber.org/protocol/disco#info}feature")}
    assert ("pubsub", "pep") in ids
    assert f"{NS_PUBSUB}#publish-options" in feats
    assert f"{NS_PUBSUB}#access-whitelist" in feats


def test_bookmark_reaches_own_resources_only(pep, stack):
    me, bob_acct = account(stack), account(stack)
    befriend(stack, me[0], bob_acct[0])
    desk = pep(*me, resource="desk")
    phone = pep(*me, resource="phone")
    bob = pep(*bob_acct)
    stranger = pep()
    room = f"team@conference.{stack.domain}"
    p0, b0 = len(phone.events), len(bob.events)

    ev = iq(desk, "iq_set", to=desk.bare,
            child=publish_xml(NS_BM, room, bookmark(room), BM_OPTIONS))
    assert ev["type"] == "result", ev
    got = wait_event(phone, p0, NS_BM)
    frm, its = got[0]
    assert frm == desk.bare
    item = its.find(f"{{{NS_EVENT}}}item")
    assert item.get("id") == room
    conf = item.find(f"{{{NS_BM}}}conference")
    assert conf.get("autojoin") == "true"
    # bob has a subscription, but bookmarks are whitelisted: no event ...
    marker(desk, [bob])
    assert events(bob, b0, NS_BM) == []
    # ... and his request is refused, like a stranger's
    for other in (bob, stranger):
        ev = items(other, desk.bare, NS_BM)
        assert ev["type"] == "error"
        assert pubsub_error(ev) == ("not-allowed", "closed-node"), ev["xml"]
    # the owner reads it back, on any resource
    ev = items(phone, desk.bare, NS_BM)
    assert ev["type"] == "result", ev
    assert f"id=\"{room}\"" in ev["xml"] and "autojoin=\"true\"" in ev["xml"]
    assert stack.redis_cli("HEXISTS", f"chat:pep-items:{desk.user}:{NS_BM}", room) == "1"

    # a retract with notify reaches the other resource
    p1 = len(phone.events)
    ev = iq(desk, "iq_set", to=desk.bare,
            child=f"<pubsub xmlns='{NS_PUBSUB}'><retract node='{NS_BM}' notify='true'>"
                  f"<item id='{room}'/></retract></pubsub>")
    assert ev["type"] == "result", ev
    _, its = wait_event(phone, p1, NS_BM)[0]
    assert its.find(f"{{{NS_EVENT}}}retract").get("id") == room
    ev = items(desk, desk.bare, NS_BM)
    assert ev["type"] == "result" and room not in ev["xml"]


def test_avatar_metadata_reaches_contacts(pep, stack):
    alice_acct, bob_acct = account(stack), account(stack)
    befriend(stack, alice_acct[0], bob_acct[0])
    alice = pep(*alice_acct, resource="a")
    bob = pep(*bob_acct, resource="b1")
    stranger = pep()
    b0, s0 = len(bob.events), len(stranger.events)
    png = b"\x89PNG\r\n\x1a\n" + secrets.token_bytes(2000)
    aid = hashlib.sha1(png).hexdigest()

    alice.send("avatar", id="av", data=png)
    ev = alice.wait_event(lambda e: e.get("event") == "iq" and e.get("id") == "av-meta", 20)
    assert ev["type"] == "result", ev
    frm, its = wait_event(bob, b0, NS_AV_META)[0]
    assert frm == alice.bare
    info = its.find(f"{{{NS_EVENT}}}item/{{{NS_AV_META}}}metadata/{{{NS_AV_META}}}info")
    assert info.get("id") == aid and info.get("bytes") == str(len(png))
    # bob fetches the data named by the metadata
    ev = iq(bob, "iq_get", to=alice.bare,
            child=f"<pubsub xmlns='{NS_PUBSUB}'><items node='{NS_AV_DATA}'><item id='{aid}'/></items></pubsub>")
    assert ev["type"] == "result", ev
    data = ET.fromstring(ev["xml"]).find(f".//{{{NS_AV_DATA}}}data").text
    assert base64.b64decode(data) == png
    # the stranger got nothing and may not read it
    marker(alice, [stranger])
    assert events(stranger, s0, NS_AV_META) == []
    ev = items(stranger, alice.bare, NS_AV_META)
    assert pubsub_error(ev) == ("not-authorized", "presence-subscription-required"), ev["xml"]
    # bob's next device gets the last item when it comes online
    bob2 = pep(bob.user, bob.password, resource="b2")
    _, its = wait_event(bob2, 0, NS_AV_META)[0]
    assert its.find(f"{{{NS_EVENT}}}item").get("id") == aid


def test_limits_and_preconditions(pep, stack):
    a = pep()
    # one item over pep_max_item_bytes (131072 by default)
    big = "x" * 140000
    ev = iq(a, "iq_set", to=a.bare,
            child=publish_xml("urn:example:big", "1", f"<blob xmlns='urn:example:big'>{big}</blob>"))
    assert pubsub_error(ev) == ("not-acceptable", "payload-too-big"), ev["xml"][:400]
    assert stack.redis_cli("HEXISTS", f"chat:pep:{a.user}", "urn:example:big") == "0"

    # max_items 2: the oldest item goes
    opts = {"max_items": "2", "access_model": "presence"}
    for n in range(3):
        ev = iq(a, "iq_set", to=a.bare,
                child=publish_xml("urn:example:few", f"i{n}", f"<v xmlns='urn:example:few'>{n}</v>", opts))
        assert ev["type"] == "result", ev
    ev = items(a, a.bare, "urn:example:few")
    got = [i.get("id") for i in ET.fromstring(ev["xml"]).iter(f"{{{NS_PUBSUB}}}item")]
    assert sorted(got) == ["i1", "i2"], ev["xml"]

    # a precondition the node does not meet
    ev = iq(a, "iq_set", to=a.bare,
            child=publish_xml("urn:example:few", "x", "<v xmlns='urn:example:few'/>",
                              {"access_model": "open"}))
    assert pubsub_error(ev) == ("conflict", "precondition-not-met"), ev["xml"]

    # pep_max_nodes (20 by default): one node exists already
    for n in range(19):
        ev = iq(a, "iq_set", to=a.bare,
                child=publish_xml(f"urn:example:n{n}", "1", f"<v xmlns='urn:example:n'/>"))
        assert ev["type"] == "result", (n, ev)
    ev = iq(a, "iq_set", to=a.bare,
            child=publish_xml("urn:example:one-too-many", "1", "<v xmlns='urn:example:n'/>"))
    assert pubsub_error(ev)[0] == "policy-violation", ev["xml"]
    assert stack.redis_cli("HLEN", f"chat:pep:{a.user}") == "20"
    # publishing to someone else's account is refused
    b = pep()
    ev = iq(b, "iq_set", to=a.bare,
            child=publish_xml("urn:example:few", "z", "<v xmlns='urn:example:few'/>"))
    assert pubsub_error(ev)[0] == "forbidden", ev["xml"]


NS_PRIVATE = "jabber:iq:private"
NS_BM_OLD = "storage:bookmarks"


def test_private_storage_bookmarks_are_native_bookmarks(pep, stack):
    """XEP-0402 §5.2 (#compat): an old client's XEP-0048 bookmarks in
    XEP-0049 private storage are the urn:xmpp:bookmarks:1 items, both ways."""
    me = account(stack)
    old = pep(*me, resource="old", bookmarks=False)
    new = pep(*me, resource="new")
    info = iq(new, "iq_get", to=new.bare, child="<query xmlns='http://jabber.org/protocol/disco#info'/>")
    assert "urn:xmpp:bookmarks:1#compat" in info["xml"]
    r1, r2 = (f"r{i}{secrets.token_hex(2)}@{stack.muc_domain}" for i in (1, 2))

    n0 = len(new.events)
    ev = iq(old, "iq_set", to=old.bare, child=(
        f"<query xmlns='{NS_PRIVATE}'><storage xmlns='{NS_BM_OLD}'>"
        f"<conference jid='{r1}' name='One' autojoin='1'><nick>me</nick></conference>"
        f"<conference jid='{r2}' name='Two'/></storage></query>"))
    assert ev["type"] == "result", ev
    got = {}
    def both():
        for _, its in events(new, n0, NS_BM):
            for it in its.findall(f"{{{NS_EVENT}}}item"):
                got[it.get("id")] = it.find(f"{{{NS_BM}}}conference")
        return len(got) == 2
    new.wait_event(lambda e: both(), 20, "events for both bookmarks", n0)
    assert got[r1].get("autojoin") == "true" and got[r1].find(f"{{{NS_BM}}}nick").text == "me"
    assert got[r2].get("autojoin") == "false"
    ev = items(new, new.bare, NS_BM)
    assert r1 in ev["xml"] and r2 in ev["xml"]

    # a native publish shows in private storage
    r3 = f"r3{secrets.token_hex(2)}@{stack.muc_domain}"
    ev = iq(new, "iq_set", to=new.bare, child=publish_xml(NS_BM, r3, bookmark(r3), BM_OPTIONS))
    assert ev["type"] == "result", ev
    ev = iq(old, "iq_get", to=old.bare,
            child=f"<query xmlns='{NS_PRIVATE}'><storage xmlns='{NS_BM_OLD}'/></query>")
    confs = {c.get("jid"): c for c in ET.fromstring(ev["xml"]).iter(f"{{{NS_BM_OLD}}}conference")}
    assert set(confs) == {r1, r2, r3}, ev["xml"]
    assert confs[r3].get("autojoin") == "true"

    # dropping one in private storage retracts it for native clients
    n1 = len(new.events)
    ev = iq(old, "iq_set", to=old.bare, child=(
        f"<query xmlns='{NS_PRIVATE}'><storage xmlns='{NS_BM_OLD}'>"
        f"<conference jid='{r1}' autojoin='true'/><conference jid='{r3}' autojoin='true'/>"
        f"</storage></query>"))
    assert ev["type"] == "result", ev
    new.wait_event(lambda e: any(its.find(f"{{{NS_EVENT}}}retract") is not None
                                 and its.find(f"{{{NS_EVENT}}}retract").get("id") == r2
                                 for _, its in events(new, n1, NS_BM)), 20, "retract of r2", n1)
    assert stack.redis_cli("HEXISTS", f"chat:pep-items:{me[0]}:{NS_BM}", r2) == "0"


def test_private_storage_other_namespaces(pep, stack):
    a = pep()
    empty = iq(a, "iq_get", to=a.bare,
               child=f"<query xmlns='{NS_PRIVATE}'><prefs xmlns='urn:example:prefs'/></query>")
    assert empty["type"] == "result" and "urn:example:prefs" in empty["xml"]
    ev = iq(a, "iq_set", to=a.bare, child=(
        f"<query xmlns='{NS_PRIVATE}'><prefs xmlns='urn:example:prefs'><theme>dark</theme></prefs></query>"))
    assert ev["type"] == "result", ev
    ev = iq(a, "iq_get", to=a.bare,
            child=f"<query xmlns='{NS_PRIVATE}'><prefs xmlns='urn:example:prefs'/></query>")
    assert "<theme>dark</theme>" in ev["xml"], ev["xml"]
    # another account's storage is not reachable
    b = pep()
    ev = iq(b, "iq_get", to=a.bare,
            child=f"<query xmlns='{NS_PRIVATE}'><prefs xmlns='urn:example:prefs'/></query>")
    assert ev["type"] == "error" and "dark" not in ev["xml"]
    # jabber:iq:private itself cannot be stored
    ev = iq(a, "iq_set", to=a.bare,
            child=f"<query xmlns='{NS_PRIVATE}'><query xmlns='{NS_PRIVATE}'/></query>")
    assert ev["type"] == "error" and ev["cond"] == "not-acceptable", ev


def test_converse_style_interest_gets_native_bookmark_events(pep, stack):
    """Converse.js 14 announces only storage:bookmarks+notify but uses
    XEP-0402 (chatd advertises #compat) and handles its events: such a
    session gets the urn:xmpp:bookmarks:1 events too."""
    me = account(stack)
    desk = pep(*me, resource="desk")
    conv = pep(*me, resource="converse", bookmarks=False, old_bookmarks=True)
    room = f"cv{secrets.token_hex(3)}@{stack.muc_domain}"
    c0 = len(conv.events)
    ev = iq(desk, "iq_set", to=desk.bare, child=publish_xml(NS_BM, room, bookmark(room), BM_OPTIONS))
    assert ev["type"] == "result", ev
    _, its = wait_event(conv, c0, NS_BM)[0]
    assert its.find(f"{{{NS_EVENT}}}item").get("id") == room


def test_owner_configures_node_access(pep, stack):
    """pubsub#owner <configure/>: the form shows the node's configuration;
    a submitted access_model open lets a stranger read it, a lowered
    max_items trims the stored items."""
    a = pep()
    stranger = pep()
    node = "urn:example:status"
    for n in range(3):
        ev = iq(a, "iq_set", to=a.bare, child=publish_xml(
            node, f"s{n}", f"<s xmlns='{node}'>{n}</s>", {"max_items": "5"}))
        assert ev["type"] == "result", ev
    ev = items(stranger, a.bare, node)
    assert pubsub_error(ev) == ("not-authorized", "presence-subscription-required")

    owner = "http://jabber.org/protocol/pubsub#owner"
    ev = iq(a, "iq_get", to=a.bare, child=f"<pubsub xmlns='{owner}'><configure node='{node}'/></pubsub>")
    assert ev["type"] == "result", ev
    form = {f.get("var"): f.find("{jabber:x:data}value").text
            for f in ET.fromstring(ev["xml"]).iter("{jabber:x:data}field")}
    assert form["pubsub#access_model"] == "presence" and form["pubsub#max_items"] == "5"

    ev = iq(a, "iq_set", to=a.bare, child=(
        f"<pubsub xmlns='{owner}'><configure node='{node}'><x xmlns='jabber:x:data' type='submit'>"
        "<field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#node_config</value></field>"
        "<field var='pubsub#access_model'><value>open</value></field>"
        "<field var='pubsub#max_items'><value>2</value></field></x></configure></pubsub>"))
    assert ev["type"] == "result", ev
    ev = items(stranger, a.bare, node)
    assert ev["type"] == "result", ev
    got = sorted(i.get("id") for i in ET.fromstring(ev["xml"]).iter(f"{{{NS_PUBSUB}}}item"))
    assert got == ["s1", "s2"], ev["xml"]
    # another account cannot configure it
    ev = iq(stranger, "iq_get", to=a.bare, child=f"<pubsub xmlns='{owner}'><configure node='{node}'/></pubsub>")
    assert ev["type"] == "error"


def test_last_item_when_subscription_is_approved(pep, stack):
    """XEP-0163 §6.2: once alice approves bob's subscription, bob's
    interested session gets her last avatar metadata."""
    alice = pep(resource="a")
    bob = pep(resource="b")
    png = b"\x89PNG\r\n\x1a\n" + secrets.token_bytes(500)
    alice.send("avatar", id="av", data=png)
    ev = alice.wait_event(lambda e: e.get("event") == "iq" and e.get("id") == "av-meta", 20)
    assert ev["type"] == "result", ev
    b0 = len(bob.events)
    marker(alice, [bob])
    assert events(bob, b0, NS_AV_META) == []        # not a contact yet

    a0 = len(alice.events)
    bob.send("subscribe", to=alice.bare)
    alice.wait_stanza(start=a0, name="presence", type="subscribe")
    alice.send("subscribed", to=bob.bare)
    _, its = wait_event(bob, b0, NS_AV_META)[0]
    assert its.find(f"{{{NS_EVENT}}}item").get("id") == hashlib.sha1(png).hexdigest()


@pytest.fixture
def small_pep():
    """A stack of its own with small PEP limits."""
    from signin_util import private_stack
    with private_stack("chatpep-", chatd_extra={
            "pep_max_bytes": "3000", "pep_max_item_bytes": "1200", "pep_max_items": "3"}) as st:
        yield st


def test_account_byte_limit_and_configured_caps(small_pep):
    st = small_pep
    user = f"q{secrets.token_hex(3)}"
    pw = st.add_user(user)
    c = PepClient("127.0.0.1", st.xmpp_port, f"{user}@{st.domain}/r", pw)
    try:
        c.user, c.bare = user, f"{user}@{st.domain}"
        c.bound = c.connect()
        def pub(node, item_id, size, opts=None):
            return iq(c, "iq_set", to=c.bare, child=publish_xml(
                node, item_id, f"<b xmlns='urn:example:b'>{'y' * size}</b>", opts))
        # pep_max_item_bytes 1200
        assert pubsub_error(pub("urn:example:one", "1", 1300)) == ("not-acceptable", "payload-too-big")
        # 'max' is pep_max_items (3); 4 is more than this service keeps
        assert pubsub_error(pub("urn:example:one", "1", 10, {"max_items": "4"})) == \
            ("conflict", "precondition-not-met")
        ev = pub("urn:example:one", "1", 1000, {"max_items": "max"})
        assert ev["type"] == "result", ev
        assert "max_items=3;" in st.redis_cli("HGET", f"chat:pep:{user}", "urn:example:one")
        assert pub("urn:example:one", "2", 1000)["type"] == "result"
        # pep_max_bytes 3000: a third 1000-byte item is over (with markup)
        ev = pub("urn:example:two", "1", 1000)
        assert ev["type"] == "error" and ev["cond"] == "resource-constraint", ev
        assert st.redis_cli("HEXISTS", f"chat:pep:{user}", "urn:example:two") == "0"
        # replacing an item with a smaller one fits, and the count follows
        assert pub("urn:example:one", "2", 100)["type"] == "result"
        used = int(st.redis_cli("GET", f"chat:pep-use:{user}"))
        assert 1100 < used < 1300, used
        # retracting frees the room
        ev = iq(c, "iq_set", to=c.bare, child=(
            f"<pubsub xmlns='{NS_PUBSUB}'><retract node='urn:example:one'><item id='1'/></retract></pubsub>"))
        assert ev["type"] == "result", ev
        assert pub("urn:example:two", "1", 1000)["type"] == "result"
    finally:
        c.close()


class OldBookmarksClient(PepClient):
    """slixmpp's stock XEP-0048 plugin, on XEP-0049 private storage."""

    def _build(self, jid, password):
        super()._build(jid, password)
        self.x.register_plugin("xep_0049")
        self.x.register_plugin("xep_0048")

    async def _cmd_old_get(self, kw):
        await self._iq(kw, self.x["xep_0048"].get_bookmarks())

    async def _cmd_old_set(self, kw):
        from slixmpp.plugins.xep_0048.stanza import Bookmarks
        b = Bookmarks()
        for room, autojoin in kw["rooms"]:
            b.add_conference(room, "old", name="Old", autojoin=autojoin)
        await self._iq(kw, self.x["xep_0048"].set_bookmarks(b))


def test_stock_xep0048_client_shares_bookmarks(pep, stack):
    me = account(stack)
    new = pep(*me, resource="new")
    old = OldBookmarksClient("127.0.0.1", stack.xmpp_port, f"{me[0]}@{stack.domain}/old", me[1])
    try:
        old.bound = old.connect()
        r1 = f"n{secrets.token_hex(3)}@{stack.muc_domain}"
        ev = iq(new, "iq_set", to=new.bare, child=publish_xml(NS_BM, r1, bookmark(r1), BM_OPTIONS))
        assert ev["type"] == "result", ev
        ev = iq(old, "old_get")
        assert ev["type"] == "result", ev
        confs = {c.get("jid"): c for c in ET.fromstring(ev["xml"]).iter(f"{{{NS_BM_OLD}}}conference")}
        assert confs[r1].get("autojoin") in ("true", "1"), ev["xml"]

        r2 = f"o{secrets.token_hex(3)}@{stack.muc_domain}"
        n0 = len(new.events)
        ev = iq(old, "old_set", rooms=[(r1, True), (r2, True)])
        assert ev["type"] == "result", ev
        new.wait_event(lambda e: any(it.get("id") == r2 for _, its in events(new, n0, NS_BM)
                                     for it in its.findall(f"{{{NS_EVENT}}}item")),
                       20, "event for the old client's bookmark", n0)
        ev = items(new, new.bare, NS_BM)
        assert r1 in ev["xml"] and r2 in ev["xml"]
    finally:
        old.close()
