"""Issue 14, chatd side: one misbehaving native client cannot hold or hurt
the loop or other users.

- A connection that never signs in is closed with the stream error
  connection-timeout after c2s_auth_timeout.
- Out of descriptors (chatd under a low RLIMIT_NOFILE), accept fails; the
  loop must not spin on the ready listener, and accepts again once
  descriptors are free.
- A client that stops answering (half-open: it neither reads nor writes)
  is pinged (XEP-0199), closed, and its room sees it leave.
- Flood control: stanzas over stanza_rate get <policy-violation/> (wait);
  a sustained flood ends the stream with policy-violation; a big-message
  sender cannot push a slow room occupant over max_output.
"""

import os
import random
import socket
import time

import pytest

from outage import wait_until
from raw_native import NS_CLIENT, NS_STANZAS, HEADER, RawNative
from signin_util import private_stack

MUC = "conference.localhost"

CONF = {
    "c2s_auth_timeout": "2",
    "c2s_ping_idle": "2",
    "c2s_ping_timeout": "2",
    "stanza_rate": "5",
    "stanza_burst": "10",
    "stanza_flood_close": "40",
}


@pytest.fixture(scope="module")
def nstack():
    with private_stack("chat98-", chatd_extra=CONF) as st:
        yield st


def user(st, prefix):
    name = f"{prefix}{random.randint(0, 1 << 30):x}"
    return name, st.add_user(name)


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_silent_connection_closed_with_connection_timeout(nstack):
    st = nstack
    # Sends nothing at all.
    c = RawNative(st.xmpp_port)
    c.wait_closed(timeout=15)
    assert c.stream_error == "connection-timeout", [e.tag for e in c.stanzas]
    # Opens a stream but never authenticates.
    c2 = RawNative(st.xmpp_port)
    c2.open_stream()
    c2.wait_closed(timeout=15)
    assert c2.stream_error == "connection-timeout"
    c.close()
    c2.close()


def test_native_sockets_have_tcp_keepalive(nstack):
    """c2s_keepalive: chatd's side of a native connection runs a keepalive
    timer (what `ss -o` shows), so a peer that vanished without a FIN is
    found by the kernel even when the server has nothing to send."""
    st = nstack
    c = RawNative(st.xmpp_port)
    cport = c.sock.getsockname()[1]
    import subprocess
    out = subprocess.run(["ss", "-tnoH", "state", "established",
                          f"( sport = :{st.xmpp_port} and dport = :{cport} )"],
                         capture_output=True, text=True).stdout
    c.close()
    assert "keepalive" in out, out


def test_half_open_client_is_pinged_and_removed(nstack):
    st = nstack
    room = f"net98-{random.randint(0, 1 << 30):x}@{MUC}"
    ua = user(st, "pa")
    a = RawNative(st.xmpp_port).login(*ua, resource="a")
    b = RawNative(st.xmpp_port).login(*user(st, "pb"), resource="b")
    a.presence()
    b.presence()
    b.join(room, "bob")
    a.join(room, "alice")
    mark = len(b.stanzas)
    # b stays responsive: it answers pings (any input counts).
    deadline = time.monotonic() + 20
    gone = None
    while time.monotonic() < deadline and gone is None:
        b.pump(0.5)
        for el in b.stanzas:
            if (el.tag == f"{{{NS_CLIENT}}}iq" and el.get("type") == "get"
                    and el.find("{urn:xmpp:ping}ping") is not None and not el.get("answered")):
                el.set("answered", "1")
                b.send(f"<iq type='result' id='{el.get('id')}' to='{el.get('from')}'/>")
        for el in b.stanzas[mark:]:
            if (el.tag == f"{{{NS_CLIENT}}}presence" and el.get("type") == "unavailable"
                    and el.get("from") == f"{room}/alice"):
                gone = el
    # a never read nor wrote after joining: chatd pinged it, got nothing,
    # closed it, and the room told b.
    assert gone is not None, [(e.tag, e.get("from"), e.get("type")) for e in b.stanzas[mark:]]
    assert not b.closed
    a.close()
    # Messages to a now go to offline storage, not into the dead socket.
    b.chat(f"{ua[0]}@localhost", "while you were gone")
    b.pump(0.5)
    a2 = RawNative(st.xmpp_port).login(*ua, resource="a2")
    a2.presence()
    a2.wait(lambda e: e.tag == f"{{{NS_CLIENT}}}message"
            and e.findtext(f"{{{NS_CLIENT}}}body") == "while you were gone", 15,
            "offline message after the ping timeout")
    a2.close()
    b.close()


def test_flood_gets_policy_violation_then_stream_error(nstack):
    st = nstack
    a = RawNative(st.xmpp_port).login(*user(st, "fa"), resource="a")
    b = RawNative(st.xmpp_port).login(*user(st, "fb"), resource="b")
    a.presence()
    b.presence()
    n = len(a.stanzas)
    a.send("".join(f"<message to='{b.jid}' type='chat' id='m{i}'><body>x{i}</body></message>"
                   for i in range(30)))
    err = a.wait(lambda e: e.tag == f"{{{NS_CLIENT}}}message" and e.get("type") == "error",
                 15, "policy-violation error", start=n)
    assert err.find(f".//{{{NS_STANZAS}}}policy-violation") is not None
    assert err.find(f"{{{NS_CLIENT}}}error").get("type") == "wait"
    # b got the burst, not all 30.
    time.sleep(0.5)    # settle: count what arrived (the assert is an upper bound)
    b.pump(0.5)
    got = [x for x in b.bodies() if x.startswith("x")]
    assert 5 <= len(got) < 30, got
    # A sustained flood: the stream is closed with policy-violation.
    a.send("".join(f"<message to='{b.jid}' type='chat'><body>y{i}</body></message>"
                   for i in range(100)))
    a.wait_closed(15)
    assert a.stream_error == "policy-violation"
    a.close()
    b.close()


def test_big_room_messages_do_not_disconnect_slow_occupant(nstack):
    st = nstack
    room = f"big98-{random.randint(0, 1 << 30):x}@{MUC}"
    sender = RawNative(st.xmpp_port).login(*user(st, "bs"), resource="s")
    slow = RawNative(st.xmpp_port, rcvbuf=4096).login(*user(st, "bl"), resource="l")
    sender.presence()
    slow.presence()
    sender.join(room, "sender")
    slow.join(room, "slow")
    mark = len(sender.stanzas)
    big = "z" * 200_000
    for i in range(20):          # 4 MB into a room whose occupant reads nothing
        sender.groupchat(room, f"{i}:{big}")
        sender.pump(0.05)
    sender.wait(lambda e: e.tag == f"{{{NS_CLIENT}}}message" and e.get("type") == "error",
                15, "sender refused (byte_rate)", start=mark)
    # The slow occupant is still connected: it reads what was queued and
    # then receives a new message from someone else.
    other = RawNative(st.xmpp_port).login(*user(st, "bo"), resource="o")
    other.presence()
    other.join(room, "other")
    other.groupchat(room, "still-there")
    slow.wait(lambda e: e.tag == f"{{{NS_CLIENT}}}message"
              and (e.findtext(f"{{{NS_CLIENT}}}body") or "") == "still-there", 60,
              "message after the big burst")
    assert not slow.closed
    for c in (sender, slow, other):
        c.close()


def test_out_of_descriptors_loop_does_not_spin():
    conf = dict(CONF, c2s_auth_timeout="30")
    with private_stack("chat98fd-", chatd_extra=conf,
                       chatd_wrapper=["prlimit", "--nofile=64:64"]) as st:
        pid = st.procs["chatd"].pid
        socks = []
        try:
            for _ in range(120):           # well past 64 descriptors
                socks.append(socket.create_connection(("127.0.0.1", st.xmpp_port), timeout=5))
            time.sleep(1)                  # let chatd hit EMFILE (then measure)
            t0, c0 = time.monotonic(), cpu_seconds(pid)
            time.sleep(3)
            used = (cpu_seconds(pid) - c0) / (time.monotonic() - t0)
            assert used < 0.05, f"chatd used {used:.0%} CPU while out of descriptors"
        finally:
            for s in socks:
                s.close()
        # Accepting again once descriptors are free: a stream opens.
        def stream_opens():
            try:
                with socket.create_connection(("127.0.0.1", st.xmpp_port), timeout=3) as s:
                    s.sendall(HEADER.format(domain="localhost").encode())
                    data = b""
                    while b"features" not in data:
                        chunk = s.recv(4096)
                        if not chunk:
                            return False
                        data += chunk
                    return True
            except OSError:
                return False
        wait_until(stream_opens, 30, "a new native stream after the sockets closed",
                   interval=0.5)
        # Logged once per episode (the backlog drains in a few of them),
        # not once per failed accept.
        with open(st.chatd_log, errors="replace") as f:
            logged = f.read().count("BOSH00355")
        paused = int(dict(l.split(" ", 1) for l in
                          st.chatctl("stats").stdout.splitlines())["accept_paused"])
        assert 1 <= logged <= 5 and paused >= logged, (logged, paused)
