"""Bounded, well-formed input (issue 12): endless, binary, mis-encoded and hostile text is
refused at the edge, one line each, and never costs the good lines beside it."""

from __future__ import annotations

import gzip
import io
import json
import random
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, create_engine, text

from etl.cli import cli
from etl.collect.poll import Collector
from etl.config import load_config, parse_config
from etl.store.archive import import_archives
from etl.store.archive_read import MAX_LINE_BYTES, MAX_PROBLEMS_SHOWN
from tests.factories import REPO, usage_etl_in_process


def write_config(tmp_path: Path, url: str) -> Path:
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'database_url = "{url}"\n\n'
        '[[sources]]\nname = "ws"\nkind = "wiresocket"\nregion = "eu"\ntoken_env = "UNSET_WS"\n\n'
        '[[sources]]\nname = "rules"\nkind = "nected"\napi_key_env = "UNSET_NK"\n'
        "interval_seconds = 300\n")
    return cfg


def nected_line(minute: int, value: int, extra: str = "") -> str:
    return (f'{{"source": "rules", "observed_at": "2026-11-21T10:{minute:02d}:00Z", "body": '
            f'{{"data": {{"invocations": {value}}}, "code": "success"{extra}}}}}')


def ws_line(minute: int, status: str) -> str:
    body = {"usage": {"connections": {"current": 1, "limit": 10, "status": status},
                      "documents": {"current": 2}},
            "timestamp": f"2026-11-21T10:{minute:02d}:00Z"}
    return json.dumps({"source": "ws", "body": body})


def import_cli(cfg: Path, *args: str, stdin: object = None) -> subprocess.CompletedProcess[str]:
    """`usage-etl --config CFG import ARGS...`: with `stdin` (a real file on standard input)
    as a process, else in this process (tests.factories.usage_etl_in_process)."""
    if stdin is None:
        return usage_etl_in_process("--config", str(cfg), "import", *args)
    return subprocess.run([sys.executable, "-m", "etl", "--config", str(cfg), "import", *args],
                          stdin=stdin, capture_output=True, text=True, timeout=120,
                          cwd=REPO, check=False)


def count(url: str, table: str) -> int:
    eng = create_engine(url)
    try:
        with eng.connect() as conn:
            return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())  # noqa: S608
    finally:
        eng.dispose()


def test_hostile_text_is_refused_by_line_and_the_rest_of_the_batch_is_stored(
    empty_db_url: str, tmp_path: Path,
) -> None:
    cfg = write_config(tmp_path, empty_db_url)
    lines = [nected_line(m, 1000 + m) for m in range(50)]
    lines[10] = nected_line(10, 1010, ', "deep": ' + "[" * 100_000 + "]" * 100_000)
    lines[20] = nected_line(20, 1020, ', "message": "\\ud800"')
    lines[30] = ws_line(30, "ok\u0000")  # json.dumps writes it as the escape \u0000
    lines[40] = nected_line(40, 1040, ', "message": "\\u0000"')
    archive = tmp_path / "a.jsonl"
    archive.write_text("\n".join(lines) + "\n")
    proc = import_cli(cfg, str(archive))
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == [
        f"{archive}:11: nested deeper than 64 levels",
        f"{archive}:21: text '\\ud800' holds a lone surrogate (such as \\ud800): not Unicode text",
        f"{archive}:31: text 'ok\\x00' holds a NUL character (\\u0000), which a database "
        "cannot store",
        f"{archive}:41: text '\\x00' holds a NUL character (\\u0000), which a database "
        "cannot store",
    ]
    assert proc.stdout.startswith("50 lines: 46 new snapshots, 46 new samples")
    assert count(empty_db_url, "samples") == 46


class Endless(io.RawIOBase):
    """Standard input that never ends and holds no newline (like `tr '\\0' a </dev/zero`)."""

    def __init__(self, head: bytes = b"") -> None:
        self.head = head
        self.served = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = len(buffer)
        chunk = (self.head + b"a" * n)[:n] if self.served == 0 else b"a" * n
        buffer[:n] = chunk
        self.served += n
        return n


def test_an_endless_line_is_refused_after_the_cap_and_the_lines_before_it_are_kept(
    engine: Engine,
) -> None:
    config = parse_config({"sources": [{"name": "rules", "kind": "nected", "api_key_env": "K"}]})
    source = Endless((nected_line(0, 5) + "\n").encode())
    problems: list[str] = []
    result = import_archives(engine, config, ["-"], stdin=io.BufferedReader(source),
                             on_problem=problems.append)
    assert problems == [f"-:2: line longer than {MAX_LINE_BYTES} bytes; the rest of the file "
                        "was not read"]
    assert (result.samples, result.bad_lines) == (1, 1)
    assert source.served < 2 * MAX_LINE_BYTES


def test_a_gzip_bomb_of_one_huge_line_is_refused_unread(sqlite_url: str, tmp_path: Path) -> None:
    cfg = write_config(tmp_path, sqlite_url)
    bomb = tmp_path / "bomb.jsonl.gz"
    with gzip.open(bomb, "wb", compresslevel=9) as fh:
        fh.write((nected_line(1, 7) + "\n").encode())
        for _ in range(64):  # 64 MiB of one line, from a file of about 64 KB
            fh.write(b"a" * (1024 * 1024))
    assert bomb.stat().st_size < 200_000
    proc = import_cli(cfg, str(bomb))
    assert proc.returncode == 1
    assert proc.stderr == f"{bomb}:2: line longer than {MAX_LINE_BYTES} bytes; the rest of " \
                          "the file was not read\n"
    assert count(sqlite_url, "samples") == 1


def test_dev_zero_on_standard_input_is_refused_whole(sqlite_url: str, tmp_path: Path) -> None:
    cfg = write_config(tmp_path, sqlite_url)
    with open("/dev/zero", "rb") as zero:
        proc = import_cli(cfg, "-", stdin=zero)
    assert proc.returncode == 2
    assert proc.stderr == ("usage-etl: error: -: not UTF-8 text (NUL bytes: UTF-16, UTF-32 or "
                           "binary data); nothing was imported\n")


def test_a_binary_file_stops_after_a_few_problems_with_one_summary_line(
    sqlite_url: str, tmp_path: Path,
) -> None:
    cfg = write_config(tmp_path, sqlite_url)
    rng = random.Random(12)
    data = bytes(rng.randrange(1, 256) for _ in range(2_000_000))  # no NUL byte: not caught early
    binary = tmp_path / "blob.bin"
    binary.write_bytes(data)
    proc = import_cli(cfg, str(binary))
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert len(lines) == MAX_PROBLEMS_SHOWN + 1
    assert all(line.startswith(f"{binary}:") for line in lines)
    assert lines[-1] == (f"{binary}: its first {MAX_PROBLEMS_SHOWN} lines are all bad: not a "
                         "JSONL archive, the rest of it was not read")


def test_scattered_bad_lines_beyond_the_shown_few_are_counted_in_one_line(
    sqlite_url: str, tmp_path: Path,
) -> None:
    cfg = write_config(tmp_path, sqlite_url)
    lines = []
    for m in range(50):
        lines += [nected_line(m, 100 + m), "not json"]
    archive = tmp_path / "a.jsonl"
    archive.write_text("\n".join(lines) + "\n")
    proc = import_cli(cfg, str(archive))
    assert proc.returncode == 1
    shown = proc.stderr.splitlines()
    assert len(shown) == MAX_PROBLEMS_SHOWN + 1
    assert shown[0].startswith(f"{archive}:2: not JSON")
    assert shown[-1] == f"{archive}: 30 more bad lines or conflicts not shown"
    assert proc.stdout.startswith("100 lines: 50 new snapshots")


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32"])
def test_a_utf16_or_utf32_archive_is_refused_whole(
    sqlite_url: str, tmp_path: Path, encoding: str,
) -> None:
    cfg = write_config(tmp_path, sqlite_url)
    good = tmp_path / "good.jsonl"
    good.write_text(nected_line(0, 1) + "\n")
    wide = tmp_path / "wide.jsonl"
    wide.write_bytes("".join(nected_line(m, m) + "\n" for m in range(1, 5)).encode(encoding))
    proc = import_cli(cfg, str(good), str(wide))
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"usage-etl: error: {wide}: ")
    assert "nothing was imported" in proc.stderr and len(proc.stderr.splitlines()) == 1
    assert not Path(sqlite_url.removeprefix("sqlite:///")).exists() or \
        count(sqlite_url, "samples") == 0


def test_a_utf8_archive_with_a_byte_order_mark_is_read_whole(
    sqlite_url: str, tmp_path: Path,
) -> None:
    cfg = write_config(tmp_path, sqlite_url)
    archive = tmp_path / "bom.jsonl"
    archive.write_bytes(b"\xef\xbb\xbf" + "".join(nected_line(m, m) + "\n"
                                                  for m in range(3)).encode())
    proc = import_cli(cfg, str(archive))
    assert (proc.returncode, proc.stderr) == (0, "")
    assert count(sqlite_url, "samples") == 3


def test_config_from_dev_zero_or_nested_too_deep_is_one_line_exit_2(tmp_path: Path) -> None:
    deep = tmp_path / "deep.toml"
    deep.write_text("a = " + "[" * 100_000 + "]" * 100_000 + "\n")
    for path, message in (("/dev/zero", "larger than 1 MiB, not a usage-etl config"),
                          (str(deep), "not valid TOML: nested too deep")):
        result = CliRunner().invoke(cli, ["--config", path, "status"])
        assert result.exit_code == 2
        assert result.stderr == f"usage-etl: error: config file {path}: {message}\n"


def test_an_invoice_from_dev_zero_is_refused_unread(sqlite_url: str, tmp_path: Path) -> None:
    cfg = write_config(tmp_path, sqlite_url)
    result = CliRunner().invoke(cli, ["--config", str(cfg), "reconcile", "--month", "2026-11",
                                      "--invoice", "/dev/zero", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert result.stderr == "usage-etl: error: /dev/zero: larger than 16 MiB, not an invoice CSV\n"
    assert not (tmp_path / "o" / "reconcile-2026-11.csv").exists()


# -- live polls: the same text refused as invalid_response ------------------------------------


@pytest.fixture
def vendor() -> Iterator[dict[str, bytes]]:
    """A loopback HTTP server answering each path with the body set for it (200)."""
    bodies: dict[str, bytes] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = bodies[self.path]
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    bodies["base"] = f"http://127.0.0.1:{server.server_address[1]}".encode()
    try:
        yield bodies
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(("body", "reason"), [
    (b'{"code": "success", "data": {"invocations": 1}, "x": ' + b"[" * 5000 + b"]" * 5000 + b"}",
     "response body: nested deeper than 64 levels"),
    (b'{"code": "success", "data": {"invocations": 1}, "x": ' + b"[" * 100_000
     + b"]" * 100_000 + b"}", "response body: nested deeper than 64 levels"),
    (b'{"code": "success", "data": {"invocations": 1}, "message": "\\ud800"}',
     "response body: text '\\ud800' holds a lone surrogate"),
    (b'{"code": "success\\u0000", "data": {"invocations": 1}}',
     "response body: text 'success\\x00' holds a NUL character"),
])
def test_a_response_too_deep_or_with_unstorable_text_is_an_invalid_response(
    vendor: dict[str, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    body: bytes, reason: str,
) -> None:
    monkeypatch.setenv("BOUNDED_NK", "nk-key-bounded")
    vendor["/dev/usage"] = body
    cfg = tmp_path / "c.toml"
    cfg.write_text('[[sources]]\nname = "rules"\nkind = "nected"\napi_key_env = "BOUNDED_NK"\n'
                   f'base_url = "{vendor["base"].decode()}"\ninterval_seconds = 30\n')
    source = load_config(str(cfg)).sources[0]
    with Collector([source]) as collector:
        result = collector.poll(source)
    assert result.outcome == "invalid_response"
    assert (result.error or "").startswith(reason), result.error
