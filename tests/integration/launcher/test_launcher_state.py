"""The launcher's state directory: private files, the admin key kept across runs, the lock."""

from __future__ import annotations

import socket
import stat

import pytest

from waorch.launcher.ports import pick
from waorch.launcher.state import StateDir, StateDirBusy
from waorch.tenants import apikeys


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_secrets_are_private_and_stable(tmp_path, monkeypatch):
    monkeypatch.delenv("WAORCH_SECRET_KEY", raising=False)
    state = StateDir(tmp_path / "s")
    state.prepare()
    first = state.secret_key()
    assert len(first) >= 32 and state.secret_key() == first
    auth, created = state.flower_auth()
    assert created and ":" in auth
    assert state.flower_auth() == (auth, False)
    assert state.socks_password() == state.socks_password()
    for name in ("secret_key", "flower_auth", "demo_proxy_password"):
        assert mode(state.root / name) == 0o600
    assert mode(state.root) == 0o700


def test_explicit_secret_key_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("WAORCH_SECRET_KEY", "from-the-environment")
    state = StateDir(tmp_path)
    state.prepare()
    assert state.secret_key() == "from-the-environment"
    assert not (state.root / "secret_key").exists()


def test_admin_key_is_reused_while_redis_knows_it(tmp_path, r):
    state = StateDir(tmp_path)
    state.prepare()
    key, created = state.admin_key(r)
    assert created and apikeys.lookup(r, key).is_admin
    assert state.admin_key(r) == (key, False)
    assert key not in "".join(r.keys("*"))  # only the hash is stored
    r.flushdb()  # a different (or wiped) Redis: the remembered key is useless there
    again, created = state.admin_key(r)
    assert created and again != key and apikeys.lookup(r, again).is_admin


def test_run_file_is_written_atomically_and_removed(tmp_path):
    state = StateDir(tmp_path)
    state.prepare()
    state.write_run_file({"api_url": "http://x"})
    assert mode(state.run_file) == 0o600
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    state.remove_run_file()
    state.remove_run_file()  # idempotent
    assert not state.run_file.exists()


def test_second_lock_on_a_state_dir_fails(tmp_path):
    first = StateDir(tmp_path)
    first.prepare()
    first.lock()
    with pytest.raises(StateDirBusy, match="another `waorch run`"):
        StateDir(tmp_path).lock()


def test_pick_prefers_a_free_port_and_avoids_taken_ones():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        used = busy.getsockname()[1]
        taken: set[int] = set()
        chosen = pick("127.0.0.1", used, taken)
        assert chosen != used and chosen in taken
    taken = {chosen}
    assert pick("127.0.0.1", chosen, taken) != chosen
