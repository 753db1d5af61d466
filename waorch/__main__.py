"""`python -m waorch` is the `waorch` command."""

from waorch.cli.main import cli

cli(prog_name="waorch")
