"""The billing figures alerts read at `now`: each rule's period in progress and the credits.

The same pipeline as `report billing` (reports.pipelines.billing), asked for the label of
each rule's period holding today (SPEC 11: a `cycle_day` 15 rule is in its period labelled
November on 6 December), so alerts, reports and `/metrics` agree to the cent.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from etl.config import Config

if TYPE_CHECKING:
    from reports.pipelines.billing import BillingResult


@dataclass(frozen=True)
class Projection:
    """A rule's period in progress: its projected quantity and amount at the period's end."""

    quantity: Decimal | None
    amount: Decimal | None
    included: Decimal
    currency: str


@dataclass(frozen=True)
class CreditReading:
    """A credit now (SPEC 11): balance after the periods in progress so far, and run-out.

    `run_out` is the projected local run-out date (None: not within reach); `exhausted`
    whether that comes before the end of the period in progress of its source.
    """

    name: str
    source: str
    currency: str
    balance: Decimal
    run_out: date | None
    exhausted: bool


def _labels(config: Config, now: datetime) -> list[date]:
    from reports.periods import period_label

    today = now.astimezone(config.tz).date()
    return sorted({period_label(today, r.cycle_day) for r in config.billing})


def _results(engine: Engine, config: Config, now: datetime) -> list[BillingResult]:
    from reports.pipelines import billing

    return [billing(engine, config, label, now=now) for label in _labels(config, now)]


def projections(engine: Engine, config: Config, now: datetime
                ) -> dict[tuple[str, str], Projection]:
    """Each series' rule in its period in progress: the projection to the period's end."""
    from reports.compute.billing import in_progress

    out = {}
    for result in _results(engine, config, now):
        for row in result.table.to_dict("records"):
            if not in_progress(row):
                continue
            out[(str(row["source"]), str(row["metric"]))] = Projection(
                row["projected_quantity"], row["projected_amount"], Decimal(row["included"]),
                str(row["currency"]))
    return out


def period_starts(config: Config, now: datetime) -> dict[tuple[str, str], date]:
    """The first local day of each series' rule's period holding today (for period-to-date)."""
    from reports.periods import billing_period, period_label

    today = now.astimezone(config.tz).date()
    out = {}
    for rule in config.billing:
        period = billing_period(period_label(today, rule.cycle_day), rule.cycle_day, config.tz)
        if rule.valid_on(period.start):
            out[(rule.source, rule.metric)] = period.start
    return out


def credit_readings(engine: Engine, config: Config, now: datetime) -> dict[str, CreditReading]:
    """Every credit that pays a period in progress, by name (SPEC 11)."""
    if not config.credits or not config.billing:
        return {}
    from etl.store.models import to_micros

    results = _results(engine, config, now)
    now_us = to_micros(now)
    ends: dict[str, int] = {}
    for result in results:
        for rp in result.priced:
            if rp.period.start_us <= now_us < rp.period.end_us:
                ends[rp.rule.source] = max(ends.get(rp.rule.source, 0), rp.period.end_us)
    out = {}
    # The latest label's report has paid every earlier period, those in progress included.
    for status in results[-1].credits:
        c = status.credit
        end = ends.get(c.source)
        exhausted = (end is not None and status.run_out_us is not None
                     and status.run_out_us < end)
        out[c.name] = CreditReading(c.name, c.source, c.currency, status.balance,
                                    status.run_out, exhausted)
    return out

