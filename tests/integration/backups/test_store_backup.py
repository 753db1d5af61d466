"""Backups cover a PostgreSQL session store: its tables go into the archive (checksummed like the
rest) and come back with Redis and the sessions directory, also into an empty database; a corrupt
archive, or a failure at the last step, leaves the store as it was."""

from __future__ import annotations

import hashlib
import json
import uuid

import pytest
import redis

from tests.support.backup_support import populate, rewrite, same_state_after, use_dirs
from waorch.backups import create as backups
from waorch.backups import restore as backup_restore
from waorch.core import settings

# whatsmeow-like tables: a device, a child with a cascading foreign key, an index, a shared one
SCHEMA = """
CREATE TABLE whatsmeow_device (jid text PRIMARY KEY, push_name text NOT NULL DEFAULT '', noise_key bytea);
CREATE TABLE whatsmeow_sessions (
  our_jid text REFERENCES whatsmeow_device(jid) ON DELETE CASCADE ON UPDATE CASCADE,
  their_id text, session bytea, PRIMARY KEY (our_jid, their_id));
CREATE TABLE whatsmeow_lid_map (lid text PRIMARY KEY, pn text UNIQUE NOT NULL);
CREATE INDEX whatsmeow_sessions_their_idx ON whatsmeow_sessions (their_id);
CREATE TABLE waorch_sim_devices (session_id text PRIMARY KEY, phone text NOT NULL, creds text NOT NULL,
  paired_at double precision NOT NULL, updated_at timestamptz NOT NULL DEFAULT now());
INSERT INTO whatsmeow_device VALUES ('491700000001:7@s.whatsapp.net', 'Tab\tand, comma', '\\x0001ff');
INSERT INTO whatsmeow_sessions VALUES ('491700000001:7@s.whatsapp.net', 'peer', '\\xdeadbeef');
INSERT INTO whatsmeow_lid_map VALUES ('111', '491700000001');
INSERT INTO waorch_sim_devices (session_id, phone, creds, paired_at)
  VALUES ('s1', '491700000001', 'sim1.x', 1.5);
CREATE TABLE unrelated (x int); INSERT INTO unrelated VALUES (7);
"""
CONTENT = ("SELECT string_agg(format('%s', t), ';' ORDER BY t::text) FROM ("
           "SELECT d.*::text AS t FROM whatsmeow_device d "
           "UNION ALL SELECT s.*::text FROM whatsmeow_sessions s "
           "UNION ALL SELECT l.*::text FROM whatsmeow_lid_map l "
           "UNION ALL SELECT (w.session_id, w.phone, w.creds)::text FROM waorch_sim_devices w) rows")


class Store:
    def __init__(self, server, name: str) -> None:
        self.server, self.name = server, name
        self.url = server.create_database(name)

    def sql(self, text: str) -> str:
        return self.server.psql(text, database=self.name)

    def content(self) -> str:
        return self.sql(CONTENT)

    def schema(self) -> str:
        constraints = self.sql("SELECT string_agg(pg_get_constraintdef(oid), ';' ORDER BY conname) "
                               "FROM pg_constraint WHERE connamespace = 'public'::regnamespace")
        indexes = self.sql("SELECT string_agg(indexname, ';' ORDER BY indexname) FROM pg_indexes "
                           "WHERE schemaname = 'public'")
        return f"{constraints}|{indexes}"


@pytest.fixture
def store(postgres_server, monkeypatch):
    made = Store(postgres_server, f"bk_{uuid.uuid4().hex[:10]}")
    made.sql(SCHEMA)
    monkeypatch.setenv("WAORCH_SESSION_STORE", made.url)
    settings.get.cache_clear()
    yield made
    settings.get.cache_clear()


@pytest.fixture
def root(monkeypatch, tmp_path, redis_url, store):
    root = use_dirs(monkeypatch, tmp_path)
    populate(redis_url, root)
    return root


def test_the_store_goes_into_the_archive_and_comes_back(r, root, store):
    before, schema = store.content(), store.schema()
    archive = backups.create_backup(r)
    manifest = backup_restore.verify_archive(archive)
    assert manifest["store"]["kind"] == "postgres" and manifest["store"]["where"] == store.url
    assert sorted(manifest["store"]["tables"]) == [  # its tables only
        "waorch_sim_devices", "whatsmeow_device", "whatsmeow_lid_map", "whatsmeow_sessions"]
    assert "store/whatsmeow_device.copy" in manifest["files"]

    store.sql("DELETE FROM whatsmeow_device; DELETE FROM whatsmeow_lid_map; DELETE FROM waorch_sim_devices;"
              "INSERT INTO whatsmeow_device VALUES ('x:1@s.whatsapp.net', 'later', NULL)")
    result = backup_restore.restore_backup(r, archive)
    assert result["store_tables"] == sorted(manifest["store"]["tables"])
    assert store.content() == before and store.schema() == schema
    assert store.sql("SELECT x FROM unrelated") == "7"  # not a table of the store: untouched
    # the foreign key is back, cascade included
    store.sql("DELETE FROM whatsmeow_device")
    assert store.sql("SELECT count(*) FROM whatsmeow_sessions") == "0"


def test_restore_into_an_empty_database(r, root, store, postgres_server, monkeypatch):
    before, schema = store.content(), store.schema()
    archive = backups.create_backup(r)
    fresh = Store(postgres_server, f"bk_{uuid.uuid4().hex[:10]}")  # the old server is gone
    monkeypatch.setenv("WAORCH_SESSION_STORE", fresh.url)
    settings.get.cache_clear()
    backup_restore.restore_backup(r, archive)
    assert fresh.content() == before and fresh.schema() == schema


def test_a_corrupt_store_member_changes_nothing(r, redis_url, root, store, tmp_path):
    archive = backups.create_backup(r)

    def change(members):  # damage the rows but keep the checksums right: only PostgreSQL can tell
        out = []
        digests = {}
        for info, data in members:
            if info.name == "store/whatsmeow_sessions.copy":
                data = data.replace(b"\\\\xdeadbeef", b"\\\\xnothex")
                digests[info.name] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
            out.append((info, data))
        at = next(i for i, (info, _) in enumerate(out) if info.name == "manifest.json")
        manifest = json.loads(out[at][1])
        manifest["files"].update(digests)
        out[at] = (out[at][0], json.dumps(manifest).encode())
        return out

    bad = rewrite(archive, tmp_path / "bad-store.tar.gz", change)
    store.sql("UPDATE whatsmeow_device SET push_name = 'live now'")
    live = store.content()
    with same_state_after(redis_url, root), pytest.raises(backups.RestoreFailed, match="refused the archive"):
        backup_restore.restore_backup(r, bad)
    assert store.content() == live

    tampered = rewrite(archive, tmp_path / "tampered.tar.gz", lambda members: [
        (info, data + b"x" if info.name == "store/whatsmeow_device.copy" else data)
        for info, data in members])
    with same_state_after(redis_url, root), pytest.raises(backups.ArchiveRefused, match="checksum"):
        backup_restore.restore_backup(r, tampered)
    assert store.content() == live


def test_losing_redis_at_the_last_step_rolls_the_store_back(r, redis_url, root, store, monkeypatch):
    archive = backups.create_backup(r)
    store.sql("UPDATE whatsmeow_device SET push_name = 'live now'")
    live = store.content()

    def lost(*args, **kwargs):
        raise redis.ConnectionError("connection lost (injected)")

    monkeypatch.setattr(backup_restore, "_replace_keys", lost)
    with same_state_after(redis_url, root), pytest.raises(backups.RestoreFailed, match="rolled back"):
        backup_restore.restore_backup(r, archive)
    assert store.content() == live


def test_an_archive_with_a_store_needs_a_store_to_restore_into(r, redis_url, root, store, monkeypatch):
    archive = backups.create_backup(r)
    monkeypatch.setenv("WAORCH_SESSION_STORE", "file")
    settings.get.cache_clear()
    with same_state_after(redis_url, root), \
            pytest.raises(backups.RestoreFailed, match="WAORCH_SESSION_STORE"):
        backup_restore.restore_backup(r, archive)
