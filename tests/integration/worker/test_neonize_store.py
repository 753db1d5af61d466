"""The real neonize transport with a PostgreSQL session store, offline.

A private PostgreSQL (tests/support/postgres_server.py) and a SOCKS5 proxy on 127.0.0.1 that
refuses every CONNECT: whatsmeow loads its store, builds its client and dials through the proxy,
which says no, so nothing leaves the machine. Each transport runs in a child process (a wrong JID
would kill it with a Go panic, and each client leaks store connections until its process ends).
What is checked: whatsmeow's tables are created once, also by workers starting together on an
empty database; a new session pairs as a new device and never resumes another account's device;
a recorded JID is resumed only after it was found in the store; a missing one is reported
(DEVICE_MISSING) and pairs anew instead of panicking; a device is deleted for good.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.integration.worker.test_neonize_proxy import ROOT, child_env, kill_tree, read_events
from waorch.core import session_store
from waorch.simulator.socks5 import Socks5Server

pytest.importorskip("neonize")

PHONE = "4915100000001"
OTHER_PHONE = "4915100000002"
DEADLINE = 120.0

# Runs the transport until its first failed dial, then prints what its client was built as.
TRANSPORT_SCRIPT = r"""
import json, sys, threading
from worker_container.transports.base import TransportConfig
from worker_container.transports.neonize_adapter import NeonizeStartError, NeonizeTransport

events_path, proxy_url, session_dir, store, device_jid, phone = sys.argv[1:7]
failed = threading.Event()

def emit(event, data):
    with open(events_path, "a") as out:
        out.write(json.dumps([event, data]) + "\n")
    if event == "ERROR" and data.get("code") in ("PROXY_FAILED", "CONNECTION_LOST"):
        failed.set()

config = TransportConfig(session_id="s-" + phone, phone=phone, proxy_url=proxy_url, session_dir=session_dir,
                         store=store, device_jid=device_jid)
transport = NeonizeTransport(config, emit)
try:
    transport.start()
except NeonizeStartError as exc:
    print("START_ERROR", exc.code)
    sys.exit(3)
if not failed.wait(90):
    sys.exit(4)
me = transport._client.get_me()  # safe: connect() has run
own = f"{me.JID.User}:{me.JID.Device}@{me.JID.Server}" if me.HasField("JID") else ""
print("RESULT " + json.dumps({"me": own, "device": transport._device_jid or ""}))
transport.stop()
"""

FAKE_DEVICE = """
INSERT INTO whatsmeow_device (jid, lid, registration_id, noise_key, identity_key, signed_pre_key,
  signed_pre_key_id, signed_pre_key_sig, adv_key, adv_details, adv_account_sig, adv_account_sig_key,
  adv_device_sig, platform, business_name, push_name)
VALUES ('{jid}', '{lid}', 1234, decode(repeat('11',32),'hex'), decode(repeat('22',32),'hex'),
  decode(repeat('33',32),'hex'), 1, decode(repeat('44',64),'hex'), decode(repeat('55',32),'hex'),
  decode('00','hex'), decode(repeat('66',64),'hex'), decode(repeat('77',32),'hex'),
  decode(repeat('88',64),'hex'), 'android', '', 'Test, with a comma');
"""


@pytest.fixture(scope="module")
def refusing_proxy():
    server = Socks5Server(refuse_connects=True)
    yield server.start_in_thread()
    server.stop()


@pytest.fixture
def store_db(postgres_server):
    """A fresh, empty database for one test: (its name, its URL)."""
    name = f"st_{uuid.uuid4().hex[:10]}"
    return name, postgres_server.create_database(name)


def start(proxy: Socks5Server, tmp_path: Path, store: str, device_jid: str = "", phone: str = PHONE,
          tag: str = "run") -> subprocess.Popen:
    events = tmp_path / f"{tag}.events.jsonl"
    session_dir = tmp_path / tag
    return subprocess.Popen(
        [sys.executable, "-c", TRANSPORT_SCRIPT, str(events), proxy.url, str(session_dir), store, device_jid,
         phone], env=child_env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen, tmp_path: Path, tag: str = "run") -> dict:
    try:
        output, _ = proc.communicate(timeout=DEADLINE)
    finally:
        kill_tree(proc)
    result = next((json.loads(line[7:]) for line in output.splitlines() if line.startswith("RESULT ")), None)
    return {"rc": proc.returncode, "output": output, "result": result,
            "events": read_events(tmp_path / f"{tag}.events.jsonl")}


def run(proxy, tmp_path, store, device_jid="", phone=PHONE, tag="run") -> dict:
    return finish(start(proxy, tmp_path, store, device_jid, phone, tag), tmp_path, tag)


def add_device(postgres_server, database: str, jid: str, lid: str = "111111111111111:7@lid") -> None:
    postgres_server.psql(FAKE_DEVICE.format(jid=jid, lid=lid), database=database)


def count(postgres_server, database: str, sql: str) -> int:
    return int(postgres_server.psql(sql, database=database))


def test_new_session_creates_the_schema_and_pairs_as_a_new_device(postgres_server, store_db, refusing_proxy,
                                                                 tmp_path) -> None:
    database, url = store_db
    first = run(refusing_proxy, tmp_path, url, tag="first")
    assert first["rc"] == 0, first["output"]
    assert count(postgres_server, database, "SELECT max(version) FROM whatsmeow_version") >= 1
    assert postgres_server.psql("SELECT value FROM waorch_store_meta", database=database)  # neonize version
    assert first["result"] == {"me": "", "device": ""}  # a blank device: a QR would follow
    assert not (tmp_path / "first" / "whatsmeow.sqlite3").exists()  # nothing in the data directory
    assert refusing_proxy.requests and all(r.host == "web.whatsapp.com" for r in refusing_proxy.requests)

    # Another account's device is now in the database: a new session must not resume it (without
    # new_device, whatsmeow would take the database's first device).
    add_device(postgres_server, database, f"{OTHER_PHONE}:3@s.whatsapp.net")
    second = run(refusing_proxy, tmp_path, url, tag="second")
    assert second["rc"] == 0, second["output"]
    assert second["result"] == {"me": "", "device": ""}
    assert not [d for e, d in second["events"] if e == "ERROR" and d["code"] == "DEVICE_MISSING"]


def test_a_recorded_device_is_resumed_after_it_was_found_in_the_store(postgres_server, store_db,
                                                                     refusing_proxy, tmp_path) -> None:
    database, url = store_db
    assert run(refusing_proxy, tmp_path, url, tag="schema")["rc"] == 0
    mine, other = f"{PHONE}:7@s.whatsapp.net", f"{OTHER_PHONE}:3@s.whatsapp.net"
    add_device(postgres_server, database, other, lid="222222222222222:3@lid")
    add_device(postgres_server, database, mine)
    resumed = run(refusing_proxy, tmp_path, url, device_jid=mine, tag="resume")
    assert resumed["rc"] == 0, resumed["output"]
    assert resumed["result"] == {"me": f"{PHONE}:7@s.whatsapp.net", "device": mine}
    # no JID recorded (e.g. a lost CONNECTED): this phone's one device in the store, not the other's
    fallback = run(refusing_proxy, tmp_path, url, device_jid="", tag="fallback")
    assert fallback["result"] == {"me": f"{PHONE}:7@s.whatsapp.net", "device": mine}, fallback["output"]


def test_a_missing_device_is_reported_and_pairs_anew_instead_of_panicking(postgres_server, store_db,
                                                                         refusing_proxy, tmp_path) -> None:
    database, url = store_db
    assert run(refusing_proxy, tmp_path, url, tag="schema")["rc"] == 0
    add_device(postgres_server, database, f"{OTHER_PHONE}:3@s.whatsapp.net")
    gone = f"{PHONE}:9@s.whatsapp.net"  # NewClient(jid=gone) would end the process with a Go panic
    outcome = run(refusing_proxy, tmp_path, url, device_jid=gone, tag="missing")
    assert outcome["rc"] == 0, outcome["output"]  # 134 would be the panic
    assert outcome["result"] == {"me": "", "device": ""}
    missing = [d for e, d in outcome["events"] if e == "ERROR" and d["code"] == "DEVICE_MISSING"]
    assert len(missing) == 1 and gone in missing[0]["detail"]
    assert outcome["events"][0][1]["code"] == "DEVICE_MISSING"  # said before any dial


def test_workers_starting_together_on_an_empty_database_create_the_schema_once(
        postgres_server, store_db, refusing_proxy, tmp_path) -> None:
    database, url = store_db
    procs = [start(refusing_proxy, tmp_path, url, phone=f"49151000001{i:02d}", tag=f"w{i}") for i in range(4)]
    results = [finish(proc, tmp_path, f"w{i}") for i, proc in enumerate(procs)]
    for outcome in results:
        # without the lock, some of them failed: "duplicate key value violates ... pg_type_typname_nsp_index"
        assert outcome["rc"] == 0, outcome["output"]
        assert "STORE_UNAVAILABLE" not in outcome["output"]
    assert count(postgres_server, database, "SELECT count(*) FROM waorch_store_meta") == 1
    # one of them created the tables; the others waited for its lock and found them (neonize's
    # import makes the root logger print INFO lines)
    assert sum("creating/upgrading whatsmeow's tables" in o["output"] for o in results) == 1


def test_an_unreachable_store_refuses_the_start(refusing_proxy, tmp_path) -> None:
    from waorch.launcher.redis_server import free_port

    url = f"postgres://nobody:secret-pw@127.0.0.1:{free_port()}/none?sslmode=disable"
    outcome = run(refusing_proxy, tmp_path, url, tag="down")
    assert outcome["rc"] == 3 and "START_ERROR STORE_UNAVAILABLE" in outcome["output"], outcome["output"]
    errors = [d for e, d in outcome["events"] if e == "ERROR"]
    assert errors[0]["code"] == "STORE_UNAVAILABLE" and "secret-pw" not in errors[0]["detail"]
    assert "secret-pw" not in outcome["output"]


def test_deleting_a_device_takes_its_rows_and_tokens_but_keeps_the_shared_lid_map(
        postgres_server, store_db, refusing_proxy, tmp_path) -> None:
    database, url = store_db
    assert run(refusing_proxy, tmp_path, url, tag="schema")["rc"] == 0
    mine, other = f"{PHONE}:7@s.whatsapp.net", f"{OTHER_PHONE}:3@s.whatsapp.net"
    add_device(postgres_server, database, mine)
    add_device(postgres_server, database, other, lid="222222222222222:3@lid")
    for jid in (mine, other):
        postgres_server.psql(
            f"INSERT INTO whatsmeow_contacts (our_jid, their_jid, push_name) "
            f"VALUES ('{jid}', 'x@s.whatsapp.net', 'x');"
            f"INSERT INTO whatsmeow_privacy_tokens (our_jid, their_jid, token, timestamp) "
            f"VALUES ('{jid}', 'x@s.whatsapp.net', decode('01','hex'), 1)", database=database)
    postgres_server.psql("INSERT INTO whatsmeow_lid_map (lid, pn) VALUES ('333', '4915100000003')",
                         database=database)

    with session_store.connection(url) as conn:
        assert session_store.device_exists(conn, mine)
        assert session_store.delete_device(conn, mine) == 1
        assert not session_store.device_exists(conn, mine)
        assert session_store.delete_device(conn, mine) == 0  # twice is harmless
        assert session_store.devices(conn) == [other]
    for table, column in (("whatsmeow_contacts", "our_jid"), ("whatsmeow_privacy_tokens", "our_jid")):
        rows = f"SELECT count(*) FROM {table} WHERE {column} = "
        assert count(postgres_server, database, rows + f"'{mine}'") == 0
        assert count(postgres_server, database, rows + f"'{other}'") == 1
    assert count(postgres_server, database, "SELECT count(*) FROM whatsmeow_lid_map") == 1


def test_the_store_works_behind_pgbouncer_in_transaction_pooling(postgres_server, pgbouncer, store_db,
                                                                refusing_proxy, tmp_path) -> None:
    database, _ = store_db
    url = pgbouncer.store_url(database)  # binary_parameters=yes for lib/pq; stripped for psycopg
    assert run(refusing_proxy, tmp_path, url, tag="schema")["rc"] == 0
    mine = f"{PHONE}:7@s.whatsapp.net"
    add_device(postgres_server, database, mine)
    resumed = run(refusing_proxy, tmp_path, url, device_jid=mine, tag="resume")
    assert resumed["rc"] == 0, resumed["output"]
    assert resumed["result"] == {"me": mine, "device": mine}
