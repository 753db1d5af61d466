"""The simulated network outlives a restart with the same state directory (as WhatsApp does):
pairings, messages, bans, locks, conversations, counters and queued events; saves are debounced
and atomic; a corrupt file starts an empty network with a warning."""

from __future__ import annotations

import json
import logging
import os
import signal
import stat
import subprocess
import time

import pytest
import requests

from tests.support.commands import WAORCH
from tests.support.sim_support import ALICE, BOB, CAROL, DAVE, account, api, connect, login, pair, send
from tests.support.waiting import wait_for
from waorch.simulator import SimConfig, Simulator
from waorch.simulator.persistence import FILE, StateDirBusy


def saved(directory) -> dict:
    return json.loads((directory / FILE).read_text())


def test_a_restarted_network_keeps_what_it_knew(make_sim, proxies, clients, tmp_path):
    state = str(tmp_path / "sim")
    first = make_sim(state_dir=state, save_interval=60)  # nothing saved before the stop
    alice_creds, bob_creds = pair(clients, proxies[0], first, ALICE), pair(clients, proxies[1], first, BOB)
    dave_creds = pair(clients, proxies[0], first, DAVE)
    login(clients, proxies[0], first, ALICE, alice_creds)
    alice = login(clients, proxies[0], first, ALICE, alice_creds)  # a second connection, counted
    sent = send(alice, "1", BOB, "see you tomorrow", id="msg-1")
    alice.expect("receipt", wa_id=sent["wa_id"], status="read")
    api(first, "POST", "/sim/inbound", json={"from": CAROL, "to": ALICE, "text": "hi", "as_lid": True,
                                             "with_phone": True})
    api(first, "POST", f"/sim/accounts/{DAVE}/ban", json={"reason": "spam reports", "code": 101})
    lock = api(first, "POST", f"/sim/accounts/{ALICE}/reachout-lock", json={"seconds": 3600}).json()
    api(first, "POST", f"/sim/accounts/{ALICE}/block", json={"by": "15550000009"})
    before = account(first, ALICE)
    first.stop()

    second = make_sim(state_dir=state)
    assert second.network.store_info == {}  # loaded, not yet saved again
    # stored creds log in: no QR, no new pairing; Bob gets the message queued while he was offline
    bob = connect(clients, proxies[1], second)
    bob.hello(BOB, creds=bob_creds)
    assert bob.expect("connected")["jid"] == f"{BOB}@s.whatsapp.net"
    assert bob.expect("message", wa_id=sent["wa_id"])["text"] == "see you tomorrow"
    alice = login(clients, proxies[0], second, ALICE, alice_creds)
    assert alice.expect("reachout_lock")["until"] == lock["until"]
    assert all(e["ev"] != "qr" for c in clients[-2:] for e in c.seen)
    after = account(second, ALICE)
    for key in ("sent", "received", "conversations", "blocked_by", "reachout_until", "second_connections",
                "lid", "source_addresses"):
        assert after[key] == before[key], key
    # messages, their status and the duplicate guard survive
    messages = api(second, "GET", "/sim/messages").json()
    assert [(m["id"], m["status"], m["client_id"]) for m in messages] == [(sent["wa_id"], "read", "msg-1")]
    assert send(alice, "again", BOB, "see you tomorrow", id="msg-1")["duplicate"] is True
    assert len(api(second, "GET", "/sim/inbound").json()) == 1
    # the LID map of Alice's device, and the ban
    carol_lid = api(second, "GET", f"/sim/people/{CAROL}").json()["lid"]
    assert api(second, "GET", f"/sim/lid/{carol_lid}", params={"account": ALICE}).json()["phone"] == CAROL
    dave = connect(clients, proxies[0], second)
    dave.hello(DAVE, creds=dave_creds)
    assert dave.expect("banned") == {"ev": "banned", "reason": "spam reports", "code": 101}
    assert api(second, "GET", "/sim/stats").json()["second_connections"] == 1


def test_receipts_due_while_down_follow_the_restart(make_sim, proxies, clients, tmp_path):
    state = str(tmp_path / "sim")
    first = make_sim(state_dir=state, receipt_delay=600)  # no receipt before the stop
    creds = pair(clients, proxies[0], first, ALICE)
    wa_id = send(login(clients, proxies[0], first, ALICE, creds), "1", BOB)["wa_id"]
    first.stop()
    second = make_sim(state_dir=state)
    alice = login(clients, proxies[0], second, ALICE, creds)
    assert alice.expect("receipt", wa_id=wa_id, status="delivered")
    assert alice.expect("receipt", wa_id=wa_id, status="read")


def test_saves_are_debounced_atomic_and_private(make_sim, proxies, clients, tmp_path):
    directory = tmp_path / "sim"
    interval = 0.3
    sim = make_sim(state_dir=str(directory), save_interval=interval)
    alice = login(clients, proxies[0], sim, ALICE, pair(clients, proxies[0], sim, ALICE))
    started = time.monotonic()
    for n in range(30):
        last = send(alice, str(n), BOB, f"message {n}")
        assert last["ok"] is True
    elapsed = time.monotonic() - started
    wait_for(lambda: (directory / FILE).exists() and len(saved(directory)["messages"]) == 30,
             "the 30 messages in the state file", timeout=30)
    store = api(sim, "GET", "/sim/stats").json()["store"]
    # one save per interval at most while busy (+2: one under way at each end), not one per message
    assert 1 <= store["saves"] <= elapsed / interval + 2
    assert store["bytes"] > 0 and store["path"] == str(directory / FILE)
    alice.expect("receipt", wa_id=last["wa_id"], status="read")  # so every message is read by now
    sim.stop()  # receipts kept it saving until then
    assert stat.S_IMODE((directory / FILE).stat().st_mode) == 0o600  # it holds creds
    assert sorted(p.name for p in directory.iterdir()) == [FILE, "sim.lock"]  # no temp file left
    document = saved(directory)
    assert {m["status"] for m in document["messages"]} == {"read"}  # the last changes, saved at the stop
    assert document["header"]["version"] == 1
    assert [a["phone"] for a in document["accounts"]] == [ALICE]


@pytest.mark.parametrize("content", [b"{not json", b'{"header": {"version": 99}, "accounts": []}',
                                     b'{"header": {"version": 1}, "accounts": [{"no": "phone"}]}'])
def test_an_unreadable_file_is_set_aside_and_the_network_starts_empty(make_sim, proxies, clients,
                                                                      tmp_path, caplog, content):
    directory = tmp_path / "sim"
    directory.mkdir()
    (directory / FILE).write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="waorch.simulator.persistence"):
        sim = make_sim(state_dir=str(directory))
    assert any("unreadable" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    assert api(sim, "GET", "/sim/health").json()["accounts"] == 0
    aside = [p for p in directory.iterdir() if p.name.startswith(f"{FILE}.corrupt-")]
    assert len(aside) == 1 and aside[0].read_bytes() == content  # kept for a look, not overwritten
    pair(clients, proxies[0], sim, ALICE)  # and the network works
    sim.stop()
    assert [a["phone"] for a in saved(directory)["accounts"]] == [ALICE]


def test_a_missing_file_starts_empty_and_the_directory_is_created(make_sim, tmp_path):
    sim = make_sim(state_dir=str(tmp_path / "new" / "sim"))
    assert api(sim, "GET", "/sim/health").json()["accounts"] == 0
    sim.stop()
    assert saved(tmp_path / "new" / "sim")["accounts"] == []


def test_a_second_simulator_on_the_same_directory_is_refused(make_sim, tmp_path):
    make_sim(state_dir=str(tmp_path))
    with pytest.raises(StateDirBusy):
        Simulator(config=SimConfig(state_dir=str(tmp_path))).start_in_thread()


def test_cli_autopairs_from_the_environment_and_remembers_across_restarts(proxies, clients, tmp_path):
    state = tmp_path / "sim"

    def serve(env: dict[str, str]) -> tuple[subprocess.Popen, str, str]:
        argv = [*WAORCH, "sim", "--port", "0", "--wire-port", "0", "--state-dir", str(state)]
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        api_url, wire = process.stdout.readline().split()[-1], process.stdout.readline().split()[-1]
        return process, api_url, wire

    def stop(process: subprocess.Popen) -> None:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0

    process, api_url, wire = serve({**os.environ, "WAORCH_SIM_AUTOPAIR": "1"})
    try:
        first = connect(clients, proxies[0], type("Sim", (), {"wire": wire})())
        first.hello(ALICE, "fleet-1")
        creds = first.expect("paired")["creds"]  # nobody scanned
        stop(process)
        assert saved(state)["accounts"][0]["creds"] == creds
        process, api_url, wire = serve({k: v for k, v in os.environ.items() if k != "WAORCH_SIM_AUTOPAIR"})
        again = connect(clients, proxies[0], type("Sim", (), {"wire": wire})())
        again.hello(ALICE, "fleet-1", creds=creds)
        again.expect("connected")
        assert requests.get(f"{api_url}/sim/accounts/{ALICE}", timeout=10).json()["state"] == "connected"
        stop(process)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
