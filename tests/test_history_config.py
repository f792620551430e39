"""History sources in config (SPEC 10): windows, pages, buckets, placeholders, auth; each key checked."""

from __future__ import annotations

import base64
import textwrap
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from etl.cli import cli
from etl.config import SourceConfig, parse_config
from etl.errors import ConfigError, ParseError, SecretError
from etl.vendors.buckets import Span, bucket_time, parse_span
from etl.vendors.history import NextUrlPaginator, OffsetPaginator
from etl.vendors.parse_api import ParseContext
from etl.vendors.types import MetricType

OPENAI = textwrap.dedent(
    """
    [[sources]]
    name = "openai"
    kind = "http_json"
    url = "https://api.openai.com/v1/organization/usage/completions"
    token_env = "OPENAI_ADMIN_KEY"
    interval_seconds = 3600
    max_requests_per_minute = 30
    params = { bucket_width = "1d", group_by = "model", start_time = "{start:unix}", end_time = "{end:unix}" }

    [sources.window]
    backfill = "30d"
    lookback = "2d"
    step = "7d"
    align = "1d"
    end_inclusive = false

    [sources.page]
    token = "next_page"
    param = "page"
    more = "has_more"
    max_pages = 100

    [sources.buckets]
    each = "data"
    start = "start_time"
    end = "end_time"

    [[sources.metrics]]
    name = "output_tokens"
    type = "interval"
    each = "results"
    key = "model"
    value = "output_tokens"
    """
)
D = datetime(2026, 11, 1, tzinfo=UTC)


def load(text: str) -> SourceConfig:
    return parse_config(tomllib.loads(text)).sources[0]


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as err:
        parse_config(tomllib.loads(text))
    return err.value.problems


def test_the_spec_example_is_a_history_source_cut_into_aligned_week_ranges() -> None:
    history = load(OPENAI).vendor.history
    assert history is not None
    assert history.window.backfill == Span(seconds=30 * 86400)
    start, end = D, datetime(2026, 11, 16, 12, tzinfo=UTC)
    assert history.ranges(start, end) == [
        (D, datetime(2026, 11, 8, tzinfo=UTC)),
        (datetime(2026, 11, 8, tzinfo=UTC), datetime(2026, 11, 15, tzinfo=UTC)),
        (datetime(2026, 11, 15, tzinfo=UTC), end),
    ]
    url, params = history.request(D, datetime(2026, 11, 8, tzinfo=UTC))
    assert url == "https://api.openai.com/v1/organization/usage/completions"
    assert params == {"bucket_width": "1d", "group_by": "model", "start_time": "1793491200",
                      "end_time": "1794096000"}


def test_a_page_body_gives_one_interval_sample_per_bucket_and_model() -> None:
    body = {"object": "page", "has_more": False, "next_page": None, "data": [
        {"start_time": 1793491200, "end_time": 1793577600,
         "results": [{"model": "gpt-4o", "output_tokens": 120},
                     {"model": "claude-3-5-sonnet-20241022", "output_tokens": 7}]},
        {"start_time": 1793577600, "end_time": 1793664000, "results": []}]}
    obs = load(OPENAI).vendor.parse(body, ParseContext("openai", received_at=D))
    assert [(s.metric, s.value, s.bucket_start, s.bucket_end, s.metric_type)
            for s in obs.samples] == [
        ("output_tokens:gpt-4o", 120.0, D, datetime(2026, 11, 2, tzinfo=UTC), MetricType.INTERVAL),
        ("output_tokens:claude-3-5-sonnet-20241022", 7.0, D, datetime(2026, 11, 2, tzinfo=UTC),
         MetricType.INTERVAL),
    ]


def test_a_bucket_whose_end_is_not_after_its_start_makes_the_page_invalid() -> None:
    body = {"data": [{"start_time": 1793491200, "end_time": 1793491200, "results": []}]}
    with pytest.raises(ParseError, match=r"buckets\[0\]: its end is not after its start"):
        load(OPENAI).vendor.parse(body, ParseContext("openai", received_at=D))


@pytest.mark.parametrize(("raw", "expected"), [
    (1793491200, D), (1793491200000, D), ("2026-11-01T00:00:00Z", D),
    ("2026-11-01T01:00:00+01:00", D), ("2026-11-01", D), ("2026-11-01T00", D)])
def test_bucket_times_are_read_in_every_documented_encoding(raw: object, expected: datetime) -> None:
    assert bucket_time(raw, "start") == expected


@pytest.mark.parametrize("raw", ["yesterday", "2026-11-01T00:00:00", True, -5, "10000-01-01"])
def test_other_bucket_times_are_refused_naming_the_field(raw: object) -> None:
    with pytest.raises(ParseError, match="^start: "):
        bucket_time(raw, "start")


def test_durations_take_seconds_or_a_unit_and_months_only_where_the_spec_allows() -> None:
    assert parse_span(90, "x") == Span(seconds=90)
    assert parse_span("2w", "x") == Span(seconds=14 * 86400)
    assert parse_span("1mo", "x", months=True) == Span(months=1)
    with pytest.raises(ValueError, match="x: months"):
        parse_span("1mo", "x")
    with pytest.raises(ValueError, match="x: must be seconds"):
        parse_span("1.5d", "x")


def test_month_alignment_floors_and_ceils_to_utc_month_starts() -> None:
    month = Span(months=1)
    mid = datetime(2026, 12, 15, 8, tzinfo=UTC)
    assert month.floor(mid) == datetime(2026, 12, 1, tzinfo=UTC)
    assert month.ceil(mid) == datetime(2027, 1, 1, tzinfo=UTC)
    assert month.ceil(D) == D


def _with(old: str, new: str) -> str:
    assert old in OPENAI
    return OPENAI.replace(old, new)


@pytest.mark.parametrize(("old", "new", "problem"), [
    ('lookback = "2d"', 'lookback = "2x"', "sources.openai.window.lookback: must be seconds"),
    ('backfill = "30d"', 'backfill = "1mo"', "sources.openai.window.backfill: months"),
    ('step = "7d"', 'step = "1h"', "sources.openai.window.step: shorter than align"),
    ("end_inclusive = false", 'end_inclusive = "no"', "sources.openai.window.end_inclusive:"),
    ("end_inclusive = false", "till = 1", "sources.openai.window.till: unknown key"),
    ('param = "page"', "", "sources.openai.page.param: required"),
    ('token = "next_page"', 'token = "next_page"\nnext_url = "next"', "sources.openai.page: set exactly one"),
    ("max_pages = 100", "max_pages = 0", "sources.openai.page.max_pages:"),
    ('more = "has_more"', 'more = "has_more[="', "sources.openai.page.more: not a valid JMESPath"),
    ('end = "end_time"', "", "sources.openai.buckets.end: set exactly one of end or width"),
    ('end = "end_time"', 'end = "end_time"\nwidth = "1d"', "sources.openai.buckets.end: set exactly"),
    ('each = "data"', "", "sources.openai.buckets.each: required"),
    ('"{end:unix}"', '"{end:epoch}"', "sources.openai.params.end_time: '{end:epoch}'"),
    ('"{end:unix}"', '"{stop:unix}"', "sources.openai.params.end_time: unknown placeholder"),
    ('type = "interval"', 'type = "counter"', "sources.openai.metrics[0].type: required, 'interval' or 'gauge'"),
    ('value = "output_tokens"', 'value = "output_tokens"\nlimit = "cap"',
     "sources.openai.metrics[0].limit: an interval metric has no limit"),
    ('token_env = "OPENAI_ADMIN_KEY"', 'token_env = "K"\nauth = "digest"', "sources.openai.auth:"),
    ('token_env = "OPENAI_ADMIN_KEY"', 'token_env = "K"\nauth = "basic"', "sources.openai.username:"),
    ('token_env = "OPENAI_ADMIN_KEY"', 'token_env = "K"\nsecret_headers = { "DD-APPLICATION-KEY" = "1x" }',
     "sources.openai.secret_headers.DD-APPLICATION-KEY: must name an environment variable"),
])
def test_each_bad_history_key_is_refused_naming_it(old: str, new: str, problem: str) -> None:
    found = problems(_with(old, new))
    assert any(p.startswith(problem) for p in found), found


def test_interval_metrics_and_pages_need_a_window() -> None:
    text = OPENAI.replace(OPENAI[OPENAI.index("[sources.window]"):OPENAI.index("[sources.page]")], "")
    found = problems(text)
    assert any(p.startswith("sources.openai.page: only with [sources.window]") for p in found)
    assert any("'interval' needs [sources.window]" in p for p in found)


def test_a_bad_history_key_exits_2_with_one_line_naming_it(tmp_path: Path) -> None:
    cfg = tmp_path / "usage-etl.toml"
    cfg.write_text(f'database_url = "sqlite:///{tmp_path}/u.db"\n'
                   + _with('lookback = "2d"', 'lookback = "two days"'))
    result = CliRunner().invoke(cli, ["--config", str(cfg), "status"])
    assert result.exit_code == 2
    assert "sources.openai.window.lookback: must be seconds" in result.output


def test_basic_auth_and_secret_headers_are_sent_from_their_variables(
        monkeypatch: pytest.MonkeyPatch) -> None:
    src = load(_with('token_env = "OPENAI_ADMIN_KEY"',
                     'token_env = "TW_TOKEN"\nauth = "basic"\nusername_env = "TW_SID"\n'
                     'secret_headers = { "DD-APPLICATION-KEY" = "DD_APP" }'))
    monkeypatch.setenv("TW_SID", "AC123")
    monkeypatch.setenv("DD_APP", "app-secret")
    headers = src.vendor.auth_headers("tok")
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"AC123:tok").decode()
    assert headers["DD-APPLICATION-KEY"] == "app-secret"
    monkeypatch.delenv("DD_APP")
    with pytest.raises(SecretError, match=r"secret_headers.DD-APPLICATION-KEY: \$DD_APP is not set"):
        src.vendor.auth_headers("tok")


def test_paginators_follow_a_next_url_and_stop_after_a_short_offset_page() -> None:
    nxt = NextUrlPaginator(lambda body: body.get("next"))
    assert nxt.next({"next": "/v2/usage?cursor=abc"}, 5, "https://x.example/v2/usage",
                    {"a": "1"}) == ("https://x.example/v2/usage?cursor=abc", {})
    assert nxt.next({"next": None}, 5, "https://x.example/v2/usage", {}) is None
    offset = OffsetPaginator("offset", 3)
    assert offset.next({}, 3, "u", {"offset": "0"}) == ("u", {"offset": "3"})
    assert offset.next({}, 2, "u", {"offset": "3"}) is None


def test_collect_refuses_an_unset_secret_header_variable_with_exit_2(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("K", "k-3f9a1c77e2")
    monkeypatch.delenv("DD_APP_UNSET", raising=False)
    cfg = tmp_path / "usage-etl.toml"
    cfg.write_text(f'database_url = "sqlite:///{tmp_path}/u.db"\n' + _with(
        'token_env = "OPENAI_ADMIN_KEY"',
        'token_env = "K"\nsecret_headers = { "DD-APPLICATION-KEY" = "DD_APP_UNSET" }'))
    result = CliRunner().invoke(cli, ["--config", str(cfg), "collect"])
    assert result.exit_code == 2
    assert ("sources.openai.secret_headers.DD-APPLICATION-KEY: $DD_APP_UNSET is not set"
            in result.output)


@pytest.mark.parametrize(("new", "problem"), [
    ('step = "0s"', "sources.openai.window.step: must be more than 0"),
    ('step = "7x"', "sources.openai.window.step: must be seconds"),
])
def test_a_refused_step_is_one_problem_not_also_shorter_than_align(new: str, problem: str) -> None:
    found = problems(_with('step = "7d"', new))
    assert len(found) == 1 and found[0].startswith(problem), found
