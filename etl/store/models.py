"""The database schema as SQLAlchemy Core tables on one MetaData; Alembic migrations must reproduce it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar, cast

from sqlalchemy import (
    BigInteger,
    Column,
    ColumnClause,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.types import TypeDecorator, TypeEngine

from etl.timefmt import from_micros, to_micros
from etl.vendors.types import MAX_METRIC_LEN

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

_T = TypeVar("_T")


class UtcDateTime(TypeDecorator[datetime]):
    """A UTC instant, always timezone-aware in Python.

    PostgreSQL stores it as ``timestamptz``. SQLite has no timestamp type, so it is stored
    there as integer microseconds since the epoch: compact, exact, ordered, and cheap to
    range-scan, which matters at millions of samples.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        """INTEGER microseconds on SQLite, timestamptz on PostgreSQL."""
        if dialect.name == "sqlite":
            return dialect.type_descriptor(BigInteger())
        return dialect.type_descriptor(DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        """An aware datetime to the column's type.

        Raises:
            TypeError: not a datetime.
            ValueError: a naive datetime (no timezone).
        """
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"UtcDateTime needs a datetime, got {type(value).__name__}")
        if value.tzinfo is None:
            raise ValueError("UtcDateTime needs a timezone-aware datetime")
        if dialect.name == "sqlite":
            return to_micros(value)
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        """The stored value as an aware UTC datetime."""
        if value is None:
            return None
        if dialect.name == "sqlite":
            return from_micros(value)
        assert isinstance(value, datetime)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


# SQLite only autoincrements an INTEGER PRIMARY KEY, so ids are BIGINT elsewhere.
BigId = BigInteger().with_variant(Integer(), "sqlite")


# The helpers' columns are typed as ColumnClause, what a query sees: SQLAlchemy 2.1 types a
# Column read from a class as unusable (it means its TypedColumns to be read from `table.c`).
def column(type_: TypeEngine[_T], *args: ForeignKey, **kwargs: Any) -> ColumnClause[_T]:
    """A NOT NULL column of a `Base` subclass, named after its attribute."""
    return Column(type_, *args, nullable=False, **kwargs)


def nullable(type_: TypeEngine[_T], *args: ForeignKey, **kwargs: Any) -> ColumnClause[_T | None]:
    """A column that may hold NULL (None), named after its attribute."""
    return cast("ColumnClause[_T | None]", Column(type_, *args, nullable=True, **kwargs))


class Base:
    """A table: its columns as typed class attributes (`Sample.observed_at`), its `__table__`.

    Each subclass declares one Core `Table` on the one MetaData, with stable constraint names
    for migrations, from its `__tablename__`, its `column`/`nullable` attributes in order and
    its `__table_args__` (constraints, then an optional dict of table options). The class
    stands for its table wherever SQLAlchemy takes one (`insert(Sample)`, `.join(Series)`).
    No ORM: rows are plain result rows.
    """

    metadata: ClassVar[MetaData] = MetaData(naming_convention=NAMING)
    __tablename__: ClassVar[str]
    __table__: ClassVar[Table]
    __table_args__: ClassVar[tuple[Any, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        columns = []
        for name, value in vars(cls).items():
            if isinstance(value, Column):
                value.name = value.key = name
                columns.append(value)
        args = list(cls.__table_args__)
        options = args.pop() if args and isinstance(args[-1], dict) else {}
        cls.__table__ = Table(cls.__tablename__, cls.metadata, *columns, *args, **options)

    @classmethod
    def __clause_element__(cls) -> Table:
        """The table, for SQLAlchemy's constructs given the class."""
        return cls.__table__


class Series(Base):
    """A (source, metric) pair; samples refer to it by a small integer key."""

    __tablename__ = "series"
    __table_args__: ClassVar[tuple[Any, ...]] = (UniqueConstraint("source", "metric"),)

    id = column(Integer(), primary_key=True, autoincrement=True)
    source = column(String(64))
    metric = column(String(MAX_METRIC_LEN))
    kind = column(String(16))  # the source's kind (etl.vendors registry)
    metric_type = column(String(8))  # etl.vendors.types.MetricType


class Snapshot(Base):
    """One vendor response, stored as the vendor sent it so history can be re-derived."""

    __tablename__ = "snapshots"
    __table_args__: ClassVar[tuple[Any, ...]] = (UniqueConstraint("source", "observed_at"),)

    id = column(BigId, primary_key=True, autoincrement=True)
    source = column(String(64))
    kind = column(String(16))
    observed_at = column(UtcDateTime())
    received_at = nullable(UtcDateTime())
    origin = column(String(16))  # etl.vendors.types.Origin
    payload = column(Text())  # the body as JSON text
    # History sources (SPEC 10): the request range this page answered; NULL for snapshots.
    window_start = nullable(UtcDateTime())
    window_end = nullable(UtcDateTime())


class Sample(Base):
    """One normalized value of one series at one instant; unique per (series, observed_at)."""

    __tablename__ = "samples"
    # The primary key doubles as the index for time-range reads of one series. SQLite keeps
    # the rows in its order, with no second copy in an index (0007). The columns come 8-byte
    # ones first, so a PostgreSQL row has no alignment padding; with 8 columns its null
    # bitmap fits in the tuple header (0009; docs/performance.md "Where the bytes go").
    __table_args__: ClassVar[tuple[Any, ...]] = (
        PrimaryKeyConstraint("series_id", "observed_at"),
        {"sqlite_with_rowid": False},
    )

    observed_at = column(UtcDateTime(), primary_key=True)
    value = column(Float())
    plan_limit = nullable(Float())
    # History sources (SPEC 10): observed_at is the bucket's start, this its end; the fetch
    # whose value is stored (a later fetch replaces it) and how often its value changed.
    bucket_end = nullable(UtcDateTime())
    fetched_at = nullable(UtcDateTime())
    series_id = column(Integer(), ForeignKey("series.id"), primary_key=True)
    revisions = nullable(Integer())
    status = nullable(String(16))


class HistoryRead(Base):
    """A request range a history source has read (SPEC 10 coverage), at its latest read."""

    __tablename__ = "history_reads"

    source = column(String(64), primary_key=True)
    start_at = column(UtcDateTime(), primary_key=True)
    end_at = column(UtcDateTime(), primary_key=True)
    read_at = column(UtcDateTime())


class HistoryMark(Base):
    """A history source's read-up-to point `H` (SPEC 10): polls read on from H - lookback."""

    __tablename__ = "history_marks"

    source = column(String(64), primary_key=True)
    read_up_to = column(UtcDateTime())


class CollectionAttempt(Base):
    """Every poll of a vendor, successful or not."""

    __tablename__ = "collection_attempts"
    __table_args__: ClassVar[tuple[Any, ...]] = (Index(None, "source", "started_at"),)

    id = column(BigId, primary_key=True, autoincrement=True)
    source = column(String(64))
    started_at = column(UtcDateTime())
    finished_at = column(UtcDateTime())
    # etl.vendors.types.Outcome; kept as text so a new outcome needs no migration
    outcome = column(String(32))
    http_status = nullable(Integer())
    latency_ms = nullable(Float())
    tries = column(Integer(), default=1)
    samples_stored = column(Integer(), default=0)
    error = nullable(Text())  # secrets redacted


class SourceState(Base):
    """What the scheduler remembers per source between polls (pauses after auth failures)."""

    __tablename__ = "source_state"

    source = column(String(64), primary_key=True)
    consecutive_failures = column(Integer(), default=0)
    paused_until = nullable(UtcDateTime())
    pause_reason = nullable(Text())
    updated_at = column(UtcDateTime())


class RollupDirty(Base):
    """A span of one series' history that changed since its daily rollups were computed."""

    __tablename__ = "rollup_dirty"

    id = column(BigId, primary_key=True, autoincrement=True)
    series_id = column(Integer())
    start_at = column(UtcDateTime())
    end_at = column(UtcDateTime())


class RollupDay(Base):
    """One series' daily report row for one day in one timezone, as the reports compute it."""

    __tablename__ = "rollup_days"

    series_id = column(Integer(), primary_key=True)
    tz = column(String(64), primary_key=True)
    day = column(String(10), primary_key=True)  # YYYY-MM-DD, local
    # The day as UTC instants, so a changed span finds its days without timezone arithmetic.
    day_start = column(UtcDateTime())
    day_end = column(UtcDateTime())
    staleness = column(Float())  # seconds; a config change invalidates
    data = column(Text())  # the row as JSON (exact floats)


class AlertSeriesState(Base):
    """Where one alert stands for one series (SPEC 8); `version` counts its changes.

    Evaluators change a row only where its version is the one they read, so of several
    replicas or cron runs evaluating at once exactly one makes each change.
    """

    __tablename__ = "alert_states"

    alert = column(String(64), primary_key=True)
    source = column(String(64), primary_key=True)
    metric = column(String(MAX_METRIC_LEN), primary_key=True)  # '' for stale alerts
    state = column(String(8))  # ok | pending | firing
    since = nullable(UtcDateTime())
    notified_at = nullable(UtcDateTime())
    version = column(Integer())
    updated_at = column(UtcDateTime())


class AlertEvent(Base):
    """One state change of one alert and series, kept as history; `id` is the payload's."""

    __tablename__ = "alert_events"
    __table_args__: ClassVar[tuple[Any, ...]] = (
        # Each change is made once: the version it produced is unique per series.
        UniqueConstraint("alert", "source", "metric", "version"),
        Index(None, "at"),
    )

    id = column(String(36), primary_key=True)
    alert = column(String(64))
    source = column(String(64))
    metric = column(String(MAX_METRIC_LEN))
    version = column(Integer())
    # pending | cleared | firing | repeat | resolved
    transition = column(String(16))
    since = nullable(UtcDateTime())
    at = column(UtcDateTime())
    payload = column(Text())  # the notification body as JSON


class AlertDelivery(Base):
    """The outbox: one event to one notifier, stored before it is sent, retried until done."""

    __tablename__ = "alert_deliveries"
    __table_args__: ClassVar[tuple[Any, ...]] = (
        UniqueConstraint("event_id", "notifier"),
        Index(None, "delivered_at", "next_attempt_at"),
    )

    id = column(BigId, primary_key=True, autoincrement=True)
    event_id = column(String(36), ForeignKey("alert_events.id"))
    notifier = column(String(64))
    created_at = column(UtcDateTime())
    attempts = column(Integer(), default=0)
    next_attempt_at = column(UtcDateTime())
    # A sender holds the row until then, so replicas do not send it twice at once.
    lease_until = nullable(UtcDateTime())
    delivered_at = nullable(UtcDateTime())
    gave_up_at = nullable(UtcDateTime())
    last_error = nullable(Text())  # never a secret


class RetiredHistory(Base):
    """Samples of a series observed before `before` were retired (SPEC 13, samples_days).

    Its last sample before that instant is kept, so a counter's first increase after the
    retired part still has its predecessor.
    """

    __tablename__ = "retired_history"

    series_id = column(Integer(), primary_key=True)
    before = column(UtcDateTime())
