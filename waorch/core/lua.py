"""The Lua scripts of lua_scripts/: loaded once per Redis client, called with named KEYS and ARGV.

Scripts are grouped like the Python packages (`lua_scripts/sending/claim.lua`); shared functions
live in `lua_scripts/lib/` and are pulled in by a `--! include lib/<name>` line. Each script is
declared once, as a `Script`, in the module that owns it; callers pass keywords, never lists.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from importlib import resources
from typing import Any

import redis
from redis.commands.core import Script as RegisteredScript

_registered: dict[tuple[int, str], RegisteredScript] = {}
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


def script(client: redis.Redis, name: str) -> RegisteredScript:
    """The registered script `name` on `client` (EVALSHA, reloaded on NOSCRIPT)."""
    key = (id(client), name)
    found = _registered.get(key)
    if found is None:
        found = client.register_script(source(name))
        _registered[key] = found
    return found


class Script:
    """One Lua script and the names of its KEYS and ARGV, in the order the script reads them.

    `rest` names a trailing ARGV list (field/value pairs, ids ...) given as an iterable.
    """

    def __init__(self, name: str, *, keys: tuple[str, ...] = (), args: tuple[str, ...] = (),
                 rest: str | None = None) -> None:
        self.name, self.keys, self.args, self.rest = name, keys, args, rest
        self._names = {*keys, *args, *([rest] if rest else [])}
        source(name)  # a missing script or include fails at import, not at the first call

    def __call__(self, r: redis.Redis, **values: Any) -> Any:
        keys, argv = self._arguments(values)
        return script(r, self.name)(keys=keys, args=argv)

    def queue(self, r: redis.Redis, pipe: redis.client.Pipeline, **values: Any) -> None:
        """Add the call to `pipe`, a pipeline of `r` (the pipeline loads the script if Redis lacks it)."""
        keys, argv = self._arguments(values)
        script(r, self.name)(keys=keys, args=argv, client=pipe)

    def _arguments(self, values: dict[str, Any]) -> tuple[list[Any], list[Any]]:
        given = set(values)
        missing = {*self.keys, *self.args} - given
        unknown = given - self._names
        if missing or unknown:
            raise TypeError(f"{self.name}: missing {sorted(missing)}, unknown {sorted(unknown)}")
        argv = [values[name] for name in self.args]
        if self.rest:
            argv += list(values.get(self.rest, ()) or ())
        return [values[name] for name in self.keys], argv

    def __repr__(self) -> str:
        return f"lua.Script({self.name!r})"


def pairs(mapping: dict[str, Any] | Iterable[tuple[str, Any]]) -> list[str]:
    """Field/value pairs flattened for a `rest` ARGV list (None becomes an empty string)."""
    items = mapping.items() if isinstance(mapping, dict) else mapping
    return [str(part) for name, value in items for part in (name, "" if value is None else value)]
