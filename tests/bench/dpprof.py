#!/usr/bin/python3
"""Where the datapath's time goes: iperf3 container -> container (or -> outside through NAT) on
netd and on the reference bridge, each under a whole-machine `perf record`, one after the other.

Usage (root): tests/bench/dpprof.py [c2c|nat] [--secs 5] [--reps 3]
Same namespaces (ndb-*) and cleanup as bench.py's datapath section. Prints each system's
throughput and the kernel symbols that differ most between the two profiles (share of all
samples), and writes results/profile-datapath-CASE-{netd,ref}.txt.
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402
import profile as prof  # noqa: E402


def shares(data):
    """Symbol -> share of samples (percent), from `perf report --sort sym`."""
    r = subprocess.run(["perf", "report", "-i", data, "--no-children", "-g", "none", "--stdio",
                        "--sort", "sym", "--percent-limit", "0.2"],
                       capture_output=True, text=True)
    out = {}
    for ln in r.stdout.splitlines():
        f = ln.split()
        if len(f) >= 3 and f[0].endswith("%") and not ln.startswith("#"):
            out[" ".join(f[2:])] = float(f[0].rstrip("%"))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("case", nargs="?", default="c2c", choices=["c2c", "nat"])
    ap.add_argument("--secs", type=int, default=5)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    dp = bench.Datapath()
    systems = dp.systems
    try:
        dp.setup()
        gbps = {k: [] for k in systems}
        data = {k: f"/tmp/ndb-dp-{k}.data" for k in systems}
        for rep in range(a.reps):
            for k in (list(systems) if rep % 2 == 0 else list(systems)[::-1]):
                if a.case == "c2c":
                    target_ns, target = systems[k].cns(2), dp.container_ip(k)
                else:
                    target_ns, target = dp.outs[k], "203.0.113.2"
                perf = None
                if rep >= a.reps - 2:
                    # The last two repetitions (one per system order) are profiled.
                    perf = subprocess.Popen(["perf", "record", "-a", "-F", "1999", "-g", "-o",
                                             data[k]], stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL)
                    time.sleep(0.5)
                gbps[k].append(bench.iperf3(systems[k].cns(1), target_ns, target, a.secs))
                if perf:
                    prof.stop(perf)
        for k in systems:
            runs = ", ".join(f"{g:.2f}" for g in gbps[k])
            print(f"{k}: {statistics.median(gbps[k]):.2f} Gb/s  ({runs})")
        sh = {k: shares(data[k]) for k in systems}
        for k in systems:
            prof.perf_report(data[k], f"{bench.RESULTS}/profile-datapath-{a.case}-{k}.txt",
                             ("--sort", "sym"))
        syms = set(sh["netd"]) | set(sh["ref"])
        diff = sorted(syms, key=lambda x: -(sh["netd"].get(x, 0) - sh["ref"].get(x, 0)))
        print("symbol share of all samples: netd vs ref (largest excess on netd first)")
        for x in diff[:25]:
            print(f"  {sh['netd'].get(x, 0):5.2f}% {sh['ref'].get(x, 0):5.2f}%  {x}")
    finally:
        dp.teardown()

if __name__ == "__main__":
    sys.exit(main())
