"""Helpers shared by the benchmarks: throwaway databases, child processes with peak RSS."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, text

from etl.store.engine import make_engine, upgrade

PG_ADMIN_URL = os.environ.get(
    "USAGE_ETL_BENCH_PG_URL",
    os.environ.get("USAGE_ETL_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
)


def sqlite_engine(path: Path) -> Engine:
    """A migrated SQLite database at `path` (removed first if it exists)."""
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    return engine


def pg_problem() -> str | None:
    """Why PostgreSQL cannot be benchmarked here, or None."""
    try:
        import psycopg  # noqa: F401

        eng = create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 3})
        with eng.connect() as conn:
            conn.execute(text("select 1"))
        eng.dispose()
    except Exception as exc:  # noqa: BLE001 - any failure means "no server"
        return f"PostgreSQL at {PG_ADMIN_URL} is not reachable: {str(exc).splitlines()[0]}"
    return None


@contextmanager
def pg_database() -> Iterator[str]:
    """A throwaway PostgreSQL database (URL), dropped afterwards."""
    name = f"usage_etl_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def run_child(args: list[str], env: dict[str, str] | None = None) -> tuple[float, int, str]:
    """Run a Python child; returns (wall seconds, peak RSS bytes of that child, stdout)."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    out, err = proc.communicate()
    elapsed = time.perf_counter() - start
    # communicate() already reaped the child; its rusage is in the children's totals, so
    # measure peak RSS with wait4 only when we reap it ourselves (below) - see child_rss.
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}): {err.decode()[-2000:]}")
    return elapsed, 0, out.decode()


def run_child_rss(args: list[str], env: dict[str, str] | None = None) -> tuple[float, int, str]:
    """Like run_child, but reaps the child with wait4 to read its own peak RSS."""
    start = time.perf_counter()
    out_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-{uuid.uuid4().hex}.out"
    with out_path.open("wb") as out, open(os.devnull, "wb") as null:
        proc = subprocess.Popen([sys.executable, *args], stdout=out, stderr=null,
                                env={**os.environ, **(env or {})})
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.perf_counter() - start
    text_out = out_path.read_text()
    out_path.unlink()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed with exit status {proc.returncode}")
    return elapsed, usage.ru_maxrss * 1024, text_out  # Linux reports KiB


def last_json(stdout: str) -> dict[str, Any]:
    """The last line of a child's output, which the child prints as JSON."""
    return dict(json.loads(stdout.strip().splitlines()[-1]))
