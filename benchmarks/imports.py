"""Figure 1 (bulk import against the raw driver) and figure 5 (bytes per sample on SQLite)."""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from statistics import median
from typing import Any

from sqlalchemy import Engine

from benchmarks import storage_bench
from benchmarks.common import pg_database, pg_problem, sqlite_engine
from etl.config import Config, load_config
from etl.store.archive import import_archives
from etl.store.archive_line import parse_line
from etl.store.bulk import bulk_store
from etl.store.engine import make_engine, upgrade
from etl.store.rows import forget_series_cache, series_ids
from etl.timefmt import to_micros
from etl.vendors.types import Observation, SampleValue

KIND = {"ws": "wiresocket", "nx": "nected"}


def _ids(engine: Engine, config: Config) -> dict[tuple[str, str], int]:
    """Create every series up front (the raw scripts need the same integer keys)."""
    out: dict[tuple[str, str], int] = {}
    with engine.begin() as conn:
        for src in config.sources:
            wanted = [SampleValue(m, 0.0) for m in src.metrics]
            for metric, sid in series_ids(conn, src.name, src.kind, wanted).items():
                out[(src.name, metric)] = sid
    return out


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def plain_rows(path: Path, ids: dict[tuple[str, str], int], sqlite: bool
               ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """What a plain script does with the archive: json.loads each line, keep a key's first."""
    snaps: list[tuple[Any, ...]] = []
    samples: list[tuple[Any, ...]] = []
    seen: set[tuple[str, datetime]] = set()
    with path.open("rb") as fh:
        for line in fh:
            doc = json.loads(line)
            source, body = doc["source"], doc["body"]
            kind = KIND[source[:2]]
            at = _ts(body["timestamp"] if kind == "wiresocket" else doc["observed_at"])
            if (source, at) in seen:
                continue
            seen.add((source, at))
            k = len(snaps) + 1
            when = to_micros(at) if sqlite else at
            snaps.append((k, source, kind, when, None, "import", json.dumps(body)))
            if kind == "wiresocket":
                for metric in ("connections", "documents"):
                    m = body["usage"][metric]
                    samples.append((ids[(source, metric)], when, float(m["current"]),
                                    float(m["limit"]), m["status"]))
            else:
                samples.append((ids[(source, "invocations")], when,
                                float(body["data"]["invocations"]), None, None))
    return snaps, samples


def rows_from_observations(obs: list[Observation], ids: dict[tuple[str, str], int], sqlite: bool
                           ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The rows bulk_store writes for these observations, ready for the raw driver."""
    snaps: list[tuple[Any, ...]] = []
    samples: list[tuple[Any, ...]] = []
    seen: set[tuple[str, datetime]] = set()
    for o in obs:
        if (o.source, o.observed_at) in seen:
            continue
        seen.add((o.source, o.observed_at))
        k = len(snaps) + 1
        when = to_micros(o.observed_at) if sqlite else o.observed_at
        snaps.append((k, o.source, o.kind, when, None, o.origin, o.payload))
        for sv in o.samples:
            samples.append((ids[(o.source, sv.metric)], when, sv.value, sv.limit, sv.status))
    return snaps, samples


_SNAP_COLS = "id, source, kind, observed_at, received_at, origin, payload"
_SAMPLE_COLS = "series_id, observed_at, value, plan_limit, status"


def raw_sqlite(db: Path, snaps: list[tuple[Any, ...]], samples: list[tuple[Any, ...]]) -> None:
    """sqlite3 executemany in one transaction (same pragmas as the product's engine)."""
    con = sqlite3.connect(db)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    with con:
        con.executemany(f"INSERT INTO snapshots ({_SNAP_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
                        snaps)
        con.executemany(f"INSERT INTO samples ({_SAMPLE_COLS}) VALUES (?, ?, ?, ?, ?)",  # noqa: S608
                        samples)
    con.close()


def raw_pg(url: str, snaps: list[tuple[Any, ...]], samples: list[tuple[Any, ...]]) -> None:
    """psycopg 3 COPY into the tables, one transaction."""
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as con:
        with con.cursor() as cur:
            with cur.copy(f"COPY snapshots ({_SNAP_COLS}) FROM STDIN") as cp:
                for r in snaps:
                    cp.write_row(r)
            with cur.copy(f"COPY samples ({_SAMPLE_COLS}) FROM STDIN") as cp:
                for r in samples:
                    cp.write_row(r)


def _fresh(url_or_path: str | Path) -> Engine:
    """A migrated database at a SQLite path or a PostgreSQL URL."""
    if isinstance(url_or_path, Path):
        return sqlite_engine(url_or_path)
    engine = make_engine(url_or_path)
    upgrade(engine)
    return engine


def _quiet(_: str) -> None:
    pass


def timed_child(mode: str, target: str | Path, archive: Path, config_path: Path
                ) -> dict[str, float]:
    """One timed import in a fresh interpreter: the library call or the plain script.

    Both sides run the same way: the child sets up (imports, the config, for the script the
    series ids) untimed, then times the import alone, wall clock and its own CPU. Timed in
    the benchmark's own process, the library call ran after the compaction measurement and
    the other turns, in their heap, and was slower than the CLI start-up included.
    """
    import subprocess

    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.imports", mode, str(target), str(archive),
         str(config_path)], check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _child(mode: str, target: str, archive: Path, config_path: Path) -> dict[str, float]:
    """The timed part of `timed_child`, in the child: `lib` (import_archives) or `raw`."""
    config = load_config(str(config_path))
    sqlite = not target.startswith("postgresql")
    engine = make_engine(f"sqlite:///{target}" if sqlite else target)
    if mode == "raw":
        ids = _ids(engine, config)
        forget_series_cache(engine)
        engine.dispose()
    wall, cpu = time.perf_counter(), time.process_time()
    if mode == "lib":
        samples = import_archives(engine, config, [str(archive)], on_problem=_quiet).samples
    else:
        snaps, rows = plain_rows(archive, ids, sqlite)
        if sqlite:
            raw_sqlite(Path(target), snaps, rows)
        else:
            raw_pg(target, snaps, rows)
        samples = len(rows)
    out = {"seconds": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu,
           "samples": samples}
    engine.dispose()
    return out


def bench_engine(name: str, archive: Path, config_path: Path, workdir: Path,
                 make_target: Any, cli: bool, rounds: int = 1) -> dict[str, Any]:
    """All import figures on one engine. make_target(tag) gives a fresh URL or SQLite path.

    Product and baseline take turns, each run into a fresh database: round i times the
    library, the plain script, then the CLI (A, B, C, A, B, C, ...), so that load on a shared
    machine falls on all of them alike; each time is the median of its `rounds` runs. Each
    runs in a fresh process: the library call and the plain script are timed inside theirs
    (`timed_child`), the CLI as a whole process, its start-up included.
    """
    import subprocess

    config = load_config(str(config_path))
    sqlite = name == "sqlite"
    out: dict[str, Any] = {"rounds": rounds}
    lib_times: list[float] = []
    raw_times: list[float] = []
    cli_times: list[float] = []
    lib_cpu: list[float] = []
    raw_cpu: list[float] = []
    samples = 0
    for i in range(rounds):
        # The product: usage-etl import's library call (parse + bulk writer).
        target = make_target(f"lib{i}")
        _fresh(target).dispose()
        lib = timed_child("lib", target, archive, config_path)
        lib_times.append(lib["seconds"])
        lib_cpu.append(lib["cpu_s"])
        samples = int(lib["samples"])
        if i == 0:
            engine = make_engine(f"sqlite:///{target}" if sqlite else str(target))
            if sqlite:
                out["storage"] = storage(engine, Path(str(target)))
            # SPEC 13: before and after compaction, vacuumed
            out["compaction"] = storage_bench.run(engine, target, workdir / f"archive-{name}")
            forget_series_cache(engine)
            engine.dispose()

        # The baseline: a plain script with the raw driver, from the same archive.
        target = make_target(f"raw{i}")
        _fresh(target).dispose()
        raw = timed_child("raw", target, archive, config_path)
        raw_times.append(raw["seconds"])
        raw_cpu.append(raw["cpu_s"])
        assert raw["samples"] == samples, (raw["samples"], samples)

        if cli:  # the product again, as `usage-etl import` in a fresh process
            target = make_target(f"cli{i}")
            _fresh(target).dispose()
            url = f"sqlite:///{target}" if sqlite else str(target)
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "etl", "--config", str(config_path),
                            "--database-url", url, "import", str(archive)],
                           check=True, capture_output=True)
            cli_times.append(time.perf_counter() - t)
    # CPU of the importing process alone: all of the work on SQLite; on PostgreSQL the
    # server's share is left out (a diagnostic, not a goal).
    out["import_library_cpu_s"] = lib_cpu
    out["raw_script_cpu_s"] = raw_cpu
    out["import_library_cpu_ratio"] = median(raw_cpu) / median(lib_cpu)
    out["samples"] = samples
    out["import_library_times_s"] = lib_times
    out["raw_script_times_s"] = raw_times
    out["import_library_s"] = lib_s = median(lib_times)
    out["raw_script_s"] = raw_s = median(raw_times)
    out["import_library_ratio"] = raw_s / lib_s
    if cli:
        out["import_cli_times_s"] = cli_times
        out["import_cli_s"] = median(cli_times)
        out["import_cli_ratio"] = raw_s / out["import_cli_s"]

    # The write path alone: bulk_store of parsed observations vs the raw driver's rows.
    sources = {s.name: s for s in config.sources}
    with archive.open("rb") as fh:
        obs = [parse_line(line, sources) for line in fh]
    write_times, raw_write_times = [], []
    for i in range(rounds):
        target = make_target(f"wlib{i}")
        engine = _fresh(target)
        t = time.perf_counter()
        bulk_store(engine, obs)
        write_times.append(time.perf_counter() - t)
        forget_series_cache(engine)
        engine.dispose()
        target = make_target(f"wraw{i}")
        engine = _fresh(target)
        ids = _ids(engine, config)
        forget_series_cache(engine)
        engine.dispose()
        snaps, rows = rows_from_observations(obs, ids, sqlite)
        t = time.perf_counter()
        if sqlite:
            raw_sqlite(Path(str(target)), snaps, rows)
        else:
            raw_pg(str(target), snaps, rows)
        raw_write_times.append(time.perf_counter() - t)
        del snaps, rows
    del obs
    out["write_bulk_s"] = median(write_times)
    out["write_raw_s"] = median(raw_write_times)
    out["write_ratio"] = out["write_raw_s"] / out["write_bulk_s"]
    return out


def storage(engine: Engine, db: Path) -> dict[str, Any]:
    """Bytes per stored sample in the SQLite file, raw payloads included."""
    con = sqlite3.connect(db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    samples = con.execute("SELECT count(*) FROM samples").fetchone()[0]
    payload = con.execute("SELECT coalesce(sum(length(payload)), 0) FROM snapshots").fetchone()[0]
    con.close()
    size = db.stat().st_size
    return {"file_bytes": size, "samples": samples, "bytes_per_sample": size / max(samples, 1),
            "payload_bytes_per_sample": payload / max(samples, 1)}


def run(archive: Path, config_path: Path, workdir: Path, *, cli: bool = True,
        postgres: bool = True, rounds: int = 1, log: Any = print) -> dict[str, Any]:
    """Figure 1 on SQLite and (if reachable) PostgreSQL; figure 5 from the SQLite import."""
    results: dict[str, Any] = {}
    log("import: SQLite")

    def sqlite_target(tag: str) -> Path:
        path = workdir / f"import-{tag}.db"
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
        return path

    try:
        results["sqlite"] = bench_engine("sqlite", archive, config_path, workdir, sqlite_target,
                                         cli, rounds)
    finally:
        for leftover in workdir.glob("import-*.db*"):
            leftover.unlink(missing_ok=True)
    problem = pg_problem() if postgres else "skipped (--no-postgres)"
    if problem:
        log(f"import: PostgreSQL skipped: {problem}")
        results["postgresql"] = {"skipped": problem}
        return results
    log("import: PostgreSQL")
    with ExitStack() as stack:
        results["postgresql"] = bench_engine(
            "postgresql", archive, config_path, workdir,
            lambda tag: stack.enter_context(pg_database()), cli, rounds)
    return results


if __name__ == "__main__":  # timed_child's child: MODE TARGET ARCHIVE CONFIG
    print(json.dumps(_child(sys.argv[1], sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]))))
