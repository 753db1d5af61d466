"""`waorch sim`: run the simulated WhatsApp network (HTTP API + wire) until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

import click

from waorch.core import settings
from waorch.simulator import BanThresholds, SimConfig, Simulator
from waorch.simulator.persistence import StateDirError


def _ban_model(ctx: click.Context, param: click.Parameter, value: str | None) -> BanThresholds:
    try:
        return BanThresholds.parse(value)
    except (ValueError, OSError) as exc:
        raise click.BadParameter(str(exc)) from exc


async def _serve(simulator: Simulator) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    await simulator.start()
    try:
        click.echo(f"simulator API  {simulator.url}")
        click.echo(f"simulator wire {simulator.wire}")
        await stopping.wait()
    finally:
        await simulator.close()


@click.command("sim")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address of both listeners.")
@click.option("--port", default=8091, show_default=True, type=click.IntRange(0, 65535),
              help="HTTP API port (0: any free port).")
@click.option("--wire-port", default=8092, show_default=True, type=click.IntRange(0, 65535),
              help="Wire port that session workers reach through their proxy (0: any free port).")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Keep the network (accounts, pairings, messages) here across restarts.")
@click.option("--save-interval", type=click.FloatRange(min=0.05), default=2.0, show_default=True,
              help="With --state-dir: save at most this often (seconds) while the network changes.")
@click.option("--autopair/--no-autopair", envvar="WAORCH_SIM_AUTOPAIR", default=False, show_default=True,
              help="Pair every session as soon as it shows a QR [WAORCH_SIM_AUTOPAIR=1].")
@click.option("--demo-scan-after", type=click.FloatRange(min=0), default=None,
              help="Scan a session waiting with a QR by itself after this many seconds.")
@click.option("--ban-model", callback=_ban_model, default=None,
              help='JSON or a JSON file, e.g. \'{"per_minute": 6, "burst_10s": 3, "max_sources": 1}\'.')
@click.option("--receipt-delay", type=click.FloatRange(min=0), default=0.2, show_default=True,
              help="Seconds from send to the delivered receipt.")
@click.option("--read-delay", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Seconds from delivered to read.")
@click.option("--qr-interval", type=click.FloatRange(min=0.1), default=20.0, show_default=True,
              help="A fresh QR code this often while a session waits.")
def command(host: str, port: int, wire_port: int, state_dir: Path | None, save_interval: float,
            autopair: bool, demo_scan_after: float | None, ban_model: BanThresholds, receipt_delay: float,
            read_delay: float, qr_interval: float) -> None:
    """Run the fake WhatsApp network; prints the API URL and the wire address."""
    logging.basicConfig(level=settings.load().log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = SimConfig(receipt_delay=receipt_delay, read_delay=read_delay, qr_interval=qr_interval,
                       demo_scan_after=demo_scan_after, autopair=autopair, ban_thresholds=ban_model,
                       state_dir=str(state_dir) if state_dir else None, save_interval=save_interval)
    try:
        asyncio.run(_serve(Simulator(host, port, host, wire_port, config)))
    except StateDirError as exc:
        raise click.ClickException(str(exc)) from exc
    except OSError as exc:
        raise click.ClickException(f"cannot listen: {exc}") from exc
