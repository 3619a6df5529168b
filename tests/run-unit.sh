#!/bin/sh
# Run every unit test binary; each prints "N passed, N failed" and exits
# non-zero on failure. Sums them into one closing line.
set -u
total_pass=0; total_fail=0; status=0
for t in "$@"; do
    out=$("$t" 2>&1); rc=$?
    printf '%s\n' "$out"
    line=$(printf '%s\n' "$out" | grep -E '[0-9]+ passed, [0-9]+ failed' | tail -n 1)
    p=$(printf '%s' "$line" | sed -E 's/.*[^0-9]([0-9]+) passed.*/\1/'); f=$(printf '%s' "$line" | sed -E 's/.* ([0-9]+) failed.*/\1/')
    [ -n "$p" ] || p=0; [ -n "$f" ] || f=1
    [ $rc -ne 0 ] && [ "$f" -eq 0 ] && f=1
    total_pass=$((total_pass + p)); total_fail=$((total_fail + f))
    [ $rc -ne 0 ] && status=1
done
echo "unit: $total_pass passed, $total_fail failed"
exit $status
