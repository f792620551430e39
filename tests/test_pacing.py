"""Pacing shared by every usage-etl process of a host: state files under flock, real processes."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import select

from etl.collect.pacing import (
    PACING_DIR_ENV,
    STALE_FILE_SECONDS,
    PacerRegistry,
    SharedPacer,
    default_pacing_dir,
    prepare_folder,
)
from etl.collect.poll import Collector
from etl.runtime.simulator import SimulatedVendor
from etl.store.engine import make_engine, upgrade
from etl.store.models import CollectionAttempt
from tests.factories import FakeClock, sim_source, write_sim_config

WS_RATE = (12, 60.0)


# A margin so wide that the 12-per-minute window spans the whole test however slowly the
# machine runs it: without it, fourteen processes taking over 61 s would each find a free slot.
WIDE_MARGIN = 3600.0

# `usage-etl collect --source ws` for real, with the process-wide registry's margin widened
# (the one change from `python -m etl`), so that the window outlasts any machine's pace.
COLLECT_WIDE_WINDOW = f"""
import sys
from etl.cli import main
from etl.collect.pacing import PACERS
PACERS.margin = {WIDE_MARGIN}
main()
"""


def collect_process(config: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", COLLECT_WIDE_WINDOW, "--config", config, "collect", "--source", "ws"],
        capture_output=True, text=True, timeout=300, check=False, env=env,
    )


def test_fourteen_collect_runs_send_at_most_twelve_requests(
    simulator: SimulatedVendor, sqlite_url: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The audited case: 14 `usage-etl collect --source ws` back to back gave 12 successes
    # then 429s. Here two streams of 7 real processes race on one credential.
    config = write_sim_config(tmp_path / "c.toml", simulator, sqlite_url, monkeypatch)
    env = {**os.environ, PACING_DIR_ENV: str(tmp_path / "pacing")}
    # Schema first: two processes creating it at once on an empty SQLite file collide.
    engine = make_engine(sqlite_url)
    upgrade(engine)
    engine.dispose()
    with ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(lambda _: [collect_process(config, env) for _ in range(7)],
                             range(2)))
    procs = runs[0] + runs[1]
    assert sorted(p.returncode for p in procs) == [0] * 12 + [1] * 2, [p.stderr[-800:] for p in procs if p.returncode]
    assert simulator.request_count(vendor="wiresocket") == 12
    assert simulator.request_count(status=429) == 0
    engine = make_engine(sqlite_url)
    with engine.connect() as conn:
        rows = conn.execute(
            select(CollectionAttempt.outcome, CollectionAttempt.http_status,
                   CollectionAttempt.tries, CollectionAttempt.error)
        ).all()
    engine.dispose()
    assert sorted(r.outcome for r in rows) == ["ok"] * 12 + ["rate_limited"] * 2
    for r in rows:
        if r.outcome == "rate_limited":
            assert (r.http_status, r.tries) == (None, 0)
            assert r.error.startswith("not sent: this credential may make at most 12 requests "
                                      f"per {60 + WIDE_MARGIN:g} s")
    refused = [p.stdout for p in procs if p.returncode == 1]
    assert all("rate_limited" in out and "0 tries" in out for out in refused)


RESERVE_SCRIPT = """
import sys
from etl.collect.pacing import PacerRegistry
registry = PacerRegistry(shared=True, directory=sys.argv[1], margin=float(sys.argv[2]))
pacer = registry.get("wiresocket", "two-process-token", (12, 60.0))
sys.stdin.readline()  # start together
print(sum(pacer.reserve(0.0) is not None for _ in range(20)))
"""


def test_two_processes_share_one_window(tmp_path: Path) -> None:
    # The wide margin: however long the interpreters take, all 40 tries fall in one window.
    procs = [subprocess.Popen([sys.executable, "-c", RESERVE_SCRIPT, str(tmp_path),
                               str(WIDE_MARGIN)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate("go\n", timeout=60)[0] for p in procs]
    granted = [int(out) for out in outs]
    assert sum(granted) == 12, granted
    # And this process, a third, finds the window full as well.
    pacer = PacerRegistry(shared=True, directory=tmp_path, margin=WIDE_MARGIN).get(
        "wiresocket", "two-process-token", WS_RATE)
    assert pacer.reserve(0.0) is None


def test_separate_registries_on_one_folder_keep_a_credential_at_12_per_minute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Two registries stand for two processes (each its own memory, one folder); a fake
    # clock shared with the simulator stands in for five minutes.
    clock = FakeClock()
    with SimulatedVendor(tokens=("shared-file-token",), clock=clock.time) as sim:
        sources = [sim_source(sim, "wiresocket", monkeypatch, name=f"ws-{i}", interval=5)
                   for i in range(2)]
        collectors = [
            Collector([src], pacers=PacerRegistry(clock.time, shared=True, directory=tmp_path),
                      clock=clock.time, sleep=clock.sleep)
            for src in sources
        ]
        outcomes = []
        for _ in range(60):
            for collector, src in zip(collectors, sources, strict=True):
                outcomes.append(collector.poll(src).outcome)
            clock.sleep(5)
        for collector in collectors:
            collector.close()
        sent = sorted(r.at for r in sim.records)
    assert sim.request_count(status=429) == 0
    assert set(outcomes) == {"ok", "rate_limited"}
    assert len(sent) >= 12 * 4
    for i, at in enumerate(sent):
        assert len([t for t in sent[i:] if t < at + 60]) <= 12


def test_state_file_is_named_by_a_hash_and_private(tmp_path: Path) -> None:
    secret = "file-name-secret-token"
    folder = tmp_path / "pacing"
    pacer = PacerRegistry(shared=True, directory=folder).get("nected", secret, (10, 60.0))
    assert isinstance(pacer, SharedPacer)
    assert pacer.reserve(0.0) == 0.0
    (path,) = folder.iterdir()
    assert secret not in path.name and secret not in path.read_text()
    assert path.name.startswith("nected-") and path.suffix == ".pace"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # One send time, after the header line (the clocks' difference and the boot it was in).
    header, *sends = path.read_text().splitlines()
    assert header.startswith("o ") and len(sends) == 1
    assert float(sends[0]) == pytest.approx(pacer.sent_times()[0], abs=1e-6)


def test_default_folder_is_per_user_in_temp_and_env_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(PACING_DIR_ENV, raising=False)
    assert default_pacing_dir() == Path(tempfile.gettempdir()) / f"usage-etl-pacing-{os.getuid()}"
    monkeypatch.setenv(PACING_DIR_ENV, str(tmp_path / "mine"))
    assert default_pacing_dir() == tmp_path / "mine"
    # The registry reads the variable at each lookup.
    registry = PacerRegistry(shared=True)
    assert isinstance(pacer := registry.get("wiresocket", "env-token", WS_RATE), SharedPacer)
    assert pacer.path.parent == tmp_path / "mine"


def test_unusable_folder_falls_back_to_process_pacing_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    registry = PacerRegistry(lambda: 1000.0, shared=True, directory=blocker / "pacing")
    pacers = [registry.get("wiresocket", f"token-{i}", WS_RATE) for i in range(2)]
    assert not any(isinstance(p, SharedPacer) for p in pacers)
    assert [pacers[0].reserve(0.0) is not None for _ in range(13)] == [True] * 12 + [False]
    warnings = [r for r in caplog.records if r.name == "etl.collect.pacing"]
    assert len(warnings) == 1 and PACING_DIR_ENV in warnings[0].getMessage()


def test_folder_owned_by_someone_else_is_refused(tmp_path: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(OSError):
        prepare_folder(link, check_owner=True)


def test_files_unused_for_a_day_are_swept(tmp_path: Path) -> None:
    old, fresh = tmp_path / "wiresocket-old.pace", tmp_path / "wiresocket-new.pace"
    for path in (old, fresh):
        path.write_text(f"{time.time():.6f}\n")
    stale = time.time() - STALE_FILE_SECONDS - 60
    os.utime(old, (stale, stale))
    prepare_folder(tmp_path, check_owner=True)
    assert not old.exists() and fresh.exists()


def test_torn_or_foreign_lines_in_a_state_file_are_ignored(tmp_path: Path) -> None:
    now = float(int(time.time()))  # whole seconds: the file's 6 decimals hold it exactly
    # A clock that stands still: the eleven sends stay inside the window however slow we are.
    pacer = PacerRegistry(lambda: now, shared=True, directory=tmp_path).get(
        "wiresocket", "torn", WS_RATE)
    assert isinstance(pacer, SharedPacer)
    # Eleven recent sends, a torn line, one from a clock stepped back by hours, garbage.
    lines = [f"{now - i:.6f}" for i in range(11)] + ["17000", f"{now + 7200:.6f}", "x"]
    pacer.path.write_text("\n".join(lines) + "\n")
    assert pacer.reserve(0.0) == 0.0  # the twelfth
    assert pacer.reserve(0.0) is None
    assert len([line for line in pacer.path.read_text().splitlines()
                if not line.startswith("o ")]) == 12


def test_the_in_process_fast_path_does_not_open_the_file_when_full(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    frozen = float(int(time.time()))  # twelve sends and the refusal at one instant, however slow we are
    pacer = PacerRegistry(lambda: frozen, shared=True, directory=tmp_path).get(
        "wiresocket", "fast", WS_RATE)
    assert isinstance(pacer, SharedPacer)
    assert all(pacer.reserve(0.0) is not None for _ in range(12))
    # With its own window full, a refusal needs no file: even a vanished folder is fine.
    pacer.path.unlink()
    tmp_path.chmod(0o500)
    try:
        assert pacer.reserve(30.0) is None
    finally:
        tmp_path.chmod(0o700)
    assert not any(r.name == "etl.collect.pacing" for r in caplog.records)
