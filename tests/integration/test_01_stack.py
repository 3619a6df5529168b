"""The stack itself: every daemon up, the demo site and Converse.js served."""

import http.client
import os
import socket


def get(stack, path):
    conn = http.client.HTTPConnection("127.0.0.1", stack.http_port, timeout=10)
    conn.request("GET", path)
    r = conn.getresponse()
    return r.status, dict((k.lower(), v) for k, v in r.getheaders()), r.read()


def test_redis_answers_on_private_socket(stack):
    assert stack.redis_cli("PING") == "PONG"
    # our own redis, not the system one on 6379
    assert stack.redis_cli("CONFIG", "GET", "unixsocket").splitlines()[1] == stack.redis_sock


def test_chatd_holds_redis_connections(stack):
    # chatd keeps at least one connection to its Redis
    assert len(stack.redis_clients()) >= 1


def test_chatd_listens(stack):
    with socket.create_connection(("127.0.0.1", stack.xmpp_port), timeout=5) as s:
        s.sendall(b"<?xml version='1.0'?><stream:stream to='localhost' "
                  b"xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
                  b"version='1.0'>")
        data = b""
        while b"</stream:features>" not in data:
            chunk = s.recv(4096)
            assert chunk, f"c2s closed the stream: {data!r}"
            data += chunk
    assert b"<stream:stream" in data
    assert b"urn:ietf:params:xml:ns:xmpp-tls" in data   # STARTTLS offered (tls_cert set)


def test_demo_page(stack):
    status, headers, body = get(stack, "/")
    assert status == 200
    assert headers["content-type"].startswith("text/html")
    assert b"/converse/converse.min.js" in body
    assert b"<converse-root>" in body


def test_converse_assets_served(stack):
    status, headers, body = get(stack, "/converse/converse.min.js")
    assert status == 200
    assert "javascript" in headers["content-type"]
    assert len(body) > 100000
    status, headers, _ = get(stack, "/converse/converse.min.css")
    assert status == 200 and headers["content-type"].startswith("text/css")
    status, _, body = get(stack, "/chat.js")
    assert status == 200 and b"bosh_service_url: '/http-bind'" in body


def test_no_directory_outside_site(stack):
    status, _, _ = get(stack, "/../../etc/passwd")
    assert status in (400, 403, 404)


def test_bosh_status_page(stack):
    status, _, body = get(stack, "/bosh-status")
    assert status == 200
    assert body


def test_httpd_runs_our_config(stack):
    assert os.path.exists(stack.httpd_pidfile)
    with open(stack.httpd_error_log) as f:
        log = f.read()
    assert f"mpm_{stack.mpm}" in log or "resuming normal operations" in log
