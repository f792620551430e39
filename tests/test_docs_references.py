"""The docs name only files and modules that exist: a moved module must take its docs along."""

from __future__ import annotations

import re
from pathlib import Path

from tests.factories import REPO

# `etl/store/bulk.py`, `reports/read/` or `scripts/demo.sh:12` in a code span.
PATH_SPAN = re.compile(r"`((?:etl|reports|benchmarks|tests|scripts|migrations|notebooks|docs)/[\w/.-]*)")
# `etl.store.writer.record_polls(...)` in a code span: a module, then perhaps one attribute.
MODULE_SPAN = re.compile(r"`((?:etl|reports)(?:\.\w+)+)")
# Installed under another name (pyproject.toml's package-dir).
MAPPED = {("etl", "migrations"): REPO / "migrations"}


def documents() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def module_file(parts: list[str]) -> Path | None:
    """The file defining the dotted module PARTS, or None."""
    base = MAPPED.get(tuple(parts[:2]), REPO.joinpath(*parts[:2]))
    path = base.joinpath(*parts[2:])
    for candidate in (path.with_suffix(".py"), path / "__init__.py", path / "env.py"):
        if candidate.is_file():
            return candidate
    return None


def unresolved(name: str) -> bool:
    """True when no module of that dotted name exists, nor a module defining its last part."""
    parts = name.split(".")
    if module_file(parts) is not None:
        return False
    owner = module_file(parts[:-1])
    if owner is None or not owner.is_file():
        return True
    return re.search(rf"\b{re.escape(parts[-1])}\b", owner.read_text()) is None


def test_every_file_and_module_the_docs_name_exists() -> None:
    missing = []
    for doc in documents():
        text = doc.read_text()
        for match in PATH_SPAN.finditer(text):
            path = match.group(1).rstrip(".")
            if not (REPO / path).exists():
                missing.append(f"{doc.name}: {path}")
        for match in MODULE_SPAN.finditer(text):
            if unresolved(match.group(1)):
                missing.append(f"{doc.name}: {match.group(1)}")
    assert missing == []


def test_the_reference_check_catches_a_moved_module() -> None:
    assert unresolved("etl.bulk.bulk_store")
    assert unresolved("etl.store.bulk.no_such_function")
    assert not unresolved("etl.store.bulk.bulk_store")
    assert not unresolved("etl.migrations")
