"""`usage-etl alerts list | check | test NAME` (SPEC 3, SPEC 8)."""

from __future__ import annotations

import json

import click

from etl.cli.context import AppContext
from etl.errors import InputError


@click.group()
def alerts() -> None:
    """Alerts on usage: what is firing, evaluate now, send a test.

    \b
    Example:
      usage-etl alerts list
      usage-etl alerts check          # from cron, e.g. every 5 minutes
      usage-etl alerts test ws-connections-high
    """


@alerts.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.pass_obj
def alerts_list(app: AppContext, as_json: bool) -> None:
    """Per alert and series: state (ok, pending, firing), since when, the latest value.

    Nothing is evaluated or sent; exit status 0.

    \b
    Example:
      usage-etl alerts list --json | jq 'select(.state == "firing")'
    """
    from etl.alerts.evaluate import number_text
    from etl.runtime.alerting import alert_rows

    rows = alert_rows(app.engine, app.config)
    if as_json:
        for row in rows:
            click.echo(json.dumps(row.to_json()))
        return
    if not rows:
        click.echo("no alerts configured")
        return
    from etl.timefmt import utc_z

    table = [["alert", "source", "metric", "state", "since", "value"]]
    table += [[r.alert, r.source, f"credit {r.credit}" if r.credit else r.metric or "-",
               str(r.state),
               utc_z(r.since, "seconds") if r.since else "-", number_text(r.value)] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    for line in table:
        click.echo("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())


@alerts.command("check")
@click.pass_obj
def alerts_check(app: AppContext) -> None:
    """Evaluate every alert now and send the notifications due (for cron).

    Notifications that failed before and are due again are retried. Exit status 1 if a
    notification could not be delivered (it stays stored and is retried for 24 h).

    \b
    Example (crontab):
      */5 * * * *  usage-etl --config /etc/usage-etl.toml alerts check
    """
    from etl.runtime.alerting import check

    config = app.config
    config.check_notifier_secrets()
    result = check(app.engine, config)
    for event in result.events:
        click.echo(str(event))
    delivery = result.delivery
    click.echo(f"{len(result.events)} state change(s), {delivery.delivered} notification(s) "
               f"delivered, {len(delivery.failed)} failed")
    for line in delivery.failed:
        click.echo(f"usage-etl: not delivered: {line}", err=True)
    if delivery.failed:
        raise click.exceptions.Exit(1)


@alerts.command("test")
@click.argument("name")
@click.pass_obj
def alerts_test(app: AppContext, name: str) -> None:
    """Send a test notification to the notifiers of alert NAME (nothing is stored).

    Exit status 1 if one of them fails, 2 for an unknown alert.

    \b
    Example:
      usage-etl alerts test ws-connections-high
    """
    from etl.runtime.alerting import send_test

    config = app.config
    rule = config.alert(name)
    if not rule.notify:
        raise InputError(f"alert {name} has no notifiers (its notify list is empty)")
    config.check_notifier_secrets(rule.notify)
    outcome = send_test(config, name)
    for notifier, error in outcome.items():
        if error is None:
            click.echo(f"sent to {notifier}")
        else:
            click.echo(f"usage-etl: not delivered: {error}", err=True)
    if any(error is not None for error in outcome.values()):
        raise click.exceptions.Exit(1)


COMMANDS = [alerts]
