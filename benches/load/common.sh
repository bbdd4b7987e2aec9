# Shared by the load scripts (sourced): a scratch directory and the
# processes to stop on exit, free loopback ports, waiting for a listener,
# the tool check, the upstream and the proxies' configs.
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wait_port PORT [TRIES]: 50 ms apart (default 200 tries, 10 s).
wait_port() {
  for _ in $(seq "${2:-200}"); do
    (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0
    sleep 0.05
  done
  echo "nothing listens on $1" >&2; return 1
}

# need TOOL...: stop with a message when one is missing.
need() {
  for tool in "$@"; do
    command -v "$tool" >/dev/null || { echo "$tool is needed (scripts/deps.sh installs it)" >&2; exit 1; }
  done
}

# build_unpatched_floor release|debug: builds the bare proxy on Pingora 0.9.1
# from crates.io (benches/load/bare-unpatched: its own workspace and target
# directory, so none of vendor/ reaches it) and sets unpatched_bin.
build_unpatched_floor() {
  local target=${CARGO_TARGET_DIR:-$PWD/target}/bare-unpatched flags=(--release)
  [ "$1" = debug ] && flags=()
  cargo build "${flags[@]}" --manifest-path benches/load/bare-unpatched/Cargo.toml --target-dir "$target" >&2
  unpatched_bin=$target/$1/bare-unpatched
}

# start_upstream [PREFIX...]: the upstream NGINX (a fixed 200 and 422 JSON)
# for the whole run, started under PREFIX (e.g. taskset); sets up_port and
# up_pid.
start_upstream() {
  up_port=$(free_port)
  sed -e "s#__PREFIX__#$work#g" -e "s#__PORT__#$up_port#g" benches/load/nginx-upstream.conf > "$work/upstream.conf"
  "$@" nginx -p "$work" -c "$work/upstream.conf" -e "$work/upstream-error.log" &
  up_pid=$!
  pids+=("$up_pid")
  wait_port "$up_port"
}

# tollgate_config PORT LIMIT THREADS: $work/tollgate.toml, tollgate in
# front of the upstream with a per-IP rule of LIMIT requests a minute
# (and upstream.max_in_flight = $MAX_IN_FLIGHT when that is set, and
# upstream.adaptive_in_flight = true when $ADAPTIVE is 1).
tollgate_config() {
  sed -e "s#__PORT__#$1#g" -e "s#__ADMIN__#$(free_port)#g" -e "s#__UPSTREAM__#$up_port#g" \
    -e "s#__LIMIT__#$2#g" -e "s#__THREADS__#$3#g" benches/load/tollgate.toml > "$work/tollgate.toml"
  if [ -n "${MAX_IN_FLIGHT:-}" ]; then
    sed -i "s/^\[upstream\]\$/[upstream]\nmax_in_flight = $MAX_IN_FLIGHT/" "$work/tollgate.toml"
    grep -qx "max_in_flight = $MAX_IN_FLIGHT" "$work/tollgate.toml" ||
      { echo "no [upstream] table in benches/load/tollgate.toml for max_in_flight" >&2; exit 1; }
  fi
  if [ "${ADAPTIVE:-0}" = 1 ]; then
    sed -i "s/^\[upstream\]\$/[upstream]\nadaptive_in_flight = true/" "$work/tollgate.toml"
    grep -qx "adaptive_in_flight = true" "$work/tollgate.toml" ||
      { echo "no [upstream] table in benches/load/tollgate.toml for adaptive_in_flight" >&2; exit 1; }
  fi
}

# nginx_proxy_config PORT LIMITED: $work/proxy.conf, NGINX proxying to the
# upstream with a per-IP limit_req that never triggers, or, when LIMITED is
# 1, allows one request a minute (limit_req counts in milliseconds, so the
# pass-through case needs a burst allowance at any rate).
nginx_proxy_config() {
  local rate="1000000r/s" burst="burst=1000000 nodelay"
  if [ "$2" = 1 ]; then rate="1r/m"; burst=""; fi
  sed -e "s#__PREFIX__#$work#g" -e "s#__PORT__#$1#g" -e "s#__UPSTREAM__#$up_port#g" \
    -e "s#__RATE__#$rate#g" -e "s#__BURST__#$burst#g" benches/load/nginx-proxy.conf > "$work/proxy.conf"
}
