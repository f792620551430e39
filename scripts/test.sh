#!/usr/bin/env bash
# The whole test suite from scratch: set up the venv, make sure PostgreSQL runs, lint, type-check, test.
# Usage: bash scripts/test.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

# The PostgreSQL tests need the local server (127.0.0.1:5432); start it if it is installed but stopped.
if command -v pg_isready >/dev/null 2>&1 && ! pg_isready -q -h 127.0.0.1 -p 5432; then
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    echo "starting PostgreSQL..."
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
    for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
  fi
fi

echo "== ruff"
.venv/bin/ruff check .
# mypy and lint-imports each use one core: side by side; mypy's words shown after.
mkdir -p .cache
.venv/bin/mypy > .cache/mypy.log 2>&1 & mypy=$!
echo "== import contracts (docs/architecture.md)"
lint_status=0
.venv/bin/lint-imports || lint_status=$?
echo "== mypy"
mypy_status=0
wait "$mypy" || mypy_status=$?
cat .cache/mypy.log
[ "$lint_status" = 0 ] && [ "$mypy_status" = 0 ] || exit 1
echo "== pytest"
# Six workers on two cores: most of the suite's time is spent waiting on daemons, sockets and
# child processes, so more workers than cores halve the wall time (measured: -n 2 3m50s,
# -n 4 2m55s, -n 6 2m33s on a quiet 2-core machine). $PYTEST_WORKERS overrides it.
# One test at a time per worker (--maxschedchunk 1), slowest first (tests/conftest.py), so
# the run does not end with one worker alone on a long test.
.venv/bin/python -m pytest -n "${PYTEST_WORKERS:-6}" --maxschedchunk 1 "$@"
