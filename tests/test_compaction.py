"""Compaction (SPEC 13): old raw responses move to monthly archive files and nothing is lost."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, delete, select

from etl.cli import cli
from etl.config import load_config
from etl.runtime.scheduler import Scheduler
from etl.store.archive import import_archives
from etl.store.compact import CompactError, compact
from etl.store.models import RollupDay, Series, Snapshot
from etl.store.packs import samples_from
from etl.store.retire import retire
from tests.daemon import wait_for
from tests.factories import (
    GZIP_DAMAGE,
    REPO,
    at,
    billing_rules,
    damaged_gzip,
    fill_disk,
    history_page,
    migrated_engine,
    nected,
    reference_engine,
    reports_settings,
    seed_month,
    store,
    stored_history_config,
    write_config,
)

# seed_month's history is 8 responses; these 7 are older than the cut.
CUT = at("2026-06-01T12:00:00")
FILES = {"rules/2026-04.jsonl.gz": ["2026-04-30T23:00:00Z"],
         "rules/2026-05.jsonl.gz": ["2026-05-02T12:00:00Z", "2026-05-15T12:00:00Z",
                                    "2026-05-31T22:30:00Z"],
         "rules/2026-06.jsonl.gz": ["2026-06-01T01:00:00Z"],
         "ws-prod/2026-05.jsonl.gz": ["2026-05-10T08:00:00Z", "2026-05-20T08:00:00Z"]}


def all_samples(engine: Engine) -> list[tuple[str, str, str, float, float | None, str | None]]:
    with engine.connect() as conn:
        x = samples_from(conn).c  # rows and, on PostgreSQL, packed days
        return sorted(
            (s, m, t.isoformat(), v, lim, st) for s, m, t, v, lim, st in conn.execute(
                select(Series.source, Series.metric, x.observed_at, x.value, x.plan_limit,
                       x.status).join(Series, Series.id == x.series_id)))


def snapshot_times(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return sorted(f"{s} {t.isoformat()}" for s, t in conn.execute(
            select(Snapshot.source, Snapshot.observed_at)))


def archive_contents(folder: Path) -> dict[str, list[str]]:
    """Each archive file (relative name) -> its lines' observed_at, in file order."""
    found = {}
    for path in sorted(folder.glob("*/*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            found[path.relative_to(folder).as_posix()] = [json.loads(line)["observed_at"]
                                                          for line in fh]
    return found


def test_old_raw_responses_move_to_monthly_files_and_samples_stay(engine: Engine,
                                                                  tmp_path: Path) -> None:
    seed_month(engine)
    before = all_samples(engine)
    folder = tmp_path / "archive"
    result = compact(engine, folder, CUT)
    assert result.moved == 7
    assert archive_contents(folder) == FILES
    assert snapshot_times(engine) == ["ws-prod 2026-06-02T08:00:00+00:00"]
    assert all_samples(engine) == before
    assert not list(folder.rglob("*.tmp"))
    # Nothing left to move: a second run changes nothing.
    assert compact(engine, folder, CUT).moved == 0
    assert archive_contents(folder) == FILES


def test_archive_files_and_the_rest_reimport_as_the_same_history(engine: Engine,
                                                                 tmp_path: Path) -> None:
    seed_month(engine)
    folder = tmp_path / "archive"
    compact(engine, folder, CUT)
    cfg = stored_history_config(engine, tmp_path / "c.toml")
    config = load_config(str(cfg))
    rest = tmp_path / "rest.jsonl"
    runner = CliRunner()
    out = runner.invoke(cli, ["--config", str(cfg), "export", "--start", "2026-04-01", "--end", "2026-06-30", "--out", str(rest)])
    assert out.exit_code == 0, out.output
    with reference_engine(engine, tmp_path) as ref:
        files = [str(p) for p in sorted(folder.glob("*/*.jsonl.gz"))] + [str(rest)]
        assert import_archives(ref, config, files).ok
        assert all_samples(ref) == all_samples(engine)


def test_export_jsonl_names_the_archive_files_holding_the_rest(sqlite_url: str,
                                                               tmp_path: Path) -> None:
    folder = tmp_path / "archive"
    cfg = write_config(tmp_path / "c.toml", reports_settings(database_url=sqlite_url),
                       f'\n[retention]\nraw_days = 0\narchive_dir = "{folder}"\n')
    from etl.store.engine import open_database
    engine = open_database(sqlite_url)
    seed_month(engine)
    runner = CliRunner()
    done = runner.invoke(cli, ["--config", str(cfg), "compact"])
    assert done.exit_code == 0, done.output
    assert "8 raw responses moved to 5 archive files" in done.output
    out = runner.invoke(cli, ["--config", str(cfg), "export", "--start", "2026-05-01",
                              "--end", "2026-05-31"])
    assert out.exit_code == 0
    assert out.stdout == ""
    named = [line for line in out.stderr.splitlines() if "archive" in line]
    assert named == [
        "raw responses moved out of the database by compaction are in: "
        f"{folder}/rules/2026-05.jsonl.gz {folder}/ws-prod/2026-05.jsonl.gz"]
    engine.dispose()


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_export_never_replaces_an_existing_file_such_as_an_archive_file(
        sqlite_url: str, tmp_path: Path, fmt: str) -> None:
    folder = tmp_path / "archive"
    cfg = write_config(tmp_path / "c.toml", reports_settings(database_url=sqlite_url),
                       f'\n[retention]\nraw_days = 0\narchive_dir = "{folder}"\n')
    from etl.store.engine import open_database
    engine = open_database(sqlite_url)
    seed_month(engine)
    engine.dispose()
    runner = CliRunner()
    assert runner.invoke(cli, ["--config", str(cfg), "compact"]).exit_code == 0
    # The only copy of May's raw responses now: an export pointed at it must not replace it.
    archive = folder / "rules" / "2026-05.jsonl.gz"
    kept = archive.read_bytes()
    done = runner.invoke(cli, ["--config", str(cfg), "export", "--start", "2026-06-01",
                               "--end", "2026-06-30", "--format", fmt, "--out", str(archive)])
    assert done.exit_code == 2
    assert done.stderr.splitlines() == [
        f"usage-etl: error: --out {archive}: exists; export writes a new file "
        "(remove it first or choose another name)"]
    assert archive.read_bytes() == kept
    assert not archive.with_name(archive.name + ".part").exists()


# The steps of one batch, in order, as compact() reports them to its checkpoint.
STEPS = ("written", "checked", "renamed", "deleted")
KILLER = """
import os, signal, sys
from pathlib import Path
from etl.store.engine import make_engine
from etl.store.compact import compact
from tests.factories import at
calls = 0
def checkpoint(step):
    global calls
    calls += 1
    if calls == int(sys.argv[3]):
        os.kill(os.getpid(), signal.SIGKILL)
compact(make_engine(sys.argv[1]), Path(sys.argv[2]), at("2026-06-01T12:00:00"),
        batch_rows=2, checkpoint=checkpoint)
"""


@pytest.mark.parametrize("step", STEPS)
def test_compaction_killed_at_any_step_loses_nothing_and_a_rerun_completes(
        engine: Engine, tmp_path: Path, step: str) -> None:
    seed_month(engine)
    before = all_samples(engine)
    folder = tmp_path / "archive"
    url = engine.url.render_as_string(hide_password=False)
    # Batches of 2, source by source: rules April (1), rules May (2), then the third May
    # line of rules merged into the file already there: killed in that third batch.
    nth = 2 * len(STEPS) + STEPS.index(step) + 1
    killed = subprocess.run([sys.executable, "-c", KILLER, url, str(folder), str(nth)],
                            cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert killed.returncode == -9, killed.stderr
    moved = archive_contents(folder)
    # Every response is in the database or in its file (or both, until the rerun).
    kept = snapshot_times(engine)
    for name, times in FILES.items():
        source = name.split("/")[0]
        for t in times:
            assert t in moved.get(name, []) or f"{source} {t[:-1]}+00:00" in kept
    assert all_samples(engine) == before
    compact(engine, folder, CUT, batch_rows=2)
    assert archive_contents(folder) == FILES
    assert snapshot_times(engine) == ["ws-prod 2026-06-02T08:00:00+00:00"]
    assert not list(folder.rglob("*.tmp"))


def test_a_full_disk_removes_nothing_and_names_the_file(
        engine: Engine, small_disk: Callable[[int], Path]) -> None:
    seed_month(engine)
    folder = small_disk(256 * 1024)
    fill_disk(folder)
    with pytest.raises(CompactError) as caught:
        compact(engine, folder, CUT)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(
        f"cannot write archive file {folder}/rules/2026-04.jsonl.gz: the disk is full")
    assert len(snapshot_times(engine)) == 8
    (folder / "filler").unlink()
    assert compact(engine, folder, CUT).moved == 7
    assert archive_contents(folder) == FILES


def test_a_read_only_folder_removes_nothing_and_says_so(
        engine: Engine, tmp_path: Path, read_only_folder: Callable[[Path], Path]) -> None:
    seed_month(engine)
    inner = tmp_path / "inner"
    (inner / "rules").mkdir(parents=True)
    folder = read_only_folder(inner)
    with pytest.raises(CompactError, match="read-only file system"):
        compact(engine, folder, CUT)
    assert len(snapshot_times(engine)) == 8


@pytest.mark.parametrize("damage", GZIP_DAMAGE)
def test_a_damaged_archive_file_removes_nothing_and_names_it(
        engine: Engine, tmp_path: Path, damage: str) -> None:
    # The month's file is merged with what leaves the database: a damaged one (a zlib error
    # included, which ended `compact` in a traceback) stops the pass with one line.
    seed_month(engine)
    folder = tmp_path / "archive"
    month = folder / "rules" / "2026-05.jsonl.gz"
    month.parent.mkdir(parents=True)
    line = '{"source": "rules", "observed_at": "2026-05-01T00:00:00Z", "body": {}}\n'
    month.write_bytes(damaged_gzip(line.encode() * 2000, damage))
    with pytest.raises(CompactError) as caught:
        compact(engine, folder, CUT)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{month}: not a readable archive file (")
    assert message.endswith("nothing was removed from the database")
    assert len(snapshot_times(engine)) == 8 - 1  # the April file was written before it


def test_batches_bound_what_one_pass_holds(engine: Engine, tmp_path: Path) -> None:
    seed_month(engine)
    seen: list[int] = []
    compact(engine, tmp_path / "a", CUT, batch_rows=2, progress=seen.append)
    assert seen == [1, 3, 4, 5, 7]  # rules: April, May 2 + 1, June; ws-prod: May 2


def test_compact_without_raw_days_does_nothing(sqlite_url: str, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.toml", reports_settings(database_url=sqlite_url))
    done = CliRunner().invoke(cli, ["--config", str(cfg), "compact"])
    assert done.exit_code == 0
    assert "raw_days is not set" in done.stderr


@pytest.mark.parametrize(("extra", "problem"), [
    ("raw_days = -1", "retention.raw_days: must be a whole number of days"),
    ("raw_days = 3\nsamples_days = 2", "retention.samples_days: must be at least raw_days"),
    ("samples_days = 40", "retention.samples_days: needs raw_days set too"),
    ("keep = 3", "retention.keep: unknown key"),
    # A refused raw_days is its one problem, not also "samples_days: needs raw_days set too".
    ('raw_days = "7"\nsamples_days = 40', "retention.raw_days: must be a whole number of days"),
    ("raw_days = 1.5\nsamples_days = 40", "retention.raw_days: must be a whole number of days"),
])
def test_bad_retention_keys_are_config_errors(sqlite_url: str, tmp_path: Path, extra: str,
                                              problem: str) -> None:
    cfg = write_config(tmp_path / "c.toml", reports_settings(database_url=sqlite_url),
                       f"\n[retention]\n{extra}\n")
    done = CliRunner().invoke(cli, ["--config", str(cfg), "compact"])
    assert done.exit_code == 2
    (line,) = done.output.strip().splitlines()
    assert problem in line
    assert not os.path.exists(sqlite_url.removeprefix("sqlite:///"))


def test_the_daemon_compacts_soon_after_start(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'u.db'}"
    folder = tmp_path / "archive"
    cfg = write_config(tmp_path / "c.toml", reports_settings(
        database_url=url, spool_dir=str(tmp_path / "spool"),
        reports_dir=str(tmp_path / "reports")),
        f'\n[retention]\nraw_days = 30\narchive_dir = "{folder}"\n')
    with migrated_engine(url) as engine:
        seed_month(engine)
        # Nights are owed from this clock's day: reports of 2026-06-10 only, none of May.
        sched = Scheduler(load_config(str(cfg)), engine, sources=[],
                          clock=lambda: at("2026-07-11T00:00:00"), retention_first_s=0.2)
        sched.start()
        try:
            wait_for("the first retention pass", lambda: not snapshot_times(engine))
        finally:
            assert sched.stop()
        assert sorted(archive_contents(folder)) == sorted(
            [*FILES, "ws-prod/2026-06.jsonl.gz"])


def report_files(cfg: Path, out: Path) -> dict[str, str]:
    """The CSV files of May's billing report and of two of its days, by name."""
    runner = CliRunner()
    for args in (["billing", "--month", "2026-05"],
                 ["daily", "--start", "2026-05-01", "--end", "2026-05-02"]):
        done = runner.invoke(cli, ["--config", str(cfg), "report", *args, "--format", "csv",
                                   "--out", str(out)])
        assert done.exit_code == 0, done.output
    return {p.name: p.read_text() for p in sorted(out.iterdir())}


def test_reports_of_a_compacted_month_are_unchanged(engine: Engine, tmp_path: Path) -> None:
    seed_month(engine)
    url = engine.url.render_as_string(hide_password=False)
    cfg = write_config(tmp_path / "c.toml", reports_settings(
        database_url=url, billing=billing_rules()))
    before = report_files(cfg, tmp_path / "before")
    assert compact(engine, tmp_path / "archive", CUT).moved == 7
    with engine.begin() as conn:  # built anew from the samples, not from cached rollups
        conn.execute(delete(RollupDay))
    after = report_files(cfg, tmp_path / "after")
    assert after == before
    assert "invocations" in after["billing-2026-05.csv"]


# --- retirement (samples_days) -----------------------------------------------------------------

JUNE = at("2026-06-01T00:00:00")


def billing_csv(cfg: Path, month: str, out: Path) -> tuple[int, str]:
    """(exit status, output) of `report billing --month` as CSV into `out`."""
    done = CliRunner().invoke(cli, ["--config", str(cfg), "report", "billing", "--month", month,
                                    "--format", "csv", "--out", str(out)])
    return done.exit_code, done.output


def test_retired_samples_leave_reports_of_later_periods_unchanged(engine: Engine,
                                                                   tmp_path: Path) -> None:
    seed_month(engine)
    folder = tmp_path / "archive"
    url = engine.url.render_as_string(hide_password=False)
    cfg = write_config(tmp_path / "c.toml",
                       reports_settings(database_url=url, billing=billing_rules()),
                       f'\n[retention]\nraw_days = 0\narchive_dir = "{folder}"\n')
    assert billing_csv(cfg, "2026-06", tmp_path / "before")[0] == 0
    before = (tmp_path / "before" / "billing-2026-06.csv").read_text()
    original = all_samples(engine)
    compact(engine, folder, CUT)
    done = retire(engine, folder, at("2026-06-01T07:00:00"))  # retires whole UTC days
    # rules keeps May 31 (its June increase needs it): April 30, May 2 and May 15 go.
    # ws-prod keeps May 20, its last sample before June: May 10 goes, for both metrics.
    assert (done.samples, done.series) == (5, 3)
    assert [s for s in original if s not in all_samples(engine)] == [
        ("rules", "invocations", "2026-04-30T23:00:00+00:00", 1000.0, None, None),
        ("rules", "invocations", "2026-05-02T12:00:00+00:00", 1050.0, None, None),
        ("rules", "invocations", "2026-05-15T12:00:00+00:00", 25.0, None, None),
        ("ws-prod", "connections", "2026-05-10T08:00:00+00:00", 90.0, 100.0, None),
        ("ws-prod", "documents", "2026-05-10T08:00:00+00:00", 1.0, 20.0, None),
    ]
    with engine.begin() as conn:
        conn.execute(delete(RollupDay))
    assert billing_csv(cfg, "2026-06", tmp_path / "after")[0] == 0
    # June's increase is 80 - 55 = 25 with or without the retired May.
    assert (tmp_path / "after" / "billing-2026-06.csv").read_text() == before
    # The retired month says so in one line and writes no file of zeros.
    status, output = billing_csv(cfg, "2026-05", tmp_path / "may")
    assert status == 1
    assert output.strip().splitlines() == [
        "usage-etl: error: the history before 2026-06-01T00:00:00Z was retired ([retention] "
        f"samples_days); its raw responses are in the archive files under {folder}: import "
        "them into another database to report on that period"]
    assert not (tmp_path / "may").exists() or not list((tmp_path / "may").iterdir())
    # The archive files still re-derive the whole history.
    config = load_config(str(cfg))
    with reference_engine(engine, tmp_path) as ref:
        files = [str(p) for p in sorted(folder.glob("*/*.jsonl.gz"))]
        rest = tmp_path / "rest.jsonl"
        CliRunner().invoke(cli, ["--config", str(cfg), "export", "--start", "2026-06-02",
                                 "--end", "2026-06-02", "--out", str(rest)])
        assert import_archives(ref, config, [*files, str(rest)]).ok
        assert all_samples(ref) == original


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_an_export_reaching_retired_history_says_what_it_leaves_out(
        engine: Engine, tmp_path: Path, fmt: str) -> None:
    # Reports refuse a retired period; a CSV or Parquet export of it wrote fewer rows without
    # a word (the JSONL export names the archive files, test above).
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    seed_month(engine)
    folder = tmp_path / "archive"
    url = engine.url.render_as_string(hide_password=False)
    cfg = write_config(tmp_path / "c.toml", reports_settings(database_url=url),
                       f'\n[retention]\nraw_days = 0\narchive_dir = "{folder}"\n')
    compact(engine, folder, CUT)
    retire(engine, folder, at("2026-06-01T07:00:00"))
    note = ("samples of rules before 2026-06-01T00:00:00Z, ws-prod before "
            "2026-06-01T00:00:00Z were retired ([retention] samples_days) and are not in this "
            f"export; their raw responses are in the archive files under {folder}: import "
            "them into another database to export that period")
    for start, said in (("2026-05-01", [note]), ("2026-06-01", [])):
        out = tmp_path / f"{fmt}-{start}"
        done = CliRunner().invoke(cli, ["--config", str(cfg), "export", "--start", start,
                                        "--end", "2026-06-30", "--format", fmt,
                                        "--out", str(out)])
        assert done.exit_code == 0, done.output
        assert [line for line in done.stderr.splitlines()
                if not line.startswith("exported ")] == said


def test_importing_retired_history_again_stores_none_of_it_and_says_so_per_source(
        engine: Engine, tmp_path: Path) -> None:
    seed_month(engine)
    cfg = stored_history_config(engine, tmp_path / "c.toml", billed=True)
    folder = tmp_path / "archive"
    compact(engine, folder, CUT)
    retire(engine, folder, at("2026-06-01T07:00:00"))
    kept = all_samples(engine)
    files = [str(p) for p in sorted(folder.glob("*/*.jsonl.gz"))]
    done = CliRunner().invoke(cli, ["--config", str(cfg), "import", *files])
    # The files are the archive retirement relied on: importing them into the same database
    # brings nothing back (reports would still call the period retired, and retirement,
    # past that instant, would never remove it again). The June line's sample is a duplicate;
    # its raw response comes back (compaction archives it again as it did before).
    assert done.exit_code == 0, done.output
    assert all_samples(engine) == kept
    assert done.output.strip().splitlines() == [
        "rules: 4 samples before 2026-06-01T00:00:00Z not stored: that history was retired "
        "([retention] samples_days); import the archive files into another database to "
        "report on it",
        "ws-prod: 4 samples before 2026-06-01T00:00:00Z not stored: that history was "
        "retired ([retention] samples_days); import the archive files into another database "
        "to report on it",
        "7 lines: 1 new snapshots, 0 new samples, 1 duplicate samples, 0 bad lines, "
        "0 conflicts, 8 samples in retired history not stored"]
    assert billing_csv(cfg, "2026-05", tmp_path / "may")[0] == 1
    assert retire(engine, folder, at("2026-06-01T07:00:00")).samples == 0


def test_a_poll_or_history_page_inside_retired_history_stores_only_what_is_after_it(
        engine: Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    hour = timedelta(hours=1)
    may3, june2 = at("2026-05-03T00:00:00"), at("2026-06-02T00:00:00")
    store(engine, [history_page(may3 + hour, (may3, may3 + hour), [(may3, may3 + hour, {"m": 3})]),
                   nected(at("2026-05-02T12:00:00"), 1_050), nected(at("2026-05-03T12:00:00"), 1_060)])
    compact(engine, tmp_path, JUNE)
    retire(engine, tmp_path, JUNE)
    kept = all_samples(engine)
    # A backfill's page covering a retired bucket and a new one; a late snapshot (a spool,
    # say) observed before the cut: only what is after the cut is stored, each source warned.
    store(engine, [history_page(june2 + hour, (may3, june2 + hour),
                                [(may3, may3 + hour, {"m": 4}), (june2, june2 + hour, {"m": 5})]),
                   nected(at("2026-05-20T12:00:00"), 1_100)])
    assert [s for s in all_samples(engine) if s not in kept] == [
        ("openai", "tokens:m", "2026-06-02T00:00:00+00:00", 5.0, None, None)]
    assert sorted(r.getMessage().split(":")[0] for r in caplog.records
                  if "not stored: that history was retired" in r.getMessage()) == ["openai", "rules"]


def test_samples_whose_raw_responses_are_not_archived_stay(engine: Engine,
                                                           tmp_path: Path) -> None:
    seed_month(engine)
    original = all_samples(engine)
    folder = tmp_path / "archive"
    # Nothing compacted: every raw response is still in the database.
    assert retire(engine, folder, JUNE).samples == 0
    compact(engine, folder, CUT)
    (folder / "rules" / "2026-05.jsonl.gz").unlink()  # May of rules is archived nowhere
    done = retire(engine, folder, JUNE)
    # rules stops at May (kept from there; April 30 is its last sample before): none goes.
    # ws-prod's May is archived: May 10 goes for both metrics, May 20 stays.
    assert (done.samples, done.series) == (2, 3)
    assert [s for s in original if s not in all_samples(engine)] == [
        ("ws-prod", "connections", "2026-05-10T08:00:00+00:00", 90.0, 100.0, None),
        ("ws-prod", "documents", "2026-05-10T08:00:00+00:00", 1.0, 20.0, None),
    ]


def test_a_history_page_keeps_its_window_in_the_archive_file(engine: Engine,
                                                              tmp_path: Path) -> None:
    t0 = at("2026-05-03T00:00:00")
    hour = timedelta(hours=1)
    store(engine, [history_page(t0 + hour, (t0, t0 + hour), [(t0, t0 + hour, {"gpt-4o": 3})])])
    compact(engine, tmp_path, CUT)
    with gzip.open(tmp_path / "openai" / "2026-05.jsonl.gz", "rt", encoding="utf-8") as fh:
        line = json.loads(fh.read())
    assert line["observed_at"] == "2026-05-03T01:00:00Z"
    assert line["window"] == {"start": "2026-05-03T00:00:00Z", "end": "2026-05-03T01:00:00Z"}
