"""storm_model: many BOSH clients reconnecting at once, each retrying the way
Strophe.js does, in one asyncio loop (raw HTTP, one connection per attempt).

Used by tests/integration/test_81_storm.py (about a thousand clients) and by
bench/storm.py (thousands, longer; timing goals live there).

The retry schedule is Strophe.js 5's for a session-creation request that
gets a 5xx or no answer (src/transports/bosh.ts _processRequest and
_onRequestStateChange; /work/shared/notes/bosh-facts.md, "HTTP status"):
the same body (same rid) is resent, the first resend at once, later ones
after min(floor(1.1 * wait), sends^3) seconds. Strophe itself ignores
Retry-After; this model honours it as well (it waits the longer of the
two), which is what a client that reads Retry-After does, and never gives
up (Strophe gives up after five failed sends; a page then reconnects with
a new rid, which is the same load on the gate).
"""

import asyncio
import random
import time

NS_HTTPBIND = "http://jabber.org/protocol/httpbind"
NS_XBOSH = "urn:xmpp:xbosh"


def strophe_backoff(sends, wait=60):
    """Seconds before the next send of a request already sent `sends` times."""
    if sends <= 1:
        return 0.0
    return float(min(int(1.1 * wait), sends ** 3))


class Attempt:
    __slots__ = ("client", "sent", "recv", "status", "retry_after", "kind")

    def __init__(self, client, sent):
        self.client, self.sent = client, sent
        self.recv = None
        self.status = 0          # 0: no HTTP answer (connect/read failure)
        self.retry_after = None
        self.kind = ""           # admitted | rate | closed | address | busy | other


def classify(status, body):
    if status == 200:
        return "admitted" if "sid=" in body and "type='terminate'" not in body \
            and 'type="terminate"' not in body else "other"
    if status == 503:
        if "too many sign-ins right now" in body:
            return "rate"
        if "closed" in body:
            return "closed"
        if "address" in body:
            return "address"
        if "busy" in body or "unavailable" in body:
            return "busy"
    return "other"


async def post_once(host, port, path, body, timeout):
    """One POST on a fresh connection. Returns (status, headers, text)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    try:
        req = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
               f"Content-Type: text/xml; charset=utf-8\r\n"
               f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body
        writer.write(req)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionError, OSError):
            pass
    head, _, rest = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1]) if lines and len(lines[0].split()) > 1 else 0
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, rest.decode("utf-8", "replace")


async def one_client(i, host, port, path, wait, attempts, start_at, timeout):
    rid = random.randint(1 << 20, 1 << 40)
    body = (f"<body rid='{rid}' to='localhost' xml:lang='en' wait='{wait}' hold='1' "
            f"content='text/xml; charset=utf-8' ver='1.6' xmpp:version='1.0' "
            f"xmlns='{NS_HTTPBIND}' xmlns:xmpp='{NS_XBOSH}'/>").encode()
    loop = asyncio.get_running_loop()
    await asyncio.sleep(max(0.0, start_at - loop.time()))
    sends = 0
    retry_after = 0
    while True:
        if sends:
            await asyncio.sleep(max(strophe_backoff(sends, wait), retry_after))
        sends += 1
        a = Attempt(i, time.monotonic())
        attempts.append(a)
        try:
            status, headers, text = await post_once(host, port, path, body, timeout)
        except (OSError, asyncio.TimeoutError, ValueError, IndexError):
            status, headers, text = 0, {}, ""
        a.recv = time.monotonic()
        a.status = status
        a.kind = classify(status, text) if status else "nohttp"
        try:
            a.retry_after = int(headers["retry-after"]) if "retry-after" in headers else None
        except ValueError:
            a.retry_after = None
        if a.kind == "admitted":
            return a
        retry_after = a.retry_after or 0


async def run_storm(host, port, nclients, path="/http-bind", wait=60, spread=0.0,
                    timeout=30.0, deadline=None):
    """All clients start within `spread` seconds (0: at once). Returns the
    list of every Attempt and the wall time."""
    attempts = []
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    tasks = [asyncio.create_task(one_client(i, host, port, path, wait, attempts,
                                            t0 + random.uniform(0, spread), timeout))
             for i in range(nclients)]
    done, pending = await asyncio.wait(tasks, timeout=deadline)
    for t in pending:
        t.cancel()
    return attempts, loop.time() - t0, len(pending)


def per_second(times, t0):
    """{second index since t0: count}."""
    out = {}
    for t in times:
        k = int(t - t0)
        out[k] = out.get(k, 0) + 1
    return out
