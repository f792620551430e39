"""Read-only databases (SPEC 3 amended): a SELECT-only PostgreSQL login, a read-only
transaction (hot standby), a SQLite file whose folder cannot be written. Every command that
only reads history gives the figures it gives on a writable database, stores nothing and says
once that the cache was not written."""

from __future__ import annotations

import csv
import logging
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import create_engine, func, select, text

from etl.cli import cli
from etl.store.models import RollupDay
from reports.api import billing, daily_usage
from tests.factories import (
    PG_ADMIN_URL,
    billing_rules,
    create_pg_database,
    drop_pg_database,
    make_config,
    migrated_engine,
    seed_month,
    write_reports_config,
)

NOT_CACHED = "nothing cached: the daily rollups could not be updated"
ALERT = ('\n[[alerts]]\nname = "ws-high"\nsource = "ws-prod"\nmetric = "connections"\n'
         "above_pct = 90\nnotify = []\n")


@pytest.fixture(params=["sqlite-folder-read-only", "sqlite-mode-ro",
                        pytest.param("pg-select-only", marks=pytest.mark.postgres),
                        pytest.param("pg-read-only-transaction", marks=pytest.mark.postgres)])
def read_only_url(request: pytest.FixtureRequest, tmp_path: Path,
                  read_only_folder: Callable[[Path], Path]) -> Iterator[tuple[str, str]]:
    """(a read-only URL, the writable URL of the same database), seeded with seed_month()."""
    if request.param.startswith("sqlite"):
        folder = tmp_path / "db"
        folder.mkdir()
        url = f"sqlite:///{folder / 'usage.db'}"
        with migrated_engine(url) as eng:
            seed_month(eng)
        if request.param == "sqlite-mode-ro":
            yield f"sqlite:///file:{folder / 'usage.db'}?mode=ro&uri=true", url
        else:  # the refusal users see: the folder (and so the -shm file) cannot be written
            yield f"sqlite:///{read_only_folder(folder) / 'usage.db'}", url
        return
    url = create_pg_database()
    role = f"reader_{uuid.uuid4().hex[:10]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with migrated_engine(url) as eng:
            seed_month(eng)
        with admin.connect() as conn:
            conn.execute(text(f"CREATE ROLE {role} LOGIN"))
            if request.param == "pg-select-only":
                conn.execute(text(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}"))
            else:  # all rights, but every transaction read-only, as on a hot standby
                conn.execute(text(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}"))
                conn.execute(text(f"ALTER ROLE {role} SET default_transaction_read_only = on"))
        yield url.replace("postgres@", f"{role}@"), url
    finally:
        admin.dispose()
        drop_pg_database(url)
        server = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with server.connect() as conn:
            conn.execute(text(f"DROP ROLE IF EXISTS {role}"))
        server.dispose()


def usage_etl(config: Path, *args: str) -> Result:
    """`usage-etl --config CONFIG ARGS...` through the console script's click group, in this
    process: no interpreter start-up (pandas, the report renderers) for each of the commands.

    The root logger starts without handlers, as in a new process, so the CLI's own logging
    set-up sends warnings to the stderr captured here; exit code, stdout and stderr apart.
    """
    root = logging.getLogger()
    kept, level = root.handlers[:], root.level
    root.handlers = []
    try:
        return CliRunner().invoke(cli, ["--config", str(config), *args], prog_name="usage-etl")
    finally:
        root.handlers, root.level = kept, level


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def rollup_rows(url: str) -> int:
    eng = create_engine(url)
    try:
        with eng.connect() as conn:
            return int(conn.scalar(select(func.count()).select_from(RollupDay)) or 0)
    finally:
        eng.dispose()


def test_every_read_command_gives_the_same_figures_on_a_read_only_database(
    read_only_url: tuple[str, str], tmp_path: Path,
) -> None:
    url, writable = read_only_url
    cfg = write_reports_config(tmp_path / "ro.toml", url, billing=billing_rules())
    cfg.write_text(cfg.read_text() + ALERT)
    out = tmp_path / "out"

    daily = usage_etl(cfg, "report", "daily", "--date", "2026-05-15", "--out", str(out))
    assert daily.exit_code == 0, daily.stderr
    assert daily.stderr.count(NOT_CACHED) == 1
    [inv] = [r for r in rows(out / "daily-2026-05-15.csv") if r["metric"] == "invocations"]
    # 25 at noon after 1,050 on May 2: a reset, which adds its own value.
    assert (inv["samples"], inv["increase"], inv["resets"]) == ("1", "25", "1")

    bill = usage_etl(cfg, "report", "billing", "--month", "2026-05", "--out", str(out))
    assert bill.exit_code == 0, bill.stderr
    assert bill.stderr.count(NOT_CACHED) == 1
    figures = {r["metric"]: (r["quantity"], r["overage"], r["amount"])
               for r in rows(out / "billing-2026-05.csv")}
    # +50 +25 +30 = 105 over 100 included at 0.001 (0.005 rounds half-up to 0.01);
    # peak 103.5 over 100 at 0.50 = 1.75.
    assert figures == {"invocations": ("105", "5", "0.01"), "connections": ("103.5", "3.5", "1.75")}

    invoice = tmp_path / "invoice.csv"
    invoice.write_text("source,month,metric,quantity,amount\nrules,2026-05,invocations,105,0.01\n")
    rec = usage_etl(cfg, "reconcile", "--month", "2026-05", "--invoice", str(invoice),
                    "--out", str(out))
    assert rec.exit_code == 0, rec.stderr
    assert {r["metric"]: r["status"] for r in rows(out / "reconcile-2026-05.csv")} == {
        "invocations": "match", "connections": "missing_invoice"}

    exported = usage_etl(cfg, "export", "--start", "2026-05-01", "--end", "2026-05-31")
    assert exported.exit_code == 0, exported.stderr
    assert len(exported.stdout.splitlines()) == 5  # three nected, two wiresocket lines in May

    status = usage_etl(cfg, "status")
    assert status.exit_code == 1, status.stderr  # never polled: both sources stale
    assert [line.split()[:2] for line in status.stdout.splitlines()[1:]] == [
        ["ws-prod", "stale"], ["rules", "stale"]]

    alerts = usage_etl(cfg, "alerts", "list")
    assert alerts.exit_code == 0, alerts.stderr
    assert alerts.stdout.splitlines()[1].split() == ["ws-high", "ws-prod", "connections", "ok",
                                                     "-", "500"]
    assert rollup_rows(writable) == 0  # nothing was stored


def test_the_dataframe_api_reads_a_read_only_database_with_the_same_figures(
    read_only_url: tuple[str, str],
) -> None:
    url, writable = read_only_url
    config = make_config(billing=billing_rules())
    # A warm cache first (no dirty spans left): the read-only run reads it and cannot store
    # the days it computes.
    daily_usage(writable, "2026-05-10", config=config, rollups=True)
    cached = rollup_rows(writable)
    day = daily_usage(url, "2026-05-15", config=config, rollups=True)
    inv = day[day["metric"] == "invocations"].iloc[0]
    assert (inv["samples"], inv["increase"], inv["resets"]) == (1, 25, 1)
    month = billing(url, "2026-05", config=config)
    assert dict(zip(month["metric"].astype(str), month["quantity"].astype(float), strict=True)
                ) == {"invocations": 105.0, "connections": 103.5}
    assert rollup_rows(writable) == cached
