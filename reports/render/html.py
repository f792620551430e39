"""Render a report as one self-contained HTML file (Jinja2 with autoescape, SVG charts inline)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from etl.files import write_text_atomic
from etl.textutil import readable_number
from reports.render.cells import CellStyle, cell_text

TEMPLATES = Path(__file__).parent / "templates"
NUMERIC_KINDS = (int, float, Decimal, np.integer, np.floating)


@dataclass
class Cell:
    """One table cell: its text (autoescaped) and CSS class."""
    text: str
    css: str = ""


@dataclass
class Row:
    """One table row: its cells and CSS class."""
    cells: list[Cell]
    css: str = ""


@dataclass
class Table:
    """A titled table of an HTML report."""
    title: str
    columns: list[str]
    rows: list[Row] = field(default_factory=list)


@dataclass
class Chart:
    """A captioned SVG chart of an HTML report."""
    caption: str
    svg: Markup  # matplotlib output: trusted markup, never built from vendor text


@lru_cache(maxsize=1)
def environment() -> Environment:
    """The Jinja2 environment of the report templates, autoescaping everything."""
    return Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=select_autoescape(["html"], default_for_string=True, default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )


HTML_CELLS = CellStyle(
    boolean=lambda b: "yes" if b else "",
    integer=lambda i: f"{i:,}",
    floating=readable_number,
    decimal=lambda d: f"{d:,f}",
    text=str,
)


def html_value(value: Any) -> str:
    """A cell for people: grouped, 4 significant digits (etl.textutil), empty for n/a."""
    return cell_text(value, HTML_CELLS)


def table_from_frame(title: str, df: pd.DataFrame, *, row_css: str | None = None,
                     low_coverage: bool = True, low_rows: Sequence[bool] | None = None
                     ) -> Table:
    """A Table of the frame's columns; `row_css` names a column whose value styles the row.

    Rows with `coverage_pct` below 100 show it in red (`low_coverage`), or, given
    `low_rows`, the rows it marks (a period in progress is no gap for what is still ahead).
    """
    table = Table(title, [str(c) for c in df.columns])
    for i, rec in enumerate(df.to_dict("records")):
        css = str(rec.get(row_css) or "") if row_css else ""
        cov = rec.get("coverage_pct")
        if low_rows is not None:
            css += " low" if low_rows[i] else ""
        elif low_coverage and isinstance(cov, int | float) and not pd.isna(cov) and cov < 100:
            css += " low"
        cells = [Cell(html_value(v), f"{c}{' num' if isinstance(v, NUMERIC_KINDS) else ''}")
                 for c, v in rec.items()]
        table.rows.append(Row(cells, css.strip()))
    return table


def package_version() -> str:
    """The installed usage-etl version shown in report footers (`dev` from a clone)."""
    try:
        return version("usage-etl")
    except PackageNotFoundError:
        return "dev"


def render_report(*, title: str, subtitle: str, tz: str, summary: Sequence[tuple[str, Any]],
                  tables: Sequence[Table], charts: Sequence[Chart] = (),
                  sources: Sequence[dict[str, Any]] = (), notes: Sequence[str] = ()) -> str:
    """The report page; every value is escaped except the chart SVGs."""
    return environment().get_template("report.html").render(
        title=title, subtitle=subtitle, tz=tz,
        summary=[(k, html_value(v)) for k, v in summary], tables=tables, charts=charts,
        sources=sources, notes=notes, version=package_version(),
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    )


def write_html(text: str, path: Path) -> Path:
    """Write the page to `path` (replaced atomically, so readers never see half a file)."""
    return write_text_atomic(path, text)
