"""The APScheduler trigger of each source's polls: on the slot grid replicas share, plus jitter."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from apscheduler.triggers.base import BaseTrigger

from etl.config import SourceConfig
from etl.slots import next_slot_start, phase_offset


def jitter_for(source: SourceConfig) -> float:
    """A little randomness per fire so replicas and restarts don't fire in lockstep."""
    return min(0.05 * source.interval_seconds, 5.0)


class SlotTrigger(BaseTrigger):  # type: ignore[misc]
    """Fires at the start of each of a source's slots (see etl.store.state) plus a small jitter.

    APScheduler's IntervalTrigger adds each jitter to the previous (jittered) fire time, so
    it drifts off the slot grid that replicas share; this one always returns to the grid.
    """

    def __init__(self, name: str, interval: float, jitter: float) -> None:
        self.name = name
        self.interval = interval
        self.offset = phase_offset(name, interval)
        self.jitter = jitter

    def next_slot_start(self, after: datetime) -> datetime:
        """The start of the source's first slot after `after`."""
        return next_slot_start(self.name, self.interval, after)

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime:
        """APScheduler's hook: the next slot start after the previous fire time, plus jitter."""
        start = self.next_slot_start(previous_fire_time or now)
        return start + timedelta(seconds=random.uniform(0, self.jitter))

    def __str__(self) -> str:
        return f"slot[interval={self.interval:g}s, offset={self.offset:.2f}s]"
