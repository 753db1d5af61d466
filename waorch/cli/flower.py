"""`waorch flower`: Celery task monitoring, always behind basic auth."""

from __future__ import annotations

import click

from waorch.cli.worker import CELERY_APP
from waorch.core import settings
from waorch.launcher.become import become, python_module_argv


def flower_argv(address: str, port: int) -> list[str]:
    # Flower parses its options with tornado: only the --name=value form works.
    return python_module_argv("celery", "-A", CELERY_APP, "flower", f"--address={address}",
                              f"--port={port}")


def check_basic_auth(value: str) -> str:
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise click.BadParameter("give user:password")
    return value


@click.command("flower")
@click.option("--address", default=None, help="Address to listen on [WAORCH_BIND].")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="[WAORCH_FLOWER_PORT]")
@click.option("--basic-auth", default=None, metavar="USER:PASSWORD",
              help="Credentials [WAORCH_FLOWER_BASIC_AUTH; prefer it: arguments show in `ps`].")
def command(address: str | None, port: int | None, basic_auth: str | None) -> None:
    """Run Flower; refuses to start without credentials."""
    conf = settings.load()
    auth = basic_auth or conf.flower_basic_auth
    if not auth:
        raise click.UsageError("Flower needs credentials: --basic-auth or WAORCH_FLOWER_BASIC_AUTH")
    check_basic_auth(auth)
    # Passed through Flower's own environment variable so the password is not in argv.
    become(flower_argv(address or conf.bind, port or conf.flower_port),
           {"FLOWER_BASIC_AUTH": auth})
