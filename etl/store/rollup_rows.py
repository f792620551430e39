"""Stored rollup rows decoded: one JSON text per day row, read back as json.loads reads it."""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from itertools import compress, repeat
from operator import contains
from typing import Any

import orjson

from etl.vendors.parsing import MAX_READING

Row = dict[str, Any]


def decode_row(text: str) -> dict[str, Any] | None:
    """A stored day row as `json.loads` reads it, or None if it holds a reading too large.

    orjson reads the numbers (the same doubles, and the same ints within 64 bits, which is
    every count a row holds; several times faster: a warm month of reports reads 15,000
    rows); the NaN that json.dumps writes for a figure a day lacks is no JSON, so it is read
    as a string and turned back into NaN here.
    """
    row: dict[str, Any]
    try:
        if "NaN" not in text:
            row = orjson.loads(text)
        else:
            row = orjson.loads(text.replace("NaN", '"NaN"'))
            for key in [k for k, v in row.items() if v.__class__ is str]:
                row[key] = _NAN
    except orjson.JSONDecodeError:  # Infinity, or an integer beyond 64 bits
        row = json.loads(text)
    # A row holding a reading beyond MAX_READING was built from a reading reports now leave
    # out (history older than that check), so it is rebuilt. The day's readings (its first
    # and last too) lie between its min and max: those two say it (NaN: no readings).
    if (row.get("min") or 0) < -MAX_READING or (row.get("max") or 0) > MAX_READING:
        return None
    return row


_NAN = float("nan")


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside the block (as it was after, if it was on).

    For building tens of thousands of plain rows that hold no cycles: collections triggered
    by their allocations scan every live object (a warm month of reports spent 45-75 ms a
    pass collecting, more than decoding its rows).
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def decode_rows(texts: Sequence[str]) -> list[dict[str, Any] | None]:
    """`decode_row` of each text, in order, decoded as one JSON array (one orjson call).

    Falls back to one `decode_row` per text if the array does not read back as exactly one
    object per text (a figure orjson refuses, such as Infinity). A text the previous call
    decoded too is not decoded again: its row is that call's (rows are read, never changed).
    """
    global _last_decoded
    if not texts:
        return []
    with gc_paused():
        # A report read after another of the same days (the billing report after the daily
        # ones: 6,000 of a month's rows again) finds its rows here, by their exact text,
        # which is all a row's figures depend on. Only the last call's rows are kept.
        memo = _last_decoded
        fresh = list(dict.fromkeys(text for text in texts if text not in memo))
        if fresh:
            memo = {**memo, **dict(zip(fresh, _decode_rows(fresh), strict=True))}
        out = [memo[text] for text in texts]
        # Kept for the next read only if small: a wide vendor's month (millions of rows)
        # would hold gigabytes after its report.
        _last_decoded = (dict(zip(texts, out, strict=True)) if len(texts) <= MEMO_MOST
                         else {})
        return out


_last_decoded: dict[str, dict[str, Any] | None] = {}
# Rows decode_rows keeps for the next call at most (a month of 1,000 series, about 50 MB).
MEMO_MOST = 30_000


def _decode_rows(texts: Sequence[str]) -> list[dict[str, Any] | None]:
    joined = "[" + ",".join(texts) + "]"
    has_nan = "NaN" in joined
    try:
        rows = orjson.loads(joined.replace("NaN", '"NaN"') if has_nan else joined)
    except orjson.JSONDecodeError:
        rows = None
    if (rows is None or len(rows) != len(texts)
            or {row.__class__ for row in rows} != {dict}):
        return [decode_row(text) for text in texts]
    if has_nan:
        # The rows whose text holds a NaN, then their figures read as its string (loops in C:
        # a month's 3,000 counter rows each lack a limit).
        for row in compress(rows, map(contains, texts, repeat("NaN"))):
            for key in list(compress(row, map(isinstance, row.values(), repeat(str)))):
                row[key] = _NAN
    out: list[dict[str, Any] | None] = rows
    # Whether any row's min or max lies beyond MAX_READING (a NaN or a missing one does not),
    # compared in C; then which ones, as decode_row tells.
    mins = filter(None, map(dict.get, rows, repeat("min")))  # None, 0: as `or 0` reads them
    maxs = filter(None, map(dict.get, rows, repeat("max")))
    if any(map((-MAX_READING).__gt__, mins)) or any(map(MAX_READING.__lt__, maxs)):
        for i in [i for i, row in enumerate(rows) if (row.get("min") or 0) < -MAX_READING
                  or (row.get("max") or 0) > MAX_READING]:
            out[i] = None
    return out


def decode_groups(texts: Sequence[str], counts: Sequence[int]) -> list[list[Row | None]] | None:
    """Each text's rows, `decode_row` of each: a text is `counts[i]` stored rows joined by commas.

    None where only decoding each row's own text is sure (the caller then reads them one
    by one): a row that is not one flat JSON object of its own, a figure orjson refuses, a
    text figure beside a NaN. A text the previous call decoded too is not decoded again:
    its rows are that call's (rows are read, never changed), as in decode_rows.
    """
    global _last_groups
    with gc_paused():
        memo = _last_groups
        fresh = {text: count for text, count in zip(texts, counts, strict=True)
                 if text not in memo}
        if fresh:
            decoded = _decode_groups(list(fresh), list(fresh.values()))
            if decoded is None:
                return None
            memo = {**memo, **dict(zip(fresh, decoded, strict=True))}
        out = [memo[text] for text in texts]
        if any(len(rows) != count for rows, count in zip(out, counts, strict=True)):
            return None  # the same text stood for another number of rows: read them each
        if sum(counts) <= MEMO_MOST:  # kept for the next read only if small, as decode_rows
            _last_groups = dict(zip(texts, out, strict=True))
        else:
            _last_groups = {}
        return out


_last_groups: dict[str, list[Row | None]] = {}


def _decode_groups(texts: list[str], counts: list[int]) -> list[list[Row | None]] | None:
    joined = "[" + ",".join(texts) + "]"
    total = sum(counts)
    # Every row its own flat object: the caller checked that each row's text starts with
    # "{"; with as many "{" as rows, and as many objects read, no object spans two texts.
    if joined.count("{") != total:
        return None
    has_nan = "NaN" in joined
    try:
        rows = orjson.loads(joined.replace("NaN", '"NaN"') if has_nan else joined)
    except orjson.JSONDecodeError:
        return None
    if len(rows) != total or {row.__class__ for row in rows} != {dict}:
        return None
    out: list[list[Row | None]] = []
    at = 0
    for text, count in zip(texts, counts, strict=True):
        part: list[Row] = rows[at:at + count]
        at += count
        if has_nan and "NaN" in text:
            # A text figure "NaN" is a NaN that json.dumps wrote (one inside a string would
            # not have read back); a row with another text figure: only its own text says
            # whether decode_row turns that into NaN too.
            for row in part:
                keys = list(compress(row, map(isinstance, row.values(), repeat(str))))
                if any(row[key] != "NaN" for key in keys):
                    return None
                for key in keys:
                    row[key] = _NAN
        mins = filter(None, map(dict.get, part, repeat("min")))  # as decode_row reads them
        maxs = filter(None, map(dict.get, part, repeat("max")))
        if any(map((-MAX_READING).__gt__, mins)) or any(map(MAX_READING.__lt__, maxs)):
            out.append([None if ((row.get("min") or 0) < -MAX_READING
                                 or (row.get("max") or 0) > MAX_READING) else row
                        for row in part])
        else:
            out.append(list(part))
    return out
