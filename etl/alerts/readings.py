"""What the alert conditions read from the database without the reports: latest samples."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from etl.store.models import Sample, Series
from etl.store.packs import has_packs, latest_packed
from etl.vendors.types import MetricType


@dataclass(frozen=True)
class LatestSample:
    """The newest stored sample of one series."""

    source: str
    metric: str
    metric_type: MetricType
    value: float
    limit: float | None  # None: no limit (SPEC 5: missing, null or negative)
    observed_at: datetime

    @property
    def pct(self) -> float | None:
        """The value / limit x 100; None without a limit or with limit 0 (SPEC 5, SPEC 8)."""
        if self.limit is None or self.limit <= 0:
            return None
        return self.value / self.limit * 100


def latest_samples(conn: Connection) -> dict[tuple[str, str], LatestSample]:
    """The newest sample of every stored series, by (source, metric).

    One statement: per series, indexed lookups of its newest sample (the samples' primary
    key is (series_id, observed_at)); a statement per series took 100,000 round trips for a
    very wide vendor (issue 26).
    """
    def newest(column: Any) -> Any:
        return (select(column).where(Sample.series_id == Series.id)
                .order_by(Sample.observed_at.desc()).limit(1).scalar_subquery())

    out: dict[tuple[str, str], LatestSample] = {}
    for row in conn.execute(
            select(Series.source, Series.metric, Series.metric_type,
                   newest(Sample.observed_at).label("at"), newest(Sample.value).label("value"),
                   newest(Sample.plan_limit).label("plan_limit"))
    ):
        if row.at is None:
            continue
        limit = row.plan_limit if row.plan_limit is not None and row.plan_limit >= 0 else None
        out[(row.source, row.metric)] = LatestSample(
            row.source, row.metric, MetricType(row.metric_type), float(row.value), limit,
            row.at,
        )
    _newer_packed(conn, out)
    return out


def _newer_packed(conn: Connection, out: dict[tuple[str, str], LatestSample]) -> None:
    """Put in `out` the series' newest packed samples newer than their newest rows.

    Packed days: PostgreSQL, etl.store.packs; one or two packs per series are decoded,
    whatever the history.
    """
    if not has_packs(conn):
        return
    keys = {sid: (source, metric, kind) for sid, source, metric, kind in conn.execute(
        select(Series.id, Series.source, Series.metric, Series.metric_type))}
    for sid, (at, value, plan_limit) in latest_packed(conn, keys).items():
        source, metric, kind = keys[sid]
        held = out.get((source, metric))
        if held is not None and held.observed_at >= at:
            continue
        limit = plan_limit if plan_limit is not None and plan_limit >= 0 else None
        out[(source, metric)] = LatestSample(source, metric, MetricType(kind), float(value),
                                             limit, at)
