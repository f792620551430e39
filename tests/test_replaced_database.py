"""A SQLite file deleted under the running daemon (and recreated by another command, or not):
the daemon notices, checks the schema again, reads its cached ids anew and keeps storing; at
SIGTERM nothing is set aside as refused by the database."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from etl.runtime.simulator import SimulatedVendor
from etl.store.engine import make_engine
from etl.store.models import Sample, Series
from tests.daemon import daemon_env, log_events, ok_counts, start_daemon, stop_daemon, wait_for
from tests.factories import REPO, write_daemon_config


def delete_database(db: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)


def samples_by_series(url: str) -> dict[tuple[str, str], int]:
    eng = make_engine(url)
    try:
        with eng.connect() as conn:
            rows = conn.execute(
                select(Series.source, Series.metric, func.count(Sample.series_id))
                .join(Sample, Sample.series_id == Series.id).group_by(Series.source, Series.metric)
            ).all()
        return {(s, m): n for s, m, n in rows}
    finally:
        eng.dispose()


@pytest.mark.parametrize("recreated_by", ["a nected-only collect", "nobody"])
def test_the_daemon_keeps_storing_after_its_sqlite_file_is_deleted(
    tmp_path: Path, simulator: SimulatedVendor, recreated_by: str,
) -> None:
    db = tmp_path / "usage.db"
    url = f"sqlite:///{db}"
    cfg = write_daemon_config(tmp_path, url, simulator)
    env = daemon_env(simulator)
    log = tmp_path / "daemon.log"
    proc = start_daemon(cfg, env, log)
    try:
        wait_for("both sources stored", lambda: len(ok_counts(url)) == 2)
        delete_database(db)
        if recreated_by != "nobody":
            # Its series rows come first in the new file: the ids the daemon cached for
            # ws-prod now name nothing, or rules' series.
            done = subprocess.run(
                [sys.executable, "-m", "etl", "--config", str(cfg), "collect", "--source",
                 "rules"], capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
            assert done.returncode == 0, done.stderr
        wait_for("both sources stored in the new file",
                 lambda: ok_counts(url).get("ws-prod", 0) >= 2 and ok_counts(url).get(
                     "rules", 0) >= 2)
    finally:
        code = stop_daemon(proc)
    assert code == 0
    events = log_events(log)
    names = [e.get("event") for e in events]
    assert names.count("database-replaced") == 1
    # A write that raced the deletion may wait in the spool; it is replayed, never set aside.
    assert "spool-set-aside" not in names
    assert events[-1]["event"] == "stopped" and events[-1]["pending_spool"] == 0
    # Every sample is filed under its own series: a wiresocket gauge never under rules.
    stored = samples_by_series(url)
    assert set(stored) == {("ws-prod", "connections"), ("ws-prod", "documents"),
                           ("rules", "invocations")}
    assert stored[("ws-prod", "connections")] == stored[("ws-prod", "documents")]
