"""Converse.js in Chromium loads history from the archive (XEP-0313, issue 17).

slixmpp prepares what a user would have left behind: alice's other device
and bob exchange 1:1 messages, and the lobby gets more messages than
Converse's first archive page and the join history hold.
tests/browser/mam.mjs then signs alice in from a fresh browser profile and
checks what she sees: the newest lobby messages, older ones after
scrolling up, and the 1:1 messages, also after a reload.
"""

import json
import os
import secrets
import shutil
import subprocess

import pytest

from native_client import NativeClient
from scenarios import iq

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SCRIPT = os.path.join(REPO, "tests", "browser", "mam.mjs")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
LOBBY = "lobby@conference.localhost"
ROOM_MESSAGES = 60      # more than archived_messages_page_size (50) + join history


def signed_in(stack, user, pw, resource):
    c = NativeClient("127.0.0.1", stack.xmpp_port, f"{user}@{stack.domain}/{resource}", pw,
                     mech="SCRAM-SHA-256")
    c.bound = c.connect()
    return c


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} not installed")
def test_converse_loads_archived_messages(stack, new_user):
    if not shutil.which("node"):
        pytest.fail("node is not installed (make deps)")
    tag = secrets.token_hex(3)
    alice, alice_pw = new_user("bma")
    bob, bob_pw = new_user("bmb")
    carol, carol_pw = new_user("bmc")
    bob_jid = f"{bob}@{stack.domain}"
    phone = signed_in(stack, alice, alice_pw, "phone")
    b = signed_in(stack, bob, bob_pw, "m")
    room = signed_in(stack, carol, carol_pw, "m")
    try:
        # Converse shows 1:1 messages only with roster contacts
        assert iq(phone, "roster_add", jid=bob_jid)["type"] == "result"
        one = [f"from the phone {tag}", f"bob answers the phone {tag}"]
        mark = len(b.events)
        phone.send("chat", to=b.bound, body=one[0])
        b.wait_stanza(start=mark, name="message", body=one[0])
        mark = len(phone.events)
        b.send("chat", to=phone.bound, body=one[1])
        phone.wait_stanza(start=mark, name="message", body=one[1])

        mark = len(room.events)
        room.send("join", room=LOBBY, nick=f"carol{tag}")
        room.wait_stanza(start=mark, name="presence", **{"from": f"{LOBBY}/carol{tag}"})
        texts = [f"lobby line {i:02d} {tag}" for i in range(ROOM_MESSAGES)]
        for t in texts:
            room.send("groupchat", to=LOBBY, body=t)
        room.wait_stanza(start=mark, name="message", body=texts[-1], timeout=60)
        phone.close()
        b.close()

        # carol stays in the lobby: a room someone is in, as a team's is
        # (a room created anew, 201, is one Converse asks no archive of)
        artifacts = os.path.join(stack.root, "browser-mam")
        r = subprocess.run(
            ["node", SCRIPT, "--base", stack.base_url, "--alice", alice,
             "--alice-password", alice_pw, "--bob-jid", bob_jid, "--one", "|".join(one),
             "--room-first", texts[0], "--room-last", texts[-1], "--artifacts", artifacts],
            capture_output=True, text=True, timeout=300, cwd=REPO)
    finally:
        for c in (phone, b, room):
            c.close()
    steps = []
    for line in r.stdout.splitlines():
        try:
            steps.append(json.loads(line))
        except ValueError:
            pass
    passed = [s["step"] for s in steps if s.get("ok")]
    assert r.returncode == 0, (
        f"browser run failed (exit {r.returncode}); steps passed: {passed}\n"
        f"{r.stdout[-4000:]}\n{r.stderr[-2000:]}\nscreenshots/logs: {artifacts}")
    assert "scrolling up in the lobby loads older messages" in passed
    assert "after a reload the chat with bob still shows them" in passed
