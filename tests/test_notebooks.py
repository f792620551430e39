"""The notebooks in notebooks/: committed without outputs, and they run against a fresh demo database."""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.factories import IN_CI

if IN_CI:  # CI installs the notebooks extra: a missing package must fail, not skip
    import ipykernel.kernelspec as ipykernel_spec
    import nbclient
    import nbformat
else:
    nbformat = pytest.importorskip("nbformat", reason="pip install -e '.[notebooks]'")
    nbclient = pytest.importorskip("nbclient", reason="pip install -e '.[notebooks]'")
    ipykernel_spec = pytest.importorskip("ipykernel.kernelspec",
                                         reason="pip install -e '.[notebooks]'")

from etl.runtime.demo import run_demo  # noqa: E402
from tests.factories import REPO

NOTEBOOKS = REPO / "notebooks"
NAMES = ["usage_analysis.ipynb", "billing_reconciliation.ipynb"]
KERNEL = "usage-etl-tests"
ENV_VARS = ("USAGE_ETL_CONFIG", "USAGE_ETL_DATABASE_URL", "USAGE_ETL_INVOICE", "USAGE_ETL_MONTH",
            "USAGE_ETL_TOLERANCE_PCT", "USAGE_ETL_DAYS", "USAGE_ETL_TIMEZONE")


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_committed_without_outputs(name: str) -> None:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code
    for cell in code:
        assert cell.execution_count is None, cell.source[:60]
        assert cell.outputs == [], cell.source[:60]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh `usage-etl demo` folder (a short history: enough for every chart)."""
    folder = tmp_path_factory.mktemp("nb-demo")
    result = run_demo(folder / "usage-etl-demo", days=8, rounds=1, echo=lambda _line: None)
    return result.config


@pytest.fixture(scope="module")
def kernel_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A kernelspec for this very interpreter, so a fresh clone needs no `ipykernel install`."""
    prefix = tmp_path_factory.mktemp("jupyter")
    ipykernel_spec.install(kernel_name=KERNEL, display_name="usage-etl tests", prefix=str(prefix))
    return prefix / "share" / "jupyter"


@pytest.fixture
def notebook_env(demo: Path, kernel_dir: Path, monkeypatch: pytest.MonkeyPatch,
                 tmp_path: Path) -> Iterator[Path]:
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("USAGE_ETL_CONFIG", str(demo))
    monkeypatch.setenv("JUPYTER_PATH", os.pathsep.join(
        p for p in (str(kernel_dir), os.environ.get("JUPYTER_PATH", "")) if p))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    # The kernel runs in an empty folder, so it reads the demo only through the environment.
    yield tmp_path


def execute(name: str, cwd: Path) -> nbformat.NotebookNode:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = nbclient.NotebookClient(nb, kernel_name=KERNEL, timeout=120,
                                     resources={"metadata": {"path": str(cwd)}})
    client.execute()  # a cell that raises fails the test (CellExecutionError)
    return nb


def outputs(nb: nbformat.NotebookNode) -> tuple[str, int]:
    """All text the notebook showed, and how many images (charts) it drew."""
    text, images = [], 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            text.append(out.get("text", ""))
            data = out.get("data", {})
            text.append(data.get("text/plain", ""))
            images += "image/png" in data
    return "\n".join(text), images


def test_usage_analysis_runs_on_the_demo(notebook_env: Path) -> None:
    nb = execute("usage_analysis.ipynb", notebook_env)
    text, images = outputs(nb)
    # The limits chart, the heatmap, the warning/critical bars, invocations per day, projection.
    assert images >= 5
    assert "busiest slot:" in text, text
    # The busiest-days table and the hours at warning / critical per gauge.
    assert "peak_pct" in text and "critical_minutes" in text, text
    assert "hours at warning" in text and "hours at critical" in text, text
    assert "rules/invocations:" in text and "month-end projection" in text, text
    # The Parquet lake, queried with DuckDB: samples per source and month.
    assert re.search(r"parquet lake: [1-9][0-9]* samples", text), text
    assert "month" in text and "peak" in text, text
    assert "Traceback" not in text


def test_database_url_variable_overrides_the_config(notebook_env: Path, demo: Path,
                                                    tmp_path_factory: pytest.TempPathFactory,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """An analyst pointing $USAGE_ETL_DATABASE_URL at a copy of the history reads that copy."""
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    copy = elsewhere / "copy.db"
    src = sqlite3.connect(demo.parent / "usage.db")
    dst = sqlite3.connect(copy)
    src.backup(dst)
    src.close()
    dst.close()
    # The config's own database does not exist, so only the variable can make this run.
    text = demo.read_text()
    moved = re.sub(r'^database_url = .*$', 'database_url = "sqlite:///nowhere/missing.db"', text,
                   flags=re.MULTILINE)
    assert moved != text
    config = elsewhere / "usage-etl.toml"
    config.write_text(moved)
    monkeypatch.setenv("USAGE_ETL_CONFIG", str(config))
    monkeypatch.setenv("USAGE_ETL_DATABASE_URL", f"sqlite:///{copy}")
    nb = execute("billing_reconciliation.ipynb", notebook_env)
    text, _ = outputs(nb)
    assert "wrote a sample invoice" in text


def test_billing_reconciliation_runs_on_the_demo(notebook_env: Path) -> None:
    nb = execute("billing_reconciliation.ipynb", notebook_env)
    text, images = outputs(nb)
    assert images >= 2  # the differences and the coverage
    # The sample invoice's deliberate differences show up as such.
    assert "wrote a sample invoice" in text
    # The demo's history vendor (SPEC 10) is billed too: its invoice row matches.
    for status, count in (("match", 2), ("mismatch", 1), ("missing_metered", 1)):
        assert re.search(rf"^{status} +{count}$", text, re.MULTILINE), (status, text)
    assert "rules/invocations: mismatch: coverage" in text  # the reason behind the difference
