"""Per-item series names (SPEC 7, amended 2026-12-06): numbers as written, any script, up to
200 characters; refused items are named and never cost the rest of the response."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from etl.collect.poll import Collector
from etl.store.archive import import_archives
from etl.store.models import CollectionAttempt, Sample, Series
from etl.store.writer import record_polls_apart
from etl.vendors.parse_api import ParseContext
from etl.vendors.series_names import series_key
from tests.factories import LoopbackVendor, http_json_config, json_answer

CLAUDE = "claude-3-5-sonnet-20241022"


@pytest.mark.parametrize(("key", "name"), [
    (1655371, "1655371"),                     # an id: never 1.65537e+06
    (10**20, "100000000000000000000"),
    (1655371.0, "1655371.0"),
    (1.5e-7, "0.00000015"),                   # without exponent
    (CLAUDE, CLAUDE),
    ("GPT-4o Mini/2024", "gpt-4o_mini_2024"),
    ("東京", "東京"),                          # letters of any script are kept
    ("大阪", "大阪"),
    ("Straße", "strasse"),                    # case-folded, not only lowercased
    ("ＡＢＣ１", "abc1"),                      # NFKC: full-width forms are the ASCII ones
    ("ﬁle", "file"),
    ("café", "café"),                          # the mark stays (NFKC composes it)
    ("cafe\u0301", "café"),
    ("٣٤", "٣٤"),                             # decimal digits of any script
    ("a:b c/d²", "a_b_c_d2"),                 # ² is NFKC 2; ':' never survives in a key
    ("½", "1_2"),                             # NFKC 1⁄2: the fraction slash is not kept
    ("emoji🙂", "emoji_"),
])
def test_a_key_becomes_its_series_name_as_spec_7_says(key: object, name: str) -> None:
    assert series_key(key) == name


def body(*items: dict[str, object], used: float = 5) -> dict[str, object]:
    return {"used": used, "plan": {"limit": 10}, "data": list(items)}


def test_numeric_ids_and_long_model_names_are_distinct_series() -> None:
    src = http_json_config("http://127.0.0.1:9").sources[0]
    obs = src.vendor.parse(body(
        {"model": 1655371, "n": 1}, {"model": 1655372, "n": 2},
        {"model": CLAUDE, "n": 3}, {"model": "東京", "n": 4}, {"model": "大阪", "n": 5},
    ), ParseContext("acme", received_at=datetime(2026, 12, 6, tzinfo=UTC)))
    assert [(s.metric, s.value) for s in obs.samples] == [
        ("used", 5.0), ("tokens:1655371", 1.0), ("tokens:1655372", 2.0),
        (f"tokens:{CLAUDE}", 3.0), ("tokens:東京", 4.0), ("tokens:大阪", 5.0)]
    assert obs.refused == ()


def test_items_giving_one_name_or_no_key_are_refused_by_name_and_the_rest_are_read() -> None:
    src = http_json_config("http://127.0.0.1:9").sources[0]
    obs = src.vendor.parse(body(
        {"model": "GPT-4o", "n": 1}, {"model": "gpt-4o", "n": 2}, {"n": 3},
        {"model": "", "n": 4}, {"model": "x" * 194, "n": 5}, {"model": "ok", "n": 6},
    ), ParseContext("acme", received_at=datetime(2026, 12, 6, tzinfo=UTC)))
    assert [(s.metric, s.value) for s in obs.samples] == [("used", 5.0), ("tokens:ok", 6.0)]
    assert obs.refused == (
        "tokens[2]: key is missing",
        "tokens[3]: key is empty",
        f"tokens[4]: key '{'x' * 56}... makes a series name longer than 200 characters",
        "tokens: items [0] 'GPT-4o', [1] 'gpt-4o' all give the series 'tokens:gpt-4o'",
    )
    assert obs.refused_reason() == "items refused: " + "; ".join(obs.refused)


def _poll_and_store(engine: Engine, url: str) -> None:
    source = http_json_config(url).sources[0]
    with Collector([source]) as collector:
        record_polls_apart(engine, [collector.poll(source)])


def test_a_poll_with_refused_items_is_ok_with_the_reason_and_stores_the_others(
    engine: Engine, loopback_vendor: LoopbackVendor,
) -> None:
    loopback_vendor.answer = json_answer(body(
        {"model": 1655371, "n": 10}, {"model": 1655372, "n": 20}, {"model": CLAUDE, "n": 30},
        {"model": "Claude", "n": 1}, {"model": "claude", "n": 2}, {"model": None, "n": 3}))
    _poll_and_store(engine, loopback_vendor.url)
    with engine.connect() as conn:
        attempt = conn.execute(select(CollectionAttempt.outcome, CollectionAttempt.error,
                                      CollectionAttempt.samples_stored)).one()
        stored = conn.execute(select(Series.metric, Sample.value).join(Sample)
                              .order_by(Series.metric)).all()
    assert tuple(attempt) == (
        "ok", "items refused: tokens[5]: key is missing; tokens: items [3] 'Claude', "
        "[4] 'claude' all give the series 'tokens:claude'", 4)
    assert [tuple(r) for r in stored] == [
        ("tokens:1655371", 10.0), ("tokens:1655372", 20.0), (f"tokens:{CLAUDE}", 30.0),
        ("used", 5.0)]


def test_an_import_line_with_refused_items_is_reported_and_its_other_samples_kept(
    engine: Engine, tmp_path: Path,
) -> None:
    config = http_json_config("http://127.0.0.1:9")
    lines = [
        {"source": "acme", "observed_at": "2026-12-06T10:00:00Z",
         "body": body({"model": 7, "n": 1}, {"model": "７", "n": 2}, {"model": "b", "n": 3})},
        {"source": "acme", "observed_at": "2026-12-06T11:00:00Z",
         "body": body({"model": 7, "n": 4}, {"model": "b" * 190, "n": 5})},
    ]
    archive = tmp_path / "a.jsonl"
    archive.write_text("".join(json.dumps(line) + "\n" for line in lines))
    problems: list[str] = []
    result = import_archives(engine, config, [str(archive)], on_problem=problems.append)
    assert problems == [f"{archive}:1: body: items refused: tokens: items [0] 7, [1] '７' all "
                        "give the series 'tokens:7'"]
    assert not result.ok and result.refused_lines == 1 and result.bad_lines == 0
    assert result.summary().endswith("0 bad lines, 0 conflicts, 1 lines with refused items")
    with engine.connect() as conn:
        stored = conn.execute(select(Series.metric, Sample.value).join(Sample)
                              .order_by(Sample.observed_at, Series.metric)).all()
    assert [(m[:12], v) for m, v in stored] == [
        ("tokens:b", 3.0), ("used", 5.0), ("tokens:7", 4.0), ("tokens:bbbbb", 5.0),
        ("used", 5.0)]
    assert len(stored[3][0]) == 197
