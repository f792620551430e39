#!/usr/bin/env bash
# The FinOps Foundation's FOCUS validator (`focus-validator`, PyPI) on a generated FOCUS month
# (SPEC 12): docs/examples/focus-month.toml and its history are imported into a throwaway
# SQLite database, `report focus --month 2026-11` is written as CSV and as Parquet, and each
# file is checked against FOCUS 1.2. A step of .ci/run, after the suite.
#
# The validator needs Python 3.12 and pins old libraries, so it gets a virtual environment of
# its own, made with pyenv's CPython 3.12 ($FOCUS_VALIDATOR_PYTHON overrides) and kept in
# .cache/focus-validator/ (gitignored) between runs. Without such a Python the step is skipped
# with one line saying so. The validator exits 0 even when rules fail: its summary is read,
# and any failed rule except the validator's own contradictions (docs/focus.md) fails the step.
#
# Usage: bash scripts/focus-validate.sh [FILE...]     (FOCUS files to check instead)
#        bash scripts/focus-validate.sh --verdict OUTPUT   (judge a saved validator output)
#        bash scripts/focus-validate.sh --prepare   (build the cached venv only; .ci/run does
#                                                    it in the background beside the suite)
set -euo pipefail
cd "$(dirname "$0")/.."
VALIDATOR_VERSION=2.2.1
CACHE=${FOCUS_VALIDATOR_CACHE:-$PWD/.cache/focus-validator}
# What the data can tell (docs/focus.md): usage is measured, SKUs priced per unit, accounts named.
CRITERIA=USAGE_MEASUREMENT_SUPPORTED,UNIT_PRICING_SUPPORTED,ACCOUNT_NAMING_SUPPORTED

verdict() {
  # $1: the validator's console output. Exit 0 when it ran and every failed rule is a known
  # contradiction of the validator's (named in docs/focus.md), else 1 naming the others.
  python3 - "$1" <<'PY'
import re
import sys

# The validator's own contradictions (docs/focus.md): InvoiceId-C-004-C and -C-005-C fail
# either branch of one either-or rule; the ConsumedQuantity-C-003..006 chain asks for
# CommitmentDiscountStatus, a column only datasets with commitment discounts have.
KNOWN = {"InvoiceId-C-004-C", "InvoiceId-C-005-C", "ConsumedQuantity-C-000-C",
         "ConsumedQuantity-C-003-C", "ConsumedQuantity-C-004-C", "ConsumedQuantity-C-005-C",
         "ConsumedQuantity-C-006-C"}
text = open(sys.argv[1], encoding="utf-8", errors="replace").read()
summary = re.search(r"Total: (\d+) \| Pass: (\d+) \| Fail: (\d+) \| Skipped: (\d+)", text)
if summary is None:
    print("focus-validate: the validator printed no summary (it did not run to the end)")
    sys.exit(1)
failed = sorted(set(re.findall(r"^\S*\s*([A-Za-z]+-[A-Z]-\d{3}-[A-Z]): FAIL", text, re.M)))
unexpected = [rule for rule in failed if rule not in KNOWN]
total, passed, nfail, skipped = summary.groups()
print(f"focus-validate: {total} rules: {passed} passed, {nfail} failed "
      f"({len(failed) - len(unexpected)} of them the validator's known contradictions), "
      f"{skipped} skipped")
if unexpected:
    print("focus-validate: FAILED rules: " + ", ".join(unexpected))
    sys.exit(1)
PY
}

if [ "${1:-}" = "--verdict" ]; then
  verdict "$2"
  exit
fi

find_python() {
  if [ -n "${FOCUS_VALIDATOR_PYTHON:-}" ]; then
    [ -x "$FOCUS_VALIDATOR_PYTHON" ] && echo "$FOCUS_VALIDATOR_PYTHON"
    return 0
  fi
  local root=${PYENV_ROOT:-$HOME/.pyenv} candidate
  for candidate in "$root"/versions/3.12*/bin/python3.12 "$(command -v python3.12 || true)"; do
    if [ -n "$candidate" ] && [ -x "$candidate" ]; then
      echo "$candidate"
      return 0
    fi
  done
}

PY312=$(find_python)
if [ -z "$PY312" ]; then
  echo "focus-validate: skipped: no CPython 3.12 (pyenv's, python3.12 on PATH, or" \
       "\$FOCUS_VALIDATOR_PYTHON) to run focus-validator in"
  exit 0
fi

stamp="$CACHE/.installed-$VALIDATOR_VERSION"
# One builder at a time per machine (.ci/run prepares it in the background).
mkdir -p "$(dirname "$CACHE")"
exec 9>"$CACHE.lock"
flock 9
if [ ! -f "$stamp" ]; then
  rm -rf "$CACHE"
  "$PY312" -m venv "$CACHE"
  # pyarrow < 22: the validator pins numpy 1.x, which newer pyarrow refuses.
  if ! "$CACHE/bin/python" -m pip install --quiet "focus-validator==$VALIDATOR_VERSION" \
       "pyarrow<22" > "$CACHE/pip.log" 2>&1; then
    grep -v '^WARNING: Location' "$CACHE/pip.log" >&2 || true
    echo "focus-validate: installing focus-validator failed (log: $CACHE/pip.log)" >&2
    exit 1
  fi
  touch "$stamp"
fi
flock -u 9
[ "${1:-}" = "--prepare" ] && exit 0

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
files=("$@")
if [ ${#files[@]} -eq 0 ]; then
  cli=(.venv/bin/usage-etl --config docs/examples/focus-month.toml
       --database-url "sqlite:///$work/usage.db")
  "${cli[@]}" import docs/examples/focus-history.jsonl > /dev/null
  for fmt in csv parquet; do
    files+=("$("${cli[@]}" report focus --month 2026-11 --format "$fmt" --out "$work")")
  done
fi

# The validator reads its currency list by a path relative to its package's folder.
site=$("$CACHE/bin/python" -c 'import focus_validator, os; print(os.path.dirname(os.path.dirname(focus_validator.__file__)))')
status=0
for file in "${files[@]}"; do
  abs=$(cd "$(dirname "$file")" && pwd)/$(basename "$file")
  out="$work/$(basename "$file").validator.txt"
  (cd "$site" && "$CACHE/bin/focus-validator" --data-file "$abs" --validate-version 1.2 \
     --block-download --applicability-criteria "$CRITERIA" --show-violations) > "$out" 2>&1 || true
  echo "focus-validate: $(basename "$file")"
  if ! verdict "$out"; then
    grep -v 'SKIPPED\|PASS' "$out" | head -40
    status=1
  fi
done
exit $status
