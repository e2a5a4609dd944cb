#!/usr/bin/python3
"""A/B of two netd builds interleaved with a peer: CNI ADD latency and netd's CPU per window.

Usage (root): tests/bench/abpeer.py OLD_NETD NEW_NETD [--peer ref|netavark|none] [--n 1000]
                                    [--par 1] [--ports] [--alias NAME]

The interleaved benchmark's conditions, for two builds: every batch (of `--par` containers)
goes to the peer first, then to both builds, their order flipped every batch; each build has its
own host namespace (ndb-za-h, ndb-zb-h) and containers. Between two of netd's batches the peer's
work (and the other build's) has run, so caches are as cold as in bench.py's CNI phases, where
back-to-back A/B (ab.py) keeps them warm and misses what grows with them. Prints, per window of
100, each build's ADD p50/p90 and netd's CPU per ADD (its threads' schedstat); `--ports`
publishes 2 ports per container, `--alias` gives every netd container the same DNS alias.
How the fifteenth round's rows in docs/benchmarks.md were taken. Everything it creates is
removed on exit (namespaces ndb-*).
"""
import argparse
import concurrent.futures as cf
import json
import os
import shutil
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ab  # noqa: E402
import bench  # noqa: E402


class Build(ab.Build):
    """ab.py's build instance, optionally giving its containers an alias."""

    def __init__(self, tag, binary, alias):
        super().__init__(tag, binary)
        self.alias = alias

    def conf(self, ports, i):
        c = json.loads(super().conf(ports, i))
        if self.alias:
            c.setdefault("runtimeConfig", {})["aliases"] = [self.alias]
        return json.dumps(c)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--peer", choices=["ref", "netavark", "none"], default="ref")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--par", type=int, default=1, help="ADDs at once (in batches)")
    ap.add_argument("--ports", action="store_true", help="2 published ports per container")
    ap.add_argument("--alias", help="a DNS alias every netd container shares")
    a = ap.parse_args()
    builds = [Build("za", a.old, a.alias), Build("zb", a.new, a.alias)]
    peer = {"ref": bench.Ref, "netavark": bench.Netavark, "none": lambda: None}[a.peer]()
    systems = builds + ([peer] if peer else [])
    cns = [s.cns(i) for s in systems for i in range(1, a.n + 1)]
    hosts = [s.host for s in systems]
    pools = {}
    try:
        bench.netns_add_many(hosts + cns)
        for h in hosts:
            bench.sh(["ip", "-n", h, "link", "set", "lo", "up"])
        for s in systems:
            s.start()
            pools[s.name] = cf.ThreadPoolExecutor(max(a.par, 1), initializer=bench.enter_netns,
                                                  initargs=(s.host,))
        pids = {b.name: bench.netd_pid(b.proc) for b in builds}
        bench.settle("abpeer")

        def batch(s, ids):
            return [f.result() for f in [pools[s.name].submit(s.add, i, a.ports) for i in ids]]

        rows = {b.name: [] for b in builds}
        for w0 in range(1, a.n + 1, 100):
            lat = {b.name: [] for b in builds}
            cpu = {b.name: 0 for b in builds}
            for k, first in enumerate(range(w0, min(w0 + 100, a.n + 1), a.par)):
                ids = list(range(first, min(first + a.par, w0 + 100, a.n + 1)))
                if peer:
                    batch(peer, ids)
                for b in (builds if k % 2 == 0 else builds[::-1]):
                    c0 = bench.thread_cpu_ns(pids[b.name])
                    lat[b.name] += batch(b, ids)
                    cpu[b.name] += bench.thread_cpu_ns(pids[b.name]) - c0
            cells = []
            for b in builds:
                xs = lat[b.name]
                row = (statistics.median(xs) * 1e3, bench.pct(xs, 90) * 1e3,
                       cpu[b.name] / len(xs) / 1e6)
                rows[b.name].append(row)
                cells.append(f"{b.name} p50 {row[0]:.2f} p90 {row[1]:.2f} cpu {row[2]:.2f}")
            print(f"containers {w0}-{w0 + len(lat[builds[0].name]) - 1}: " + " | ".join(cells),
                  flush=True)
        print(f"peer {a.peer}, {a.par} at once, {'2 ports' if a.ports else 'no ports'}"
              f"{', alias ' + a.alias if a.alias else ''}; per window of 100:")
        for b in builds:
            print(f"  {b.name} ({ab.label(b)}) p50 ms:     "
                  + " ".join(f"{r[0]:.2f}" for r in rows[b.name]))
            print(f"  {b.name} ({ab.label(b)}) CPU ms/ADD: "
                  + " ".join(f"{r[2]:.2f}" for r in rows[b.name]))
    finally:
        for p in pools.values():
            p.shutdown()
        for s in systems:
            try:
                s.stop()
            except Exception as e:  # keep cleaning up
                print(f"stopping {s.name}: {e}", file=sys.stderr)
            bench.kill_netns_procs(s.host)
        bench.netns_del_many(hosts + cns)
        for b in builds:
            shutil.rmtree(f"{bench.STATE}/{b.short}", ignore_errors=True)
            shutil.rmtree(f"{bench.RUN}/{b.short}", ignore_errors=True)


if __name__ == "__main__":
    main()
