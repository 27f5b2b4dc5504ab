#!/usr/bin/env bash
# Call relay benchmark: N concurrent WhatsApp calls through the release build's echo agent on
# loopback, measured by our load generator (crates/loadgen) and, with --anchor, side by side with
# the Pion anchor in the same run (../shared/bench/pion-anchor, its compare.sh and callgen).
# docs/performance.md records the numbers.
#
#   bench/calls/run.sh [calls] [--anchor]        # default 500 calls, 20 s of streaming
#   bench/calls/run.sh [calls] --model           # full calls: the realtime voice agent with a fake
#                                                # model leg per call (default 300 calls)
#
# With --model, loadgen runs the bridge with VOICE_AGENT=realtime against a fake Realtime API and
# plays every call's model too (greets at once, then echoes the caller), so each call has four
# media streams through the bridge.
#
# Each size runs four times: as configured by default, with RTC_REALTIME_PRIORITY=true, and with
# str0m carrying the audio (RTC_FAST_RECEIVE=false RTC_FAST_SEND=false: the bridge's fast paths
# off) at normal and real-time priority.
# Results are appended as JSON lines to bench/calls/results.jsonl (ignored by git) unless
# RESULTS=path is set.
set -euo pipefail
cd "$(dirname "$0")/../.."

calls=
anchor=false
model=false
for arg in "$@"; do
  case $arg in
    --anchor) anchor=true ;;
    --model) model=true ;;
    ''|*[!0-9]*) echo "usage: $0 [calls] [--anchor] [--model]" >&2; exit 2 ;;
    *) calls=$arg ;;
  esac
done
if $model; then
  calls=${calls:-300}
  mode=(--model)
  kind="full calls (model leg each)"
  name="ours model"
else
  calls=${calls:-500}
  mode=()
  kind="calls"
  name="ours"
fi
target=${CARGO_TARGET_DIR:-target}
results=${RESULTS:-bench/calls/results.jsonl}
duration=${DURATION:-20}
ramp=${RAMP:-25}
stamp=$(date -u +%Y-%m-%dT%H:%MZ)

cargo build --release --locked -p whatsapp-bridge -p loadgen >&2
bridge="$target/release/whatsapp-bridge"

# One loadgen run: what its label adds to "$name", then the bridge's settings (NAME=VALUE).
run() {
  local label=$1
  shift
  local settings=()
  for setting in "$@"; do settings+=(--bridge-env "$setting"); done
  echo "== loadgen: $calls $kind, ${duration}s streaming, ramp $ramp/s${*:+, with $*}" >&2
  # ${array[@]+...}: an empty array under `set -u` (bash before 4.4 calls it unbound).
  "$target/release/loadgen" --calls "$calls" --duration "$duration" --ramp "$ramp" ${mode[@]+"${mode[@]}"} \
    --bridge "$bridge" ${settings[@]+"${settings[@]}"} \
    --label "$name$label $stamp" --output "$results" >/dev/null
}

run ""
# The same with the media thread at real-time priority, where the system allows it (the
# bridge's log says if it does not: see docs/performance.md).
run " realtime" RTC_REALTIME_PRIORITY=true
# And with str0m doing the SRTP of the audio, the engine's fast paths off (RTC_FAST_RECEIVE,
# RTC_FAST_SEND: docs/performance.md), at normal and at real-time priority.
for priority in false true; do
  run " str0m realtime=$priority" RTC_FAST_RECEIVE=false RTC_FAST_SEND=false RTC_REALTIME_PRIORITY=$priority
done

if $anchor; then
  . bench/calls/anchor.sh
  # The anchor's README: 300 calls, ours and Pion one after the other in the same run; only
  # ratios from one run mean anything on a shared machine.
  anchor_calls=${ANCHOR_CALLS:-300}
  echo "== Pion anchor comparison: $anchor_calls calls" >&2
  jsonl="${results%.jsonl}.anchor.jsonl"
  ours=$(compare -n "$anchor_calls" -l ours -o "$jsonl" "$bridge" | grep '^RESULT')
  slow=$(RTC_FAST_RECEIVE=false RTC_FAST_SEND=false compare -n "$anchor_calls" -l ours-str0m -o "$jsonl" "$bridge" | grep '^RESULT')
  pion=$(compare -n "$anchor_calls" -l pion -o "$jsonl" pion | grep '^RESULT')
  echo "$ours"
  echo "$slow"
  echo "$pion"
  field() { sed -E "s/.* $1=([0-9.]+).*/\1/" <<<"$2"; }
  awk -v oc="$(field cpu "$ours")" -v pc="$(field cpu "$pion")" \
      -v orss="$(field rss_per_call "$ours")" -v prss="$(field rss_per_call "$pion")" \
      -v oa="$(field answer_p99 "$ours")" -v pa="$(field answer_p99 "$pion")" \
      -v sc="$(field cpu "$slow")" \
      'BEGIN { printf "RATIO cpu=%.3f (str0m paths: %.3f; target <= 0.2) rss_per_call=%.3f (target <= 0.333) answer_p99 ours %s ms vs pion %s ms\n", oc/pc, sc/pc, orss/prss, oa, pa }'
fi
