"""Full and read-only disks (issue 12): every command that writes says so in one line, names
the disk's state, and leaves no partial file; the daemon starts spool-only."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from etl.runtime.simulator import SimulatedVendor
from tests.factories import REPO, fill_disk, usage_etl_in_process


def write_config(path: Path, url: str, extra: str = "") -> Path:
    path.write_text(
        f'database_url = "{url}"\n{extra}\n'
        '[[sources]]\nname = "rules"\nkind = "nected"\napi_key_env = "DISK_TEST_NK"\n'
        "interval_seconds = 5\n")
    return path


def usage_etl(config: Path, *args: str, env: dict[str, str] | None = None
              ) -> subprocess.CompletedProcess[str]:
    """`usage-etl --config CONFIG ARGS...`: `schedule` (the daemon) as a real process, every
    other command in this process (tests.factories.usage_etl_in_process)."""
    if args[0] != "schedule":
        return usage_etl_in_process("--config", str(config), *args)
    return subprocess.run([sys.executable, "-m", "etl", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=300, cwd=REPO, check=False,
                          env=env)


def nected_lines(n: int) -> str:
    return "".join(
        f'{{"source": "rules", "observed_at": "2026-{1 + i // 40000:02d}-{1 + i // 1440 % 28:02d}'
        f'T{i // 60 % 24:02d}:{i % 60:02d}:00Z", "body": {{"data": {{"invocations": {i}}}, '
        '"code": "success"}}\n' for i in range(n))


def seeded_database(tmp_path: Path) -> Path:
    cfg = write_config(tmp_path / "seed.toml", f"sqlite:///{tmp_path / 'usage.db'}")
    archive = tmp_path / "seed.jsonl"
    archive.write_text(nected_lines(100))
    assert usage_etl(cfg, "import", str(archive)).returncode == 0
    return cfg


def test_a_report_into_a_read_only_folder_is_one_line_and_writes_nothing(
    tmp_path: Path, read_only_folder: Callable[[Path], Path],
) -> None:
    cfg = seeded_database(tmp_path)
    (tmp_path / "empty").mkdir()
    out = read_only_folder(tmp_path / "empty")
    proc = usage_etl(cfg, "report", "daily", "--date", "2026-01-01", "--out", str(out))
    assert proc.returncode == 1
    assert proc.stderr == (f"usage-etl: error: {out}/daily-2026-01-01.csv: read-only file "
                           "system\n")
    assert list(out.iterdir()) == []


def test_a_report_into_a_full_folder_is_one_line_and_leaves_no_partial_file(
    tmp_path: Path, small_disk: Callable[[int], Path],
) -> None:
    cfg = seeded_database(tmp_path)
    out = small_disk(64 * 1024)
    fill_disk(out)
    proc = usage_etl(cfg, "report", "daily", "--date", "2026-01-01", "--out", str(out))
    assert proc.returncode == 1
    assert proc.stderr == (f"usage-etl: error: {out}/daily-2026-01-01.csv: the disk is full "
                           "(no space left on device)\n")
    assert sorted(p.name for p in out.iterdir()) == ["filler"]


def test_an_export_onto_a_full_disk_is_one_line_and_leaves_no_partial_file(
    tmp_path: Path, small_disk: Callable[[int], Path],
) -> None:
    cfg = seeded_database(tmp_path)
    out = small_disk(64 * 1024)
    fill_disk(out)
    target = out / "jan.jsonl"
    proc = usage_etl(cfg, "export", "--start", "2026-01-01", "--end", "2026-01-31",
                     "--out", str(target))
    assert proc.returncode == 2
    assert proc.stderr == (f"usage-etl: error: --out {target}: {target}: the disk is full "
                           "(no space left on device)\n")
    assert sorted(p.name for p in out.iterdir()) == ["filler"]


def test_an_import_into_a_database_on_a_full_disk_is_one_line(
    tmp_path: Path, small_disk: Callable[[int], Path],
) -> None:
    disk = small_disk(1024 * 1024)
    db = disk / "usage.db"
    cfg = write_config(tmp_path / "c.toml", f"sqlite:///{db}")
    archive = tmp_path / "big.jsonl"
    archive.write_text(nected_lines(60_000))
    proc = usage_etl(cfg, "import", str(archive))
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and len(proc.stderr.splitlines()) == 1
    assert proc.stderr.startswith(f"usage-etl: error: database sqlite:///{db}: the disk "
                                  "holding it is full (")
    assert "import stopped: 50000 lines read, 0 new samples stored by earlier batches" \
        in proc.stderr


def test_a_database_on_a_read_only_file_system_is_read_and_a_write_names_it(
    tmp_path: Path, read_only_folder: Callable[[Path], Path],
) -> None:
    seeded_database(tmp_path / "")
    (tmp_path / "seed.jsonl").unlink()
    view = read_only_folder(tmp_path)
    cfg = tmp_path / "ro.toml"
    write_config(cfg, f"sqlite:///{view / 'usage.db'}")
    status = usage_etl(cfg, "status")  # reads work there (SPEC 3 amended)
    assert status.returncode == 1, status.stderr  # stale: the history is from January
    assert status.stdout.splitlines()[1].split()[:2] == ["rules", "stale"]
    new = tmp_path / "new.jsonl"
    new.write_text('{"source": "rules", "observed_at": "2026-03-01T00:00:00Z", "body": '
                   '{"data": {"invocations": 7}, "code": "success"}}\n')
    proc = usage_etl(cfg, "import", str(new))
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr == (f"usage-etl: error: database sqlite:///{view}/usage.db: its "
                           f"folder {view} is on a read-only file system (attempt to write a "
                           "readonly database); import stopped: 1 lines read, 0 new samples "
                           "stored by earlier batches (importing again skips them)\n")


def test_schedule_on_a_read_only_file_system_says_read_only_and_exits_1(
    tmp_path: Path, read_only_folder: Callable[[Path], Path],
) -> None:
    seeded_database(tmp_path / "")
    view = read_only_folder(tmp_path)
    cfg = tmp_path / "ro.toml"
    write_config(cfg, f"sqlite:///{view / 'usage.db'}",
                 extra=f'spool_dir = "{tmp_path / "spool"}"')
    env = dict(os.environ, DISK_TEST_NK="disk-test-key-1", PYTHONPATH=str(REPO))
    env.pop("USAGE_ETL_DATABASE_URL", None)
    proc = usage_etl(cfg, "schedule", env=env)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr == (f"usage-etl: error: database sqlite:///{view}/usage.db: its "
                           f"folder {view} is on a read-only file system (unable to open "
                           "database file)\n")


def test_schedule_started_while_the_database_disk_is_full_starts_spool_only(
    tmp_path: Path, small_disk: Callable[[int], Path],
) -> None:
    disk = small_disk(128 * 1024)
    fill_disk(disk)
    with SimulatedVendor(api_keys=("disk-test-key-1",)) as sim:
        cfg = write_config(tmp_path / "c.toml", f"sqlite:///{disk / 'usage.db'}",
                           extra=f'spool_dir = "{tmp_path / "spool"}"')
        cfg.write_text(cfg.read_text() + f'base_url = "{sim.base_url}"\n')
        env = dict(os.environ, DISK_TEST_NK="disk-test-key-1", PYTHONPATH=str(REPO))
        env.pop("USAGE_ETL_DATABASE_URL", None)
        log = tmp_path / "daemon.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "etl", "--config", str(cfg), "schedule", "--log-format",
             "json"], stdout=subprocess.DEVNULL, stderr=log.open("wb"), env=env, cwd=tmp_path)
        try:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and proc.poll() is None:
                if list((tmp_path / "spool").glob("*.json")):
                    break
                time.sleep(0.3)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            status = proc.wait(timeout=60)
    events = [json.loads(line) for line in log.read_text().splitlines()
              if line.startswith("{")]
    names = [e.get("event") for e in events]
    assert status == 0, log.read_text()[-3000:]
    unreachable = next(e for e in events if e.get("event") == "database-unreachable")
    assert "disk" in unreachable["error"] and "full" in unreachable["error"] + \
        unreachable.get("message", "") or "disk I/O error" in unreachable["error"]
    assert "spooled" in names and list((tmp_path / "spool").glob("*.json"))


def test_an_import_into_a_database_whose_disk_filled_up_names_it(tmp_path: Path,
                                                small_disk: Callable[[int], Path]) -> None:
    disk = small_disk(1024 * 1024)
    cfg = write_config(tmp_path / "c.toml", f"sqlite:///{disk / 'usage.db'}")
    archive = tmp_path / "a.jsonl"
    archive.write_text(nected_lines(10))
    assert usage_etl(cfg, "import", str(archive)).returncode == 0
    fill_disk(disk)
    more = tmp_path / "more.jsonl"
    more.write_text(nected_lines(2000))
    proc = usage_etl(cfg, "import", str(more))
    assert proc.returncode == 1
    assert "the disk holding it is full" in proc.stderr and "Traceback" not in proc.stderr
