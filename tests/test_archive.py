"""`usage-etl import` / `export`: the archive format of SPEC 4, bad lines, idempotence, round trip."""

from __future__ import annotations

import csv
import gzip
import io
import json
import random
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select

from etl.cli import cli
from etl.config import load_config
from etl.runtime.simulated_apis import generate_archive
from etl.store.archive import import_archives
from etl.store.engine import make_engine, upgrade
from etl.store.models import Sample, Series
from etl.store.rows import forget_series_cache
from tests.factories import (
    GZIP_DAMAGE,
    damaged_gzip,
    examples,
    migrated_engine,
    write_reports_config,
)

# The two lines of SPEC section 4, verbatim.
SPEC_LINES = [
    '{"source": "rules", "observed_at": "2026-11-21T10:00:00Z", "body": {"data": {"invocations": 1000}, "code": "success", "message": "Success."}}',
    '{"source": "ws-prod", "body": {"tenantId": "...", "appId": "...", "usage": {"connections": {"current": 82, "limit": 100, "percent": 82.0, "status": "warning"}, "documents": {"current": 4, "limit": 20, "percent": 20.0, "status": "healthy"}}, "timestamp": "2026-02-25T14:40:00.000Z"}}',
]


def write_config(tmp_path: Path, url: str, timezone: str = "UTC") -> str:
    # A file per database URL: a test may import into two databases from one folder.
    path = tmp_path / f"c-{abs(hash(url)) % 10**8}.toml"
    return str(write_reports_config(path, url, timezone))


def run(config: str, *args: str, input: str | None = None):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, ["--config", config, *args], input=input)


def samples(url_or_engine: str | Engine) -> list[tuple]:
    engine = make_engine(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine
    with engine.connect() as conn:
        rows = conn.execute(
            select(Series.source, Series.metric, Sample.observed_at, Sample.value,
                   Sample.plan_limit, Sample.status)
            .join(Series, Series.id == Sample.series_id)
            .order_by(Series.source, Series.metric, Sample.observed_at)
        ).all()
    if isinstance(url_or_engine, str):
        engine.dispose()
    return [tuple(r) for r in rows]


def history(tmp_path: Path, days: int = 2) -> Path:
    lines = generate_archive(
        [("ws-prod", "wiresocket"), ("rules", "nected")],
        datetime(2026, 10, 30, tzinfo=UTC), datetime(2026, 10, 30, tzinfo=UTC) + timedelta(days=days),
        step_seconds=900, seed=7,
    )
    path = tmp_path / "history.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_spec_example_lines_import(sqlite_url: str, tmp_path: Path) -> None:
    config = write_config(tmp_path, sqlite_url)
    archive = tmp_path / "spec.jsonl"
    archive.write_text("\n".join(SPEC_LINES) + "\n")
    result = run(config, "import", str(archive))
    assert result.exit_code == 0, result.output
    assert samples(sqlite_url) == [
        ("rules", "invocations", datetime(2026, 11, 21, 10, tzinfo=UTC), 1000.0, None, None),
        ("ws-prod", "connections", datetime(2026, 2, 25, 14, 40, tzinfo=UTC), 82.0, 100.0, "warning"),
        ("ws-prod", "documents", datetime(2026, 2, 25, 14, 40, tzinfo=UTC), 4.0, 20.0, "healthy"),
    ]


def test_bad_lines_are_reported_and_good_lines_kept(sqlite_url: str, tmp_path: Path) -> None:
    config = write_config(tmp_path, sqlite_url)
    good_ws = json.loads(SPEC_LINES[1])
    negative = json.loads(SPEC_LINES[1])
    negative["body"]["usage"]["documents"]["current"] = -1
    lines = [
        SPEC_LINES[0],                                                        # 1 good
        "{not json",                                                          # 2
        json.dumps({"source": "nobody", "body": {}}),                         # 3
        json.dumps({"source": "rules", "body": json.loads(SPEC_LINES[0])["body"]}),  # 4
        json.dumps({"source": "rules", "observed_at": "2026-11-21T11:00:00Z",
                    "body": {"data": {"invocations": "many"}, "code": "success"}}),  # 5
        json.dumps(negative),                                                 # 6
        '{"source": "rules", "observed_at": "2026-11-21T12:00:00Z", "body": '
        '{"data": {"invocations": NaN}, "code": "success"}}',                 # 7
        "",                                                                   # 8 blank: skipped
        json.dumps(good_ws),                                                  # 9 good
    ]
    archive = tmp_path / "mixed.jsonl"
    archive.write_text("\n".join(lines) + "\n")
    result = run(config, "import", str(archive))
    assert result.exit_code == 1
    problems = result.stderr.strip().splitlines()
    assert [p.split(":")[1] for p in problems] == ["2", "3", "4", "5", "6", "7"]
    assert all(p.startswith(f"{archive}:") for p in problems)
    assert "not JSON" in problems[0]
    assert "'nobody' is not a configured source" in problems[1]
    assert "observed_at" in problems[2]
    assert "data.invocations" in problems[3]
    assert "usage.documents.current" in problems[4]
    assert "Traceback" not in result.output
    assert len(samples(sqlite_url)) == 3


def test_reimport_changes_nothing_and_order_does_not_matter(
    empty_db_url: str, sqlite_url: str, tmp_path: Path
) -> None:
    archive = history(tmp_path)
    config = write_config(tmp_path, empty_db_url)
    first = run(config, "import", str(archive))
    assert first.exit_code == 0, first.output
    before = samples(empty_db_url)
    assert len(before) == 2 * 96 * 2 + 2 * 96
    again = run(config, "import", str(archive))
    assert again.exit_code == 0
    assert "0 new snapshots, 0 new samples" in again.stdout
    assert samples(empty_db_url) == before

    # The same lines shuffled, into another database, in small batches: the same history.
    lines = archive.read_text().splitlines()
    random.Random(3).shuffle(lines)
    shuffled = tmp_path / "shuffled.jsonl"
    shuffled.write_text("\n".join(lines) + "\n")
    other = tmp_path / "other.db"
    other_url = f"sqlite:///{other}"
    engine = make_engine(other_url)
    upgrade(engine)
    result = import_archives(engine, load_config(write_config(tmp_path, other_url)),
                             [str(shuffled)], batch_size=37)
    assert result.ok and result.lines == len(lines)
    assert samples(engine) == before
    forget_series_cache(engine)
    engine.dispose()


def test_conflicting_line_is_reported_and_first_value_kept(sqlite_url: str,
                                                           tmp_path: Path) -> None:
    config = write_config(tmp_path, sqlite_url)
    changed = json.loads(SPEC_LINES[0])
    changed["body"]["data"]["invocations"] = 999
    archive = tmp_path / "conflict.jsonl"
    archive.write_text(SPEC_LINES[0] + "\n" + json.dumps(changed) + "\n")
    result = run(config, "import", str(archive))
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        f"{archive}:2: conflict: rules/invocations at 2026-11-21T10:00:00Z is stored as 1000; "
        "this line's 999 was not stored"
    ]
    assert [s[3] for s in samples(sqlite_url)] == [1000.0]


def rules_line(value: int, at: str = "2026-11-21T10:00:00Z") -> str:
    return json.dumps({"source": "rules", "observed_at": at,
                       "body": {"data": {"invocations": value}, "code": "success"}})


def test_conflict_names_the_line_whose_value_was_refused(sqlite_url: str,
                                                         tmp_path: Path) -> None:
    # Values 1, 2, 1 for one key: 1 (line 1) is kept, 2 (line 2) refused, line 3 a duplicate.
    config = write_config(tmp_path, sqlite_url)
    archive = tmp_path / "three.jsonl"
    archive.write_text("".join(rules_line(v) + "\n" for v in (1, 2, 1)))
    result = run(config, "import", str(archive))
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        f"{archive}:2: conflict: rules/invocations at 2026-11-21T10:00:00Z is stored as 1; "
        "this line's 2 was not stored"
    ]
    assert "1 duplicate samples" in result.stdout and "1 conflicts" in result.stdout


def test_a_line_conflicting_with_the_database_and_its_duplicate_are_both_named(
    sqlite_url: str, tmp_path: Path,
) -> None:
    config = write_config(tmp_path, sqlite_url)
    stored = tmp_path / "stored.jsonl"
    stored.write_text(rules_line(5) + "\n")
    assert run(config, "import", str(stored)).exit_code == 0
    # Line 2 conflicts with the stored 5; line 4 repeats line 2 exactly (and conflicts too).
    archive = tmp_path / "again.jsonl"
    archive.write_text("\n".join([rules_line(7, "2026-11-21T11:00:00Z"), rules_line(9),
                                  "", rules_line(9)]) + "\n")
    result = run(config, "import", str(archive))
    assert result.exit_code == 1
    reasons = ("conflict: rules/invocations at 2026-11-21T10:00:00Z is stored as 5; "
               "this line's 9 was not stored")
    assert result.stderr.strip().splitlines() == [f"{archive}:2: {reasons}",
                                                  f"{archive}:4: {reasons}"]
    assert [s[3] for s in samples(sqlite_url)] == [5.0, 7.0]


def test_gzip_archive_is_read_transparently(sqlite_url: str, tmp_path: Path) -> None:
    config = write_config(tmp_path, sqlite_url)
    plain = history(tmp_path)
    packed = tmp_path / "history.jsonl.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    result = run(config, "import", str(packed))
    assert result.exit_code == 0, result.output
    assert "0 bad lines" in result.stdout and result.stderr == ""
    expected = samples(sqlite_url)
    assert len(expected) == 2 * 96 * 3
    # From standard input too, and whatever the file is called.
    renamed = tmp_path / "history.archive"
    renamed.write_bytes(packed.read_bytes())
    for args, stdin in ((["-"], packed.read_bytes()), ([str(renamed)], None)):
        again = CliRunner().invoke(cli, ["--config", config, "import", *args], input=stdin)
        assert again.exit_code == 0, again.output
        assert f"{len(expected)} duplicate samples" in again.stdout
    assert samples(sqlite_url) == expected


def test_damaged_gzip_keeps_the_lines_before_the_damage(sqlite_url: str,
                                                        tmp_path: Path) -> None:
    config = write_config(tmp_path, sqlite_url)
    packed = gzip.compress(history(tmp_path).read_bytes())
    broken = tmp_path / "broken.jsonl.gz"
    broken.write_bytes(packed[: len(packed) // 2])
    result = run(config, "import", str(broken))
    assert result.exit_code == 1 and "Traceback" not in result.output
    (problem,) = result.stderr.strip().splitlines()
    assert problem.startswith(f"{broken}:") and "damaged gzip data" in problem
    assert "1 bad lines" in result.stdout and len(samples(sqlite_url)) > 0


@pytest.mark.parametrize("damage", GZIP_DAMAGE)
def test_a_damaged_gzip_file_or_stream_is_never_taken_for_an_empty_one(
        sqlite_url: str, tmp_path: Path, damage: str) -> None:
    # A gzip file damaged in its header or first block read as "0 lines ... 0 bad lines",
    # exit 0: the whole file silently not imported.
    config = write_config(tmp_path, sqlite_url)
    broken = tmp_path / "broken.jsonl.gz"
    broken.write_bytes(damaged_gzip(history(tmp_path).read_bytes(), damage))
    for args, stdin, name in ((["-"], broken.read_bytes(), "-"),
                              ([str(broken)], None, str(broken))):
        result = CliRunner().invoke(cli, ["--config", config, "import", *args], input=stdin)
        assert result.exit_code == 1, result.output
        (problem,) = result.stderr.strip().splitlines()
        assert problem.startswith(f"{name}:") and "damaged gzip data" in problem, problem
        assert "1 bad lines" in result.stdout and "Traceback" not in result.output


def test_import_reads_standard_input(sqlite_url: str, tmp_path: Path) -> None:
    config = write_config(tmp_path, sqlite_url)
    result = run(config, "import", "-", input="\n".join(SPEC_LINES) + "\n")
    assert result.exit_code == 0, result.output
    assert len(samples(sqlite_url)) == 3


def test_missing_file_is_a_usage_error(sqlite_url: str, tmp_path: Path) -> None:
    config = write_config(tmp_path, sqlite_url)
    result = run(config, "import", str(tmp_path / "nope.jsonl"))
    assert result.exit_code == 2
    assert "no such file" in result.stderr and "Traceback" not in result.output


def test_export_jsonl_round_trips_through_import(engine: Engine, tmp_path: Path) -> None:
    url = engine.url.render_as_string(hide_password=False)
    config = write_config(tmp_path, url)
    assert run(config, "import", str(history(tmp_path, days=3))).exit_code == 0
    out = tmp_path / "export.jsonl"
    result = run(config, "export", "--start", "2026-10-30", "--end", "2026-11-01",
                 "--out", str(out))
    assert result.exit_code == 0, result.output
    fresh_url = f"sqlite:///{tmp_path / 'fresh.db'}"
    fresh_config = write_config(tmp_path, fresh_url)
    back = run(fresh_config, "import", str(out))
    assert back.exit_code == 0, back.output
    assert samples(fresh_url) == samples(engine)


def test_export_days_are_local_and_end_is_included(sqlite_url: str, tmp_path: Path) -> None:
    config = write_config(tmp_path, sqlite_url, timezone="Europe/Berlin")
    body = json.loads(SPEC_LINES[0])["body"]
    stamps = ["2026-11-20T22:59:00Z",   # 20 Nov 23:59 in Berlin: before --start
              "2026-11-20T23:00:00Z",   # 21 Nov 00:00 in Berlin: first instant included
              "2026-11-21T22:59:59Z",   # 21 Nov 23:59:59 in Berlin: last day, included
              "2026-11-21T23:00:00Z"]   # 22 Nov 00:00 in Berlin: after --end
    archive = tmp_path / "edges.jsonl"
    archive.write_text("".join(
        json.dumps({"source": "rules", "observed_at": at, "body": body}) + "\n" for at in stamps
    ))
    assert run(config, "import", str(archive)).exit_code == 0
    result = run(config, "export", "--start", "2026-11-21", "--end", "2026-11-21")
    assert result.exit_code == 0
    exported = [json.loads(line)["observed_at"] for line in result.stdout.splitlines()]
    assert exported == stamps[1:3]


def test_export_csv_one_row_per_sample_with_formulas_escaped(sqlite_url: str,
                                                             tmp_path: Path) -> None:
    config = write_config(tmp_path, sqlite_url)
    line = json.loads(SPEC_LINES[1])
    line["body"]["usage"]["connections"]["status"] = "=HYPERLINK(1)"
    archive = tmp_path / "a.jsonl"
    archive.write_text(json.dumps(line) + "\n")
    assert run(config, "import", str(archive)).exit_code == 0
    result = run(config, "export", "--start", "2026-02-25", "--end", "2026-02-25",
                 "--format", "csv")
    assert result.exit_code == 0
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows == [
        ["observed_at", "source", "metric", "value", "limit", "status", "bucket_start",
         "bucket_end", "revisions"],
        ["2026-02-25T14:40:00Z", "ws-prod", "connections", "82", "100", "'=HYPERLINK(1)",
         "", "", ""],
        ["2026-02-25T14:40:00Z", "ws-prod", "documents", "4", "20", "healthy", "", "", ""],
    ]


def test_export_end_before_start_is_a_usage_error(sqlite_url: str, tmp_path: Path) -> None:
    config = write_config(tmp_path, sqlite_url)
    result = run(config, "export", "--start", "2026-11-21", "--end", "2026-11-20")
    assert result.exit_code == 2 and "before" in result.stderr


@pytest.mark.parametrize("bad", ["2026-13-01", "yesterday"])
def test_export_bad_date_is_a_usage_error(sqlite_url: str, tmp_path: Path, bad: str) -> None:
    result = run(write_config(tmp_path, sqlite_url), "export", "--start", bad, "--end",
                 "2026-11-20")
    assert result.exit_code == 2


def test_snapshot_keeps_the_body_text_of_the_line(sqlite_url: str, tmp_path: Path) -> None:
    from etl.store.models import Snapshot

    config = write_config(tmp_path, sqlite_url)
    body_first = ('{"body": {"data": {"invocations": 7}, "code": "success"}, '
                  '"observed_at": "2026-11-21T12:00:00Z", "source": "rules"}')
    nested_key = ('{"source": "rules", "observed_at": "2026-11-21T13:00:00Z", "body": '
                  '{"data": {"invocations": 8, "body": {"x": 1}}, "code": "success"}}')
    big_int = ('{"source": "rules", "observed_at": "2026-11-21T14:00:00Z", "body": '
               '{"data": {"invocations": 9, "n": 123456789012345678901234567890}, '
               '"code": "success"}}')
    archive = tmp_path / "a.jsonl"
    archive.write_text("\n".join([*SPEC_LINES, body_first, nested_key, big_int]) + "\n")
    assert run(config, "import", str(archive)).exit_code == 0
    engine = make_engine(sqlite_url)
    with engine.connect() as conn:
        payloads = dict(conn.execute(select(Snapshot.observed_at, Snapshot.payload)).all())
    engine.dispose()
    by_hour = {at.hour: p for at, p in payloads.items()}
    # As it stands in the line (the vendor's spacing), when the body ends the line.
    assert by_hour[10] == SPEC_LINES[0][SPEC_LINES[0].index('{"data"'):-1]
    assert by_hour[14] == ('{"data": {"invocations": 9, "n": 123456789012345678901234567890}, '
                           '"code": "success"}')
    # Otherwise the same body, serialised again.
    assert by_hour[12] == '{"data":{"invocations":7},"code":"success"}'
    assert json.loads(by_hour[13]) == {"data": {"invocations": 8, "body": {"x": 1}},
                                       "code": "success"}


def test_lines_only_the_standard_parser_reads_still_import(sqlite_url: str,
                                                         tmp_path: Path) -> None:
    config = write_config(tmp_path, sqlite_url)
    archive = tmp_path / "bom.jsonl"
    # A UTF-8 byte order mark, and an integer too large for 64 bits: json reads both.
    archive.write_bytes(b"\xef\xbb\xbf" + SPEC_LINES[0].encode() + b"\n" +
                        SPEC_LINES[1].replace('"current": 4,', '"current": 4, "n": '
                                              + "9" * 30 + ",").encode() + b"\n")
    result = run(config, "import", str(archive))
    assert result.exit_code == 0, result.output
    assert len(samples(sqlite_url)) == 3


_LINE = b'{"source": "rules", "observed_at": "2026-11-21T10:00:00Z", "body": '
_BODY_END = b', "code": "success"}}'

# Where orjson (the import's parser) and the standard json module differ, a line must read
# as the plain parser reads it, with NaN and Infinity refused (SPEC 4): the same value and
# stored text, or a refusal naming the problem. (name, line, invocations or the refusal.)
PARSER_EDGES = [
    ("integer beyond 64 bits beside the reading", _LINE + b'{"data": {"invocations": 5, "n": '
     + b"1" * 30 + b"}" + _BODY_END, 5.0),
    ("integer beyond 64 bits as the reading", _LINE + b'{"data": {"invocations": ' + b"1" * 30
     + b"}" + _BODY_END, "is above 10^15"),
    ("NaN literal", _LINE + b'{"data": {"invocations": NaN}' + _BODY_END,
     "not JSON: NaN is not valid JSON"),
    ("Infinity literal", _LINE + b'{"data": {"invocations": 5, "x": Infinity}' + _BODY_END,
     "not JSON: Infinity is not valid JSON"),
    ("-Infinity literal", _LINE + b'{"data": {"invocations": -Infinity}' + _BODY_END,
     "not JSON: -Infinity is not valid JSON"),
    ("1e400 as the reading", _LINE + b'{"data": {"invocations": 1e400}' + _BODY_END,
     "must be a finite number"),
    ("1e400 beside the reading", _LINE + b'{"data": {"invocations": 5, "x": 1e400}' + _BODY_END,
     "a number out of range (such as 1e400) cannot be stored"),
    ("duplicate keys: the last wins", _LINE + b'{"data": {"invocations": 5, "invocations": 7}'
     + _BODY_END, 7.0),
    ("duplicate body: the last wins", _LINE + b'{"data": {"invocations": 5}, "code": "success"}, '
     b'"body": {"data": {"invocations": 6}' + _BODY_END, 6.0),
    ("byte order mark on a later line", b"\xef\xbb\xbf" + _LINE + b'{"data": {"invocations": 8}'
     + _BODY_END, 8.0),
    ("invalid UTF-8", _LINE + b'{"data": {"invocations": 5}, "m": "\xff"' + _BODY_END,
     "not UTF-8 text"),
    ("overlong UTF-8", _LINE + b'{"data": {"invocations": 5}, "m": "\xc0\xaf"' + _BODY_END,
     "not UTF-8 text"),
    ("a lone surrogate's bytes", _LINE + b'{"data": {"invocations": 5}, "m": "\xed\xa0\x80"'
     + _BODY_END, "not UTF-8 text"),
    ("a lone surrogate escaped", _LINE + b'{"data": {"invocations": 5}, "m": "\\ud800"'
     + _BODY_END, "lone surrogate"),
    ("a surrogate pair escaped", _LINE + b'{"data": {"invocations": 5}, "m": "\\ud83d\\ude00"'
     + _BODY_END, 5.0),
    ("a float of 37 digits", _LINE + b'{"data": {"invocations": 0.1000000000000000055511151231257827}'
     + _BODY_END, 0.1),
    ("the hardest float to round", _LINE + b'{"data": {"invocations": 2.2250738585072011e-308}'
     + _BODY_END, 2.2250738585072011e-308),
    ("an exponent", _LINE + b'{"data": {"invocations": 1e15}' + _BODY_END, 1e15),
    ("a trailing comma", _LINE + b'{"data": {"invocations": 5},' + _BODY_END, "not JSON"),
    ("a raw control character", _LINE + b'{"data": {"invocations": 5}, "m": "a\x01b"'
     + _BODY_END, "not JSON: Invalid control character"),
]


@pytest.mark.parametrize(("line", "expected"), [(line, want) for _, line, want in PARSER_EDGES],
                         ids=[name for name, _, _ in PARSER_EDGES])
def test_lines_where_the_fast_parser_differs_read_as_the_plain_parser_reads_them(
        tmp_path: Path, line: bytes, expected: float | str) -> None:
    from etl.errors import ParseError
    from etl.store.archive_line import parse_line

    config = load_config(write_config(tmp_path, f"sqlite:///{tmp_path / 'unused.db'}"))
    sources = {s.name: s for s in config.sources}
    if isinstance(expected, str):
        with pytest.raises(ParseError, match=re.escape(expected)):
            parse_line(line, sources)
        return
    obs = parse_line(line, sources)
    assert [(s.metric, s.value) for s in obs.samples] == [("invocations", expected)]
    # The stored body is the plain parser's reading of it, whether kept as text or not.
    body = json.loads(line.decode("utf-8-sig"))["body"]
    assert json.loads(obs.payload) == body


def test_lines_that_once_stopped_an_import_are_bad_lines_and_the_rest_is_kept(
        empty_db_url: str, tmp_path: Path) -> None:
    config = write_config(tmp_path, empty_db_url)
    with migrated_engine(empty_db_url):
        pass
    archive = tmp_path / "edges.jsonl"
    archive.write_bytes(b"\n".join([
        SPEC_LINES[0].encode(),
        # Read as infinity, then the body could not be stored again as JSON.
        _LINE.replace(b"10:00", b"11:00") + b'{"data": {"invocations": 5, "x": 1e400}'
        + _BODY_END,
        # A lone surrogate's bytes: let through by json's "surrogatepass", then refused by
        # the database driver, which stopped the import.
        _LINE.replace(b"10:00", b"12:00") + b'{"data": {"invocations": 6}, "m": "\xed\xa0\x80"'
        + _BODY_END,
        SPEC_LINES[1].encode(),
    ]) + b"\n")
    result = run(config, "import", str(archive))
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    problems = result.stderr.strip().splitlines()
    assert [p.split(":")[1] for p in problems] == ["2", "3"]
    assert "a number out of range" in problems[0]
    assert "not UTF-8 text" in problems[1]
    assert len(samples(empty_db_url)) == 3


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8)
    | st.sampled_from(['"body":', "body", '\\"body\\": {', "}", "{"]),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from(["body", "source", "x", '"body":', "b"]) | st.text(max_size=4),
                      inner, max_size=3),
    max_leaves=12,
)


@settings(max_examples=examples(400), deadline=None)
@given(head=st.dictionaries(st.sampled_from(["source", "observed_at", "x", "body"]), _json_values,
                            max_size=3),
       body=_json_values, tail=st.dictionaries(st.sampled_from(["z", "body"]), _json_values,
                                               max_size=2),
       spaces=st.sampled_from([(", ", ": "), (",", ":"), (" , ", " :  ")]),
       after=st.sampled_from(["", " ", "\n", " x", "}", " ,"]))
def test_a_line_split_around_its_body_reads_as_the_whole_line(head, body, tail, spaces,
                                                              after) -> None:  # type: ignore[no-untyped-def]
    """The import reads a line as two pieces (line without body, body text): whenever it
    does, that is exactly what parsing the whole line gives, and the text is the body's."""
    import orjson

    from etl.store.archive_line import split_body

    doc = {**head, "body": body, **tail}
    line = (json.dumps(doc, separators=spaces, ensure_ascii=False) + after).encode()
    split = split_body(line)
    try:
        whole = orjson.loads(line)
    except orjson.JSONDecodeError:
        assert split is None
        return
    if split is None:
        return  # the whole line is parsed instead
    parsed, text = split
    assert parsed == whole
    assert orjson.loads(text) == whole["body"]
    assert not tail or set(tail) == {"body"}  # only a body that ends the line is cut out


def test_tricky_lines_split_only_where_the_body_ends_the_line() -> None:
    from etl.store.archive_line import split_body

    assert split_body(b'{"source": "a", "body": {"n": 1}}') == (
        {"source": "a", "body": {"n": 1}}, '{"n": 1}')
    for line in (
        b'{"source": "a", "body": {"n": 1}, "z": 2}',  # not the last member
        b'{"source": "a", "body": {"n": {"body": 2}}}',  # a nested "body" key comes last
        b'{"source": "a", "body": {"n": 1}} trailing',  # not a JSON line at all
        b'{"source": "a", "body": {"n": 1}}}',
        b'{"source": "a \\"body\\": 1", "x": 2}',  # "body" only inside a string
        b'["body": 1]',
    ):
        split = split_body(line)
        assert split is None or split[0]["body"] == {"n": {"body": 2}}, line


class _Cycle:
    """An object that refers to itself: only the cyclic garbage collector frees it."""

    def __init__(self) -> None:
        self.me = self


def test_an_import_frees_cycles_batch_by_batch_and_leaves_the_collector_as_it_was(
    sqlite_url: str, tmp_path: Path,
) -> None:
    import gc
    import weakref

    config = load_config(write_config(tmp_path, sqlite_url))
    engine = make_engine(sqlite_url)
    upgrade(engine)
    archive = history(tmp_path, days=3)  # 576 lines: 12 batches of 48
    made: list[weakref.ref[_Cycle]] = []
    seen: list[tuple[bool, int]] = []  # per batch: collector running?, earlier cycles alive

    def on_progress(_: int) -> None:  # called after each written batch, during the import
        seen.append((gc.isenabled(), sum(ref() is not None for ref in made)))
        made.append(weakref.ref(_Cycle()))

    assert gc.isenabled()
    result = import_archives(engine, config, [str(archive)], batch_size=48,
                             on_progress=on_progress)
    assert result.ok and result.lines == 576
    assert gc.isenabled()
    # The collector's automatic passes were paused during the import, yet the cycle made
    # after each batch was freed by the next: each written batch ends with a collection.
    assert seen == [(False, 0)] * 12

    # A caller's callback that raises mid-import leaves the collector running too...
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")

    def refuse(message: str) -> None:
        raise RuntimeError(message)

    with pytest.raises(RuntimeError):
        import_archives(engine, config, [str(bad)], on_problem=refuse)
    assert gc.isenabled()
    # ... and a caller who had paused it finds it paused still.
    gc.disable()
    try:
        import_archives(engine, config, [str(archive)], batch_size=48)
        assert not gc.isenabled()
    finally:
        gc.enable()
    engine.dispose()


@pytest.mark.postgres
def test_an_import_into_postgresql_says_and_stores_what_one_into_sqlite_does(
    sqlite_url: str, pg_url: str, tmp_path: Path,
) -> None:
    # Problems held per batch (etl.store.archive_read) and shown before its write: both
    # engines say the same, in the same order, with the same counts, progress and samples.
    good = history(tmp_path, days=1).read_text().splitlines()  # 192 lines, odd ones rules'
    changed = json.loads(good[61])
    changed["body"]["data"]["invocations"] += 1
    lines = list(good)
    lines.insert(5, "{not json")
    lines.insert(15, "[1, 2]")  # read while line 11's batch is written
    lines.insert(40, "")
    lines.insert(41, json.dumps({"source": "nobody", "body": {}}))
    lines.insert(90, json.dumps(changed))  # line 91: refused, good[61] (line 64) came first
    lines.insert(150, lines[150])  # a duplicate
    archive = tmp_path / "mixed.jsonl"
    archive.write_text("\n".join(lines) + "\n")
    stored = tmp_path / "stored.jsonl"  # good[9]'s key (line 11) with another value
    stored.write_text(rules_line(1, "2026-10-30T01:00:00Z") + "\n")
    said: dict[str, tuple[list[str], list[int], object, list[tuple]]] = {}
    for engine_name, url in (("sqlite", sqlite_url), ("postgresql", pg_url)):
        config = load_config(write_config(tmp_path, url))
        with migrated_engine(url) as engine:
            import_archives(engine, config, [str(stored)])
            problems: list[str] = []
            progress: list[int] = []
            result = import_archives(engine, config, [str(archive)], batch_size=7,
                                     on_problem=problems.append, on_progress=progress.append)
            said[engine_name] = (problems, progress, result, samples(engine))
    problems, progress, result, stored_samples = said["sqlite"]
    assert said["postgresql"] == said["sqlite"]
    assert [p.split(":")[1] for p in problems] == ["6", "11", "16", "42", "91"]
    assert "conflict" in problems[1] and "conflict" in problems[4]
    assert len(progress) >= len(good) // 7 and progress == sorted(progress)
    assert (result.lines, result.bad_lines, result.conflicts) == (197, 3, 2)  # type: ignore[attr-defined]
    assert len(stored_samples) == 96 * 3


@pytest.mark.postgres
def test_an_import_stopped_by_its_caller_keeps_the_batches_before_and_a_rerun_completes(
    pg_url: str, tmp_path: Path,
) -> None:
    config = load_config(write_config(tmp_path, pg_url))
    lines = history(tmp_path, days=1).read_text().splitlines()
    lines.insert(30, "{not json")
    archive = tmp_path / "bad-later.jsonl"
    archive.write_text("\n".join(lines) + "\n")

    def refuse(message: str) -> None:
        raise RuntimeError(message)

    with migrated_engine(pg_url) as engine:
        with pytest.raises(RuntimeError, match=":31: "):
            import_archives(engine, config, [str(archive)], batch_size=7, on_problem=refuse)
        # The batches before the bad line were written; importing again completes the file.
        assert len(samples(engine)) == 28 // 2 * 3
        again = import_archives(engine, config, [str(archive)], batch_size=7,
                                on_problem=lambda _: None)
        assert again.bad_lines == 1 and len(samples(engine)) == 96 * 3
