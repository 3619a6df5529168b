"""scenarios: what a team-chat user does, written once, run with any client.

Each scenario is a function scenario(env) where env.client(tag) makes a
fresh account and signs it in with the client under test (slixmpp on the
native port, or Strophe.js over BOSH), env.clients(*tags) does that for
several at once, env.room() names a fresh room, and
env.stack is the chatstack.Stack. The clients share one interface
(clients.BoshClient, native_client.NativeClient): send(cmd, **kw), events,
wait_event / wait_stanza with deadlines. Assertions are on what the client
library received, parsed from the stanza's XML.

Used by test_61_same_scenarios.py (the whole table, both clients) and by
its valgrind test (a subset).
"""

import secrets
import xml.etree.ElementTree as ET

NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"


# -- reading events -----------------------------------------------------------
def local(tag):
    return tag.split("}", 1)[-1]


def parse(ev):
    return ET.fromstring(ev["xml"])


def elems(ev, name):
    """All elements named `name` (any namespace) in the event's stanza."""
    return [e for e in parse(ev).iter() if local(e.tag) == name]


def status_codes(ev):
    return {int(e.get("code")) for e in elems(ev, "status") if e.get("code")}


def error_cond(ev):
    for err in elems(ev, "error"):
        for c in err:
            if c.tag == "{%s}%s" % (NS_STANZAS, local(c.tag)) and local(c.tag) != "text":
                return local(c.tag)
    return None


def text_of(ev, name):
    found = elems(ev, name)
    return (found[0].text or "") if found else None


def wait_iq(c, cmd_id, timeout=20):
    return c.wait_event(lambda e: e.get("event") == "iq" and e.get("id") == cmd_id,
                        timeout, f"iq answer to {cmd_id}")


def iq(c, cmd, timeout=20, **kw):
    """Send a command that issues an iq; return its answer event."""
    cid = f"{cmd}-{secrets.token_hex(3)}"
    c.send(cmd, id=cid, **kw)
    return wait_iq(c, cid, timeout)


def bare(jid):
    return jid.split("/", 1)[0]


def roster_items(ev):
    return {i.get("jid"): i for i in elems(ev, "item")}


def muc_items(ev):
    return [i for i in elems(ev, "item")]


def mark(*clients):
    return [len(c.events) for c in clients]


# -- scenarios ------------------------------------------------------------------
def sign_in(env):
    """Authenticate, bind a resource, fetch the (empty) roster."""
    a = env.client("si")
    assert a.bound.startswith(a.user + "@" + env.stack.domain + "/")
    ev = iq(a, "roster_get")
    assert ev["type"] == "result", ev
    assert roster_items(ev) == {}


def roster_and_subscription(env):
    """Roster add and push, subscription handshake both ways, presence
    broadcast to subscribers, and a probe answered at the next sign-in."""
    a, b = env.clients("ra", "rb")
    # as stock clients do: fetch the roster (that asks for pushes, RFC 6121
    # 2.1.6), then send initial presence
    for c in (a, b):
        assert iq(c, "roster_get")["type"] == "result"
        c.send("presence")
    a0, b0 = mark(a, b)

    ev = iq(a, "roster_add", jid=b.bare, name="Bee")
    assert ev["type"] == "result", ev
    push = a.wait_stanza(start=a0, name="iq", type="set",
                         xml=lambda x: x and b.bare in x and "jabber:iq:roster" in x)
    item = roster_items(push)[b.bare]
    assert item.get("name") == "Bee" and item.get("subscription") == "none"

    a.send("subscribe", to=b.bare)
    req = b.wait_stanza(start=b0, name="presence", type="subscribe")
    assert bare(req["from"]) == a.bare
    b.send("subscribed", to=a.bare)
    ok = a.wait_stanza(start=a0, name="presence", type="subscribed")
    assert bare(ok["from"]) == b.bare
    # b's current presence follows the approval
    a.wait_stanza(start=a0, name="presence", type=None, **{"from": b.bound})
    ev = iq(a, "roster_get")
    assert roster_items(ev)[b.bare].get("subscription") == "to", ev["xml"]

    # and the other way round: both
    b0 = len(b.events)
    b.send("subscribe", to=a.bare)
    req = a.wait_stanza(start=a0, name="presence", type="subscribe")
    assert bare(req["from"]) == b.bare
    a.send("subscribed", to=b.bare)
    b.wait_stanza(start=b0, name="presence", type=None, **{"from": a.bound})
    ev = iq(b, "roster_get")
    assert roster_items(ev)[a.bare].get("subscription") == "both", ev["xml"]

    # presence broadcast: b's status change reaches a
    a0 = len(a.events)
    b.send("presence", status="in a meeting")
    got = a.wait_stanza(start=a0, name="presence", type=None, **{"from": b.bound})
    assert text_of(got, "status") == "in a meeting"

    # a signs in again: the server probes b, a sees b at once
    a.close()
    a2 = env.client_for(a, "again")
    a2_0 = len(a2.events)
    a2.send("presence")
    a2.wait_stanza(start=a2_0, name="presence", type=None, **{"from": b.bound})

    # b leaves: a sees it
    a2_0 = len(a2.events)
    b.send("unavailable")
    a2.wait_stanza(start=a2_0, name="presence", type="unavailable", **{"from": b.bound})


def one_to_one_and_offline(env):
    """A message to a bare JID reaches the signed-in resource; one sent
    while the contact is offline is stored and delivered at sign-in,
    with a delay stamp."""
    a, b = env.clients("ma", "mb")
    a.send("presence")
    b.send("presence")
    b0 = len(b.events)
    text = f"hello {secrets.token_hex(4)}"
    a.send("chat", to=b.bare, body=text)
    got = b.wait_stanza(start=b0, name="message", body=text)
    assert got["from"] == a.bound and got["type"] == "chat"

    b.close()
    env.wait_for(lambda: not env.stack_has_session(b.bound), "b's session gone")
    later = f"while you were out {secrets.token_hex(4)}"
    a.send("chat", to=b.bare, body=later)
    env.wait_for(lambda: env.stack.redis_cli("LLEN", f"chat:offline:{b.user}") == "1",
                 "offline message stored")
    b2 = env.client_for(b, "back")
    m = len(b2.events)
    b2.send("presence")
    got = b2.wait_stanza(start=m, name="message", body=later)
    assert bare(got["from"]) == a.bare
    assert elems(got, "delay"), got["xml"]
    env.wait_for(lambda: env.stack.redis_cli("EXISTS", f"chat:offline:{b.user}") == "0",
                 "offline list emptied")


def join_room(env):
    """Create on join (110 + 201), occupants see each other, groupchat is
    reflected, nickname conflicts are refused, subject is set."""
    room = env.room()
    a, b, c = env.clients("ja", "jb", "jc")
    a0 = len(a.events)
    a.send("join", room=room, nick="anna")
    me = a.wait_stanza(start=a0, name="presence", **{"from": f"{room}/anna"})
    assert {110, 201} <= status_codes(me), me["xml"]
    assert muc_items(me)[0].get("affiliation") == "owner"
    a.wait_stanza(start=a0, name="message", type="groupchat",
                  xml=lambda x: x and "subject" in x, what="room subject")

    b0 = len(b.events)
    b.send("join", room=room, nick="bert")
    b.wait_stanza(start=b0, name="presence", **{"from": f"{room}/anna"})
    me = b.wait_stanza(start=b0, name="presence", **{"from": f"{room}/bert"})
    assert 110 in status_codes(me) and 201 not in status_codes(me)
    a.wait_stanza(start=a0, name="presence", **{"from": f"{room}/bert"})

    c0 = len(c.events)
    c.send("join", room=room, nick="anna")
    err = c.wait_stanza(start=c0, name="presence", type="error")
    assert error_cond(err) == "conflict", err["xml"]

    text = f"morning all {secrets.token_hex(3)}"
    a.send("groupchat", to=room, body=text)
    got = b.wait_stanza(start=b0, name="message", type="groupchat", body=text)
    assert got["from"] == f"{room}/anna"
    a.wait_stanza(start=a0, name="message", type="groupchat", body=text)

    a.send("subject", room=room, subject="standup at ten")
    got = b.wait_stanza(start=b0, name="message", type="groupchat",
                        xml=lambda x: x and "standup at ten" in x)
    assert text_of(got, "subject") == "standup at ten"


def private_message_and_nick_change(env):
    """A private message through the room reaches one occupant, from the
    sender's room JID; a nick change is announced with 303 then the new
    nick, and the room's disco#items lists occupants by nick."""
    room = env.room()
    a, b = env.clients("na", "nb")
    a0 = len(a.events)
    a.send("join", room=room, nick="anna")
    a.wait_stanza(start=a0, name="presence", **{"from": f"{room}/anna"})
    b0 = len(b.events)
    b.send("join", room=room, nick="bert")
    b.wait_stanza(start=b0, name="presence", **{"from": f"{room}/bert"})
    a.wait_stanza(start=a0, name="presence", **{"from": f"{room}/bert"})

    text = f"just between us {secrets.token_hex(3)}"
    b.send("chat", to=f"{room}/anna", body=text)
    got = a.wait_stanza(start=a0, name="message", body=text)
    assert got["from"] == f"{room}/bert" and got["type"] == "chat"

    a0, b0 = len(a.events), len(b.events)
    b.send("raw", xml=f"<presence to='{room}/bertie'/>")
    out = a.wait_stanza(start=a0, name="presence", type="unavailable",
                        **{"from": f"{room}/bert"})
    assert 303 in status_codes(out) and muc_items(out)[0].get("nick") == "bertie", out["xml"]
    a.wait_stanza(start=a0, name="presence", type=None, **{"from": f"{room}/bertie"})
    mine = b.wait_stanza(start=b0, name="presence", type="unavailable",
                         **{"from": f"{room}/bert"})
    assert {303, 110} <= status_codes(mine)
    items = iq(a, "iq_get", to=room, child="<query xmlns='http://jabber.org/protocol/disco#items'/>")
    assert {i.get("jid") for i in elems(items, "item")} == {f"{room}/anna", f"{room}/bertie"}


def history_on_join(env):
    """Messages said before a join are replayed to the newcomer, oldest
    first, with delay stamps; <history maxstanzas/> is honoured."""
    room = env.room()
    a, b = env.clients("ha", "hb")
    a0 = len(a.events)
    a.send("join", room=room, nick="anna")
    a.wait_stanza(start=a0, name="presence", **{"from": f"{room}/anna"})
    said = [f"line {i} {secrets.token_hex(2)}" for i in range(4)]
    for s in said:
        a.send("groupchat", to=room, body=s)
    a.wait_stanza(start=a0, name="message", body=said[-1])
    env.wait_for(lambda: env.stack.redis_cli("LLEN", f"chat:history:{room}") == str(len(said)),
                 "history stored in Redis")
    b0 = len(b.events)
    b.send("join", room=room, nick="bert", maxstanzas=3)
    subj = b.wait_stanza(start=b0, name="message", xml=lambda x: x and "subject" in x,
                         what="subject after history")
    hist = [e for e in b.stanzas(start=b0, name="message", type="groupchat")
            if e.get("body")]
    assert [e["body"] for e in hist] == said[-3:], [e["body"] for e in hist]
    assert all(elems(e, "delay") for e in hist)
    assert all(e["from"] == f"{room}/anna" for e in hist)
    assert b.events.index(subj) > b.events.index(hist[-1])


def kick_and_ban(env):
    """The owner kicks (307) and bans (301) an occupant; the banned user
    cannot come back (forbidden)."""
    room = env.room()
    a, b = env.clients("ka", "kb")
    a0 = len(a.events)
    a.send("join", room=room, nick="boss")
    a.wait_stanza(start=a0, name="presence", **{"from": f"{room}/boss"})
    b0 = len(b.events)
    b.send("join", room=room, nick="pest")
    b.wait_stanza(start=b0, name="presence", **{"from": f"{room}/pest"})

    ev = iq(a, "kick", room=room, nick="pest", reason="calm down")
    assert ev["type"] == "result", ev
    out = b.wait_stanza(start=b0, name="presence", type="unavailable",
                        **{"from": f"{room}/pest"})
    assert {307, 110} <= status_codes(out), out["xml"]
    seen = a.wait_stanza(start=a0, name="presence", type="unavailable",
                         **{"from": f"{room}/pest"})
    assert 307 in status_codes(seen)

    b0, a0 = len(b.events), len(a.events)
    b.send("join", room=room, nick="pest")
    b.wait_stanza(start=b0, name="presence", type=None, **{"from": f"{room}/pest"})
    ev = iq(a, "ban", room=room, jid=b.bare, reason="enough")
    assert ev["type"] == "result", ev
    out = b.wait_stanza(start=b0, name="presence", type="unavailable",
                        **{"from": f"{room}/pest"})
    assert {301, 110} <= status_codes(out), out["xml"]
    assert muc_items(out)[0].get("affiliation") == "outcast"

    b0 = len(b.events)
    b.send("join", room=room, nick="pest2")
    err = b.wait_stanza(start=b0, name="presence", type="error")
    assert error_cond(err) == "forbidden", err["xml"]


def password_room(env):
    """An owner protects the room with a password: no password or a wrong
    one is not-authorized, the right one gets in."""
    room = env.room()
    a, b = env.clients("pa", "pb")
    a0 = len(a.events)
    a.send("join", room=room, nick="owner")
    a.wait_stanza(start=a0, name="presence", **{"from": f"{room}/owner"})
    ev = iq(a, "room_config", room=room,
            fields={"muc#roomconfig_passwordprotectedroom": True,
                    "muc#roomconfig_roomsecret": "s3same"})
    assert ev["type"] == "result", ev

    b0 = len(b.events)
    b.send("join", room=room, nick="guest")
    err = b.wait_stanza(start=b0, name="presence", type="error")
    assert error_cond(err) == "not-authorized", err["xml"]
    b0 = len(b.events)
    b.send("join", room=room, nick="guest", password="wrong")
    err = b.wait_stanza(start=b0, name="presence", type="error")
    assert error_cond(err) == "not-authorized", err["xml"]
    b0 = len(b.events)
    b.send("join", room=room, nick="guest", password="s3same")
    me = b.wait_stanza(start=b0, name="presence", **{"from": f"{room}/guest"})
    assert 110 in status_codes(me) and me["type"] is None


def configuration_form(env):
    """The owner's data form: the values submitted come back in the next
    form, are kept in Redis when persistent, and take effect (members-only,
    max occupants); disco#info shows them; others may not configure."""
    room = env.room()
    a, b = env.clients("ca", "cb")
    a0 = len(a.events)
    a.send("join", room=room, nick="owner")
    a.wait_stanza(start=a0, name="presence", **{"from": f"{room}/owner"})
    ev = iq(a, "room_config", room=room,
            fields={"muc#roomconfig_roomname": "Planning",
                    "muc#roomconfig_persistentroom": True,
                    "muc#roomconfig_publicroom": False,
                    "muc#roomconfig_membersonly": True,
                    "muc#roomconfig_maxusers": "5"})
    assert ev["type"] == "result", ev

    form = iq(a, "iq_get", to=room, child="<query xmlns='http://jabber.org/protocol/muc#owner'/>")
    values = {f.get("var"): [v.text for v in f if local(v.tag) == "value"]
              for f in elems(form, "field")}
    assert values["muc#roomconfig_roomname"] == ["Planning"]
    assert values["muc#roomconfig_persistentroom"] in (["1"], ["true"])
    assert values["muc#roomconfig_membersonly"] in (["1"], ["true"])
    assert values["muc#roomconfig_publicroom"] in (["0"], ["false"])
    assert values["muc#roomconfig_maxusers"] == ["5"]
    env.wait_for(lambda: env.stack.redis_cli("EXISTS", f"chat:room:{room}") == "1",
                 "persistent room saved in Redis")

    info = iq(a, "iq_get", to=room, child="<query xmlns='http://jabber.org/protocol/disco#info'/>")
    feats = {f.get("var") for f in elems(info, "feature")}
    assert {"muc_persistent", "muc_membersonly", "muc_hidden"} <= feats, feats
    ident = elems(info, "identity")[0]
    assert ident.get("category") == "conference" and ident.get("name") == "Planning"

    # hidden: not in the service's room list
    listed = iq(a, "iq_get", to=env.stack.muc_domain,
                child="<query xmlns='http://jabber.org/protocol/disco#items'/>")
    assert room not in {i.get("jid") for i in elems(listed, "item")}

    b0 = len(b.events)
    b.send("join", room=room, nick="outsider")
    err = b.wait_stanza(start=b0, name="presence", type="error")
    assert error_cond(err) == "registration-required", err["xml"]
    ev = iq(b, "room_config", room=room, fields={"muc#roomconfig_roomname": "Mine"})
    assert ev["type"] == "error" and ev["cond"] == "forbidden", ev


SCENARIOS = [sign_in, roster_and_subscription, one_to_one_and_offline, join_room,
             private_message_and_nick_change, history_on_join, kick_and_ban, password_room, configuration_form]
