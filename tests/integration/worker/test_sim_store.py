"""The sim transport keeps its credentials in a PostgreSQL session store: a session whose data
directory is gone logs in again without a scan, as a neonize session with the same store would."""

from __future__ import annotations

import shutil
import uuid

import pytest

from tests.integration.worker.test_sim_transport import PHONE, Recorder, sim, sim_post  # noqa: F401 - fixture
from waorch.core import session_store
from waorch.launcher.redis_server import free_port
from waorch.simulator.socks5 import Socks5Server
from worker_container.transports.base import TransportConfig
from worker_container.transports.sim import CREDS_FILE, SimTransport


@pytest.fixture
def proxy():
    server = Socks5Server(username="worker", password="pw").start_in_thread()
    yield server
    server.stop()


@pytest.fixture
def store_url(postgres_server):
    return postgres_server.create_database(f"sim_{uuid.uuid4().hex[:10]}")


def transport(tmp_path, sim, proxy, store: str, session: str = "sess-1") -> tuple[SimTransport, Recorder]:  # noqa: F811
    recorder = Recorder()
    config = TransportConfig(session_id=session, phone=PHONE, proxy_url=proxy.url,
                             session_dir=str(tmp_path / session), sim_wire=sim.wire, store=store)
    made = SimTransport(config, recorder)
    made.backoff_initial, made.backoff_max = 0.1, 0.5
    return made, recorder


def test_credentials_in_the_store_outlive_the_data_directory(tmp_path, sim, proxy, store_url,  # noqa: F811
                                                            postgres_server) -> None:
    first, events = transport(tmp_path, sim, proxy, store_url)
    first.start()
    try:
        events.wait_for("QR")
        assert sim_post(sim, f"/sim/accounts/{PHONE}/scan").status_code == 200
        events.wait_for("CONNECTED")
    finally:
        first.stop()
    assert not (tmp_path / "sess-1" / CREDS_FILE).exists()  # nothing in the data directory
    database = store_url.rsplit("/", 1)[1].split("?")[0]
    row = postgres_server.psql("SELECT session_id || ' ' || phone FROM waorch_sim_devices", database=database)
    assert row == f"sess-1 {PHONE}"

    shutil.rmtree(tmp_path / "sess-1", ignore_errors=True)  # the host and its disk are gone
    second, events = transport(tmp_path, sim, proxy, store_url)
    second.start()
    try:
        _, connected = events.wait_for("CONNECTED")
        assert connected["jid"].startswith(PHONE)
        assert "QR" not in events.kinds()  # no scan
    finally:
        second.stop()

    # a logout deletes them from the store: the next start pairs again
    with session_store.connection(store_url) as conn:
        assert session_store.delete_sim_creds(conn, "sess-1") == 1
    third, events = transport(tmp_path, sim, proxy, store_url)
    third.start()
    try:
        events.wait_for("QR")
        assert "CONNECTED" not in events.kinds()
    finally:
        third.stop()


def test_an_unreachable_store_is_an_error_not_a_new_pairing(tmp_path, sim, proxy) -> None:  # noqa: F811
    url = f"postgres://waorch:hunter2@127.0.0.1:{free_port()}/none?sslmode=disable"
    made, events = transport(tmp_path, sim, proxy, url)
    made.start()
    try:
        _, error = events.wait_for("ERROR", code="STORE_UNAVAILABLE")
        assert "hunter2" not in error["detail"] and "***" in error["detail"]
        events.wait_for("ERROR", after=events.kinds().index("ERROR") + 1, code="STORE_UNAVAILABLE")  # retried
        assert "QR" not in events.kinds()  # waiting costs nothing; pairing again would cost a scan
    finally:
        made.stop()
