#!/usr/bin/env bash
# The load harness: tollgate side by side with what an operator would
# otherwise run, in one run, on loopback.
#
# Targets, interleaved (A B C D A B C D ...), each started fresh per run:
#   direct    wrk -> upstream NGINX (the upstream's own cost)
#   nginx     NGINX, 1 worker, proxy_pass with keep-alive upstream and a
#             per-IP limit_req ($binary_remote_addr) that never triggers
#   bare      a bare Pingora pass-through proxy (examples/bare_proxy.rs):
#             the framework's floor, same profile, allocator, upstream
#             timeouts and client limits as tollgate;
#             in the 429 case it answers each request with an empty 429
#             of its own (Pingora's API): the floor for a proxy's own answer
#   bare-unpatched  the same proxy on Pingora 0.9.1 from crates.io, without
#             tollgate's vendor patches (benches/load/bare-unpatched; its
#             own build, made only when this target is asked for; not in
#             the default targets)
#   tollgate  1 thread, one never-triggering per-IP rule, metrics on
#   tollgate-unqueued  the same with upstream.max_in_flight out of reach:
#             every request goes to the upstream at once (not in the
#             default targets)
#   tollgate-inflight-N  the same with upstream.max_in_flight = N (not in
#             the default targets; several N compare in one interleaved run)
#   tollgate-adaptive  the same with upstream.adaptive_in_flight = true
#             (not in the default targets)
# Scenarios: ok (200 pass-through), err (422: normalized by tollgate, passed
# through by the others), limited (429 answered by the proxy itself:
# tollgate, NGINX limit_req_status 429 and the bare proxy's empty 429; none
# writes a log line per request), at each connection count.
#
# For each run: requests/s, p50/p99 latency, CPU microseconds per request
# of the proxy process (utime+stime from /proc/PID/stat, before and after),
# peak RSS (VmHWM), and how busy CPU 0 was (wrk and the upstream, when
# pinned: near 1.00 the load side, not the proxy, may have set the pace).
# Medians and ratios are printed at the end. When the machine has 2 or
# more cores the proxy is pinned to CPU 1 and wrk and the upstream to
# CPU 0 (--no-pin leaves scheduling to the kernel, for measuring more than
# one proxy thread). A run with an answer of the wrong status (anything
# but 200 in `ok`, a 2xx in `err` or `limited`) is reported on stderr.
#
# Usage: benches/load/run.sh [--smoke] [--duration S] [--repeats N]
#          [--conns "64 1000"] [--scenarios "ok err limited"]
#          [--targets "direct nginx bare tollgate"] [--threads N]
#          [--profile release|debug] [--out FILE] [--no-pin]
#   TOLLGATE_BIN=PATH measures that tollgate binary instead of this tree's
#   build (A/B runs against a build without a change); the environment
#   reaches the proxies (e.g. MIMALLOC_PURGE_DELAY).
#   MAX_IN_FLIGHT=N runs the tollgate target with upstream.max_in_flight = N
#   (default: tollgate's own, 128 per thread).
#   --smoke: 2 s per case, 1 repeat, 64 connections, debug build: checks
#   that the harness runs and every target answers as the scenario expects
#   (it fails on a wrong status), not how fast anything is (CI).
set -euo pipefail
cd "$(dirname "$0")/../.."

duration=10
repeats=3
conns="64 1000"
scenarios="ok err limited"
targets="direct nginx bare tollgate"
threads=1
profile=release
out=""
warmup=2
no_pin=0
strict=0
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) duration=2; repeats=1; conns="64"; profile=debug; warmup=0; strict=1 ;;
    --duration) duration=$2; shift ;;
    --repeats) repeats=$2; shift ;;
    --conns) conns=$2; shift ;;
    --scenarios) scenarios=$2; shift ;;
    --targets) targets=$2; shift ;;
    --threads) threads=$2; shift ;;
    --no-pin) no_pin=1 ;;
    --profile) profile=$2; shift ;;
    --out) out=$2; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

. benches/load/common.sh
need wrk nginx python3
# What a client library sends besides Host (python-requests' headers); wrk
# keeps one request in flight per connection.
client_headers=(-H "User-Agent: python-requests/2.32.3" -H "Accept: */*" -H "Accept-Encoding: gzip, deflate, br")

target_dir=${CARGO_TARGET_DIR:-target}
if [ "$profile" = release ]; then
  cargo build --release --bin tollgate --example bare_proxy >&2
  dir=$target_dir/release
else
  cargo build --bin tollgate --example bare_proxy >&2
  dir=$target_dir/debug
fi
# TOLLGATE_BIN: another tollgate build to measure (e.g. one without a patch).
tollgate_bin=${TOLLGATE_BIN:-$dir/tollgate}
bare_bin=$dir/examples/bare_proxy
unpatched_bin=""
case " $targets " in
  *" bare-unpatched "*)
    build_unpatched_floor "$profile" ;;
esac
for bin in "$tollgate_bin" "$bare_bin" ${unpatched_bin:+"$unpatched_bin"}; do
  [ -x "$bin" ] || { echo "not built: $bin" >&2; exit 1; }
done

ulimit -n 65536 2>/dev/null || ulimit -n 4096
results=${out:-$work/results.tsv}
if [ "$(nproc)" -ge 2 ] && [ "$no_pin" = 0 ]; then
  pin_proxy="taskset -c 1"; pin_load="taskset -c 0"
else
  pin_proxy=""; pin_load=""
fi
clk=$(getconf CLK_TCK)

# The upstream, for the whole run.
start_upstream $pin_load

# start_target NAME SCENARIO -> sets target_pid, target_port
start_target() {
  local name=$1 scenario=$2
  target_port=$(free_port)
  case "$name" in
    direct)
      target_port=$up_port; target_pid=$up_pid; return ;;
    nginx)
      local limited=0
      [ "$scenario" = limited ] && limited=1
      nginx_proxy_config "$target_port" "$limited"
      $pin_proxy nginx -p "$work" -c "$work/proxy.conf" -e "$work/proxy-error.log" &
      target_pid=$! ;;
    bare)
      local refuse=""
      [ "$scenario" = limited ] && refuse=refuse
      # `timeouts`: tollgate's upstream timeouts and client limits (an idle
      # timeout between requests, a head deadline), so both pay for them.
      $pin_proxy "$bare_bin" "127.0.0.1:$target_port" "127.0.0.1:$up_port" "$threads" timeouts $refuse 2>/dev/null &
      target_pid=$! ;;
    bare-unpatched)
      local refuse=""
      [ "$scenario" = limited ] && refuse=refuse
      # Always with tollgate's upstream timeouts; Pingora 0.9.1 has no
      # client limits to set.
      $pin_proxy "$unpatched_bin" "127.0.0.1:$target_port" "127.0.0.1:$up_port" "$threads" $refuse 2>/dev/null &
      target_pid=$! ;;
    tollgate|tollgate-unqueued|tollgate-inflight-*|tollgate-adaptive)
      local limit=1000000000
      [ "$scenario" = limited ] && limit=1
      case "$name" in
        tollgate-unqueued) MAX_IN_FLIGHT=1000000 tollgate_config "$target_port" "$limit" "$threads" ;;
        tollgate-inflight-*) MAX_IN_FLIGHT=${name#tollgate-inflight-} tollgate_config "$target_port" "$limit" "$threads" ;;
        tollgate-adaptive) ADAPTIVE=1 tollgate_config "$target_port" "$limit" "$threads" ;;
        *) tollgate_config "$target_port" "$limit" "$threads" ;;
      esac
      TOLLGATE_LOG=error $pin_proxy "$tollgate_bin" --config "$work/tollgate.toml" 2>/dev/null &
      target_pid=$! ;;
  esac
  pids+=("$target_pid")
  wait_port "$target_port"
}

stop_target() {
  [ "$target_pid" = "$up_pid" ] && return
  kill "$target_pid" 2>/dev/null || true
  wait "$target_pid" 2>/dev/null || true
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# "busy total" jiffies of CPU 0 (wrk and the upstream when pinned), to tell
# whether the load side, not the proxy, limited a run.
load_cpu_jiffies() { awk '$1 == "cpu0" {t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t}' /proc/stat; }
# Connections the upstream has accepted so far (its stub_status, over a
# connection of its own that this count includes).
upstream_accepts() { curl -s "http://127.0.0.1:$up_port/nginx_status" | awk 'NR == 3 {print $1}'; }

# run_case TARGET SCENARIO CONNS REP
run_case() {
  local name=$1 scenario=$2 c=$3 rep=$4 path=/ok
  [ "$scenario" = err ] && path=/err
  start_target "$name" "$scenario"
  local url="http://127.0.0.1:$target_port$path"
  if [ "$scenario" = limited ]; then
    curl -s -o /dev/null "$url" || true   # spend the one token
  fi
  if [ "$warmup" -gt 0 ]; then
    $pin_load wrk -t1 -c"$c" -d"${warmup}s" "${client_headers[@]}" "$url" >/dev/null 2>&1 || true
  fi
  # NGINX's master only supervises: measure its (one) worker.
  local measured=$target_pid
  if [ "$name" = direct ] || [ "$name" = nginx ]; then
    measured=$(pgrep -P "$target_pid" | head -n 1)
  fi
  local before after accepts_before accepts_after load_before load_after
  accepts_before=$(upstream_accepts)
  before=$(cpu_ticks "$measured")
  load_before=$(load_cpu_jiffies)
  local sampler=""
  if [ "$name" = tollgate-adaptive ]; then
    # The adaptive limit halfway through (at the end it sees connections
    # close, not the load).
    local admin
    admin=$(sed -n 's/^admin_listen = "\(.*\)"$/\1/p' "$work/tollgate.toml")
    (sleep "$(python3 -c "print($duration / 2)")"
     curl -s "http://$admin/metrics" | awk '/^tollgate_upstream_in_flight_limit /{print $2}' > "$work/limit.txt") &
    sampler=$!
  fi
  $pin_load wrk -t1 -c"$c" -d"${duration}s" --latency "${client_headers[@]}" "$url" > "$work/wrk.txt" 2>&1
  [ -z "$sampler" ] || wait "$sampler"
  after=$(cpu_ticks "$measured")
  load_after=$(load_cpu_jiffies)
  accepts_after=$(upstream_accepts)
  local rss
  rss=$(awk '/VmHWM/ {print $2}' "/proc/$measured/status")
  python3 - "$work/wrk.txt" "$name" "$scenario" "$c" "$rep" "$((after - before))" "$clk" "$rss" "$duration" \
    "$((accepts_after - accepts_before - 1))" "$load_before" "$load_after" "$pin_load" "$strict" >> "$results" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
name, scenario, conns, rep, ticks, clk, rss, dur, accepts, load_before, load_after, pinned, strict = sys.argv[2:]
def unit(v, u):
    return float(v) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[u]
reqs = int(re.search(r"(\d+) requests in", text).group(1))
lat = {p: unit(v, u) for p, v, u in re.findall(r"\s(50|99)(?:\.000)?%\s+([\d.]+)(us|ms|s)", text)}
bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
bad = int(bad.group(1)) if bad else 0
errors = re.search(r"Socket errors: (.*)", text)
cpu_us = int(ticks) * 1e6 / int(clk) / max(reqs, 1)
(busy0, total0), (busy1, total1) = (map(int, load_before.split())), (map(int, load_after.split()))
# CPU 0's busy share during the run: wrk and the upstream, when pinned there.
load_busy = f"{(busy1 - busy0) / max(total1 - total0, 1):.2f}" if pinned else "-"
print("\t".join(map(str, [name, scenario, conns, rep, f"{reqs / float(dur):.0f}", f"{lat.get('50', 0):.3f}",
      f"{lat.get('99', 0):.3f}", f"{cpu_us:.1f}", int(rss) // 1024, bad, (errors.group(1).strip() if errors else "-"),
      f"{int(accepts) * 1000 / max(reqs, 1):.1f}", load_busy])))
# Every answer should be the scenario's: 200s pass through, 422s and 429s
# are non-2xx to wrk. Anything else measured the wrong thing.
unexpected = bad if scenario == "ok" else reqs - bad
if reqs == 0 or unexpected:
    print(f"{name} {scenario} at {conns} connections: {reqs} requests, {unexpected} with an unexpected status",
          file=sys.stderr)
    sys.exit(3 if strict == "1" else 0)
PY
  if [ "$name" = tollgate-adaptive ]; then
    echo "tollgate-adaptive: slots in force halfway through: $(cat "$work/limit.txt")" >&2
  fi
  stop_target
  tail -n 1 "$results" >&2
}

printf 'target\tscenario\tconns\trep\treq_per_s\tp50_ms\tp99_ms\tcpu_us_per_req\tpeak_rss_mb\tnon_2xx\tsocket_errors\tupstream_conns_per_1k\tload_cpu_busy\n' > "$results"
echo "target scenario conns rep req/s p50_ms p99_ms cpu_us/req rss_mb non2xx socket_errors upstream_conns/1k_req" >&2
for c in $conns; do
  for scenario in $scenarios; do
    for rep in $(seq "$repeats"); do
      for name in $targets; do
        # The 429 case is the proxy's own answer: no direct run.
        if [ "$scenario" = limited ] && [ "$name" = direct ]; then continue; fi
        run_case "$name" "$scenario" "$c" "$rep"
      done
    done
  done
done

python3 - "$results" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
med = {}
for key in {(r["scenario"], r["conns"], r["target"]) for r in rows}:
    sel = [r for r in rows if (r["scenario"], r["conns"], r["target"]) == key]
    med[key] = {f: statistics.median(float(r[f]) for r in sel)
                for f in ("req_per_s", "p50_ms", "p99_ms", "cpu_us_per_req", "peak_rss_mb", "upstream_conns_per_1k")}
    busy = [float(r["load_cpu_busy"]) for r in sel if r["load_cpu_busy"] != "-"]
    med[key]["load_cpu_busy"] = f"{statistics.median(busy):.2f}" if busy else "-"
print()
print("| scenario | conns | target | req/s | p50 ms | p99 ms | CPU µs/req | peak RSS MB | upstream conns / 1k req | load CPU busy | CPU vs nginx | CPU vs bare | p99 vs nginx | RSS vs nginx |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for (scenario, conns, target) in sorted(med, key=lambda k: (k[0], int(k[1]), k[2])):
    m = med[(scenario, conns, target)]
    def ratio(other, field="cpu_us_per_req"):
        o = med.get((scenario, conns, other))
        return f"{m[field] / o[field]:.2f}" if o and o[field] else "-"
    print(f"| {scenario} | {conns} | {target} | {m['req_per_s']:.0f} | {m['p50_ms']:.3f} | {m['p99_ms']:.3f} | "
          f"{m['cpu_us_per_req']:.1f} | {m['peak_rss_mb']:.0f} | {m['upstream_conns_per_1k']:.1f} | {m['load_cpu_busy']} | {ratio('nginx')} | {ratio('bare')} | "
          f"{ratio('nginx', 'p99_ms')} | {ratio('nginx', 'peak_rss_mb')} |")
for conns in sorted({k[1] for k in med}, key=int):
    ok = med.get(("ok", conns, "tollgate"))
    for scenario, label in (("err", "422 normalized"), ("limited", "429 from the gateway")):
        m = med.get((scenario, conns, "tollgate"))
        if ok and m and ok["cpu_us_per_req"]:
            print(f"tollgate {label} / tollgate 200 pass-through, {conns} conns: "
                  f"{m['cpu_us_per_req'] / ok['cpu_us_per_req']:.2f}x CPU per request")
PY
echo "raw results: $results" >&2
[ -n "$out" ] || cat "$results" > /dev/null
