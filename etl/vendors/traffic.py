"""The simulated vendors' deterministic traffic model: a value is a function of (time, seed).

Daily and weekly cycles, afternoons that cross the plan limit now and then, and counters
that grow through the month and reset at the start of the next (UTC). The kinds' simulated
bodies (`SimulatedApi.body`) and the simulator's own per-project vendor are built from it,
so generated archives and live polls of a simulator agree.
"""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, datetime, timedelta
from functools import lru_cache


def unit(seed: int, *parts: object) -> float:
    """A deterministic pseudo-random number in [0, 1) for (seed, parts)."""
    digest = hashlib.blake2b(repr((seed, *parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def cycle(at: datetime) -> float:
    """Busy-ness in [0, 1]: a daily wave peaking 15:00 UTC, quieter at weekends."""
    hour = at.hour + at.minute / 60 + at.second / 3600
    daily = 0.5 - 0.5 * math.cos(2 * math.pi * (hour - 3) / 24)
    weekly = 0.55 if at.weekday() >= 5 else 1.0
    return daily * weekly


def level_status(percent: float) -> str:
    """Return healthy, warning (75 %) or critical (90 %), as WireSocket words it."""
    if percent >= 90:
        return "critical"
    if percent >= 75:
        return "warning"
    return "healthy"


def gauge(seed: int, name: str, at: datetime, base: float, amplitude: float,
          spike: float, noise: float) -> int:
    """A level that follows `cycle`, with noise per 5 minutes and a spike some afternoons."""
    bucket = int(at.timestamp() // 300)
    value = base + amplitude * cycle(at) + (unit(seed, name, bucket) - 0.5) * 2 * noise
    # About one day in four has a busy afternoon that pushes past the plan limit.
    day = at.date().toordinal()
    if unit(seed, name, "spike", day) < 0.25 and 13 <= at.hour < 17:
        value += spike
    return max(0, round(value))


def _hour_rate(seed: int, name: str, scale: float, hour_start: datetime) -> float:
    """Counts per hour during the hour starting at `hour_start`."""
    bucket = int(hour_start.timestamp() // 3600)
    return scale * (50 + 190 * cycle(hour_start + timedelta(minutes=30))
                    + 40 * unit(seed, name, bucket))


@lru_cache(maxsize=64)
def _month_cumulative(seed: int, name: str, scale: float, year: int, month: int
                      ) -> tuple[float, ...]:
    """The count at the start of each hour of a UTC month (index 0 = 0)."""
    start = datetime(year, month, 1, tzinfo=UTC)
    end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
    hours = int((end - start).total_seconds() // 3600)
    total = 0.0
    cumulative = [0.0]
    for h in range(hours):
        total += _hour_rate(seed, name, scale, start + timedelta(hours=h))
        cumulative.append(total)
    return tuple(cumulative)


def monthly_counter(at: datetime, seed: int = 0, name: str = "inv", scale: float = 1.0) -> int:
    """A cumulative count at `at`: grows all month, resets at the month start (UTC)."""
    at = at.astimezone(UTC)
    cumulative = _month_cumulative(seed, name, scale, at.year, at.month)
    month_start = datetime(at.year, at.month, 1, tzinfo=UTC)
    elapsed = (at - month_start).total_seconds() / 3600
    hour = int(elapsed)
    rate = _hour_rate(seed, name, scale, month_start + timedelta(hours=hour))
    return int(cumulative[hour] + rate * (elapsed - hour))
