#!/bin/bash
# test-all.sh: what `make test` runs after installing packages.
#   1. build everything (chatd, chatctl, mod_bosh.so)   - stop here on failure
#   1b. common/xml_stream.c compiled for an expat without reparse deferral
#   2. unit tests                                        (make unit)
#   3. unit tests under ASan + UBSan in build-asan/      (make unit-asan)
#   4. Debian packages: build, install, a2enmod bosh && apachectl configtest, purge
#      (through sudo when not root)
#   4b. fuzz: each libFuzzer target (tests/fuzz) for FUZZ_SECONDS (20) with
#       clang; a crash, leak or sanitizer report fails the step
#   5. integration tests: raw HTTP, Strophe.js clients, Chromium + Converse.js;
#      ITEST_JOBS (3) test files side by side (pytest-xdist: each starts its
#      own daemons on free ports, and most of their time is spent waiting on
#      the network), then the ones marked `serial` one at a time
# Steps 2-4 all run even when one fails, so one run shows every failure;
# the exit status is non-zero if any step failed. On success the output
# ends with pytest's summary line.
set -uo pipefail
cd "$(dirname "$0")/.."
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}
MAKE=${MAKE:-make}

failed=()
run_step() {
    local name=$1; shift
    echo "=== $name: $*"
    local t0=$SECONDS
    if "$@"; then
        [ "$name" = integration ] || echo "=== $name: ok ($((SECONDS - t0))s)"
    else
        echo "=== $name: FAILED ($((SECONDS - t0))s)"
        failed+=("$name")
    fi
}

run_step build $MAKE --no-print-directory -j"$JOBS" all
if [ ${#failed[@]} -gt 0 ]; then
    echo "make test: the build failed; nothing else was run"
    exit 1
fi
# The older-expat code path (bookworm's libexpat1-dev 2.5.0-1+deb12u1 has
# no XML_SetReparseDeferralEnabled) must compile whatever this machine has.
run_step expat-compat $MAKE --no-print-directory build/expat-compat/obj/common/xml_stream.o \
    BUILD=build/expat-compat HAVE_XML_REPARSE_DEFERRAL=0
run_step unit $MAKE --no-print-directory -j"$JOBS" unit
ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=0:detect_leaks=1} \
UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
    run_step unit-asan $MAKE --no-print-directory -j"$JOBS" unit-asan
# dpkg -i and adduser need root: a normal user gets there through sudo,
# as install-deps.sh does for apt-get (the packages build in a /tmp
# scratch copy, so nothing root-owned lands in the checkout).
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
run_step packaging $SUDO tests/packaging/test_packages.sh
run_step fuzz $MAKE --no-print-directory fuzz FUZZ_SECONDS="${FUZZ_SECONDS:-20}"
PYTEST="/usr/bin/python3 -m pytest -q --durations=10"
run_step integration-parallel $PYTEST -p xdist -n "${ITEST_JOBS:-3}" --dist loadfile \
    -m "not serial" tests/integration
run_step integration $PYTEST -m serial tests/integration

if [ ${#failed[@]} -gt 0 ]; then
    echo "make test: FAILED: ${failed[*]}"
    exit 1
fi
# On success the last line is pytest's "N passed in S s".
