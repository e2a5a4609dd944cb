#!/usr/bin/env bash
# The whole test suite: system packages, build, every unit, property and end-to-end test.
# Every test that touches the network runs in namespaces it creates and removes.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
cargo fmt --all -- --check
cargo build --workspace --bins --tests
cargo test --workspace --no-fail-fast
# The CNI suite again against the plugin as docs/cni.md installs it (static musl build).
NETD_TEST_CNI_PLUGIN="$(./scripts/build-cni-plugin.sh)" cargo test -p netd-tests --test cni
# Fuzzing: replay every seed and regression input, then a short bounded run of each target
# (longer runs by hand: see docs/reliability.md).
cargo test --manifest-path fuzz/Cargo.toml
./fuzz/run.sh 15
