"""What the simulated vendor serves: every kind's API, a per-project vendor, and archives of it."""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from etl.config import SourceConfig
from etl.timefmt import utc_z
from etl.vendors import KINDS, SimulatedApi, traffic

# The per-project vendor: (project id as the vendor spells it, storage quota in GB; -1 is
# "unlimited", which SPEC 5 stores as no limit).
PROJECTS = (("Web-App", 50), ("Mobile API", 20), ("batch.jobs", -1))


def projects_body(at: datetime, seed: int = 0) -> dict[str, Any]:
    """The per-project vendor's usage body at `at`: requests (counter), storage_gb (gauge)."""
    at = at.astimezone(UTC)
    items = []
    for i, (project, quota) in enumerate(PROJECTS):
        items.append({
            "id": project,
            "requests": traffic.monthly_counter(at, seed, f"requests-{i}", 3.0 / (i + 1)),
            "storage_gb": traffic.gauge(seed, f"storage-{i}", at, 4 + 6 * i, 30 / (i + 1), 8, 2),
            "quota_gb": quota,
        })
    return {"status": "ok", "generated_at": utc_z(at), "projects": items}


def _bearer(headers: Mapping[str, str], query: Mapping[str, list[str]]) -> tuple[str, bool]:
    del query
    auth = headers.get("Authorization", "")
    return (auth[7:].strip() if auth.startswith("Bearer ") else ""), False


PROJECTS_API = SimulatedApi(
    path="/v1/projects/usage",
    credential=_bearer,
    body=projects_body,
    errors={
        401: {"status": "error", "error": "invalid token"},
        429: {"status": "error", "error": "slow down"},
        500: {"status": "error", "error": "internal"},
        503: {"status": "error", "error": "maintenance"},
    },
    credential_list="tokens",
    rate_limit=(30, 60.0),
    refusal={"status": "degraded", "projects": []},
    line_needs_observed_at=False,
)
PROJECTS_VENDOR = "projects"


def simulated_apis() -> dict[str, SimulatedApi]:
    """Every API the simulator serves, by vendor name (the kind's name for kinds)."""
    found = {k.name: k.simulated for k in KINDS.values() if k.simulated is not None}
    found[PROJECTS_VENDOR] = PROJECTS_API
    return found


def _api_for(source: SourceConfig | tuple[str, str]) -> tuple[str, SimulatedApi, float]:
    """(name, the API a source polls, its step): a kind's own, or the one at its URL's path."""
    apis = simulated_apis()
    if not isinstance(source, SourceConfig):
        name, kind = source
        if kind not in apis:
            raise ValueError(f"unknown source kind {kind!r}")
        return name, apis[kind], 300.0
    api = apis.get(source.kind)
    if api is None or source.bound is not None:
        path = urlsplit(source.url).path
        api = next((a for a in apis.values() if a.path == path), None)
    if api is None:
        raise ValueError(f"{source.name}: the simulator serves nothing at {source.url}")
    return source.name, api, source.interval_seconds


def generate_archive(
    sources: Sequence[SourceConfig | tuple[str, str]],
    start: datetime,
    end: datetime,
    step_seconds: float | None = None,
    seed: int = 0,
) -> Iterator[dict[str, Any]]:
    """Archive lines (SPEC 4) for every source from `start` (included) to `end` (excluded).

    `sources` are SourceConfigs or (name, kind) pairs (a kind, or "projects" for the
    per-project vendor). Each source is sampled every `step_seconds`, or its own
    interval_seconds when not given (300 s for a bare pair), at multiples of the step since
    the epoch, so regenerating gives the same keys. Lines come in time order. The values
    are those a SimulatedVendor with the same seed serves.
    """
    streams: list[Iterable[tuple[float, int, dict[str, Any]]]] = []
    for order, src in enumerate(sources):
        name, api, interval = _api_for(src)
        step = float(step_seconds or interval)
        streams.append(_source_lines(name, api, start, end, step, seed, order))
    for _ts, _order, line in heapq.merge(*streams, key=lambda item: (item[0], item[1])):
        yield line


def _source_lines(name: str, api: SimulatedApi, start: datetime, end: datetime, step: float,
                  seed: int, order: int) -> Iterator[tuple[float, int, dict[str, Any]]]:
    ts = math.ceil(start.timestamp() / step) * step
    stop = end.timestamp()
    while ts < stop:
        at = datetime.fromtimestamp(ts, UTC)
        line: dict[str, Any] = {"source": name}
        if api.line_needs_observed_at:
            line["observed_at"] = utc_z(at)
        line["body"] = api.body(at, seed)
        yield ts, order, line
        ts += step
