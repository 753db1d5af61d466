"""Trust levels: the API, the hourly review (promotion, demotion), neighbour bans and WhatsApp
restrictions, each change recorded with its reason; on a real Redis and over real HTTP."""

from __future__ import annotations

import time

import pytest

from tests.support.api_client import ApiClient
from tests.support.policy_support import FAST_POLICY, accept, connected_session, use_policy
from waorch.alerts import events as alert_events
from waorch.core import keys
from waorch.fleet import worker_events
from waorch.policy import trust
from waorch.policy.pacing import pace_for
from waorch.proxies.pool import ProxyPool
from waorch.sending import dispatch as dispatching
from waorch.sending import outbox
from waorch.sessions import registry as sessions
from waorch.tenants import apikeys

DAY = 86400.0
REVIEW = {
    "promote": {
        "warming": {"min_age_days": 3, "min_sent": 30, "max_failure_rate": 0.05, "clean_days": 3},
        "trusted": {"min_age_days": 14, "min_sent": 300, "max_failure_rate": 0.02, "clean_days": 7},
        "new": {"clean_days": 7},
    },
    "demote": {"failure_rate": 0.2, "min_attempts": 10, "window_hours": 24},
}


@pytest.fixture(autouse=True)
def review_policy(monkeypatch, tmp_path):
    return use_policy(monkeypatch, tmp_path, {**FAST_POLICY, "trust_review": REVIEW})


def level(r, sid: str) -> str:
    return sessions.get_session(r, sid)["trust_level"]


def sends(r, sid: str, ok: int, failed: int, at: float) -> None:
    for _ in range(ok):
        trust.note_send(r, sid, True, at)
    for _ in range(failed):
        trust.note_send(r, sid, False, at)


def test_trust_api_reads_and_changes_with_a_reason(gateway, api_client, admin_client, r):
    s = connected_session(r, "acme", "12025550151")
    shown = api_client.get(f"/api/sessions/{s['id']}/trust")
    assert shown.status_code == 200, shown.text
    body = shown.json()
    assert body["trust_level"] == "new" and body["budget"] == {"per_minute": 120.0, "per_day": 1000}
    assert body["used"] == {"last_minute": 0, "last_day": 0} and body["history"] == []
    change = {"trust_level": "warming", "reason": "verified business account"}
    assert api_client.request("PUT", f"/api/sessions/{s['id']}/trust", json=change).status_code == 403
    done = admin_client.request("PUT", f"/api/sessions/{s['id']}/trust", json=change)
    assert done.status_code == 200, done.text
    assert done.json()["trust_level"] == "warming" and done.json()["budget"]["per_minute"] == 240
    [entry] = done.json()["history"]
    assert (entry["from"], entry["to"], entry["by"], entry["reason"]) == (
        "new", "warming", "operator", "verified business account")
    events = api_client.get(f"/api/sessions/{s['id']}/events").json()["events"]
    assert any(e["event"] == "TRUST" and e["data"]["to"] == "warming" for e in events)
    unknown = admin_client.request("PUT", f"/api/sessions/{s['id']}/trust", json={"trust_level": "vip"})
    assert unknown.status_code == 422 and "trust_level" in unknown.json()["errors"]
    stranger = ApiClient(gateway.url, apikeys.create_key(r, "globex", "read"))
    assert stranger.get(f"/api/sessions/{s['id']}/trust").status_code == 404
    pol = api_client.get("/api/policy").json()
    assert pol["default_trust_level"] == "new" and "warming" in pol["trust_levels"]


def test_review_promotes_one_rung_with_age_sends_and_a_clean_record(r):
    s = connected_session(r, "acme", "12025550152")
    born = s["created_at"]
    sends(r, s["id"], 40, 1, born + 2 * DAY)
    assert trust.review(r, now=born + 2.5 * DAY) == []  # too young
    [change] = trust.review(r, now=born + 3.1 * DAY)
    assert (change["from"], change["to"], change["by"]) == ("new", "warming", "review")
    assert "41" not in change["reason"] and "40 sends" in change["reason"]
    # one rung per review, and the next rung needs its own record at this level
    sends(r, s["id"], 300, 0, born + 3.2 * DAY)
    assert trust.review(r, now=born + 3.3 * DAY) == []
    [up] = trust.review(r, now=born + 14.5 * DAY)
    assert up["to"] == "trusted" and level(r, s["id"]) == "trusted"
    assert trust.review(r, now=born + 40 * DAY) == []  # the top of the ladder
    assert [h["to"] for h in trust.history(r, s["id"])] == ["trusted", "warming"]


def test_review_demotes_on_failures_and_holds_back_promotion(r):
    s = connected_session(r, "acme", "12025550153", trust_level="warming")
    now = s["created_at"] + 20 * DAY
    sends(r, s["id"], 20, 6, now - 3600)  # 23 % failed out of 26 attempts in the last 24 h
    [change] = trust.review(r, now=now)
    assert (change["from"], change["to"]) == ("warming", "new")
    assert change["reason"] == "6 of 26 sends failed in the last 24 h"
    # the incident resets the clean record: no promotion back for clean_days
    sends(r, s["id"], 100, 0, now + 2 * DAY)
    assert trust.review(r, now=now + 2.5 * DAY) == []
    assert trust.review(r, now=now + 3.5 * DAY)[0]["to"] == "warming"


def test_a_ban_on_the_same_proxy_demotes_the_neighbours(r):
    pool = ProxyPool(r)
    pool.add("socks5h://u:p@127.0.0.40:1080")  # one proxy: everyone shares it
    a = connected_session(r, "acme", "12025550154", trust_level="trusted")
    b = connected_session(r, "acme", "12025550155", trust_level="warming")
    assert a["proxy_url"] == b["proxy_url"]
    worker_events.ingest(r, b, "ERROR", {"code": "BANNED", "detail": "account banned"}, time.time())
    assert level(r, a["id"]) == "warming"
    [entry] = trust.history(r, a["id"])
    assert entry["reason"] == f"session {b['id']} on the same proxy was banned"
    assert trust.review(r) == []  # the same ban is not counted twice


def test_restriction_pauses_demotes_and_alerts(r):
    s = connected_session(r, "acme", "12025550156", trust_level="trusted")
    [msg] = accept(r, "acme", "14155550123", 1)
    dispatching.dispatch_message(r, msg)
    until = time.time() + 600
    worker_events.ingest(r, s, "RESTRICTED", {"reason": "463 reach-out time-lock", "until": until},
                         time.time())
    fresh = sessions.get_session(r, s["id"])
    assert fresh["trust_level"] == "restricted" and fresh["paused_until"] == pytest.approx(until, abs=0.01)
    assert any(a["kind"] == alert_events.SESSION_RESTRICTED for a in alert_events.active_alerts(r))
    [entry] = trust.history(r, s["id"])
    assert (entry["from"], entry["to"], entry["by"]) == ("trusted", "restricted", "whatsapp")
    assert "463" in entry["reason"]
    held = outbox.claim(r, s["id"], pace_for(fresh))
    assert held.outcome == "wait" and held.ready_at >= until - 0.01
    assert outbox.claim(r, s["id"], pace_for(fresh), now=until + 1).outcome == "claimed"
    # a restricted session sends at the bottom rung's pace, and climbs back only after a clean week
    assert pace_for(fresh).per_minute == 30
    assert trust.review(r, now=until + 6 * DAY) == []
    assert trust.review(r, now=until + 7.1 * DAY)[0]["to"] == "new"


def test_the_review_runs_hourly_under_beat():
    import celeryconfig
    from tasks.celery_app import app

    entry = celeryconfig.beat_schedule["trust-review"]
    assert entry == {"task": "tasks.maintenance.trust_review", "schedule": 3600.0}
    app.loader.import_default_modules()  # what a worker does at start: its `include=` task modules
    assert "tasks.maintenance.trust_review" in app.tasks
    assert celeryconfig.task_routes["tasks.maintenance.*"]["queue"] == "maintenance"


def test_review_task_body(r):
    from tasks.policy import trust_review

    s = connected_session(r, "acme", "12025550157")
    r.hset(keys.session(s["id"]), "created_at", f"{time.time() - 30 * DAY:.3f}")
    sends(r, s["id"], 50, 0, time.time() - 3600)
    assert trust_review() == 1
    assert level(r, s["id"]) == "warming"


def test_sessions_are_created_only_with_a_level_of_the_policy(admin_client, r):
    ProxyPool(r).add("socks5h://u:p@127.0.0.41:1080")
    typo = admin_client.post("/api/sessions", json={"phone": "+12025550158", "trust_level": "trustd"})
    assert typo.status_code == 422 and "trust_level" in typo.json()["errors"]
    made = admin_client.post("/api/sessions", json={"phone": "+12025550158", "trust_level": "warming"})
    assert made.status_code == 201, made.text
    assert made.json()["trust_level"] == "warming"
