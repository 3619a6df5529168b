"""Loose ends from the engineers' reports, each shown the way a user meets it.

1. chatctl with neither -c nor -r reads /etc/chatd/chatd.conf when there
   is one (run in a private mount namespace with an overlay on /etc, so
   the machine's /etc is never touched), else chatd's defaults.
2. relay_max_output: a relay connection (an httpd child) that stops
   reading its answers is closed once they pass the cap; its held request
   is released and its answer kept for the client's retransmission, which
   a new connection gets at once.
3. The single sign-on display name is the vCard FN of a user who has not
   stored a vCard of their own (what Strophe.js receives).
4. XEP-0045 voice in a moderated room, no status 210 (chatd never changes
   a requested nick), and destroying a room through muc#owner <destroy/>.
"""

import base64
import os
import re
import secrets
import shutil
import socket
import struct
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

import pytest

import chatstack
import outage

MUC = "conference.localhost"
BOSH_NS = "http://jabber.org/protocol/httpbind"
MUC_USER = "http://jabber.org/protocol/muc#user"
MUC_ADMIN = "http://jabber.org/protocol/muc#admin"
MUC_OWNER = "http://jabber.org/protocol/muc#owner"


def wait_until(pred, what, timeout=10):
    return outage.wait_until(pred, timeout, what)


# -- 1. chatctl's default configuration file -----------------------------------

def chatctl_with_etc(stack, conf_path, *args):
    """build/chatctl ARGS (no -c, no -r) in a mount namespace whose /etc is
    an overlay: /etc/chatd is removed there, and conf_path (if given) is
    copied to /etc/chatd/chatd.conf. Only this process sees it."""
    d = tempfile.mkdtemp(prefix="etc95-")
    os.makedirs(os.path.join(d, "upper"))
    os.makedirs(os.path.join(d, "work"))
    script = ('set -e; mount --make-rprivate /; '
              'mount -t overlay overlay -o lowerdir=/etc,upperdir="$U",workdir="$W" /etc; '
              'rm -rf /etc/chatd; '
              'if [ -n "$CONF" ]; then mkdir /etc/chatd; cp "$CONF" /etc/chatd/chatd.conf; fi; '
              'exec "$@"')
    env = dict(os.environ, U=os.path.join(d, "upper"), W=os.path.join(d, "work"),
               CONF=conf_path or "")
    try:
        return subprocess.run(["unshare", "-m", "sh", "-c", script, "sh",
                               stack.chatctl_bin, *args],
                              capture_output=True, text=True, timeout=30, env=env)
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def can_overlay_etc():
    if os.geteuid() != 0:
        pytest.skip("needs root for a private mount namespace (make test runs as root)")
    r = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"unshare -m not permitted here: {r.stderr!r}")


def test_chatctl_reads_etc_chatd_conf_by_default(stack, can_overlay_etc):
    name = f"le{secrets.token_hex(4)}"
    stack.add_user(name)
    # /etc/chatd/chatd.conf is this stack's file: `chatctl users` (no -c)
    # lists this stack's users, so it talked to this stack's Redis.
    r = chatctl_with_etc(stack, stack.chatd_conf, "users")
    assert r.returncode == 0, r
    assert name in r.stdout.split(), r.stdout
    # ... and its admin socket: stats come from this chatd.
    r = chatctl_with_etc(stack, stack.chatd_conf, "stats")
    assert r.returncode == 0 and "relay_conns" in r.stdout, r
    # Without the file: chatd's defaults (redis://127.0.0.1:6379/0), which
    # are not this stack, whatever else may listen there.
    r = chatctl_with_etc(stack, None, "users")
    assert name not in r.stdout.split(), r
    # A file that is there but broken is reported, never skipped over.
    bad = os.path.join(stack.root, "broken95.conf")
    with open(bad, "w") as f:
        f.write("no_such_key 1\n")
    r = chatctl_with_etc(stack, bad, "users")
    assert r.returncode == 3, r
    assert "/etc/chatd/chatd.conf:1" in r.stderr and "no_such_key" in r.stderr, r.stderr


# -- 2. relay_max_output -----------------------------------------------------------

RELAY_HELLO, RELAY_WELCOME, RELAY_REQUEST, RELAY_RESPONSE = 1, 2, 3, 4
RT_PEER_NAME, RT_BODY, RT_CLIENT_ADDR, RT_HTTP_STATUS = 1, 10, 11, 20
RELAY_CAP = 65536


def field(tag, data):
    return struct.pack(">HI", tag, len(data)) + data


def frame(ftype, req_id, payload=b""):
    return struct.pack(">BBHII", 1, ftype, 0, req_id, len(payload)) + payload


def request(req_id, body):
    return frame(RELAY_REQUEST, req_id,
                 field(RT_BODY, body.encode()) + field(RT_CLIENT_ADDR, b"127.0.0.1"))


class Relay:
    """A hand-driven relay client (common/RELAY.md), playing an httpd child."""

    def __init__(self, path, name):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(10)
        self.s.connect(path)
        self.buf = b""
        self.s.sendall(frame(RELAY_HELLO, 0, field(RT_PEER_NAME, name.encode())))
        assert self.read_frame()[0] == RELAY_WELCOME

    def read_frame(self, timeout=10):
        self.s.settimeout(timeout)
        while True:
            if len(self.buf) >= 12:
                _, ftype, _, req_id, length = struct.unpack(">BBHII", self.buf[:12])
                if len(self.buf) >= 12 + length:
                    payload = self.buf[12:12 + length]
                    self.buf = self.buf[12 + length:]
                    return ftype, req_id, self.fields(payload)
            chunk = self.s.recv(65536)
            if not chunk:
                raise EOFError("relay connection closed")
            self.buf += chunk

    @staticmethod
    def fields(payload):
        out, pos = {}, 0
        while pos + 6 <= len(payload):
            tag, n = struct.unpack(">HI", payload[pos:pos + 6])
            out.setdefault(tag, payload[pos + 6:pos + 6 + n])
            pos += 6 + n
        return out

    def answer(self, req_id, timeout=10):
        """The RESPONSE to req_id: (http status, body text)."""
        while True:
            ftype, rid, f = self.read_frame(timeout)
            if ftype == RELAY_RESPONSE and rid == req_id:
                return struct.unpack(">H", f[RT_HTTP_STATUS])[0], f[RT_BODY].decode()

    def close(self):
        self.s.close()


@pytest.fixture(scope="module")
def capped():
    """Redis + a chatd with a small relay_max_output (no httpd needed)."""
    root = tempfile.mkdtemp(prefix="chat95relay-")
    st = chatstack.Stack(root, chatd_extra={"relay_max_output": str(RELAY_CAP)})
    st.write_configs()
    try:
        st.start_redis()
        st.start_chatd()
    except chatstack.StackError as e:
        st.stop()
        pytest.fail(str(e), pytrace=False)
    yield st
    status = st.stop()
    assert status["chatd"] == 0, st.logs_tail()
    shutil.rmtree(root, ignore_errors=True)


def stat(st, key):
    out = st.chatctl("stats").stdout
    m = re.search(rf"^{key} (\d+)$", out, re.M)
    assert m, out
    return int(m.group(1))


def test_stuck_child_is_cut_off_and_its_held_request_kept(capped):
    st = capped
    stuck = Relay(st.relay_sock, "test95:stuck")
    rid = 5000 + secrets.randbelow(10**6)
    stuck.s.sendall(request(1, f"<body xmlns='{BOSH_NS}' xmlns:xmpp='urn:xmpp:xbosh' "
                               f"rid='{rid}' to='localhost' wait='60' hold='1' ver='1.6' "
                               f"xmpp:version='1.0'/>"))
    status, text = stuck.answer(1)
    assert status == 200, text
    sid = re.search(r"sid='([^']+)'", text).group(1)
    # rid+1, empty: held (wait 60 s) on this connection.
    stuck.s.sendall(request(2, f"<body xmlns='{BOSH_NS}' rid='{rid + 1}' sid='{sid}'/>"))

    # The child stops reading; its clients keep sending (unknown sid: each
    # is answered at once with a terminate body of ~150 bytes).
    junk = b"".join(request(10 + i, f"<body xmlns='{BOSH_NS}' rid='{i + 1}' sid='nosuch95'/>")
                    for i in range(200))
    sent, closed = 0, None
    stuck.s.settimeout(10)
    for _ in range(100):            # 20000 requests: ~3 MB of answers without a cap
        try:
            stuck.s.sendall(junk)
            sent += 200
        except (BrokenPipeError, ConnectionResetError) as e:
            closed = e
            break
    assert closed, f"chatd kept a connection with {sent} unread answers open:\n{st.logs_tail()}"
    stuck.close()

    with open(st.chatd_log, errors="replace") as f:
        log = f.read()
    assert re.search(r"relay: test95:stuck has \d+ bytes of answers unread "
                     rf"\(relay_max_output {RELAY_CAP}\): closing", log), log[-3000:]
    assert stat(st, "relay_overflows") == 1
    wait_until(lambda: stat(st, "relay_conns") == 0, "relay_conns 0")

    # The held request was released when the connection went: the session
    # lives on, and the client's retransmission of rid+1 (through another
    # child) is answered at once from the buffer, not held for 60 s.
    fresh = Relay(st.relay_sock, "test95:fresh")
    t0 = time.monotonic()
    fresh.s.sendall(request(1, f"<body xmlns='{BOSH_NS}' rid='{rid + 1}' sid='{sid}'/>"))
    status, text = fresh.answer(1, timeout=20)
    assert time.monotonic() - t0 < 10, "the retransmission was held, not answered"
    assert status == 200 and "terminate" not in text, text
    fresh.close()
    assert stat(st, "relay_overflows") == 1


# -- 3. SSO display name as vCard FN -----------------------------------------------

def sso_sign_in(stack, user):
    """Sign `user` in through /sso/http-bind (SASL EXTERNAL), as test_70 does:
    chatd stores the display name the site gave (X-Remote-Name)."""
    auth = {"Authorization": "Basic " + base64.b64encode(
        f"{user}:{stack.sso_users[user]}".encode()).decode(),
        "Content-Type": "text/xml; charset=utf-8"}

    def post(body):
        req = urllib.request.Request(stack.sso_bosh_url, data=body.encode(), headers=auth,
                                     method="POST")
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.read().decode()
    rid = 1000 + secrets.randbelow(10**8)
    text = post(f"<body xmlns='{BOSH_NS}' xmlns:xmpp='urn:xmpp:xbosh' rid='{rid}' "
                f"to='localhost' wait='5' hold='1' ver='1.6' xmpp:version='1.0'/>")
    sid = re.search(r"sid='([^']+)'", text).group(1)
    text = post(f"<body xmlns='{BOSH_NS}' rid='{rid + 1}' sid='{sid}'><auth "
                f"xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>=</auth></body>")
    assert "<success" in text, text
    post(f"<body xmlns='{BOSH_NS}' rid='{rid + 2}' sid='{sid}' type='terminate'/>")


def vcard_of(client, jid):
    cid = secrets.token_hex(4)
    mark = len(client.events)
    client.send("vcard_get", jid=jid, id=cid)
    ev = client.wait_event(lambda e: e.get("event") == "iq" and e.get("id") == cid,
                           20, f"vCard of {jid}", start=mark)
    assert ev["type"] == "result", ev
    return ev["xml"]


def fn_of(xml):
    m = re.search(r"<FN>([^<]*)</FN>", xml)
    return m.group(1) if m else None


def test_sso_name_is_the_vcard_fn_until_one_is_stored(stack, users, bosh_client, new_user):
    stack.redis_cli("DEL", "chat:vcard:carol")
    sso_sign_in(stack, "carol")
    assert stack.redis_cli("HGET", "chat:user:carol", "name") == "Carol Example"
    alice = bosh_client("alice@localhost", users["alice"])
    alice.connect()
    # Strophe.js (what Converse.js runs) asks for carol's vCard.
    assert fn_of(vcard_of(alice, "carol@localhost")) == "Carol Example"

    # A user with a vCard of their own keeps it, whatever the site says.
    name, pw = new_user("vc")
    stack.redis_cli("HSET", f"chat:user:{name}", "name", "Name From The Site")
    owner = bosh_client(f"{name}@localhost", pw)
    owner.connect()
    assert fn_of(vcard_of(alice, f"{name}@localhost")) == "Name From The Site"
    cid = secrets.token_hex(4)
    mark = len(owner.events)
    owner.send("vcard_set", fn="Chosen <Name> & Co", id=cid)
    ev = owner.wait_event(lambda e: e.get("event") == "iq" and e.get("id") == cid,
                          20, "vcard_set answer", start=mark)
    assert ev["type"] == "result", ev
    assert fn_of(vcard_of(alice, f"{name}@localhost")) == "Chosen &lt;Name&gt; &amp; Co"

    # No name and no vCard: an empty vCard, as before.
    plain, _ = new_user("vn")
    xml = vcard_of(alice, f"{plain}@localhost")
    assert "vcard-temp" in xml and fn_of(xml) is None, xml


# -- 4. MUC: voice, no 210, destroy ---------------------------------------------------

def room_name():
    return f"room95-{secrets.token_hex(4)}@{MUC}"


@pytest.fixture
def three(new_user, bosh_client):
    out = []
    for prefix in ("va", "vb", "vc"):
        name, pw = new_user(prefix)
        c = bosh_client(f"{name}@localhost/strophe", pw)
        c.full = c.connect()
        c.nick = name
        c.send("presence")
        out.append(c)
    return out


def join(client, room, nick):
    mark = len(client.events)
    client.send("join", room=room, nick=nick)
    return client.wait_stanza(start=mark, name="presence", what=f"self-presence in {room}",
                              **{"from": f"{room}/{nick}",
                                 "xml": lambda x: re.search(r"code=[\"']110[\"']", x)})


def raw_iq(client, to, typ, child):
    cid = "le" + secrets.token_hex(4)
    mark = len(client.events)
    client.send("raw", xml=f"<iq xmlns='jabber:client' type='{typ}' to='{to}' id='{cid}'>"
                           f"{child}</iq>")
    return client.wait_stanza(start=mark, name="iq", id=cid, what=f"answer to iq {cid}")


def role_in(xml):
    m = re.search(r"<item [^>]*role=[\"'](\w+)[\"']", xml)
    return m.group(1) if m else None


def error_of(ev):
    m = re.search(r"<error[^>]*type=[\"'](\w+)[\"'][^>]*>\s*<([a-z-]+)", ev["xml"])
    return (m.group(1), m.group(2)) if m else None


def set_role(moderator, room, nick, role, watchers):
    marks = [len(w.events) for w in watchers]
    ans = raw_iq(moderator, room, "set",
                 f"<query xmlns='{MUC_ADMIN}'><item nick='{nick}' role='{role}'/></query>")
    assert ans["type"] == "result", ans
    for w, m in zip(watchers, marks):
        p = w.wait_stanza(start=m, name="presence", **{"from": f"{room}/{nick}"},
                          what=f"presence of {nick} as {role}",
                          xml=lambda x: role_in(x) == role)
        assert p["type"] is None, p


def groupchat_refused(sender, room, body):
    mark = len(sender.events)
    sender.send("groupchat", to=room, body=body, msgid="m" + secrets.token_hex(3))
    err = sender.wait_stanza(start=mark, name="message", type="error", what="groupchat error")
    return error_of(err)


def test_voice_in_a_moderated_room(three):
    owner, guest, other = three
    room = room_name()
    join(owner, room, owner.nick)
    cid = secrets.token_hex(4)
    mark = len(owner.events)
    owner.send("room_config", room=room, id=cid,
               fields={"muc#roomconfig_moderatedroom": True})
    ev = owner.wait_event(lambda e: e.get("event") == "iq" and e.get("id") == cid,
                          20, "room_config", start=mark)
    assert ev["type"] == "result", ev

    # No affiliation in a moderated room: a visitor, without voice.
    assert role_in(join(guest, room, guest.nick)["xml"]) == "visitor"
    join(other, room, other.nick)
    mark_o = len(owner.events)
    assert groupchat_refused(guest, room, "may I speak?") == ("auth", "forbidden")

    # A moderator grants voice: everyone sees the new role; then it works.
    set_role(owner, room, guest.nick, "participant", [owner, guest, other])
    guest.send("groupchat", to=room, body="thank you")
    owner.wait_stanza(start=mark_o, name="message", type="groupchat", body="thank you",
                      **{"from": f"{room}/{guest.nick}"})
    # Only the granted message ever reached the room.
    assert not owner.stanzas(mark_o, name="message", body="may I speak?")

    # A participant cannot hand out voice (only moderators set roles).
    ans = raw_iq(guest, room, "set",
                 f"<query xmlns='{MUC_ADMIN}'><item nick='{other.nick}' role='moderator'/></query>")
    assert ans["type"] == "error", ans

    # Voice revoked: visitor again, and refused again.
    set_role(owner, room, guest.nick, "visitor", [owner, guest, other])
    mark_o = len(owner.events)
    assert groupchat_refused(guest, room, "once more") == ("auth", "forbidden")
    assert not owner.stanzas(mark_o, name="message", body="once more")


def test_requested_nick_is_kept_exactly_no_status_210(three):
    a, b, _ = three
    room = room_name()
    join(a, room, a.nick)
    nick = "Ünï Cödé MixedCase"
    mark_a = len(a.events)
    self_p = join(b, room, nick)        # self-presence from room/<exactly that nick>
    assert not re.search(r"code=[\"']210[\"']", self_p["xml"]), self_p
    seen = a.wait_stanza(start=mark_a, name="presence", **{"from": f"{room}/{nick}"})
    assert not re.search(r"code=[\"']210[\"']", seen["xml"]), seen


def test_owner_destroys_room_with_reason(stack, three):
    owner, guest, _ = three
    room = room_name()
    join(owner, room, owner.nick)
    cid = secrets.token_hex(4)
    mark = len(owner.events)
    owner.send("room_config", room=room, id=cid,
               fields={"muc#roomconfig_persistentroom": True})
    assert owner.wait_event(lambda e: e.get("event") == "iq" and e.get("id") == cid,
                            20, "room_config", start=mark)["type"] == "result"
    join(guest, room, guest.nick)
    owner.send("groupchat", to=room, body="kept in history")
    # The room's state is in Redis before it is destroyed.
    wait_until(lambda: stack.redis_cli("EXISTS", f"chat:room:{room}") == "1", "room record")
    wait_until(lambda: stack.redis_cli("LLEN", f"chat:history:{room}") not in ("", "0"),
               "room history in Redis")

    destroy = (f"<query xmlns='{MUC_OWNER}'><destroy jid='lobby@{MUC}'>"
               f"<reason>Moving to the lobby</reason></destroy></query>")
    # Not the owner: refused, nothing happens.
    ans = raw_iq(guest, room, "set", destroy)
    assert ans["type"] == "error" and error_of(ans) == ("auth", "forbidden"), ans
    assert stack.redis_cli("EXISTS", f"chat:room:{room}") == "1"

    marks = [len(owner.events), len(guest.events)]
    ans = raw_iq(owner, room, "set", destroy)
    assert ans["type"] == "result", ans
    for c, m in zip((owner, guest), marks):
        p = c.wait_stanza(start=m, name="presence", type="unavailable",
                          **{"from": f"{room}/{c.nick}"}, what="destroy presence",
                          xml=lambda x: "<destroy" in x)
        assert re.search(rf"<destroy[^>]*jid=[\"']lobby@{re.escape(MUC)}[\"']", p["xml"]), p
        assert "<reason>Moving to the lobby</reason>" in p["xml"], p
        assert role_in(p["xml"]) == "none", p
        # XEP-0045 10.9: the room is gone, so is everyone's affiliation
        # (the owner's too; it said 'owner' before)
        assert re.search(r"<item[^>]*affiliation=[\"']none[\"']", p["xml"]), p
    wait_until(lambda: stack.redis_cli("EXISTS", f"chat:room:{room}", f"chat:history:{room}")
               == "0", "room keys deleted")
    assert room not in stack.chatctl("rooms", "list").stdout
    # Joining again makes a new room, with no history from the old one.
    mark = len(guest.events)
    p = join(guest, room, guest.nick)
    assert re.search(r"code=[\"']201[\"']", p["xml"]), p
    # history comes before the subject, which ends the join
    guest.wait_stanza(start=mark, name="message", xml=lambda x: "<subject" in x)
    assert not guest.stanzas(mark, name="message", body="kept in history")
