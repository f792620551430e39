"""Sources defined in config (`kind = "http_json"`, SPEC 7): JMESPath expressions over a JSON body.

`configure` validates one `[[sources]]` table and compiles every expression once, at config
load; the VendorKind it returns is that source's own kind (its URL, headers, request budget,
metrics and parse), used like a built-in one by the collector, import, the writer and the
reports. Expressions that are plain field paths (`a.b.c`, most of them) are read by a direct
lookup with the same result as JMESPath's, the rest by jmespath itself.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from etl.errors import ParseError
from etl.vendors import ParseContext, VendorKind
from etl.vendors.auth import HEADER_NAME_RE, Auth, configure_auth, fixed_headers, header_text
from etl.vendors.expressions import Getter, compile_expression
from etl.vendors.history import HistorySpec, configure_history
from etl.vendors.items import MetricSpec, read_sample, read_series
from etl.vendors.parsing import http_url_problem, parse_timestamp, to_payload
from etl.vendors.types import MAX_METRIC_LEN, Bucket, MetricType, Observation, SampleValue

NAME = "http_json"
DEFAULT_RATE = 60
METRIC_NAME_RE = re.compile(r"^[a-z0-9_]+$")
METRIC_KEYS = frozenset({"name", "type", "value", "limit", "status", "each", "key"})
SOURCE_KEYS = frozenset({"url", "auth_header", "auth_prefix", "headers",
                         "max_requests_per_minute", "timestamp", "ok_when", "metrics",
                         # SPEC 10: history sources, and auth for more vendors
                         "params", "window", "page", "buckets", "auth", "username",
                         "username_env", "secret_headers"})





@dataclass(frozen=True)
class SourceSpec:
    """One http_json source: where to GET, how to authenticate, what to read."""

    url: str
    auth_header: str
    auth_prefix: str
    headers: Mapping[str, str]
    metrics: tuple[MetricSpec, ...]
    timestamp: Getter | None = None
    ok_when: Getter | None = None
    ok_when_text: str = ""
    history: HistorySpec | None = None
    auth: Auth = field(default_factory=lambda: Auth())

    def auth_headers(self, secret: str) -> dict[str, str]:
        """The fixed headers, plus the credential in `auth_header` when there is one.

        With `auth = "basic"` the credential is basic auth's password; `secret_headers`
        add headers read from their variables now (SecretError naming one that is unset).
        """
        found = dict(self.headers)
        if self.auth.basic:
            found["Authorization"] = self.auth.basic_header(secret)
        elif secret:
            found[self.auth_header] = f"{self.auth_prefix}{secret}"
        found.update(self.auth.extra_headers())
        return found

    def parse(self, body: Any, context: ParseContext) -> Observation:
        """One Observation from a body (ParseError naming the expression when it is invalid).

        observed_at: an archive line's `observed_at` when it has one (SPEC 4), else the body's
        `timestamp` when the source configures one (as WireSocket's), else `received_at`.
        """
        if self.ok_when is not None and not _truthy(self.ok_when(body)):
            raise ParseError(f"ok_when {self.ok_when_text!r}: not true for this response")
        if self.timestamp is not None and context.observed_at is None:
            at = parse_timestamp(self.timestamp(body), "timestamp")
        else:  # an archive line's observed_at wins over the body's time (SPEC 4)
            at = context.observed_at or context.received_at  # type: ignore[assignment]
            if at is None:
                raise ParseError("observed_at: required (the source configures no timestamp)")
        samples: list[SampleValue] = []
        refused: list[str] = []
        if self.history is not None:
            for start, end, item in self.history.buckets.read(body):
                samples.extend(self._samples(item, refused, (start, end)))
        else:
            samples = self._samples(body, refused)
        payload = context.payload
        return Observation(context.source, NAME, at,
                           payload if payload is not None else to_payload(body),
                           tuple(samples), context.received_at, context.origin, tuple(refused),
                           context.window)

    def _samples(self, doc: Any, refused: list[str], bucket: Bucket = (None, None)
                 ) -> list[SampleValue]:
        samples: list[SampleValue] = []
        for metric in self.metrics:
            if metric.each is None:
                samples.append(read_sample(metric, metric.name, doc, "", bucket))
            else:
                samples.extend(read_series(metric, doc, refused, bucket))
        return samples


def _truthy(value: Any) -> bool:
    """JMESPath truth: false, null, "", [] and {} are false; everything else (0 too) is true."""
    return not (value is None or value is False or value in ("", [], {}))



# --- config ---------------------------------------------------------------------------------


def configure(entry: Mapping[str, Any], label: str, problems: list[str]) -> VendorKind | None:
    """The kind of the http_json source in `entry`, or None once its problems are appended.

    Every expression is compiled here, so a bad one is refused with the config (SPEC 7).
    """
    before = len(problems)
    url = entry.get("url")
    if url is None:
        problems.append(f"{label}.url: required for an http_json source")
    else:
        bad = http_url_problem(url)
        if bad:
            problems.append(f"{label}.url: {bad}")
    auth_header = header_text(entry, "auth_header", "Authorization", label, problems)
    if not HEADER_NAME_RE.fullmatch(auth_header):
        problems.append(f"{label}.auth_header: must be an HTTP header name")
    default_prefix = "Bearer " if auth_header.lower() == "authorization" else ""
    auth_prefix = header_text(entry, "auth_prefix", default_prefix, label, problems, empty=True)
    headers = fixed_headers(entry.get("headers", {}), label, problems)
    rpm = entry.get("max_requests_per_minute", DEFAULT_RATE)
    if isinstance(rpm, bool) or not isinstance(rpm, int) or not 1 <= rpm <= 100_000:
        problems.append(f"{label}.max_requests_per_minute: must be a whole number from 1 "
                        "to 100000")
        rpm = DEFAULT_RATE
    timestamp = _expression(entry, "timestamp", label, problems)
    ok_when = _expression(entry, "ok_when", label, problems)
    history = configure_history(entry, label, problems, _expression)
    metrics = _metrics(entry.get("metrics"), label, problems, history="window" in entry)
    auth = configure_auth(entry, label, problems)
    if len(problems) > before:
        return None
    assert isinstance(url, str)
    spec = SourceSpec(url=url, auth_header=auth_header, auth_prefix=auth_prefix,
                      headers=headers, metrics=metrics, timestamp=timestamp, ok_when=ok_when,
                      ok_when_text=str(entry.get("ok_when", "")), history=history, auth=auth)
    return _bound_kind(spec, rpm)


def _bound_kind(spec: SourceSpec, rpm: int) -> VendorKind:
    return VendorKind(
        name=NAME,
        metrics={m.name: m.type for m in spec.metrics if m.each is None},
        series_metrics={m.name: m.type for m in spec.metrics if m.each is not None},
        limited_metrics=frozenset(m.name for m in spec.metrics if m.limit is not None),
        secret_keys=KIND.secret_keys,
        secret_required=False,
        rate_limit=(rpm, 60.0),
        url=lambda base_url, region: spec.url,
        auth_headers=spec.auth_headers,
        parse=spec.parse,
        time_in_body=spec.timestamp is not None,
        config_keys=KIND.config_keys,
        summary=KIND.summary,
        history=spec.history,
        more_secrets=spec.auth.read_all if spec.auth.variables() else None,
    )


def _expression(table: Mapping[str, Any], key: str, label: str, problems: list[str],
                *, required: bool = False) -> Getter | None:
    text = table.get(key)
    if text is None:
        if required:
            problems.append(f"{label}.{key}: required, a JMESPath expression")
        return None
    if not isinstance(text, str) or not text.strip():
        problems.append(f"{label}.{key}: must be a JMESPath expression (a string)")
        return None
    from jmespath.exceptions import JMESPathError

    try:
        return compile_expression(text)
    except JMESPathError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        problems.append(f"{label}.{key}: not a valid JMESPath expression: {text!r} ({reason})")
        return None


def _metrics(value: Any, label: str, problems: list[str], *,
             history: bool = False) -> tuple[MetricSpec, ...]:
    if not isinstance(value, list) or not value:
        problems.append(f"{label}.metrics: required, at least one [[sources.metrics]] table")
        return ()
    found: list[MetricSpec] = []
    names: set[str] = set()
    for i, entry in enumerate(value):
        spec = _metric(entry, f"{label}.metrics[{i}]", problems, history)
        if spec is None:
            continue
        if spec.name in names:
            problems.append(f"{label}.metrics[{i}].name: duplicate metric name {spec.name!r}")
            continue
        names.add(spec.name)
        found.append(spec)
    return tuple(found)


def _metric(entry: Any, label: str, problems: list[str], history: bool) -> MetricSpec | None:
    if not isinstance(entry, dict):
        problems.append(f"{label}: must be a table")
        return None
    before = len(problems)
    for key in sorted(set(entry) - METRIC_KEYS):
        problems.append(f"{label}.{key}: unknown key")
    name = entry.get("name")
    if not isinstance(name, str) or not METRIC_NAME_RE.fullmatch(name):
        problems.append(f"{label}.name: required, lowercase letters, digits or '_' only")
    elif len(name) >= MAX_METRIC_LEN:
        problems.append(f"{label}.name: at most {MAX_METRIC_LEN - 1} characters")
    kind = entry.get("type")
    if history and kind not in (MetricType.INTERVAL, MetricType.GAUGE):
        problems.append(f"{label}.type: required, 'interval' or 'gauge' in a history source")
    elif not history and kind not in (MetricType.COUNTER, MetricType.GAUGE):
        problems.append(f"{label}.type: required, 'counter' or 'gauge'"
                        + (" ('interval' needs [sources.window])"
                           if kind == MetricType.INTERVAL else ""))
    if kind == MetricType.INTERVAL and "limit" in entry:
        problems.append(f"{label}.limit: an interval metric has no limit")
    value = _expression(entry, "value", label, problems, required=True)
    limit = _expression(entry, "limit", label, problems)
    status = _expression(entry, "status", label, problems)
    each = _expression(entry, "each", label, problems)
    key = _expression(entry, "key", label, problems)
    if ("each" in entry) != ("key" in entry):
        present, absent = ("each", "key") if "each" in entry else ("key", "each")
        problems.append(f"{label}.{absent}: required with {present}")
    if len(problems) > before:
        return None
    assert isinstance(name, str) and value is not None
    return MetricSpec(name=name, type=MetricType(str(kind)), value=value,
                      value_text=str(entry["value"]), limit=limit, status=status, each=each,
                      each_text=str(entry.get("each", "")), key=key)


def _no_source(*_args: Any, **_kw: Any) -> Any:
    raise ParseError("an http_json source reads bodies through its own configured kind")


EXAMPLE_BODY = {
    "status": "ok",
    "meta": {"generated_at": "2026-11-21T10:00:00Z"},
    "totals": {"calls": 1200},
    "plan": {"calls_limit": 100000, "state": "active"},
    "data": [{"model": "gpt-4o", "n_tokens": 5000}, {"model": "GPT 4o mini", "n_tokens": 800}],
}
# The SPEC 7 example source, as a config table (the contract tests configure it).
EXAMPLE_SOURCE: dict[str, Any] = {
    "url": "https://api.acme.example/v2/usage",
    "auth_header": "X-Api-Key",
    "timestamp": "meta.generated_at",
    "ok_when": "status == 'ok'",
    "metrics": [
        {"name": "api_calls", "type": "counter", "value": "totals.calls",
         "limit": "plan.calls_limit", "status": "plan.state"},
        {"name": "tokens", "type": "counter", "each": "data", "key": "model",
         "value": "n_tokens"},
    ],
}

# The kind as the registry lists it; each source gets its own from `configure`.
KIND = VendorKind(
    name=NAME,
    metrics={},
    secret_keys=("token_env", "token_file"),
    secret_required=False,
    rate_limit=(DEFAULT_RATE, 60.0),
    url=_no_source,
    auth_headers=_no_source,
    parse=_no_source,
    config_keys=SOURCE_KEYS,
    configure=configure,
    example_body=EXAMPLE_BODY,
    summary="any JSON usage endpoint, its metrics given as JMESPath expressions in the config",
)
