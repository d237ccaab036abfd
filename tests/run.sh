#!/usr/bin/env bash
# Runs every check and test of medgate on a fresh Debian 12 machine:
# installs what is missing, starts PostgreSQL if it does not answer, then
# rustfmt, clippy and the whole test suite (cargo nextest) against PostgreSQL and SQLite.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

# Debian packages the build and the tests need.
need_deb=()
for pkg in libengine-gost-openssl libssl-dev pkg-config xmlsec1 postgresql-client chromium chromium-driver; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_deb+=("$pkg")
done
if ((${#need_deb[@]})); then
  log "installing Debian packages: ${need_deb[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_deb[@]}" >/dev/null
fi

# Python peers used by the tests (reference C14N, SOAP client, FHIR model validation, the
# WebDriver client that drives Debian's chromium through the dashboard).
if ! python3 -c 'import lxml, zeep, fhir.resources, selenium' >/dev/null 2>&1; then
  log "installing Python test peers (lxml, zeep, fhir.resources, selenium)"
  python3 -m pip install -q --disable-pip-version-check lxml zeep fhir.resources selenium
fi

command -v cargo-nextest >/dev/null 2>&1 || { log "installing cargo-nextest"; cargo install --locked cargo-nextest; }

# PostgreSQL 15 on 127.0.0.1:5432 with trust auth: the store tests need it and fail without it.
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  log "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
  for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi
pg_isready -h 127.0.0.1 -p 5432 || { echo "PostgreSQL is not answering on 127.0.0.1:5432" >&2; exit 1; }
psql -h 127.0.0.1 -U postgres -d test -qtAc 'select 1' >/dev/null \
  || { echo "cannot connect to database 'test' as postgres on 127.0.0.1:5432" >&2; exit 1; }

log "rustfmt"
cargo fmt --all -- --check
log "clippy"
cargo clippy --all-targets --locked -- -D warnings
log "tests"
# Every test process writes its logs here; after the suite they are scanned for personal data.
# (Not MEDGATE_*: the gateway reads those as settings.)
export GATEWAY_TEST_LOGS="$PWD/target/test-logs"
rm -rf "$GATEWAY_TEST_LOGS"
cargo nextest run --locked --profile ci
log "the suite's logs: no personal data"
cargo nextest run --locked --profile ci --run-ignored only -E 'test(the_suites_logs_hold_no_personal_data)' --no-capture
