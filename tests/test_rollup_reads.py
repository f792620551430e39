"""Stored rollups read a series at a time (SQLite) give what each stored row's own text gives."""

from __future__ import annotations

import json
import math
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import insert

from etl.store.models import RollupDay, Series
from etl.store.rollups import RollupStore, decode_groups, decode_row
from etl.timefmt import to_micros
from tests.factories import copy_sqlite_template, examples, migrated_engine

DAY0 = datetime(2026, 9, 1, tzinfo=UTC)
DAYS = 4
FIGURES = ["day_start_us", "samples", "min", "max", "sum", "last_limit", "increase"]
# What a stored figure is (NaN and infinities as json.dumps writes them; ints beyond 64 bits),
# and now and then what no day row holds but a text could: strings, None, bools, lists.
FIGURE = st.one_of(st.floats(), st.integers(-2**63, 2**63 - 1), st.integers(-2**70, 2**70))
ODD = st.one_of(st.text(max_size=4), st.none(), st.booleans(), st.lists(FIGURE, max_size=2),
                st.just("NaN"), st.just("{"), st.dictionaries(st.just("a"), FIGURE, max_size=1))
# (min and max are figures: a day's extremes are what says whether its readings are too big.)
ROW = st.builds(lambda extremes, rest: {**rest, **extremes},
                st.dictionaries(st.sampled_from(["min", "max"]), FIGURE),
                st.dictionaries(st.sampled_from(FIGURES[:2] + FIGURES[4:]),
                                st.one_of(FIGURE, FIGURE, ODD)))
PLAIN_ROW = st.dictionaries(st.sampled_from(FIGURES), st.one_of(
    st.floats(allow_infinity=False), st.integers(-2**63, 2**63 - 1)), min_size=1)


def plain(row: dict[str, Any]) -> bool:
    """Figures orjson reads as json does: floats (NaN too, not infinities), 64-bit ints."""
    return all((type(v) is float and not math.isinf(v))
               or (type(v) is int and -2**63 <= v < 2**63) for v in row.values())


def same(a: Any, b: Any) -> bool:
    """Equal values of equal types, NaN equal to NaN, in dicts and lists too."""
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


@settings(max_examples=examples(400), deadline=None)
@given(st.lists(st.lists(st.one_of(ROW, PLAIN_ROW), min_size=1, max_size=4), max_size=5))
def test_rows_joined_a_series_at_a_time_decode_as_each_rows_text_alone(
        groups: list[list[dict[str, Any]]]) -> None:
    # Each series' stored texts joined by commas (as SQLite's group_concat joins them):
    # read at once, every row is decode_row of its own text, or no answer at all (the
    # store then reads row by row); rows of plain figures always get an answer.
    texts = [[json.dumps(row) for row in rows] for rows in groups]
    got = decode_groups([",".join(t) for t in texts], [len(t) for t in texts])
    if got is None:
        assert not all(plain(row) for rows in groups for row in rows), "read at once"
        return
    for rows, want in zip(got, texts, strict=True):
        assert len(rows) == len(want)
        for row, text in zip(rows, want, strict=True):
            assert same(row, decode_row(text))


def test_rows_only_their_own_texts_tell_apart_are_left_to_them() -> None:
    # A text figure in a row and a NaN in another row of the series: whether decode_row
    # turns the text into NaN depends on the row's own text. Texts that read as objects only
    # joined (no report writes them, a database could hold them): neither is read at once.
    assert decode_groups(['{"samples": "x"},{"min": NaN}'], [2]) is None
    assert decode_groups(['{"samples": "x", "min": NaN}'], [1]) is None
    one = decode_groups(['{"samples": 1, "min": NaN}'], [1])
    assert one is not None and same(one[0][0], decode_row('{"samples": 1, "min": NaN}'))
    assert decode_groups(['{"a": [1,{}]}, {"c": 3}'], [2]) is None  # '{"a": [1' + '{}]}, ..'
    assert decode_groups(['{"a": 1,"b": NaN}, {"c": 3}'], [3]) is None


STORED = st.lists(st.tuples(st.integers(0, DAYS - 1), st.sampled_from([60.0, 90.0]),
                            st.one_of(PLAIN_ROW, PLAIN_ROW, ROW)), max_size=DAYS + 2)


@settings(max_examples=examples(60), deadline=None)
@given(st.lists(STORED, min_size=1, max_size=4), st.booleans())
def test_a_stores_rows_are_each_stored_rows_own_whatever_their_texts_and_stalenesses(
        series: list[list[tuple[int, float, dict[str, Any]]]], named: bool) -> None:
    # Rows of some days, with one staleness or two per series, plain figures or odd texts,
    # in a real SQLite file: what the store gives for a series' days (all of them, or some
    # in another order) is exactly what each stored row's own text and staleness give.
    with tempfile.TemporaryDirectory() as tmp:
        copy_sqlite_template(Path(tmp) / "r.db")
        with migrated_engine(f"sqlite:///{Path(tmp) / 'r.db'}") as engine:
            stored: dict[tuple[int, int], tuple[float, str]] = {}
            with engine.begin() as conn:
                for n, rows in enumerate(series):
                    sid = n + 1
                    conn.execute(insert(Series), [{"id": sid, "source": f"s{sid}",
                                                   "metric": "m", "kind": "nected",
                                                   "metric_type": "gauge"}])
                    for k, stale, row in rows:
                        stored[(sid, k)] = (stale, json.dumps(row))
                conn.execute(insert(RollupDay), [
                    {"series_id": sid, "tz": "UTC", "day": _day(k),
                     "day_start": DAY0 + timedelta(days=k),
                     "day_end": DAY0 + timedelta(days=k + 1), "staleness": stale, "data": text}
                    for (sid, k), (stale, text) in stored.items()] or [
                    {"series_id": 1, "tz": "Etc/GMT-1", "day": _day(0), "day_start": DAY0,
                     "day_end": DAY0 + timedelta(days=1), "staleness": 60.0, "data": "{}"}])
            sids = list(range(1, len(series) + 1))
            store = RollupStore(engine, "UTC", to_micros(DAY0),
                                to_micros(DAY0 + timedelta(days=DAYS)), sids if named else None)
            for sid in sids:
                for days in (list(range(DAYS)), [2, 0], [1]):
                    for stale in (60.0, 90.0):
                        want = _wanted(stored, sid, days, stale)
                        got = store.get(sid, [_day(k) for k in days], stale)
                        assert (got is None) == (want is None)
                        if got is not None and want is not None:
                            assert len(got) == len(want)
                            assert all(same(g, w) for g, w in zip(got, want, strict=True))


def _day(k: int) -> str:
    return (DAY0 + timedelta(days=k)).date().isoformat()


def _wanted(stored: dict[tuple[int, int], tuple[float, str]], sid: int, days: list[int],
            stale: float) -> list[dict[str, Any]] | None:
    out = []
    for k in days:
        hit = stored.get((sid, k))
        row = decode_row(hit[1]) if hit is not None and hit[0] == stale else None
        if row is None:
            return None
        out.append(row)
    return out


def test_a_row_rewritten_between_two_reads_is_read_anew_in_each_database_and_zone(
        tmp_path: Path) -> None:
    # The rows decoded by one read are kept for the next (by their stored text): a row
    # stored again meanwhile, another database holding the old text, and the same text in
    # another zone each read as their own database holds them.
    from sqlalchemy import update

    row = {"day_start_us": to_micros(DAY0), "samples": 3, "min": 1.5, "max": 2.5}
    engines = []
    for name in ("a", "b"):
        copy_sqlite_template(tmp_path / f"{name}.db")
        engines.append(migrated_engine(f"sqlite:///{tmp_path / name}.db"))
    with engines[0] as a, engines[1] as b:
        for engine in (a, b):
            with engine.begin() as conn:
                conn.execute(insert(Series), [{"id": 1, "source": "s", "metric": "m",
                                               "kind": "nected", "metric_type": "gauge"}])
                conn.execute(insert(RollupDay), [
                    {"series_id": 1, "tz": tz, "day": _day(0), "day_start": DAY0,
                     "day_end": DAY0 + timedelta(days=1), "staleness": 60.0,
                     "data": json.dumps(row)} for tz in ("UTC", "Etc/GMT-1")])

        def read(engine: Any, tz: str = "UTC") -> list[dict[str, Any]] | None:
            return RollupStore(engine, tz, to_micros(DAY0),
                               to_micros(DAY0 + timedelta(days=1))).get(1, [_day(0)], 60.0)

        assert read(a) == [row]
        with a.begin() as conn:
            conn.execute(update(RollupDay).where(RollupDay.tz == "UTC")
                         .values(data=json.dumps({**row, "max": 9.0})))
        assert read(a) == [{**row, "max": 9.0}]
        assert read(b) == [row]
        assert read(a, "Etc/GMT-1") == [row]
        assert read(a) == [{**row, "max": 9.0}]


def test_rows_too_long_for_one_sqlite_string_are_read_row_by_row(tmp_path: Path) -> None:
    # A series' rows are joined into one string; SQLite refuses strings beyond its length
    # limit (1 GB by default), and then the rows are read one by one instead.
    import sqlite3

    from sqlalchemy import event

    rows = [{"day_start_us": to_micros(DAY0) + k, "samples": k, "min": 0.5 + k}
            for k in range(DAYS)]
    copy_sqlite_template(tmp_path / "long.db")
    with migrated_engine(f"sqlite:///{tmp_path / 'long.db'}") as engine:
        with engine.begin() as conn:
            conn.execute(insert(Series), [{"id": 1, "source": "s", "metric": "m",
                                           "kind": "nected", "metric_type": "gauge"}])
            conn.execute(insert(RollupDay), [
                {"series_id": 1, "tz": "UTC", "day": _day(k),
                 "day_start": DAY0 + timedelta(days=k), "day_end": DAY0 + timedelta(days=k + 1),
                 "staleness": 60.0, "data": json.dumps(row)} for k, row in enumerate(rows)])
        assert len(",".join(json.dumps(row) for row in rows)) > 150 > len(json.dumps(rows[-1]))
        event.listen(engine, "connect", lambda raw, _: raw.setlimit(
            sqlite3.SQLITE_LIMIT_LENGTH, 150))
        store = RollupStore(engine, "UTC", to_micros(DAY0),
                            to_micros(DAY0 + timedelta(days=DAYS)))
        assert store.get(1, [_day(k) for k in range(DAYS)], 60.0) == rows
