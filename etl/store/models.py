"""The database schema as SQLAlchemy 2.x models; Alembic migrations must reproduce it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator, TypeEngine

from etl.timefmt import from_micros, to_micros
from etl.vendors.types import MAX_METRIC_LEN

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


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


class Base(DeclarativeBase):
    """The declarative base: one MetaData with stable constraint names for migrations."""
    metadata = MetaData(naming_convention=NAMING)


class Series(Base):
    """A (source, metric) pair; samples refer to it by a small integer key."""

    __tablename__ = "series"
    __table_args__ = (UniqueConstraint("source", "metric"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(64))
    metric: Mapped[str] = mapped_column(String(MAX_METRIC_LEN))
    kind: Mapped[str] = mapped_column(String(16))  # the source's kind (etl.vendors registry)
    metric_type: Mapped[str] = mapped_column(String(8))  # etl.vendors.types.MetricType


class Snapshot(Base):
    """One vendor response, stored as the vendor sent it so history can be re-derived."""

    __tablename__ = "snapshots"
    __table_args__ = (UniqueConstraint("source", "observed_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    observed_at: Mapped[datetime] = mapped_column(UtcDateTime())
    received_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    origin: Mapped[str] = mapped_column(String(16))  # etl.vendors.types.Origin
    payload: Mapped[str] = mapped_column(Text)  # the body as JSON text
    # History sources (SPEC 10): the request range this page answered; NULL for snapshots.
    window_start: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    window_end: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class Sample(Base):
    """One normalized value of one series at one instant; unique per (series, observed_at)."""

    __tablename__ = "samples"
    # The primary key doubles as the index for time-range reads of one series. SQLite keeps
    # the rows in its order, with no second copy in an index (0007). The columns come 8-byte
    # ones first, so a PostgreSQL row has no alignment padding; with 8 columns its null
    # bitmap fits in the tuple header (0009; docs/performance.md "Where the bytes go").
    __table_args__ = (
        PrimaryKeyConstraint("series_id", "observed_at"),
        {"sqlite_with_rowid": False},
    )

    observed_at: Mapped[datetime] = mapped_column(UtcDateTime(), primary_key=True)
    value: Mapped[float] = mapped_column(Float)
    plan_limit: Mapped[float | None] = mapped_column(Float, nullable=True)
    # History sources (SPEC 10): observed_at is the bucket's start, this its end; the fetch
    # whose value is stored (a later fetch replaces it) and how often its value changed.
    bucket_end: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    fetched_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id"), primary_key=True)
    revisions: Mapped[int | None] = mapped_column(Integer, nullable=True)
    status: Mapped[str | None] = mapped_column(String(16), nullable=True)


class HistoryRead(Base):
    """A request range a history source has read (SPEC 10 coverage), at its latest read."""

    __tablename__ = "history_reads"

    source: Mapped[str] = mapped_column(String(64), primary_key=True)
    start_at: Mapped[datetime] = mapped_column(UtcDateTime(), primary_key=True)
    end_at: Mapped[datetime] = mapped_column(UtcDateTime(), primary_key=True)
    read_at: Mapped[datetime] = mapped_column(UtcDateTime())


class HistoryMark(Base):
    """A history source's read-up-to point `H` (SPEC 10): polls read on from H - lookback."""

    __tablename__ = "history_marks"

    source: Mapped[str] = mapped_column(String(64), primary_key=True)
    read_up_to: Mapped[datetime] = mapped_column(UtcDateTime())


class CollectionAttempt(Base):
    """Every poll of a vendor, successful or not."""

    __tablename__ = "collection_attempts"
    __table_args__ = (Index(None, "source", "started_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(UtcDateTime())
    finished_at: Mapped[datetime] = mapped_column(UtcDateTime())
    # etl.vendors.types.Outcome; kept as text so a new outcome needs no migration
    outcome: Mapped[str] = mapped_column(String(32))
    http_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    latency_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    tries: Mapped[int] = mapped_column(Integer, default=1)
    samples_stored: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)  # secrets redacted


class SourceState(Base):
    """What the scheduler remembers per source between polls (pauses after auth failures)."""

    __tablename__ = "source_state"

    source: Mapped[str] = mapped_column(String(64), primary_key=True)
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    paused_until: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    pause_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class RollupDirty(Base):
    """A span of one series' history that changed since its daily rollups were computed."""

    __tablename__ = "rollup_dirty"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    series_id: Mapped[int] = mapped_column(Integer)
    start_at: Mapped[datetime] = mapped_column(UtcDateTime())
    end_at: Mapped[datetime] = mapped_column(UtcDateTime())


class RollupDay(Base):
    """One series' daily report row for one day in one timezone, as the reports compute it."""

    __tablename__ = "rollup_days"

    series_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tz: Mapped[str] = mapped_column(String(64), primary_key=True)
    day: Mapped[str] = mapped_column(String(10), primary_key=True)  # YYYY-MM-DD, local
    # The day as UTC instants, so a changed span finds its days without timezone arithmetic.
    day_start: Mapped[datetime] = mapped_column(UtcDateTime())
    day_end: Mapped[datetime] = mapped_column(UtcDateTime())
    staleness: Mapped[float] = mapped_column(Float)  # seconds; a config change invalidates
    data: Mapped[str] = mapped_column(Text)  # the row as JSON (exact floats)


class AlertSeriesState(Base):
    """Where one alert stands for one series (SPEC 8); `version` counts its changes.

    Evaluators change a row only where its version is the one they read, so of several
    replicas or cron runs evaluating at once exactly one makes each change.
    """

    __tablename__ = "alert_states"

    alert: Mapped[str] = mapped_column(String(64), primary_key=True)
    source: Mapped[str] = mapped_column(String(64), primary_key=True)
    metric: Mapped[str] = mapped_column(String(MAX_METRIC_LEN), primary_key=True)  # '' for stale alerts
    state: Mapped[str] = mapped_column(String(8))  # ok | pending | firing
    since: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    notified_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    version: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class AlertEvent(Base):
    """One state change of one alert and series, kept as history; `id` is the payload's."""

    __tablename__ = "alert_events"
    __table_args__ = (
        # Each change is made once: the version it produced is unique per series.
        UniqueConstraint("alert", "source", "metric", "version"),
        Index(None, "at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    alert: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(64))
    metric: Mapped[str] = mapped_column(String(MAX_METRIC_LEN))
    version: Mapped[int] = mapped_column(Integer)
    # pending | cleared | firing | repeat | resolved
    transition: Mapped[str] = mapped_column(String(16))
    since: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime())
    payload: Mapped[str] = mapped_column(Text)  # the notification body as JSON


class AlertDelivery(Base):
    """The outbox: one event to one notifier, stored before it is sent, retried until done."""

    __tablename__ = "alert_deliveries"
    __table_args__ = (
        UniqueConstraint("event_id", "notifier"),
        Index(None, "delivered_at", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(ForeignKey("alert_events.id"))
    notifier: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime())
    # A sender holds the row until then, so replicas do not send it twice at once.
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    delivered_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    gave_up_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)  # never a secret


class RetiredHistory(Base):
    """Samples of a series observed before `before` were retired (SPEC 13, samples_days).

    Its last sample before that instant is kept, so a counter's first increase after the
    retired part still has its predecessor.
    """

    __tablename__ = "retired_history"

    series_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    before: Mapped[datetime] = mapped_column(UtcDateTime())
