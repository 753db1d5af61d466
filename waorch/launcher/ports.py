"""Choosing listen ports: a preferred one when it is free, else any free one."""

from __future__ import annotations

import socket


def bindable(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def any_free(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def pick(host: str, preferred: int | None, taken: set[int]) -> int:
    """`preferred` if free and not already handed out, else a free port chosen by the kernel."""
    if preferred and 0 < preferred < 65536 and preferred not in taken and bindable(host, preferred):
        taken.add(preferred)
        return preferred
    for _ in range(20):
        port = any_free(host)
        if port not in taken:
            taken.add(port)
            return port
    raise RuntimeError(f"no free port on {host}")
