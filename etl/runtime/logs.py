"""Daemon log lines: one `key=value` line or one JSON object per event, secrets masked."""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

from etl.redact import LOG_MASK, redact
from etl.timefmt import utc_z

LOG_FORMATS = ("text", "json")


def event(logger: logging.Logger, level: int, name: str, message: str = "", **fields: Any) -> None:
    """Log one structured event; `fields` become key=value pairs or JSON keys."""
    logger.log(level, message or name, extra={"event": name, "fields": fields})


class EventLog:
    """One daemon's events from many threads, silent once its last line is out."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self._lock = threading.Lock()
        self._silenced = False

    def __call__(self, level: int, name: str, **fields: Any) -> None:
        """Log one event (see `event`), unless the last line is already out."""
        with self._lock:
            if not self._silenced:
                event(self.logger, level, name, **fields)

    def last(self, level: int, name: str, **fields: Any) -> None:
        """Log the closing event; threads still running log nothing after it."""
        with self._lock:
            event(self.logger, level, name, **fields)
            self._silenced = True


def _plain(value: Any) -> str:
    if isinstance(value, float):
        text = f"{value:.1f}"
    elif isinstance(value, datetime):
        text = utc_z(value)
    else:
        text = str(value)
    if not text or any(c in text for c in ' "='):
        return json.dumps(text)
    return text


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return utc_z(value)
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


class EventFormatter(logging.Formatter):
    """Formats records as text or JSON lines and masks the given secrets in both."""

    def __init__(self, fmt: str = "text", secrets: Iterable[str] = ()) -> None:
        super().__init__()
        if fmt not in LOG_FORMATS:
            raise ValueError(f"log format must be one of {LOG_FORMATS}")
        self.fmt = fmt
        self.secrets = tuple(s for s in secrets if s)

    def format(self, record: logging.LogRecord) -> str:
        """One log line: `text` (time, level, event, fields) or one JSON object, secrets masked."""
        ts = datetime.fromtimestamp(record.created, UTC)
        fields: Mapping[str, Any] = getattr(record, "fields", {}) or {}
        name = getattr(record, "event", None)
        message = record.getMessage()
        if record.exc_info:
            # A one-line summary; a traceback could carry request details.
            exc = record.exc_info[1]
            message += f" ({type(exc).__name__}: {exc})"
        if self.fmt == "json":
            out: dict[str, Any] = {
                "ts": utc_z(ts, "milliseconds"),
                "level": record.levelname.lower(),
                "logger": record.name,
            }
            if name:
                out["event"] = name
            out.update({k: _json_value(v) for k, v in fields.items()})
            if message and message != name:
                out["message"] = message
            line = json.dumps(out, separators=(",", ":"))
        else:
            parts = [utc_z(ts, "milliseconds"),
                     record.levelname]
            parts.append(name or record.name)
            parts.extend(f"{k}={_plain(v)}" for k, v in fields.items() if v is not None)
            if message and message != name:
                parts.append(f"- {message}")
            line = " ".join(parts)
        return redact(line, self.secrets)


def setup_daemon_logging(
    fmt: str = "text",
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
    level: int = logging.INFO,
) -> logging.Handler:
    """Send `etl` logs (and APScheduler's warnings) to stderr in `fmt`; returns the handler.

    Every other logger's lines that go to the same stream through the root logger are
    written in `fmt` too (docs/deployment.md: `--log-format json` is one object per line).
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(EventFormatter(fmt, secrets))
    handler.addFilter(LOG_MASK)
    for name in ("etl", "apscheduler"):
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            if isinstance(old.formatter, EventFormatter):
                logger.removeHandler(old)
        logger.addHandler(handler)
        logger.propagate = False
        # APScheduler logs every job start at INFO; one line per poll is ours to write.
        logger.setLevel(level if name == "etl" else max(level, logging.WARNING))
    # The collector's own per-poll lines would repeat the scheduler's "poll" line.
    logging.getLogger("etl.collect").setLevel(max(level, logging.ERROR))
    # Libraries' own lines (SQLAlchemy's pool on a cut connection, urllib3, psycopg) reach
    # the root logger's handler, which the CLI made for plain text: in `json` they broke the
    # one object per line a log shipper reads. The root's handlers on the same stream take
    # the same format (and mask the same secrets).
    for other in logging.getLogger().handlers:
        if isinstance(other, logging.StreamHandler) and other.stream is handler.stream:
            other.setFormatter(handler.formatter)
    return handler
