#!/bin/bash
# test_packages.sh: build the Debian packages and install them here, the
# way an admin would, then check what they promise:
#
#   1. dpkg-buildpackage -us -uc -b in a scratch copy of the tree (the
#      checkout itself is never touched by debian/rules clean);
#   2. dpkg-deb: the files, conffiles, dependencies and scripts of
#      libapache2-mod-bosh and chatd;
#   3. dpkg -i both on this machine with a policy-rc.d that forbids any
#      service start (nothing is left running), then: the _chatd user,
#      www-data NOT in group _chatd, file modes and owners (chatd.conf and
#      the generated relay.secret unreadable by www-data), `chatd -t` as
#      _chatd, the relay socket welcoming www-data and refusing (and
#      logging) any other uid, a root-only bosh-secrets.conf, the log file
#      and a forced logrotate whose SIGHUP makes chatd reopen it (chatd
#      started by hand as systemd would, then stopped), the unit file, man
#      pages, and `a2enmod bosh && apachectl configtest`;
#   4. dpkg --purge both; Apache's configuration is as clean as before.
#
# Needs root (dpkg -i) and a Debian machine. This is for a throwaway CI
# machine: it installs into the real root and purges afterwards.
# Output ends with "packaging: N passed, N failed"; exit 1 on any failure.
# KEEP=1 keeps the scratch directory (the .debs and the build log).
set -uo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
passed=0
failed=0
ok()   { passed=$((passed + 1)); echo "ok   - $*"; }
fail() { failed=$((failed + 1)); echo "FAIL - $*"; }
check() {   # check "description" command...
    local what=$1; shift
    if "$@" >/dev/null 2>&1; then ok "$what"; else fail "$what"; fi
}
finish() {
    echo "packaging: $passed passed, $failed failed"
    [ "$failed" -eq 0 ]
    exit $?
}

# --- 0. the docs cover what the code has ---------------------------------------
# Every mod_bosh directive (command tables), every chatd key (config.c)
# and every chatctl command must be documented; every chatd key must be
# in the packaged chatd.conf (set or commented with its default).
directives=$(grep -ho 'AP_INIT_[A-Z0-9]*("[A-Za-z]*"' "$REPO"/mod_bosh/*.c | cut -d'"' -f2 | sort -u)
keys=$( { grep -o '{ "[a-z_0-9]*", &c->' "$REPO/chatd/core/config.c" | cut -d'"' -f2
          grep -o 'strcmp(key, "[a-z_0-9]*")' "$REPO/chatd/core/config.c" | cut -d'"' -f2; } | sort -u)
ctlcmds=$(grep -o '^ *{ "[a-z]*", *-\?[0-9]' "$REPO/chatd/core/chatctl.c" | cut -d'"' -f2 | sort -u)
missing=
for d in $directives; do grep -q "\*\*$d\*\*" "$REPO/docs/configuration.md" || missing="$missing $d"; done
if [ -n "$directives" ] && [ -z "$missing" ]; then
    ok "docs/configuration.md explains all $(echo $directives | wc -w) mod_bosh directives"
else
    fail "docs/configuration.md lacks a **section** for:${missing:- (no directives found)}"
fi
missing=
for k in $keys; do grep -q "\*\*$k\*\*" "$REPO/docs/configuration.md" || missing="$missing $k"; done
if [ -n "$keys" ] && [ -z "$missing" ]; then
    ok "docs/configuration.md explains all $(echo $keys | wc -w) chatd keys"
else
    fail "docs/configuration.md lacks a **section** for chatd keys:${missing:- (no keys found)}"
fi
missing=
for k in $keys; do
    grep -Eq "^#?$k( |$)" "$REPO/packaging/chatd.conf" || missing="$missing $k"
    grep -q "^\.BR $k" "$REPO/man/chatd.8" || missing="$missing $k(chatd.8)"
done
if [ -z "$missing" ]; then ok "packaging/chatd.conf and chatd(8) name every chatd key"
else fail "not in packaging/chatd.conf or chatd(8):$missing"; fi
missing=
for c in $ctlcmds; do grep -Eq "^\.(B|BI) \"?$c" "$REPO/man/chatctl.8" || missing="$missing $c"; done
if [ -n "$ctlcmds" ] && [ -z "$missing" ]; then ok "chatctl(8) documents all chatctl commands ($(echo $ctlcmds | tr '\n' ' '))"
else fail "chatctl(8) lacks:${missing:- (no commands found)}"; fi

if [ "$(id -u)" -ne 0 ]; then
    fail "must run as root (dpkg -i, adduser)"
    finish
fi

# --- tools ------------------------------------------------------------------
need=()
command -v dpkg-buildpackage >/dev/null || need+=(dpkg-dev)
command -v dh >/dev/null || need+=(debhelper)
command -v dh_apache2 >/dev/null || need+=(apache2-dev)
command -v fakeroot >/dev/null || need+=(fakeroot)
command -v gcc >/dev/null || need+=(build-essential)
command -v logrotate >/dev/null || need+=(logrotate)   # to check /etc/logrotate.d/chatd
if [ ${#need[@]} -gt 0 ]; then
    echo "# installing ${need[*]}"
    apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${need[@]}" >/dev/null 2>&1 || { fail "apt-get install ${need[*]}"; finish; }
fi

SCRATCH=$(mktemp -d /tmp/chat-packaging.XXXXXX)
POLICY=/usr/sbin/policy-rc.d
POLICY_SAVED=
STARTED_PID=
RUN_DIR_MADE=

cleanup() {
    if [ -n "$STARTED_PID" ] && kill -0 "$STARTED_PID" 2>/dev/null; then
        kill "$STARTED_PID" 2>/dev/null
        wait "$STARTED_PID" 2>/dev/null
    fi
    [ -n "$RUN_DIR_MADE" ] && rm -rf /run/chatd
    # Never leave our packages behind, even after a failed check.
    for p in libapache2-mod-bosh chatd; do
        if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'installed\|config-files\|half'; then
            dpkg --purge "$p" >/dev/null 2>&1
        fi
    done
    if [ -n "$POLICY_SAVED" ]; then mv -f "$POLICY_SAVED" "$POLICY"; else rm -f "$POLICY"; fi
    if [ "${KEEP:-0}" = 1 ]; then echo "# kept $SCRATCH"; else rm -rf "$SCRATCH"; fi
}
trap cleanup EXIT

# --- 1. build -----------------------------------------------------------------
# A copy of the sources only: no build output, no node_modules, no git.
SRC=$SCRATCH/mod-bosh-chatd-0.1.0
mkdir -p "$SRC"
tar -C "$REPO" -cf - \
    --exclude=./.git --exclude=./build --exclude=./build-asan \
    --exclude=./node_modules --exclude=./run --exclude=./tests/integration/.artifacts \
    --exclude='*.o' --exclude='*.lo' --exclude='*.slo' --exclude='*.la' \
    --exclude=.libs --exclude=__pycache__ --exclude=./debian/tmp \
    --exclude='./debian/.debhelper' --exclude='./debian/libapache2-mod-bosh' \
    --exclude=./debian/chatd --exclude='./debian/*.substvars' \
    --exclude='./debian/*debhelper*' --exclude=./debian/files \
    . | tar -C "$SRC" -xf -

echo "# dpkg-buildpackage -us -uc -b (log: $SCRATCH/build.log)"
if (cd "$SRC" && dpkg-buildpackage -us -uc -b -j"$(nproc 2>/dev/null || echo 2)") \
        >"$SCRATCH/build.log" 2>&1; then
    ok "dpkg-buildpackage -us -uc -b"
else
    fail "dpkg-buildpackage -us -uc -b; the end of its log:"
    tail -40 "$SCRATCH/build.log" | sed 's/^/#   /'
    finish
fi

MOD_DEB=$(ls "$SCRATCH"/libapache2-mod-bosh_*.deb 2>/dev/null | head -1)
CHATD_DEB=$(ls "$SCRATCH"/chatd_*.deb 2>/dev/null | head -1)
check "libapache2-mod-bosh .deb built" test -f "$MOD_DEB"
check "chatd .deb built" test -f "$CHATD_DEB"
[ -f "$MOD_DEB" ] && [ -f "$CHATD_DEB" ] || finish

# --- 2. contents ----------------------------------------------------------------
has_file() {   # has_file deb path-regex
    dpkg-deb -c "$1" | awk '{print $6}' | grep -Eq "^\.$2\$"
}
for f in /usr/lib/apache2/modules/mod_bosh.so \
         /etc/apache2/mods-available/bosh.load \
         /etc/apache2/mods-available/bosh.conf \
         /usr/share/doc/libapache2-mod-bosh/embedding.md'(\.gz)?'; do
    check "libapache2-mod-bosh contains $f" has_file "$MOD_DEB" "$f"
done
for f in /usr/sbin/chatd /usr/sbin/chatctl /etc/chatd/chatd.conf \
         '(/usr)?/lib/systemd/system/chatd.service' /etc/logrotate.d/chatd \
         /usr/share/man/man8/chatd.8.gz /usr/share/man/man8/chatctl.8.gz \
         '/usr/share/doc/chatd/configuration.md(\.gz)?'; do
    check "chatd contains $f" has_file "$CHATD_DEB" "$f"
done
check "mod_bosh.so exports bosh_module" \
    sh -c "dpkg-deb --fsys-tarfile '$MOD_DEB' | tar -xOf - ./usr/lib/apache2/modules/mod_bosh.so > '$SCRATCH/mod_bosh.so' && nm -D --defined-only '$SCRATCH/mod_bosh.so' | grep -qw bosh_module"
check "libapache2-mod-bosh depends on the Apache module API" \
    sh -c "dpkg-deb -f '$MOD_DEB' Depends | grep -q 'apache2-api-'"
check "chatd depends on adduser" sh -c "dpkg-deb -f '$CHATD_DEB' Depends | grep -qw adduser"
check "bosh.conf is a conffile" \
    sh -c "dpkg-deb -I '$MOD_DEB' conffiles | grep -qx /etc/apache2/mods-available/bosh.conf"
check "chatd.conf and logrotate/chatd are conffiles" \
    sh -c "dpkg-deb -I '$CHATD_DEB' conffiles | grep -qx /etc/chatd/chatd.conf && dpkg-deb -I '$CHATD_DEB' conffiles | grep -qx /etc/logrotate.d/chatd"
check "chatd postinst creates the system user before enabling the unit" \
    sh -c "dpkg-deb -I '$CHATD_DEB' postinst | awk '/adduser --system/{a=NR} /deb-systemd-helper/{if(!s)s=NR} END{exit !(a && s && a < s)}'"
check "the module is not enabled on install (a2enmod is the admin's step)" \
    sh -c "! dpkg-deb -I '$MOD_DEB' postinst 2>/dev/null | grep -q 'apache2_invoke enmod'"
check "the module is disabled on removal" \
    sh -c "dpkg-deb -I '$MOD_DEB' prerm | grep -q 'apache2_invoke dismod' && dpkg-deb -I '$MOD_DEB' prerm | grep -Eq 'for conf in bosh( |\$)'"

# --- 3. install on this machine --------------------------------------------------
# No service may start: policy-rc.d 101 is honoured by invoke-rc.d and
# deb-systemd-invoke (the debhelper snippets and apache2-maintscript-helper).
if [ -e "$POLICY" ]; then POLICY_SAVED=$SCRATCH/policy-rc.d.saved; cp -p "$POLICY" "$POLICY_SAVED"; fi
printf '#!/bin/sh\nexit 101\n' >"$POLICY"
chmod 0755 "$POLICY"

if apachectl configtest >/dev/null 2>&1; then
    ok "apachectl configtest passes before the install (baseline)"
else
    fail "apachectl configtest fails before the install: this machine's Apache config is broken:"
    apachectl configtest 2>&1 | sed 's/^/#   /'
fi
if [ -e /etc/apache2/mods-enabled/bosh.load ]; then
    fail "bosh is already enabled before the install (leftover?)"
fi

if dpkg -i "$CHATD_DEB" "$MOD_DEB" >"$SCRATCH/install.log" 2>&1; then
    ok "dpkg -i chatd libapache2-mod-bosh"
else
    fail "dpkg -i chatd libapache2-mod-bosh:"
    sed 's/^/#   /' "$SCRATCH/install.log"
    finish
fi

check "_chatd is a system user with no login" \
    sh -c 'e=$(getent passwd _chatd) && uid=$(echo "$e" | cut -d: -f3) && [ "$uid" -lt 1000 ] && echo "$e" | grep -Eq ":(/usr/sbin/nologin|/bin/false)$"'
check "group _chatd exists" getent group _chatd
# Issue 13: group _chatd reads the Redis password and the relay secret;
# Apache's children reach the socket by their uid (relay_peer_user), so
# they are not in it, and no PHP/CGI script of a site can read either.
check "www-data is not in group _chatd" sh -c "! id -nG www-data | tr ' ' '\n' | grep -qx _chatd"
check "/etc/chatd/chatd.conf is root:_chatd 0640" \
    sh -c '[ "$(stat -c %U:%G:%a /etc/chatd/chatd.conf)" = root:_chatd:640 ]'
check "/etc/chatd/relay.secret was generated, root:_chatd 0640, 64 hex digits" \
    sh -c '[ "$(stat -c %U:%G:%a /etc/chatd/relay.secret)" = root:_chatd:640 ] && grep -Eqx "[0-9a-f]{64}" /etc/chatd/relay.secret'
check "www-data cannot read chatd.conf nor relay.secret" \
    sh -c '! runuser -u www-data -- cat /etc/chatd/chatd.conf && ! runuser -u www-data -- cat /etc/chatd/relay.secret'
check "_chatd can read chatd.conf and relay.secret" \
    runuser -u _chatd -- cat /etc/chatd/chatd.conf /etc/chatd/relay.secret
check "the packaged chatd.conf lets www-data use the relay" \
    grep -qx 'relay_peer_user www-data' /etc/chatd/chatd.conf
check "/etc/apache2/mods-available/bosh.conf holds no password" \
    sh -c '! grep -Eq "^[^#]*redis://:[^@]+@" /etc/apache2/mods-available/bosh.conf'
check "/var/log/chatd is _chatd:adm 2750" \
    sh -c '[ "$(stat -c %U:%G:%a /var/log/chatd)" = _chatd:adm:2750 ]'
check "chatd -t accepts the packaged config, run as _chatd" \
    runuser -u _chatd -- /usr/sbin/chatd -t -c /etc/chatd/chatd.conf
check "chatctl -h lists its commands" sh -c '/usr/sbin/chatctl -h | grep -q adduser'
check "chatctl without arguments is a usage error (exit 2)" \
    sh -c '/usr/sbin/chatctl >/dev/null 2>&1; [ $? -eq 2 ]'
check "man finds chatd(8) and chatctl(8)" \
    sh -c 'man -w 8 chatd | grep -q chatd.8 && man -w 8 chatctl | grep -q chatctl.8'
UNIT=$(ls /lib/systemd/system/chatd.service /usr/lib/systemd/system/chatd.service 2>/dev/null | head -1)
check "chatd.service: simple, -f -c /etc/chatd/chatd.conf, _chatd, RuntimeDirectory=chatd" \
    sh -c "grep -qx 'Type=simple' '$UNIT' && grep -qx 'ExecStart=/usr/sbin/chatd -f -c /etc/chatd/chatd.conf' '$UNIT' && grep -qx 'User=_chatd' '$UNIT' && grep -qx 'RuntimeDirectory=chatd' '$UNIT'"
if systemd-analyze verify "$UNIT" >"$SCRATCH/verify.log" 2>&1; then
    ok "systemd-analyze verify chatd.service"
else
    fail "systemd-analyze verify chatd.service:"
    sed 's/^/#   /' "$SCRATCH/verify.log"
fi
check "chatd.service is enabled, not running" \
    sh -c 'test -L /etc/systemd/system/multi-user.target.wants/chatd.service && ! pgrep -u _chatd -x chatd'
# The relay socket as systemd would set it up: /run/chatd with the unit's
# RuntimeDirectoryMode, _chatd:_chatd, chatd as _chatd:_chatd with UMask
# 0027. Our own copy of the config with native c2s off, so no port is taken.
RUN_MODE=$(sed -n 's/^RuntimeDirectoryMode=//p' "$UNIT")
check "chatd.service: RuntimeDirectoryMode=0755 (www-data reaches the socket; chatd checks its uid)" \
    test "$RUN_MODE" = 0755
if [ -e /run/chatd ]; then
    fail "/run/chatd already exists: is a chatd running here? relay socket check skipped"
else
    install -d -o _chatd -g _chatd -m "${RUN_MODE:-0755}" /run/chatd
    RUN_DIR_MADE=1
    sed -e 's/^c2s_listen .*/c2s_listen off/' /etc/chatd/chatd.conf >/run/chatd/test.conf
    chown root:_chatd /run/chatd/test.conf; chmod 0640 /run/chatd/test.conf
    setpriv --reuid=_chatd --regid=_chatd --init-groups -- \
        sh -c 'umask 0027; exec /usr/sbin/chatd -f -c /run/chatd/test.conf' &
    STARTED_PID=$!
    for _ in $(seq 50); do [ -S /run/chatd/relay.sock ] && break; sleep 0.1; done
    if [ -S /run/chatd/relay.sock ]; then
        ok "chatd (as _chatd) listens on /run/chatd/relay.sock"
        connect='import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect("/run/chatd/relay.sock")'
        # HELLO (common/RELAY.md); prints the type of chatd's answer:
        # 2 WELCOME, 9 REFUSE.
        hello='import socket,struct; s=socket.socket(socket.AF_UNIX); s.settimeout(10); s.connect("/run/chatd/relay.sock"); s.sendall(struct.pack(">BBHII",1,1,0,0,0)); print(s.recv(12)[1])'
        check "www-data is welcomed on the relay socket (WELCOME)" \
            sh -c "[ \"\$(runuser -u www-data -- python3 -c '$hello')\" = 2 ]"
        check "nobody reaches the relay socket but chatd refuses it (REFUSE)" \
            sh -c "[ \"\$(runuser -u nobody -- python3 -c '$hello')\" = 9 ]"
        for _ in $(seq 30); do grep -q "BOSH00150: relay: refused unix peer uid $(id -u nobody) (nobody)" /var/log/chatd/chatd.log && break; sleep 0.1; done
        check "chatd logged the refused uid" \
            grep -q "BOSH00150: relay: refused unix peer uid $(id -u nobody) (nobody) pid" /var/log/chatd/chatd.log
        check "relay socket is _chatd:_chatd 0666 (the peer check decides)" \
            sh -c '[ "$(stat -c %U:%G:%a /run/chatd/relay.sock)" = _chatd:_chatd:666 ]'
        if [ -S /run/chatd/admin.sock ]; then
            check "www-data cannot connect to the admin socket" \
                sh -c "! runuser -u www-data -- python3 -c '${connect/relay.sock/admin.sock}'"
        fi
        check "chatd logs to /var/log/chatd/chatd.log and wrote /run/chatd/chatd.pid" \
            sh -c 'grep -q "ready" /var/log/chatd/chatd.log && [ "$(cat /run/chatd/chatd.pid)" = '"$STARTED_PID"' ]'
        # logrotate for real (forced, own state file): the log moves to
        # chatd.log.1, postrotate's SIGHUP makes chatd reopen chatd.log.
        if logrotate -f -s "$SCRATCH/logrotate.state" /etc/logrotate.d/chatd >"$SCRATCH/logrotate.log" 2>&1; then
            for _ in $(seq 30); do grep -q "log reopened" /var/log/chatd/chatd.log 2>/dev/null && break; sleep 0.1; done
            check "logrotate moved the log and chatd reopened it after SIGHUP" \
                sh -c 'grep -q ready /var/log/chatd/chatd.log.1 && grep -q "log reopened" /var/log/chatd/chatd.log'
            check "the new log is _chatd:adm 0640" \
                sh -c '[ "$(stat -c %U:%G:%a /var/log/chatd/chatd.log)" = _chatd:adm:640 ]'
        else
            fail "logrotate -f /etc/logrotate.d/chatd:"
            sed 's/^/#   /' "$SCRATCH/logrotate.log"
        fi
    else
        fail "chatd (as _chatd) did not create /run/chatd/relay.sock; its log:"
        sed 's/^/#   /' /var/log/chatd/chatd.log 2>/dev/null
    fi
    kill "$STARTED_PID" 2>/dev/null
    wait "$STARTED_PID" 2>/dev/null
    STARTED_PID=
    rm -rf /run/chatd
    RUN_DIR_MADE=
fi

if a2enmod bosh >"$SCRATCH/a2enmod.log" 2>&1 && apachectl configtest >>"$SCRATCH/a2enmod.log" 2>&1; then
    ok "a2enmod bosh && apachectl configtest"
else
    fail "a2enmod bosh && apachectl configtest:"
    sed 's/^/#   /' "$SCRATCH/a2enmod.log"
fi
check "apache2ctl -M lists bosh_module" sh -c 'apache2ctl -M 2>/dev/null | grep -q bosh_module'
# Secrets for mod_bosh in a root-only file that bosh.conf includes: Apache
# reads it (and the relay secret) as root; www-data reads neither.
SECRETS=/etc/apache2/bosh-secrets.conf
if [ -e "$SECRETS" ]; then
    fail "$SECRETS already exists (leftover?); root-only secrets check skipped"
else
    (umask 0077; printf '%s\n' 'BoshRedis redis://:s3cret@127.0.0.1:6379/0' \
        'BoshRelaySecretFile /etc/chatd/relay.secret' >"$SECRETS")
    if apachectl configtest >"$SCRATCH/secrets.log" 2>&1; then
        ok "apachectl configtest with BoshRedis and BoshRelaySecretFile in root-only $SECRETS"
    else
        fail "apachectl configtest with $SECRETS:"
        sed 's/^/#   /' "$SCRATCH/secrets.log"
    fi
    check "no warning about a world-readable Redis password" sh -c "! grep -q BOSH00161 '$SCRATCH/secrets.log'"
    check "www-data cannot read $SECRETS" sh -c "! runuser -u www-data -- cat '$SECRETS'"
    rm -f "$SECRETS"
fi

# --- 4. purge ---------------------------------------------------------------------
if dpkg --purge libapache2-mod-bosh chatd >"$SCRATCH/purge.log" 2>&1; then
    ok "dpkg --purge libapache2-mod-bosh chatd"
else
    fail "dpkg --purge:"
    sed 's/^/#   /' "$SCRATCH/purge.log"
fi
check "purge disabled the module" test ! -e /etc/apache2/mods-enabled/bosh.load
check "purge removed mods-available/bosh.*, /etc/chatd and /var/log/chatd" \
    sh -c 'test ! -e /etc/apache2/mods-available/bosh.conf && test ! -e /etc/chatd && test ! -e /var/log/chatd'
check "www-data is still not in group _chatd" \
    sh -c "! id -nG www-data | tr ' ' '\n' | grep -qx _chatd"
check "apachectl configtest passes after the purge" apachectl configtest

finish
