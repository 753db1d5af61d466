"""`waorch socks`: run one or more SOCKS5 proxies in one process until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import signal

import click

from waorch.simulator.socks5 import Socks5Server


def parse_listen(value: str) -> tuple[str, int]:
    """`127.0.0.2:1080` or `[::1]:1080` → (host, port); ValueError when malformed."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f"{value!r} is not host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port_text)


def _listen_option(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]):
    try:
        return [parse_listen(v) for v in values]
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


async def _serve(servers: list[Socks5Server]) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    started: list[Socks5Server] = []
    try:
        for server in servers:
            started.append(await server.start())
            click.echo(server.redacted_url)
        await stopping.wait()
    finally:
        for server in started:
            with contextlib.suppress(Exception):
                await server.close()


@click.command("socks")
@click.option("--listen", "listens", multiple=True, required=True, callback=_listen_option,
              help="host:port to listen on (repeatable); the host is also the outbound source.")
@click.option("--user", default=None, help="Require this username (with --password).")
@click.option("--password", default=None, envvar="WAORCH_SOCKS_PASSWORD",
              help="Password for --user (or WAORCH_SOCKS_PASSWORD, kept out of `ps`).")
def command(listens: list[tuple[str, int]], user: str | None, password: str | None) -> None:
    """Run SOCKS5 proxies (remote DNS, CONNECT only); prints one URL per proxy, password as ***."""
    if (user is None) != (password is None):
        raise click.UsageError("--user and --password go together")
    servers = [
        Socks5Server(host=host, port=port, username=user, password=password,
                     outbound_source=None if host in ("0.0.0.0", "::", "") else host)
        for host, port in listens
    ]
    try:
        asyncio.run(_serve(servers))
    except OSError as exc:
        raise click.ClickException(f"cannot listen: {exc}") from exc
