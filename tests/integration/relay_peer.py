#!/usr/bin/python3
"""relay_peer: a stranger speaking the relay protocol (common/RELAY.md).

Run as its own process, so that tests can start it under another uid
(setpriv --reuid=nobody) and see what chatd does with a peer that is not
httpd. It connects, sends HELLO (with RT_SECRET when given), then one
REQUEST that asks chatd to prebind a session for a vouched user
(RT_AUTH_USER + RT_PREBIND): what any process that reaches the relay could
try to sign in as someone else. It prints one JSON object on stdout: the
frames it received (type, req_id, fields as text) and whether chatd
closed the connection.

    relay_peer.py unix:/path/relay.sock|tcp:host:port USER [--secret S] [--timeout N]
"""

import argparse
import json
import secrets
import socket
import struct
import sys

HELLO, WELCOME, REQUEST, RESPONSE, REFUSE = 1, 2, 3, 4, 9
RT_PEER_NAME, RT_SECRET = 1, 3
RT_BODY, RT_CLIENT_ADDR, RT_AUTH_USER, RT_PREBIND = 10, 11, 13, 16
BOSH_NS = "http://jabber.org/protocol/httpbind"


def field(tag, data):
    return struct.pack(">HI", tag, len(data)) + data


def frame(ftype, req_id, payload=b""):
    return struct.pack(">BBHII", 1, ftype, 0, req_id, len(payload)) + payload


def parse_fields(payload):
    out, pos = {}, 0
    while pos + 6 <= len(payload):
        tag, n = struct.unpack(">HI", payload[pos:pos + 6])
        out.setdefault(str(tag), payload[pos + 6:pos + 6 + n].decode("utf-8", "replace"))
        pos += 6 + n
    return out


def connect(url, timeout):
    if url.startswith("unix:"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect(url[5:])
        return s
    host, port = url[4:].rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=timeout)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("user")
    p.add_argument("--secret")
    p.add_argument("--timeout", type=float, default=10)
    a = p.parse_args()
    result = {"frames": [], "closed": False, "error": None}
    try:
        s = connect(a.url, a.timeout)
        hello = field(RT_PEER_NAME, b"relay_peer.py")
        if a.secret is not None:
            hello += field(RT_SECRET, a.secret.encode())
        rid = 1000 + secrets.randbelow(10**8)
        body = (f"<body xmlns='{BOSH_NS}' xmlns:xmpp='urn:xmpp:xbosh' rid='{rid}' "
                f"to='localhost' wait='10' hold='1' ver='1.6' xmpp:version='1.0'/>")
        req = (field(RT_BODY, body.encode()) + field(RT_CLIENT_ADDR, b"127.0.0.1") +
               field(RT_AUTH_USER, a.user.encode()) + field(RT_PREBIND, b"\x01"))
        s.sendall(frame(HELLO, 0, hello))
        buf = b""
        sent_request = False
        while True:
            while len(buf) >= 12:
                _, ftype, _, req_id, length = struct.unpack(">BBHII", buf[:12])
                if len(buf) < 12 + length:
                    break
                result["frames"].append({"type": ftype, "req_id": req_id,
                                         "fields": parse_fields(buf[12:12 + length])})
                buf = buf[12 + length:]
                if ftype == RESPONSE:
                    print(json.dumps(result))
                    return 0
            if result["frames"] and not sent_request:
                # Whatever chatd answered HELLO with, try the request: a
                # refused peer must not get it through either.
                sent_request = True
                try:
                    s.sendall(frame(REQUEST, 1, req))
                except OSError as e:
                    result["error"] = f"sending REQUEST: {e}"
            chunk = s.recv(65536)
            if not chunk:
                result["closed"] = True
                break
            buf += chunk
    except ConnectionResetError:
        result["closed"] = True
    except OSError as e:
        result["error"] = str(e)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
