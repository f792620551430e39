"""The alert history of a period (SPEC 8), as a frame for the daily report."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pandas as pd
from sqlalchemy import Engine

from etl.alerts.history import events_between

ALERT_EVENT_COLUMNS = ["time", "alert", "event", "source", "metric", "value", "text"]


def alert_events(engine: Engine, start: datetime, end: datetime, zone: ZoneInfo) -> pd.DataFrame:
    """Every alert state change with `start <= at < end`, oldest first.

    `time` is the local wall time in `zone` (HH:MM:SS); `event` is pending, cleared,
    firing, repeat or resolved; `value` and `text` are those of the stored payload.
    """
    rows = [{
        "time": ev.at.astimezone(zone).strftime("%H:%M:%S"),
        "alert": ev.alert,
        "event": str(ev.transition),
        "source": ev.source,
        "metric": ev.metric or "",
        "value": ev.body.get("value"),
        "text": ev.body.get("text", ""),
    } for ev in events_between(engine, start, end)]
    return pd.DataFrame.from_records(rows, columns=ALERT_EVENT_COLUMNS)
