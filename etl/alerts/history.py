"""Stored alert state, its history and new outbox rows: each change is made exactly once.

Every evaluator (the daemon's replicas, cron `alerts check` runs) reads a series' state,
decides, and writes the change only if the row still has the version it read: a conditional
UPDATE, or an INSERT against the primary key for a series' first change. The history row and
the notifications to send are written in the same transaction, and the history row's
(alert, source, metric, version) is unique, so however many processes evaluate at the same
moment one event is created, and its `id` (a UUID) is fixed from then on (SPEC 8).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from etl.alerts.evaluate import Reading, SeriesState, Transition, payload
from etl.alerts.states import AlertState, SeriesRef
from etl.config import AlertRule
from etl.store.models import AlertDelivery, AlertEvent, AlertSeriesState

Key = tuple[str, str, str]  # (alert, source, metric or '')


class _LostRace(Exception):
    """Another evaluator changed the row first; this one's change is dropped."""


@dataclass(frozen=True)
class StoredEvent:
    """One row of the history, as `alerts list`, `status` and the daily report show it."""

    id: str
    alert: str
    source: str
    metric: str | None
    transition: Transition
    since: datetime | None
    at: datetime
    body: dict[str, Any]


def load_states(conn: Connection, alerts: Iterable[str] | None = None) -> dict[Key, SeriesState]:
    """The stored state of every (alert, series), optionally of the named alerts only."""
    query = select(*AlertSeriesState.__table__.c)
    if alerts is not None:
        query = query.where(AlertSeriesState.alert.in_(list(alerts)))
    out: dict[Key, SeriesState] = {}
    for row in conn.execute(query).all():
        out[(row.alert, row.source, row.metric)] = SeriesState(
            AlertState(row.state), since=row.since, notified_at=row.notified_at,
            version=row.version,
        )
    return out


def record(
    engine: Engine, rule: AlertRule, reading: Reading, prev: SeriesState, new: SeriesState,
    transition: Transition, now: datetime,
) -> str | None:
    """Store the change prev -> new with its history row, and its outbox rows if notified.

    A notified change gets one outbox row per notifier of `rule`. Returns the event id, or
    None when another evaluator made this change (or a later one) first.
    """
    series = reading.series
    key = (rule.name, series.source, series.metric_key)
    event_id = str(uuid.uuid4())
    since = new.since if new.since is not None else prev.since
    body = payload(rule, reading, transition.event_state, event_id=event_id, since=since, at=now)
    try:
        with engine.begin() as conn:
            _write_state(conn, key, prev, new, now)
            conn.execute(insert(AlertEvent).values(
                id=event_id, alert=key[0], source=key[1], metric=key[2], version=new.version,
                transition=str(transition), since=since, at=now,
                payload=json.dumps(body, ensure_ascii=False),
            ))
            if transition.notified and rule.notify:
                conn.execute(insert(AlertDelivery), [
                    {"event_id": event_id, "notifier": name, "created_at": now, "attempts": 0,
                     "next_attempt_at": now}
                    for name in rule.notify
                ])
    except (_LostRace, IntegrityError):
        return None
    return event_id


def _write_state(conn: Connection, key: Key, prev: SeriesState, new: SeriesState,
                 now: datetime) -> None:
    values = {"state": str(new.state), "since": new.since, "notified_at": new.notified_at,
              "version": new.version, "updated_at": now}
    if prev.version == 0:
        # The series' first change: the primary key lets only one evaluator insert it.
        conn.execute(insert(AlertSeriesState).values(
            alert=key[0], source=key[1], metric=key[2], **values))
        return
    done = conn.execute(
        update(AlertSeriesState)
        .where(AlertSeriesState.alert == key[0], AlertSeriesState.source == key[1],
               AlertSeriesState.metric == key[2], AlertSeriesState.version == prev.version)
        .values(**values)
    )
    if done.rowcount != 1:
        raise _LostRace()


def events_between(engine: Engine, start: datetime, end: datetime,
                   transitions: Sequence[Transition] | None = None) -> list[StoredEvent]:
    """History rows with `start <= at < end`, oldest first."""
    query = (select(*AlertEvent.__table__.c).where(AlertEvent.at >= start, AlertEvent.at < end)
             .order_by(AlertEvent.at, AlertEvent.alert, AlertEvent.source, AlertEvent.metric))
    if transitions is not None:
        query = query.where(AlertEvent.transition.in_([str(t) for t in transitions]))
    with engine.connect() as conn:
        return [
            StoredEvent(
                id=row.id, alert=row.alert, source=row.source, metric=row.metric or None,
                transition=Transition(row.transition), since=row.since, at=row.at,
                body=json.loads(row.payload),
            )
            for row in conn.execute(query).all()
        ]


def firing(engine: Engine) -> list[tuple[str, SeriesRef, datetime | None]]:
    """(alert, series, firing since) of every series firing now, by alert and series."""
    query = (select(*AlertSeriesState.__table__.c)
             .where(AlertSeriesState.state == str(AlertState.FIRING))
             .order_by(AlertSeriesState.alert, AlertSeriesState.source, AlertSeriesState.metric))
    with engine.connect() as conn:
        return [(row.alert, SeriesRef(row.source, row.metric or None), row.since)
                for row in conn.execute(query).all()]
