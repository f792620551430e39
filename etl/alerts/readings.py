"""What the alert conditions read from the database without the reports: latest samples."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, select

from etl.store.models import Sample, Series
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

    One indexed lookup per series (the samples' primary key is (series_id, observed_at)).
    """
    out: dict[tuple[str, str], LatestSample] = {}
    for series in conn.execute(
            select(Series.id, Series.source, Series.metric, Series.metric_type)
    ).all():
        row = conn.execute(
            select(Sample.value, Sample.plan_limit, Sample.observed_at)
            .where(Sample.series_id == series.id)
            .order_by(Sample.observed_at.desc())
            .limit(1)
        ).first()
        if row is None:
            continue
        limit = row.plan_limit if row.plan_limit is not None and row.plan_limit >= 0 else None
        out[(series.source, series.metric)] = LatestSample(
            series.source, series.metric, MetricType(series.metric_type), float(row.value), limit,
            row.observed_at,
        )
    return out
