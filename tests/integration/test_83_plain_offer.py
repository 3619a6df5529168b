"""SASL PLAIN over BOSH only where the browser's connection is encrypted
(issue 13, docs/conformance.md "SASL mechanisms").

One stack of our own with chatd's `plain_without_tls no` (the shared
stack allows PLAIN everywhere for its Strophe clients): the plain-HTTP
port, a TLS vhost, and a vhost on a third port that trusts 127.0.0.1 as a
TLS-terminating proxy (BoshTrustedProxy). SCRAM is always offered.
"""

import shutil
import tempfile

import pytest

import chatstack
import pw_util
from conftest import MPM


@pytest.fixture(scope="module")
def pstack():
    root = tempfile.mkdtemp(prefix="chattest83-")
    mods = chatstack.APACHE_MODULES
    st = chatstack.Stack(root, mpm=MPM, foreground=True,
                         chatd_extra={"plain_without_tls": "no"})
    st.tls_port = chatstack.free_port()
    st.proxy_port = chatstack.free_port()
    # <IfDirective>: a mod_bosh without the directive still starts (so this
    # file can run against older code and show what it got wrong).
    st.httpd_extra = f"""
<IfModule !ssl_module>
    LoadModule ssl_module {mods}/mod_ssl.so
</IfModule>
Listen 127.0.0.1:{st.tls_port}
<VirtualHost 127.0.0.1:{st.tls_port}>
    SSLEngine on
    SSLCertificateFile "{st.tls_cert}"
    SSLCertificateKeyFile "{st.tls_key}"
</VirtualHost>
Listen 127.0.0.1:{st.proxy_port}
<VirtualHost 127.0.0.1:{st.proxy_port}>
    <IfDirective BoshTrustedProxy>
        BoshTrustedProxy 10.9.0.0/16 127.0.0.1
    </IfDirective>
</VirtualHost>
"""
    try:
        st.start()
    except chatstack.StackError as e:
        st.stop()
        pytest.fail(f"stack did not come up (files under {root}):\n{e}", pytrace=False)
    st.carol = st.add_user("carol")
    yield st
    st.stop()
    shutil.rmtree(root, ignore_errors=True)


def offered(st, port, tls=False, headers=None):
    b = pw_util.Bosh(port, tls=tls, headers=headers)
    try:
        return pw_util.mechanisms(pw_util.features(b))
    finally:
        b.close()


def test_plain_not_offered_over_plain_http(pstack):
    assert offered(pstack, pstack.http_port) == ["SCRAM-SHA-256", "SCRAM-SHA-1"]
    # the header means nothing from a peer that is not a trusted proxy
    assert offered(pstack, pstack.http_port,
                   headers={"X-Forwarded-Proto": "https"}) == ["SCRAM-SHA-256", "SCRAM-SHA-1"]


def test_plain_refused_over_plain_http_even_with_right_password(pstack):
    b = pw_util.Bosh(pstack.http_port)
    try:
        pw_util.features(b)
        got = b.plain("carol", pstack.carol)
        assert "<invalid-mechanism/>" in got and "<success" not in got, got
    finally:
        b.close()


def test_plain_offered_and_works_over_https(pstack):
    assert offered(pstack, pstack.tls_port, tls=True) == ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"]
    b = pw_util.Bosh(pstack.tls_port, tls=True)
    try:
        pw_util.features(b)
        assert "<success" in b.plain("carol", pstack.carol)
    finally:
        b.close()


def test_trusted_proxy_with_forwarded_https(pstack):
    port = pstack.proxy_port
    assert offered(pstack, port, headers={"X-Forwarded-Proto": "https"}) == \
        ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"]
    # a chain: the last value is the one our proxy added
    assert "PLAIN" in offered(pstack, port, headers={"X-Forwarded-Proto": "http, https"})
    assert "PLAIN" not in offered(pstack, port, headers={"X-Forwarded-Proto": "https, http"})
    assert "PLAIN" not in offered(pstack, port, headers={"X-Forwarded-Proto": "http"})
    assert "PLAIN" not in offered(pstack, port)
    b = pw_util.Bosh(port, headers={"X-Forwarded-Proto": "https"})
    try:
        pw_util.features(b)
        assert "<success" in b.plain("carol", pstack.carol)
    finally:
        b.close()


def test_plain_refused_on_a_plain_request_of_an_https_session(pstack):
    """The password must not cross plain HTTP even in a session created
    over HTTPS: mod_bosh says per request, chatd checks per request."""
    b = pw_util.Bosh(pstack.proxy_port, headers={"X-Forwarded-Proto": "https"})
    try:
        pw_util.features(b)
        b.headers["X-Forwarded-Proto"] = "http"
        got = b.plain("carol", pstack.carol)
        assert "<invalid-mechanism/>" in got and "<success" not in got, got
    finally:
        b.close()


def test_native_port_plain_only_after_starttls(pstack):
    """Kept as it was: the native port lists PLAIN only inside TLS."""
    import re
    import socket
    import ssl
    header = (b"<?xml version='1.0'?><stream:stream to='localhost' version='1.0' "
              b"xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>")

    def read_until(sock, marker):
        got = b""
        while marker not in got:
            chunk = sock.recv(65536)
            assert chunk, got
            got += chunk
        return got.decode()

    s = socket.create_connection(("127.0.0.1", pstack.xmpp_port), timeout=20)
    try:
        s.sendall(header)
        feats = read_until(s, b"</stream:features>")
        assert "<starttls" in feats and "<required/>" in feats, feats
        assert re.findall(r"<mechanism>([^<]+)</mechanism>", feats) == \
            ["SCRAM-SHA-256", "SCRAM-SHA-1"], feats
        s.sendall(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        read_until(s, b"<proceed")
        t = pw_util.tls_context().wrap_socket(s, server_hostname="localhost")
        t.sendall(header)
        feats = read_until(t, b"</stream:features>")
        assert re.findall(r"<mechanism>([^<]+)</mechanism>", feats) == \
            ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"], feats
        t.close()
    finally:
        s.close()
