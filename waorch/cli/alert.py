"""`waorch alert list|test`: operator alerts from the command line (docs/alerts.md)."""

from __future__ import annotations

import json
import time

import click

from waorch.alerts import delivery as alert_delivery
from waorch.alerts import events as alert_events
from waorch.alerts import sinks as alert_sinks
from waorch.cli._output import when
from waorch.core.redis_client import get_redis

TEST_KIND = "test"


def _line(event: dict) -> str:
    return (f"{when(event['at'])}  {event['state']:<8}  {event['severity']:<8}  "
            f"{event['kind']} {event['subject']}: {event['message']}")


@click.group("alert")
def command() -> None:
    """Operator alerts: what is wrong now, recent alert events, the sinks' delivery state."""


@command.command("list")
@click.option("--recent", type=click.IntRange(0, alert_events.EVENTS_CAP), default=0,
              help="Also the N most recent alert events (raised and resolved), newest first.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object: active, events, sinks.")
def list_(recent: int, as_json: bool) -> None:
    """Active alerts (oldest first) and each configured sink's delivery state."""
    r = get_redis()
    active = alert_events.active_alerts(r)
    events = alert_events.list_events(r, recent) if recent else []
    sinks = alert_delivery.sink_status(r)
    if as_json:
        click.echo(json.dumps({"active": active, "events": events, "sinks": sinks}, sort_keys=True))
        return
    click.echo(f"active alerts: {len(active)}")
    for event in active:
        click.echo("  " + _line(event))
    if recent:
        click.echo(f"recent events: {len(events)}")
        for event in events:
            click.echo("  " + _line(event))
    if not sinks:
        click.echo("sinks: none configured (WAORCH_TELEGRAM_BOT_TOKEN, WAORCH_ALERT_WEBHOOK_URL)")
    for sink in sinks:
        click.echo(f"sink {sink['sink']}: pending {sink['pending']}, delivered {sink['delivered']}, "
                   f"failures {sink['failures']}, last ok {when(sink['last_ok'])}, "
                   f"last error {sink['last_error'] or '-'}")


@command.command("test")
def test() -> None:
    """Send a test alert and its recovery through every configured sink (needs a Celery worker
    on queue `events`); check the result with `waorch alert list`."""
    names = alert_sinks.enabled_names()
    if not names:
        raise click.ClickException("no alert sink is configured "
                                   "(WAORCH_TELEGRAM_BOT_TOKEN + WAORCH_TELEGRAM_CHAT_ID, "
                                   "or WAORCH_ALERT_WEBHOOK_URL + WAORCH_ALERT_WEBHOOK_SECRET)")
    r = get_redis()
    subject = f"cli-{int(time.time())}"
    alert_events.raise_alert(r, TEST_KIND, subject, "test alert from `waorch alert test`", severity="info")
    alert_events.resolve(r, TEST_KIND, subject, "test alert resolved")
    click.echo(f"queued a test alert and its recovery for: {', '.join(names)}")
