#!/usr/bin/env bash
# CI on a busy machine: a fresh clone of this checkout's HEAD, N CPU hogs beside it
# (`python3 -c "while True: pass"`), then `CI=true bash .ci/run` there; the hogs are stopped
# however it ends. The suite must pass like this (issue 13: tests never depend on speed).
# Usage: bash scripts/ci-busy.sh [HOGS=2] [CLONE_DIR=/tmp/usage-etl-ci-busy]
set -euo pipefail
hogs=${1:-2}
clone=${2:-/tmp/usage-etl-ci-busy}
here="$(cd "$(dirname "$0")/.." && pwd)"
rm -rf "$clone"
git clone -q "$here" "$clone"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
for _ in $(seq 1 "$hogs"); do
  python3 -c "while True: pass" &
  pids+=($!)
done
echo "== $hogs CPU hogs running; CI=true bash .ci/run in $clone at $(git -C "$clone" rev-parse --short HEAD)"
start=$(date +%s)
status=0
(cd "$clone" && CI=true bash .ci/run) || status=$?
echo "== .ci/run exit status $status after $(( $(date +%s) - start )) s with $hogs CPU hogs beside it"
exit "$status"
