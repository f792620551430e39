"""The `[[alerts]]` table (SPEC 8): `AlertRule`, its conditions and the checks of its keys."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any

from etl.config.billing import BillingRule
from etl.config.fields import decimal_value, named_entry, positive, what
from etl.config.sources import SourceConfig
from etl.vendors import VendorKind


class Condition(StrEnum):
    """The conditions an alert can test, named as their config keys (SPEC 8, 11)."""

    ABOVE_PCT = "above_pct"
    ABOVE = "above"
    STALE = "stale"
    PROJECTED_OVER_INCLUDED = "projected_over_included"
    PROJECTED_AMOUNT_ABOVE = "projected_amount_above"
    CREDIT_BELOW = "credit_below"
    PROJECTED_CREDIT_EXHAUSTED = "projected_credit_exhausted"

    @property
    def on_credit(self) -> bool:
        """Whether the condition watches a `[[credits]]` entry rather than a series."""
        return self in (Condition.CREDIT_BELOW, Condition.PROJECTED_CREDIT_EXHAUSTED)


@dataclass(frozen=True)
class AlertRule:
    """One `[[alerts]]` entry.

    `threshold` is the condition's number: a percentage for above_pct, a value (gauges) or
    a month-to-date increase (counters) for above, money for projected_amount_above and
    credit_below, and None for the boolean conditions. `clear` is where an above_pct alert
    resolves. `credit` names the `[[credits]]` entry a credit condition watches (SPEC 11).
    """

    name: str
    condition: Condition
    metric: str | None
    source: str | None = None
    threshold: Decimal | None = None
    clear: Decimal | None = None
    for_seconds: float = 0.0
    repeat_seconds: float = 0.0
    notify: tuple[str, ...] = ()
    credit: str | None = None


ALERT_KEYS = {"name", "source", "metric", "clear_pct", "for_seconds", "repeat_seconds",
              "notify", "credit"} | {str(c) for c in Condition}
# Conditions whose key is `true` rather than a number.
BOOLEAN_CONDITIONS = (Condition.STALE, Condition.PROJECTED_OVER_INCLUDED,
                      Condition.PROJECTED_CREDIT_EXHAUSTED)


def parse_alerts(
    raw: Any, problems: list[str], where: str, *, sources: list[SourceConfig],
    declared: Mapping[str, VendorKind | None], billing: list[BillingRule], notifiers: set[str],
    raw_notifiers: Any, credits: Collection[str] = (),
    refused_rules: Collection[tuple[str, str]] = (),
) -> list[AlertRule]:
    """The valid `[[alerts]]`, checked against the sources, billing rules and notifiers.

    `refused_rules` are the (source, metric) of `[[billing]]` entries refused for their own
    keys: a projection on such a series is not also told it has no rule.
    """
    if not isinstance(raw, list):
        problems.append(f"{where}alerts: must be an array of tables ([[alerts]])")
        return []
    # Notifiers named in the config but refused for another reason: not "unknown" here.
    named = {e.get("name") for e in raw_notifiers if isinstance(e, dict)} if isinstance(
        raw_notifiers, list) else set()
    out: list[AlertRule] = []
    seen: set[str] = set()
    for i, entry in enumerate(raw):
        found: list[str] = []
        rule = _parse_alert(entry, i, seen, found, sources=sources, declared=declared,
                            billing=billing, notifiers=notifiers, named=named, credits=credits,
                            refused_rules=refused_rules)
        problems.extend(where + p for p in found)
        if rule is not None:
            out.append(rule)
    return out


def _parse_alert(
    entry: Any, i: int, seen: set[str], problems: list[str], *, sources: list[SourceConfig],
    declared: Mapping[str, VendorKind | None], billing: list[BillingRule], notifiers: set[str],
    named: set[Any], credits: Collection[str] = (),
    refused_rules: Collection[tuple[str, str]] = (),
) -> AlertRule | None:
    """The alert in `entry`, or None once every problem with it is added to `problems`."""
    before = len(problems)
    found = named_entry(entry, "alerts", i, seen, problems)
    if found is None:
        return None
    label, name = found
    for key in sorted(set(entry) - ALERT_KEYS):
        problems.append(f"{label}.{key}: unknown key")
    condition = _alert_condition(entry, label, problems)
    threshold, clear = _alert_threshold(entry, label, condition, problems)
    source = entry.get("source")
    if source is not None and (not isinstance(source, str) or source not in declared):
        problems.append(f"{label}.source: {source!r} is not a configured source")
        source = None
    metric = entry.get("metric")
    credit = _alert_credit(entry, label, condition, credits, problems)
    if condition is not None and condition.on_credit:
        for key in ("source", "metric"):
            if key in entry:
                problems.append(f"{label}.{key}: a {condition} alert watches its credit's "
                                f"source; remove {key}")
        source = metric = None
    elif _alert_metric_ok(metric, label, condition, problems) and condition is not None and (
            source is None or declared.get(source) is not None):
        _check_alert_series(label, condition, source, metric, sources, billing, problems,
                            refused_rules)
    for_seconds = positive(entry, "for_seconds", label, 0.0, problems, zero_ok=True)
    repeat_seconds = positive(entry, "repeat_seconds", label, 0.0, problems, zero_ok=True)
    notify = _alert_notify(entry.get("notify", []), label, notifiers | named, problems)
    if len(problems) > before or condition is None:
        return None
    assert isinstance(name, str)
    return AlertRule(
        name=name, condition=condition, metric=metric, source=source, threshold=threshold,
        clear=clear, for_seconds=for_seconds, repeat_seconds=repeat_seconds,
        notify=tuple(dict.fromkeys(notify)), credit=credit,
    )


def _alert_credit(entry: Mapping[str, Any], label: str, condition: Condition | None,
                  credits: Collection[str], problems: list[str]) -> str | None:
    """The `[[credits]]` name a credit condition watches (SPEC 11), checked."""
    credit = entry.get("credit")
    if condition is None:
        return None
    if not condition.on_credit:
        if credit is not None:
            problems.append(f"{label}.credit: only goes with credit_below or "
                            "projected_credit_exhausted")
        return None
    if not isinstance(credit, str) or credit not in credits:
        problems.append(f"{label}.credit: required with {condition}, the name of a "
                        "[[credits]] entry" + (f" ({credit!r} is not one)"
                                               if isinstance(credit, str) else ""))
        return None
    return credit


def _alert_condition(entry: Mapping[str, Any], label: str, problems: list[str]
                     ) -> Condition | None:
    """The one condition key the alert sets (SPEC 8), or None once the problem is added."""
    conditions = [c for c in Condition if str(c) in entry]
    if not conditions:
        problems.append(f"{label}: no condition; set one of: {', '.join(map(str, Condition))}")
    elif len(conditions) > 1:
        problems.append(f"{label}.{conditions[1]}: only one condition per alert "
                        f"({', '.join(map(str, conditions))} are set)")
    else:
        return conditions[0]
    return None


def _alert_threshold(entry: Mapping[str, Any], label: str, condition: Condition | None,
                     problems: list[str]) -> tuple[Decimal | None, Decimal | None]:
    """Return (the condition's threshold, clear_pct), each None when not set or refused."""
    threshold: Decimal | None = None
    if condition in BOOLEAN_CONDITIONS:
        if entry[str(condition)] is not True:
            problems.append(f"{label}.{condition}: must be true")
    elif condition is not None:
        threshold = decimal_value(entry[str(condition)])
        if threshold is None or threshold < 0 or (
                condition is Condition.ABOVE_PCT and threshold == 0):
            bound = "above 0" if condition is Condition.ABOVE_PCT else "of 0 or more"
            problems.append(f"{label}.{condition}: must be a number {bound}")
            threshold = None
    clear: Decimal | None = None
    if "clear_pct" in entry:
        clear = decimal_value(entry["clear_pct"])
        if condition is not Condition.ABOVE_PCT:
            problems.append(f"{label}.clear_pct: only goes with above_pct")
        elif clear is None or clear < 0:
            problems.append(f"{label}.clear_pct: must be a number of 0 or more")
        elif threshold is not None and clear > threshold:
            problems.append(f"{label}.clear_pct: must not be above above_pct ({threshold})")
    return threshold, clear


def _alert_metric_ok(metric: Any, label: str, condition: Condition | None,
                     problems: list[str]) -> bool:
    """Whether `metric` is a name to check against the sources (a stale alert has none)."""
    if condition is Condition.STALE:
        if metric is not None:
            problems.append(f"{label}.metric: a stale alert is per source; remove metric")
    elif metric is None:
        problems.append(f"{label}.metric: required, the name of a metric")
    elif not isinstance(metric, str):
        problems.append(f"{label}.metric: must be a string, not {what(metric)}")
    else:
        return True
    return False


def _alert_notify(notify: Any, label: str, known: set[Any], problems: list[str]) -> list[str]:
    """The notifier names of `notify` (a name or a list of names), each one configured."""
    if isinstance(notify, str):
        notify = [notify]
    if not isinstance(notify, list) or not all(isinstance(n, str) for n in notify):
        problems.append(f"{label}.notify: must be a list of notifier names")
        return []
    for n in notify:
        if n not in known:
            problems.append(f"{label}.notify: unknown notifier {n!r}")
    return notify


def _check_alert_series(label: str, condition: Condition, source: str | None, metric: str,
                        sources: list[SourceConfig], billing: list[BillingRule],
                        problems: list[str],
                        refused_rules: Collection[tuple[str, str]] = ()) -> None:
    """The series an alert on `metric` watches must exist and suit its condition (SPEC 8)."""
    targets = [s for s in sources if (source is None or s.name == source)]
    watched = [s for s in targets if s.vendor.metric_type_of(metric) is not None]
    if not watched:
        if source is not None and targets:
            problems.append(f"{label}.metric: {metric!r} is not a metric of source {source!r} "
                            f"(expected one of: {targets[0].vendor.metric_names()})")
        elif source is None:
            problems.append(f"{label}.metric: no configured source has a metric {metric!r}")
        return
    if condition is Condition.ABOVE_PCT:
        bare = [s.name for s in watched
                if not s.vendor.has_limit(metric)]
        if bare:
            problems.append(f"{label}.above_pct: {', '.join(bare)} {metric} has no plan limit, "
                            "so no percentage (use above)")
    elif condition in (Condition.PROJECTED_OVER_INCLUDED, Condition.PROJECTED_AMOUNT_ABOVE):
        # A rule refused for its own keys still names its series: its line says what to fix.
        ruled = {(r.source, r.metric) for r in billing} | set(refused_rules)
        bare = [s.name for s in watched if (s.name, metric) not in ruled]
        if bare:
            problems.append(f"{label}.{condition}: no [[billing]] rule for "
                            f"{', '.join(f'{b}/{metric}' for b in bare)} to project")
