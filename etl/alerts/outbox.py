"""Deliver stored notifications: claim a due one, send it, record the outcome, back off.

A notification is in the database before anyone sends it (etl.alerts.history). A sender
claims it with a lease (a conditional UPDATE), so two replicas never send it at the same
time: the lease is measured from the clock when it is taken (not from the start of the
pass, which a slow receiver makes minutes old) and lasts the send's deadline plus a margin
for replicas' clocks. A sender that dies leaves a lease that runs out, and the next one
sends again with the same payload and `id` (at least once, SPEC 8). Failed attempts are retried with
exponential backoff until 24 hours after the event, then given up and kept as such.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Engine, and_, or_, select, update

from etl.config import Notifier
from etl.errors import InputError, UsageEtlError
from etl.store.models import AlertDelivery, AlertEvent

log = logging.getLogger("etl.alerts")

RETRY_FOR = timedelta(hours=24)
FIRST_RETRY = timedelta(seconds=30)
MAX_RETRY = timedelta(hours=1)
# How long a claim lasts beyond the send's deadline before another sender may retry: it
# covers recording the outcome and the difference between replicas' clocks.
LEASE_MARGIN = timedelta(seconds=30)
# A retry time further ahead than its backoff plus this was set before the wall clock
# stepped back (etl.runtime.clocks): it is due now, not after the step. Less is the
# difference between replicas' clocks.
STEP_SLACK = timedelta(seconds=60)
BATCH = 200

Sender = Callable[[Notifier, dict[str, Any]], None]
Clock = Callable[[], datetime]


def wall_clock() -> datetime:
    """The current UTC time (the default clock of a delivery pass)."""
    return datetime.now(UTC)


def lease_margin() -> timedelta:
    """$USAGE_ETL_ALERT_LEASE_MARGIN_S (seconds) if set, else LEASE_MARGIN.

    Replicas whose clocks differ by more than 30 s widen it; tests narrow it.
    """
    raw = os.environ.get("USAGE_ETL_ALERT_LEASE_MARGIN_S", "").strip()
    if not raw:
        return LEASE_MARGIN
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < 86_400:
        raise InputError(f"$USAGE_ETL_ALERT_LEASE_MARGIN_S: {raw!r} is not a number of "
                         "seconds from 0 to 86400")
    return timedelta(seconds=seconds)


def backoff(attempts: int) -> timedelta:
    """The wait after the `attempts`-th failed try: 30 s, 1 min, 2 min, ... at most 1 h."""
    return min(FIRST_RETRY * (2 ** max(0, attempts - 1)), MAX_RETRY)


def _set_before_step(now: datetime) -> ColumnElement[bool]:
    """Retry times further ahead of `now` than their backoff allows (plus STEP_SLACK).

    Such a time was set before the wall clock stepped back: held to it, the retry would
    wait its backoff plus the step.
    """
    ahead = []
    tries = 0
    while tries == 0 or backoff(tries) < MAX_RETRY:
        wait = backoff(tries) if tries else timedelta(0)  # 0 tries: due when stored
        ahead.append(and_(AlertDelivery.attempts == tries,
                          AlertDelivery.next_attempt_at > now + wait + STEP_SLACK))
        tries += 1
    ahead.append(and_(AlertDelivery.attempts >= tries,
                      AlertDelivery.next_attempt_at > now + MAX_RETRY + STEP_SLACK))
    return or_(*ahead)


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
    ignore_backoff: bool = False, clock: Clock = wall_clock,
) -> DeliveryReport:
    """Send every notification that is due at `now` and record each outcome.

    With `ignore_backoff`, every undelivered one is due (as at start-up after a restart).
    Leases, delivery times and retry times are read from `clock` when each happens.
    """
    report = DeliveryReport()
    query = (select(AlertDelivery.id, AlertDelivery.notifier)
             .where(AlertDelivery.delivered_at.is_(None), AlertDelivery.gave_up_at.is_(None))
             .order_by(AlertDelivery.id).limit(BATCH))
    # Claiming checks it again: another sender's failed try since the listing has set a
    # later retry time, which holds for this pass too.
    due = None if ignore_backoff else or_(AlertDelivery.next_attempt_at <= now,
                                           _set_before_step(now))
    if due is not None:
        query = query.where(due)
    by_notifier: dict[str, list[int]] = {}
    with engine.connect() as conn:
        for delivery_id, name in conn.execute(query):
            by_notifier.setdefault(name, []).append(delivery_id)
    margin = lease_margin()

    def one_notifier(ids: list[int]) -> DeliveryReport:
        done = DeliveryReport()
        for delivery_id in ids:
            done.add(_deliver_one(engine, delivery_id, notifiers, send, clock, margin, due))
        return done

    # Each notifier in its own thread (notifiers are a handful, from the config): a receiver
    # that is slow (up to its deadline per request) never holds another's notifications back.
    if len(by_notifier) <= 1:
        for ids in by_notifier.values():
            report.add(one_notifier(ids))
        return report
    with ThreadPoolExecutor(max_workers=len(by_notifier),
                            thread_name_prefix="alert-send") as pool:
        for done in pool.map(one_notifier, by_notifier.values()):
            report.add(done)
    return report


def _deliver_one(engine: Engine, delivery_id: int, notifiers: Mapping[str, Notifier],
                 send: Sender, clock: Clock, margin: timedelta,
                 due: ColumnElement[bool] | None) -> DeliveryReport:
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
        _finish(engine, delivery_id, clock(), attempts=row.attempts, gave_up=True,
                error=f"notifier {row.notifier} is no longer configured")
        report.gave_up += 1
        return report
    # The send ends within the notifier's deadline (etl.alerts.notifiers), so a lease taken
    # now outlasts it.
    lease = timedelta(seconds=notifier.timeout_seconds) + margin
    if not _claim(engine, delivery_id, clock(), lease, due):
        return report  # another sender holds it, or has sent it
    body = json.loads(row.payload)
    attempts = row.attempts + 1
    try:
        send(notifier, body)
    except UsageEtlError as exc:
        now = clock()
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
    _finish(engine, delivery_id, clock(), attempts=attempts, delivered=True)
    _event(logging.INFO, "alert-delivered", alert=body.get("alert"), state=body.get("state"),
           id=body.get("id"), notifier=notifier.name, tries=attempts)
    report.delivered += 1
    return report


def _event(level: int, name: str, **fields: Any) -> None:
    """A structured log event, as the daemon's log lines are (see etl.runtime.logs)."""
    log.log(level, name, extra={"event": name, "fields": fields})


def _claim(engine: Engine, delivery_id: int, now: datetime, lease: timedelta,
           due: ColumnElement[bool] | None = None) -> bool:
    """Take the delivery's lease until `now + lease`: if it is free, or runs out by `now`.

    A lease running out further ahead than a whole lease (plus STEP_SLACK) was taken before
    the wall clock stepped back, by a sender that died: it no longer holds. With `due`,
    the delivery must still meet it (the pass's listing condition).
    """
    conditions = [AlertDelivery.id == delivery_id, AlertDelivery.delivered_at.is_(None),
                  AlertDelivery.gave_up_at.is_(None),
                  or_(AlertDelivery.lease_until.is_(None),
                      AlertDelivery.lease_until <= now,
                      AlertDelivery.lease_until > now + lease + STEP_SLACK)]
    if due is not None:
        conditions.append(due)
    with engine.begin() as conn:
        done = conn.execute(
            update(AlertDelivery).where(*conditions).values(lease_until=now + lease))
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
