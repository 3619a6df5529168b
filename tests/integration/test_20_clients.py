"""Real clients: Strophe.js 5 (the library inside Converse.js) under Node,
over BOSH through httpd + mod_bosh to chatd. Two users chat in the lobby
room and one to one."""

import secrets

import pytest

ROOM = "lobby@conference.localhost"


@pytest.fixture
def pair(users, bosh_client):
    """alice and bob, connected and available."""
    alice = bosh_client("alice@localhost/test", users["alice"])
    bob = bosh_client("bob@localhost/test", users["bob"])
    alice.jid_full = alice.connect()
    bob.jid_full = bob.connect()
    alice.send("presence")
    bob.send("presence")
    return alice, bob


def test_connect_sasl_plain_and_bind(users, bosh_client):
    c = bosh_client("alice@localhost/bind-test", users["alice"], mech="PLAIN")
    jid = c.connect()
    assert jid.startswith("alice@localhost/")


def test_connect_scram(users, bosh_client):
    c = bosh_client("bob@localhost/scram", users["bob"], mech="SCRAM-SHA-1")
    assert c.connect().startswith("bob@localhost/")


def test_wrong_password_is_refused(users, bosh_client):
    c = bosh_client("alice@localhost/wrong", "not-" + users["alice"])
    mark = len(c.events)
    c.send("connect")
    ev = c.wait_event(lambda e: e.get("event") == "status" and
                      e["status"] in ("AUTHFAIL", "CONNFAIL", "CONNECTED"),
                      20, "AUTHFAIL", start=mark)
    assert ev["status"] == "AUTHFAIL", c.dump()


def test_room_presence_and_groupchat(pair):
    alice, bob = pair
    a0, b0 = len(alice.events), len(bob.events)
    # nicks of their own, so a browser session of alice/bob never clashes
    tag = secrets.token_hex(2)
    an, bn = f"alice-{tag}", f"bob-{tag}"
    alice.send("join", room=ROOM, nick=an)
    alice.wait_stanza(start=a0, name="presence", **{"from": f"{ROOM}/{an}"})
    bob.send("join", room=ROOM, nick=bn)
    # each sees the other in the room
    bob.wait_stanza(start=b0, name="presence", **{"from": f"{ROOM}/{an}"})
    alice.wait_stanza(start=a0, name="presence", **{"from": f"{ROOM}/{bn}"})
    bob.wait_stanza(start=b0, name="presence", **{"from": f"{ROOM}/{bn}"})

    text = f"hello room {secrets.token_hex(4)}"
    alice.send("groupchat", to=ROOM, body=text)
    got = bob.wait_stanza(start=b0, name="message", type="groupchat", body=text)
    assert got["from"] == f"{ROOM}/{an}"
    # the room reflects the message to its sender too
    alice.wait_stanza(start=a0, name="message", type="groupchat", body=text)

    reply = f"hi alice {secrets.token_hex(4)}"
    bob.send("groupchat", to=ROOM, body=reply)
    got = alice.wait_stanza(start=a0, name="message", type="groupchat", body=reply)
    assert got["from"] == f"{ROOM}/{bn}"


def test_one_to_one_chat(pair):
    alice, bob = pair
    a0, b0 = len(alice.events), len(bob.events)
    text = f"psst bob {secrets.token_hex(4)}"
    alice.send("chat", to=bob.jid_full, body=text)
    got = bob.wait_stanza(start=b0, name="message", type="chat", body=text)
    assert got["from"].startswith("alice@localhost/")

    reply = f"hey alice {secrets.token_hex(4)}"
    bob.send("chat", to=alice.jid_full, body=reply)
    got = alice.wait_stanza(start=a0, name="message", type="chat", body=reply)
    assert got["from"].startswith("bob@localhost/")


def test_message_burst_arrives_in_order(pair):
    alice, bob = pair
    b0 = len(bob.events)
    tag = secrets.token_hex(3)
    texts = [f"burst {tag} {i}" for i in range(20)]
    for t in texts:
        alice.send("chat", to=bob.jid_full, body=t)
    bob.wait_stanza(start=b0, name="message", body=texts[-1], timeout=30)
    got = [e["body"] for e in bob.stanzas(start=b0, name="message", type="chat")
           if e["body"] and e["body"].startswith(f"burst {tag} ")]
    assert got == texts
