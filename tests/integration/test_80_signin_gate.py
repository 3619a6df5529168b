"""Sign-in gate, pace and per-address caps as users and stock clients see them.

Each group runs on a private stack (signin_util.private_stack): closing the
gate or setting caps must never leak into the shared stack.

Why HTTP 503 + Retry-After for a refused creation (checked with the real
client below; Strophe.js 5 src/transports/bosh.ts _onRequestStateChange,
_processRequest, _hitError): on a 5xx Strophe resends the SAME request
(same rid); the first resend is immediate, later ones wait
min(floor(1.1 * wait), sends^3) s, i.e. 8 s, 27 s, 64 s for wait=60, and
after the fifth failed send (> 4 errors) it gives up with CONNTIMEOUT:
sends at about 0, 0, 8, 35, 99 s. Strophe ignores Retry-After (other
clients and our own storm model honour it). A 4xx would disconnect at
once, and a 200 + terminate makes Converse reconnect every 3 s - both
hammer harder. So a closure shorter than ~99 s is ridden out by Strophe
on its own; a longer one ends in CONNTIMEOUT after five quiet attempts,
and the page (Converse: no auto-reconnect for a failure while
CONNECTING) leaves the next try to the user.
"""

import re
import time

import pytest

from clients import BoshClient
from signin_util import (SEC_PREFIX, create, native_login, per_second_admitted,
                         private_stack, refusal_counters, signin_stats,
                         terminate, wait_until)


def retry_after(ans):
    return int(ans.headers["retry-after"])


@pytest.fixture(scope="module")
def gate_stack():
    with private_stack("chat80-gate-") as st:
        st.users = {n: st.add_user(n) for n in ("alice", "bob", "carol", "dave")}
        yield st
        st.chatctl("signin", "open")


@pytest.fixture
def clients(gate_stack, tmp_path):
    started = []

    def make(name):
        c = BoshClient(gate_stack.bosh_url, f"{name}@localhost",
                       gate_stack.users[name], log_dir=str(tmp_path))
        started.append(c)
        return c
    yield make
    for c in started:
        c.close()


def exchange(a, b, text, timeout=20):
    """a sends b a chat message; b must receive it."""
    mark = len(b.events)
    a.send("chat", to=b.jid, body=text)
    b.wait_stanza(timeout, start=mark, name="message", body=text)


def test_closed_gate_refuses_new_sessions_keeps_open_ones(gate_stack, clients):
    st = gate_stack
    alice, bob = clients("alice"), clients("bob")
    alice.connect()
    bob.connect()
    bob.send("presence")
    alice.send("presence")
    exchange(alice, bob, "before the gate closes")

    before = signin_stats(st)
    st.chatctl("signin", "close", "--reason", "maintenance", "--for", "10m")
    status = st.chatctl("signin", "status").stdout
    assert "sign-in: closed" in status and "maintenance" in status, status

    # Refused on the wire: 503, Retry-After = time left (600 s) + 0..10 s
    # of jitter, the reason readable.
    ans, _ = create(st)
    assert ans.status == 503, ans
    assert 590 <= retry_after(ans) <= 611, ans
    assert ans.headers["content-type"].startswith("text/plain"), ans
    assert "maintenance" in ans.text and "closed" in ans.text, ans
    # Counted: on the status pages (all children together) and in Redis.
    want = {"gate": 1, "rate": 0, "address": 0, "sessions_refused": 1}
    assert refusal_counters(st, want) == want
    assert signin_stats(st)["closed"] == before["closed"] + 1

    # Jitter: refused clients do not all come back at the same second.
    spread = {retry_after(create(st)[0]) for _ in range(12)}
    assert len(spread) >= 3, spread

    # Open sessions carry on while the gate is closed.
    for i in range(3):
        exchange(alice, bob, f"during the closure {i}")
        exchange(bob, alice, f"reply during the closure {i}")

    # The native port honours the same gate, with the same reason.
    native = native_login(st, "carol", st.users["carol"])
    assert "<policy-violation" in native and "maintenance" in native, native

    st.chatctl("signin", "open")
    assert "sign-in: open" in st.chatctl("signin", "status").stdout
    ans, rid = create(st)
    assert ans.status == 200 and ans.attr("sid"), ans
    terminate(st, ans.attr("sid"), rid + 1)
    exchange(alice, bob, "after the gate opens")


def refused_attempts(st):
    return signin_stats(st)["closed"]


def test_strophe_backs_off_and_gets_in_when_the_gate_opens(gate_stack, clients):
    """The real client, gate closed: two immediate sends, then an 8 s
    back-off (Strophe's sends^3), so no hammering; opened meanwhile, the
    next resend of the same rid creates the session and the login goes on."""
    st = gate_stack
    st.chatctl("signin", "close", "--reason", "maintenance")
    base = refused_attempts(st)
    carol = clients("carol")
    mark = len(carol.events)
    carol.send("connect")
    wait_until("two refused attempts", lambda: refused_attempts(st) >= base + 2, 15)
    t2 = time.monotonic()
    st.chatctl("signin", "open")
    ev = carol.wait_event(lambda e: e.get("event") == "status" and
                          e["status"] in ("CONNECTED", "CONNFAIL", "CONNTIMEOUT",
                                          "DISCONNECTED", "AUTHFAIL"),
                          30, "connect outcome", start=mark)
    gap = time.monotonic() - t2
    assert ev["status"] == "CONNECTED", carol.dump()
    # Exactly the two quick sends were refused, and the next one came only
    # after Strophe's back-off (8 s nominal).
    assert refused_attempts(st) == base + 2
    assert gap >= 6, gap
    carol.send("presence")
    dave = clients("dave")
    dave.connect()
    dave.send("presence")
    exchange(dave, carol, "carol got in")


def test_strophe_gives_up_quietly_on_a_long_closure(gate_stack, clients):
    """With wait=3 Strophe's back-off caps at 3 s, so its whole schedule
    fits a test: five sends in total (0, 0, 3, 6, 9 s), then CONNTIMEOUT
    and no more requests. With the default wait=60 the same five sends
    span ~99 s."""
    st = gate_stack
    st.chatctl("signin", "close", "--reason", "maintenance")
    try:
        base = refused_attempts(st)
        dave = clients("dave")
        t0 = time.monotonic()
        mark = len(dave.events)
        dave.send("connect", wait=3)
        ev = dave.wait_event(lambda e: e.get("event") == "status" and
                             e["status"] in ("CONNECTED", "CONNTIMEOUT", "CONNFAIL"),
                             40, "give-up", start=mark)
        took = time.monotonic() - t0
        assert ev["status"] == "CONNTIMEOUT", dave.dump()
        assert refused_attempts(st) == base + 5
        assert took >= 7, took           # 0 + 0 + 3 + 3 + 3 s of back-off
        # and it stays quiet afterwards
        t_end = time.monotonic() + 3
        wait_until("a quiet period", lambda: time.monotonic() > t_end, 10, interval=0.5)
        assert refused_attempts(st) == base + 5
    finally:
        st.chatctl("signin", "open")


def test_signin_counters_are_per_outcome(gate_stack):
    """Admitted creations are counted per second of Redis's clock."""
    st = gate_stack
    before = signin_stats(st)
    sids = []
    for _ in range(3):
        ans, rid = create(st)
        assert ans.status == 200, ans
        sids.append((ans.attr("sid"), rid))
    assert signin_stats(st)["admitted"] == before["admitted"] + 3
    assert sum(per_second_admitted(st).values()) >= 3
    # Each counter key got its expiry when it was created (the script sets
    # it only then): none may live forever in Redis.
    keys = [k for k in st.redis_cli("--scan", "--pattern", SEC_PREFIX + "*").split("\n") if k]
    assert keys
    for k in keys:
        ttl = int(st.redis_cli("TTL", k))
        assert 0 < ttl <= 120, (k, ttl)
    out = st.chatctl("signin", "status").stdout
    m = re.search(r"sign-ins admitted: (\d+)", out)
    assert m and int(m.group(1)) == before["admitted"] + 3, out
    assert re.search(r"admitted per second, last 10 s \(oldest first\):( \d+){10}", out), out
    for sid, rid in sids:
        terminate(st, sid, rid + 1)


def test_boshsignin_off_refuses_without_redis():
    """The emergency switch: every creation refused with 503 + reason, and
    Redis never sees an admission script (INFO commandstats)."""
    with private_stack("chat80-off-", httpd_extra="BoshSignin off\n") as st:
        st.redis_cli("CONFIG", "RESETSTAT")
        answers = [create(st)[0] for _ in range(5)]
        for ans in answers:
            assert ans.status == 503, ans
            assert 1 <= retry_after(ans) <= 16, ans
            assert "BoshSignin off" in ans.text, ans
        want = {"gate": 5, "sessions_refused": 5}
        assert refusal_counters(st, want) == want
        stats = st.redis_cli("INFO", "commandstats")
        assert "cmdstat_evalsha" not in stats and "cmdstat_eval:" not in stats, stats
        assert st.redis_cli("KEYS", "chat:signin*") == ""


def test_per_address_cap_on_live_sessions():
    """max_sessions_per_addr (per chatd node): the address's third live
    session is refused with 503 + Retry-After + reason over BOSH and with
    policy-violation on the native port; when one ends, a new one gets in."""
    with private_stack("chat80-addr-", chatd_extra={"max_sessions_per_addr": 2}) as st:
        pw = st.add_user("erin")
        first, rid1 = create(st)
        second, rid2 = create(st)
        assert first.status == 200 and second.status == 200, (first, second)
        third, _ = create(st)
        assert third.status == 503, third
        assert "too many sessions from your address" in third.text, third
        assert 60 <= retry_after(third) <= 71, third     # inactivity 60 s + jitter
        want = {"chatd": 1, "address": 0, "sessions_refused": 1}
        assert refusal_counters(st, want) == want
        native = native_login(st, "erin", pw)
        assert "<policy-violation" in native and "too many sessions" in native, native
        stats = st.chatctl("stats").stdout
        assert re.search(r"^addr_refused 2$", stats, re.M), stats
        assert re.search(r"^max_sessions_per_addr 2$", stats, re.M), stats

        terminate(st, first.attr("sid"), rid1 + 1)
        ans = wait_until("a slot after terminate",
                         lambda: (lambda a: a if a.status == 200 else None)(create(st)[0]), 10)
        assert ans.attr("sid")
