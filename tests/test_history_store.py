"""History sources' storage (SPEC 10): a bucket's latest fetch wins, buckets never overlap."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, select

from etl.store.history import advance_read_up_to, read_ranges, read_up_to
from etl.store.models import Sample, Series
from tests.factories import history_page, store

D0 = datetime(2026, 11, 20, tzinfo=UTC)
H = timedelta(hours=1)
WINDOW = (D0, D0 + 24 * H)


def _rows(engine: Engine) -> list[tuple[str, datetime, datetime | None, float, int | None]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(  # type: ignore[misc]
            select(Series.metric, Sample.observed_at, Sample.bucket_end, Sample.value,
                   Sample.revisions)
            .join(Series, Series.id == Sample.series_id)
            .order_by(Series.metric, Sample.observed_at))]


def _pages() -> list:  # type: ignore[type-arg]
    first = history_page(D0 + 3 * H, WINDOW, [(D0, D0 + H, {"gpt-4o": 10, "o1": 1}),
                                              (D0 + H, D0 + 2 * H, {"gpt-4o": 20})])
    # An hour later the vendor has revised the second bucket and filled in the third.
    second = history_page(D0 + 4 * H, WINDOW, [(D0 + H, D0 + 2 * H, {"gpt-4o": 25}),
                                               (D0 + 2 * H, D0 + 3 * H, {"gpt-4o": 7})])
    return [first, second]


def test_a_buckets_latest_fetch_wins_and_counts_one_revision(engine: Engine) -> None:
    first, second = _pages()
    store(engine, [first])
    store(engine, [second])
    assert _rows(engine) == [
        ("tokens:gpt-4o", D0, D0 + H, 10.0, 0),
        ("tokens:gpt-4o", D0 + H, D0 + 2 * H, 25.0, 1),
        ("tokens:gpt-4o", D0 + 2 * H, D0 + 3 * H, 7.0, 0),
        ("tokens:o1", D0, D0 + H, 1.0, 0),
    ]


def test_pages_in_any_order_or_twice_leave_the_same_rows(engine: Engine) -> None:
    first, second = _pages()
    store(engine, [second])
    store(engine, [first])
    store(engine, [second, first])
    in_reverse = _rows(engine)
    assert [r[3] for r in in_reverse if r[0] == "tokens:gpt-4o"] == [10.0, 25.0, 7.0]
    # An older fetch with another value still counts as the revision it was.
    assert in_reverse[1] == ("tokens:gpt-4o", D0 + H, D0 + 2 * H, 25.0, 1)


def test_every_order_of_three_fetches_stores_the_latest(engine: Engine) -> None:
    fetches = [history_page(D0 + k * H, WINDOW, [(D0, D0 + H, {"m": v})])
               for k, v in ((2, 5), (3, 6), (4, 6))]
    seen = set()
    for n, order in enumerate(itertools.permutations(fetches)):
        pages = [p._replace(source=f"s{n}") for p in order]
        for page in pages:
            store(engine, [page])
    with engine.connect() as conn:
        for value, revisions in conn.execute(select(Sample.value, Sample.revisions)):
            seen.add((value, revisions))
    assert seen == {(6.0, 1)}


def test_a_wider_bucket_replaces_the_earlier_fetched_ones_it_overlaps(engine: Engine) -> None:
    hourly = history_page(D0 + 30 * H, WINDOW, [(D0 + k * H, D0 + (k + 1) * H, {"m": 1})
                                                for k in range(24)])
    daily = history_page(D0 + 31 * H, WINDOW, [(D0, D0 + 24 * H, {"m": 30})])
    older_hour = history_page(D0 + 29 * H, WINDOW, [(D0 + 5 * H, D0 + 6 * H, {"m": 9})])
    store(engine, [hourly])
    store(engine, [daily])
    store(engine, [older_hour])  # fetched before the day's bucket: not stored
    assert _rows(engine) == [("tokens:m", D0, D0 + 24 * H, 30.0, 0)]


def test_a_bucket_fetched_again_with_the_same_value_is_a_duplicate(engine: Engine) -> None:
    first, _ = _pages()
    with engine.begin() as conn:
        from etl.store.writer import store_observations

        once = store_observations(conn, [first])
    with engine.begin() as conn:
        twice = store_observations(conn, [first])
    assert (once.snapshots, once.samples, once.duplicates) == (1, 3, 0)
    assert (twice.snapshots, twice.samples, twice.duplicates) == (0, 0, 3)


def test_read_ranges_keep_their_latest_read_and_h_never_moves_back(engine: Engine) -> None:
    first, second = _pages()
    store(engine, [second, first])
    with engine.begin() as conn:
        assert read_up_to(conn, "openai") is None
        advance_read_up_to(conn, "openai", D0 + 4 * H)
        advance_read_up_to(conn, "openai", D0 + 2 * H)
        assert read_up_to(conn, "openai") == D0 + 4 * H
        assert read_ranges(conn, "openai", D0, D0 + 48 * H) == [(D0, D0 + 24 * H, D0 + 4 * H)]
        assert read_ranges(conn, "openai", D0 + 24 * H, D0 + 48 * H) == []
