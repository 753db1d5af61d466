"""The control plane's side of a PostgreSQL session store, against real Redis and PostgreSQL:
deleting a session deletes its device from the store once its worker is gone, and `waorch doctor`
reports the store (reachable, schema, registered sessions' devices)."""

from __future__ import annotations

import dataclasses
import uuid

import pytest

from waorch import doctor
from waorch.core import keys, settings
from waorch.fleet import lifecycle
from waorch.launcher.redis_server import free_port
from waorch.sessions import registry as sessions
from waorch.sessions import store as session_store

MINE, OTHER = "491700000001:7@s.whatsapp.net", "491700000002:3@s.whatsapp.net"
TABLES = """
CREATE TABLE whatsmeow_version (version integer, compat integer);
INSERT INTO whatsmeow_version VALUES (15, 8);
CREATE TABLE whatsmeow_device (jid text PRIMARY KEY);
CREATE TABLE whatsmeow_contacts (our_jid text REFERENCES whatsmeow_device(jid) ON DELETE CASCADE, x text);
CREATE TABLE whatsmeow_privacy_tokens (our_jid text, their_jid text);
CREATE TABLE waorch_sim_devices (session_id text PRIMARY KEY, phone text NOT NULL, creds text NOT NULL,
  paired_at double precision NOT NULL, updated_at timestamptz NOT NULL DEFAULT now());
"""


@pytest.fixture
def store(postgres_server, monkeypatch):
    name = f"ss_{uuid.uuid4().hex[:10]}"
    url = postgres_server.create_database(name)
    postgres_server.psql(TABLES, database=name)
    monkeypatch.setenv("WAORCH_SESSION_STORE", url)
    monkeypatch.setenv("WAORCH_TRANSPORT", "neonize")
    settings.get.cache_clear()
    yield url, lambda text: postgres_server.psql(text, database=name)
    settings.get.cache_clear()


def add_session(r, session_id: str, phone: str, jid: str) -> None:
    sessions.register(r, session_id, "t1", phone, proxy_url="", trust_level="new", label="",
                      profile={})
    sessions.transition(r, session_id, "connected", fields={"jid": jid})


def test_a_deleted_sessions_device_goes_once_its_worker_is_gone(r, store) -> None:
    url, sql = store
    sql(f"INSERT INTO whatsmeow_device VALUES ('{MINE}'), ('{OTHER}');"
        f"INSERT INTO whatsmeow_contacts VALUES ('{MINE}', 'a'), ('{OTHER}', 'b');"
        f"INSERT INTO whatsmeow_privacy_tokens VALUES ('{MINE}', 'x');"
        "INSERT INTO waorch_sim_devices (session_id, phone, creds, paired_at) VALUES ('s1', '1', 'c', 1)")
    add_session(r, "s1", "491700000001", MINE)
    add_session(r, "s2", "491700000002", OTHER)
    env = sessions.worker_environment(sessions.get_session(r, "s1"))
    assert env["SESSION_STORE"] == url and env["DEVICE_JID"] == MINE  # the contract workers get

    assert lifecycle.delete_session(r, "s1")
    assert r.zcard(keys.STORE_FORGET) == 1
    now = r.zrange(keys.STORE_FORGET, 0, 0, withscores=True)[0][1]
    assert session_store.forget_due(r, set(), now - 1) == []  # not before its time
    assert session_store.forget_due(r, {"s1"}, now + 1) == []  # not while the runner still runs it
    assert sql(f"SELECT count(*) FROM whatsmeow_device WHERE jid = '{MINE}'") == "1"
    assert session_store.forget_due(r, set(), now + 1) == ["s1"]
    assert sql("SELECT string_agg(jid, ',') FROM whatsmeow_device") == OTHER
    assert sql("SELECT string_agg(x, ',') FROM whatsmeow_contacts") == "b"  # cascade
    assert sql("SELECT count(*) FROM whatsmeow_privacy_tokens") == "0"
    assert sql("SELECT count(*) FROM waorch_sim_devices") == "0"
    assert r.zcard(keys.STORE_FORGET) == 0


def test_deletions_wait_while_the_store_is_down(r, store, monkeypatch) -> None:
    add_session(r, "s1", "491700000001", MINE)
    lifecycle.delete_session(r, "s1")
    monkeypatch.setenv("WAORCH_SESSION_STORE", f"postgres://x:pw@127.0.0.1:{free_port()}/none?sslmode=disable")
    settings.get.cache_clear()
    assert session_store.forget_due(r, set(), 1e12) == []
    assert r.zcard(keys.STORE_FORGET) == 1  # kept for the next round


def test_the_file_store_queues_nothing(r, monkeypatch) -> None:
    monkeypatch.setenv("WAORCH_SESSION_STORE", "file")
    settings.get.cache_clear()
    add_session(r, "s1", "491700000001", MINE)
    lifecycle.delete_session(r, "s1")
    assert not r.exists(keys.STORE_FORGET)
    old_style = {"id": "s9", "phone": "1", "salt": "x", "jid": "491700000001"}  # a phone, not a device JID
    assert sessions.worker_environment(old_style)["DEVICE_JID"] == ""


def test_doctor_reports_the_store(r, store) -> None:
    url, sql = store
    sql(f"INSERT INTO whatsmeow_device VALUES ('{MINE}'), ('{OTHER}')")
    add_session(r, "s1", "491700000001", MINE)
    conf = settings.load()
    found = doctor.check_session_store(r, conf)
    assert [f.level for f in found] == [doctor.OK, doctor.WARN]  # OTHER belongs to no session
    assert "2 whatsmeow devices" in found[0].detail

    add_session(r, "s2", "491700000003", "491700000003:1@s.whatsapp.net")  # not in the store
    found = doctor.check_session_store(r, conf)
    assert any(f.level == doctor.FAIL and "s2" in f.detail for f in found)

    down = dataclasses.replace(conf, session_store=f"postgres://u:secret@127.0.0.1:{free_port()}/x")
    found = doctor.check_session_store(r, down)
    assert found[0].level == doctor.FAIL and "secret" not in found[0].detail

    bad = dataclasses.replace(conf, session_store="host=db user=x password=secret")
    found = doctor.check_session_store(r, bad)
    assert found[0].level == doctor.FAIL and "secret" not in found[0].detail
