"""`backfill`, `status` and `/metrics` for history sources (SPEC 10), against the simulated OpenAI."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from etl.cli import cli
from etl.config import load_config
from etl.runtime.history_sim import CREDENTIALS, HistorySimulator
from etl.runtime.metrics import Metrics
from etl.store.engine import make_engine
from etl.store.models import Sample
from tests.factories import REPO

OCT1 = datetime(2026, 10, 1, tzinfo=UTC)
OCT8 = datetime(2026, 10, 8, tzinfo=UTC)


def _config(tmp_path: Path, sim: HistorySimulator, db_url: str) -> Path:
    text = (REPO / "docs" / "vendors" / "openai.toml").read_text()
    text = re.sub(r'url = "https://[^/"]+', f'url = "{sim.url}', text)
    path = tmp_path / "usage-etl.toml"
    path.write_text(f'database_url = "{db_url}"\n' + text
                    + '\n[[sources]]\nname = "rules"\nkind = "nected"\napi_key_env = "NK"\n')
    return path


def _run(cfg: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--config", str(cfg), *args])


@pytest.fixture
def sim(monkeypatch: pytest.MonkeyPatch) -> HistorySimulator:
    monkeypatch.setenv("OPENAI_ADMIN_KEY", CREDENTIALS["bearer"])
    monkeypatch.setenv("NK", "nk-51d0c2e9aa")
    return HistorySimulator()


def test_backfill_reads_the_range_and_status_and_metrics_show_how_far(
        sim: HistorySimulator, empty_db_url: str, tmp_path: Path) -> None:
    with sim:
        cfg = _config(tmp_path, sim, empty_db_url)
        result = _run(cfg, "backfill", "--source", "openai", "--start", "2026-10-01",
                      "--end", "2026-10-08")
        assert result.exit_code == 0, result.output
        # 7 days x 2 models, over 3 pages per request (the simulator's page size).
        assert "openai: backfilled, 14 samples stored" in result.output
        status = _run(cfg, "status")
        assert "2026-10-08 00:00:00Z" in status.output
        config = load_config(str(cfg))
    engine = make_engine(config.database_url)
    with engine.connect() as conn:
        total = conn.execute(select(func.sum(Sample.value))).scalar()
    truth = sum(sim.truth("openai", k, OCT1, OCT8) for k in ("gpt-4o", "o1-mini"))
    assert total == truth
    text = Metrics(engine, config, spool_files=lambda: 0).exposition().decode()
    read = {tuple(s.labels.items()): s.value for f in text_string_to_metric_families(text)
            for s in f.samples if s.name == "usage_etl_read_up_to_timestamp_seconds"}
    assert read == {(("source", "openai"),): OCT8.timestamp()}
    engine.dispose()


@pytest.mark.parametrize(("args", "message"), [
    (("--source", "rules", "--start", "2026-10-01"), "not a history source"),
    (("--source", "openai", "--start", "2026-10-08", "--end", "2026-10-01"),
     "--start 2026-10-08: not before --end 2026-10-01\n"),
    (("--source", "openai", "--start", "1969-12-01"), "--start 1969-12-01: before 1970\n"),
    # --end defaults to now: a start after today reads nothing, so it is refused too.
    (("--source", "openai", "--start", "2999-01-01"),
     "--start 2999-01-01: not before now ("),
])
def test_backfill_refuses_other_sources_and_bad_ranges_with_exit_2(
        sim: HistorySimulator, tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    cfg = _config(tmp_path, sim, f"sqlite:///{tmp_path}/u.db")
    result = _run(cfg, "backfill", *args)
    assert result.exit_code == 2
    assert message in result.output


def test_a_range_that_fails_ends_the_backfill_with_exit_1(
        sim: HistorySimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_ADMIN_KEY", "wrong")
    with sim:
        cfg = _config(tmp_path, sim, f"sqlite:///{tmp_path}/u.db")
        result = _run(cfg, "backfill", "--source", "openai", "--start", "2026-10-01",
                      "--end", "2026-10-08")
    assert result.exit_code == 1
    assert "openai: auth_error" in result.output


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_simulate_serves_the_history_apis_on_their_own_port() -> None:
    import signal
    import subprocess
    import sys

    import requests

    port, history_port = _free_port(), _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "etl", "simulate", "--port", str(port),
         "--history-port", str(history_port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    try:
        assert proc.stdout is not None
        while "usage history APIs listening" not in proc.stdout.readline():
            pass
        got = requests.get(f"http://127.0.0.1:{history_port}/v1/organization/usage/completions",
                           params={"start_time": int(OCT1.timestamp()),
                                   "end_time": int(OCT8.timestamp())},
                           headers={"Authorization": f"Bearer {CREDENTIALS['bearer']}"}, timeout=5)
        assert got.status_code == 200
        assert [b["start_time"] for b in got.json()["data"]] == [
            int(OCT1.timestamp()) + 86400 * d for d in range(3)]  # the first page of three
        assert got.json()["has_more"] is True
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)


def test_the_simulated_vendors_keep_their_documented_quirks(sim: HistorySimulator) -> None:
    import requests

    with sim:
        start = int(OCT1.timestamp())
        stripe = requests.get(f"{sim.url}/v1/billing/meters/mtr_1/event_summaries",
                              params={"start_time": start + 60, "end_time": start + 7200},
                              headers={"Authorization": "Bearer sim-token"}, timeout=5)
        assert stripe.status_code == 400  # not aligned to the hourly grouping window
        anthropic = requests.get(f"{sim.url}/v1/organizations/usage_report/messages",
                                 params={"starting_at": "2026-10-01T00:00:00Z",
                                         "ending_at": "2026-10-01T03:00:00Z"},
                                 headers={"x-api-key": "sim-key"}, timeout=5).json()
        assert anthropic["has_more"] is False and anthropic["next_page"]  # still a cursor
        twilio = requests.get(f"{sim.url}/2010-04-01/Accounts/AC0/Usage/Records/Daily.json",
                              params={"StartDate": "2026-10-01", "EndDate": "2026-10-01"},
                              auth=("AC0", "sim-secret"), timeout=5).json()
        # EndDate is inclusive: one day, one record per category, numbers as strings.
        assert [(r["start_date"], type(r["usage"])) for r in twilio["usage_records"]] == [
            ("2026-10-01", str), ("2026-10-01", str)]


def test_help_of_backfill_status_and_export_names_what_history_sources_add() -> None:
    backfill = CliRunner().invoke(cli, ["backfill", "--help"])
    assert backfill.exit_code == 0
    assert "--start DATE" in backfill.output and "--end DATE" in backfill.output
    status = CliRunner().invoke(cli, ["status", "--help"])
    assert "read up to" in status.output
    export = CliRunner().invoke(cli, ["export", "--help"])
    assert "bucket_start, bucket_end, revisions" in export.output


def test_vendors_says_http_json_takes_interval_metrics_with_a_window() -> None:
    result = CliRunner().invoke(cli, ["vendors"])
    assert result.exit_code == 0
    assert "interval or gauge with [sources.window]" in result.output


def test_a_failed_backfill_is_told_once_on_the_terminal_without_its_credential(
        sim: HistorySimulator, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    wrong = "sk-wrong-5f0c1e7d"
    with sim:
        cfg = _config(tmp_path, sim, f"sqlite:///{tmp_path}/u.db")
        env = {**os.environ, "OPENAI_ADMIN_KEY": wrong,
               "USAGE_ETL_PACING_DIR": str(tmp_path / "pacing")}
        procs = [subprocess.run([sys.executable, "-m", "etl", "--config", str(cfg), *args],
                                capture_output=True, text=True, env=env, timeout=120,
                                check=False)
                 for args in (["backfill", "--source", "openai", "--start", "2026-10-01",
                               "--end", "2026-10-08"],
                              ["-v", "backfill", "--source", "openai", "--start", "2026-10-01",
                               "--end", "2026-10-08"],
                              ["collect", "--source", "openai"])]
    for proc in procs:
        terminal = proc.stdout + proc.stderr
        assert proc.returncode == 1, terminal
        assert terminal.count("HTTP 401: credential refused") == 1, terminal
        assert terminal.count("openai") == 1, terminal
        assert wrong not in terminal
    backfill, _, collect = procs
    assert backfill.stderr.startswith("openai: auth_error: HTTP 401: credential refused")
    assert "(0 samples stored before it)" in backfill.stderr
    assert collect.stdout.split()[:2] == ["openai", "auth_error"]


def test_a_range_a_locked_database_refuses_is_told_once_by_collect_and_backfill(
        sim: HistorySimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlite3

    from tests.factories import usage_etl_in_process

    db = tmp_path / "u.db"
    monkeypatch.setenv("OPENAI_ADMIN_KEY", CREDENTIALS["bearer"])
    monkeypatch.setenv("USAGE_ETL_PACING_DIR", str(tmp_path / "pacing"))
    monkeypatch.setenv("USAGE_ETL_SPOOL_DIR", str(tmp_path / "spool"))
    monkeypatch.setenv("USAGE_ETL_SQLITE_BUSY_TIMEOUT_MS", "300")
    with sim:
        cfg = str(_config(tmp_path, sim, f"sqlite:///{db}"))
        assert usage_etl_in_process("--config", cfg, "db", "upgrade").returncode == 0
        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another writer, past our busy timeout
        try:
            collect = usage_etl_in_process("--config", cfg, "collect", "--source", "openai")
            backfill = usage_etl_in_process("--config", cfg, "backfill", "--source", "openai",
                                            "--start", "2026-10-01", "--end", "2026-10-08")
        finally:
            holder.execute("ROLLBACK")
            holder.close()
    # collect: the range goes to the spool, said once on its line.
    assert collect.returncode == 1, (collect.stdout, collect.stderr)
    assert [ln.split()[:2] for ln in collect.stdout.splitlines()] == [["openai", "ok"]]
    assert "NOT STORED: the database refused it (database is locked); kept in " in collect.stdout
    assert "openai" not in collect.stderr
    # backfill keeps no spool: the range was not "kept to store later"; one line says why.
    assert backfill.returncode == 1, (backfill.stdout, backfill.stderr)
    assert backfill.stderr.splitlines() == [
        f"usage-etl: error: database sqlite:///{db}: database is locked"]
