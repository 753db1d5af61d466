"""The anti-ban policy end to end through `waorch run`: a person replies STOP in the simulator and
is never messaged again; WhatsApp restricts the account and waorch pauses it, demotes it and
alerts; the sends that do go out keep the policy's pace."""

from __future__ import annotations

import json

import pytest
import requests

from tests.e2e.conftest import pair_session, start_stack, stop_stack
from tests.support.waiting import wait_for

PHONE = "12025550188"
PERSON = "14155550166"
OTHER = "14155550167"
PER_MINUTE = 20  # 3 s mean interval, at least 2.1 s

pytestmark = pytest.mark.slow


@pytest.fixture
def stack(tmp_path, redis_url):
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({
        "trust_levels": {"restricted": {"per_minute": 2, "per_day": 20},
                         "new": {"per_minute": PER_MINUTE, "per_day": 500}},
        "jitter": 0.3, "quiet_hours": None, "recipient_daily_cap": None}))
    s = start_stack(tmp_path, redis_url, {"WAORCH_PING_TIMEOUT": "60"},
                    ["--workers", "1", "--policy", str(policy)])
    yield s
    assert stop_stack(s) == []


def status(stack, msg_id: str) -> str:
    return stack.api.get(f"/api/messages/{msg_id}").json()["status"]


def test_opt_out_restriction_and_pace_through_the_whole_stack(stack, proxy):
    assert stack.api.post("/api/proxies", json={"url": proxy.url}).status_code == 201
    session_id = pair_session(stack, PHONE)
    ids = [stack.api.send(f"+{to}", f"hello {i}").json()["id"]
           for i, to in enumerate([PERSON, OTHER, PERSON, OTHER])]
    wait_for(lambda: all(status(stack, i) in ("delivered", "read") for i in ids), "4 delivered", timeout=120)
    got = requests.get(f"{stack.sim}/sim/messages", params={"from": PHONE}, timeout=10).json()
    times = sorted(m["at"] for m in got)
    assert len(times) == 4
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert min(gaps) >= 60 / PER_MINUTE * 0.7 - 0.25, gaps  # network slack below the minimum gap

    # the person answers STOP on their phone
    reply = requests.post(f"{stack.sim}/sim/inbound", json={"from": PERSON, "to": PHONE, "text": "Stop"},
                          timeout=10)
    assert reply.status_code == 202, reply.text
    listed = wait_for(lambda: stack.api.get("/api/suppressions").json()["items"], "the suppression",
                      timeout=60)
    assert [(i["phone"], i["source"]) for i in listed] == [(PERSON, f"inbound:{session_id}")]
    refused = stack.api.send(f"+{PERSON}", "one more offer")
    assert refused.status_code == 422 and refused.json()["code"] == "suppressed"

    # WhatsApp restricts the account for two minutes
    restricted = requests.post(f"{stack.sim}/sim/accounts/{PHONE}/restrict",
                               json={"seconds": 120, "reason": "reach-out time-lock"}, timeout=10)
    assert restricted.status_code == 200, restricted.text
    until = restricted.json()["until"]
    # the level changes with the pause, its history entry right after: wait for both
    trust = wait_for(lambda: (t := stack.api.get(f"/api/sessions/{session_id}/trust").json())
                     ["trust_level"] == "restricted" and t["history"] and t, "the session restricted",
                     timeout=60)
    assert trust["paused_until"] == pytest.approx(until, abs=2)
    assert trust["history"][0]["by"] == "whatsapp" and trust["budget"]["per_minute"] == 2
    held = stack.api.send(f"+{OTHER}", "after the restriction").json()["id"]
    wait_for(lambda: status(stack, held) == "scheduled", "the message planned", timeout=60)
    assert status(stack, held) == "scheduled"  # waits for the pause to end: nothing is sent
    sent_to_other = requests.get(f"{stack.sim}/sim/messages", params={"from": PHONE, "to": OTHER},
                                 timeout=10).json()
    assert len(sent_to_other) == 2
