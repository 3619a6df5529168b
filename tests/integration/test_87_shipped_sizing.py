"""The shipped httpd-conf/bosh-mpm.conf holds the team it is sized for,
and mod_bosh's start-up check says so (issue 15).

Why: the file used to size mpm_event for 10,000 users (20 x 1,000 threads),
which cost 287 MiB before anyone signed in: more than a team server of a
few hundred to 2,000 users uses in all. It now ships 8 x 400 threads for
2,000 users (docs/configuration.md, "Sizing httpd for held BOSH
requests"). What an operator reads at start-up must match that: BOSH00401
states the budget (3,200 workers, 2,400 held at BoshMaxHeldShare 75 %),
BoshMaxSessions 2000 passes, and 2401 warns (BOSH00403) with the
MaxRequestWorkers that would hold them.

The httpd here loads only mod_bosh and the shipped file, pointed at a
relay socket nobody listens on: the check runs in post_config, before
any request, and needs no chatd.
"""

import os
import re
import shutil
import signal
import subprocess
import tempfile

import pytest

import chatstack
from outage import wait_until

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHIPPED = os.path.join(REPO, "httpd-conf", "bosh-mpm.conf")


def start_up_log(max_sessions):
    """Start httpd with the shipped sizing and BoshMaxSessions, wait for
    mod_bosh's budget line, stop it; the error log's text."""
    root = tempfile.mkdtemp(prefix="chat86-")
    os.chmod(root, 0o755)
    os.makedirs(os.path.join(root, "runtime"))
    log = os.path.join(root, "error.log")
    so = chatstack.MOD_BOSH_SO
    user = "User www-data\nGroup www-data\n" if os.geteuid() == 0 else ""
    conf = os.path.join(root, "httpd.conf")
    with open(conf, "w") as f:
        f.write(f"""ServerRoot "{root}"
ServerName 127.0.0.1
Listen 127.0.0.1:{chatstack.free_port()}
PidFile "{root}/httpd.pid"
DefaultRuntimeDir "{root}/runtime"
Mutex file:{root}/runtime default
ErrorLog "{log}"
LogLevel info
{user}
LoadModule mpm_event_module {chatstack.APACHE_MODULES}/mod_mpm_event.so
<IfModule !authz_core_module>
    LoadModule authz_core_module {chatstack.APACHE_MODULES}/mod_authz_core.so
</IfModule>
LoadModule {chatstack.module_symbol(so)} {so}
Include "{SHIPPED}"
BoshChatd n1 unix:{root}/nobody.sock
BoshMaxSessions {max_sessions}
""")
    proc = subprocess.Popen(["/usr/sbin/apache2", "-f", conf, "-DFOREGROUND"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        def budget_logged():
            try:
                with open(log, errors="replace") as f:
                    return "BOSH00401" in f.read()
            except OSError:
                return False
        wait_until(lambda: budget_logged() or proc.poll() is not None, 30,
                   "mod_bosh's start-up budget line")
        with open(log, errors="replace") as f:
            text = f.read()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        shutil.rmtree(root, ignore_errors=True)
    return text


@pytest.mark.skipif(not os.path.exists("/usr/sbin/apache2"), reason="no apache2")
def test_shipped_sizing_holds_2000_users():
    log = start_up_log(2000)
    budget = re.findall(r"BOSH00401: worker budget: (\d+) workers \(event, (\d+) x (\d+)\);"
                        r".*? take (\d+) of them \((\d+) per child\)", log)
    assert budget == [("3200", "8", "400", "2400", "300")], log
    assert "BOSH00403" not in log and "BOSH00402" not in log, log


@pytest.mark.skipif(not os.path.exists("/usr/sbin/apache2"), reason="no apache2")
def test_shipped_sizing_warns_beyond_its_share():
    log = start_up_log(2401)
    warn = re.findall(r".*BOSH00403: BoshMaxSessions 2401 cannot be held.*", log)
    # 2401 / 75 % = 3201.3: at least 3202 workers
    assert warn and "75% of 3200 workers is 2400" in warn[0] and \
        "at least 3202" in warn[0], log
