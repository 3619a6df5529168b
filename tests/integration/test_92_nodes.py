"""Issue 16: three chatd nodes and two httpd frontends form one chat.

One Redis, nodes n1..n3 (`cluster yes`), frontends on n1 and n2 that know
all three nodes. Users are spread over the nodes (native clients on each
node's port, BOSH clients whose every request goes to the other frontend
than the last). Asserted, as the users see it:

1. every 1:1 message and every room message is delivered exactly once,
   whichever nodes sender and receiver are on;
2. kill -9 of the room's owning node in the middle of a burst: users on
   the other nodes keep chatting with no loss; room occupants are told
   (XEP-0045 status 332); the room comes back on a live node with its
   configuration and the history Redis had; users of the dead node sign
   in again (native on a live node, BOSH through any frontend, landing on
   a live node) and get what was sent to them meanwhile (offline storage).

CLUSTER=no runs the same test with routing between nodes off (what the
code did before issue 16): it must fail at the first cross-node message.
CHATD_BIN=path runs another chatd binary (e.g. one built with ASan).
"""

import os
import random
import re
import secrets
import shutil
import sys
import tempfile
import time
from collections import Counter

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "scripts"))
sys.path.insert(0, HERE)

import chatstack  # noqa: E402
import outage  # noqa: E402
from raw_native import RawNative, esc, NS_CLIENT, NS_MUC, NS_MUC_USER  # noqa: E402

DOMAIN = "localhost"
ROOM = f"team{secrets.token_hex(2)}@conference.localhost"
NATIVE_USERS = [f"nu{i}" for i in range(6)]        # nu<i> on node i % 3
BOSH_USERS = ["bu0", "bu1"]
ROOMCFG = "muc#roomconfig_"
CLUSTER_ON = os.environ.get("CLUSTER", "yes") == "yes"


@pytest.fixture(scope="module")
def cluster():
    root = tempfile.mkdtemp(prefix="chat92-")
    extra = {"cluster": os.environ.get("CLUSTER", "yes")}
    cs = chatstack.ClusterStack(root, nodes=3, frontends=2, chatd_extra=extra)
    if os.environ.get("CHATD_BIN"):          # e.g. a build under ASan
        for st in cs.nodes:
            st.chatd_bin = os.environ["CHATD_BIN"]
    ok = False
    try:
        cs.start()
        yield cs
        ok = True
    finally:
        cs.stop()
        if ok and not os.environ.get("KEEP_STACK"):
            shutil.rmtree(root, ignore_errors=True)
        else:
            sys.stderr.write(f"\n[test_92] stack files kept in {root}\n")


# -- clients ----------------------------------------------------------------

class Native:
    """A RawNative user on one node's port."""

    def __init__(self, cs, user, node):
        self.user, self.node = user, cs.nodes[node].node_id
        self.c = RawNative(cs.nodes[node].xmpp_port).login(user, "pw-" + user, "r")
        self.jid = self.c.jid
        self.c.presence()

    @property
    def stanzas(self):
        return self.c.stanzas

    def out(self, xml):
        self.c.send(xml)

    def pump(self):
        self.c.pump(0.05)

    def close(self):
        self.c.close()


class AnyFrontendBosh(outage.RawSession):
    """outage.RawSession whose requests alternate between the frontends
    (the sid names the node, so any frontend serves the session)."""

    def __init__(self, ports, user):
        self.ports = ports
        self.user = user
        self.queued = []
        super().__init__(ports[0], user, "pw-" + user, "b", wait=1)
        self.node = self.sid.split("-", 1)[0]

    def send(self, payload=""):
        self.rid += 1
        port = self.ports[self.rid % len(self.ports)]
        return self._answer(outage.post(port, self.body(payload)))

    def out(self, xml):
        self.queued.append(xml)      # one request carries them all (pump)

    def pump(self):
        payload, self.queued = "".join(self.queued), []
        self.send(payload)


def bosh_login(cs, user, avoid=None, timeout=60):
    """A BOSH sign-in through the frontends, again while session creation
    lands on a dead node (avoid) or fails: what a client's re-login does."""
    ports = [fe.http_port for fe in cs.frontends]
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        random.shuffle(ports)
        try:
            s = AnyFrontendBosh(list(ports), user)
            if s.node != avoid:
                return s
        except (AssertionError, ConnectionError, OSError) as e:
            last = e
        time.sleep(0.2)      # a client's back-off between attempts
    raise AssertionError(f"{user}: no BOSH session on a live node: {last}")


def pump_until(clients, check, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        for c in clients:
            c.pump()


def bodies(c, start=0, type_=None):
    out = []
    for el in c.stanzas[start:]:
        if el.tag == f"{{{NS_CLIENT}}}message" and (type_ is None or el.get("type") == type_):
            b = el.find(f"{{{NS_CLIENT}}}body")
            if b is not None and b.text:
                out.append(b.text)
    return out


def chat(c, to_user, body):
    c.out(f"<message to='{to_user}@{DOMAIN}' type='chat' xmlns='{NS_CLIENT}'>"
           f"<body>{esc(body)}</body></message>")


def groupchat(c, body):
    c.out(f"<message to='{ROOM}' type='groupchat' xmlns='{NS_CLIENT}'>"
           f"<body>{esc(body)}</body></message>")


def self_presence(c, start=0, code="110"):
    for el in c.stanzas[start:]:
        if el.tag == f"{{{NS_CLIENT}}}presence" and (el.get("from") or "").startswith(ROOM + "/") \
                and el.find(f".//{{{NS_MUC_USER}}}status[@code='{code}']") is not None:
            return el
    return None


def join(clients, history=0, timeout=60):
    marks = {c: len(c.stanzas) for c in clients}
    for c in clients:
        c.out(f"<presence to='{ROOM}/{c.user}' xmlns='{NS_CLIENT}'><x xmlns='{NS_MUC}'>"
               f"<history maxstanzas='{history}'/></x></presence>")
    pump_until(clients, lambda: all(self_presence(c, marks[c]) is not None for c in clients),
               timeout, "room joins")
    return marks


def exchange_1to1(senders, receivers, tag, timeout=120):
    """Every sender sends 2 messages to every receiver (not itself), then a
    marker; receivers wait for every marker. Returns the expected bodies."""
    marks = {c: len(c.stanzas) for c in receivers}
    expect = Counter()
    for s in senders:
        for r in receivers:
            if r.user == s.user:
                continue
            for k in range(2):
                body = f"{tag}:{s.user}:{r.user}:{k}"
                chat(s, r.user, body)
                expect[(r.user, body)] += 1
            chat(s, r.user, f"{tag}-end:{s.user}")
    everyone = list({id(c): c for c in senders + receivers}.values())

    def done():
        return all(all(f"{tag}-end:{s.user}" in bodies(r, marks[r]) for s in senders
                       if s.user != r.user) for r in receivers)
    pump_until(everyone, done, timeout, f"{tag}: end markers")
    return marks, expect


def assert_exactly_once(receivers, marks, expect, tag):
    for r in receivers:
        got = Counter(b for b in bodies(r, marks[r]) if b.startswith(tag + ":"))
        want = Counter({b: n for (u, b), n in expect.items() if u == r.user})
        missing = want - got
        extra = got - want
        assert not missing and not extra, \
            f"{r.user} on {r.node}: missing {sorted(missing)[:5]} extra {sorted(extra)[:5]}"


# -- the test -----------------------------------------------------------------

def test_three_nodes_two_frontends_and_a_node_loss(cluster):
    cs = cluster
    for u in NATIVE_USERS + BOSH_USERS:
        cs.nodes[0].add_user(u, "pw-" + u)
    natives = [Native(cs, u, i % 3) for i, u in enumerate(NATIVE_USERS)]
    boshes = [bosh_login(cs, u) for u in BOSH_USERS]
    everyone = natives + boshes
    assert {c.node for c in natives} == {"n1", "n2", "n3"}

    # The directory has every session before anyone is written to
    # (sign-in is not instant across nodes: the frames take a beat).
    def listed():
        got = set()
        for st in cs.nodes:
            for k in cs.redis.redis_cli("HKEYS", f"chat:loc:{st.node_id}").split():
                got.add(k.split("@")[0])
        return got >= set(NATIVE_USERS + BOSH_USERS)
    if CLUSTER_ON:
        outage.wait_until(listed, 30, "every session in chat:loc:<node>")

    # 1. 1:1 between every pair, across nodes, exactly once.
    marks, expect = exchange_1to1(everyone, everyone, "m")
    assert_exactly_once(everyone, marks, expect, "m")

    # 1b. A persistent room with occupants on every node, exactly once.
    owner = natives[0]
    join([owner])
    owner.out(f"<iq type='set' id='cfg1' to='{ROOM}' xmlns='{NS_CLIENT}'>"
               f"<query xmlns='http://jabber.org/protocol/muc#owner'>"
               f"<x xmlns='jabber:x:data' type='submit'>"
               f"<field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>"
               f"<field var='{ROOMCFG}persistentroom'><value>1</value></field>"
               f"<field var='{ROOMCFG}roomname'><value>Team</value></field>"
               f"</x></query></iq>")
    pump_until([owner], lambda: any(e.get("id") == "cfg1" and e.get("type") == "result"
                                    for e in owner.stanzas), 30, "room configured")
    join([c for c in everyone if c is not owner])
    gmarks = {c: len(c.stanzas) for c in everyone}
    for c in everyone:
        for k in range(2):
            groupchat(c, f"g:{c.user}:{k}")
        groupchat(c, f"g-end:{c.user}")
    pump_until(everyone, lambda: all(all(f"g-end:{s.user}" in bodies(r, gmarks[r], "groupchat")
                                         for s in everyone) for r in everyone),
               120, "room end markers")
    want = Counter(f"g:{s.user}:{k}" for s in everyone for k in range(2))
    for r in everyone:
        got = Counter(b for b in bodies(r, gmarks[r], "groupchat") if b.startswith("g:"))
        assert got == want, f"{r.user} on {r.node}: room messages {got - want} extra, " \
                            f"{want - got} missing"

    # 2. Kill -9 the room's owner in the middle of a 1:1 burst.
    owner_node = cs.redis.redis_cli("GET", f"chat:room-owner:{ROOM}")
    assert owner_node in ("n1", "n2", "n3"), owner_node
    dead = int(owner_node[1:]) - 1
    outage.wait_until(lambda: int(cs.redis.redis_cli("LLEN", f"chat:history:{ROOM}")) >=
                      len(want), 30, "room history written to Redis")
    history_before = cs.redis.redis_cli("LRANGE", f"chat:history:{ROOM}", 0, -1)
    survivors = [c for c in everyone if c.node != owner_node]
    lost_users = [c for c in everyone if c.node == owner_node]
    assert len(survivors) >= 3 and lost_users

    kmarks = {c: len(c.stanzas) for c in survivors}
    kexpect = Counter()
    for round_ in range(4):
        for s in survivors:
            for r in survivors:
                if r is s:
                    continue
                body = f"k:{s.user}:{r.user}:{round_}"
                chat(s, r.user, body)
                kexpect[(r.user, body)] += 1
        if round_ == 1:
            cs.kill_node(dead)                       # under load
        for c in survivors:
            c.pump()
    for s in survivors:
        for r in survivors:
            if r is not s:
                chat(s, r.user, f"k-end:{s.user}")
    pump_until(survivors, lambda: all(all(f"k-end:{s.user}" in bodies(r, kmarks[r])
                                          for s in survivors if s is not r) for r in survivors),
               120, "burst end markers after the kill")
    assert_exactly_once(survivors, kmarks, kexpect, "k")

    # Occupants on the live nodes are told the room went away (status 332).
    pump_until(survivors, lambda: all(self_presence(c, gmarks[c], "332") is not None
                                      for c in survivors), 60, "status 332 to occupants")
    for c in lost_users:
        if isinstance(c, Native):
            c.close()

    # Messages to the dead node's users now go to offline storage.
    omarks = {}
    for s in survivors[:2]:
        for r in lost_users:
            chat(s, r.user, f"o:{s.user}:{r.user}")

    # 3. The dead node's users sign in again and land on a live node.
    back = []
    for c in lost_users:
        if isinstance(c, Native):
            node = next(i for i in range(3) if i != dead)
            back.append(Native(cs, c.user, node))
        else:
            back.append(bosh_login(cs, c.user, avoid=owner_node))
    for c in back:
        assert c.node != owner_node
        omarks[c] = 0
    pump_until(back, lambda: all(all(f"o:{s.user}:{c.user}" in bodies(c)
                                     for s in survivors[:2]) for c in back),
               60, "offline messages after the re-login")
    for c in back:
        got = Counter(b for b in bodies(c) if b.startswith("o:"))
        assert all(n == 1 for n in got.values()), (c.user, got)

    # The room moves to a live node with its configuration and history.
    everyone2 = survivors + back
    hmarks = join(everyone2, history=50)
    new_owner = cs.redis.redis_cli("GET", f"chat:room-owner:{ROOM}")
    assert new_owner not in ("", owner_node), new_owner
    assert cs.redis.redis_cli("HGET", f"chat:room:{ROOM}", "name") == "Team"
    joiner = survivors[0]
    # what Redis held before the kill (the last muc_history messages)
    stored = re.findall(r"<body>([^<]*)</body>", history_before)
    assert len(stored) >= 10, history_before
    pump_until(everyone2, lambda: all(b in bodies(joiner, hmarks[joiner], "groupchat")
                                      for b in stored),
               30, "room history after the move")
    joiner.out(f"<iq type='get' id='di1' to='{ROOM}' xmlns='{NS_CLIENT}'>"
                f"<query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    pump_until([joiner], lambda: any(e.get("id") == "di1" for e in joiner.stanzas), 30,
               "disco#info of the moved room")
    di = next(e for e in joiner.stanzas if e.get("id") == "di1")
    ident = di.find(".//{http://jabber.org/protocol/disco#info}identity")
    assert di.get("type") == "result" and ident is not None and ident.get("name") == "Team"

    # Rooms keep working: every message once, for everyone.
    rmarks = {c: len(c.stanzas) for c in everyone2}
    for c in everyone2:
        groupchat(c, f"r:{c.user}")
        groupchat(c, f"r-end:{c.user}")
    pump_until(everyone2, lambda: all(all(f"r-end:{s.user}" in bodies(r, rmarks[r], "groupchat")
                                          for s in everyone2) for r in everyone2),
               120, "room end markers after the move")
    for r in everyone2:
        got = Counter(b for b in bodies(r, rmarks[r], "groupchat") if b.startswith("r:"))
        assert got == Counter(f"r:{s.user}" for s in everyone2), (r.user, got)

    # And 1:1 between everyone, old and new sessions.
    marks, expect = exchange_1to1(everyone2, everyone2, "z")
    assert_exactly_once(everyone2, marks, expect, "z")
    for c in everyone2:
        if isinstance(c, Native):
            c.close()


@pytest.fixture
def two_nodes():
    root = tempfile.mkdtemp(prefix="chat92b-")
    # a burst as fast as one client can send, all of which may land in
    # offline storage: no flood control, room for all of it
    extra = {"cluster": os.environ.get("CLUSTER", "yes"), "stanza_rate": "0",
             "offline_max_messages": "1000", "offline_sender_share": "100"}
    cs = chatstack.ClusterStack(root, nodes=2, frontends=0, chatd_extra=extra)
    if os.environ.get("CHATD_BIN"):
        for st in cs.nodes:
            st.chatd_bin = os.environ["CHATD_BIN"]
    ok = False
    try:
        cs.start()
        yield cs
        ok = True
    finally:
        cs.stop()
        if ok and not os.environ.get("KEEP_STACK"):
            shutil.rmtree(root, ignore_errors=True)
        else:
            sys.stderr.write(f"\n[test_92] stack files kept in {root}\n")


def test_subscribers_cut_off_lose_no_message(two_nodes):
    """Redis drops every node's subscriber (CLIENT KILL TYPE pubsub) in the
    middle of a burst: what was published while a subscriber was away
    reached no one, went to offline storage, and is handed to the online
    recipient when its node is subscribed again. Every message once."""
    cs = two_nodes
    for u in ("sa", "sb"):
        cs.nodes[0].add_user(u, "pw-" + u)
    a = Native(cs, "sa", 0)
    b = Native(cs, "sb", 1)
    if CLUSTER_ON:
        outage.wait_until(lambda: "sb@" in cs.redis.redis_cli("HKEYS", "chat:loc:n2"), 30,
                          "sb in chat:loc:n2")
    subs = [c for c in cs.redis.redis_clients() if c.get("name", "").endswith(":bus")]
    assert len(subs) == 2, subs          # one named subscriber per node
    def stats():
        return dict(line.split(" ", 1) for line in
                    cs.nodes[0].chatctl("stats").stdout.splitlines() if " " in line)
    # chatctl stats on n1: subscribed, n2 alive (its next heartbeat), sb known
    outage.wait_until(lambda: (lambda s: s.get("cluster_subscribed") == "1" and
                               s.get("cluster_other_nodes") == "1" and
                               int(s.get("cluster_remote_sessions", 0)) >= 1)(stats()),
                      30, "cluster figures in chatctl stats")
    mark = len(b.stanzas)
    sent = []
    for k in range(300):
        body = f"c:{k}"
        chat(a, "sb", body)
        sent.append(body)
        if k == 50:
            cs.redis.redis_cli("CLIENT", "KILL", "TYPE", "pubsub")
        if k % 50 == 0:
            a.pump()
    chat(a, "sb", "c-end")
    pump_until([a, b], lambda: "c-end" in bodies(b, mark), 60, "the last message")
    # what went to offline storage comes at the re-subscription's re-flush
    pump_until([a, b], lambda: set(sent) <= set(bodies(b, mark)), 30,
               "every message, some through offline storage")
    got = Counter(x for x in bodies(b, mark) if x.startswith("c:"))
    assert all(n == 1 for n in got.values()), {k: n for k, n in got.items() if n > 1}
    outage.wait_until(lambda: len([c for c in cs.redis.redis_clients()
                                   if c.get("name", "").endswith(":bus")]) == 2, 30,
                      "both subscribers back")
    a.close()
    b.close()


def presences(c, start=0, frm=None, type_=None):
    out = []
    for el in c.stanzas[start:]:
        if el.tag != f"{{{NS_CLIENT}}}presence":
            continue
        if frm and not (el.get("from") or "").startswith(frm):
            continue
        if type_ is not None and (el.get("type") or "") != type_:
            continue
        out.append(el)
    return out


def test_presence_and_subscriptions_across_nodes(two_nodes):
    """RFC 6121 between users on two nodes: a subscription request and
    its approval reach the contact's node (which holds the roster), the
    available presence is broadcast across, a contact signing in is
    probed across, and unavailable reaches the other node."""
    cs = two_nodes
    for u in ("pa", "pb"):
        cs.nodes[0].add_user(u, "pw-" + u)
    a = Native(cs, "pa", 0)
    b = Native(cs, "pb", 1)
    if CLUSTER_ON:
        outage.wait_until(lambda: "pb@" in cs.redis.redis_cli("HKEYS", "chat:loc:n2") and
                          "pa@" in cs.redis.redis_cli("HKEYS", "chat:loc:n1"), 30,
                          "both listed")
    # pa asks pb; pb (on the other node) sees the request and approves
    a.out(f"<presence to='pb@{DOMAIN}' type='subscribe' xmlns='{NS_CLIENT}'/>")
    pump_until([a, b], lambda: presences(b, 0, "pa@", "subscribe"), 30, "request at pb")
    b.out(f"<presence to='pa@{DOMAIN}' type='subscribed' xmlns='{NS_CLIENT}'/>")
    pump_until([a, b], lambda: presences(a, 0, "pb@", "subscribed"), 30, "approval at pa")
    # and the other way, so both see each other
    b.out(f"<presence to='pa@{DOMAIN}' type='subscribe' xmlns='{NS_CLIENT}'/>")
    pump_until([a, b], lambda: presences(a, 0, "pb@", "subscribe"), 30, "request at pa")
    a.out(f"<presence to='pb@{DOMAIN}' type='subscribed' xmlns='{NS_CLIENT}'/>")
    pump_until([a, b], lambda: presences(b, 0, "pa@", "subscribed"), 30, "approval at pb")
    # pa's current presence reached pb with the approval; pb's reaches pa
    pump_until([a, b], lambda: presences(a, 0, "pb@", ""), 30, "pb's presence at pa")
    # pb goes away: pa sees unavailable
    mark = len(a.stanzas)
    b.close()
    pump_until([a], lambda: presences(a, mark, "pb@", "unavailable"), 30,
               "pb unavailable at pa")
    # pb signs in again on node 2: pa sees it available (broadcast across)
    mark = len(a.stanzas)
    b = Native(cs, "pb", 1)
    pump_until([a, b], lambda: presences(a, mark, "pb@", ""), 30, "pb available at pa")
    # pb's login probed pa across: pb got pa's presence
    pump_until([a, b], lambda: presences(b, 0, "pa@", ""), 30, "pa's presence at pb (probe)")
    a.close()
    b.close()


def spublish_calls(cs):
    for line in cs.redis.redis_cli("INFO", "commandstats").splitlines():
        if line.startswith("cmdstat_spublish:"):
            return int(line.split("calls=", 1)[1].split(",", 1)[0])
    return 0


def test_one_redis_command_per_cross_node_message_none_on_one_node(two_nodes):
    """The invariant of issue 16, counted by Redis itself (INFO
    commandstats): a chat message between two nodes is one SPUBLISH; one
    between two sessions of the same node touches no pub/sub at all."""
    cs = two_nodes
    for u in ("ca", "cb", "cc"):
        cs.nodes[0].add_user(u, "pw-" + u)
    a = Native(cs, "ca", 0)
    b = Native(cs, "cb", 0)          # same node as ca
    c = Native(cs, "cc", 1)          # the other node
    if CLUSTER_ON:
        # available everywhere: the directory frames (SPUBLISH inside the
        # same script as the HSET) are out before we count
        def available(node, jid):
            return cs.redis.redis_cli("HGET", f"chat:loc:{node}", jid) == "1 0"
        outage.wait_until(lambda: available("n1", a.jid) and available("n1", b.jid) and
                          available("n2", c.jid), 30, "all three available in chat:loc")
    n = 50
    before = spublish_calls(cs)
    mark = len(b.stanzas)
    for k in range(n):
        chat(a, "cb", f"same:{k}")
    pump_until([a, b], lambda: f"same:{n - 1}" in bodies(b, mark), 30, "same-node messages")
    assert spublish_calls(cs) == before, "a same-node message went through Redis"
    before = spublish_calls(cs)
    mark = len(c.stanzas)
    for k in range(n):
        chat(a, "cc", f"cross:{k}")
    pump_until([a, c], lambda: f"cross:{n - 1}" in bodies(c, mark), 30, "cross-node messages")
    assert bodies(c, mark) == [f"cross:{k}" for k in range(n)]     # once each, in order
    assert spublish_calls(cs) - before == n
    for x in (a, b, c):
        x.close()
