"""`usage-etl collect | import | export | simulate | demo`: getting snapshots in and out."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []
