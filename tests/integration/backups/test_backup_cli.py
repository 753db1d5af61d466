"""`waorch backup` and `waorch restore` as real subprocesses against the test Redis."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.backup_support import populate, same_state_after, use_dirs
from tests.support.commands import WAORCH
from waorch.backups import create as backups
from waorch.runners.process import HEARTBEAT


def run(*args: str, stdin: str = "", **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(WAORCH + list(args), env={**os.environ, **env}, input=stdin,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def root(monkeypatch, tmp_path, redis_url):
    root = use_dirs(monkeypatch, tmp_path)
    populate(redis_url, root)
    return root


def test_backup_then_restore_through_the_commands(r, redis_url, root, tmp_path):
    with same_state_after(redis_url, root):
        made = run("backup", "--out", str(tmp_path / "usb"))
        assert made.returncode == 0, made.stderr
        archive = Path(made.stdout.strip().splitlines()[-1])  # SPEC: the path is the last line
        assert archive.parent == tmp_path / "usb" and archive.is_file()
        assert oct(archive.stat().st_mode & 0o777) == oct(0o600)

        r.flushall()
        shutil.rmtree(root)
        declined = run("restore", str(archive), stdin="n\n")
        assert declined.returncode != 0 and "Replace every key" in declined.stdout
        assert r.dbsize() == 0 and not root.exists()

        restored = run("restore", str(archive), "--yes")
        assert restored.returncode == 0, restored.stderr
        assert "intact backup" in restored.stdout and "restored" in restored.stdout


def test_restore_command_refuses_and_changes_nothing(r, redis_url, root, tmp_path):
    archive = backups.create_backup(r)
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(archive.read_bytes()[:-500])
    r.set("made-after", "1")
    (root / "s1" / "creds.json").write_text("newer")
    with same_state_after(redis_url, root):
        for args in (["restore", str(truncated), "--yes"],
                     ["restore", str(tmp_path / "missing.tar.gz"), "--yes"],
                     ["restore", str(root / "s1" / "creds.json"), "--yes"]):
            refused = run(*args)
            assert refused.returncode != 0, args
            assert "nothing was changed" in refused.stderr, refused.stderr
            assert "Traceback" not in refused.stderr, refused.stderr
        checked = run("restore", "--check", str(archive))
        assert checked.returncode == 0 and "intact backup" in checked.stdout

        r.set(HEARTBEAT, "31337", ex=60)  # a supervisor is running
        busy = run("restore", str(archive), "--yes")
        assert busy.returncode != 0 and "stop the stack" in busy.stderr and "31337" in busy.stderr
        r.delete(HEARTBEAT)


def test_backup_command_prunes_only_its_own_directory(r, root, tmp_path):
    for _ in range(3):
        made = run("backup", WAORCH_BACKUP_KEEP="2")
        assert made.returncode == 0, made.stderr
        assert Path(made.stdout.splitlines()[-1]).parent == backups.backup_dir()
    assert len(backups.list_backups(backups.backup_dir())) == 2
    elsewhere = tmp_path / "elsewhere"
    for _ in range(3):
        assert run("backup", "--out", str(elsewhere), WAORCH_BACKUP_KEEP="2").returncode == 0
    assert len(backups.list_backups(elsewhere)) == 3


def test_backup_command_reports_an_unwritable_directory(r, root, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    failed = run("backup", "--out", str(blocker / "sub"))
    assert failed.returncode != 0 and "cannot write the backup" in failed.stderr
    assert "Traceback" not in failed.stderr
