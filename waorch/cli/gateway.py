"""`waorch gateway`: the REST API, served by gunicorn with gevent workers."""

from __future__ import annotations

import click
import gunicorn

from waorch.core import settings
from waorch.launcher.become import become, python_module_argv


def gunicorn_argv(bind: str, port: int, workers: int, connections: int, access_log: bool,
                  log_level: str, graceful_timeout: int = 20) -> list[str]:
    # gevent: hundreds of session workers hold 25 s claim long-polls; a greenlet each is cheap,
    # so they cannot starve the public API the way a fixed thread pool would.
    args = [
        "--worker-class", "gevent", "--workers", str(workers),
        "--worker-connections", str(connections), "--bind", f"{bind}:{port}",
        "--timeout", "60", "--graceful-timeout", str(graceful_timeout), "--keep-alive", "30",
        "--log-level", log_level.lower(), "--error-logfile", "-",
    ]
    if gunicorn.version_info >= (27,):
        # gunicorn 27 opens a control socket at one fixed path per user: several gateways clash.
        args.append("--no-control-socket")
    if access_log:
        args += ["--access-logfile", "-"]
    return python_module_argv("gunicorn", *args, "app:create_app()")


@click.command("gateway")
@click.option("--bind", default=None, help="Address to listen on [WAORCH_BIND].")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Port [WAORCH_PORT].")
@click.option("--workers", type=click.IntRange(1, 64), default=None,
              help="gunicorn worker processes [WAORCH_GATEWAY_WORKERS].")
@click.option("--connections", type=click.IntRange(10, 100_000), default=2000, show_default=True,
              help="Concurrent connections per worker process.")
@click.option("--access-log/--no-access-log", default=False, show_default=True)
@click.option("--graceful-timeout", type=click.IntRange(1, 600), default=20, show_default=True,
              help="Seconds in-flight requests (long-polls included) get to finish on SIGTERM.")
def command(bind: str | None, port: int | None, workers: int | None, connections: int,
            access_log: bool, graceful_timeout: int) -> None:
    """Serve the REST API, OpenAPI docs, dashboard and worker endpoints."""
    conf = settings.load()
    become(gunicorn_argv(bind or conf.bind, port or conf.port, workers or conf.gateway_workers,
                         connections, access_log, conf.log_level, graceful_timeout))
