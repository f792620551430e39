"""Poll slots: each source's time cut into `[offset + k*interval, offset + (k+1)*interval)`.

Every replica computes the same slots, so "at most one poll per source and slot" can be
agreed on through the database (etl.store.state) and fired on time (etl.runtime.scheduler).
The offset is a stable hash of the source name, so sources with the same interval do not
all fire together.
"""

from __future__ import annotations

import math
import zlib
from datetime import datetime, timedelta

from etl.timefmt import EPOCH


def phase_offset(name: str, interval: float) -> float:
    """Seconds into each interval at which the slots of source `name` start."""
    return (zlib.crc32(name.encode("utf-8")) % 10_000) / 10_000 * interval


def slot_of(name: str, interval: float, at: datetime) -> int:
    """The index of the slot of source `name` that contains instant `at`."""
    seconds = (at - EPOCH).total_seconds() - phase_offset(name, interval)
    return math.floor(seconds / interval)


def slot_bounds(name: str, interval: float, slot: int) -> tuple[datetime, datetime]:
    """[start, end) of slot number `slot` of source `name`."""
    start = EPOCH + timedelta(seconds=phase_offset(name, interval) + slot * interval)
    return start, start + timedelta(seconds=interval)


def next_slot_start(name: str, interval: float, after: datetime) -> datetime:
    """The start of the first slot of source `name` that begins after `after`."""
    return slot_bounds(name, interval, slot_of(name, interval, after) + 1)[0]
