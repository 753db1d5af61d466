"""`waorch session ...` as a real subprocess against the test Redis."""

from __future__ import annotations

import json
import os
import subprocess

from tests.support.commands import WAORCH
from waorch.proxies.pool import ProxyPool


def run(*args: str):
    return subprocess.run(WAORCH + list(args), env={**os.environ}, capture_output=True, text=True, timeout=60)


def test_session_cli_lifecycle(r):
    refused = run("session", "create", "+4915123456789")
    assert refused.returncode != 0 and "no proxy capacity" in refused.stderr
    assert "Traceback" not in refused.stderr
    ProxyPool(r).add("socks5h://user:cli-secret@127.0.0.2:1080")
    created = run("session", "create", "+49 151 23456789", "--tenant", "acme", "--label", "desk")
    assert created.returncode == 0, created.stderr
    view = json.loads(created.stdout)
    assert view["phone"] == "4915123456789" and view["label"] == "desk"
    assert "cli-secret" not in created.stdout + created.stderr
    listed = run("session", "list", "--tenant", "acme")
    assert listed.returncode == 0 and view["id"] in listed.stdout
    assert json.loads(run("session", "show", view["id"]).stdout)["id"] == view["id"]
    assert run("session", "restart", view["id"]).returncode == 0
    assert run("session", "delete", view["id"]).returncode == 0
    missing = run("session", "delete", view["id"])
    assert missing.returncode != 0 and "no session" in missing.stderr
    bad = run("session", "create", "12")
    assert bad.returncode != 0 and "phone" in bad.stderr and "Traceback" not in bad.stderr
