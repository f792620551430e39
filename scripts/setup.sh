#!/usr/bin/env bash
# Creates ./.venv (if needed) and installs usage-etl with its dev extra (which pulls in the
# postgres and notebooks extras: see pyproject.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.usage-etl-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  # pip and setuptools talk a lot while building; their words are kept in a log, shown on failure.
  log=.venv/pip-install.log
  if ! { .venv/bin/python -m pip install --quiet --upgrade pip \
         && .venv/bin/python -m pip install --quiet -e '.[dev]'; } > "$log" 2>&1; then
    cat "$log" >&2
    echo "setup: installing usage-etl into .venv failed (log above, also in $log)" >&2
    exit 1
  fi
  .venv/bin/python -c "import etl, reports, sqlalchemy, pandas, psycopg" 
  touch "$stamp"
fi
