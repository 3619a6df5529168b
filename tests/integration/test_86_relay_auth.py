"""Issue 13: nothing a stranger sends over the relay can speak for another user.

chatd believes RT_AUTH_USER and RT_PREBIND (common/RELAY.md, "Vouched
identities") because they come from httpd. Here a stranger tries:

1. unix: a process running as another uid (nobody) that can reach the
   socket (mode 0777 here, so only chatd's peer check stands in its way)
   asks for a prebind session as alice. chatd refuses it (REFUSE, closed,
   logged with its uid and pid) and no account appears. httpd's own user
   (relay_peer_user www-data) is let in.
2. tcp: HELLO must carry the shared secret (relay_secret_file): a wrong or
   missing one is refused and logged with the peer's address, the right
   one is welcomed. chatd will not start a tcp relay without a secret.
3. mod_bosh: refuses a tcp BoshChatd without BoshRelaySecretFile at
   configuration time; with a wrong secret it logs what chatd said; with
   the right one BOSH works over tcp.
"""

import json
import os
import re
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.request

import pytest

import chatstack
from outage import wait_until

HERE = os.path.dirname(os.path.abspath(__file__))
WELCOME, RESPONSE, REFUSE = 2, 4, 9
RT_REASON = "4"
BOSH_NS = "http://jabber.org/protocol/httpbind"

# Only root can start a process under another uid (the unix socket tests).
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run as another uid")


def start_chatd_stack(prefix, **kw):
    root = tempfile.mkdtemp(prefix=prefix)
    st = chatstack.Stack(root, **kw)
    st.write_configs()
    try:
        st.start_redis()
        st.start_chatd()
    except chatstack.StackError as e:
        st.stop()
        pytest.fail(str(e), pytrace=False)
    # The stranger's script must be readable by the stranger.
    peer = os.path.join(root, "relay_peer.py")
    shutil.copy(os.path.join(HERE, "relay_peer.py"), peer)
    os.chmod(peer, 0o755)
    st.peer_script = peer
    return st


def stop_stack(st):
    status = st.stop()
    assert status["chatd"] == 0, st.logs_tail()
    shutil.rmtree(st.root, ignore_errors=True)


def as_user(user, st, *args):
    """relay_peer.py run as `user` (setpriv, no supplementary groups;
    as ourselves when we are not root): (its pid, its JSON result)."""
    argv = ["/usr/bin/python3", st.peer_script, *args]
    if os.geteuid() == 0:
        argv = ["setpriv", f"--reuid={user}", f"--regid={user_gid(user)}",
                "--clear-groups"] + argv
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return proc.pid, json.loads(out)


def user_gid(user):
    import pwd
    return pwd.getpwnam(user).pw_gid


def chatd_log(st):
    with open(st.chatd_log, errors="replace") as f:
        return f.read()


def types(result):
    return [fr["type"] for fr in result["frames"]]


def assert_refused(st, result, victim):
    assert WELCOME not in types(result) and RESPONSE not in types(result), \
        f"a stranger got through the relay: {result}\n{st.logs_tail()}"
    assert types(result) == [REFUSE], result
    assert result["frames"][0]["fields"].get(RT_REASON), result
    assert result["closed"], result
    # Nothing was done for the victim: prebind would have provisioned it.
    assert st.redis_cli("EXISTS", f"chat:user:{victim}") == "0"


# -- 1. unix: the peer's uid ----------------------------------------------------

@pytest.fixture(scope="module")
def unix_stack():
    st = start_chatd_stack("chat97unix-")
    yield st
    stop_stack(st)


@needs_root
def test_stranger_uid_on_the_socket_is_refused_and_logged(unix_stack):
    st = unix_stack
    mode = os.stat(st.relay_sock).st_mode & 0o777
    assert mode & 0o006 == 0o006, f"socket mode {oct(mode)}: the test needs others to reach it"
    pid, result = as_user("nobody", st, "unix:" + st.relay_sock, "alice97")
    assert_refused(st, result, "alice97")
    log = wait_until(lambda: (lambda t: t if re.search(
        rf"BOSH00150: relay: refused unix peer uid 65534 \(nobody\) pid {pid}\b", t) else None)(
        chatd_log(st)), 10, "the refusal in chatd's log")
    assert "relay_peer_user" in log


@needs_root
def test_httpd_user_on_the_socket_is_welcomed(unix_stack):
    st = unix_stack
    _, result = as_user("www-data", st, "unix:" + st.relay_sock, "bob97")
    assert types(result)[:1] == [WELCOME], result
    answer = result["frames"][-1]
    assert answer["type"] == RESPONSE, result
    assert json.loads(answer["fields"]["10"])["jid"].startswith("bob97@localhost/"), result


# -- 2. tcp: the shared secret ----------------------------------------------------

@pytest.fixture(scope="module")
def tcp_stack():
    # An admin socket of its own: a tcp relay has no unix path to put the
    # default beside, and the flood test reads chatctl stats.
    admin = os.path.join(tempfile.mkdtemp(prefix="chat86adm-"), "admin.sock")
    st = start_chatd_stack("chat97tcp-", relay_tcp_port=chatstack.free_port(),
                           chatd_extra={"admin_socket": admin})
    yield st
    stop_stack(st)


@pytest.mark.parametrize("secret", ["wrong-secret-of-some-length", None])
def test_tcp_peer_without_the_secret_is_refused_and_logged(tcp_stack, secret):
    st = tcp_stack
    args = [st.relay_url, "carol97"] + (["--secret", secret] if secret else [])
    _, result = as_user("nobody", st, *args)
    assert_refused(st, result, "carol97")
    what = "a wrong" if secret else "no"
    wait_until(lambda: re.search(rf"BOSH00151: relay: refused tcp peer 127\.0\.0\.1:\d+: "
                                 rf"{what} relay secret", chatd_log(st)),
               10, "the refusal in chatd's log")


def test_tcp_peer_with_the_secret_is_welcomed(tcp_stack):
    st = tcp_stack
    _, result = as_user("nobody", st, st.relay_url, "dave97", "--secret", st.relay_secret)
    assert types(result)[:1] == [WELCOME], result
    assert result["frames"][-1]["type"] == RESPONSE, result


def relay_refused(st):
    out = st.chatctl("stats").stdout
    return int(re.search(r"^relay_refused (\d+)$", out, re.M).group(1))


def test_a_flood_of_refused_peers_is_counted_but_not_all_logged(tcp_stack):
    """The relay socket is open to every local user (the uid or secret
    decides), so refusals must not be a way to fill chatd's log: each is
    counted, a burst of them is logged in part and summed up by BOSH00154."""
    st = tcp_stack
    line = re.compile(r"BOSH00151: relay: refused tcp peer")
    logged_before, refused_before = len(line.findall(chatd_log(st))), relay_refused(st)
    sent = 60
    for i in range(sent):
        _, result = as_user("nobody", st, st.relay_url, f"flood{i}", "--secret",
                            "wrong-secret-of-some-length")
        assert types(result) == [REFUSE], result
    assert relay_refused(st) - refused_before == sent
    logged = len(line.findall(chatd_log(st))) - logged_before
    assert logged < sent, f"all {sent} refusals logged one by one"

    def summed_up():
        as_user("nobody", st, st.relay_url, "flood-last", "--secret", "wrong-secret-of-some-length")
        return re.search(r"BOSH00154: relay: (\d+) more refused or silent peers", chatd_log(st))
    wait_until(summed_up, 30, "the count of refusals left out of the log")


def write_chatd_conf(path, lines):
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def test_chatd_will_not_start_a_tcp_relay_without_a_secret(tmp_path):
    conf = tmp_path / "chatd.conf"
    write_chatd_conf(conf, [f"relay_listen tcp:127.0.0.1:{chatstack.free_port()}",
                            "c2s_listen off", f"logfile {tmp_path}/chatd.log"])
    bin_ = os.path.join(chatstack.REPO, "build", "chatd")
    for args in (["-t"], ["-f"]):
        r = subprocess.run([bin_, "-c", str(conf), *args], capture_output=True, text=True,
                           timeout=30)
        assert r.returncode != 0, f"chatd {args} accepted a tcp relay with no secret: {r}"
        assert "relay_secret_file" in r.stderr, r.stderr


def test_chatd_refuses_a_secret_file_others_can_read(tmp_path):
    secret = tmp_path / "relay.secret"
    secret.write_text("0123456789abcdef0123456789abcdef\n")
    os.chmod(secret, 0o644)
    conf = tmp_path / "chatd.conf"
    write_chatd_conf(conf, [f"relay_listen tcp:127.0.0.1:{chatstack.free_port()}",
                            f"relay_secret_file {secret}"])
    bin_ = os.path.join(chatstack.REPO, "build", "chatd")
    r = subprocess.run([bin_, "-c", str(conf), "-t"], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "writable by others" in r.stderr, r
    os.chmod(secret, 0o640)
    r = subprocess.run([bin_, "-c", str(conf), "-t"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r


# -- 3. mod_bosh ---------------------------------------------------------------------

def httpd_t(tmp_path, extra):
    conf = tmp_path / "httpd.conf"
    conf.write_text(f"""\
ServerRoot "{tmp_path}"
Listen 127.0.0.1:{chatstack.free_port()}
PidFile "{tmp_path}/httpd.pid"
ErrorLog "{tmp_path}/error_log"
LoadModule mpm_event_module {chatstack.APACHE_MODULES}/mod_mpm_event.so
<IfModule !authz_core_module>
    LoadModule authz_core_module {chatstack.APACHE_MODULES}/mod_authz_core.so
</IfModule>
LoadModule {chatstack.module_symbol(chatstack.MOD_BOSH_SO)} {chatstack.MOD_BOSH_SO}
{extra}
""")
    return subprocess.run([chatstack.APACHE_BIN, "-d", str(tmp_path), "-f", str(conf), "-t"],
                          capture_output=True, text=True, timeout=30)


def test_mod_bosh_refuses_a_tcp_chatd_without_a_secret(tmp_path):
    r = httpd_t(tmp_path, "BoshChatd n1 tcp:127.0.0.1:5281")
    assert r.returncode != 0, f"httpd -t accepted a tcp BoshChatd with no secret: {r}"
    assert "BoshRelaySecretFile" in r.stderr, r.stderr
    secret = tmp_path / "relay.secret"
    secret.write_text("0123456789abcdef0123456789abcdef\n")
    os.chmod(secret, 0o600)
    r = httpd_t(tmp_path, f"BoshChatd n1 tcp:127.0.0.1:5281\nBoshRelaySecretFile {secret}")
    assert r.returncode == 0, r
    # A unix socket needs none (chatd checks the peer's uid).
    r = httpd_t(tmp_path, "BoshChatd n1 unix:/run/chatd/relay.sock")
    assert r.returncode == 0, r


def bosh_create(st):
    body = (f"<body xmlns='{BOSH_NS}' xmlns:xmpp='urn:xmpp:xbosh' rid='4242' to='localhost' "
            f"wait='5' hold='1' ver='1.6' xmpp:version='1.0'/>").encode()
    req = urllib.request.Request(st.bosh_url, data=body, method="POST",
                                 headers={"Content-Type": "text/xml; charset=utf-8"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def full_stack(prefix, **kw):
    root = tempfile.mkdtemp(prefix=prefix)
    st = chatstack.Stack(root, relay_tcp_port=chatstack.free_port(), **kw)
    try:
        st.start()
    except chatstack.StackError as e:
        st.stop()
        pytest.fail(str(e), pytrace=False)
    return st


def test_mod_bosh_over_tcp_with_the_secret():
    st = full_stack("chat97bosh-")
    try:
        status, text = bosh_create(st)
        assert status == 200 and "sid=" in text, (status, text, st.logs_tail())
    finally:
        stop_stack(st)


def test_mod_bosh_logs_what_chatd_said_when_refused():
    st = full_stack("chat97boshbad-", httpd_relay_secret="not-the-secret-chatd-has-0000")
    try:
        status, text = bosh_create(st)
        # What a BOSH client sees when no chatd will take the relay: a
        # retryable 503 (docs/operations.md, "a stuck chatd"), not a session.
        assert status == 503 and "no chat server" in text, (status, text)

        def logged():
            with open(st.httpd_error_log, errors="replace") as f:
                return re.search(r"BOSH00160: chatd node n1 \(tcp:127\.0\.0\.1:\d+\) refused "
                                 r"the relay: a wrong relay secret", f.read())
        wait_until(logged, 15, "mod_bosh logs chatd's refusal")
        assert re.search(r"BOSH00151: relay: refused tcp peer 127\.0\.0\.1:\d+: a wrong relay "
                         r"secret", chatd_log(st))
    finally:
        stop_stack(st)
