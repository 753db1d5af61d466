"""`waorch suppression list|add|remove` as a real subprocess against the test Redis."""

from __future__ import annotations

import json
import os
import subprocess

from tests.support.commands import WAORCH
from waorch.policy import suppressions


def run(*args: str):
    return subprocess.run(WAORCH + list(args), env={**os.environ}, capture_output=True, text=True, timeout=60)


def test_add_list_remove(r):
    added = run("suppression", "add", "+1 415 555 0123", "--tenant", "acme", "--reason", "asked to stop")
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == "suppressed +14155550123"
    assert suppressions.is_suppressed(r, "acme", "14155550123")
    assert not suppressions.is_suppressed(r, "default", "14155550123")
    again = run("suppression", "add", "+14155550123", "--tenant", "acme", "--reason", "other")
    assert again.returncode == 0 and "already suppressed" in again.stdout
    assert suppressions.get(r, "acme", "14155550123")["reason"] == "asked to stop"  # first entry kept
    suppressions.add(r, "acme", "4915123456789", "opt-out reply", source="inbound:s1")

    listed = run("suppression", "list", "--tenant", "acme")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("+14155550123") and "cli" in lines[0] and "asked to stop" in lines[0]
    assert lines[1].startswith("+4915123456789") and "inbound:s1" in lines[1]
    as_json = [json.loads(line) for line in run("suppression", "list", "--tenant", "acme", "--json")
               .stdout.splitlines()]
    assert {item["phone"] for item in as_json} == {"14155550123", "4915123456789"}
    assert run("suppression", "list").stdout == ""  # the default tenant has none

    removed = run("suppression", "remove", "+14155550123", "--tenant", "acme")
    assert removed.returncode == 0 and "removed +14155550123" in removed.stdout
    assert not suppressions.is_suppressed(r, "acme", "14155550123")
    missing = run("suppression", "remove", "+14155550123", "--tenant", "acme")
    assert missing.returncode == 1 and "not suppressed" in missing.stderr


def test_bad_phone_is_a_usage_error_without_traceback(r):
    bad = run("suppression", "add", "12")
    assert bad.returncode == 2 and "PHONE" in bad.stderr and "Traceback" not in bad.stderr
    assert r.keys("suppressions:*") == []
