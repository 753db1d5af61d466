"""`waorch run`: the whole stack on one machine, on embedded defaults (SPEC section 9)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from waorch.core import settings
from waorch.launcher.lifecycle import Launcher
from waorch.launcher.plan import RunOptions
from waorch.launcher.state import StateDirBusy
from waorch.policy.rules import PolicyError, load_file


def _policy(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    # Checked here: a broken file would otherwise surface as every child failing at start-up.
    if value is None:
        return None
    try:
        load_file(value)
    except PolicyError as exc:
        raise click.BadParameter(str(exc)) from exc
    return value.resolve()


@click.command("run")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where run.json, logs, secrets and the local Redis live [WAORCH_STATE_DIR, .waorch].")
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="Gateway port [WAORCH_PORT, 8080]; Flower and the simulator use the next ones.")
@click.option("--bind", default=None, help="Address the gateway and Flower listen on [WAORCH_BIND].")
@click.option("--policy", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              callback=_policy, help="Anti-ban policy file (JSON or YAML).")
@click.option("--workers", type=click.IntRange(1, 32), default=1, show_default=True,
              help="Celery worker processes.")
@click.option("--no-sim", is_flag=True,
              help="Do not start a simulator: real WhatsApp, or the external simulator that "
                   "WAORCH_SIM_URL and WAORCH_SIM_WIRE name (`waorch sim` started elsewhere).")
@click.option("--demo", is_flag=True,
              help="Also start 3 demo SOCKS5 proxies and a few sandbox sessions paired by the simulator.")
def command(state_dir: Path | None, port: int | None, bind: str | None, policy: Path | None,
            workers: int, no_sim: bool, demo: bool) -> None:
    """Start gateway, Celery workers, beat, Flower, simulator and process runner; Ctrl-C stops all."""
    conf = settings.load()
    if demo and no_sim and not (conf.sim_url and conf.sim_wire):
        raise click.UsageError("--demo pairs its sessions in the simulator: with --no-sim it needs an "
                               "external one (WAORCH_SIM_URL and WAORCH_SIM_WIRE)")
    options = RunOptions(
        state_dir=state_dir or Path(conf.state_dir), port=port or conf.port, bind=bind or conf.bind,
        policy=policy, workers=workers, sim=not no_sim, demo=demo,
    )
    launcher = Launcher(options, echo=lambda text: click.echo(text))
    try:
        code = launcher.run()
    except StateDirBusy as exc:
        raise click.ClickException(str(exc)) from exc
    sys.exit(code)
