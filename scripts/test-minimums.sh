#!/usr/bin/env bash
# The suite against exactly the lower bounds pyproject.toml declares: a fresh virtual
# environment with .ci/minimums.txt as pip constraints, a check that every pin took, pytest.
# Usage: bash scripts/test-minimums.sh [extra pytest args]   ($MINIMUMS_VENV: where, default
# ./.venv-minimums, recreated each run; $PYTHON: the interpreter to build it from)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${MINIMUMS_VENV:-.venv-minimums}

echo "== fresh venv $VENV at the declared minimums"
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
log="$VENV/pip.log"
# pip's output (build warnings and all) goes to a log, shown only when the install fails.
# The dev extra, as scripts/setup.sh installs it; every bound it declares is pinned but
# ruff's, mypy's and types-requests' (linters, not run here).
if ! { "$VENV/bin/python" -m pip install --quiet --upgrade pip &&
       "$VENV/bin/python" -m pip install --quiet -c .ci/minimums.txt -e '.[dev]'; } >"$log" 2>&1
then
  grep -v '^WARNING: Location' "$log" >&2 || true
  echo "installing the minimums failed (full log: $log)" >&2
  exit 1
fi

echo "== installed versions against .ci/minimums.txt"
"$VENV/bin/python" - <<'PY'
import sys
from importlib.metadata import PackageNotFoundError, version

wrong = []
for line in open(".ci/minimums.txt"):
    line = line.split("#", 1)[0].strip()
    if not line:
        continue
    name, pinned = (part.strip() for part in line.split("=="))
    try:
        got = version(name)
    except PackageNotFoundError:
        got = "missing"
    if got != pinned:
        wrong.append(f"{name}: pinned {pinned}, installed {got}")
if wrong:
    sys.exit("minimums not installed: " + "; ".join(wrong))
print("every pin installed")
PY

echo "== pytest at the minimums"
# As many workers as scripts/test.sh uses, for the same reason (see there).
"$VENV/bin/python" -m pytest -n "${PYTEST_WORKERS:-6}" -p no:cacheprovider "$@"
