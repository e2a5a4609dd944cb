#!/usr/bin/env bash
# Server CPU per DNS query, netd vs dnsmasq, driven by dnsperf between two throwaway namespaces.
#
# Usage: dnsperf.sh NETD_SERVER_BINARY [NAMES...]   (default names: 1000 10000)
# Env: SECS (seconds per run, default 8), QPS (dnsperf -Q rate limit, default unlimited),
#      ROUNDS (alternations per cell, default 1), SRV_CPU/CLI_CPU (taskset cores, default 0/1).
# Prints one line per (server, names, kind): queries/s, lost, and server CPU µs/query from
# /proc/PID/stat utime+stime deltas. Everything runs in namespaces nd-dp-srv-$$ / nd-dp-cli-$$,
# removed on exit.
set -euo pipefail
BIN=$1; shift
SIZES=("${@:-1000 10000}"); SIZES=(${SIZES[@]})
SECS=${SECS:-8}; ROUNDS=${ROUNDS:-1}; SRV_CPU=${SRV_CPU:-0}; CLI_CPU=${CLI_CPU:-1}
SRV=nd-dp-srv-$$; CLI=nd-dp-cli-$$; TMP=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.2
  ip netns del $SRV 2>/dev/null || true; ip netns del $CLI 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT
ip netns add $SRV; ip netns add $CLI
ip -n $SRV link set lo up; ip -n $CLI link set lo up
ip -n $SRV link add veth0 type veth peer name veth1 netns $CLI
ip -n $SRV addr add 10.99.0.1/16 dev veth0; ip -n $SRV link set veth0 up
ip -n $CLI addr add 10.99.0.2/16 dev veth1; ip -n $CLI link set veth1 up

# Upstream for forwarded names: answers *.example.com with a long TTL.
ip netns exec $SRV dnsmasq --no-daemon --conf-file=/dev/null --port=53 --listen-address=127.0.0.2 \
  --bind-interfaces --no-resolv --no-hosts --address=/example.com/192.0.2.1 --local-ttl=3600 \
  --pid-file="$TMP/up.pid" --user=root 2>/dev/null &
PIDS+=($!)

addr() { local i=$1; local n=$((10 + i)); echo "10.99.$((n / 256)).$((n % 256))"; }
cpu_ticks() { awk '{print $14 + $15}' /proc/$1/stat; }
sys_ticks() { awk '{print $15}' /proc/$1/stat; }
HZ=$(getconf CLK_TCK)

start_server() { # kind names -> pid in SPID
  local kind=$1 n=$2
  if [ "$kind" = netd ]; then
    ip netns exec $SRV taskset -c $SRV_CPU "$BIN" 10.99.0.1 5300 10.99.0.0/16 "$n" 127.0.0.2:53 2>"$TMP/netd.log" &
    SPID=$!; PORT=5300
    # Registering N names one by one is O(N^2) (each attach re-indexes its network): wait.
    for _ in $(seq 6000); do grep -q serving "$TMP/netd.log" && break; sleep 0.1; done
  else
    ip netns exec $SRV taskset -c $SRV_CPU dnsmasq --no-daemon --conf-file=/dev/null --port=5301 \
      --listen-address=10.99.0.1 --bind-interfaces --no-resolv --no-hosts --addn-hosts="$TMP/hosts-$n" \
      --local=/netdperf/ --server=127.0.0.2 --cache-size=10000 --pid-file="$TMP/dm.pid" --user=root 2>/dev/null &
    SPID=$!; PORT=5301; sleep 1
  fi
  PIDS+=($SPID)
}

run_kind() { # server names kind file
  local server=$1 n=$2 kind=$3 file=$4
  # Warm-up pass (fills caches for forwarded names), not measured.
  ip netns exec $CLI dnsperf -s 10.99.0.1 -p $PORT -d "$file" -n 1 -t 2 >/dev/null 2>&1 || true
  local t0 s0; t0=$(cpu_ticks $SPID); s0=$(sys_ticks $SPID)
  local out; out=$(ip netns exec $CLI taskset -c $CLI_CPU dnsperf -s 10.99.0.1 -p $PORT -d "$file" \
     -l $SECS -t 2 ${QPS:+-Q $QPS} 2>&1)
  local t1 s1; t1=$(cpu_ticks $SPID); s1=$(sys_ticks $SPID)
  local done qps lost
  done=$(echo "$out" | awk '/Queries completed:/{print $3}')
  lost=$(echo "$out" | awk '/Queries lost:/{print $3}')
  qps=$(echo "$out" | awk '/Queries per second:/{print $4}')
  local rc; rc=$(echo "$out" | awk '/Response codes:/{$1=$2=""; print}')
  awk -v s=$server -v n=$n -v k=$kind -v d=$done -v q=$qps -v l=$lost -v dt=$((t1 - t0)) -v ds=$((s1 - s0)) -v hz=$HZ -v rc="$rc" \
    'BEGIN{printf "%-8s %6d %-5s qps=%9.0f lost=%-6s cpu_us_per_q=%6.2f (sys %5.2f)  [%s]\n", s, n, k, q, l, dt*1e6/hz/d, ds*1e6/hz/d, rc}'
}

for n in "${SIZES[@]}"; do
  "$BIN" 10.99.0.1 5300 10.99.0.0/16 "$n" --hosts > "$TMP/hosts-$n"
  : > "$TMP/A-$n"; : > "$TMP/AAAA-$n"; : > "$TMP/PTR-$n"; : > "$TMP/NX-$n"
  for i in $(shuf -i 0-$((n - 1))); do
    echo "c$i.netdperf A" >> "$TMP/A-$n"
    echo "c$i.netdperf AAAA" >> "$TMP/AAAA-$n"
    IFS=. read -r a b c d <<< "$(addr $i)"
    echo "$d.$c.$b.$a.in-addr.arpa PTR" >> "$TMP/PTR-$n"
    echo "nx$i.netdperf A" >> "$TMP/NX-$n"
  done
  for i in $(seq 0 999); do echo "f$i.example.com A"; done > "$TMP/FWD-$n"
done

for r in $(seq $ROUNDS); do
  for n in "${SIZES[@]}"; do
    for server in netd dnsmasq; do
      start_server $server $n
      for kind in A AAAA PTR NX FWD; do run_kind $server $n $kind "$TMP/$kind-$n"; done
      kill $SPID; wait $SPID 2>/dev/null || true
    done
  done
done
