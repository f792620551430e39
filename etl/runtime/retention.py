"""The retention pass (SPEC 13): compaction and retirement, run by `compact` and the daemon."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine

from etl.config import Config
from etl.errors import UsageEtlError
from etl.runtime.logs import event
from etl.store import partitions
from etl.store.compact import CompactResult, Progress, compact, cutoff_for, pending_count
from etl.store.engine import describe_database_error, is_database_error
from etl.store.retire import RetireResult, retire
from etl.textutil import first_line

log = logging.getLogger("etl.schedule")


@dataclass
class RetentionResult:
    """What one pass did: the compaction's and the retirement's results."""

    compacted: CompactResult = field(default_factory=CompactResult)
    retired: RetireResult = field(default_factory=RetireResult)

    def summary(self) -> str:
        """One line for people."""
        return (f"{self.compacted.summary()}; {self.retired.samples} samples of "
                f"{self.retired.series} series retired")


def archive_dir(config: Config) -> Path:
    """The folder of the monthly archive files (`[retention] archive_dir`)."""
    return Path(config.retention.archive_dir)


def to_compact(engine: Engine, config: Config, now: datetime) -> int:
    """How many raw responses a pass at `now` would move (0 when raw_days is not set)."""
    days = config.retention.raw_days
    return 0 if days is None else pending_count(engine, cutoff_for(now, days))


def retention_pass(engine: Engine, config: Config, now: datetime,
                   progress: Progress | None = None) -> RetentionResult:
    """Compact raw responses older than `raw_days`; retire samples older than `samples_days`.

    Each only when set; samples are retired only where their raw responses are archived.

    Raises:
        etl.store.compact.CompactError: an archive file could not be written (one line);
            what was moved before stays moved, the rest stays in the database.
    """
    result = RetentionResult()
    days = config.retention.raw_days
    if days is not None:
        result.compacted = compact(engine, archive_dir(config), cutoff_for(now, days),
                                   progress=progress)
    keep = config.retention.samples_days
    if keep is not None:
        result.retired = retire(engine, archive_dir(config), cutoff_for(now, keep))
    return result


# The daemon's pass: this long after start (the start's own work first), then once a day.
DAEMON_FIRST_S = 30.0
DAEMON_EVERY_S = 24 * 3600.0


def daemon_pass(engine: Engine, config: Config, clock: Callable[[], datetime]) -> None:
    """The daemon's daily job: the coming months' partitions (PostgreSQL), a retention pass.

    Logged as `partitions`, `retention` or `retention-failed`.

    A failure (a full or read-only archive folder, the database away) is logged in one
    line and tried again at the next pass; nothing is lost meanwhile.
    """
    try:
        now = clock()
        made = partitions.ensure_ahead(engine, now)  # PostgreSQL: the coming months
        if made:
            event(log, logging.INFO, "partitions", made=",".join(made))
        if not config.retention.active:
            return
        result = retention_pass(engine, config, now)
    except UsageEtlError as exc:
        event(log, logging.ERROR, "retention-failed", error=first_line(exc))
        return
    except Exception as exc:  # noqa: BLE001 - the database away: the next pass tries again
        if not is_database_error(exc):
            raise
        event(log, logging.ERROR, "retention-failed", error=describe_database_error(exc))
        return
    if result.compacted.moved or result.retired.samples:
        event(log, logging.INFO, "retention", moved=result.compacted.moved,
              files=len(result.compacted.files), retired=result.retired.samples)
