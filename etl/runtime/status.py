"""Per-source health from the collection record: last success, last error, staleness, pauses."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, func, select

from etl.config import Config, SourceConfig
from etl.store.history import read_up_to
from etl.store.models import CollectionAttempt, SourceState
from etl.store.state import last_success, last_successes, pause_holds
from etl.timefmt import utc_human, utc_z
from etl.vendors.types import Outcome

# Attempts that say nothing about the vendor's health.
NOT_AN_ERROR = (Outcome.OK, Outcome.SKIPPED)


@dataclass(frozen=True)
class SourceStatus:
    """What `usage-etl status` shows for one source."""

    source: str
    kind: str
    interval_seconds: float
    staleness_seconds: float
    last_success: datetime | None
    last_error: str | None  # "outcome: message", already redacted when stored
    last_error_at: datetime | None
    consecutive_failures: int
    paused_until: datetime | None
    pause_reason: str | None
    age_seconds: float | None  # since the last success
    stale: bool
    # History sources (SPEC 10): where reading has got to, and how far that is behind now.
    read_up_to: datetime | None = None
    lag_seconds: float | None = None

    def to_json(self) -> dict[str, Any]:
        """The status as a JSON-ready dict, datetimes as UTC `...Z` text."""
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, datetime):
                out[key] = utc_z(value)
        return out


def failures_since_success(
    conn: Connection, source: str, last_ok_started: datetime | None = None
) -> int:
    """Failed attempts after the newest success.

    Counted from the record itself, so that polls made by `collect` count as much as the
    daemon's.
    """
    if last_ok_started is None:
        last_ok_started = last_success(conn, source)
    since = select(func.count()).select_from(CollectionAttempt).where(
        CollectionAttempt.source == source,
        CollectionAttempt.outcome.not_in(NOT_AN_ERROR),
    )
    if last_ok_started is not None:
        since = since.where(CollectionAttempt.started_at > last_ok_started)
    return int(conn.execute(since).scalar() or 0)


def _source_status(conn: Connection, src: SourceConfig, now: datetime) -> SourceStatus:
    last = last_successes(conn, [src.name]).get(src.name)
    last_ok = last.finished_at if last is not None else None
    err = conn.execute(
        select(
            CollectionAttempt.outcome, CollectionAttempt.error, CollectionAttempt.finished_at,
            CollectionAttempt.started_at,
        )
        .where(
            CollectionAttempt.source == src.name,
            CollectionAttempt.outcome.not_in(NOT_AN_ERROR),
        )
        .order_by(CollectionAttempt.started_at.desc())
        .limit(1)
    ).first()
    failures = failures_since_success(conn, src.name, last.started_at if last else None)

    state = conn.execute(
        select(SourceState.paused_until, SourceState.pause_reason, SourceState.updated_at)
        .where(SourceState.source == src.name)
    ).first()
    paused_until, pause_reason = None, None
    if state is not None and pause_holds(state.paused_until, state.updated_at,
                                         last.started_at if last is not None else None, now):
        paused_until, pause_reason = state.paused_until, state.pause_reason

    age = (now - last_ok).total_seconds() if last_ok is not None else None
    stale = age is None or age > src.staleness
    last_error = None
    if err is not None:
        last_error = err.outcome + (f": {err.error}" if err.error else "")
    mark = read_up_to(conn, src.name) if src.vendor.history is not None else None
    return SourceStatus(
        source=src.name,
        kind=src.kind,
        interval_seconds=src.interval_seconds,
        staleness_seconds=src.staleness,
        last_success=last_ok,
        last_error=last_error,
        last_error_at=(err.finished_at or err.started_at) if err is not None else None,
        consecutive_failures=failures,
        paused_until=paused_until,
        pause_reason=pause_reason,
        age_seconds=round(age, 3) if age is not None else None,
        stale=stale,
        read_up_to=mark,
        lag_seconds=round((now - mark).total_seconds(), 3) if mark is not None else None,
    )


def source_statuses(
    engine: Engine, config: Config, now: datetime | None = None
) -> list[SourceStatus]:
    """One status per configured source, in config order; a source never polled is stale."""
    now = now or datetime.now(UTC)
    with engine.connect() as conn:
        return [_source_status(conn, src, now) for src in config.sources]


def any_stale(statuses: list[SourceStatus]) -> bool:
    """True when a source is stale (then `status` exits 1, SPEC 3)."""
    return any(s.stale for s in statuses)


def human_age(seconds: float | None) -> str:
    """An age in seconds for people: `45s ago`, `12m ago`, `3.5h ago`, `2.1d ago`, or `never`."""
    if seconds is None:
        return "never"
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f}h ago"
    return f"{seconds / 86400:.1f}d ago"


def _when(value: datetime | None) -> str:
    return utc_human(value)


def state_label(s: SourceStatus) -> str:
    """One of ok | stale | paused | stale,paused: a paused source can be stale too, and both matter."""
    labels = [label for label, on in (("stale", s.stale), ("paused", s.paused_until)) if on]
    return ",".join(labels) or "ok"


def status_rows(statuses: list[SourceStatus]) -> tuple[list[str], list[list[str]]]:
    """Header and text cells of the status table (shared by the plain and the rich output)."""
    header = [
        "source", "state", "last success", "last error", "error at", "failures",
        "interval", "stale after", "paused until", "read up to",
    ]
    rows = []
    for s in statuses:
        last = "never" if s.last_success is None else (
            f"{_when(s.last_success)} ({human_age(s.age_seconds)})"
        )
        rows.append([
            s.source,
            state_label(s),
            last,
            (s.last_error or "-")[:80],
            _when(s.last_error_at),
            str(s.consecutive_failures),
            f"{s.interval_seconds:g}s",
            f"{s.staleness_seconds:g}s",
            _when(s.paused_until) + (f" ({s.pause_reason})" if s.pause_reason else ""),
            "-" if s.read_up_to is None else
            f"{_when(s.read_up_to)} ({human_age(s.lag_seconds).replace(' ago', ' behind')})",
        ])
    return header, rows


def spool_notes(spool_dir: str, pending: int, unreadable: int) -> list[str]:
    """The lines under the table about the spool folder (none when it is empty)."""
    notes = []
    if pending:
        notes.append(f"{pending} poll(s) waiting in the spool ({spool_dir})")
    if unreadable:
        notes.append(
            f"{unreadable} spool file(s) could not be read and are not replayed: see "
            f"{os.path.join(spool_dir, 'unreadable')} (the daemon log says why; repair a file "
            "and move it back into the spool folder, or delete it)"
        )
    return notes


def format_plain(statuses: list[SourceStatus]) -> str:
    """A fixed-width table for pipes and logs."""
    header, rows = status_rows(statuses)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in [header, *rows]]
    return "\n".join(lines)


@dataclass(frozen=True)
class FiringAlert:
    """An alert firing now for one series (SPEC 8), as `status` shows it."""

    alert: str
    source: str
    metric: str | None
    since: datetime | None

    def to_json(self) -> dict[str, Any]:
        """The alert as a JSON-ready dict, `since` as UTC `...Z` text."""
        return {"alert": self.alert, "source": self.source, "metric": self.metric,
                "since": utc_z(self.since) if self.since is not None else None}

    def note(self) -> str:
        """One line for people: `alert NAME firing for SOURCE METRIC since WHEN`."""
        what = " ".join(x for x in (self.source, self.metric) if x)
        return f"alert {self.alert} firing for {what} since {utc_human(self.since)}"


def firing_alerts(engine: Engine, config: Config) -> list[FiringAlert]:
    """The configured alerts firing now, per series, by alert name."""
    from etl.alerts.history import firing

    names = {rule.name for rule in config.alerts}
    return [FiringAlert(alert, series.source, series.metric, since)
            for alert, series, since in firing(engine) if alert in names]
