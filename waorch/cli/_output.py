"""What the listing commands print: UTC times, and pages as text lines or JSON lines."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import click

Page = tuple[list[dict[str, Any]], Any]


def when(at: float | str | None) -> str:
    """Unix seconds as an ISO 8601 UTC time; '-' for none."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(at))) if at else "-"


def echo_pages(fetch: Callable[[Any, int], Page], limit: int, as_json: bool,
               line: Callable[[dict[str, Any]], str]) -> None:
    """Print up to `limit` items of a cursor-paged listing; `fetch(cursor, n)` gives one page."""
    shown, cursor = 0, None
    while shown < limit:
        page, cursor = fetch(cursor, min(200, limit - shown))
        for item in page:
            click.echo(json.dumps(item, sort_keys=True) if as_json else line(item))
        shown += len(page)
        if cursor is None:
            return
