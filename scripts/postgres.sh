#!/usr/bin/env bash
# Makes sure a Postgres for the tests answers at TEST_POSTGRES_URL (default: the local server
# on 127.0.0.1:5432, user postgres, trust auth). Sourced by scripts/test.sh and the benchmark.
#
# If nothing answers there it starts one: the machine's Debian cluster if there is one, else a
# throwaway cluster in target/test-postgres (installing PostgreSQL from Debian if needed). It
# never lets the tests skip: when it cannot get a Postgres it says why and fails.

pg_default_url="postgres://postgres@127.0.0.1:5432/postgres"

pg_reachable() {
  # Bash's /dev/tcp needs no client tools.
  (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null
}

pg_fail() {
  echo "scripts/postgres.sh: $*" >&2
  echo "The test suite runs every storage test on Postgres and does not skip them." >&2
  echo "Start a Postgres on 127.0.0.1:5432 (user postgres, trust auth), or set TEST_POSTGRES_URL." >&2
  exit 1
}

ensure_postgres() {
  if [ -n "${TEST_POSTGRES_URL:-}" ] && [ "$TEST_POSTGRES_URL" != "$pg_default_url" ]; then
    # A server chosen by the caller: use it as it is; the tests fail loudly if it is not there.
    return 0
  fi
  export TEST_POSTGRES_URL="$pg_default_url"
  pg_reachable && return 0

  echo "Postgres is not answering on 127.0.0.1:5432; starting one." >&2
  if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    "$(dirname "${BASH_SOURCE[0]}")/install-deps.sh" postgres || pg_fail "PostgreSQL is not installed and could not be installed."
  fi

  # The machine's own cluster, if Debian configured one.
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    for version in $(ls /etc/postgresql); do
      pg_ctlcluster --skip-systemctl-redirect "$version" main start >/dev/null 2>&1 || true
    done
    for _ in $(seq 1 50); do pg_reachable && return 0; sleep 0.2; done
  fi

  # A throwaway cluster of our own, trust auth, on loopback only.
  local bin data run_as=()
  bin=$(dirname "$(ls -d /usr/lib/postgresql/*/bin/postgres | sort -V | tail -n 1)")
  data="$(pwd)/target/test-postgres"
  if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    run_as=(runuser -u postgres --)
  fi
  if [ ! -f "$data/PG_VERSION" ]; then
    mkdir -p "$data"
    [ "$(id -u)" -eq 0 ] && chown postgres "$data"
    "${run_as[@]}" "$bin/initdb" -D "$data" -U postgres --auth=trust >/dev/null || pg_fail "initdb failed in $data"
  fi
  "${run_as[@]}" "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w \
    -o "-c listen_addresses=127.0.0.1 -c port=5432 -c unix_socket_directories=$data" start >/dev/null \
    || pg_fail "could not start Postgres from $data (see $data/server.log)"
  pg_reachable || pg_fail "Postgres started but does not answer on 127.0.0.1:5432"
}
