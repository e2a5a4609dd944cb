#!/usr/bin/env bash
# Builds the CNI plugin `netd-cni` as a static PIE and prints its path.
#
# A runtime execs the plugin for every ADD/DEL/CHECK, so its start-up is on every container's
# critical path. Linked statically (still position-independent, so ASLR stays) there is no
# dynamic loader and no shared library to map and relocate. Against musl rather than glibc:
# glibc's start-up sizes the CPU caches with dozens of CPUID instructions, each a trap to the
# hypervisor on a VM — measured here: CPU from spawn to exit 0.54 ms (glibc static) vs 0.23 ms
# (musl), a whole CNI ADD 0.2 ms faster (docs/benchmarks.md). Without the musl target
# (`rustup target add <arch>-unknown-linux-musl`, which scripts/install-deps.sh does) it falls
# back to a static glibc build. `+crt-static` must not reach proc-macro crates, hence the
# explicit --target. Usage: scripts/build-cni-plugin.sh [--debug]
set -euo pipefail
cd "$(dirname "$0")/.."
host=$(rustc -vV | sed -n 's/^host: //p')
musl="$(uname -m)-unknown-linux-musl"
profile=release flag=--release
[ "${1:-}" = "--debug" ] && profile=debug flag=
if rustc --print sysroot >/dev/null && [ -d "$(rustc --print sysroot)/lib/rustlib/$musl/lib" ]; then
    target=$musl   # static by default
    cargo build $flag -p netd-cni --target "$target" >&2
else
    echo "build-cni-plugin.sh: target $musl is not installed; building a static glibc plugin," \
         "which starts slower (rustup target add $musl)" >&2
    target=$host
    RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
        cargo build $flag -p netd-cni --target "$target" >&2
fi
echo "${CARGO_TARGET_DIR:-$PWD/target}/$target/$profile/netd-cni"
