#!/usr/bin/python3
"""Prints the tables of a bench.py result (markdown) and draws the plots next to it."""

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")


def f(x, nd=1):
    return "–" if x is None else f"{x:.{nd}f}"


CNI_PHASES = ("noports-seq", "noports-par8", "ports-seq", "ports-par8")


def ratio(a, b):
    return "–" if not a or not b else f"{b / a:.1f}×"


def tables(r):
    out = []
    m = r["machine"]
    out.append(f"Machine: {m['cpu']}, {m['cores']} cores, {m['mem_kb'] // 1024} MiB, kernel "
               f"{m['kernel']}, Debian {m['os']}; load average {' '.join(m['loadavg_start'])} "
               f"(start) / {' '.join(m.get('loadavg_end', []))} (end); {m['date']}"
               f"{'; QUICK run' if r.get('quick') else ''}\n")
    out.append("Versions: " + "; ".join(f"{k} {v}" for k, v in r["versions"].items()) + "\n")
    # Sections re-run with --update since: the machine line above is the first run's, and the
    # rows below come from each section's latest run (its own date, build and kernel).
    def line(what, rr):
        rm = rr["machine"]
        return (f"Latest run of {what}: {rm['date']}, netd {rr['versions'].get('netd_git')}, "
                f"kernel {rm['kernel']}; load average {' '.join(rm['loadavg_start'])} (start) / "
                f"{' '.join(rm.get('loadavg_end', []))} (end)\n")
    # Which run each section (and each CNI phase: a re-run may cover only some, with
    # --cni-phases; records without the key covered them all) last came from.
    owner = {}
    for rr in r.get("reruns", []):
        for sec in rr["sections"].split(","):
            owner[f"`{sec}`"] = rr
            if sec == "cni":
                cover = rr.get("cni_phases", "all")
                for ph in CNI_PHASES if cover == "all" else cover.split(","):
                    owner[f"`cni` phase {ph}"] = rr
    split = any(owner.get(f"`cni` phase {ph}") is not owner.get("`cni`") for ph in CNI_PHASES)
    for what, rr in sorted(owner.items()):
        # One line for CNI when one run covered every phase, else one per phase.
        if what.startswith("`cni`") and what.startswith("`cni` phase") != split:
            continue
        out.append(line(what, rr))
    if "floor" in r:
        fl = r["floor"]
        out.append("### Floor (bare kernel calls, one `ip -batch` process)\n")
        out.append("| step | ms |\n|---|---|")
        for k, v in fl.items():
            if isinstance(v, list):
                # By population: first and last window, and the growth between them.
                v = f"{f(v[0], 2)} → {f(v[-1], 2)} (first → last window, {v[-1] / v[0]:.2f}×)"
            else:
                v = f(v, 2)
            out.append(f"| {k} | {v} |")
        out.append("")
    if "cni" in r:
        c = r["cni"]
        out.append(f"### CNI ADD/DEL latency (ms), {c['n']} containers per system on one network, "
                   f"windows of {c['window']}\n")
        out.append(f"Spawn floor (ndb-spawn → /bin/true): {f(c.get('exec_floor_ms'), 2)} ms; "
                   f"`netd-cni` VERSION: {f(c.get('netd_cni_version_ms'), 2)} ms\n")
        for key, ph in c["phases"].items():
            n = ph["n_done"]
            w = c["window"]
            out.append(f"**{key}** ({n} containers, {ph['seconds']:.0f} s, load {' '.join(ph['loadavg'])})\n")
            w = min(w, n)
            out.append(f"| system | ADD 1–{w} p50/p90/p99 | ADD {n - w + 1}–{n} p50/p90/p99 | "
                       f"DEL (full net) p50/p90/p99 | DEL (last {w}) p50 | ADD p50 ÷ netd's, first / last window |")
            out.append("|---|---|---|---|---|---|")
            nd = ph["stats"]["netd"]["add_last"]["p50"]
            nd1 = ph["stats"]["netd"]["add_first"]["p50"]
            for s, st in ph["stats"].items():
                fmt = lambda x: f"{f(x['p50'])} / {f(x['p90'])} / {f(x['p99'])}" if x else "–"  # noqa
                out.append(f"| {s} | {fmt(st['add_first'])} | {fmt(st['add_last'])} | "
                           f"{fmt(st['del_full'])} | {f(st['del_empty']['p50'] if st['del_empty'] else None)} | "
                           f"{ratio(nd1, st['add_first']['p50']) + ' / ' + ratio(nd, st['add_last']['p50']) if s != 'netd' else '1×'} |")
            out.append("")
        if c.get("batches"):
            out.append("### netd nftables batch per ADD (2 published ports), by existing containers\n")
            out.append("| existing containers | netfilter sends | bytes | largest send | rtnetlink sends | "
                       "rtnetlink bytes | fsyncs |")
            out.append("|---|---|---|---|---|---|---|")
            for b in c["batches"]:
                out.append(f"| {b['population']} | {b['netfilter_sends']} | {b['netfilter_bytes']} | "
                           f"{b['netfilter_largest_send']} | {b['rtnetlink_sends']} | "
                           f"{b['rtnetlink_bytes']} | {b['fsyncs']} |")
            out.append("")
        if c.get("rss"):
            out.append("netd RSS during CNI: " + ", ".join(
                f"{k} {v / 1024:.1f} MiB" for k, v in c["rss"].items() if v) + "\n")
    if "dns" in r:
        d = r["dns"]
        for size, sres in d["sizes"].items():
            out.append(f"### DNS, {size} names: saturation q/s (median), server CPU µs/query, "
                       f"server CPU use, latency at fixed rate (p50/p99 ms)\n")
            servers = list(next(iter(sres["rows"].values())).keys())
            out.append("| query | " + " | ".join(
                f"{s} q/s | {s} µs/q | {s} cpu | {s} p50/p99" for s in servers) + " |")
            out.append("|---|" + "---|" * (4 * len(servers)))
            for kind, row in sres["rows"].items():
                cells = []
                for s in servers:
                    x = row[s]
                    util = sum(y["server_cpu_util"] for y in x["sat"]) / len(x["sat"])
                    fx = x["fixed"]
                    cells += [f(x["qps_median"], 0), f(x["cpu_us_per_query_median"]),
                              f"{util * 100:.0f}%",
                              f"{f(fx.get('p50_ms'), 2)}/{f(fx.get('p99_ms'), 2)}"]
                out.append(f"| {kind} | " + " | ".join(cells) + " |")
            out.append("")
            out.append("Response codes (first saturation run): " + "; ".join(
                f"{kind}: " + ", ".join(f"{s} {row[s]['rcodes']}" for s in servers)
                for kind, row in sres["rows"].items()) + "\n")
        if d.get("mem_kb"):
            # RSS counts the shared libraries' and the binary's clean page-cache pages too;
            # private (USS) is what the process alone holds, anonymous its heap and stacks.
            out.append("### Memory (MiB: RSS, private = USS, anonymous, PSS)\n")
            out.append("| process / state | RSS | private | anonymous | PSS |\n|---|---|---|---|---|")
            for k, v in d["mem_kb"].items():
                cells = [f(v[x] / 1024, 1) if v else "–" for x in ("rss", "private", "anon", "pss")]
                out.append(f"| {k} | " + " | ".join(cells) + " |")
        else:
            out.append("### Memory (RSS)\n")
            out.append("| process / state | MiB |\n|---|---|")
            for k, v in d["rss_kb"].items():
                out.append(f"| {k} | {f(v / 1024 if v else None)} |")
        out.append("")
    if "datapath" in r:
        dp = r["datapath"]
        out.append("### Datapath\n")
        out.append("| test | netd | ref bridge | netd/ref |\n|---|---|---|---|")
        rng = lambda xs, nd: f"({f(min(xs), nd)}–{f(max(xs), nd)})"  # noqa
        for case, v in dp["iperf"].items():
            out.append(f"| iperf3 {case}, Gb/s: median (min–max) | {f(v['netd']['median'], 2)} "
                       f"{rng(v['netd']['gbps'], 2)} | {f(v['ref']['median'], 2)} "
                       f"{rng(v['ref']['gbps'], 2)} | {v['netd']['median'] / v['ref']['median']:.2f} |")
        for case, v in dp["connrate"].items():
            out.append(f"| TCP connects/s to a published port, {case} published | "
                       f"{f(v['netd']['median'], 0)} {rng(v['netd']['per_s'], 0)} | "
                       f"{f(v['ref']['median'], 0)} {rng(v['ref']['per_s'], 0)} | "
                       f"{v['netd']['median'] / v['ref']['median']:.2f} |")
        out.append("")
    return "\n".join(out)


def plots(r, prefix):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no plots", file=sys.stderr)
        return []
    files = []
    colors = {"netd": "tab:green", "ref": "tab:red", "netavark": "tab:blue",
              "aardvark-dns": "tab:blue", "dnsmasq": "tab:orange"}
    if "cni" in r and r["cni"]["phases"]:
        phs = r["cni"]["phases"]
        fig, axes = plt.subplots(1, len(phs), figsize=(4 * len(phs), 3.4), sharey=True)
        axes = axes if len(phs) > 1 else [axes]
        for ax, (key, ph) in zip(axes, phs.items()):
            for s, st in ph["stats"].items():
                ys = st["add_all_ms"]
                ax.plot(range(1, len(ys) + 1), ys, ".", ms=1.5, color=colors[s], label=s)
            ax.set_yscale("log")
            ax.set_title(f"ADD {key}", fontsize=9)
            ax.set_xlabel("container #", fontsize=8)
            ax.grid(alpha=.3)
        axes[0].set_ylabel("ADD latency (ms, log)")
        axes[0].legend(fontsize=7, markerscale=5)
        fig.tight_layout()
        fn = f"{prefix}-cni-add.png"
        fig.savefig(fn, dpi=80)
        files.append(fn)
    if "dns" in r and r["dns"]["sizes"]:
        sizes = r["dns"]["sizes"]
        fig, axes = plt.subplots(2, len(sizes), figsize=(5 * len(sizes), 6), squeeze=False)
        for col, (size, sres) in enumerate(sizes.items()):
            kinds = list(sres["rows"])
            servers = list(sres["rows"][kinds[0]])
            w = 0.8 / len(servers)
            for si, s in enumerate(servers):
                xs = [k + si * w for k in range(len(kinds))]
                axes[0][col].bar(xs, [sres["rows"][k][s]["qps_median"] for k in kinds], w,
                                 color=colors[s], label=s)
                axes[1][col].bar(xs, [sres["rows"][k][s]["cpu_us_per_query_median"] or 0
                                      for k in kinds], w, color=colors[s], label=s)
            for row, lab in ((0, "queries/s (saturation)"), (1, "server CPU µs/query")):
                ax = axes[row][col]
                ax.set_xticks([k + 0.4 - w / 2 for k in range(len(kinds))])
                ax.set_xticklabels(kinds, fontsize=7)
                ax.set_ylabel(lab, fontsize=8)
                ax.set_title(f"{size} names", fontsize=9)
                ax.set_yscale("log")
                ax.grid(alpha=.3, axis="y")
            axes[0][col].legend(fontsize=7)
        fig.tight_layout()
        fn = f"{prefix}-dns.png"
        fig.savefig(fn, dpi=80)
        files.append(fn)
    return files


def main():
    quick = "--quick" in sys.argv
    fn = os.path.join(RESULTS, "quick.json" if quick else "full.json")
    for a in sys.argv[1:]:
        if a.endswith(".json"):
            fn = a
    r = json.load(open(fn))
    text = tables(r)
    print(text)
    prefix = fn[:-5]
    open(prefix + ".md", "w").write(text + "\n")
    for p in plots(r, prefix):
        print(f"plot: {p}")


if __name__ == "__main__":
    main()
