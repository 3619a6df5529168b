"""Chaos (issue 14): 100 users chatting, 1:1 and in rooms, while Redis is
paused (CLIENT PAUSE), killed and restarted, and chatd is stopped
(SIGSTOP) and continued. Afterwards, as users see it:

- no room lost its owner or its configuration (the owner still gets the
  owner form, with the name and persistence it set);
- no roster lost an item (a roster get returns every item added);
- every message sent to an offline user that the server did not bounce
  is delivered exactly once when that user signs in;
- the loop never spins: chatd's CPU time over an idle window stays below 5%.

Clients are raw sockets on the native port (raw_native.py): 100 sessions
cost a socket each, no process or thread per user. Redis runs with an
append-only file (fsync always) so that killing it is an outage, not a
data wipe, as in any deployment that keeps data.

Every check runs and the failures are reported together, so one run says
which areas (rooms, rosters, offline, loop) broke.
"""

import os
import random
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from outage import wait_until
from raw_native import NS_CLIENT, RawNative, StreamClosed, esc
from signin_util import private_stack

# measures chatd's idle CPU: alone, after the tests that run side by side (conftest.py)
pytestmark = pytest.mark.serial

MUC = "conference.localhost"
N_ONLINE = 80
N_OFFLINE = 20
N_ROOMS = 5
ROUNDS = 12
NS_ROSTER = "jabber:iq:roster"
NS_OWNER = "http://jabber.org/protocol/muc#owner"
NS_DATA = "jabber:x:data"


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def iq(c, xml, id_, timeout=30):
    n = len(c.stanzas)
    c.send(xml)
    return c.wait(lambda e: e.tag == f"{{{NS_CLIENT}}}iq" and e.get("id") == id_,
                  timeout, f"iq {id_}", start=n)


def pump_all(clients, seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for c in clients:
            if not c.closed:
                c.pump(0.001)


def owner_form(c, room, id_):
    r = iq(c, f"<iq type='get' to='{room}' id='{id_}'><query xmlns='{NS_OWNER}'/></iq>", id_)
    if r.get("type") != "result":
        return None
    fields = {}
    for f in r.iter(f"{{{NS_DATA}}}field"):
        v = f.find(f"{{{NS_DATA}}}value")
        fields[f.get("var")] = v.text if v is not None else None
    return fields


@pytest.fixture(scope="module")
def cstack():
    with private_stack("chat99-", redis_extra="appendonly yes\nappendfsync always",
                       httpd_extra="BoshRelayPing 1\nBoshRelayPingTimeout 2\n") as st:
        yield st


def test_chaos(cstack):
    st = cstack
    tag = f"{random.randint(0, 1 << 24):x}"
    names = [f"c{tag}u{i}" for i in range(N_ONLINE)] + [f"c{tag}o{i}" for i in range(N_OFFLINE)]
    with ThreadPoolExecutor(4) as ex:       # chatctl adduser: a process each
        pws = list(ex.map(st.add_user, names))
    accounts = list(zip(names, pws))
    online, offline = accounts[:N_ONLINE], accounts[N_ONLINE:]
    clients = []
    for name, pw in online:
        c = RawNative(st.xmpp_port).login(name, pw, resource="chaos")
        c.presence()
        clients.append(c)
    off_jid = [f"{name}@localhost" for name, _ in offline]

    # Rooms: the first N_ROOMS users create and configure them (persistent,
    # named), the others join one each.
    rooms = [f"chaos{tag}-{k}@{MUC}" for k in range(N_ROOMS)]
    for k, room in enumerate(rooms):
        owner = clients[k]
        owner.join(room, f"owner{k}")
        r = iq(owner, f"<iq type='set' to='{room}' id='cfg{k}'><query xmlns='{NS_OWNER}'>"
                      f"<x xmlns='{NS_DATA}' type='submit'>"
                      f"<field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>"
                      f"<field var='muc#roomconfig_roomname'><value>Chaos {k}</value></field>"
                      f"<field var='muc#roomconfig_persistentroom'><value>1</value></field>"
                      f"</x></query></iq>", f"cfg{k}")
        assert r.get("type") == "result", f"room {room} configuration refused"
    for i in range(N_ROOMS, N_ONLINE):
        clients[i].join(rooms[i % N_ROOMS], f"m{i}")

    # Rosters: each online user adds the next one and one offline user.
    roster_want = {}
    for i, c in enumerate(clients):
        items = [f"{online[(i + 1) % N_ONLINE][0]}@localhost", off_jid[i % N_OFFLINE]]
        for j, item in enumerate(items):
            r = iq(c, f"<iq type='set' id='r{i}-{j}'><query xmlns='{NS_ROSTER}'>"
                      f"<item jid='{item}' name='n{j}'/></query></iq>", f"r{i}-{j}")
            assert r.get("type") == "result", f"roster set for {online[i][0]}"
        roster_want[i] = set(items)

    # Chaos in the background while everyone chats.
    chatd_pid = st.procs["chatd"].pid
    chaos_log = []

    def chaos():
        try:
            time.sleep(1)
            st.redis_cli("CLIENT", "PAUSE", "2500")
            chaos_log.append("redis paused")
            time.sleep(3.5)
            st.procs["redis"].kill()
            st.procs["redis"].wait(10)
            chaos_log.append("redis killed")
            time.sleep(1)
            st.start_redis()
            chaos_log.append("redis restarted")
            time.sleep(1.5)
            os.kill(chatd_pid, signal.SIGSTOP)
            chaos_log.append("chatd stopped")
            time.sleep(3)
        finally:
            os.kill(chatd_pid, signal.SIGCONT)
            chaos_log.append("chatd continued")

    th = threading.Thread(target=chaos)
    th.start()
    sent_offline = {}        # id -> (sender index, offline index)
    round_no = 0
    while th.is_alive() or round_no < ROUNDS:
        for i, c in enumerate(clients):
            if c.closed:
                continue
            try:
                nxt = clients[(i + 1) % N_ONLINE].jid
                c.chat(nxt, f"hi {round_no}", id_=f"d{round_no}-{i}")
                if i % 4 == round_no % 4:
                    mid = f"off{round_no}-{i}"
                    k = (i + round_no) % N_OFFLINE
                    c.chat(off_jid[k], f"offline {mid}", id_=mid)
                    sent_offline[mid] = (i, k)
                if i >= N_ROOMS and i % 10 == round_no % 10:
                    c.groupchat(rooms[i % N_ROOMS], f"room {round_no} {i}")
            except OSError:
                pass
        pump_all(clients, 0.8)
        round_no += 1
    th.join()
    assert chaos_log[-1] == "chatd continued", chaos_log
    pump_all(clients, 3)

    problems = []

    # The loop does not spin: idle window after the storm.
    pump_all(clients, 2)
    t0, c0 = time.monotonic(), cpu_seconds(chatd_pid)
    time.sleep(5)
    cpu = (cpu_seconds(chatd_pid) - c0) / (time.monotonic() - t0)
    if cpu >= 0.05:
        problems.append(f"loop: chatd used {cpu:.1%} CPU over an idle 5 s window")

    dropped = [online[i][0] for i, c in enumerate(clients) if c.closed]
    if dropped:
        problems.append(f"sessions: {len(dropped)} native sessions were closed: {dropped[:5]}")

    # Rooms keep owner and configuration (the owner, or the owner signed in
    # again if its session was lost, asks for the owner form).
    for k, room in enumerate(rooms):
        owner = clients[k]
        try:
            if owner.closed:
                owner = RawNative(st.xmpp_port).login(*online[k], resource="again")
            fields = owner_form(owner, room, f"own{k}")
        except (AssertionError, StreamClosed) as e:
            fields = None
            problems.append(f"rooms: {room}: owner form: {e}")
            continue
        if fields is None:
            problems.append(f"rooms: {room}: owner {online[k][0]} lost ownership")
        elif (fields.get("muc#roomconfig_roomname") != f"Chaos {k}"
              or fields.get("muc#roomconfig_persistentroom") not in ("1", "true")):
            problems.append(f"rooms: {room}: configuration lost: {fields}")

    # Rosters keep every item.
    for i, c in enumerate(clients):
        try:
            if c.closed:
                c = clients[i] = RawNative(st.xmpp_port).login(*online[i], resource="again")
            r = iq(c, f"<iq type='get' id='rg{i}'><query xmlns='{NS_ROSTER}'/></iq>", f"rg{i}")
            have = {it.get("jid") for it in r.iter(f"{{{NS_ROSTER}}}item")}
        except (AssertionError, StreamClosed) as e:
            problems.append(f"rosters: {online[i][0]}: roster get: {e}")
            continue
        if not roster_want[i] <= have:
            problems.append(f"rosters: {online[i][0]} lost {sorted(roster_want[i] - have)}")

    # Offline messages: every one not bounced is delivered exactly once.
    bounced = set()
    for c in clients:
        for el in c.stanzas:
            if (el.tag == f"{{{NS_CLIENT}}}message" and el.get("type") == "error"
                    and (el.get("id") or "").startswith("off")):
                bounced.add(el.get("id"))
    expect = {}
    for mid, (_, k) in sent_offline.items():
        if mid not in bounced:
            expect.setdefault(k, set()).add(mid)
    back = {}
    for k, (name, pw) in enumerate(offline):
        try:
            back[k] = RawNative(st.xmpp_port).login(name, pw, resource="back")
            back[k].presence()
        except (AssertionError, StreamClosed) as e:
            problems.append(f"offline: {name} could not sign in: {e}")

    def all_in():
        pump_all(back.values(), 0.2)
        return all(len([b for b in o.bodies() if b.startswith("offline ")])
                   >= len(expect.get(k, ())) for k, o in back.items())
    try:
        wait_until(all_in, 15, "offline messages delivered", interval=0)
    except AssertionError:
        pass                        # reported per user below
    pump_all(back.values(), 1)      # and nothing more (duplicates) arrives
    for k, o in back.items():
        name = offline[k][0]
        got = [b.split(" ", 1)[1] for b in o.bodies() if b.startswith("offline ")]
        want = expect.get(k, set())
        dup = sorted({m for m in got if got.count(m) > 1})
        missing = sorted(want - set(got))
        if dup:
            problems.append(f"offline: {name} got {len(dup)} messages twice: {dup[:3]}")
        if missing:
            problems.append(f"offline: {name} missed {len(missing)} of {len(want)}: {missing[:3]}")
        o.close()

    for c in clients:
        c.close()
    assert not problems, (f"chaos ({chaos_log}; {len(sent_offline)} offline messages sent, "
                          f"{len(bounced)} bounced):\n" + "\n".join(problems))
