#!/bin/bash
# install-deps.sh: make sure everything the build, the demo and the tests
# need is here. Fast when nothing is missing: dpkg-query first, apt-get
# (and apt-get update) only for what is absent; npm only when node_modules
# is missing or older than package.json / package-lock.json.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
    build-essential pkg-config
    apache2 apache2-dev libapr1-dev libaprutil1-dev
    libexpat1-dev libhiredis-dev libssl-dev
    redis-server redis-tools
    openssl binutils
    python3-pytest python3-pytest-xdist
    python3-slixmpp valgrind
    chromium
    clang libclang-rt-14-dev
    zlib1g-dev
)
command -v node >/dev/null 2>&1 || PACKAGES+=(nodejs)
command -v npm  >/dev/null 2>&1 || PACKAGES+=(npm)

missing=()
for p in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
    [ "$status" = "installed" ] || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
    echo "install-deps: installing ${missing[*]}"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -q
    $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# npm packages (Converse.js for the demo, Strophe.js + playwright-core for
# the tests). The stamp file records the last successful install.
stamp=node_modules/.install-stamp
if [ ! -f "$stamp" ] || [ package.json -nt "$stamp" ] ||
   { [ -f package-lock.json ] && [ package-lock.json -nt "$stamp" ]; }; then
    if [ -L node_modules ]; then
        # A node_modules shared from another checkout: npm ci would empty
        # the directory it points to, under whoever else is using it.
        echo "install-deps: node_modules is a symlink to $(readlink -f node_modules);" \
             "not reinstalling through it (run npm ci there if its packages are stale)" >&2
        exit 0
    fi
    echo "install-deps: npm packages"
    if [ -f package-lock.json ]; then
        npm ci --no-audit --no-fund --loglevel=error
    else
        npm install --no-audit --no-fund --loglevel=error
    fi
    touch "$stamp"
fi
