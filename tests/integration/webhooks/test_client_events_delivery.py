"""Changes applied by Lua alone (a process died before its hook, or a script changed state by
itself) reach a client's endpoint: real Redis, `waorch beat` running the pending-events sweep, a
real Celery worker on the `events` queue, a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time

import pytest

from tests.support.celery_worker import ROOT, CeleryWorker, _die_with_parent
from tests.support.commands import WAORCH
from tests.support.lua_alone import PACE, PHONE, SESSION, lua_ack, lua_receipt, lua_transition
from tests.support.webhook_receiver import WebhookReceiver
from waorch.core import keys, settings
from waorch.fleet import lifecycle
from waorch.messages import records as messages
from waorch.policy import suppressions
from waorch.proxies.pool import ProxyPool
from waorch.sending import accept as acceptance
from waorch.sending import outbox
from waorch.sessions import registry as sessions
from waorch.webhooks import events as client_events
from waorch.webhooks import subscriptions as client_webhooks

TENANT = "acme"
SECRET = "crash-safe-secret-0123"


class Beat:
    """`waorch beat` as a child process with its own schedule file."""

    def __init__(self, tmp_path) -> None:
        self.log_path = tmp_path / "beat.log"
        self.argv = [*WAORCH, "beat", "--schedule-file", str(tmp_path / "celerybeat-schedule")]
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> Beat:
        with open(self.log_path, "wb") as out:
            self.process = subprocess.Popen(self.argv, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                                            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                            preexec_fn=_die_with_parent)
        return self

    def __exit__(self, *exc) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


@pytest.fixture
def env(redis_url, monkeypatch, tmp_path):
    for name, value in {"WAORCH_WEBHOOK_ALLOWLIST": "127.0.0.1/32", "WAORCH_WEBHOOK_RETRY_BASE": "0.3",
                        "WAORCH_WEBHOOK_RETRY_MAX": "1", "WAORCH_WEBHOOK_TIMEOUT": "5",
                        "WAORCH_CLIENT_EVENT_GRACE": "1"}.items():
        monkeypatch.setenv(name, value)
    settings.get.cache_clear()
    return tmp_path


def accept(r, to: str, **fields) -> str:
    msg_id = acceptance.new_message_id()
    acceptance.store(r, TENANT, [{"id": msg_id, "to": to, "text": "hi", **fields}], {"id": msg_id})
    assert outbox.route(r, msg_id, SESSION, PHONE)
    return msg_id


def statuses(events: list[dict], msg_id: str) -> list[str]:
    return [e["data"]["status"] for e in events if e["data"].get("message_id") == msg_id]


def test_changes_applied_by_lua_alone_reach_the_client(r, env):
    ProxyPool(r).add("socks5h://u:p@127.0.0.2:1080")
    with WebhookReceiver() as receiver:
        client_webhooks.create(r, TENANT, receiver.url, None, SECRET)
        session = lifecycle.create_session(r, TENANT, "491510000009")
        sid = session["id"]
        now = time.time()
        # sent, delivered, read: an ACK and a read receipt whose hooks never ran
        read = accept(r, "14155550123")
        outbox.reserve_in_redis(r, SESSION, PHONE, PACE, now=now)
        claim = outbox.claim(r, SESSION, PACE, now=now)
        assert claim.message["id"] == read
        lua_ack(r, read, claim.message["lease_token"], "WA-L1", now)
        lua_receipt(r, read, "read", now + 1)
        # failed by the slot planner (recipient opted out) and by the claim (expired), scripts alone
        suppressions.add(r, TENANT, "14155550124", "STOP")
        opted_out = accept(r, "14155550124")
        assert outbox.reserve_in_redis(r, SESSION, PHONE, PACE, now=now)[1] == [opted_out]
        expired = accept(r, "14155550125", expires_at=f"{now + 3600:.3f}")
        outbox.reserve_in_redis(r, SESSION, PHONE, PACE, now=now)
        r.hset(keys.message(expired), "expires_at", f"{now - 1:.3f}")
        assert expired in outbox.claim_in_redis(r, SESSION, PACE, now + 3600, 60, "tok")[2:]
        # a session status change and an inbound message, without their hooks
        assert lua_transition(r, sid, "connected", qr_mode="clear")[2] == "connected"
        entry = {"session": sid, "to": session["phone"], "from": "14155550123", "text": "hello?",
                 "wa_id": "IN-L1", "at": now, "media": None}
        pipe = r.pipeline(transaction=True)
        pipe.lpush(keys.session_inbound(sid), json.dumps(entry))
        inbound_id = client_events.mark_inbound(pipe, sessions.get_session(r, sid), entry)
        pipe.execute()
        assert receiver.attempts == 0 and r.zcard(keys.CLIENT_EVENTS_PENDING) == 5

        with CeleryWorker(env, queues="events"), Beat(env):
            receiver.wait_for(lambda rc: len(rc.deliveries) >= 7, 120, "the swept events")
        events = receiver.events()

    assert statuses(events, read) == ["sent", "delivered", "read"]
    [failed] = [e for e in events if e["data"].get("message_id") == opted_out]
    assert failed["data"]["status"] == "failed" and failed["data"]["reason"] == "suppressed"
    [failed] = [e for e in events if e["data"].get("message_id") == expired]
    assert failed["data"]["reason"] == "expired"
    [status] = [e for e in events if e["type"] == "session.status"]
    assert status["id"] == f"evt_{sid}_s1" and status["data"]["status"] == "connected"
    [inbound] = [e for e in events if e["type"] == "message.inbound"]
    assert inbound["id"] == inbound_id and inbound["data"]["text"] == "hello?"
    history = messages.history(r, read)
    assert [e["id"] for e in events if e["data"].get("message_id") == read] == [
        f"evt_{read}_{i}" for i, h in enumerate(history) if h["status"] in ("sent", "delivered", "read")]
    assert len({e["id"] for e in events}) == len(events) == 7
    assert all(d.verifies(SECRET) for d in receiver.deliveries)
    assert r.zcard(keys.CLIENT_EVENTS_PENDING) == 0
