"""Bookmarks with auto-join in Converse.js on the demo page (issue 17).

tests/browser/bookmarks.mjs drives Chromium in two phases:
  1. alice opens a room; Converse bookmarks it (autojoin) in her PEP
     service as an XEP-0402 item (chatd announces #compat), and chatd
     stores it, whitelisted (checked here in Redis);
  2. after her session is gone (chatctl kick), a fresh browser profile
     signs in as alice and Converse joins the room by itself, because the
     server gave it the bookmark: bob, a slixmpp occupant of that room,
     sees alice arrive again.
"""

import json
import os
import secrets
import shutil
import subprocess

import pytest

from outage import wait_until

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SCRIPT = os.path.join(REPO, "tests", "browser", "bookmarks.mjs")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def run_phase(stack, user, password, room, phase):
    artifacts = os.path.join(stack.root, "browser-bookmarks")
    r = subprocess.run(
        ["node", SCRIPT, "--base", stack.base_url, "--user", user, "--password", password,
         "--room", room, "--phase", phase, "--artifacts", artifacts],
        capture_output=True, text=True, timeout=240, cwd=REPO)
    steps = []
    for line in r.stdout.splitlines():
        try:
            steps.append(json.loads(line))
        except ValueError:
            pass
    assert r.returncode == 0, (
        f"browser phase {phase} failed (exit {r.returncode}); steps: {steps}\n"
        f"{r.stderr[-2000:]}\nscreenshots/logs: {artifacts}")
    return steps


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} not installed")
def test_converse_autojoins_bookmarked_room(stack, new_user, native_client):
    if not shutil.which("node"):
        pytest.fail("node is not installed (make deps)")
    alice, password = new_user("bm")
    room = f"bm{secrets.token_hex(3)}@{stack.muc_domain}"
    bob = native_client("bmb")
    b0 = len(bob.events)
    bob.send("join", room=room, nick="bob")
    bob.wait_stanza(start=b0, name="presence", **{"from": f"{room}/bob"})

    steps = run_phase(stack, alice, password, room, "bookmark")
    node = next(s["node"] for s in steps if s.get("step") == "bookmark node")
    # chatd advertises urn:xmpp:bookmarks:1#compat, so Converse uses XEP-0402:
    # one item per room, its id the room's JID
    assert node == "urn:xmpp:bookmarks:1", steps
    item = stack.redis_cli("HGET", f"chat:pep-items:{alice}:{node}", room)
    assert "autojoin='true'" in item.replace('"', "'"), item
    assert "access_model=whitelist" in stack.redis_cli("HGET", f"chat:pep:{alice}", node)
    # the browser is closed; its BOSH session would linger: end it
    stack.chatctl("sessions", "kick", f"{alice}@{stack.domain}")
    wait_until(lambda: [e for e in bob.stanzas(b0, name="presence", type="unavailable")
                        if e["from"].startswith(f"{room}/") and e["from"] != f"{room}/bob"],
               30, "alice's first session leaving the room")
    b1 = len(bob.events)

    run_phase(stack, alice, password, room, "autojoin")
    joined = bob.wait_stanza(start=b1, name="presence",
                             **{"from": lambda f: f and f.startswith(f"{room}/") and f != f"{room}/bob",
                                "type": None})
    assert joined
