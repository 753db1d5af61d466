"""`waorch webhook list|dead-letters|redeliver|enable`: client webhooks from the command line
(docs/webhooks.md). Creating one stays with the API: its secret is a tenant's, not the operator's."""

from __future__ import annotations

import json

import click

from waorch.cli._output import echo_pages, when
from waorch.core.redis_client import get_redis
from waorch.webhooks import dead_letters
from waorch.webhooks import subscriptions as client_webhooks

_TENANT = click.option("--tenant", help="Only this tenant's (default: every tenant).")


@click.group("webhook")
def command() -> None:
    """Client webhooks: their delivery state, dead letters, redelivery."""


@command.command("list")
@_TENANT
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def list_(tenant: str | None, as_json: bool) -> None:
    """Webhooks with their delivery state (never their secrets)."""
    r = get_redis()
    for record in client_webhooks.list_for(r, tenant):
        view = client_webhooks.describe(r, record)
        delivery = view["delivery"]
        click.echo(json.dumps(view, sort_keys=True) if as_json else
                   f"{view['id']}  {view['tenant']}  {view['status']}  {view['url']}  "
                   f"pending {delivery['pending']}, delivered {delivery['delivered']}, "
                   f"last error {delivery['last_error'] or '-'}")


@command.command("dead-letters")
@_TENANT
@click.option("--limit", type=click.IntRange(1, 10000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def dead_letters_(tenant: str | None, limit: int, as_json: bool) -> None:
    """Events that ran out of retries, newest first."""
    r = get_redis()
    echo_pages(lambda cursor, n: dead_letters.list_dead_letters(r, tenant, cursor, n), limit, as_json,
               lambda item: f"{item['id']}  {when(item['dead_at'])}  {item['webhook_id']}  {item['event_id']}"
                            f"  attempts {item['attempts']}  {item['last_error'] or '-'}")


@command.command("redeliver")
@click.argument("dead_letter_ids", nargs=-1, required=True)
def redeliver(dead_letter_ids: tuple[str, ...]) -> None:
    """Queue DEAD_LETTER_IDS again, each with a fresh retry window."""
    r = get_redis()
    failed = 0
    for dl_id in dead_letter_ids:
        try:
            done = dead_letters.redeliver(r, dl_id, None)
        except (dead_letters.DeadLetterGone, dead_letters.WebhookDisabled) as exc:
            click.echo(f"{dl_id}: {exc}", err=True)
            failed += 1
            continue
        if not done:
            click.echo(f"{dl_id}: no such dead letter", err=True)
            failed += 1
        else:
            click.echo(f"{dl_id}: queued again")
    if failed:
        raise SystemExit(1)


@command.command("enable")
@click.argument("webhook_id")
def enable(webhook_id: str) -> None:
    """Deliver to WEBHOOK_ID again after its endpoint answered 410 Gone."""
    if client_webhooks.enable(get_redis(), webhook_id) is None:
        raise click.ClickException(f"no webhook {webhook_id}")
    click.echo(f"{webhook_id}: enabled")
