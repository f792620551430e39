"""Shared fixtures: real SQLite files, throwaway PostgreSQL databases, the simulated vendor.

The builders they use live in tests/factories.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from etl.runtime.receiver import WebhookReceiver
from etl.runtime.simulator import SimulatedVendor
from tests.factories import (
    WEBHOOK_SECRET_PATH,
    LoopbackVendor,
    create_pg_database,
    drop_pg_database,
    migrated_engine,
)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_db_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """URL of an empty database, once per engine."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'usage.db'}"
        return
    url = create_pg_database()
    try:
        yield url
    finally:
        drop_pg_database(url)


@pytest.fixture(autouse=True)
def own_pacing_folder(tmp_path_factory: pytest.TempPathFactory,
                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test paces its credentials in a folder of its own (processes it starts inherit it).

    The default per-user folder is shared by every usage-etl process of the machine, so tests
    reusing one simulator credential would spend each other's 12 requests a minute.
    """
    monkeypatch.setenv("USAGE_ETL_PACING_DIR", str(tmp_path_factory.mktemp("pacing")))


@pytest.fixture
def sqlite_url(tmp_path) -> str:  # type: ignore[no-untyped-def]
    return f"sqlite:///{tmp_path / 'usage.db'}"


@pytest.fixture
def pg_url() -> Iterator[str]:
    url = create_pg_database()
    try:
        yield url
    finally:
        drop_pg_database(url)


@pytest.fixture
def engine(empty_db_url: str) -> Iterator[Engine]:
    """A migrated database on each engine."""
    with migrated_engine(empty_db_url) as eng:
        yield eng


# --- the simulated vendor (etl.runtime.simulator), for collector, scheduler and demo tests ---------


@pytest.fixture
def simulator() -> Iterator[SimulatedVendor]:
    """A running SimulatedVendor on a free loopback port, with credentials unique to the test.

    Unique credentials keep the process-wide pacer and the simulator's rate window of one
    test from touching another's.
    """
    sim = SimulatedVendor(
        port=0, tokens=(f"ws-tok-{uuid.uuid4().hex}",), api_keys=(f"nk-key-{uuid.uuid4().hex}",)
    )
    with sim:
        yield sim

# --- alert receivers ---------------------------------------------------------------------------



@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    """A webhook receiver on a free loopback port whose URL carries a secret path."""
    rec = WebhookReceiver(path=WEBHOOK_SECRET_PATH).start()
    try:
        yield rec
    finally:
        rec.stop()


# --- disks that fill up or refuse writes (real mounts: tmpfs and read-only bind mounts) -----

import subprocess  # noqa: E402


def _mount(*args: str) -> str | None:
    """Run mount(8); None if it worked, else why not (not root, no mount namespace...)."""
    try:
        done = subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30,
                              check=False)
    except OSError as exc:
        return str(exc)
    return None if done.returncode == 0 else (done.stderr.strip() or f"exit {done.returncode}")


@pytest.fixture
def small_disk(tmp_path) -> Iterator[Callable[[int], Path]]:  # type: ignore[no-untyped-def]
    """A factory of empty folders each on a tmpfs of the given size in bytes (skips unless
    the tests may mount, as root can)."""
    mounted: list[Path] = []

    def make(size: int) -> Path:
        folder = tmp_path / f"disk{len(mounted)}"
        folder.mkdir()
        problem = _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder))
        if problem:
            pytest.skip(f"cannot mount a small tmpfs: {problem}")
        mounted.append(folder)
        return folder

    try:
        yield make
    finally:
        for folder in mounted:
            subprocess.run(["umount", "-l", str(folder)], check=False, timeout=30)


@pytest.fixture
def read_only_folder(tmp_path) -> Iterator[Callable[[Path], Path]]:  # type: ignore[no-untyped-def]
    """A factory making a read-only view (bind mount) of a folder; skips unless tests may mount."""
    mounted: list[Path] = []

    def make(source: Path) -> Path:
        view = tmp_path / f"ro{len(mounted)}"
        view.mkdir()
        problem = _mount("--bind", str(source), str(view))
        if problem:
            pytest.skip(f"cannot bind-mount: {problem}")
        mounted.append(view)
        problem = _mount("-o", "remount,bind,ro", str(view))
        if problem:
            pytest.skip(f"cannot remount read-only: {problem}")
        return view

    try:
        yield make
    finally:
        for view in reversed(mounted):
            subprocess.run(["umount", "-l", str(view)], check=False, timeout=30)


@pytest.fixture
def loopback_vendor() -> Iterator[LoopbackVendor]:
    """A loopback HTTP server whose answers the test sets (tests/factories.LoopbackVendor)."""
    server = LoopbackVendor()
    try:
        yield server
    finally:
        server.stop()
