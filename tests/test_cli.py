"""The command line: exit statuses, one-line errors, and documentation of every command."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from etl.cli import cli


def all_commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    found = []
    for name, cmd in group.commands.items():
        found.append((prefix + name, cmd))
        if isinstance(cmd, click.Group):
            found.extend(all_commands(cmd, prefix + name + " "))
    return found


def test_every_command_has_a_docstring_with_an_example() -> None:
    missing = [
        name for name, cmd in all_commands(cli)
        if not cmd.help or "Example" not in cmd.help
    ]
    assert missing == []


def test_bad_config_exits_2_with_one_line_per_problem(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('timezone = "Nowhere/Land"\nfoo = 1\n')
    result = CliRunner().invoke(cli, ["--config", str(cfg), "db", "upgrade"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2
    assert all(line.startswith("usage-etl: error: ") for line in lines)
    assert "Traceback" not in result.output


def test_db_upgrade_on_empty_sqlite_then_again(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'u.db'}"
    runner = CliRunner()
    first = runner.invoke(cli, ["--database-url", url, "db", "upgrade"])
    assert first.exit_code == 0, first.output
    assert "schema upgraded empty ->" in first.output
    second = runner.invoke(cli, ["--database-url", url, "db", "upgrade"])
    assert "already at" in second.output


def test_database_folder_missing_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["--database-url", f"sqlite:///{tmp_path}/nope/u.db", "db", "upgrade"]
    )
    assert result.exit_code == 2
    assert "does not exist" in result.stderr


def test_python_dash_m_etl_works() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "etl", "--help"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and "usage-etl" in out.stdout


def test_command_on_a_database_behind_head_names_db_upgrade(empty_db_url: str) -> None:
    from etl.store.engine import head_revision, make_engine, upgrade

    engine = make_engine(empty_db_url)
    upgrade(engine, "0001_initial")
    engine.dispose()
    assert head_revision() != "0001_initial"
    result = CliRunner().invoke(cli, ["--database-url", empty_db_url, "status"])
    assert result.exit_code == 2
    assert "run `usage-etl db upgrade`" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    fixed = CliRunner().invoke(cli, ["--database-url", empty_db_url, "db", "upgrade"])
    assert fixed.exit_code == 0 and "0001_initial ->" in fixed.output
    assert CliRunner().invoke(cli, ["--database-url", empty_db_url, "status"]).exit_code != 2


# A new migration script as `alembic revision` writes it (migrations/script.py.mako), and one
# whose revision is computed: the start-up check reads the first itself and leaves the second
# to Alembic (etl.store.engine.newest_revision_in_scripts).
NEW_SCRIPTS = {
    "written": 'revision: str = "9999_next"\ndown_revision: str | None = {parent!r}\n',
    "computed": 'revision = "9999_" + "next"\ndown_revision = {parent!r}\n',
}


@pytest.mark.parametrize("form", sorted(NEW_SCRIPTS))
def test_a_new_migration_script_makes_commands_ask_for_db_upgrade(
        sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, form: str) -> None:
    from etl.store import engine as store_engine

    assert CliRunner().invoke(cli, ["--database-url", sqlite_url, "db", "upgrade"]).exit_code == 0
    old_head = store_engine.head_revision()
    scripts = tmp_path / "migrations"
    shutil.copytree(store_engine.migrations_dir(), scripts,
                    ignore=shutil.ignore_patterns("__pycache__"))
    (scripts / "versions" / "9999_next.py").write_text(
        '"""The next release\'s migration."""\n' + NEW_SCRIPTS[form].format(parent=old_head)
        + "\n\ndef upgrade() -> None:\n    pass\n\n\ndef downgrade() -> None:\n    pass\n")
    monkeypatch.setattr(store_engine, "migrations_dir", lambda: str(scripts))

    behind = CliRunner().invoke(cli, ["--database-url", sqlite_url, "status"])
    assert behind.exit_code == 2
    assert behind.stderr.strip().splitlines() == [
        f"usage-etl: error: database schema is at revision {old_head}, the newest is "
        "9999_next: run `usage-etl db upgrade`"]
    fixed = CliRunner().invoke(cli, ["--database-url", sqlite_url, "db", "upgrade"])
    assert fixed.exit_code == 0 and f"{old_head} -> 9999_next" in fixed.output
    assert CliRunner().invoke(cli, ["--database-url", sqlite_url, "status"]).exit_code == 0


@pytest.mark.postgres
def test_a_command_run_in_process_leaves_no_database_connection_open(pg_url: str) -> None:
    import sqlalchemy

    assert CliRunner().invoke(cli, ["--database-url", pg_url, "db", "upgrade"]).exit_code == 0
    assert CliRunner().invoke(cli, ["--database-url", pg_url, "status"]).exit_code == 0
    # Left open, the pool's connections were closed by whichever later code ran the garbage
    # collector, with a warning in its output (a report test's "warns nothing" saw one).
    name = sqlalchemy.make_url(pg_url).database
    watcher = sqlalchemy.create_engine(pg_url.rsplit("/", 1)[0] + "/postgres")
    try:
        with watcher.connect() as conn:
            held = conn.execute(sqlalchemy.text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = :d"), {"d": name}).scalar()
    finally:
        watcher.dispose()
    assert held == 0


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "--database-url: must be a non-empty string"),
        ("mysql://u:secret-pw@h/db", "--database-url: scheme 'mysql' is not supported (use sqlite:///PATH or postgresql://[USER@]HOST[:PORT]/DB)"),
        ("postgresql://u:secret-pw@host:notaport/db", "--database-url: cannot parse 'postgresql://u:***@host:notaport/db' as a database URL"),
        ("sqlite:///:memory:", "--database-url: an in-memory SQLite database cannot hold history; give a file: sqlite:///PATH"),
    ],
)
@pytest.mark.parametrize("command", [["db", "upgrade"], ["db", "current"], ["status"]])
def test_bad_database_url_option_is_one_line_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str, message: str, command: list[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["--database-url", url, *command], env={"USAGE_ETL_CONFIG": ""})
    assert result.exit_code == 2, result.output
    assert result.stderr == f"usage-etl: error: {message}\n"
    assert "secret-pw" not in result.output
    # Nothing was created on the side, such as the default ./usage.db.
    assert list(tmp_path.iterdir()) == []


def test_bad_sqlite_busy_timeout_is_one_line_exit_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["--database-url", f"sqlite:///{tmp_path / 'u.db'}", "db", "upgrade"],
        env={"USAGE_ETL_SQLITE_BUSY_TIMEOUT_MS": "30s"},
    )
    assert result.exit_code == 2
    assert result.stderr == (
        "usage-etl: error: $USAGE_ETL_SQLITE_BUSY_TIMEOUT_MS: '30s' is not a whole number "
        "of milliseconds\n"
    )


@pytest.mark.parametrize("args", [
    ["--help"],
    ["vendors"],
    ["export", "--start", "2026-11-01", "--end", "2026-11-02", "--format", "csv"],
    ["export", "--start", "2026-11-01", "--end", "2026-11-02"],
])
def test_a_reader_that_stops_early_ends_a_command_quietly_with_status_1(
    tmp_path: Path, args: list[str],
) -> None:
    """`usage-etl export ... | head`: no error line, no traceback; 1, as Python does on SIGPIPE."""
    import os
    from datetime import UTC, datetime, timedelta

    from etl.store.engine import make_engine, upgrade
    from tests.factories import store, wiresocket, write_reports_config

    url = f"sqlite:///{tmp_path / 'usage.db'}"
    engine = make_engine(url)
    upgrade(engine)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    store(engine, [wiresocket(start + timedelta(minutes=i), i % 90) for i in range(2 * 1440)])
    engine.dispose()
    config = write_reports_config(tmp_path / "c.toml", url)
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first byte: every write fails
    try:
        proc = subprocess.run([sys.executable, "-m", "etl", "--config", str(config), *args],
                              stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120,
                              check=False)
    finally:
        os.close(write_end)
    assert (proc.returncode, proc.stderr) == (1, "")
