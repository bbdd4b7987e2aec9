#!/usr/bin/env bash
# Third-party attack tools against tollgate on loopback, with a probe client
# measuring what an ordinary client sees meanwhile (docs/security.md has the
# figures of a run):
#
#   1. slowhttptest -H (slowloris): CONNS connections that send a header
#      line every 10 s and never finish their head;
#   2. slowhttptest -X (slow read): CONNS connections that ask for a 1 MB
#      body and read it a few bytes at a time;
#   3. h2load over TLS: HTTP/2 load through [server.tls] (ALPN h2), to show
#      the TLS listener under load.
#
# Usage: benches/attack/run.sh [CONNS] [SECONDS]    (defaults 1000 30)
# Needs slowhttptest, h2load (nghttp2-client), curl, openssl: scripts/deps.sh
# installs them. Builds release. Traffic stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/../.."
conns=${1:-1000}
secs=${2:-30}
for tool in slowhttptest h2load curl openssl python3; do
  command -v "$tool" >/dev/null || { echo "$tool missing: run scripts/deps.sh" >&2; exit 1; }
done
cargo build --release --bin tollgate >&2
bin=${CARGO_TARGET_DIR:-target}/release/tollgate
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || ulimit -n 8192 2>/dev/null || true

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
up_port=$(port); gw_port=$(port); tls_port=$(port); admin_port=$(port)

# A private CA and a leaf for localhost.
(cd "$work" &&
  openssl req -x509 -newkey rsa:2048 -nodes -days 1 -keyout ca.key -out ca.pem -subj "/CN=attack CA" 2>/dev/null &&
  openssl req -newkey rsa:2048 -nodes -keyout tls.key -out tls.csr -subj "/CN=localhost" 2>/dev/null &&
  printf 'subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n' > ext &&
  openssl x509 -req -in tls.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -extfile ext -out tls.crt 2>/dev/null)

cat > "$work/tollgate.toml" <<EOF
# The defaults of docs/configuration.md, but for the ports.
[server]
listen = "127.0.0.1:$gw_port"
admin_listen = "127.0.0.1:$admin_port"
upgrade_sock = "$work/upgrade.sock"
[server.tls]
listen = "127.0.0.1:$tls_port"
cert_file = "$work/tls.crt"
key_file = "$work/tls.key"
[upstream]
address = "127.0.0.1:$up_port"
EOF

"$bin" demo-upstream --listen "127.0.0.1:$up_port" >/dev/null 2>&1 & pids+=($!)
TOLLGATE_LOG=error "$bin" --config "$work/tollgate.toml" 2>"$work/gw.log" & pids+=($!)
for _ in $(seq 50); do curl -fs "http://127.0.0.1:$admin_port/readyz" >/dev/null && break; sleep 0.1; done

# probe SECONDS: one GET /hello every 100 ms; prints count, p50, p99, max (ms)
# and how many failed.
probe() {
  python3 - "$gw_port" "$1" <<'PY'
import socket, sys, time
port, secs = int(sys.argv[1]), float(sys.argv[2])
times, failed, end = [], 0, time.time() + secs
while time.time() < end:
    t = time.time()
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"GET /hello HTTP/1.1\r\nHost: probe\r\nUser-Agent: probe/1\r\nAccept: */*\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            d = s.recv(65536)
            if not d: break
            data += d
        s.close()
        ok = data.startswith(b"HTTP/1.1 200")
    except OSError:
        ok = False
    if ok: times.append((time.time() - t) * 1000)
    else: failed += 1
    time.sleep(0.1)
times.sort()
q = lambda p: times[min(len(times) - 1, int(p * len(times)))] if times else float("nan")
print(f"probe: {len(times)} ok, {failed} failed, p50 {q(0.5):.1f} ms, p99 {q(0.99):.1f} ms, max {times[-1] if times else float('nan'):.1f} ms")
PY
}

metric() { curl -fs "http://127.0.0.1:$admin_port/metrics" | awk -v s="$1" '$1==s {print $2}'; }

echo "== slowloris: slowhttptest -H -c $conns, $secs s (header_timeout 10s)"
slowhttptest -H -c "$conns" -r 200 -i 10 -l "$secs" -p 3 -u "http://127.0.0.1:$gw_port/hello" -g -o "$work/slowloris" >"$work/slowloris.out" 2>&1 &
attack=$!
probe "$secs"
wait "$attack" || true
grep -a "Test ended\|Exit status" "$work/slowloris.out" | sed 's/\x1b\[[0-9;]*m//g' || true
echo "connections open per second (slowhttptest's own count): $(tail -n +2 "$work/slowloris.csv" | cut -d, -f4 | tr '\n' ' ')"
echo "cut with 408: $(metric 'tollgate_client_errors_total{kind="header_timeout"}')"

echo "== slow read: slowhttptest -X -c $conns, $secs s, GET /bytes?n=1000000"
slowhttptest -X -c "$conns" -r 200 -w 512 -y 1024 -n 5 -z 32 -k 3 -l "$secs" -p 3 \
  -u "http://127.0.0.1:$gw_port/bytes?n=1000000" -g -o "$work/slowread" >"$work/slowread.out" 2>&1 &
attack=$!
probe "$secs"
wait "$attack" || true
grep -a "Test ended\|Exit status" "$work/slowread.out" | sed 's/\x1b\[[0-9;]*m//g' || true
echo "peak RSS of tollgate (kB): $(grep VmHWM /proc/"${pids[1]}"/status | awk '{print $2}')"

# 100 streams in flight: more at once opens that many upstream connections
# in a burst, past the demo upstream's accept backlog (SYNs retried after
# 1 s, which meets the 1 s upstream connect timeout).
echo "== h2load over TLS: 20000 requests, 10 connections, 10 streams each"
h2load -n 20000 -c 10 -m 10 "https://localhost:$tls_port/hello" 2>&1 \
  | grep -E "^(finished in|requests:|status codes:|traffic:|time for request:)|Protocol:" || true
