"""JMESPath expressions of http_json sources compiled once into plain readers (SPEC 7).

Expressions that are plain field paths (`a.b.c`, most of them) or a path compared with a
literal are read by direct lookups with the same result as JMESPath's; the rest by jmespath.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

Getter = Callable[[Any], Any]


def compile_expression(text: str) -> Getter:
    """A function reading JMESPath `text` from a JSON value (JMESPathError if it is bad)."""
    import jmespath  # loaded with the first http_json source, not at start-up

    parsed = jmespath.compile(text)
    compared = _comparison(parsed.parsed)
    if compared is not None:
        return compared
    path = _field_path(parsed.parsed)
    if path is None:
        return parsed.search
    return _path_getter(path)


def _comparison(node: Mapping[str, Any]) -> Getter | None:
    """`a.b == 'text'` (or `!=`, a string or number literal) read directly, else None.

    JMESPath equality is Python's except that a boolean never equals a number.
    """
    if node["type"] != "comparator" or node["value"] not in ("eq", "ne"):
        return None
    left, right = node["children"]
    if left["type"] == "literal":
        left, right = right, left
    path = _field_path(left)
    literal = right.get("value") if right["type"] == "literal" else None
    if path is None or type(literal) not in (str, int, float):
        return None
    get = _path_getter(path)
    want = node["value"] == "eq"
    return lambda doc: ((found := get(doc)) == literal and type(found) is not bool) is want


def _path_getter(path: tuple[str, ...]) -> Getter:
    """A reader of `a.b.c` with JMESPath's result (null where a step is not an object)."""
    # Unrolled for the usual depths: an import reads several per line.
    if len(path) == 1:
        (a,) = path
        get1: Getter = lambda doc: doc.get(a) if type(doc) is dict else None  # noqa: E731
        # Loops over thousands of items (a history page) read the field without the call.
        setattr(get1, "field", a)  # noqa: B010 - an attribute mypy does not know of
        return get1
    if len(path) == 2:
        a, b = path

        def get2(doc: Any) -> Any:
            doc = doc.get(a) if type(doc) is dict else None
            return doc.get(b) if type(doc) is dict else None

        return get2
    if len(path) == 3:
        a, b, c = path

        def get3(doc: Any) -> Any:
            doc = doc.get(a) if type(doc) is dict else None
            doc = doc.get(b) if type(doc) is dict else None
            return doc.get(c) if type(doc) is dict else None

        return get3
    return lambda doc: _walk(doc, path)


def _field_path(node: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The field names of an expression made only of `a.b.c` lookups, else None."""
    if node["type"] == "field":
        return (node["value"],)
    if node["type"] != "subexpression":
        return None
    names: list[str] = []
    for child in node["children"]:
        sub = _field_path(child)
        if sub is None:
            return None
        names.extend(sub)
    return tuple(names)


def _walk(doc: Any, path: tuple[str, ...]) -> Any:
    for name in path:
        if type(doc) is not dict:
            return None
        doc = doc.get(name)
    return doc
