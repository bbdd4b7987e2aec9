#!/usr/bin/env bash
# All the tests: formatting, lints, unit, property and end-to-end tests
# (these start the real binary and its demo upstream on loopback ports).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
# Doc links that point at moved or private items fail here, not later.
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --quiet
cargo test --all-targets
# The load harness in smoke mode (2 s per case, debug build): it must run,
# its figures are not judged here (docs/performance.md has real ones).
command -v wrk >/dev/null || { echo "wrk missing" >&2; exit 1; }
benches/load/run.sh --smoke --targets "direct nginx bare bare-unpatched tollgate tollgate-inflight-8 tollgate-adaptive" > /dev/null
SMOKE=1 benches/load/idle.sh 200 > /dev/null
SMOKE=1 benches/load/instructions.sh 200 > /dev/null
SMOKE=1 CACHE=1 benches/load/instructions_under_load.sh tollgate /ok 16 > /dev/null
# perf may be unusable where the kernel forbids sampling or has no tools.
if perf record -q -o /dev/null -e cpu-clock -- true 2>/dev/null; then
  SMOKE=1 benches/load/profile.sh tollgate 16 > /dev/null
else
  echo "benches/load/profile.sh not smoke-tested: perf cannot sample here"
fi
echo "load harness smoke: ok"
