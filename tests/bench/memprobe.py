#!/usr/bin/env python3
"""Memory probe: netd's resident set, mapping by mapping, idle and with N endpoints.

Usage (root): tests/bench/memprobe.py [--netd PATH] [--endpoints 1000] [--names 1]

Starts one netd (pinned to core 1, like the DNS/memory section of bench.py) in a namespace
it creates (`ndb-mem-*`), attaches N endpoints with `netctl connect` (4 in parallel, every
container end in one fill namespace), and prints, for idle / one network / N endpoints, RSS,
anonymous memory and the resident kilobytes of each file mapping (the binary, libc, …).
Everything it creates is removed on exit, also on failure. A/B comparisons: run it once per
binary (`--netd`), back to back.
"""
import argparse
import concurrent.futures as cf
import json
import os
import shutil
import subprocess
import sys
import time

HOST, FILL = "ndb-mem-host", "ndb-mem-fill"
RUN = "/run/ndbench-mem"


def sh(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise RuntimeError(f"{cmd} failed ({r.returncode}): {r.stdout}\n{r.stderr}")
    return r.stdout


def snapshot(pid):
    """RSS, anonymous and per-file resident kB from /proc/PID/smaps."""
    files, cur = {}, None
    roll = {}
    for line in open(f"/proc/{pid}/smaps_rollup"):
        parts = line.split()
        if len(parts) >= 3 and parts[-1] == "kB":
            roll[parts[0].rstrip(":")] = int(parts[1])
    for line in open(f"/proc/{pid}/smaps"):
        parts = line.split()
        if parts and "-" in parts[0] and len(parts) >= 5 and ":" not in parts[0]:
            cur = parts[5] if len(parts) > 5 else "[anon]"
        elif parts and parts[0] == "Rss:":
            files[cur] = files.get(cur, 0) + int(parts[1])
    return {"rss_kb": roll.get("Rss"), "anon_kb": roll.get("Anonymous"),
            "pss_kb": roll.get("Pss"),
            "files_kb": {os.path.basename(k): v for k, v in sorted(files.items(),
                                                                  key=lambda kv: -kv[1]) if v}}


def cleanup():
    for ns in (HOST, FILL):
        for pid in subprocess.run(["ip", "netns", "pids", ns], capture_output=True,
                                  text=True).stdout.split():
            subprocess.run(["kill", "-9", pid])
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    shutil.rmtree(RUN, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    tgt = os.environ.get("CARGO_TARGET_DIR", "/work/target-bench")
    ap.add_argument("--netd", default=f"{tgt}/release/netd")
    ap.add_argument("--netctl", default=f"{tgt}/release/netctl")
    ap.add_argument("--endpoints", type=int, default=1000)
    ap.add_argument("--names", type=int, default=1, help="names per endpoint (1 + aliases)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--netd-arg", action="append", default=[], help="extra netd flag")
    ap.add_argument("--wrap", default="", help="command to run netd under (e.g. heaptrack -o F)")
    a = ap.parse_args()
    cleanup()
    try:
        for ns in (HOST, FILL):
            sh(["ip", "netns", "add", ns])
            sh(["ip", "-n", ns, "link", "set", "lo", "up"])
        sh(["ip", "netns", "exec", FILL, "sysctl", "-q", "-w",
            "net.ipv6.conf.default.disable_ipv6=1"])
        os.makedirs(RUN, exist_ok=True)
        open(f"{RUN}/resolv.conf", "w").write("nameserver 127.0.0.1\n")
        sock = f"{RUN}/netd.sock"
        nd = subprocess.Popen(["ip", "netns", "exec", HOST, "taskset", "-c", "1", *a.wrap.split(), a.netd,
                               "--socket", sock, "--state-dir", f"{RUN}/state",
                               "--resolv-conf", f"{RUN}/resolv.conf", *a.netd_arg],
                              env=dict(os.environ, NETD_LOG="warn"),
                              stdout=open(f"{RUN}/netd.log", "w"), stderr=subprocess.STDOUT)
        ctl = lambda *x: sh([a.netctl, "--socket", sock, *x])  # noqa: E731
        for _ in range(200):
            if os.path.exists(sock) and subprocess.run(
                    [a.netctl, "--socket", sock, "status"], capture_output=True).returncode == 0:
                break
            time.sleep(0.05)
        # `ip netns exec` execs taskset, which execs netd (same pid) unless --wrap forks.
        pid = next(p for p in sh(["ip", "netns", "pids", HOST]).split()
                   if open(f"/proc/{p}/comm").read().strip() == os.path.basename(a.netd)[:15])
        out = {}
        time.sleep(1.5)
        out["idle"] = snapshot(pid)
        ctl("create", "memb", "--subnet", "10.99.0.0/16", "--gateway", "10.99.0.1")
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
        os.kill(int(pid), 15)
        nd.wait(20)
    finally:
        cleanup()
    if a.json:
        print(json.dumps(out, indent=1))
        return
    for state, s in out.items():
        top = ", ".join(f"{k} {v}" for k, v in list(s["files_kb"].items())[:8])
        print(f"{state:28} RSS {s['rss_kb'] / 1024:5.1f} MiB  anon {s['anon_kb'] / 1024:4.1f}"
              f"  PSS {s['pss_kb'] / 1024:5.1f}  | {top}")


if __name__ == "__main__":
    sys.exit(main())
