#!/usr/bin/env bash
# Where the relay's CPU goes, beside the Pion anchor: runs the anchor's compare.sh for our release
# bridge and for Pion (same run, 300 calls by default), samples each bridge with `perf record`
# during the steady window, and prints how much of its CPU is the kernel's (the UDP send and
# receive path, epoll, scheduling) and how much is user space (its code, its libraries, libc),
# and counts its system calls per echoed packet. Then it measures the floor: the same load through
# our media thread's socket loop with no SRTP or call logic behind it (examples/udp_floor.rs).
#
#   bench/calls/cpu-split.sh [calls]
#   RTC_FAST_RECEIVE=false RTC_FAST_SEND=false bench/calls/cpu-split.sh  # our bridge with str0m
#                                  # carrying the audio, its fast paths off (compare.sh passes the
#                                  # environment on; Pion ignores it)
#   PROFILE_DIR=/tmp/split bench/calls/cpu-split.sh   # also keep each bridge's perf data there and
#                                  # print our bridge's 25 hottest symbols (call graph off)
#
# Why it exists: the anchor's CPU target (ours <= 1/5 of Pion's) is a budget in cores, and the
# kernel's share of moving the datagrams comes out of it before any of our work does. The BUDGET
# line shows what is left for everything else (SRTP, RTP, demultiplexing, timers) per echoed
# packet. docs/performance.md records the results and what they mean for the target.
set -euo pipefail
cd "$(dirname "$0")/../.."

calls=${1:-300}
target=${CARGO_TARGET_DIR:-target}
if ! command -v perf >/dev/null; then
  scripts/install-deps.sh perf
fi
cargo build --release --locked -p whatsapp-bridge --bins --example udp_floor >&2
. bench/calls/anchor.sh
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The cores a RESULT or FLOOR line in file $1 says its process used.
cpu_of() { sed -E 's/.* cpu=([0-9.]+)cores.*/\1/' "$1"; }

# compare.sh ramps at 20 calls/s, then streams for 20 s with every call up: sample 10 s of that.
ramp=$(( calls / 20 ))
split() { # label process-name compare.sh-arguments...
  local label=$1 name=$2
  shift 2
  compare -n "$calls" -l "$label" "$@" 2>/dev/null | grep '^RESULT' >"$work/$label.result" &
  local run=$!
  sleep $(( ramp + 7 ))
  local pid
  pid=$(pgrep -x "$name" | head -1)
  # System calls are counted beside the sample: each is a kernel entry and exit, which the
  # batched socket reads and writes exist to save.
  perf stat -x, -e raw_syscalls:sys_enter -p "$pid" -o "$work/$label.syscalls" -- sleep 10 >/dev/null 2>&1 &
  local counting=$!
  perf record -F 1999 -p "$pid" -o "$work/$label.data" -- sleep 10 >/dev/null 2>&1
  wait "$counting" || true
  wait "$run" || true
  local cpu kernel syscalls
  cpu=$(cpu_of "$work/$label.result")
  kernel=$(perf report -i "$work/$label.data" --sort dso 2>/dev/null |
    awk '/\[kernel.kallsyms\]/ { gsub("%", "", $1); print $1 }')
  syscalls=$(awk -F, '/raw_syscalls:sys_enter/ { print $1 }' "$work/$label.syscalls")
  cat "$work/$label.result"
  awk -v l="$label" -v c="$cpu" -v k="${kernel:-0}" -v s="${syscalls:-0}" -v pps=$(( calls * 50 )) 'BEGIN {
    printf "SPLIT %s: cpu=%.3f cores, kernel %.1f%% = %.3f cores (%.1f us per echoed packet), user space %.3f cores (%.1f us per echoed packet), %.2f system calls per echoed packet\n",
      l, c, k, c * k / 100, c * k / 100 / pps * 1e6, c * (1 - k / 100), c * (1 - k / 100) / pps * 1e6, s / 10 / pps }' |
    tee "$work/$label.split"
  if [ -n "${PROFILE_DIR:-}" ]; then
    mkdir -p "$PROFILE_DIR"
    cp "$work/$label.data" "$PROFILE_DIR/$label.data"
  fi
}

# pgrep matches the kernel's process name, which is cut to 15 characters.
split ours whatsapp-bridge "$target/release/whatsapp-bridge"
split pion pion-echo-bridg pion
# The floor: the same datagrams through our media thread's socket loop with nothing behind it
# (examples/udp_floor.rs), what any bridge built like ours pays before its first instruction.
"$target/release/examples/udp_floor" "$calls" 20 | tee "$work/floor.result"

ours_kernel=$(sed -E 's/.*= ([0-9.]+) cores \(.*user space.*/\1/' "$work/ours.split")
pion_cpu=$(cpu_of "$work/pion.result")
awk -v p="$pion_cpu" -v k="$ours_kernel" -v pps=$(( calls * 50 )) 'BEGIN {
  b = p / 5
  printf "BUDGET 1/5 of Pion = %.3f cores; our kernel share alone = %.3f cores; left for all user-space work: %.3f cores = %.1f us per echoed packet\n",
    b, k, b - k, (b - k) / pps * 1e6 }'
awk -v p="$pion_cpu" -v f="$(cpu_of "$work/floor.result")" -v o="$(cpu_of "$work/ours.result")" 'BEGIN {
  printf "RATIO ours/pion=%.3f floor/pion=%.3f (target for ours <= 0.2); ours above the floor: %.3f cores\n",
    o / p, f / p, o - f }'
if [ -n "${PROFILE_DIR:-}" ]; then
  echo "HOT ours (perf report -i $PROFILE_DIR/ours.data):"
  perf report -i "$PROFILE_DIR/ours.data" --sort sym --no-children 2>/dev/null |
    grep -v '^#' | grep -v '^$' | head -25 || true # head closes the pipe early
fi
