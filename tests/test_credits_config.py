"""The config keys of SPEC 11: cycle_day, valid_from/valid_until, [[credits]], credit alerts."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner

from etl.cli import cli
from etl.config import Condition, Credit, load_config

SOURCES = ('[[sources]]\nname = "rules"\nkind = "nected"\napi_key_env = "K"\n'
           '[[notifiers]]\nname = "ops"\nkind = "webhook"\nurl_env = "HOOK"\n')
RULE = ('[[billing]]\nsource = "rules"\nmetric = "invocations"\naggregation = "increase"\n'
        'unit_price = "0.002"\n')
CREDIT = ('[[credits]]\nname = "prepaid"\nsource = "rules"\namount = "500.00"\n'
          'currency = "USD"\ngranted = 2026-11-01\n')


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "usage-etl.toml"
    path.write_text(SOURCES + text)
    return str(path)


def test_cycle_day_plan_validity_credits_and_credit_alerts_are_read_into_typed_config(
        tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, (
        RULE + 'cycle_day = 15\nvalid_until = "2026-06-15"\n'
        + RULE.replace('"0.002"', '"0.001"') + 'cycle_day = 15\nvalid_from = 2026-06-15\n'
        + CREDIT + 'expires = "2027-11-01"\n'
        + '[[credits]]\nname = "yen"\nsource = "rules"\namount = 1000\ncurrency = "JPY"\n'
          'granted = "2026-01-01"\n'
        + '[[alerts]]\nname = "low"\ncredit = "prepaid"\ncredit_below = "50.00"\n'
          'notify = ["ops"]\n'
        + '[[alerts]]\nname = "out"\ncredit = "yen"\nprojected_credit_exhausted = true\n')))
    old, new = cfg.billing
    assert (old.cycle_day, old.valid_from, old.valid_until) == (15, None, date(2026, 6, 15))
    assert (new.valid_from, new.unit_price) == (date(2026, 6, 15), Decimal("0.001"))
    assert cfg.credits == (
        Credit("prepaid", "rules", Decimal("500.00"), "USD", date(2026, 11, 1),
               date(2027, 11, 1)),
        Credit("yen", "rules", Decimal(1000), "JPY", date(2026, 1, 1)))
    low, out = cfg.alerts
    assert (low.condition, low.credit, low.threshold, low.source) == (
        Condition.CREDIT_BELOW, "prepaid", Decimal("50.00"), None)
    assert (out.condition, out.credit) == (Condition.PROJECTED_CREDIT_EXHAUSTED, "yen")


@pytest.mark.parametrize(("text", "key", "message"), [
    (RULE + "cycle_day = 29\n", "billing[0].cycle_day", "from 1 to 28"),
    (RULE + "cycle_day = 0\n", "billing[0].cycle_day", "from 1 to 28"),
    # A date written as a string is fine; a bad one is named as a bad date, not as a string.
    (RULE + 'valid_from = "15/01/2026"\n', "billing[0].valid_from",
     "'15/01/2026' is not a date (expected YYYY-MM-DD"),
    (RULE + 'valid_from = 2026-01-15T00:00:00\n', "billing[0].valid_from",
     "must be a date such as 2026-01-15, not a date/time"),
    (CREDIT.replace("granted = 2026-11-01", 'granted = "2026-02-30"'), "credits.prepaid.granted",
     "'2026-02-30' is not a date (expected YYYY-MM-DD"),
    (RULE + 'valid_from = 2026-05-01\nvalid_until = 2026-05-01\n', "billing[0].valid_until",
     "not after valid_from"),
    (RULE + 'valid_until = 2026-07-01\n' + RULE + 'valid_from = 2026-06-01\n',
     "billing[1].valid_from", "2026-06-01 is inside the validity of billing[0]"),
    (RULE + 'valid_from = 2026-06-01\n' + RULE + 'valid_until = 2026-07-01\n',
     "billing[0].valid_from", "2026-06-01 is inside the validity of billing[1]"),
    (RULE + RULE, "billing[1].valid_from", "unset is inside the validity of billing[0]"),
    (CREDIT.replace('"rules"', '"nope"'), "credits.prepaid.source", "'nope' is not one"),
    (CREDIT.replace('"500.00"', '"-5"'), "credits.prepaid.amount", "above 0"),
    (CREDIT.replace('"500.00"', '"0"'), "credits.prepaid.amount", "above 0"),
    (CREDIT.replace('"500.00"', '"5.001"'), "credits.prepaid.amount",
     "more decimals than USD's minor unit (2)"),
    (CREDIT.replace('"500.00"', '"5.5"').replace("USD", "JPY"), "credits.prepaid.amount",
     "JPY's minor unit (0)"),
    (CREDIT + "expires = 2026-11-01\n", "credits.prepaid.expires", "not after granted"),
    (CREDIT.replace("granted = 2026-11-01\n", ""), "credits.prepaid.granted", "required"),
    (CREDIT + "colour = 1\n", "credits.prepaid.colour", "unknown key"),
    # A credit refused for one key is still declared: its alert is not "not one" too.
    (CREDIT.replace('"USD"', '"usd"') + '[[alerts]]\nname = "a"\ncredit = "prepaid"\n'
     'credit_below = 5\n', "credits.prepaid.currency", "three-letter code"),
    # An empty string is not "not a string".
    (RULE + 'unit = ""\n', "billing[0].unit",
     "at most 200 printable characters, not an empty string"),
    (CREDIT + '[[alerts]]\nname = "a"\ncredit = "other"\ncredit_below = 5\n',
     "alerts.a.credit", "'other' is not one"),
    (CREDIT + '[[alerts]]\nname = "a"\ncredit = "prepaid"\nsource = "rules"\n'
              'credit_below = 5\n', "alerts.a.source", "remove source"),
    (CREDIT + '[[alerts]]\nname = "a"\ncredit = "prepaid"\n'
              'projected_credit_exhausted = 1\n', "alerts.a.projected_credit_exhausted",
     "must be true"),
])
def test_a_bad_spec_11_key_is_refused_with_exit_2_and_one_line_naming_it(
        tmp_path: Path, text: str, key: str, message: str) -> None:
    path = write(tmp_path, text)
    result = CliRunner().invoke(cli, ["--config", path, "status"])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"usage-etl: error: {path}: {key}: "), lines
    assert message in lines[0], lines
