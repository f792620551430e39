"""Numbers people read (issue 26): every HTML number and alert percentage keeps enough
significant digits for its value, while CSV files keep every digit."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import Engine

from etl.textutil import readable_number, round_readable
from reports.jobs import build_daily
from tests.factories import at, make_config, store, wiresocket


@pytest.mark.parametrize(("value", "shown"), [
    (0.0047, "0.0047"), (0.004712345, "0.004712"), (0.01, "0.01"), (0.5, "0.50"),
    (1.23456, "1.235"), (47.123456, "47.12"), (1234.5, "1,234.50"), (1234.5678, "1,234.57"),
    (2500000000.25, "2,500,000,000.25"), (12.0, "12"), (-0.0047, "-0.0047"), (1e-20, "1e-20"),
])
def test_a_number_for_people_keeps_four_significant_digits_and_two_decimals(
        value: float, shown: str) -> None:
    assert readable_number(value) == shown


def test_a_percentage_is_rounded_to_what_people_read_without_losing_a_small_one() -> None:
    assert [round_readable(v) for v in (47.123456, 0.00471234, 99.999, 100.0)] == [
        47.12, 0.004712, 100.0, 100.0]


def test_a_small_gauge_against_a_small_limit_shows_its_digits_in_html_and_csv(
        engine: Engine, tmp_path: Path) -> None:
    # 0.0047 TB used of a 0.01 TB plan: 47 % of the limit.
    store(engine, [wiresocket(at("2026-05-03T10:00:00"), 0.0047, 0.00031, limit=0.01,
                              docs_limit=None),
                   wiresocket(at("2026-05-03T11:00:00"), 0.0021, 0.00031, limit=0.01,
                              docs_limit=None)])
    paths = build_daily(engine, make_config(), date(2026, 5, 3), date(2026, 5, 3),
                        formats=["csv", "html"], out_dir=tmp_path)
    csv_path, html_path = sorted(paths, key=lambda p: p.suffix)
    html = html_path.read_text()
    table = html.split("<svg")[0]
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", table)
    assert "0.0047" in cells and "0.0021" in cells and "0.0034" in cells  # max, min, mean
    assert "0.01" in cells and "47" in cells and "0.00031" in cells
    assert "0.00" not in cells
    row = next(line for line in csv_path.read_text().splitlines() if ",connections," in line)
    assert ",0.0047," in row and ",0.0021," in row and ",0.01," in row
