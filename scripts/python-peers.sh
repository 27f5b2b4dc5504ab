#!/usr/bin/env bash
# Installs the Python test peers (aiortc, an independent WebRTC stack) into .venv-peers and
# exports AIORTC_PYTHON for the interop tests. Sourced by scripts/test.sh; safe to run again
# (it reinstalls only when tests/peers/requirements.txt changed).

ensure_python_peers() {
  local root venv stamp
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  venv="$root/.venv-peers"
  stamp="$venv/.requirements"
  if [ ! -x "$venv/bin/python" ] || ! cmp -s "$root/tests/peers/requirements.txt" "$stamp"; then
    echo "Installing the Python test peers (aiortc) into .venv-peers" >&2
    command -v python3 >/dev/null 2>&1 || { echo "python3 is needed for the interop tests" >&2; exit 1; }
    python3 -m venv "$venv" || { echo "cannot create $venv (Debian: apt-get install python3-venv)" >&2; exit 1; }
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$root/tests/peers/requirements.txt" \
      || { echo "pip could not install tests/peers/requirements.txt" >&2; exit 1; }
    cp "$root/tests/peers/requirements.txt" "$stamp"
  fi
  "$venv/bin/python" -c "import aiortc" || { echo "aiortc does not import from $venv" >&2; exit 1; }
  export AIORTC_PYTHON="$venv/bin/python"
}
