#!/usr/bin/env bash
# User-space instructions per request under wrk load (callgrind), for one
# proxy at a time: what `instructions.sh` counts with 4 keep-alive
# connections, but with CONNS in flight, where the scheduler, timers and
# upstream pool behave as in the harness. Deterministic where the harness's
# CPU times are not.
#
# Usage: benches/load/instructions_under_load.sh TARGET PATH CONNS [LIMIT] [SECONDS]
#   TARGET bare|tollgate|nginx (the bare proxy runs with tollgate's
#   timeouts and limits; NGINX as the harness runs it, without its master
#   process), PATH /ok or /err, LIMIT tollgate's per-IP rule (1: every
#   request is its own 429), SECONDS of counted load (default 15).
#   TOLLGATE_BIN=PATH counts that build of tollgate; MAX_IN_FLIGHT=N runs
#   it with upstream.max_in_flight = N.
#   CACHE=1 adds callgrind's cache model (a 32 KiB first-level data cache
#   and a 1 MiB last-level one, LL=size,ways,line to change the latter)
#   and prints the data misses per request at each level: the memory a
#   request touches that is no longer in cache, which is what grows with
#   the number of connections.
#   KEEP_CALLGRIND=DIR keeps the callgrind files there for
#   callgrind_annotate (with CACHE=1 it can sort by the misses, e.g.
#   `--sort=DLmr,DLmw,Ir`).
#   SMOKE=1: the debug build and 2 s: checks that the script runs (CI).
# One wrk run (one thread, the client library's headers, a 60 s timeout,
# since under valgrind a request can take longer than wrk's default 2 s):
# the first 5 s open the connections and warm up, then the counters are
# zeroed, SECONDS counted, and dumped while wrk still runs, so no
# connection's set-up or tear-down is counted. Requests are counted at the
# upstream NGINX (its stub_status), or for 429s by tollgate's own metrics.
set -euo pipefail
cd "$(dirname "$0")/../.."
target=${1:?target: bare, tollgate or nginx}
path=${2:?path: /ok or /err}
conns=${3:?connections}
limit=${4:-1000000000}
seconds=${5:-15}
if [ "$limit" = 1 ] && [ "$target" != tollgate ]; then
  echo "LIMIT 1 (429s) is tollgate's alone; $target has no limit here" >&2; exit 2
fi
. benches/load/common.sh
need valgrind callgrind_control nginx wrk python3 curl
warmup=5
if [ -n "${SMOKE:-}" ]; then
  seconds=2 warmup=2
  cargo build --bin tollgate --example bare_proxy >&2
  dir=${CARGO_TARGET_DIR:-target}/debug
else
  cargo build --release --bin tollgate --example bare_proxy >&2
  dir=${CARGO_TARGET_DIR:-target}/release
fi
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
if [ "$(nproc)" -ge 2 ]; then pin_proxy="taskset -c 1"; pin_load="taskset -c 0"; else pin_proxy=""; pin_load=""; fi

start_upstream $pin_load

port=$(free_port)
case "$target" in
  bare) cmd=("$dir/examples/bare_proxy" "127.0.0.1:$port" "127.0.0.1:$up_port" 1 timeouts) ;;
  tollgate)
    tollgate_config "$port" "$limit" 1
    cmd=("${TOLLGATE_BIN:-$dir/tollgate}" --config "$work/tollgate.toml") ;;
  nginx)
    nginx_proxy_config "$port" 0
    cmd=(nginx -p "$work" -c "$work/proxy.conf" -e "$work/proxy-error.log" -g "master_process off;") ;;
  *) echo "unknown target $target" >&2; exit 2 ;;
esac
cache=()
[ -n "${CACHE:-}" ] && cache=(--cache-sim=yes --D1=32768,8,64 "--LL=${LL:-1048576,16,64}")

# answered: requests answered so far (see the header).
answered() {
  if [ "$limit" = 1 ]; then
    local admin
    admin=$(sed -n 's/^admin_listen = "127.0.0.1:\([0-9]*\)"/\1/p' "$work/tollgate.toml")
    curl -s "http://127.0.0.1:$admin/metrics" | awk '/^tollgate_requests_total/ {s += $2} END {print s + 0}'
  else
    # stub_status counts its own request too: one per call, taken off below.
    curl -s "http://127.0.0.1:$up_port/nginx_status" | awk 'NR == 3 {print $3}'
  fi
}

TOLLGATE_LOG=error $pin_proxy valgrind --tool=callgrind "${cache[@]}" --callgrind-out-file="$work/cg" "${cmd[@]}" 2>/dev/null &
pid=$!
pids+=("$pid")
wait_port "$port" 600
url="http://127.0.0.1:$port$path"
[ "$limit" = 1 ] && curl -s -o /dev/null "$url"
headers=(-H "User-Agent: python-requests/2.32.3" -H "Accept: */*" -H "Accept-Encoding: gzip, deflate, br")
$pin_load wrk -t1 -c"$conns" --timeout 60s -d"$((warmup + seconds + 20))s" "${headers[@]}" "$url" > /dev/null &
wrk_pid=$!
pids+=("$wrk_pid")
sleep "$warmup"
before=$(answered)
callgrind_control -z "$pid" > /dev/null
sleep "$seconds"
callgrind_control -d "$pid" > /dev/null
after=$(answered)
kill "$wrk_pid" 2>/dev/null || true
requests=$((after - before))
[ "$limit" = 1 ] || requests=$((requests - 1))
if [ "$requests" -le 0 ]; then
  echo "no request was answered in the counted $seconds s" >&2; exit 1
fi
if [ -n "${KEEP_CALLGRIND:-}" ]; then
  mkdir -p "$KEEP_CALLGRIND" && cp "$work"/cg.* "$KEEP_CALLGRIND"/
fi
summary=$(grep -h '^summary:' "$work"/cg.* | tail -n 1)
events=$(grep -h '^events:' "$work"/cg.* | tail -n 1)
python3 - "$target" "$path" "$conns" "$requests" "$events" "$summary" <<'PY'
import sys
target, path, conns, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
counts = dict(zip(sys.argv[5].split()[1:], map(int, sys.argv[6].split()[1:])))
line = f"{target} {path} at {conns} connections: {n} requests, {counts['Ir'] // n:,} instructions per request"
if "D1mr" in counts:
    d1 = (counts["D1mr"] + counts["D1mw"]) / n
    ll = (counts["DLmr"] + counts["DLmw"]) / n
    line += f"; data misses per request: first level {d1:,.0f}, last level {ll:,.0f}"
print(line)
PY
