"""BENCHMARKS.md: each bench script owns one `## ` section of it and rewrites only that."""

from __future__ import annotations

from pathlib import Path


def write_section(section: str, text: str, path: Path) -> None:
    """Replace (or append) `section` of the file at `path` with `text`, leaving the rest alone."""
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    if section in old:
        head, _, rest = old.partition(section)
        tail = rest.split("\n## ", 1)
        new = head + text.rstrip("\n") + "\n" + (("\n## " + tail[1]) if len(tail) == 2 else "")
    else:
        new = old.rstrip("\n") + "\n\n" + text
    path.write_text(new)
