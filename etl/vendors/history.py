"""History sources' config (SPEC 10): `[sources.window]`, `[sources.page]`, `[sources.buckets]`, params.

Validated when the config loads (every problem names its key); the result, `HistorySpec`,
is pure data and functions: the collector (etl.collect.history) asks it for request ranges,
URLs and the next page, and the http_json parse for each page's buckets.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit, urlunsplit

from etl.errors import ParseError
from etl.vendors.buckets import Span, bucket_time, parse_span

Getter = Callable[[Any], Any]
Compile = Callable[[Mapping[str, Any], str, str, list[str]], "Getter | None"]

WINDOW_KEYS = frozenset({"backfill", "lookback", "step", "align", "end_inclusive"})
PAGE_STYLES = ("token", "next_url", "after", "offset_param")
PAGE_KEYS = frozenset({*PAGE_STYLES, "param", "size", "more", "max_pages"})
BUCKET_KEYS = frozenset({"each", "start", "end", "width"})
MAX_PAGES = 100
_PLACEHOLDER_RE = re.compile(r"\{([^{}:]*)(?::([^{}]*))?\}")
_NAMED_FORMATS: dict[str, Callable[[datetime], str]] = {
    "unix": lambda at: str(int(at.timestamp())),
    "unix_ms": lambda at: str(int(at.timestamp()) * 1000),
    "rfc3339": lambda at: at.strftime("%Y-%m-%dT%H:%M:%SZ"),
    "date": lambda at: at.strftime("%Y-%m-%d"),
}


@dataclass(frozen=True)
class Window:
    """`[sources.window]`: how far back to read, what to re-read, how to cut and align ranges."""

    backfill: Span = Span(seconds=86_400)
    lookback: Span = Span()
    step: Span | None = None
    align: Span = Span(seconds=3600)
    end_inclusive: bool = False


class Paginator:
    """How to ask for the next page (SPEC 10 "Pages"), one instance per request range.

    `next(body, buckets, url, params)` gives the next request's (url, params), or None when
    the body says this was the last page.
    """

    def next(self, body: Any, buckets: int, url: str,
             params: dict[str, str]) -> tuple[str, dict[str, str]] | None:
        """The next request, or None: the pages are over."""
        raise NotImplementedError


@dataclass
class TokenPaginator(Paginator):
    """A continuation token in the body, sent back as the query parameter `param`."""

    token: Getter
    param: str

    def next(self, body: Any, buckets: int, url: str,
             params: dict[str, str]) -> tuple[str, dict[str, str]] | None:
        """The same request with `param` = the token; None when it is null, missing or ""."""
        found = self.token(body)
        if found is None or found == "" or isinstance(found, bool | dict | list):
            return None
        return url, {**params, self.param: str(found)}


@dataclass
class AfterPaginator(TokenPaginator):
    """The last item's id, sent back as `param` (Stripe's `starting_after`)."""


@dataclass
class NextUrlPaginator(Paginator):
    """The next page's URL in the body, absolute or relative to `url`, requested as it is."""

    next_url: Getter

    def next(self, body: Any, buckets: int, url: str,
             params: dict[str, str]) -> tuple[str, dict[str, str]] | None:
        """(the URL, no extra params); None when there is none."""
        found = self.next_url(body)
        if not isinstance(found, str) or not found:
            return None
        return urljoin(with_params(url, params), found), {}


@dataclass
class OffsetPaginator(Paginator):
    """`param` grows by `size` each page; a page of fewer than `size` buckets is the last."""

    param: str
    size: int
    offset: int = 0

    def next(self, body: Any, buckets: int, url: str,
             params: dict[str, str]) -> tuple[str, dict[str, str]] | None:
        """The same request at the next offset; None after a short page."""
        if buckets < self.size:
            return None
        self.offset += self.size
        return url, {**params, self.param: str(self.offset)}


@dataclass(frozen=True)
class Pages:
    """`[sources.page]`: builds a fresh paginator per request range; `more` and `max_pages`."""

    make: Callable[[], Paginator]
    more: Getter | None = None
    max_pages: int = MAX_PAGES
    # The parameter an offset paginator starts at 0 on the first page, if any.
    first: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Buckets:
    """`[sources.buckets]`: where a page's buckets are and how their bounds are read."""

    each: Getter
    start: Getter
    end: Getter | None = None
    width: Span | None = None
    each_text: str = ""

    def read(self, body: Any) -> list[tuple[datetime, datetime, Any]]:
        """The page's buckets as (start, end, item); ParseError naming a bad one."""
        items = self.each(body)
        if items is None:
            return []
        if not isinstance(items, list):
            raise ParseError(f"buckets.each {self.each_text!r}: not a list")
        found = []
        for i, item in enumerate(items):
            start = bucket_time(self.start(item), f"buckets[{i}].start")
            if self.end is not None:
                end = bucket_time(self.end(item), f"buckets[{i}].end")
            else:
                assert self.width is not None
                end = self.width.after(start)
            if end <= start:
                raise ParseError(f"buckets[{i}]: its end is not after its start")
            found.append((start, end, item))
        return found


@dataclass(frozen=True)
class HistorySpec:
    """A history source: its URL and params templates, window, pages and buckets."""

    url: str
    params: Mapping[str, str]
    window: Window
    buckets: Buckets
    pages: Pages | None = None

    def ranges(self, start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
        """`[start, end)` cut into request ranges of at most `step`, oldest first (SPEC 10).

        Inner bounds fall on multiples of `align`, so every range asks for aligned times.
        """
        found = []
        while start < end:
            cut = end if self.window.step is None else min(end, self.window.step.after(start))
            if cut < end:
                cut = max(self.window.align.floor(cut), self.window.align.after(start))
                cut = min(cut, end)
            found.append((start, cut))
            start = cut
        return found

    def request(self, start: datetime, end: datetime) -> tuple[str, dict[str, str]]:
        """The first page's URL (placeholders filled) and query parameters for a range."""
        last = end - timedelta(seconds=1) if self.window.end_inclusive else end
        params = {name: render(text, start, last) for name, text in self.params.items()}
        params.update(self.pages.first if self.pages is not None else {})
        return render(self.url, start, last), params


def with_params(url: str, params: Mapping[str, str]) -> str:
    """`url` with `params` added to its query string."""
    if not params:
        return url
    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, urlencode(params)) if q)
    return urlunsplit(parts._replace(query=query))


def render(template: str, start: datetime, end: datetime) -> str:
    """`template` with `{start:FMT}` and `{end:FMT}` filled in, in UTC (SPEC 10)."""
    def fill(match: re.Match[str]) -> str:
        at = (start if match.group(1) == "start" else end).astimezone(UTC)
        fmt = match.group(2)
        named = _NAMED_FORMATS.get(fmt)
        return named(at) if named is not None else at.strftime(fmt)

    return _PLACEHOLDER_RE.sub(fill, template)


def placeholder_problem(template: str) -> str | None:
    """Why `template`'s braces are not `{start:FMT}`/`{end:FMT}` placeholders, or None."""
    for match in _PLACEHOLDER_RE.finditer(template):
        name, fmt = match.group(1), match.group(2)
        if name not in ("start", "end"):
            return f"unknown placeholder {match.group(0)!r} (only {{start:FMT}} and {{end:FMT}})"
        if fmt is None or (fmt not in _NAMED_FORMATS and "%" not in fmt):
            return (f"{match.group(0)!r}: FMT must be unix, unix_ms, rfc3339, date or a strftime "
                    "pattern such as %Y-%m-%d")
    if "{" in _PLACEHOLDER_RE.sub("", template) or "}" in _PLACEHOLDER_RE.sub("", template):
        return "unbalanced braces"
    return None


def configure_history(entry: Mapping[str, Any], label: str, problems: list[str],
                      expression: Compile) -> HistorySpec | None:
    """The HistorySpec of an http_json source with `[sources.window]`, or None.

    None as well once problems are appended (each naming its key). `expression` compiles
    one JMESPath key of a table (http_json's, so expressions behave the same everywhere).
    """
    before = len(problems)
    for key in ("page", "buckets", "params"):
        if key in entry and "window" not in entry:
            problems.append(f"{label}.{key}: only with [sources.window] (a history source)")
    if "window" not in entry:
        return None
    window = _window(entry["window"], f"{label}.window", problems)
    pages = _pages(entry.get("page"), f"{label}.page", problems, expression)
    buckets = _buckets(entry.get("buckets"), f"{label}.buckets", problems, expression)
    params = _params(entry.get("params", {}), f"{label}.params", problems)
    url = entry.get("url")
    if isinstance(url, str) and (bad := placeholder_problem(url)):
        problems.append(f"{label}.url: {bad}")
    if len(problems) > before or window is None or buckets is None:
        return None
    return HistorySpec(url=str(url), params=params, window=window, buckets=buckets,
                       pages=pages)


def _table(value: Any, label: str, keys: frozenset[str], problems: list[str]
           ) -> Mapping[str, Any] | None:
    if not isinstance(value, dict):
        problems.append(f"{label}: must be a table")
        return None
    for key in sorted(set(value) - keys):
        problems.append(f"{label}.{key}: unknown key")
    return value


def _span(table: Mapping[str, Any], key: str, label: str, problems: list[str], default: Span,
          *, months: bool = False, zero: bool = True) -> Span:
    if key not in table:
        return default
    try:
        return parse_span(table[key], f"{label}.{key}", months=months, zero=zero)
    except ValueError as exc:
        problems.append(str(exc))
        return default


def _window(value: Any, label: str, problems: list[str]) -> Window | None:
    table = _table(value, label, WINDOW_KEYS, problems)
    if table is None:
        return None
    defaults = Window()
    before = len(problems)
    step = (_span(table, "step", label, problems, Span(seconds=1), months=True, zero=False)
            if "step" in table else None)
    align = _span(table, "align", label, problems, defaults.align, months=True, zero=False)
    inclusive = table.get("end_inclusive", False)
    if not isinstance(inclusive, bool):
        problems.append(f"{label}.end_inclusive: must be true or false")
    # A step or align already refused would only repeat itself as "shorter than align".
    if (step is not None and len(problems) == before and not step.months and not align.months
            and step.seconds < align.seconds):
        problems.append(f"{label}.step: shorter than align")
    return Window(backfill=_span(table, "backfill", label, problems, defaults.backfill),
                  lookback=_span(table, "lookback", label, problems, defaults.lookback),
                  step=step, align=align, end_inclusive=inclusive is True)


def _param_name(table: Mapping[str, Any], label: str, problems: list[str]) -> str:
    param = table.get("param")
    if not isinstance(param, str) or not param:
        problems.append(f"{label}.param: required, the query parameter that sends it back")
        return ""
    return param


def _pages(value: Any, label: str, problems: list[str], expression: Compile) -> Pages | None:
    if value is None:
        return None
    table = _table(value, label, PAGE_KEYS, problems)
    if table is None:
        return None
    styles = [key for key in PAGE_STYLES if key in table]
    if len(styles) != 1:
        problems.append(f"{label}: set exactly one of {', '.join(PAGE_STYLES)}")
        return None
    max_pages = table.get("max_pages", MAX_PAGES)
    if isinstance(max_pages, bool) or not isinstance(max_pages, int) or not 1 <= max_pages <= 100_000:
        problems.append(f"{label}.max_pages: must be a whole number from 1 to 100000")
        max_pages = MAX_PAGES
    more = expression(table, "more", label, problems)
    make, first = _paginator(styles[0], table, label, problems, expression)
    if make is None:
        return None
    return Pages(make=make, more=more, max_pages=max_pages, first=first)


def _paginator(style: str, table: Mapping[str, Any], label: str, problems: list[str],
               expression: Compile) -> tuple[Callable[[], Paginator] | None, dict[str, str]]:
    """A factory of the style's paginator (None once a problem is appended), first params."""
    if style in ("token", "after"):
        getter = expression(table, style, label, problems)
        param = _param_name(table, label, problems)
        cls = TokenPaginator if style == "token" else AfterPaginator
        return (None if getter is None else lambda: cls(getter, param)), {}
    if style == "next_url":
        url_getter = expression(table, style, label, problems)
        return (None if url_getter is None else lambda: NextUrlPaginator(url_getter)), {}
    name, size = table.get("offset_param"), table.get("size")
    if not isinstance(name, str) or not name:
        problems.append(f"{label}.offset_param: must be a query parameter name")
        return None, {}
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        problems.append(f"{label}.size: required with offset_param, a whole number above 0")
        return None, {}
    return (lambda: OffsetPaginator(name, size)), {name: "0"}


def _buckets(value: Any, label: str, problems: list[str], expression: Compile) -> Buckets | None:
    if value is None:
        problems.append(f"{label}: required for a history source ([sources.buckets] with each "
                        "and start)")
        return None
    table = _table(value, label, BUCKET_KEYS, problems)
    if table is None:
        return None
    each = expression(table, "each", label, problems)
    if "each" not in table:
        problems.append(f"{label}.each: required, a JMESPath expression to the list of buckets")
    start = expression(table, "start", label, problems)
    if "start" not in table:
        problems.append(f"{label}.start: required, a JMESPath expression to a bucket's start")
    end = expression(table, "end", label, problems)
    width = (_span(table, "width", label, problems, Span(seconds=1), months=True, zero=False)
             if "width" in table else None)
    if ("end" in table) == ("width" in table):
        problems.append(f"{label}.end: set exactly one of end or width")
    if each is None or start is None or (end is None and width is None):
        return None
    return Buckets(each=each, start=start, end=end, width=width,
                   each_text=str(table.get("each", "")))


def _params(value: Any, label: str, problems: list[str]) -> dict[str, str]:
    if not isinstance(value, dict):
        problems.append(f"{label}: must be a table of query parameters")
        return {}
    found = {}
    for name, text in value.items():
        if isinstance(text, bool) or not isinstance(text, str | int | float):
            problems.append(f"{label}.{name}: must be text or a number")
            continue
        text = str(text)
        bad = placeholder_problem(text)
        if bad:
            problems.append(f"{label}.{name}: {bad}")
            continue
        found[name] = text
    return found
