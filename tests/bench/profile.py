#!/usr/bin/python3
"""Where netd's time goes: perf + strace -c of netd during (a) CNI ADDs with 2 ports and
(b) saturating DNS A queries. Run as root through `tests/bench/run.sh --profile` (same
namespaces and cleanup as the benchmarks). Writes results/profile-*.txt."""

import concurrent.futures as cf
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402

OUT = bench.RESULTS


def perf_report(data, out, extra=(), keep=45):
    r = subprocess.run(["perf", "report", "-i", data, "--no-children", "-g", "none",
                        "--percent-limit", "1.5", "--stdio", *extra],
                       capture_output=True, text=True)
    # Inlined frames repeat their caller's share (DWARF unwinding reports each of them).
    lines = [ln for ln in r.stdout.splitlines()
             if ln and not ln.startswith("#") and not ln.endswith("(inlined)")]
    hdr = [ln for ln in r.stdout.splitlines() if "Samples" in ln]
    open(out, "w").write("\n".join(hdr + lines[:keep]) + "\n")
    return hdr


def flamegraph(data, svg, title):
    """Flame graph of a perf recording (inferno, which run.sh --profile installs)."""
    tools = [shutil.which(t) or os.path.expanduser(f"~/.cargo/bin/{t}")
             for t in ("inferno-collapse-perf", "inferno-flamegraph")]
    if not all(os.path.exists(t) for t in tools):
        print(f"no inferno: {svg} not drawn (cargo install inferno)")
        return
    script = subprocess.run(["perf", "script", "-i", data], capture_output=True, text=True)
    folded = subprocess.run([tools[0]], input=script.stdout, capture_output=True, text=True)
    graph = subprocess.run([tools[1], "--title", title], input=folded.stdout,
                           capture_output=True, text=True)
    open(svg, "w").write(graph.stdout)


# Release builds keep no frame pointers: user-space stacks are unwound from DWARF (line
# tables are kept), or every netd frame above the leaf would be lost.
CALL_GRAPH = ["--call-graph", "dwarf,16384"]
PROFILED_ADDS = 150
TIMED_ADDS = 120  # unprofiled: wall time and CPU
# ADDs one measurement makes: under strace (5, then 20 for -c), timed, profiled, whole machine.
ADDS_PER_MEASURE = 5 + 20 + TIMED_ADDS + PROFILED_ADDS + 50


def attach_perf(pid, fn, freq=999):
    return subprocess.Popen(["perf", "record", "-F", str(freq), *CALL_GRAPH, "-o", fn,
                             "-p", str(pid)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def cpu_split(pid):
    """(user, system, run time in ns) of a process so far. utime and stime are counted in clock
    ticks; the threads' schedstat run times are exact, so they give the total and the ticks
    only the split."""
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(f[11]), int(f[12]), bench.thread_cpu_ns(pid)


def stop(p):
    p.send_signal(signal.SIGINT)
    p.wait()


def netlink_bytes(trace, pid):
    """Bytes sent/received per netlink family in a strace -yy file."""
    proto = {}
    for line in open(f"/proc/{pid}/net/netlink").read().splitlines()[1:]:
        f = line.split()
        proto[f[-1]] = int(f[1])
    out = {}
    for m in re.finditer(r"(sendto|recvfrom|recvmsg|sendmsg)\(\d+<NETLINK:\[([^\]]*)\]>[^\n]*\)\s*=\s*(\d+)",
                         open(trace).read()):
        call, sock, n = m.group(1), m.group(2), int(m.group(3))
        p = proto.get(sock)
        fam = ("netfilter" if "NETFILTER" in sock or p == 12 else
               "route-host" if "ROUTE" in sock or p == 0 else "route-container")
        k = f"{fam} {'sent' if call.startswith('send') else 'received'}"
        out[k] = out.get(k, 0) + n
        out[k + " calls"] = out.get(k + " calls", 0) + 1
    return out


def cni_profile(high=670):
    """netd ADD (no ports) from ~50 and from ~HIGH endpoints: CPU per ADD, perf, netlink bytes.
    The high measurement's ADDs end near 1,000: a Linux bridge takes 1,023 ports at most
    (EXFULL beyond)."""
    nd = bench.Netd()
    nd.host, nd.short = "ndb-pf-h", "pf"
    n = high + ADDS_PER_MEASURE
    bench.netns_add_many([nd.host] + [nd.cns(i) for i in range(1, n + 1)])
    summary = []
    try:
        os.makedirs(bench.RUN, exist_ok=True)
        nd.start()
        pid = nd.proc.pid
        pool = cf.ThreadPoolExecutor(1, initializer=bench.enter_netns, initargs=(nd.host,))
        nxt = [1]

        def adds(k):
            t = []
            for _ in range(k):
                t.append(pool.submit(nd.add, nxt[0], False).result())
                nxt[0] += 1
            return t

        def measure(tag):
            before = nxt[0] - 1
            # Namespaces torn down earlier (the namespaces of a previous run, too) are
            # cleaned up asynchronously by the kernel, on the same 2 cores.
            bench.settle(f"profile {tag}")
            st = subprocess.Popen(["strace", "-f", "-yy", "-qq", "-s", "0", "-e",
                                   "trace=sendto,recvfrom,sendmsg,recvmsg,fdatasync,fsync",
                                   "-o", f"{bench.RUN}/nl-{tag}.txt", "-p", str(pid)],
                                  stderr=subprocess.DEVNULL)
            time.sleep(0.5)
            adds(5)
            time.sleep(0.2)
            stop(st)
            nl = {k: v / 5 for k, v in netlink_bytes(f"{bench.RUN}/nl-{tag}.txt", pid).items()}
            st = subprocess.Popen(["strace", "-f", "-c", "-o", f"{OUT}/profile-add-{tag}-strace.txt",
                                   "-p", str(pid)], stderr=subprocess.DEVNULL)
            time.sleep(0.5)
            adds(20)
            time.sleep(0.2)
            stop(st)
            u0, s0, r0 = cpu_split(pid)
            t = adds(TIMED_ADDS)
            u1, s1, r1 = cpu_split(pid)
            run_ms = (r1 - r0) / 1e6 / TIMED_ADDS
            user_share = (u1 - u0) / max(1, (u1 - u0) + (s1 - s0))
            profiled_from = nxt[0] - 1
            pf = attach_perf(pid, f"{bench.RUN}/add-{tag}.perf", freq=2999)
            time.sleep(0.5)
            r0 = cpu_split(pid)[2]
            adds(PROFILED_ADDS)
            r1 = cpu_split(pid)[2]
            time.sleep(0.2)
            stop(pf)
            perf_report(f"{bench.RUN}/add-{tag}.perf", f"{OUT}/profile-add-{tag}-perf.txt",
                        ["--sort", "sym"])
            perf_report(f"{bench.RUN}/add-{tag}.perf", f"{OUT}/profile-add-{tag}-perf-dso.txt",
                        ["--sort", "comm,dso"])
            # Inclusive time per function: which of netd's steps the kernel time belongs to.
            perf_report(f"{bench.RUN}/add-{tag}.perf",
                        f"{OUT}/profile-add-{tag}-perf-children.txt",
                        ["--children", "--sort", "sym"], keep=120)
            flamegraph(f"{bench.RUN}/add-{tag}.perf", f"{OUT}/profile-add-{tag}.svg",
                       f"netd, {PROFILED_ADDS} CNI ADDs after {profiled_from} containers")
            # The whole machine too: kernel work an ADD leaves to kworkers (link events, RCU)
            # and the plugin's own exec do not show in netd's profile.
            pa = subprocess.Popen(["perf", "record", "-a", *CALL_GRAPH, "-F", "999", "-o",
                                   f"{bench.RUN}/add-{tag}-all.perf"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)
            adds(50)
            time.sleep(0.2)
            stop(pa)
            perf_report(f"{bench.RUN}/add-{tag}-all.perf", f"{OUT}/profile-add-{tag}-all.txt",
                        ["--sort", "comm,sym"])
            line = (f"[{tag}] endpoints before: {before}; ADD wall p50 (unprofiled, "
                    f"{TIMED_ADDS} ADDs) {statistics.median(t) * 1e3:.2f} ms; "
                    f"netd CPU per ADD unprofiled "
                    f"{run_ms:.2f} ms ({run_ms * user_share:.2f} user + "
                    f"{run_ms * (1 - user_share):.2f} system); "
                    f"under perf ({PROFILED_ADDS} ADDs) "
                    f"{(r1 - r0) / 1e6 / PROFILED_ADDS:.2f} ms; netlink per ADD: "
                    + ", ".join(f"{k} {v:.0f}" for k, v in sorted(nl.items())))
            print(line)
            summary.append(line)
        adds(50)
        measure("low")
        adds(high - nxt[0] + 1)
        measure("high")
        open(f"{OUT}/profile-add-summary.txt", "w").write("\n".join(summary) + "\n")
    finally:
        nd.stop()
        bench.kill_netns_procs(nd.host)
        bench.netns_del_many([nd.host] + [nd.cns(i) for i in range(1, n + 1)])


def dns_profile():
    host, cli = "ndb-pd-h", "ndb-pd-c"
    d = f"{bench.RUN}/pd"
    os.makedirs(d, exist_ok=True)
    bench.netns_add_many([host, cli])
    p = None
    try:
        open(f"{d}/resolv.conf", "w").write("nameserver 127.0.0.1\n")
        p = bench.start_netd(host, f"{d}/netd.sock", f"{bench.STATE}/pd", f"{d}/resolv.conf",
                             f"{d}/netd.log", cpus="1")
        ctl = lambda *a: bench.sh([bench.NETCTL, "--socket", f"{d}/netd.sock", *a])  # noqa
        bench.settle("DNS profile")
        ctl("create", "dnsb", "--subnet", "10.99.0.0/16", "--gateway", bench.GW)
        ctl("connect", "dnsb", "--netns", f"/run/netns/{cli}", "--name", "c0")
        open(f"{d}/q", "w").write("c0.dnsb A\n")
        st = subprocess.Popen(["strace", "-f", "-c", "-o", f"{OUT}/profile-dns-strace.txt",
                               "-p", str(p.pid)], stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        r = bench.dnsperf(53, f"{d}/q", 3, ns=cli)
        stop(st)
        with open(f"{OUT}/profile-dns-strace.txt", "a") as f:
            f.write(f"\nqueries answered under strace: {r['completed']}\n")
        pf = attach_perf(p.pid, f"{bench.RUN}/dns.perf")
        time.sleep(0.5)
        r = bench.dnsperf_cpu(p.pid, 53, f"{d}/q", 5, ns=cli)
        stop(pf)
        perf_report(f"{bench.RUN}/dns.perf", f"{OUT}/profile-dns-perf.txt", ["--sort", "sym"])
        perf_report(f"{bench.RUN}/dns.perf", f"{OUT}/profile-dns-perf-dso.txt",
                    ["--sort", "comm,dso"])
        flamegraph(f"{bench.RUN}/dns.perf", f"{OUT}/profile-dns.svg", "netd, DNS A queries")
        msg = f"DNS under perf: {r['qps']:.0f} q/s, netd CPU {r['cpu_us_per_query']:.1f} us/query"
        open(f"{OUT}/profile-dns-summary.txt", "w").write(msg + "\n")
        print(msg)
    finally:
        bench.stop_proc(p)
        bench.kill_netns_procs(host)
        bench.netns_del_many([host, cli])


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    what = sys.argv[1:] or ["cni", "dns"]
    if "cni" in what:
        cni_profile()
    if "dns" in what:
        dns_profile()
