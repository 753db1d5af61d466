"""Newest-first pages over a time-scored ZSET index, with a cursor that survives equal scores."""

from __future__ import annotations

import re
from collections.abc import Iterator

import redis

# "<score>" (older cursors: everything strictly older) or "<score>:<member>" (the last one seen).
CURSOR_PATTERN = r"^\d{1,12}(\.\d{1,9})?(:[A-Za-z0-9_]{1,80})?$"
_CURSOR = re.compile(CURSOR_PATTERN)
_CHUNK = 200


def cursor_after(member: str, score: float) -> str:
    """The cursor that resumes right after `member`."""
    return f"{score!r}:{member}"


def newest_first(r: redis.Redis, index: str, cursor: str | None = None,
                 chunk: int = _CHUNK) -> Iterator[tuple[str, float]]:
    """(member, score) from newest to oldest, after `cursor`, read `chunk` at a time.

    Members sharing a score (a batch accepted in one script, dead letters moved together) come
    in reverse member order, which the cursor's member pins down: a page boundary inside such a
    group neither skips nor repeats one."""
    if cursor and not _CURSOR.match(cursor):
        raise ValueError(f"bad cursor {cursor!r}")
    score_text, _, member = (cursor or "").partition(":")
    score = float(score_text) if score_text else None
    while True:
        if member:
            # the rest of the group of equal scores the last member belongs to
            for found, found_score in r.zrevrangebyscore(index, score, score, withscores=True):
                if found < member:
                    yield found, found_score
        top = "+inf" if score is None else f"({score!r}"
        got = r.zrevrangebyscore(index, top, "-inf", start=0, num=chunk, withscores=True)
        yield from got
        if len(got) < chunk:
            return
        member, score = got[-1]
