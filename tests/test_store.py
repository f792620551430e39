"""Storage on both engines: uniqueness, timezone-aware timestamps, SQLite pragmas, schema checks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError, StatementError

from etl.errors import InputError, SchemaOutdatedError
from etl.store.engine import downgrade, ensure_schema, make_engine, open_database
from etl.store.models import CollectionAttempt, Sample, Snapshot
from etl.store.writer import record_attempt, store_observations
from etl.vendors.types import Observation
from tests.factories import nected, wiresocket

T0 = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)


def obs(at: datetime, value: float, source: str = "rules") -> Observation:
    return nected(at, value, source=source)


def ws_obs(at: datetime, conns: float) -> Observation:
    return wiresocket(at, conns, 4, source="ws", status="healthy", docs_status="healthy")


def test_same_observation_twice_adds_nothing(engine) -> None:  # type: ignore[no-untyped-def]
    with engine.begin() as conn:
        first = store_observations(conn, [obs(T0, 1000), ws_obs(T0, 82)])
    with engine.begin() as conn:
        again = store_observations(conn, [obs(T0, 1000), ws_obs(T0, 82)])
    assert (first.snapshots, first.samples) == (2, 3)
    assert (again.snapshots, again.samples, again.duplicates) == (0, 0, 3)
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(Sample)) == 3
        assert conn.scalar(select(func.count()).select_from(Snapshot)) == 2


def test_first_observation_of_a_key_wins_and_conflicts_are_reported(engine) -> None:  # type: ignore[no-untyped-def]
    with engine.begin() as conn:
        store_observations(conn, [obs(T0, 1000)])
    with engine.begin() as conn:
        res = store_observations(conn, [obs(T0, 1200), obs(T0 + timedelta(minutes=5), 1300)])
    assert res.samples == 1 and len(res.conflicts) == 1
    assert (res.conflicts[0].stored, res.conflicts[0].offered) == (1000, 1200)
    with engine.connect() as conn:
        assert conn.scalar(select(Sample.value).where(Sample.observed_at == T0)) == 1000


def test_a_repeat_inside_one_batch_is_a_duplicate_and_another_value_a_conflict(engine) -> None:  # type: ignore[no-untyped-def]
    with engine.begin() as conn:
        res = store_observations(conn, [obs(T0, 5), obs(T0, 5), obs(T0, 6)])
    assert (res.samples, res.duplicates, len(res.conflicts)) == (1, 1, 1)


def test_timestamps_come_back_utc_and_aware(engine) -> None:  # type: ignore[no-untyped-def]
    berlin = timezone(timedelta(hours=1))
    at = datetime(2026, 11, 21, 11, 0, 0, 123456, tzinfo=berlin)
    with engine.begin() as conn:
        store_observations(conn, [obs(at, 7)])
        record_attempt(conn, source="rules", started_at=at, outcome="ok", samples_stored=1)
    with engine.connect() as conn:
        stored = conn.scalar(select(Sample.observed_at))
        attempt = conn.scalar(select(CollectionAttempt.started_at))
    assert stored == at and stored.utcoffset() == timedelta(0)
    assert attempt is not None and attempt.tzinfo is not None
    # Range reads compare instants, not wall-clock text.
    with engine.connect() as conn:
        n = conn.scalar(
            select(func.count()).select_from(Sample).where(Sample.observed_at >= T0, Sample.observed_at < T0 + timedelta(hours=1))
        )
    assert n == 1


def test_naive_timestamps_are_refused(engine) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(StatementError, match="timezone-aware") as err:
        with engine.begin() as conn:
            store_observations(conn, [obs(datetime(2026, 1, 1), 1)])
    assert isinstance(err.value.orig, ValueError)
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(Sample)) == 0


def test_sqlite_opens_in_wal_mode_with_foreign_keys_and_a_busy_timeout(sqlite_url: str) -> None:
    engine = open_database(sqlite_url)
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() >= 1000


def test_empty_database_gets_schema_and_old_one_is_refused(empty_db_url: str) -> None:
    engine = open_database(empty_db_url)  # creates the schema
    with engine.begin() as conn:
        store_observations(conn, [obs(T0, 1)])
    downgrade(engine, "base")
    engine2 = make_engine(empty_db_url)
    # Base has no tables at all: an empty database again, created on demand.
    ensure_schema(engine2)
    # Now pretend the schema is behind head by rewriting the version row.
    with engine2.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0000_ancient'"))
    with pytest.raises(SchemaOutdatedError, match="newer than this usage-etl knows"):
        ensure_schema(engine2)


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("sqlite:///{tmp}/no/such/dir/x.db", "does not exist"),
        ("oracle2://x/y", "scheme 'oracle2' is not supported"),
        ("mysql://u:secret-pw@h/db", "scheme 'mysql' is not supported (use sqlite:///PATH or postgresql://"),
        ("postgresql+psycopg2://u@h/db", "scheme 'postgresql+psycopg2' is not supported"),
        ("postgresql://u:secret-pw@host:notaport/db", "cannot parse 'postgresql://u:***@host:notaport/db'"),
        ("not a url", "cannot parse"),
        ("sqlite:///:memory:", "in-memory SQLite database"),
        ("sqlite://", "in-memory SQLite database"),
    ],
)
def test_a_bad_database_url_is_one_line_naming_database_url_without_the_password(tmp_path, url: str, needle: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InputError) as err:
        make_engine(url.format(tmp=tmp_path))
    assert needle in str(err.value)
    assert str(err.value).startswith("database_url: ")
    assert "secret-pw" not in str(err.value)


def test_bad_sqlite_busy_timeout_is_refused(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for bad in ("abc", "-5", "1.5", "30s"):
        monkeypatch.setenv("USAGE_ETL_SQLITE_BUSY_TIMEOUT_MS", bad)
        with pytest.raises(InputError, match=r"^\$USAGE_ETL_SQLITE_BUSY_TIMEOUT_MS: .* whole number"):
            make_engine(sqlite_url)
    monkeypatch.setenv("USAGE_ETL_SQLITE_BUSY_TIMEOUT_MS", "1234")
    engine = open_database(sqlite_url)
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 1234
    engine.dispose()


def test_postgresql_connect_timeout_defaults_to_10s_unless_the_url_sets_one(pg_url: str) -> None:
    for url, expected in ((pg_url, "10"), (pg_url + "?connect_timeout=3", "3")):
        engine = make_engine(url)
        raw = engine.raw_connection()
        try:
            # What libpq was actually given, as the server connection was opened.
            params = raw.driver_connection.info.get_parameters()  # type: ignore[union-attr]
        finally:
            raw.close()
            engine.dispose()
        assert params.get("connect_timeout") == expected


_OPEN_AT_ONCE = """
import sys
from etl.store.engine import current_revision, head_revision, open_database
print("ready", flush=True)
sys.stdin.readline()  # all processes open the new database together, once all have started
engine = open_database(sys.argv[1])
assert current_revision(engine) == head_revision()
engine.dispose()
"""


def test_processes_starting_together_on_a_new_database_all_get_the_schema(  # type: ignore[no-untyped-def]
        empty_db_url, tmp_path) -> None:
    """A daemon, a cron `collect` and a replica may meet on an empty database: none fails."""
    import subprocess
    import sys

    script = tmp_path / "open.py"
    script.write_text(_OPEN_AT_ONCE)
    procs = [subprocess.Popen([sys.executable, str(script), empty_db_url],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
             for _ in range(6)]
    # The go, given only once every interpreter is up, however long that takes.
    assert all(p.stdout is not None and p.stdout.readline() == "ready\n" for p in procs)
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    outputs = [(p.wait(timeout=300), p.stdout.read() if p.stdout else "") for p in procs]
    assert [code for code, _ in outputs] == [0] * 6, outputs
    engine = open_database(empty_db_url)
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM alembic_version")) == 1
    engine.dispose()


def test_a_sample_must_name_a_stored_series_and_a_named_series_cannot_be_deleted(engine) -> None:  # type: ignore[no-untyped-def]
    # On PostgreSQL the rule is kept per statement by triggers (migration 0011), not per row
    # by a foreign key: a statement with one bad row among good ones fails whole, and the
    # error is the same kind (SQLSTATE 23503) with the same constraint name.
    with engine.begin() as conn:
        store_observations(conn, [obs(T0, 1000), ws_obs(T0, 82)])
        good = conn.scalar(select(Sample.series_id).limit(1))
        count = conn.scalar(select(func.count()).select_from(Sample))
    later = T0 + timedelta(minutes=1)
    many_rows = ("INSERT INTO samples (series_id, observed_at, value) "
                 "VALUES (:good, :at, 1), (999999, :at, 2), (:good, :later, 3)")
    for statement, params in (
        (many_rows, {"good": good, "at": later, "later": later + timedelta(minutes=1)}),
        ("UPDATE samples SET series_id = 999999 WHERE series_id = :good", {"good": good}),
        ("DELETE FROM series WHERE id = :good", {"good": good}),
    ):
        with pytest.raises(IntegrityError) as caught, engine.begin() as conn:
            conn.execute(text(statement), params)
        message = str(caught.value.orig)
        if engine.dialect.name == "postgresql":
            assert "fk_samples_series_id_series" in message
            assert caught.value.orig.sqlstate == "23503"
        else:
            assert "FOREIGN KEY constraint failed" in message
    with engine.begin() as conn:  # nothing of the refused statements was kept
        assert conn.scalar(select(func.count()).select_from(Sample)) == count
        assert conn.scalar(text("SELECT count(*) FROM series WHERE id = :good"),
                           {"good": good}) == 1
        # A series no sample names can still go, as the foreign key allowed.
        conn.execute(text("INSERT INTO series (source, metric, kind, metric_type) "
                          "VALUES ('gone', 'm', 'nected', 'counter')"))
        conn.execute(text("DELETE FROM series WHERE source = 'gone'"))
