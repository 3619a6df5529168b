"""httpd graceful restart (-k graceful) under a live BOSH session.

The BOSH session lives in chatd, not in an httpd child, so a new generation
of children must carry on the same session: requests held by old children
are answered at once (RELAY_DRAIN), the client's next request lands on a new
child, and chat continues without a new sign-in.
"""

import secrets

from outage import wait_until


def count_in_log(path, needle):
    with open(path, errors="replace") as f:
        return f.read().count(needle)


def test_session_survives_graceful_restart(stack, users, bosh_client):
    alice = bosh_client("alice@localhost/graceful", users["alice"])
    bob = bosh_client("bob@localhost/graceful", users["bob"])
    alice_jid = alice.connect()
    bob_jid = bob.connect()
    alice.send("presence")
    bob.send("presence")

    b0 = len(bob.events)
    before = f"before restart {secrets.token_hex(3)}"
    alice.send("chat", to=bob_jid, body=before)
    bob.wait_stanza(start=b0, name="message", body=before)

    generations = count_in_log(stack.httpd_error_log, "resuming normal operations")
    stack.httpd_graceful()
    wait_until(lambda: count_in_log(stack.httpd_error_log, "resuming normal operations")
               > generations, 20, "httpd new generation")

    a0, b0 = len(alice.events), len(bob.events)
    after = f"after restart {secrets.token_hex(3)}"
    alice.send("chat", to=bob_jid, body=after)
    bob.wait_stanza(start=b0, name="message", body=after, timeout=30)
    reply = f"still here {secrets.token_hex(3)}"
    bob.send("chat", to=alice_jid, body=reply)
    alice.wait_stanza(start=a0, name="message", body=reply, timeout=30)

    # neither client saw its session end
    for c in (alice, bob):
        ends = [e for e in c.events if e.get("event") == "status"
                and e["status"] in ("CONNFAIL", "DISCONNECTED", "DISCONNECTING")]
        assert not ends, c.dump()
