"""Newest-first pages over a real Redis ZSET: equal scores across page and chunk boundaries."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from waorch.core import zset_pages

INDEX = "pages:test"


def pages(r, page_size: int, chunk: int) -> list[list[str]]:
    out, cursor = [], None
    while True:
        got = list(itertools.islice(zset_pages.newest_first(r, INDEX, cursor, chunk=chunk), page_size))
        out.append([m for m, _ in got])
        if len(got) < page_size:
            return out
        cursor = zset_pages.cursor_after(*got[-1])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(scores=st.lists(st.sampled_from([1.0, 2.5, 1796220367.477248, 1796220367.477249]),
                       min_size=0, max_size=60),
       page_size=st.integers(1, 13), chunk=st.integers(1, 9))
def test_every_member_once_newest_first_whatever_the_ties(r, scores, page_size, chunk):
    r.delete(INDEX)
    members = {f"m{i:03d}": s for i, s in enumerate(scores)}
    if members:
        r.zadd(INDEX, members)
    walked = [m for page in pages(r, page_size, chunk) for m in page]
    assert walked == [m for m, _ in r.zrevrange(INDEX, 0, -1, withscores=True)]
    assert sorted(walked) == sorted(members)


def test_a_page_boundary_inside_a_group_of_equal_scores(r):
    r.zadd(INDEX, {f"m{i:03d}": 5.0 for i in range(10)} | {"old": 1.0, "new": 9.0})
    assert pages(r, 4, 200) == [["new", "m009", "m008", "m007"], ["m006", "m005", "m004", "m003"],
                                ["m002", "m001", "m000", "old"], []]


def test_a_score_only_cursor_still_means_strictly_older(r):
    r.zadd(INDEX, {"a": 1.0, "b": 2.0, "c": 2.0, "d": 3.0})
    assert [m for m, _ in zset_pages.newest_first(r, INDEX, "2.0")] == ["a"]


def test_members_added_after_the_cursor_do_not_shift_the_next_page(r):
    r.zadd(INDEX, {f"m{i}": 5.0 for i in range(6)})
    first = list(itertools.islice(zset_pages.newest_first(r, INDEX), 3))
    r.zadd(INDEX, {"newer": 7.0, "m9": 5.0})  # a newer one, and one that sorts before the cursor
    cursor = zset_pages.cursor_after(*first[-1])
    assert [m for m, _ in zset_pages.newest_first(r, INDEX, cursor)] == ["m2", "m1", "m0"]


@pytest.mark.parametrize("bad", ["abc", "1.0:", "1.0:a b", "1.0:a:b", ":m1", "1" * 13])
def test_a_malformed_cursor_is_refused(r, bad):
    with pytest.raises(ValueError):
        list(zset_pages.newest_first(r, INDEX, bad))
