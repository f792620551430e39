"""Pure alert logic (SPEC 8): does a condition hold, the next state of a series, the payload."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from etl.alerts.states import AlertState, EventState, SeriesRef
from etl.config import AlertRule, Condition
from etl.textutil import round_readable
from etl.timefmt import utc_z

Number = float | Decimal


class Transition(StrEnum):
    """A change of one series' state, kept as history; the last three are notified."""

    PENDING = "pending"  # ok -> pending: the condition holds, for_seconds not over yet
    CLEARED = "cleared"  # pending -> ok: it stopped holding before firing (not notified)
    FIRING = "firing"  # ok/pending -> firing
    REPEAT = "repeat"  # firing -> firing, repeat_seconds after the last notification
    RESOLVED = "resolved"  # firing -> ok

    @property
    def notified(self) -> bool:
        """True for the transitions notifiers are told about: firing, repeat, resolved."""
        return self in (Transition.FIRING, Transition.REPEAT, Transition.RESOLVED)

    @property
    def event_state(self) -> EventState:
        """The state the alert event records: resolved for a resolve, firing otherwise."""
        return EventState.RESOLVED if self is Transition.RESOLVED else EventState.FIRING


@dataclass(frozen=True)
class Reading:
    """What one series looks like now, for one alert.

    `value` is the number the condition compares and the payload shows: the latest sample
    (gauges), the month-to-date increase (counters with `above`), the seconds since the last
    successful poll (`stale`; None if never), or the projected month quantity or amount.
    `limit`/`pct` are the latest sample's where it has a limit. `included` is the billing
    rule's, for projected_over_included. `stale` is the status rule's verdict and
    `window` the source's staleness in seconds. `unit` is a
    word for the text (a currency code for amounts). For the credit conditions (SPEC 11)
    `value` is the credit's balance after the periods in progress so far, `unit` its
    currency, `run_out` the projected run-out date (YYYY-MM-DD, None if not within reach)
    and `exhausted` whether that is before the end of the period in progress.
    """

    series: SeriesRef
    value: Number | None = None
    limit: float | None = None
    pct: float | None = None
    observed_at: datetime | None = None
    included: Decimal | None = None
    stale: bool | None = None
    window: float | None = None
    counter: bool = False
    unit: str = ""
    run_out: str | None = None
    exhausted: bool | None = None


@dataclass(frozen=True)
class SeriesState:
    """The stored state of one alert for one series.

    `since`: when the condition began to hold in this episode (pending or firing);
    `notified_at`: the last firing notification, for repeat_seconds; `version` counts the
    changes, so concurrent evaluators can tell whether they saw the newest state.
    """

    state: AlertState = AlertState.OK
    since: datetime | None = None
    notified_at: datetime | None = None
    version: int = 0


def condition_holds(rule: AlertRule, reading: Reading, *, firing: bool) -> bool:
    """Whether `rule`'s condition holds on `reading` (SPEC 8).

    While `firing`, an above_pct alert holds down to its `clear` percentage (hysteresis);
    otherwise every condition is tested against its own threshold. A sample without a limit
    (or with limit 0) never meets above_pct; a missing value never meets anything.
    """
    if rule.condition is Condition.STALE:
        return bool(reading.stale)
    if rule.condition is Condition.PROJECTED_CREDIT_EXHAUSTED:
        return bool(reading.exhausted)
    if rule.condition is Condition.ABOVE_PCT:
        if reading.pct is None:
            return False
        bound = rule.clear if firing and rule.clear is not None else rule.threshold
        assert bound is not None
        return Decimal(repr(reading.pct)) >= bound
    if reading.value is None:
        return False
    value = _decimal(reading.value)
    if rule.condition is Condition.ABOVE:
        assert rule.threshold is not None
        return value >= rule.threshold
    if rule.condition is Condition.PROJECTED_OVER_INCLUDED:
        return reading.included is not None and value > reading.included
    if rule.condition is Condition.CREDIT_BELOW:
        assert rule.threshold is not None
        return value < rule.threshold
    assert rule.condition is Condition.PROJECTED_AMOUNT_ABOVE and rule.threshold is not None
    return value > rule.threshold


def step(
    rule: AlertRule, prev: SeriesState, holds: bool, now: datetime
) -> tuple[SeriesState, Transition | None]:
    """The next state of one series and the transition taken (None: nothing changes).

    ok -> pending while for_seconds is not over (firing at once when it is 0); pending ->
    firing once the condition has held for_seconds since it began; firing -> firing again
    every repeat_seconds (if set); firing -> ok (resolved) when it stops holding; pending ->
    ok (cleared, not notified) likewise.
    """
    if prev.state is AlertState.OK:
        if not holds:
            return prev, None
        if rule.for_seconds <= 0:
            return _firing(prev, since=now, now=now), Transition.FIRING
        new = SeriesState(AlertState.PENDING, since=now, version=prev.version + 1)
        return new, Transition.PENDING
    if prev.state is AlertState.PENDING:
        if not holds:
            return SeriesState(version=prev.version + 1), Transition.CLEARED
        since = prev.since or now
        if (now - since).total_seconds() >= rule.for_seconds:
            return _firing(prev, since=since, now=now), Transition.FIRING
        return prev, None
    if not holds:
        return SeriesState(version=prev.version + 1), Transition.RESOLVED
    last = prev.notified_at or prev.since or now
    if rule.repeat_seconds > 0 and (now - last).total_seconds() >= rule.repeat_seconds:
        return replace(prev, notified_at=now, version=prev.version + 1), Transition.REPEAT
    return prev, None


def _firing(prev: SeriesState, *, since: datetime, now: datetime) -> SeriesState:
    return SeriesState(AlertState.FIRING, since=since, notified_at=now, version=prev.version + 1)


def number_text(value: Number | None) -> str:
    """A number as a person reads it: 93 not 93.0, 0.25 not 2.5E-1."""
    if value is None:
        return "-"
    d = _decimal(value)
    if d == d.to_integral_value():
        return str(int(d))
    return format(d.normalize(), "f")


def json_number(value: Number | None) -> int | float | None:
    """A JSON number for the payload: integral values as integers (93, not 93.0)."""
    if value is None:
        return None
    d = _decimal(value)
    if d == d.to_integral_value():
        return int(d)
    return float(d)


def _decimal(value: Number) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(repr(float(value)))


def describe(rule: AlertRule, reading: Reading) -> str:
    """The facts of one series for this alert in words (the `text` after `STATE name: `)."""
    series = reading.series
    where = f"{series.source} {series.metric}" if series.metric else series.source
    threshold = number_text(rule.threshold)
    if rule.condition is Condition.ABOVE_PCT:
        if reading.pct is None:
            return f"{where} at {number_text(reading.value)}, no limit (alert at {threshold} %)"
        return (f"{where} at {number_text(round_readable(reading.pct))} % of limit "
                f"{number_text(reading.limit)} (alert at {threshold} %)")
    if rule.condition is Condition.ABOVE:
        what = "month-to-date increase" if reading.counter else "at"
        return f"{where} {what} {number_text(reading.value)} (alert at {threshold})"
    if rule.condition is Condition.STALE:
        age = ("never polled successfully" if reading.value is None
               else f"last polled successfully {number_text(round(reading.value))} s ago")
        return f"{where} {age} (stale after {number_text(reading.window)} s)"
    if rule.condition.on_credit:
        balance = f"credit {rule.credit} ({series.source}) balance {number_text(reading.value)} {reading.unit}"
        if rule.condition is Condition.CREDIT_BELOW:
            return f"{balance} (alert below {threshold} {reading.unit})"
        return balance + (f", projected to run out on {reading.run_out}"
                          if reading.run_out else ", not projected to run out")
    if rule.condition is Condition.PROJECTED_OVER_INCLUDED:
        return (f"{where} projected at {number_text(reading.value)} by month end, "
                f"{number_text(reading.included)} included")
    return (f"{where} projected month amount {number_text(reading.value)} {reading.unit} "
            f"(alert above {threshold} {reading.unit})").replace("  ", " ")


def payload(
    rule: AlertRule, reading: Reading, state: EventState, *, event_id: str,
    since: datetime | None, at: datetime,
) -> dict[str, Any]:
    """The notification body of SPEC 8 (webhook JSON; the email carries the same facts).

    `threshold` is the condition's number (the included units for projected_over_included,
    the staleness window in seconds for stale); `limit` and `pct` are null where they do not
    apply.
    """
    threshold: Number | None = rule.threshold
    if rule.condition is Condition.PROJECTED_OVER_INCLUDED:
        threshold = reading.included
    elif rule.condition is Condition.STALE:
        threshold = None if reading.window is None else Decimal(repr(reading.window))
    stale = rule.condition is Condition.STALE or rule.condition.on_credit
    label = {EventState.FIRING: "FIRING", EventState.RESOLVED: "RESOLVED",
             EventState.TEST: "TEST"}[state]
    body: dict[str, Any] = {
        "id": event_id,
        "alert": rule.name,
        "state": str(state),
        "source": reading.series.source,
        "metric": reading.series.metric,
        "value": json_number(reading.value),
        "limit": None if stale else json_number(reading.limit),
        "pct": None if stale or reading.pct is None else round_readable(float(reading.pct)),
        "threshold": json_number(threshold),
        "since": utc_z(since, "seconds") if since is not None else None,
        "at": utc_z(at, "seconds"),
        "text": f"{label} {rule.name}: {describe(rule, reading)}",
    }
    if rule.condition.on_credit:
        body.update(credit=rule.credit, currency=reading.unit or None)
    return body
