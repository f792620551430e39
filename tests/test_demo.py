"""`usage-etl demo`: the whole pipeline, offline, in a working folder."""

from __future__ import annotations

import csv
import os
import subprocess
from decimal import Decimal
from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import func, select

from etl.cli import cli
from etl.cli.collect_cmd import reports_available
from etl.config import load_config
from etl.runtime.demo import (
    HISTORY_TOKEN_ENV,
    NECTED_KEY_ENV,
    PROJECTS_TOKEN_ENV,
    WEBHOOK_ENV,
    WS_TOKEN_ENV,
    run_demo,
)
from etl.store.engine import make_engine
from etl.store.models import CollectionAttempt, Snapshot
from tests.factories import REPO


def counts(db: Path) -> dict[str, int]:
    engine = make_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        by_origin = dict(conn.execute(
            select(Snapshot.origin, func.count()).group_by(Snapshot.origin)).all())
        by_origin["attempts_ok"] = conn.scalar(
            select(func.count()).where(CollectionAttempt.outcome == "ok")) or 0
    engine.dispose()
    return by_origin


def test_demo_command_builds_everything_and_says_where(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    result = CliRunner().invoke(cli, ["demo", "--dir", str(folder), "--days", "2"])
    assert result.exit_code == 0, result.output
    db, config_path = folder / "usage.db", folder / "usage-etl.toml"
    assert str(db.resolve()) in result.output and str(config_path.resolve()) in result.output
    found = counts(db)
    assert found["import"] >= 2 * (24 * 60 + 2 * 24 * 12)  # two days of the three sources
    # Three rounds of four sources; the history source's first poll reads 30 days in pages
    # of 3 daily buckets (10 or 11 pages), each later one its 2-day lookback (1 page).
    assert found["attempts_ok"] == 12
    assert 9 + 10 + 2 <= found["collect"] <= 9 + 11 + 2

    config = load_config(str(config_path))
    assert [(s.name, s.kind) for s in config.sources] == [
        ("ws-prod", "wiresocket"), ("rules", "nected"), ("projects", "http_json"),
        ("openai-usage", "http_json")]
    assert config.database_url.endswith(str(db.resolve()))
    # The credentials were the simulator's alone: not in the config, not left in the env.
    envs = {WS_TOKEN_ENV, NECTED_KEY_ENV, PROJECTS_TOKEN_ENV, HISTORY_TOKEN_ENV}
    assert not envs & set(os.environ)
    assert {s.secret_env for s in config.sources} == envs

    if reports_available():
        names = sorted(p.name for p in (folder / "reports-out").iterdir())
        assert any(n.startswith("daily-") and n.endswith(".csv") for n in names)
        assert any(n.startswith("billing-") and n.endswith(".html") for n in names)
        # The month as FOCUS: a Usage row per billing rule, adding up to the billing total.
        focus = next(n for n in names if n.startswith("focus-") and n.endswith(".csv"))
        with (folder / "reports-out" / focus).open(newline="") as fh:
            focus_rows = list(csv.DictReader(fh))
        assert sorted(r["SkuId"] for r in focus_rows) == [
            "openai-usage/output_tokens:gpt-4o", "projects/requests:web-app",
            "rules/invocations", "ws-prod/connections"]
        with (folder / "reports-out" / focus.replace("focus-", "billing-")).open() as fh:
            billed = sum(Decimal(r["amount_due"]) for r in csv.DictReader(fh))
        assert sum(Decimal(r["BilledCost"]) for r in focus_rows) == billed
        for name in names:
            assert str((folder / "reports-out" / name).resolve()) in result.output
        # The vendor added from config alone: one daily row per project and metric.
        daily = next(n for n in names if n.startswith("daily-") and n.endswith(".csv"))
        rows = (folder / "reports-out" / daily).read_text().splitlines()
        projects = sorted(r.split(",")[2] for r in rows if r.split(",")[1] == "projects")
        assert projects == ["requests:batch.jobs", "requests:mobile_api", "requests:web-app",
                            "storage_gb:batch.jobs", "storage_gb:mobile_api",
                            "storage_gb:web-app"]
        # The history vendor: one interval series per model, its days provisional or not.
        history = sorted(r.split(",")[2] for r in rows if r.split(",")[1] == "openai-usage")
        assert history == ["output_tokens:gpt-4o", "output_tokens:o1-mini"]


def test_demo_fires_an_alert_at_its_own_webhook_receiver_and_prints_it(tmp_path: Path) -> None:
    lines: list[str] = []
    result = run_demo(tmp_path, days=1, rounds=1, echo=lines.append)
    assert [b["state"] for b in result.received] == ["firing"]
    body = result.received[0]
    assert (body["alert"], body["source"], body["metric"], body["limit"]) == (
        "ws-connections-demo", "ws-prod", "connections", 100)
    assert body["text"].startswith("FIRING ws-connections-demo: ws-prod connections at ")
    assert any(line.startswith("alert:     firing ws-connections-demo: ws-prod connections")
               for line in lines)
    assert any("received 1 notification(s)" in line for line in lines)
    assert any(body["id"] in line and body["text"] in line for line in lines)
    assert WEBHOOK_ENV not in os.environ


def test_demo_again_starts_from_a_fresh_database(tmp_path: Path) -> None:
    lines: list[str] = []
    first = run_demo(tmp_path, days=1, rounds=1, echo=lines.append)
    before = counts(first.database)
    second = run_demo(tmp_path, days=1, rounds=1, echo=lines.append)
    # The history ends a minute before "now", so a later run may hold a line more; what
    # shows a fresh database is that nothing of the first run is found again.
    assert second.imported.ok and second.imported.duplicates == 0
    assert second.imported.snapshots >= first.imported.snapshots > 0
    after = counts(second.database)
    assert after["import"] == second.imported.snapshots
    # One round: three snapshot sources, and the history source's 30 days in 10 or 11 pages.
    assert after["collect"] == before["collect"] and 3 + 10 <= after["collect"] <= 3 + 11
    # Without a report builder the demo prints what is stored instead.
    assert any("ws-prod/connections:" in line for line in lines)


def test_the_commands_demo_sh_prints_under_try_run_when_pasted_into_a_new_shell(
        tmp_path: Path) -> None:
    # A new shell: no venv on PATH, nothing of ours in the environment, another folder.
    clean = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path),
             "LANG": "C.UTF-8"}
    demo = subprocess.run(
        ["bash", str(REPO / "scripts" / "demo.sh"), "--dir", str(tmp_path / "demo"),
         "--days", "1"],
        env=clean, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert demo.returncode == 0, demo.stderr
    lines = demo.stdout.splitlines()
    tries = lines[next(i for i, ln in enumerate(lines) if ln.endswith("Try:")) + 1:]
    assert len(tries) == 2 and all(t.startswith("  ") for t in tries), lines
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    billing, export = (subprocess.run(["bash", "-c", line.strip()], env=clean, cwd=elsewhere,
                                      capture_output=True, text=True, timeout=300)
                       for line in tries)
    assert billing.returncode == 0, billing.stderr
    assert [Path(p).name[:7] for p in billing.stdout.split()] == ["billing", "billing"]
    assert all(Path(p).is_file() for p in billing.stdout.split())
    assert export.returncode == 0, export.stderr
    assert export.stdout.splitlines()[0] == "observed_at,source,metric,value,limit,status,bucket_start,bucket_end,revisions"
    assert len(export.stdout.splitlines()) > 100
