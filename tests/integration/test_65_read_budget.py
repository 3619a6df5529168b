"""Issue 14, "no read budget per loop turn": one native socket with a lot of
buffered input must not monopolise chatd's single event loop.

c2s_read_budget caps what one readable event consumes; the loop then serves
the other ready sockets and comes back (epoll is level-triggered). Without
the cap (c2s_read_budget 0, or chatd before the fix) chatd read the
flooding socket until EAGAIN and handled every stanza in it before looking
at anyone else.

The test asserts ORDER, not time. Alice pipelines a batch of N chat messages
to Bob (~1.9 MB, about 29 times the budget) without reading; Bob sends one
ping after the first quarter of the batch is sent and before the rest is.
Bob's stream is a single ordered record of what chatd did: alice's messages and the pong are appended to Bob's output in
the order chatd handled them. With the budget the pong comes out while most
of alice's batch is still to come; with an unbounded read it comes after
all N.
"""

import random
import socket
import time

import pytest

from raw_native import NS_CLIENT, RawNative
from signin_util import private_stack

N = 20000                 # ~1.9 MB of input: about 29 times the budget
BUDGET = 65536

CONF = {
    "c2s_read_budget": str(BUDGET),
    # Flood control off: the buckets would refuse most of the batch and
    # the test is about the loop, not the limiter.
    "stanza_rate": "0",
    "byte_rate": "0",
    # Bob reads only after the batch is in; chatd holds his output.
    "max_output": str(64 << 20),
}


@pytest.fixture(scope="module")
def bstack():
    with private_stack("chat98rb-", chatd_extra=CONF) as st:
        yield st


def user(st, prefix):
    name = f"{prefix}{random.randint(0, 1 << 30):x}"
    return name, st.add_user(name)


def test_flooding_socket_does_not_hold_the_loop(bstack):
    st = bstack
    alice = RawNative(st.xmpp_port).login(*user(st, "rba"), resource="a")
    bob = RawNative(st.xmpp_port).login(*user(st, "rbb"), resource="b")
    # Alice's batch goes in two sends around bob's ping: a quarter, the
    # ping, the rest. So the ping is in chatd's kernel buffer before three
    # quarters of the batch have even been sent, however the scheduler
    # treats this process: with the budget, at most a quarter of the batch
    # plus a turn or two of it can come out before the pong. The big
    # SO_SNDBUF lets each send return at once (it does not hold the test
    # back where the kernel caps it lower; it only makes the unbounded
    # read's failure certain: all of the rest is queued while chatd is
    # still reading the first quarter).
    alice.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 << 20)
    to = bob.jid
    msgs = [f"<message to='{to}' type='chat' id='m{i}'><body>flood {i}</body></message>"
            for i in range(N)]
    first, rest = "".join(msgs[:N // 4]).encode(), "".join(msgs[N // 4:]).encode()
    assert len(first) > 4 * BUDGET
    mark = len(bob.stanzas)
    alice.send(first)
    bob.send("<iq type='get' id='bobping'><ping xmlns='urn:xmpp:ping'/></iq>")
    alice.send(rest)

    # Read until the batch and the pong are all in (a deadline, not a sleep).
    deadline = time.monotonic() + 25
    while len(bob.stanzas) - mark < N + 1:
        assert not bob.closed, f"bob's stream closed ({bob.stream_error})"
        assert time.monotonic() < deadline, f"only {len(bob.stanzas) - mark} of {N + 1} stanzas"
        bob.pump(0.5)

    order = [e for e in bob.stanzas[mark:]
             if e.tag == f"{{{NS_CLIENT}}}message" or e.get("id") == "bobping"]
    ids = [e.get("id") for e in order]
    msgs = [i for i in ids if i != "bobping"]
    # chatd relays alice's messages in the order she sent them, none lost.
    assert msgs == [f"m{i}" for i in range(N)], (len(msgs), msgs[:3], msgs[-3:])
    pong = ids.index("bobping")
    assert order[pong].get("type") == "result"
    after = len(ids) - 1 - pong
    # Bob's ping was served while alice's batch was still being read: with
    # a 64 KiB budget (~700 of her messages a turn) the pong comes out
    # within a turn or two of bob's send, so at least about 3/4 N - 1400
    # of her messages come after it. An unbounded read puts it after all N
    # (after == 0).
    assert after > N // 2, f"pong after {pong} of alice's {N} messages ({after} after it)"
    alice.close()
    bob.close()
