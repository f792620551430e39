"""The `[[notifiers]]` table (SPEC 8): the registry of notifier kinds and the table's checks.

A kind is one module here holding its notifier type (keys, parse of its table, secrets,
what it delivers) and one entry in NOTIFIER_TYPES; etl.alerts.notifiers provides the
transports (HTTP, SMTP) it sends through.
"""

from __future__ import annotations

from typing import Any

from etl.config.fields import named_entry, positive
from etl.config.notifiers.base import (
    MailServer,
    MailTls,
    Notifier,
    NotifierType,
    SecretRef,
    Transports,
)
from etl.config.notifiers.email import EMAIL, EmailNotifier
from etl.config.notifiers.webhook import WEBHOOK, WebhookNotifier, webhook_url

NOTIFIER_TYPES: dict[str, NotifierType] = {t.name: t for t in (WEBHOOK, EMAIL)}
# Kind -> every key a notifier of that kind may set.
NOTIFIER_KEYS: dict[str, frozenset[str]] = {
    name: kind.all_keys for name, kind in NOTIFIER_TYPES.items()}

__all__ = [
    "NOTIFIER_KEYS", "NOTIFIER_TYPES", "EmailNotifier", "MailServer", "MailTls", "Notifier",
    "NotifierType", "SecretRef", "Transports", "WebhookNotifier", "check_secret",
    "parse_notifiers", "webhook_url",
]


def check_secret(notifier: Notifier) -> None:
    """Read the notifier's secrets now (webhook URL, SMTP password); SecretError if unreadable."""
    notifier.secrets()


def parse_notifiers(raw: Any, problems: list[str], where: str) -> list[Notifier]:
    """The valid `[[notifiers]]`; problems are prefixed with `where` (the file)."""
    if not isinstance(raw, list):
        problems.append(f"{where}notifiers: must be an array of tables ([[notifiers]])")
        return []
    out: list[Notifier] = []
    seen: set[str] = set()
    for i, entry in enumerate(raw):
        found: list[str] = []
        notifier = _parse_notifier(entry, i, seen, found)
        problems.extend(where + p for p in found)
        if notifier is not None:
            out.append(notifier)
    return out


def _kinds_text() -> str:
    names = [f"'{name}'" for name in NOTIFIER_TYPES]
    return " or ".join(names) if len(names) < 3 else ", ".join(names[:-1]) + f" or {names[-1]}"


def _parse_notifier(entry: Any, i: int, seen: set[str], problems: list[str]) -> Notifier | None:
    before = len(problems)
    named = named_entry(entry, "notifiers", i, seen, problems)
    if named is None:
        return None
    label, name = named
    kind = NOTIFIER_TYPES.get(entry.get("kind")) if isinstance(entry.get("kind"), str) else None
    if kind is None:
        problems.append(f"{label}.kind: must be {_kinds_text()}")
        return None
    for key in sorted(set(entry) - kind.all_keys):
        problems.append(f"{label}.{key}: unknown key for a {kind.name} notifier")
    timeout = positive(entry, "timeout_seconds", label, 10.0, problems)
    notifier = kind.parse(entry, label, str(name), timeout, problems)
    return notifier if len(problems) == before else None
