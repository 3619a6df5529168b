"""The demo site in headless Chromium: Converse.js, two users, a reload.

tests/browser/two-users.mjs does the browsing (playwright-core driving
Debian's /usr/bin/chromium); this test runs it so that one pytest run
reports everything. Screenshots and console logs of a failed run are kept
in the stack's tmp dir (path in the failure message).
"""

import json
import os
import shutil
import subprocess

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SCRIPT = os.path.join(REPO, "tests", "browser", "two-users.mjs")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} not installed")
def test_two_users_chat_and_reload(stack, users):
    if not shutil.which("node"):
        pytest.fail("node is not installed (make deps)")
    artifacts = os.path.join(stack.root, "browser")
    r = subprocess.run(
        ["node", SCRIPT, "--base", stack.base_url,
         "--alice-password", users["alice"], "--bob-password", users["bob"],
         "--artifacts", artifacts],
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
    assert "bob reloads and is still signed in" in passed
    assert "alice -> room, reloaded bob sees it" in passed
