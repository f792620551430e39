"""Evaluate every alert on the stored usage and deliver the notifications due (SPEC 8).

What `schedule` runs after each stored poll (in a thread of its own, so polling never
waits) and `usage-etl alerts check` runs from cron. The readings that need report
arithmetic — a counter's period-to-date increase, a billing rule's projection to the end of
its period, a credit's balance and run-out — come from the reports package, the same functions
the reports use (through etl.runtime.billing_now).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, assert_never

from sqlalchemy import Engine

from etl.alerts.evaluate import Reading, SeriesState, Transition, condition_holds, step
from etl.alerts.history import load_states, record
from etl.alerts.notifiers import send
from etl.alerts.outbox import DeliveryReport, Sender, deliver_due, wall_clock
from etl.alerts.readings import LatestSample, latest_samples
from etl.alerts.states import AlertState, EventState, SeriesRef
from etl.config import AlertRule, Condition, Config
from etl.errors import UsageEtlError
from etl.redact import redact
from etl.runtime import billing_now
from etl.runtime.logs import event
from etl.timefmt import utc_z
from etl.vendors.types import MetricType

log = logging.getLogger("etl.alerts")


def watched_series(config: Config, rule: AlertRule) -> list[SeriesRef]:
    """The series `rule` watches: its source's, or every source's that has the metric."""
    if rule.credit is not None:
        return [SeriesRef(c.source, None) for c in config.credits if c.name == rule.credit]
    out = []
    for src in config.sources:
        if rule.source is not None and src.name != rule.source:
            continue
        if rule.condition is Condition.STALE:
            out.append(SeriesRef(src.name, None))
        elif rule.metric is not None and src.vendor.metric_type_of(rule.metric) is not None:
            out.append(SeriesRef(src.name, rule.metric))
    return out


def readings(engine: Engine, config: Config, now: datetime,
             rules: Iterable[AlertRule] | None = None) -> dict[tuple[str, str, str], Reading]:
    """A Reading per (alert, source, metric or '') for `rules` (default: every alert)."""
    rules = list(config.alerts if rules is None else rules)
    with engine.connect() as conn:
        latest = latest_samples(conn)
    stale = _staleness(engine, config, now) if any(
        r.condition is Condition.STALE for r in rules) else {}
    counters = {(s.source, s.metric) for r in rules if r.condition is Condition.ABOVE
                for s in watched_series(config, r)
                if s.metric is not None and _is_counter(config, s)}
    mtd = _month_to_date_increase(engine, config, now, counters) if counters else {}
    projections = billing_now.projections(engine, config, now) if any(
        r.condition in (Condition.PROJECTED_OVER_INCLUDED, Condition.PROJECTED_AMOUNT_ABOVE)
        for r in rules) else {}
    credits = billing_now.credit_readings(engine, config, now) if any(
        r.condition.on_credit for r in rules) else {}
    out: dict[tuple[str, str, str], Reading] = {}
    for rule in rules:
        for series in watched_series(config, rule):
            key = (rule.name, series.source, series.metric_key)
            if rule.credit is not None:
                out[key] = _credit_reading(series, credits.get(rule.credit))
                continue
            out[key] = _reading(rule, series, latest, stale, mtd, projections)
    return out


def _credit_reading(series: SeriesRef, credit: billing_now.CreditReading | None) -> Reading:
    if credit is None:  # it pays no period in progress: nothing to watch
        return Reading(series)
    return Reading(series, value=credit.balance, unit=credit.currency,
                   run_out=None if credit.run_out is None else f"{credit.run_out:%Y-%m-%d}",
                   exhausted=credit.exhausted)


def _reading(rule: AlertRule, series: SeriesRef,
             latest: dict[tuple[str, str], LatestSample],
             stale: dict[str, tuple[bool, float | None, float]],
             mtd: dict[tuple[str, str], Decimal],
             projections: dict[tuple[str, str], billing_now.Projection]) -> Reading:
    if rule.condition is Condition.STALE:
        is_stale, age, window = stale[series.source]
        return Reading(series, value=age, stale=is_stale, window=window)
    assert series.metric is not None
    sample = latest.get((series.source, series.metric))
    limit = sample.limit if sample is not None else None
    pct = sample.pct if sample is not None else None
    at = sample.observed_at if sample is not None else None
    if rule.condition in (Condition.ABOVE_PCT, Condition.ABOVE):
        if (series.source, series.metric) in mtd:
            return Reading(series, value=mtd[(series.source, series.metric)],
                           observed_at=at, counter=True)
        return Reading(series, value=sample.value if sample is not None else None, limit=limit,
                       pct=pct, observed_at=at)
    proj = projections.get((series.source, series.metric))
    if proj is None:
        return Reading(series, observed_at=at)
    if rule.condition is Condition.PROJECTED_OVER_INCLUDED:
        return Reading(series, value=proj.quantity, included=proj.included, observed_at=at)
    return Reading(series, value=proj.amount, included=proj.included, observed_at=at,
                   unit=proj.currency)


def _is_counter(config: Config, series: SeriesRef) -> bool:
    """Whether `above` reads the series' month-to-date quantity rather than its level (SPEC 8)."""
    mtype = config.source(series.source).vendor.metric_type_of(str(series.metric))
    match mtype:
        case MetricType.COUNTER | MetricType.INTERVAL:
            return True  # `above` is on the month-to-date increase or sum (SPEC 8, SPEC 10)
        case MetricType.GAUGE | None:
            return False
        case _:
            assert_never(mtype)


def _staleness(engine: Engine, config: Config, now: datetime
               ) -> dict[str, tuple[bool, float | None, float]]:
    # The same rule as `usage-etl status` (SPEC 8: stale).
    from etl.runtime.status import source_statuses

    return {s.source: (s.stale, s.age_seconds, s.staleness_seconds)
            for s in source_statuses(engine, config, now)}


def _month_to_date_increase(engine: Engine, config: Config, now: datetime,
                            series: set[tuple[str, str]]) -> dict[tuple[str, str], Decimal]:
    """Counters' increase from the start of their period (report timezone) to now (SPEC 5).

    The period of the series' `[[billing]]` rule in progress (its cycle_day, SPEC 11), else
    the calendar month.
    """
    from reports.api import daily_usage
    from reports.compute.daily import exact_total

    today = now.astimezone(config.tz).date()
    starts = billing_now.period_starts(config, now)
    by_start: dict[date, set[tuple[str, str]]] = {}
    for key in series:
        by_start.setdefault(starts.get(key, today.replace(day=1)), set()).add(key)
    out = {}
    for start, keys in by_start.items():
        days = daily_usage(engine, start, today, config=config,
                           source=sorted({s for s, _ in keys}), metric=sorted({m for _, m in keys}))
        for (source, metric), group in days.groupby(["source", "metric"], observed=True):
            if (str(source), str(metric)) in keys:
                out[(str(source), str(metric))] = exact_total(group["increase"])
    return out


@dataclass(frozen=True)
class MadeEvent:
    """A state change this process stored."""

    id: str
    alert: str
    series: SeriesRef
    transition: Transition

    def __str__(self) -> str:
        what = " ".join(x for x in (self.series.source, self.series.metric) if x)
        return f"{self.transition} {self.alert}: {what} (id {self.id})"


def _current(engine: Engine, config: Config, now: datetime
             ) -> Iterator[tuple[AlertRule, SeriesRef, SeriesState, Reading]]:
    """Every (alert, series) in config order with its stored state and its reading at `now`."""
    found = readings(engine, config, now)
    with engine.connect() as conn:
        states = load_states(conn)
    for rule in config.alerts:
        for series in watched_series(config, rule):
            key = (rule.name, series.source, series.metric_key)
            yield rule, series, states.get(key, SeriesState()), found[key]


@dataclass
class CheckResult:
    """What one evaluation did: the events it created and the delivery pass after it."""

    events: list[MadeEvent] = field(default_factory=list)
    delivery: DeliveryReport = field(default_factory=DeliveryReport)


def evaluate(engine: Engine, config: Config, now: datetime) -> list[MadeEvent]:
    """Evaluate every alert on every series at `now` and store the changes (not sent here).

    Returns each change this process made; a change another
    replica made first is not repeated (etl.alerts.history).
    """
    if not config.alerts:
        return []
    made = []
    for rule, series, prev, reading in _current(engine, config, now):
        holds = condition_holds(rule, reading, firing=prev.state is AlertState.FIRING)
        new, transition = step(rule, prev, holds, now)
        if transition is None:
            continue
        event_id = record(engine, rule, reading, prev, new, transition, now)
        if event_id is not None:
            made.append(MadeEvent(event_id, rule.name, series, transition))
            event(log, logging.INFO, f"alert-{transition}", alert=rule.name,
                  source=series.source, metric=series.metric, value=reading.value,
                  id=event_id)
    return made


def check(engine: Engine, config: Config, now: datetime | None = None,
          sender: Sender = send, *, ignore_backoff: bool = False,
          clock: Callable[[], datetime] | None = None) -> CheckResult:
    """Evaluate every alert and deliver every notification due (`alerts check`).

    `now` (default: `clock()`) is the time the alerts are evaluated at; each delivery's
    lease and outcome are timed by `clock` when they happen (etl.alerts.outbox). `clock`
    defaults to the wall clock, or to `now` itself when only `now` is given (a replayed
    instant).
    """
    if clock is None:
        fixed = now
        clock = wall_clock if fixed is None else (lambda: fixed)
    now = now or clock()
    result = CheckResult(events=evaluate(engine, config, now))
    result.delivery = deliver_due(engine, {n.name: n for n in config.notifiers}, sender, now,
                                  ignore_backoff=ignore_backoff, clock=clock)
    return result


def send_test(config: Config, name: str, now: datetime | None = None,
              sender: Sender = send) -> dict[str, str | None]:
    """Send a test notification for alert `name` to each of its notifiers (`alerts test`).

    Nothing is stored. Returns, per notifier name, None when delivered, else why not.
    """
    from etl.alerts.evaluate import payload

    rule = config.alert(name)
    now = now or datetime.now(UTC)
    series = watched_series(config, rule)
    ref = series[0] if series else SeriesRef(rule.source or "-", rule.metric)
    body = payload(rule, Reading(ref), EventState.TEST, event_id=f"test-{int(now.timestamp())}",
                   since=None, at=now)
    body["text"] = f"TEST {rule.name}: a test notification from usage-etl"
    by_name = {n.name: n for n in config.notifiers}
    outcome: dict[str, str | None] = {}
    for notifier_name in rule.notify:
        try:
            sender(by_name[notifier_name], body)
            outcome[notifier_name] = None
        except UsageEtlError as exc:
            outcome[notifier_name] = str(exc)
    return outcome


class AlertWorker:
    """Runs `check` in a background thread when asked, never blocking the caller.

    The scheduler calls `request()` after each stored poll; requests arriving while a check
    runs are folded into one more run. `clock` is injectable for tests.
    """

    def __init__(self, engine: Engine, config: Config,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 sender: Sender = send, ready: Callable[[], bool] = lambda: True) -> None:
        self.engine, self.config, self.clock, self.sender = engine, config, clock, sender
        self.ready = ready  # False while the daemon waits for its database (spool-only mode)
        self._wanted = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._first = True
        self.runs = 0

    def start(self) -> None:
        """Start the alerts thread and ask it to deliver what a previous process left."""
        self._thread = threading.Thread(target=self._loop, name="alerts", daemon=True)
        self._thread.start()
        self.request()  # deliver what a previous process left in the outbox

    def request(self) -> None:
        """Ask for an evaluation and delivery pass (after a stored poll); returns at once."""
        self._wanted.set()

    def stop(self, timeout: float | None = None) -> None:
        """Stop the thread, waiting up to `timeout` seconds (None: until it ends)."""
        self._stop.set()
        self._wanted.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            # Wake for requests, and every 30 s for retries that have come due.
            self._wanted.wait(30)
            self._wanted.clear()
            if self._stop.is_set():
                return
            if not self.ready():
                continue
            try:
                check(self.engine, self.config, self.clock(), self.sender, clock=self.clock,
                      ignore_backoff=self._first)
                self._first = False
                self.runs += 1
            except Exception as exc:  # noqa: BLE001 - the daemon keeps polling whatever happens
                orig = getattr(exc, "orig", None) or exc
                first = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
                event(log, logging.WARNING, "alert-check-failed", error=redact(first),
                      message="evaluated again after the next stored poll")


@dataclass(frozen=True)
class AlertRow:
    """One line of `usage-etl alerts list`: an alert on one series, now."""

    alert: str
    source: str
    metric: str | None
    state: AlertState
    since: datetime | None
    value: Any
    observed_at: datetime | None
    credit: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The row as a JSON-ready dict: times as UTC `...Z` text, numbers as JSON numbers."""
        from etl.alerts.evaluate import json_number

        return {"alert": self.alert, "source": self.source, "metric": self.metric,
                "credit": self.credit, "state": str(self.state),
                "since": utc_z(self.since, "seconds") if self.since else None,
                "value": json_number(self.value),
                "observed_at": utc_z(self.observed_at) if self.observed_at else None}


def alert_rows(engine: Engine, config: Config, now: datetime | None = None) -> list[AlertRow]:
    """Per alert and series, in config order: the stored state, since when, and the value now.

    The state is ok when it never changed; the value is what the alert's condition reads.
    """
    return [AlertRow(rule.name, series.source, series.metric, state.state, state.since,
                     reading.value, reading.observed_at, rule.credit)
            for rule, series, state, reading in _current(engine, config, now or datetime.now(UTC))]
