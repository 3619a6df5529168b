"""Redis HA (issue 16): chatd and mod_bosh find the master through Sentinel,
and a failover under load loses no chat message; sign-in pauses for the
failover and comes back by itself.

One private stack with a replica and three sentinels (chatstack.Stack
sentinels=3, down-after-milliseconds 2000). chatd.conf names the sentinels
(redis_sentinels, redis_sentinel_master), httpd too (BoshRedisSentinel,
BoshRedisSentinelMaster); neither is told the master's address.

Under a steady load of chat (two native slixmpp clients and one raw BOSH
session, every pair both ways, plus messages to an account that is offline)
the master goes away twice:
  1. `SENTINEL FAILOVER mymaster` (the old master lives on and becomes a
     replica);
  2. kill -9 of the master then in charge (the sentinels must agree it is
     down, then promote).
Each time we assert: every chat message between the signed-in users arrives
exactly once; no session is dropped (no disconnect, no BOSH terminate);
a message to the offline account is either stored and delivered exactly
once at its next sign-in or bounced to its sender (never silently lost);
a sign-in while the master is gone gets the retryable answer (HTTP 503 with
Retry-After; native SASL temporary-auth-failure); after the failover
sign-in works again without restarting anything; and CLIENT LIST on the
new master shows chatd's and mod_bosh's named connections (and chatd's
named connection on a sentinel).

chatd.conf and httpd are given no usable master address (redis://sentinel-managed.invalid/0:
only its password and database would be used), so only the sentinels can
lead them to the master. On the old code (a fixed Redis address, no sentinel keys) chatd and mod_bosh
keep talking to the dead or demoted server: sign-in never comes back.
"""

import itertools
import threading
import time

import pytest

from native_client import NativeClient
from outage import RawSession, create_session, wait_until
from signin_util import native_login, private_stack

DOMAIN = "localhost"
FAILOVER_DEADLINE = 60          # seconds: sentinels agree, elect, promote


@pytest.fixture(scope="module")
def ha():
    # The load is one sender's worth of several chats at once: above the
    # default flood limits (stanza_rate 20/s), which would refuse stanzas.
    with private_stack("chat55-sentinel-", sentinels=3,
                       chatd_extra={"stanza_rate": 1000, "stanza_burst": 5000}) as st:
        st.users = {n: st.add_user(n) for n in
                    ("alice", "bob", "carol", "dave", "erin", "frank")}
        yield st


def master_port(st):
    addr = st.ha.master_addr()
    return addr[1] if addr else None


def proc_of(st, port):
    return "redis" if port == st.redis_port else "redis-replica"


def native(st, user):
    c = NativeClient("127.0.0.1", st.xmpp_port, f"{user}@{DOMAIN}/m",
                     st.users[user], mech="SCRAM-SHA-256")
    c.connect()
    mark = len(c.events)
    c.send("presence")      # available: messages to the bare JID reach it
    c.wait_event(lambda e: e.get("event") == "done", 10, "presence sent", start=mark)
    return c


class Load:
    """Chat between a (native), b (native) and c (raw BOSH), every pair both
    ways, plus a -> offline account, in a thread until stopped. Every body
    is unique, so deliveries can be counted."""

    def __init__(self, st, tag, a, b, c, offline):
        self.st, self.tag = st, tag
        self.a, self.b, self.c = a, b, c
        self.offline = offline
        self.sent = {"a>b": [], "b>a": [], "a>c": [], "c>a": [], "a>off": []}
        self.error = None
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self._t.start()
        return self

    def stop(self):
        self._stop.set()
        self._t.join(60)
        assert not self._t.is_alive(), "load thread stuck"
        if self.error:
            raise self.error

    def _run(self):
        a_jid, b_jid, c_jid = self.a.jid.split("/")[0], self.b.jid.split("/")[0], \
            f"{self.c.user}@{DOMAIN}"
        try:
            for i in itertools.count():
                if self._stop.is_set():
                    return
                t = f"{self.tag}-{i}"
                for key, sender, to in (("a>b", self.a, b_jid), ("b>a", self.b, a_jid),
                                        ("a>c", self.a, c_jid)):
                    body = f"{key}-{t}"
                    sender.send("chat", to=to, body=body, msgid=body)
                    self.sent[key].append(body)
                if i % 3 == 0:
                    body = f"a>off-{t}"
                    self.a.send("chat", to=f"{self.offline}@{DOMAIN}", body=body, msgid=body)
                    self.sent["a>off"].append(body)
                body = f"c>a-{t}"
                self.c.chat(a_jid, body)       # one BOSH request, answers collected
                self.sent["c>a"].append(body)
                time.sleep(0.05)
        except BaseException as e:          # reported by stop()
            self.error = e


def bodies(client, prefix):
    return [e["body"] for e in client.stanzas() if e.get("name") == "message"
            and e.get("type") != "error" and (e.get("body") or "").startswith(prefix)]


def bounced(client, prefix):
    return [e["id"] for e in client.stanzas() if e.get("name") == "message"
            and e.get("type") == "error" and (e.get("id") or "").startswith(prefix)]


def bosh_bodies(c, prefix):
    ns = "{jabber:client}"
    return [e.findtext(f"{ns}body") for e in c.stanzas if e.tag == f"{ns}message"
            and (e.findtext(f"{ns}body") or "").startswith(prefix)]


def assert_exactly_once(sent, got, what):
    missing = [b for b in sent if got.count(b) == 0]
    doubled = [b for b in sent if got.count(b) > 1]
    assert not missing and not doubled, \
        f"{what}: {len(sent)} sent, missing {missing[:10]} ({len(missing)}), " \
        f"twice or more {doubled[:10]} ({len(doubled)})"


def bosh_signin(st, user, resource):
    """A complete BOSH sign-in (creation, SASL PLAIN, bind, presence): the
    session, or None when any step was refused."""
    try:
        return RawSession(st.http_port, user, st.users[user], resource, wait=2)
    except AssertionError:
        return None


def check_named_connections(st, port):
    names = [c.get("name", "") for c in st.ha.clients(port)]
    chatd = sorted(n for n in names if n.startswith("chatd:") and not n.endswith(":sentinel"))
    assert len(chatd) == 4 and len({n.rsplit(":", 1)[1] for n in chatd}) == 4, \
        f"chatd's 4 named connections (redis_max_conns) on the master {port}: {names}"
    assert any(n.startswith("mod_bosh:") for n in names), \
        f"no named mod_bosh connection on the master {port}: {names}"
    on_sentinels = [c.get("name", "") for p in st.ha.ports for c in st.ha.clients(p)]
    assert any(n.startswith("chatd:") and n.endswith(":sentinel") for n in on_sentinels), \
        f"chatd's named sentinel connection: {on_sentinels}"


def run_failover(st, tag, offline_user, trigger, during=None):
    """Load, trigger(), wait for the new master, more load; then assert."""
    a, b = native(st, "alice"), native(st, "bob")
    c = RawSession(st.http_port, "carol", st.users["carol"], f"r{tag}", wait=2)
    c.user = "carol"
    old = master_port(st)
    try:
        load = Load(st, tag, a, b, c, offline_user).start()
        time.sleep(1.5)
        trigger(old)
        if during:
            during(old)
        wait_until(lambda: master_port(st) not in (None, old), FAILOVER_DEADLINE,
                   "the sentinels name a new master")
        new = master_port(st)
        # the new master takes sign-ins again, by itself (nothing restarted)
        wait_until(lambda: bosh_signin(st, "erin", f"e{tag}"), FAILOVER_DEADLINE,
                   "BOSH sign-in after the failover")
        wait_until(lambda: "<success" in native_login(st, "frank", st.users["frank"]),
                   FAILOVER_DEADLINE, "native sign-in after the failover")
        time.sleep(1.5)                     # load on the new master too
        load.stop()

        # Drain: everything sent must arrive; then count.
        def arrived():
            c.send("")
            return (all(bodies(b, "a>b-").count(x) for x in load.sent["a>b"]) and
                    all(bodies(a, "b>a-").count(x) for x in load.sent["b>a"]) and
                    all(bodies(a, "c>a-").count(x) for x in load.sent["c>a"]) and
                    all(bosh_bodies(c, "a>c-").count(x) for x in load.sent["a>c"]))
        try:
            wait_until(arrived, 30, "every chat message delivered")
        except AssertionError:
            pass                            # the exact counts below say what is missing
        assert_exactly_once(load.sent["a>b"], bodies(b, f"a>b-{tag}-"), "native a -> native b")
        assert_exactly_once(load.sent["b>a"], bodies(a, f"b>a-{tag}-"), "native b -> native a")
        assert_exactly_once(load.sent["c>a"], bodies(a, f"c>a-{tag}-"), "BOSH c -> native a")
        assert_exactly_once(load.sent["a>c"], bosh_bodies(c, f"a>c-{tag}-"), "native a -> BOSH c")
        for cl in (a, b):
            assert not [e for e in cl.events if e.get("event") == "status" and
                        e["status"] == "DISCONNECTED"], f"{cl.jid} was disconnected"
            assert not [e for e in cl.events if e.get("event") == "stream_error"], cl.dump()

        # Offline account: stored then delivered once, or bounced to alice.
        time.sleep(0.5)                     # the last stores' answers
        off = native(st, offline_user)
        try:
            wait_until(lambda: all(bodies(off, "a>off-").count(x) or x in bounced(a, "a>off-")
                                   for x in load.sent["a>off"]), 30,
                       "offline messages delivered or bounced")
        except AssertionError:
            pass
        got, back = bodies(off, f"a>off-{tag}-"), bounced(a, f"a>off-{tag}-")
        lost = [x for x in load.sent["a>off"] if x not in got and x not in back]
        twice = [x for x in load.sent["a>off"] if got.count(x) + back.count(x) > 1]
        assert not lost and not twice, \
            f"offline messages: {len(load.sent['a>off'])} sent, {len(got)} delivered, " \
            f"{len(back)} bounced; silently lost {lost}; twice {twice}"
        off.close()
        check_named_connections(st, new)
        return new
    finally:
        for cl in (a, b):
            cl.close()


def wait_for_replica_in_sync(st):
    """Before a failover: some replica of the current master is in sync
    (after the first failover the old master must be converted first)."""
    def ok():
        m = master_port(st)
        if not m:
            return False
        other = st.redis_port if m != st.redis_port else st.ha.replica_port
        info = st.ha.cli(other, "INFO", "replication")
        return f"master_port:{m}" in info and "master_link_status:up" in info
    wait_until(ok, FAILOVER_DEADLINE, "a replica in sync with the master")
    # every sentinel knows it as a replica of the current master
    wait_until(lambda: all(len(st.ha.sentinel_cmd(p, "replicas")) >= 1 for p in st.ha.ports),
               30, "sentinels see the replica")


def test_sentinel_failover_command(ha):
    """SENTINEL FAILOVER under load: the old master lives on (demoted)."""
    st = ha
    wait_for_replica_in_sync(st)
    seen = []

    def trigger(old):
        assert st.ha.cli(st.ha.ports[0], "SENTINEL", "FAILOVER", st.ha.name) == "OK"

    def during(old):
        # While it happens, a sign-in is admitted or told to retry: never
        # anything else (the switch may be too quick to catch a 503).
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            kind, val, ans = create_session(st.http_port, timeout=30)
            seen.append(kind)
            assert kind in ("ok", "503"), ans
            if kind == "503":
                assert val and int(val) > 0, ans
    new = run_failover(st, "f1", "dave", trigger, during)
    # The demoted master no longer has our chatd connections once the
    # sentinels reconfigured it (their CLIENT KILL), and chatd did not
    # come back to it.
    old = st.redis_port if new != st.redis_port else st.ha.replica_port
    wait_until(lambda: not [c for c in st.ha.clients(old)
                            if c.get("name", "").startswith(("chatd:", "mod_bosh:"))],
               30, "no chatd/mod_bosh connection left on the demoted master")


def test_master_killed(ha):
    """kill -9 of the master under load: sign-in answers 'retry' while the
    sentinels agree and promote, then works again by itself."""
    st = ha
    wait_for_replica_in_sync(st)
    refused = {}

    def trigger(old):
        st.procs[proc_of(st, old)].kill()

    def during(old):
        # The master is gone and not yet replaced (down-after 2 s): new
        # sign-ins get the retryable answer.
        kind, val, ans = create_session(st.http_port, timeout=30)
        refused["bosh"] = (kind, val, ans)
        refused["native"] = native_login(st, "frank", st.users["frank"])
    run_failover(st, "k1", "dave", trigger, during)
    kind, val, ans = refused["bosh"]
    assert kind == "503" and val and int(val) > 0, \
        f"a BOSH sign-in while the master is down: want 503 + Retry-After, got {ans}"
    assert "temporary-auth-failure" in refused["native"], refused["native"]


def test_maxclients_check_asks_the_sentinels(tmp_path):
    """The start-up maxclients check (BoshRedisCheck refuse) runs against
    the master the sentinels name: with maxclients 16 there (and on the
    replica) httpd refuses to start and says which server it checked."""
    import chatstack
    st = chatstack.Stack(str(tmp_path), foreground=True, sentinels=3,
                         redis_extra="maxclients 16")
    try:
        with pytest.raises(chatstack.StackError):
            st.start()
        with open(st.httpd_error_log, errors="replace") as f:
            log = f.read()
        assert f"Redis 127.0.0.1:{st.redis_port} maxclients is 16" in log, log[-2000:]
    finally:
        st.stop()
