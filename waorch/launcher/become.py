"""Replace the current process with another program (the process commands are thin wrappers)."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence


def python_module_argv(module: str, *args: str) -> list[str]:
    """`python -m module args` with this interpreter (the venv's)."""
    return [sys.executable, "-m", module, *args]


def become(argv: Sequence[str], env: Mapping[str, str] | None = None) -> None:
    """exec `argv`: same pid, so signals from a supervisor reach the real server directly."""
    sys.stdout.flush()
    sys.stderr.flush()
    environ = dict(os.environ)
    if env:
        environ.update(env)
    os.execve(argv[0], list(argv), environ)
