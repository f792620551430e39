"""Running the real `usage-etl schedule` daemon as a process: start, stop, wait, read its log."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from etl.runtime.simulator import SimulatedVendor
from etl.store.engine import make_engine
from etl.store.models import CollectionAttempt
from tests.factories import DAEMON_NECTED_KEY_ENV, DAEMON_WS_TOKEN_ENV, REPO


def daemon_env(sim: SimulatedVendor, **extra: str) -> dict[str, str]:
    """The daemon's environment: the simulator's credentials, no database or spool overrides."""
    env = dict(os.environ)
    env.update({DAEMON_WS_TOKEN_ENV: sim.token, DAEMON_NECTED_KEY_ENV: sim.api_key},
               PYTHONPATH=str(REPO), **extra)
    env.pop("USAGE_ETL_DATABASE_URL", None)
    env.pop("USAGE_ETL_SPOOL_DIR", None)
    return env


def start_daemon(cfg: Path, env: dict[str, str], log: Path,
                 extra: Sequence[str] = ()) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "etl", "--config", str(cfg), "schedule", "--log-format", "json",
         *extra],
        stdout=subprocess.DEVNULL, stderr=log.open("wb"), env=env, cwd=cfg.parent,
    )


def stop_daemon(proc: subprocess.Popen[bytes], timeout: float = 40) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


# How long wait_for waits before calling something hung. Not a speed check: each condition
# comes true within a few intervals on a quiet machine; this only bounds a test that hangs.
PATIENCE = 180.0


def wait_for(what: str, check: Callable[[], bool], timeout: float = PATIENCE) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


def ok_counts(url: str) -> dict[str, int]:
    """Successful attempts per source, read on a fresh connection."""
    eng = make_engine(url)
    try:
        with eng.connect() as conn:
            rows = conn.execute(
                select(CollectionAttempt.source, func.count())
                .where(CollectionAttempt.outcome == "ok")
                .group_by(CollectionAttempt.source)
            ).all()
        return {source: n for source, n in rows}
    except Exception:  # noqa: BLE001 - the database may be away on purpose
        return {}
    finally:
        eng.dispose()


def log_events(log: Path) -> list[dict[str, Any]]:
    lines = log.read_text().splitlines()
    # --log-format json: every line on stderr is one JSON object. A library's own line
    # (say APScheduler's "missed by" on a busy machine) has no "event": read with .get().
    return [json.loads(line) for line in lines if line.strip()]
