"""`waorch policy`: check a policy file, show the policy in force, run the trust review now."""

from __future__ import annotations

import json

import click

from waorch.policy import rules as policy


@click.group("policy")
def command() -> None:
    """The anti-ban policy (docs/policy.md)."""


@command.command("check")
@click.argument("path", type=click.Path(dir_okay=False))
def check(path: str) -> None:
    """Validate a policy file; exits 1 naming the first problem."""
    try:
        loaded = policy.load_file(path)
    except policy.PolicyError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{path}: valid ({', '.join(loaded.trust_review.ladder)})")


@command.command("show")
@click.option("--file", "path", type=click.Path(dir_okay=False), default=None,
              help="A policy file to show instead of the one in force [WAORCH_POLICY_FILE].")
def show(path: str | None) -> None:
    """Print the effective policy (defaults merged) as JSON."""
    try:
        loaded = policy.load_file(path) if path else policy.load()
    except policy.PolicyError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(loaded.as_dict(), indent=2, ensure_ascii=False))


@command.command("review")
def review() -> None:
    """Run the trust review now (it also runs hourly under `waorch beat`); prints the changes."""
    from waorch.core.redis_client import get_redis  # noqa: PLC0415
    from waorch.policy import trust  # noqa: PLC0415 (needs Redis only here)

    changes = trust.review(get_redis())
    for change in changes:
        click.echo(f"{change['session']}: {change['from']} -> {change['to']} ({change['reason']})")
    click.echo(f"{len(changes)} change(s)")
