"""Integration test fixtures, in the spirit of httpd's test/pyhttpd.

One session-wide stack: a private redis-server (unix socket in a tmp dir), a
chatd (own config, free c2s port, relay unix socket in the tmp dir) and an
httpd (own ServerRoot in the tmp dir, free port, mod_bosh freshly built,
the demo site config). scripts/chatstack.py does the work, the same code
`make run` uses. Nothing is built here: `make test` builds first.

MPM=event (default) | worker | prefork picks httpd's MPM, as in pyhttpd.
KEEP_STACK=1 keeps the tmp dir even when every test passed.
"""

import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "scripts"))
sys.path.insert(0, HERE)

import chatstack  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "serial: loads the whole machine or measures time or CPU; make test runs these "
        "one at a time after the rest, which run side by side (pytest-xdist)")
from clients import BoshClient  # noqa: E402

MPM = os.environ.get("MPM", "event")

# error_log lines that mean httpd or a child crashed or stopped badly.
BAD_HTTPD_LOG = re.compile(
    r"Segmentation fault|exit signal|AH00051|AH00052|AH00060|AH00061|"
    r"still did not exit|AH00045|AH00046|AH00047|double free|stack smashing")


def pytest_report_header(config):
    try:
        ver = subprocess.run([chatstack.APACHE_BIN, "-v"], capture_output=True,
                             text=True).stdout.splitlines()[0]
    except (OSError, IndexError):
        ver = "apache2 not found"
    return [f"httpd: {ver}, mpm: {MPM}", f"repo: {REPO}"]


@pytest.fixture(scope="session")
def stack(request):
    root = tempfile.mkdtemp(prefix="chattest-")
    st = chatstack.Stack(root, mpm=MPM, foreground=True)
    failure = None
    try:
        st.start()
    except chatstack.StackError as e:
        failure = str(e)
        st.stop()
    if failure:
        pytest.fail(f"test stack did not come up (files under {root}):\n{failure}",
                    pytrace=False)
    yield st

    result = st.stop()
    problems = [f"{name} exited with {code}" for name, code in result.items()
                if code not in (0, None)]
    bad = []
    if os.path.exists(st.httpd_error_log):
        with open(st.httpd_error_log, errors="replace") as f:
            bad = [line.rstrip() for line in f if BAD_HTTPD_LOG.search(line)]
    problems += [f"httpd error_log: {line}" for line in bad[-10:]]
    if problems or request.session.testsfailed or os.environ.get("KEEP_STACK"):
        sys.stderr.write(f"\n[integration] stack files kept in {root}\n")
    else:
        shutil.rmtree(root, ignore_errors=True)
    assert not problems, "stack did not stop cleanly:\n" + "\n".join(problems) + \
        "\n" + st.logs_tail(20)


@pytest.fixture(scope="session")
def users(stack):
    """alice and bob, with random passwords, created with chatctl."""
    return {name: stack.add_user(name) for name in ("alice", "bob")}


@pytest.fixture
def new_user(stack):
    """Factory: a fresh user with a unique name; returns (name, password)."""
    def make(prefix="u"):
        name = f"{prefix}{secrets.token_hex(4)}"
        return name, stack.add_user(name)
    return make


@pytest.fixture
def bosh_client(stack, request):
    """Factory: start a Strophe.js client; all are closed after the test."""
    started = []
    log_dir = os.path.join(stack.root, "clients")
    os.makedirs(log_dir, exist_ok=True)

    def make(jid, password, mech="PLAIN"):
        c = BoshClient(stack.bosh_url, jid, password, mech=mech, log_dir=log_dir)
        started.append(c)
        return c
    yield make
    for c in started:
        c.close()


@pytest.fixture
def native_client(stack):
    """Factory: a fresh user signed in and bound on the native port
    (SCRAM-SHA-256), as NativeClient or a subclass; all closed afterwards."""
    from native_client import NativeClient
    started = []

    def make(prefix="n", cls=NativeClient):
        user = f"{prefix}{secrets.token_hex(3)}"
        password = stack.add_user(user)
        c = cls("127.0.0.1", stack.xmpp_port, f"{user}@{stack.domain}/m",
                password, mech="SCRAM-SHA-256")
        started.append(c)
        c.bound = c.connect()
        return c
    yield make
    for c in started:
        c.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failing test gets the tails of chatd.log and httpd's error_log."""
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and "stack" in getattr(item, "funcargs", {}):
        rep.sections.append(("daemon logs", item.funcargs["stack"].logs_tail(30)))
