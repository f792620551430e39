"""Config loading and validation (SPEC section 2)."""

from __future__ import annotations

import textwrap
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner

from etl.cli import cli
from etl.config import load_config, parse_config
from etl.errors import ConfigError, SecretError
from tests.factories import REPO

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


def test_the_spec_example_config_loads(tmp_path: Path) -> None:
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
        database_url = "mysql://u:secret-pw@db/usage"
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
        timeout_seconds = 0
        shade = "red"

        [[sources]]
        name = "Bad Name"
        kind = "ftp"
        interval_seconds = 1
        hue = 3

        [[billing]]
        source = "ghost"
        metric = "invocations"
        aggregation = "increase"
        unit_price = "1"
        """
    )
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, bad))
    problems = err.value.problems
    text = "\n".join(problems)
    # Top level: a bad URL and a bad time zone in the same run.
    assert "database_url: scheme 'mysql' is not supported" in text
    assert "secret-pw" not in text
    assert "colour: unknown key" in text
    assert "timezone: 'Mars/Olympus'" in text
    assert "sources.a.interval_seconds" in text
    # A duplicate entry is still checked, under its index since its name is taken.
    assert "sources[1].name: duplicate source name 'a'" in text
    assert "sources[1].timeout_seconds: must be a finite positive number of seconds" in text
    assert "sources[1].shade: unknown key for a nected source" in text
    # An entry of unknown kind is still checked against the keys any kind accepts.
    assert "unknown kind 'ftp'" in text
    assert "sources[2].name: required, lowercase" in text
    assert "sources[2].hue: unknown key" in text
    assert "sources[2].interval_seconds: must be a finite number of seconds from 5 to" in text
    assert "billing[0].source: 'ghost'" in text
    assert len(problems) == 12, problems
    assert len(set(problems)) == len(problems)
    assert all("\n" not in p for p in problems)


def test_a_billing_rule_on_a_broken_source_is_not_told_the_source_is_missing(
    tmp_path: Path,
) -> None:
    bad = textwrap.dedent(
        """
        [[sources]]
        name = "rules"
        kind = "nected"
        api_key_env = "K"
        interval_seconds = 1

        [[billing]]
        source = "rules"
        metric = "connections"
        aggregation = "peak"
        unit_price = "1"
        """
    )
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, bad))
    assert len(err.value.problems) == 2, err.value.problems
    assert "sources.rules.interval_seconds" in err.value.problems[0]
    assert "billing[0].metric: 'connections' is not a metric of nected" in err.value.problems[1]


# Values of the wrong TOML type for every key that is compared, hashed or parsed: each must be
# a one-line error naming the key, never a traceback.
SOURCE = 'name = "x"\nkind = "nected"\napi_key_env = "K"\n'
RULE = {"source": '"x"', "metric": '"invocations"', "aggregation": '"increase"', "unit_price": '"1"'}


def billing(**values: str) -> str:
    """Source x and one billing rule on it, with `values` (TOML text) replacing the defaults."""
    fields = {**RULE, **values}
    return f"[[sources]]\n{SOURCE}[[billing]]\n" + "".join(f"{k} = {v}\n" for k, v in fields.items())


WRONG_TYPES = [
    ('database_url = ["sqlite:///x.db"]\n', "database_url: must be a non-empty string"),
    ('timezone = {}\n', "timezone: must be a non-empty string"),
    ('reports_dir = 3\n', "reports_dir: must be a non-empty string"),
    ('spool_dir = "a\\u0000b"\n', "spool_dir: must not contain control characters"),
    ("sources = 1\n", "sources: must be an array of tables"),
    ("billing = {}\n", "billing: must be an array of tables"),
    ('[[sources]]\nname = "x"\nkind = ["wiresocket"]\n', "sources.x.kind: must be a string, not an array"),
    ('[[sources]]\nname = "x"\nkind = {}\n', "sources.x.kind: must be a string, not a table"),
    ('[[sources]]\nname = "x"\napi_key_env = "K"\n', "sources.x.kind: required"),
    ('[[sources]]\nname = ["x"]\nkind = "nected"\napi_key_env = "K"\n', "sources[0].name: required"),
    ('[[sources]]\nname = "x\\n"\nkind = "nected"\napi_key_env = "K"\n', "sources[0].name: required"),
    (f"[[sources]]\n{SOURCE}region = [1]\n", "sources.x.region: must be"),
    (f"[[sources]]\n{SOURCE}base_url = {{}}\n", "sources.x.base_url: must be an http:// or https:// URL"),
    (f'[[sources]]\n{SOURCE}base_url = "http://[::1"\n', "sources.x.base_url: must be an http"),
    (f'[[sources]]\n{SOURCE}base_url = "http://h:port"\n', "sources.x.base_url: must be an http"),
    ('[[sources]]\nname = "x"\nkind = "nected"\napi_key_env = {}\n', "sources.x.api_key_env: must name an environment variable"),
    ('[[sources]]\nname = "x"\nkind = "nected"\napi_key_env = "A=B"\n', "sources.x.api_key_env: must name an environment variable"),
    ('[[sources]]\nname = "x"\nkind = "wiresocket"\nregion = "eu"\ntoken_file = [""]\n', "sources.x.token_file: must be a file path"),
    (f'[[sources]]\n{SOURCE}interval_seconds = "60"\n', "sources.x.interval_seconds"),
    (f"[[sources]]\n{SOURCE}timeout_seconds = true\n", "sources.x.timeout_seconds"),
    (billing(currency="1"), "billing[0].currency: must be a three-letter code"),
    (billing(currency='"USD\\n"'), "billing[0].currency: must be a three-letter code"),
    (billing(aggregation='["peak"]'), "billing[0].aggregation: must be one of: increase, peak, p95, twa, unit_hours, last"),
    (billing(metric='["x"]'), "billing[0].metric: must be a string, not an array"),
    (billing(metric="{x = 1}"), "billing[0].metric: must be a string, not a table"),
    (billing(source='["x"]'), "billing[0].source: must be a string naming a source"),
    (billing(included="[]"), "billing[0].included: must be a number from 0 to 10^15"),
    (billing(unit_price="{}"), "billing[0].unit_price: must be a number from 0 to 10^15"),
    ("[[sources]]\n[[billing]]\n", "billing[0].source: required"),
]


@pytest.mark.parametrize(("body", "needle"), WRONG_TYPES)
def test_wrong_types_are_one_line_errors_exit_2(tmp_path: Path, body: str, needle: str) -> None:
    path = write(tmp_path, body)
    result = CliRunner().invoke(cli, ["--config", path, "status"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert lines and all(line.startswith(f"usage-etl: error: {path}: ") for line in lines), lines
    assert any(needle in line for line in lines), lines


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("interval_seconds", "nan"),
        ("interval_seconds", "inf"),
        ("interval_seconds", "-inf"),
        ("timeout_seconds", "nan"),
        ("timeout_seconds", "inf"),
        ("staleness_seconds", "nan"),
        ("staleness_seconds", "inf"),
    ],
)
def test_non_finite_source_numbers_are_refused(tmp_path: Path, key: str, value: str) -> None:
    # nan slips past every `<` check (`nan < 5` is false), so it must be refused up front.
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, f"[[sources]]\n{SOURCE}{key} = {value}\n"))
    assert err.value.problems == [
        p for p in err.value.problems if f"sources.x.{key}: must be a finite" in p
    ]
    assert len(err.value.problems) == 1


@pytest.mark.parametrize("value", ["nan", "inf", '"NaN"', '"Infinity"', '"-inf"'])
@pytest.mark.parametrize("key", ["included", "unit_price"])
def test_non_finite_billing_numbers_are_refused(tmp_path: Path, key: str, value: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, billing(**{key: value})))
    assert len(err.value.problems) == 1 and f"billing[0].{key}:" in err.value.problems[0]


def test_billing_defaults_bill_from_the_first_unit_in_usd(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, billing()))
    assert cfg.billing[0].currency == "USD"
    assert cfg.billing[0].included == 0


def test_config_doc_lists_every_key_and_override() -> None:
    from etl.config.alerts import ALERT_KEYS
    from etl.config.billing import BILLING_KEYS, TIER_KEYS
    from etl.config.loading import ENV_OVERRIDES
    from etl.config.notifiers import NOTIFIER_KEYS
    from etl.config.settings import TOP_KEYS
    from etl.config.sources import SOURCE_ANY_KEYS

    doc = (REPO / "docs" / "configuration.md").read_text()
    notifier_keys = set().union(*NOTIFIER_KEYS.values())
    for key in TOP_KEYS | SOURCE_ANY_KEYS | BILLING_KEYS | TIER_KEYS | ALERT_KEYS | notifier_keys:
        assert f"`{key}`" in doc, key
    for env in [*ENV_OVERRIDES, "USAGE_ETL_CONFIG", "USAGE_ETL_SQLITE_BUSY_TIMEOUT_MS"]:
        assert f"`{env}`" in doc, env
    assert "USD" in doc and "--database-url" in doc


def test_non_utf8_config_is_one_line_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'timezone = "UTC"\na = "\xff"\n')
    result = CliRunner().invoke(cli, ["--config", str(path), "status"])
    assert result.exit_code == 2
    assert result.stderr == f"usage-etl: error: config file {path}: not UTF-8 (byte 0xff on line 2)\n"


def test_non_utf8_token_file_is_one_line_exit_2_on_collect(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_bytes(b"tok\xffen\n")
    path = write(
        tmp_path,
        f'database_url = "sqlite:///{tmp_path / "u.db"}"\n'
        f'[[sources]]\nname = "x"\nkind = "nected"\nbase_url = "http://127.0.0.1:9"\n'
        f'api_key_file = "{token}"\n',
    )
    result = CliRunner().invoke(cli, ["--config", path, "collect"])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines() == [
        f"usage-etl: error: sources.x.api_key_file ({token}): file is not UTF-8 (byte 0xff on line 1)"
    ]


@pytest.mark.parametrize(
    ("env", "value", "needle"),
    [
        ("USAGE_ETL_TIMEZONE", "Bad/Zone", "$USAGE_ETL_TIMEZONE: 'Bad/Zone' is not an IANA time zone name"),
        ("USAGE_ETL_DATABASE_URL", "mysql://u:pw@h/db", "$USAGE_ETL_DATABASE_URL: scheme 'mysql' is not supported"),
        ("USAGE_ETL_REPORTS_DIR", "a\x01b", "$USAGE_ETL_REPORTS_DIR: must not contain control characters"),
        ("USAGE_ETL_SPOOL_DIR", "  ", "$USAGE_ETL_SPOOL_DIR: must be a non-empty string"),
    ],
)
def test_a_bad_override_names_the_variable_not_the_file(
    tmp_path: Path, env: str, value: str, needle: str
) -> None:
    path = write(tmp_path, GOOD)
    result = CliRunner().invoke(cli, ["--config", path, "status"], env={env: value})
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"usage-etl: error: {needle}"), lines
    assert path not in result.stderr and "pw" not in result.stderr


def test_a_bad_database_url_option_names_the_option(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    result = CliRunner().invoke(cli, ["--config", path, "--database-url", "", "status"])
    assert result.exit_code == 2
    assert result.stderr == "usage-etl: error: --database-url: must be a non-empty string\n"


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
def test_each_single_problem_is_named_by_its_key(tmp_path: Path, snippet: str, needle: str) -> None:
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


def test_a_config_file_saved_with_a_byte_order_mark_is_read_like_one_without(
    tmp_path: Path,
) -> None:
    text = ('database_url = "sqlite:///x.db"\ntimezone = "Europe/Berlin"\n\n[[sources]]\n'
            'name = "rules"\nkind = "nected"\napi_key_env = "UNSET_BOM_KEY"\n'
            "interval_seconds = 120\n")
    (tmp_path / "bom.toml").write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())
    config = load_config(str(tmp_path / "bom.toml"))
    assert (config.timezone, [(s.name, s.interval_seconds) for s in config.sources]) == (
        "Europe/Berlin", [("rules", 120)])
    # A mistake further down is still named by its line, as without the mark.
    (tmp_path / "bad.toml").write_bytes(b"\xef\xbb\xbf" + b'timezone = "UTC"\nname = \n')
    with pytest.raises(ConfigError) as caught:
        load_config(str(tmp_path / "bad.toml"))
    assert "not valid TOML" in str(caught.value) and "line 2" in str(caught.value)


@pytest.mark.parametrize("origin", ["file", "env", "option"])
def test_a_database_folder_that_does_not_exist_names_where_the_url_came_from(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, origin: str) -> None:
    # It said "database_url: folder ... does not exist" whatever set the URL, sending the
    # user to a config file that may not even mention it.
    url = f"sqlite:///{tmp_path}/gone/usage.db"
    path = write(tmp_path, f'database_url = "{url}"\n' if origin == "file" else "")
    args = ["--config", path]
    if origin == "env":
        monkeypatch.setenv("USAGE_ETL_DATABASE_URL", url)
    if origin == "option":
        args += ["--database-url", url]
    result = CliRunner().invoke(cli, [*args, "status"])
    assert result.exit_code == 2
    label = {"file": f"{path}: database_url", "env": "$USAGE_ETL_DATABASE_URL",
             "option": "--database-url"}[origin]
    assert result.stderr == (f"usage-etl: error: {label}: folder {tmp_path}/gone does not "
                             "exist\n")
