#!/usr/bin/env bash
# Instructions per request, tollgate against the bare Pingora proxy, counted
# by valgrind's callgrind: deterministic where the wrk harness is noisy, and
# it says where tollgate's extra cost goes. User space only (no kernel).
#
# Usage: [CLIENT=realistic|minimal] [INFLIGHT=one|per-connection|pipelined]
#        benches/load/instructions.sh [REQUESTS] [PATH] [LIMIT]
#   defaults 4000 /ok 1000000000; LIMIT is tollgate's per-IP rule: with 1,
#   every counted request is a 429 answered by tollgate itself, and the
#   bare proxy answers each with an empty 429 of its own (`refuse`): the
#   framework's floor for a response the proxy makes itself.
# NGINX (the harness's proxy config; limit_req at 1r/m when LIMIT is 1) is
# counted too, as the reference an operator would otherwise deploy.
# Set BARE_TIMEOUTS=1 to give the bare proxy tollgate's default timeouts and
# limits: the upstream's, and the client limits (its idle timeout costs a
# timer for every wait for a next request, as tollgate's does).
# Set LOGGED=1 to count both with their default per-request logging on:
# tollgate's access line for each non-2xx, NGINX's error-log line for each
# limit_req rejection (by default both are off here, as in the harness).
# Set KEEP_CALLGRIND=DIR to keep the callgrind files there for
# callgrind_annotate. Set TOLLGATE_ONLY=1 to count tollgate alone (quicker
# A/B of one change; no ratios), and TOLLGATE_BIN=PATH to count that build
# of tollgate instead of this tree's. SMOKE=1 builds debug (CI runs it so it
# cannot rot).
# Needs valgrind (callgrind_annotate), nginx and python3; builds release.
set -euo pipefail
cd "$(dirname "$0")/../.."
requests=${1:-4000}
path=${2:-/ok}
limit=${3:-1000000000}
client=${CLIENT:-realistic}
inflight=${INFLIGHT:-one}
. benches/load/common.sh
need valgrind callgrind_annotate callgrind_control nginx python3
# SMOKE=1 (CI): debug builds, so that the script is run, not judged.
profile=release; [ -n "${SMOKE:-}" ] && profile=debug
build=(--release); [ "$profile" = debug ] && build=()
cargo build "${build[@]}" --bin tollgate --example bare_proxy >&2
dir=${CARGO_TARGET_DIR:-target}/$profile
build_unpatched_floor "$profile"

# Keep-alive client: REQUESTS requests over 4 connections.
#   CLIENT=realistic (default): the headers a client library sends (Host,
#     User-Agent, Accept, Accept-Encoding, Connection), as python-requests;
#   CLIENT=minimal: Host only (the harness's figures before session 9).
#   INFLIGHT=one (default): one request in flight at a time, the
#     connections taken in turn; per-connection: one in flight on each of
#     the 4 at once; pipelined: 4 requests written at once on each.
cat > "$work/client.py" <<'PY'
import socket, sys
port, n, path, client, inflight = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
conns = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
if client == "minimal":
    req = f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
else:
    req = (f"GET {path} HTTP/1.1\r\nHost: bench\r\nUser-Agent: python-requests/2.32.3\r\n"
           "Accept-Encoding: gzip, deflate, br\r\nAccept: */*\r\nConnection: keep-alive\r\n\r\n").encode()
def recv(s):
    data = s.recv(65536)
    if not data:
        raise SystemExit("the proxy closed the connection")
    return data
def answer(s, buf):
    while b"\r\n\r\n" not in buf:
        buf += recv(s)
    head, rest = buf.split(b"\r\n\r\n", 1)
    h = head.decode("latin-1").lower()
    if "content-length:" in h:
        n = int(h.split("content-length:")[1].split("\r\n")[0])
        while len(rest) < n:
            rest += recv(s)
        return rest[n:]
    while b"0\r\n\r\n" not in rest:
        rest += recv(s)
    return rest.split(b"0\r\n\r\n", 1)[1]
bufs = [b""] * len(conns)
if inflight == "one":
    for i in range(n):
        s = conns[i % len(conns)]
        s.sendall(req)
        bufs[i % len(conns)] = answer(s, bufs[i % len(conns)])
else:
    depth = 4 if inflight == "pipelined" else 1
    for _ in range(n // (len(conns) * depth)):
        for s in conns:
            s.sendall(req * depth)
        for i, s in enumerate(conns):
            for _ in range(depth):
                bufs[i] = answer(s, bufs[i])
PY

start_upstream

# count NAME PORT -- CMD...: run CMD under callgrind, warm up, zero, send, dump.
count() {
  local name=$1 port=$2; shift 3
  valgrind --tool=callgrind --callgrind-out-file="$work/cg.$name" "$@" 2>/dev/null &
  local pid=$!
  pids+=("$pid")
  wait_port "$port" 600
  python3 "$work/client.py" "$port" 400 "$path" "$client" "$inflight"
  callgrind_control -z "$pid" >/dev/null
  python3 "$work/client.py" "$port" "$requests" "$path" "$client" "$inflight"
  callgrind_control -d "$pid" >/dev/null
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  local total
  total=$(grep -h '^summary:' "$work"/cg."$name".* | tail -n 1 | awk '{print $2}')
  echo "$name $total" >> "$work/totals"
}

if [ -z "${TOLLGATE_ONLY:-}" ]; then
  bare_port=$(free_port)
  bare_refuse=""
  [ "$limit" = 1 ] && bare_refuse=refuse
  count bare "$bare_port" -- "$dir/examples/bare_proxy" "127.0.0.1:$bare_port" "127.0.0.1:$up_port" 1 ${BARE_TIMEOUTS:+timeouts} $bare_refuse
  unpatched_port=$(free_port)
  count bare_unpatched "$unpatched_port" -- "$unpatched_bin" "127.0.0.1:$unpatched_port" "127.0.0.1:$up_port" 1 $bare_refuse
fi
tg_port=$(free_port)
tollgate_config "$tg_port" "$limit" 1
if [ -n "${LOGGED:-}" ]; then tollgate_log=info; else tollgate_log=error; fi
TOLLGATE_LOG=$tollgate_log count tollgate "$tg_port" -- "${TOLLGATE_BIN:-$dir/tollgate}" --config "$work/tollgate.toml"
# NGINX as the harness runs it (limit_req at 1r/m when LIMIT is 1), without
# its master process so that the counted process is the one serving.
if [ -z "${TOLLGATE_ONLY:-}" ]; then
  nginx_port=$(free_port)
  nginx_proxy_config "$nginx_port" "$limit"
  [ -n "${LOGGED:-}" ] && sed -i '/limit_req_log_level/d' "$work/proxy.conf"
  count nginx "$nginx_port" -- nginx -p "$work" -c "$work/proxy.conf" -e "$work/proxy-error.log" -g "master_process off;"
fi

if [ -n "${KEEP_CALLGRIND:-}" ]; then
  mkdir -p "$KEEP_CALLGRIND" && cp "$work"/cg.* "$KEEP_CALLGRIND"/
fi
python3 - "$work/totals" "$requests" "$client" "$inflight" <<'PY'
import sys
totals = dict(l.split() for l in open(sys.argv[1]))
n = int(sys.argv[2])
if len(totals) == 1:
    print(f"client {sys.argv[3]}, in flight {sys.argv[4]}: instructions per request: "
          f"tollgate {int(totals['tollgate']) / n:,.0f}")
    raise SystemExit
bare, unpatched, tg, ngx = (int(totals[k]) / n for k in ("bare", "bare_unpatched", "tollgate", "nginx"))
print(f"client {sys.argv[3]}, in flight {sys.argv[4]}: instructions per request: "
      f"tollgate {tg:,.0f}; bare Pingora unpatched {unpatched:,.0f} (ratio {tg / unpatched:.2f}), "
      f"patched {bare:,.0f} (ratio {tg / bare:.2f}); NGINX {ngx:,.0f} (ratio {tg / ngx:.2f})")
PY
echo "tollgate's own hooks (inclusive instructions over $requests requests):"
callgrind_annotate --inclusive=yes "$(ls "$work"/cg.tollgate.* | grep -v 'cg.tollgate$' | tail -n 1)" 2>/dev/null \
  | grep -E "gateway.rs:<tollgate::proxy::gateway::Gateway as .*ProxyHttp>::[a-z_]+::\{\{closure\}\}" \
  | sed -E 's#^( *[0-9,]+) .*ProxyHttp>::([a-z_]+)::.*#\1  \2#' | sort -u -k2,2 | sort -rn
