#!/usr/bin/env bash
# The main job, from scratch: set up the venv and run the whole pipeline on a demo SQLite database.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/usage-etl demo "$@"
