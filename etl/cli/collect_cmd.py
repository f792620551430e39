"""`usage-etl collect | import | export | simulate | demo`: getting snapshots in and out."""

from __future__ import annotations

import sys
import time

import click

from etl.cli.context import AppContext


@click.command("collect")
@click.option("--source", "names", multiple=True, metavar="NAME",
              help="Poll only this source (repeatable); default: every source.")
@click.pass_obj
def collect(app: AppContext, names: tuple[str, ...]) -> None:
    """Poll each (named) source once now and store what came back.

    Prints one line per source (outcome, samples stored, latency). Exit status 0 when
    every source was polled, 1 when any failed, 2 for a bad config or a missing secret.

    \b
    Example:
      usage-etl collect
      usage-etl collect --source ws-prod --source rules
    """
    from etl.collect import collect_once

    config = app.config
    sources = config.select_sources(list(names))
    config.check_secrets(sources)
    results = collect_once(app.engine, config, names)
    width = max(len(r.source) for r in results)
    for r in results:
        latency = f"{r.latency_ms:.0f} ms" if r.latency_ms is not None else "-"
        line = (f"{r.source:<{width}}  {r.outcome:<16}  {r.samples_stored} samples  {latency}"
                f"  {r.tries} tries")
        if r.error:
            line += f"  {r.error}"
        click.echo(line)
    if any(not r.ok for r in results):
        sys.exit(1)


@click.command("simulate")
@click.option("--port", type=int, default=8081, show_default=True, help="Loopback port to listen on.")
@click.option("--token", default="sim-token", show_default=True,
              help="The WireSocket bearer token the simulator accepts.")
@click.option("--api-key", default="sim-key", show_default=True,
              help="The Nected API key the simulator accepts.")
@click.option("--seed", type=int, default=0, show_default=True, help="Traffic model seed.")
@click.option("--fault", type=click.Choice(["none", "rate_limit", "unavailable", "server_error",
                                            "unauthorized", "malformed", "slow", "oversize",
                                            "error_code"]),
              default="none", show_default=True, help="Answer every request with this fault.")
def simulate(port: int, token: str, api_key: str, seed: int, fault: str) -> None:
    """Run a simulated WireSocket + Nected vendor on 127.0.0.1 until Ctrl-C.

    WireSocket answers at http://127.0.0.1:PORT/usage, Nected at
    http://127.0.0.1:PORT/dev/usage; point a source's base_url there.

    \b
    Example:
      usage-etl simulate --port 8081 --token my-token --api-key my-key
    """
    from etl.simulator import SimulatedVendor

    sim = SimulatedVendor(port=port, tokens=(token,), api_keys=(api_key,), seed=seed)
    try:
        sim.start()
    except OSError as exc:
        from etl.errors import InputError

        raise InputError(f"--port {port}: cannot listen: {exc.strerror}") from None
    if fault != "none":
        sim.set_fault(fault)
    click.echo(f"simulated vendor listening on {sim.base_url}")
    click.echo(f"  wiresocket: {sim.base_url}/usage   (base_url = \"{sim.base_url}\")")
    click.echo(f"  nected:     {sim.base_url}/dev/usage")
    click.echo("press Ctrl-C to stop")
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        click.echo("stopped")
    finally:
        sim.stop()


COMMANDS: list[click.Command] = [collect, simulate]
