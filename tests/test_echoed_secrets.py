"""Secrets a vendor echoes back in any encoding (issue 12) never reach output, logs or rows."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from etl.redact import redact, secret_forms
from etl.runtime.simulator import SimulatedVendor
from tests.factories import REPO, usage_etl_in_process

# Each holds "/", "+" and "=": the characters JSON, HTML and URL encodings all rewrite.
WS_TOKEN = "wsTOKa/bcdEF+ghIJK=lmNOP/=="
NK_KEY = "nkKEYq/rsTUV+wxYZa=bcDEF+Q=="


def spellings(secret: str) -> list[str]:
    """Every spelling the simulator echoes, and the pieces between its special characters
    that are long enough to give the secret away."""
    pieces = [p for p in re.split(r"[/+=]", secret) if len(p) >= 5]
    return [*secret_forms(secret), *pieces]


@pytest.mark.parametrize("secret", [WS_TOKEN, NK_KEY, "a&b<c>d\"e'f\\g"])
def test_every_spelling_of_a_secret_is_masked(secret: str) -> None:
    for form in secret_forms(secret):
        assert redact(f"body: {form} end", [secret]) == "body: *** end", form
    # Mixed in one echo, either hex case, and escaped once more inside a JSON log line.
    mixed = "".join(f"&#x{ord(c):x};" if i % 2 else f"%{ord(c):02x}" for i, c in
                    enumerate(secret))
    assert redact(mixed, [secret]) == "***"
    logged = json.dumps({"message": json.dumps(secret).replace("/", "\\/")})
    assert secret not in redact(logged, [secret]) and "***" in redact(logged, [secret])


def test_masking_leaves_other_text_alone() -> None:
    text_ = "HTTP 503: &#x2F; %2F \\/ ws/Tok+en=ab (not all of it) &amp; 100%"
    assert redact(text_, [WS_TOKEN]) == text_


def write_config(tmp: Path, url: str, sim: SimulatedVendor) -> Path:
    cfg = tmp / "usage-etl.toml"
    cfg.write_text(
        f'database_url = "{url}"\nspool_dir = "{tmp / "spool"}"\n'
        "[[sources]]\n"
        f'name = "ws"\nkind = "wiresocket"\nbase_url = "{sim.base_url}"\n'
        'token_env = "ECHO_TEST_WS"\ninterval_seconds = 5\ntimeout_seconds = 3\n'
        "[[sources]]\n"
        f'name = "rules"\nkind = "nected"\nbase_url = "{sim.base_url}"\n'
        'api_key_env = "ECHO_TEST_NK"\ninterval_seconds = 5\ntimeout_seconds = 3\n'
    )
    return cfg


def env(tmp: Path) -> dict[str, str]:
    out = dict(os.environ, ECHO_TEST_WS=WS_TOKEN, ECHO_TEST_NK=NK_KEY, PYTHONPATH=str(REPO),
               USAGE_ETL_PACING_DIR=str(tmp / "pacing"))
    out.pop("USAGE_ETL_DATABASE_URL", None)
    return out


def assert_no_secret(texts: list[str]) -> None:
    for secret in (WS_TOKEN, NK_KEY):
        for form in spellings(secret):
            leaked = [t for t in texts if form in t]
            assert not leaked, (form, leaked[0][:400] if leaked else "")


def stored_errors(url: str) -> list[str]:
    eng = create_engine(url)
    try:
        with eng.connect() as conn:
            return [r[0] or "" for r in conn.execute(text("SELECT error FROM collection_attempts"))]
    except OperationalError:  # the daemon has not created the schema yet
        return []
    finally:
        eng.dispose()


def test_collect_output_and_stored_attempts_mask_every_echoed_encoding(
    empty_db_url: str, tmp_path: Path,
) -> None:
    with SimulatedVendor(tokens=(WS_TOKEN,), api_keys=(NK_KEY,), echo_credential=True) as sim:
        cfg = write_config(tmp_path, empty_db_url, sim)
        texts: list[str] = []
        for fault, vendor in (("unauthorized", "wiresocket"), ("server_error", "nected"),
                              ("unavailable", "nected")):
            sim.set_fault(fault, vendor=vendor, times=1, retry_after="3600")
            # In this process, logging set up as in a new one (usage_etl_in_process).
            proc = usage_etl_in_process("--config", str(cfg), "-vv", "collect",
                                        env={"USAGE_ETL_DATABASE_URL": None, **env(tmp_path)})
            texts += [proc.stdout, proc.stderr]
            assert "***" in proc.stdout + proc.stderr, (fault, proc.stdout, proc.stderr)
        errors = stored_errors(empty_db_url)
    assert sum("***" in e for e in errors) >= 2, errors
    assert_no_secret(texts + errors)


def test_schedule_debug_log_masks_every_echoed_encoding(sqlite_url: str, tmp_path: Path) -> None:
    with SimulatedVendor(tokens=(WS_TOKEN,), api_keys=(NK_KEY,), echo_credential=True) as sim:
        cfg = write_config(tmp_path, sqlite_url, sim)
        # A 500 is retried (a -vv retry line with the body), then 401s pause the source.
        sim.set_fault("server_error", vendor="nected", times=2)
        sim.set_fault("unauthorized", vendor="wiresocket", times=3)
        log = tmp_path / "daemon.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "etl", "--config", str(cfg), "-vv", "schedule"],
            stdout=subprocess.DEVNULL, stderr=log.open("wb"), env=env(tmp_path),
            cwd=tmp_path)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                errors = stored_errors(sqlite_url)
                if len(errors) >= 2 and any("***" in e for e in errors):
                    break
                time.sleep(0.3)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
        errors = stored_errors(sqlite_url)
    logged = log.read_text()
    # The 401 and the retried 500 each log a body with the credential masked.
    assert logged.count("***") >= 2 and any("***" in e for e in errors), (logged[-2000:], errors)
    assert_no_secret([logged, *errors])
