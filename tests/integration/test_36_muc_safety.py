"""Rooms stay safe from one misbehaving client and from a failing Redis (issue 14).

Why these tests: a room whose record could not be read (Redis paused,
slow or down) used to be created as a brand-new room, so its first joiner
became owner and the next save overwrote the stored configuration (room
takeover). A room made members-only, or a membership revoked, left the
non-members inside and posting. A participant could send a <subject/>
along with a <body/> past the subject permission check. Each test drives
real clients (slixmpp on the native port) against a private stack and
asserts what a client sees and what Redis keeps.
"""
import re
import secrets
import shutil
import tempfile
import threading

import pytest

import chatstack
import outage
from native_client import NativeClient, error_condition

ROOMCFG = "muc#roomconfig_"


def make_stack(chatd_extra=None):
    """A private stack and a client factory; yields (stack, client)."""
    root = tempfile.mkdtemp(prefix="chatmuc-")
    st = chatstack.Stack(root, foreground=True, chatd_extra=chatd_extra)
    started = []
    try:
        st.start(timeout=60)

        def client(user=None, password=None, tag="u"):
            if user is None:
                user = f"{tag}{secrets.token_hex(3)}"
                password = st.add_user(user)
            c = NativeClient("127.0.0.1", st.xmpp_port, f"{user}@{st.domain}/m",
                             password, mech="SCRAM-SHA-256")
            c.user, c.password = user, password
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


@pytest.fixture
def private_stack():
    yield from make_stack()


@pytest.fixture
def two_rooms_each():
    yield from make_stack({"muc_max_rooms_per_user": "2"})


@pytest.fixture
def quick_unload():
    yield from make_stack({"muc_room_idle": "1"})


@pytest.fixture
def small_history_buffer():
    yield from make_stack({"muc_history_buffer": "3000"})


def join(c, room, nick, **kw):
    """Join and wait for the self-presence (status 110)."""
    mark = len(c.events)
    c.send("join", room=room, nick=nick, **kw)
    c.wait_stanza(start=mark, name="presence", what=f"self-presence in {room}",
                  **{"from": f"{room}/{nick}", "type": None,
                     "xml": lambda x: re.search(r"code=.110.", x) is not None})
    return mark


def join_answer(c, room, nick, timeout=30):
    """Join; the self-presence or the presence error, whichever comes."""
    mark = len(c.events)
    c.send("join", room=room, nick=nick)
    return c.wait_stanza(start=mark, timeout=timeout, name="presence",
                         what=f"answer to joining {room}",
                         **{"from": f"{room}/{nick}",
                            "xml": lambda x: 'type="error"' in x or "type='error'" in x
                            or re.search(r"code=.110.", x) is not None})


def iq_cmd(c, cmd, timeout=30, **kw):
    cid = secrets.token_hex(4)
    mark = len(c.events)
    c.send(cmd, id=cid, **kw)
    return c.wait_event(lambda e: e.get("event") == "iq" and e.get("id") == cid,
                        timeout, f"answer to {cmd}", start=mark)


def configure(c, room, **fields):
    return iq_cmd(c, "room_config", room=room,
                  fields={ROOMCFG + k: v for k, v in fields.items()})


def self_item(ev):
    """affiliation and role of the <item/> in a presence event."""
    m = re.search(r"<item [^>]*>", ev["xml"])
    item = m.group(0) if m else ""
    aff = re.search(r"affiliation=.(\w+).", item)
    role = re.search(r"role=.(\w+).", item)
    return (aff.group(1) if aff else None, role.group(1) if role else None)


def test_room_load_failure_refuses_join_and_keeps_owner(private_stack):
    """Redis paused while a persistent room is loaded: the joiner gets a
    'wait' error, becomes no owner, and the stored config survives."""
    st, client = private_stack
    alice = client(tag="own")
    room = f"keep{secrets.token_hex(3)}@{st.muc_domain}"
    join(alice, room, "alice")
    ans = configure(alice, room, persistentroom="1", roomname="Original")
    assert ans["type"] == "result", ans
    key = f"chat:room:{room}"
    outage.wait_until(lambda: st.redis_cli("HGET", key, "name") == "Original", 15,
                      "room record in Redis")
    alice.close()

    # a restart: the room is in Redis only and is loaded on the next join
    assert st._stop_one("chatd", st.chatd_pidfile, timeout=30) == 0
    st.start_chatd(30)
    alice = client(alice.user, alice.password)
    mallory = client(tag="mal")
    conns = outage.chatd_stat(st, "redis_connections")

    # Redis stops answering for longer than chatd's command deadline (2 s)
    pause_done = threading.Event()

    def pause():
        st.redis_cli("CLIENT", "PAUSE", "6000", "ALL")
        pause_done.set()
    threading.Thread(target=pause, daemon=True).start()
    outage.wait_until(pause_done.is_set, 10, "CLIENT PAUSE issued")
    first = join_answer(mallory, room, "mallory", timeout=40)
    # whatever mallory got, it now tries to take the room over
    taken = configure(mallory, room, persistentroom="1", roomname="Taken")

    # Redis answers again (redis-cli blocks until the pause is over)
    outage.wait_until(lambda: st.redis_cli("PING") == "PONG", 30, "Redis back")
    outage.wait_until(lambda: outage.chatd_stat(st, "redis_connections") >= conns, 30,
                      "chatd's Redis connections back")

    # mallory tries again now that Redis answers (with the old code it
    # owned the room it made, and this save replaced the stored one)
    taken_later = configure(mallory, room, persistentroom="1", roomname="Taken")
    # the stored configuration is unchanged and alice is still owner
    assert st.redis_cli("HGET", key, "name") == "Original", st.redis_cli("HGETALL", key)
    assert st.redis_cli("HGET", key, f"aff:{mallory.user}@{st.domain}") == ""
    mark = join(alice, room, "alice")
    me = alice.wait_stanza(start=mark, name="presence", **{"from": f"{room}/alice"},
                           xml=lambda x: re.search(r"code=.110.", x) is not None)
    assert self_item(me) == ("owner", "moderator"), me

    # what mallory saw: a temporary error, not a new room of its own
    assert first["type"] == "error", first
    assert error_condition(first) == "internal-server-error", first
    assert re.search(r"<error[^>]*type=.wait.", first["xml"]), first
    assert taken["type"] == "error", taken
    assert taken_later["type"] == "error", taken_later

    # the room is loaded on the next join: mallory gets in as a plain occupant
    mark = join(mallory, room, "mallory")
    me = mallory.wait_stanza(start=mark, name="presence", **{"from": f"{room}/mallory"},
                             xml=lambda x: re.search(r"code=.110.", x) is not None)
    assert self_item(me) == ("none", "participant"), me
    assert not re.search(r"code=.201.", me["xml"]), me
    assert configure(mallory, room, roomname="Taken")["type"] == "error"
    assert st.redis_cli("HGET", key, "name") == "Original"


def removed_with(c, mark, room, nick, code):
    """c sees room/nick leave (unavailable) with status code."""
    return c.wait_stanza(start=mark, name="presence", type="unavailable",
                         what=f"{nick} removed with {code}",
                         **{"from": f"{room}/{nick}",
                            "xml": lambda x: re.search(rf"code=.{code}.", x) is not None})


def test_members_only_and_revoked_membership_remove_non_members(private_stack):
    st, client = private_stack
    owner, bob, carol = client(tag="own"), client(tag="bob"), client(tag="car")
    room = f"mo{secrets.token_hex(3)}@{st.muc_domain}"
    join(owner, room, "owner")
    join(bob, room, "bob")
    join(carol, room, "carol")
    ans = iq_cmd(owner, "set_affiliation", room=room, affiliation="member",
                 jid=f"{carol.user}@{st.domain}")
    assert ans["type"] == "result", ans

    # members-only: bob (no affiliation) goes with 322, both he and the
    # others see it; carol (member) stays
    o_mark, b_mark = len(owner.events), len(bob.events)
    assert configure(owner, room, membersonly="1")["type"] == "result"
    removed_with(bob, b_mark, room, "bob", 322)
    removed_with(owner, o_mark, room, "bob", 322)
    # bob is out: his messages are refused, nobody receives them
    b_mark = len(bob.events)
    bob.send("groupchat", to=room, body="still here?")
    err = bob.wait_stanza(start=b_mark, name="message", type="error")
    assert error_condition(err) == "not-acceptable", err
    # ... and he cannot come back
    assert error_condition(join_answer(bob, room, "bob")) == "registration-required"

    # revoking carol's membership removes her with 321
    o_mark, c_mark = len(owner.events), len(carol.events)
    ans = iq_cmd(owner, "set_affiliation", room=room, affiliation="none",
                 jid=f"{carol.user}@{st.domain}")
    assert ans["type"] == "result", ans
    removed_with(carol, c_mark, room, "carol", 321)
    removed_with(owner, o_mark, room, "carol", 321)
    fence = f"fence {secrets.token_hex(3)}"
    c_mark = len(carol.events)
    carol.send("groupchat", to=room, body="after revocation")
    owner.send("groupchat", to=room, body=fence)
    owner.wait_stanza(name="message", type="groupchat", body=fence)
    assert not owner.stanzas(name="message", body="after revocation")
    assert error_condition(carol.wait_stanza(start=c_mark, name="message", type="error")) \
        == "not-acceptable"


def test_subject_with_body_needs_the_subject_permission(private_stack):
    st, client = private_stack
    owner, bob = client(tag="own"), client(tag="bob")
    room = f"subj{secrets.token_hex(3)}@{st.muc_domain}"
    join(owner, room, "owner")
    join(bob, room, "bob")
    # bob is a participant; participants may not change the subject (default)
    for extra in ("<body>hello all</body>", ""):
        o_mark, b_mark = len(owner.events), len(bob.events)
        bob.send("raw", xml=f"<message to='{room}' type='groupchat'>"
                            f"<subject>Bob's topic</subject>{extra}</message>")
        err = bob.wait_stanza(start=b_mark, name="message", type="error",
                              what="subject refused")
        assert error_condition(err) == "forbidden", err
        fence = f"fence {secrets.token_hex(3)}"
        bob.send("groupchat", to=room, body=fence)
        owner.wait_stanza(start=o_mark, name="message", type="groupchat", body=fence)
        assert not [e for e in owner.events[o_mark:] if "Bob's topic" in e.get("xml", "")]
    # a late joiner sees no such subject either (history, subject message)
    carol = client(tag="car")
    c_mark = join(carol, room, "carol")
    carol.wait_stanza(start=c_mark, name="message", xml=lambda x: "<subject" in x)
    assert not [e for e in carol.events[c_mark:] if "Bob's topic" in e.get("xml", "")]

    # the owner (moderator) may send a subject with a body: delivered, and
    # not a subject change (XEP-0045 §8.1)
    b_mark = len(bob.events)
    owner.send("raw", xml=f"<message to='{room}' type='groupchat'>"
                          "<subject>Owner's line</subject><body>note</body></message>")
    bob.wait_stanza(start=b_mark, name="message", type="groupchat", body="note")


def chatd_log(st):
    with open(st.chatd_log, errors="replace") as f:
        return f.read()


def history(st, room):
    """Bodies in chat:history:<room>, oldest first."""
    out = st.redis_cli("LRANGE", f"chat:history:{room}", "0", "-1").splitlines()
    bodies = [re.search(r"<body>([^<]*)</body>", x) for x in out]
    return [b.group(1) for b in reversed(bodies) if b]


def say_while_redis_down(st, a, b, room, lines):
    """Stop Redis, send lines from a (b still receives them: delivery is
    from memory), wait until chatd has tried and failed to write them."""
    failed_before = chatd_log(st).count("redis unavailable")
    assert st._stop_one("redis", st.redis_pidfile) == 0
    b_mark = len(b.events)
    for line in lines:
        a.send("groupchat", to=room, body=line)
    b.wait_stanza(start=b_mark, name="message", body=lines[-1], what="delivery from memory")
    outage.wait_until(lambda: chatd_log(st).count("redis unavailable") > failed_before, 20,
                      "a history write failing")
    st.start_redis()


def test_failed_history_write_is_retried(private_stack):
    st, client = private_stack
    a, b = client(tag="ha"), client(tag="hb")
    room = f"hist{secrets.token_hex(3)}@{st.muc_domain}"
    join(a, room, "anna")
    join(b, room, "bert")
    said = [f"while down {i} {secrets.token_hex(2)}" for i in range(5)]
    say_while_redis_down(st, a, b, room, said)
    # Redis is back (empty: this Redis keeps nothing on disk): the retry
    # writes every message, in order, once
    outage.wait_until(lambda: history(st, room) == said, 30,
                      f"history rewritten after the outage: {history(st, room)}")
    assert "BOSH00302" in chatd_log(st)
    more = f"after {secrets.token_hex(2)}"
    a.send("groupchat", to=room, body=more)
    outage.wait_until(lambda: history(st, room) == said + [more], 15, "next write")


def test_unwritten_history_is_bounded(small_history_buffer):
    st, client = small_history_buffer
    a, b = client(tag="ha"), client(tag="hb")
    room = f"hist{secrets.token_hex(3)}@{st.muc_domain}"
    join(a, room, "anna")
    join(b, room, "bert")
    # ~200-byte entries, 3000-byte buffer: 15 messages cannot all wait
    said = [f"bounded {i:02d} {'x' * 40}" for i in range(15)]
    say_while_redis_down(st, a, b, room, said)
    assert "BOSH00303" in chatd_log(st)
    outage.wait_until(lambda: history(st, room)[-1:] == said[-1:], 40,
                      "newest messages written after the outage")
    kept = history(st, room)
    assert 0 < len(kept) < len(said), kept
    assert kept == said[-len(kept):], kept          # the oldest went, in order


def rooms_in_memory(st):
    return [line.split()[0] for line in st.chatctl("rooms", "list").stdout.splitlines()
            if line.split()]


def test_room_creation_is_capped_per_user(two_rooms_each):
    st, client = two_rooms_each
    a, b = client(tag="qa"), client(tag="qb")
    r1, r2, r3 = (f"q{i}{secrets.token_hex(3)}@{st.muc_domain}" for i in range(3))
    join(a, r1, "a")                                    # temporary, a is in it
    join(a, r2, "a")
    assert configure(a, r2, persistentroom="1")["type"] == "result"
    outage.wait_until(lambda: st.redis_cli("SISMEMBER", f"chat:created:{a.user}@{st.domain}",
                                           r2) == "1", 15, "creation recorded")
    a.send("leave", room=r2, nick="a")                  # persistent: still counts
    # the third room: refused the way XEP-0045 §10.1.1 says, no room made
    err = join_answer(a, r3, "a")
    assert err["type"] == "error" and error_condition(err) == "not-allowed", err
    assert re.search(r"<error[^>]*type=.cancel.", err["xml"]), err
    assert r3 not in rooms_in_memory(st)
    # another user's count is its own; joining a room that exists is not
    # creating one
    join(b, r3, "b")
    join(a, r3, "a")
    # a destroys a room of its own: it may create one again
    ans = iq_cmd(a, "iq_set", to=r2, child="<query xmlns='http://jabber.org/protocol/"
                 "muc#owner'><destroy/></query>")
    assert ans["type"] == "result", ans
    outage.wait_until(lambda: st.redis_cli("SCARD", f"chat:created:{a.user}@{st.domain}")
                      == "0", 15, "creation count back to 0")
    join(a, f"q4{secrets.token_hex(3)}@{st.muc_domain}", "a")


def test_idle_persistent_room_unloads_and_comes_back(quick_unload):
    st, client = quick_unload
    owner = client(tag="io")
    room = f"idle{secrets.token_hex(3)}@{st.muc_domain}"
    join(owner, room, "owner")
    assert configure(owner, room, persistentroom="1", roomname="Kept",
                     membersonly="0")["type"] == "result"
    said = [f"before unload {i} {secrets.token_hex(2)}" for i in range(3)]
    for line in said:
        owner.send("groupchat", to=room, body=line)
    owner.wait_stanza(name="message", body=said[-1])
    mark = len(owner.events)
    owner.send("leave", room=room, nick="owner")
    owner.wait_stanza(start=mark, name="presence", type="unavailable")
    # nobody in it: it leaves memory (its record and history stay in Redis)
    outage.wait_until(lambda: room not in rooms_in_memory(st), 20, "room unloaded")
    assert st.redis_cli("HGET", f"chat:room:{room}", "name") == "Kept"
    # the next join loads it: history, configuration and owner intact
    guest = client(tag="ig")
    g_mark = join(guest, room, "guest")
    guest.wait_stanza(start=g_mark, name="message", body=said[-1], what="history replayed")
    hist = [e["body"] for e in guest.stanzas(start=g_mark, name="message") if e.get("body")]
    assert hist == said, hist
    me = guest.stanzas(start=g_mark, name="presence", **{"from": f"{room}/guest"})[-1]
    assert self_item(me) == ("none", "participant") and "201" not in me["xml"], me
    o_mark = join(owner, room, "owner")
    me = owner.wait_stanza(start=o_mark, name="presence", **{"from": f"{room}/owner"},
                           xml=lambda x: re.search(r"code=.110.", x) is not None)
    assert self_item(me) == ("owner", "moderator"), me
    ans = iq_cmd(guest, "iq_get", to=room,
                 child="<query xmlns='http://jabber.org/protocol/disco#info'/>")
    assert 'name="Kept"' in ans["xml"] and "muc_persistent" in ans["xml"], ans


def test_joins_queued_during_a_load_are_bounded(private_stack):
    """Presences to a room still loading wait for Redis; a flood of them is
    refused past 64 with resource-constraint (type wait), not queued."""
    st, client = private_stack
    c = client(tag="fl")
    room = f"flood{secrets.token_hex(3)}@{st.muc_domain}"
    pause_done = threading.Event()

    def pause():
        st.redis_cli("CLIENT", "PAUSE", "4000", "ALL")
        pause_done.set()
    threading.Thread(target=pause, daemon=True).start()
    outage.wait_until(pause_done.is_set, 10, "CLIENT PAUSE issued")
    mark = len(c.events)
    n = 80
    c.send("raw", xml="".join(
        f"<presence to='{room}/n{i}'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
        for i in range(n)))
    outage.wait_until(lambda: len(c.stanzas(start=mark, name="presence", type="error")) >= n,
                      40, "an answer to every join")
    conds = [error_condition(e) for e in c.stanzas(start=mark, name="presence", type="error")]
    assert conds.count("resource-constraint") == n - 64, conds
    assert conds.count("internal-server-error") == 64, conds
