"""Config loading and validation (SPEC section 2)."""

from __future__ import annotations

import textwrap
from decimal import Decimal
from pathlib import Path

import pytest

from etl.config import load_config, parse_config
from etl.errors import ConfigError, SecretError

GOOD = textwrap.dedent(
    """
    database_url = "sqlite:///usage.db"
    timezone = "Europe/Berlin"

    [[sources]]
    name = "ws-prod"
    kind = "wiresocket"
    region = "eu"
    token_env = "WIRESOCKET_TOKEN"
    interval_seconds = 60

    [[sources]]
    name = "rules"
    kind = "nected"
    base_url = "http://127.0.0.1:8082"
    api_key_file = "/run/secrets/nected"
    interval_seconds = 300

    [[billing]]
    source = "rules"
    metric = "invocations"
    aggregation = "increase"
    included = 100000
    unit_price = "0.002"
    currency = "USD"

    [[billing]]
    source = "ws-prod"
    metric = "connections"
    aggregation = "peak"
    included = 100
    unit_price = 0.1
    currency = "EUR"
    """
)


def write(tmp_path: Path, body: str) -> str:
    path = tmp_path / "usage-etl.toml"
    path.write_text(body)
    return str(path)


def test_spec_example_loads(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, GOOD))
    assert [s.name for s in cfg.sources] == ["ws-prod", "rules"]
    ws, rules = cfg.sources
    assert ws.url == "https://eu.ws.wiresocket.com/usage"
    assert rules.url == "http://127.0.0.1:8082/dev/usage"
    assert ws.staleness == 120
    assert cfg.billing[0].unit_price == Decimal("0.002")
    # A TOML float keeps its decimal spelling, not its binary approximation.
    assert cfg.billing[1].unit_price == Decimal("0.1")
    assert cfg.tz.key == "Europe/Berlin"


def test_every_problem_is_reported_once_per_line(tmp_path: Path) -> None:
    bad = textwrap.dedent(
        """
        timezone = "Mars/Olympus"
        colour = "blue"

        [[sources]]
        name = "a"
        kind = "wiresocket"
        region = "eu"
        token_env = "T"
        interval_seconds = 2

        [[sources]]
        name = "a"
        kind = "nected"
        api_key_env = "K"

        [[sources]]
        name = "Bad Name"
        kind = "ftp"

        [[billing]]
        source = "ghost"
        metric = "invocations"
        aggregation = "increase"
        unit_price = "1"
        """
    )
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, bad))
    text = "\n".join(err.value.problems)
    assert "colour: unknown key" in text
    assert "timezone: 'Mars/Olympus'" in text
    assert "sources.a.interval_seconds" in text
    assert "duplicate source name 'a'" in text
    assert "unknown kind 'ftp'" in text
    assert "billing[0].source: 'ghost'" in text
    assert "sources[2].name: required, lowercase" in text
    assert len(err.value.problems) == 7
    assert all("\n" not in p for p in err.value.problems)


@pytest.mark.parametrize(
    ("snippet", "needle"),
    [
        ('[[sources]]\nname="x"\nkind="nected"\napi_key_env="K"\ntoken_env="T"\n', "sources.x.token_env: unknown key"),
        ('[[sources]]\nname="x"\nkind="nected"\n', "set exactly one of api_key_env or api_key_file"),
        ('[[sources]]\nname="x"\nkind="wiresocket"\ntoken_env="T"\n', "sources.x.region: required"),
        ('[[sources]]\nname="x"\nkind="nected"\napi_key_env="K"\nbase_url="ftp://h"\n', "base_url"),
        (
            '[[sources]]\nname="x"\nkind="nected"\napi_key_env="K"\n'
            '[[billing]]\nsource="x"\nmetric="connections"\naggregation="peak"\nunit_price="1"\n',
            "billing[0].metric: 'connections' is not a metric",
        ),
        (
            '[[sources]]\nname="x"\nkind="wiresocket"\nregion="eu"\ntoken_env="K"\n'
            '[[billing]]\nsource="x"\nmetric="connections"\naggregation="increase"\nunit_price="1"\n',
            "'increase' needs a counter",
        ),
        (
            '[[sources]]\nname="x"\nkind="nected"\napi_key_env="K"\n'
            '[[billing]]\nsource="x"\nmetric="invocations"\naggregation="increase"\nunit_price="abc"\n',
            "billing[0].unit_price",
        ),
        ("this is = = not toml", "not valid TOML"),
    ],
)
def test_single_problems(tmp_path: Path, snippet: str, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, snippet))
    assert needle in str(err.value)


def test_missing_explicit_config_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(str(tmp_path / "nope.toml"))


def test_default_config_may_be_absent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("USAGE_ETL_CONFIG", raising=False)
    monkeypatch.delenv("USAGE_ETL_DATABASE_URL", raising=False)
    cfg = load_config()
    assert cfg.sources == () and cfg.database_url == "sqlite:///usage.db"


def test_environment_and_flag_override_database_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, GOOD)
    monkeypatch.setenv("USAGE_ETL_DATABASE_URL", "sqlite:///from-env.db")
    monkeypatch.setenv("USAGE_ETL_TIMEZONE", "America/New_York")
    assert load_config(path).database_url == "sqlite:///from-env.db"
    assert load_config(path).timezone == "America/New_York"
    assert load_config(path, "sqlite:///flag.db").database_url == "sqlite:///flag.db"
    monkeypatch.setenv("USAGE_ETL_CONFIG", path)
    assert load_config().path == path


def test_secrets_come_from_env_or_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "ws"
    secret.write_text("file-secret\n")
    cfg = parse_config(
        {
            "sources": [
                {"name": "a", "kind": "wiresocket", "region": "eu", "token_env": "WS_TOKEN_T"},
                {"name": "b", "kind": "wiresocket", "region": "eu", "token_file": str(secret)},
                {"name": "c", "kind": "nected", "api_key_file": str(tmp_path / "missing")},
            ]
        }
    )
    monkeypatch.delenv("WS_TOKEN_T", raising=False)
    with pytest.raises(SecretError) as err:
        cfg.check_secrets()
    assert len(err.value.problems) == 2
    assert "$WS_TOKEN_T" in err.value.problems[0] and "cannot read file" in err.value.problems[1]
    monkeypatch.setenv("WS_TOKEN_T", "env-secret")
    assert cfg.sources[0].read_secret() == "env-secret"
    assert cfg.sources[1].read_secret() == "file-secret"
