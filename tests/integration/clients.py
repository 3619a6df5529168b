"""clients: drive tests/clients/bosh-client.mjs (Strophe.js 5 under Node).

Each BoshClient is one node process speaking XMPP over BOSH to /http-bind.
Commands go to its stdin as JSON lines; every event it prints on stdout is
collected by a reader thread, and tests wait for events with a predicate and
a deadline (no sleeps).
"""

import json
import os
import queue
import subprocess
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLIENT_JS = os.path.join(REPO, "tests", "clients", "bosh-client.mjs")

FAILED_STATUSES = {"CONNFAIL", "AUTHFAIL", "DISCONNECTED", "ERROR", "CONNTIMEOUT", "BINDREQUIRED"}


class ClientError(AssertionError):
    pass


class BoshClient:
    def __init__(self, bosh_url, jid, password, mech="PLAIN", log_dir=None,
                 extra_args=()):
        self.jid = jid
        self.events = []               # every event so far, in order
        self._new = threading.Condition()
        self.stderr_path = None
        argv = ["node", CLIENT_JS, "--url", bosh_url, "--jid", jid,
                "--password", password, "--mech", mech, *extra_args]
        stderr = subprocess.DEVNULL
        if log_dir:
            argv.append("--debug")
            self.stderr_path = os.path.join(log_dir, f"client-{jid.replace('/', '_')}-{os.getpid()}-{id(self)}.log")
            stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=stderr, cwd=REPO)
        if stderr is not subprocess.DEVNULL:
            stderr.close()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.wait_event(lambda e: e.get("event") == "ready", 15, "client process ready")

    def _read(self):
        for line in self.proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                ev = {"event": "noise", "line": line.decode("utf-8", "replace")}
            with self._new:
                self.events.append(ev)
                self._new.notify_all()
        with self._new:
            self.events.append({"event": "exit"})
            self._new.notify_all()

    def send(self, cmd, **kw):
        kw["cmd"] = cmd
        self.proc.stdin.write((json.dumps(kw) + "\n").encode())
        self.proc.stdin.flush()

    def wait_event(self, pred, timeout=20, what="event", start=0):
        """First event (from index `start`) matching pred, within timeout."""
        deadline = time.monotonic() + timeout
        with self._new:
            while True:
                for ev in self.events[start:]:
                    if pred(ev):
                        return ev
                if any(ev.get("event") == "exit" for ev in self.events[start:]):
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._new.wait(left)
        raise ClientError(f"{self.jid}: no {what} within {timeout}s; events:\n" + self.dump())

    def dump(self, last=30):
        lines = [json.dumps(e)[:400] for e in self.events[-last:]]
        if self.stderr_path:
            lines.append(f"(client debug log: {self.stderr_path})")
        return "\n".join(lines)

    def connect(self, timeout=20):
        """Connect and bind; returns the full JID. Fails on any error status."""
        mark = len(self.events)
        self.send("connect")
        ev = self.wait_event(lambda e: e.get("event") == "status" and
                             (e["status"] == "CONNECTED" or e["status"] in FAILED_STATUSES),
                             timeout, "CONNECTED status", start=mark)
        if ev["status"] != "CONNECTED":
            raise ClientError(f"{self.jid}: connect ended with {ev['status']} "
                              f"({ev.get('cond')}); events:\n" + self.dump())
        return ev["jid"]

    def stanzas(self, start=0, **match):
        """Stanza events from index start whose fields equal match."""
        return [e for e in self.events[start:] if e.get("event") == "stanza"
                and all(e.get(k) == v for k, v in match.items())]

    def wait_stanza(self, timeout=20, start=0, what=None, **match):
        def pred(e):
            return e.get("event") == "stanza" and all(
                (v(e.get(k)) if callable(v) else e.get(k) == v) for k, v in match.items())
        return self.wait_event(pred, timeout, what or f"stanza {match}", start)

    def close(self):
        if self.proc.poll() is None:
            try:
                mark = len(self.events)
                self.send("disconnect")
                # let the terminate body go out, but do not insist
                try:
                    self.wait_event(lambda e: e.get("event") == "status" and
                                    e["status"] == "DISCONNECTED", 5, start=mark)
                except ClientError:
                    pass
                self.send("quit")
                self.proc.stdin.close()
            except (BrokenPipeError, OSError):
                pass
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
