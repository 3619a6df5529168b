"""Issue 14, mod_bosh side: relay liveness and configuration that fails closed.

- A chatd that stops answering (SIGSTOP: its sockets stay open, so nothing
  but a probe notices) must not park new sessions or held requests: mod_bosh
  PINGs an idle relay connection (BoshRelayPing) and takes the node out of
  service when nothing comes back (BoshRelayPingTimeout). A new session
  then gets a fast 503 with Retry-After; a held request is released (503,
  the client resends its rid). After SIGCONT the node is used again.
- BoshMaxBodySize above what a relay frame can carry is refused by
  `apachectl configtest`, not discovered when chatd drops the relay.
- A graceful restart while Redis maxclients is too low keeps httpd serving
  and logs a warning (a first start still refuses).
"""

import os
import random
import signal
import socket
import subprocess
import time

import pytest

import chatstack
from outage import (RawSession, create_session, creation_body, read_answer,
                    send_request, wait_until)
from signin_util import private_stack

PING_CONF = """
BoshRelayPing 1
BoshRelayPingTimeout 2
"""


@pytest.fixture(scope="module")
def pstack():
    with private_stack("chat97-", httpd_extra=PING_CONF) as st:
        yield st


def timed_post(port, body, timeout):
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        send_request(s, port, body)
        a = read_answer(s)
    return a, time.monotonic() - t0


def test_stopped_chatd_gets_fast_503_and_releases_held(pstack):
    st = pstack
    name = f"rl{random.randint(0, 1 << 30):x}"
    pw = st.add_user(name)
    # Every child talks to chatd before the stop (lazy connects).
    for _ in range(6):
        assert create_session(st.http_port)[0] == "ok"
    s = RawSession(st.http_port, name, pw, "held", wait=30)
    s.rid += 1
    held = socket.create_connection(("127.0.0.1", st.http_port), timeout=40)
    send_request(held, st.http_port, s.body(""))
    time.sleep(0.5)      # let it reach chatd and be held (not a sync point for asserts)
    chatd = st.procs["chatd"]
    os.kill(chatd.pid, signal.SIGSTOP)
    try:
        # The held request comes back within ping + timeout (+ slack), not
        # after BoshMaxWait + 15 s, with a 503 so the client resends.
        t0 = time.monotonic()
        a = read_answer(held)
        took = time.monotonic() - t0
        held.close()
        assert a.status == 503 and took < 15, (a, took)
        # New sessions: a fast 503 with Retry-After, never a parked worker.
        for _ in range(4):
            a, took = timed_post(st.http_port,
                                 creation_body(random.randint(1 << 20, 1 << 40), wait=30),
                                 timeout=20)
            assert a.status == 503, a
            assert int(a.headers.get("retry-after", "0")) > 0, a.headers
            assert took < 8, took
        with open(st.httpd_error_log, errors="replace") as f:
            assert "BOSH00351" in f.read()
        # The session's own requests: 503 (resend later), never a terminate
        # that would end a session chatd still has.
        a, took = timed_post(st.http_port, s.body(""), timeout=20)
        assert a.status == 503 and took < 8, (a, took)
    finally:
        os.kill(chatd.pid, signal.SIGCONT)
    # Back in service by itself once chatd answers again.
    wait_until(lambda: create_session(st.http_port, timeout=20)[0] == "ok", 30,
               "new sessions accepted again after SIGCONT", interval=0.5)
    # ... and the session survived: the resent rid is answered normally.
    a, _ = timed_post(st.http_port, s.body(""), timeout=40)
    assert a.status == 200 and a.body is not None and a.body.get("type") != "terminate", a


def test_max_body_above_relay_frame_refused_by_configtest(pstack):
    st = pstack
    conf = st.httpd_conf + ".big"
    with open(st.httpd_conf) as f, open(conf, "w") as out:
        out.write(f.read() + "\nBoshMaxBodySize 5242880\n")
    r = subprocess.run([chatstack.APACHE_BIN, "-d", st.httpd_root, "-f", conf, "-t"],
                       capture_output=True, text=True)
    assert r.returncode != 0, r.stdout + r.stderr
    assert "BoshMaxBodySize" in r.stderr and "relay" in r.stderr, r.stderr
    # The largest allowed value still passes.
    with open(st.httpd_conf) as f, open(conf, "w") as out:
        out.write(f.read() + "\nBoshMaxBodySize 4128768\n")
    r = subprocess.run([chatstack.APACHE_BIN, "-d", st.httpd_root, "-f", conf, "-t"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_graceful_restart_with_low_maxclients_keeps_serving(pstack):
    st = pstack
    parent = st.procs["httpd"].pid
    # Worst case here is min(64, ServerLimit 4 x 2) + 32 = 40.
    st.redis_cli("CONFIG", "SET", "maxclients", "35")
    try:
        with open(st.httpd_error_log, errors="replace") as f:
            before = len(f.read())
        st.httpd_graceful()

        def warned():
            with open(st.httpd_error_log, errors="replace") as f:
                return "BOSH00350" in f.read()[before:]
        wait_until(warned, 20, "restart warning about maxclients in error_log")
        assert st.procs["httpd"].poll() is None, "httpd exited on graceful restart"
        wait_until(lambda: create_session(st.http_port, timeout=20)[0] == "ok", 20,
                   "sessions after the graceful restart", interval=0.5)
        assert st.procs["httpd"].pid == parent and st.procs["httpd"].poll() is None
    finally:
        st.redis_cli("CONFIG", "SET", "maxclients", "10000")
