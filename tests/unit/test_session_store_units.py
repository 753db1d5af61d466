"""Pure parts of the session store: the setting, URLs for lib/pq and libpq, device JIDs, the
worker's configuration of it, and `waorch run --no-sim` with an external simulator."""

from __future__ import annotations

from pathlib import Path

import pytest

from waorch.core import session_store
from waorch.fleet.moving import MoveRefused, placement_fields
from waorch.launcher.plan import RunOptions, choose_endpoints
from worker_container.config import ConfigError, WorkerConfig

BASE = {"SESSION_ID": "s1", "WEBHOOK_URL": "http://127.0.0.1:8080/api/webhook", "WEBHOOK_SECRET": "x",
        "PROXY_URL": "socks5h://127.0.0.1:1080"}


def test_the_setting_takes_file_or_a_postgres_url() -> None:
    assert session_store.parse("") == session_store.parse("file") == "file"
    url = "postgresql://u:p@db:5432/wa?sslmode=require"
    assert session_store.parse(url) == url and session_store.is_postgres(url)
    bad_values = ("host=db dbname=wa password=hunter2", "mysql://u:hunter2@db/wa", "postgres://db",
                  "/tmp/x.db")
    for bad in bad_values:
        with pytest.raises(ValueError) as refused:
            session_store.parse(bad)
        assert "hunter2" not in str(refused.value)


def test_urls_for_each_driver() -> None:
    url = "postgres://u:secret@pgb:6432/wa?sslmode=disable&binary_parameters=yes"
    assert session_store.redact(url) == "postgres://u:***@pgb:6432/wa?sslmode=disable&binary_parameters=yes"
    assert session_store.libpq_url(url) == "postgres://u:secret@pgb:6432/wa?sslmode=disable"
    named = session_store.whatsmeow_url(url, "abc123")
    assert named.endswith("sslmode=disable&binary_parameters=yes&application_name=waorch-abc123")
    assert session_store.whatsmeow_url(named, "other").count("application_name") == 1


@pytest.mark.parametrize("text,parts", [
    ("491700000001:7@s.whatsapp.net", ("491700000001", 0, 7, "s.whatsapp.net")),
    ("491700000001.1:12@s.whatsapp.net", ("491700000001", 1, 12, "s.whatsapp.net")),
    ("491700000001@s.whatsapp.net", ("491700000001", 0, 0, "s.whatsapp.net")),
])
def test_device_jids_round_trip(text, parts) -> None:
    jid = session_store.parse_jid(text)
    assert (jid.user, jid.agent, jid.device, jid.server) == parts
    assert str(jid) == text


@pytest.mark.parametrize("text", ["", "491700000001", "1234:5@lid", "x:1@s.whatsapp.net",
                                  "1:2@s.whatsapp.net'"])
def test_what_is_not_a_device_jid(text) -> None:
    assert session_store.parse_jid(text) is None


def test_the_worker_reads_its_store_and_device() -> None:
    config = WorkerConfig.from_env({**BASE, "SESSION_STORE": "postgres://u:pw@db/wa",
                                    "DEVICE_JID": "491700000001:7@s.whatsapp.net"})
    assert config.session_store == "postgres://u:pw@db/wa" and config.device_jid.endswith(":7@s.whatsapp.net")
    assert "pw" not in config.describe() and "u:***@db" in config.describe()
    assert WorkerConfig.from_env(BASE).session_store == "file"
    with pytest.raises(ConfigError, match="SESSION_STORE"):
        WorkerConfig.from_env({**BASE, "SESSION_STORE": "host=db"})
    with pytest.raises(ConfigError, match="DEVICE_JID"):
        WorkerConfig.from_env({**BASE, "DEVICE_JID": "491700000001"})


def test_run_without_its_own_simulator_uses_the_external_one(monkeypatch, tmp_path) -> None:
    options = RunOptions(state_dir=Path(tmp_path), port=18080, sim=False)
    monkeypatch.delenv("WAORCH_SIM_URL", raising=False)
    monkeypatch.delenv("WAORCH_SIM_WIRE", raising=False)
    assert (choose_endpoints(options).sim_url, choose_endpoints(options).sim_wire) == ("", "")
    monkeypatch.setenv("WAORCH_SIM_URL", "http://10.0.0.5:8091/")
    with pytest.raises(ValueError, match="WAORCH_SIM_WIRE"):
        choose_endpoints(options)
    monkeypatch.setenv("WAORCH_SIM_WIRE", "10.0.0.5:8092")
    endpoints = choose_endpoints(options)
    assert endpoints.sim_is_external and endpoints.sim_port is None
    assert (endpoints.sim_url, endpoints.sim_wire) == ("http://10.0.0.5:8091", "10.0.0.5:8092")
    own = choose_endpoints(RunOptions(state_dir=Path(tmp_path), port=18080, sim=True))
    assert not own.sim_is_external and own.sim_url.startswith("http://127.0.0.1:")  # its own wins


def test_move_placement_is_the_swarm_runners() -> None:
    assert placement_fields("swarm", "zone=eu, disk=ssd") == {"node_labels": "zone=eu,disk=ssd"}
    assert placement_fields("process", "") == {}
    with pytest.raises(MoveRefused, match="swarm runner"):
        placement_fields("process", "zone=eu")
    with pytest.raises(MoveRefused, match="key=value"):
        placement_fields("swarm", "host7")
