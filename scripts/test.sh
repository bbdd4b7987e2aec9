#!/usr/bin/env bash
# All the tests: formatting, lints, unit, property and end-to-end tests
# (these start the real binary and its demo upstream on loopback ports).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
cargo test --all-targets
