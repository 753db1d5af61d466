"""Checks that tell whether a started process is serving (each returns quickly, True or False)."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Iterable
from pathlib import Path

import requests
from celery import Celery

from waorch.core.redis_urls import celery_broker_settings


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def http_answers(url: str, statuses: Iterable[int] = (200,), timeout: float = 2.0) -> bool:
    try:
        return requests.get(url, timeout=timeout, allow_redirects=False).status_code in set(statuses)
    except requests.RequestException:
        return False


_celery_apps: dict = {}


def celery_pong(redis_url: str, node: str, timeout: float = 1.0) -> bool:
    """True once the Celery worker named `node` answers a broadcast ping through Redis."""
    app = _celery_apps.get(redis_url)
    if app is None:
        app = _celery_apps[redis_url] = Celery("waorch-launcher")
        app.conf.update(**celery_broker_settings(redis_url))
    try:
        replies = app.control.ping(destination=[node], timeout=timeout)
    except Exception:  # noqa: BLE001  (broker not ready yet: just "not ready")
        return False
    return any(node in reply for reply in replies)


def close_celery_apps() -> None:
    for app in _celery_apps.values():
        with contextlib.suppress(Exception):
            app.close()
    _celery_apps.clear()


def file_exists(pattern_dir: Path, prefix: str) -> bool:
    return any(p.name.startswith(prefix) for p in pattern_dir.glob(f"{prefix}*"))


def all_of(*checks: Callable[[], bool]) -> Callable[[], bool]:
    return lambda: all(check() for check in checks)
