"""`waorch settings`: print the configuration table (the source of docs/configuration.md)."""

import click

from waorch.core import settings


@click.command("settings")
def command() -> None:
    """Print every environment variable waorch reads, with its default."""
    click.echo(settings.markdown_table(), nl=False)
