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
for tool in valgrind callgrind_control nginx wrk python3; do
  command -v $tool >/dev/null || { echo "$tool is needed" >&2; exit 1; }
done
cargo build --release --bin tollgate --example bare_proxy >&2
dir=${CARGO_TARGET_DIR:-target}/release
. benches/load/common.sh
ulimit -n 65536 2>/dev/null || ulimit -n 4096
if [ "$(nproc)" -ge 2 ]; then pin_proxy="taskset -c 1"; pin_load="taskset -c 0"; else pin_proxy=""; pin_load=""; fi

up_port=$(free_port)
sed -e "s#__PREFIX__#$work#g" -e "s#__PORT__#$up_port#g" benches/load/nginx-upstream.conf > "$work/upstream.conf"
$pin_load nginx -p "$work" -c "$work/upstream.conf" -e "$work/upstream-error.log" &
pids+=($!)
wait_port "$up_port"

port=$(free_port)
case "$target" in
  bare) cmd=("$dir/examples/bare_proxy" "127.0.0.1:$port" "127.0.0.1:$up_port" 1 timeouts) ;;
  tollgate)
    sed -e "s#__PORT__#$port#g" -e "s#__ADMIN__#$(free_port)#g" -e "s#__UPSTREAM__#$up_port#g" \
      -e "s#__LIMIT__#$limit#g" -e "s#__THREADS__#1#g" benches/load/tollgate.toml > "$work/tollgate.toml"
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
