"""Teardown of httpd children while BOSH requests are held: graceful,
kill -9 of a child, graceful-stop; and chatd killed and restarted.

What a user would see is checked on the wire (raw HTTP, each request on
its own TCP connection so the test knows which child holds it) and in
Redis CLIENT LIST (mod_bosh:<host>:<pid>:<n> names every connection).
"""

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

import chatstack
from outage import (RawSession, alive, bosh_conns, chatd_stat, child_serving,
                    create_session, httpd_children, named_conns, read_answer,
                    send_request, wait_until)

MPM_EXTRA = {
    "prefork": """
<IfModule mpm_prefork_module>
    StartServers         4
    MinSpareServers      4
    MaxSpareServers      4
    MaxRequestWorkers    4
</IfModule>""",
    "event": "",
}

POOL_CONF = """
BoshRedisMaxPerChild 2
BoshRedisMaxTotal 8
BoshRedisIdleTimeout 60
"""


@pytest.fixture(scope="module", params=["prefork", "event"])
def tstack(request):
    root = tempfile.mkdtemp(prefix=f"chat46-{request.param}-")
    st = chatstack.Stack(root, mpm=request.param, foreground=True,
                         httpd_extra=MPM_EXTRA[request.param] + POOL_CONF)
    st.start()
    failed_before = request.session.testsfailed
    yield st
    st.stop()
    if request.session.testsfailed == failed_before and not os.environ.get("KEEP_STACK"):
        shutil.rmtree(root, ignore_errors=True)


def warm_up(st, n=40):
    """Session creations from several connections at once, so that most
    children hold Redis connections (idle timeout 60 s)."""
    with ThreadPoolExecutor(8) as ex:
        kinds = list(ex.map(lambda _: create_session(st.http_port)[0], range(n)))
    assert "other" not in kinds


def hold(st, session):
    """Send the session's next rid (empty body) on a fresh connection and
    wait until chatd holds it. Returns (socket, rid, httpd child pid)."""
    before = chatd_stat(st, "relay_requests")
    session.rid += 1
    sock = socket.create_connection(("127.0.0.1", st.http_port), timeout=30)
    send_request(sock, st.http_port, session.body(""))
    wait_until(lambda: chatd_stat(st, "relay_requests") > before, 10, "request relayed")
    pid = wait_until(lambda: child_serving(st, sock), 5, "child holding the request")
    return sock, session.rid, pid


def users(st, *names):
    tag = secrets.token_hex(3)
    return {n: (f"{n}{tag}", st.add_user(f"{n}{tag}")) for n in names}


def status_json(st):
    with urllib.request.urlopen(st.status_url + "?json", timeout=5) as r:
        return json.loads(r.read())


def test_graceful_answers_held_requests_and_drops_connections(tstack):
    st = tstack
    u = users(st, "g")
    s = RawSession(st.http_port, *u["g"], "graceful", wait=30)
    warm_up(st)
    sock, rid, pid = hold(st, s)
    old = httpd_children(st)
    assert pid in old and bosh_conns(st), bosh_conns(st)

    t0 = time.monotonic()
    st.httpd_graceful()
    ans = read_answer(sock)        # socket timeout 30 s = the BOSH wait
    took = time.monotonic() - t0
    sock.close()
    # Answered at once with an empty body (not at wait's end, not terminate).
    assert ans.status == 200 and ans.body is not None, ans
    assert ans.body.get("type") is None and len(ans.body) == 0, ans
    assert took < 5, f"held request answered after {took:.1f}s"

    # Old generation gone, and with it every Redis connection it had.
    wait_until(lambda: not any(alive(p) for p in old), 10, "old children exited")
    leftover = set(bosh_conns(st)) & set(old)
    assert not leftover, f"old children's Redis connections still open: {leftover}"

    # The session carries on on a new child (the client re-polls).
    s.send(f"<iq type='get' id='ping1' xmlns='jabber:client'><ping xmlns='urn:xmpp:ping'/></iq>")
    s._until(lambda: s._find("{jabber:client}iq", id="ping1"), "ping result")


def test_kill9_of_child_loses_no_message(tstack):
    st = tstack
    u = users(st, "a", "b")
    alice = RawSession(st.http_port, *u["a"], "k9", wait=30)
    bob = RawSession(st.http_port, *u["b"], "k9", wait=1)   # its sends return fast
    warm_up(st)
    sock, rid, pid = hold(st, alice)

    # Freeze the child, let chatd hand it the message, then kill it: the
    # answer with the message dies with the child.
    os.kill(pid, signal.SIGSTOP)
    text = f"survives kill -9 {secrets.token_hex(3)}"
    out0 = chatd_stat(st, "stanzas_out")
    bob.chat(alice.jid, text)
    wait_until(lambda: chatd_stat(st, "stanzas_out") > out0, 10, "message handed over")
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(OSError):       # ConnectionError, reset: no answer
        read_answer(sock)
    sock.close()

    # The client resends the same rid (as Strophe does after a network
    # error) and gets the message, exactly once.
    again = alice._answer(read_once(st, alice.body("", rid=rid)))
    assert any(e.findtext("{jabber:client}body") == text for e in again.body), again
    marker = f"marker {secrets.token_hex(3)}"
    bob.chat(alice.jid, marker)
    alice._until(lambda: alice.messages(marker)[0] if alice.messages(marker) else None,
                 "marker message")
    assert len(alice.messages(text)) == 1, [e.findtext("{jabber:client}body")
                                            for e in alice.stanzas]

    # The dead child's connections are gone and its count is taken back.
    wait_until(lambda: pid not in bosh_conns(st), 5, "killed child's connections gone")

    def cap_matches():
        conns = sum(bosh_conns(st).values())
        total = status_json(st)["redis"]["server_total"]
        return total == conns
    wait_until(cap_matches, 10, "BoshRedisMaxTotal count equal to CLIENT LIST")


def read_once(st, body):
    with socket.create_connection(("127.0.0.1", st.http_port), timeout=30) as s:
        send_request(s, st.http_port, body)
        return read_answer(s)


def test_chatd_killed_and_restarted_counts_back_to_baseline(tstack):
    st = tstack
    warm_up(st)
    baseline = len(named_conns(st, "chatd:"))
    assert baseline > 0
    old_chatd = st.procs["chatd"].pid
    st.procs["chatd"].kill()
    st.procs.pop("chatd").wait(10)
    # Without chatd, new sessions fail fast (no hang).
    kind, _, ans = create_session(st.http_port, timeout=15)
    assert kind != "ok", ans
    st.start_chatd()
    # Every child reconnects by itself once its back-off (at most 5 s) runs
    # out, with no request to prompt it: otherwise a child whose connects
    # failed during the outage would refuse the next sign-in that reaches
    # it (remote-connection-failed) although chatd is back.
    children = len(httpd_children(st))
    wait_until(lambda: chatd_stat(st, "relay_conns") >= children, 15,
               "every httpd child reconnected to chatd without traffic",
               interval=0.2)
    assert all(create_session(st.http_port)[0] == "ok" for _ in range(8))
    wait_until(lambda: len(named_conns(st, "chatd:")) == baseline, 10,
               "chatd Redis connections back to baseline")
    assert not [c for c in named_conns(st, "chatd:") if f":{old_chatd}:" in c["name"]]
    per_pid = bosh_conns(st)
    assert sum(per_pid.values()) <= 8 and max(per_pid.values(), default=0) <= 2, per_pid


def test_graceful_stop_with_held_request(tstack):
    """Last: it stops httpd. No GracefulShutdownTimeout, so a held request
    that kept a child alive would keep httpd up for the whole BOSH wait."""
    st = tstack
    u = users(st, "s")
    s = RawSession(st.http_port, *u["s"], "stop", wait=30)
    warm_up(st)
    sock, rid, pid = hold(st, s)
    assert bosh_conns(st)
    t0 = time.monotonic()
    st.procs["httpd"].send_signal(signal.SIGWINCH)    # = apache2 -k graceful-stop
    ans = read_answer(sock)
    sock.close()
    assert ans.status == 200 and ans.body is not None and len(ans.body) == 0, ans
    assert time.monotonic() - t0 < 5
    st.procs["httpd"].wait(10)
    st.procs.pop("httpd")
    assert bosh_conns(st) == {}


HELD_STOP_MPM = {
    "event": """
<IfModule mpm_event_module>
    StartServers 4
    ServerLimit 4
    ThreadsPerChild 50
    MaxRequestWorkers 200
    MinSpareThreads 10
    MaxSpareThreads 200
</IfModule>""",
    "prefork": """
<IfModule mpm_prefork_module>
    StartServers 110
    MinSpareServers 110
    MaxSpareServers 120
    ServerLimit 120
    MaxRequestWorkers 120
</IfModule>
BoshRedisMaxTotal 300""",
}


@pytest.mark.parametrize("mpm", ["event", "prefork"])
def test_ungraceful_stop_with_many_held_requests(mpm):
    """apache2 -k stop while 100 requests are parked and chatd does not
    answer (stopped): every child must exit on its own, well before the
    parent's reclaim sends SIGKILL (9 s), and none may die of a signal."""
    from outage import creation_body, post
    root = tempfile.mkdtemp(prefix=f"chat46u-{mpm}-")
    st = chatstack.Stack(root, mpm=mpm, foreground=True,
                         httpd_extra=HELD_STOP_MPM[mpm])
    st.start()
    socks = []
    try:
        rids = []
        for _ in range(100):
            rid = secrets.randbelow(1 << 40) + (1 << 20)
            a = post(st.http_port, creation_body(rid))
            assert a.status == 200 and a.body is not None, a
            rids.append((rid, a.body.get("sid")))
        before = chatd_stat(st, "relay_requests")
        for rid, sid in rids:
            s = socket.create_connection(("127.0.0.1", st.http_port), timeout=30)
            send_request(s, st.http_port, f"<body rid='{rid + 1}' sid='{sid}' "
                         "xmlns='http://jabber.org/protocol/httpbind'/>")
            socks.append(s)
        wait_until(lambda: chatd_stat(st, "relay_requests") >= before + 100, 20,
                   "100 requests held by chatd")
        chatd = st.procs["chatd"]
        chatd.send_signal(signal.SIGSTOP)          # DRAIN goes unanswered
        try:
            t0 = time.monotonic()
            subprocess.run(st.httpd_cmd("-k", "stop"), check=True, capture_output=True)
            st.procs["httpd"].wait(20)
            took = time.monotonic() - t0
        finally:
            chatd.send_signal(signal.SIGCONT)
        st.procs.pop("httpd")
        with open(st.httpd_error_log) as f:
            log = f.read()
        bad = [l for l in log.splitlines()
               if "AH00052" in l or "exit signal" in l or "SIGKILL" in l]
        assert bad == [], "\n".join(bad[:20])
        assert took < 8, f"httpd took {took:.1f}s to stop"
    finally:
        for s in socks:
            s.close()
        st.stop()
    shutil.rmtree(root, ignore_errors=True)
