#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, then every test (unit, property and
# integration tests; storage tests on SQLite and on Postgres; the test phone in headless
# Chromium and Firefox).
#
#   scripts/test.sh            everything
#   scripts/test.sh -- <args>  extra arguments for cargo nextest (a filter, --no-fail-fast, ...)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/postgres.sh
source scripts/python-peers.sh

if [ "${1:-}" = "--" ]; then shift; fi

echo "==> Postgres for the storage tests" >&2
ensure_postgres

echo "==> Python test peers (aiortc)" >&2
ensure_python_peers

echo "==> Chromium, Firefox and their WebDriver servers (the test phone's browser tests)" >&2
scripts/install-deps.sh browser
# geckodriver is not packaged by Debian; crates.io has it (built once, then kept in ~/.cargo/bin).
if [ -z "${GECKODRIVER:-}" ] && [ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/geckodriver" ]; then
  cargo install geckodriver --locked --version 0.37.1 --quiet
fi

echo "==> cargo fmt --check" >&2
cargo fmt --all -- --check

echo "==> cargo clippy" >&2
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "==> tests" >&2
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast "$@"
  # nextest does not run doctests.
  cargo test --workspace --locked --doc --quiet
else
  cargo test --workspace --locked --no-fail-fast "$@"
fi
