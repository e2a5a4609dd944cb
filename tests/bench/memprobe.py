#!/usr/bin/env python3
"""Memory probe: netd's resident set, mapping by mapping, idle and with N endpoints.

Usage (root): tests/bench/memprobe.py [--netd PATH] [--endpoints 1000] [--names 1] [--dns-load SECS]

Starts one netd (pinned to core 1, like the DNS/memory section of bench.py) in a namespace
it creates (`ndb-mem-*`), attaches N endpoints with `netctl connect` (4 in parallel, every
container end in one fill namespace), and prints, for idle / one network / N endpoints, RSS,
anonymous memory and the resident kilobytes of each file mapping (the binary, libc, …); with
`--dns-load`, also after a burst of queries and again after one API request.
Everything it creates is removed on exit, also on failure. A/B comparisons: run it once per
binary (`--netd`), back to back.
"""
import argparse
import concurrent.futures as cf
import json
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402

HOST, FILL = "ndb-mem-host", "ndb-mem-fill"
RUN = f"{bench.RUN}/mem"


def snapshot(pid):
    """RSS, anonymous, private, PSS and per-file resident kB from /proc/PID/smaps."""
    files, cur = {}, None
    for line in open(f"/proc/{pid}/smaps"):
        parts = line.split()
        if parts and "-" in parts[0] and len(parts) >= 5 and ":" not in parts[0]:
            cur = parts[5] if len(parts) > 5 else "[anon]"
        elif parts and parts[0] == "Rss:":
            files[cur] = files.get(cur, 0) + int(parts[1])
    m = bench.proc_mem_kb(pid)
    return {"rss_kb": m["rss"], "anon_kb": m["anon"], "pss_kb": m["pss"],
            "private_kb": m["private"],
            "files_kb": {os.path.basename(k): v for k, v in sorted(files.items(),
                                                                  key=lambda kv: -kv[1]) if v}}


def cleanup():
    for ns in (HOST, FILL):
        bench.kill_netns_procs(ns)
    bench.netns_del_many([n for n in (HOST, FILL) if os.path.exists(f"/run/netns/{n}")])
    shutil.rmtree(RUN, ignore_errors=True)
    try:
        os.rmdir(bench.RUN)  # only when empty: a benchmark run may be using it
    except OSError:
        pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--netd", default=bench.NETD)
    ap.add_argument("--netctl", default=bench.NETCTL)
    ap.add_argument("--endpoints", type=int, default=1000)
    ap.add_argument("--names", type=int, default=1, help="names per endpoint (1 + aliases)")
    ap.add_argument("--dns-load", type=float, default=0,
                    help="seconds of DNS queries (dnsperf: A and NXDOMAIN in the network) after "
                         "the attach; then one API request, which lets the idle trim run")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--netd-arg", action="append", default=[],
                    help="extra netd flag, e.g. --netd-arg=--no-dns")
    a = ap.parse_args()
    cleanup()
    try:
        bench.netns_add_many([HOST, FILL])
        bench.sh(["ip", "netns", "exec", FILL, "sysctl", "-q", "-w",
                  "net.ipv6.conf.default.disable_ipv6=1"])
        os.makedirs(RUN, exist_ok=True)
        open(f"{RUN}/resolv.conf", "w").write("nameserver 127.0.0.1\n")
        sock = f"{RUN}/netd.sock"
        nd = bench.start_netd(HOST, sock, f"{RUN}/state", f"{RUN}/resolv.conf",
                              f"{RUN}/netd.log", cpus="1", extra=a.netd_arg, binary=a.netd)
        ctl = lambda *x: bench.sh([a.netctl, "--socket", sock, *x])  # noqa: E731
        pid = bench.netd_pid(nd)
        out = {}
        time.sleep(1.5)
        out["idle"] = snapshot(pid)
        ctl("create", "memb", "--subnet", "10.99.0.0/16", "--gateway", bench.GW)
        time.sleep(1.5)
        out["1_network"] = snapshot(pid)

        def attach(i):
            al = []
            for k in range(1, a.names):
                al += ["--alias", f"c{i}-a{k}"]
            ctl("connect", "memb", "--netns", f"/run/netns/{FILL}", "--name", f"c{i}",
                "--ifname", f"e{i}", *al)
        with cf.ThreadPoolExecutor(4) as ex:
            list(ex.map(attach, range(a.endpoints)))
        time.sleep(2.5)  # the heap is trimmed a second after the API goes quiet
        out[f"{a.endpoints}_endpoints_{a.endpoints * a.names}_names"] = snapshot(pid)
        if a.dns_load:
            qf = f"{RUN}/queries"
            with open(qf, "w") as f:
                for i in range(a.endpoints):
                    f.write(f"c{i}.memb A\nnosuch{i}.memb A\n")
            bench.dnsperf(53, qf, a.dns_load, ns=FILL)
            time.sleep(2.5)
            out["after_dns_load"] = snapshot(pid)
            ctl("ls")
            time.sleep(2.5)
            out["after_dns_load_then_api"] = snapshot(pid)
        bench.stop_proc(nd)
    finally:
        cleanup()
    if a.json:
        print(json.dumps(out, indent=1))
        return
    for state, s in out.items():
        top = ", ".join(f"{k} {v}" for k, v in list(s["files_kb"].items())[:8])
        print(f"{state:28} RSS {s['rss_kb'] / 1024:5.1f} MiB  anon {s['anon_kb'] / 1024:4.1f}"
              f"  private {s['private_kb'] / 1024:4.1f}  PSS {s['pss_kb'] / 1024:5.1f}  | {top}")


if __name__ == "__main__":
    sys.exit(main())
