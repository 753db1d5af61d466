"""Celery settings: queues, routes, reliability and the beat schedule, read from the environment."""

from __future__ import annotations

import os

from celery.schedules import crontab
from kombu import Queue

from waorch.core import settings as _settings
from waorch.core.redis_urls import celery_broker_settings as _broker_settings

_conf = _settings.load()

# REDIS_URL, plain or Sentinel (redis+sentinel://h1:26379,h2:26379/<master>/<db>): kombu's own form
_broker = _broker_settings(_conf.redis_url, {"visibility_timeout": _conf.visibility_timeout})
broker_url = _broker["broker_url"]
# Results are not used: task outcomes live in message/session records.
task_ignore_result = True
result_backend = None

# The `dispatch` queue plays the seed's `gateway:jobs` role.
task_queues = (
    Queue("dispatch"),
    Queue("orchestrator"),
    Queue("events"),
    Queue("maintenance"),
)
task_default_queue = "maintenance"
task_routes = {
    "tasks.dispatch.*": {"queue": "dispatch"},
    "tasks.orchestration.*": {"queue": "orchestrator"},
    "tasks.watchdog.*": {"queue": "orchestrator"},
    "tasks.events.*": {"queue": "events"},
    "tasks.alerts.*": {"queue": "events"},
    "tasks.maintenance.*": {"queue": "maintenance"},
    "tasks.backups.*": {"queue": "maintenance"},
}

# A task that must not be lost is acknowledged only after it ran, and goes back to the queue
# when the worker process dies under it. Tasks are idempotent for that reason.
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1
# Redis transport: an unacked message is redelivered after this many seconds.
broker_transport_options = _broker["broker_transport_options"]
broker_connection_retry_on_startup = True
task_serializer = "json"
accept_content = ["json"]
timezone = os.environ.get("TZ", "UTC")
enable_utc = True
worker_send_task_events = True
task_send_sent_event = True

beat_schedule = {
    "watchdog": {"task": "tasks.watchdog.watchdog", "schedule": 15.0},
    "proxy-health": {"task": "tasks.orchestration.check_proxies", "schedule": 300.0},
    "pump-session-queues": {"task": "tasks.maintenance.pump_queues", "schedule": 5.0},
    "requeue-expired-leases": {"task": "tasks.maintenance.requeue_expired", "schedule": 5.0},
    "recover-unrouted": {"task": "tasks.maintenance.recover_unrouted", "schedule": _conf.sweep_interval},
    # messages left on banned/stopped/deleted sessions, and leases that expired there (docs/policy.md)
    "reroute-lost-sessions": {"task": "tasks.maintenance.reroute_lost_sessions", "schedule": 30.0},
    "trust-review": {"task": "tasks.maintenance.trust_review", "schedule": 3600.0},
    # finished messages older than WAORCH_MESSAGE_RETENTION: Redis holds every record in memory
    "prune-messages": {"task": "tasks.maintenance.prune_messages", "schedule": 3600.0},
    # client webhook lanes whose backoff ended (or whose delivery task got lost)
    "client-webhook-retries": {"task": "tasks.events.sweep", "schedule": 10.0},
    # alert outboxes: retries after a backoff, publishes that got lost (docs/alerts.md)
    "alert-delivery": {"task": "tasks.alerts.sweep", "schedule": 5.0},
    # client events of changes whose process died before emitting them (WAORCH_CLIENT_EVENT_GRACE)
    "client-events-pending": {"task": "tasks.events.emit_pending", "schedule": 5.0},
}
# the daily backup at WAORCH_BACKUP_AT in `timezone` (docs/backups.md); none when it is empty
if (_backup_at := _settings.daily_time(_conf.backup_at)) is not None:
    beat_schedule["backup"] = {"task": "tasks.backups.backup",
                               "schedule": crontab(hour=_backup_at[0], minute=_backup_at[1])}
