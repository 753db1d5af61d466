"""Loads each script of lua_scripts/ once per Redis client (register_script)."""

from __future__ import annotations

from functools import cache
from importlib import resources

import redis
from redis.commands.core import Script

_registered: dict[tuple[int, str], Script] = {}


_INCLUDE = "--! include "


@cache
def source(name: str) -> str:
    """Text of lua_scripts/<name>.lua, with `--! include <lib>` lines replaced by that file."""
    text = resources.files("lua_scripts").joinpath(f"{name}.lua").read_text()
    lines = [
        source(line[len(_INCLUDE):].strip()) if line.startswith(_INCLUDE) else line
        for line in text.splitlines()
    ]
    return "\n".join(lines) + "\n"


def script(client: redis.Redis, name: str) -> Script:
    """The registered Script object for `name` on `client` (EVALSHA with reload on NOSCRIPT)."""
    key = (id(client), name)
    found = _registered.get(key)
    if found is None:
        found = client.register_script(source(name))
        _registered[key] = found
    return found
