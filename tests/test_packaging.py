"""The declared lower bounds: .ci/minimums.txt pins exactly what pyproject.toml declares."""

from __future__ import annotations

import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.factories import REPO

# Tools the minimums job does not run (it runs pytest only): their bounds are not pinned.
NOT_RUN_AT_MINIMUMS = {"ruff", "mypy", "types-requests", "usage-etl"}


def declared_lower_bounds() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        lines.extend(extra)
    bounds: dict[str, str] = {}
    for line in lines:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        if name in NOT_RUN_AT_MINIMUMS:
            continue
        lows = [spec.version for spec in req.specifier if spec.operator == ">="]
        assert len(lows) == 1, f"{line}: needs exactly one lower bound (>=)"
        bounds[name] = lows[0]
    return bounds


def pinned_minimums() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (REPO / ".ci" / "minimums.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    return pins


def padded(version: str) -> str:
    """8.1 -> 8.1.0: a bound of `>=8.1` means 8.1.0, the first release pip would take."""
    parts = version.split(".")
    return ".".join(parts + ["0"] * (3 - len(parts))) if version[0].isdigit() else version


def test_the_minimums_file_pins_exactly_every_declared_lower_bound() -> None:
    declared = {name: padded(v) for name, v in declared_lower_bounds().items()}
    pinned = {name: padded(v) for name, v in pinned_minimums().items()}
    assert pinned == declared



def test_every_python_package_of_the_source_is_installed_by_the_wheel() -> None:
    # A package missing from [tool.setuptools] packages imports from a clone but not once
    # installed (etl.config became a package: this is what would have caught it).
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(init.parent.relative_to(REPO).parts)
             for top in ("etl", "reports") for init in (REPO / top).rglob("__init__.py")}
    assert found - listed == set()
