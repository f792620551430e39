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
    copy_sqlite_template,
    create_pg_database,
    discard_pg_database,
    finish_pg_drops,
    migrated_engine,
    migrated_template,
)

# The slowest tests, slowest first (from `pytest --durations=60 -n 3`, 2026-12-07, after
# the wide tests went to 300 series and the read-only CLI loop in-process). They run
# first, so a parallel run (scripts/test.sh hands workers one test at a time:
# --maxschedchunk 1) does not end with one worker alone on a minute-long test. Only the order
# changes: a name missing here, or stale, makes a run longer, never skips anything.
SLOWEST_FIRST = (
    "test_benchmarks_quick.py::test_quick_benchmark_writes_every_figure",
    "test_reports_many.py::test_counters_at_once_equal_each_series_on_its_own_with_resets_and_predecessors",  # noqa: E501
    "test_reports_many.py::test_the_daily_table_column_wise_equals_each_rows_figures",
    "test_rollups.py::test_warm_equals_cold_after_any_late_out_of_order_writes",
    "test_reports_many.py::test_gauges_at_once_equal_each_series_on_its_own",
    "test_demo.py::test_the_commands_demo_sh_prints_under_try_run_when_pasted_into_a_new_shell",
    "test_archive.py::test_a_line_split_around_its_body_reads_as_the_whole_line",
    "test_year_of_history.py::test_a_year_of_history_compacts_exports_and_retires_with_every_line_and_sample_accounted",  # noqa: E501
    "test_collect.py::test_no_credential_in_output_logs_database_or_files",
    "test_alerts_daemon.py::test_a_notification_pending_when_the_daemon_is_killed_is_delivered_after_restart",  # noqa: E501
    "test_debug_logging.py::test_the_daemon_at_debug_level_delivers_without_printing_the_webhook_url",  # noqa: E501
    "test_scheduler.py::test_daemon_polls_on_schedule_survives_a_locked_sqlite_and_stops_on_sigterm",  # noqa: E501
    "test_vendor_plugins.py::test_a_plugin_kind_is_configured_collected_stored_and_reported",
    "test_replaced_database.py::test_the_daemon_keeps_storing_after_its_sqlite_file_is_deleted",
    "test_alerts_daemon.py::test_a_receiver_that_never_answers_does_not_delay_polling",
    "test_debug_logging.py::test_alerts_at_debug_level_print_the_request_line_without_the_webhook_url",  # noqa: E501
    "test_replicas.py::test_two_daemons_never_poll_a_source_twice_in_one_interval",
    "test_pacing.py::test_fourteen_collect_runs_send_at_most_twelve_requests",
    "test_notebooks.py::test_usage_analysis_runs_on_the_demo",
    "test_read_only_databases.py::test_every_read_command_gives_the_same_figures_on_a_read_only_database",  # noqa: E501
    "test_disks.py::test_schedule_on_a_read_only_file_system_says_read_only_and_exits_1",
    "test_alerts_daemon.py::test_two_daemon_replicas_send_one_notification_per_event",
    "test_disks.py::test_an_import_into_a_database_on_a_full_disk_is_one_line",
    "test_scheduler.py::test_postgres_outage_through_a_cut_proxy_loses_nothing",
    "test_focus_invoice.py::test_without_pyarrow_a_focus_csv_still_reconciles_and_parquet_names_the_extra",  # noqa: E501
    "test_scheduler.py::test_daemon_started_while_the_database_is_down_spools_and_loses_nothing",
    "test_many_sources.py::test_ten_thousand_sources_use_a_bounded_pool_and_stop_within_the_timeout",  # noqa: E501
    "test_disks.py::test_an_export_onto_a_full_disk_is_one_line_and_leaves_no_partial_file",
    "test_scheduler.py::test_spool_has_one_owner_and_a_crash_leftover_is_kept",
    "test_migrations.py::test_an_installed_wheel_upgrades_a_database_with_migrations_inside_the_package",  # noqa: E501
    "test_wide_vendors.py::test_past_its_bound_the_daily_table_lists_the_series_that_matter_and_sums_up_the_rest",  # noqa: E501
    "test_disks.py::test_an_import_into_a_database_whose_disk_filled_up_names_it",
    "test_alert_senders.py::test_two_alerts_check_runs_with_a_slow_receiver_post_each_notification_once",  # noqa: E501
    "test_layers.py::test_importing_a_side_loads_nothing_of_the_other_sides",
    "test_layers.py::test_reports_modules_never_load_the_http_side_at_run_time",
    "test_bulk.py::test_bulk_agrees_with_store_observations_on_random_batches",
    "test_disks.py::test_schedule_started_while_the_database_disk_is_full_starts_spool_only",
    "test_locked_database.py::test_a_report_reads_a_locked_database_and_says_nothing_was_cached",
    "test_disks.py::test_a_report_into_a_read_only_folder_is_one_line_and_writes_nothing",
    "test_echoed_secrets.py::test_collect_output_and_stored_attempts_mask_every_echoed_encoding",
    "test_store.py::test_processes_starting_together_on_a_new_database_all_get_the_schema",
    "test_disks.py::test_a_report_into_a_full_folder_is_one_line_and_leaves_no_partial_file",
    "test_disks.py::test_a_database_on_a_read_only_file_system_is_read_and_a_write_names_it",
    "test_demo.py::test_demo_command_builds_everything_and_says_where",
    "test_scheduler.py::test_sigterm_waits_for_an_in_flight_poll",
    "test_echoed_secrets.py::test_schedule_debug_log_masks_every_echoed_encoding",
)


SCALE_MARKER = (
    "scale: a larger-size variant of what smaller tests already exercise through the same "
    "library calls (a year of history, the benchmark harness at toy sizes); run by "
    "scripts/test.sh, skipped at the declared minimum versions (scripts/test-minimums.sh "
    "passes -m 'not scale'), where each library call path is still covered by the smaller "
    "tests (README, the paragraph on CI)."
)


VARIANT_MARKER = (
    "variant: a case of a parametrized test whose other cases make the same library calls "
    "with other data, one unmarked case holding all of it (the database-URL password with "
    "every special character at once); skipped at the declared minimum versions like `scale` "
    "(scripts/test-minimums.sh), run by scripts/test.sh."
)

# The minimums' run also draws fewer examples in property tests: examples in tests/factories.py.


def pytest_configure(config: pytest.Config) -> None:
    """Register the `scale` and `variant` markers (their texts say what they mean)."""
    config.addinivalue_line("markers", SCALE_MARKER)
    config.addinivalue_line("markers", VARIANT_MARKER)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Put SLOWEST_FIRST's tests (each parameter too) first, in its order; the rest keep theirs."""
    rank = {"tests/" + name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("[", 1)[0], len(rank)))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_db_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """URL of an empty database, once per engine.

    For a test using the `engine` fixture, which migrates this database before the test
    starts, it is a copy of a migrated template instead (the same schema, made faster).
    """
    migrated = "engine" in request.fixturenames
    if request.param == "sqlite":
        path = tmp_path / "usage.db"
        if migrated:
            copy_sqlite_template(path)
        yield f"sqlite:///{path}"
        return
    url = create_pg_database(template=migrated_template("postgresql") if migrated else None)
    try:
        yield url
    finally:
        discard_pg_database(url)


def pytest_sessionfinish() -> None:
    """Drop the throwaway databases still queued (tests/factories.discard_pg_database)."""
    finish_pg_drops()


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
        discard_pg_database(url)


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
