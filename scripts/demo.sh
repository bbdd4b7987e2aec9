#!/usr/bin/env bash
# Quick start: build tollgate, start the demo upstream on 127.0.0.1:3000 and
# the gateway on the default config (config/tollgate.toml), in front of it.
# Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cargo build --release
bin=target/release/tollgate

$bin demo-upstream --listen 127.0.0.1:3000 &
upstream=$!
trap 'kill $upstream 2>/dev/null || true' EXIT

cat <<'TRY'

tollgate is starting on :8080 (admin on 127.0.0.1:9090). Try:

  curl -i localhost:8080/hello                      # proxied 200, X-RateLimit-* headers
  curl -i localhost:8080/errors/flat                # flat error_code/error_message -> envelope
  curl -i localhost:8080/errors/validation          # message + validation_errors -> details
  curl -i localhost:8080/errors/problem             # RFC 9457 problem+json -> envelope
  curl -i -H 'accept: application/problem+json' localhost:8080/errors/flat
                                                    # any error as RFC 9457 problem details
  curl -i localhost:8080/errors/html                # HTML from a load balancer
  curl -i localhost:8080/errors/gzip                # gzip-compressed error body
  for i in $(seq 25); do curl -s -o /dev/null -w '%{http_code} ' -X POST localhost:8080/v1/auth/login; done; echo
                                                    # 20 x 200, then 429s
  curl -s localhost:9090/metrics | grep ^tollgate_  # Prometheus metrics

TRY
$bin --config config/tollgate.toml
