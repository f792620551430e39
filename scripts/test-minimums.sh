#!/usr/bin/env bash
# The suite against exactly the lower bounds pyproject.toml declares: a fresh virtual
# environment with .ci/minimums.txt as pip constraints, a check that every pin took, pytest.
#
# Installing the pinned libraries takes minutes, so they are installed once per machine into
# a cache keyed by .ci/minimums.txt, pyproject.toml's dependency tables, the Python version
# and the month (new releases of unpinned transitive dependencies get in at least monthly);
# each run makes the fresh $VENV, points it at the cached libraries (a .pth file) and
# installs usage-etl itself (editable, no dependencies) into it. MINIMUMS_CACHE=none skips
# the cache and installs everything into $VENV, as a machine's first run does.
#
# Tests marked `scale` (larger-size variants of smaller tests making the same library calls:
# tests/conftest.py's SCALE_MARKER), and those marked `variant` (a parametrized test's cases
# making the same library calls as its one unmarked case holding all their data: VARIANT_MARKER)
# are skipped here; scripts/test.sh runs them. Property tests
# draw a fifth of their examples here, at least 20 (examples in tests/factories.py).
#
# Usage: bash scripts/test-minimums.sh [extra pytest args]
#        bash scripts/test-minimums.sh --prepare   (the cache, the fresh venv and the check of
#                                                   its pins; no pytest: .ci/run does this
#                                                   in the background beside the first suite)
#        bash scripts/test-minimums.sh --prepared [extra pytest args]   (pytest only, in the
#                                                   venv a --prepare of this checkout made)
# ($MINIMUMS_VENV: where, default ./.venv-minimums, recreated each run; $PYTHON: the
# interpreter to build it from; $MINIMUMS_CACHE: the cache's folder, default
# ~/.cache/usage-etl/minimums)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${MINIMUMS_VENV:-.venv-minimums}
CACHE_ROOT=${MINIMUMS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/usage-etl/minimums}

# install DIR PIP-ARGS...: pip's output (build warnings and all) goes to DIR/pip.log, shown
# only when the install fails.
install() {
  local dir=$1 log=$1/pip.log
  shift
  if ! { "$dir/bin/python" -m pip install --quiet --upgrade pip &&
         "$dir/bin/python" -m pip install --quiet "$@"; } >"$log" 2>&1; then
    grep -v '^WARNING: Location' "$log" >&2 || true
    echo "installing the minimums failed (full log: $log)" >&2
    exit 1
  fi
}

# The dev extra, as scripts/setup.sh installs it; every bound it declares is pinned but
# ruff's, mypy's and types-requests' (linters, not run here).
if [ "$CACHE_ROOT" = none ]; then
  libs=
else
  key=$("$PYTHON" - <<'PY'
import hashlib, sys, time, tomllib

project = tomllib.load(open("pyproject.toml", "rb"))
parts = [open(".ci/minimums.txt").read(), repr(project["build-system"]),
         repr(project["project"].get("dependencies")),
         repr(project["project"].get("optional-dependencies")),
         sys.version, time.strftime("%Y-%m")]
print(hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16])
PY
)
  cache=$CACHE_ROOT/$key
  mkdir -p "$CACHE_ROOT"
  # One builder at a time per machine; a second run waits, then finds the stamp.
  exec 9>"$CACHE_ROOT/.lock"
  flock 9
  if [ ! -f "$cache/.complete" ]; then
    echo "== the pinned minimums into the machine's cache $cache (once per machine and key)"
    rm -rf "$cache"
    "$PYTHON" -m venv "$cache"
    install "$cache" -c .ci/minimums.txt '.[dev]'
    # Only the libraries are shared: each run installs its own checkout's usage-etl.
    "$cache/bin/python" -m pip uninstall --quiet --yes usage-etl >>"$cache/pip.log" 2>&1
    touch "$cache/.complete"
  fi
  touch "$cache/.complete"  # its last use, for the pruning below
  # Caches of other keys not used for two weeks go.
  find "$CACHE_ROOT" -mindepth 2 -maxdepth 2 -name .complete -mtime +14 -printf '%h\0' |
    xargs -0r rm -rf
  flock -u 9
  libs=$("$cache/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
fi
# examples in tests/factories.py reads it.
export USAGE_ETL_TEST_MINIMUMS=1
# Bytecode written and shared by every interpreter of the run, as in scripts/test.sh.
unset PYTHONDONTWRITEBYTECODE
prepared=
if [ "${1:-}" = "--prepared" ]; then
  shift
  prepared=1
fi
if [ -n "$prepared" ] && [ -f "$VENV/.pins-checked" ]; then
  echo "== pytest at the minimums in $VENV (made and checked by --prepare)"
  bash scripts/start-postgres.sh
  exec "$VENV/bin/python" -m pytest -n "${PYTEST_WORKERS:-6}" --maxschedchunk 1 \
    -p no:cacheprovider -m "not scale and not variant" "$@"
fi

echo "== fresh venv $VENV at the declared minimums"
rm -rf "$VENV"
if [ -z "$libs" ]; then
  "$PYTHON" -m venv "$VENV"
  install "$VENV" -c .ci/minimums.txt -e '.[dev]'
else
  "$PYTHON" -m venv --without-pip "$VENV"
  own=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
  # addsitedir (not a plain path line) so the cached libraries' own .pth files run too.
  echo "import site; site.addsitedir('$libs')" > "$own/usage_etl_minimums.pth"
  # pip itself comes from the cached libraries; usage-etl goes into $VENV.
  if ! "$VENV/bin/python" -m pip install --quiet --no-deps -e . >"$VENV/pip.log" 2>&1; then
    grep -v '^WARNING: Location' "$VENV/pip.log" >&2 || true
    echo "installing usage-etl into $VENV failed (full log: $VENV/pip.log)" >&2
    exit 1
  fi
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
touch "$VENV/.pins-checked"
[ "${1:-}" = "--prepare" ] && exit 0

echo "== pytest at the minimums"
bash scripts/start-postgres.sh
# As many workers, handed tests the same way, as scripts/test.sh (see there); `scale` and
# `variant` tests skipped (see above).
"$VENV/bin/python" -m pytest -n "${PYTEST_WORKERS:-6}" --maxschedchunk 1 -p no:cacheprovider \
  -m "not scale and not variant" "$@"
