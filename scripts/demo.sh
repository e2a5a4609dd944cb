#!/usr/bin/env bash
# Installs what netd needs, builds it, and shows its main job: a network and two containers
# that ping each other by name (netd's DNS on the network's gateway). The demo runs netd in a private "host" network namespace and removes
# everything it made on exit, so the machine's own network is left as it was.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
cargo build --bins
BIN=$PWD/target/debug
tag=netd-demo-$$
work=$(mktemp -d)
cleanup() {
  [ -n "${netd_pid:-}" ] && kill "$netd_pid" 2>/dev/null && wait "$netd_pid" 2>/dev/null || true
  for ns in "$tag-host" "$tag-c1" "$tag-c2"; do
    ip netns del "$ns" 2>/dev/null || true
    rm -rf "/etc/netns/$ns"
  done
  rm -rf "$work"
}
trap cleanup EXIT
for ns in "$tag-host" "$tag-c1" "$tag-c2"; do ip netns add "$ns"; done
export NETD_SOCKET=$work/netd.sock
ip netns exec "$tag-host" "$BIN/netd" --socket "$NETD_SOCKET" --state-dir "$work/state" 2>"$work/netd.log" &
netd_pid=$!
for _ in $(seq 100); do "$BIN/netctl" status >/dev/null 2>&1 && break; sleep 0.1; done
set -x
"$BIN/netctl" create mynet
"$BIN/netctl" connect mynet --netns "/run/netns/$tag-c1" --name web
"$BIN/netctl" connect mynet --netns "/run/netns/$tag-c2" --name db
"$BIN/netctl" ls
"$BIN/netctl" inspect mynet
gw=$("$BIN/netctl" --format json inspect mynet | python3 -c 'import json,sys; print(json.load(sys.stdin)["subnets"][0]["gateway"])')
# Each container uses netd's DNS on its gateway (what a runtime writes into resolv.conf).
for c in c1 c2; do
  mkdir -p "/etc/netns/$tag-$c"
  echo "nameserver $gw" > "/etc/netns/$tag-$c/resolv.conf"
done
"$BIN/netctl" dns db --network mynet
ip netns exec "$tag-c1" ping -c2 db
ip netns exec "$tag-c2" ping -c2 web
"$BIN/netctl" disconnect mynet --netns "/run/netns/$tag-c1"
"$BIN/netctl" rm mynet --force
set +x
echo "demo OK: binaries are in $BIN (netd, netctl, netd-cni)"
