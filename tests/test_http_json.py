"""Sources defined in config (`kind = "http_json"`, SPEC 7): config checks and body reading."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from etl.cli import cli
from etl.config import SourceConfig, parse_config
from etl.errors import ConfigError, ParseError
from etl.vendors.http_json import compile_expression
from etl.vendors.parse_api import ParseContext
from etl.vendors.series_names import series_key
from etl.vendors.types import MetricType

ACME = textwrap.dedent(
    """
    [[sources]]
    name = "acme"
    kind = "http_json"
    url = "https://api.acme.example/v2/usage"
    auth_header = "X-Api-Key"
    token_env = "ACME_KEY"
    headers = { Accept = "application/json" }
    max_requests_per_minute = 30
    timestamp = "meta.generated_at"
    ok_when = "status == 'ok'"

    [[sources.metrics]]
    name = "api_calls"
    type = "counter"
    value = "totals.calls"
    limit = "plan.calls_limit"
    status = "plan.state"

    [[sources.metrics]]
    name = "tokens"
    type = "counter"
    each = "data"
    key = "model"
    value = "n_tokens"
    """
)
BODY = {
    "status": "ok",
    "meta": {"generated_at": "2026-11-21T10:00:00Z"},
    "totals": {"calls": 1200},
    "plan": {"calls_limit": 100000, "state": "active"},
    "data": [{"model": "gpt-4o", "n_tokens": 5000}, {"model": "Claude 3/Opus", "n_tokens": 800}],
}
AT = datetime(2026, 11, 21, 10, tzinfo=UTC)


def acme(text: str = ACME) -> SourceConfig:
    import tomllib

    return parse_config(tomllib.loads(text)).sources[0]


def problems(text: str) -> list[str]:
    import tomllib

    with pytest.raises(ConfigError) as err:
        parse_config(tomllib.loads(text))
    return err.value.problems


def test_the_spec_example_source_is_accepted_with_its_metrics_and_request_budget() -> None:
    src = acme()
    vendor = src.vendor
    assert src.url == "https://api.acme.example/v2/usage"
    assert dict(vendor.metrics) == {"api_calls": MetricType.COUNTER}
    assert dict(vendor.series_metrics) == {"tokens": MetricType.COUNTER}
    assert vendor.rate_limit == (30, 60.0)
    assert vendor.auth_headers("k-123") == {"Accept": "application/json", "X-Api-Key": "k-123"}
    assert vendor.time_in_body


def test_authorization_gets_a_bearer_prefix_by_default_and_no_secret_sends_no_header() -> None:
    text = ACME.replace('auth_header = "X-Api-Key"\n', "").replace('token_env = "ACME_KEY"\n', "")
    src = acme(text)
    assert src.vendor.auth_headers("t") == {"Accept": "application/json",
                                            "Authorization": "Bearer t"}
    assert src.read_secret() == ""
    assert src.vendor.auth_headers("") == {"Accept": "application/json"}


def test_the_body_gives_one_sample_per_metric_and_one_series_per_item() -> None:
    obs = acme().vendor.parse(BODY, ParseContext("acme", received_at=datetime(2030, 1, 1, tzinfo=UTC)))
    assert obs.observed_at == AT
    assert [(s.metric, s.value, s.limit, s.status) for s in obs.samples] == [
        ("api_calls", 1200.0, 100000.0, "active"),
        ("tokens:gpt-4o", 5000.0, None, None),
        ("tokens:claude_3_opus", 800.0, None, None),
    ]


def test_series_keys_are_lowercased_with_other_characters_replaced() -> None:
    assert series_key("GPT-4o Mini/2024") == "gpt-4o_mini_2024"
    assert series_key("a.b_c-d") == "a.b_c-d"
    assert series_key(42) == "42"


@pytest.mark.parametrize(("change", "reason"), [
    ({"status": "down"}, "ok_when \"status == 'ok'\": not true"),
    ({"totals": {}}, "api_calls: value 'totals.calls': missing"),
    ({"totals": {"calls": -1}}, "must be a finite number of 0 or more"),
    ({"totals": {"calls": "12"}}, "must be a number"),
    ({"totals": {"calls": True}}, "must be a number"),
    ({"data": {"model": "x"}}, "tokens: each 'data': not a list"),
    ({"meta": {"generated_at": "yesterday"}}, "timestamp: not an ISO 8601"),
])
def test_an_invalid_body_is_refused_with_the_expression_that_failed(
        change: dict[str, Any], reason: str) -> None:
    with pytest.raises(ParseError, match=None) as err:
        acme().vendor.parse({**BODY, **change}, ParseContext("acme"))
    assert reason in str(err.value)


@pytest.mark.parametrize("limit", [None, -1, "many", True])
def test_a_missing_null_negative_or_non_numeric_limit_is_stored_as_no_limit(limit: Any) -> None:
    plan = {"state": "active"} if limit is None else {"calls_limit": limit, "state": "x"}
    obs = acme().vendor.parse({**BODY, "plan": plan}, ParseContext("acme"))
    assert obs.samples[0].limit is None and obs.samples[0].value == 1200.0


def test_without_a_timestamp_the_observation_time_is_the_callers() -> None:
    src = acme(ACME.replace('timestamp = "meta.generated_at"\n', ""))
    received = datetime(2026, 11, 21, 12, 30, tzinfo=UTC)
    assert src.vendor.parse(BODY, ParseContext("acme", received_at=received)).observed_at == received
    with pytest.raises(ParseError, match="observed_at: required"):
        src.vendor.parse(BODY, ParseContext("acme"))


@pytest.mark.parametrize(("old", "new", "problem"), [
    ('value = "totals.calls"', 'value = "totals.[calls"',
     "sources.acme.metrics[0].value: not a valid JMESPath expression: 'totals.[calls'"),
    ('ok_when = "status == \'ok\'"', 'ok_when = "status ==="',
     "sources.acme.ok_when: not a valid JMESPath expression"),
    ('timestamp = "meta.generated_at"', 'timestamp = "meta..x"',
     "sources.acme.timestamp: not a valid JMESPath expression"),
    ('type = "counter"\nvalue = "totals.calls"', 'type = "meter"\nvalue = "totals.calls"',
     "sources.acme.metrics[0].type: required, 'counter' or 'gauge'"),
    ('name = "tokens"', 'name = "api_calls"',
     "sources.acme.metrics[1].name: duplicate metric name 'api_calls'"),
    ('key = "model"\n', '', "sources.acme.metrics[1].key: required with each"),
    ('each = "data"\n', '', "sources.acme.metrics[1].each: required with key"),
    ('url = "https://api.acme.example/v2/usage"', 'url = "https://api.acme.example/u?key=s"',
     "sources.acme.url: must not hold credentials or a query string"),
    ('max_requests_per_minute = 30', 'max_requests_per_minute = 0',
     "sources.acme.max_requests_per_minute: must be a whole number"),
    ('auth_header = "X-Api-Key"', 'auth_header = "X Api Key"',
     "sources.acme.auth_header: must be an HTTP header name"),
    ('status = "plan.state"', 'status = "plan.state"\nunit = "x"',
     "sources.acme.metrics[0].unit: unknown key"),
    ('token_env = "ACME_KEY"', 'token_env = "ACME_KEY"\ntoken_file = "/k"',
     "sources.acme.token_env: set only one of token_env or token_file"),
    ('kind = "http_json"', 'kind = "http_json"\nregion = "eu"',
     "sources.acme.region: unknown key for a http_json source"),
])
def test_a_bad_http_json_source_is_refused_naming_the_key(old: str, new: str,
                                                          problem: str) -> None:
    assert old in ACME
    found = problems(ACME.replace(old, new, 1))
    assert any(p.startswith(problem) for p in found), found


def test_a_source_without_metrics_is_refused() -> None:
    found = problems(ACME.split("[[sources.metrics]]")[0])
    assert found == ["sources.acme.metrics: required, at least one [[sources.metrics]] table"]


def test_billing_names_a_per_item_series_in_full_and_increase_needs_a_counter() -> None:
    import tomllib

    rules = textwrap.dedent(
        """
        [[billing]]
        source = "acme"
        metric = "tokens:gpt-4o"
        aggregation = "increase"
        unit_price = "0.001"
        """
    )
    cfg = parse_config(tomllib.loads(ACME + rules))
    assert cfg.billing[0].metric == "tokens:gpt-4o"
    found = problems(ACME + rules.replace("tokens:gpt-4o", "words:gpt-4o"))
    assert found == ["billing[0].metric: 'words:gpt-4o' is not a metric of http_json source "
                     "'acme' (expected one of: api_calls, tokens:KEY)"]


def test_collect_refuses_a_bad_expression_with_exit_2_and_no_traceback(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(ACME.replace('value = "n_tokens"', 'value = "n_tokens[?"'))
    result = CliRunner().invoke(cli, ["--config", str(path), "collect"])
    assert result.exit_code == 2
    assert "sources.acme.metrics[1].value: not a valid JMESPath expression" in result.output
    assert "Traceback" not in result.output


DOCS: list[Any] = [
    {"a": {"b": {"c": 1}}, "code": "success", "n": 1},
    {"a": {"b": [1, 2]}, "code": "error", "n": True},
    {"a": "text", "code": None, "n": 1.0},
    {"a": {"b": {"c": {"d": 0}}}, "n": "1"},
    [1, 2], "scalar", None,
]


@pytest.mark.parametrize("expression", [
    "a", "a.b", "a.b.c", "a.b.c.d", "code == 'success'", "'success' == code", "code != 'error'",
    "n == `1`", "n != `1`", "a.b[0]", "length(a.b)", "code == `null`",
])
def test_every_expression_reads_what_jmespath_reads(expression: str) -> None:
    import jmespath

    read = compile_expression(expression)
    for doc in DOCS:
        try:
            expected = jmespath.search(expression, doc)
        except jmespath.exceptions.JMESPathError:
            continue
        assert read(doc) == expected and type(read(doc)) is type(expected), (expression, doc)


def test_alerts_name_a_per_item_series_in_full_and_above_pct_needs_a_limit() -> None:
    import tomllib

    alerts = textwrap.dedent(
        """
        [[alerts]]
        name = "gpt-4o-tokens"
        source = "acme"
        metric = "tokens:gpt-4o"
        above = 100000

        [[alerts]]
        name = "calls-near-plan"
        source = "acme"
        metric = "api_calls"
        above_pct = 80
        """
    )
    cfg = parse_config(tomllib.loads(ACME + alerts))
    assert [(a.name, a.metric) for a in cfg.alerts] == [("gpt-4o-tokens", "tokens:gpt-4o"),
                                                      ("calls-near-plan", "api_calls")]
    found = problems(ACME + alerts.replace("above = 100000", "above_pct = 90"))
    assert found == ["alerts.gpt-4o-tokens.above_pct: acme tokens:gpt-4o has no plan limit, so no "
                     "percentage (use above)"]
