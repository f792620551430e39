"""What each vendor kind measures: its metrics and whether each is a gauge or a counter."""

from __future__ import annotations

from typing import Final, Literal

MetricType = Literal["gauge", "counter"]

# Metric names per vendor kind, in report order.
KINDS: Final[dict[str, dict[str, MetricType]]] = {
    "wiresocket": {"connections": "gauge", "documents": "gauge"},
    "nected": {"invocations": "counter"},
}

# The config keys that name a source's credential, per kind: (env-var key, file key).
SECRET_KEYS: Final[dict[str, tuple[str, str]]] = {
    "wiresocket": ("token_env", "token_file"),
    "nected": ("api_key_env", "api_key_file"),
}


def metric_type(kind: str, metric: str) -> MetricType:
    """The type of `metric` for a source of `kind` (KeyError if it has no such metric)."""
    return KINDS[kind][metric]
