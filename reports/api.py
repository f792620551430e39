"""The analysts' API: stored history and the reports as tidy, typed pandas DataFrames.

Every function takes ``db``: a database URL, a SQLite file path, an SQLAlchemy Engine or an
``etl.config.Config`` (whose ``database_url`` is used). The report functions also need the
config (sources, staleness, billing rules): with a URL, path or Engine they take
``config=`` (a Config or a TOML path) and otherwise load the usual one
(``$USAGE_ETL_CONFIG`` or ``./usage-etl.toml``).

The figures come from the same pipelines as the CSV reports (``reports.pipelines``), so
they are the same numbers. These functions only read: they never write to the database, except
that an existing but empty database gets the schema, as every usage-etl command does. A
SQLite file that does not exist is an error rather than a new empty database.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pandas as pd
from sqlalchemy import Engine

from etl.config import Aggregation, Config, Pricing
from etl.errors import InputError
from etl.vendors.types import MetricType
from reports import arguments as args
from reports import pipelines
from reports.access import ConfigLike, DbLike, open_engine, report_config
from reports.arguments import NameFilter, TimeLike
from reports.compute.billing import BILLING_COLUMNS
from reports.compute.daily import CRITICAL_PCT, DAILY_COLUMNS, WARNING_PCT
from reports.compute.focus import FOCUS_COLUMNS, FOCUS_DECIMALS, FOCUS_INSTANTS
from reports.compute.reconcile import RECONCILE_COLUMNS, RECONCILE_STATUSES
from reports.periods import days_period
from reports.pipelines.days import SeriesInfo, configured_series
from reports.read import raw as raw_history

__all__ = [
    "CRITICAL_PCT",
    "WARNING_PCT",
    "billing",
    "daily_usage",
    "focus",
    "list_series",
    "load_attempts",
    "load_samples",
    "reconcile",
]


SAMPLE_COLUMNS = ["observed_at", "source", "metric", "metric_type", "value", "limit", "pct",
                  "status"]
ATTEMPT_COLUMNS = ["source", "started_at", "finished_at", "outcome", "http_status",
                   "latency_ms", "tries", "samples_stored", "error"]
SERIES_COLUMNS = ["source", "metric", "kind", "metric_type", "samples", "first", "last"]
_MONEY_COLUMNS = ["quantity", "included", "overage", "unit_price", "amount", "credit_applied",
                  "amount_due", "mtd_quantity", "mtd_amount", "projected_quantity",
                  "projected_amount", "flat_fee", "minimum"]
_RECONCILE_MONEY = ["metered_quantity", "invoiced_quantity", "quantity_diff", "metered_amount",
                    "invoiced_amount", "amount_diff"]


# --- raw history -------------------------------------------------------------------------


def list_series(db: DbLike, tz: str = "UTC") -> pd.DataFrame:
    """The stored series: one row per (source, metric) with sample count and time range.

    Columns: ``source, metric, kind, metric_type`` (categorical), ``samples`` (Int64),
    ``first, last`` (aware timestamps in `tz`).

    Example::

        >>> from reports import list_series
        >>> list_series("usage-etl-demo/usage.db")          # doctest: +SKIP
            source       metric        kind metric_type  samples                     first ...
        0    rules  invocations      nected     counter     8065 2026-10-24 00:00:00+00:00 ...
    """
    zone = args.zone(tz)
    with open_engine(db) as engine, engine.connect() as conn:
        rows = raw_history.series_rows(conn)
    df = pd.DataFrame.from_records(rows, columns=SERIES_COLUMNS)
    for col in ("source", "metric", "kind", "metric_type"):
        df[col] = args.category(df[col].astype(object))
    df["samples"] = df["samples"].astype("Int64")
    df["first"] = args.timestamps(df["first"], zone)
    df["last"] = args.timestamps(df["last"], zone)
    return df


def load_samples(db: DbLike, source: NameFilter = None, metric: NameFilter = None,
                 start: TimeLike | None = None, end: TimeLike | None = None,
                 tz: str | None = "UTC") -> pd.DataFrame:
    """Every stored sample, long format: one row per (series, observed_at), oldest first.

    `source` and `metric` take a name or a list of names (an unknown one is an error naming
    the known ones). `start` is included, `end` is not: a date means its local midnight in
    `tz`, except that a date `end` includes that whole day (``end="2026-11-30"`` reads up to
    December 1st, 00:00). Naive datetimes are taken in `tz`. ``tz=None``: the config's zone
    when `db` is a Config, else UTC.

    Columns: ``observed_at`` (aware, in `tz`), ``source, metric, metric_type`` (categorical),
    ``value`` (float64), ``limit`` (Float64, <NA> when the vendor reports none), ``pct``
    (value / limit x 100, Float64), ``status`` (the vendor's healthy/warning/critical, string).

    Example::

        >>> from reports import load_samples
        >>> df = load_samples("sqlite:///usage.db", source="ws-prod", metric="connections",
        ...                   start="2026-11-01", end="2026-11-30", tz="Europe/Berlin")
        >>> df.set_index("observed_at")["value"].resample("1h").max()   # doctest: +SKIP
    """
    zone = args.zone(tz or (db.timezone if isinstance(db, Config) else "UTC"))
    sources, metrics = args.names(source), args.names(metric)
    lo, hi = args.bounds(start, end, zone)
    with open_engine(db) as engine, engine.connect() as conn:
        stored = raw_history.stored_names(conn)
        args.check_names("source", sources, (s for s, _ in stored))
        args.check_names("metric", metrics, (m for _, m in stored))
        rows = raw_history.sample_rows(conn, sources, metrics, lo, hi)
    raw = pd.DataFrame.from_records(
        rows, columns=["observed_at", "source", "metric", "metric_type", "value", "limit",
                       "status"])
    df = pd.DataFrame({
        "observed_at": args.timestamps(raw["observed_at"], zone),
        "source": args.category(raw["source"].astype(object), sorted({s for s, _ in stored})),
        "metric": args.category(raw["metric"].astype(object), sorted({m for _, m in stored})),
        "metric_type": args.category(raw["metric_type"].astype(object), [t.value for t in MetricType]),
        "value": raw["value"].astype("float64"),
        "limit": raw["limit"].astype("Float64"),
        "status": raw["status"].astype("string"),
    })
    limit = df["limit"].where(df["limit"] > 0)
    df.insert(6, "pct", (df["value"] / limit * 100).astype("Float64"))
    return df[SAMPLE_COLUMNS]


def load_attempts(db: DbLike, source: NameFilter = None, start: TimeLike | None = None,
                  end: TimeLike | None = None, tz: str | None = "UTC") -> pd.DataFrame:
    """Every poll of a vendor (``collection_attempts``), oldest first.

    `start`/`end` select on ``started_at`` as in `load_samples`. Columns: ``source``,
    ``outcome`` (categorical: ok, auth_error, rate_limited, ...), ``started_at, finished_at``
    (aware, in `tz`), ``http_status, tries, samples_stored`` (Int64), ``latency_ms``
    (Float64), ``error`` (string, secrets already redacted).

    Example::

        >>> from reports import load_attempts
        >>> att = load_attempts("sqlite:///usage.db", start="2026-11-01")
        >>> att.groupby("source", observed=True)["outcome"].value_counts()  # doctest: +SKIP
    """
    zone = args.zone(tz or (db.timezone if isinstance(db, Config) else "UTC"))
    sources = args.names(source)
    lo, hi = args.bounds(start, end, zone)
    with open_engine(db) as engine, engine.connect() as conn:
        rows = raw_history.attempt_rows(conn, sources, lo, hi)
    df = pd.DataFrame.from_records(rows, columns=ATTEMPT_COLUMNS)
    df["source"] = args.category(df["source"].astype(object))
    df["started_at"] = args.timestamps(df["started_at"], zone)
    df["finished_at"] = args.timestamps(df["finished_at"], zone)
    df["outcome"] = args.category(df["outcome"].astype(object))
    for col in ("http_status", "tries", "samples_stored"):
        df[col] = df[col].astype("Int64")
    df["latency_ms"] = df["latency_ms"].astype("Float64")
    df["error"] = df["error"].astype("string")
    return df


# --- the reports -------------------------------------------------------------------------


def _series(config: Config, source: NameFilter, metric: NameFilter, engine: Engine | None = None,
            until_us: int | None = None) -> list[SeriesInfo]:
    sources, metrics = args.names(source), args.names(metric)
    every = configured_series(config, engine=engine, until_us=until_us)
    args.check_names("source", sources, (s.source for s in every))
    args.check_names("metric", metrics, (s.metric for s in every))
    return [s for s in every if (sources is None or s.source in sources)
            and (metrics is None or s.metric in metrics)]


def daily_usage(db: DbLike, start: TimeLike, end: TimeLike | None = None,
                tz: str | None = None, *, source: NameFilter = None,
                metric: NameFilter = None, config: ConfigLike = None,
                rollups: bool = False) -> pd.DataFrame:
    """The daily report as a DataFrame: one row per configured series and local day.

    Days `start` to `end` are **both included** (like ``usage-etl report daily``); `end`
    defaults to `start`. Each takes a date, a datetime (its local day in `tz`) or an ISO
    string. `tz` defaults to the config's ``timezone``. `source`/`metric` narrow the series
    (a name or a list). ``rollups=True`` reads and refreshes the stored daily rollups
    (faster over long histories, but it writes those cache rows); by default nothing is
    written and the days are computed from the samples.

    The columns and figures are those of ``daily-YYYY-MM-DD.csv`` (see docs/reports.md),
    except that ``date`` is the aware instant the local day starts at, in `tz`
    (``df["date"].dt.date`` gives the plain dates). ``source, metric, metric_type`` are
    categorical, counts ``Int64``, measures ``Float64``; <NA> where the CSV cell is empty.

    Example::

        >>> from reports import daily_usage
        >>> d = daily_usage("sqlite:///usage.db", "2026-11-01", "2026-11-30",
        ...                 config="usage-etl.toml", metric="connections")
        >>> d.nlargest(5, "max")[["date", "max", "peak_pct", "critical_minutes"]]  # doctest: +SKIP
    """
    cfg = report_config(db, config)
    zone = args.zone(tz or cfg.timezone)
    first, last = args.day(start, zone, "start"), args.day(end if end is not None else start, zone, "end")
    if last < first:
        raise InputError(f"end: {last} is before start {first}")
    until_us = days_period(first, last + timedelta(days=1), zone).end_us
    with open_engine(db) as engine:
        series = _series(cfg, source, metric, engine, until_us)
        df = pipelines.daily(engine, cfg, first, last, zone.key, series=series,
                             rollups=rollups).table
    df["date"] = args.local_days(df["date"], zone)
    order = list(dict.fromkeys(s.source for s in series))
    df["source"] = args.category(df["source"].astype(object), order)
    df["metric"] = args.category(df["metric"].astype(object),
                             list(dict.fromkeys(s.metric for s in series)))
    df["metric_type"] = args.category(df["metric_type"].astype(object), [t.value for t in MetricType])
    return df[DAILY_COLUMNS]


def _money(df: pd.DataFrame, columns: Sequence[str], decimal: bool) -> None:
    for col in columns:
        if decimal:
            df[col] = df[col].astype(object).where(df[col].notna(), None)
        else:
            df[col] = args.floats(df[col])


def billing(db: DbLike, month: TimeLike, tz: str | None = None, *, config: ConfigLike = None,
            now: datetime | None = None, decimal: bool = False,
            rollups: bool = False) -> pd.DataFrame:
    """The billing report for a month: one row per ``[[billing]]`` rule.

    `month` is ``"YYYY-MM"`` (or any date in it): each rule's period labelled with it, from
    local midnight of its ``cycle_day`` in that month, in `tz` (default: the config's zone),
    to the same day of the next month (``period_start``/``period_end``, aware local
    midnights; SPEC 11), priced by the rule valid on its first day. Columns and figures
    as in ``billing-YYYY-MM.csv``, including the period-to-date and, for a period in
    progress (relative to `now`, default the current time), the projection to its end
    (``projected_quantity``, ``projected_amount``, ``included_used_up_on``), and the
    prepaid credit applied (``credit_applied``, ``amount_due``). Quantities and
    money are Float64 (<NA> where empty); ``decimal=True`` keeps them as the exact
    ``decimal.Decimal`` values the report computes. ``included_used_up_on`` is the aware
    start of that local day. ``rollups`` as in `daily_usage`.

    Example::

        >>> from reports import billing
        >>> b = billing("sqlite:///usage.db", "2026-11", config="usage-etl.toml")
        >>> b[["source", "metric", "quantity", "amount", "projected_amount"]]  # doctest: +SKIP
    """
    cfg = report_config(db, config)
    zone = args.zone(tz or cfg.timezone)
    first = args.month(month)
    with open_engine(db) as engine:
        df = pipelines.billing(engine, cfg, first, zone.key, now=now, rollups=rollups).table
    return _typed_billing(df, zone, decimal)


def _typed_billing(df: pd.DataFrame, zone: ZoneInfo, decimal: bool) -> pd.DataFrame:
    df = df.copy()
    df["month"] = df["month"].astype("string")
    for col in ("source", "metric"):
        df[col] = args.category(df[col].astype(object), list(dict.fromkeys(df[col])))
    df["aggregation"] = args.category(df["aggregation"].astype(object), list(Aggregation))
    df["pricing"] = args.category(df["pricing"].astype(object), list(Pricing))
    df["currency"] = df["currency"].astype("string")
    _money(df, _MONEY_COLUMNS, decimal)
    df["coverage_pct"] = df["coverage_pct"].astype("Float64")
    df["samples"] = df["samples"].astype("Int64")
    df["resets"] = df["resets"].astype("Int64")
    used = df["included_used_up_on"].astype(object).where(df["included_used_up_on"].notna())
    df["included_used_up_on"] = args.local_days(used, zone)
    df["used_up_projected"] = df["used_up_projected"].astype("boolean")
    df["minimum_applied"] = df["minimum_applied"].astype("boolean")
    for col in ("period_start", "period_end", "valid_from", "valid_until"):
        df[col] = args.local_days(df[col].astype(object).where(df[col].notna()), zone)
    for col in ("elapsed_pct", "elapsed_coverage_pct"):
        df[col] = df[col].astype("Float64")
    return df[BILLING_COLUMNS]


def reconcile(db: DbLike, month: TimeLike, invoice: str | os.PathLike[str],
              tolerance_pct: float = 1.0, tz: str | None = None, *,
              config: ConfigLike = None, now: datetime | None = None,
              decimal: bool = False, rollups: bool = False) -> pd.DataFrame:
    """Metered (`billing`) against the invoice CSV's lines for `month`.

    The invoice CSV has at least ``source, month, metric, quantity, amount``; a bad file is
    an error naming ``FILE:LINE``. Columns and figures as in ``reconcile-YYYY-MM.csv``:
    ``*_diff`` = metered - invoiced, ``status`` (categorical) is ``match`` when quantity and
    amount are both within `tolerance_pct` percent of the invoiced ones, else ``mismatch``,
    ``missing_invoice`` or ``missing_metered``; ``reason`` names a likely cause and
    ``coverage_pct``/``resets`` show what the metered figures rest on. Numbers are Float64
    (``decimal=True``: exact Decimals).

    Example::

        >>> from reports import reconcile
        >>> r = reconcile("sqlite:///usage.db", "2026-11", "invoice-2026-11.csv",
        ...               tolerance_pct=0.5, config="usage-etl.toml")
        >>> r[r["status"] != "match"]                                  # doctest: +SKIP
    """
    first = args.month(month)
    given = pipelines.reconcile_input(first, Path(invoice), tolerance_pct,
                                      tolerance_name="tolerance_pct")
    cfg = report_config(db, config)
    zone = args.zone(tz or cfg.timezone)
    with open_engine(db) as engine:
        df = pipelines.reconcile(engine, cfg, given, zone.key, now=now, rollups=rollups).table
    df["month"] = df["month"].astype("string")
    for col in ("source", "metric"):
        df[col] = args.category(df[col].astype(object), list(dict.fromkeys(df[col])))
    _money(df, _RECONCILE_MONEY, decimal)
    df["status"] = args.category(df["status"].astype(object), RECONCILE_STATUSES)
    df["reason"] = df["reason"].astype("string")
    df["currency"] = df["currency"].astype("string")
    df["coverage_pct"] = args.floats(df["coverage_pct"])
    df["resets"] = df["resets"].astype("Int64")
    return df[RECONCILE_COLUMNS]


def focus(db: DbLike, month: TimeLike, tz: str | None = None, *, config: ConfigLike = None,
          now: datetime | None = None, decimal: bool = False,
          rollups: bool = False) -> pd.DataFrame:
    """The billing month as FOCUS 1.2 cost and usage rows, as in ``focus-YYYY-MM.csv``.

    `month`, `tz`, `now` and `rollups` as in `billing`. Columns are
    ``reports.compute.focus.FOCUS_COLUMNS`` (SPEC 12): costs and quantities Float64
    (``decimal=True``: exact Decimals), the four period columns aware UTC timestamps, the
    rest strings (<NA> where FOCUS leaves them null).

    Example::

        >>> from reports import focus
        >>> f = focus("sqlite:///usage.db", "2026-11", config="usage-etl.toml")
        >>> f.groupby("BillingCurrency")["BilledCost"].sum()          # doctest: +SKIP
    """
    cfg = report_config(db, config)
    zone = args.zone(tz or cfg.timezone)
    with open_engine(db) as engine:
        df = pipelines.focus(engine, cfg, args.month(month), zone.key, now=now,
                             rollups=rollups).table
    _money(df, FOCUS_DECIMALS, decimal)
    for col in FOCUS_INSTANTS:
        df[col] = pd.to_datetime(df[col], utc=True)
    for col in set(FOCUS_COLUMNS) - set(FOCUS_DECIMALS) - set(FOCUS_INSTANTS):
        df[col] = df[col].astype("string")
    return df
