"""raw_native: the cheapest real XMPP client the suite has, a plain socket
on chatd's native port (SASL PLAIN without TLS, which the test stack
allows), for tests that need many sessions (the chaos test runs 100) or
need to misbehave on purpose (stop reading, never answer pings, flood).

No threads, no parser library beyond ElementTree: incoming bytes are
buffered and split into top-level stanzas by a small incremental
XMLPullParser fed with a synthetic stream wrapper.
"""

import base64
import socket
import time
import xml.etree.ElementTree as ET

NS_CLIENT = "jabber:client"
NS_STREAMS = "http://etherx.jabber.org/streams"
NS_XSTREAMS = "urn:ietf:params:xml:ns:xmpp-streams"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_MUC = "http://jabber.org/protocol/muc"
NS_MUC_USER = "http://jabber.org/protocol/muc#user"

HEADER = ("<?xml version='1.0'?><stream:stream to='{domain}' version='1.0' "
          "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>")


def esc(text):
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace("'", "&apos;"))


class StreamClosed(Exception):
    pass


class RawNative:
    def __init__(self, port, host="127.0.0.1", domain="localhost", timeout=20, rcvbuf=None):
        self.domain = domain
        if rcvbuf:
            # A slow reader: a small window before connect, so the kernel
            # cannot absorb what the server sends.
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self.sock.settimeout(timeout)
            self.sock.connect((host, port))
        else:
            self.sock = socket.create_connection((host, port), timeout=timeout)
        self.stanzas = []          # every top-level element received, in order
        self.closed = False        # </stream:stream> or EOF seen
        self.stream_error = None   # condition of a <stream:error>, if any
        self._new_parser()
        self.jid = None

    def _new_parser(self):
        self._parser = ET.XMLPullParser(events=("start", "end"))
        self._depth = 0

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def open_stream(self):
        self._new_parser()
        self.send(HEADER.format(domain=self.domain))

    def _feed(self, chunk):
        self._parser.feed(chunk)
        for ev, el in self._parser.read_events():
            if ev == "start":
                self._depth += 1
            else:
                self._depth -= 1
                if self._depth == 1:
                    self.stanzas.append(el)
                    if el.tag == f"{{{NS_STREAMS}}}error":
                        for c in el:
                            if c.tag.startswith(f"{{{NS_XSTREAMS}}}") and not c.tag.endswith("}text"):
                                self.stream_error = c.tag.split("}")[1]
                elif self._depth == 0:
                    self.closed = True

    def pump(self, timeout):
        """Read what arrives within timeout (or until EOF)."""
        if self.closed:
            return
        self.sock.settimeout(timeout)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            return
        except OSError:
            self.closed = True
            return
        if not chunk:
            self.closed = True
            return
        try:
            self._feed(chunk)
        except ET.ParseError:
            self.closed = True

    def wait(self, pred, timeout=20, what="stanza", start=0):
        deadline = time.monotonic() + timeout
        while True:
            for el in self.stanzas[start:]:
                if pred(el):
                    return el
            if self.closed:
                raise StreamClosed(f"{what}: stream closed ({self.stream_error}); got "
                                   f"{[e.tag for e in self.stanzas[-5:]]}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{what}: not within {timeout}s; got "
                                     f"{[e.tag for e in self.stanzas[-5:]]}")
            self.pump(min(left, 0.5))

    def wait_closed(self, timeout=20):
        deadline = time.monotonic() + timeout
        while not self.closed:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"stream not closed within {timeout}s")
            self.pump(min(left, 0.5))

    def login(self, user, password, resource="raw", timeout=20):
        self.open_stream()
        self.wait(lambda e: e.tag == f"{{{NS_STREAMS}}}features", timeout, "features")
        cred = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        n = len(self.stanzas)
        self.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>"
                  f"{cred}</auth>")
        el = self.wait(lambda e: e.tag.endswith("}success") or e.tag.endswith("}failure"),
                       timeout, "SASL answer", start=n)
        assert el.tag.endswith("}success"), ET.tostring(el)
        self.open_stream()
        n = len(self.stanzas)
        self.wait(lambda e: e.tag == f"{{{NS_STREAMS}}}features", timeout, "features 2",
                  start=n)
        self.send("<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                  f"<resource>{esc(resource)}</resource></bind></iq>")
        iq = self.wait(lambda e: e.tag == f"{{{NS_CLIENT}}}iq" and e.get("id") == "bind1",
                       timeout, "bind")
        self.jid = iq.find(".//{urn:ietf:params:xml:ns:xmpp-bind}jid").text
        return self

    def presence(self):
        self.send("<presence/>")

    def chat(self, to, body, id_=None):
        idattr = f" id='{esc(id_)}'" if id_ else ""
        self.send(f"<message to='{esc(to)}' type='chat'{idattr}><body>{esc(body)}</body></message>")

    def join(self, room_jid, nick, timeout=20):
        n = len(self.stanzas)
        self.send(f"<presence to='{esc(room_jid)}/{esc(nick)}'><x xmlns='{NS_MUC}'>"
                  f"<history maxstanzas='0'/></x></presence>")
        return self.wait(lambda e: e.tag == f"{{{NS_CLIENT}}}presence"
                         and (e.get("from") or "").startswith(room_jid + "/")
                         and e.find(f".//{{{NS_MUC_USER}}}status[@code='110']") is not None,
                         timeout, f"join {room_jid}", start=n)

    def groupchat(self, room_jid, body):
        self.send(f"<message to='{esc(room_jid)}' type='groupchat'><body>{esc(body)}</body></message>")

    def bodies(self, start=0, type_=None):
        out = []
        for el in self.stanzas[start:]:
            if el.tag == f"{{{NS_CLIENT}}}message" and (type_ is None or el.get("type") == type_):
                b = el.find(f"{{{NS_CLIENT}}}body")
                if b is not None:
                    out.append(b.text or "")
        return out

    def close(self):
        try:
            if not self.closed:
                self.send("</stream:stream>")
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass
