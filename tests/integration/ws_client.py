"""ws_client: a small RFC 6455 client on the stdlib socket module, for the
WebSocket tests (test_66_websocket.py).

Why hand-written: the tests must send what no stock client sends (unmasked
frames, bad UTF-8, oversized or interleaved fragments, a foreign Origin)
and read exactly what comes back (the HTTP status of a refused handshake,
the close code). Stock clients are tested too: Strophe.js over WebSocket
(tests/clients/bosh-client.mjs with a ws:// URL) and Converse.js in
Chromium.
"""

import base64
import hashlib
import os
import socket
import ssl
import struct
import time
import xml.etree.ElementTree as ET

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
NS_FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_STREAMS = "http://etherx.jabber.org/streams"


class Closed(Exception):
    """The server closed the WebSocket: code (None: no close frame) and reason."""

    def __init__(self, code, reason):
        super().__init__(f"closed with {code} {reason!r}")
        self.code, self.reason = code, reason


def frame(opcode, payload=b"", fin=True, mask=True, rsv=0):
    """One client frame (masked unless mask=False)."""
    if isinstance(payload, str):
        payload = payload.encode()
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    n = len(payload)
    mbit = 0x80 if mask else 0
    if n < 126:
        head = struct.pack("!BB", b0, mbit | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        head = struct.pack("!BBQ", b0, mbit | 127, n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i & 3] for i, b in enumerate(payload))


class WsClient:
    def __init__(self, port, path="/xmpp-websocket", origin=None, protocol="xmpp",
                 host=None, tls=False, timeout=20, extra_headers=()):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            self.sock = ctx.wrap_socket(self.sock)
        self.buf = b""
        self.host = host or f"127.0.0.1:{port}"
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [f"GET {path} HTTP/1.1", f"Host: {self.host}", "Upgrade: websocket",
                 "Connection: Upgrade", f"Sec-WebSocket-Key: {key}",
                 "Sec-WebSocket-Version: 13"]
        if protocol:
            lines.append(f"Sec-WebSocket-Protocol: {protocol}")
        if origin:
            lines.append(f"Origin: {origin}")
        lines += list(extra_headers)
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = self._read_until(b"\r\n\r\n")
        status_line, *hdrs = head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split()[1])
        self.headers = {}
        for h in hdrs:
            if ":" in h:
                k, v = h.split(":", 1)
                self.headers[k.strip().lower()] = v.strip()
        self.accepted = self.status == 101
        if self.accepted:
            want = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
            assert self.headers.get("sec-websocket-accept") == want, self.headers
        else:
            # The error body, for messages (Content-Length, then close).
            n = int(self.headers.get("content-length", "0"))
            self.body = self._read_exact(n) if n else b""

    # -- bytes --------------------------------------------------------------
    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise Closed(None, "EOF")
        self.buf += data

    def _read_until(self, marker):
        while marker not in self.buf:
            self._fill()
        i = self.buf.index(marker) + len(marker)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def _read_exact(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def send_raw(self, data):
        self.sock.sendall(data)

    def send_text(self, text):
        self.sock.sendall(frame(1, text))

    # -- frames -------------------------------------------------------------
    def recv_frame(self):
        """(opcode, payload) of the next frame; server frames are unmasked."""
        b0, b1 = self._read_exact(2)
        assert not b1 & 0x80, "server frames must not be masked"
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._read_exact(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._read_exact(8))[0]
        return b0 & 0x0F, self._read_exact(n)

    def recv_message(self, timeout=20):
        """The next text message (answering pings); Closed on a close frame."""
        self.sock.settimeout(timeout)
        while True:
            op, payload = self.recv_frame()
            if op == 1:
                return payload.decode()
            if op == 9:
                self.sock.sendall(frame(10, payload))
            elif op == 8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                raise Closed(code, payload[2:].decode("utf-8", "replace"))

    def recv_element(self, timeout=20):
        return ET.fromstring(self.recv_message(timeout))

    def wait_close(self, timeout=20):
        """Read until the server's close frame; returns (code, reason, texts
        seen). code is None when the connection ended without a close
        frame, "timeout" when nothing ended it within timeout."""
        seen = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                seen.append(self.recv_message(max(0.1, deadline - time.monotonic())))
            except Closed as c:
                return c.code, c.reason, seen
            except (socket.timeout, TimeoutError):
                return "timeout", "", seen

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    # -- XMPP (RFC 7395) ----------------------------------------------------
    def open_stream(self, domain="localhost"):
        """Send <open/>; returns (server <open/>, <stream:features>)."""
        self.send_text(f"<open xmlns='{NS_FRAMING}' to='{domain}' version='1.0'/>")
        opened = self.recv_element()
        features = self.recv_element()
        return opened, features

    @staticmethod
    def mechanisms(features):
        return [m.text for m in features.iter(f"{{{NS_SASL}}}mechanism")]

    def scram_sha1_login(self, user, password, domain="localhost", resource="ws"):
        """SCRAM-SHA-1 sign-in, stream restart and bind; returns the bound JID."""
        import hmac
        cnonce = base64.b64encode(os.urandom(18)).decode()
        first_bare = f"n={user},r={cnonce}"
        msg = base64.b64encode(("n,," + first_bare).encode()).decode()
        self.send_text(f"<auth xmlns='{NS_SASL}' mechanism='SCRAM-SHA-1'>{msg}</auth>")
        ch = self.recv_element()
        assert ch.tag == f"{{{NS_SASL}}}challenge", ET.tostring(ch)
        server_first = base64.b64decode(ch.text).decode()
        attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
        salt, it, nonce = base64.b64decode(attrs["s"]), int(attrs["i"]), attrs["r"]
        salted = hashlib.pbkdf2_hmac("sha1", password.encode(), salt, it)
        ckey = hmac.new(salted, b"Client Key", hashlib.sha1).digest()
        stored = hashlib.sha1(ckey).digest()
        final_wo = f"c=biws,r={nonce}"
        auth_msg = f"{first_bare},{server_first},{final_wo}".encode()
        sig = hmac.new(stored, auth_msg, hashlib.sha1).digest()
        proof = base64.b64encode(bytes(a ^ b for a, b in zip(ckey, sig))).decode()
        final = base64.b64encode(f"{final_wo},p={proof}".encode()).decode()
        self.send_text(f"<response xmlns='{NS_SASL}'>{final}</response>")
        ok = self.recv_element()
        assert ok.tag == f"{{{NS_SASL}}}success", ET.tostring(ok)
        self.open_stream(domain)
        self.send_text("<iq type='set' id='b1' xmlns='jabber:client'>"
                       "<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                       f"<resource>{resource}</resource></bind></iq>")
        res = self.recv_element()
        jid = res.find(".//{urn:ietf:params:xml:ns:xmpp-bind}jid")
        assert res.get("type") == "result" and jid is not None, ET.tostring(res)
        return jid.text
