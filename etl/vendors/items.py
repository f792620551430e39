"""The samples of one http_json metric in a JSON document: one reading or an `each` list (SPEC 7).

An `each` list names one series per item by its `key`; items without a usable, distinct
name are refused with a reason while the others are read (SPEC 7, amended).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from itertools import repeat
from operator import itemgetter
from typing import Any

from etl.errors import ParseError
from etl.vendors.expressions import Getter
from etl.vendors.parsing import MAX_READING, STATUS_MAX_LEN, limit_value, number
from etl.vendors.series_names import series_name, shown_key
from etl.vendors.types import MAX_METRIC_LEN, Bucket, MetricType, SampleValue


@dataclass(frozen=True)
class MetricSpec:
    """One `[[sources.metrics]]` entry, its expressions compiled."""

    name: str
    type: MetricType
    value: Getter
    value_text: str
    limit: Getter | None = None
    status: Getter | None = None
    each: Getter | None = None
    each_text: str = ""
    key: Getter | None = None


def read_sample(metric: MetricSpec, name: str, item: Any, where: str,
            bucket: Bucket = (None, None)) -> SampleValue:
    """The sample named `name` of one JSON value `item` (ParseError naming `where` if bad)."""
    raw = metric.value(item)
    if (type(raw) is int or type(raw) is float) and 0 <= raw <= MAX_READING:  # the usual case
        value = float(raw)
    else:
        field = f"{metric.name}{where}: value {metric.value_text!r}"
        if raw is None:
            raise ParseError(f"{field}: missing")
        value = number(raw, field)
    limit = limit_value(metric.limit(item)) if metric.limit is not None else None
    status = None
    if metric.status is not None:
        text = metric.status(item)
        status = text[:STATUS_MAX_LEN] if isinstance(text, str) else None
    return SampleValue(name, value, limit, status, metric.type, *bucket)


def read_series(metric: MetricSpec, body: Any, refused: list[str],
            bucket: Bucket = (None, None)) -> list[SampleValue]:
    """One sample per item of `each`; items without a usable, distinct name go to `refused`.

    SPEC 7: an item whose key is missing or empty, or whose series name is too long, and all
    the items of one response whose keys give the same name, are refused with a reason
    naming them; the other items are read as usual.
    """
    assert metric.each is not None and metric.key is not None
    items = metric.each(body)
    if not isinstance(items, list):
        raise ParseError(f"{metric.name}: each {metric.each_text!r}: not a list")
    # A history page holds thousands of items: the usual item (a text key already named, a
    # plain number) costs a few dictionary reads and its sample; everything else (a key to
    # name, a value to check, a key given twice) is done apart, as before.
    key, base = metric.key, metric.name
    key_field: str | None = getattr(key, "field", None)
    value_of, kind = metric.value, metric.type
    value_field: str | None = getattr(value_of, "field", None)
    simple = metric.limit is None and metric.status is None
    start, end = bucket
    known = _NAMES.setdefault(base, {})
    found = (_usual_items(items, key_field, value_field, known, kind, bucket)
             if simple and key_field is not None and value_field is not None else None)
    if found is not None:
        return found
    named: dict[str, int] = {}  # series name -> its item's index, in the order of `samples`
    samples: list[Any] = []  # SampleValue, or None until an unusual item is read (`later`)
    later: list[tuple[int, int, str]] = []  # (position, index, name)
    repeated: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        if key_field is None:
            raw = key(item)
        else:
            raw = item.get(key_field) if type(item) is dict else None
        name = known.get(raw) if type(raw) is str else None
        if name is None:
            name = _item_name(base, raw, i, refused, known)
            if name is None:
                continue
        if name in named:
            repeated.setdefault(name, [named[name]]).append(i)
            continue
        named[name] = i
        if simple:
            if value_field is None:
                value = value_of(item)
            else:
                value = item.get(value_field) if type(item) is dict else None
            if (type(value) is int or type(value) is float) and 0 <= value <= MAX_READING:
                samples.append(_new_sample(SampleValue, (name, float(value), None, None, kind,
                                                         start, end)))
                continue
        later.append((len(samples), i, name))
        samples.append(None)
    if repeated or later:
        return _unusual(metric, items, samples, named, repeated, later, refused, bucket)
    return samples


def _unusual(metric: MetricSpec, items: list[Any], samples: list[Any], named: dict[str, int],
             repeated: dict[str, list[int]], later: list[tuple[int, int, str]],
             refused: list[str], bucket: Bucket) -> list[SampleValue]:
    """read_series' samples once keys given twice are refused and the other values read.

    `samples` holds one entry per name of `named`, in its order.
    """
    assert metric.key is not None
    for pos, name in enumerate(named):  # in the order each name was first given
        if name not in repeated:
            continue
        keys = ", ".join(f"[{j}] {shown_key(metric.key(items[j]))}" for j in repeated[name])
        refused.append(f"{metric.name}: items {keys} all give the series {name!r}")
        samples[pos] = None
    for pos, i, name in later:
        if name not in repeated:
            samples[pos] = read_sample(metric, name, items[i], f"[{i}]", bucket)
    return [sv for sv in samples if sv is not None]


def _usual_items(items: list[Any], key_field: str, value_field: str, known: dict[str, str],
                 kind: MetricType, bucket: Bucket) -> list[SampleValue] | None:
    """The samples of items that are all usual, read a whole list at a time; else None.

    Usual: every item an object with its key a text already named (`known`), no name given
    twice, and its value a plain number from 0 to MAX_READING. Each step is one C-level
    pass over the list (a history page holds thousands of items); at the first item that
    is not usual, None sends the list to read_series' own loop, which says what is wrong.
    """
    try:
        keys = list(map(itemgetter(key_field), items))
        values = list(map(itemgetter(value_field), items))
        names = list(map(known.get, keys))  # a key that is not a known text gives None
    except (KeyError, TypeError):  # an item without the field, not an object, unhashable
        return None
    if None in names or len(set(names)) != len(names):
        return None
    if not _NUMBER_TYPES.issuperset(map(type, values)):
        return None
    try:
        numbers = list(map(float, values))
    except OverflowError:
        return None
    if numbers and (min(numbers) < 0 or max(numbers) > MAX_READING
                    or any(map(math.isnan, numbers))):
        return None
    start, end = bucket
    return list(map(_sample_of, zip(names, numbers, repeat(None), repeat(None), repeat(kind),
                                    repeat(start), repeat(end))))


_NUMBER_TYPES = frozenset({int, float})  # bool is neither: true/false is no reading
# A SampleValue from a 7-tuple of its fields, called from C (map).
_sample_of = partial(tuple.__new__, SampleValue)


def _item_name(base: str, raw: Any, i: int, refused: list[str],
               known: dict[str, str]) -> str | None:
    """The series name of item `i`'s key `raw`, kept in `known`; None once it is refused."""
    try:
        name = series_name(base, raw)
    except ValueError as exc:
        refused.append(f"{base}[{i}]: key {exc}")
        return None
    if len(name) > MAX_METRIC_LEN:
        refused.append(f"{base}[{i}]: key {shown_key(raw)} makes a series name longer than "
                       f"{MAX_METRIC_LEN} characters")
        return None
    if type(raw) is str and len(known) < _NAMES_KEPT:
        known[raw] = name
    return name


# Series names of text keys by metric name (series_name is cached too, but a dictionary
# read inline is a third of its cost at a history page's thousands of items); bounded.
_NAMES: dict[str, dict[str, str]] = {}
_NAMES_KEPT = 65536


# A SampleValue from its seven fields at once (tuple.__new__: the NamedTuple's own __new__
# is a Python function, a tenth of a page's parse time at thousands of items).
_new_sample = tuple.__new__
