"""Group chat the way Converse.js and Strophe.js use it (XEP-0045, XEP-0410).

Converse checks after a page reload whether it is still in a room by pinging
its own occupant JID (XEP-0410 self-ping): a result means "still joined",
not-acceptable means "rejoin". It also sends iqs (vCard, version, disco) to
other occupants' room JIDs, which the room forwards to the real JIDs and
whose answers it routes back. Each test uses a room of its own so the
browser test's lobby is left alone.
"""

import re
import secrets

import pytest

MUC = "conference.localhost"
PING = "<ping xmlns='urn:xmpp:ping'/>"


def room_name():
    return f"muc35-{secrets.token_hex(4)}@{MUC}"


@pytest.fixture
def two(new_user, bosh_client):
    """Two fresh users, connected and available."""
    out = []
    for prefix in ("ma", "mb"):
        name, pw = new_user(prefix)
        c = bosh_client(f"{name}@localhost/strophe", pw)
        c.full = c.connect()
        c.nick = name
        c.send("presence")
        out.append(c)
    return out


def iq(client, cmd, timeout=20, **kw):
    """Send an iq command and return its answer event (result/error)."""
    cid = secrets.token_hex(4)
    mark = len(client.events)
    client.send(cmd, id=cid, **kw)
    return client.wait_event(lambda e: e.get("event") == "iq" and e.get("id") == cid,
                             timeout, f"answer to {cmd} {kw}", start=mark)


def join(client, room, nick, **kw):
    mark = len(client.events)
    client.send("join", room=room, nick=nick, **kw)
    client.wait_stanza(start=mark, name="presence", what=f"self-presence in {room}",
                       **{"from": f"{room}/{nick}",
                          "xml": lambda x: "code=\"110\"" in x or "code='110'" in x})
    return mark


def room_occupants(stack, room):
    out = stack.chatctl("rooms", "list").stdout
    for line in out.splitlines():
        parts = line.split()
        if parts and parts[0] == room:
            return int(parts[1])
    return 0


def test_self_ping_before_during_after(two):
    a, b = two
    room = room_name()
    # no such room: not-acceptable (XEP-0410 reads item-not-found as joined)
    ans = iq(a, "iq_get", to=f"{room}/{a.nick}", child=PING)
    assert ans["type"] == "error" and ans["cond"] == "not-acceptable", ans
    join(a, room, a.nick)
    join(b, room, b.nick)            # keeps the room alive after a leaves
    # b's ping to a is a's to answer: forwarded, not answered by the room
    b_to_a = len(a.events)
    b.send("iq_get", to=f"{room}/{a.nick}", child=PING)
    a.wait_stanza(start=b_to_a, name="iq", type="get", **{"from": f"{room}/{b.nick}"},
                  xml=lambda x: "urn:xmpp:ping" in x)
    ans = iq(a, "iq_get", to=f"{room}/{a.nick}", child=PING)
    assert ans["type"] == "result", ans
    assert f"from=\"{room}/{a.nick}\"" in ans["xml"] or f"from='{room}/{a.nick}'" in ans["xml"]

    mark = len(a.events)
    a.send("leave", room=room, nick=a.nick)
    a.wait_stanza(start=mark, name="presence", type="unavailable",
                  **{"from": f"{room}/{a.nick}"})
    # not joined (the room is still there): not-acceptable, so Converse rejoins
    ans = iq(a, "iq_get", to=f"{room}/{a.nick}", child=PING)
    assert ans["type"] == "error" and ans["cond"] == "not-acceptable", ans
    # ... and a's pings to b's nick are refused too: a is no occupant
    ans = iq(a, "iq_get", to=f"{room}/{b.nick}", child=PING)
    assert ans["type"] == "error" and ans["cond"] == "not-acceptable", ans


def test_rejoin_same_nick_same_session(stack, two):
    a, b = two
    room = room_name()
    join(a, room, a.nick)
    join(b, room, b.nick)
    first = f"before rejoin {secrets.token_hex(3)}"
    a.send("groupchat", to=room, body=first)
    b.wait_stanza(name="message", type="groupchat", body=first)

    # b (say, a reloaded page on the same BOSH session) sends its join again
    a_mark = len(a.events)
    b_mark = join(b, room, b.nick, maxstanzas=5)
    # ... and gets the room state again: a's presence, history, subject
    b.wait_stanza(start=b_mark, name="presence", **{"from": f"{room}/{a.nick}"})
    b.wait_stanza(start=b_mark, name="message", type="groupchat", body=first,
                  what="history replayed on rejoin")
    b.wait_stanza(start=b_mark, name="message", type="groupchat",
                  xml=lambda x: "<subject" in x, what="subject on rejoin")
    # no conflict, never a second occupant
    errors = [e for e in b.stanzas(start=b_mark, name="presence", type="error")]
    assert not errors, errors
    assert room_occupants(stack, room) == 2
    ans = iq(b, "iq_get", to=f"{room}/{b.nick}", child=PING)
    assert ans["type"] == "result", ans

    # messages still flow both ways, each exactly once
    m1 = f"after rejoin from b {secrets.token_hex(3)}"
    b.send("groupchat", to=room, body=m1)
    a.wait_stanza(start=a_mark, name="message", type="groupchat", body=m1)
    m2 = f"after rejoin from a {secrets.token_hex(3)}"
    a.send("groupchat", to=room, body=m2)
    b.wait_stanza(start=b_mark, name="message", type="groupchat", body=m2)
    a.wait_stanza(start=a_mark, name="message", type="groupchat", body=m2)
    assert len(a.stanzas(start=a_mark, name="message", body=m1)) == 1
    assert len(b.stanzas(start=b_mark, name="message", body=m2)) == 1
    # a never saw b leave
    assert not a.stanzas(start=a_mark, name="presence", type="unavailable",
                         **{"from": f"{room}/{b.nick}"})

    # same JID, another nick: a nick change (303), still two occupants
    new = b.nick + "-2"
    a_mark = len(a.events)
    b.send("join", room=room, nick=new)
    a.wait_stanza(start=a_mark, name="presence", type="unavailable",
                  **{"from": f"{room}/{b.nick}",
                     "xml": lambda x: re.search(r"code=.303.", x) is not None})
    a.wait_stanza(start=a_mark, name="presence", **{"from": f"{room}/{new}"})
    assert room_occupants(stack, room) == 2


def test_iq_forwarded_between_occupants(new_user, bosh_client, two):
    a, b = two
    room = room_name()
    join(a, room, a.nick)
    join(b, room, b.nick)

    # vCard: b asks a's occupant JID, a gets it from b's occupant JID
    a_mark = len(a.events)
    cid = "vc-" + secrets.token_hex(3)
    b_mark = len(b.events)
    b.send("vcard_get", id=cid, jid=f"{room}/{a.nick}")
    got = a.wait_stanza(start=a_mark, name="iq", type="get",
                        **{"from": f"{room}/{b.nick}"}, what="forwarded vCard get")
    assert got["to"] == a.full, got
    assert "vcard-temp" in got["xml"]

    # a forged answer from a third occupant with the same id is dropped
    name, pw = new_user("mc")
    c = bosh_client(f"{name}@localhost/strophe", pw)
    c.connect()
    join(c, room, name)
    forged = f"FORGED{secrets.token_hex(3)}"
    c.send("raw", xml=f"<iq type='result' id='{got['id']}' to='{room}/{b.nick}'>"
                      f"<vCard xmlns='vcard-temp'><FN>{forged}</FN></vCard></iq>")
    # c's stanzas are handled in order: once its message is reflected, the
    # forged answer has been dealt with
    c_mark = len(c.events)
    fence = f"fence {secrets.token_hex(3)}"
    c.send("groupchat", to=room, body=fence)
    c.wait_stanza(start=c_mark, name="message", body=fence)

    genuine = f"Alice {secrets.token_hex(3)}"
    a.send("raw", xml=f"<iq type='result' id='{got['id']}' to='{got['from']}'>"
                      f"<vCard xmlns='vcard-temp'><FN>{genuine}</FN></vCard></iq>")
    ans = b.wait_event(lambda e: e.get("event") == "iq" and e.get("id") == cid, 20,
                       "vCard answer", start=b_mark)
    assert ans["type"] == "result" and genuine in ans["xml"], ans
    assert f"{room}/{a.nick}" in ans["xml"]
    assert not [e for e in b.events[b_mark:] if forged in e.get("xml", "")]

    # version: the target answers with an error, which goes back as well
    a_mark = len(a.events)
    cid = "ver-" + secrets.token_hex(3)
    b_mark = len(b.events)
    b.send("iq_get", id=cid, to=f"{room}/{a.nick}", child="<query xmlns='jabber:iq:version'/>")
    got = a.wait_stanza(start=a_mark, name="iq", type="get", **{"from": f"{room}/{b.nick}"},
                        xml=lambda x: "jabber:iq:version" in x)
    a.send("raw", xml=f"<iq type='error' id='{got['id']}' to='{got['from']}'>"
                      "<error type='cancel'><feature-not-implemented "
                      "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>")
    ans = b.wait_event(lambda e: e.get("event") == "iq" and e.get("id") == cid, 20,
                       "version answer", start=b_mark)
    assert ans["type"] == "error" and ans["cond"] == "feature-not-implemented", ans

    # disco#info to an occupant is forwarded too
    a_mark = len(a.events)
    b.send("iq_get", to=f"{room}/{a.nick}",
           child="<query xmlns='http://jabber.org/protocol/disco#info'/>")
    a.wait_stanza(start=a_mark, name="iq", type="get", **{"from": f"{room}/{b.nick}"},
                  xml=lambda x: "disco#info" in x)

    # an iq to a nick that is not there: item-not-found
    ans = iq(b, "iq_get", to=f"{room}/nobody-{secrets.token_hex(2)}",
             child="<query xmlns='jabber:iq:version'/>")
    assert ans["type"] == "error" and ans["cond"] == "item-not-found", ans
