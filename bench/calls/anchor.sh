# Sourced by run.sh and cpu-split.sh: the Pion anchor (../shared/bench/pion-anchor, or
# PION_ANCHOR_DIR), built, and how our bridge runs under its compare.sh.

anchor_dir=${PION_ANCHOR_DIR:-../shared/bench/pion-anchor}
if [ ! -x "$anchor_dir/compare.sh" ]; then
  echo "no Pion anchor at $anchor_dir (set PION_ANCHOR_DIR)" >&2
  exit 1
fi
"$anchor_dir/build.sh" >&2

# compare.sh with the settings our bridge needs there: the echo agent answers at once (the
# anchor has no delay), media on loopback only, and logs quiet enough not to cost CPU. The
# anchor ignores them. Arguments are compare.sh's; more settings come from the environment.
compare() {
  ECHO_DELAY_MS=0 RTC_BIND_ADDRESS=127.0.0.1 LOG_LEVEL=warn "$anchor_dir/compare.sh" "$@"
}
