"""What the alert conditions read from the database without the reports: latest samples."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from etl.store.models import Sample, Series
from etl.store.packs import has_packs, newest_samples
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

    if has_packs(conn):  # PostgreSQL's packed days too (etl.store.packs), still one statement
        rows: Any = newest_samples(conn)
    else:
        rows = conn.execute(
            select(Series.source, Series.metric, Series.metric_type,
                   newest(Sample.observed_at).label("at"), newest(Sample.value).label("value"),
                   newest(Sample.plan_limit).label("plan_limit")))
    out: dict[tuple[str, str], LatestSample] = {}
    for source, metric, metric_type, at, value, plan_limit in rows:
        if at is None:
            continue
        limit = plan_limit if plan_limit is not None and plan_limit >= 0 else None
        out[(source, metric)] = LatestSample(
            source, metric, MetricType(metric_type), float(value), limit, at,
        )
    return out
