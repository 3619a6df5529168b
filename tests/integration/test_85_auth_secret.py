"""The made-up SCRAM salt of an unknown account comes from auth_secret
(issue 13): the same after a chatd restart, so comparing salts across a
restart cannot tell a missing account from a real one (a real account's
salt never changes). Without auth_secret it is random per start (and a
warning says so)."""

import re

import pytest

import outage
import pw_util
from signin_util import private_stack


@pytest.fixture(scope="module")
def sstack():
    with private_stack("chattest85-",
                       chatd_extra={"auth_secret": "a-test-secret-of-enough-length"}) as st:
        yield st


def salt(st, user, mech):
    b = pw_util.Bosh(st.http_port)
    try:
        pw_util.features(b)
        first = pw_util.scram_first(b, user, mech)
        return dict(kv.split("=", 1) for kv in first.split(","))["s"]
    finally:
        b.close()


def salt_once_relayed(st, user, mech):
    """salt() after a chatd restart: each httpd child reconnects on its own
    back-off, and a new session that reaches one still reconnecting gets a
    retryable 503, so ask again until one is answered."""
    got = {}

    def answered():
        try:
            got["s"] = salt(st, user, mech)
            return True
        except AssertionError:
            return False
    outage.wait_until(answered, 60, f"a session to read {user}'s {mech} salt")
    return got["s"]


def restart_chatd(st):
    assert st._stop_one("chatd", st.chatd_pidfile, timeout=60) == 0
    st.start_chatd()

    def relay_back():
        try:
            pw_util.Bosh(st.http_port).create()
            return True
        except AssertionError:      # remote-connection-failed until mod_bosh reconnects
            return False
    outage.wait_until(relay_back, 60, "mod_bosh to reconnect to the new chatd")


def test_unknown_salt_survives_restart_with_auth_secret(sstack):
    pw = sstack.add_user("known")
    assert pw
    before = {m: salt(sstack, "ghost", m) for m in ("SCRAM-SHA-256", "SCRAM-SHA-1")}
    known = salt(sstack, "known", "SCRAM-SHA-256")
    assert before["SCRAM-SHA-256"] != before["SCRAM-SHA-1"]     # one per hash, as chatctl's
    restart_chatd(sstack)
    after = {m: salt_once_relayed(sstack, "ghost", m) for m in ("SCRAM-SHA-256", "SCRAM-SHA-1")}
    assert after == before
    assert salt_once_relayed(sstack, "known", "SCRAM-SHA-256") == known


