"""XEP-0421 anonymous unique occupant identifiers, with slixmpp (issue 17).

Rooms stamp <occupant-id xmlns='urn:xmpp:occupant-id:0' id='...'/> on
every presence and groupchat message from an occupant: the same id for one
user in one room across a nick change and a rejoin, different ids for
different users and for the same user in different rooms, and whatever
occupant-id a client put on its own stanza is replaced by the room's.
The room advertises the feature in its disco#info.
"""

import re
import secrets

import pytest

from scenarios import elems, iq

NS_OID = "urn:xmpp:occupant-id:0"


@pytest.fixture
def client(native_client):
    return lambda: native_client("o")


def oids(ev):
    """The ids of every occupant-id element in the stanza (any namespace)."""
    return [(e.tag, e.get("id")) for e in elems(ev, "occupant-id")]


def the_oid(ev):
    """The one occupant-id the room put there, checked to be the only one."""
    got = oids(ev)
    assert len(got) == 1, (got, ev["xml"])
    assert got[0][0] == "{%s}occupant-id" % NS_OID, got
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", got[0][1] or ""), got
    return got[0][1]


def self_presence(c, room, nick, mark, raw=None):
    if raw:
        c.send("raw", xml=raw)
    else:
        c.send("join", room=room, nick=nick)
    return c.wait_stanza(start=mark, name="presence", what=f"self-presence in {room}",
                         **{"from": f"{room}/{nick}", "type": None,
                            "xml": lambda x: re.search(r"code=.110.", x) is not None})


def test_occupant_id_stable_per_user_and_room(client, stack):
    a, b = client(), client()
    r1 = f"oid{secrets.token_hex(3)}@{stack.muc_domain}"
    r2 = f"oid{secrets.token_hex(3)}@{stack.muc_domain}"

    id_a = the_oid(self_presence(a, r1, "alpha", len(a.events)))
    info = iq(a, "iq_get", to=r1, child="<query xmlns='http://jabber.org/protocol/disco#info'/>")
    assert NS_OID in {f.get("var") for f in elems(info, "feature")}

    b0 = len(b.events)
    id_b = the_oid(self_presence(b, r1, "beta", b0))
    assert id_b != id_a
    # b sees a's presence with a's id
    seen = b.wait_stanza(start=b0, name="presence", **{"from": f"{r1}/alpha"})
    assert the_oid(seen) == id_a

    # a groupchat message: a forged id (b's) is replaced by a's own
    b1 = len(b.events)
    text = f"hello {secrets.token_hex(3)}"
    a.send("raw", xml=f"<message to='{r1}' type='groupchat'><body>{text}</body>"
                      f"<occupant-id xmlns='{NS_OID}' id='{id_b}'/></message>")
    msg = b.wait_stanza(start=b1, name="message", body=text)
    assert msg["from"] == f"{r1}/alpha"
    assert the_oid(msg) == id_a

    # nick change: the unavailable (303) and the new presence carry a's id
    b2 = len(b.events)
    a.send("raw", xml=f"<presence to='{r1}/gamma'/>")
    gone = b.wait_stanza(start=b2, name="presence", type="unavailable",
                         **{"from": f"{r1}/alpha"})
    assert re.search(r"code=.303.", gone["xml"]) and the_oid(gone) == id_a
    new = b.wait_stanza(start=b2, name="presence", type=None, **{"from": f"{r1}/gamma"})
    assert the_oid(new) == id_a

    # leave and rejoin under yet another nick: the same id
    b3 = len(b.events)
    a.send("leave", room=r1, nick="gamma")
    b.wait_stanza(start=b3, name="presence", type="unavailable", **{"from": f"{r1}/gamma"})
    assert the_oid(self_presence(a, r1, "delta", len(a.events))) == id_a

    # another room: another id, and the id a client sends with its join is not kept
    a4 = len(a.events)
    forged = "A" * 43
    p = self_presence(a, r2, "alpha", a4,
                      raw=f"<presence to='{r2}/alpha'><x xmlns='http://jabber.org/protocol/muc'/>"
                          f"<occupant-id xmlns='{NS_OID}' id='{forged}'/></presence>")
    id_a2 = the_oid(p)
    assert id_a2 not in (id_a, forged)
    # and a's id in r1 did not change meanwhile (b sees it on a's next message)
    b4 = len(b.events)
    again = f"again {secrets.token_hex(3)}"
    a.send("groupchat", to=r1, body=again)
    assert the_oid(b.wait_stanza(start=b4, name="message", body=again)) == id_a
