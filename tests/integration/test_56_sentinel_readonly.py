"""Redis HA (issue 16): chatd drops a connection that answers -READONLY and
asks the sentinels again, and takes no server as master before ROLE says so.

Deterministic, so no real sentinels: a fake sentinel (a few lines of RESP
below) names whichever server the test says. Two redis-servers, A and B.
chatd (alone, no httpd) starts with A as master; then A is made a replica of
B by hand while the fake sentinel still names A: the next write (a native
sign-in's admission script) gets -READONLY, chatd drops the connection and
asks again, gets A again, and refuses it because ROLE says slave; sign-in
answers "try again" meanwhile. Once the fake sentinel names B, sign-in
works by itself and CLIENT LIST on B shows chatd's named connections.
"""

import os
import shutil
import socket
import subprocess
import tempfile
import threading

import pytest

import chatstack
from outage import wait_until
from signin_util import native_login


class FakeSentinel:
    """Answers SENTINEL get-master-addr-by-name with self.port; +OK to
    CLIENT SETNAME / AUTH; counts the questions."""

    def __init__(self, port):
        self.port = port
        self.asked = 0
        self.names = []
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.addr = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    @staticmethod
    def _read_command(f):
        line = f.readline()
        if not line or not line.startswith(b"*"):
            return None
        args = []
        for _ in range(int(line[1:])):
            n = int(f.readline()[1:])
            args.append(f.read(n + 2)[:-2].decode())
        return args

    def _serve(self, c):
        f = c.makefile("rb")
        try:
            while True:
                args = self._read_command(f)
                if args is None:
                    return
                cmd = [a.lower() for a in args[:2]]
                if cmd[:2] == ["sentinel", "get-master-addr-by-name"]:
                    self.asked += 1
                    port = str(self.port).encode()
                    c.sendall(b"*2\r\n$9\r\n127.0.0.1\r\n$%d\r\n%s\r\n" % (len(port), port))
                elif cmd[:2] == ["client", "setname"]:
                    self.names.append(args[2])
                    c.sendall(b"+OK\r\n")
                elif cmd[0] == "ping":
                    c.sendall(b"+PONG\r\n")
                else:
                    c.sendall(b"+OK\r\n")
        except OSError:
            return
        finally:
            c.close()

    def close(self):
        self.sock.close()


def cli(port, *args):
    r = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port), *map(str, args)],
                       capture_output=True, text=True, timeout=10)
    return r.stdout.strip()


def chatd_names(port):
    return [kv.split("=", 1)[1] for line in cli(port, "CLIENT", "LIST").splitlines()
            for kv in line.split() if kv.startswith("name=chatd:")]


@pytest.fixture
def setup():
    root = tempfile.mkdtemp(prefix="chat56-readonly-")
    st = chatstack.Stack(root, foreground=True)
    b_port = chatstack.free_port()
    fake = None
    b = None
    ok = False
    try:
        st.write_configs()
        st.start_redis()
        b = subprocess.Popen(["redis-server", "--port", str(b_port), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no", "--dir", root,
                              "--replicaof", "127.0.0.1", str(st.redis_port)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: "master_link_status:up" in cli(b_port, "INFO", "replication"),
                   20, "B in sync with A")
        fake = FakeSentinel(st.redis_port)
        st.chatd_extra = {"redis": "redis://sentinel-managed.invalid/0",
                          "redis_sentinels": f"127.0.0.1:{fake.addr}",
                          "redis_sentinel_master": "mymaster"}
        st._write_chatd_conf()
        st.start_chatd()
        st.b_port = b_port
        st.fake = fake
        yield st
        ok = True
    finally:
        st._stop_one("chatd", st.chatd_pidfile)
        st._stop_one("redis", st.redis_pidfile)
        if b:
            b.terminate()
            b.wait(10)
        if fake:
            fake.close()
        if ok:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"stack files kept in {root}")


def chatd_log(st):
    with open(st.chatd_log, errors="replace") as f:
        return f.read()


def test_readonly_reply_sends_chatd_back_to_the_sentinels(setup):
    st = setup
    pw = st.add_user("ro")                       # chatctl, through the fake sentinel too
    assert "<success" in native_login(st, "ro", pw)
    assert len(chatd_names(st.redis_port)) == 4

    # A becomes B's replica behind chatd's back; the sentinel still says A.
    assert cli(st.b_port, "REPLICAOF", "NO", "ONE") == "OK"
    assert cli(st.redis_port, "REPLICAOF", "127.0.0.1", st.b_port) == "OK"
    wait_until(lambda: "master_link_status:up" in cli(st.redis_port, "INFO", "replication"),
               20, "A in sync with B")
    # A write (the sign-in's admission script) meets -READONLY: try again.
    got = native_login(st, "ro", pw, timeout=3)
    assert "temporary-auth-failure" in got, got
    wait_until(lambda: "BOSH00704" in chatd_log(st), 10, "chatd saw READONLY")
    # Asked again, the sentinel names A again: ROLE says slave, refused.
    wait_until(lambda: "BOSH00702" in chatd_log(st), 10, "chatd checked ROLE")
    assert "<success" not in native_login(st, "ro", pw, timeout=3)

    # The sentinel names B: sign-in comes back by itself.
    st.fake.port = st.b_port
    wait_until(lambda: "<success" in native_login(st, "ro", pw, timeout=3), 20,
               "sign-in after the sentinel names B")
    wait_until(lambda: len(chatd_names(st.b_port)) == 4, 10, "chatd's 4 connections on B")
    assert chatd_names(st.redis_port) == [], chatd_names(st.redis_port)
    assert any(n.endswith(":sentinel") and n.startswith("chatd:") for n in st.fake.names), \
        st.fake.names
