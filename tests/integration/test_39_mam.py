"""XEP-0313 Message Archive Management, with slixmpp (issue 17).

1:1 messages with a body are archived in the sender's and the recipient's
archive (chat:mam:<bare JID>, Redis streams), groupchat messages in the
room's; each is delivered with a XEP-0359 <stanza-id/> whose id is the
archive id. Archives are written off the message path (batched once a
second); a query right after a message still sees it. Paging is XEP-0059
RSM (max, after, before, <before/> for the last page), filtered by the
XEP-0004 form (with, start, end, after-id/before-id). A private stack
checks mam_max_messages and mam_retention_days, and that a Redis that
stalls loses or doubles no message.
"""

import re
import secrets
import time
import xml.etree.ElementTree as ET

import pytest

import outage
from scenarios import elems, iq
from signin_util import private_stack

NS_MAM = "urn:xmpp:mam:2"
NS_RSM = "http://jabber.org/protocol/rsm"
NS_SID = "urn:xmpp:sid:0"
NS_FWD = "urn:xmpp:forward:0"
NS_CLIENT = "jabber:client"


def bare(jid):
    return jid.split("/", 1)[0]


def stanza_id(ev, by):
    """The <stanza-id by=by/> of a received stanza (exactly one)."""
    ids = [e.get("id") for e in elems(ev, "stanza-id")
           if e.tag == "{%s}stanza-id" % NS_SID and e.get("by") == by]
    assert len(ids) == 1, ev["xml"]
    return ids[0]


def mam(c, to=None, form=None, rsm=None):
    """Query an archive; returns (iq event, [results]) where each result is
    {id, from (outer message), fwd_from, fwd_to, body, type, stamp}."""
    qid = secrets.token_hex(4)
    x = ""
    if form:
        x = ("<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>"
             f"<value>{NS_MAM}</value></field>" +
             "".join(f"<field var='{k}'><value>{v}</value></field>" for k, v in form.items())
             + "</x>")
    s = f"<set xmlns='{NS_RSM}'>{rsm}</set>" if rsm is not None else ""
    mark = len(c.events)
    ev = iq(c, "iq_set", to=to, child=f"<query xmlns='{NS_MAM}' queryid='{qid}'>{x}{s}</query>")
    results = []
    for m in c.stanzas(start=mark, name="message"):
        root = ET.fromstring(m["xml"])
        r = root.find(f"{{{NS_MAM}}}result")
        if r is None or r.get("queryid") != qid:
            continue
        fwd = r.find(f"{{{NS_FWD}}}forwarded")
        msg = fwd.find(f"{{{NS_CLIENT}}}message")
        delay = fwd.find("{urn:xmpp:delay}delay")
        body = msg.find(f"{{{NS_CLIENT}}}body")
        results.append({"id": r.get("id"), "from": m["from"], "fwd_from": msg.get("from"),
                        "fwd_to": msg.get("to"), "type": msg.get("type"),
                        "body": body.text if body is not None else None,
                        "stamp": delay.get("stamp") if delay is not None else None})
    return ev, results


def fin(ev):
    """(complete, first, last, count) of a query's iq result."""
    assert ev["type"] == "result", ev
    root = ET.fromstring(ev["xml"])
    f = root.find(f"{{{NS_MAM}}}fin")
    assert f is not None, ev["xml"]
    st = f.find(f"{{{NS_RSM}}}set")

    def text(name):
        e = st.find(f"{{{NS_RSM}}}{name}") if st is not None else None
        return e.text if e is not None else None
    count = text("count")
    return f.get("complete") == "true", text("first"), text("last"), \
        int(count) if count is not None else None


def bodies(results):
    return [r["body"] for r in results]


def chat(sender, to, body):
    sender.send("raw", xml=f"<message to='{to}' type='chat' id='{secrets.token_hex(4)}'>"
                           f"<body>{body}</body></message>")


def test_one_to_one_archive(native_client, stack):
    a, b = native_client("ma"), native_client("mb")
    tag = secrets.token_hex(3)
    # XEP-0313 §7: the archive is advertised on the account, to its owner
    info = iq(a, "iq_get", to=bare(a.bound),
              child="<query xmlns='http://jabber.org/protocol/disco#info'/>")
    assert NS_MAM in {f.get("var") for f in elems(info, "feature")}, info["xml"]

    b0 = len(b.events)
    sent = [f"one {tag}", f"two {tag}", f"three {tag}"]
    for t in sent:
        chat(a, b.bound, t)
    # a chat state without a body is delivered but not archived
    a.send("raw", xml=f"<message to='{b.bound}' type='chat'>"
                      "<composing xmlns='http://jabber.org/protocol/chatstates'/></message>")
    # a forged stanza-id by the recipient's account is dropped, ours stamped
    a.send("raw", xml=f"<message to='{b.bound}' type='chat'><body>forged {tag}</body>"
                      f"<stanza-id xmlns='{NS_SID}' by='{bare(b.bound)}' id='1-0'/></message>")
    sent.append(f"forged {tag}")
    got = [b.wait_stanza(start=b0, name="message", body=t) for t in sent]
    ids = [stanza_id(ev, bare(b.bound)) for ev in got]
    assert "1-0" not in ids and len(set(ids)) == 4, ids
    b.wait_stanza(start=b0, name="message", xml=lambda x: "composing" in x)
    chat(b, a.bound, f"reply {tag}")
    a.wait_stanza(name="message", body=f"reply {tag}")

    # Asked at once: the archive is written about a second later, but a
    # query carries the unwritten entries and sees them.
    ev, res = mam(b)
    complete, first, last, count = fin(ev)
    assert bodies(res) == sent + [f"reply {tag}"], res
    assert [r["id"] for r in res[:4]] == ids        # stanza-id == archive id
    assert all(r["from"] == bare(b.bound) for r in res)
    assert res[0]["fwd_from"] == a.bound and res[-1]["fwd_from"] == b.bound
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", r["stamp"]) for r in res)
    assert complete and count == 5 and first == ids[0] and last == res[-1]["id"]

    # the sender's archive holds the same messages with the same ids
    ev, res_a = mam(a)
    assert bodies(res_a) == bodies(res) and [r["id"] for r in res_a] == [r["id"] for r in res]

    # written to Redis (a stream per archive), each once
    outage.wait_until(lambda: stack.redis_cli("XLEN", f"chat:mam:{bare(b.bound)}").strip() == "5",
                      15, "b's archive in Redis")
    assert stack.redis_cli("XLEN", f"chat:mam:{bare(a.bound)}").strip() == "5"

    # prefs are answered (default always)
    p = iq(a, "iq_get", child=f"<prefs xmlns='{NS_MAM}'/>")
    assert p["type"] == "result" and elems(p, "prefs")[0].get("default") == "always"
    # a query of someone else's archive is refused
    bad = iq(a, "iq_set", to=bare(b.bound), child=f"<query xmlns='{NS_MAM}'/>")
    assert bad["type"] == "error", bad


def test_offline_recipient_archive(native_client, stack, new_user):
    from native_client import NativeClient
    a = native_client("mo")
    name, pw = new_user("moff")
    to = f"{name}@{stack.domain}"
    tag = secrets.token_hex(3)
    chat(a, to, f"while you were out {tag}")
    c = NativeClient("127.0.0.1", stack.xmpp_port, f"{to}/m", pw, mech="SCRAM-SHA-256")
    try:
        c.bound = c.connect()
        ev, res = mam(c)
        assert bodies(res) == [f"while you were out {tag}"], res
        assert res[0]["fwd_from"] == a.bound
    finally:
        c.close()


def test_paging_and_filters(native_client, stack):
    a, b, c = native_client("pa"), native_client("pb"), native_client("pc")
    tag = secrets.token_hex(3)
    b0, c0 = len(b.events), len(c.events)
    for i in range(5):
        chat(a, b.bound, f"b{i} {tag}")
    for i in range(2):
        chat(a, c.bound, f"c{i} {tag}")
    b.wait_stanza(start=b0, name="message", body=f"b4 {tag}")
    c.wait_stanza(start=c0, name="message", body=f"c1 {tag}")

    every = bodies(mam(a)[1])
    assert every == [f"b{i} {tag}" for i in range(5)] + [f"c{i} {tag}" for i in range(2)]

    # with: only the conversation with b, paged forward two at a time
    w = {"with": bare(b.bound)}
    ev, p1 = mam(a, form=w, rsm="<max>2</max>")
    complete, first, last, count = fin(ev)
    assert bodies(p1) == [f"b0 {tag}", f"b1 {tag}"] and not complete and last == p1[-1]["id"]
    ev, p2 = mam(a, form=w, rsm=f"<max>2</max><after>{last}</after>")
    assert bodies(p2) == [f"b2 {tag}", f"b3 {tag}"] and not fin(ev)[0]
    ev, p3 = mam(a, form=w, rsm=f"<max>2</max><after>{p2[-1]['id']}</after>")
    assert bodies(p3) == [f"b4 {tag}"] and fin(ev)[0]

    # the last page (<before/>), then the one before it, still in time order
    ev, l1 = mam(a, form=w, rsm="<max>2</max><before/>")
    assert bodies(l1) == [f"b3 {tag}", f"b4 {tag}"] and not fin(ev)[0]
    ev, l2 = mam(a, form=w, rsm=f"<max>2</max><before>{l1[0]['id']}</before>")
    assert bodies(l2) == [f"b1 {tag}", f"b2 {tag}"] and not fin(ev)[0]
    ev, l3 = mam(a, form=w, rsm=f"<max>2</max><before>{l2[0]['id']}</before>")
    assert bodies(l3) == [f"b0 {tag}"] and fin(ev)[0]

    # a full JID filter matches the recipient as addressed (full here)
    assert bodies(mam(a, form={"with": c.bound})[1]) == [f"c0 {tag}", f"c1 {tag}"]
    # no filter: count is the archive's size
    assert fin(mam(a, rsm="<max>1</max>")[0])[3] == 7

    # start/end by time, and the extended form's after-id/before-id
    ids = [r["id"] for r in mam(a)[1]]
    assert bodies(mam(a, form={"end": "2000-01-01T00:00:00Z"})[1]) == []
    assert len(mam(a, form={"start": "2000-01-01T00:00:00Z"})[1]) == 7
    assert bodies(mam(a, form={"after-id": ids[4], "before-id": ids[6]})[1]) == [f"c0 {tag}"]

    # an RSM id not in the archive: item-not-found; a bad form: bad-request
    ev, _ = mam(a, rsm="<after>1-0</after>")
    assert ev["type"] == "error" and ev["cond"] == "item-not-found", ev
    ev, _ = mam(a, form={"fulltext": "x"})
    assert ev["type"] == "error" and ev["cond"] == "bad-request", ev


def test_room_archive(native_client, stack):
    a, b = native_client("ra"), native_client("rb")
    room = f"mam{secrets.token_hex(3)}@{stack.muc_domain}"
    tag = secrets.token_hex(3)
    for c, nick in ((a, "alpha"), (b, "beta")):
        mark = len(c.events)
        c.send("join", room=room, nick=nick)
        c.wait_stanza(start=mark, name="presence", **{"from": f"{room}/{nick}"})
    info = iq(b, "iq_get", to=room, child="<query xmlns='http://jabber.org/protocol/disco#info'/>")
    assert NS_MAM in {f.get("var") for f in elems(info, "feature")}, info["xml"]

    b0 = len(b.events)
    for i in range(4):
        a.send("groupchat", to=room, body=f"r{i} {tag}")
    got = [b.wait_stanza(start=b0, name="message", body=f"r{i} {tag}") for i in range(4)]
    ids = [stanza_id(ev, room) for ev in got]
    # a 1:1 message is not in the room's archive, a groupchat not in a user's
    ev, res = mam(b, to=room)
    assert bodies(res) == [f"r{i} {tag}" for i in range(4)], res
    assert [r["id"] for r in res] == ids
    assert all(r["from"] == room and r["fwd_from"] == f"{room}/alpha" and r["type"] == "groupchat"
               for r in res)
    assert fin(ev)[0] and fin(ev)[3] == 4
    assert [r for r in mam(a)[1] if tag in (r["body"] or "")] == []

    # paging back from the newest, as a client scrolling up does
    ev, last2 = mam(b, to=room, rsm="<max>2</max><before/>")
    assert bodies(last2) == [f"r2 {tag}", f"r3 {tag}"] and not fin(ev)[0]
    ev, prev = mam(b, to=room, rsm=f"<max>2</max><before>{last2[0]['id']}</before>")
    assert bodies(prev) == [f"r0 {tag}", f"r1 {tag}"]
    # join history carries the same stanza-ids (clients dedupe with them)
    c = native_client("rc")
    mark = len(c.events)
    c.send("join", room=room, nick="gamma")
    h = c.wait_stanza(start=mark, name="message", body=f"r3 {tag}")
    assert stanza_id(h, room) == ids[3]


@pytest.fixture
def capped_stack():
    with private_stack("chatmam-", chatd_extra={"mam_max_messages": "3",
                                                "mam_retention_days": "1"}) as st:
        yield st


def client_on(st, prefix):
    from native_client import NativeClient
    user = f"{prefix}{secrets.token_hex(3)}"
    pw = st.add_user(user)
    c = NativeClient("127.0.0.1", st.xmpp_port, f"{user}@{st.domain}/m", pw,
                     mech="SCRAM-SHA-256")
    c.bound = c.connect()
    return c


def test_retention_and_cap(capped_stack):
    st = capped_stack
    a, b = client_on(st, "ca"), client_on(st, "cb")
    try:
        key = f"chat:mam:{bare(a.bound)}"
        # an entry two days old (as if written then): past mam_retention_days
        old = int((time.time() - 2 * 86400) * 1000)
        st.redis_cli("XADD", key, f"{old}-0", "w", b.bound,
                     "x", f"<message xmlns='jabber:client' from='{b.bound}' to='{a.bound}' "
                          "type='chat'><body>ancient</body></message>")
        b0 = len(b.events)
        for i in range(5):
            chat(a, b.bound, f"m{i}")
        b.wait_stanza(start=b0, name="message", body="m4")
        ev, res = mam(a)
        # the old one is gone, and only the newest mam_max_messages stay
        assert bodies(res) == ["m2", "m3", "m4"], res
        assert fin(ev)[3] == 3
        outage.wait_until(lambda: st.redis_cli("XLEN", key).strip() == "3", 15, "trimmed")
        # the stream expires when the retention has passed with no write
        ttl = int(st.redis_cli("PTTL", key).strip())
        assert 0 < ttl <= 86400 * 1000, ttl
    finally:
        a.close()
        b.close()


def test_redis_stall_loses_and_doubles_nothing(capped_stack):
    """Writes that time out while Redis is stalled are retried; a write
    that did run before it timed out is not added twice."""
    st = capped_stack
    a, b = client_on(st, "sa"), client_on(st, "sb")
    try:
        key = f"chat:mam:{bare(b.bound)}"
        b0 = len(b.events)
        chat(a, b.bound, "before")
        b.wait_stanza(start=b0, name="message", body="before")
        outage.wait_until(lambda: st.redis_cli("XLEN", key).strip() == "1", 15, "first write")
        # stall Redis longer than chatd's command deadline, while messages
        # are sent: the batched write times out, runs when Redis wakes up,
        # and is retried
        st.redis_cli("CLIENT", "PAUSE", "6000", "WRITE")
        for t in ("s1", "s2"):
            chat(a, b.bound, t)
        b.wait_stanza(start=b0, name="message", body="s2")   # delivery never waited
        outage.wait_until(lambda: "archive write" in open(st.chatd_log).read(), 20,
                          "a write that failed and is kept for a retry")
        outage.wait_until(lambda: st.redis_cli("XLEN", key).strip() == "3", 40,
                          "the retried write")
        ev, res = mam(b)
        assert bodies(res) == ["before", "s1", "s2"], res
    finally:
        a.close()
        b.close()


def commandstats(st):
    """{command: calls} from INFO commandstats."""
    out = {}
    for line in st.redis_cli("INFO", "commandstats").splitlines():
        if line.startswith("cmdstat_"):
            name, rest = line[len("cmdstat_"):].split(":", 1)
            out[name] = int(rest.split("calls=", 1)[1].split(",", 1)[0])
    return out


@pytest.fixture
def plain_stack():
    with private_stack("chatmamb-") as st:
        yield st


def test_archiving_costs_one_write_per_archive_per_second(plain_stack):
    """No Redis command on the path of a message: a burst of 1:1 messages
    reaches both archives in a few batched EVALs, not one per message."""
    st = plain_stack
    a, b = client_on(st, "ba"), client_on(st, "bb")
    try:
        before = commandstats(st)
        said = [f"burst {i} {secrets.token_hex(2)}" for i in range(60)]
        b0 = len(b.events)
        t0 = time.monotonic()
        for s in said:
            chat(a, b.bound, s)
        b.wait_stanza(start=b0, name="message", body=said[-1], what="last of the burst")
        for who in (a, b):
            outage.wait_until(
                lambda who=who: st.redis_cli("XLEN", f"chat:mam:{bare(who.bound)}").strip() == "60",
                15, f"the burst in {who.jid}'s archive")
        elapsed = time.monotonic() - t0
        evals = commandstats(st).get("eval", 0) - before.get("eval", 0)
        # two archives, each written at most once a second (+1 for a partial second)
        assert evals <= 2 * (int(elapsed) + 2), (evals, elapsed)
        assert commandstats(st).get("xadd", 0) - before.get("xadd", 0) == 120
    finally:
        a.close()
        b.close()


def test_sigterm_writes_the_archive(plain_stack):
    st = plain_stack
    a, b = client_on(st, "ta"), client_on(st, "tb")
    try:
        b0 = len(b.events)
        said = [f"last words {i}" for i in range(5)]
        for s in said:
            chat(a, b.bound, s)
        b.wait_stanza(start=b0, name="message", body=said[-1])
        # SIGTERM at once, inside the batching second: the shutdown writes
        assert st._stop_one("chatd", st.chatd_pidfile, timeout=30) == 0, st.logs_tail(20)
        for who in (a, b):
            key = f"chat:mam:{bare(who.bound)}"
            assert st.redis_cli("XLEN", key).strip() == "5", st.logs_tail(20)
    finally:
        a.close()
        b.close()
