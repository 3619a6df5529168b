#!/usr/bin/python3
"""chatstack: start and stop a private Redis + chatd + httpd (mod_bosh).

Why one module: `make run` (the demo) and the integration tests
(tests/integration/conftest.py) need the same three daemons, configured the
same way; writing the configs and the readiness checks once keeps the demo
and the tests honest with each other.

Everything lives under one directory (./run for the demo, a tmp dir for the
tests): configs, sockets, pid files, logs. Nothing touches /etc/apache2, the
system redis or any system service. Readiness is always "poll a condition
until a deadline", never a fixed sleep.

Run as root, httpd's children switch to www-data and open, at request time,
the demo page, the Converse.js files, the htpasswd file and the relay and
Redis sockets. A checkout under a directory www-data cannot enter (/root,
any `mktemp -d`) would answer every request with 403, so the stack checks
as www-data what the children need (see access_problems) and, where they
cannot reach it, serves it from a directory they can: the sockets and
htpasswd from a "public dir" under /run (root:www-data 0750, removed by
`stop`), the demo page and Converse.js from copies in it. Before httpd
starts it checks again and stops with a message naming the path otherwise.

CLI (used by scripts/run.sh):
    chatstack.py start  --dir DIR [--http-port N] [--xmpp-port N] [--users alice,bob]
    chatstack.py stop   --dir DIR
    chatstack.py status --dir DIR
"""

import argparse
import grp
import json
import os
import pwd
import secrets
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APACHE_BIN = "/usr/sbin/apache2"
APACHE_MODULES = "/usr/lib/apache2/modules"
MOD_BOSH_SO = os.path.join(REPO, "mod_bosh", ".libs", "mod_bosh.so")
SITE_CONF = os.path.join(REPO, "httpd-conf", "demo-site.conf")
# What the site serves (Define CHAT_SITE / CHAT_CONVERSE). Real paths:
# with `Options None` httpd follows no symlink, and node_modules may be one.
SITE_DIR = os.path.join(REPO, "demo")
CONVERSE_DIR = os.path.join(REPO, "node_modules", "converse.js", "dist")

# The user httpd's children run as when we start it as root (Debian's
# apache2 user). Not root: httpd cannot switch, the children stay us.
HTTPD_USER = "www-data"
# Where a root-started stack puts what the children must reach when its
# own directory is closed to them.
PUBLIC_PARENT = "/run"
# sun_path is 108 bytes including the NUL.
UNIX_PATH_MAX = 107

# Debian modules the site needs (mpm chosen separately).
HTTPD_MODULES = [
    ("authz_core_module", "mod_authz_core.so"),
    ("authz_host_module", "mod_authz_host.so"),
    ("mime_module", "mod_mime.so"),
    ("dir_module", "mod_dir.so"),
    ("alias_module", "mod_alias.so"),
    ("headers_module", "mod_headers.so"),
    ("status_module", "mod_status.so"),
    ("log_config_module", "mod_log_config.so"),
    # single sign-on demo (/sso/, issue 8): Basic auth from an htpasswd file
    ("auth_basic_module", "mod_auth_basic.so"),
    ("authn_core_module", "mod_authn_core.so"),
    ("authn_file_module", "mod_authn_file.so"),
    ("authz_user_module", "mod_authz_user.so"),
]

# Users of the /sso/ demo path: they sign in to the site (HTTP Basic) and
# chat without a chat password (mod_bosh vouches, chatd offers EXTERNAL).
SSO_USERS = ("carol", "dave")

MPM_CONF = {
    "event": """\
<IfModule mpm_event_module>
    StartServers          2
    ServerLimit           4
    ThreadsPerChild      25
    MaxRequestWorkers   100
    MinSpareThreads      10
    MaxSpareThreads      75
    MaxConnectionsPerChild 0
</IfModule>""",
    "worker": """\
<IfModule mpm_worker_module>
    StartServers          2
    ServerLimit           4
    ThreadsPerChild      25
    MaxRequestWorkers   100
    MinSpareThreads      10
    MaxSpareThreads      75
</IfModule>""",
    "prefork": """\
<IfModule mpm_prefork_module>
    StartServers          4
    MinSpareServers       2
    MaxSpareServers       8
    MaxRequestWorkers    40
</IfModule>""",
}


class StackError(RuntimeError):
    """A daemon did not come up (the message carries the log tail)."""


def free_port():
    """A loopback TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def tail(path, lines=40):
    """Last lines of a log file, for error messages."""
    try:
        with open(path, "rb") as f:
            data = f.read()[-16384:]
    except OSError as e:
        return f"({path}: {e.strerror})"
    text = data.decode("utf-8", "replace").splitlines()[-lines:]
    return "\n".join(text) if text else f"({path} is empty)"


def wait_for(what, check, timeout, alive=None, logs=()):
    """Poll check() until it returns a true value or the deadline passes.

    alive(), when given, is polled too: a daemon that exited fails at once
    instead of waiting out the deadline. On failure raise StackError with
    the tail of every log in logs."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    last_err = None
    while True:
        try:
            result = check()
            if result:
                return result
        except OSError as e:
            last_err = e
        if alive is not None and not alive():
            reason = "exited"
            break
        if time.monotonic() >= deadline:
            reason = f"not ready after {timeout}s"
            break
        time.sleep(delay)          # polling interval, not synchronisation
        delay = min(delay * 2, 0.2)
    msg = [f"{what}: {reason}" + (f" (last error: {last_err})" if last_err else "")]
    for log in logs:
        msg.append(f"--- tail of {log} ---\n{tail(log)}")
    raise StackError("\n".join(msg))


def unix_connects(path):
    if not os.path.exists(path):
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1)
        s.connect(path)
    return True


def tcp_connects(port, host="127.0.0.1"):
    with socket.create_connection((host, port), timeout=1):
        return True


def redis_pings(sock_path):
    if not os.path.exists(sock_path):
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1)
        s.connect(sock_path)
        s.sendall(b"PING\r\n")
        return s.recv(64).startswith(b"+PONG")


# Loopback only: an http_proxy in the environment must not be asked.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_answers(url):
    try:
        with _DIRECT.open(url, timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code          # any HTTP answer means httpd is serving


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def read_pid(path):
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


# Run as the httpd user (a child with its uid, gid and groups, so the kernel
# decides, ACLs included): for each [path, kind] print what blocks it.
# kind: "dir" (enterable), "tree" (every directory enterable and listable,
# every file readable), "file" (readable), "socket" (connectable: writable).
_ACCESS_CHECK = r"""
import json, os, stat, sys
def blocked(path):
    parts = path.split("/")
    for i in range(2, len(parts)):
        d = "/".join(parts[:i])
        if not os.access(d, os.X_OK):
            return f"cannot enter {d}" if os.path.lexists(d) else f"{d} does not exist"
    return None
out = []
for path, kind in json.load(sys.stdin):
    why = blocked(path)
    if why is None and not os.path.lexists(path):
        why = "does not exist"
    elif why is None and kind == "dir" and not os.access(path, os.X_OK):
        why = f"cannot enter {path}"
    elif why is None and kind == "socket" and not os.access(path, os.W_OK):
        why = "cannot connect (no write permission)"
    elif why is None and kind == "file" and not os.access(path, os.R_OK):
        why = "cannot read it"
    elif why is None and kind == "tree":
        if not os.access(path, os.R_OK | os.X_OK):
            why = f"cannot list {path}"
        for d, dirs, files in ([] if why else os.walk(path)):
            for n in dirs:
                if why is None and not os.access(os.path.join(d, n), os.R_OK | os.X_OK):
                    why = f"cannot list {os.path.join(d, n)}"
            for n in files:
                if why is None and not os.access(os.path.join(d, n), os.R_OK):
                    why = f"cannot read {os.path.join(d, n)}"
            if why:
                break
    if why:
        out.append([path, why])
json.dump(out, sys.stdout)
"""


def access_problems(user, items):
    """What `user` cannot reach of items [(path, kind)], checked by a child
    running as that user: [(path, reason)]. user None: nothing to check
    (httpd runs its children as ourselves)."""
    if user is None or not items:
        return []
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        return [(p, f"user {user} does not exist (apt-get install apache2 creates it)")
                for p, _ in items]
    # Debian's python3: ours may live where the user cannot go (pyenv in /root).
    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    r = subprocess.run([python, "-c", _ACCESS_CHECK],
                       input=json.dumps([[p, k] for p, k in items]),
                       capture_output=True, text=True, cwd="/",
                       user=pw.pw_uid, group=pw.pw_gid,
                       extra_groups=os.getgrouplist(user, pw.pw_gid))
    if r.returncode != 0:
        raise StackError(f"access check as {user} failed: {r.stderr}")
    return [tuple(x) for x in json.loads(r.stdout)]


def describe_path(path):
    """`drwx------ root:root /root` for each existing component of path,
    for messages about who may enter what."""
    out = []
    parts = os.path.abspath(path).split("/")
    for i in range(2, len(parts) + 1):
        d = "/".join(parts[:i])
        try:
            st = os.lstat(d)
        except OSError:
            break
        try:
            owner = pwd.getpwuid(st.st_uid).pw_name
        except KeyError:
            owner = str(st.st_uid)
        try:
            group = grp.getgrgid(st.st_gid).gr_name
        except KeyError:
            group = str(st.st_gid)
        out.append(f"{stat.filemode(st.st_mode)} {owner}:{group} {d}")
    return out


def quoted(value):
    """value as one double-quoted word for httpd.conf and redis.conf, so a
    checkout path with spaces stays one argument. The two unescape
    differently (httpd only \\", redis every backslash), so a path with a
    quote or a backslash is refused instead."""
    if '"' in value or "\\" in value:
        raise StackError(f"{value}: a path with a quote or a backslash cannot go "
                         "into httpd.conf/redis.conf; move the checkout")
    return f'"{value}"'


def module_symbol(so_path):
    """The module struct name exported by a DSO (e.g. bosh_module), so the
    LoadModule line follows whatever mod_bosh.c declares."""
    try:
        out = subprocess.run(["nm", "-D", "--defined-only", so_path],
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "bosh_module"
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in ("D", "B") and parts[2].endswith("_module"):
            return parts[2]
    return "bosh_module"


class Stack:
    """One Redis + chatd + httpd under `root`.

    foreground=True (tests): the daemons are our children (Popen), so an
    early exit is seen at once and stop() gets their exit status.
    foreground=False (make run): they daemonize and write pid files; stop()
    works from the pid files alone, in a later process."""

    def __init__(self, root, http_port=None, xmpp_port=None, redis_port=None,
                 mpm="event", foreground=True, domain="localhost", node_id="n1",
                 chatd_extra=None, httpd_extra="", redis_extra="", chatd_wrapper=None,
                 relay_tcp_port=None, relay_secret=None, httpd_relay_secret=None,
                 public_dir=None, sentinels=0):
        self.root = os.path.abspath(root)
        # httpd's children: www-data when we are root, else ourselves (None).
        self.httpd_user = HTTPD_USER if os.geteuid() == 0 else None
        # Where the sockets and htpasswd live: root, unless write_configs
        # finds root closed to the children (see _place_public).
        self.public_dir = os.path.abspath(public_dir) if public_dir else self.root
        # What the site serves; copies under public_dir when the children
        # cannot read the checkout (_place_site).
        self.site_dir = os.path.realpath(SITE_DIR)
        self.converse_dir = os.path.realpath(CONVERSE_DIR)
        # Set by _write_httpd_conf: httpd serves the demo site, so / must
        # answer 200 (a caller that writes its own httpd.conf may not).
        self.serves_demo = False
        self.http_port = http_port or free_port()
        self.xmpp_port = xmpp_port or free_port()
        self.redis_port = redis_port or free_port()
        self.mpm = mpm
        self.foreground = foreground
        self.domain = domain
        self.muc_domain = "conference." + domain
        self.node_id = node_id
        self.chatd_extra = chatd_extra or {}
        self.httpd_extra = httpd_extra
        self.redis_extra = redis_extra      # raw redis.conf lines, appended
        # argv prefix for chatd (e.g. ["valgrind", ...]); foreground only
        self.chatd_wrapper = list(chatd_wrapper or [])
        # The relay over TCP (loopback) instead of the unix socket: it needs
        # a shared secret (chatd relay_secret_file, BoshRelaySecretFile).
        # relay_secret: what chatd expects (None: a random one when TCP);
        # httpd_relay_secret: what mod_bosh sends (None: the same).
        self.relay_tcp_port = relay_tcp_port
        if relay_tcp_port and relay_secret is None:
            relay_secret = secrets.token_urlsafe(32)
        self.relay_secret = relay_secret
        self.httpd_relay_secret = httpd_relay_secret or relay_secret
        self.procs = {}
        # Redis HA (issue 16): a replica and this many sentinels; chatd and
        # httpd then find the master through the sentinels.
        self.ha = RedisHA(self, sentinels) if sentinels else None

        r = self.root
        self._set_public_paths()
        self.redis_conf = os.path.join(r, "redis.conf")
        self.redis_pidfile = os.path.join(r, "redis.pid")
        self.redis_log = os.path.join(r, "redis.log")
        # Read by chatd and by httpd's parent as root: they stay under root.
        self.relay_secret_file = os.path.join(r, "relay.secret")
        self.httpd_relay_secret_file = os.path.join(r, "httpd-relay.secret")
        self.chatd_conf = os.path.join(r, "chatd.conf")
        self.chatd_pidfile = os.path.join(r, "chatd.pid")
        self.chatd_log = os.path.join(r, "chatd.log")
        self.chatd_stderr = os.path.join(r, "chatd.stderr")
        self.tls_cert = os.path.join(r, "tls-cert.pem")
        self.tls_key = os.path.join(r, "tls-key.pem")
        self.httpd_root = os.path.join(r, "httpd")
        self.httpd_conf = os.path.join(self.httpd_root, "httpd.conf")
        self.httpd_pidfile = os.path.join(self.httpd_root, "httpd.pid")
        self.httpd_error_log = os.path.join(self.httpd_root, "logs", "error_log")
        self.httpd_access_log = os.path.join(self.httpd_root, "logs", "access_log")
        self.state_file = os.path.join(r, "stack.json")
        self.sso_users_file = os.path.join(r, "sso-users.txt")
        self.sso_users = {}                                   # name -> site password
        self.chatd_bin = os.path.join(REPO, "build", "chatd")
        self.chatctl_bin = os.path.join(REPO, "build", "chatctl")

    def _set_public_paths(self):
        """What httpd's children open at request time, under public_dir."""
        p = self.public_dir
        self.redis_sock = os.path.join(p, "redis.sock")
        self.redis_url = "unix://" + self.redis_sock
        self.relay_sock = os.path.join(p, "chatd-relay.sock")
        self.htpasswd = os.path.join(p, "htpasswd")           # /sso/ Basic auth

    # -- urls ---------------------------------------------------------------
    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.http_port}/"

    @property
    def bosh_url(self):
        return f"http://127.0.0.1:{self.http_port}/http-bind"

    @property
    def sso_url(self):
        return f"http://127.0.0.1:{self.http_port}/sso/"

    @property
    def sso_bosh_url(self):
        return f"http://127.0.0.1:{self.http_port}/sso/http-bind"

    @property
    def prebind_url(self):
        return f"http://127.0.0.1:{self.http_port}/sso/prebind"

    @property
    def status_url(self):
        return f"http://127.0.0.1:{self.http_port}/bosh-status"

    # -- configs ------------------------------------------------------------
    def write_configs(self):
        for d in (self.root, self.httpd_root,
                  os.path.join(self.httpd_root, "logs"),
                  os.path.join(self.httpd_root, "runtime")):
            os.makedirs(d, exist_ok=True)
        # httpd children may run as www-data (when we are root): they must
        # reach the sockets under root.
        os.chmod(self.root, 0o755)
        self._place_public()
        self._place_site()
        self._write_redis_conf()
        self._write_relay_secrets()
        self._make_tls_pair()
        self._write_htpasswd()
        self._write_chatd_conf()
        self._write_httpd_conf()
        with open(self.state_file, "w") as f:
            json.dump({"http_port": self.http_port, "xmpp_port": self.xmpp_port,
                       "redis_port": self.redis_port, "mpm": self.mpm,
                       "public_dir": None if self.public_dir == self.root
                       else self.public_dir}, f)

    def _place_public(self):
        """Move the sockets and htpasswd out of root into a fresh directory
        when httpd's children could not reach them there: root is closed to
        the httpd user (a checkout in /root or a `mktemp -d`), or a socket
        path would not fit in sun_path (a deep checkout). As root that
        directory is /run/chatstack-XXXX, root:<httpd group> 0750: the
        children get in, other local users do not. Removed by
        remove_public_dir (`make stop`)."""
        if self.public_dir == self.root:
            longest = os.path.join(self.root, "chatd-relay.sock")
            closed = access_problems(self.httpd_user, [(self.root, "dir")])
            if not closed and len(longest.encode()) <= UNIX_PATH_MAX:
                return
            parent = PUBLIC_PARENT
            if not (self.httpd_user and os.access(parent, os.W_OK)):
                parent = None                      # $TMPDIR or /tmp
            self.public_dir = tempfile.mkdtemp(prefix="chatstack-", dir=parent)
            self._set_public_paths()
        else:
            os.makedirs(self.public_dir, mode=0o700, exist_ok=True)
        if self.httpd_user:
            os.chown(self.public_dir, 0, pwd.getpwnam(self.httpd_user).pw_gid)
            os.chmod(self.public_dir, 0o750)

    def _place_site(self):
        """Serve copies of the demo page and of Converse.js from public_dir
        when the httpd user cannot read them where they are (a closed
        checkout, or files created under umask 077). Fresh copies at every
        start, so a restart shows edits."""
        for attr, name in (("site_dir", "demo"), ("converse_dir", "converse")):
            src = os.path.realpath(SITE_DIR if name == "demo" else CONVERSE_DIR)
            dst = os.path.join(self.public_dir, "www", name)
            setattr(self, attr, src)
            if not os.path.isdir(src) or \
                    not access_problems(self.httpd_user, [(src, "tree")]):
                continue
            shutil.rmtree(dst, ignore_errors=True)
            shutil.copytree(src, dst, symlinks=False)
            for d, dirs, files in os.walk(dst):
                os.chmod(d, 0o755)
                for n in files:
                    os.chmod(os.path.join(d, n), 0o644)
            os.chmod(os.path.dirname(dst), 0o755)
            setattr(self, attr, dst)

    def remove_public_dir(self):
        """Remove the directory _place_public made (never root itself)."""
        p = self.public_dir
        if p != self.root and os.path.basename(p).startswith("chatstack-"):
            shutil.rmtree(p, ignore_errors=True)

    def served_paths(self):
        """What httpd's children open at request time, as [(path, kind)]
        for access_problems. A socket whose daemon is down is checked by
        its directory."""
        items = []
        if self.serves_demo:
            items += [(self.site_dir, "tree"), (self.htpasswd, "file")]
            if os.path.isdir(self.converse_dir):
                items.append((self.converse_dir, "tree"))
        for sock in (self.relay_sock, self.redis_sock):
            if os.path.exists(sock):
                items.append((sock, "socket"))
            else:
                items.append((os.path.dirname(sock), "dir"))
        return items

    def check_httpd_access(self):
        """Fail, saying what to do, when httpd's children could not open
        what they serve: without this they answer 403 and log AH00035."""
        problems = access_problems(self.httpd_user, self.served_paths())
        if not problems:
            return
        msg = [f"httpd's children run as {self.httpd_user} and could not open:"]
        fixes = []
        for path, why in problems:
            msg.append(f"  {path}: {why}")
            for verb, flag in (("cannot enter ", "o+x"), ("cannot list ", "o+rx"),
                               ("cannot read ", "o+r")):
                if why.startswith(verb):
                    target = why[len(verb):]
                    if verb == "cannot read " and target == "it":
                        target = path
                    fix = f"chmod {flag} {shlex.quote(target)}"
                    if flag == "o+x" and fix not in fixes:
                        msg += [f"      {line}" for line in describe_path(target)]
                    fixes.append(fix)
        msg.append("Either start it as a normal user, not root (httpd then keeps your user), "
                   f"or move the checkout to a directory {self.httpd_user} can enter "
                   "(e.g. /srv or /opt), or let it in:")
        msg += [f"  {f}" for f in dict.fromkeys(fixes)] or ["  (see the reasons above)"]
        raise StackError("\n".join(msg))

    def _write_redis_conf(self):
        lines = [
            f"port {self.redis_port}",
            "bind 127.0.0.1",
            f"unixsocket {quoted(self.redis_sock)}",
            "unixsocketperm 777",
            f"daemonize {'no' if self.foreground else 'yes'}",
            f"pidfile {quoted(self.redis_pidfile)}",
            f"logfile {quoted(self.redis_log)}",
            f"dir {quoted(self.root)}",
            'save ""',
            "appendonly no",
            "maxclients 1000",
        ]
        if self.redis_extra:
            lines.append(self.redis_extra)
        with open(self.redis_conf, "w") as f:
            f.write("\n".join(lines) + "\n")

    def _write_relay_secrets(self):
        """The relay's shared secret, in files only their owner reads
        (chatd and httpd read them as root here, before httpd drops to
        www-data)."""
        for path, value in ((self.relay_secret_file, self.relay_secret),
                            (self.httpd_relay_secret_file, self.httpd_relay_secret)):
            if value is None:
                continue
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(value + "\n")
            os.chmod(path, 0o600)

    @property
    def relay_url(self):
        if self.relay_tcp_port:
            return f"tcp:127.0.0.1:{self.relay_tcp_port}"
        return "unix:" + self.relay_sock

    def _write_htpasswd(self):
        """The site's own users for /sso/ (HTTP Basic): random passwords,
        kept in sso-users.txt so a restart of `make run` keeps them."""
        users = {}
        if os.path.exists(self.sso_users_file):
            with open(self.sso_users_file) as f:
                for line in f:
                    if line.strip():
                        name, pw = line.split()
                        users[name] = pw
        for name in SSO_USERS:
            users.setdefault(name, secrets.token_urlsafe(9))
        lines = []
        for name, pw in users.items():
            r = subprocess.run(["htpasswd", "-nbB", "-C", "5", name, pw],
                               capture_output=True, text=True)
            if r.returncode != 0:
                raise StackError(f"htpasswd failed: {r.stderr}")
            lines.append(r.stdout.strip())
        with open(self.htpasswd, "w") as f:
            f.write("\n".join(lines) + "\n")
        os.chmod(self.htpasswd, 0o644)    # httpd children (www-data) read it
        with open(self.sso_users_file, "w") as f:
            f.write("".join(f"{n} {p}\n" for n, p in users.items()))
        os.chmod(self.sso_users_file, 0o600)
        self.sso_users = users

    def _make_tls_pair(self):
        if os.path.exists(self.tls_cert) and os.path.exists(self.tls_key):
            return
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec",
             "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", self.tls_key, "-out", self.tls_cert, "-days", "365",
             "-subj", f"/CN={self.domain}",
             "-addext", f"subjectAltName=DNS:{self.domain},DNS:{self.muc_domain}"],
            check=True, capture_output=True)
        os.chmod(self.tls_key, 0o600)

    def chatd_settings(self):
        settings = {
            "domain": self.domain,
            "node_id": self.node_id,
            "redis": "unix://" + self.redis_sock,
            "relay_listen": self.relay_url,
            # Who may use the relay socket: httpd's children run as
            # www-data when we are root; otherwise they run as us, and
            # chatd always lets its own uid in.
            "relay_peer_user": "www-data" if os.geteuid() == 0 else str(os.geteuid()),
            "c2s_listen": f"127.0.0.1:{self.xmpp_port}",
            "tls_cert": self.tls_cert,
            "tls_key": self.tls_key,
            "plain_without_tls": "yes",
            "pidfile": self.chatd_pidfile,
            "logfile": self.chatd_log,
            "log_level": "debug" if self.foreground else "info",
            "daemonize": "no" if self.foreground else "yes",
        }
        if self.relay_secret is not None:
            settings["relay_secret_file"] = self.relay_secret_file
        if self.ha:
            # Not the master's address: only the sentinels tell it (a host
            # that does not resolve, so nothing can connect to it by mistake).
            settings["redis"] = self.httpd_redis_url
            settings["redis_sentinels"] = ",".join(f"127.0.0.1:{p}" for p in self.ha.ports)
            settings["redis_sentinel_master"] = self.ha.name
        settings.update(self.chatd_extra)
        return settings

    def _write_chatd_conf(self):
        with open(self.chatd_conf, "w") as f:
            f.write("# chatd config generated by scripts/chatstack.py; keys: chatd/core/config.h\n")
            for k, v in self.chatd_settings().items():
                f.write(f"{k} {v}\n")

    def _write_httpd_conf(self):
        mods = [f"LoadModule mpm_{self.mpm}_module {APACHE_MODULES}/mod_mpm_{self.mpm}.so"]
        # IfModule: some of them may be compiled in (log_config is, on Debian)
        mods += [f"<IfModule !{name}>\n    LoadModule {name} \"{APACHE_MODULES}/{so}\"\n</IfModule>"
                 for name, so in HTTPD_MODULES]
        mods.append(f"LoadModule {module_symbol(MOD_BOSH_SO)} {quoted(MOD_BOSH_SO)}")
        relay_secret = ""
        if self.httpd_relay_secret is not None:
            relay_secret = f"BoshRelaySecretFile {quoted(self.httpd_relay_secret_file)}"
        user = ""
        if self.httpd_user:
            group = grp.getgrgid(pwd.getpwnam(self.httpd_user).pw_gid).gr_name
            user = f"User {self.httpd_user}\nGroup {group}"
        conf = f"""\
# httpd config generated by scripts/chatstack.py: a private server, not the
# system apache2 (no /etc/apache2, no systemd).
ServerRoot {quoted(self.httpd_root)}
ServerName 127.0.0.1
Listen 127.0.0.1:{self.http_port}
PidFile {quoted(self.httpd_pidfile)}
DefaultRuntimeDir {quoted(self.httpd_root + "/runtime")}
Mutex {quoted("file:" + self.httpd_root + "/runtime")} default
ErrorLog {quoted(self.httpd_error_log)}
LogLevel info
LogFormat "%h %t \\"%r\\" %>s %b %D" timing
CustomLog {quoted(self.httpd_access_log)} timing
{user}
{chr(10).join(mods)}
{MPM_CONF[self.mpm]}
# Longer than any BOSH wait, so a held request is never cut by httpd.
Timeout 120
KeepAlive On
KeepAliveTimeout 30
TypesConfig /etc/mime.types
AddType application/wasm .wasm
<Directory />
    AllowOverride None
    Require all denied
</Directory>
Define CHAT_REPO {quoted(REPO)}
Define CHAT_SITE {quoted(self.site_dir)}
Define CHAT_CONVERSE {quoted(self.converse_dir)}
Define CHAT_NODE {self.node_id}
Define CHAT_DOMAIN {self.domain}
Define CHAT_RELAY_URL {quoted(self.relay_url)}
Define CHAT_REDIS_URL {quoted(self.httpd_redis_url)}
Define CHAT_HTPASSWD {quoted(self.htpasswd)}
Include {quoted(SITE_CONF)}
{relay_secret}
{self.ha.httpd_directives() if self.ha else ""}
{self.httpd_extra}
"""
        with open(self.httpd_conf, "w") as f:
            f.write(conf)
        self.serves_demo = True

    @property
    def httpd_redis_url(self):
        if self.ha:
            return "redis://sentinel-managed.invalid/0"
        return "unix://" + self.redis_sock

    # -- start --------------------------------------------------------------
    def start(self, timeout=20):
        for path in (self.chatd_bin, MOD_BOSH_SO):
            if not os.path.exists(path):
                raise StackError(f"{path} is missing: run `make` first")
        self.write_configs()
        self.start_redis(timeout)
        if self.ha:
            self.ha.start(timeout)
        self.start_chatd(timeout)
        self.start_httpd(timeout)

    def _spawn(self, name, argv, stdout_path):
        out = open(stdout_path, "ab")
        # Own session: httpd prefork signals its whole process group on
        # shutdown (killpg), which must not include pytest or make.
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=self.root,
                                start_new_session=True)
        out.close()
        self.procs[name] = proc
        return proc

    def _alive(self, name, pidfile):
        """alive() for wait_for: the child, or the daemon named in pidfile."""
        if self.foreground:
            proc = self.procs[name]
            return lambda: proc.poll() is None
        def check():
            pid = read_pid(pidfile)
            return pid is None or pid_alive(pid)   # no pidfile yet: still starting
        return check

    def start_redis(self, timeout=20):
        for stale in (self.redis_sock,):
            if os.path.exists(stale):
                os.unlink(stale)
        if self.foreground:
            self._spawn("redis", ["redis-server", self.redis_conf], self.redis_log + ".stdout")
        else:
            subprocess.run(["redis-server", self.redis_conf], check=True)
        wait_for("redis-server", lambda: redis_pings(self.redis_sock), timeout,
                 alive=self._alive("redis", self.redis_pidfile), logs=[self.redis_log])

    def start_chatd(self, timeout=20):
        if os.path.exists(self.relay_sock):
            os.unlink(self.relay_sock)
        argv = self.chatd_wrapper + [self.chatd_bin, "-c", self.chatd_conf]
        if self.foreground:
            self._spawn("chatd", argv, self.chatd_stderr)
        else:
            with open(self.chatd_stderr, "ab") as out:
                rc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT).returncode
            if rc != 0:
                raise StackError(f"chatd exited {rc}\n--- {self.chatd_stderr} ---\n"
                                 f"{tail(self.chatd_stderr)}\n--- {self.chatd_log} ---\n"
                                 f"{tail(self.chatd_log)}")
        logs = [self.chatd_log, self.chatd_stderr]
        alive = self._alive("chatd", self.chatd_pidfile)
        if self.relay_tcp_port:
            wait_for("chatd relay port", lambda: tcp_connects(self.relay_tcp_port), timeout,
                     alive=alive, logs=logs)
        else:
            wait_for("chatd relay socket", lambda: unix_connects(self.relay_sock), timeout,
                     alive=alive, logs=logs)
        if os.geteuid() == 0 and not self.relay_tcp_port:
            # httpd children run as www-data and must connect to it.
            os.chmod(self.relay_sock, 0o777)
        wait_for("chatd c2s port", lambda: tcp_connects(self.xmpp_port), timeout,
                 alive=alive, logs=logs)

    def httpd_cmd(self, *args):
        return [APACHE_BIN, "-d", self.httpd_root, "-f", self.httpd_conf, *args]

    def start_httpd(self, timeout=20):
        check = subprocess.run(self.httpd_cmd("-t"), capture_output=True, text=True)
        if check.returncode != 0:
            raise StackError(f"httpd config test failed:\n{check.stdout}{check.stderr}")
        self.check_httpd_access()
        if self.foreground:
            self._spawn("httpd", self.httpd_cmd("-DFOREGROUND"),
                        os.path.join(self.httpd_root, "logs", "stdout"))
        else:
            out_path = os.path.join(self.httpd_root, "logs", "stdout")
            with open(out_path, "ab") as out:
                # a file, not a pipe: the detached daemon must not hold our pipe open
                rc = subprocess.run(self.httpd_cmd("-k", "start"), stdout=out,
                                    stderr=subprocess.STDOUT).returncode
            if rc != 0:
                raise StackError(f"httpd -k start exited {rc}:\n{tail(out_path)}\n"
                                 f"{tail(self.httpd_error_log)}")
        status = wait_for("httpd", lambda: http_answers(self.base_url), timeout,
                          alive=self._alive("httpd", self.httpd_pidfile),
                          logs=[self.httpd_error_log])
        if self.serves_demo and status != 200:
            # Serving, but not the demo page: say so now, not as a 403 in
            # the browser.
            raise StackError(f"httpd answers {status} for {self.base_url}\n"
                             f"--- tail of {self.httpd_error_log} ---\n"
                             f"{tail(self.httpd_error_log)}")

    def httpd_graceful(self):
        """-k graceful: new generation of children, same parent."""
        subprocess.run(self.httpd_cmd("-k", "graceful"), check=True, capture_output=True)

    # -- stop ---------------------------------------------------------------
    def _stop_one(self, name, pidfile, sig=signal.SIGTERM, timeout=20):
        """Signal the daemon and wait until it is gone. Returns its exit
        status when it is our child, 0 when it was a daemon that exited,
        None when nothing was running, -1 when it had to be killed."""
        proc = self.procs.pop(name, None)
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(sig)
                try:
                    return proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                    return -1
            return proc.returncode
        pid = read_pid(pidfile)
        if pid is None or not pid_alive(pid):
            return None
        os.kill(pid, sig)
        try:
            wait_for(f"{name} exit", lambda: not pid_alive(pid), timeout)
        except StackError:
            os.kill(pid, signal.SIGKILL)
            return -1
        return 0

    def stop(self):
        """Stop httpd, then chatd, then redis. Returns {name: status}."""
        result = {
            "httpd": self._stop_one("httpd", self.httpd_pidfile),
            "chatd": self._stop_one("chatd", self.chatd_pidfile),
            "redis": self._stop_one("redis", self.redis_pidfile),
        }
        if self.ha:
            result.update(self.ha.stop())
        return result

    # -- helpers for tests and the demo -------------------------------------
    def redis_cli(self, *args):
        """Run redis-cli against our redis; returns stdout (stripped)."""
        r = subprocess.run(["redis-cli", "-s", self.redis_sock, *map(str, args)],
                           capture_output=True, text=True, timeout=10)
        if r.returncode != 0:
            raise StackError(f"redis-cli {' '.join(map(str, args))}: {r.stderr}")
        return r.stdout.strip()

    def redis_clients(self):
        """CLIENT LIST as a list of dicts (excluding this redis-cli itself)."""
        clients = []
        for line in self.redis_cli("CLIENT", "LIST").splitlines():
            fields = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
            if fields.get("cmd") not in ("client|list", "client"):
                clients.append(fields)
        return clients

    def chatctl(self, *args, check=True):
        r = subprocess.run([self.chatctl_bin, "-c", self.chatd_conf, *map(str, args)],
                           capture_output=True, text=True, timeout=30)
        if check and r.returncode != 0:
            raise StackError(f"chatctl {' '.join(map(str, args))} exited {r.returncode}:\n"
                             f"{r.stdout}{r.stderr}")
        return r

    def add_user(self, name, password=None):
        password = password or secrets.token_urlsafe(9)
        self.chatctl("adduser", name, password)
        return password

    def logs_tail(self, lines=40):
        """All logs' tails, for a failing test's message."""
        out = []
        for log in (self.chatd_log, self.chatd_stderr, self.httpd_error_log, self.redis_log):
            if os.path.exists(log):
                out.append(f"--- tail of {log} ---\n{tail(log, lines)}")
        return "\n".join(out)

    @classmethod
    def from_dir(cls, root, foreground=False):
        """The stack described by root/stack.json (for stop/status)."""
        with open(os.path.join(root, "stack.json")) as f:
            st = json.load(f)
        return cls(root, http_port=st["http_port"], xmpp_port=st["xmpp_port"],
                   redis_port=st["redis_port"], mpm=st.get("mpm", "event"),
                   foreground=foreground, public_dir=st.get("public_dir"))


# -- CLI ------------------------------------------------------------------
class RedisHA:
    """Redis HA for a Stack (issue 16): a replica of the stack's Redis and
    `count` redis-sentinel processes (redis-server --sentinel) watching it,
    all on free loopback ports under the stack's root. Foreground only
    (tests): they are the stack's children and stop with it."""

    name = "mymaster"

    def __init__(self, stack, count, down_after_ms=2000):
        self.stack = stack
        self.count = count
        self.down_after_ms = down_after_ms
        self.replica_port = free_port()
        self.ports = [free_port() for _ in range(count)]
        self.dir = os.path.join(stack.root, "ha")

    def httpd_directives(self):
        return (f"BoshRedisSentinel {' '.join(f'127.0.0.1:{p}' for p in self.ports)}\n"
                f"BoshRedisSentinelMaster {self.name}\n")

    def _conf(self, path, lines):
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")

    def start(self, timeout=20):
        st = self.stack
        os.makedirs(self.dir, exist_ok=True)
        rdir = os.path.join(self.dir, "replica")
        os.makedirs(rdir, exist_ok=True)
        self.replica_conf = os.path.join(rdir, "redis.conf")
        self.replica_log = os.path.join(rdir, "redis.log")
        self._conf(self.replica_conf, [
            f"port {self.replica_port}", "bind 127.0.0.1", "daemonize no",
            f"logfile {quoted(self.replica_log)}", f"dir {quoted(rdir)}",
            'save ""', "appendonly no", "maxclients 1000",
            f"replicaof 127.0.0.1 {st.redis_port}"] +
            ([st.redis_extra] if st.redis_extra else []))
        st._spawn("redis-replica", ["redis-server", self.replica_conf], self.replica_log + ".stdout")
        self.sentinel_logs = []
        for i, port in enumerate(self.ports):
            sdir = os.path.join(self.dir, f"sentinel{i}")
            os.makedirs(sdir, exist_ok=True)
            conf = os.path.join(sdir, "sentinel.conf")
            log = os.path.join(sdir, "sentinel.log")
            self.sentinel_logs.append(log)
            # the sentinel rewrites this file: it must be its own, writable
            self._conf(conf, [
                f"port {port}", "bind 127.0.0.1", "daemonize no",
                f"logfile {quoted(log)}", f"dir {quoted(sdir)}",
                f"sentinel monitor {self.name} 127.0.0.1 {st.redis_port} 2",
                f"sentinel down-after-milliseconds {self.name} {self.down_after_ms}",
                f"sentinel failover-timeout {self.name} 10000",
                f"sentinel parallel-syncs {self.name} 1"])
            st._spawn(f"sentinel{i}", ["redis-server", conf, "--sentinel"], log + ".stdout")
        wait_for("redis replica in sync", lambda: "master_link_status:up" in
                 self.cli(self.replica_port, "INFO", "replication"), timeout,
                 logs=[self.replica_log])
        # Every sentinel knows the replica and the other sentinels (hello
        # messages every 2 s): only then can they agree on a failover.
        def known():
            for p in self.ports:
                if len(self.sentinel_cmd(p, "replicas")) < 1:
                    return False
                if len(self.sentinel_cmd(p, "sentinels")) < self.count - 1:
                    return False
            return True
        wait_for("sentinels know each other and the replica", known, timeout * 2,
                 logs=self.sentinel_logs)

    def cli(self, port, *args):
        r = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port), *map(str, args)],
                           capture_output=True, text=True, timeout=10)
        return r.stdout.strip() if r.returncode == 0 else ""

    def sentinel_cmd(self, port, what):
        """SENTINEL <what> mymaster: one line per output row."""
        out = self.cli(port, "SENTINEL", what, self.name)
        return [line for line in out.splitlines() if line == "name"]

    def master_addr(self, port=None):
        """(host, port) the sentinel names as master now, or None."""
        out = self.cli(port or self.ports[0], "SENTINEL", "get-master-addr-by-name", self.name)
        lines = out.splitlines()
        return (lines[0], int(lines[1])) if len(lines) == 2 else None

    def clients(self, port):
        """CLIENT LIST of the server on port, as dicts."""
        out = []
        for line in self.cli(port, "CLIENT", "LIST").splitlines():
            fields = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
            if fields.get("cmd") not in ("client|list", "client"):
                out.append(fields)
        return out

    def stop(self):
        st = self.stack
        res = {}
        for name in [f"sentinel{i}" for i in range(self.count)] + ["redis-replica"]:
            if name in st.procs:
                res[name] = st._stop_one(name, None)
        return res


def other_owner(root):
    """The user owning root (or something in it we rewrite) when that is
    neither us nor is ours to override (we are not root): e.g. after a
    `sudo make run`, `make run` as yourself. None when all is ours."""
    if os.geteuid() == 0:
        return None
    for p in (root, os.path.join(root, "httpd"), os.path.join(root, "stack.json")):
        try:
            uid = os.lstat(p).st_uid
        except OSError:
            continue
        if uid != os.geteuid():
            try:
                return pwd.getpwuid(uid).pw_name
            except KeyError:
                return str(uid)
    return None


def as_owner(owner):
    return "sudo " if owner == "root" else f"sudo -u {owner} "


def cmd_start(args):
    root = os.path.abspath(args.dir)
    owner = other_owner(root)
    if owner:
        print(f"{root} belongs to {owner} (an earlier `{as_owner(owner)}make run`?). Stop and "
              f"remove it as {owner}, then try again: {as_owner(owner)}make stop && "
              f"{as_owner(owner)}rm -rf {shlex.quote(root)}", file=sys.stderr)
        return 1
    if os.path.exists(os.path.join(root, "stack.json")):
        old = Stack.from_dir(root)
        if any(read_pid(p) and pid_alive(read_pid(p))
               for p in (old.redis_pidfile, old.chatd_pidfile, old.httpd_pidfile)):
            print(f"already running under {root} (make stop first); status:")
            return cmd_status(args)
        old.remove_public_dir()        # left by a stack that died unstopped
    http_port = int(args.http_port)
    xmpp_port = int(args.xmpp_port)
    for port, var in ((http_port, "HTTP_PORT"), (xmpp_port, "XMPP_PORT")):
        if not port_is_free(port):
            print(f"port {port} is in use: set {var}=<port> (e.g. `{var}={free_port()} make run`)",
                  file=sys.stderr)
            return 1
    stack = Stack(root, http_port=http_port, xmpp_port=xmpp_port,
                  mpm=args.mpm, foreground=False)
    try:
        stack.start()
    except StackError as e:
        print(f"start failed: {e}", file=sys.stderr)
        stack.stop()
        stack.remove_public_dir()
        return 1
    users = {}
    for name in args.users.split(","):
        if name:
            users[name] = stack.add_user(name)
    with open(os.path.join(root, "users.txt"), "w") as f:
        for name, pw in users.items():
            f.write(f"{name}@{stack.domain} {pw}\n")
    os.chmod(os.path.join(root, "users.txt"), 0o600)
    print_info(stack, users)
    return 0


def print_info(stack, users):
    print()
    print(f"  Demo site:   {stack.base_url}")
    print(f"  BOSH URL:    {stack.bosh_url}")
    print(f"  XMPP (c2s):  127.0.0.1:{stack.xmpp_port}  (STARTTLS, self-signed)")
    print(f"  Status:      {stack.status_url}")
    for name, pw in users.items():
        print(f"  User:        {name}  password {pw}")
    print(f"  Room:        lobby@{stack.muc_domain} (created on first join)")
    print(f"  Add a user:  {shlex.quote(stack.chatctl_bin)} -c {shlex.quote(stack.chatd_conf)}"
          " adduser NAME PASSWORD")
    sso = getattr(stack, "sso_users", None) or {}
    if not sso and os.path.exists(stack.sso_users_file):
        with open(stack.sso_users_file) as f:
            sso = dict(line.split() for line in f if line.strip())
    print(f"  SSO page:    {stack.sso_url}  (the site's own login, HTTP Basic; chat needs no password)")
    for name, pw in sso.items():
        print(f"  Site user:   {name}  password {pw}  (signs in to chat as {name}@{stack.domain})")
    print(f"  Logs:        {stack.chatd_log}, {stack.httpd_error_log}")
    print("  Stop with:   make stop")
    print()


def cmd_stop(args):
    root = os.path.abspath(args.dir)
    if not os.path.exists(os.path.join(root, "stack.json")):
        print("nothing to stop")
        return 0
    owner = other_owner(root)
    if owner:
        print(f"the demo under {root} was started by {owner}: {as_owner(owner)}make stop",
              file=sys.stderr)
        return 1
    stack = Stack.from_dir(root)
    result = stack.stop()
    stack.remove_public_dir()
    for name, st in result.items():
        print(f"{name}: " + {None: "not running", 0: "stopped", -1: "killed"}.get(st, f"exit {st}"))
    return 0 if all(v in (None, 0) for v in result.values()) else 1


def cmd_status(args):
    root = os.path.abspath(args.dir)
    if not os.path.exists(os.path.join(root, "stack.json")):
        print("not running")
        return 1
    stack = Stack.from_dir(root)
    running = True
    for name, pidfile in (("redis", stack.redis_pidfile), ("chatd", stack.chatd_pidfile),
                          ("httpd", stack.httpd_pidfile)):
        pid = read_pid(pidfile)
        up = pid is not None and pid_alive(pid)
        running &= up
        print(f"{name}: " + (f"running (pid {pid})" if up else "not running"))
    users = {}
    try:
        with open(os.path.join(root, "users.txt")) as f:
            for line in f:
                jid, pw = line.split()
                users[jid.split("@")[0]] = pw
    except OSError:
        pass
    if running:
        print_info(stack, users)
    return 0 if running else 1


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("action", choices=["start", "stop", "status"])
    p.add_argument("--dir", default=os.path.join(REPO, "run"))
    p.add_argument("--http-port", default=os.environ.get("HTTP_PORT", "8080"))
    p.add_argument("--xmpp-port", default=os.environ.get("XMPP_PORT", "5222"))
    p.add_argument("--mpm", default=os.environ.get("MPM", "event"), choices=sorted(MPM_CONF))
    p.add_argument("--users", default="alice,bob")
    args = p.parse_args(argv)
    return {"start": cmd_start, "stop": cmd_stop, "status": cmd_status}[args.action](args)


if __name__ == "__main__":
    sys.exit(main())
