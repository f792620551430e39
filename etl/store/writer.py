"""The one write path: observations (raw snapshot + samples) and poll records, per transaction."""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, insert, select, text, tuple_
from sqlalchemy.exc import InterfaceError, OperationalError

from etl.store.history import advance_read_up_to, store_history
from etl.store.models import CollectionAttempt, Sample, Snapshot
from etl.store.packs import unpack_spans
from etl.store.retire import skip_retired
from etl.store.rows import Conflict, StoreResult, insert_ignore, series_ids
from etl.textutil import first_line
from etl.vendors.types import POLL_OUTCOME, Observation, Origin, Outcome, PollRecord, SampleValue

log = logging.getLogger("etl.store")


def store_observations(conn: Connection, observations: Iterable[Observation]) -> StoreResult:
    """Store observations in the caller's transaction; the first stored observation of a key wins.

    A key is (source, observed_at); each of its samples is one row per (series, observed_at).
    Same key and same value counts as a duplicate; same key and another value is a Conflict
    and is not stored (SPEC 4).

    Pages of history sources (with a `window`) go to etl.store.history, where a bucket's
    latest fetch wins instead (SPEC 10); what falls in retired history is left out (SPEC 13).
    Returns a StoreResult: new snapshots and samples, duplicates, conflicts, left out.
    """
    result = StoreResult()
    obs_list = list(observations)
    if any(obs.window is not None for obs in obs_list):
        result.add(store_history(conn, [o for o in obs_list if o.window is not None]))
        obs_list = [o for o in obs_list if o.window is None]
    if not obs_list:
        return result
    obs_list = skip_retired(conn, obs_list, result)
    unique, later = _first_of_each_key(obs_list)

    # Existing samples for the batch's keys decide duplicate / conflict / new.
    rows_by_key: dict[tuple[int, datetime], tuple[Observation, SampleValue]] = {}
    for obs in unique.values():
        ids = series_ids(conn, obs.source, obs.kind, obs.samples)
        for sv in obs.samples:
            rows_by_key[(ids[sv.metric], obs.observed_at)] = (obs, sv)
    existing = _existing_values(conn, list(rows_by_key))
    _insert_new_snapshots(conn, unique, result)
    _insert_new_samples(conn, rows_by_key, existing, result)
    _compare_repeats(later, unique, result)
    return result


def _first_of_each_key(
    obs_list: list[Observation],
) -> tuple[dict[tuple[str, datetime], Observation], list[Observation]]:
    """Split a batch into the first observation of each (source, observed_at) and the repeats."""
    unique: dict[tuple[str, datetime], Observation] = {}
    later: list[Observation] = []
    for obs in obs_list:
        key = (obs.source, obs.observed_at)
        if key in unique:
            later.append(obs)
        else:
            unique[key] = obs
    return unique, later


def _insert_new_snapshots(
    conn: Connection,
    unique: dict[tuple[str, datetime], Observation],
    result: StoreResult,
) -> None:
    """Insert the snapshots of keys not stored yet."""
    # Looked up, not inferred from samples: an observation may have none (an empty `each`).
    stored_snaps = _snapshot_ids(conn, list(unique))
    snap_rows = []
    for key, obs in unique.items():
        if key in stored_snaps:
            continue
        snap_rows.append(
            {
                "source": obs.source,
                "kind": obs.kind,
                "observed_at": obs.observed_at,
                "received_at": obs.received_at,
                "origin": obs.origin,
                "payload": obs.payload,
            }
        )
    if snap_rows:
        conn.execute(insert_ignore(conn, Snapshot, ("source", "observed_at")), snap_rows)
        result.snapshots = len(snap_rows)


def _insert_new_samples(
    conn: Connection,
    rows_by_key: dict[tuple[int, datetime], tuple[Observation, SampleValue]],
    existing: dict[tuple[int, datetime], float],
    result: StoreResult,
) -> None:
    """Insert the samples not stored yet; count stored equal values as duplicates, others as conflicts."""
    sample_rows = []
    for (sid, at), (obs, sv) in rows_by_key.items():
        stored = existing.get((sid, at))
        if stored is None:
            sample_rows.append(
                {
                    "series_id": sid,
                    "observed_at": at,
                    "value": sv.value,
                    "plan_limit": sv.limit,
                    "status": sv.status,
                }
            )
        elif stored == sv.value:
            result.duplicates += 1
        else:
            result.conflicts.append(Conflict(obs.source, sv.metric, at, stored, sv.value))
    if sample_rows:
        conn.execute(insert_ignore(conn, Sample, ("series_id", "observed_at")), sample_rows)
        result.samples = len(sample_rows)
        _mark_rollups_dirty(conn, sample_rows)


def _compare_repeats(
    later: list[Observation],
    unique: dict[tuple[str, datetime], Observation],
    result: StoreResult,
) -> None:
    """Count the batch's repeats of a key against its first observation (duplicate or conflict)."""
    for obs in later:
        first = unique[(obs.source, obs.observed_at)]
        stored_values = {sv.metric: sv.value for sv in first.samples}
        for sv in obs.samples:
            if stored_values.get(sv.metric) == sv.value:
                result.duplicates += 1
            else:
                result.conflicts.append(
                    Conflict(obs.source, sv.metric, obs.observed_at,
                             stored_values.get(sv.metric, float("nan")), sv.value)
                )


def _mark_rollups_dirty(conn: Connection, sample_rows: list[dict[str, object]]) -> None:
    """Daily rollups over these series' new time spans must be recomputed (etl.store.rollups)."""
    from etl.store.rollups import mark_dirty

    spans: dict[int, tuple[datetime, datetime]] = {}
    for row in sample_rows:
        sid, at = row["series_id"], row["observed_at"]
        assert isinstance(sid, int) and isinstance(at, datetime)
        lo_hi = spans.get(sid)
        spans[sid] = (at, at) if lo_hi is None else (min(lo_hi[0], at), max(lo_hi[1], at))
    mark_dirty(conn, spans)


def _existing_values(conn: Connection, keys: list[tuple[int, datetime]]
                     ) -> dict[tuple[int, datetime], float]:
    """Stored values for sample keys, one scan per series (packed days unpacked first)."""
    by_series: dict[int, list[datetime]] = {}
    for sid, at in keys:
        by_series.setdefault(sid, []).append(at)
    unpack_spans(conn, {sid: (min(ats), max(ats)) for sid, ats in by_series.items()})
    found: dict[tuple[int, datetime], float] = {}
    wanted = set(keys)
    for sid, ats in by_series.items():
        rows = conn.execute(select(Sample.observed_at, Sample.value).where(
            Sample.series_id == sid, Sample.observed_at >= min(ats),
            Sample.observed_at <= max(ats)))
        for at, value in rows:
            if (sid, at) in wanted:
                found[(sid, at)] = value
    return found


def _snapshot_ids(
    conn: Connection, keys: list[tuple[str, datetime]]
) -> dict[tuple[str, datetime], int]:
    found: dict[tuple[str, datetime], int] = {}
    for i in range(0, len(keys), 500):
        chunk = keys[i : i + 500]
        rows = conn.execute(
            select(Snapshot.source, Snapshot.observed_at, Snapshot.id).where(
                tuple_(Snapshot.source, Snapshot.observed_at).in_(chunk)
            )
        )
        for source, at, sid in rows:
            found[(source, at)] = sid
    return found


def record_attempt(
    conn: Connection,
    *,
    source: str,
    started_at: datetime,
    finished_at: datetime | None = None,
    outcome: str,
    http_status: int | None = None,
    latency_ms: float | None = None,
    tries: int = 1,
    samples_stored: int = 0,
    error: str | None = None,
) -> None:
    """Append one row to the collection record (`error` must already be redacted)."""
    conn.execute(insert(CollectionAttempt), _attempt_row(
        source, started_at, finished_at or datetime.now(UTC), outcome, http_status,
        latency_ms, tries, samples_stored, error))


def _attempt_row(source: str, started_at: datetime, finished_at: datetime, outcome: str,
                 http_status: int | None, latency_ms: float | None, tries: int,
                 samples_stored: int, error: str | None) -> dict[str, object]:
    return {
        "source": source, "started_at": started_at, "finished_at": finished_at,
        "outcome": str(outcome), "http_status": http_status, "latency_ms": latency_ms,
        "tries": tries, "samples_stored": samples_stored, "error": error,
    }


# Key space of the poll-record locks (the poll gate's is etl.store.state.ADVISORY_NAMESPACE,
# held on another connection while a poll runs: sharing it would deadlock).
_RECORD_LOCK_NAMESPACE = 0x05E7_0002


def _already_recorded(conn: Connection, poll: PollRecord) -> bool:
    # A poll is keyed by (source, started_at, outcome): a crash between a spool replay's
    # commit and the file's deletion must not record it twice; nor may a daemon write that
    # gave up on a hung server (and spooled the poll) and then commits late beside the
    # replay. On PostgreSQL both take this transaction lock first, so one waits for the
    # other and then sees its row; SQLite serialises writers anyway.
    if conn.dialect.name == "postgresql":
        key = zlib.crc32(f"{poll.source}|{poll.started_at.isoformat()}".encode())
        conn.execute(text("SELECT pg_advisory_xact_lock(:ns, :key)"),
                     {"ns": _RECORD_LOCK_NAMESPACE, "key": key - (1 << 32) if key >= 1 << 31
                      else key})
    return conn.execute(
        select(CollectionAttempt.id).where(
            CollectionAttempt.source == poll.source,
            CollectionAttempt.started_at == poll.started_at,
            CollectionAttempt.outcome == str(poll.outcome),
        ).limit(1)
    ).first() is not None


def record_polls(
    engine: Engine, polls: Sequence[PollRecord], *, origin: Origin = Origin.COLLECT,
    once: bool = False,
) -> list[StoreResult | None]:
    """Store each poll's observation and its attempt row, all in ONE transaction.

    The one write path of a poll, for live collection, `collect` and spool replay: all or
    nothing, one `collection_attempts` row per poll, `samples_stored` filled in on each
    record. With `once` (spool replay, the daemon) a poll whose attempt is already stored
    is skipped and its entry is None. Raises SQLAlchemyError when the database refuses the transaction.
    """
    if not polls:
        return []
    results: list[StoreResult | None] = []
    rows: list[dict[str, object]] = []
    with engine.begin() as conn:
        for poll in polls:
            if once and _already_recorded(conn, poll):
                results.append(None)
                continue
            one: StoreResult | None = StoreResult()
            if poll.observation is not None:
                obs = poll.observation
                if obs.origin != origin:
                    obs = obs._replace(origin=str(origin))
                one = store_observations(conn, [obs])
            if poll.pages:
                one = _store_range(conn, poll, origin)
            elif poll.observation is None and poll.samples_stored:
                # A history poll stored its ranges itself (etl.runtime.history).
                one = StoreResult(samples=poll.samples_stored)
            results.append(one)
            rows.append(_attempt_row(poll.source, poll.started_at, poll.finished_at,
                                     poll.outcome, poll.http_status, poll.latency_ms,
                                     poll.tries, one.samples if one else 0, poll.error))
        if rows:
            conn.execute(insert(CollectionAttempt), rows)
    for poll, one in zip(polls, results, strict=True):
        if one is not None:
            poll.samples_stored = one.samples
            _log_conflicts(one)
    return results


def _store_range(conn: Connection, poll: PollRecord, origin: Origin) -> StoreResult:
    """A history poll's range the database refused before (SPEC 10), as the poll stores one.

    Its pages with their windows (coverage), and `H` moved as the poll would have; the
    samples the poll stored before count too.
    """
    pages = [p if p.origin == origin else p._replace(origin=str(origin)) for p in poll.pages]
    stored = store_history(conn, pages)
    if poll.read_up_to is not None:
        advance_read_up_to(conn, poll.source, poll.read_up_to)
    stored.samples += poll.samples_stored
    return stored


def record_poll(engine: Engine, poll: PollRecord, *, origin: Origin = Origin.COLLECT,
                once: bool = False) -> StoreResult | None:
    """`record_polls` for one poll."""
    return record_polls(engine, [poll], origin=origin, once=once)[0]


def _log_conflicts(stored: StoreResult) -> None:
    for conflict in stored.conflicts:
        log.warning("%s: %s at %s: stored value %g kept, %g from the vendor not stored",
                    conflict.source, conflict.metric, conflict.observed_at.isoformat(),
                    conflict.stored, conflict.offered)


def record_polls_apart(engine: Engine, polls: Sequence[PollRecord]) -> list[PollRecord]:
    """record_polls for live polls, where one the database refuses never costs the others.

    The batch is tried whole, then (if the database refused its text or values) each poll
    alone.
    A poll refused alone is recorded as its attempt only, with outcome invalid_response and
    the database's reason, and without its observation. Returns the polls as recorded. An
    unavailable database (OperationalError, InterfaceError) still raises.
    """
    try:
        record_polls(engine, polls)
        return list(polls)
    except (OperationalError, InterfaceError):
        raise
    except Exception:  # noqa: BLE001 - find the poll(s) refused, store the rest
        if len(polls) == 1 and polls[0].observation is None and not polls[0].pages:
            raise
    recorded: list[PollRecord] = []
    for poll in polls:
        try:
            record_polls(engine, [poll])
        except (OperationalError, InterfaceError):
            raise
        except Exception as exc:  # noqa: BLE001 - this poll's observation was refused
            if poll.observation is None and not poll.pages:
                raise
            poll = replace(
                poll, outcome=Outcome.INVALID_RESPONSE, observation=None, pages=(),
                read_up_to=None, samples_stored=poll.samples_stored if poll.pages else 0,
                error=f"the database refused this response: {first_line(exc)}")
            log.warning("%s: %s", poll.source, poll.error, extra=POLL_OUTCOME)
            record_polls(engine, [poll])
        recorded.append(poll)
    return recorded
