"""Failed password sign-ins (issue 13, docs/operations.md "Locked out"):
counted per account and per client address across sessions, answered
with a delay and not-authorized past the limit; unknown accounts cost the
same hashing as known ones; chat keeps flowing during a burst of wrong
passwords (the hashing runs on chatd's hash threads).

A stack of our own with chatd's default limits (auth_fail_account 5,
auth_fail_addr 20, auth_fail_delay_ms 3000) and mod_remoteip trusting
127.0.0.1, so that each test signs in from addresses of its own
(X-Forwarded-For) and the per-address counter of one test never touches
another's.
"""

import itertools
import re
import threading
import time

import pytest

import chatstack
import outage
import pw_util
from signin_util import private_stack

_addr = itertools.count(1)


def fresh_addr():
    n = next(_addr)
    return f"198.51.{100 + n // 250}.{n % 250 + 1}"


@pytest.fixture(scope="module")
def tstack():
    mods = chatstack.APACHE_MODULES
    extra = f"""
<IfModule !remoteip_module>
    LoadModule remoteip_module {mods}/mod_remoteip.so
</IfModule>
RemoteIPHeader X-Forwarded-For
RemoteIPInternalProxy 127.0.0.1
"""
    with private_stack("chattest84-", httpd_extra=extra) as st:
        yield st


def session(st, addr):
    b = pw_util.Bosh(st.http_port, headers={"X-Forwarded-For": addr})
    pw_util.features(b)
    return b


def attempt(st, addr, user, password):
    """One PLAIN attempt in a new session; (answer, seconds)."""
    b = session(st, addr)
    try:
        t0 = time.monotonic()
        got = b.plain(user, password)
        return got, time.monotonic() - t0
    finally:
        b.close()


def log_has(st, pattern):
    with open(st.chatd_log, errors="replace") as f:
        return re.search(pattern, f.read()) is not None


def test_account_failures_across_sessions_lock_it(tstack):
    pw = tstack.add_user("dave")
    # 5 wrong passwords from 3 addresses in 3 sessions (2 + 2 + 1)
    for n in (2, 2, 1):
        b = session(tstack, fresh_addr())
        try:
            for _ in range(n):
                got = b.plain("dave", "wrong")
                assert "<not-authorized/>" in got, got
        finally:
            b.close()
    throttled = outage.chatd_stat(tstack, "auth_throttled")
    # the 6th, from yet another address, with the RIGHT password
    got, took = attempt(tstack, fresh_addr(), "dave", pw)
    assert "<not-authorized/>" in got and "<success" not in got, got
    assert took >= 2.5, f"answered after {took:.2f}s, expected the 3 s delay"
    assert outage.chatd_stat(tstack, "auth_throttled") == throttled + 1
    outage.wait_until(lambda: log_has(tstack, r"BOSH00203: sign-in throttled: 'dave'"),
                      10, "the throttle's log line")


def test_address_failures_across_accounts_lock_it(tstack):
    pw = tstack.add_user("erin")
    addr = fresh_addr()
    # 20 wrong guesses at 20 names from one address, 4 per session
    for s in range(5):
        b = session(tstack, addr)
        try:
            for i in range(4):
                got = b.plain(f"nobody{s}x{i}", "guess")
                assert "<not-authorized/>" in got, got
        finally:
            b.close()
    got, took = attempt(tstack, addr, "erin", pw)
    assert "<not-authorized/>" in got and "<success" not in got, got
    assert took >= 2.5, took
    # the account itself is fine from elsewhere
    got, _ = attempt(tstack, fresh_addr(), "erin", pw)
    assert "<success" in got, got


def test_unknown_account_costs_the_same_hashing(tstack):
    tstack.add_user("frank")

    def runs_for(user):
        before = outage.chatd_stat(tstack, "pbkdf2_runs")
        got, _ = attempt(tstack, fresh_addr(), user, "wrong")
        assert "<not-authorized/>" in got, got
        # the counter moves on the loop when the hash thread's answer is in,
        # which is before the answer is sent
        return outage.chatd_stat(tstack, "pbkdf2_runs") - before

    assert runs_for("frank") == 1
    assert runs_for("nosuchuser") == 1


def test_scram_salt_of_unknown_account_is_stable_and_plausible(tstack):
    tstack.add_user("gina")

    def first(user):
        b = session(tstack, fresh_addr())
        try:
            return dict(kv.split("=", 1) for kv in pw_util.scram_first(b, user).split(","))
        finally:
            b.close()
    known, u1, u2 = first("gina"), first("nosuch2"), first("nosuch2")
    assert u1["s"] == u2["s"] and u1["i"] == u2["i"]
    assert u1["i"] == known["i"] and len(u1["s"]) == len(known["s"])


def test_chat_flows_during_a_wrong_password_burst(tstack):
    pw_h, pw_i = tstack.add_user("hank"), tstack.add_user("ida")
    hank, ida = session(tstack, fresh_addr()), session(tstack, fresh_addr())
    stop = threading.Event()
    errors = []

    def flood(k):
        try:
            n = 0
            while not stop.is_set():
                b = session(tstack, fresh_addr())
                try:
                    for _ in range(4):
                        if stop.is_set():
                            break
                        b.plain(f"flood{k}x{n}", "wrong")
                        n += 1
                finally:
                    b.close()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
    threads = []
    try:
        pw_util.signin_bound(hank, "hank", pw_h)
        pw_util.signin_bound(ida, "ida", pw_i)
        ida.send("<presence xmlns='jabber:client'/>")
        before = outage.chatd_stat(tstack, "pbkdf2_runs")
        threads = [threading.Thread(target=flood, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        outage.wait_until(lambda: outage.chatd_stat(tstack, "pbkdf2_runs") >= before + 8,
                          30, "the wrong-password burst to be hashing")
        hank.send("<message to='ida@localhost' type='chat' xmlns='jabber:client'>"
                  "<body>during the burst</body></message>")
        got = ida.until(r"during the burst", timeout=20)
        assert "from='hank@localhost" in got, got
        assert not stop.is_set()
        # still in progress when the message arrived
        assert all(t.is_alive() for t in threads)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        hank.close()
        ida.close()
    assert not errors, errors
