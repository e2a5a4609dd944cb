#!/usr/bin/env bash
# Runs every fuzz target for a bounded time: ./fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]
#
# CI runs `fuzz/run.sh 20` (5 targets x 20 s plus the build). By hand, run longer:
#   fuzz/run.sh 1800               # half an hour per target
#   fuzz/run.sh 3600 dns_query     # one target for an hour
#   JOBS=2 fuzz/run.sh 600         # libFuzzer workers per target (one per core)
#
# Works on the stable toolchain: cargo-fuzz's instrumentation flags are stable `-C` flags;
# only sanitizers need nightly `-Z` flags, and netd's targets are safe Rust, so they are built
# with `--sanitizer none` and debug assertions + overflow checks on (`-a`) to catch panics,
# overflows and broken invariants. The corpus grows under fuzz/corpus/ (not committed); a crash
# is saved under fuzz/artifacts/TARGET/ and this script exits non-zero. To keep a crash fixed,
# copy it to fuzz/regressions/TARGET/: `cargo test --manifest-path fuzz/Cargo.toml` replays
# every seed and regression input on stable, without libFuzzer.
set -euo pipefail
cd "$(dirname "$0")"

secs="${1:-20}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(cni_config cni_run cni_result api_decode dns_query)
fi
jobs="${JOBS:-1}"
extra=()
if [ "$jobs" -gt 1 ]; then
    # Parallel workers write fuzz-N.log files; keep them with the artifacts.
    extra=(-jobs="$jobs" -workers="$jobs")
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz/run.sh: installing cargo-fuzz" >&2
    cargo install --locked cargo-fuzz
fi

flags=(--sanitizer none -O -a)
cargo fuzz build "${flags[@]}"

failed=()
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t" logs
    echo "== fuzz $t for ${secs}s"
    log="logs/$t.log"
    # -rss_limit_mb: the DNS cache and the CNI client runtime are small; anything near 2 GiB
    # is a leak worth a report. -max_len 64 KiB covers a DNS message over TCP and big configs.
    if cargo fuzz run "${flags[@]}" "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$secs" -rss_limit_mb=2048 -max_len=65536 -timeout=10 \
        -print_final_stats=1 "${extra[@]}" >"$log" 2>&1; then
        grep -E "stat::number_of_executed_units|stat::new_units_added|cov:" "$log" | tail -3 || true
    else
        echo "!! $t failed; see fuzz/$log and fuzz/artifacts/$t/" >&2
        tail -40 "$log" >&2
        failed+=("$t")
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz/run.sh: crashes in: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz/run.sh: ${#targets[@]} targets x ${secs}s: no crash"
