"""RFC 6121 §2.6 roster versioning, with slixmpp on the native port.

- the stream features after SASL carry <ver xmlns='urn:xmpp:features:rosterver'/>;
- a roster get with ver='' gets the roster and its version; a push carries
  the new version; a get with the current version is an empty result, a
  get with an older one the whole roster with the current version;
- the version lives in chat:roster-ver:<user>, not in the chat:roster hash;
- a write that fails leaves no change under an old version: the client is
  told the set failed, gets no push, and the version it holds still names
  exactly what Redis holds.
"""

import secrets
import xml.etree.ElementTree as ET

from scenarios import iq

NS_ROSTER = "jabber:iq:roster"


def roster_get(c, ver):
    attr = "" if ver is None else f" ver='{ver}'"
    ev = iq(c, "iq_get", to=None, child=f"<query xmlns='{NS_ROSTER}'{attr}/>")
    assert ev["type"] == "result", ev
    q = ET.fromstring(ev["xml"]).find(f"{{{NS_ROSTER}}}query")
    return q


def roster_set(c, jid, name):
    return iq(c, "iq_set", to=None,
              child=f"<query xmlns='{NS_ROSTER}'><item jid='{jid}' name='{name}'/></query>")


def pushes(c, start):
    out = []
    for ev in c.stanzas(start, name="iq", type="set"):
        q = ET.fromstring(ev["xml"]).find(f"{{{NS_ROSTER}}}query")
        if q is not None:
            out.append(q)
    return out


def test_roster_versions(native_client, stack):
    c = native_client("rv")
    user = c.jid.split("@", 1)[0]
    feats = [e for e in c.events if e.get("name") == "features" and "bind" in (e.get("xml") or "")]
    assert feats and "urn:xmpp:features:rosterver" in feats[-1]["xml"], feats

    q = roster_get(c, "")
    v1 = q.get("ver")
    assert v1 and list(q) == []

    friend = f"friend{secrets.token_hex(3)}@{stack.domain}"
    p0 = len(c.events)
    assert roster_set(c, friend, "Friend")["type"] == "result"
    c.wait_event(lambda e: pushes(c, p0), 20, "roster push", p0)
    push = pushes(c, p0)[0]
    v2 = push.get("ver")
    assert v2 and v2 != v1
    assert push.find(f"{{{NS_ROSTER}}}item").get("jid") == friend

    # the current version: nothing to send
    assert roster_get(c, v2) is None
    # an older one: everything, with the current version
    q = roster_get(c, v1)
    assert q.get("ver") == v2 and [i.get("jid") for i in q] == [friend]
    # the version is a key of its own; the roster hash holds only contacts
    assert stack.redis_cli("HKEYS", f"chat:roster:{user}") == friend
    assert stack.redis_cli("GET", f"chat:roster-ver:{user}") == v2


def test_failed_write_leaves_no_change_under_an_old_version(native_client, stack):
    c = native_client("rf")
    user = c.jid.split("@", 1)[0]
    v1 = roster_get(c, "").get("ver")
    vkey = f"chat:roster-ver:{user}"
    stack.redis_cli("SET", vkey, "not-a-number")      # the next write's INCR fails
    p0 = len(c.events)
    ghost = f"ghost{secrets.token_hex(3)}@{stack.domain}"
    ev = roster_set(c, ghost, "Ghost")
    assert ev["type"] == "error" and ev["cond"] == "internal-server-error", ev
    assert stack.redis_cli("HEXISTS", f"chat:roster:{user}", ghost) == "0"
    stack.redis_cli("SET", vkey, v1)
    # v1 still names exactly what Redis holds: no ghost under it
    q = roster_get(c, v1)
    assert q is None or ghost not in [i.get("jid") for i in q], ET.tostring(q)
    q = roster_get(c, "x")
    assert ghost not in [i.get("jid") for i in q]
    assert q.get("ver") == v1
    assert not [p for p in pushes(c, p0) if ghost in ET.tostring(p, encoding="unicode")]
