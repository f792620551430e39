"""Report files: CSV cells, self-contained escaped HTML with SVG charts, same on both engines."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from reports.jobs import build_billing, build_daily, build_reconcile
from reports.render.csv import csv_text, format_cell
from tests.factories import (
    at,
    billing_rules,
    examples,
    make_config,
    migrated_engine,
    nected,
    seed_month,
    store,
    wiresocket,
)

XSS = "<script>alert(1)</script>"


def cell_by_cell_csv(df: pd.DataFrame) -> str:
    """The reference: every cell through format_cell, row by row."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([format_cell(c) for c in df.columns])
    for row in df.itertuples(index=False, name=None):
        writer.writerow([format_cell(v) for v in row])
    return buf.getvalue()
NOW = datetime(2027, 1, 1, tzinfo=UTC)


def test_csv_cells_are_plain_numbers_and_formula_safe_text() -> None:
    assert format_cell(1e20) == "100000000000000000000"
    assert format_cell(0.00001) == "0.00001"
    assert format_cell(82.0) == "82"
    assert format_cell(12) == "12"
    assert format_cell(Decimal("0.010")) == "0.010"
    assert format_cell(Decimal("-1.5")) == "-1.5"  # a number, not text
    assert format_cell(None) == "" and format_cell(float("nan")) == "" and format_cell(pd.NA) == ""
    for bad in ("=1+2", "+1", "-x", "@SUM(A1)", "\tx", "\rx"):
        assert format_cell(bad) == "'" + bad
    text = csv_text(pd.DataFrame({"a": ["=HYPERLINK(\"x\")", "ok"], "b": [1, 2]}))
    assert text.splitlines()[1].startswith("\"'=HYPERLINK")


def test_csv_written_a_column_at_a_time_has_the_same_bytes_as_cell_by_cell() -> None:
    df = pd.DataFrame({
        "date": [date(2026, 5, 1), date(2026, 5, 2), date(2026, 5, 3), date(2026, 5, 4)],
        "source": ["ws", "-ws", "a,b \"q\"", "=cmd"],
        "samples": [1440, 0, 7, 12],
        "mean": [82.0, float("nan"), 1 / 3, -0.0],
        "big": [1e20, 1e-7, float("inf"), 123456789.125],
        "limit": pd.array([100.0, None, 2.5, 0.1], dtype="Float64"),
        "resets": pd.array([1, None, 0, 3], dtype="Int64"),
        "ok": [True, False, True, False],
        "maybe": [True, None, False, pd.NA],
        "at": pd.to_datetime(["2026-05-01T00:00Z", None, "2026-05-03T10:00Z", "2026-05-04T00:00Z"]),
        "text": ["plain", None, "+1", "x"],
    })
    assert csv_text(df) == cell_by_cell_csv(df)
    assert csv_text(df.iloc[:0]) == cell_by_cell_csv(df.iloc[:0])


@settings(max_examples=examples(200), deadline=None)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=30))
def test_float_columns_have_the_same_text_as_cell_by_cell(values: list[float]) -> None:
    df = pd.DataFrame({"v": values, "w": [float(v) / 7 for v in values]})
    assert csv_text(df) == cell_by_cell_csv(df)


def test_daily_csv_has_spec_columns_and_no_cell_starts_with_a_formula(engine: Engine,
                                                                      tmp_path: Path) -> None:
    # A source name may legally start with '-': a spreadsheet would read it as a formula.
    config = make_config(ws_name="-ws")
    store(engine, [wiresocket(at("2026-05-03T10:00:00"), 82, source="-ws", tenant="=cmd|x")])
    paths = build_daily(engine, config, date(2026, 5, 3), date(2026, 5, 3), formats=["csv"],
                        out_dir=tmp_path)
    assert paths == [tmp_path / "daily-2026-05-03.csv"]
    lines = paths[0].read_text().splitlines()
    assert lines[0].startswith("date,source,metric,samples,min,max,mean,limit,peak_pct,"
                               "increase,resets,coverage_pct")
    assert lines[1] == ("2026-05-03,'-ws,connections,1,82,82,82,100,82,,,0.69,,"
                        "gauge,82,10,0")
    cells = [c for line in lines for c in line.split(",")]
    assert not any(c.startswith(("=", "+", "-", "@")) for c in cells)


def test_html_escapes_vendor_values_and_is_self_contained(engine: Engine, tmp_path: Path) -> None:
    store(engine, [wiresocket(at("2026-05-03T10:00:00"), 95, tenant=XSS),
                   wiresocket(at("2026-05-03T11:00:00"), 60, tenant=XSS),
                   nected(at("2026-05-03T10:00:00"), 5), nected(at("2026-05-03T11:00:00"), 9)])
    config = make_config(billing=billing_rules())
    paths = build_daily(engine, config, date(2026, 5, 3), date(2026, 5, 3), formats=["html"],
                        out_dir=tmp_path)
    paths += build_billing(engine, config, "2026-05", formats=["html"], out_dir=tmp_path, now=NOW)
    invoice = tmp_path / "inv.csv"
    invoice.write_text("source,month,metric,quantity,amount\n"
                       f"\"{XSS}\",2026-05,invocations,1,1\n")
    paths += build_reconcile(engine, config, "2026-05", invoice, formats=["html"],
                             out_dir=tmp_path, now=NOW)
    assert [p.name for p in paths] == ["daily-2026-05-03.html", "billing-2026-05.html",
                                       "reconcile-2026-05.html"]
    for path in paths:
        html = path.read_text()
        assert "<script" not in html.lower()
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
        # Nothing fetched from elsewhere: only in-page (#id) references, no @import or url().
        assert not re.search(r"(src|href)\s*=\s*[\"'](?!#)", html, re.I)
        assert "@import" not in html and "url(http" not in html
    daily = paths[0].read_text()
    assert daily.count("<svg") == 3  # one chart per series with samples
    assert "critical" in daily and "plan limit" not in daily.split("<svg")[0]
    assert paths[1].read_text().count("<svg") == 2


def test_daily_html_with_empty_series_warns_nothing_and_keeps_fractional_increase(
        engine: Engine, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    import gc
    import warnings

    # Only the counter has samples that day: both ws-prod gauges (stored, from May 1st)
    # are empty on May 3rd, and their charts used to warn that the legend was empty.
    store(engine, [wiresocket(at("2026-05-01T10:00:00"), 5)])
    store(engine, [nected(at(f"2026-05-03T{h}:00:00"), v)
                   for h, v in (("10", 10.25), ("11", 11.5), ("12", 12.0))])
    # Garbage of earlier tests in this worker (an engine's pooled connections, say) is
    # collected now, not by a collection inside the block, whose warnings are not this code's.
    gc.collect()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        [path] = build_daily(engine, make_config(), date(2026, 5, 3), date(2026, 5, 3),
                             formats=["html"], out_dir=tmp_path)
    assert [str(w.message) for w in caught] == []
    assert capfd.readouterr().err == ""
    html = path.read_text()
    assert html.count("<svg") == 3  # the empty series still get a chart ("no samples")
    # First sample ever adds 0, then +1.25 and +0.5: 1.75, not int()'s 1.
    assert re.search(r'counter increase</div><div class="v">1\.75</div>', html)


def test_sqlite_and_postgresql_give_identical_reports(sqlite_url: str, pg_url: str,
                                                      tmp_path: Path) -> None:
    texts = []
    config = make_config("Europe/Berlin", billing_rules())
    for name, url in (("sqlite", sqlite_url), ("pg", pg_url)):
        with migrated_engine(url) as eng:
            seed_month(eng)
            store(eng, [wiresocket(at("2026-10-25T00:30:00"), 40.25),
                        nected(at("2026-10-25T12:00:00"), 7)])
            out = tmp_path / name
            paths = build_daily(eng, config, date(2026, 5, 1), date(2026, 5, 2),
                                formats=["csv"], out_dir=out)
            paths += build_daily(eng, config, date(2026, 10, 25), date(2026, 10, 25),
                                 formats=["csv"], out_dir=out)
            paths += build_billing(eng, config, "2026-05", formats=["csv"], out_dir=out, now=NOW)
            texts.append([p.read_text() for p in paths])
    assert texts[0] == texts[1]
    assert "2026-05,rules,invocations,increase,75,100,0,0.001,0.00,USD," in texts[0][-1]
