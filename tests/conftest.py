"""Shared fixtures: real SQLite files and throwaway databases on the real PostgreSQL server."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from etl.store.engine import make_engine, upgrade
from etl.store.writer import forget_series_cache

PG_ADMIN_URL = os.environ.get(
    "USAGE_ETL_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
IN_CI = os.environ.get("CI", "").lower() == "true"


def _pg_problem() -> str | None:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install 'usage-etl[postgres]')"
    try:
        eng = create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 3})
        with eng.connect() as conn:
            conn.execute(text("select 1"))
        eng.dispose()
    except Exception as exc:  # noqa: BLE001 - any failure means "no server"
        return f"PostgreSQL at {PG_ADMIN_URL} is not reachable: {str(exc).splitlines()[0]}"
    return None


_PG_PROBLEM: str | None | bool = False


def pg_problem() -> str | None:
    global _PG_PROBLEM
    if _PG_PROBLEM is False:
        _PG_PROBLEM = _pg_problem()
    return _PG_PROBLEM  # type: ignore[return-value]


def require_pg() -> None:
    """Skip (or, with CI=true, fail) when the PostgreSQL server is not there."""
    problem = pg_problem()
    if problem:
        if IN_CI:
            pytest.fail(f"CI=true but {problem}")
        pytest.skip(problem)


def create_pg_database() -> str:
    """Create an empty throwaway database; return its URL."""
    require_pg()
    name = f"usage_etl_t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name


def drop_pg_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


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
    eng = make_engine(empty_db_url)
    upgrade(eng)
    try:
        yield eng
    finally:
        forget_series_cache(eng)
        eng.dispose()


# --- the simulated vendor (etl.runtime.simulator), for collector, scheduler and demo tests ---------

from etl.runtime.simulator import SimulatedVendor  # noqa: E402


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


def write_sim_config(
    path: os.PathLike[str] | str,
    sim: SimulatedVendor,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    *,
    interval: float = 60,
    timeout: float = 5,
    extra: str = "",
) -> str:
    """Write a config with sources `ws` (wiresocket) and `rules` (nected) pointing at `sim`.

    The credentials go into environment variables (set with `monkeypatch`), never the file.
    Returns the config path.
    """
    tag = uuid.uuid4().hex[:8].upper()
    ws_env, nk_env = f"TEST_WS_TOKEN_{tag}", f"TEST_NECTED_KEY_{tag}"
    monkeypatch.setenv(ws_env, sim.token)
    monkeypatch.setenv(nk_env, sim.api_key)
    text = (
        f'database_url = "{database_url}"\n'
        'timezone = "UTC"\n\n'
        "[[sources]]\n"
        'name = "ws"\nkind = "wiresocket"\n'
        f'base_url = "{sim.base_url}"\ntoken_env = "{ws_env}"\n'
        f"interval_seconds = {interval}\ntimeout_seconds = {timeout}\n\n"
        "[[sources]]\n"
        'name = "rules"\nkind = "nected"\n'
        f'base_url = "{sim.base_url}"\napi_key_env = "{nk_env}"\n'
        f"interval_seconds = {interval}\ntimeout_seconds = {timeout}\n"
        + extra
    )
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    return str(path)


# --- alert receivers ---------------------------------------------------------------------------

from etl.runtime.receiver import WebhookReceiver  # noqa: E402

# The secret part of the receiver's URL: it must never show up in logs, rows or reports.
WEBHOOK_SECRET_PATH = "/hooks/T0KEN-s3cr3t-path"


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


def fill_disk(folder: Path) -> None:
    """Write into `folder` until its file system has no byte left."""
    with open(folder / "filler", "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 4096)
        except OSError:
            pass
        try:
            while True:  # the last partial block
                fh.write(b"\0")
        except OSError:
            pass


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
