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
# A second source, for credits and rules of another source.
JP_SOURCE = '[[sources]]\nname = "jp"\nkind = "nected"\napi_key_env = "K"\n'
CREDIT = ('[[credits]]\nname = "prepaid"\nsource = "rules"\namount = "500.00"\n'
          'currency = "USD"\ngranted = 2026-11-01\n')


PROJECTION = ('[[alerts]]\nname = "busy"\nsource = "rules"\nmetric = "invocations"\n'
              'projected_amount_above = "100"\n')


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
        + JP_SOURCE + RULE.replace('"rules"', '"jp"') + 'currency = "JPY"\n'
        + '[[credits]]\nname = "yen"\nsource = "jp"\namount = 1000\ncurrency = "JPY"\n'
          'granted = "2026-01-01"\n'
        + '[[alerts]]\nname = "low"\ncredit = "prepaid"\ncredit_below = "50.00"\n'
          'notify = ["ops"]\n'
        + '[[alerts]]\nname = "out"\ncredit = "yen"\nprojected_credit_exhausted = true\n')))
    old, new, yen = cfg.billing
    assert (old.cycle_day, old.valid_from, old.valid_until) == (15, None, date(2026, 6, 15))
    assert (new.valid_from, new.unit_price) == (date(2026, 6, 15), Decimal("0.001"))
    assert cfg.credits == (
        Credit("prepaid", "rules", Decimal("500.00"), "USD", date(2026, 11, 1),
               date(2027, 11, 1)),
        Credit("yen", "jp", Decimal(1000), "JPY", date(2026, 1, 1)))
    assert (yen.source, yen.currency) == ("jp", "JPY")
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
    (RULE + CREDIT.replace("granted = 2026-11-01", 'granted = "2026-02-30"'), "credits.prepaid.granted",
     "'2026-02-30' is not a date (expected YYYY-MM-DD"),
    (RULE + 'valid_from = 2026-05-01\nvalid_until = 2026-05-01\n', "billing[0].valid_until",
     "not after valid_from"),
    # A validity holding no cycle day would load and never price anything (like a credit
    # that can never pay); one holding exactly one cycle day prices that period.
    (RULE + 'valid_from = 2026-06-02\nvalid_until = 2026-07-01\n', "billing[0].valid_until",
     "2026-07-01: no period starting on day 1 (cycle_day) begins from valid_from 2026-06-02 "
     "to before it, so the rule would never price anything"),
    (RULE + 'cycle_day = 15\nvalid_from = 2026-06-16\nvalid_until = 2026-07-15\n',
     "billing[0].valid_until", "no period starting on day 15 (cycle_day)"),
    # A refused cycle_day is the one line: the validity is not judged by a stand-in day.
    (RULE + 'cycle_day = 31\nvalid_from = 2026-06-02\nvalid_until = 2026-06-20\n',
     "billing[0].cycle_day", "from 1 to 28, not 31"),
    (RULE + 'cycle_day = "15"\nvalid_from = 2026-06-02\nvalid_until = 2026-06-20\n',
     "billing[0].cycle_day", "from 1 to 28, not '15'"),
    # A projection on the series of a rule refused for its own keys is not also told the
    # series has no rule (as a credit of its source is not checked).
    (RULE + 'cycle_day = 40\n' + PROJECTION, "billing[0].cycle_day", "not 40"),
    (RULE.replace('"0.002"', '"-1"') + PROJECTION, "billing[0].unit_price", "from 0 to 10^15"),
    (RULE + 'valid_until = 2026-07-01\n' + RULE + 'valid_from = 2026-06-01\n',
     "billing[1].valid_from", "2026-06-01 is inside the validity of billing[0]"),
    (RULE + 'valid_from = 2026-06-01\n' + RULE + 'valid_until = 2026-07-01\n',
     "billing[0].valid_from", "2026-06-01 is inside the validity of billing[1]"),
    (RULE + RULE, "billing[1].valid_from", "unset is inside the validity of billing[0]"),
    (RULE + CREDIT.replace('"rules"', '"nope"'), "credits.prepaid.source", "'nope' is not one"),
    (RULE + CREDIT.replace('"500.00"', '"-5"'), "credits.prepaid.amount", "above 0"),
    (RULE + CREDIT.replace('"500.00"', '"0"'), "credits.prepaid.amount", "above 0"),
    (RULE + CREDIT.replace('"500.00"', '"5.001"'), "credits.prepaid.amount",
     "more decimals than USD's minor unit (2)"),
    (RULE + CREDIT.replace('"500.00"', '"5.5"').replace("USD", "JPY"), "credits.prepaid.amount",
     "JPY's minor unit (0)"),
    (RULE + CREDIT + "expires = 2026-11-01\n", "credits.prepaid.expires", "not after granted"),
    (RULE + CREDIT.replace("granted = 2026-11-01\n", ""), "credits.prepaid.granted", "required"),
    (RULE + CREDIT + "colour = 1\n", "credits.prepaid.colour", "unknown key"),
    # A credit refused for one key is still declared: its alert is not "not one" too.
    (RULE + CREDIT.replace('"USD"', '"usd"') + '[[alerts]]\nname = "a"\ncredit = "prepaid"\n'
     'credit_below = 5\n', "credits.prepaid.currency", "three-letter code"),
    # An empty string is not "not a string".
    (RULE + 'unit = ""\n', "billing[0].unit",
     "at most 200 printable characters, not an empty string"),
    (RULE + CREDIT + '[[alerts]]\nname = "a"\ncredit = "other"\ncredit_below = 5\n',
     "alerts.a.credit", "'other' is not one"),
    (RULE + CREDIT + '[[alerts]]\nname = "a"\ncredit = "prepaid"\nsource = "rules"\n'
              'credit_below = 5\n', "alerts.a.source", "remove source"),
    (RULE + CREDIT + '[[alerts]]\nname = "a"\ncredit = "prepaid"\n'
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


EURO_RULE = RULE + 'currency = "EUR"\n'


@pytest.mark.parametrize(("text", "key", "message"), [
    # Rules of its source in another currency only: the credit's currency is what is wrong.
    (EURO_RULE + CREDIT, "credits.prepaid.currency",
     "USD: no billing rule of source 'rules' is priced in USD (its rules use EUR)"),
    # Both currencies default to USD: an unset one is named too.
    (EURO_RULE + CREDIT.replace('currency = "USD"\n', ""), "credits.prepaid.currency",
     "USD: no billing rule of source 'rules' is priced in USD (its rules use EUR)"),
    (RULE + CREDIT.replace('"USD"', '"EUR"'), "credits.prepaid.currency",
     "EUR: no billing rule of source 'rules' is priced in EUR (its rules use USD)"),
    # Its source has no billing rule at all (another source's rule pays nothing of it).
    (CREDIT, "credits.prepaid.source",
     "no [[billing]] rule prices source 'rules', so the credit would never pay anything"),
    (JP_SOURCE + RULE.replace('"rules"', '"jp"') + CREDIT, "credits.prepaid.source",
     "no [[billing]] rule prices source 'rules'"),
    # Granted after every rule of its currency stopped pricing periods.
    (RULE + 'valid_until = 2026-06-01\n' + CREDIT, "credits.prepaid.granted",
     "2026-11-01: no period of source 'rules' priced in USD starts on or after it, so the "
     "credit would never pay anything (its USD rules price periods starting on day 1 until "
     "2026-06-01)"),
    # Expired before the first period priced in its currency starts.
    (RULE + 'valid_from = 2027-01-01\n' + CREDIT + 'expires = 2026-12-15\n',
     "credits.prepaid.expires",
     "2026-12-15: no period of source 'rules' priced in USD starts from granted 2026-11-01 "
     "to before it"),
    # Between two period starts (the 15th): no period starts while it applies.
    (RULE + 'cycle_day = 15\n' + CREDIT.replace("2026-11-01", "2026-11-16")
     + 'expires = 2026-12-10\n', "credits.prepaid.expires",
     "(its USD rules price periods starting on day 15)"),
    # A credit alert on such a credit: the credit's own line is the one line.
    (EURO_RULE + CREDIT + '[[alerts]]\nname = "low"\ncredit = "prepaid"\n'
     'credit_below = "50.00"\n', "credits.prepaid.currency", "(its rules use EUR)"),
    (CREDIT + '[[alerts]]\nname = "out"\ncredit = "prepaid"\n'
     'projected_credit_exhausted = true\n', "credits.prepaid.source",
     "no [[billing]] rule prices source 'rules'"),
    # A rule refused for its own key: its line only, the credit is not also blamed for it.
    (RULE.replace('"0.002"', '"-1"') + CREDIT, "billing[0].unit_price", "must be a number from 0"),
])
def test_a_credit_that_can_never_pay_is_refused_with_exit_2_and_one_line_naming_why(
        tmp_path: Path, text: str, key: str, message: str) -> None:
    path = write(tmp_path, text)
    result = CliRunner().invoke(cli, ["--config", path, "status"])
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"usage-etl: error: {path}: {key}: "), line
    assert message in line, line


@pytest.mark.parametrize("text", [
    # The last period of the old plan starts on the day the credit is granted.
    RULE + 'cycle_day = 15\nvalid_until = 2026-06-15\n'
    + CREDIT.replace("2026-11-01", "2026-05-15") + 'expires = 2026-05-16\n',
    # A later plan in another currency: the credit pays its periods.
    RULE + 'valid_until = 2026-06-01\n' + EURO_RULE + 'valid_from = 2026-06-01\n'
    + CREDIT.replace('"USD"', '"EUR"'),
    # No currency anywhere: both are USD.
    RULE + CREDIT.replace('currency = "USD"\n', ""),
])
def test_a_credit_with_a_period_to_pay_loads(tmp_path: Path, text: str) -> None:
    (credit,) = load_config(write(tmp_path, text)).credits
    assert credit.name == "prepaid"


def test_a_rule_valid_for_one_cycle_day_loads_and_prices_the_period_starting_then(
        tmp_path: Path) -> None:
    text = RULE + 'cycle_day = 15\nvalid_from = 2026-06-15\nvalid_until = 2026-06-16\n'
    (rule,) = load_config(write(tmp_path, text)).billing
    assert rule.first_period(date(2026, 1, 1), None) == date(2026, 6, 15)
    assert rule.first_period(date(2026, 6, 16), None) is None
