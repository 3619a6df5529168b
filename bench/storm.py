#!/usr/bin/python3
"""storm: the reconnect storm at benchmark size (thousands of BOSH clients,
Strophe.js's retry schedule, Retry-After honoured), against a private stack
(scripts/chatstack.py) or an already running endpoint.

The test (tests/integration/test_81_storm.py) checks correctness at about a
thousand clients; this measures: wall time until everyone is in, attempts
per client, admissions per second (clients' clock and Redis's), latency.

    bench/storm.py [--clients 5000] [--rate 200] [--burst 200] [--spread 0]
                   [--mpm event] [--url http://127.0.0.1:8080/http-bind]

With --url no stack is started (Redis counters are then not read).
Raise `ulimit -n` above --clients.
"""

import argparse
import asyncio
import collections
import os
import sys
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "integration"))
from signin_util import per_second_admitted, private_stack, signin_stats  # noqa: E402
from storm_model import per_second, run_storm  # noqa: E402


def report(attempts, wall, pending, t0):
    admitted = [a for a in attempts if a.kind == "admitted"]
    kinds = collections.Counter(a.kind for a in attempts)
    sends = collections.Counter(collections.Counter(a.client for a in attempts).values())
    lat = sorted(a.recv - a.sent for a in attempts if a.recv)
    print(f"wall {wall:.1f} s, admitted {len(admitted)}, still out {pending}")
    print(f"attempts {len(attempts)} {dict(kinds)}")
    print(f"sends per client {dict(sorted(sends.items()))}")
    if lat:
        print(f"latency p50 {lat[len(lat) // 2] * 1000:.0f} ms, p99 "
              f"{lat[int(len(lat) * 0.99)] * 1000:.0f} ms, max {lat[-1] * 1000:.0f} ms")
    print("admitted per second (clients):",
          " ".join(str(n) for _, n in sorted(per_second([a.recv for a in admitted], t0).items())))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=5000)
    p.add_argument("--rate", type=float, default=200)
    p.add_argument("--burst", type=int, default=200)
    p.add_argument("--spread", type=float, default=0.0, help="start within this many seconds")
    p.add_argument("--mpm", default="event")
    p.add_argument("--url", help="existing BOSH endpoint; no private stack")
    p.add_argument("--deadline", type=float, default=600)
    a = p.parse_args()

    def storm(host, port, path):
        t0 = time.monotonic()
        attempts, wall, pending = asyncio.run(
            run_storm(host, port, a.clients, path=path, spread=a.spread, deadline=a.deadline))
        report(attempts, wall, pending, t0)

    if a.url:
        u = urllib.parse.urlsplit(a.url)
        storm(u.hostname, u.port or 80, u.path or "/http-bind")
        return
    os.environ["MPM"] = a.mpm
    with private_stack("bench-storm-",
                       httpd_extra=f"BoshSigninRate {a.rate:g} {a.burst}\n") as st:
        before = signin_stats(st)
        storm("127.0.0.1", st.http_port, "/http-bind")
        after = signin_stats(st)
        secs = per_second_admitted(st)
        print("admitted per second (Redis):", " ".join(str(n) for _, n in sorted(secs.items())))
        print("max per second (Redis):", max(secs.values()) if secs else 0,
              f"(rate + burst = {a.rate + a.burst:g})")
        print("Redis counters, this run:", {k: after[k] - before[k] for k in after})


if __name__ == "__main__":
    main()
