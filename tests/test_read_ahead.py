"""Reading ahead (etl.store.readahead): order, errors in place, at most one item ahead, no thread left."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from etl.store.readahead import ahead


def _counted(items: list[int], pulled: list[int], fail_after: int | None = None) -> Iterator[int]:
    for item in items:
        if fail_after is not None and len(pulled) == fail_after:
            raise ValueError(f"item {item} could not be made")
        pulled.append(item)
        yield item


def _reading_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "usage-etl-read-ahead"]


def test_every_item_comes_in_order_and_at_most_one_is_made_ahead() -> None:
    pulled: list[int] = []
    seen = []
    for item in ahead(_counted(list(range(50)), pulled)):
        # The caller holds item `item`; the thread may be making the next one, no more.
        assert len(pulled) <= item + 2
        seen.append(item)
    assert seen == list(range(50))
    assert not _reading_threads()


def test_an_error_making_an_item_is_raised_where_that_item_would_come() -> None:
    seen = []
    with pytest.raises(ValueError, match="item 3 could not be made"):
        for item in ahead(_counted([0, 1, 2, 3, 4], [], fail_after=3)):
            seen.append(item)
    assert seen == [0, 1, 2]
    assert not _reading_threads()


def test_a_caller_that_stops_early_leaves_no_thread_reading_on() -> None:
    pulled: list[int] = []
    with pytest.raises(RuntimeError):
        for _item in ahead(_counted(list(range(1000)), pulled)):
            raise RuntimeError("the caller's own failure")
    assert len(pulled) <= 2
    assert not _reading_threads()
    pulled.clear()
    items = ahead(_counted(list(range(1000)), pulled))
    assert next(items) == 0
    items.close()  # a generator dropped half-way, as a `break` does
    assert len(pulled) <= 2
    assert not _reading_threads()
