#!/usr/bin/env bash
# The whole test suite from scratch: set up the venv, make sure PostgreSQL runs, lint, type-check, test.
# Usage: bash scripts/test.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

# The PostgreSQL tests need the local server (127.0.0.1:5432); started if stopped.
bash scripts/start-postgres.sh

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
# child processes, so more workers than cores shorten the wall time (measured: -n 2 3m50s,
# -n 4 2m55s, -n 6 2m33s on a quiet 2-core machine). $PYTEST_WORKERS overrides it (.ci/run,
# which runs the minimums' suite beside this one, gives each three).
# One test at a time per worker (--maxschedchunk 1), slowest first (tests/conftest.py), so
# the run does not end with one worker alone on a long test.
# Bytecode is written even where $PYTHONDONTWRITEBYTECODE is set (as on CI's machines): the
# workers and the hundreds of `python -m etl` processes the tests start then load etl/,
# reports/ and the tests compiled once (collecting the suite: about 5 -> 3 s of CPU a worker).
unset PYTHONDONTWRITEBYTECODE
.venv/bin/python -m pytest -n "${PYTEST_WORKERS:-6}" --maxschedchunk 1 "$@"
