"""`usage-etl collect` against the simulator: outcomes recorded, exit statuses, no secret leaks."""

from __future__ import annotations

import logging
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, insert, select

from etl.cli import cli
from etl.collect.http import PacerRegistry
from etl.collect.poll import Collector
from etl.config import load_config
from etl.runtime.simulator import SimulatedVendor
from etl.store.engine import make_engine, upgrade
from etl.store.models import Base, CollectionAttempt, Sample, SourceState
from etl.store.writer import record_poll, record_polls
from etl.vendors.types import PollRecord
from tests.factories import free_port, write_sim_config


def run(config: str, *args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, ["--config", config, *args])


def attempts(url: str) -> list[tuple[str, str, int | None, int]]:
    engine = make_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(
            select(CollectionAttempt.source, CollectionAttempt.outcome,
                   CollectionAttempt.http_status, CollectionAttempt.samples_stored)
            .order_by(CollectionAttempt.source, CollectionAttempt.id)
        ).all()
    engine.dispose()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def dump_database(url: str) -> str:
    engine = make_engine(url)
    with engine.connect() as conn:
        text = "\n".join(
            repr(conn.execute(select(table)).all()) for table in Base.metadata.sorted_tables
        )
    engine.dispose()
    return text


def test_collect_polls_every_source_once_and_prints_one_line_each(simulator: SimulatedVendor, empty_db_url: str, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    config = write_sim_config(tmp_path / "c.toml", simulator, empty_db_url, monkeypatch)
    result = run(config, "collect")
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].split()[:3] == ["ws", "ok", "2"] and "ms" in lines[0]
    assert lines[1].split()[:3] == ["rules", "ok", "1"]
    assert attempts(empty_db_url) == [("rules", "ok", 200, 1), ("ws", "ok", 200, 2)]


@pytest.mark.parametrize(
    ("fault", "vendor", "outcome", "status", "options"),
    [
        ("unauthorized", "wiresocket", "auth_error", 401, {}),
        ("rate_limit", "wiresocket", "rate_limited", 429, {"retry_after": "3600"}),
        ("unavailable", "nected", "http_error", 503, {"retry_after": "3600"}),
        ("malformed", "wiresocket", "invalid_response", 200, {}),
        ("oversize", "nected", "invalid_response", 200, {}),
        ("error_code", "nected", "invalid_response", 200, {}),
    ],
)
def test_a_fault_is_recorded_and_the_other_source_still_collects(
    simulator: SimulatedVendor, sqlite_url: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, fault: str, vendor: str, outcome: str, status: int,
    options: dict[str, str],
) -> None:
    config = write_sim_config(tmp_path / "c.toml", simulator, sqlite_url, monkeypatch)
    simulator.set_fault(fault, vendor=vendor, **options)  # type: ignore[arg-type]
    result = run(config, "collect")
    assert result.exit_code == 1, result.output
    failed, healthy = ("ws", "rules") if vendor == "wiresocket" else ("rules", "ws")
    rows = {r[0]: r for r in attempts(sqlite_url)}
    assert rows[failed][1:3] == (outcome, status)
    assert rows[failed][3] == 0
    assert rows[healthy][1] == "ok"
    assert f"{failed}" in result.stdout and outcome in result.stdout


def test_a_vendor_slower_than_the_timeout_is_a_timeout(simulator: SimulatedVendor, sqlite_url: str, tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    config = write_sim_config(tmp_path / "c.toml", simulator, sqlite_url, monkeypatch,
                              interval=5, timeout=0.3)
    simulator.set_fault("slow", vendor="nected", delay=2)
    result = run(config, "collect", "--source", "rules")
    assert result.exit_code == 1
    assert [r[1] for r in attempts(sqlite_url)] == ["timeout"]


def run_process(config: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`usage-etl` as a real process: its own pacer, its real -v/-vv output on stderr."""
    return subprocess.run([sys.executable, "-m", "etl", "--config", config, *args],
                          capture_output=True, text=True, timeout=120, check=False)


def test_no_credential_in_output_logs_database_or_files(
    simulator: SimulatedVendor, sqlite_url: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("USAGE_ETL_PACING_DIR", str(tmp_path / "pacing"))
    config = write_sim_config(tmp_path / "c.toml", simulator, sqlite_url, monkeypatch)
    # The vendor quotes the credential in every error body (401, 429, 503, 500), and the
    # retry lines (-v) and stored errors carry the start of those bodies.
    simulator.echo_credential = True
    rounds = [
        ("unauthorized", "wiresocket", "3600", "-vv", 1),  # refused: stored with the body
        ("rate_limit", "nected", "1", "-v", 0),  # retried after 1 s: a retry line
        ("unavailable", "wiresocket", "3600", "-v", 1),  # given up at once: stored
        ("unavailable", "wiresocket", "1", "-v", 0),  # the audited case: 503, retry line
        ("server_error", "nected", None, "-vv", 0),  # backoff, a retry line
        ("malformed", "nected", None, "-vv", 1),
    ]
    everything: list[str] = []
    for fault, vendor, retry_after, verbosity, status in rounds:
        simulator.set_fault(fault, vendor=vendor, times=1, retry_after=retry_after)
        proc = run_process(config, verbosity, "collect")
        assert proc.returncode == status, (fault, proc.stdout, proc.stderr)
        everything += [proc.stdout, proc.stderr]
    # And in-process, where the log records reach caplog.
    simulator.set_fault("unavailable", vendor="nected", times=1, retry_after="1")
    inproc = run(config, "-vv", "collect")
    assert inproc.exit_code == 0, inproc.output
    log_text = "\n".join(everything)
    assert log_text.count("retry 1 in") >= 3 and "***" in log_text
    everything += [inproc.output, caplog.text, dump_database(sqlite_url)]
    assert "***" in everything[-1]  # the stored errors kept the (masked) body
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".pace" for p in files)
    everything += [p.read_bytes().decode("utf-8", "replace") + p.name for p in files]
    for secret in (simulator.token, simulator.api_key):
        assert not any(secret in text for text in everything)


def test_wrong_credential_is_not_hammered(simulator: SimulatedVendor, sqlite_url: str,
                                          tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    config = write_sim_config(tmp_path / "c.toml", simulator, sqlite_url, monkeypatch)
    env = [line.split('"')[1] for line in Path(config).read_text().splitlines()
           if line.startswith("token_env")][0]
    monkeypatch.setenv(env, "not-the-right-token-42")
    result = run(config, "collect", "--source", "ws")
    assert result.exit_code == 1
    assert simulator.request_count(vendor="wiresocket") == 1
    assert "not-the-right-token-42" not in result.output
    assert attempts(sqlite_url) == [("ws", "auth_error", 401, 0)]


def test_missing_secret_is_refused_before_polling(simulator: SimulatedVendor, sqlite_url: str,
                                                  tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    config = write_sim_config(tmp_path / "c.toml", simulator, sqlite_url, monkeypatch)
    env = [line.split('"')[1] for line in Path(config).read_text().splitlines()
           if line.startswith("api_key_env")][0]
    monkeypatch.delenv(env)
    result = run(config, "collect")
    assert result.exit_code == 2
    assert env in result.stderr and "Traceback" not in result.output
    assert simulator.request_count() == 0


def test_source_option_selects_and_unknown_name_is_usage_error(
    simulator: SimulatedVendor, sqlite_url: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = write_sim_config(tmp_path / "c.toml", simulator, sqlite_url, monkeypatch)
    result = run(config, "collect", "--source", "rules")
    assert result.exit_code == 0
    assert simulator.request_count(vendor="wiresocket") == 0
    bad = run(config, "collect", "--source", "nope")
    assert bad.exit_code == 2 and "nope" in bad.stderr


def test_storing_the_same_observation_twice_adds_nothing(
    simulator: SimulatedVendor, engine, tmp_path: Path,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = engine.url.render_as_string(hide_password=False)
    config = load_config(write_sim_config(tmp_path / "c.toml", simulator, url, monkeypatch))
    src = config.source("ws")
    with Collector([src], pacers=PacerRegistry()) as collector:
        result = collector.poll(src)
    assert result.outcome == "ok"
    first = record_poll(engine, result)
    again = record_poll(engine, result)
    assert (first.samples, again.samples, again.duplicates) == (2, 0, 2)
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(Sample)) == 2
        assert conn.scalar(select(func.count()).select_from(CollectionAttempt)) == 2


def test_a_batch_of_polls_is_stored_with_one_attempt_row_and_count_each(
    simulator: SimulatedVendor, engine, tmp_path: Path,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = engine.url.render_as_string(hide_password=False)
    config = load_config(write_sim_config(tmp_path / "c.toml", simulator, url, monkeypatch))
    ws, rules = config.source("ws"), config.source("rules")
    with Collector([ws, rules], pacers=PacerRegistry()) as collector:
        first, second = collector.poll(ws), collector.poll(rules)
        simulator.set_fault("unauthorized", times=1, vendor="wiresocket")
        failed = collector.poll(ws)
    assert (first.outcome, second.outcome, failed.outcome) == ("ok", "ok", "auth_error")
    again = PollRecord(**{**vars(first), "samples_stored": 0})
    # The same observation again in the same batch is a duplicate, not a second sample.
    stored = record_polls(engine, [first, second, failed, again])
    assert [s.samples for s in stored] == [2, 1, 0, 0] and stored[3].duplicates == 2
    assert [r.samples_stored for r in (first, second, failed, again)] == [2, 1, 0, 0]
    assert attempts(url) == [("rules", "ok", 200, 1), ("ws", "ok", 200, 2),
                             ("ws", "auth_error", 401, 0), ("ws", "ok", 200, 0)]


@pytest.mark.parametrize("failure", ["persistent_500", "nothing_listening"])
def test_collect_exits_1_when_a_source_keeps_failing(
    simulator: SimulatedVendor, sqlite_url: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, failure: str,
) -> None:
    # interval 5: a 4 s budget bounds the backoff between the retries.
    config = write_sim_config(tmp_path / "c.toml", simulator, sqlite_url, monkeypatch,
                              interval=5)
    if failure == "persistent_500":
        simulator.set_fault("server_error", vendor="nected")
        name, expected = "rules", ("rules", "http_error", 500, 0)
    else:
        text = Path(config).read_text()
        dead = f'base_url = "http://127.0.0.1:{free_port()}"'
        Path(config).write_text(text.replace(f'base_url = "{simulator.base_url}"', dead, 1))
        name, expected = "ws", ("ws", "connection_error", None, 0)
    result = run(config, "collect", "--source", name)
    assert result.exit_code == 1, result.output
    assert attempts(sqlite_url) == [expected]
    line = result.stdout.strip()
    assert line.split()[:2] == [name, expected[1]] and "Traceback" not in result.output
    tries = int(line.split(" tries")[0].split()[-1])
    assert tries >= 2  # retried before giving up
    if failure == "persistent_500":
        assert simulator.request_count(vendor="nected", status=500) == tries


def store_pause(url: str, source: str, until: datetime, reason: str) -> None:
    """A pause as the daemon stores it (etl.runtime.scheduler: source_state after a 429 or a 401)."""
    engine = make_engine(url)
    upgrade(engine)
    with engine.begin() as conn:
        conn.execute(insert(SourceState).values(
            source=source, consecutive_failures=1, paused_until=until, pause_reason=reason,
            updated_at=datetime.now(UTC),
        ))
    engine.dispose()


def test_collect_skips_a_paused_source_unless_forced(
    simulator: SimulatedVendor, sqlite_url: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = write_sim_config(tmp_path / "c.toml", simulator, sqlite_url, monkeypatch)
    until = datetime.now(UTC) + timedelta(hours=1)
    store_pause(sqlite_url, "ws", until, "authentication failed (1 failure(s) in a row)")
    paused = run(config, "collect")
    assert paused.exit_code == 1, paused.output
    assert simulator.request_count(vendor="wiresocket") == 0
    assert attempts(sqlite_url) == [("rules", "ok", 200, 1), ("ws", "skipped", None, 0)]
    (line,) = [ln for ln in paused.stdout.splitlines() if ln.startswith("ws ")]
    assert "skipped" in line and f"paused until {until:%Y-%m-%d %H:%M}" in line
    assert "authentication failed" in line and "--force" in line
    # --force polls it; that success lifts the pause for later runs (and for the daemon).
    forced = run(config, "collect", "--force", "--source", "ws")
    assert forced.exit_code == 0, forced.output
    after = run(config, "collect", "--source", "ws")
    assert after.exit_code == 0, after.output
    assert simulator.request_count(vendor="wiresocket") == 2


def test_collect_polls_a_source_whose_pause_is_over(
    simulator: SimulatedVendor, sqlite_url: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = write_sim_config(tmp_path / "c.toml", simulator, sqlite_url, monkeypatch)
    store_pause(sqlite_url, "ws", datetime.now(UTC) - timedelta(seconds=1),
                "rate_limited: vendor asked to wait 30s")
    result = run(config, "collect", "--source", "ws")
    assert result.exit_code == 0, result.output
    assert attempts(sqlite_url) == [("ws", "ok", 200, 2)]


@pytest.mark.parametrize("verbosity", [[], ["-v"]])
def test_a_failed_or_skipped_source_is_told_once_on_the_terminal(
    simulator: SimulatedVendor, sqlite_url: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, verbosity: list[str],
) -> None:
    # A real process: its log lines reach the terminal (stderr) beside the summary (stdout).
    monkeypatch.setenv("USAGE_ETL_PACING_DIR", str(tmp_path / "pacing"))
    config = write_sim_config(tmp_path / "c.toml", simulator, sqlite_url, monkeypatch)
    simulator.echo_credential = True
    simulator.set_fault("unauthorized", vendor="nected")
    store_pause(sqlite_url, "ws", datetime.now(UTC) + timedelta(hours=1),
                "authentication failed (1 failure(s) in a row)")
    proc = run_process(config, *verbosity, "collect")
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    terminal = proc.stdout + proc.stderr
    assert terminal.count("credential refused") == 1, terminal
    assert terminal.count("authentication failed") == 1, terminal
    lines = proc.stdout.splitlines()
    (rules,) = [ln for ln in lines if ln.startswith("rules ")]
    assert rules.split()[1] == "auth_error" and "HTTP 401: credential refused" in rules
    (ws,) = [ln for ln in lines if ln.startswith("ws ")]
    assert ws.split()[1] == "skipped" and "--force" in ws
    assert simulator.api_key not in terminal and simulator.token not in terminal


@pytest.mark.postgres
def test_a_poll_a_read_only_database_refuses_is_told_once_on_its_line(
    simulator: SimulatedVendor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sqlalchemy import create_engine, text

    from tests.factories import (
        PG_ADMIN_URL,
        create_pg_database,
        drop_pg_database,
        migrated_engine,
        usage_etl_in_process,
    )

    # A hot standby's refusal: not an outage, so the writer first tries each poll alone (its
    # warning was a second telling of the line), then the poll goes to the spool.
    url = create_pg_database()
    try:
        with migrated_engine(url):
            pass
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{url.rsplit("/", 1)[1]}" '
                              "SET default_transaction_read_only = on"))
        admin.dispose()
        monkeypatch.setenv("USAGE_ETL_PACING_DIR", str(tmp_path / "pacing"))
        monkeypatch.setenv("USAGE_ETL_SPOOL_DIR", str(tmp_path / "spool"))
        config = write_sim_config(tmp_path / "c.toml", simulator, url, monkeypatch)
        proc = usage_etl_in_process("--config", config, "collect")
    finally:
        drop_pg_database(url)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    lines = proc.stdout.splitlines()
    (ws,) = [ln for ln in lines if ln.startswith("ws ")]
    assert ws.split()[1] == "ok"
    assert "NOT STORED: the database refused it (cannot execute INSERT in a read-only " \
           "transaction); kept in " in ws
    assert "refused this response" not in proc.stderr
    assert [ln for ln in proc.stderr.splitlines() if " ws:" in ln or " rules:" in ln] == []
    assert len(list((tmp_path / "spool").glob("*.json"))) == 2
