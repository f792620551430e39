"""`usage-etl collect | import | export | simulate | demo`: getting snapshots in and out."""

from __future__ import annotations

import signal
import sys
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import click

from etl.cli.context import AppContext, Day
from etl.errors import InputError
from etl.files import atomic_writer, os_error_text

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from etl.config import Config
    from etl.runtime.history_sim import HistorySimulator


@click.command("collect")
@click.option("--source", "names", multiple=True, metavar="NAME",
              help="Poll only this source (repeatable); default: every source.")
@click.option("--force", is_flag=True,
              help="Poll sources the daemon paused too (after a 429 or an auth failure).")
@click.pass_obj
def collect(app: AppContext, names: tuple[str, ...], force: bool) -> None:
    """Poll each (named) source once now and store what came back.

    Prints one line per source (outcome, samples stored, latency). A source the daemon
    paused (the vendor asked to wait, or refused the credential) is not polled unless
    --force is given: its line says until when, and it counts as not polled. Requests per
    credential are paced across every usage-etl process of this host.

    A poll the database cannot take (SQLite locked past its busy timeout, a server gone)
    is kept in the spool folder and its line says so; the next collect (or a running
    schedule) stores it.

    Exit status 0 when every source was polled and stored, 1 when any failed, was skipped
    or could only be spooled, 2 for a bad config or a missing secret.

    \b
    Example:
      usage-etl collect
      usage-etl collect --source ws-prod --source rules
      usage-etl collect --force --source ws-prod    # check a fixed credential now
    """
    from etl.collect.poll import outcomes_in_summary
    from etl.runtime.collect_run import Kept, collect_once
    from etl.vendors.types import Outcome

    config = app.config
    sources = config.select_sources(list(names))
    config.check_secrets(sources)
    kept = Kept()
    # Each poll's outcome is printed once, in its line below, not also as a log line.
    with outcomes_in_summary():
        results = collect_once(app.engine, config, names, force=force, kept=kept)
    if kept.replayed is not None and kept.replayed.replayed:
        click.echo(f"stored {kept.replayed.replayed} poll(s) an earlier collect had spooled",
                   err=True)
    width = max(len(r.source) for r in results)
    for r in results:
        latency = f"{r.latency_ms:.0f} ms" if r.latency_ms is not None else "-"
        line = (f"{r.source:<{width}}  {r.outcome:<16}  {r.samples_stored} samples  {latency}"
                f"  {r.tries} tries")
        if r.error:
            line += f"  {r.error}"
        if r.outcome == Outcome.SKIPPED:
            line += " (--force polls it anyway)"
        if r.source in kept.spooled:
            line += (f"  NOT STORED: the database refused it ({kept.database_error}); kept in "
                     f"{kept.spooled[r.source]}, stored by the next collect or schedule")
        elif r.source in kept.lost:
            line += (f"  LOST: the database refused it ({kept.database_error}) and the spool "
                     f"too ({kept.lost[r.source]})")
        click.echo(line)
    if any(not r.ok for r in results) or kept.spooled or kept.lost:
        sys.exit(1)


@click.command("simulate")
@click.option("--port", type=int, default=8081, show_default=True, help="Loopback port to listen on.")
@click.option("--token", default="sim-token", show_default=True,
              help="The token the simulated APIs that take a token accept.")
@click.option("--api-key", default="sim-key", show_default=True,
              help="The API key the simulated APIs that take an API key accept.")
@click.option("--seed", type=int, default=0, show_default=True, help="Traffic model seed.")
@click.option("--fault", type=click.Choice(["none", "rate_limit", "unavailable", "server_error",
                                            "unauthorized", "malformed", "slow", "oversize",
                                            "error_code", "unlimited", "trickle"]),
              default="none", show_default=True, help="Answer every request with this fault.")
@click.option("--retry-after", type=click.IntRange(min=0), default=1, show_default=True,
              metavar="SECONDS",
              help="Retry-After sent with the rate_limit (429) and unavailable (503) faults; "
              "0 sends none.")
@click.option("--delay", type=click.FloatRange(min=0), default=2.0, show_default=True,
              metavar="SECONDS", help="How long the slow fault waits before answering, and the trickle fault "
              "between two bytes of the body.")
@click.option("--echo-credential", is_flag=True,
              help="Quote the request's credential in every error body (401, 429, 500, 503), "
              "like a careless vendor: for checking that no output shows it.")
@click.option("--history-port", type=int, default=None, metavar="PORT",
              help="Also serve the usage history APIs of the docs/vendors catalog (OpenAI, "
              "Anthropic, Twilio, GitHub, Datadog, Stripe) on this port.")
def simulate(port: int, token: str, api_key: str, seed: int, fault: str, retry_after: int,
             delay: float, echo_credential: bool, history_port: int | None) -> None:
    """Run the simulated vendors on 127.0.0.1 until Ctrl-C.

    Every built-in kind's usage API, plus a per-project vendor that only an http_json
    source reads; it prints each one's URL (point a source's base_url or url there).

    \b
    Example:
      usage-etl simulate --port 8081 --token my-token --api-key my-key
      usage-etl simulate --fault unavailable --retry-after 30
      usage-etl simulate --fault slow --delay 15 --echo-credential
    """
    from etl.runtime.simulator import SimulatedVendor

    sim = SimulatedVendor(port=port, tokens=(token,), api_keys=(api_key,), seed=seed,
                          echo_credential=echo_credential)
    stop = threading.Event()
    # Our own handlers, not Python's: a process started in the background by a
    # non-interactive shell (`usage-etl simulate &` in a script, CI) inherits SIGINT
    # ignored, and Python then never raises KeyboardInterrupt, so Ctrl-C or `kill -INT`
    # would never stop it. Installed before the server answers: a client that stops it as
    # soon as it got an answer (a script, a test) stops it cleanly too, not with exit 130.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        sim.start()
    except OSError as exc:
        raise InputError(f"--port {port}: cannot listen: {exc.strerror}") from None
    if fault != "none":
        sim.set_fault(fault, retry_after=str(retry_after) if retry_after > 0 else None,
                      delay=delay)
    click.echo(f"simulated vendor listening on {sim.base_url}")
    for vendor, api in sim.apis.items():
        click.echo(f"  {vendor}: {sim.base_url}{api.path}   (takes the {api.credential_list[:-1]})")
    history = _start_history(history_port) if history_port is not None else None
    click.echo("press Ctrl-C to stop")
    try:
        while not stop.wait(1):
            pass
        click.echo("stopped")
    finally:
        sim.stop()
        if history is not None:
            history.__exit__()


def _start_history(port: int) -> HistorySimulator:
    """The history simulator on `port`, its APIs and credentials printed (SPEC 10)."""
    from etl.runtime.history_sim import CREDENTIALS, SHAPES, HistorySimulator

    try:
        history = HistorySimulator(port=port).__enter__()
    except OSError as exc:
        raise InputError(f"--history-port {port}: cannot listen: {exc.strerror}") from None
    click.echo(f"usage history APIs listening on {history.url}")
    for shape in SHAPES.values():
        click.echo(f"  {shape.name}: {history.url}{shape.path}   "
                   f"({shape.auth}: {CREDENTIALS[shape.auth]})")
    return history


COMMANDS: list[click.Command] = [collect, simulate]


@click.command("import")
@click.argument("files", nargs=-1, required=True, metavar="FILE...")
@click.pass_obj
def import_cmd(app: AppContext, files: tuple[str, ...]) -> None:
    """Load raw vendor responses from JSONL archives; `-` reads standard input.

    Each line goes through the same parse as a live poll. A bad line is reported as
    `FILE:LINE: reason` on stderr and skipped; the good lines are kept. Importing the
    same archive again changes nothing. Exit status 1 if any line was bad or conflicted.
    Gzip-compressed archives are recognised by their content and read as they are.

    \b
    Example:
      usage-etl import history-2026-10.jsonl history-2026-11.jsonl
      usage-etl import old.jsonl.gz
    """
    from etl.store.archive import import_archives

    config = app.config
    engine = app.engine
    problem = lambda message: click.echo(message, err=True)  # noqa: E731
    if sys.stderr.isatty():
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

        sizes = [Path(f).stat().st_size for f in files if f != "-" and Path(f).is_file()]
        total = sum(sizes) if len(sizes) == len(files) else None
        with Progress("[progress.description]{task.description}", BarColumn(),
                      DownloadColumn(), TimeRemainingColumn(),
                      console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task("importing", total=total)
            base = 0
            last = 0

            def advance(consumed: int) -> None:
                nonlocal base, last
                if consumed < last:  # a new file started
                    base += last
                last = consumed
                bar.update(task, completed=base + consumed)

            result = import_archives(engine, config, files, on_problem=problem,
                                     on_progress=advance, stdin=sys.stdin.buffer)
    else:
        result = import_archives(engine, config, files, on_problem=problem,
                                 stdin=sys.stdin.buffer)
    click.echo(result.summary())
    if not result.ok:
        sys.exit(1)


@click.command("export")
@click.option("--start", required=True, type=Day(), metavar="DATE",
              help="First day (YYYY-MM-DD, config timezone).")
@click.option("--end", required=True, type=Day(), metavar="DATE",
              help="Last day, included (YYYY-MM-DD, config timezone).")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv", "parquet"]),
              default="jsonl", show_default=True,
              help="jsonl: raw archive (round-trips through import); csv: one row per sample; "
              "parquet: a dataset folder partitioned source=/month= (needs --out).")
@click.option("--out", type=click.Path(), default=None,
              help="Output file, or folder for parquet (default: standard output).")
@click.pass_obj
def export_cmd(app: AppContext, start: datetime, end: datetime, fmt: str, out: str | None) -> None:
    """Write stored history between two days back out.

    Days are local days of the config timezone, --start and --end both included.
    JSONL holds one raw vendor response per line and round-trips through `import`;
    CSV holds one row per sample: observed_at (UTC), source, metric, value, limit, status,
    and for history sources bucket_start, bucket_end, revisions.
    Parquet writes a dataset (SPEC 13) that DuckDB, Spark, Trino and pandas read.

    \b
    Example:
      usage-etl export --start 2026-11-01 --end 2026-11-30 --out nov.jsonl
      usage-etl export --start 2026-11-21 --end 2026-11-21 --format csv
      usage-etl export --start 2026-01-01 --end 2026-12-31 --format parquet --out lake/
    """
    from etl.store.export import ExportFormat, export_archive

    fmt_ = ExportFormat(fmt)  # click's choices are ExportFormat's values
    if fmt_ is ExportFormat.PARQUET:
        if out is None:
            raise InputError("--format parquet needs --out FOLDER (a dataset is many files)")
        from etl.store.parquet_export import export_parquet

        try:
            count = export_parquet(app.engine, app.config, start.date(), end.date(), Path(out))
        except OSError as exc:
            raise InputError(f"--out {out}: {os_error_text(exc)}") from None
        click.echo(f"exported {count} rows", err=True)
        _name_retired(app, start, end)
        return
    engine = app.engine
    if out is None:
        count = export_archive(engine, app.config, start.date(), end.date(),
                               sys.stdout, fmt_)
    else:
        if Path(out).exists():
            # An existing file may be the only copy of something (an archive file that
            # compaction wrote): export never replaces one.
            raise InputError(f"--out {out}: exists; export writes a new file "
                             "(remove it first or choose another name)")
        # Written aside and renamed, so an interrupted export never leaves half a file.
        try:
            with atomic_writer(Path(out), newline="", tmp_name=Path(out).name + ".part") as fh:
                count = export_archive(engine, app.config, start.date(), end.date(), fh, fmt_)
        except OSError as exc:
            raise InputError(f"--out {out}: {os_error_text(exc)}") from None
    click.echo(f"exported {count} {'lines' if fmt_ is ExportFormat.JSONL else 'rows'}", err=True)
    if fmt_ is ExportFormat.JSONL:
        _name_archives(app, start, end)
    else:
        _name_retired(app, start, end)


def _name_retired(app: AppContext, start: datetime, end: datetime) -> None:
    """One stderr line when samples of the range were retired, so fewer rows are not news."""
    from etl.runtime.retention import archive_dir
    from etl.store.export import export_range
    from etl.store.retire import retired_sources
    from etl.timefmt import utc_z

    lo, _ = export_range(app.config, start.date(), end.date())
    with app.engine.connect() as conn:
        cut = {s: at for s, at in retired_sources(conn).items() if lo is None or at > lo}
    if cut:
        which = ", ".join(f"{source} before {utc_z(at)}" for source, at in sorted(cut.items()))
        click.echo(f"samples of {which} "
                   "were retired ([retention] samples_days) and are not in this export; "
                   f"their raw responses are in the archive files under "
                   f"{archive_dir(app.config)}: import them into another database to export "
                   "that period", err=True)


def _name_archives(app: AppContext, start: datetime, end: datetime) -> None:
    """One stderr line naming the compacted archive files of the range, if any (SPEC 13)."""
    from etl.runtime.retention import archive_dir
    from etl.store.compact import archive_files
    from etl.store.export import export_range

    lo, hi = export_range(app.config, start.date(), end.date())
    found = archive_files(archive_dir(app.config), lo, hi)
    if found:
        click.echo("raw responses moved out of the database by compaction are in: "
                   + " ".join(str(p) for p in found), err=True)


def _demo_reports(engine: Engine, config: Config, out_dir: Path) -> list[Path]:
    """Yesterday's daily report, this month's billing report and its FOCUS file (config tz)."""
    from reports.jobs import build_billing, build_daily, build_focus

    today = datetime.now(config.tz).date()
    yesterday = today - timedelta(days=1)
    return (build_daily(engine, config, yesterday, yesterday, out_dir=out_dir)
            + build_billing(engine, config, today, out_dir=out_dir)
            + build_focus(engine, config, today, out_dir=out_dir))


def reports_available() -> bool:
    """True when the `reports` package (pandas and friends) can be imported."""
    try:
        import reports.pipelines  # noqa: F401
    except ImportError:
        return False
    return True


@click.command("demo")
@click.option("--dir", "directory", type=click.Path(file_okay=False), default="usage-etl-demo",
              show_default=True, help="Working folder for the database, config and reports.")
@click.option("--days", type=click.IntRange(1, 120), default=28, show_default=True,
              help="Days of history to seed.")
def demo(directory: str, days: int) -> None:
    """Run the whole pipeline offline: simulator, history, live polls, reports.

    In DIR: a fresh SQLite database (usage.db), a config (usage-etl.toml) whose secrets
    come from environment variables, a seeded history archive (history.jsonl) loaded
    through `import`, a few live polls of an in-process simulated vendor, and the
    reports (reports-out/). Prints where everything is. Needs no network.

    \b
    Example:
      usage-etl demo
      usage-etl demo --dir /tmp/try-usage-etl --days 14
    """
    from etl.runtime.demo import run_demo

    result = run_demo(Path(directory), days=days,
                      build_reports=_demo_reports if reports_available() else None,
                      echo=click.echo)
    if any(not p.ok for polls in result.polls for p in polls) or not result.imported.ok:
        sys.exit(1)


COMMANDS.extend([import_cmd, export_cmd, demo])
