#!/usr/bin/env bash
# User-space instructions per request under wrk load (callgrind), for one
# proxy at a time: what `instructions.sh` counts with 4 keep-alive
# connections, but with CONNS in flight, where the scheduler, timers and
# upstream pool behave as in the harness. Deterministic where the harness's
# CPU times are not.
#
# Usage: benches/load/instructions_under_load.sh TARGET PATH CONNS [LIMIT] [SECONDS]
#   TARGET bare|tollgate (the bare proxy runs with tollgate's upstream
#   timeouts), PATH /ok or /err, LIMIT tollgate's per-IP rule (1: every
#   request is its own 429), SECONDS of counted load (default 15).
# wrk runs with a 60 s timeout: under valgrind a request can take longer
# than wrk's default 2 s, and a timed-out connection is replaced by a new
# one, whose set-up would be counted. The 5 s of warm-up open the
# connections; the counted run opens CONNS new ones, a fixed cost that the
# printed figure includes (about 100,000 instructions per connection).
set -euo pipefail
cd "$(dirname "$0")/../.."
target=${1:?target: bare or tollgate}
path=${2:?path: /ok or /err}
conns=${3:?connections}
limit=${4:-1000000000}
seconds=${5:-15}
. benches/load/common.sh
need valgrind callgrind_control nginx wrk python3
cargo build --release --bin tollgate --example bare_proxy >&2
dir=${CARGO_TARGET_DIR:-target}/release
ulimit -n 65536 2>/dev/null || ulimit -n 4096
if [ "$(nproc)" -ge 2 ]; then pin_proxy="taskset -c 1"; pin_load="taskset -c 0"; else pin_proxy=""; pin_load=""; fi

start_upstream $pin_load

port=$(free_port)
case "$target" in
  bare) cmd=("$dir/examples/bare_proxy" "127.0.0.1:$port" "127.0.0.1:$up_port" 1 timeouts) ;;
  tollgate)
    tollgate_config "$port" "$limit" 1
    cmd=("$dir/tollgate" --config "$work/tollgate.toml") ;;
  *) echo "unknown target $target" >&2; exit 2 ;;
esac
TOLLGATE_LOG=error $pin_proxy valgrind --tool=callgrind --callgrind-out-file="$work/cg" "${cmd[@]}" 2>/dev/null &
pid=$!
pids+=("$pid")
wait_port "$port" 600
url="http://127.0.0.1:$port$path"
[ "$limit" = 1 ] && curl -s -o /dev/null "$url"
$pin_load wrk -t1 -c"$conns" --timeout 60s -d5s "$url" > /dev/null
callgrind_control -z "$pid" > /dev/null
$pin_load wrk -t1 -c"$conns" --timeout 60s -d"${seconds}s" "$url" > "$work/wrk.txt"
callgrind_control -d "$pid" > /dev/null
requests=$(awk '/requests in/ {print $1}' "$work/wrk.txt")
total=$(grep -h '^summary:' "$work"/cg.* | tail -n 1 | awk '{print $2}')
echo "$target $path at $conns connections: $requests requests, $((total / requests)) instructions per request"
