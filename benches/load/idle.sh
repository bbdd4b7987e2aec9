#!/usr/bin/env bash
# Memory per idle keep-alive connection: tollgate, the bare Pingora proxy
# (built from vendor/, with tollgate's limits) and NGINX, one after the
# other, each in front of the same upstream.
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
cargo build --release --bin tollgate --example bare_proxy >&2
dir=${CARGO_TARGET_DIR:-target}/release
start_upstream

# measure NAME PORT PID: both modes, one JSON line each.
measure() {
  wait_port "$2" 600
  for mode in "" silent; do
    printf '%s ' "$1"
    python3 benches/load/idle_conns.py "$2" "$3" "$n" $mode
  done
}

port=$(free_port)
tollgate_config "$port" 1000000000 1
"$dir/tollgate" --config "$work/tollgate.toml" 2>/dev/null &
pids+=($!)
measure tollgate "$port" $!
kill "${pids[-1]}"

port=$(free_port)
"$dir/examples/bare_proxy" "127.0.0.1:$port" "127.0.0.1:$up_port" 1 timeouts 2>/dev/null &
pids+=($!)
measure bare "$port" $!
kill "${pids[-1]}"

port=$(free_port)
nginx_proxy_config "$port" 0
sed -i "s/worker_connections 4096/worker_connections $((2 * n + 1024))/" "$work/proxy.conf"
nginx -p "$work" -c "$work/proxy.conf" -e "$work/proxy-error.log" -g "master_process off;" &
pids+=($!)
measure nginx "$port" $!
