"""The daily backup task: its beat schedule, a real Celery worker running it, and the
backup_failed alert raised on failure and resolved by the next success."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support.backup_support import populate, use_dirs
from tests.support.celery_worker import ROOT, CeleryWorker
from tests.support.waiting import wait_for
from waorch.alerts import events as alert_events
from waorch.backups import create as backups
from waorch.backups import restore as backup_restore
from waorch.core import settings


@pytest.fixture
def root(monkeypatch, tmp_path, redis_url):
    root = use_dirs(monkeypatch, tmp_path)
    populate(redis_url, root)
    return root


def beat_entry(**env: str) -> subprocess.CompletedProcess:
    code = "import celeryconfig as c; e = c.beat_schedule.get('backup'); " \
           "print(e and (e['task'], sorted(e['schedule'].hour), sorted(e['schedule'].minute)))"
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=60)


def test_beat_schedule_follows_waorch_backup_at():
    assert beat_entry(WAORCH_BACKUP_AT="03:00").stdout.strip() == "('tasks.backups.backup', [3], [0])"
    assert beat_entry(WAORCH_BACKUP_AT="21:45").stdout.strip() == "('tasks.backups.backup', [21], [45])"
    assert beat_entry(WAORCH_BACKUP_AT="").stdout.strip() == "None"
    broken = beat_entry(WAORCH_BACKUP_AT="25:00")
    assert broken.returncode != 0 and "WAORCH_BACKUP_AT" in broken.stderr


def test_failure_raises_an_alert_and_the_next_success_resolves_it(r, root, monkeypatch, tmp_path):
    from tasks import backups as backup_tasks

    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    monkeypatch.setenv("WAORCH_BACKUP_DIR", str(blocker / "backups"))
    settings.get.cache_clear()
    with pytest.raises(OSError):
        backup_tasks.backup()
    [active] = alert_events.active_alerts(r)
    assert active["kind"] == alert_events.BACKUP_FAILED and active["subject"] == "backup"
    assert "backup failed" in active["message"]

    monkeypatch.setenv("WAORCH_BACKUP_DIR", str(tmp_path / "backups"))
    settings.get.cache_clear()
    path = backup_tasks.backup()
    assert backups.list_backups(tmp_path / "backups")[-1].samefile(path)
    assert alert_events.active_alerts(r) == []
    latest = alert_events.list_events(r, 1)[0]
    assert (latest["kind"], latest["state"]) == (alert_events.BACKUP_FAILED, "resolved")


def test_a_celery_worker_runs_the_backup_task(r, root, monkeypatch, tmp_path):
    out = tmp_path / "scheduled"
    monkeypatch.setenv("WAORCH_BACKUP_DIR", str(out))
    monkeypatch.setenv("WAORCH_BACKUP_KEEP", "1")
    settings.get.cache_clear()
    from tasks.celery_app import app

    with CeleryWorker(tmp_path, queues="maintenance", concurrency=1) as worker:
        for _ in range(2):
            app.send_task("tasks.backups.backup")  # routed to `maintenance` like the beat's
        wait_for(lambda: sum("tasks.backups.backup[" in line and "succeeded" in line
                             for line in worker.log().splitlines()) >= 2,
                 "two backups run by the worker", timeout=120)
    [archive] = backups.list_backups(out)  # WAORCH_BACKUP_KEEP=1 pruned the first
    assert backup_restore.verify_archive(archive)["sessions"]["ids"] == ["s1", "s2"]
