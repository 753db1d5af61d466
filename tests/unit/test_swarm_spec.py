"""The swarm runner's service spec, built without an engine (pure logic: settings + session)."""

from __future__ import annotations

import pytest

from waorch.core import settings
from waorch.runners import RunnerUnavailable
from waorch.runners.swarm import SwarmRunner, node_label_constraints, parse_bytes

SESSION = {"id": "abc123", "phone": "491510000001", "salt": "s1", "profile": {},
           "proxy_url": "socks5h://u:proxy-secret@127.0.0.2:1080"}


@pytest.fixture
def conf(monkeypatch, tmp_path):
    monkeypatch.setenv("WAORCH_SECRET_KEY", "unit-key")
    monkeypatch.setenv("WAORCH_DATA_DIR", str(tmp_path))
    for name in ("WAORCH_SWARM_CONSTRAINTS", "WAORCH_SWARM_SLOT_RESOURCE", "WAORCH_WORKER_MEMORY",
                 "WAORCH_WORKER_PIDS", "WAORCH_SWARM_DATA", "WAORCH_DOCKER_MOUNTS"):
        monkeypatch.delenv(name, raising=False)
    settings.get.cache_clear()
    yield monkeypatch
    settings.get.cache_clear()


def _spec(session: dict = SESSION) -> tuple[dict, str]:
    return SwarmRunner(client=object())._spec(session)  # type: ignore[arg-type]


def test_parse_bytes():
    assert parse_bytes("512m") == 512 * 1024**2
    assert parse_bytes("1g") == 1024**3 and parse_bytes("1GB") == 1024**3
    assert parse_bytes("4096") == 4096 and parse_bytes("") == 0
    with pytest.raises(ValueError):
        parse_bytes("lots")


def test_node_label_constraints():
    assert node_label_constraints("") == []
    assert node_label_constraints("zone=eu, disk=ssd") == ["node.labels.zone==eu", "node.labels.disk==ssd"]
    for bad in ("zone", "zone==eu", "=eu", "zone=eu;rm -rf"):
        with pytest.raises(ValueError):
            node_label_constraints(bad)


def test_defaults(conf):
    kwargs, digest = _spec()
    task = kwargs["task_template"]
    container = task["ContainerSpec"]
    assert kwargs["name"] == "wa_session_abc123" and kwargs["mode"] == {"replicated": {"Replicas": 1}}
    assert kwargs["labels"] == {"waorch.session": "abc123", "waorch.phone": "491510000001",
                                "waorch.env": digest}
    assert container["ReadOnly"] is True and container["CapabilityDrop"] == ["ALL"]
    assert task["Resources"]["Limits"] == {"MemoryBytes": 512 * 1024**2, "Pids": 256}
    assert "Reservations" not in task["Resources"]
    assert not task.get("Placement")
    mounts = {m["Target"]: m for m in container["Mounts"]}
    assert mounts["/app/sessions"]["Type"] == "volume"
    assert mounts["/app/sessions"]["Source"] == "wa_session_abc123"
    assert mounts["/tmp"]["Type"] == "tmpfs"
    # the proxy password and the webhook secret are in the environment, in no label
    assert any(e.startswith("PROXY_URL=socks5h://u:proxy-secret@") for e in container["Env"])
    assert not any("proxy-secret" in v for v in kwargs["labels"].values())


def test_slots_constraints_and_node_labels(conf):
    conf.setenv("WAORCH_SWARM_SLOT_RESOURCE", "waorch-session")
    conf.setenv("WAORCH_SWARM_CONSTRAINTS", "node.role==worker")
    conf.setenv("WAORCH_WORKER_MEMORY", "")
    conf.setenv("WAORCH_WORKER_PIDS", "0")
    settings.get.cache_clear()
    kwargs, _ = _spec({**SESSION, "node_labels": "zone=b"})
    task = kwargs["task_template"]
    assert task["Resources"]["Reservations"]["GenericResources"] == [
        {"DiscreteResourceSpec": {"Kind": "waorch-session", "Value": 1}}]
    assert "Limits" not in task["Resources"]
    assert task["Placement"]["Constraints"] == ["node.role==worker", "node.labels.zone==b"]


def test_digest_follows_what_defines_the_task(conf):
    _, first = _spec()
    assert _spec()[1] == first  # stable
    assert _spec({**SESSION, "proxy_url": "socks5h://u:p@127.0.0.3:1080"})[1] != first
    assert _spec({**SESSION, "node_labels": "zone=a"})[1] != first


def test_invalid_settings_are_runner_unavailable(conf):
    with pytest.raises(RunnerUnavailable, match="node_labels"):
        _spec({**SESSION, "node_labels": "zone"})
    conf.setenv("WAORCH_SWARM_DATA", "nfs")
    settings.get.cache_clear()
    with pytest.raises(RunnerUnavailable, match="WAORCH_SWARM_DATA"):
        _spec()
