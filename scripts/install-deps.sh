#!/usr/bin/env bash
# Installs the Debian packages the project's own scripts need, when they are missing:
#   scripts/install-deps.sh postgres   PostgreSQL server (the test suite runs every storage test on it)
#   scripts/install-deps.sh bench      wrk (the webhook benchmark's load generator)
#   scripts/install-deps.sh browser    Chromium, ChromeDriver and Firefox ESR (the test phone's browser tests)
#   scripts/install-deps.sh perf       perf (bench/calls/cpu-split.sh samples the bridges with it)
# Needs root or sudo. Does nothing for packages already installed.
set -euo pipefail

want=()
for group in "$@"; do
  case "$group" in
    postgres) ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || want+=(postgresql postgresql-client) ;;
    bench) command -v wrk >/dev/null 2>&1 || want+=(wrk) ;;
    browser)
      [ -x "${CHROMIUM:-/usr/bin/chromium}" ] || want+=(chromium)
      [ -x "${CHROMEDRIVER:-/usr/bin/chromedriver}" ] || want+=(chromium-driver)
      [ -x "${FIREFOX:-/usr/bin/firefox-esr}" ] || want+=(firefox-esr)
      ;;
    perf) command -v perf >/dev/null 2>&1 || want+=(linux-perf) ;;
    *) echo "install-deps: unknown group '$group' (known: postgres, bench, browser, perf)" >&2; exit 2 ;;
  esac
done
[ ${#want[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
  sudo=()
elif command -v sudo >/dev/null 2>&1; then
  sudo=(sudo)
else
  echo "install-deps: need root or sudo to install: ${want[*]}" >&2
  exit 1
fi
echo "install-deps: installing ${want[*]} from Debian" >&2
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
