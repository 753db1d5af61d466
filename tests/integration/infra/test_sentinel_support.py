"""The Redis Sentinel topology tests use (tests/support/sentinel.py): a kill -9 of the primary
leads to a new primary, with what was replicated before the kill."""

from __future__ import annotations

from tests.support.sentinel import DOWN_AFTER_MS, FAILOVER_TIMEOUT_MS, start_sentinel_setup

# Detection (down-after) + election delay (< 1 s) + promotion; a failed first attempt may be
# retried after 2 x failover-timeout. Anything slower means the setup is broken.
FAILOVER_DEADLINE = DOWN_AFTER_MS / 1000 + 1 + 2 * FAILOVER_TIMEOUT_MS / 1000 + 10


def test_sentinels_agree_on_the_primary(sentinel_setup):
    assert sentinel_setup.master_as_seen() == [sentinel_setup.primary.port] * 3
    assert sentinel_setup.role(sentinel_setup.primary)["role"] == "master"
    replica_info = sentinel_setup.role(sentinel_setup.replica)
    assert replica_info["role"] == "slave" and replica_info["master_link_status"] == "up"
    assert sentinel_setup.url().startswith("redis+sentinel://127.0.0.1:")


def test_kill_9_of_the_primary_elects_the_replica(sentinel_setup):
    old_primary, old_replica = sentinel_setup.primary, sentinel_setup.replica
    writer = old_primary.client()
    writer.set("before-kill", "kept")
    assert writer.wait(1, 5000) == 1  # the replica has it
    writer.close()

    killed_at = sentinel_setup.kill_primary()
    assert not old_primary.alive()
    elapsed = sentinel_setup.wait_for_new_primary(killed_at, timeout=FAILOVER_DEADLINE)

    assert sentinel_setup.primary is old_replica
    assert sentinel_setup.master_as_seen() == [old_replica.port] * 3
    client = old_replica.client()
    assert client.info("replication")["role"] == "master"
    assert client.get("before-kill") == "kept"
    assert client.set("after-failover", "1")  # writable
    client.close()
    print(f"failover took {elapsed:.2f} s (down-after {DOWN_AFTER_MS} ms)")
    assert DOWN_AFTER_MS / 1000 <= elapsed < FAILOVER_DEADLINE


def test_password_protected_setup_fails_over_and_takes_back_the_old_primary(tmp_path):
    with start_sentinel_setup(tmp_path / "sentinel", password="s3cret-pw") as setup:
        assert ":s3cret-pw@" in setup.url(2)
        killed_at = setup.kill_primary()
        setup.wait_for_new_primary(killed_at, timeout=FAILOVER_DEADLINE)
        # the killed node comes back as a replica of the new primary (the sentinels reconfigure it)
        setup.restart_old_primary()
        assert setup.role(setup.replica)["master_port"] == setup.primary.port
