"""`waorch proxy add|list|remove|check`: the proxy inventory from the command line."""

from __future__ import annotations

import click

from waorch.core.redis_client import get_redis
from waorch.fleet import lifecycle, proxy_failover
from waorch.proxies.pool import InvalidProxyUrl, ProxyNotFound, ProxyPool, redact


@click.group("proxy")
def command() -> None:
    """Manage proxies (credentials are never printed)."""


def _line(view: dict) -> str:
    return (f"{view['id']}  {view['status']:<7} {view['sessions']}/{view['ceiling']}  {view['url']}"
            + (f"  last_error={view['last_error']}" if view.get("last_error") else ""))


@command.command("add")
@click.argument("urls", nargs=-1)
@click.option("--file", "path", type=click.File("r"), help="One URL per line (# comments allowed).")
def add(urls: tuple[str, ...], path) -> None:
    """Add proxies given as arguments and/or from a file; bad lines are reported, good ones kept."""
    candidates = [(f"argument {i + 1}", u) for i, u in enumerate(urls)]
    if path is not None:
        for number, line in enumerate(path, start=1):
            text = line.split("#", 1)[0].strip() if not line.lstrip().startswith("#") else ""
            if text:
                candidates.append((f"{path.name}:{number}", text))
    if not candidates:
        raise click.UsageError("give proxy URLs or --file")
    r = get_redis()
    pool = ProxyPool(r)
    failed = 0
    for where, url in candidates:
        try:
            view, added = pool.add(url)
        except InvalidProxyUrl as exc:
            failed += 1
            click.echo(f"{where}: {exc}", err=True)
            continue
        click.echo(("added    " if added else "exists   ") + _line(view))
    lifecycle.check_inventory(r)
    if failed:
        raise SystemExit(1)


@command.command("list")
def list_() -> None:
    """Every proxy: id, status, sessions/ceiling, redacted URL."""
    for view in ProxyPool(get_redis()).list():
        click.echo(_line(view))


def _resolve(pool: ProxyPool, ident: str) -> str:
    try:
        return pool.resolve(ident)
    except ProxyNotFound:
        raise click.ClickException(f"no proxy {redact(ident) if '://' in ident else ident}") from None


@command.command("remove")
@click.argument("proxy")
def remove(proxy: str) -> None:
    """Remove a proxy (by id or URL); its sessions move to other proxies and restart."""
    r = get_redis()
    pool = ProxyPool(r)
    url = _resolve(pool, proxy)
    pool.remove(url)
    outcome = proxy_failover.relocate_sessions(r, url, "proxy removed")
    click.echo(f"removed {redact(url)}; moved {len(outcome['moved'])} sessions"
               + (f", {len(outcome['stuck'])} without capacity" if outcome["stuck"] else ""))


@command.command("check")
@click.argument("proxy", required=False)
def check(proxy: str | None) -> None:
    """Check one proxy (by id or URL), or all of them, through a real connection."""
    r = get_redis()
    if proxy:
        views = [proxy_failover.check_proxy(r, _resolve(ProxyPool(r), proxy))]
    else:
        views = proxy_failover.check_all(r)
    for view in views:
        click.echo(_line(view) + (f"  ({view['change']})" if view.get("change") else ""))
    if any(v["status"] != "OK" for v in views):
        raise SystemExit(1)
