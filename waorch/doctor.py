"""`waorch doctor`: checks of a deployment, each a plain function returning findings.

Every finding says what is wrong and what to do; none ever carries a secret (Redis passwords and
proxy credentials are redacted). "Production" means the real WhatsApp transport (`neonize`).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from urllib.parse import urlsplit

import redis

from waorch.core import jobs, keys, redis_urls, session_store, settings
from waorch.core.settings import Settings
from waorch.metrics import celery_tasks as task_metrics
from waorch.metrics.collector import CELERY_QUEUES
from waorch.proxies import health as proxy_health
from waorch.proxies.pool import ProxyPool, proxy_id, redact
from waorch.runners.process import HEARTBEAT
from waorch.sessions import profiles
from waorch.sessions import store as store_check

OK, WARN, FAIL = "OK", "WARN", "FAIL"
MIN_REDIS = (6, 2)
BACKLOG_WARN = 1000  # task messages waiting in one Celery queue
BEAT_TASK = "tasks.maintenance.pump_queues"  # on beat's schedule every 5 s
BEAT_STALE = 60.0
PROBE_TIMEOUT = 5.0


@dataclass(frozen=True)
class Finding:
    check: str
    level: str  # OK | WARN | FAIL
    detail: str
    fix: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def redact_url(url: str) -> str:
    """A service URL (redis://, redis+sentinel://, tcp://, unix://) with any password replaced by ***."""
    if redis_urls.is_sentinel_url(url):
        return redis_urls.redact(url)
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid url>"
    if parts.password is None and parts.username is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    auth = f"{parts.username or ''}:***" if parts.password is not None else "***"
    return parts._replace(netloc=f"{auth}@{host}").geturl()


def is_production(conf: Settings) -> bool:
    return conf.transport == "neonize"


def connect_redis(url: str, timeout: float = 3.0) -> redis.Redis:
    """A client of its own with short timeouts (the shared one waits for long-polls)."""
    return redis_urls.redis_client_for(url, socket_connect_timeout=timeout, socket_timeout=timeout)


def check_redis(r: redis.Redis, conf: Settings) -> list[Finding]:
    """Reachability and version; an unreachable Redis is the one FAIL that stops the other checks."""
    where = redact_url(conf.redis_url)
    started = time.perf_counter()
    try:
        r.ping()
        info = r.info("server")
    except redis.AuthenticationError:
        return [Finding("redis", FAIL, f"{where} refused the password",
                        "put the right password in REDIS_URL (redis://:PASSWORD@host:port/0)")]
    except (redis.RedisError, OSError) as exc:
        return [Finding("redis", FAIL, f"{where} unreachable ({exc.__class__.__name__})",
                        "start Redis, or point REDIS_URL at it")]
    latency = (time.perf_counter() - started) * 1000
    version = str(info.get("redis_version", "?"))
    found = [Finding("redis", OK, f"{where} answers (Redis {version}, {latency:.1f} ms)")]
    try:
        numbers = tuple(int(p) for p in version.split(".")[:2])
    except ValueError:
        numbers = MIN_REDIS
    if numbers < MIN_REDIS:
        found.append(Finding("redis version", WARN, f"Redis {version} is older than "
                             f"{'.'.join(map(str, MIN_REDIS))}", "upgrade Redis (waorch is tested on 7.x)"))
    return found


def _config(r: redis.Redis, name: str) -> str | None:
    try:
        return r.config_get(name).get(name)
    except redis.ResponseError:  # CONFIG renamed or disabled (managed Redis)
        return None


def check_persistence(r: redis.Redis, conf: Settings) -> list[Finding]:
    """AOF on (production), and no eviction policy that could silently drop state."""
    found = []
    aof = _config(r, "appendonly")
    if aof is None:
        aof = "yes" if str(r.info("persistence").get("aof_enabled")) == "1" else "no"
    if aof == "yes":
        fsync = _config(r, "appendfsync") or "?"
        found.append(Finding("redis persistence", OK, f"AOF on (appendfsync {fsync})"))
    elif is_production(conf):
        found.append(Finding("redis persistence", WARN, "AOF is off: a Redis restart loses recent "
                             "messages, leases and session state",
                             "run Redis with --appendonly yes --appendfsync everysec"))
    else:
        found.append(Finding("redis persistence", OK, "AOF off (acceptable with the simulator transport)"))
    maxmemory = _config(r, "maxmemory")
    policy = _config(r, "maxmemory-policy")
    if maxmemory not in (None, "0") and policy not in (None, "noeviction"):
        found.append(Finding("redis memory", FAIL, f"maxmemory-policy {policy} evicts keys: waorch state "
                             "would vanish under memory pressure",
                             "set maxmemory-policy noeviction (and give Redis enough memory)"))
    return found


def check_settings(conf: Settings) -> list[Finding]:
    if conf.secret_key:
        return [Finding("secret key", OK, "WAORCH_SECRET_KEY is set")]
    level = FAIL if is_production(conf) else WARN
    return [Finding("secret key", level, "WAORCH_SECRET_KEY is empty: worker secrets are predictable",
                    "set WAORCH_SECRET_KEY to a long random value, the same in every process")]


def check_runner(r: redis.Redis | None, conf: Settings) -> list[Finding]:
    """The container engine (docker runner) or the supervisor's heartbeat (process runner)."""
    if conf.runner == "docker":
        return check_engine(conf)
    if r is None:
        return []
    pid = r.get(HEARTBEAT)
    if pid:
        return [Finding("runner", OK, f"process runner: `waorch supervisor` alive (pid {pid})")]
    active = r.scard(keys.SESSIONS_ACTIVE)
    return [Finding("runner", FAIL if active else WARN,
                    f"process runner: no `waorch supervisor` heartbeat ({active} sessions should run)",
                    "start `waorch supervisor` (exactly one per Redis), or use WAORCH_RUNNER=docker")]


def check_session_store(r: redis.Redis, conf: Settings) -> list[Finding]:
    """WAORCH_SESSION_STORE: valid; for PostgreSQL reachable, its schema there, the devices of
    registered sessions in it (docs/session-store.md)."""
    try:
        url = session_store.parse(conf.session_store)
    except ValueError as exc:
        return [Finding("session store", FAIL, str(exc),
                        "set WAORCH_SESSION_STORE to `file` or a postgres:// URL")]
    if url == session_store.FILE:
        return [Finding("session store", OK, "file: each session's device lives in its data directory "
                                             "(it cannot move to another host)")]
    try:
        report = store_check.inspect(r, url, conf.transport)
    except session_store.StoreUnavailable as exc:
        return [Finding("session store", FAIL, str(exc),
                        "start PostgreSQL (or PgBouncer) and check the URL, its user and password")]
    found = [Finding("session store", OK, f"{report.where} reachable: {report.devices} whatsmeow devices, "
                                          f"{report.sim_sessions} sim sessions")]
    if conf.transport == "neonize" and report.whatsmeow_version is None:
        found.append(Finding("session store schema", WARN, "whatsmeow's tables do not exist yet",
                             "the first neonize worker creates them (under a lock); nothing to do"))
    if report.missing:
        found.append(Finding("session store devices", FAIL,
                             f"{len(report.missing)} sessions' devices are not in the store: "
                             f"{', '.join(report.missing[:10])}",
                             "those sessions pair again (a new QR): restore the store from a backup if it "
                             "was lost, or check WAORCH_SESSION_STORE names the right database"))
    if report.unknown:
        found.append(Finding("session store devices", WARN,
                             f"{len(report.unknown)} devices in the store belong to no session",
                             "left by deleted sessions before their deletion ran, or another "
                             "deployment shares the database"))
    if report.pending_deletions:
        found.append(Finding("session store deletions", OK if report.pending_deletions < 100 else WARN,
                             f"{report.pending_deletions} deleted sessions' devices wait for deletion",
                             "the watchdog deletes them once their workers are gone"))
    return found


def check_engine(conf: Settings, timeout: float = 5.0) -> list[Finding]:
    import docker  # noqa: PLC0415  (only the docker runner needs the SDK)
    from docker.errors import DockerException, ImageNotFound  # noqa: PLC0415

    where = redact_url(conf.docker_host) if conf.docker_host else "the default engine socket"
    try:
        client = (docker.DockerClient(base_url=conf.docker_host, timeout=timeout) if conf.docker_host
                  else docker.from_env(timeout=timeout))
        client.ping()
        version = client.version().get("Version", "?")
    except (DockerException, OSError) as exc:
        return [Finding("engine", FAIL, f"container engine at {where} unreachable ({exc.__class__.__name__})",
                        "start the engine, mount its socket into this container, or set DOCKER_HOST")]
    found = [Finding("engine", OK, f"container engine at {where} answers (version {version})")]
    try:
        client.images.get(conf.worker_image)
        found.append(Finding("worker image", OK, f"{conf.worker_image} present"))
    except ImageNotFound:
        found.append(Finding("worker image", FAIL, f"{conf.worker_image} is not on the engine",
                             "docker build -f worker_container/Dockerfile -t "
                             f"{conf.worker_image} .  (or `docker compose --profile build build worker`)"))
    except (DockerException, OSError) as exc:
        found.append(Finding("worker image", WARN, f"could not look up {conf.worker_image} "
                             f"({exc.__class__.__name__})"))
    finally:
        client.close()
    return found


def check_proxies(r: redis.Redis, conf: Settings, timeout: float = PROBE_TIMEOUT) -> list[Finding]:
    """A real tunnel through every proxy now (read-only: stored health is not changed)."""
    pool = ProxyPool(r)
    urls = pool.urls()
    if not urls:
        return [Finding("proxies", WARN, "no proxies: sessions cannot be created",
                        "waorch proxy add socks5h://user:pass@host:port (or --file)")]
    try:
        target = proxy_health.check_target()
    except ValueError as exc:
        return [Finding("proxies", FAIL, str(exc), "set WAORCH_PROXY_CHECK_TARGET=host:port")]
    with ThreadPoolExecutor(max_workers=min(16, len(urls))) as executor:
        errors = list(executor.map(lambda u: proxy_health.probe(u, target, timeout), urls))
    found = []
    bad = [(url, error) for url, error in zip(urls, errors, strict=True) if error]
    for url, error in bad:
        found.append(Finding("proxy", FAIL, f"{proxy_id(url)} {redact(url)}: {error}",
                             "fix or replace it: `waorch proxy remove " + proxy_id(url) + "` moves its "
                             f"{len(pool.sessions_on(url))} sessions"))
    views = {url: pool.view(url) for url in urls}
    stored_bad = sum(v["status"] == "BAD" for v in views.values())
    found.append(Finding("proxies", OK if not bad else WARN,
                         f"{len(urls) - len(bad)}/{len(urls)} reach {target[0]}:{target[1]}; "
                         f"{stored_bad} marked BAD in Redis",
                         "" if len(bad) < len(urls) else "when every proxy fails, check that "
                         "WAORCH_PROXY_CHECK_TARGET is reachable through them"))
    failing = {url for url, _ in bad}
    # slots count on proxies that are OK in Redis and answered just now
    free = sum(max(0, v["ceiling"] - v["sessions"]) for url, v in views.items()
               if v["status"] == "OK" and url not in failing)
    if free < conf.low_inventory:
        found.append(Finding("proxy slots", WARN,
                             f"{free} free proxy slots (alert below {conf.low_inventory})",
                             "add proxies, or raise WAORCH_PROXY_CEILING with care"))
    else:
        found.append(Finding("proxy slots", OK, f"{free} free proxy slots on working proxies"))
    return found


def check_profiles(r: redis.Redis, conf: Settings) -> list[Finding]:
    ids = [p["id"] for p in profiles.inventory()]
    pipe = r.pipeline(transaction=False)
    for pid in ids:
        pipe.zscore(profiles.PROFILES_USAGE, pid)
    used = [int(score or 0) for score in pipe.execute()]
    free = sum(max(0, conf.profile_ceiling - u) for u in used)
    level = OK if free >= conf.low_inventory else WARN
    return [Finding("profiles", level, f"{free} free device-profile slots ({len(ids)} profiles × "
                    f"{conf.profile_ceiling} phones)",
                    "" if level == OK else "raise WAORCH_PROFILE_CEILING or add profiles")]


def check_celery(r: redis.Redis, timeout: float = 3.0, now: float | None = None,
                 broker_url: str | None = None) -> list[Finding]:
    """Workers answering a ping, a consumer on every queue, backlogs, and beat's last sign of life."""
    app = jobs.producer(broker_url)
    found = []
    try:
        replies = app.control.ping(timeout=timeout) or []
        consumers = app.control.inspect(timeout=timeout).active_queues() or {}
    except Exception as exc:  # noqa: BLE001  (broker trouble of any kind is the finding)
        return [Finding("celery", FAIL, f"could not ask the workers ({exc.__class__.__name__})",
                        "check the broker (REDIS_URL)")]
    nodes = sorted(name for reply in replies for name in reply)
    if not nodes:
        found.append(Finding("celery", FAIL, f"no Celery worker answered within {timeout:g} s",
                             "start `waorch worker` (all queues) or one per queue group"))
    else:
        found.append(Finding("celery", OK, f"{len(nodes)} workers answer: {', '.join(nodes)}"))
        served = {q["name"] for queues in consumers.values() for q in queues}
        missing = [q for q in CELERY_QUEUES if q not in served]
        if missing:
            found.append(Finding("celery queues", FAIL, f"no worker consumes: {', '.join(missing)}",
                                 f"start a worker with `waorch worker --queues {','.join(missing)}`"))
    pipe = r.pipeline(transaction=False)
    for queue in CELERY_QUEUES:
        pipe.llen(queue)
    for queue, length in zip(CELERY_QUEUES, pipe.execute(), strict=True):
        if length > BACKLOG_WARN:
            found.append(Finding("celery backlog", WARN, f"{length} tasks waiting in `{queue}`",
                                 "add workers for that queue, or look for a stuck one"))
    now = time.time() if now is None else now
    last = task_metrics.last_success(r).get(BEAT_TASK)
    if last is not None and now - last <= BEAT_STALE:
        found.append(Finding("beat", OK, f"periodic tasks run ({BEAT_TASK} {now - last:.0f} s ago)"))
    else:
        ago = "never" if last is None else f"{now - last:.0f} s ago"
        found.append(Finding("beat", WARN, f"{BEAT_TASK} (every 5 s) last succeeded: {ago}",
                             "run exactly one `waorch beat`, and a worker on the maintenance queue"))
    return found


def run_checks(conf: Settings | None = None, celery_timeout: float = 3.0) -> list[Finding]:
    """Every check in order; without Redis only the checks that do not need it."""
    conf = conf or settings.load()
    r = connect_redis(conf.redis_url)
    try:
        found = check_redis(r, conf)
        found += check_settings(conf)
        if found[0].level == FAIL:
            return found + (check_engine(conf) if conf.runner == "docker" else [])
        found += check_persistence(r, conf)
        found += check_runner(r, conf)
        found += check_session_store(r, conf)
        found += check_proxies(r, conf)
        found += check_profiles(r, conf)
        found += check_celery(r, celery_timeout, broker_url=conf.redis_url)
        return found
    finally:
        r.close()


def render_table(findings: list[Finding]) -> str:
    """One line per finding (status, check, detail), its fix indented below."""
    width = max((len(f.check) for f in findings), default=5)
    lines = []
    for f in findings:
        lines.append(f"{f.level:<4}  {f.check:<{width}}  {f.detail}")
        if f.fix and f.level != OK:
            lines.append(f"{'':<4}  {'':<{width}}  -> {f.fix}")
    counts = {level: sum(f.level == level for f in findings) for level in (OK, WARN, FAIL)}
    lines.append(f"{counts[OK]} ok, {counts[WARN]} warnings, {counts[FAIL]} failures")
    return "\n".join(lines)
