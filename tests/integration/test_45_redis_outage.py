"""Replay of the 2012 outage: Redis at maxclients because httpd children
held connections; then Redis down and back under load.

Each MPM gets its own stack with a Redis whose maxclients is low (16), httpd
with more workers than that (prefork: 8 children; event: 4 x 25 threads),
BoshRedisMaxPerChild 2 and BoshRedisMaxTotal 5. A burst of session
creations far larger than the caps runs while CLIENT PAUSE WRITE makes
Redis slow now and then, and a sampler reads CLIENT LIST throughout.
"""

import os
import re
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
import json
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

import chatstack
from clients import BoshClient
from outage import (ClientListSampler, RawSession, bosh_conns, create_session,
                    httpd_children, named_conns, wait_until)

PER_CHILD = 2
MAX_TOTAL = 5
IDLE_S = 2
MAXCLIENTS = 16

MPM_EXTRA = {
    "prefork": """
<IfModule mpm_prefork_module>
    ServerLimit          8
    StartServers         8
    MinSpareServers      8
    MaxSpareServers      8
    MaxRequestWorkers    8
</IfModule>""",
    # A fixed set of 4 x 25: with room to grow, event starts and retires
    # children around the burst, and the per-child status rows would race
    # with the test's own list of children.
    "event": """
<IfModule mpm_event_module>
    ServerLimit          4
    StartServers         4
    ThreadsPerChild     25
    MaxRequestWorkers  100
    MinSpareThreads     25
    MaxSpareThreads    100
</IfModule>""",
}

POOL_CONF = f"""
BoshRedisMaxPerChild {PER_CHILD}
BoshRedisMaxTotal {MAX_TOTAL}
BoshRedisIdleTimeout {IDLE_S}
BoshRedisAcquireTimeout 300
BoshRedisReserve 6
<Location "/server-status">
    SetHandler server-status
    Require ip 127.0.0.1
</Location>
"""


def make_stack(mpm, httpd_extra="", redis_extra="", start=True):
    root = tempfile.mkdtemp(prefix=f"chat45-{mpm}-")
    st = chatstack.Stack(root, mpm=mpm, foreground=True,
                         httpd_extra=MPM_EXTRA[mpm] + POOL_CONF + httpd_extra,
                         redis_extra=f"maxclients {MAXCLIENTS}\n" + redis_extra)
    if start:
        st.start()
    return st


def finish(st, failed):
    st.stop()
    if not failed and not os.environ.get("KEEP_STACK"):
        shutil.rmtree(st.root, ignore_errors=True)


@pytest.fixture(scope="module", params=["prefork", "event"])
def ostack(request):
    st = make_stack(request.param)
    failed_before = request.session.testsfailed
    yield st
    finish(st, request.session.testsfailed > failed_before)


def burst(port, n, threads):
    with ThreadPoolExecutor(threads) as ex:
        t0 = time.monotonic()
        futs = [ex.submit(lambda: (create_session(port), time.monotonic())) for _ in range(n)]
        return [(f.result()[0], f.result()[1] - t0) for f in futs]


def test_burst_stays_under_caps_and_idle_closes_all(ostack):
    st = ostack
    slow = threading.Event()

    def make_redis_slow():
        # CLIENT PAUSE WRITE holds every admission script (EVAL) while
        # CLIENT LIST and connection set-up still run: connections stay in
        # use, so callers queue on the caps as they would on a slow Redis.
        while not slow.is_set():
            st.redis_cli("CLIENT", "PAUSE", "150", "WRITE")
            slow.wait(0.3)

    with ClientListSampler(st.redis_sock) as sampler:
        pauser = threading.Thread(target=make_redis_slow, daemon=True)
        pauser.start()
        try:
            results = burst(st.http_port, 300, 48)
        finally:
            slow.set()
            pauser.join(5)

        kinds = [r[0][0] for r in results]
        assert set(kinds) <= {"ok", "503"}, [r for r in results if r[0][0] not in ("ok", "503")][:3]
        refused = [r for r in results if r[0][0] == "503"]
        for (kind, retry_after, ans), _ in refused:
            assert retry_after and retry_after.isdigit(), ans
            assert ans.raw.startswith(b"sign-in"), ans

        # Retried (as a client would after Retry-After), every one gets in.
        missing = len(refused)
        deadline = time.monotonic() + 30
        while missing and time.monotonic() < deadline:
            again = burst(st.http_port, missing, 8)
            missing = sum(1 for r in again if r[0][0] != "ok")
        assert missing == 0, f"{missing} sessions never got in"

    assert sampler.samples > 20
    assert sampler.max_total <= MAX_TOTAL, sampler.worst
    assert sampler.max_per_pid <= PER_CHILD, sampler.worst
    # The burst did push the pool to its cap (else this proves nothing).
    assert sampler.max_total == MAX_TOTAL, (sampler.max_total, sampler.worst)
    # Never near maxclients: Redis never refused anyone.
    assert "max number of clients" not in open(st.httpd_error_log).read()

    # The counters, per child and in total, on both status pages. Any
    # child's page shows every child (shared memory).
    kids = wait_until(lambda: httpd_children(st) if len(httpd_children(st)) >= (
        8 if st.mpm == "prefork" else 4) else None, 10, "all children up")
    with urllib.request.urlopen(st.status_url + "?json", timeout=5) as r:
        js = json.loads(r.read())
    assert {c["pid"] for c in js["redis_children"]} == set(kids), (js, kids)
    assert js["redis_all"]["children"] == len(kids)
    assert js["redis_all"]["waits"] > 0, js          # the burst made callers queue
    assert js["redis_all"]["connections"] <= MAX_TOTAL
    with urllib.request.urlopen(st.base_url + "server-status?auto", timeout=5) as r:
        auto = dict(l.split(": ", 1) for l in r.read().decode().splitlines() if ": " in l)
    assert int(auto["BoshRedisChildren"]) == len(kids), auto
    assert int(auto["BoshRedisMaxTotal"]) == MAX_TOTAL, auto
    assert int(auto["BoshRedisWaits"]) > 0, auto
    for key in ("BoshRedisInUse", "BoshRedisIdle", "BoshRedisAcquireTimeouts",
                "BoshRedisFailures", "BoshRedisConnections"):
        assert auto[key].isdigit(), auto

    # After BoshRedisIdleTimeout, an idle httpd holds no Redis connection.
    wait_until(lambda: bosh_conns(st) == {}, IDLE_S + 6, "mod_bosh connections closed")


def test_redis_down_open_sessions_unaffected(ostack):
    st = ostack
    tag = secrets.token_hex(3)
    users = {f"{n}{tag}": None for n in ("a", "b", "c")}
    for name in users:
        users[name] = st.add_user(name)
    a_name, b_name, c_name = users
    chatd_baseline = len(named_conns(st, "chatd:"))
    assert chatd_baseline > 0
    log_dir = os.path.join(st.root, "clients")
    os.makedirs(log_dir, exist_ok=True)
    alice = BoshClient(st.bosh_url, f"{a_name}@localhost/o", users[a_name], log_dir=log_dir)
    bob = BoshClient(st.bosh_url, f"{b_name}@localhost/o", users[b_name], log_dir=log_dir)
    try:
        a_jid, b_jid = alice.connect(), bob.connect()

        # A persistent Redis (users survive its restart): snapshot, stop.
        st.redis_cli("SAVE")
        assert st._stop_one("redis", st.redis_pidfile) == 0

        # Open sessions keep chatting: their requests never touch Redis.
        for i in range(3):
            a0, b0 = len(alice.events), len(bob.events)
            text = f"redis is down {i} {tag}"
            alice.send("chat", to=b_jid, body=text)
            bob.wait_stanza(start=b0, name="message", body=text, timeout=15)
            bob.send("chat", to=a_jid, body="re: " + text)
            alice.wait_stanza(start=a0, name="message", body="re: " + text, timeout=15)

        # New sessions: a clear 503 with Retry-After, quickly.
        for _ in range(5):
            t0 = time.monotonic()
            kind, retry_after, ans = create_session(st.http_port, timeout=15)
            took = time.monotonic() - t0
            assert kind == "503", ans
            assert retry_after and retry_after.isdigit(), ans
            assert took < 5, f"503 took {took:.1f}s"
        assert "mod_bosh: Redis unix:" + st.redis_sock in open(st.httpd_error_log).read()

        # Redis back: sign-ins work again by themselves, no restart. Each
        # child retries after its own back-off (at most 2 s), so soon every
        # child admits: 16 creations in a row all succeed.
        st.start_redis()
        wait_until(lambda: len(named_conns(st, "chatd:")) == chatd_baseline, 15,
                   "chatd Redis connections back to baseline")
        wait_until(lambda: all(create_session(st.http_port)[0] == "ok" for _ in range(16)),
                   15, "every child creating sessions after Redis came back",
                   interval=0.2)
        carol = RawSession(st.http_port, c_name, users[c_name], "raw")
        assert carol.jid.startswith(f"{c_name}@localhost/")
        # ... and the sessions opened before the outage are still the same.
        a0 = len(alice.events)
        carol.chat(a_jid, f"hello after redis {tag}")
        alice.wait_stanza(start=a0, name="message", body=f"hello after redis {tag}")
        for c in (alice, bob):
            ends = [e for e in c.events if e.get("event") == "status"
                    and e["status"] in ("CONNFAIL", "DISCONNECTED", "DISCONNECTING")]
            assert not ends, c.dump()
        # Counts back to baseline: mod_bosh within caps.
        per_pid = bosh_conns(st)
        assert sum(per_pid.values()) <= MAX_TOTAL, per_pid
        assert max(per_pid.values(), default=0) <= PER_CHILD, per_pid
        assert len(named_conns(st, "chatd:")) == chatd_baseline
    finally:
        alice.close()
        bob.close()


def run_httpd_once(st, timeout=20):
    """Start httpd in the foreground; returns its exit status, or None if
    it is still running after it served a request (then it is stopped)."""
    proc = subprocess.Popen(st.httpd_cmd("-DFOREGROUND"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT, start_new_session=True)
    st.procs["httpd"] = proc
    try:
        chatstack.wait_for("httpd", lambda: chatstack.http_answers(st.base_url), timeout,
                           alive=lambda: proc.poll() is None)
    except chatstack.StackError:
        pass
    if proc.poll() is not None:
        st.procs.pop("httpd")
        return proc.returncode
    return None


@pytest.mark.parametrize("config_cmd", ["CONFIG", "renamed"])
def test_startup_check_refuses_worst_case_over_maxclients(config_cmd):
    """min(BoshRedisMaxTotal 20, ServerLimit 8 x BoshRedisMaxPerChild 2) + 6
    reserved = 22 > maxclients 16: httpd must not start, and must say both
    numbers. With CONFIG disabled (managed Redis) the check reads INFO."""
    redis_extra = 'rename-command CONFIG ""\n' if config_cmd == "renamed" else ""
    st = make_stack("prefork", httpd_extra="BoshRedisMaxTotal 20\n",
                    redis_extra=redis_extra, start=False)
    failed = True
    try:
        st.write_configs()
        st.start_redis()
        if config_cmd == "renamed":
            assert "unknown command" in st.redis_cli("CONFIG", "GET", "maxclients")
        rc = run_httpd_once(st)
        log = open(st.httpd_error_log).read()
        assert rc not in (None, 0), "httpd started although Redis maxclients is too low"
        lines = [l for l in log.splitlines() if "maxclients" in l]
        assert any(re.search(r"maxclients is 16\b.*\b22 connections", l) for l in lines), log

        # BoshRedisCheck warn: it starts, and still says both numbers.
        with open(st.httpd_conf, "a") as f:
            f.write("BoshRedisCheck warn\n")
        rc = run_httpd_once(st)
        assert rc is None, open(st.httpd_error_log).read()
        log = open(st.httpd_error_log).read()
        assert len(re.findall(r"\[[^]]*warn\].*maxclients is 16\b.*\b22 connections", log)) == 1, log
        failed = False
    finally:
        finish(st, failed)
