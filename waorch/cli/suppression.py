"""`waorch suppression list|add|remove`: a tenant's opt-out list from the command line."""

from __future__ import annotations

import json

import click

from waorch.cli._output import when
from waorch.cli._params import PHONE
from waorch.core.redis_client import get_redis
from waorch.policy import suppressions

_TENANT = click.option("--tenant", default="default", show_default=True, help="Whose list.")


@click.group("suppression")
def command() -> None:
    """Recipients a tenant must not message (sends to them fail with reason `suppressed`)."""


@command.command("list")
@_TENANT
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def list_(tenant: str, as_json: bool) -> None:
    """Every suppressed recipient of the tenant: phone, since, source, reason."""
    r = get_redis()
    cursor: int | None = 0
    while cursor is not None:
        items, cursor = suppressions.list_page(r, tenant, cursor, 500)
        for item in items:
            click.echo(json.dumps(item, sort_keys=True) if as_json else
                       f"+{item['phone']}  {when(item['at'])}  {item['source'] or '-'}  {item['reason']}")


@command.command("add")
@click.argument("phone", type=PHONE)
@_TENANT
@click.option("--reason", default="", help=f"Why (at most {suppressions.MAX_REASON} characters).")
def add(phone: str, tenant: str, reason: str) -> None:
    """Suppress PHONE (international format): scheduled messages to it fail at their claim."""
    record, created = suppressions.add(get_redis(), tenant, phone, reason, source="cli")
    click.echo(("suppressed " if created else "already suppressed ") + f"+{record['phone']}"
               + (f" (since {when(record['at'])})" if not created else ""))


@command.command("remove")
@click.argument("phone", type=PHONE)
@_TENANT
def remove(phone: str, tenant: str) -> None:
    """Lift the suppression of PHONE (overrides the person's opt-out: an operator's decision)."""
    if not suppressions.remove(get_redis(), tenant, phone):
        raise click.ClickException(f"+{phone} is not suppressed for tenant {tenant}")
    click.echo(f"removed +{phone}")
