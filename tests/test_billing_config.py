"""The billing keys of SPEC 5: quantities and pricing read into typed rules, bad ones refused."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner

from etl.cli import cli
from etl.config import Aggregation, Pricing, Tier, load_config

SOURCES = ('[[sources]]\nname = "rules"\nkind = "nected"\napi_key_env = "K"\n'
           '[[sources]]\nname = "ws"\nkind = "wiresocket"\nregion = "eu"\ntoken_env = "T"\n')
TIERS = 'tiers = [{up_to = 1000, unit_price = "0.01"}, {unit_price = "0.005"}]\n'


def config_file(tmp_path: Path, *rules: str) -> str:
    path = tmp_path / "usage-etl.toml"
    path.write_text(SOURCES + "".join(
        '[[billing]]\nsource = "rules"\nmetric = "invocations"\n'
        + ("" if "aggregation" in r else 'aggregation = "increase"\n') + r for r in rules))
    return str(path)


def test_every_pricing_and_aggregation_is_read_into_typed_rules(tmp_path: Path) -> None:
    path = tmp_path / "usage-etl.toml"
    path.write_text(SOURCES + """
[[billing]]
source = "rules"
metric = "invocations"
aggregation = "increase"
pricing = "graduated"
tiers = [{up_to = 1000, unit_price = "0.01", flat_price = 5}, {unit_price = 0.005}]
flat_fee = "49"
minimum = 100
currency = "JPY"

[[billing]]
source = "ws"
metric = "connections"
aggregation = "p95"
pricing = "package"
package_size = 10
package_price = "2.5"

[[billing]]
source = "ws"
metric = "documents"
aggregation = "unit_hours"
""" 'unit_price = "0.001"\n')
    cfg = load_config(str(path))
    grad, pack, per = cfg.billing
    assert (grad.pricing, grad.aggregation) == (Pricing.GRADUATED, Aggregation.INCREASE)
    assert grad.tiers == (Tier(Decimal(1000), Decimal("0.01"), Decimal(5)),
                          Tier(None, Decimal("0.005")))
    assert (grad.flat_fee, grad.minimum, grad.unit_price, grad.currency) == (
        Decimal(49), Decimal(100), None, "JPY")
    assert (pack.pricing, pack.aggregation, pack.package_size, pack.package_price) == (
        Pricing.PACKAGE, Aggregation.P95, 10, Decimal("2.5"))
    assert (per.pricing, per.aggregation, per.unit_price) == (
        Pricing.PER_UNIT, Aggregation.UNIT_HOURS, Decimal("0.001"))
    assert (per.flat_fee, per.minimum) == (Decimal(0), Decimal(0))


BAD_RULES = [
    ('pricing = "graduated"\ntiers = [{up_to = 5000, unit_price = "0.01"}, '
     '{up_to = 1000, unit_price = "0.008"}, {unit_price = "0.005"}]\n',
     "billing[0].tiers[1].up_to: 1000 does not increase (the tier before ends at 5000)"),
    ('pricing = "volume"\ntiers = [{up_to = 10, unit_price = "1"}, '
     '{up_to = 10, unit_price = "1"}, {unit_price = "1"}]\n',
     "billing[0].tiers[1].up_to: 10 does not increase"),
    ('pricing = "graduated"\ntiers = [{up_to = 10, unit_price = "1"}, '
     '{up_to = 20, unit_price = "1"}]\n',
     "billing[0].tiers[1].up_to: the last tier must not have up_to"),
    ('pricing = "graduated"\ntiers = [{unit_price = "1"}, {unit_price = "1"}]\n',
     "billing[0].tiers[0].up_to: required on every tier but the last"),
    ('pricing = "graduated"\ntiers = [{up_to = 0, unit_price = "1"}, {unit_price = "1"}]\n',
     "billing[0].tiers[0].up_to: must be a number above 0, up to 10^15"),
    ('pricing = "graduated"\ntiers = [{up_to = 10}, {unit_price = "1"}]\n',
     "billing[0].tiers[0].unit_price: required"),
    ('pricing = "graduated"\ntiers = [{up_to = 10, unit_price = "1", price = 2}, '
     '{unit_price = "1"}]\n', "billing[0].tiers[0].price: unknown key"),
    ('pricing = "graduated"\ntiers = []\n', "billing[0].tiers: required, an array of tables"),
    ('pricing = "volume"\n', "billing[0].tiers: required"),
    ('pricing = "graduated"\nunit_price = "0.01"\n' + TIERS,
     "billing[0].unit_price: not a key of graduated pricing (it takes tiers)"),
    ('pricing = "package"\npackage_size = 10\npackage_price = "1"\n' + TIERS,
     "billing[0].tiers: not a key of package pricing"),
    ('unit_price = "1"\npackage_size = 10\n', "billing[0].package_size: not a key of per_unit"),
    ('pricing = "package"\npackage_size = 0\npackage_price = "1"\n',
     "billing[0].package_size: required, a positive integer"),
    ('pricing = "package"\npackage_size = 2.5\npackage_price = "1"\n',
     "billing[0].package_size: required, a positive integer"),
    ('pricing = "package"\npackage_size = "10"\npackage_price = "1"\n',
     "billing[0].package_size: required, a positive integer"),
    ('pricing = "package"\npackage_size = -5\npackage_price = "1"\n',
     "billing[0].package_size: required, a positive integer"),
    ('pricing = "package"\npackage_size = 10\n', "billing[0].package_price: required"),
    ('pricing = "tiered"\n', "billing[0].pricing: must be one of: per_unit, package, "
     "graduated, volume"),
    ('unit_price = "1"\naggregation = "p99"\n', "billing[0].aggregation: must be one of"),
    ('unit_price = "1e999999999"\n',
     "billing[0].unit_price: must be a number from 0 to 10^15 with at most 12 decimal places "
     "(1e999999999 is too large to bill)"),
    ('unit_price = "0.0000000000001"\n',
     "billing[0].unit_price: must be a number from 0 to 10^15 with at most 12 decimal places"),
    ('unit_price = "1"\nflat_fee = "NaN"\n', "billing[0].flat_fee: must be a number from 0"),
    ('unit_price = "1"\nminimum = -1\n', "billing[0].minimum: must be a number from 0"),
    ('unit_price = "1"\nincluded = 1e16\n', "billing[0].included: must be a number from 0 to "
     "10^15 with at most 12 decimal places (1e+16 is too large to bill)"),
    ('pricing = "package"\npackage_size = 10000000000000000\npackage_price = "1"\n',
     "billing[0].package_size: required, a positive integer up to 10^15"),
    ('pricing = "graduated"\ntiers = [{up_to = 10, unit_price = "1", flat_price = "inf"}, '
     '{unit_price = "1"}]\n', "billing[0].tiers[0].flat_price: must be a number from 0"),
]


@pytest.mark.parametrize(("rule", "message"), BAD_RULES)
def test_a_malformed_billing_rule_is_refused_at_load_naming_the_key(
        tmp_path: Path, rule: str, message: str) -> None:
    path = config_file(tmp_path, rule)
    result = CliRunner().invoke(cli, ["--config", path, "status"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert lines and all(line.startswith(f"usage-etl: error: {path}: billing[0]")
                         for line in lines), lines
    assert any(message in line for line in lines), lines


def test_every_problem_of_every_rule_is_listed_at_once(tmp_path: Path) -> None:
    path = config_file(tmp_path, 'pricing = "package"\npackage_size = 0\n',
                       'pricing = "volume"\nunit_price = "1"\n' + TIERS)
    result = CliRunner().invoke(cli, ["--config", path, "status"])
    assert result.exit_code == 2
    keys = [line.split(": ")[3] for line in result.stderr.strip().splitlines()]
    assert keys == ["billing[0].package_size", "billing[0].package_price",
                    "billing[1].unit_price"]
