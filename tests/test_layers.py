"""The layers of docs/architecture.md hold: checked by import-linter and in fresh interpreters."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.factories import REPO


def test_every_import_contract_in_pyproject_is_kept() -> None:
    run = subprocess.run(
        [sys.executable, "-c",
         "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports())"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "BROKEN" not in run.stdout and "KEPT" in run.stdout


def loaded_modules_after(module: str) -> set[str]:
    """Every module (full dotted name) loaded by importing `module` in a fresh interpreter."""
    code = f"import json, sys; import {module}; print(json.dumps(sorted(sys.modules)))"
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, timeout=120, check=True)
    return set(json.loads(run.stdout))


def loaded_after(module: str) -> set[str]:
    """Top-level packages loaded by importing `module` in a fresh interpreter."""
    return {m.split(".")[0] for m in loaded_modules_after(module)}


@pytest.mark.parametrize(("module", "never"), [
    ("etl.collect.poll", {"sqlalchemy", "pandas", "click"}),
    ("etl.store.writer", {"requests", "pandas", "click"}),
    ("etl.store.archive", {"requests", "pandas", "click"}),
    ("etl.vendors", {"sqlalchemy", "requests", "pandas", "click"}),
    ("etl.config", {"sqlalchemy", "requests", "pandas", "click"}),
    ("reports.compute.billing", {"sqlalchemy", "alembic", "requests", "click"}),
    ("reports.compute.reconcile", {"sqlalchemy", "alembic", "requests", "click"}),
    ("reports.api", {"requests", "click"}),
    ("reports.names", {"pandas", "sqlalchemy"}),
])
def test_importing_a_side_loads_nothing_of_the_other_sides(module: str, never: set[str]) -> None:
    assert loaded_after(module) & never == set()


def test_reports_modules_never_load_the_http_side_at_run_time() -> None:
    loaded = loaded_after("reports.pipelines")
    assert "requests" not in loaded and "urllib3" not in loaded



@pytest.mark.parametrize(("module", "above"), [
    # The config sits below the alerts and the store (an alert rule is config; alerts read it).
    ("etl.config", ("etl.alerts", "etl.store", "etl.collect", "etl.runtime")),
    # The exception root names nothing of the vendor side (an outcome belongs to HttpFailure).
    ("etl.errors", ("etl.vendors", "etl.config", "etl.store")),
    # Report arithmetic converts epoch microseconds through etl.timefmt, not the ORM module.
    ("reports.compute.billing", ("etl.store", "etl.alerts", "reports.read", "reports.pipelines")),
    # The vendor side knows no config; the shared helpers know no package of ours.
    ("etl.vendors", ("etl.config", "etl.collect", "etl.store", "etl.alerts")),
    ("etl.timefmt", ("etl.vendors", "etl.config", "etl.store")),
    # The store and the collect side sit below the alerts.
    ("etl.store.writer", ("etl.alerts", "etl.collect", "etl.runtime")),
    ("etl.collect.poll", ("etl.alerts", "etl.store", "etl.runtime")),
])
def test_a_lower_layer_never_loads_a_layer_above_it(module: str, above: tuple[str, ...]) -> None:
    loaded = loaded_modules_after(module)
    assert sorted(m for m in loaded if m.startswith(above)) == []


MAX_MODULE_LINES = 450


def listed_long_modules() -> set[str]:
    """The modules docs/architecture.md lets run over MAX_MODULE_LINES, one line each."""
    doc = (REPO / "docs" / "architecture.md").read_text()
    section = doc.split("## Modules over 450 lines", 1)[1].split("\n## ", 1)[0]
    return {line.split("`")[1] for line in section.splitlines() if line.startswith("- `")}


def test_no_module_is_over_450_lines_unless_the_architecture_says_why() -> None:
    lengths = {str(path.relative_to(REPO)): len(path.read_text().splitlines())
               for top in ("etl", "reports") for path in (REPO / top).rglob("*.py")}
    long = {name for name, n in lengths.items() if n > MAX_MODULE_LINES}
    listed = listed_long_modules()
    assert long - listed == set(), "split them, or say in docs/architecture.md why not"
    assert {name: lengths.get(name) for name in listed - long} == {}, "no longer long: unlist"
