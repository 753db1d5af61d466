"""`waorch supervisor`: host of the process runner's session workers."""

import click

from waorch.core.redis_client import get_redis
from waorch.runners.supervisor import SupervisorRunning, serve


@click.command("supervisor")
def command() -> None:
    """Run one worker process per active session until SIGTERM/SIGINT (then stop them all)."""
    try:
        serve(get_redis())
    except SupervisorRunning as exc:
        raise click.ClickException(str(exc)) from None
