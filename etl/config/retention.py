"""The `[retention]` table (SPEC 13): how long raw responses and samples stay in the database."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

DEFAULT_ARCHIVE_DIR = "./usage-etl-archive"
KEYS = ("raw_days", "samples_days", "archive_dir")
# Beyond this a "days" figure is a typo: it would reach past year 9999 from the epoch.
MAX_DAYS = 3_000_000


@dataclass(frozen=True)
class Retention:
    """`raw_days`/`samples_days`: days kept in the database (None: forever); `archive_dir`."""

    raw_days: int | None = None
    samples_days: int | None = None
    archive_dir: str = DEFAULT_ARCHIVE_DIR

    @property
    def active(self) -> bool:
        """Whether the daily pass has anything to do."""
        return self.raw_days is not None or self.samples_days is not None


def parse_retention(raw: Any, where: str, problems: list[str]) -> Retention:
    """The `[retention]` table validated; each problem appended as one line naming the key."""
    if raw is None:
        return Retention()
    if not isinstance(raw, Mapping):
        problems.append(f"{where}retention: must be a table ([retention])")
        return Retention()
    for key in sorted(set(raw) - set(KEYS)):
        problems.append(f"{where}retention.{key}: unknown key")
    days = {key: _days(raw.get(key), f"{where}retention.{key}", problems)
            for key in ("raw_days", "samples_days")}
    archive_dir = raw.get("archive_dir", DEFAULT_ARCHIVE_DIR)
    if not isinstance(archive_dir, str) or not archive_dir.strip() or not archive_dir.isprintable():
        problems.append(f"{where}retention.archive_dir: must be a non-empty folder path")
        archive_dir = DEFAULT_ARCHIVE_DIR
    raw_days, samples_days = days["raw_days"], days["samples_days"]
    # A raw_days given but refused above is not "unset": its own line says what is wrong.
    raw_refused = raw_days is None and raw.get("raw_days") is not None
    if samples_days is not None and not raw_refused and (raw_days is None
                                                         or samples_days < raw_days):
        # Samples are retired only where their raw responses are archived (SPEC 13).
        need = "needs raw_days set too" if raw_days is None else "must be at least raw_days"
        problems.append(f"{where}retention.samples_days: {need} "
                        "(samples are retired only once their raw responses are archived)")
    return Retention(raw_days=raw_days, samples_days=samples_days,
                     archive_dir=os.path.expanduser(archive_dir))  # ~ as in a shell


def _days(value: Any, label: str, problems: list[str]) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_DAYS:
        problems.append(f"{label}: must be a whole number of days from 0 to {MAX_DAYS}")
        return None
    return value
