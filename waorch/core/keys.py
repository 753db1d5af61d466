"""Redis key names: the vocabulary of SPEC section 8, plus waorch's own (docs/redis-keys.md).

waorch targets one Redis primary (AOF on in production). Scripts such as proxy allocation read
global sets and message keys together with session keys, so no hash tags are used: Redis Cluster
is not supported, by choice.
"""

from __future__ import annotations

# --- seed vocabulary -------------------------------------------------------------------------
SESSIONS_ACTIVE = "sessions:active"  # SET of session ids that should be running
PROXIES_AVAILABLE = "proxies:available"  # SET of proxy urls with a free slot and status OK
PROXIES_ALL = "proxies:all"  # SET of every known proxy url


def session_queue(phone: str) -> str:
    """LIST of routed message ids waiting for a send slot (FIFO)."""
    return f"queue:session:{phone}"


def session(session_id: str) -> str:
    """HASH: the session record."""
    return f"session:{session_id}"


def session_outbox(session_id: str) -> str:
    """ZSET msg id -> unix time from which it may be claimed."""
    return f"session:outbox:{session_id}"


def phone_proxy(phone: str) -> str:
    return f"phone:proxy:{phone}"


def proxy_counter(url: str) -> str:
    return f"counter:proxy:{url}"


def proxy_status(url: str) -> str:
    return f"proxy:status:{url}"


def session_qr(session_id: str) -> str:
    return f"session:qr:{session_id}"


def session_status(session_id: str) -> str:
    return f"session:status:{session_id}"


def session_events(session_id: str) -> str:
    """Capped LIST of recent worker events (JSON)."""
    return f"session:events:{session_id}"


# --- waorch's own ----------------------------------------------------------------------------
SESSIONS_ALL = "sessions:all"  # SET of every session id (desired or not)
# HASH deleted session id -> JSON {phone, tenant, at}: its unsent messages still to reroute
SESSIONS_GONE = "sessions:gone"
# ZSET JSON {session, jid} -> earliest time its device is deleted from a PostgreSQL session store
STORE_FORGET = "store:forget"


# --- fleet-scale indexes (lua_scripts/lib/sendable.lua, waorch/sending/dispatch.py; docs/redis-keys.md) --
# HASH level:<name> -> per_day, fallback, reroute_after_pause, sig, built: what the sender index ranks with
SENDABLE_CONF = "sessions:sendable:conf"
SESSIONS_PUMP_DUE = "sessions:pump:due"  # ZSET session id -> when its FIFO of routed messages needs slots
LEASES_DUE = "leases:due"  # ZSET session id -> earliest expiry of its leases (or earlier)
SESSIONS_LAST_PING = "sessions:last_ping"  # ZSET session id -> last sign of life (PING, start, restart)


def sendable_sessions(tenant: str) -> str:
    """ZSET live session id -> rank in the sender choice (tier * 1e9 + spare budget)."""
    return f"sessions:sendable:{tenant}"


def sendable_due(tenant: str) -> str:
    """ZSET live session id -> when its rank in sessions:sendable:<tenant> rises by itself next."""
    return f"sessions:sendable:due:{tenant}"


def session_by_phone(phone: str) -> str:
    return f"session:by_phone:{phone}"


def session_leases(session_id: str) -> str:
    """ZSET msg id -> lease expiry (unix time) of claimed messages."""
    return f"session:leases:{session_id}"


def session_pacing(session_id: str) -> str:
    """HASH: next_slot (reservation pointer), next_claim (earliest next send), sent counters."""
    return f"session:pacing:{session_id}"


def message(msg_id: str) -> str:
    """HASH: the message record."""
    return f"msg:{msg_id}"


def message_history(msg_id: str) -> str:
    """LIST of JSON transitions {status, at, detail}."""
    return f"msg:history:{msg_id}"


def tenant_messages(tenant: str) -> str:
    """ZSET msg id -> created_at, for listing a tenant's messages."""
    return f"messages:tenant:{tenant}"


MESSAGES_ALL = "messages:all"  # ZSET msg id -> created_at
MESSAGES_UNROUTED = "messages:unrouted"  # ZSET msg id -> time it entered queued (recovery sweep)


def idempotency(tenant: str, key: str) -> str:
    return f"idem:{tenant}:{key}"


def api_key(key_hash: str) -> str:
    """HASH: tenant, scopes, label, created_at of one API key (by its SHA-256)."""
    return f"apikey:{key_hash}"


APIKEYS_ALL = "apikeys:all"  # SET of key hashes
TENANTS = "tenants:all"  # SET of tenant names


def rate_bucket(tenant: str) -> str:
    return f"ratelimit:{tenant}"


def webhook_nonce(session_id: str, signature: str) -> str:
    return f"webhook:nonce:{session_id}:{signature}"


def sticky_sender(tenant: str, recipient: str) -> str:
    """STRING: session id that last wrote to `recipient` for `tenant` (the same person hears
    from the same number)."""
    return f"sticky:sender:{tenant}:{recipient}"


def wa_message(session_id: str, wa_id: str) -> str:
    """STRING: our message id for WhatsApp's message id (receipts arrive by wa id)."""
    return f"wa:msg:{session_id}:{wa_id}"


def session_inbound(session_id: str) -> str:
    """Capped LIST of inbound messages (JSON) received by a session."""
    return f"session:inbound:{session_id}"


# --- client webhooks (waorch/client_webhooks.py, client_events.py, webhook_delivery.py) -------
WEBHOOKS_ALL = "webhooks:all"  # SET of subscription ids
WEBHOOKS_DUE = "webhooks:due"  # ZSET "<sub>:<lane>" -> when that non-empty lane should be tried
DEAD_LETTERS_ALL = "webhooks:dead:all"  # ZSET dead-letter id -> dead_at
# ZSET "msg:<id>" | "session:<id>" | "inbound:<event id>" -> when a change clients should hear about
# was applied (written by the Lua that applies it); cleared once emitted, else the sweep emits it
CLIENT_EVENTS_PENDING = "client:events:pending"
CLIENT_EVENTS_INBOUND = "client:events:inbound"  # HASH inbound event id -> pending event (JSON)


def tenant_webhooks(tenant: str) -> str:
    """SET of the tenant's subscription ids."""
    return f"webhooks:tenant:{tenant}"


def client_webhook(sub_id: str) -> str:
    """HASH: id, tenant, url, events (comma list), secret (sealed), created_at, disabled_at/_reason."""
    return f"webhook:{sub_id}"


def client_event(event_id: str) -> str:
    """STRING: the event JSON exactly as POSTed; deleted when no lane holds it any more."""
    return f"client:event:{event_id}"


def client_event_refs(event_id: str) -> str:
    """STRING (int): how many subscription lanes still hold the event."""
    return f"client:eventrefs:{event_id}"


def webhook_lane(sub_id: str, lane: int | str) -> str:
    """LIST of "<event id> <queued_at> <order key>", in order per order key (message/session)."""
    return f"webhook:lane:{sub_id}:{lane}"


def webhook_lane_state(sub_id: str, lane: int | str) -> str:
    """HASH: block:<order key> per failing entity, the lane's pause, and a summary (last_error, ...)."""
    return f"webhook:lanestate:{sub_id}:{lane}"


def webhook_lane_lock(sub_id: str, lane: int | str) -> str:
    """STRING: token of the one delivery run that owns the lane."""
    return f"webhook:lanelock:{sub_id}:{lane}"


def dead_letter(dl_id: str) -> str:
    """HASH: a client event that ran out of retries, with its subscription and last error."""
    return f"webhook:dead:{dl_id}"


def tenant_dead_letters(tenant: str) -> str:
    """ZSET dead-letter id -> dead_at."""
    return f"webhooks:dead:tenant:{tenant}"


def session_status_log(session_id: str) -> str:
    """Capped LIST of a session's status changes {seq, status, previous, at, detail} (lib/session.lua)."""
    return f"session:statuslog:{session_id}"


# --- metrics (waorch/metrics.py, waorch/task_metrics.py; read by GET /metrics) ----------------
METRICS_MESSAGE_STATES = "metrics:messages:state"  # HASH state -> messages now in it (lib/message.lua)
METRICS_MESSAGE_ENTERED = "metrics:messages:entered"  # HASH state -> messages that ever entered it
METRICS_SEND_LATENCY = "metrics:send_latency"  # HASH b:<le> per-bucket counts, sum, count (accepted→sent)
METRICS_CELERY_TASKS = "metrics:celery:tasks"  # HASH "<task name>|<state>" -> count
METRICS_CELERY_LAST = "metrics:celery:last"  # HASH task name -> unix time it last succeeded
METRICS_CELERY_DURATION = "metrics:celery:duration"  # HASH "<task>|b:<le>" counts, "<task>|sum" seconds
METRICS_HTTP_REQUESTS = "metrics:http:requests"  # HASH "<endpoint>|<method>|<status>" -> count
METRICS_HTTP_DURATION = "metrics:http:duration"  # HASH "<endpoint>|b:<le>" counts, "<endpoint>|sum" seconds


# --- backups (waorch/backups.py) -------------------------------------------------------------
BACKUP_LOCK = "backup:lock"  # STRING: token of the one backup or restore running (expires)


# --- alerts (waorch/alert_events.py, waorch/alert_delivery.py; docs/alerts.md) -----------------
ALERT_EVENTS = "alerts:events"  # LIST of JSON alert events, newest first (capped)
ALERTS_ACTIVE = "alerts:active"  # HASH "<kind>:<subject>" -> JSON of the raising event
ALERTS_CHANNEL = "alerts"  # pub/sub channel carrying every alert event as JSON


def alert_outbox(sink: str) -> str:
    """ZSET event JSON -> event time: alert events this sink has not received yet."""
    return f"alerts:outbox:{sink}"


def alert_sink_state(sink: str) -> str:
    """HASH of a sink's delivery: failures, retry_at, last_error, last_ok, delivered, coalesced, gave_up."""
    return f"alerts:sink:{sink}"


def alert_sent_log(sink: str) -> str:
    """ZSET send id -> time of the sink's recent messages (its rate-limit window)."""
    return f"alerts:sent:{sink}"


def alert_sink_lock(sink: str) -> str:
    """Lock of the one delivery run of a sink."""
    return f"alerts:lock:{sink}"


def alert_wake(sink: str) -> str:
    """STRING expiring when a delivery task is already scheduled for the sink (no pile of them)."""
    return f"alerts:wake:{sink}"


# --- queued runner actions (waorch/runner_actions.py; docs/operations.md) ----------------------
def session_action_lock(session_id: str) -> str:
    """Lock held while an orchestrator task drives the runner for this session (one at a time)."""
    return f"session:action_lock:{session_id}"


# --- claim wake-ups (waorch/claim_wakeup.py) ---------------------------------------------------
OUTBOX_WAKE = "outbox:wake"  # pub/sub CHANNEL: a session id whose outbox may have become claimable


# --- per-recipient send order (lua_scripts/sending/accept.lua, sending/claim.lua) -------------
ACCEPT_SEQ = "messages:accept_seq"  # STRING counter: acceptance order of every message


def recipient_pending(tenant: str, to: str, sender: str = "") -> str:
    """ZSET msg id -> accept seq: the tenant's messages to `to` with explicit `from` `sender`
    ('' for none) not yet sent or failed; only the first may be claimed."""
    return f"recipient:pending:{tenant}:{to}:{sender}"


# --- pacing, trust, suppressions (waorch/pacing.py, trust.py, suppressions.py; docs/policy.md) --
def session_sendlog(session_id: str) -> str:
    """ZSET of the session's claims (member "<msg>:<attempt>", score claim time)."""
    return f"session:sendlog:{session_id}"


def session_sent(session_id: str) -> str:
    """ZSET msg id -> sent_at of recent sends, as the worker reported them (send bursts)."""
    return f"session:sent:{session_id}"


def session_trust(session_id: str) -> str:
    """HASH: changed_at, last incident, sent/failed hourly buckets of the trust review."""
    return f"session:trust:{session_id}"


def session_trust_history(session_id: str) -> str:
    """Capped LIST of the session's trust changes (JSON), newest first."""
    return f"session:trust:events:{session_id}"


def suppressions(tenant: str) -> str:
    """HASH phone -> JSON {reason, source, at}: recipients the tenant must not message."""
    return f"suppressions:{tenant}"
