"""The outbox journal: what reconcile() decides after a crash at every step, compaction, torn lines."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from worker_container.journal import (
    INTERRUPTED_DETAIL,
    SENDING,
    SENT,
    Action,
    Journal,
)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "sessions" / "s1" / "outbox-journal.jsonl"


def reopen(journal: Journal) -> Journal:
    """What the next process sees: the file as fsync'ed, nothing from memory."""
    journal.close()
    return Journal(journal.path, compact_bytes=journal.compact_bytes, retention=journal.retention)


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_creates_directory_and_starts_empty(path: Path) -> None:
    j = Journal(str(path))
    assert path.parent.is_dir()
    assert j.reconcile() == []
    assert j.lookup("m1") is None


def test_every_record_is_on_disk_when_the_call_returns(path: Path) -> None:
    j = Journal(str(path))
    j.claimed("m1", "4915100000001", "lease-1")
    assert records(path)[-1]["op"] == "claimed"
    j.sending("m1")
    assert records(path)[-1]["op"] == "sending"
    j.sent("m1", "WA1", 1700000000.5)
    last = records(path)[-1]
    assert (last["op"], last["wa_id"], last["sent_at"]) == ("sent", "WA1", 1700000000.5)


def test_crash_after_claim_nacks_retryable(path: Path) -> None:
    j = Journal(str(path))
    j.claimed("m1", "491", "lease-1")
    actions = reopen(j).reconcile()
    assert len(actions) == 1
    a = actions[0]
    assert (a.kind, a.msg_id, a.lease_token, a.retryable) == ("nack", "m1", "lease-1", True)


def test_crash_during_send_nacks_non_retryable_send_error(path: Path) -> None:
    j = Journal(str(path))
    j.claimed("m1", "491", "lease-1")
    j.sending("m1")
    assert reopen(j).reconcile() == [Action("nack", "m1", "lease-1", reason="send_error", retryable=False,
                                            detail=INTERRUPTED_DETAIL)]


def test_crash_after_send_reacks_with_recorded_wa_id(path: Path) -> None:
    j = Journal(str(path))
    j.claimed("m1", "491", "lease-1")
    j.sending("m1")
    j.sent("m1", "WA-77", 1700000001.0)
    assert reopen(j).reconcile() == [Action("ack", "m1", "lease-1", wa_id="WA-77", sent_at=1700000001.0)]


def test_crash_after_failed_send_renacks_with_recorded_reason(path: Path) -> None:
    j = Journal(str(path))
    j.claimed("m1", "491", "lease-1")
    j.sending("m1")
    j.failed("m1", "invalid_recipient", False, "NOT_ON_WHATSAPP")
    assert reopen(j).reconcile() == [Action("nack", "m1", "lease-1", reason="invalid_recipient",
                                            retryable=False, detail="NOT_ON_WHATSAPP")]


def test_settled_entries_need_nothing_and_only_sends_are_remembered(path: Path) -> None:
    j = Journal(str(path))
    j.claimed("m1", "491", "l1")
    j.sending("m1")
    j.sent("m1", "WA1", 1.0)
    j.acked("m1")
    j.claimed("m2", "492", "l2")
    j.nacked("m2")  # never sent: a later claim is a retry and must be sent
    j.claimed("m3", "493", "l3")
    j.sending("m3")
    j.failed("m3", "send_error", True, "timeout")
    j.nacked("m3")  # the transport said it did not go: same
    j.claimed("m4", "494", "l4")
    j.sending("m4")
    j.nacked("m4")  # outcome unknown: remembered so that it is never sent
    j2 = reopen(j)
    assert j2.reconcile() == []
    assert j2.open_entries() == []
    assert j2.lookup("m2") is None and j2.lookup("m3") is None
    m1, m4 = j2.lookup("m1"), j2.lookup("m4")
    assert (m1.state, m1.wa_id, m1.settled) == (SENT, "WA1", True)
    assert (m4.state, m4.settled) == (SENDING, True)


def test_reclaim_of_an_acked_message_is_answered_from_the_journal(path: Path) -> None:
    j = Journal(str(path))
    j.claimed("m1", "491", "l1")
    j.sending("m1")
    j.sent("m1", "WA1", 1.0)
    j.acked("m1")
    # The orchestrator lost our ACK (e.g. Redis restarted) and hands the message out again.
    j.claimed("m1", "491", "l2")
    assert j.reconcile() == [Action("ack", "m1", "l2", wa_id="WA1", sent_at=1.0)]
    j.acked("m1")
    assert reopen(j).reconcile() == []


def test_reclaim_after_send_keeps_the_sent_state_with_the_new_lease(path: Path) -> None:
    j = Journal(str(path))
    j.claimed("m1", "491", "lease-old")
    j.sending("m1")
    j.sent("m1", "WA1", 5.0)
    j = reopen(j)
    # Lease expired while the worker was down; the orchestrator hands the message out again.
    j.claimed("m1", "491", "lease-new")
    entry = j.lookup("m1")
    assert entry is not None
    assert (entry.state, entry.wa_id, entry.lease_token) == (SENT, "WA1", "lease-new")
    assert entry.was_sent


def test_refused_answer_is_not_repeated_but_remembered(path: Path) -> None:
    j = Journal(str(path))
    j.claimed("m1", "491", "l1")
    j.sending("m1")
    j.sent("m1", "WA1", 5.0)
    j.refused("m1")
    j = reopen(j)
    assert j.reconcile() == []
    entry = j.lookup("m1")
    assert entry is not None and entry.settled and entry.state == SENT
    j.claimed("m1", "491", "l2")  # a new lease makes it answerable again
    assert j.reconcile() == [Action("ack", "m1", "l2", wa_id="WA1", sent_at=5.0)]


def test_torn_last_line_is_ignored_and_cut(path: Path) -> None:
    j = Journal(str(path))
    j.claimed("m1", "491", "l1")
    j.close()
    with open(path, "ab") as f:
        f.write(b'{"op":"sending","id":"m1","at":1')  # the process died inside this write
    j = Journal(str(path))
    assert j.stats.torn_lines == 1
    # The `sending` record never completed, so send was never called: safe to retry.
    assert [(a.kind, a.retryable) for a in j.reconcile()] == [("nack", True)]
    j.sending("m1")  # must not be glued to the torn bytes
    j = reopen(j)
    assert j.lookup("m1").state == SENDING
    assert all(isinstance(r, dict) for r in records(path))


def test_torn_sent_record_means_unknown_outcome(path: Path) -> None:
    j = Journal(str(path))
    j.claimed("m1", "491", "l1")
    j.sending("m1")
    j.close()
    with open(path, "ab") as f:
        f.write(b'{"op":"sent","id":"m1","wa_id":"W')
    actions = Journal(str(path)).reconcile()
    assert [(a.kind, a.reason, a.retryable) for a in actions] == [("nack", "send_error", False)]


def test_garbage_line_in_the_middle_is_skipped(path: Path) -> None:
    j = Journal(str(path))
    j.claimed("m1", "491", "l1")
    j.close()
    with open(path, "ab") as f:
        f.write(b"\x00\x00garbage\n")
        f.write(b'{"op":"entry","id":"m9","no_such_field":1,"at":"x"}\n[1,2]\n{"op":"claimed","id":5}\n')
    j = Journal(str(path))
    j.claimed("m2", "492", "l2")
    j = reopen(j)
    assert j.stats.bad_lines == 4
    assert {a.msg_id for a in j.reconcile()} == {"m1", "m2"}


def test_records_for_unknown_messages_are_ignored(path: Path) -> None:
    path.parent.mkdir(parents=True)
    path.write_text('{"op":"sent","id":"ghost","wa_id":"W","sent_at":1}\n')
    assert Journal(str(path)).reconcile() == []


def test_compaction_keeps_only_open_entries_and_stays_small(path: Path) -> None:
    j = Journal(str(path), compact_bytes=4096, retention=0.0)
    for i in range(300):
        j.claimed(f"m{i}", "491", f"l{i}")
        j.sending(f"m{i}")
        j.sent(f"m{i}", f"WA{i}", float(i))
        j.acked(f"m{i}")
    j.claimed("open-sent", "491", "lx")
    j.sending("open-sent")
    j.sent("open-sent", "WAX", 9.0)
    j.claimed("open-claimed", "492", "ly")
    j.compact(now=time.time() + 1)
    assert path.stat().st_size < 1024
    assert not Path(str(path) + ".tmp").exists()
    assert {r["id"] for r in records(path)} == {"open-sent", "open-claimed"}
    j = reopen(j)
    kinds = sorted((a.msg_id, a.kind) for a in j.reconcile())
    assert kinds == [("open-claimed", "nack"), ("open-sent", "ack")]
    assert j.lookup("open-sent").wa_id == "WAX"


def test_compaction_happens_by_itself_when_the_file_grows(path: Path) -> None:
    j = Journal(str(path), compact_bytes=2048)
    for i in range(200):
        j.claimed(f"m{i}", "491", f"l{i}")
        j.nacked(f"m{i}")
    assert path.stat().st_size < 2048 + 200
    j.claimed("last", "491", "l")
    assert reopen(j).lookup("last") is not None


def test_remembered_sends_do_not_make_every_write_compact(path: Path) -> None:
    j = Journal(str(path), compact_bytes=2048)  # default retention: a day
    sizes = []
    for i in range(200):
        j.claimed(f"m{i}", "491", f"l{i}")
        j.sending(f"m{i}")
        j.sent(f"m{i}", f"WA{i}", float(i))
        sizes.append(j.size())
        j.acked(f"m{i}")
    compactions = sum(1 for a, b in zip(sizes, sizes[1:], strict=False) if b < a)
    assert 1 <= compactions <= 10
    j = reopen(j)
    assert j.lookup("m0").wa_id == "WA0"
    assert j.reconcile() == []


def test_refused_entries_expire_at_compaction(path: Path) -> None:
    j = Journal(str(path), retention=100.0)
    j.claimed("old", "491", "l1")
    j.sending("old")
    j.sent("old", "W", 1.0)
    j.refused("old")
    j.claimed("young", "491", "l2")
    j.refused("young")
    updated = j.lookup("old").updated_at
    j.compact(now=updated + 50)
    assert j.lookup("old") is not None
    j.compact(now=updated + 101)
    assert j.lookup("old") is None
    assert reopen(j).lookup("old") is None


def test_crash_during_compaction_leaves_the_old_file_valid(path: Path) -> None:
    j = Journal(str(path))
    j.claimed("m1", "491", "l1")
    j.sending("m1")
    j.close()
    # A half-written temporary file from a compaction that died before the rename.
    Path(str(path) + ".tmp").write_bytes(b'{"op":"entry","id":"m1","sta')
    j = Journal(str(path))
    assert j.lookup("m1").state == SENDING
    j.compact()
    assert reopen(j).lookup("m1").state == SENDING
