"""The spine, end to end: `waorch run`, a key, a session paired in the simulator, paced sends that
end `delivered`, and no message lost when a Celery worker or the session worker is killed."""

from __future__ import annotations

import json
import signal

import pytest
import requests

from tests.e2e.conftest import pair_session, start_stack, stop_stack
from tests.support.waiting import wait_for

PER_MINUTE = 30  # 2 s mean interval
JITTER = 0.3
MIN_GAP = 60 / PER_MINUTE * (1 - JITTER)
PHONE = "12025550177"
TO = "14155550123"

pytestmark = pytest.mark.slow


@pytest.fixture
def stack(tmp_path, redis_url):
    # the spine's own pace; 9 messages to one person at any hour: no quiet hours, no recipient cap
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"trust_levels": {"new": {"per_minute": PER_MINUTE, "per_day": 1000}},
                                  "jitter": JITTER, "quiet_hours": None, "recipient_daily_cap": None}))
    env = {"WAORCH_POLICY_FILE": str(policy), "WAORCH_LEASE_SECONDS": "8", "WAORCH_RECOVER_AFTER": "5",
           "WAORCH_SWEEP_INTERVAL": "3", "WAORCH_VISIBILITY_TIMEOUT": "20", "WAORCH_PING_TIMEOUT": "60"}
    s = start_stack(tmp_path, redis_url, env, ["--workers", "2"])
    yield s
    leftovers = stop_stack(s)
    assert leftovers == [], f"processes left behind after Ctrl-C: {leftovers}"
    assert not (s.state_dir / "run.json").exists()


def sim_messages(stack, text_prefix: str) -> list[dict]:
    got = requests.get(f"{stack.sim}/sim/messages", params={"from": PHONE}, timeout=10).json()
    return sorted((m for m in got if m["text"].startswith(text_prefix)), key=lambda m: m["at"])


def all_in(stack, ids: list[str], states: set[str]) -> bool:
    return all(stack.api.get(f"/api/messages/{i}").json()["status"] in states for i in ids)


def assert_paced(received: list[dict]) -> None:
    times = [m["at"] for m in received]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert gaps, "need at least two sends to check pacing"
    # the simulator stamps arrival: allow a little network/scheduling slack below the gap
    assert min(gaps) >= MIN_GAP - 0.25, f"sends too close: {gaps}"


def test_messages_travel_end_to_end_paced_and_survive_crashes(stack, proxy):
    added = stack.api.post("/api/proxies", json={"url": proxy.url})
    assert added.status_code == 201, added.text
    assert "pw-e2e" not in added.text
    session_id = pair_session(stack, PHONE)

    # 1. paced sends, each ending delivered (or read, which implies delivered)
    ids = [stack.api.send(f"+{TO}", f"spine {i}").json()["id"] for i in range(5)]
    wait_for(lambda: all_in(stack, ids, {"delivered", "read"}), "5 messages delivered", timeout=120)
    received = sim_messages(stack, "spine ")
    # each exactly once, and in the order the API accepted them although dispatch runs on
    # parallel Celery workers (per-recipient order, sending/claim.lua)
    assert [m["text"] for m in received] == [f"spine {i}" for i in range(5)]
    assert {m["source_address"] for m in received} == {"127.0.0.9"}  # through the sticky proxy
    assert_paced(received)
    history = [h["status"] for h in stack.api.get(f"/api/messages/{ids[0]}").json()["history"]]
    assert history[:6] == ["queued", "routed", "scheduled", "claimed", "sent", "delivered"]

    # 2. kill a Celery worker while dispatch work is in flight: nothing is lost
    celery = stack.processes("celery", "worker")
    assert celery, "no celery worker processes found"
    more = [stack.api.send(f"+{TO}", f"crash-celery {i}").json()["id"] for i in range(4)]
    celery[0].send_signal(signal.SIGKILL)

    # 3. kill the session worker mid-flow: the supervisor brings it back, the journal and the
    #    lease expiry make every message go exactly once
    worker = wait_for(lambda: stack.session_worker(session_id), "the session worker process", timeout=30)
    wait_for(lambda: any(stack.api.get(f"/api/messages/{i}").json()["status"] in
                         {"claimed", "sent", "delivered", "read"} for i in more), "a claim", timeout=60)
    worker.send_signal(signal.SIGKILL)
    wait_for(lambda: (w := stack.session_worker(session_id)) is not None and w.pid != worker.pid,
             "the session worker restarted", timeout=60)
    wait_for(lambda: all_in(stack, more, {"delivered", "read"}), "messages after crashes delivered",
             timeout=180)
    crashed = sim_messages(stack, "crash-celery ")
    assert [m["text"] for m in crashed] == [f"crash-celery {i}" for i in range(4)]  # in order too
    assert_paced(sim_messages(stack, ""))
