"""`waorch session create|list|show|restart|move|delete`: sessions from the command line."""

from __future__ import annotations

import json

import click

from waorch.core.phones import InvalidPhone, normalize
from waorch.core.redis_client import get_redis
from waorch.fleet import lifecycle, moving
from waorch.sessions import profiles
from waorch.sessions import registry as sessions


@click.group("session")
def command() -> None:
    """Manage WhatsApp sessions (one worker, one sticky proxy each)."""


@command.command("create")
@click.argument("phone")
@click.option("--tenant", default="default", show_default=True)
@click.option("--trust-level", default=None)
@click.option("--label", default="")
def create(phone: str, tenant: str, trust_level: str | None, label: str) -> None:
    """Create a session for PHONE (international format) and start its worker."""
    try:
        session = lifecycle.create_session(get_redis(), tenant, normalize(phone), trust_level, label)
    except (InvalidPhone, ValueError, sessions.SessionExists, lifecycle.NoProxyCapacity,
            profiles.NoProfileCapacity) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(sessions.public_view(session), indent=2))


@command.command("list")
@click.option("--tenant", default=None)
def list_(tenant: str | None) -> None:
    """id, phone, status, proxy id, last ping."""
    for s in sessions.list_sessions(get_redis(), tenant):
        view = sessions.public_view(s)
        proxy = view["proxy"]["id"] if view["proxy"] else "-"
        click.echo(f"{s['id']}  {s['phone']:<16} {s['status']:<12} proxy={proxy}  tenant={s['tenant']}"
                   f"  last_ping={s['last_ping'] or '-'}")


def _session(session_id: str) -> dict:
    found = sessions.get_session(get_redis(), session_id)
    if found is None:
        raise click.ClickException(f"no session {session_id}")
    return found


@command.command("show")
@click.argument("session_id")
def show(session_id: str) -> None:
    click.echo(json.dumps(sessions.public_view(_session(session_id)), indent=2))


@command.command("restart")
@click.argument("session_id")
def restart(session_id: str) -> None:
    """Restart the worker (same proxy, same data)."""
    _session(session_id)
    lifecycle.restart_session(get_redis(), session_id, reason="cli")
    click.echo(f"restarting {session_id}")


@command.command("move")
@click.argument("session_id")
@click.option("--to", "to", default="", metavar="LABELS",
              help="Node labels key=value[,...] to place it on (swarm runner); without it, a fresh "
                   "start (process runner: with a fresh data directory).")
@click.option("--wait", type=click.FloatRange(min=1), default=moving.DEFAULT_WAIT, show_default=True,
              help="Seconds to wait for the old worker to be gone.")
def move(session_id: str, to: str, wait: float) -> None:
    """Stop the worker, wait until it is gone, start it elsewhere; it logs in again without a QR
    (needs WAORCH_SESSION_STORE=postgres://...)."""
    try:
        result = moving.move_session(get_redis(), session_id, to=to, wait=wait,
                                     progress=lambda text: click.echo(text, err=True))
    except (moving.MoveRefused, moving.MoveTimeout, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    if result.old_data:
        click.echo(f"old data directory kept in {result.old_data}", err=True)
    click.echo(f"moved {session_id} ({result.placement}) after {result.waited:.0f}s")


@command.command("delete")
@click.argument("session_id")
def delete(session_id: str) -> None:
    """Delete the session and its worker (its data directory stays; its device leaves a
    PostgreSQL session store once the worker is gone)."""
    if not lifecycle.delete_session(get_redis(), session_id):
        raise click.ClickException(f"no session {session_id}")
    click.echo(f"deleted {session_id}")
