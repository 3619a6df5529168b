"""The same user scenarios with two stock clients (issue 6).

scenarios.SCENARIOS (sign in, roster and subscriptions, 1:1 and offline
messages, rooms: join, history, kick and ban, password, configuration
form) run once with slixmpp on chatd's native port (STARTTLS, SCRAM-SHA-256)
and once with Strophe.js over BOSH through httpd + mod_bosh (SCRAM-SHA-256
too). A scenario that passes with one client and fails with the other is a
transport bug; one that fails with both is an XMPP bug.
"""

import concurrent.futures
import os
import secrets
import shutil
import sys
import tempfile
import time

import pytest

import chatstack
import scenarios
from clients import BoshClient, ClientError
from native_client import NativeClient

# runs chatd under valgrind: alone, after the tests that run side by side (conftest.py)
pytestmark = pytest.mark.serial

KINDS = ["native", "bosh"]


class Env:
    """What a scenario gets: fresh accounts signed in with one kind of client."""

    def __init__(self, stack, kind, log_dir):
        self.stack = stack
        self.kind = kind
        self.log_dir = log_dir
        self.started = []

    def _start(self, user, password, resource):
        jid = f"{user}@{self.stack.domain}/{resource}"
        if self.kind == "bosh":
            c = BoshClient(self.stack.bosh_url, jid, password, mech="SCRAM-SHA-256",
                           log_dir=self.log_dir)
        else:
            c = NativeClient("127.0.0.1", self.stack.xmpp_port, jid, password,
                             mech="SCRAM-SHA-256")
        self.started.append(c)
        c.user, c.password = user, password
        c.bare = f"{user}@{self.stack.domain}"
        c.bound = c.connect()
        return c

    def client(self, tag):
        """A new account, signed in (not yet available)."""
        user = f"{tag}{secrets.token_hex(3)}"
        return self._start(user, self.stack.add_user(user), self.kind)

    def clients(self, *tags):
        """Several new accounts, signed in side by side (node start-up and
        SASL overlap), in the order of tags."""
        with concurrent.futures.ThreadPoolExecutor(len(tags)) as pool:
            return list(pool.map(self.client, tags))

    def client_for(self, other, resource):
        """Another sign-in of other's account."""
        return self._start(other.user, other.password, resource)

    def room(self):
        return f"r{secrets.token_hex(4)}@{self.stack.muc_domain}"

    def stack_has_session(self, full):
        return full in self.stack.chatctl("sessions", "list").stdout

    def wait_for(self, pred, what, timeout=15):
        deadline = time.monotonic() + timeout
        while not pred():
            if time.monotonic() > deadline:
                raise ClientError(f"{self.kind}: no {what} within {timeout}s")
            time.sleep(0.05)            # polling interval, not synchronisation

    def close(self):
        for c in self.started:
            try:
                c.close()
            except Exception:
                pass


@pytest.fixture
def env_for(stack):
    made = []
    log_dir = os.path.join(stack.root, "clients")
    os.makedirs(log_dir, exist_ok=True)

    def make(kind):
        e = Env(stack, kind, log_dir)
        made.append(e)
        return e
    yield make
    for e in made:
        e.close()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("scenario", scenarios.SCENARIOS, ids=lambda f: f.__name__)
def test_scenario(env_for, kind, scenario):
    scenario(env_for(kind))


# -- the same clients against chatd under valgrind ---------------------------------
VALGRIND_SUBSET = [("native", scenarios.sign_in), ("native", scenarios.roster_and_subscription),
                   ("native", scenarios.one_to_one_and_offline), ("native", scenarios.kick_and_ban),
                   ("bosh", scenarios.join_room), ("bosh", scenarios.password_room),
                   ("bosh", scenarios.configuration_form)]


def test_valgrind_scenarios_shutdown_and_restart():
    """chatd under valgrind through a subset of the scenarios; SIGTERM with
    a native and a BOSH client signed in and in a persistent room: both
    are told system-shutdown, chatd exits 0 with no invalid access and
    nothing definitely lost. Then chatd starts again on the same Redis and
    the room's configuration and history are still there."""
    root = tempfile.mkdtemp(prefix="chatvg-")
    vg_log = os.path.join(root, "valgrind.log")
    st = chatstack.Stack(root, chatd_wrapper=[
        "valgrind", "--error-exitcode=99", "--leak-check=full",
        "--errors-for-leak-kinds=definite", "--num-callers=30", f"--log-file={vg_log}"])
    env = None
    ok = False
    try:
        st.start(timeout=60)
        log_dir = os.path.join(root, "clients")
        os.makedirs(log_dir)
        for kind, scenario in VALGRIND_SUBSET:
            env = Env(st, kind, log_dir)
            try:
                scenario(env)
            finally:
                env.close()

        env = Env(st, "native", log_dir)
        owner = env.client("vo")
        benv = Env(st, "bosh", log_dir)
        guest = benv.client("vg")
        room = env.room()
        o0 = len(owner.events)
        owner.send("join", room=room, nick="owner")
        owner.wait_stanza(start=o0, name="presence", **{"from": f"{room}/owner"})
        ev = scenarios.iq(owner, "room_config", room=room,
                          fields={"muc#roomconfig_persistentroom": True,
                                  "muc#roomconfig_roomname": "Survivors"})
        assert ev["type"] == "result", ev
        said = [f"before restart {i} {secrets.token_hex(2)}" for i in range(3)]
        for s in said:
            owner.send("groupchat", to=room, body=s)
        owner.wait_stanza(start=o0, name="message", body=said[-1])
        g0 = len(guest.events)
        guest.send("join", room=room, nick="guest")
        guest.wait_stanza(start=g0, name="presence", **{"from": f"{room}/guest"})

        o0, g0 = len(owner.events), len(guest.events)
        status = st._stop_one("chatd", st.chatd_pidfile, timeout=60)
        err = owner.wait_event(lambda e: e.get("event") == "stream_error", 10,
                               "system-shutdown", start=o0)
        assert err["cond"] == "system-shutdown"
        ended = guest.wait_event(lambda e: e.get("event") == "status" and
                                 e["status"] in ("DISCONNECTED", "CONNFAIL", "DISCONNECTING"),
                                 15, "BOSH session end", start=g0)
        assert "system-shutdown" in str(ended.get("cond")) or any(
            "system-shutdown" in str(e.get("cond")) for e in guest.events[g0:]), guest.dump()
        with open(vg_log) as f:
            report = f.read()
        assert status == 0, f"chatd under valgrind exited {status}:\n{report[-4000:]}"
        assert "definitely lost" not in report or "definitely lost: 0 bytes" in report, report[-4000:]
        assert "Invalid read" not in report and "Invalid write" not in report, report[-4000:]
        env.close()
        benv.close()

        # chatd again (no valgrind), same Redis: the room comes back
        st.chatd_wrapper = []
        st.start_chatd()
        env = Env(st, "native", log_dir)
        late = env.client("vl")
        l0 = len(late.events)
        late.send("join", room=room, nick="late", maxstanzas=10)
        late.wait_stanza(start=l0, name="message", xml=lambda x: x and "subject" in x)
        hist = [e["body"] for e in late.stanzas(start=l0, name="message", type="groupchat")
                if e.get("body")]
        assert hist == said, hist
        info = scenarios.iq(late, "iq_get", to=room,
                            child="<query xmlns='http://jabber.org/protocol/disco#info'/>")
        assert scenarios.elems(info, "identity")[0].get("name") == "Survivors"
        ok = True
    finally:
        if env is not None:
            env.close()
        st.stop()
        if ok:
            shutil.rmtree(root, ignore_errors=True)
        else:
            sys.stderr.write(f"\n[valgrind test] files kept in {root}\n")
