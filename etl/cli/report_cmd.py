"""`usage-etl report ... | reconcile`: the reports, built by the `reports` package."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []
