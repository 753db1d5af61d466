"""All configuration, read from environment variables: one declaration per setting.

Each field of `Settings` names its environment variable, its default and what it means, in one
place; docs/configuration.md is generated from them (`waorch settings`, checked by a test).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields
from functools import lru_cache
from typing import Any


@dataclass(frozen=True)
class Setting:
    env: str
    default: str
    doc: str


def setting(env: str, default: str, doc: str) -> Any:
    """A `Settings` field read from `env` (its type converts the text), documented by `doc`."""
    return field(metadata={"setting": Setting(env, default, doc)})


@dataclass(frozen=True)
class Settings:
    redis_url: str = setting("REDIS_URL", "redis://127.0.0.1:6379/0", "Redis for state, pacing and the Celery broker.")
    state_dir: str = setting("WAORCH_STATE_DIR", ".waorch", "Where `waorch run` keeps its files (run.json, logs).")
    data_dir: str = setting("WAORCH_DATA_DIR", ".waorch/data", "Session data volumes (`<dir>/sessions/<id>`).")
    bind: str = setting("WAORCH_BIND", "127.0.0.1", "Address the gateway listens on.")
    port: int = setting("WAORCH_PORT", "8080", "Gateway port.")
    public_url: str = setting("WAORCH_PUBLIC_URL", "", "URL workers use to reach the gateway (default http://BIND:PORT).")
    gateway_workers: int = setting("WAORCH_GATEWAY_WORKERS", "2", "gunicorn worker processes for the gateway (gevent).")
    runner: str = setting("WAORCH_RUNNER", "process", "Session runner: `process`, `docker` or `swarm`.")
    worker_image: str = setting("WAORCH_WORKER_IMAGE", "waorch-worker:latest", "Image the docker runner starts.")
    docker_network: str = setting("WAORCH_DOCKER_NETWORK", "host", "network_mode for session containers (docker runner).")
    docker_host: str = setting("DOCKER_HOST", "", "Engine API address for the docker runner (SDK default when empty).")
    swarm_host: str = setting("WAORCH_SWARM_HOST", "", "Swarm manager API address (swarm runner; DOCKER_HOST when empty).")
    swarm_data: str = setting("WAORCH_SWARM_DATA", "volume", "Swarm session data: `volume` (per node) or `bind` (shared).")
    swarm_constraints: str = setting("WAORCH_SWARM_CONSTRAINTS", "", "Extra placement constraints, comma-separated (swarm runner).")
    swarm_slot_resource: str = setting("WAORCH_SWARM_SLOT_RESOURCE", "", "Swarm generic resource each session reserves 1 of.")
    worker_memory: str = setting("WAORCH_WORKER_MEMORY", "512m", "Memory limit of a session worker (swarm; empty: none).")
    worker_pids: int = setting("WAORCH_WORKER_PIDS", "256", "Pids limit of a session worker (swarm; 0: none).")
    transport: str = setting("WAORCH_TRANSPORT", "sim", "Transport given to session workers: `sim` or `neonize`.")
    sim_url: str = setting("WAORCH_SIM_URL", "", "Simulator HTTP API (set by `waorch run`).")
    sim_wire: str = setting("WAORCH_SIM_WIRE", "", "Simulator wire address host:port (set by `waorch run`).")
    session_store: str = setting("WAORCH_SESSION_STORE", "file", "Where session device stores live: `file` (`<WAORCH_DATA_DIR>/sessions/<id>`) or a `postgres://` URL shared by every session (docs/session-store.md).")
    sim_autopair: str = setting("WAORCH_SIM_AUTOPAIR", "0", "1: `waorch sim` pairs every session as soon as it shows a QR.")
    rate_limit: float = setting("WAORCH_RATE_LIMIT", "50", "Global accepted sends per second per tenant (token bucket).")
    rate_burst: int = setting("WAORCH_RATE_BURST", "200", "Token bucket size of the global rate limit.")
    max_body: int = setting("WAORCH_MAX_BODY", "2097152", "Largest accepted request body in bytes (413 above).")
    batch_max: int = setting("WAORCH_BATCH_MAX", "1000", "Most messages in one POST /api/send/batch.")
    idempotency_ttl: int = setting("WAORCH_IDEMPOTENCY_TTL", "86400", "Seconds an Idempotency-Key is remembered.")
    lease_seconds: int = setting("WAORCH_LEASE_SECONDS", "60", "How long a claimed message stays leased to its worker.")
    claim_wait: float = setting("WAORCH_CLAIM_WAIT", "25", "Longest long-poll of the claim endpoint, seconds.")
    max_attempts: int = setting("WAORCH_MAX_ATTEMPTS", "5", "Send attempts before a retryable failure becomes final.")
    retry_base: float = setting("WAORCH_RETRY_BASE", "5", "First retry backoff in seconds (doubles per attempt).")
    schedule_horizon: int = setting("WAORCH_SCHEDULE_HORIZON", "600", "Slots are reserved at most this many seconds ahead.")
    recover_after: int = setting("WAORCH_RECOVER_AFTER", "60", "Messages stuck unrouted longer than this are re-dispatched.")
    per_minute: float = setting("WAORCH_PER_MINUTE", "2", "Spine pacing: sends per minute per session (overridden by policy).")
    jitter: float = setting("WAORCH_JITTER", "0.3", "Spine pacing: each interval varies by up to ± this fraction.")
    policy_file: str = setting("WAORCH_POLICY_FILE", "", "Anti-ban policy file (JSON or YAML); built-in defaults when empty.")
    proxy_ceiling: int = setting("WAORCH_PROXY_CEILING", "4", "Most sessions sharing one proxy.")
    ping_interval: int = setting("WAORCH_PING_INTERVAL", "15", "Seconds between worker PINGs.")
    ping_timeout: int = setting("WAORCH_PING_TIMEOUT", "60", "Seconds without a PING before the watchdog restarts a worker.")
    webhook_max_skew: int = setting("WAORCH_WEBHOOK_MAX_SKEW", "300", "Worker webhooks older than this (seconds) are refused.")
    webhook_allowlist: str = setting("WAORCH_WEBHOOK_ALLOWLIST", "", "Hosts/CIDRs client webhooks may target over http/private nets.")
    secret_key: str = setting("WAORCH_SECRET_KEY", "", "Key that derives per-session webhook secrets (generated if empty).")
    log_level: str = setting("WAORCH_LOG_LEVEL", "INFO", "Log level of every waorch process.")
    worker_concurrency: int = setting("WAORCH_WORKER_CONCURRENCY", "2", "Processes per Celery worker (`waorch worker`).")
    flower_port: int = setting("WAORCH_FLOWER_PORT", "5555", "Port of Flower (`waorch flower`).")
    flower_basic_auth: str = setting("WAORCH_FLOWER_BASIC_AUTH", "", "user:password that Flower requires (no Flower without it).")
    proxy_fail_threshold: int = setting("WAORCH_PROXY_FAIL_THRESHOLD", "3", "Consecutive proxy failures before it is BAD.")
    proxy_check_target: str = setting("WAORCH_PROXY_CHECK_TARGET", "", "host:port proxy checks connect to (default: sim wire).")
    proxy_check_timeout: float = setting("WAORCH_PROXY_CHECK_TIMEOUT", "10", "Seconds one proxy health check may take.")
    profile_ceiling: int = setting("WAORCH_PROFILE_CEILING", "50", "Most phones sharing one linked-device profile.")
    low_inventory: int = setting("WAORCH_LOW_INVENTORY", "2", "Alert when free proxy or profile slots fall below this.")
    worker_command: str = setting("WAORCH_WORKER_COMMAND", "", "Worker command (default `python -m worker_container`).")
    docker_mounts: str = setting("WAORCH_DOCKER_MOUNTS", "", "Extra binds `host:ctr[:ro]`,... (dev images).")
    restart_backoff_max: float = setting("WAORCH_RESTART_BACKOFF_MAX", "60", "Longest backoff (s) before restarting a crashed worker.")
    visibility_timeout: int = setting("WAORCH_VISIBILITY_TIMEOUT", "300", "Seconds before an unacked Celery task is redelivered.")
    sweep_interval: float = setting("WAORCH_SWEEP_INTERVAL", "30", "Seconds between sweeps that re-dispatch lost dispatch work.")
    webhook_retry_window: float = setting("WAORCH_WEBHOOK_RETRY_WINDOW", "86400", "Seconds a client event is retried, then dead-lettered.")
    webhook_retry_base: float = setting("WAORCH_WEBHOOK_RETRY_BASE", "10", "First client webhook retry (s); doubles, jittered.")
    webhook_retry_max: float = setting("WAORCH_WEBHOOK_RETRY_MAX", "3600", "Longest pause between client webhook attempts (s).")
    webhook_timeout: float = setting("WAORCH_WEBHOOK_TIMEOUT", "10", "Seconds one client webhook POST may take.")
    webhook_dead_keep: int = setting("WAORCH_WEBHOOK_DEAD_KEEP", "604800", "Seconds dead-lettered client webhook events are kept.")
    webhook_parallel: int = setting("WAORCH_WEBHOOK_PARALLEL", "1", "Webhook deliveries at once per Celery worker (< concurrency).")
    metrics_token: str = setting("WAORCH_METRICS_TOKEN", "", "Bearer token GET /metrics requires (open when empty).")
    metrics_flush: float = setting("WAORCH_METRICS_FLUSH", "5", "Seconds between a gateway process's request-metric writes to Redis (0: at each request).")
    client_event_grace: float = setting("WAORCH_CLIENT_EVENT_GRACE", "10", "Sweep emits client events a crash left after this (s).")
    telegram_bot_token: str = setting("WAORCH_TELEGRAM_BOT_TOKEN", "", "Telegram bot token for alerts (none: sink off; never logged).")
    telegram_chat_id: str = setting("WAORCH_TELEGRAM_CHAT_ID", "", "Telegram chat (id or @channel) alerts go to.")
    telegram_api_url: str = setting("WAORCH_TELEGRAM_API_URL", "https://api.telegram.org", "Telegram Bot API base URL.")
    alert_webhook_url: str = setting("WAORCH_ALERT_WEBHOOK_URL", "", "URL signed alert events are POSTed to (sink off when empty).")
    alert_webhook_secret: str = setting("WAORCH_ALERT_WEBHOOK_SECRET", "", "HMAC secret of the alert webhook (required with its URL).")
    alert_rate_limit: int = setting("WAORCH_ALERT_RATE_LIMIT", "20", "Alert messages per sink per window; the surplus is grouped.")
    alert_rate_window: float = setting("WAORCH_ALERT_RATE_WINDOW", "60", "Seconds of the alert rate-limit window.")
    alert_retry_base: float = setting("WAORCH_ALERT_RETRY_BASE", "5", "First alert retry (s); doubles up to 300, jittered.")
    alert_retry_window: float = setting("WAORCH_ALERT_RETRY_WINDOW", "21600", "Seconds an alert is retried on a failing sink.")
    backup_dir: str = setting("WAORCH_BACKUP_DIR", "", "Where backups are written (default `<WAORCH_STATE_DIR>/backups`).")
    backup_at: str = setting("WAORCH_BACKUP_AT", "03:00", "Daily backup time HH:MM in the beat's timezone (TZ); empty: none.")
    backup_keep: int = setting("WAORCH_BACKUP_KEEP", "7", "Newest backups kept in WAORCH_BACKUP_DIR; older ones are pruned.")
    runner_actions: str = setting("WAORCH_RUNNER_ACTIONS", "local", "Session runner calls: `local` (in this process) or `queue` (task on queue orchestrator).")
    claim_wakeup: str = setting("WAORCH_CLAIM_WAKEUP", "notify", "Parked claims: `notify` (woken by pub/sub) or `poll` (re-check every 0.5 s, the old way).")
    claim_recheck: float = setting("WAORCH_CLAIM_RECHECK", "5", "Seconds between a notified parked claim's safety re-checks.")
    recipient_order: str = setting("WAORCH_RECIPIENT_ORDER", "on", "`on`: a recipient gets a tenant's messages in acceptance order; `off`: no such check.")
    reroute_after_pause: float = setting("WAORCH_REROUTE_AFTER_PAUSE", "3600", "Seconds: a RESTRICTED session's messages move to another sender if its pause runs longer.")
    message_retention: float = setting("WAORCH_MESSAGE_RETENTION", "2592000", "Seconds a finished message (and its history) is kept after its last change; 0: forever.")

    @property
    def gateway_url(self) -> str:
        return self.public_url or f"http://{self.bind}:{self.port}"


SETTINGS: tuple[Setting, ...] = tuple(f.metadata["setting"] for f in fields(Settings))
_BY_ENV = {s.env: s for s in SETTINGS}
_CONVERT = {"int": int, "float": float, "str": str}


def raw(env: str) -> str:
    """The value of one setting: the environment, else its documented default."""
    return os.environ.get(env, _BY_ENV[env].default)


def load() -> Settings:
    """Read every setting from the environment now (no caching)."""
    values = {}
    for f in fields(Settings):
        env = f.metadata["setting"].env
        try:
            values[f.name] = _CONVERT[str(f.type)](raw(env))
        except ValueError as exc:
            raise ValueError(f"{env}={raw(env)!r} is not a valid {f.type}") from exc
    return Settings(**values)


@lru_cache(maxsize=1)
def get() -> Settings:
    """Process-wide settings, read once."""
    return load()


def daily_time(text: str) -> tuple[int, int] | None:
    """A time of day "HH:MM" (24 h) as (hour, minute); None when empty (WAORCH_BACKUP_AT)."""
    text = text.strip()
    if not text:
        return None
    match = re.fullmatch(r"(\d{1,2}):(\d{2})", text)
    if not match or int(match[1]) > 23 or int(match[2]) > 59:
        raise ValueError(f"WAORCH_BACKUP_AT={text!r} must be HH:MM (00:00-23:59) or empty")
    return int(match[1]), int(match[2])


def markdown_table() -> str:
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    rows += [f"| `{s.env}` | `{s.default}` | {s.doc} |" for s in SETTINGS]
    return "\n".join(rows) + "\n"
