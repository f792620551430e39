"""A notifier kind written the way a new one is added: one module, one registry entry.

`chat` posts `{"channel": ..., "text": ...}` to a secret URL (a chat service's incoming
webhook); tests register CHAT in etl.config.notifiers.NOTIFIER_TYPES.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from etl.config.notifiers.base import NotifierType, SecretRef, Transports, secret_ref


@dataclass(frozen=True)
class ChatNotifier:
    """A `kind = "chat"` notifier."""

    name: str
    url: SecretRef
    channel: str
    timeout_seconds: float = 10.0
    kind: str = "chat"

    def secrets(self) -> list[str]:
        return [self.url.read()]

    def deliver(self, body: Mapping[str, Any], transports: Transports) -> None:
        transports.post_json(f"chat {self.name}", self.url.read(),
                             {"channel": self.channel, "text": body["text"]},
                             self.timeout_seconds)


def parse(entry: Mapping[str, Any], label: str, name: str, timeout: float,
          problems: list[str]) -> ChatNotifier | None:
    url = secret_ref(entry, label, "url_env", "url_file", problems, required=True)
    channel = entry.get("channel")
    if not isinstance(channel, str) or not channel.startswith("#"):
        problems.append(f"{label}.channel: required, a channel such as '#ops'")
        return None
    return None if url is None else ChatNotifier(name, url, channel, timeout)


CHAT = NotifierType(name="chat", keys=frozenset({"url_env", "url_file", "channel"}),
                    parse=parse)
