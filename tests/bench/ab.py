#!/usr/bin/python3
"""A/B of two netd builds: CNI ADD latency through the plugin, alternating A B B A ... in one run.

Usage (root): tests/bench/ab.py OLD_NETD NEW_NETD [--n 300] [--gap-ms 25] [--par 1] [--plugin PATH]
                                [--plugins OLD_PLUGIN NEW_PLUGIN] [--del]

Each build gets its own host namespace (ndb-a-h, ndb-b-h) and its own containers; ADDs
alternate between them (order flipped every container), once back to back and once with an
idle gap before every ADD (how an interleaved benchmark or a real host calls netd), each pass on
fresh container namespaces. With `--par K`, ADDs go in batches of K at once (as the benchmark's
par8 phases), builds alternating by batch. Prints p50/p90 per build and pass, first and second
half. With `--del`, each pass then DELs its containers the same way (last first) and also
prints DEL latency, netd's CPU per DEL (its threads' schedstat) and how long after the last DEL
the host namespace still held netd's veths (deletions left to a background reaper). This is
how every "measured before -> after" row of docs/benchmarks.md since the third round was taken.
Everything it creates is removed on exit (bench.py's namespaces are all named ndb-*).
"""
import argparse
import concurrent.futures as cf
import os
import shutil
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402


class Build(bench.Netd):
    """A netd instance running a given binary."""

    def __init__(self, tag, binary):
        super().__init__()
        self.name, self.short, self.binary = f"netd-{tag}", tag, binary
        self.host = f"ndb-{tag}-h"
        self.subnet = "10.70.0.0/16" if tag == "a" else "10.71.0.0/16"


def label(b):
    """A build's name in the tables: its netd binary, and its plugin when they differ."""
    plugin = f"+{os.path.basename(b.plugin_path)}" if b.plugin_path else ""
    return os.path.basename(b.binary) + plugin


def run_pass(builds, pools, n, gap, offset, par=1, op="add"):
    times = {b.name: [] for b in builds}
    starts = range(offset + 1, offset + n + 1, par)
    for k, first in enumerate(starts if op == "add" else reversed(starts)):
        batch = range(first, min(first + par, offset + n + 1))
        order = builds if k % 2 == 0 else builds[::-1]
        for b in order:
            if gap:
                time.sleep(gap)
            futs = [pools[b.name].submit(getattr(b, op), i, False) for i in batch]
            times[b.name].extend(f.result() for f in futs)
    return times


def veths_left(b):
    out = bench.sh(["ip", "-n", b.host, "-o", "link", "show"], check=False)
    return sum(1 for line in out.splitlines() if ": ndv" in line)


def del_pass(builds, pools, n, gap, offset, par):
    cpu0 = {b.name: bench.thread_cpu_ns(bench.netd_pid(b.proc)) for b in builds}
    times = run_pass(builds, pools, n, gap, offset, par, op="delete")
    t0, drained = time.time(), {}
    while len(drained) < len(builds) and time.time() - t0 < 30:
        for b in builds:
            if b.name not in drained and veths_left(b) == 0:
                drained[b.name] = (time.time() - t0) * 1e3
        time.sleep(0.005)
    cpu = {b.name: (bench.thread_cpu_ns(bench.netd_pid(b.proc)) - cpu0[b.name]) / 1e6 / n
           for b in builds}
    return times, cpu, drained


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--gap-ms", type=float, default=25.0)
    ap.add_argument("--par", type=int, default=1, help="ADDs at once (in batches)")
    ap.add_argument("--plugin", default=bench.NETD_CNI)
    ap.add_argument("--plugins", nargs=2, metavar=("OLD_PLUGIN", "NEW_PLUGIN"),
                    help="A/B of two plugin builds (each build of netd runs with its own)")
    ap.add_argument("--del", dest="dels", action="store_true", help="also time the DELs")
    a = ap.parse_args()
    bench.NETD_CNI = a.plugin
    builds = [Build("a", a.old), Build("b", a.new)]
    for b, plugin in zip(builds, a.plugins or ()):
        b.plugin_path = plugin
    hosts = [b.host for b in builds]
    cns = [b.cns(i) for b in builds for i in range(1, 2 * a.n + 1)]
    pools = {}
    try:
        bench.netns_add_many(hosts + cns)
        for b in builds:
            b.start()
            pools[b.name] = cf.ThreadPoolExecutor(a.par, initializer=bench.enter_netns,
                                                  initargs=(b.host,))
        bench.settle("ab")
        passes, dels = {}, {}
        for title, gap, offset in (("back to back", 0, 0), (f"{a.gap_ms:g} ms gaps",
                                                           a.gap_ms / 1e3, a.n)):
            passes[title] = run_pass(builds, pools, a.n, gap, offset, a.par)
            if a.dels:
                dels[title] = del_pass(builds, pools, a.n, gap, offset, a.par)
        for title, (times, cpu, drained) in dels.items():
            print(f"DEL, {title} ({a.n} each, {a.par} at once, ms: p50 / p90, netd CPU per DEL,"
                  " veths gone after the last DEL)")
            for b in builds:
                t = [x * 1e3 for x in times[b.name]]
                print(f"  {b.name} {label(b):16} {statistics.median(t):6.2f}"
                      f" / {bench.pct(t, 90):6.2f}  cpu {cpu[b.name]:5.2f}"
                      f"  drained {drained.get(b.name, float('nan')):6.1f}")
        for title, times in passes.items():
            print(f"{title} ({a.n} ADDs each, {a.par} at once, ms: p50 all / first half / "
                  "second half, p90)")
            for b in builds:
                t = [x * 1e3 for x in times[b.name]]
                h = len(t) // 2
                print(f"  {b.name} {label(b):16} {statistics.median(t):6.2f}"
                      f" / {statistics.median(t[:h]):6.2f} / {statistics.median(t[h:]):6.2f}"
                      f"  p90 {bench.pct(t, 90):6.2f}")
    finally:
        for p in pools.values():
            p.shutdown()
        for b in builds:
            b.stop()
        for ns in hosts:
            bench.kill_netns_procs(ns)
        bench.netns_del_many(hosts + cns)
        for b in builds:
            shutil.rmtree(f"{bench.STATE}/{b.short}", ignore_errors=True)
            shutil.rmtree(f"{bench.RUN}/{b.short}", ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
