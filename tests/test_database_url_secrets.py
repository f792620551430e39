"""Secrets in database URLs (SPEC 3 amended): a password pasted unescaped, with `@ : / # % ?`,
is read as the password (never as part of the host), appears in no message or log, and a URL
that cannot be parsed is a bad config (exit 2, naming where it came from), never a database
taken for down. PostgreSQL only: SQLite URLs hold no password."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from etl.config import normalize_url
from etl.runtime.simulator import SimulatedVendor
from tests.daemon import PATIENCE, daemon_env, log_events, start_daemon, stop_daemon, wait_for
from tests.factories import REPO, usage_etl_in_process, write_config, write_daemon_config

SPECIALS = ["@", ":", "/", "#", "%", "?", "@:/#%?"]
# Each special alone makes the same calls as all of them at once: at the minimums only that
# case runs its commands (the `variant` marker, tests/conftest.py).
ALL_AT_ONCE = SPECIALS[-1]
SPECIAL_CASES = [s if s == ALL_AT_ONCE else pytest.param(s, marks=pytest.mark.variant)
                 for s in SPECIALS]
# Nothing listens on port 1 of loopback: every connection is refused at once.
DOWN = "127.0.0.1:1"


def password(special: str) -> str:
    return f"Horse{special}Battery-42"


@pytest.mark.parametrize("special", SPECIALS)
def test_a_password_pasted_unescaped_is_read_as_the_whole_password(special: str) -> None:
    url = make_url(normalize_url(f"postgresql://usage:{password(special)}@db.example:6432/usage"))
    assert (url.username, url.password, url.host, url.port, url.database) == (
        "usage", password(special), "db.example", 6432, "usage")


def test_a_password_already_escaped_is_kept_as_escaped() -> None:
    url = make_url(normalize_url("postgresql://usage:Horse%40Battery%2F42@db.example/usage"))
    assert (url.password, url.host) == ("Horse@Battery/42", "db.example")


def run(cfg: Path, how: str, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`usage-etl --config CFG ARGS...` with `url` given `how`; `schedule` as a real process
    (the daemon), any other command in this process (tests.factories.usage_etl_in_process)."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("USAGE_ETL_DATABASE_URL", None)
    cmd = ["--config", str(cfg)]
    if how == "--database-url":
        cmd += ["--database-url", url]
    elif how == "$USAGE_ETL_DATABASE_URL":
        env["USAGE_ETL_DATABASE_URL"] = url
    else:
        cfg.write_text(f'database_url = "{url}"\n' + cfg.read_text())
    if args[0] != "schedule":
        return usage_etl_in_process(*cmd, *args, env={
            "USAGE_ETL_DATABASE_URL": env.get("USAGE_ETL_DATABASE_URL")})
    return subprocess.run([sys.executable, "-m", "etl", *cmd, *args], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=PATIENCE, check=False)


def fragments(secret: str) -> list[str]:
    """The secret and every piece of it between special characters that could leak alone."""
    pieces = [secret, *[p for p in secret.replace("-", " ").split() if len(p) >= 5]]
    for c in "@:/#%?":
        pieces += [p for p in secret.split(c) if len(p) >= 5]
    return sorted(set(pieces))


@pytest.mark.parametrize("special", SPECIAL_CASES)
def test_no_message_shows_any_part_of_a_password_with_special_characters(
    tmp_path: Path, special: str,
) -> None:
    secret = password(special)
    for how in ("--database-url", "$USAGE_ETL_DATABASE_URL", "database_url"):
        cfg = write_config(tmp_path / "c.toml", {"sources": [
            {"name": "rules", "kind": "nected", "api_key_env": "UNSET_URL_TEST_KEY"}]})
        proc = run(cfg, how, f"postgresql://usage:{secret}@{DOWN}/usage", "status")
        assert proc.returncode == 1, proc.stderr
        assert proc.stderr.startswith(
            f"usage-etl: error: database postgresql+psycopg://usage:***@{DOWN}/usage: "
            "connection failed"), proc.stderr
        for piece in fragments(secret):
            assert piece not in proc.stdout + proc.stderr, (how, piece)


@pytest.mark.parametrize("how", ["--database-url", "$USAGE_ETL_DATABASE_URL", "database_url"])
def test_an_unparsable_database_url_is_a_bad_config_naming_where_it_came_from(
    tmp_path: Path, how: str,
) -> None:
    secret = "Horse@Battery-42"
    url = f"postgresql://usage:{secret}@127.0.0.1:54x2/usage"  # a port that is no number
    for command in ("status", "schedule"):
        cfg = write_config(tmp_path / "c.toml", {"sources": [
            {"name": "rules", "kind": "nected", "api_key_env": "UNSET_URL_TEST_KEY"}]})
        proc = run(cfg, how, url, command)
        assert proc.returncode == 2, proc.stderr
        where = f"{cfg}: database_url" if how == "database_url" else how
        assert proc.stderr == (f"usage-etl: error: {where}: cannot parse "
                               "'postgresql://usage:***@127.0.0.1:54x2/usage' as a database "
                               "URL\n")
        assert "Battery" not in proc.stdout + proc.stderr


@pytest.mark.postgres
def test_the_daemon_log_shows_no_part_of_the_password(
    tmp_path: Path, simulator: SimulatedVendor,
) -> None:
    secret = password("@:/#%?")
    url = f"postgresql://usage:{secret}@{DOWN}/usage"  # down: spool-only, errors logged
    cfg = write_daemon_config(tmp_path, url, simulator)
    log = tmp_path / "daemon.log"
    proc = start_daemon(cfg, daemon_env(simulator), log)
    try:
        wait_for("a spooled poll", lambda: any(
            e.get("event") == "spooled" for e in log_events(log)))
    finally:
        assert stop_daemon(proc) == 0
    text = log.read_text()
    assert [e["event"] for e in log_events(log)][:1] == ["database-unreachable"]
    for piece in fragments(secret):
        assert piece not in text, piece
