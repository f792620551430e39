"""Where an alert stands: per-series states, what a notification announces, the series watched."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class AlertState(StrEnum):
    """Where one alert stands for one series (SPEC 8)."""

    OK = "ok"
    PENDING = "pending"
    FIRING = "firing"


class EventState(StrEnum):
    """What a notification announces: the payload's `state`."""

    FIRING = "firing"
    RESOLVED = "resolved"
    TEST = "test"


@dataclass(frozen=True)
class SeriesRef:
    """One series an alert watches: (source, metric); metric is None for `stale`."""

    source: str
    metric: str | None

    @property
    def metric_key(self) -> str:
        """The metric as stored in alert tables: '' for a per-source (stale) alert."""
        return self.metric or ""
