"""Deliver stored notifications: claim a due one, send it, record the outcome, back off.

A notification is in the database before anyone sends it (etl.alerts.history). A sender
claims it with a lease (a conditional UPDATE), so two replicas never send it at the same
time; a sender that dies leaves a lease that runs out, and the next one sends again with
the same payload and `id` (at least once, SPEC 8). Failed attempts are retried with
exponential backoff until 24 hours after the event, then given up and kept as such.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, and_, or_, select, update

from etl.config import Notifier
from etl.errors import UsageEtlError
from etl.store.models import AlertDelivery, AlertEvent

log = logging.getLogger("etl.alerts")

RETRY_FOR = timedelta(hours=24)
FIRST_RETRY = timedelta(seconds=30)
MAX_RETRY = timedelta(hours=1)
# How long a claim lasts beyond the notifier's own timeout before another sender may retry.
LEASE_MARGIN = timedelta(seconds=30)
BATCH = 200

Sender = Callable[[Notifier, dict[str, Any]], None]


def backoff(attempts: int) -> timedelta:
    """The wait after the `attempts`-th failed try: 30 s, 1 min, 2 min, ... at most 1 h."""
    return min(FIRST_RETRY * (2 ** max(0, attempts - 1)), MAX_RETRY)


@dataclass
class DeliveryReport:
    """What one pass over the outbox did."""

    delivered: int = 0
    failed: list[str] = field(default_factory=list)  # one line per failed try, no secrets
    gave_up: int = 0

    def add(self, other: DeliveryReport) -> None:
        """Add another pass's counts and failure lines to this one."""
        self.delivered += other.delivered
        self.failed += other.failed
        self.gave_up += other.gave_up


def deliver_due(
    engine: Engine, notifiers: Mapping[str, Notifier], send: Sender, now: datetime, *,
    ignore_backoff: bool = False,
) -> DeliveryReport:
    """Send every notification that is due at `now` and record each outcome.

    With `ignore_backoff`, every undelivered one is due (as at start-up after a restart).
    """
    report = DeliveryReport()
    query = (select(AlertDelivery.id).where(AlertDelivery.delivered_at.is_(None),
                                            AlertDelivery.gave_up_at.is_(None))
             .order_by(AlertDelivery.id).limit(BATCH))
    if not ignore_backoff:
        query = query.where(AlertDelivery.next_attempt_at <= now)
    with engine.connect() as conn:
        due = list(conn.execute(query).scalars())
    for delivery_id in due:
        report.add(_deliver_one(engine, delivery_id, notifiers, send, now))
    return report


def _deliver_one(engine: Engine, delivery_id: int, notifiers: Mapping[str, Notifier],
                 send: Sender, now: datetime) -> DeliveryReport:
    report = DeliveryReport()
    with engine.connect() as conn:
        row = conn.execute(
            select(AlertDelivery.notifier, AlertDelivery.created_at, AlertDelivery.attempts,
                   AlertEvent.payload)
            .join(AlertEvent, AlertEvent.id == AlertDelivery.event_id)
            .where(AlertDelivery.id == delivery_id)
        ).first()
    if row is None:
        return report
    notifier = notifiers.get(row.notifier)
    if notifier is None:
        _finish(engine, delivery_id, now, attempts=row.attempts, gave_up=True,
                error=f"notifier {row.notifier} is no longer configured")
        report.gave_up += 1
        return report
    lease = timedelta(seconds=notifier.timeout_seconds) + LEASE_MARGIN
    if not _claim(engine, delivery_id, now, lease):
        return report  # another sender holds it, or has sent it
    body = json.loads(row.payload)
    attempts = row.attempts + 1
    try:
        send(notifier, body)
    except UsageEtlError as exc:
        error = str(exc)
        retry_at = min(now + backoff(attempts), row.created_at + RETRY_FOR)
        gave_up = now >= row.created_at + RETRY_FOR
        _finish(engine, delivery_id, now, attempts=attempts, error=error,
                retry_at=retry_at, gave_up=gave_up)
        _event(logging.WARNING, "alert-not-delivered", alert=body.get("alert"),
               state=body.get("state"), id=body.get("id"), notifier=notifier.name,
               tries=attempts, error=error,
               next_try=None if gave_up else retry_at, gave_up=gave_up or None)
        report.failed.append(f"{body.get('alert')} {body.get('state')} to {notifier.name}: "
                             f"{error}")
        report.gave_up += int(gave_up)
        return report
    _finish(engine, delivery_id, now, attempts=attempts, delivered=True)
    _event(logging.INFO, "alert-delivered", alert=body.get("alert"), state=body.get("state"),
           id=body.get("id"), notifier=notifier.name, tries=attempts)
    report.delivered += 1
    return report


def _event(level: int, name: str, **fields: Any) -> None:
    """A structured log event, as the daemon's log lines are (see etl.runtime.logs)."""
    log.log(level, name, extra={"event": name, "fields": fields})


def _claim(engine: Engine, delivery_id: int, now: datetime, lease: timedelta) -> bool:
    with engine.begin() as conn:
        done = conn.execute(
            update(AlertDelivery)
            .where(AlertDelivery.id == delivery_id, AlertDelivery.delivered_at.is_(None),
                   AlertDelivery.gave_up_at.is_(None),
                   or_(AlertDelivery.lease_until.is_(None),
                       and_(AlertDelivery.lease_until <= now)))
            .values(lease_until=now + lease)
        )
        return done.rowcount == 1


def _finish(engine: Engine, delivery_id: int, now: datetime, *, attempts: int,
            delivered: bool = False, gave_up: bool = False, error: str | None = None,
            retry_at: datetime | None = None) -> None:
    values: dict[str, Any] = {"attempts": attempts, "lease_until": None}
    if delivered:
        values["delivered_at"] = now
    if gave_up:
        values["gave_up_at"] = now
    if error is not None:
        values["last_error"] = error
    if retry_at is not None:
        values["next_attempt_at"] = retry_at
    with engine.begin() as conn:
        conn.execute(update(AlertDelivery).where(AlertDelivery.id == delivery_id).values(**values))


def pending_count(engine: Engine) -> int:
    """Notifications not yet delivered nor given up."""
    from sqlalchemy import func

    with engine.connect() as conn:
        return int(conn.execute(
            select(func.count()).select_from(AlertDelivery)
            .where(AlertDelivery.delivered_at.is_(None), AlertDelivery.gave_up_at.is_(None))
        ).scalar() or 0)
