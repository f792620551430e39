"""scripts/focus-validate.sh, the CI step that runs the FOCUS validator (SPEC 12).

The validator itself runs in CI (.ci/run, after the suite) in its own Python 3.12
environment; here: how its output is judged (it exits 0 even when rules fail) and the skip
where no such Python can be had.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.factories import REPO

SCRIPT = REPO / "scripts" / "focus-validate.sh"
# The shape of focus-validator 2.2.1's console output (--show-violations), shortened.
HEADER = "\n=== Validation Results ===\nTotal: 578 | Pass: 175 | Fail: {fail} | Skipped: 397\n"
SKIPPED = ("⏭️ AvailabilityZone-C-000-C: SKIPPED  (violations=0, reason=Rule skipped - all "
           "child rules were skipped)\n")
INVOICE = "❌ InvoiceId-C-004-C: FAIL  (violations=5, msg=InvoiceId MUST be NULL., 3.7ms)\n"
CONSUMED = ("❌ ConsumedQuantity-C-006-C: FAIL  (violations=1, msg=Validation rule "
            "ConsumedQuantity-C-006-C failed, 0.5ms)\n")
BILLED = ("❌ BilledCost-C-001-M: FAIL  (violations=3, msg=BilledCost MUST be of type "
          "DECIMAL, DOUBLE, or FLOAT., 5.4ms)\n")


def judge(tmp_path: Path, output: str) -> subprocess.CompletedProcess[str]:
    saved = tmp_path / "validator.txt"
    saved.write_text(output, encoding="utf-8")
    return subprocess.run(["bash", str(SCRIPT), "--verdict", str(saved)], capture_output=True,
                          text=True, timeout=60)


def test_only_the_validators_own_contradictions_failing_passes_the_step(tmp_path: Path) -> None:
    proc = judge(tmp_path, HEADER.format(fail=2) + SKIPPED + INVOICE + CONSUMED)
    assert proc.returncode == 0, proc.stdout
    assert proc.stdout.splitlines() == [
        "focus-validate: 578 rules: 175 passed, 2 failed (2 of them the validator's known "
        "contradictions), 397 skipped"]


def test_any_other_failed_rule_fails_the_step_naming_it(tmp_path: Path) -> None:
    proc = judge(tmp_path, HEADER.format(fail=2) + INVOICE + BILLED)
    assert proc.returncode == 1
    assert proc.stdout.splitlines()[-1] == "focus-validate: FAILED rules: BilledCost-C-001-M"


def test_output_without_the_summary_fails_the_step(tmp_path: Path) -> None:
    proc = judge(tmp_path, "Traceback (most recent call last):\n  ImportError: numpy\n")
    assert proc.returncode == 1
    assert "printed no summary" in proc.stdout


def test_without_a_python_3_12_the_step_is_skipped_with_one_line(tmp_path: Path) -> None:
    env = dict(os.environ, FOCUS_VALIDATOR_PYTHON=str(tmp_path / "no-python3.12"),
               FOCUS_VALIDATOR_CACHE=str(tmp_path / "cache"))
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env,
                          timeout=60)
    assert proc.returncode == 0
    assert proc.stdout.startswith("focus-validate: skipped: no CPython 3.12")
    assert not (tmp_path / "cache").exists()
