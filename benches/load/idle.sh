#!/usr/bin/env bash
# Memory per idle keep-alive connection: tollgate, the bare Pingora proxy
# (built from vendor/, with tollgate's limits), the same proxy on Pingora
# 0.9.1 from crates.io (benches/load/bare-unpatched) and NGINX, one after
# the other, each in front of the same upstream.
#
# Usage: benches/load/idle.sh [N]   (default 2000 connections)
# For each proxy, benches/load/idle_conns.py opens N connections that send
# one GET each (User-Agent, Accept, Accept-Encoding) and then stay silent,
# then N that send nothing, and reports the RSS growth per connection.
# Needs nginx and python3; builds release.
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-2000}
. benches/load/common.sh
need nginx python3
# SMOKE=1 (CI): a debug build, so that the script is run, not judged.
profile=release; [ -n "${SMOKE:-}" ] && profile=debug
build=(--release); [ "$profile" = debug ] && build=()
cargo build "${build[@]}" --bin tollgate --example bare_proxy >&2
dir=${CARGO_TARGET_DIR:-target}/$profile
build_unpatched_floor "$profile"
start_upstream

# measure NAME MODE PORT CMD...: start CMD (a proxy listening on PORT),
# measure MODE ("" or silent), stop it: a fresh process for each mode.
measure() {
  local name=$1 mode=$2 port=$3; shift 3
  "$@" 2>/dev/null &
  local pid=$!
  pids+=("$pid")
  wait_port "$port" 600
  printf '%s ' "$name"
  python3 benches/load/idle_conns.py "$port" "$pid" "$n" $mode
  kill "$pid"
  wait "$pid" 2>/dev/null || true
}

for mode in "" silent; do
  port=$(free_port)
  tollgate_config "$port" 1000000000 1
  measure tollgate "$mode" "$port" "$dir/tollgate" --config "$work/tollgate.toml"

  port=$(free_port)
  measure bare "$mode" "$port" "$dir/examples/bare_proxy" "127.0.0.1:$port" "127.0.0.1:$up_port" 1 timeouts

  port=$(free_port)
  measure bare-unpatched "$mode" "$port" "$unpatched_bin" "127.0.0.1:$port" "127.0.0.1:$up_port" 1

  port=$(free_port)
  nginx_proxy_config "$port" 0
  sed -i "s/worker_connections 4096/worker_connections $((2 * n + 1024))/" "$work/proxy.conf"
  measure nginx "$mode" "$port" nginx -p "$work" -c "$work/proxy.conf" -e "$work/proxy-error.log" -g "master_process off;"
done
