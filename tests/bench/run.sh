#!/usr/bin/env bash
# netd benchmarks against the peers. Usage (root):
#   tests/bench/run.sh [--quick] [--only floor,dns,datapath,cni] [--no-strace]
#   tests/bench/run.sh --profile     # perf + strace -c of netd during ADDs and DNS load
# Installs the peers (Debian packages) if missing, builds netd in release mode, runs every
# benchmark inside network namespaces named ndb-* that it creates, removes them on exit
# (also on failure or Ctrl-C), prints tables and writes tests/bench/results/{quick,full}.json
# (+ .md tables and PNG plots).
set -euo pipefail

cleanup() {
    # Only what this script created: processes inside ndb-* namespaces, then the namespaces.
    for ns in $(ip netns list | awk '{print $1}' | grep '^ndb-' || true); do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
        ip netns del "$ns" 2>/dev/null || true
        rm -rf "/etc/netns/$ns"
    done
    rm -rf /run/ndbench /var/tmp/ndbench
}

main() {
    local here root
    here="$(cd "$(dirname "$0")" && pwd)"
    root="$(cd "$here/../.." && pwd)"
    export NDB_TARGET="${CARGO_TARGET_DIR:-/work/target-bench}/release"
    [ "$(id -u)" = 0 ] || { echo "run as root (namespaces, nftables)" >&2; exit 1; }

    local pkgs=(containernetworking-plugins netavark aardvark-dns dnsmasq-base dnsperf iperf3
                python3-matplotlib strace iptables linux-perf)
    local missing=() p
    for p in "${pkgs[@]}"; do
        dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "installing ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
    fi

    (cd "$root" && CARGO_TARGET_DIR="${NDB_TARGET%/release}" cargo build --release --bins)
    NDB_NETD_CNI="$(cd "$root" && CARGO_TARGET_DIR="${NDB_TARGET%/release}" scripts/build-cni-plugin.sh)"
    export NDB_NETD_CNI

    trap cleanup EXIT INT TERM
    cleanup  # leftovers of an interrupted run

    if [ "${1:-}" = "--profile" ]; then
        # Flame graphs of the perf recordings (inferno: perf script -> folded -> SVG).
        command -v inferno-flamegraph >/dev/null || [ -x "$HOME/.cargo/bin/inferno-flamegraph" ] ||
            cargo install --locked inferno
        /usr/bin/python3 "$here/profile.py"
        return
    fi
    /usr/bin/python3 "$here/bench.py" "$@"
    /usr/bin/python3 "$here/report.py" "$@"
}

# Everything runs from main, so bash has read the whole file before it starts.
main "$@"
exit
