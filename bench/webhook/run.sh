#!/usr/bin/env bash
# Webhook ingestion benchmark: signed message-status webhooks against the release build, on
# SQLite and on Postgres, with wrk on loopback. Prints one result line per backend and the
# idle RSS; docs/performance.md records the numbers.
#
#   bench/webhook/run.sh [duration-seconds] [connections]
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/postgres.sh
scripts/install-deps.sh bench

duration=${1:-20}
connections=${2:-32}
threads=2
secret="bench-secret"
target=${CARGO_TARGET_DIR:-target}
work=$(mktemp -d)
trap 'kill $server 2>/dev/null || true; rm -rf "$work"' EXIT

cargo build --release --locked -p whatsapp-bridge --bin whatsapp-bridge --example webhook_payloads >&2
# Enough distinct events that no request of the run is a redelivery (warm-up has its own).
"$target/release/examples/webhook_payloads" $(( duration * 15000 )) "$secret" "$work/payloads.txt" 0
"$target/release/examples/webhook_payloads" 60000 "$secret" "$work/warmup.txt" 1000000000

run_backend() {
  local name=$1 url=$2 port
  port=$(( 20000 + RANDOM % 20000 ))
  DATABASE_URL="$url" PORT=$port BIND_ADDRESS=127.0.0.1 WHATSAPP_APP_SECRET=$secret \
    WHATSAPP_PHONE_NUMBER_ID=106540352242922 WHATSAPP_ACCESS_TOKEN=bench \
    LOG_LEVEL=warn LOG_FORMAT=json INSTANCE_ID=bench \
    "$target/release/whatsapp-bridge" >"$work/$name.log" 2>&1 &
  server=$!
  for _ in $(seq 1 100); do
    curl -fs "http://127.0.0.1:$port/ready" >/dev/null 2>&1 && break
    sleep 0.1
  done
  sleep 1
  local idle_rss
  idle_rss=$(awk '/VmRSS/ {print $2}' /proc/$server/status)
  # Warm up connections and the page cache, then measure.
  PAYLOADS="$work/warmup.txt" THREADS=$threads wrk -t$threads -c$connections -d3s \
    -s bench/webhook/signed.lua "http://127.0.0.1:$port" >/dev/null
  local result
  result=$(PAYLOADS="$work/payloads.txt" THREADS=$threads wrk -t$threads -c$connections -d${duration}s \
    -s bench/webhook/signed.lua --timeout 10s "http://127.0.0.1:$port" | grep '^RESULT')
  local loaded_rss
  loaded_rss=$(awk '/VmRSS/ {print $2}' /proc/$server/status)
  # Let the router finish, then count what was stored and processed.
  sleep 2
  local stored
  stored=$(curl -fs "http://127.0.0.1:$port/metrics" | awk '/^whatsapp_bridge_webhook_events_total\{kind="message_status",outcome="(stored|ignored)"\}/ {printf "%s=%s ", $1, $2}')
  kill -TERM $server
  wait $server || true
  echo "$name $result idle_rss_kb=$idle_rss loaded_rss_kb=$loaded_rss"
  echo "  events: $stored" | sed 's/whatsapp_bridge_webhook_events_total//g'
  echo "  server log: $(grep -c '"level":"WARN"' "$work/$name.log" || true) warnings, $(grep -c '"level":"ERROR"' "$work/$name.log" || true) errors"
  grep -h '"level":"\(WARN\|ERROR\)"' "$work/$name.log" | grep -v 'off until configured' | cut -c1-300 | sort | uniq -c | sort -rn | head -5 || true
}

run_backend sqlite "sqlite://$work/bench.db"

ensure_postgres
db="wb_bench_$$"
psql "$TEST_POSTGRES_URL" -qc "create database $db" >/dev/null
run_backend postgres "postgres://postgres@127.0.0.1:5432/$db"
psql "$TEST_POSTGRES_URL" -qc "drop database $db with (force)" >/dev/null

echo "machine: $(nproc) cores, $(uname -r); wrk -t$threads -c$connections -d${duration}s"
