#!/usr/bin/python3
"""A/B of two netd builds' DNS server: CPU per query, alternating A B B A ... in one run.

Usage (root): tests/bench/dnsab.py OLD_NETD NEW_NETD [--endpoints 1000] [--names 10]
              [--reps 6] [--dur 3] [--kinds A,AAAA_v4only,PTR,NXDOMAIN]

Each build gets its own host namespace (ndb-da-h, ndb-db-h) with one network of N endpoints
(one in a client namespace, the rest in a filler namespace, each with `--names` names), both
daemons pinned to core 1, dnsperf (1 thread, 100 outstanding) to core 0. For every query kind
the builds take turns (order flipped every repetition); server CPU per query is
Δ(utime+stime) / answered queries, as in bench.py's DNS section. Prints the median and the
spread per build and kind, and the median queries/s (a change that saves CPU by answering
fewer queries in the same time shows there). Everything it creates is removed on exit (namespaces ndb-d*).
"""
import argparse
import contextlib
import concurrent.futures as cf
import os
import shutil
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402


class Server:
    """One netd build serving one network."""

    def __init__(self, tag, binary):
        self.tag, self.binary = tag, binary
        self.host, self.cli, self.fill = (f"ndb-d{tag}-{x}" for x in ("h", "c", "f"))
        self.dir = f"{bench.RUN}/dnsab-{tag}"
        self.sock = f"{self.dir}/netd.sock"
        self.proc = None

    def namespaces(self):
        return [self.host, self.cli, self.fill]

    def start(self, endpoints, names):
        os.makedirs(self.dir, exist_ok=True)
        open(f"{self.dir}/resolv.conf", "w").write("nameserver 127.0.0.1\n")
        for ns in (self.cli, self.fill):
            bench.sh(bench.ns_exec(ns, ["sysctl", "-q", "-w",
                                        "net.ipv6.conf.default.disable_ipv6=1"]))
        self.proc = bench.start_netd(self.host, self.sock, f"{self.dir}/state",
                                     f"{self.dir}/resolv.conf", f"{self.dir}/netd.log",
                                     cpus="1", binary=self.binary)
        self.ctl("create", "dnsb", "--subnet", "10.99.0.0/16", "--gateway", bench.GW)

        def attach(i):
            bench.dns_attach(self.ctl, i, names, self.cli, self.fill, "--ip", addr(i))
        with cf.ThreadPoolExecutor(4) as ex:
            list(ex.map(attach, range(endpoints)))
        self.pid = bench.netd_pid(self.proc)

    def ctl(self, *args):
        return bench.sh([bench.NETCTL, "--socket", self.sock, *args])

    def run(self, qfile, dur):
        r = bench.dnsperf_cpu(self.pid, 53, qfile, dur, ns=self.cli)
        return r["cpu_us_per_query"], r["qps"]

    def stop(self):
        bench.stop_proc(self.proc)


@contextlib.contextmanager
def serving(old, new, endpoints, names, label):
    """Both builds serving a network of `endpoints` × `names` names, and the query files;
    stops them and removes everything they created on the way out, also after a failure."""
    servers = [Server("a", old), Server("b", new)]
    try:
        bench.netns_add_many([ns for s in servers for ns in s.namespaces()])
        for s in servers:
            s.start(endpoints, names)
        files = queries(servers[0].dir, endpoints, names)
        bench.settle(label)
        yield servers, files
    finally:
        for s in servers:
            try:
                s.stop()
            except Exception:  # noqa: BLE001 - cleanup must go on
                pass
            bench.kill_netns_procs(s.host)
            shutil.rmtree(s.dir, ignore_errors=True)
        bench.netns_del_many([ns for s in servers for ns in s.namespaces()])


def addr(i):
    """Endpoint c<i>'s address, given at attach so the PTR queries need no look-up."""
    return f"10.99.{(i + 2) // 250}.{(i + 2) % 250 + 2}"


def queries(d, endpoints, names):
    eps = [(f"c{i}", [f"c{i}"] + [f"c{i}-a{k}" for k in range(1, names)])
           for i in range(endpoints)]
    return bench.dns_query_files(f"{d}/q", eps, lambda n: addr(int(n[1:])), endpoints * names)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--endpoints", type=int, default=1000)
    ap.add_argument("--names", type=int, default=10)
    ap.add_argument("--reps", type=int, default=6)
    ap.add_argument("--dur", type=float, default=3)
    ap.add_argument("--kinds", default="A,AAAA_v4only,PTR,NXDOMAIN")
    a = ap.parse_args()
    with serving(a.old, a.new, a.endpoints, a.names, "dnsab") as (servers, files):
        print(f"{a.endpoints} endpoints x {a.names} names; server CPU per query (µs), "
              f"median (min-max) of {a.reps} runs of {a.dur:g} s, median q/s")
        for kind in a.kinds.split(","):
            got = {s.tag: [] for s in servers}
            for rep in range(a.reps):
                for s in (servers if rep % 2 == 0 else servers[::-1]):
                    got[s.tag].append(s.run(files[kind], a.dur))
            cells = []
            for s in servers:
                xs = [x for x, _ in got[s.tag] if x]
                qps = statistics.median(q or 0 for _, q in got[s.tag]) / 1e3
                cells.append(f"{os.path.basename(s.binary)} "
                             f"{statistics.median(xs):5.2f} ({min(xs):.2f}-{max(xs):.2f}) "
                             f"{qps:.0f}k q/s")
            print(f"  {kind:11} " + "   ".join(cells))


if __name__ == "__main__":
    sys.exit(main())
