"""The simulator through its HTTP API and a raw wire client going through real SOCKS5 proxies."""

from __future__ import annotations

import os
import signal
import subprocess

import requests

from tests.support.commands import WAORCH as _WAORCH
from tests.support.sim_support import ALICE, BOB, CAROL, account, connect, login, pair


def test_health(sim):
    response = requests.get(f"{sim.url}/sim/health", timeout=10)
    assert response.status_code == 200 and response.json()["ok"] is True


def test_pairing_then_login_with_creds(sim, proxies, clients):
    proxy = proxies[0]
    client = connect(clients, proxy, sim)
    client.hello(ALICE, "sess-a", device={"os": "Ubuntu", "browser": "Chrome"})
    qr = client.expect("qr")
    assert qr["code"]
    view = account(sim, ALICE)
    assert (view["state"], view["device"]) == ("waiting_qr", {"os": "Ubuntu", "browser": "Chrome"})

    wrong = requests.post(f"{sim.url}/sim/accounts/{ALICE}/scan", json={"code": "other"}, timeout=10)
    assert wrong.status_code == 404
    scanned = requests.post(f"{sim.url}/sim/accounts/{ALICE}/scan", json={"code": qr["code"]}, timeout=10)
    assert scanned.status_code == 200
    creds = client.expect("paired")["creds"]
    client.expect_closed()
    assert account(sim, ALICE)["state"] == "paired"

    login(clients, proxy, sim, ALICE, creds, "sess-a")
    view = account(sim, ALICE)
    assert view["state"] == "connected"
    assert view["session"] == "sess-a"
    assert view["source_addresses"] == ["127.0.0.2"]
    # The wire destination went to the proxy as given (an IP here), resolved by the proxy.
    assert proxy.requests[-1].port == int(sim.wire.rsplit(":", 1)[1])


def test_wire_reached_by_name_through_the_proxy(sim, proxies, clients):
    proxy = proxies[0]
    port = sim.wire.rsplit(":", 1)[1]
    client = connect(clients, proxy, type("S", (), {"wire": f"localhost:{port}"})())
    client.request(op="ping")
    assert client.expect("pong") == {"ev": "pong"}
    assert (proxy.requests[-1].atyp, proxy.requests[-1].host) == ("domain", "localhost")


def test_scan_without_a_waiting_session_is_404(sim):
    response = requests.post(f"{sim.url}/sim/accounts/{ALICE}/scan", timeout=10)
    assert response.status_code == 404
    assert response.json()["code"] == "no_qr_waiting"


def test_send_gets_wa_id_then_delivered_and_read(sim, proxies, clients):
    creds = pair(clients, proxies[0], sim, ALICE)
    client = login(clients, proxies[0], sim, ALICE, creds, "sess-a")
    client.request(op="send", ref="r1", to=BOB, text="hello bob", media=None)
    result = client.expect("send_result", ref="r1")
    assert result["ok"] is True and result["wa_id"].startswith("3EB0")
    delivered = client.expect("receipt", status="delivered")
    read = client.expect("receipt", status="read")
    assert delivered["wa_id"] == read["wa_id"] == result["wa_id"]
    assert read["at"] >= delivered["at"]

    messages = requests.get(f"{sim.url}/sim/messages", params={"from": ALICE}, timeout=10).json()
    assert len(messages) == 1
    message = messages[0]
    assert (message["id"], message["from"], message["to"], message["text"]) == (
        result["wa_id"], ALICE, BOB, "hello bob")
    assert message["source_address"] == "127.0.0.2"
    assert message["session"] == "sess-a"
    assert requests.get(f"{sim.url}/sim/messages", params={"to": CAROL}, timeout=10).json() == []


def test_resend_with_the_same_client_id_is_not_sent_twice(sim, proxies, clients):
    client = login(clients, proxies[0], sim, ALICE, pair(clients, proxies[0], sim, ALICE))
    client.request(op="send", ref="a", to=BOB, text="once", id="msg-1")
    first = client.expect("send_result", ref="a")
    client.request(op="send", ref="b", to=BOB, text="once", id="msg-1")
    again = client.expect("send_result", ref="b")
    assert (again["ok"], again["wa_id"], again["duplicate"]) == (True, first["wa_id"], True)
    client.request(op="send", ref="c", to=BOB, text="other", id="msg-2")
    assert client.expect("send_result", ref="c")["wa_id"] != first["wa_id"]
    assert len(requests.get(f"{sim.url}/sim/messages", timeout=10).json()) == 2


def test_send_failures_are_reported(sim, proxies, clients):
    client = connect(clients, proxies[0], sim)
    client.request(op="send", ref=1, to=BOB, text="too early")
    early = client.expect("send_result", ref=1)
    assert (early["ok"], early["code"], early["retryable"]) == (False, "NOT_CONNECTED", True)
    creds = pair(clients, proxies[0], sim, ALICE)
    client = login(clients, proxies[0], sim, ALICE, creds)
    client.request(op="send", ref=2, to="12ab", text="x")
    bad = client.expect("send_result", ref=2)
    assert (bad["ok"], bad["code"], bad["retryable"]) == (False, "INVALID_RECIPIENT", False)


def test_message_between_simulated_accounts_and_offline_queue(sim, proxies, clients):
    alice = login(clients, proxies[0], sim, ALICE, pair(clients, proxies[0], sim, ALICE))
    bob_creds = pair(clients, proxies[1], sim, BOB)  # bob is offline for now
    alice.request(op="send", ref="r", to=BOB, text="are you there?", media={"kind": "image"})
    wa_id = alice.expect("send_result", ref="r")["wa_id"]
    bob = login(clients, proxies[1], sim, BOB, bob_creds)
    message = bob.expect("message", wa_id=wa_id)
    assert (message["from"], message["text"], message["media"]) == (ALICE, "are you there?",
                                                                    {"kind": "image"})


def test_inbound_from_a_person(sim, proxies, clients):
    creds = pair(clients, proxies[0], sim, ALICE)
    queued = requests.post(f"{sim.url}/sim/inbound", json={"from": CAROL, "to": ALICE, "text": "STOP"},
                           timeout=10)
    assert queued.status_code == 202
    client = login(clients, proxies[0], sim, ALICE, creds)
    first = client.expect("message")
    assert (first["from"], first["text"], first["wa_id"]) == (CAROL, "STOP", queued.json()["wa_id"])
    live = requests.post(f"{sim.url}/sim/inbound", json={"from": CAROL, "to": ALICE, "text": "hi"},
                         timeout=10)
    assert client.expect("message")["wa_id"] == live.json()["wa_id"]
    unknown = requests.post(f"{sim.url}/sim/inbound", json={"from": CAROL, "to": BOB, "text": "x"},
                            timeout=10)
    assert unknown.status_code == 404 and unknown.json()["code"] == "unknown_account"
    invalid = requests.post(f"{sim.url}/sim/inbound", json={"from": "nope", "to": ALICE, "text": "x"},
                            timeout=10)
    assert invalid.status_code == 422
    not_json = requests.post(f"{sim.url}/sim/inbound", data="{", timeout=10,
                             headers={"Content-Type": "application/json"})
    assert not_json.status_code == 400 and not_json.json()["code"] == "bad_json"


def test_ban_closes_and_refuses_later_logins(sim, proxies, clients):
    creds = pair(clients, proxies[0], sim, ALICE)
    client = login(clients, proxies[0], sim, ALICE, creds)
    assert requests.post(f"{sim.url}/sim/accounts/{ALICE}/ban", timeout=10).status_code == 200
    client.expect("banned")
    client.expect_closed()
    again = connect(clients, proxies[0], sim)
    again.hello(ALICE, creds=creds)
    again.expect("banned")
    again.expect_closed()
    view = account(sim, ALICE)
    assert (view["state"], view["banned_reason"]) == ("banned", "manual")
    assert requests.post(f"{sim.url}/sim/accounts/{BOB}/ban", timeout=10).status_code == 404


def test_disconnect_then_reconnect(sim, proxies, clients):
    creds = pair(clients, proxies[0], sim, ALICE)
    client = login(clients, proxies[0], sim, ALICE, creds)
    response = requests.post(f"{sim.url}/sim/accounts/{ALICE}/disconnect", timeout=10)
    assert response.json() == {"phone": ALICE, "closed": True}
    client.expect_closed()
    assert account(sim, ALICE)["state"] == "paired"
    login(clients, proxies[0], sim, ALICE, creds)
    assert account(sim, ALICE)["state"] == "connected"


def test_restriction_fails_sends_with_463_until_then(sim, proxies, clients):
    client = login(clients, proxies[0], sim, ALICE, pair(clients, proxies[0], sim, ALICE))
    response = requests.post(f"{sim.url}/sim/accounts/{ALICE}/restrict", json={"seconds": 600}, timeout=10)
    until = response.json()["until"]
    event = client.expect("restricted")
    assert event["until"] == until and event["reason"]
    client.request(op="send", ref="x", to=BOB, text="hi")
    result = client.expect("send_result", ref="x")
    assert (result["ok"], result["code"], result["retryable"], result["restricted_until"]) == (
        False, "463", True, until)
    bad = requests.post(f"{sim.url}/sim/accounts/{ALICE}/restrict", json={"seconds": "x"}, timeout=10)
    assert bad.status_code == 422


def test_second_connection_replaces_the_first(sim, proxies, clients):
    creds = pair(clients, proxies[0], sim, ALICE)
    first = login(clients, proxies[0], sim, ALICE, creds, "old")
    login(clients, proxies[0], sim, ALICE, creds, "new")
    first.expect("replaced")
    first.expect_closed()
    assert account(sim, ALICE)["session"] == "new"


def test_unknown_creds_and_logout_give_logged_out(sim, proxies, clients):
    stranger = connect(clients, proxies[0], sim)
    stranger.hello(ALICE, creds="sim1.forged")
    stranger.expect("logged_out")
    stranger.expect_closed()
    creds = pair(clients, proxies[0], sim, ALICE)
    client = login(clients, proxies[0], sim, ALICE, creds)
    assert requests.post(f"{sim.url}/sim/accounts/{ALICE}/logout", timeout=10).status_code == 200
    client.expect("logged_out")
    client.expect_closed()
    again = connect(clients, proxies[0], sim)
    again.hello(ALICE, creds=creds)
    again.expect("logged_out")


def test_ban_model_burst(sim, proxies, clients):
    model = requests.put(f"{sim.url}/sim/ban-model", json={"burst_10s": 2}, timeout=10)
    assert model.json() == {"per_minute": None, "burst_10s": 2, "max_sources": None,
                            "non_contacts_per_day": None, "blocks_per_day": None, "same_text_per_day": None}
    client = login(clients, proxies[0], sim, ALICE, pair(clients, proxies[0], sim, ALICE))
    for ref in (1, 2):
        client.request(op="send", ref=ref, to=BOB, text="x")
        assert client.expect("send_result", ref=ref)["ok"] is True
    client.request(op="send", ref=3, to=BOB, text="x")
    third = client.expect("send_result", ref=3)
    assert (third["ok"], third["code"]) == (False, "BANNED")
    client.expect("banned")
    client.expect_closed()
    view = account(sim, ALICE)
    assert view["state"] == "banned" and view["banned_reason"].startswith("burst: 3 sends")
    assert len(requests.get(f"{sim.url}/sim/messages", timeout=10).json()) == 2
    bad = requests.put(f"{sim.url}/sim/ban-model", json={"burst_10s": -1}, timeout=10)
    assert bad.status_code == 422


def test_ban_model_source_change(make_sim, proxies, clients):
    from waorch.simulator import BanThresholds

    sim = make_sim(ban_thresholds=BanThresholds(max_sources=1))
    creds = pair(clients, proxies[0], sim, ALICE)
    login(clients, proxies[0], sim, ALICE, creds).close()
    moved = connect(clients, proxies[1], sim)  # the same number, now through another proxy
    moved.hello(ALICE, creds=creds)
    moved.expect("banned")
    view = account(sim, ALICE)
    assert view["banned_reason"].startswith("sources: 2 distinct addresses")
    assert view["source_addresses"] == ["127.0.0.2", "127.0.0.3"]


def test_demo_scan_and_fresh_qr_codes(make_sim, proxies, clients):
    sim = make_sim(qr_interval=0.2, demo_scan_after=1.0)
    client = connect(clients, proxies[0], sim)
    client.hello(ALICE)
    creds = client.expect("paired")["creds"]
    codes = {e["code"] for e in client.seen if e["ev"] == "qr"}
    assert len(codes) >= 2  # refreshed while waiting
    assert creds.startswith("sim1.")


def test_bad_wire_input_gets_an_error_event(sim, proxies, clients):
    client = connect(clients, proxies[0], sim)
    client.sock.sendall(b"not json\n")
    assert client.expect("error")["code"] == "BAD_JSON"
    client.request(op="hello", phone="abc", session="s")
    assert client.expect("error")["code"] == "BAD_REQUEST"
    client.request(op="dance")
    assert client.expect("error")["code"] == "UNKNOWN_OP"




def test_cli_serves_until_sigterm():
    with subprocess.Popen([*_WAORCH, "sim", "--port", "0", "--wire-port", "0"], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=os.environ.copy()) as process:
        try:
            api = process.stdout.readline().split()[-1]
            wire = process.stdout.readline().split()[-1]
            assert wire.startswith("127.0.0.1:")
            assert requests.get(f"{api}/sim/health", timeout=10).status_code == 200
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=20) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def test_cli_rejects_a_bad_ban_model():
    result = subprocess.run([*_WAORCH, "sim", "--port", "0", "--wire-port", "0", "--ban-model", '{"x": 1}'],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "unknown ban model keys: x" in result.stderr and "Traceback" not in result.stderr
