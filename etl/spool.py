"""A durable local spool for polls whose database write failed, replayed once the DB is back."""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import Engine, select
from sqlalchemy.exc import SQLAlchemyError

from etl.models import CollectionAttempt, to_micros
from etl.store import Observation, SampleValue, record_attempt, store_observations

log = logging.getLogger("etl.spool")

FORMAT_VERSION = 1
SUFFIX = ".json"
TMP_PREFIX = ".tmp-"
BAD_DIR = "unreadable"


class PollLike(Protocol):
    """The fields of etl.collect.PollResult the spool keeps (structural, to stay decoupled)."""

    source: str
    outcome: str
    started_at: datetime
    finished_at: datetime
    http_status: int | None
    latency_ms: float | None
    tries: int
    error: str | None
    observation: Observation | None


@dataclass(frozen=True)
class SpooledPoll:
    """One poll read back from the spool: the attempt plus its observation, if any."""

    source: str
    outcome: str
    started_at: datetime
    finished_at: datetime
    http_status: int | None
    latency_ms: float | None
    tries: int
    error: str | None
    observation: Observation | None
    retry_after: float | None = None


@dataclass
class ReplayResult:
    """What one replay pass did."""

    replayed: int = 0
    already_stored: int = 0
    remaining: int = 0
    unreadable: int = 0
    error: str | None = None
    replayed_polls: list[SpooledPoll] = field(default_factory=list)


def _dt(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _parse_dt(value: Any) -> datetime | None:
    if value is None:
        return None
    parsed = datetime.fromisoformat(str(value))
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp {value!r} has no time zone")
    return parsed


def poll_to_dict(poll: PollLike) -> dict[str, Any]:
    obs = poll.observation
    return {
        "version": FORMAT_VERSION,
        "source": poll.source,
        "outcome": poll.outcome,
        "started_at": _dt(poll.started_at),
        "finished_at": _dt(poll.finished_at),
        "http_status": poll.http_status,
        "latency_ms": poll.latency_ms,
        "tries": poll.tries,
        "error": poll.error,
        "observation": None
        if obs is None
        else {
            "source": obs.source,
            "kind": obs.kind,
            "observed_at": _dt(obs.observed_at),
            "received_at": _dt(obs.received_at),
            "origin": obs.origin,
            "payload": obs.payload,
            "samples": [
                {"metric": s.metric, "value": s.value, "limit": s.limit, "status": s.status}
                for s in obs.samples
            ],
        },
    }


def poll_from_dict(data: dict[str, Any]) -> SpooledPoll:
    if data.get("version") != FORMAT_VERSION:
        raise ValueError(f"unknown spool format version {data.get('version')!r}")
    raw_obs = data.get("observation")
    obs = None
    if raw_obs is not None:
        observed_at = _parse_dt(raw_obs["observed_at"])
        assert observed_at is not None
        obs = Observation(
            source=raw_obs["source"],
            kind=raw_obs["kind"],
            observed_at=observed_at,
            payload=raw_obs["payload"],
            samples=tuple(
                SampleValue(
                    metric=s["metric"], value=float(s["value"]),
                    limit=None if s.get("limit") is None else float(s["limit"]),
                    status=s.get("status"),
                )
                for s in raw_obs["samples"]
            ),
            received_at=_parse_dt(raw_obs.get("received_at")),
            origin=raw_obs.get("origin") or "collect",
        )
    started = _parse_dt(data["started_at"])
    finished = _parse_dt(data["finished_at"])
    assert started is not None and finished is not None
    return SpooledPoll(
        source=str(data["source"]),
        outcome=str(data["outcome"]),
        started_at=started,
        finished_at=finished,
        http_status=data.get("http_status"),
        latency_ms=data.get("latency_ms"),
        tries=int(data.get("tries", 1)),
        error=data.get("error"),
        observation=obs,
    )


def _fsync_dir(path: Path) -> None:
    # The rename is only durable once the directory entry itself is on disk.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """A folder of one-file-per-poll JSON records, each written atomically and fsynced."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.dir = Path(directory)

    def _ensure_dir(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)

    def put(self, poll: PollLike) -> Path:
        """Write `poll` durably; return its file. Raises OSError if the disk refuses."""
        self._ensure_dir()
        # Names sort by poll time so replay keeps the original order (first observation wins).
        name = f"{to_micros(poll.started_at):020d}-{poll.source}-{uuid.uuid4().hex[:8]}{SUFFIX}"
        final = self.dir / name
        tmp = self.dir / (TMP_PREFIX + name)
        data = json.dumps(poll_to_dict(poll), separators=(",", ":")).encode("utf-8")
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
        _fsync_dir(self.dir)
        return final

    def pending(self) -> list[Path]:
        """Spooled polls waiting for the database, oldest first."""
        if not self.dir.is_dir():
            return []
        return sorted(
            p for p in self.dir.iterdir()
            if p.is_file() and p.name.endswith(SUFFIX) and not p.name.startswith(TMP_PREFIX)
        )

    def __len__(self) -> int:
        return len(self.pending())

    def clean_partial(self) -> int:
        """Remove half-written temp files left by a crash (their poll was never acknowledged)."""
        if not self.dir.is_dir():
            return 0
        removed = 0
        for p in self.dir.iterdir():
            if p.name.startswith(TMP_PREFIX):
                p.unlink(missing_ok=True)
                removed += 1
        return removed

    def load(self, path: Path) -> SpooledPoll:
        return poll_from_dict(json.loads(path.read_text(encoding="utf-8")))

    def _set_aside(self, path: Path) -> None:
        # Never delete what we cannot read: a person may be able to recover it.
        bad = self.dir / BAD_DIR
        bad.mkdir(exist_ok=True)
        os.replace(path, bad / path.name)
        _fsync_dir(self.dir)

    def replay(
        self,
        engine: Engine,
        *,
        on_stored: Callable[[SpooledPoll], None] | None = None,
    ) -> ReplayResult:
        """Write every spooled poll to the database, each exactly once, oldest first.

        A file is deleted only after its transaction committed. Stops at the first database
        error (the rest stays spooled for the next pass).
        """
        result = ReplayResult()
        files = self.pending()
        for i, path in enumerate(files):
            try:
                poll = self.load(path)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.error("spool file %s is unreadable (%s); moved to %s/", path.name, exc, BAD_DIR)
                self._set_aside(path)
                result.unreadable += 1
                continue
            try:
                fresh = store_spooled(engine, poll)
            except SQLAlchemyError as exc:
                orig = getattr(exc, "orig", None) or exc
                result.error = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
                result.remaining = len(files) - i
                return result
            path.unlink(missing_ok=True)
            if fresh:
                result.replayed += 1
                result.replayed_polls.append(poll)
                if on_stored is not None:
                    on_stored(poll)
            else:
                result.already_stored += 1
        if files:
            _fsync_dir(self.dir)
        return result


def store_spooled(engine: Engine, poll: SpooledPoll) -> bool:
    """Store one spooled poll in one transaction; False if its attempt is already stored.

    The attempt row is keyed by (source, started_at, outcome) here: a crash between the commit
    and the file's deletion must not record the poll twice.
    """
    with engine.begin() as conn:
        exists = conn.execute(
            select(CollectionAttempt.id).where(
                CollectionAttempt.source == poll.source,
                CollectionAttempt.started_at == poll.started_at,
                CollectionAttempt.outcome == poll.outcome,
            ).limit(1)
        ).first()
        if exists is not None:
            return False
        stored = 0
        if poll.observation is not None:
            obs = poll.observation
            spooled = Observation(
                source=obs.source, kind=obs.kind, observed_at=obs.observed_at,
                payload=obs.payload, samples=obs.samples, received_at=obs.received_at,
                origin="spool",
            )
            stored = store_observations(conn, [spooled]).samples
        record_attempt(
            conn,
            source=poll.source,
            started_at=poll.started_at,
            finished_at=poll.finished_at,
            outcome=poll.outcome,
            http_status=poll.http_status,
            latency_ms=poll.latency_ms,
            tries=poll.tries,
            samples_stored=stored,
            error=poll.error,
        )
    return True
