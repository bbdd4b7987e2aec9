#!/usr/bin/env bash
# Install what building and testing tollgate needs on Debian, when missing:
# cmake (Pingora's zlib-ng), curl (h2c test), promtool (metrics test),
# nginx and openssl (the TLS upstream test), redis-server (the shared backend),
# wrk and valgrind (the load harness), slowhttptest and h2load (the attack
# tests and benches/attack/), strace (a test that counts system calls),
# perf (benches/load/profile.sh).
set -euo pipefail

need=()
command -v cmake >/dev/null || need+=(cmake)
command -v curl >/dev/null || need+=(curl)
command -v promtool >/dev/null || need+=(prometheus)
command -v cc >/dev/null || need+=(build-essential)
command -v openssl >/dev/null || need+=(openssl)
command -v nginx >/dev/null || need+=(nginx-light)
command -v redis-server >/dev/null || need+=(redis-server)
command -v redis-cli >/dev/null || need+=(redis-tools)
command -v wrk >/dev/null || need+=(wrk)
command -v taskset >/dev/null || need+=(util-linux)
command -v slowhttptest >/dev/null || need+=(slowhttptest)
command -v h2load >/dev/null || need+=(nghttp2-client)
command -v valgrind >/dev/null || need+=(valgrind)
command -v strace >/dev/null || need+=(strace)
command -v perf >/dev/null || need+=(linux-perf)

if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  echo "cargo not found: install the Rust toolchain (rustup) first" >&2
  exit 1
fi
