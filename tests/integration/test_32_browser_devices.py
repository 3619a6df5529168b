"""One person on two browsers, in headless Chromium with Converse.js
(issue 17: "two browsers of one user both see every message").

tests/browser/two-devices.mjs drives three browser contexts on the demo
page: the user on two, a peer (a contact) on the third. What the peer writes shows on
both of the user's browsers; what the user writes on one shows on the
other (XEP-0280 carbons, as Converse enables and displays them).
"""

import json
import os
import shutil
import subprocess

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SCRIPT = os.path.join(REPO, "tests", "browser", "two-devices.mjs")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} not installed")
def test_two_browsers_of_one_user_see_every_message(stack, new_user):
    if not shutil.which("node"):
        pytest.fail("node is not installed (make deps)")
    user, user_pw = new_user("dv")
    peer, peer_pw = new_user("pe")
    # contacts of each other (in Redis before sign-in), so each finds the
    # other in Converse's roster
    for a, b in ((user, peer), (peer, user)):
        stack.redis_cli("HSET", f"chat:roster:{a}", f"{b}@{stack.domain}",
                        "sub=both;ask=;name=;groups=")
    artifacts = os.path.join(stack.root, "browser-devices")
    r = subprocess.run(
        ["node", SCRIPT, "--base", stack.base_url, "--user", user, "--user-password", user_pw,
         "--peer", peer, "--peer-password", peer_pw, "--artifacts", artifacts],
        capture_output=True, text=True, timeout=240, cwd=REPO)
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
    assert "peer -> user: desk and laptop both show it" in passed
    assert "user answers on the desk: peer and laptop show it" in passed
    assert "each message shows once on the laptop" in passed
