"""outage: helpers for the Redis-outage and teardown tests (test_45, test_46).

Why a module: both files replay parts of the 2012 outage (Redis at
maxclients, stray httpd children holding connections) against their own
stacks, and need the same raw-HTTP BOSH client, a CLIENT LIST sampler and a
way to find the httpd child that holds a given client connection.
"""

import base64
import os
import random
import re
import socket
import threading
import time
import xml.etree.ElementTree as ET

NS_HTTPBIND = "http://jabber.org/protocol/httpbind"
NS_XBOSH = "urn:xmpp:xbosh"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_CLIENT = "jabber:client"


def wait_until(check, timeout, what, interval=0.05):
    """Poll check() until true; returns its value. Fails after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        v = check()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(interval)          # polling interval, not synchronisation


# -- raw HTTP ---------------------------------------------------------------

class Answer:
    def __init__(self, status, headers, raw):
        self.status = status
        self.headers = headers
        self.raw = raw
        self.body = None
        if status == 200 and raw.startswith(b"<body"):
            self.body = ET.fromstring(raw)

    def __repr__(self):
        return f"<Answer {self.status} {self.headers} {self.raw[:300]!r}>"


def send_request(sock, port, data):
    data = data.encode() if isinstance(data, str) else data
    sock.sendall(b"POST /http-bind HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                 b"Content-Type: text/xml; charset=utf-8\r\nContent-Length: %d\r\n"
                 b"Connection: close\r\n\r\n" % (port, len(data)) + data)


def read_answer(sock):
    """Read one HTTP/1.1 answer (Connection: close). Raises ConnectionError
    when the server side went away before a complete answer."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed before headers: {buf!r}")
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, v = line.split(":", 1)
        headers[k.strip().lower()] = v.strip()
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed mid-body")
        rest += chunk
    return Answer(status, headers, rest[:length])


def post(port, data, timeout=30):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        send_request(s, port, data)
        return read_answer(s)


def creation_body(rid, wait=30, hold=1, to="localhost"):
    return (f"<body rid='{rid}' to='{to}' xml:lang='en' wait='{wait}' hold='{hold}' "
            f"content='text/xml; charset=utf-8' ver='1.6' xmpp:version='1.0' "
            f"xmlns='{NS_HTTPBIND}' xmlns:xmpp='{NS_XBOSH}'/>")


def create_session(port, timeout=30):
    """One session creation: ('ok', sid) | ('503', retry_after) | ('other', answer)."""
    a = post(port, creation_body(random.randint(1 << 20, 1 << 40)), timeout)
    if a.status == 200 and a.body is not None and a.body.get("sid"):
        return "ok", a.body.get("sid"), a
    if a.status == 503:
        return "503", a.headers.get("retry-after"), a
    return "other", None, a


# -- a raw BOSH session that signs in -----------------------------------------

class RawSession:
    """XEP-0124/0206 by hand: creation, SASL PLAIN, restart, bind. Every
    request is on its own TCP connection, so a test can hold one open and
    find the httpd child that serves it."""

    def __init__(self, port, user, password, resource, wait=5):
        self.port = port
        self.rid = random.randint(1 << 20, 1 << 40)
        self.stanzas = []            # every stanza received, in order
        a = post(port, creation_body(self.rid, wait=wait))
        assert a.status == 200 and a.body is not None and a.body.get("sid"), a
        self.sid = a.body.get("sid")
        self._collect(a)
        self._until(lambda: self._find("{http://etherx.jabber.org/streams}features"))
        auth = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        self.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{auth}</auth>")
        self._until(lambda: next((e for e in self.stanzas if e.tag in (
                    f"{{{NS_SASL}}}success", f"{{{NS_SASL}}}failure")), None),
                    "SASL answer")
        assert self._find(f"{{{NS_SASL}}}success") is not None, "SASL failure"
        self.rid += 1
        self._answer(post(port, f"<body rid='{self.rid}' sid='{self.sid}' to='localhost' "
                                f"xml:lang='en' xmpp:restart='true' xmlns='{NS_HTTPBIND}' "
                                f"xmlns:xmpp='{NS_XBOSH}'/>"))
        self.send(f"<iq type='set' id='b1' xmlns='{NS_CLIENT}'><bind xmlns='{NS_BIND}'>"
                  f"<resource>{resource}</resource></bind></iq>")
        iq = self._until(lambda: self._find(f"{{{NS_CLIENT}}}iq", id="b1"), "bind result")
        self.jid = iq.find(f"{{{NS_BIND}}}bind/{{{NS_BIND}}}jid").text
        self.send(f"<presence xmlns='{NS_CLIENT}'/>")

    def body(self, payload="", rid=None):
        rid = self.rid if rid is None else rid
        return (f"<body rid='{rid}' sid='{self.sid}' xmlns='{NS_HTTPBIND}'>"
                f"{payload}</body>")

    def _collect(self, a):
        if a.body is not None:
            assert a.body.get("type") != "terminate", a
            self.stanzas.extend(list(a.body))
        return a

    def _answer(self, a):
        assert a.status == 200, a
        return self._collect(a)

    def _find(self, tag, **attrs):
        for el in self.stanzas:
            if el.tag == tag and all(el.get(k) == v for k, v in attrs.items()):
                return el
        return None

    def send(self, payload=""):
        self.rid += 1
        return self._answer(post(self.port, self.body(payload)))

    def _until(self, check, what="answer", polls=5):
        for _ in range(polls):
            found = check()
            if found is not None:
                return found
            self.send("")
        raise AssertionError(f"{what}: not received; got {[e.tag for e in self.stanzas]}")

    def messages(self, body_text):
        return [e for e in self.stanzas if e.tag == f"{{{NS_CLIENT}}}message"
                and e.findtext(f"{{{NS_CLIENT}}}body") == body_text]

    def chat(self, to, text):
        self.send(f"<message to='{to}' type='chat' xmlns='{NS_CLIENT}'>"
                  f"<body>{text}</body></message>")


# -- Redis CLIENT LIST --------------------------------------------------------

def bosh_conns(stack):
    """mod_bosh's connections in CLIENT LIST: {pid: count}."""
    per_pid = {}
    for c in stack.redis_clients():
        m = re.match(r"mod_bosh:[^:]*:(\d+):", c.get("name", ""))
        if m:
            pid = int(m.group(1))
            per_pid[pid] = per_pid.get(pid, 0) + 1
    return per_pid


def named_conns(stack, prefix):
    return [c for c in stack.redis_clients() if c.get("name", "").startswith(prefix)]


class ClientListSampler:
    """Samples CLIENT LIST over a raw socket (no process per sample) in a
    thread, until stopped; keeps the worst totals seen."""

    def __init__(self, sock_path):
        self.sock_path = sock_path
        self.max_total = 0
        self.max_per_pid = 0
        self.samples = 0
        self.worst = None
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join(10)

    def _sample(self, s):
        s.sendall(b"CLIENT LIST\r\n")
        buf = b""
        while b"\r\n" not in buf:
            buf += s.recv(65536)
        head, rest = buf.split(b"\r\n", 1)
        if not head.startswith(b"$"):
            return
        n = int(head[1:])
        while len(rest) < n + 2:
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError
            rest += chunk
        per_pid = {}
        for line in rest[:n].decode().splitlines():
            m = re.search(r" name=mod_bosh:[^:]*:(\d+):", line)
            if m:
                per_pid[m.group(1)] = per_pid.get(m.group(1), 0) + 1
        total = sum(per_pid.values())
        self.samples += 1
        if total > self.max_total:
            self.max_total, self.worst = total, per_pid
        self.max_per_pid = max([self.max_per_pid] + list(per_pid.values()))

    def _run(self):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(self.sock_path)
            while not self._stop.is_set():
                self._sample(s)
                self._stop.wait(0.005)


# -- httpd processes ------------------------------------------------------------

def httpd_children(stack):
    """pids of the httpd parent's children (every generation)."""
    parent = stack.procs["httpd"].pid
    kids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(") ", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent and fields[0] != "Z":
            kids.append(int(d))
    return sorted(kids)


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def child_serving(stack, client_sock):
    """The httpd child holding the server side of client_sock, or None."""
    cport = client_sock.getsockname()[1]
    want = f"0100007F:{stack.http_port:04X} 0100007F:{cport:04X}"
    inode = None
    with open("/proc/net/tcp") as f:
        for line in f:
            parts = line.split()
            if f"{parts[1]} {parts[2]}" == want:
                inode = parts[9]
    if not inode or inode == "0":
        return None
    target = f"socket:[{inode}]"
    for pid in httpd_children(stack):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                        return pid
                except OSError:
                    pass
        except OSError:
            pass
    return None


def chatd_stat(stack, key):
    for line in stack.chatctl("stats").stdout.splitlines():
        k, _, v = line.partition(" ")
        if k == key:
            return int(v)
    raise KeyError(key)
