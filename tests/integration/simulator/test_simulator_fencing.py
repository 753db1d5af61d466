"""What the simulated network counts so that tests can prove fencing: never two live connections
for one account, never one client message id delivered twice; and autopairing for big fleets."""

from __future__ import annotations

import contextlib

import requests

from tests.support.sim_support import ALICE, BOB, CAROL, account, api, connect, login, online, pair, send


def stats(sim) -> dict:
    response = api(sim, "GET", "/sim/stats")
    assert response.status_code == 200
    return response.json()


def test_a_fresh_network_counts_nothing(sim):
    numbers = stats(sim)
    assert (numbers["accounts"], numbers["second_connections"], numbers["duplicate_sends"],
            numbers["duplicates_delivered"], numbers["incidents"]) == (0, 0, 0, 0, [])


def test_a_second_connection_is_counted_and_still_replaces_the_first(sim, proxies, clients):
    creds = pair(clients, proxies[0], sim, ALICE)
    first = login(clients, proxies[0], sim, ALICE, creds, "worker-1")
    assert account(sim, ALICE)["second_connections"] == 0
    login(clients, proxies[1], sim, ALICE, creds, "worker-2")
    first.expect("replaced")
    first.expect_closed()
    view = account(sim, ALICE)
    assert (view["second_connections"], view["session"], view["current_source"]) == (
        1, "worker-2", "127.0.0.3")
    numbers = stats(sim)
    assert (numbers["second_connections"], numbers["accounts_with_second_connections"]) == (1, 1)
    incident = numbers["incidents"][-1]
    assert 0 <= incident["old_idle_seconds"] < 20  # the old client had spoken lately: it was live
    assert incident | {"at": 0, "old_idle_seconds": 0} == {
        "kind": "second_connection", "phone": ALICE, "at": 0, "old_session": "worker-1",
        "new_session": "worker-2", "old_source": "127.0.0.2", "new_source": "127.0.0.3",
        "old_logged_in": True, "old_idle_seconds": 0}
    # a reconnect after the old connection closed is no second connection
    api(sim, "POST", f"/sim/accounts/{ALICE}/disconnect")
    login(clients, proxies[1], sim, ALICE, creds, "worker-2")
    assert account(sim, ALICE)["second_connections"] == 1


def test_the_replaced_connection_can_no_longer_send(sim, proxies, clients):
    creds = pair(clients, proxies[0], sim, ALICE)
    first = login(clients, proxies[0], sim, ALICE, creds, "old")
    login(clients, proxies[0], sim, ALICE, creds, "new")
    first.expect("replaced")
    with contextlib.suppress(OSError):  # already closed: nothing can go out either way
        first.request(op="send", ref="late", to=BOB, text="from the fenced-off worker", id="m-1")
    assert api(sim, "GET", "/sim/messages").json() == []


def test_a_resend_by_the_same_account_counts_but_is_not_delivered_again(sim, proxies, clients):
    alice = online(clients, proxies[0], sim, ALICE)
    first = send(alice, "a", BOB, "once", id="msg-1")
    again = send(alice, "b", BOB, "once", id="msg-1")
    assert (again["wa_id"], again["duplicate"]) == (first["wa_id"], True)
    view = account(sim, ALICE)
    assert (view["duplicate_sends"], view["duplicates_delivered"], view["sent"]) == (1, 0, 1)
    numbers = stats(sim)
    assert (numbers["duplicate_sends"], numbers["duplicates_delivered"]) == (1, 0)
    assert len(api(sim, "GET", "/sim/messages").json()) == 1


def test_the_same_id_through_another_account_is_delivered_and_counted(sim, proxies, clients):
    alice = online(clients, proxies[0], sim, ALICE)
    bob = online(clients, proxies[1], sim, BOB)
    first = send(alice, "a", CAROL, "your code is 1234", id="msg-7")
    rerouted = send(bob, "b", CAROL, "your code is 1234", id="msg-7")
    # the network delivers it (as WhatsApp would): the person got the message twice
    assert rerouted["ok"] is True and rerouted["wa_id"] != first["wa_id"] and "duplicate" not in rerouted
    assert [m["from"] for m in api(sim, "GET", "/sim/messages", params={"to": CAROL}).json()] == [ALICE, BOB]
    assert (account(sim, BOB)["duplicates_delivered"], account(sim, ALICE)["duplicates_delivered"]) == (1, 0)
    numbers = stats(sim)
    assert (numbers["duplicate_sends"], numbers["duplicates_delivered"],
            numbers["accounts_with_duplicates_delivered"]) == (1, 1, 1)
    incident = numbers["incidents"][-1]
    assert (incident["kind"], incident["phone"], incident["client_id"], incident["first_from"],
            incident["first_wa_id"], incident["to"]) == ("duplicate_delivered", BOB, "msg-7", ALICE,
                                                         first["wa_id"], CAROL)
    # Bob resending it again is absorbed like any resend
    assert send(bob, "c", CAROL, "your code is 1234", id="msg-7")["duplicate"] is True
    assert stats(sim)["duplicates_delivered"] == 1


def test_autopair_pairs_as_soon_as_the_qr_shows(make_sim, proxies, clients):
    sim = make_sim(autopair=True, qr_interval=0.1)
    client = connect(clients, proxies[0], sim)
    client.hello(ALICE, "fleet-1")
    qr = client.expect("qr")
    creds = client.expect("paired")["creds"]
    assert [e["ev"] for e in client.seen] == ["qr", "paired"]  # no waiting, no QR refresh
    assert qr["code"] and creds.startswith("sim1.")
    client.expect_closed()
    login(clients, proxies[0], sim, ALICE, creds, "fleet-1")
    assert account(sim, ALICE)["state"] == "connected"
    assert requests.post(f"{sim.url}/sim/accounts/{ALICE}/scan", timeout=10).status_code == 404
