"""`waorch message show|list`: look a message up without reading Redis by hand."""

from __future__ import annotations

import json

import click

from waorch.cli._output import echo_pages, when
from waorch.cli._params import PHONE
from waorch.core.redis_client import get_redis
from waorch.messages import records as messages


@click.group("message")
def command() -> None:
    """Messages: one with its history, or a filtered list, newest first."""


@command.command("show")
@click.argument("message_id")
@click.option("--json", "as_json", is_flag=True, help="The message as JSON, history included.")
def show(message_id: str, as_json: bool) -> None:
    """MESSAGE_ID with every state it went through."""
    found = messages.get_message(get_redis(), message_id[:64])
    if found is None:
        raise click.ClickException(f"no message {message_id}")
    if as_json:
        click.echo(json.dumps(found, sort_keys=True))
        return
    click.echo(f"{found['id']}  {found['status']}{' (' + found['reason'] + ')' if found['reason'] else ''}"
               f"  to +{found['to']}  tenant {found['tenant']}  session {found['session'] or '-'}"
               f"  attempts {found['attempts']}")
    for step in found["history"]:
        detail = f"  {step['detail']}" if step.get("detail") else ""
        click.echo(f"  {when(step['at'])}  {step['status']}{detail}")


@command.command("list")
@click.option("--tenant", help="Only this tenant's (default: every tenant).")
@click.option("--status", type=click.Choice(messages.STATES))
@click.option("--session", help="Only messages of this session id.")
@click.option("--to", type=PHONE, help="Only messages to this number.")
@click.option("--limit", type=click.IntRange(1, 10000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def list_(tenant: str | None, status: str | None, session: str | None, to: str | None, limit: int,
          as_json: bool) -> None:
    """Messages newest first: id, status (reason), recipient, session, last change."""
    r = get_redis()

    def line(item: dict) -> str:
        reason = f" ({item['reason']})" if item["reason"] else ""
        return (f"{item['id']}  {item['status']}{reason}  +{item['to']}  {item['session'] or '-'}"
                f"  {when(item['updated_at'])}")

    echo_pages(lambda cursor, n: messages.list_messages(r, tenant, status=status, session=session, to=to,
                                                        cursor=cursor, limit=n), limit, as_json, line)
