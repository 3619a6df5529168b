"""Issue 12: the README's `make run` works from a fresh clone anywhere.

The test clones this checkout's HEAD into a directory only its owner can
enter (mktemp -d, 0700: what /root/project or a CI workspace looks like;
with a space in its name, as in "My Projects")
and does what a user does: `make run` there (packages present, so: build
from the clone, start), the page and Converse.js answer 200, the printed
`chatctl ... adduser` command adds a user who signs in through Converse in
Chromium (a Strophe.js client signs alice in over /http-bind too), then
`make stop` leaves no process behind. Run as root, httpd's children are
www-data, who cannot enter the clone: before the fix every request got 403.
As root it then does the same as `nobody` from the same clone (already
built): `make run` must not assume root.

The clone gets this checkout's node_modules as hard links (a copy when
that fails) and a fresh install stamp when package-lock.json is the same,
so no npm ci runs: never a symlink, which npm ci would empty.
"""

import json
import os
import pwd
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "scripts"))

import chatstack  # noqa: E402
from clients import BoshClient  # noqa: E402
from outage import wait_until  # noqa: E402

# builds a fresh clone: alone, after the tests that run side by side (conftest.py)
pytestmark = pytest.mark.serial

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
SIGN_IN = os.path.join(REPO, "tests", "browser", "sign-in.mjs")
# Make variables of an enclosing `make test` must not reach the clone's make.
MAKE_ENV_DROP = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "BUILD",
                 "EXTRA_CFLAGS", "CFLAGS")
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def git(*args, cwd=REPO):
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout.strip()


def get(url):
    try:
        with _DIRECT.open(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def share_node_modules(clone):
    """The parent's npm packages in the clone, without npm and without
    touching the parent's copy."""
    src = os.path.realpath(os.path.join(REPO, "node_modules"))
    dst = os.path.join(clone, "node_modules")
    same_lock = (open(os.path.join(REPO, "package-lock.json"), "rb").read() ==
                 open(os.path.join(clone, "package-lock.json"), "rb").read())
    if not os.path.isdir(src) or not same_lock:
        return                    # install-deps runs npm ci in the clone
    if subprocess.run(["cp", "-al", src, dst], capture_output=True).returncode != 0:
        shutil.rmtree(dst, ignore_errors=True)
        subprocess.run(["cp", "-a", src, dst], check=True)
    stamp = os.path.join(dst, ".install-stamp")
    if os.path.lexists(stamp):
        os.unlink(stamp)          # a hard link: never touch the parent's
    open(stamp, "w").close()


def procs_under(path):
    """pids of processes whose command line or cwd is inside path."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if path in cmd or cwd == path or cwd.startswith(path + "/"):
            found.append((int(pid), cmd.strip()))
    return found


class Demo:
    """`make run` / `make stop` in the clone, as `user` (None: ourselves)."""

    def __init__(self, clone, user=None):
        self.clone = clone
        self.user = user
        self.out = ""
        self.info = {}

    def make(self, target, env=None, timeout=240):
        e = {k: v for k, v in os.environ.items() if k not in MAKE_ENV_DROP}
        e.update(env or {})
        kw = {}
        if self.user:
            pw = pwd.getpwnam(self.user)
            kw = dict(user=pw.pw_uid, group=pw.pw_gid, extra_groups=[])
            e["HOME"] = os.path.dirname(self.clone)
        return subprocess.run(["make", f"-j{os.cpu_count() or 2}", target], cwd=self.clone,
                              env=e, capture_output=True, text=True, timeout=timeout, **kw)

    def run(self):
        """make run on free ports (a port taken between free_port and the
        bind gets the "port N is in use" answer: pick again)."""
        for _ in range(3):
            http, xmpp = chatstack.free_port(), chatstack.free_port()
            if http == xmpp:
                continue
            r = self.make("run", {"HTTP_PORT": str(http), "XMPP_PORT": str(xmpp)})
            self.out = r.stdout + r.stderr
            if r.returncode == 0 or "is in use" not in self.out:
                break
        assert r.returncode == 0, f"make run failed in {self.clone}:\n{self.out[-6000:]}"
        for key, pat in (("site", r"Demo site:\s+(\S+)"), ("bosh", r"BOSH URL:\s+(\S+)")):
            m = re.search(pat, self.out)
            assert m, f"make run did not print {key!r}:\n{self.out[-3000:]}"
            self.info[key] = m.group(1).strip()
        self.users = dict(re.findall(r"User:\s+(\w+)\s+password (\S+)", self.out))
        assert {"alice", "bob"} <= set(self.users), self.out[-3000:]
        with open(os.path.join(self.clone, "run", "stack.json")) as f:
            self.state = json.load(f)

    def adduser(self, name, password):
        """The command make run printed, with NAME and PASSWORD filled in."""
        m = re.search(r"Add a user:\s+(.+)", self.out)
        assert m, f"make run did not say how to add a user:\n{self.out[-3000:]}"
        argv = shlex.split(m.group(1).strip())
        assert argv[-3:] == ["adduser", "NAME", "PASSWORD"], argv
        assert os.path.realpath(argv[argv.index("-c") + 1]) == \
            os.path.join(self.clone, "run", "chatd.conf"), argv
        kw = {}
        if self.user:
            pw = pwd.getpwnam(self.user)
            kw = dict(user=pw.pw_uid, group=pw.pw_gid, extra_groups=[])
        r = subprocess.run(argv[:-2] + [name, password], capture_output=True, text=True,
                           timeout=30, **kw)
        assert r.returncode == 0, f"{argv}: {r.stdout}{r.stderr}"

    def stop_and_check(self):
        r = self.make("stop", timeout=60)
        assert r.returncode == 0, f"make stop failed:\n{r.stdout}{r.stderr}"
        try:
            wait_until(lambda: not procs_under(self.clone), 20, "every process gone")
        except AssertionError:
            raise AssertionError(f"left after make stop: {procs_under(self.clone)}") from None
        public = self.state.get("public_dir")
        assert not public or not os.path.exists(public), f"{public} left after make stop"
        try:
            status = get(self.info["site"])[0]
        except OSError:
            status = None             # connection refused: nobody listens
        assert status is None, f"{self.info['site']} still answers {status} after make stop"


def check_demo(demo, artifacts):
    site = demo.info["site"]
    status, body = get(site)
    assert status == 200 and b"<converse-root>" in body, (status, body[:300])
    status, body = get(site + "converse/converse.min.js")
    assert status == 200 and len(body) > 100000, (status, len(body))

    # The printed command adds a user to the running demo ...
    name, password = "erin", "pw-" + os.urandom(6).hex()
    demo.adduser(name, password)

    # ... alice signs in over the demo's /http-bind (Strophe.js) ...
    c = BoshClient(demo.info["bosh"], "alice@localhost", demo.users["alice"])
    try:
        assert c.connect().startswith("alice@localhost/")
    finally:
        c.close()

    # ... and the new user in Converse, in Chromium.
    if os.path.exists(CHROMIUM):
        r = subprocess.run(["node", SIGN_IN, "--base", site, "--user", name,
                            "--password", password, "--artifacts", artifacts],
                           capture_output=True, text=True, timeout=120, cwd=REPO)
        steps = [json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")]
        assert r.returncode == 0, (f"browser sign-in failed: {steps}\n{r.stderr[-2000:]}\n"
                                   f"screenshots: {artifacts}")
        assert "signs in and sees the lobby" in [s["step"] for s in steps if s.get("ok")]


@pytest.fixture
def clone():
    if not os.path.isdir(os.path.join(REPO, ".git")) and not os.path.isfile(
            os.path.join(REPO, ".git")):
        pytest.skip(f"{REPO} is not a git checkout: nothing to clone")
    top = tempfile.mkdtemp(prefix="chat12 fresh-")    # 0700, and a space in the path
    assert os.stat(top).st_mode & 0o777 == 0o700
    dst = os.path.join(top, "repo")
    git("clone", "-q", "--no-checkout", REPO, dst)
    git("checkout", "-q", "--detach", git("rev-parse", "HEAD"), cwd=dst)
    share_node_modules(dst)
    yield dst
    # Whatever a failed assertion left: stop it, then kill what remains
    # (only processes running from the clone, which this test started).
    if procs_under(dst):
        subprocess.run(["make", "stop"], cwd=dst, capture_output=True, timeout=60)
        for pid, _ in procs_under(dst):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    try:
        with open(os.path.join(dst, "run", "stack.json")) as f:
            public = json.load(f).get("public_dir")
        if public and os.path.basename(public).startswith("chatstack-"):
            shutil.rmtree(public, ignore_errors=True)
    except (OSError, ValueError):
        pass
    shutil.rmtree(top, ignore_errors=True)


def test_make_run_from_closed_fresh_clone(clone):
    demo = Demo(clone)
    demo.run()
    assert os.path.exists(os.path.join(clone, "build", "chatd")), "not built in the clone"
    try:
        check_demo(demo, os.path.join(os.path.dirname(clone), "browser"))
    finally:
        demo.stop_and_check()

    if os.geteuid() != 0:
        return                      # that was the not-root case already
    # The same clone as a normal user: it owns its (0700) directory.
    nobody = pwd.getpwnam("nobody")
    top = os.path.dirname(clone)
    for d, dirs, files in os.walk(top):
        if d == clone and "node_modules" in dirs:
            dirs.remove("node_modules")     # hard links: leave the parent's alone
        for n in [d] + [os.path.join(d, f) for f in files + dirs]:
            os.lchown(n, nobody.pw_uid, nobody.pw_gid)
    user_demo = Demo(clone, user="nobody")
    user_demo.run()
    try:
        status, body = get(user_demo.info["site"])
        assert status == 200 and b"<converse-root>" in body, (status, body[:300])
        user_demo.adduser("frank", "pw-" + os.urandom(6).hex())
        c = BoshClient(user_demo.info["bosh"], "alice@localhost", user_demo.users["alice"])
        try:
            assert c.connect().startswith("alice@localhost/")
        finally:
            c.close()
    finally:
        user_demo.stop_and_check()


def test_unreachable_for_httpd_children_stops_with_what_to_do(monkeypatch):
    """When even the public dir is closed to www-data, the stack does not
    start httpd to serve 403s: it fails naming the directory and the fix."""
    if os.geteuid() != 0:
        pytest.skip("httpd switches to www-data only when started as root")
    closed = tempfile.mkdtemp(prefix="chat12-closed-")      # 0700, root's
    monkeypatch.setattr(chatstack, "PUBLIC_PARENT", closed, raising=False)
    st = chatstack.Stack(os.path.join(closed, "run"), foreground=True)
    try:
        with pytest.raises(chatstack.StackError) as err:
            st.start()
        assert "httpd" not in st.procs, "httpd was started anyway"
        msg = str(err.value)
        assert f"{st.relay_sock}: cannot enter {closed}" in msg, msg
        assert f"chmod o+x {closed}" in msg, msg
    finally:
        st.stop()
        shutil.rmtree(closed, ignore_errors=True)
