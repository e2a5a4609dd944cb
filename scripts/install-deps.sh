#!/usr/bin/env bash
# Installs the system packages netd builds and tests with (Debian 12, as root).
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps.sh: run as root (netd manages bridges, namespaces and nftables)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# Installing container runtimes must not start their daemons on this machine (dockerd would
# create docker0 and iptables rules in the root namespace): keep services from starting
# during the install; the tests start runtimes by hand inside their own namespaces.
added_policy=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  added_policy=1
fi
trap '[ -n "$added_policy" ] && rm -f /usr/sbin/policy-rc.d' EXIT
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
  build-essential pkg-config clang libclang-dev \
  iproute2 iputils-ping nftables libnftnl-dev libmnl-dev \
  dnsutils dnsmasq-base procps psmisc curl ca-certificates \
  containernetworking-plugins \
  podman conmon runc containerd docker.io busybox-static protobuf-compiler >/dev/null
if ! command -v cargo >/dev/null 2>&1; then
  echo "install-deps.sh: a Rust toolchain (cargo >= 1.85, e.g. from rustup) is required" >&2
  exit 1
fi
# The CNI plugin ships as a static musl binary (scripts/build-cni-plugin.sh: it starts faster).
if command -v rustup >/dev/null 2>&1; then
  rustup target add "$(uname -m)-unknown-linux-musl" >/dev/null 2>&1 ||
    echo "install-deps.sh: could not add the musl target; the plugin will be built against glibc" >&2
fi
