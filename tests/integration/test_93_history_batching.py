"""Room history reaches Redis in batches, off the message path (issue 7).

Why: the architecture promises no Redis command on the path of a chat
message. chatd keeps a room's history in memory and writes the new entries
of each room at most once a second (one EVAL per room), when the room
empties, and on SIGTERM. What a user sees must not change: the history is
in Redis soon after, and a restarted chatd replays it on join.

Both tests use a private stack (the second restarts chatd), and slixmpp on
the native port: the behaviour under test is in chatd's MUC, not in a
transport.
"""
import secrets
import shutil
import tempfile
import time

import pytest

import chatstack
import outage
from native_client import NativeClient


def wait_for(pred, what, timeout=15):
    return outage.wait_until(pred, timeout, what)


def commandstats(st):
    """{command: calls} from INFO commandstats."""
    out = {}
    for line in st.redis_cli("INFO", "commandstats").splitlines():
        if line.startswith("cmdstat_"):
            name, rest = line[len("cmdstat_"):].split(":", 1)
            out[name] = int(rest.split("calls=", 1)[1].split(",", 1)[0])
    return out


@pytest.fixture
def private_stack():
    root = tempfile.mkdtemp(prefix="chathist-")
    st = chatstack.Stack(root, foreground=True)
    started = []
    try:
        st.start(timeout=60)

        def client(tag):
            user = f"{tag}{secrets.token_hex(3)}"
            c = NativeClient("127.0.0.1", st.xmpp_port, f"{user}@{st.domain}/h",
                             st.add_user(user), mech="SCRAM-SHA-256")
            started.append(c)
            c.connect()
            return c
        yield st, client
    finally:
        for c in started:
            try:
                c.close()
            except Exception:
                pass
        st.stop()
        shutil.rmtree(root, ignore_errors=True)


def join(c, room, nick, **kw):
    mark = len(c.events)
    c.send("join", room=room, nick=nick, **kw)
    c.wait_stanza(start=mark, name="presence", **{"from": f"{room}/{nick}"})
    return mark


def test_burst_costs_one_write_per_room_per_second(private_stack):
    st, client = private_stack
    a, b = client("ba"), client("bb")
    room = f"r{secrets.token_hex(4)}@{st.muc_domain}"
    join(a, room, "anna")
    b_mark = join(b, room, "bert")
    before = commandstats(st)
    said = [f"burst {i} {secrets.token_hex(2)}" for i in range(60)]
    t0 = time.monotonic()
    for s in said:
        a.send("groupchat", to=room, body=s)
    b.wait_stanza(start=b_mark, name="message", body=said[-1], what="last of the burst")
    key = f"chat:history:{room}"
    wait_for(lambda: said[-1] in st.redis_cli("LINDEX", key, "0"), "burst in Redis")
    elapsed = time.monotonic() - t0
    after = commandstats(st)
    evals = after.get("eval", 0) - before.get("eval", 0)
    lpush = after.get("lpush", 0) - before.get("lpush", 0)
    # one history write per room per second (+1 for a partial second), not 60
    assert evals <= int(elapsed) + 2, (evals, elapsed)
    assert lpush <= int(elapsed) + 2, (lpush, elapsed)
    # the ring in Redis: the newest 20 (muc_history), newest first
    assert st.redis_cli("LLEN", key) == "20"
    stored = st.redis_cli("LRANGE", key, "0", "-1")
    for i, s in enumerate(reversed(said[-20:])):
        assert s in stored.splitlines()[i], (i, s)


def test_sigterm_writes_history_and_restart_replays_it(private_stack):
    st, client = private_stack
    a = client("ra")
    room = f"r{secrets.token_hex(4)}@{st.muc_domain}"
    a_mark = join(a, room, "anna")
    said = [f"last words {i} {secrets.token_hex(2)}" for i in range(5)]
    for s in said:
        a.send("groupchat", to=room, body=s)
    a.wait_stanza(start=a_mark, name="message", body=said[-1])
    # SIGTERM right away, inside the batching interval: the shutdown writes
    status = st._stop_one("chatd", st.chatd_pidfile, timeout=30)
    assert status == 0, st.logs_tail(20)
    key = f"chat:history:{room}"
    stored = st.redis_cli("LRANGE", key, "0", "-1").splitlines()
    assert len(stored) == len(said), stored
    assert said[-1] in stored[0] and said[0] in stored[-1], stored

    st.start_chatd(30)
    b = client("rb")
    b_mark = join(b, room, "bert", maxstanzas=10)
    b.wait_stanza(start=b_mark, name="message", body=said[-1], what="history after restart")
    hist = [e["body"] for e in b.stanzas(start=b_mark, name="message", type="groupchat")
            if e.get("body")]
    assert hist == said, hist
