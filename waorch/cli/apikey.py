"""`waorch apikey create|list|revoke`."""

import click

from waorch.core.redis_client import get_redis
from waorch.tenants import apikeys


@click.group("apikey")
def command() -> None:
    """Manage API keys (stored hashed; a key is shown once, at creation)."""


@command.command("create")
@click.option("--scopes", default="send,read", show_default=True, help="send,read,admin")
@click.option("--tenant", default="default", show_default=True, help="New names create the tenant.")
@click.option("--label", default="", help="Free text to recognise the key later.")
def create(scopes: str, tenant: str, label: str) -> None:
    """Create a key and print it (it cannot be shown again)."""
    try:
        key = apikeys.create_key(get_redis(), tenant, apikeys.parse_scopes(scopes), label)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    click.echo(key)


@command.command("list")
def list_() -> None:
    """List keys by id (first hash digits), tenant, scopes and label."""
    for item in apikeys.list_keys(get_redis()):
        click.echo(f"{item['key_id']}  tenant={item['tenant']}  scopes={item['scopes']}  "
                   f"label={item.get('label', '')}")


@command.command("revoke")
@click.argument("key_id")
def revoke(key_id: str) -> None:
    """Revoke the key whose id (from `list`) is KEY_ID."""
    if len(key_id) < 8:
        raise click.BadParameter("give at least 8 characters of the key id")
    count = apikeys.revoke(get_redis(), key_id)
    if not count:
        raise click.ClickException(f"no key with id {key_id}")
    click.echo(f"revoked {count}")
