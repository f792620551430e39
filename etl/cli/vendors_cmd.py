"""`usage-etl vendors`: the source kinds installed, built in and from plugins (SPEC 7)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from etl.cli.context import AppContext

if TYPE_CHECKING:  # the registry (and its plugins) load only when the command runs
    from etl.vendors import VendorKind


def _metrics(kind: VendorKind) -> str:
    fixed = [f"{name} ({mtype})" for name, mtype in kind.metrics.items()]
    fixed += [f"{name}:KEY ({mtype}, one series per item)"
              for name, mtype in kind.series_metrics.items()]
    if not fixed and kind.configure is not None:
        return ("defined by each source ([[sources.metrics]]: counter or gauge; interval or "
                "gauge with [sources.window])")
    return ", ".join(fixed) or "none"


def _keys(kind: VendorKind) -> str:
    env_key, file_key = kind.secret_keys
    secret = f"{env_key} | {file_key}" + ("" if kind.secret_required else " (optional)")
    own = sorted(kind.config_keys)
    return ", ".join([*own, secret])


@click.command("vendors")
@click.pass_obj
def vendors(app: AppContext) -> None:
    """List the source kinds installed, their metrics and the config keys each takes.

    Built-in kinds, kinds from plugin packages (entry-point group usage_etl.vendors) and
    http_json; then the config's http_json sources with their metrics. A plugin that
    failed to load is named with the reason, and the command exits 1.

    \b
    Example:
      usage-etl vendors
      usage-etl --config usage-etl.toml vendors
    """
    from etl.config.sources import SOURCE_COMMON_KEYS
    from etl.vendors import KINDS, plugin_failures

    for kind in KINDS.values():
        summary = f": {kind.summary}" if kind.summary else ""
        click.echo(f"{kind.name} ({kind.provider}){summary}")
        click.echo(f"  metrics: {_metrics(kind)}")
        click.echo(f"  config keys: {_keys(kind)}")
    click.echo(f"every source also takes: {', '.join(sorted(SOURCE_COMMON_KEYS))}")
    defined = [s for s in app.config.sources if s.bound is not None]
    if defined:
        click.echo("sources defined in the config:")
        for src in defined:
            click.echo(f"  {src.name} ({src.kind}): {_metrics(src.vendor)}")
    failures = plugin_failures()
    for failure in failures:
        click.echo(f"plugin {failure.name} ({failure.target}) failed to load: {failure.reason}",
                   err=True)
    if failures:
        raise click.exceptions.Exit(1)


COMMANDS = [vendors]
