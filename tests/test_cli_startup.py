"""Start-up of the `usage-etl` command: each command loads only the libraries it uses.

Checked in fresh interpreters (what a user's shell runs), by the modules loaded, not by time:
the time is a benchmark (benchmarks/startup.py), not a test.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from etl.store.engine import head_revision, newest_revision_in_scripts, open_database
from tests.factories import REPO

# And usage-etl's own config package (vendor kinds, billing and alert rules, currency codes):
# only the commands that read a config load it. SQLAlchemy's ORM: no command maps classes (the
# tables are Core tables). iso4217 builds its enum from the whole ISO table at import: only a
# minor unit asks for it (a [[credits]] amount is checked against its currency's, a charge is
# rounded to it). "vendor plugins": the installed distributions' entry points scanned for
# plugin kinds, which only an unknown kind or a list of them needs.
HEAVY = {"sqlalchemy", "alembic", "pandas", "numpy", "requests", "urllib3", "matplotlib",
         "jinja2", "apscheduler", "rich", "etl.config", "sqlalchemy.orm", "iso4217",
         "vendor plugins"}

# Runs the CLI as `usage-etl` would, then reports the top-level packages it had loaded (and
# etl.config, the ORM, whether the vendor plugins were looked for).
RUN_AND_LIST = """
import json, sys
from etl.cli import cli
try:
    cli(sys.argv[1:], prog_name="usage-etl")
except SystemExit as exc:
    code = exc.code
loaded = {m.split(".")[0] for m in sys.modules} | ({"etl.config", "sqlalchemy.orm"} & set(sys.modules))
vendors = sys.modules.get("etl.vendors")
if vendors is not None and vendors.KINDS._loaded:
    loaded.add("vendor plugins")
print(json.dumps({"code": code, "loaded": sorted(loaded)}), file=sys.stderr)
"""


def run_cli(*args: str) -> tuple[int, set[str], str]:
    """(exit status, heavy packages loaded, stdout) of `usage-etl ARGS` in a fresh interpreter."""
    proc = subprocess.run([sys.executable, "-c", RUN_AND_LIST, *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300, check=False)
    report = json.loads(proc.stderr.strip().splitlines()[-1])
    return report["code"], set(report["loaded"]) & HEAVY, proc.stdout


def status_config(tmp_path: Path, *, credit: bool = True) -> tuple[Path, Path]:
    db = tmp_path / "usage.db"
    config = tmp_path / "usage-etl.toml"
    config.write_text(
        f'database_url = "sqlite:///{db}"\nspool_dir = "{tmp_path / "spool"}"\n'
        '[[sources]]\nname = "rules"\nkind = "nected"\nbase_url = "http://127.0.0.1:9"\n'
        'api_key_env = "STARTUP_TEST_UNSET_KEY"\ninterval_seconds = 60\n'
        # Prices and (unless `credit` is False) a prepaid credit, as the demo's config has:
        # the credit's amount is checked against USD's minor unit when the config loads.
        '[[billing]]\nsource = "rules"\nmetric = "invocations"\naggregation = "increase"\n'
        'unit_price = "0.002"\ncurrency = "USD"\n'
        + ('[[credits]]\nname = "prepaid"\nsource = "rules"\namount = "400.00"\n'
           'currency = "USD"\ngranted = 2026-11-01\n' if credit else "")
    )
    return config, db


def test_help_and_version_load_no_database_http_or_report_library() -> None:
    for args in (["--help"], ["--version"], ["collect", "--help"], ["report", "--help"]):
        code, heavy, out = run_cli(*args)
        assert (code, heavy) == (0, set()), args
        assert out  # and they did print something
    assert run_cli("--version")[2].startswith("usage-etl, version ")


def test_status_loads_sqlalchemy_and_the_config_but_not_alembic_pandas_http_or_the_orm(
        tmp_path: Path) -> None:
    config, db = status_config(tmp_path)
    open_database(f"sqlite:///{db}").dispose()  # at the newest revision, as after any command
    code, heavy, out = run_cli("--config", str(config), "status")
    assert code == 1  # never polled, so stale
    assert "rules" in out and "stale" in out
    # iso4217 too: loading the config checks the credit's "400.00" against USD's minor unit
    # (SPEC 11), which the package gives: about 0.02 s of status's 0.37 s on the demo.
    assert heavy == {"sqlalchemy", "etl.config", "iso4217"}


def test_status_without_credits_does_not_load_iso4217(tmp_path: Path) -> None:
    # Billing rules name a currency, but only a credit's amount needs its minor unit at load.
    config, db = status_config(tmp_path, credit=False)
    open_database(f"sqlite:///{db}").dispose()
    code, heavy, out = run_cli("--config", str(config), "status")
    assert code == 1 and "rules" in out
    assert heavy == {"sqlalchemy", "etl.config"}


def test_status_on_an_empty_database_still_creates_the_schema(tmp_path: Path) -> None:
    config, db = status_config(tmp_path)
    code, heavy, out = run_cli("--config", str(config), "status")
    assert code == 1 and "rules" in out
    assert "alembic" in heavy  # the first open migrates
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [
            (head_revision(),)]


def test_a_database_error_in_a_command_is_still_one_line_exit_1(tmp_path: Path) -> None:
    # SQLAlchemy is no longer imported at start-up, yet its errors still become one line.
    config, db = status_config(tmp_path)
    open_database(f"sqlite:///{db}").dispose()
    with sqlite3.connect(db) as conn:
        conn.execute("DROP TABLE collection_attempts")
    proc = subprocess.run([sys.executable, "-m", "etl", "--config", str(config), "status"],
                          cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 1
    # One line naming the database (password masked) and what it said.
    assert proc.stderr.strip().splitlines() == [
        f"usage-etl: error: database sqlite:///{db}: no such table: collection_attempts"]


def test_the_revision_read_from_the_scripts_is_alembics_head() -> None:
    assert newest_revision_in_scripts() == head_revision()
