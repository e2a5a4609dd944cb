#!/usr/bin/python3
"""netd benchmarks against the peers (reference CNI plugins, netavark + aardvark-dns, dnsmasq).

Run through tests/bench/run.sh (root). Every system runs in network namespaces created here
(prefix ``ndb-``); traffic stays inside them. Systems are alternated (A B C A B C ...) so load
drift of the shared machine hits all of them alike. Results: tests/bench/results/*.json + plots.
"""

import argparse
import atexit
import concurrent.futures as cf
import ctypes
import hashlib
import json
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
RUN = "/run/ndbench"  # sockets, configs (removed at the end)
STATE = "/var/tmp/ndbench"  # on-disk state, like /var/lib/* in production
CNI_BIN = "/usr/lib/cni"
NETAVARK = "/usr/lib/podman/netavark"
AARDVARK = "/usr/lib/podman/aardvark-dns"
TARGET = os.environ.get("NDB_TARGET", "/work/target-bench/release")
NETD = os.path.join(TARGET, "netd")
NETCTL = os.path.join(TARGET, "netctl")
# The plugin as scripts/build-cni-plugin.sh builds it (static PIE), else cargo's own build.
NETD_CNI = os.environ.get("NDB_NETD_CNI", os.path.join(TARGET, "netd-cni"))
# Launches every plugin and times it from spawn to exit (tests/bench/spawn.rs).
SPAWN = os.path.join(TARGET, "ndb-spawn")
CLK = os.sysconf("SC_CLK_TCK")

libc = ctypes.CDLL("libc.so.6", use_errno=True)
CLONE_NEWNET = 0x40000000


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, file=sys.stderr, flush=True)


def sh(cmd, check=True, **kw):
    """Runs a command (list) and returns stdout."""
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if check and r.returncode != 0:
        raise RuntimeError(f"{cmd} failed ({r.returncode}): {r.stdout}\n{r.stderr}")
    return r.stdout


_spawner = threading.local()
_spawners = []


def spawn(path, env, stdin, args=()):
    """Runs `path` through this thread's ndb-spawn, which is started on first use in the
    thread's current network namespace (so the plugin runs there too). Python's own spawn
    under the GIL cost more than some plugins' work when eight ran at once; compiled code
    times spawn to exit alike for every system. Returns (seconds, exit code, stdout, stderr)."""
    p = getattr(_spawner, "proc", None)
    if p is None or p.poll() is not None:
        p = subprocess.Popen([SPAWN], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        _spawner.proc = p
        _spawners.append(p)
    p.stdin.write(json.dumps({"path": path, "args": list(args), "env": env,
                              "stdin": stdin}) + "\n")
    p.stdin.flush()
    line = p.stdout.readline()
    if not line:
        raise RuntimeError(f"ndb-spawn exited running {path}")
    r = json.loads(line)
    return r["secs"], r["code"], r["stdout"], r["stderr"]


@atexit.register
def stop_spawners():
    """Ends every ndb-spawn (each exits when its stdin closes)."""
    while _spawners:
        p = _spawners.pop()
        try:
            p.stdin.close()
            p.wait(5)
        except Exception:  # noqa: BLE001 (already gone, or killed with its namespace)
            p.kill()


def ns_exec(ns, cmd):
    return ["ip", "netns", "exec", ns] + cmd


def enter_netns(name):
    """Moves the calling thread (only) into a named netns; children it spawns inherit it."""
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {name}")
    finally:
        os.close(fd)


def netns_add_many(names):
    if not names:
        return
    inp = "".join(f"netns add {n}\n" for n in names)
    sh(["ip", "-batch", "-"], input=inp)
    inp = "".join(f"-n {n} link set lo up\n" for n in names)
    # `ip -batch` lines cannot carry -n; bring lo up per namespace in one shell.
    script = "".join(f"ip -n {n} link set lo up\n" for n in names)
    sh(["sh", "-e"], input=script)


def netns_del_many(names):
    if not names:
        return
    inp = "".join(f"netns del {n}\n" for n in names)
    subprocess.run(["ip", "-force", "-batch", "-"], input=inp, text=True, capture_output=True)


def pct(xs, p):
    if not xs:
        return None
    s = sorted(xs)
    k = (len(s) - 1) * p / 100.0
    f = int(k)
    c = min(f + 1, len(s) - 1)
    return s[f] + (s[c] - s[f]) * (k - f)


def summ(xs):
    """p50/p90/p99 in milliseconds of a list of seconds."""
    if not xs:
        return None
    return {"n": len(xs), "p50": pct(xs, 50) * 1e3, "p90": pct(xs, 90) * 1e3,
            "p99": pct(xs, 99) * 1e3}


def loadavg():
    return open("/proc/loadavg").read().split()[:3]


def cpu_busy(interval=1.0):
    """Share of all CPUs' time not idle over `interval` seconds (from /proc/stat)."""
    def snap():
        f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
        return sum(f), f[3] + f[4]  # idle + iowait
    t0, i0 = snap()
    time.sleep(interval)
    t1, i1 = snap()
    return 1 - (i1 - i0) / max(1, t1 - t0)


def settle(what, limit=180, busy=0.15):
    """Waits until the machine is idle (two seconds under `busy`), at most `limit` seconds:
    namespace teardown and RCU work of the previous phase run asynchronously in the kernel and
    would otherwise land on the next phase's first window. Returns the seconds waited."""
    t, quiet = time.time(), 0
    while time.time() - t < limit and quiet < 2:
        quiet = quiet + 1 if cpu_busy() < busy else 0
    waited = time.time() - t
    log(f"settle before {what}: {waited:.0f} s (load {loadavg()})")
    return round(waited, 1)


def proc_cpu_ticks(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])  # utime + stime (fields 14, 15)


def thread_cpu_ns(pid):
    """Run time of a process's live threads so far, in ns (their schedstat: exact, where the
    clock-tick counts of /proc/PID/stat are not)."""
    total = 0
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            total += int(open(f"/proc/{pid}/task/{t}/schedstat").read().split()[0])
        except (OSError, ValueError):
            pass  # a thread that just exited
    return total


def proc_rss_kb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return None


def proc_mem_kb(pid):
    """RSS and what it is made of, from /proc/PID/smaps_rollup (kB).

    RSS counts every mapped page, also clean file pages (code, shared libraries) that the page
    cache shares with every process mapping the same file; private is what the process alone
    holds (its USS), anon its heap and stacks, PSS shares out the shared pages.
    """
    roll = {}
    for line in open(f"/proc/{pid}/smaps_rollup"):
        parts = line.split()
        if len(parts) >= 3 and parts[-1] == "kB":
            roll[parts[0].rstrip(":")] = int(parts[1])
    return {"rss": roll.get("Rss"), "pss": roll.get("Pss"), "anon": roll.get("Anonymous"),
            "private": roll.get("Private_Clean", 0) + roll.get("Private_Dirty", 0)}


def pids_in_netns(name):
    """PIDs whose network namespace is the named one (to stop exactly our daemons)."""
    try:
        st = os.stat(f"/run/netns/{name}")
    except FileNotFoundError:
        return []
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            s = os.stat(f"/proc/{p}/ns/net")
        except OSError:
            continue
        if (s.st_dev, s.st_ino) == (st.st_dev, st.st_ino) and int(p) != os.getpid():
            out.append(int(p))
    return out


def kill_netns_procs(name):
    for p in pids_in_netns(name):
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def versions():
    v = {}
    v["netd"] = sh([NETD, "--version"], check=False).strip()
    v["netd_git"] = sh(["git", "-C", HERE, "describe", "--always", "--dirty"], check=False).strip()
    v["netavark"] = sh([NETAVARK, "version"], check=False).strip().replace("\n", " ")
    v["aardvark-dns"] = sh([AARDVARK, "--version"], check=False).strip()
    v["dnsmasq"] = sh(["dnsmasq", "--version"], check=False).splitlines()[0]
    v["dnsperf"] = (sh(["dnsperf", "-h"], check=False) + "").splitlines()[0:1]
    r = subprocess.run(["dnsperf", "-h"], capture_output=True, text=True)
    m = re.search(r"DNS Performance Testing Tool\s*\n?\s*Version ([^\s]+)", r.stdout + r.stderr)
    v["dnsperf"] = m.group(1) if m else (r.stdout + r.stderr).splitlines()[0]
    v["iperf3"] = sh(["iperf3", "--version"], check=False).splitlines()[0]
    v["cni-plugins"] = sh(["dpkg-query", "-W", "-f", "${Version}", "containernetworking-plugins"],
                          check=False)
    v["iptables"] = sh(["iptables", "--version"], check=False).strip()
    v["nft"] = sh(["nft", "--version"], check=False).strip()
    return v


def machine():
    cpu = ""
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = open("/proc/meminfo").readline().split()[1]
    return {"cpu": cpu, "cores": os.cpu_count(), "mem_kb": int(mem),
            "kernel": platform.release(), "os": open("/etc/debian_version").read().strip(),
            "loadavg_start": loadavg(), "date": time.strftime("%Y-%m-%d %H:%M:%S %z")}


# --------------------------------------------------------------------------------------------
# The systems under test for CNI ADD/DEL.

def cid_of(sys_name, i):
    """64 hex digits like a real runtime's container id (a hash), unique per system and index.
    Until the fifteenth round the ids were a per-system prefix and the index zero-padded, so
    every container had the same first 12 digits, the short id runtimes register as a DNS
    name: all 1,000 of netd's containers held one name, which no real host sees."""
    return hashlib.sha256(f"{sys_name}-{i}".encode()).hexdigest()


def port_maps(i, ports):
    if not ports:
        return []
    return [{"hostPort": 20000 + 2 * i, "containerPort": 80, "protocol": "tcp"},
            {"hostPort": 20001 + 2 * i, "containerPort": 443, "protocol": "tcp"}]


class System:
    name = "?"
    host = "?"

    def cns(self, i):
        return f"ndb-{self.short}-c{i}"

    def run_plugin(self, path, env, stdin, args=()):
        dt, code, out, err = spawn(path, env, stdin, args)
        if code != 0:
            what = " ".join(args) or f"{env.get('CNI_COMMAND')} {env.get('CNI_NETNS')}"
            raise RuntimeError(f"{self.name} {os.path.basename(path)} {what}: {out} {err}")
        return dt, out


class Netd(System):
    name, short = "netd", "nd"
    subnet = "10.70.0.0/16"

    def __init__(self):
        self.host = "ndb-nd-h"
        self.dir = f"{RUN}/nd"
        self.sock = f"{self.dir}/netd.sock"
        self.proc = None
        # Its own plugin build in an A/B of two (ab.py --plugins); else NETD_CNI.
        self.plugin_path = None

    def start(self):
        # Directories are per instance (self.short), so several netd never share a socket.
        self.dir = f"{RUN}/{self.short}"
        self.sock = f"{self.dir}/netd.sock"
        os.makedirs(self.dir, exist_ok=True)
        shutil.rmtree(f"{STATE}/{self.short}", ignore_errors=True)
        os.makedirs(f"{STATE}/{self.short}", exist_ok=True)
        rc = f"{self.dir}/resolv.conf"
        open(rc, "w").write("nameserver 127.0.0.1\n")
        self.proc = start_netd(self.host, self.sock, f"{STATE}/{self.short}/state", rc,
                               f"{self.dir}/netd.log", binary=getattr(self, "binary", None))

    def stop(self):
        stop_proc(self.proc)

    def conf(self, ports, i):
        c = {"cniVersion": "1.0.0", "name": "bnet", "type": "netd-cni", "subnet": self.subnet,
             "socket": self.sock, "capabilities": {"portMappings": True}}
        if ports:
            c["runtimeConfig"] = {"portMappings": port_maps(i, True)}
        return json.dumps(c)

    def env(self, cmd, i):
        return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": cmd,
                "CNI_CONTAINERID": cid_of(self.name, i), "CNI_NETNS": f"/run/netns/{self.cns(i)}",
                "CNI_IFNAME": "eth0", "CNI_PATH": CNI_BIN,
                "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAME=c{i}"}

    def add(self, i, ports):
        return self.cni("ADD", i, ports)

    def delete(self, i, ports):
        return self.cni("DEL", i, ports)

    def cni(self, cmd, i, ports):
        """Seconds one plugin run of `cmd` took for container `i`."""
        return self.run_plugin(self.plugin_path or NETD_CNI, self.env(cmd, i),
                               self.conf(ports, i))[0]


class Ref(System):
    """Reference bridge + host-local (ipMasq), with portmap chained when ports are published."""
    name, short = "ref", "rf"
    subnet = "10.71.0.0/16"

    def __init__(self):
        self.host = "ndb-rf-h"
        self.results = {}
        self.lock = threading.Lock()

    def start(self):
        shutil.rmtree(f"{STATE}/rf", ignore_errors=True)
        os.makedirs(f"{STATE}/rf", exist_ok=True)

    def stop(self):
        pass

    def bridge_conf(self):
        return {"cniVersion": "1.0.0", "name": "bnet", "type": "bridge", "bridge": "cni-bench0",
                "isGateway": True, "ipMasq": True, "hairpinMode": True,
                "ipam": {"type": "host-local", "ranges": [[{"subnet": self.subnet}]],
                         "routes": [{"dst": "0.0.0.0/0"}], "dataDir": f"{STATE}/rf/ipam"}}

    def portmap_conf(self, i, prev):
        c = {"cniVersion": "1.0.0", "name": "bnet", "type": "portmap",
             "capabilities": {"portMappings": True}, "snat": True,
             "runtimeConfig": {"portMappings": port_maps(i, True)}}
        if prev is not None:
            c["prevResult"] = prev
        return c

    def env(self, cmd, i):
        return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": cmd,
                "CNI_CONTAINERID": cid_of(self.name, i), "CNI_NETNS": f"/run/netns/{self.cns(i)}",
                "CNI_IFNAME": "eth0", "CNI_PATH": CNI_BIN}

    def add(self, i, ports):
        # What libcni does for a conflist: each plugin in order, the result passed on.
        dt, out = self.run_plugin(f"{CNI_BIN}/bridge", self.env("ADD", i),
                                  json.dumps(self.bridge_conf()))
        res = json.loads(out)
        if ports:
            d2, out = self.run_plugin(f"{CNI_BIN}/portmap", self.env("ADD", i),
                                      json.dumps(self.portmap_conf(i, res)))
            dt += d2
            res = json.loads(out)
        with self.lock:
            self.results[i] = res
        return dt

    def delete(self, i, ports):
        with self.lock:
            prev = self.results.pop(i, None)
        dt = 0.0
        if ports:
            dt += self.run_plugin(f"{CNI_BIN}/portmap", self.env("DEL", i),
                                  json.dumps(self.portmap_conf(i, prev)))[0]
        c = self.bridge_conf()
        if prev is not None:
            c["prevResult"] = prev
        dt += self.run_plugin(f"{CNI_BIN}/bridge", self.env("DEL", i), json.dumps(c))[0]
        return dt


class Netavark(System):
    """netavark setup/teardown with DNS enabled (spawns aardvark-dns); Podman does IPAM, so
    the static address is given here, like Podman would."""
    name, short = "netavark", "nv"
    subnet = "10.72.0.0/16"

    def __init__(self):
        self.host = "ndb-nv-h"
        self.dir = f"{RUN}/nv"
        # netavark is not safe to run concurrently on one network ("Chain already exists");
        # Podman serialises its calls with a lock, so parallel requests queue here as there.
        self.lock = threading.Lock()

    def start(self):
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir, exist_ok=True)

    def stop(self):
        kill_netns_procs(self.host)

    def opts(self, i, ports):
        ip = f"10.72.{(i + 1) // 256}.{(i + 1) % 256}"
        return json.dumps({
            "container_id": cid_of(self.name, i), "container_name": f"c{i}",
            "networks": {"bnet": {"static_ips": [ip], "interface_name": "eth0",
                                  "aliases": [f"c{i}"]}},
            "network_info": {"bnet": {
                "dns_enabled": True, "driver": "bridge", "id": "b" * 64, "internal": False,
                "ipv6_enabled": False, "name": "bnet", "network_interface": "nv-bench0",
                "subnets": [{"gateway": "10.72.0.1", "subnet": self.subnet}],
                "ipam_options": {"driver": "host-local"}}},
            "port_mappings": [{"container_port": m["containerPort"], "host_ip": "",
                               "host_port": m["hostPort"], "protocol": "tcp", "range": 1}
                              for m in port_maps(i, ports)],
        })

    def call(self, cmd, i, ports):
        # The wait for the lock counts (a queued Podman call waits as long); the run is
        # timed by ndb-spawn like every plugin.
        t0 = time.perf_counter()
        with self.lock:
            waited = time.perf_counter() - t0
            dt, _ = self.run_plugin(
                NETAVARK, {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
                self.opts(i, ports),
                ["--config", self.dir, "--rootless", "false", "--aardvark-binary", AARDVARK,
                 cmd, f"/run/netns/{self.cns(i)}"])
        return waited + dt

    def add(self, i, ports):
        return self.call("setup", i, ports)

    def delete(self, i, ports):
        return self.call("teardown", i, ports)


def start_netd(host_ns, sock, state, resolv, logf, cpus=None, extra=(), binary=None):
    os.makedirs(os.path.dirname(sock), exist_ok=True)
    cmd = ns_exec(host_ns, ([] if cpus is None else ["taskset", "-c", cpus]) +
                  [binary or NETD, "--socket", sock, "--state-dir", state, "--resolv-conf",
                   resolv, *extra])
    env = dict(os.environ, NETD_LOG="warn")
    p = subprocess.Popen(cmd, stdout=open(logf, "a"), stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, env=env)
    for _ in range(200):
        if p.poll() is not None:
            raise RuntimeError(f"netd exited ({p.returncode}): {open(logf).read()[-2000:]}")
        if os.path.exists(sock):
            r = subprocess.run([NETCTL, "--socket", sock, "status"], capture_output=True)
            if r.returncode == 0:
                return p
        time.sleep(0.05)
    raise RuntimeError(f"netd did not start: {open(logf).read()}")


def stop_proc(p):
    if p is None:
        return
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(5)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def netd_pid(popen):
    """`ip netns exec` execs netd in place, so the Popen pid is netd's (or taskset's, which
    also execs)."""
    return popen.pid


# --------------------------------------------------------------------------------------------
# 1. CNI ADD/DEL latency (+ 5. nftables batch size and ADD latency vs population).

def strace_netd_add(netd, idx, ports, tag):
    """One extra ADD+DEL of netd under strace: netlink bytes per family and syscall counts."""
    pid = netd_pid(netd.proc)
    out = f"{RUN}/strace-{tag}.txt"
    st = subprocess.Popen(["strace", "-f", "-yy", "-qq", "-e", "trace=sendto,sendmsg,write,fsync,fdatasync",
                           "-e", "signal=none", "-s", "0", "-o", out, "-p", str(pid)],
                          stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    dt_add = netd.add(idx, ports)
    time.sleep(0.2)
    st.send_signal(signal.SIGINT)
    st.wait()
    data = open(out).read()
    # strace cannot name the protocol of a netlink socket: map inodes via /proc/PID/net/netlink
    # (host namespace). Sockets not listed there were opened inside the container namespace.
    proto = {}
    for line in open(f"/proc/{pid}/net/netlink").read().splitlines()[1:]:
        f = line.split()
        proto[f[-1]] = int(f[1])
    nf, rt, rtc = [], [], []
    # strace prints NETLINK:[INODE] or, when it can ask sock_diag, NETLINK:[PROTO:PORTID].
    for m in re.finditer(r"NETLINK:\[([^\]]*)\]>[^\n]*\)\s*=\s*(\d+)", data):
        sock, n = m.group(1), int(m.group(2))
        p = proto.get(sock)
        if "NETFILTER" in sock or p == 12:
            nf.append(n)
        elif "ROUTE" in sock or p == 0:
            rt.append(n)
        else:
            rtc.append(n)
    rt += rtc
    syncs = len(re.findall(r"\b(fsync|fdatasync)\(", data))
    netd.delete(idx, ports)
    return {"population": tag, "add_ms_under_strace": dt_add * 1e3,
            "netfilter_sends": len(nf), "netfilter_bytes": sum(nf),
            "netfilter_largest_send": max(nf) if nf else 0,
            "rtnetlink_sends": len(rt), "rtnetlink_bytes": sum(rt),
            "rtnetlink_sends_in_container": len(rtc), "fsyncs": syncs}


def cni_bench(args, out):
    systems = [c() for c in (Netd, Ref, Netavark) if c.name in args.systems.split(",")]
    N = args.cni_n
    W = args.cni_window
    res = {"n": N, "window": W, "phases": {}, "batches": [], "rss": {}}
    prev = out.get("cni") if args.update else None
    if prev:
        # --update with --cni-phases: the phases not re-run are kept.
        res["phases"].update(prev.get("phases", {}))
        res["batches"] = prev.get("batches", [])
        res["rss"].update(prev.get("rss", {}))
    # Phases already finished are kept even if a later one is interrupted (Ctrl-C).
    out["cni"] = res
    hosts = [s.host for s in systems]
    netns_add_many(hosts)
    for s in systems:
        sh(["ip", "-n", s.host, "link", "set", "lo", "up"])
    cns = ([s.cns(i) for s in systems for i in range(1, N + 1)] +
           [systems[0].cns(i) for i in (N + 1, N + 2, N + 3)])
    log(f"cni: creating {len(cns)} container namespaces")
    netns_add_many(cns)
    phases_run = 0
    pools = {}
    for s in systems:
        s.start()
        pools[s.name] = cf.ThreadPoolExecutor(max_workers=8, initializer=enter_netns,
                                              initargs=(s.host,))
    # The exec floor: the same spawn path with a binary that does nothing.
    ex = [pools["netd"].submit(lambda: System().run_plugin("/bin/true", {}, "")[0]).result()
          for _ in range(50)]
    res["exec_floor_ms"] = statistics.median(ex) * 1e3
    t = [pools["netd"].submit(spawn, NETD_CNI, {"CNI_COMMAND": "VERSION"}, "{}").result()[0]
         for _ in range(53)][3:]
    res["netd_cni_version_ms"] = statistics.median(t) * 1e3
    try:
        for ports in args.cni_ports:
            for mode in args.cni_modes:
                key = f"{'ports' if ports else 'noports'}-{mode}"
                if args.cni_phases and key not in args.cni_phases.split(","):
                    continue
                if phases_run:
                    # Every phase starts on fresh container namespaces, as the first one does:
                    # namespaces an earlier phase used keep kernel state behind (e.g. the
                    # namespace ids the host side allocated for them), which slowed the next
                    # phase's first window (netd alone, par8 after seq: 15.7 ms; on fresh ones 9.5).
                    netns_del_many(cns)
                    netns_add_many(cns)
                phases_run += 1
                settled = settle(f"cni phase {key}")
                log(f"cni phase {key}: N={N}  load {loadavg()}")
                ph = {s.name: {"add": {}, "del": {}} for s in systems}
                par = 8 if mode == "par8" else 1
                t_phase = time.time()
                batches = [list(range(b, min(b + par, N + 1))) for b in range(1, N + 1, par)]
                for bi, batch in enumerate(batches):
                    order = systems[bi % len(systems):] + systems[:bi % len(systems)]
                    for s in order:
                        futs = {i: pools[s.name].submit(s.add, i, ports) for i in batch}
                        for i, f in futs.items():
                            ph[s.name]["add"][i] = f.result()
                    if ports and mode == "seq" and args.strace and batch[-1] == 100 < N:
                        res["batches"].append(pools["netd"].submit(
                            strace_netd_add, systems[0], N + 1, True, "100").result())
                    if time.time() - t_phase > args.cni_time_limit:
                        log(f"cni phase {key}: time limit hit at container {batch[-1]}")
                        break
                n_done = batch[-1]
                if ports and mode == "seq" and args.strace:
                    # Batch size and latency probe at the population reached.
                    nd = systems[0]
                    res["batches"].append(pools["netd"].submit(
                        strace_netd_add, nd, N + 1, True, str(n_done)).result())
                    res["rss"][f"netd_{n_done}_endpoints_2_ports"] = proc_rss_kb(
                        netd_pid(nd.proc))
                # DEL in reverse: the first ones leave a full network, the last an empty one.
                dbatches = [list(range(b, max(b - par, 0), -1)) for b in range(n_done, 0, -par)]
                for bi, batch in enumerate(dbatches):
                    order = systems[bi % len(systems):] + systems[:bi % len(systems)]
                    for s in order:
                        futs = {i: pools[s.name].submit(s.delete, i, ports) for i in batch}
                        for i, f in futs.items():
                            ph[s.name]["del"][i] = f.result()
                if ports and mode == "seq" and args.strace:
                    res["batches"].append(pools["netd"].submit(
                        strace_netd_add, systems[0], N + 1, True, "0").result())
                stats = {}
                for s in systems:
                    a, d = ph[s.name]["add"], ph[s.name]["del"]
                    first = [a[i] for i in range(1, W + 1) if i in a]
                    last = [a[i] for i in range(n_done - W + 1, n_done + 1) if i in a]
                    dfull = [d[i] for i in range(n_done - W + 1, n_done + 1) if i in d]
                    dempty = [d[i] for i in range(1, W + 1) if i in d]
                    stats[s.name] = {"add_first": summ(first), "add_last": summ(last),
                                     "del_full": summ(dfull), "del_empty": summ(dempty),
                                     "add_all_ms": [round(a[i] * 1e3, 3) for i in sorted(a)],
                                     "del_all_ms": [round(d[i] * 1e3, 3) for i in sorted(d)]}
                res["phases"][key] = {"n_done": n_done, "stats": stats,
                                      "seconds": time.time() - t_phase, "loadavg": loadavg(),
                                      "settled_s": settled}
                log(f"cni phase {key} done in {time.time() - t_phase:.0f}s")
                for s in systems:
                    st = stats[s.name]
                    log(f"  {s.name:9} add p50 first {st['add_first']['p50']:.1f} ms, last "
                        f"{st['add_last']['p50']:.1f} ms; del p50 {st['del_full']['p50']:.1f} ms")
        # Direct probe at 0 existing (after the phases) already recorded; also RSS idle-ish.
        res["rss"]["netd_after_cni"] = proc_rss_kb(netd_pid(systems[0].proc))
    finally:
        for s in systems:
            try:
                s.stop()
            except Exception as e:  # noqa: BLE001
                log(f"stopping {s.name}: {e}")
            kill_netns_procs(s.host)
        for p in pools.values():
            p.shutdown()
        netns_del_many([s.cns(i) for s in systems for i in range(1, N + 4)])
        netns_del_many(hosts)


# --------------------------------------------------------------------------------------------
# 2. DNS with dnsperf + 3. memory.

DNS_HOST, DNS_CLI, DNS_FILL, DNS_OUT = "ndb-dns-h", "ndb-dns-c", "ndb-dns-f", "ndb-dns-o"
GW = "10.99.0.1"
PORTS = {"netd": 53, "aardvark-dns": 5301, "dnsmasq": 5302}


def outside_link(host, out, hostaddr="203.0.113.1", outaddr="203.0.113.2", tag="x"):
    a, b = f"ndbup{tag}", f"ndbwan{tag}"
    sh(["ip", "-n", host, "link", "add", a, "type", "veth", "peer", "name", b, "netns", out])
    sh(["ip", "-n", host, "addr", "add", f"{hostaddr}/24", "dev", a])
    sh(["ip", "-n", host, "link", "set", a, "up"])
    sh(["ip", "-n", host, "route", "add", "default", "via", outaddr])
    sh(["ip", "-n", out, "addr", "add", f"{outaddr}/24", "dev", b])
    sh(["ip", "-n", out, "link", "set", b, "up"])


def dnsperf(port, qfile, dur, rate=None, verbose=False, ns=DNS_CLI, server=GW):
    """One dnsperf run (1 thread, 100 outstanding, pinned to core 0) from namespace `ns`."""
    cmd = ns_exec(ns, ["taskset", "-c", "0", "dnsperf", "-s", server, "-p", str(port), "-d",
                       qfile, "-l", str(dur), "-c", "1", "-T", "1", "-q", "100", "-t", "1"])
    if rate:
        cmd += ["-Q", str(rate)]
    if verbose:
        cmd += ["-v"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=dur + 30)
    o = r.stdout
    if "Queries completed:" not in o:
        # dnsperf did not run (a missing namespace, a bad query file): say so here, not as a
        # None three calls later.
        raise RuntimeError(f"dnsperf in {ns} against {server}:{port} failed ({r.returncode}): "
                           f"{(r.stderr or o)[-500:]}")
    g = lambda pat: float(re.search(pat, o).group(1)) if re.search(pat, o) else None  # noqa
    res = {"completed": g(r"Queries completed:\s+(\d+)"), "lost": g(r"Queries lost:\s+(\d+)"),
           "qps": g(r"Queries per second:\s+([\d.]+)"),
           "avg_lat_ms": (g(r"Average Latency \(s\):\s+([\d.]+)") or 0) * 1e3,
           "rcodes": dict((k, int(v)) for k, v in
                          re.findall(r"([A-Z]+) (\d+) \(", o.split("Response codes:")[1].split("\n")[0]))
           if "Response codes:" in o else {}}
    if verbose:
        lats = [float(x) for x in re.findall(r"^> \S+ .* ([\d.]+)$", o, re.M)]
        if lats:
            res["p50_ms"] = pct(lats, 50) * 1e3
            res["p99_ms"] = pct(lats, 99) * 1e3
    return res


def dnsperf_cpu(pid, port, qfile, dur, **kw):
    """dnsperf at saturation, plus the server's CPU (process `pid`) per answered query."""
    c0, t0 = proc_cpu_ticks(pid), time.time()
    r = dnsperf(port, qfile, dur, **kw)
    c1, t1 = proc_cpu_ticks(pid), time.time()
    r["server_cpu_s"] = (c1 - c0) / CLK
    r["server_cpu_util"] = (c1 - c0) / CLK / (t1 - t0)
    r["cpu_us_per_query"] = (c1 - c0) / CLK * 1e6 / r["completed"] if r["completed"] else None
    return r


def dns_attach(nctl, i, k, cli_ns, fill_ns, *extra):
    """Endpoint c<i> on network dnsb with k names (c<i> and aliases c<i>-a1 …): c0 is eth0 of
    the client namespace, the others e<i> in the filler namespace."""
    al = []
    for a in range(1, k):
        al += ["--alias", f"c{i}-a{a}"]
    nctl("connect", "dnsb", "--netns", f"/run/netns/{cli_ns if i == 0 else fill_ns}",
         "--name", f"c{i}", "--ifname", "eth0" if i == 0 else f"e{i}", *al, *extra)


def dns_query_files(qdir, names, ip_of, seed):
    """Query files (shuffled) of every local kind for `names` [(container, [its names])] on
    network dnsb: A, AAAA of IPv4-only names, PTR, NXDOMAIN. Returns kind -> path."""
    alln = [x for _, ns in names for x in ns]
    kinds = {
        "A": [f"{x}.dnsb A" for x in alln],
        "AAAA_v4only": [f"{x}.dnsb AAAA" for x in alln],
        "PTR": [".".join(reversed(ip_of(n).split("."))) + ".in-addr.arpa PTR" for n, _ in names],
        "NXDOMAIN": [f"nosuch{j}.dnsb A" for j in range(len(alln))],
    }
    return write_query_files(qdir, kinds, seed)


def write_query_files(qdir, kinds, seed):
    rnd = random.Random(seed)
    os.makedirs(qdir, exist_ok=True)
    files = {}
    for kind, lines in kinds.items():
        rnd.shuffle(lines)
        files[kind] = f"{qdir}/{kind}"
        open(files[kind], "w").write("\n".join(lines) + "\n")
    return files


def dns_bench(args, out):
    res = {"sizes": {}, "rss_kb": {}, "mem_kb": {}}

    def mem(key, pid):
        res["mem_kb"][key] = proc_mem_kb(pid) if pid else None
        res["rss_kb"][key] = res["mem_kb"][key]["rss"] if pid else None
    n_ep = args.dns_endpoints
    d = f"{RUN}/dns"
    os.makedirs(d, exist_ok=True)
    netns_add_many([DNS_HOST, DNS_CLI, DNS_FILL, DNS_OUT])
    for n in (DNS_CLI, DNS_FILL):
        # IPv4-only containers: no link-local/RS/MLD chatter from 1,000 interfaces.
        sh(ns_exec(n, ["sysctl", "-q", "-w", "net.ipv6.conf.default.disable_ipv6=1"]))
    procs = []
    try:
        outside_link(DNS_HOST, DNS_OUT, tag="d")
        # Upstream for forwarded names: dnsmasq in the outside namespace, long TTLs.
        with open(f"{d}/fwd.hosts", "w") as f:
            for k in range(1000):
                f.write(f"198.51.100.{k % 250 + 1} fwd{k}.example.test\n")
        up = subprocess.Popen(ns_exec(DNS_OUT, [
            "taskset", "-c", "1", "dnsmasq", "-k", "--conf-file=/dev/null", "--no-resolv",
            "--no-hosts", f"--addn-hosts={d}/fwd.hosts", "--listen-address=203.0.113.2",
            "--bind-interfaces", "--local-ttl=3600", "--local=/dnsb/", "--cache-size=10000",
            "--user=root", "--pid-file=", "--log-facility=/dev/null"]),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(up)
        open(f"{d}/resolv.conf", "w").write("nameserver 203.0.113.2\n")
        os.makedirs(f"/etc/netns/{DNS_HOST}", exist_ok=True)
        open(f"/etc/netns/{DNS_HOST}/resolv.conf", "w").write("nameserver 203.0.113.2\n")
        shutil.rmtree(f"{STATE}/dns", ignore_errors=True)
        nd = start_netd(DNS_HOST, f"{d}/netd.sock", f"{STATE}/dns/state", f"{d}/resolv.conf",
                        f"{d}/netd.log", cpus="1")
        procs.append(nd)
        nctl = lambda *a: sh([NETCTL, "--socket", f"{d}/netd.sock", *a])  # noqa
        time.sleep(1)
        mem("netd_idle", nd.pid)
        nctl("create", "dnsb", "--subnet", "10.99.0.0/16", "--gateway", GW)
        mem("netd_1_network", nd.pid)
        for k in args.dns_names_per_ep:
            size = n_ep * k
            log(f"dns {size} names: attaching {n_ep} endpoints ({k} names each)")

            def attach(i):
                dns_attach(nctl, i, k, DNS_CLI, DNS_FILL)

            def detach(i):
                nctl("disconnect", "dnsb", "--netns",
                     f"/run/netns/{DNS_CLI if i == 0 else DNS_FILL}", "--name", f"c{i}",
                     "--ifname", "eth0" if i == 0 else f"e{i}")
            with cf.ThreadPoolExecutor(4) as ex:
                list(ex.map(attach, range(n_ep)))
            # New interfaces send IPv6 router solicitations and MLD reports for a few seconds,
            # flooded to every bridge port: let that settle before measuring.
            time.sleep(args.dns_settle)
            insp = json.loads(nctl("--format", "json", "inspect", "dnsb"))
            eps = {}
            for e in insp["endpoints"]:
                ip = e["ips"][0].split("/")[0]
                eps[e["name"] or e["container_id"]] = (ip, e["container_id"])
            names = [(f"c{i}", [f"c{i}"] + [f"c{i}-a{a}" for a in range(1, k)])
                     for i in range(n_ep)]
            time.sleep(1)
            mem(f"netd_{n_ep}_endpoints_{n_ep * k}_names", nd.pid)
            # Peers get the same names and addresses.
            adir = f"{d}/aardvark-{size}"
            os.makedirs(adir, exist_ok=True)
            with open(f"{adir}/dnsb", "w") as f:
                f.write(f"{GW}\n")
                for n, ns in names:
                    ip, cid = eps[n]
                    f.write(f"{cid_of('aard', int(n[1:]))} {ip}  {','.join(ns)}\n")
            with open(f"{d}/hosts-{size}", "w") as f:
                for n, ns in names:
                    f.write(f"{eps[n][0]} {' '.join(ns)}\n")
            aard = subprocess.Popen(ns_exec(DNS_HOST, ["taskset", "-c", "1", AARDVARK, "--config",
                                                       adir, "-p", "5301",
                                                       "--filter-search-domain", ".dnsb", "run"]),
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            dm = subprocess.Popen(ns_exec(DNS_HOST, [
                "taskset", "-c", "1", "dnsmasq", "-k", "--conf-file=/dev/null", "--no-resolv",
                "--no-hosts", f"--addn-hosts={d}/hosts-{size}", f"--listen-address={GW}",
                "--bind-interfaces", "--port=5302", "--server=203.0.113.2", "--cache-size=10000",
                "--domain=dnsb", "--local=/dnsb/", "--expand-hosts", "--user=root",
                "--pid-file=", "--log-facility=/dev/null"]),
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.5)
            aard_pid = None
            for p in pids_in_netns(DNS_HOST):
                try:
                    if os.readlink(f"/proc/{p}/exe") == AARDVARK:
                        aard_pid = p
                except OSError:
                    pass
            pids = {"netd": nd.pid, "aardvark-dns": aard_pid, "dnsmasq": dm.pid}
            # Query files.
            qdir = f"{d}/q{size}"
            kinds = dns_query_files(qdir, names, lambda n: eps[n][0], size)
            kinds.update(write_query_files(
                qdir, {"FWD_cached": [f"fwd{j}.example.test A" for j in range(1000)]}, size))
            # Warm caches (forwarded names) and check every server answers.
            for sname, port in PORTS.items():
                dnsperf(port, f"{qdir}/FWD_cached", 1, rate=3000)
            sres = {"rows": {}}
            for kk in kinds:
                row = {s: {"sat": [], "fixed": None} for s in PORTS}
                for rep in range(args.dns_reps):
                    order = list(PORTS)[rep % 3:] + list(PORTS)[:rep % 3]
                    for sname in order:
                        row[sname]["sat"].append(
                            dnsperf_cpu(pids[sname], PORTS[sname], kinds[kk], args.dns_dur))
                for sname in PORTS:
                    row[sname]["fixed"] = dnsperf(PORTS[sname], kinds[kk],
                                                  args.dns_fixed_dur, rate=args.dns_rate,
                                                  verbose=True)
                    sat = row[sname]["sat"]
                    row[sname]["qps_median"] = statistics.median(x["qps"] or 0 for x in sat)
                    cpq = [x["cpu_us_per_query"] for x in sat if x["cpu_us_per_query"]]
                    row[sname]["cpu_us_per_query_median"] = statistics.median(cpq) if cpq else None
                    row[sname]["rcodes"] = sat[0]["rcodes"]
                sres["rows"][kk] = row
                log(f"dns {size} {kk}: " + ", ".join(
                    f"{s} {row[s]['qps_median']:.0f} q/s "
                    f"{(row[s]['cpu_us_per_query_median'] or 0):.1f} us/q" for s in PORTS))
            mem(f"aardvark_{size}_names", aard_pid)
            mem(f"dnsmasq_{size}_names", dm.pid)
            mem(f"netd_{n_ep}_endpoints_{n_ep * k}_names_after_load", nd.pid)
            res["sizes"][str(size)] = sres
            if aard_pid:
                os.kill(aard_pid, signal.SIGTERM)
            aard.wait()
            dm.terminate()
            dm.wait()
            with cf.ThreadPoolExecutor(4) as ex:
                list(ex.map(detach, range(n_ep)))
    finally:
        for p in procs:
            stop_proc(p)
        for n in (DNS_HOST, DNS_CLI, DNS_FILL, DNS_OUT):
            kill_netns_procs(n)
        netns_del_many([DNS_HOST, DNS_CLI, DNS_FILL, DNS_OUT])
        shutil.rmtree(f"/etc/netns/{DNS_HOST}", ignore_errors=True)
    out["dns"] = res


# --------------------------------------------------------------------------------------------
# 4. Datapath: iperf3 and TCP connection rate through a published port.

CONN_SERVER = r"""
import socket,sys
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(4096)
print("ok", flush=True)
while True:
    c,_=s.accept(); c.close()
"""
CONN_CLIENT = r"""
import socket,sys,time
addr=(sys.argv[1], int(sys.argv[2])); dur=float(sys.argv[3]); n=0; err=0
end=time.time()+dur
while time.time()<end:
    s=socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    try:
        s.connect(addr); s.recv(1); n+=1
    except OSError:
        err+=1
    s.close()
print(n/dur, err)
"""


class Datapath:
    """netd and the reference bridge side by side, each with an "outside" namespace behind
    masquerade and containers 1 and 2 attached (3 is created for the connection-rate test)."""

    def __init__(self):
        nd, rf = Netd(), Ref()
        nd.host, rf.host = "ndb-dp-nd-h", "ndb-dp-rf-h"
        nd.short, rf.short = "dpnd", "dprf"
        self.systems = {"netd": nd, "ref": rf}
        self.outs = {"netd": "ndb-dp-nd-o", "ref": "ndb-dp-rf-o"}
        self.allns = [nd.host, rf.host, *self.outs.values()] + [
            s.cns(i) for s in (nd, rf) for i in (1, 2, 3)]
        self.pools = {}

    def setup(self):
        netns_add_many(self.allns)
        for k, s in self.systems.items():
            outside_link(s.host, self.outs[k], tag=s.short)
            sh(["ip", "netns", "exec", self.outs[k], "sysctl", "-q",
                "net.ipv4.ip_local_port_range=1024 65000"])
            s.start()
            self.pools[k] = cf.ThreadPoolExecutor(1, initializer=enter_netns,
                                                  initargs=(s.host,))
            for i in (1, 2):
                self.pools[k].submit(s.add, i, False).result()

    def container_ip(self, k, i=2):
        return sh(["ip", "-n", self.systems[k].cns(i), "-4", "-o", "addr", "show",
                   "eth0"]).split()[3].split("/")[0]

    def teardown(self):
        for s in self.systems.values():
            try:
                s.stop()
            except Exception:  # noqa: BLE001
                pass
        for n in self.allns:
            kill_netns_procs(n)
        for p in self.pools.values():
            p.shutdown()
        netns_del_many(self.allns)


def iperf3(client_ns, target_ns, target_ip, secs):
    """Gb/s received by an iperf3 server in target_ns (core 1) from a client in client_ns (core 0)."""
    srv = subprocess.Popen(ns_exec(target_ns, ["taskset", "-c", "1", "iperf3", "-s", "-1", "-p",
                                               "5201"]),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    r = subprocess.run(ns_exec(client_ns, ["taskset", "-c", "0", "iperf3", "-c", target_ip, "-p",
                                           "5201", "-t", str(secs), "-J"]),
                       capture_output=True, text=True)
    srv.wait(10)
    return json.loads(r.stdout)["end"]["sum_received"]["bits_per_second"] / 1e9


def datapath_bench(args, out):
    res = {"iperf": {}, "connrate": {}}
    dp = Datapath()
    systems, outs, pools = dp.systems, dp.outs, dp.pools
    bg = []
    try:
        dp.setup()
        ip = {k: dp.container_ip(k) for k in systems}

        def iperf(k, target_ns, target_ip):
            return iperf3(systems[k].cns(1), target_ns, target_ip, args.iperf_dur)
        for case in ("c2c", "c2outside_nat"):
            vals = {k: [] for k in systems}
            for rep in range(args.iperf_reps):
                for k in (list(systems) if rep % 2 == 0 else list(systems)[::-1]):
                    if case == "c2c":
                        vals[k].append(iperf(k, systems[k].cns(2), ip[k]))
                    else:
                        vals[k].append(iperf(k, outs[k], "203.0.113.2"))
            res["iperf"][case] = {k: {"gbps": v, "median": statistics.median(v)}
                                  for k, v in vals.items()}
            log(f"iperf {case}: " + ", ".join(f"{k} {statistics.median(v):.2f} Gb/s"
                                              for k, v in vals.items()))
        # Connection rate to a published port (container 2, hostPort 8080).
        for k, s in systems.items():
            pools[k].submit(s.delete, 2, False).result()
        port_of = lambda i, ports: ([{"hostPort": 8080, "containerPort": 8080,  # noqa
                                      "protocol": "tcp"}] if i == 2 else
                                     [{"hostPort": 30000 + j, "containerPort": 30000 + j,
                                       "protocol": "tcp"} for j in range(1000)])
        global port_maps
        saved = port_maps
        port_maps = port_of
        try:
            for k, s in systems.items():
                pools[k].submit(s.add, 2, True).result()
            for k, s in systems.items():
                srv = subprocess.Popen(ns_exec(s.cns(2), ["taskset", "-c", "1", "python3", "-c",
                                                          CONN_SERVER, "8080"]),
                                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
                srv.stdout.readline()
                bg.append(srv)

            def rate(k):
                r = sh(ns_exec(outs[k], ["taskset", "-c", "0", "python3", "-c", CONN_CLIENT,
                                         "203.0.113.1", "8080", str(args.conn_dur)]))
                return float(r.split()[0])
            for case in ("1_port", "1001_ports"):
                if case == "1001_ports":
                    # 1000 other published ports, added after the target (portmap appends:
                    # the target's rules stay first) and before it would be worse, so the
                    # target is re-added last.
                    for k, s in systems.items():
                        pools[k].submit(s.add, 3, True).result()
                        pools[k].submit(s.delete, 2, True).result()
                        pools[k].submit(s.add, 2, True).result()
                vals = {k: [] for k in systems}
                for rep in range(args.conn_reps):
                    for k in (list(systems) if rep % 2 == 0 else list(systems)[::-1]):
                        vals[k].append(rate(k))
                res["connrate"][case] = {k: {"per_s": v, "median": statistics.median(v)}
                                         for k, v in vals.items()}
                log(f"connrate {case}: " + ", ".join(f"{k} {statistics.median(v):.0f}/s"
                                                     for k, v in vals.items()))
        finally:
            port_maps = saved
    finally:
        for p in bg:
            p.kill()
        dp.teardown()
    out["datapath"] = res


# --------------------------------------------------------------------------------------------
# Physical floor: bare netlink calls for one veth (ip -batch, one process for all).

def floor_bench(args, out):
    n = 100
    host = "ndb-fl-h"
    cs = [f"ndb-fl-c{i}" for i in range(n)]
    netns_add_many([host] + cs)
    res = {}
    try:
        sh(["ip", "-n", host, "link", "add", "br0", "type", "bridge"])
        sh(["ip", "-n", host, "link", "set", "br0", "up"])
        script = "".join(f"link add vf{i} master br0 up type veth peer name eth0 netns {c}\n"
                         for i, c in enumerate(cs))
        t0 = time.perf_counter()
        sh(["ip", "-n", host, "-batch", "-"], input=script)
        res["veth_create_enslave_up_ms"] = (time.perf_counter() - t0) / n * 1e3
        # Container side: address, up, default route, in each namespace (exec cost measured
        # separately and subtracted).
        t = []
        for i, c in enumerate(cs):
            sc = (f"addr add 10.98.{i // 250}.{i % 250 + 2}/16 dev eth0\nlink set eth0 up\n"
                  f"route add default via 10.98.0.1\n")
            t0 = time.perf_counter()
            sh(["ip", "-n", c, "-batch", "-"], input=sc)
            t.append(time.perf_counter() - t0)
        e = []
        for c in cs[:50]:
            t0 = time.perf_counter()
            sh(["ip", "-n", c, "-batch", "-"], input="link show lo\n")
            e.append(time.perf_counter() - t0)
        res["container_side_ms"] = (statistics.median(t) - statistics.median(e)) * 1e3
        res["ip_exec_ms"] = statistics.median(e) * 1e3
        script = "".join(f"link del vf{i}\n" for i in range(n))
        t0 = time.perf_counter()
        sh(["ip", "-n", host, "-batch", "-"], input=script)
        res["veth_delete_ms"] = (time.perf_counter() - t0) / n * 1e3
        # The same veths deleted in bulk: one RTM_DELLINK for a link group, so the kernel
        # unregisters them together (one RCU grace period for all).
        script = "".join(f"link add vg{i} master br0 up group 99 type veth peer name eth1 "
                         f"netns {c}\n" for i, c in enumerate(cs))
        sh(["ip", "-n", host, "-batch", "-"], input=script)
        t0 = time.perf_counter()
        sh(["ip", "-n", host, "link", "del", "group", "99"])
        res["veth_delete_bulk_group_ms"] = (time.perf_counter() - t0) / n * 1e3
        # One durable 4 KiB write, as a store commit needs (fsync on the state filesystem).
        os.makedirs(STATE, exist_ok=True)
        fn = f"{STATE}/fsync-probe"
        t = []
        with open(fn, "wb") as f:
            for _ in range(50):
                t0 = time.perf_counter()
                f.write(b"x" * 4096)
                f.flush()
                os.fsync(f.fileno())
                t.append(time.perf_counter() - t0)
        os.unlink(fn)
        res["fsync_4k_ms"] = statistics.median(t) * 1e3
    finally:
        netns_del_many([host] + cs)
    for case, per_window in floor_by_population(args.floor_n, args.cni_window).items():
        res[f"veth_by_population_{case}_ms"] = per_window
    out["floor"] = res
    log(f"floor: {res}")


def floor_by_population(n, window):
    """The kernel's part of an ADD as the machine fills: veth create (+ enslave) + up, the peer
    born in its container namespace, one `ip -batch` per window of containers; ms per veth by
    window, on a bridge as netd's (MAC pinned and shared by the host ends, no multicast
    snooping), on a bridge with the kernel's default multicast snooping (as the peers' bridges)
    and, to tell the bridge's share from the namespaces' and interfaces', on no bridge at all.

    Whatever the bridge case grows from the first window to the last, no system that puts one
    veth per container on one bridge can avoid: it is the floor of "flat from the 1st to the
    1,000th".
    """
    out = {}
    for case in ("bridge", "bridge_snooping", "no_bridge"):
        host = "ndb-fp-h"
        cs = [f"ndb-fp-c{i}" for i in range(n)]
        netns_add_many([host] + cs)
        per_window = []
        try:
            # As netd's host ends: no IPv6 (no link-local address, DAD or MLD per port).
            sh(ns_exec(host, ["sysctl", "-q", "-w", "net.ipv6.conf.default.disable_ipv6=1"]))
            snooping = "1" if case == "bridge_snooping" else "0"
            sh(["ip", "-n", host, "link", "add", "br0", "address", "02:42:0a:62:00:01",
                "type", "bridge", "mcast_snooping", snooping])
            sh(["ip", "-n", host, "link", "set", "br0", "up"])
            master = "" if case == "no_bridge" else "master br0 "
            if case == "bridge":
                # As netd's host ends: the bridge's MAC, so the bridge holds one local entry.
                master = "address 02:42:0a:62:00:01 " + master
            settle(f"floor by population ({case})")
            for w0 in range(0, n, window):
                script = "".join(f"link add vf{i} {master}up type veth peer name eth0 "
                                 f"netns {cs[i]}\n" for i in range(w0, min(n, w0 + window)))
                t0 = time.perf_counter()
                sh(["ip", "-n", host, "-batch", "-"], input=script)
                per_window.append((time.perf_counter() - t0) / window * 1e3)
        finally:
            netns_del_many([host] + cs)
        out[case] = per_window
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="floor,cni,dns,datapath")
    ap.add_argument("--out", default=None)
    ap.add_argument("--systems", default="netd,ref,netavark",
                    help="CNI systems to compare (netd first: it is the reference of the ratios)")
    ap.add_argument("--no-strace", dest="strace", action="store_false")
    ap.add_argument("--cni-phases", default="",
                    help="only these CNI phases (noports-seq,noports-par8,ports-seq,ports-par8)")
    ap.add_argument("--cni-time-limit", type=float, default=None,
                    help="seconds of ADDs per CNI phase before it stops early (then DELs)")
    ap.add_argument("--update", action="store_true",
                    help="replace only the sections run in an existing result file")
    a = ap.parse_args()
    if a.quick:
        a.cni_n, a.cni_window, a.cni_modes, a.cni_ports = 40, 10, ["seq", "par8"], [False, True]
        a.cni_time_limit = a.cni_time_limit or 300
        a.dns_endpoints, a.dns_names_per_ep, a.dns_reps, a.dns_dur = 200, [1, 10], 1, 2
        a.dns_fixed_dur, a.dns_rate, a.dns_settle = 2, 2000, 3
        a.iperf_dur, a.iperf_reps, a.conn_dur, a.conn_reps = 2, 2, 1, 2
        a.floor_n = 200
    else:
        a.cni_n, a.cni_window, a.cni_modes, a.cni_ports = 1000, 100, ["seq", "par8"], [False, True]
        a.cni_time_limit = a.cni_time_limit or 2400
        a.dns_endpoints, a.dns_names_per_ep, a.dns_reps, a.dns_dur = 1000, [1, 10], 4, 4
        a.dns_fixed_dur, a.dns_rate, a.dns_settle = 3, 2000, 10
        a.iperf_dur, a.iperf_reps, a.conn_dur, a.conn_reps = 4, 4, 3, 4
        a.floor_n = 1000
    for d in (RUN, STATE, RESULTS):
        os.makedirs(d, exist_ok=True)
    out = {"quick": a.quick, "machine": machine(), "versions": versions()}
    fn = a.out or os.path.join(RESULTS, "quick.json" if a.quick else "full.json")
    if a.update and os.path.exists(fn):
        # Re-run some sections into an existing result; the rest is kept.
        prev = json.load(open(fn))
        prev.setdefault("reruns", []).append({"sections": a.only, "machine": out["machine"],
                                              "versions": out["versions"],
                                              "cni_phases": a.cni_phases or "all"})
        out = prev
    log(f"machine {out['machine']}")
    only = a.only.split(",")
    try:
        if "floor" in only:
            floor_bench(a, out)
        if "dns" in only:
            dns_bench(a, out)
        if "datapath" in only:
            datapath_bench(a, out)
        if "cni" in only:
            cni_bench(a, out)
    finally:
        if a.update and "reruns" in out:
            out["reruns"][-1]["machine"]["loadavg_end"] = loadavg()
        else:
            out["machine"]["loadavg_end"] = loadavg()
        json.dump(out, open(fn, "w"), separators=(",", ":"))
        log(f"wrote {fn}")


if __name__ == "__main__":
    main()
