"""All configuration, read from environment variables (documented in docs/configuration.md)."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Any


@dataclass(frozen=True)
class Setting:
    env: str
    default: str
    doc: str


# One table: the docs (docs/configuration.md) are generated from it by `waorch settings`.
SETTINGS: tuple[Setting, ...] = (
    Setting("REDIS_URL", "redis://127.0.0.1:6379/0", "Redis for state, pacing and the Celery broker."),
    Setting("WAORCH_STATE_DIR", ".waorch", "Where `waorch run` keeps its files (run.json, logs)."),
    Setting("WAORCH_DATA_DIR", ".waorch/data", "Session data volumes (`<dir>/sessions/<id>`)."),
    Setting("WAORCH_BIND", "127.0.0.1", "Address the gateway listens on."),
    Setting("WAORCH_PORT", "8080", "Gateway port."),
    Setting("WAORCH_PUBLIC_URL", "", "URL workers use to reach the gateway (default http://BIND:PORT)."),
    Setting("WAORCH_GATEWAY_WORKERS", "2", "gunicorn worker processes for the gateway (gevent)."),
    Setting("WAORCH_RUNNER", "process", "Session runner: `process`, `docker` or `swarm`."),
    Setting("WAORCH_WORKER_IMAGE", "waorch-worker:latest", "Image the docker runner starts."),
    Setting("WAORCH_DOCKER_NETWORK", "host", "network_mode for session containers (docker runner)."),
    Setting("DOCKER_HOST", "", "Engine API address for the docker runner (SDK default when empty)."),
    Setting("WAORCH_SWARM_HOST", "", "Swarm manager API address (swarm runner; DOCKER_HOST when empty)."),
    Setting("WAORCH_SWARM_DATA", "volume", "Swarm session data: `volume` (per node) or `bind` (shared)."),
    Setting("WAORCH_SWARM_CONSTRAINTS", "", "Extra placement constraints, comma-separated (swarm runner)."),
    Setting("WAORCH_SWARM_SLOT_RESOURCE", "", "Swarm generic resource each session reserves 1 of."),
    Setting("WAORCH_WORKER_MEMORY", "512m", "Memory limit of a session worker (swarm; empty: none)."),
    Setting("WAORCH_WORKER_PIDS", "256", "Pids limit of a session worker (swarm; 0: none)."),
    Setting("WAORCH_TRANSPORT", "sim", "Transport given to session workers: `sim` or `neonize`."),
    Setting("WAORCH_SIM_URL", "", "Simulator HTTP API (set by `waorch run`)."),
    Setting("WAORCH_SIM_WIRE", "", "Simulator wire address host:port (set by `waorch run`)."),
    Setting("WAORCH_RATE_LIMIT", "50", "Global accepted sends per second per tenant (token bucket)."),
    Setting("WAORCH_RATE_BURST", "200", "Token bucket size of the global rate limit."),
    Setting("WAORCH_MAX_BODY", "2097152", "Largest accepted request body in bytes (413 above)."),
    Setting("WAORCH_BATCH_MAX", "1000", "Most messages in one POST /api/send/batch."),
    Setting("WAORCH_IDEMPOTENCY_TTL", "86400", "Seconds an Idempotency-Key is remembered."),
    Setting("WAORCH_LEASE_SECONDS", "60", "How long a claimed message stays leased to its worker."),
    Setting("WAORCH_CLAIM_WAIT", "25", "Longest long-poll of the claim endpoint, seconds."),
    Setting("WAORCH_MAX_ATTEMPTS", "5", "Send attempts before a retryable failure becomes final."),
    Setting("WAORCH_RETRY_BASE", "5", "First retry backoff in seconds (doubles per attempt)."),
    Setting("WAORCH_SCHEDULE_HORIZON", "600", "Slots are reserved at most this many seconds ahead."),
    Setting("WAORCH_RECOVER_AFTER", "60", "Messages stuck unrouted longer than this are re-dispatched."),
    Setting("WAORCH_PER_MINUTE", "2", "Spine pacing: sends per minute per session (overridden by policy)."),
    Setting("WAORCH_JITTER", "0.3", "Spine pacing: each interval varies by up to ± this fraction."),
    Setting("WAORCH_POLICY_FILE", "", "Anti-ban policy file (JSON or YAML); built-in defaults when empty."),
    Setting("WAORCH_PROXY_CEILING", "4", "Most sessions sharing one proxy."),
    Setting("WAORCH_PING_INTERVAL", "15", "Seconds between worker PINGs."),
    Setting("WAORCH_PING_TIMEOUT", "60", "Seconds without a PING before the watchdog restarts a worker."),
    Setting("WAORCH_WEBHOOK_MAX_SKEW", "300", "Worker webhooks older than this (seconds) are refused."),
    Setting("WAORCH_WEBHOOK_ALLOWLIST", "", "Hosts/CIDRs client webhooks may target over http/private nets."),
    Setting("WAORCH_SECRET_KEY", "", "Key that derives per-session webhook secrets (generated if empty)."),
    Setting("WAORCH_LOG_LEVEL", "INFO", "Log level of every waorch process."),
    Setting("WAORCH_WORKER_CONCURRENCY", "2", "Processes per Celery worker (`waorch worker`)."),
    Setting("WAORCH_FLOWER_PORT", "5555", "Port of Flower (`waorch flower`)."),
    Setting("WAORCH_FLOWER_BASIC_AUTH", "", "user:password that Flower requires (no Flower without it)."),
    Setting("WAORCH_PROXY_FAIL_THRESHOLD", "3", "Consecutive proxy failures before it is BAD."),
    Setting("WAORCH_PROXY_CHECK_TARGET", "", "host:port proxy checks connect to (default: sim wire)."),
    Setting("WAORCH_PROXY_CHECK_TIMEOUT", "10", "Seconds one proxy health check may take."),
    Setting("WAORCH_PROFILE_CEILING", "50", "Most phones sharing one linked-device profile."),
    Setting("WAORCH_LOW_INVENTORY", "2", "Alert when free proxy or profile slots fall below this."),
    Setting("WAORCH_WORKER_COMMAND", "", "Worker command (default `python -m worker_container`)."),
    Setting("WAORCH_DOCKER_MOUNTS", "", "Extra binds `host:ctr[:ro]`,... (dev images)."),
    Setting("WAORCH_RESTART_BACKOFF_MAX", "60", "Longest backoff (s) before restarting a crashed worker."),
    Setting("WAORCH_VISIBILITY_TIMEOUT", "300", "Seconds before an unacked Celery task is redelivered."),
    Setting("WAORCH_SWEEP_INTERVAL", "30", "Seconds between sweeps that re-dispatch lost dispatch work."),
    Setting("WAORCH_WEBHOOK_RETRY_WINDOW", "86400", "Seconds a client event is retried, then dead-lettered."),
    Setting("WAORCH_WEBHOOK_RETRY_BASE", "10", "First client webhook retry (s); doubles, jittered."),
    Setting("WAORCH_WEBHOOK_RETRY_MAX", "3600", "Longest pause between client webhook attempts (s)."),
    Setting("WAORCH_WEBHOOK_TIMEOUT", "10", "Seconds one client webhook POST may take."),
    Setting("WAORCH_WEBHOOK_DEAD_KEEP", "604800", "Seconds dead-lettered client webhook events are kept."),
    Setting("WAORCH_WEBHOOK_PARALLEL", "1", "Webhook deliveries at once per Celery worker (< concurrency)."),
    Setting("WAORCH_METRICS_TOKEN", "", "Bearer token GET /metrics requires (open when empty)."),
    Setting("WAORCH_METRICS_FLUSH", "5",
            "Seconds between a gateway process's request-metric writes to Redis (0: at each request)."),
    Setting("WAORCH_CLIENT_EVENT_GRACE", "10", "Sweep emits client events a crash left after this (s)."),
    Setting("WAORCH_TELEGRAM_BOT_TOKEN", "", "Telegram bot token for alerts (none: sink off; never logged)."),
    Setting("WAORCH_TELEGRAM_CHAT_ID", "", "Telegram chat (id or @channel) alerts go to."),
    Setting("WAORCH_TELEGRAM_API_URL", "https://api.telegram.org", "Telegram Bot API base URL."),
    Setting("WAORCH_ALERT_WEBHOOK_URL", "", "URL signed alert events are POSTed to (sink off when empty)."),
    Setting("WAORCH_ALERT_WEBHOOK_SECRET", "", "HMAC secret of the alert webhook (required with its URL)."),
    Setting("WAORCH_ALERT_RATE_LIMIT", "20", "Alert messages per sink per window; the surplus is grouped."),
    Setting("WAORCH_ALERT_RATE_WINDOW", "60", "Seconds of the alert rate-limit window."),
    Setting("WAORCH_ALERT_RETRY_BASE", "5", "First alert retry (s); doubles up to 300, jittered."),
    Setting("WAORCH_ALERT_RETRY_WINDOW", "21600", "Seconds an alert is retried on a failing sink."),
    Setting("WAORCH_BACKUP_DIR", "", "Where backups are written (default `<WAORCH_STATE_DIR>/backups`)."),
    Setting("WAORCH_BACKUP_AT", "03:00", "Daily backup time HH:MM in the beat's timezone (TZ); empty: none."),
    Setting("WAORCH_BACKUP_KEEP", "7", "Newest backups kept in WAORCH_BACKUP_DIR; older ones are pruned."),
    Setting("WAORCH_RUNNER_ACTIONS", "local",
            "Session runner calls: `local` (in this process) or `queue` (task on queue orchestrator)."),
    Setting("WAORCH_CLAIM_WAKEUP", "notify",
            "Parked claims: `notify` (woken by pub/sub) or `poll` (re-check every 0.5 s, the old way)."),
    Setting("WAORCH_CLAIM_RECHECK", "5", "Seconds between a notified parked claim's safety re-checks."),
    Setting("WAORCH_RECIPIENT_ORDER", "on",
            "`on`: a recipient gets a tenant's messages in acceptance order; `off`: no such check."),
    Setting("WAORCH_REROUTE_AFTER_PAUSE", "3600",
            "Seconds: a RESTRICTED session's messages move to another sender if its pause runs longer."),
    Setting("WAORCH_MESSAGE_RETENTION", "2592000",
            "Seconds a finished message (and its history) is kept after its last change; 0: forever."),
)

_BY_ENV = {s.env: s for s in SETTINGS}


def raw(env: str) -> str:
    """The value of one setting: the environment, else its documented default."""
    return os.environ.get(env, _BY_ENV[env].default)


@dataclass(frozen=True)
class Settings:
    redis_url: str
    state_dir: str
    data_dir: str
    bind: str
    port: int
    public_url: str
    gateway_workers: int
    runner: str
    worker_image: str
    docker_network: str
    docker_host: str
    swarm_host: str
    swarm_data: str
    swarm_constraints: str
    swarm_slot_resource: str
    worker_memory: str
    worker_pids: int
    transport: str
    sim_url: str
    sim_wire: str
    rate_limit: float
    rate_burst: int
    max_body: int
    batch_max: int
    idempotency_ttl: int
    lease_seconds: int
    claim_wait: float
    max_attempts: int
    retry_base: float
    schedule_horizon: int
    recover_after: int
    per_minute: float
    jitter: float
    policy_file: str
    proxy_ceiling: int
    ping_interval: int
    ping_timeout: int
    webhook_max_skew: int
    webhook_allowlist: str
    secret_key: str
    log_level: str
    worker_concurrency: int
    flower_port: int
    flower_basic_auth: str
    proxy_fail_threshold: int
    proxy_check_target: str
    proxy_check_timeout: float
    profile_ceiling: int
    low_inventory: int
    worker_command: str
    docker_mounts: str
    restart_backoff_max: float
    visibility_timeout: int
    sweep_interval: float
    webhook_retry_window: float
    webhook_retry_base: float
    webhook_retry_max: float
    webhook_timeout: float
    webhook_dead_keep: int
    webhook_parallel: int
    metrics_token: str
    metrics_flush: float
    client_event_grace: float
    telegram_bot_token: str
    telegram_chat_id: str
    telegram_api_url: str
    alert_webhook_url: str
    alert_webhook_secret: str
    alert_rate_limit: int
    alert_rate_window: float
    alert_retry_base: float
    alert_retry_window: float
    backup_dir: str
    backup_at: str
    backup_keep: int
    runner_actions: str
    claim_wakeup: str
    claim_recheck: float
    recipient_order: str
    reroute_after_pause: float
    message_retention: float

    @property
    def gateway_url(self) -> str:
        return self.public_url or f"http://{self.bind}:{self.port}"


def _convert(value: str, target: Any) -> Any:
    if target in (int, "int"):
        return int(value)
    if target in (float, "float"):
        return float(value)
    return value


def load() -> Settings:
    """Read every setting from the environment now (no caching)."""
    values = {}
    for f, s in zip(fields(Settings), SETTINGS, strict=True):
        try:
            values[f.name] = _convert(raw(s.env), f.type)
        except ValueError as exc:
            raise ValueError(f"{s.env}={raw(s.env)!r} is not a valid {f.type}") from exc
    return Settings(**values)


@lru_cache(maxsize=1)
def get() -> Settings:
    """Process-wide settings, read once."""
    return load()


def markdown_table() -> str:
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    rows += [f"| `{s.env}` | `{s.default}` | {s.doc} |" for s in SETTINGS]
    return "\n".join(rows) + "\n"
