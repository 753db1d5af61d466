"""The daily backup (beat, queue `maintenance`): an alert when it fails, resolved by the next success."""

from __future__ import annotations

import logging

import redis

from tasks.celery_app import app
from waorch.alerts import events as alert_events
from waorch.backups import create as backups
from waorch.core import settings
from waorch.core.redis_client import get_redis

log = logging.getLogger(__name__)
SUBJECT = "backup"


@app.task(name="tasks.backups.backup")
def backup() -> str:
    """Write a backup into WAORCH_BACKUP_DIR and prune it to WAORCH_BACKUP_KEEP archives."""
    r = get_redis()
    try:
        path = backups.create_backup(r, keep=settings.get().backup_keep)
    except Exception as exc:
        message = f"backup failed: {exc.__class__.__name__}: {exc}"
        try:
            alert_events.raise_alert(r, alert_events.BACKUP_FAILED, SUBJECT, message, severity="critical")
        except redis.RedisError:
            log.exception("could not record the backup_failed alert")
        raise
    alert_events.resolve(r, alert_events.BACKUP_FAILED, SUBJECT, f"backup written: {path.name}")
    return str(path)
