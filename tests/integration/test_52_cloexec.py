"""Issue 13: a CGI (or PHP's exec) started by an httpd child inherits none
of mod_bosh's sockets.

Under prefork, mod_cgi forks the CGI from the very child that serves the
request: every descriptor of that child without FD_CLOEXEC reaches the
script, which could then talk to Redis or to chatd's relay as mod_bosh
(the relay believes vouched identities because of where they come from).
This is the realistic case (prefork + mod_cgi / mod_php); under event,
mod_cgid forks from its own daemon, so nothing of a child's is inherited
there anyway.

The test keeps one keep-alive connection (so one prefork child serves
everything): a BOSH session creation makes that child open its Redis pool
connection (admission) and its relay connection; then a CGI on the same
connection lists /proc/self/fd. None of its sockets may be the client end
of a connection to Redis or to the relay (matched by inode with `ss -x`,
whose peer column names the client end of each accepted connection).
"""

import http.client
import os
import random
import re
import shutil
import subprocess
import tempfile

import pytest

import chatstack

NS_HTTPBIND = "http://jabber.org/protocol/httpbind"
NS_XBOSH = "urn:xmpp:xbosh"

CGI = """#!/usr/bin/python3
import os
print("Content-Type: text/plain\\n")
print("pid", os.getpid())
for fd in sorted(os.listdir("/proc/self/fd"), key=int):
    try:
        print(fd, os.readlink("/proc/self/fd/" + fd))
    except OSError as e:
        print(fd, "?", e)
"""


@pytest.fixture(scope="module")
def cgistack():
    root = tempfile.mkdtemp(prefix="chattest99-")
    cgi_dir = os.path.join(root, "cgi")
    os.makedirs(cgi_dir)
    with open(os.path.join(cgi_dir, "fds.cgi"), "w") as f:
        f.write(CGI)
    os.chmod(cgi_dir, 0o755)
    os.chmod(os.path.join(cgi_dir, "fds.cgi"), 0o755)
    mods = chatstack.APACHE_MODULES
    st = chatstack.Stack(root, mpm="prefork", foreground=True, httpd_extra=f"""
<IfModule !cgi_module>
    LoadModule cgi_module {mods}/mod_cgi.so
</IfModule>
ScriptAlias /cgi/ "{cgi_dir}/"
<Directory "{cgi_dir}">
    Options +ExecCGI
    Require all granted
</Directory>
""")
    try:
        st.start()
    except chatstack.StackError as e:
        st.stop()
        pytest.fail(f"stack did not come up (files under {root}):\n{e}", pytrace=False)
    yield st
    result = st.stop()
    assert all(code in (0, None) for code in result.values()), result
    shutil.rmtree(root, ignore_errors=True)


def client_ends(server_paths):
    """Inodes of the client ends of every Unix connection to server_paths
    (ss -x lists the accepted end with the socket path and its peer)."""
    out = subprocess.run(["ss", "-xn"], capture_output=True, text=True, check=True).stdout
    ends = {}
    for line in out.splitlines()[1:]:
        cols = line.split()
        if len(cols) < 8:
            continue
        local, peer_inode = cols[4], cols[7]
        if local in server_paths and peer_inode.isdigit():
            ends[peer_inode] = local
    return ends


def test_cgi_inherits_no_redis_or_relay_socket(cgistack):
    st = cgistack
    conn = http.client.HTTPConnection("127.0.0.1", st.http_port, timeout=30)
    try:
        rid = random.randint(1 << 20, 1 << 40)
        body = (f"<body rid='{rid}' to='localhost' xml:lang='en' wait='1' hold='1' "
                f"ver='1.6' xmpp:version='1.0' xmlns='{NS_HTTPBIND}' "
                f"xmlns:xmpp='{NS_XBOSH}'/>")
        conn.request("POST", "/http-bind", body=body,
                     headers={"Content-Type": "text/xml; charset=utf-8"})
        resp = conn.getresponse()
        created = resp.read()
        assert resp.status == 200 and b"sid=" in created, created
        # Same connection, same prefork child: it now holds a Redis pool
        # connection (admission) and its relay connection.
        conn.request("GET", "/cgi/fds.cgi")
        resp = conn.getresponse()
        listing = resp.read().decode()
        assert resp.status == 200, listing
        ends = client_ends({st.redis_sock, st.relay_sock})
    finally:
        conn.close()
    fds = dict(re.findall(r"^(\d+) (.*)$", listing, re.M))
    assert "0" in fds, listing
    # the child itself holds them (else the test would prove nothing)
    assert st.redis_sock in ends.values() and st.relay_sock in ends.values(), (ends, listing)
    sockets = {fd: re.match(r"socket:\[(\d+)\]", t).group(1)
               for fd, t in fds.items() if t.startswith("socket:[")}
    leaked = {fd: ends[ino] for fd, ino in sockets.items() if ino in ends}
    assert not leaked, f"CGI inherited mod_bosh sockets {leaked}\n{listing}"
