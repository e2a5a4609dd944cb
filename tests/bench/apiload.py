#!/usr/bin/python3
"""API latency under DNS load: `netctl connect` of two netd builds, idle and while dnsperf
saturates the same daemon's DNS server, alternating the builds in one run.

Usage (root): tests/bench/apiload.py OLD_NETD NEW_NETD [--reps 4] [--per 15] [--endpoints 800]
              [--dns-under-api]

netd serves the API and DNS on one thread; this shows what a burst of DNS queries does to an
attach. Each build gets dnsab.py's setup (its own host, client and filler namespaces; a network
of N endpoints × 10 names; daemon on core 1, dnsperf on core 0). Per repetition and build:
`--per` connects with nothing else running, then `--per` connects while dnsperf sends A
queries at saturation. Prints p50 / p90 / max per build and state. The connects add endpoints,
so endpoints + 2 × reps × per must stay below a bridge's 1,023 ports. With
`--dns-under-api` the other way round: DNS latency at a fixed 2,000 queries/s (p50 / p99 of
3 s of dnsperf), idle and while connects run back to back, 4 at a time, for those 3 s. Everything it creates is
removed on exit (namespaces ndb-d*).
"""
import argparse
import os
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402
import dnsab  # noqa: E402


def runs(a, servers, states):
    """(server, state) for every run: the builds alternate, their order flipped each repetition."""
    for rep in range(a.reps):
        for s in (servers if rep % 2 == 0 else servers[::-1]):
            for state in states:
                yield s, state


NEXT = threading.Lock()


def connect_next(s, nxt):
    """Attaches the server's next container (one name, a fixed address); several threads may
    call it at once."""
    with NEXT:
        i = nxt[s.tag]
        nxt[s.tag] += 1
    bench.dns_attach(s.ctl, i, 1, s.cli, s.fill, "--ip", dnsab.addr(i))


def api_under_dns(a, servers, files):
    """netctl connect latency, idle and while dnsperf saturates the same daemon's DNS."""
    got = {(s.tag, state): [] for s in servers for state in ("idle", "load")}
    nxt = {s.tag: a.endpoints for s in servers}
    for s, state in runs(a, servers, ("idle", "load")):
        load = None
        if state == "load":
            # dnsperf runs 4 s; the connects start once it is at full rate.
            load = threading.Thread(target=bench.dnsperf, args=(53, files["A"], 4),
                                    kwargs={"ns": s.cli})
            load.start()
            time.sleep(0.7)
        for _ in range(a.per):
            t0 = time.perf_counter()
            connect_next(s, nxt)
            got[(s.tag, state)].append((time.perf_counter() - t0) * 1e3)
            time.sleep(0.1)
        if load:
            load.join()
    print(f"netctl connect (ms) with {a.endpoints} endpoints x 10 names, "
          f"{a.reps} x {a.per} per build and state")
    for s in servers:
        for state in ("idle", "load"):
            xs = sorted(got[(s.tag, state)])
            print(f"  {os.path.basename(s.binary):16} {state:5} p50 {statistics.median(xs):6.2f}"
                  f"  p90 {xs[int(len(xs) * 0.9)]:6.2f}  max {xs[-1]:6.2f}")


def dns_under_api(a, servers, files):
    """DNS latency at a fixed rate, idle and during a stream of connects."""
    got = {(s.tag, state): [] for s in servers for state in ("idle", "api")}
    nxt = {s.tag: a.endpoints for s in servers}
    for s, state in runs(a, servers, ("idle", "api")):
        stop = threading.Event()

        def connects(s=s, stop=stop):
            while not stop.is_set() and nxt[s.tag] < 1000:
                connect_next(s, nxt)
        workers = [threading.Thread(target=connects) for _ in range(4 if state == "api" else 0)]
        for w in workers:
            w.start()
        r = bench.dnsperf(53, files["A"], 3, rate=2000, verbose=True, ns=s.cli)
        stop.set()
        for w in workers:
            w.join()
        got[(s.tag, state)].append((r["p50_ms"], r["p99_ms"]))
    print(f"DNS latency (ms) at 2,000 A queries/s, {a.reps} runs of 3 s per build and state "
          "(median of the runs' p50 / p99)")
    for s in servers:
        for state in ("idle", "api"):
            xs = got[(s.tag, state)]
            print(f"  {os.path.basename(s.binary):16} {state:5} p50 "
                  f"{statistics.median(x for x, _ in xs):6.3f}  p99 "
                  f"{statistics.median(y for _, y in xs):6.3f}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--reps", type=int, default=4)
    ap.add_argument("--per", type=int, default=15)
    ap.add_argument("--endpoints", type=int, default=800)
    ap.add_argument("--dns-under-api", action="store_true")
    a = ap.parse_args()
    if a.dns_under_api:
        a.endpoints = min(a.endpoints, 300)
    elif a.endpoints + 2 * a.reps * a.per > 1023:
        sys.exit("endpoints + 2 x reps x per must stay below a bridge's 1,023 ports")
    with dnsab.serving(a.old, a.new, a.endpoints, 10, "apiload") as (servers, files):
        if a.dns_under_api:
            dns_under_api(a, servers, files)
        else:
            api_under_dns(a, servers, files)


if __name__ == "__main__":
    sys.exit(main())
