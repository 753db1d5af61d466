"""`waorch supervisor` as a real process hosting real child processes (a stand-in worker program)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from functools import partial

import pytest

from tests.support import waiting
from tests.support.commands import WAORCH
from tests.support.supervisor_process import alive, running_pid, running_supervisor, use_stand_in_workers
from waorch.core import keys
from waorch.fleet import lifecycle
from waorch.proxies.pool import ProxyPool
from waorch.runners import RunnerUnavailable
from waorch.runners.process import STATE, ProcessRunner
from waorch.sessions import registry as sessions

DEADLINE = 60.0
wait_for = partial(waiting.wait_for, timeout=DEADLINE, interval=0.1)


@pytest.fixture
def env(redis_url, tmp_path, monkeypatch):
    use_stand_in_workers(monkeypatch, tmp_path)
    return {**os.environ}


@pytest.fixture
def supervisor(env, tmp_path):
    with running_supervisor(env, tmp_path / "supervisor.log") as process:
        yield process


@pytest.fixture
def runner(r, supervisor):
    runner = ProcessRunner(r)
    wait_for(lambda: _details_or_none(runner) is not None, "the supervisor's heartbeat")
    return runner


def _details_or_none(runner):
    try:
        return runner.details()
    except RunnerUnavailable:
        return None


def _create(r, phone="491510000001"):
    if not ProxyPool(r).urls():
        ProxyPool(r).add("socks5h://u:pw@127.0.0.2:1080")
    return lifecycle.create_session(r, "acme", phone)


def _starts(session_id: str) -> list[str]:
    path = sessions.sessions_root() / session_id / "starts.txt"
    return path.read_text().split("\n")[:-1] if path.exists() else []


def _up(runner: ProcessRunner, session_id: str) -> int | None:
    """The running worker's pid once it is up: it has written env.json and its start line (a
    signal before that, on a loaded machine, kills it before it ever handled one)."""
    pid = running_pid(runner, session_id)
    return pid if pid and str(pid) in _starts(session_id) else None


def test_no_supervisor_means_runner_unavailable(r):
    with pytest.raises(RunnerUnavailable, match="supervisor"):
        ProcessRunner(r).list()


def test_worker_gets_its_environment_and_data_dir(r, runner):
    s = _create(r)
    pid = wait_for(lambda: running_pid(runner, s["id"]), "the worker to run")
    env_file = sessions.sessions_root() / s["id"] / "env.json"
    wait_for(env_file.exists, "env.json")
    seen = json.loads(env_file.read_text())
    for name, value in sessions.worker_environment(s).items():
        assert seen[name] == value, name
    assert "REDIS_URL" not in seen and "WAORCH_SECRET_KEY" not in seen
    assert _starts(s["id"]) == [str(pid)]
    assert runner.list() == {s["id"]: "running"}


def test_crashed_worker_is_restarted_and_killed_worker_too(r, runner):
    s = _create(r)
    first = wait_for(lambda: running_pid(runner, s["id"]), "the worker to run")
    os.kill(first, signal.SIGKILL)
    second = wait_for(lambda: (p := running_pid(runner, s["id"])) and p != first and p, "a new worker")
    assert runner.details()[s["id"]]["restarts"] == 1
    crash = sessions.sessions_root() / s["id"] / "crash"
    crash.touch()
    os.kill(second, signal.SIGKILL)
    # it now crashes at once, again and again: restarts continue with backoff, never a busy loop
    wait_for(lambda: len(_starts(s["id"])) >= 5, "repeated restarts", timeout=90)
    crash.unlink()
    wait_for(lambda: running_pid(runner, s["id"]), "the worker to stay up again", timeout=30)


def test_restart_command_and_desired_stop(r, runner):
    s = _create(r)
    first = wait_for(lambda: _up(runner, s["id"]), "the worker to run")
    lifecycle.restart_session(r, s["id"])
    wait_for(lambda: (p := running_pid(runner, s["id"])) and p != first, "the restarted worker")
    assert f"stopped {first}" in _starts(s["id"])  # graceful: SIGTERM first
    lifecycle.stop_session(r, s["id"])
    wait_for(lambda: runner.list().get(s["id"]) in (None, "exited"), "the worker to stop")
    assert not alive(first)


def test_deleted_session_worker_goes_away_and_data_stays(r, runner):
    s = _create(r)
    pid = wait_for(lambda: _up(runner, s["id"]), "the worker to run")
    lifecycle.delete_session(r, s["id"])
    wait_for(lambda: s["id"] not in runner.list(), "the worker to be removed")
    wait_for(lambda: not alive(pid), "the process to end")
    assert (sessions.sessions_root() / s["id"] / "env.json").exists()


def test_worker_ignoring_sigterm_is_killed(r, runner):
    s = _create(r)
    data = sessions.sessions_root() / s["id"]
    data.mkdir(parents=True, exist_ok=True)
    (data / "ignore-sigterm").touch()
    pid = wait_for(lambda: _up(runner, s["id"]), "the worker to run")
    lifecycle.stop_session(r, s["id"])
    wait_for(lambda: not alive(pid), "SIGKILL after the grace period", timeout=40)


def test_sigterm_stops_every_child_and_clears_state(r, runner, supervisor):
    ids = [_create(r, f"49151000000{i}")["id"] for i in range(3)]
    pids = [wait_for(lambda sid=sid: running_pid(runner, sid), "workers") for sid in ids]
    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(40) == 0
    assert not any(alive(p) for p in pids)
    assert not r.exists(STATE)
    with pytest.raises(RunnerUnavailable):
        runner.list()
    assert r.scard(keys.SESSIONS_ACTIVE) == 3  # desired state is untouched


def test_killed_supervisor_takes_its_children_along(r, runner, supervisor):
    s = _create(r)
    pid = wait_for(lambda: running_pid(runner, s["id"]), "the worker to run")
    supervisor.kill()
    supervisor.wait(10)
    wait_for(lambda: not alive(pid), "the orphaned worker to get SIGTERM from the kernel")


def test_only_one_supervisor_per_redis(runner, env):
    second = subprocess.run(WAORCH + ["supervisor"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert second.returncode != 0
    assert "another `waorch supervisor` is running" in second.stderr
    assert "Traceback" not in second.stderr
