"""Entry point: discovers subcommands lazily, one module each in this package."""

from __future__ import annotations

import pkgutil
from importlib import import_module

import click

import waorch.cli as cli_package

_NOT_COMMANDS = {"main"}


class DiscoveredCommands(click.Group):
    """Each module waorch/cli/<name>.py with a `command` attribute is `waorch <name>`."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        names = [
            m.name.replace("_", "-")
            for m in pkgutil.iter_modules(cli_package.__path__)
            if not m.name.startswith("_") and m.name not in _NOT_COMMANDS
        ]
        return sorted(names)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.list_commands(ctx):
            return None
        module = import_module(f"waorch.cli.{name.replace('-', '_')}")
        return getattr(module, "command", None)


@click.group(cls=DiscoveredCommands)
@click.version_option(package_name="waorch")
def cli() -> None:
    """waorch: orchestrate many WhatsApp accounts through one REST API."""


if __name__ == "__main__":
    cli(prog_name="waorch")
