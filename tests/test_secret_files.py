"""Secrets as editors write them: BOM and CRLF dropped, anything a header cannot carry refused (SPEC 2)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from etl.cli import cli
from etl.runtime.simulator import SimulatedVendor


def file_config(tmp_path: Path, sim: SimulatedVendor, url: str, token_file: Path,
                key_file: Path) -> str:
    path = tmp_path / "c.toml"
    path.write_text(
        f'database_url = "{url}"\n\n'
        f'[[sources]]\nname = "ws"\nkind = "wiresocket"\nbase_url = "{sim.base_url}"\n'
        f'token_file = "{token_file}"\ninterval_seconds = 60\n\n'
        f'[[sources]]\nname = "rules"\nkind = "nected"\nbase_url = "{sim.base_url}"\n'
        f'api_key_file = "{key_file}"\ninterval_seconds = 60\n')
    return str(path)


def test_secret_files_saved_by_notepad_with_bom_and_crlf_are_read(
        simulator: SimulatedVendor, sqlite_url: str, tmp_path: Path) -> None:
    token, key = tmp_path / "ws-token", tmp_path / "nected-key"
    token.write_bytes(b"\xef\xbb\xbf" + simulator.token.encode() + b"\r\n")
    key.write_bytes(b"\xef\xbb\xbf  " + simulator.api_key.encode() + b"\r\n\r\n")
    config = file_config(tmp_path, simulator, sqlite_url, token, key)
    result = CliRunner().invoke(cli, ["--config", config, "collect"])
    assert result.exit_code == 0, result.output
    # The simulator accepts only the exact credentials: both were sent without BOM or CR.
    assert simulator.request_count(status=200) == 2 and simulator.request_count() == 2


BAD_SECRETS = [
    ("tök-{}".encode(), "U+00F6 at position 2"),               # non-ASCII letter
    ("tok\u00a0{}".encode(), "U+00A0 at position 4"),           # no-break space pasted in
    (b"tok\t{}\r\n", "U+0009 at position 4"),                    # control character
    (b"\xef\xbb\xbftok-{}\r\nsecond line\r\n", "U+000A at position 37"),  # two lines
]


@pytest.mark.parametrize(("raw", "where"), BAD_SECRETS)
@pytest.mark.parametrize("command", ["collect", "schedule"])
def test_a_secret_that_cannot_go_in_a_header_is_refused_before_polling_naming_the_key(
        simulator: SimulatedVendor, sqlite_url: str, tmp_path: Path, raw: bytes, where: str,
        command: str) -> None:
    secret = uuid.uuid4().hex  # 32 characters
    token, key = tmp_path / "ws-token", tmp_path / "nected-key"
    token.write_bytes(raw.replace(b"{}", secret.encode()))
    key.write_text(simulator.api_key)
    config = file_config(tmp_path, simulator, sqlite_url, token, key)
    result = CliRunner().invoke(cli, ["--config", config, command])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines() == [
        f"usage-etl: error: sources.ws.token_file ({token}): the secret has character "
        f"{where}: only printable ASCII can be sent in an HTTP header"]
    assert secret not in result.output and "Traceback" not in result.output
    assert simulator.request_count() == 0


def test_a_secret_variable_that_cannot_go_in_a_header_is_refused_too(
        simulator: SimulatedVendor, sqlite_url: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    key = tmp_path / "nected-key"
    key.write_text(simulator.api_key)
    config = Path(file_config(tmp_path, simulator, sqlite_url, tmp_path / "unused", key))
    config.write_text(config.read_text().replace(f'token_file = "{tmp_path / "unused"}"',
                                                 'token_env = "TEST_WS_TOKEN_NON_ASCII"'))
    monkeypatch.setenv("TEST_WS_TOKEN_NON_ASCII", "jeton-é-" + simulator.token)
    result = CliRunner().invoke(cli, ["--config", str(config), "collect"])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == (
        "usage-etl: error: sources.ws.token_env ($TEST_WS_TOKEN_NON_ASCII): the secret has "
        "character U+00E9 at position 7: only printable ASCII can be sent in an HTTP header")
    assert simulator.request_count() == 0


def test_a_leading_tilde_in_config_paths_is_the_home_folder(
        simulator: SimulatedVendor, sqlite_url: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # `archive_dir = "~/arch"` made a folder named "~" in the working directory, and
    # `token_file = "~/ws-token"` was "cannot read file" of a file that is there.
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    (home / "ws-token").write_text(simulator.token + "\n")
    (home / "nected-key").write_text(simulator.api_key + "\n")
    config = file_config(tmp_path, simulator, sqlite_url, Path("~/ws-token"),
                         Path("~/nected-key"))
    Path(config).write_text('reports_dir = "~/reports"\n' + Path(config).read_text()
                            + '\n[retention]\nraw_days = 0\narchive_dir = "~/arch"\n')
    runner = CliRunner()
    collected = runner.invoke(cli, ["--config", config, "collect"])
    assert collected.exit_code == 0, collected.output
    compacted = runner.invoke(cli, ["--config", config, "compact"])
    assert compacted.exit_code == 0, compacted.output
    month = sorted(p.relative_to(home).as_posix() for p in home.glob("arch/*/*.jsonl.gz"))
    assert [m.split("/")[1] for m in month] == ["rules", "ws"]
    reported = runner.invoke(cli, ["--config", config, "report", "billing", "--month",
                                   "2026-11"])
    assert reported.exit_code == 0, reported.output
    assert (home / "reports" / "billing-2026-11.csv").is_file()
    assert list(work.iterdir()) == []  # no folder named "~"
