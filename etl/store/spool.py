"""A durable local spool for polls whose database write failed, replayed once the DB is back."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import InterfaceError, OperationalError

from etl.errors import UsageEtlError
from etl.files import atomic_writer, fsync_dir
from etl.store.writer import record_poll
from etl.textutil import first_line
from etl.timefmt import to_micros
from etl.vendors.types import MetricType, Observation, Origin, Outcome, PollRecord, SampleValue

log = logging.getLogger("etl.store.spool")

FORMAT_VERSION = 1
# A poll holding a history range to store (SPEC 10): pages with windows and buckets.
HISTORY_VERSION = 2
SUFFIX = ".json"
TMP_PREFIX = ".tmp-"
BAD_DIR = "unreadable"
# Replays a poll the database refuses gets (in one process) before it is moved aside.
MAX_REPLAY_TRIES = 3
# Held (flock) by the daemon that owns the folder, for as long as it runs.
LOCK_NAME = ".daemon.lock"
# What reading a spool file back can raise when it is not a complete record.
_UNREADABLE = (OSError, ValueError, KeyError, TypeError, AssertionError)


class SpoolInUseError(UsageEtlError):
    """The spool folder is owned by another running daemon (or cannot be locked at all)."""

    exit_code = 2


@dataclass
class Recovery:
    """What start-up did with the temp files a crash left in the spool."""

    restored: list[str] = field(default_factory=list)  # complete: renamed into place
    set_aside: list[str] = field(default_factory=list)  # not a complete record: unreadable/
    duplicates: list[str] = field(default_factory=list)  # same bytes as the renamed file


class SpoolLock:
    """An exclusive flock on the spool's lock file; dropped by release() or process exit."""

    def __init__(self, fd: int, path: Path) -> None:
        self.fd: int | None = fd
        self.path = path

    def release(self) -> None:
        """Drop the lock (the process's exit drops it too)."""
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None

    def __enter__(self) -> SpoolLock:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()


@dataclass
class ReplayResult:
    """What one replay pass did."""

    replayed: int = 0
    already_stored: int = 0
    remaining: int = 0
    unreadable: int = 0
    refused: int = 0  # polls the database refused this pass (kept for another try)
    set_aside: list[str] = field(default_factory=list)  # refused MAX_REPLAY_TRIES times
    error: str | None = None
    replayed_polls: list[PollRecord] = field(default_factory=list)


def _dt(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _parse_dt(value: Any) -> datetime | None:
    if value is None:
        return None
    parsed = datetime.fromisoformat(str(value))
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp {value!r} has no time zone")
    return parsed


def _page_to_dict(page: Observation) -> dict[str, Any]:
    """A history page (SPEC 10): its window, and each sample's bucket."""
    assert page.window is not None
    return {
        "source": page.source, "kind": page.kind, "observed_at": _dt(page.observed_at),
        "received_at": _dt(page.received_at), "origin": page.origin, "payload": page.payload,
        "window": [_dt(page.window[0]), _dt(page.window[1])],
        "samples": [{"metric": s.metric, "value": s.value, "limit": s.limit, "status": s.status,
                     "type": str(s.metric_type), "start": _dt(s.bucket_start),
                     "end": _dt(s.bucket_end)} for s in page.samples],
    }


def _page_from_dict(raw: dict[str, Any]) -> Observation:
    observed_at, start, end = (_parse_dt(raw["observed_at"]), _parse_dt(raw["window"][0]),
                               _parse_dt(raw["window"][1]))
    assert observed_at is not None and start is not None and end is not None
    return Observation(
        source=raw["source"], kind=raw["kind"], observed_at=observed_at,
        payload=raw["payload"], received_at=_parse_dt(raw.get("received_at")),
        origin=raw.get("origin") or "collect", window=(start, end),
        samples=tuple(SampleValue(
            metric=s["metric"], value=float(s["value"]),
            limit=None if s.get("limit") is None else float(s["limit"]),
            status=s.get("status"), metric_type=MetricType(s["type"]),
            bucket_start=_parse_dt(s["start"]), bucket_end=_parse_dt(s["end"]))
            for s in raw["samples"]))


def poll_to_dict(poll: PollRecord) -> dict[str, Any]:
    """A poll as the spool file's JSON object (FORMAT_VERSION; times as UTC text).

    A history poll's range not stored yet (its `pages` and `read_up_to`) makes the file
    HISTORY_VERSION, which an older reader refuses rather than store the attempt alone.
    """
    obs = poll.observation
    extra: dict[str, Any] = {}
    if poll.pages:
        extra = {"version": HISTORY_VERSION, "samples_stored": poll.samples_stored,
                 "read_up_to": _dt(poll.read_up_to),
                 "pages": [_page_to_dict(page) for page in poll.pages]}
    return {
        "version": FORMAT_VERSION,
        "source": poll.source,
        "outcome": str(poll.outcome),
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
                {"metric": s.metric, "value": s.value, "limit": s.limit, "status": s.status,
                 **({"type": str(s.metric_type)} if s.metric_type is not None else {})}
                for s in obs.samples
            ],
        },
    } | extra


def poll_from_dict(data: dict[str, Any]) -> PollRecord:
    """The poll a spool file's JSON object holds.

    Raises:
        ValueError: another format version, or a malformed time or number.
        KeyError: a required field is missing.
    """
    if data.get("version") not in (FORMAT_VERSION, HISTORY_VERSION):
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
                    metric_type=MetricType(s["type"]) if s.get("type") else None,
                )
                for s in raw_obs["samples"]
            ),
            received_at=_parse_dt(raw_obs.get("received_at")),
            origin=raw_obs.get("origin") or "collect",
        )
    started = _parse_dt(data["started_at"])
    finished = _parse_dt(data["finished_at"])
    assert started is not None and finished is not None
    return PollRecord(
        source=str(data["source"]),
        outcome=Outcome(data["outcome"]),
        started_at=started,
        finished_at=finished,
        http_status=data.get("http_status"),
        latency_ms=data.get("latency_ms"),
        tries=int(data.get("tries", 1)),
        error=data.get("error"),
        observation=obs,
        retry_after=None,
        samples_stored=int(data.get("samples_stored", 0)),
        pages=tuple(_page_from_dict(page) for page in data.get("pages", ())),
        read_up_to=_parse_dt(data.get("read_up_to")),
    )


class Spool:
    """A folder of one-file-per-poll JSON records, each written atomically and fsynced."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.dir = Path(directory)
        self._refusals: dict[str, int] = {}  # file name -> times the database refused it

    def _ensure_dir(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)

    def put(self, poll: PollRecord) -> Path:
        """Write `poll` durably; return its file. Raises OSError if the disk refuses."""
        self._ensure_dir()
        # Names sort by poll time so replay keeps the original order (first observation wins).
        name = f"{to_micros(poll.started_at):020d}-{poll.source}-{uuid.uuid4().hex[:8]}{SUFFIX}"
        final = self.dir / name
        data = json.dumps(poll_to_dict(poll), separators=(",", ":")).encode("utf-8")
        with atomic_writer(final, durable=True, binary=True, tmp_name=TMP_PREFIX + name) as fh:
            fh.write(data)
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

    def lock(self) -> SpoolLock:
        """Claim the folder for this process, or raise SpoolInUseError naming the holder.

        Temp files are only safe to touch by the process that owns the folder: another daemon
        sharing it could be half-way through writing one.
        """
        path = self.dir / LOCK_NAME
        try:
            self._ensure_dir()
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise SpoolInUseError(
                f"spool_dir {self.dir}: cannot create {LOCK_NAME}: {exc.strerror or exc}"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            if isinstance(exc, BlockingIOError):
                raise SpoolInUseError(
                    f"spool_dir {self.dir} is in use by another usage-etl schedule "
                    f"(pid {holder}); give each daemon its own spool_dir "
                    "(or $USAGE_ETL_SPOOL_DIR)"
                ) from None
            raise SpoolInUseError(
                f"spool_dir {self.dir}: cannot lock {LOCK_NAME}: {exc.strerror or exc}"
            ) from None
        # The pid is only for the message above; the flock is what excludes.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        return SpoolLock(fd, path)

    def recover_partial(self) -> Recovery:
        """Deal with temp files a crash left behind; call only while holding lock().

        A temp file is written, flushed and fsynced before its rename, so one that parses as
        a complete record is a poll that was finished but not yet renamed: it is renamed into
        place and replayed like any other. Anything else (cut short, empty) is moved to
        unreadable/ for a person to look at; nothing is deleted unless it is an exact copy.
        """
        done = Recovery()
        if not self.dir.is_dir():
            return done
        for tmp in sorted(self.dir.iterdir()):
            if not tmp.name.startswith(TMP_PREFIX) or not tmp.is_file():
                continue
            final = self.dir / tmp.name[len(TMP_PREFIX):]
            complete = final.name.endswith(SUFFIX)
            if complete:
                try:
                    self.load(tmp)
                except _UNREADABLE:
                    complete = False
            if not complete:
                self._set_aside(tmp, f"partial-{final.name}")
                done.set_aside.append(tmp.name)
            elif final.exists():
                if final.read_bytes() == tmp.read_bytes():
                    tmp.unlink()
                    done.duplicates.append(tmp.name)
                else:
                    self._set_aside(tmp, f"partial-{final.name}")
                    done.set_aside.append(tmp.name)
            else:
                # Its fsync may never have happened: make the content durable before the name.
                with open(tmp, "rb") as fh:
                    os.fsync(fh.fileno())
                os.replace(tmp, final)
                done.restored.append(final.name)
        if done.restored or done.duplicates:
            fsync_dir(self.dir)
        return done

    def unreadable(self) -> list[Path]:
        """Files set aside in unreadable/ (never replayed; a person has to look at them)."""
        bad = self.dir / BAD_DIR
        if not bad.is_dir():
            return []
        return sorted(p for p in bad.iterdir() if p.is_file())

    def load(self, path: Path) -> PollRecord:
        """The poll in spool file `path` (raises OSError, ValueError, KeyError as poll_from_dict)."""
        return poll_from_dict(json.loads(path.read_text(encoding="utf-8")))

    def _set_aside(self, path: Path, name: str | None = None) -> None:
        # Never delete what we cannot read: a person may be able to recover it.
        bad = self.dir / BAD_DIR
        bad.mkdir(exist_ok=True)
        os.replace(path, bad / (name or path.name))
        fsync_dir(bad)
        fsync_dir(self.dir)

    def replay(
        self,
        engine: Engine,
        *,
        on_stored: Callable[[PollRecord], None] | None = None,
    ) -> ReplayResult:
        """Write every spooled poll to the database, each exactly once, oldest first.

        A file is deleted only after its transaction committed. Stops at the first error of
        an unavailable database (the rest stays spooled for the next pass). A poll the
        database refuses (its text or values) is skipped, so it never blocks the others, and
        after MAX_REPLAY_TRIES refusals it is moved aside (to BAD_DIR) with a `.reason` file.
        """
        result = ReplayResult()
        files = self.pending()
        for i, path in enumerate(files):
            try:
                poll = self.load(path)
            except _UNREADABLE as exc:
                log.error("spool file %s is unreadable (%s); moved to %s/", path.name, exc, BAD_DIR)
                self._set_aside(path)
                result.unreadable += 1
                continue
            try:
                fresh = store_spooled(engine, poll)
            except (OperationalError, InterfaceError) as exc:  # the database is away or busy
                result.error = first_line(exc)
                result.remaining = len(files) - i
                return result
            except Exception as exc:  # noqa: BLE001 - this poll is refused, not the others
                reason = first_line(exc)
                tries = self._refusals[path.name] = self._refusals.get(path.name, 0) + 1
                if tries < MAX_REPLAY_TRIES:
                    result.refused += 1
                    result.remaining += 1
                    continue
                log.error("spool file %s refused by the database %d times (%s); moved to %s/",
                          path.name, tries, reason, BAD_DIR)
                self._set_aside(path)
                (self.dir / BAD_DIR / (path.name + ".reason")).write_text(
                    f"refused by the database {tries} times: {reason}\n", encoding="utf-8")
                self._refusals.pop(path.name, None)
                result.set_aside.append(path.name)
                continue
            path.unlink(missing_ok=True)
            if fresh:
                result.replayed += 1
                result.replayed_polls.append(poll)
                if on_stored is not None:
                    on_stored(poll)
            else:
                result.already_stored += 1
        if files:
            fsync_dir(self.dir)
        return result


def store_spooled(engine: Engine, poll: PollRecord) -> bool:
    """Store one spooled poll in one transaction; False if its attempt is already stored."""
    return record_poll(engine, poll, origin=Origin.SPOOL, once=True) is not None
