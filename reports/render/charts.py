"""Charts as inline SVG text (matplotlib, no pyplot state); no vendor text ever goes in them."""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from datetime import date
from decimal import Decimal
from typing import assert_never

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from etl.vendors.types import MetricType
from reports.compute.daily import CRITICAL_PCT, US_PER_SECOND, WARNING_PCT

MAX_POINTS = 4000  # more points than pixels only makes the file bigger
_PROLOG = re.compile(r"^.*?(?=<svg)", re.S)
_COMMENT = re.compile(r"<!--.*?-->", re.S)
_METADATA = re.compile(r"<metadata>.*?</metadata>", re.S)


def svg_of(fig: Figure) -> str:
    """The figure as an <svg> element ready to inline in HTML."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None}, bbox_inches="tight")
    text = _PROLOG.sub("", buf.getvalue(), count=1)
    return _METADATA.sub("", _COMMENT.sub("", text))


def _thin(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if len(x) <= MAX_POINTS:
        return x, y
    step = int(np.ceil(len(x) / MAX_POINTS))
    return x[::step], y[::step]


def _plain_axis(ax: Axes) -> None:
    # Tick labels as the numbers themselves: no "1e6" offset or exponent in a corner, which
    # people read past (a counter at 1,000,000.3 is not "0.3").
    ax.ticklabel_format(axis="y", style="plain", useOffset=False)


def _legend(ax: Axes) -> None:
    # legend() with nothing labelled warns on stderr, once per empty chart: a month of daily
    # reports printed dozens of lines. Such a chart carries its "no samples" note instead.
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)


def _bands(ax: Axes, limit: float | None, top: float) -> None:
    if limit is None or not np.isfinite(limit) or limit <= 0:
        return
    ax.axhspan(limit * WARNING_PCT / 100, limit * CRITICAL_PCT / 100,
               color="#f5a623", alpha=0.18, lw=0, label=f"warning (≥{WARNING_PCT:g} %)")
    ax.axhspan(limit * CRITICAL_PCT / 100, max(limit, top) * 1.05,
               color="#d0021b", alpha=0.12, lw=0, label=f"critical (≥{CRITICAL_PCT:g} %)")
    ax.axhline(limit, color="#d0021b", lw=1.2, ls="--", label="plan limit")


def series_day_chart(t_us: np.ndarray, value: np.ndarray, *, start_us: int, end_us: int,
                     metric: str, metric_type: MetricType, limit: float | None,
                     prev_value: float | None = None) -> str:
    """One series over one local day as an SVG chart.

    Gauge values (with limit and bands) or the counter's running increase. x is hours since
    local midnight, so DST days are 23 or 25 h wide.
    """
    from reports.compute.daily import counter_increments, unscale

    fig = Figure(figsize=(7.5, 2.4), dpi=96)
    ax = fig.add_subplot()
    hours = (end_us - start_us) / (3600 * US_PER_SECOND)
    x = (np.asarray(t_us, dtype=np.int64) - start_us) / (3600 * US_PER_SECOND)
    match metric_type:
        case MetricType.COUNTER:
            inc, _, scale = counter_increments(np.asarray(value, dtype=np.float64), prev_value)
            y = unscale(np.cumsum(inc), scale).astype(np.float64)
            label = f"{metric}: increase since midnight"
            bands = False
        case MetricType.GAUGE:
            y = np.asarray(value, dtype=np.float64)
            label = metric
            bands = True  # limits and warning bands are levels: a gauge's
        case MetricType.INTERVAL:
            y = np.asarray(value, dtype=np.float64)
            label = f"{metric} per bucket"
            bands = False
        case _:
            assert_never(metric_type)
    x, y = _thin(x, y)
    if len(x):
        ax.step(x, y, where="post", color="#1f5fa8", lw=1.3, label=label)
        ax.plot(x, y, ".", color="#1f5fa8", ms=2.5)
    top = float(np.nanmax(y)) if len(y) else 1.0
    if bands:
        _bands(ax, limit, top)
    ax.set_xlim(0, hours)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("hours since local midnight")
    ax.grid(alpha=0.3)
    if len(x) == 0:
        ax.text(0.5, 0.5, "no samples", transform=ax.transAxes, ha="center", color="gray")
    _plain_axis(ax)
    _legend(ax)
    return svg_of(fig)


def bucket_day_chart(start_us: np.ndarray, end_us: np.ndarray, value: np.ndarray, *,
                     day_start_us: int, day_end_us: int, metric: str) -> str:
    """An interval series over one local day: one bar per bucket (SPEC 10).

    A bucket that crosses a day edge shows only its part inside the day, its height the
    value apportioned by time (as the day's `increase` counts it).
    """
    fig = Figure(figsize=(7.5, 2.4), dpi=96)
    ax = fig.add_subplot()
    per_hour = 3600 * US_PER_SECOND
    a = np.maximum(np.asarray(start_us, dtype=np.int64), day_start_us)
    b = np.minimum(np.asarray(end_us, dtype=np.int64), day_end_us)
    share = (b - a) / np.maximum(np.asarray(end_us) - np.asarray(start_us), 1)
    height = np.asarray(value, dtype=np.float64) * share
    if len(a):
        ax.bar((a - day_start_us) / per_hour, height, width=(b - a) / per_hour, align="edge",
               color="#1f5fa8", edgecolor="white", lw=0.5, label=f"{metric} per bucket")
    ax.set_xlim(0, (day_end_us - day_start_us) / per_hour)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("hours since local midnight")
    ax.grid(alpha=0.3)
    if len(a) == 0:
        ax.text(0.5, 0.5, "no buckets", transform=ax.transAxes, ha="center", color="gray")
    _plain_axis(ax)
    _legend(ax)
    return svg_of(fig)


# What the month-so-far line of each aggregation is (SPEC 5).
_QUANTITY_LABELS = {
    "increase": "cumulative quantity", "peak": "highest value so far",
    "p95": "95th percentile so far", "twa": "time-weighted average so far",
    "unit_hours": "unit-hours so far", "last": "latest reading", "sum": "cumulative sum",
}


def billing_chart(days: Sequence[date], cumulative: Sequence[Decimal | None],
                  included: Decimal, aggregation: str) -> str:
    """The month's quantity so far (sum, running peak, ...) per day against the included units."""
    fig = Figure(figsize=(7.5, 2.6), dpi=96)
    ax = fig.add_subplot()
    # Day d's cumulative value is drawn over [d, d+1), so the last day gets its full width.
    x = np.array([d.day for d in days] + [len(days) + 1])
    y = np.array([np.nan if c is None else float(c) for c in cumulative])
    y = np.append(y, y[-1] if len(y) else np.nan)
    label = _QUANTITY_LABELS.get(aggregation, "quantity so far")
    ax.step(x, y, where="post", color="#1f5fa8", lw=1.5, label=label)
    ax.axhline(float(included), color="#d0021b", ls="--", lw=1.2, label="included units")
    above = np.where(np.nan_to_num(y) > float(included), np.nan_to_num(y), float(included))
    ax.fill_between(x, float(included), above, step="post", color="#d0021b", alpha=0.15,
                    label="overage")
    ax.set_xlim(1, len(days) + 1)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("day of month")
    ax.grid(alpha=0.3)
    _plain_axis(ax)
    _legend(ax)
    return svg_of(fig)
