"""Room info in disco#info (XEP-0128 muc#roominfo, XEP-0045 §6.4) and the
history a joiner asks for (XEP-0045 §7.2.14), with slixmpp (issue 17).

A non-occupant's disco#info of a room shows the muc#roominfo form: the
name and description its owner configured, the subject, the occupant
count. A joiner's <history/> (set through slixmpp's xep_0045 stanza
interface) is honoured: maxstanzas=2 gives the last two messages,
seconds=0 none, since only those stamped at or after it. The subject
message closes the room state a joiner receives, so "what history came"
is read up to it, without sleeping.
"""

import secrets
import time
import xml.etree.ElementTree as ET

import pytest
import slixmpp

from native_client import NativeClient
from scenarios import elems, iq

NS_MUC = "http://jabber.org/protocol/muc"
NS_XDATA = "jabber:x:data"
NS_DELAY = "urn:xmpp:delay"


class HistClient(NativeClient):
    """NativeClient whose join carries any <history/> attributes."""

    def _cmd_join_hist(self, kw):
        pres = self.x.make_presence(pto=f"{kw['room']}/{kw['nick']}")
        for k, v in kw.get("history", {}).items():
            pres["muc_join"]["history"][k] = v
        self.x["xep_0045"].rooms.setdefault(slixmpp.JID(kw["room"]), {})
        pres.send()


@pytest.fixture
def client(native_client):
    return lambda: native_client("h", HistClient)


def is_subject(ev):
    return ev.get("name") == "message" and "<subject" in ev["xml"]


def join(c, room, nick, history=None, stay=False):
    """Join; the history bodies received before the subject message. Then
    leave (unless stay), so the next join is a join, not a nick change."""
    mark = len(c.events)
    c.send("join_hist", room=room, nick=nick, history=history or {})
    end = c.wait_event(lambda e: e.get("event") == "stanza" and is_subject(e)
                       and e.get("from", "").startswith(room), 30,
                       f"subject of {room}", start=mark)
    upto = c.events.index(end, mark)
    got = [e for e in c.events[mark:upto]
           if e.get("event") == "stanza" and e.get("name") == "message" and e.get("body")]
    if not stay:
        c.send("leave", room=room, nick=nick)
        c.wait_stanza(start=upto, name="presence", type="unavailable",
                      **{"from": f"{room}/{nick}"})
    return got


def stamp(ev):
    d = ET.fromstring(ev["xml"]).find(f"{{{NS_DELAY}}}delay")
    return d.get("stamp")


def say(c, room, body):
    mark = len(c.events)
    c.send("groupchat", to=room, body=body)
    c.wait_stanza(start=mark, name="message", body=body)


def test_roominfo_form_in_disco_info(client, stack):
    owner, other, outsider = client(), client(), client()
    room = f"info{secrets.token_hex(3)}@{stack.muc_domain}"
    join(owner, room, "own", stay=True)
    ans = iq(owner, "room_config", room=room,
             fields={"muc#roomconfig_roomname": "Team room",
                     "muc#roomconfig_roomdesc": "Where the team talks"})
    assert ans["type"] == "result", ans
    topic = f"topic {secrets.token_hex(3)}"
    mark = len(owner.events)
    owner.send("subject", room=room, subject=topic)
    owner.wait_event(lambda e: e.get("event") == "stanza" and is_subject(e)
                     and topic in e["xml"], 20, "subject echo", start=mark)
    join(other, room, "oth", stay=True)

    info = iq(outsider, "iq_get", to=room,
              child="<query xmlns='http://jabber.org/protocol/disco#info'/>")
    assert info["type"] == "result", info
    forms = [x for x in elems(info, "x") if x.tag == f"{{{NS_XDATA}}}x"]
    assert len(forms) == 1, info["xml"]
    fields = {f.get("var"): [v.text or "" for v in f.findall(f"{{{NS_XDATA}}}value")]
              for f in forms[0].findall(f"{{{NS_XDATA}}}field")}
    assert forms[0].get("type") == "result"
    assert fields["FORM_TYPE"] == [f"{NS_MUC}#roominfo"]
    assert fields["muc#roomconfig_roomname"] == ["Team room"]
    assert fields["muc#roominfo_description"] == ["Where the team talks"]
    assert fields["muc#roominfo_subject"] == [topic]
    assert fields["muc#roominfo_occupants"] == ["2"]


def test_history_limits_on_join(client, stack):
    a, b = client(), client()
    room = f"hist{secrets.token_hex(3)}@{stack.muc_domain}"
    join(a, room, "a", stay=True)
    tag = secrets.token_hex(3)
    say(a, room, f"one {tag}")
    say(a, room, f"two {tag}")
    # the next two in a later second than the first two, so `since` can
    # split them (a condition on the clock, at most one second)
    first_second = int(time.time())
    deadline = time.monotonic() + 5
    while int(time.time()) <= first_second and time.monotonic() < deadline:
        time.sleep(0.05)
    say(a, room, f"three {tag}")
    say(a, room, f"four {tag}")
    everything = [f"{w} {tag}" for w in ("one", "two", "three", "four")]

    got = join(b, room, "b1")
    assert [e["body"] for e in got] == everything

    got = join(b, room, "b2", {"maxstanzas": "2"})
    assert [e["body"] for e in got] == everything[2:]

    got = join(b, room, "b3", {"seconds": "0"})
    assert got == []

    # since: the stamp of "three" (a later second than "two")
    all_again = join(b, room, "b4")
    since = stamp(all_again[2])
    assert stamp(all_again[1]) < since
    got = join(b, room, "b5", {"since": since})
    assert [e["body"] for e in got] == everything[2:]
    got = join(b, room, "b6", {"since": "2099-01-01T00:00:00Z"})
    assert got == []
    got = join(b, room, "b7", {"seconds": "3600", "maxstanzas": "3"})
    assert [e["body"] for e in got] == everything[1:]
