#!/usr/bin/env bash
# Where one proxy's CPU goes under wrk, kernel included: `perf record`
# (the cpu-clock software event, with call graphs) on the proxy while wrk
# drives it with the client library's headers, one request in flight per
# connection; the proxy pinned to CPU 1, wrk and the upstream NGINX to
# CPU 0, as in run.sh. Prints the throughput, p99 and the proxy's top
# symbols in microseconds per request.
#
# Usage: benches/load/profile.sh nginx|bare|tollgate CONNS [SECONDS] [OUT]
#   OUT (default: a scratch file) keeps perf.data for `perf report -i OUT`.
#   TOLLGATE_BIN=PATH profiles that tollgate build.
#   SMOKE=1: the debug build and 1 s: checks that the script runs (CI).
set -euo pipefail
cd "$(dirname "$0")/../.."
name=${1:?nginx, bare or tollgate} conns=${2:?connections} secs=${3:-5}
. benches/load/common.sh
need wrk nginx python3
command -v perf >/dev/null || { echo "perf is needed (Debian: apt-get install linux-perf)" >&2; exit 1; }
out=${4:-$work/perf.data}
if [ -n "${SMOKE:-}" ]; then
  secs=1
  cargo build --bin tollgate --example bare_proxy >&2
  dir=target/debug
else
  cargo build --release --bin tollgate --example bare_proxy >&2
  dir=target/release
fi
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

start_upstream taskset -c 0
port=$(free_port)
case "$name" in
  nginx)
    nginx_proxy_config "$port" 0
    taskset -c 1 nginx -p "$work" -c "$work/proxy.conf" -e "$work/proxy-error.log" & ;;
  bare)
    taskset -c 1 "$dir/examples/bare_proxy" "127.0.0.1:$port" "127.0.0.1:$up_port" 1 timeouts 2>/dev/null & ;;
  tollgate)
    tollgate_config "$port" 1000000000 1
    TOLLGATE_LOG=error taskset -c 1 "${TOLLGATE_BIN:-$dir/tollgate}" --config "$work/tollgate.toml" 2>/dev/null & ;;
  *) echo "unknown proxy $name" >&2; exit 2 ;;
esac
proxy=$!
pids+=("$proxy")
wait_port "$port"
# NGINX's master forks the worker that serves.
[ "$name" = nginx ] && proxy=$(pgrep -P "$proxy" | head -1)

taskset -c 0 wrk -t1 -c"$conns" -d"$((secs + 4))s" --latency \
  -H "User-Agent: python-requests/2.32.3" -H "Accept: */*" -H "Accept-Encoding: gzip, deflate, br" \
  "http://127.0.0.1:$port/ok" > "$work/wrk.txt" &
wrk_pid=$!
sleep 2
cpu_ticks() { awk '{print $14 + $15}' "/proc/$proxy/stat"; }
before=$(cpu_ticks) started=$(date +%s.%N)
perf record -e cpu-clock -F 2000 -g -p "$proxy" -o "$out" -- sleep "$secs" > /dev/null 2>&1
after=$(cpu_ticks) ended=$(date +%s.%N)
wait "$wrk_pid"
rps=$(awk '/Requests\/sec/ {print $2}' "$work/wrk.txt")
# CPU per request over the recorded window: the proxy's utime+stime
# against wrk's average rate (the window sits inside wrk's run). Sampling
# itself costs the proxy some CPU: compare figures made the same way.
us_per_req=$(python3 -c "print(($after - $before) / $(getconf CLK_TCK) / ($rps * ($ended - $started)) * 1e6)")
printf '%s, %s connections: %s requests/s, p99 %s (wrk); %.1f µs CPU a request\n' \
  "$name" "$conns" "$rps" "$(awk '/^ +99%/ {print $2}' "$work/wrk.txt")" "$us_per_req"
# awk reads to the end (an early `head` would fail the pipeline).
report() { perf report -i "$out" --no-children -g none --sort "$1" 2>/dev/null | awk -v n="$2" '/^ +[0-9.]+%/ && ++k <= n'; }
{ report dso 6; echo; report dso,sym 25; } |
  python3 -c '
import sys
per_req = float(sys.argv[1])
print("µs/request  share  symbol")
for line in sys.stdin:
    if not line.strip():
        print()
        continue
    share, rest = line.split("%", 1)
    print("%10.2f %5s%%  %s" % (float(share) / 100 * per_req, share.strip(), " ".join(rest.split())[:110]))
' "$us_per_req"
