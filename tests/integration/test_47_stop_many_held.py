"""Stopping httpd while children of 1000 threads each hold many BOSH requests.

Why (issue 7 follow-up): `bench/run ours idle --users 10000` with the
shipped httpd-conf/bosh-mpm.conf (1000 threads a child, 256 KiB stacks)
ended with httpd children dying of SIGSEGV or being SIGKILLed at the stop.
This replays the stop at the shipped thread and stack sizing (2 children
instead of 20) with as many held requests as the two cores set up quickly,
for graceful-stop, stop, and stop while chatd does not answer at all.

The cause (core dump of a bench child): on an ungraceful stop event's
main thread walks worker_sockets[] closing every client socket
(close_worker_sockets) and only then runs child_stopping. The MPM already
says STOPPING, so a parked request's 1 s tick sent DRAIN in that window;
chatd answered every held request at once, workers finished and their
connection pools were freed by the listener while the main thread still
read their sockets: SIGSEGV in apr_os_sock_get(). Now only child_stopping
starts the drain under event/worker (mod_bosh.c, bosh_child_is_stopping).

Asserted, as an operator or a user would see it: the parent exits by
itself (status 0) within the deadline, every child it had is gone, the
error log has no crash or reclaim line (exit signal, SIGKILL, "still did
not exit"), every held client got chatd's answer (graceful-stop) or a
clean close without an answer (stop: nobody finished inside the close
walk), never a reset or silence; and on stop the error log shows no DRAIN
before the child's last close_worker_sockets line. At 2 x 1000 threads the
crash itself is rare, so that order is what fails on the unfixed module.
"""

import os
import random
import re
import selectors
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import chatstack
from outage import (alive, chatd_stat, creation_body, httpd_children, post,
                    send_request, wait_until)

# holds 1,500 requests at once: alone, after the tests that run side by side (conftest.py)
pytestmark = pytest.mark.serial

THREADS = 1000          # httpd-conf/bosh-mpm.conf: ThreadsPerChild
CHILDREN = 2
HELD = 1500             # of the 2000 workers; the rest serve the creations
STOP_DEADLINE = 20      # the parent's reclaim gives up on children at ~10 s

MPM_CONF = f"""
<IfModule mpm_event_module>
    ServerLimit             {CHILDREN}
    StartServers            {CHILDREN}
    ThreadLimit             {THREADS}
    ThreadsPerChild         {THREADS}
    MaxRequestWorkers       {CHILDREN * THREADS}
    MinSpareThreads         {THREADS}
    MaxSpareThreads         {CHILDREN * THREADS}
    MaxConnectionsPerChild  0
    ThreadStackSize         262144
    AsyncRequestWorkerFactor 8
</IfModule>
# Which thread sent DRAIN, and when event closed the held clients' sockets.
LogLevel info mpm_event:trace8 bosh:debug
"""
CLOSE_LINE = re.compile(r"\[pid (\d+):tid \d+\].* from close_worker_sockets:")
DRAIN_LINE = re.compile(r"\[pid (\d+):tid (\d+)\].*mod_bosh: sent DRAIN")

# error_log lines of a child that crashed or had to be killed.
BAD = re.compile(r"exit signal|Segmentation fault|AH00045|AH00046|"
                 r"still did not exit|SIGKILL|double free|stack smashing")


@pytest.fixture(scope="module")
def st(request):
    if os.environ.get("MPM", "event") != "event":
        pytest.skip("the shipped sizing is for mpm_event")
    root = tempfile.mkdtemp(prefix="chat47-")
    stack = chatstack.Stack(root, mpm="event", foreground=True, httpd_extra=MPM_CONF)
    # TEST47_MOD_BOSH_SO: run against another build (e.g. an older one).
    so = os.environ.get("TEST47_MOD_BOSH_SO")
    saved = chatstack.MOD_BOSH_SO
    if so:
        chatstack.MOD_BOSH_SO = so
    try:
        stack.start()
    finally:
        chatstack.MOD_BOSH_SO = saved
    failed_before = request.session.testsfailed
    yield stack
    stack.stop()
    if request.session.testsfailed == failed_before and not os.environ.get("KEEP_STACK"):
        shutil.rmtree(root, ignore_errors=True)


def ensure_httpd(st):
    p = st.procs.get("httpd")
    if p is not None and p.poll() is None:
        return
    st.procs.pop("httpd", None)
    st.start_httpd(30)


def create(st):
    """One session creation; returns (rid of the creation, sid)."""
    rid = random.randint(1 << 20, 1 << 40)
    a = post(st.http_port, creation_body(rid, wait=60))
    assert a.status == 200 and a.body is not None and a.body.get("sid"), a
    return rid, a.body.get("sid")


def hold_many(st, n):
    """n new sessions, each with its next request held by chatd on its own
    connection. Returns the client sockets."""
    with ThreadPoolExecutor(16) as ex:
        made = list(ex.map(lambda _: create(st), range(n)))
    before = chatd_stat(st, "relay_requests")
    socks = []
    # Spread over one second, as a real population's polls are: a parked
    # request looks at the child once a second (RELAY_TICK_MS), so then
    # some request ticks in any few milliseconds, e.g. while event closes
    # the client sockets at the stop.
    t0 = time.monotonic()
    for i, (rid, sid) in enumerate(made):
        pause = t0 + i / n - time.monotonic()
        if pause > 0:
            time.sleep(pause)       # pacing the load, not waiting for a state
        s = socket.create_connection(("127.0.0.1", st.http_port), timeout=30)
        socks.append(s)
        send_request(s, st.http_port,
                     f"<body rid='{rid + 1}' sid='{sid}' "
                     f"xmlns='http://jabber.org/protocol/httpbind'/>")
    wait_until(lambda: chatd_stat(st, "relay_requests") >= before + n, 30,
               f"chatd holds {n} requests", interval=0.2)
    return socks


def outcomes(socks, deadline):
    """What each held client saw before the deadline: 'http <status>',
    'closed' (EOF, no answer), 'reset' or 'silence'."""
    sel = selectors.DefaultSelector()
    bufs = {}
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        bufs[s] = b""
    seen = {}
    while len(seen) < len(socks) and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=max(0.0, min(1.0, deadline - time.monotonic()))):
            s = key.fileobj
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                seen[s] = "reset"
                sel.unregister(s)
                continue
            except BlockingIOError:
                continue
            bufs[s] += chunk
            if not chunk:
                head = bufs[s].split(b"\r\n", 1)[0]
                seen[s] = ("http " + head.split()[1].decode()) if head.startswith(b"HTTP/") \
                    else "closed"
                sel.unregister(s)
    result = {}
    for s in socks:
        k = seen.get(s, "silence")
        result[k] = result.get(k, 0) + 1
        s.close()
    return result


def stop_and_check(st, how, socks, chatd_stalled=False):
    p = st.procs["httpd"]
    kids = httpd_children(st)
    assert len(kids) == CHILDREN, kids
    log_at = os.path.getsize(st.httpd_error_log)
    chatd = st.procs["chatd"]
    if chatd_stalled:
        os.kill(chatd.pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        subprocess.run(st.httpd_cmd("-k", how), check=True, timeout=10)
        seen = outcomes(socks, t0 + STOP_DEADLINE)
        try:
            rc = p.wait(max(0.1, t0 + STOP_DEADLINE - time.monotonic()))
        except subprocess.TimeoutExpired:
            rc = "still running"
        took = time.monotonic() - t0
    finally:
        if chatd_stalled:
            os.kill(chatd.pid, signal.SIGCONT)
    st.procs.pop("httpd", None)
    if rc == "still running":
        p.kill()
        p.wait()
    with open(st.httpd_error_log, errors="replace") as f:
        f.seek(log_at)
        lines = f.read().splitlines()
    bad = [line for line in lines if BAD.search(line)]
    early = early_drains(lines) if how == "stop" else []
    left = [k for k in kids if alive(k)]
    for k in left:
        os.kill(k, signal.SIGKILL)
    assert not bad, f"{how}: {len(bad)} bad error_log lines:\n" + "\n".join(bad[:10])
    assert rc == 0, f"{how}: httpd parent: {rc} after {took:.1f}s"
    assert not left, f"{how}: children still alive: {left}"
    assert not early, (f"{how}: DRAIN sent while event was still closing the "
                       f"held clients' sockets (the benchmark's crash window):\n"
                       + "\n".join(early[:5]))
    return seen, took


def early_drains(lines):
    """DRAIN lines a child logged before its main thread had finished
    close_worker_sockets(). A DRAIN there makes chatd answer every held
    request while event walks worker_sockets[]: the SIGSEGV of the
    10,000-session benchmark (seen at 20 x 1000 threads; at this scale it
    shows as this order)."""
    last_close = {}
    for i, line in enumerate(lines):
        m = CLOSE_LINE.search(line)
        if m:
            last_close[m.group(1)] = i
    return [line for i, line in enumerate(lines)
            if (m := DRAIN_LINE.search(line)) and i < last_close.get(m.group(1), -1)]


def test_graceful_stop_many_held(st):
    """graceful-stop: chatd answers every held request (DRAIN), each client
    gets its HTTP 200, and the children exit."""
    ensure_httpd(st)
    socks = hold_many(st, HELD)
    seen, took = stop_and_check(st, "graceful-stop", socks)
    assert seen == {"http 200": HELD}, (seen, took)


def test_stop_many_held(st):
    """stop: event closes the client connections at once; each client sees
    an answer or a clean close, and every child exits by itself."""
    ensure_httpd(st)
    socks = hold_many(st, HELD)
    seen, took = stop_and_check(st, "stop", socks)
    # event closes them before mod_bosh may end a held request: an HTTP
    # answer here means a worker finished during close_worker_sockets().
    assert seen == {"closed": HELD}, (seen, took)


def test_stop_many_held_chatd_stalled(st):
    """stop while chatd answers nothing (stopped): the children must not
    wait for chatd's DRAIN answer until the parent SIGKILLs them."""
    ensure_httpd(st)
    socks = hold_many(st, HELD)
    seen, took = stop_and_check(st, "stop", socks, chatd_stalled=True)
    assert seen == {"closed": HELD}, (seen, took)
