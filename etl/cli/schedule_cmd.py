"""`usage-etl schedule | status`: the daemon and its health."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []
