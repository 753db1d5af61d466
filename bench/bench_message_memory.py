"""Redis memory per message, and what message retention gives back.

A fresh redis-server; N messages go their whole life through the real Lua scripts (accept,
route, reserve a slot, claim, ACK, delivered and read receipts), each with a short text. Baseline
in the same run: the same texts stored as bare strings, the least any store of them would hold.
Then `messages.prune_finished` with the retention passed: used_memory should return to where it
started (apart from counters).

    .venv/bin/python -m bench.bench_message_memory [--messages 20000] [--rounds 3] [--write]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from bench.benchmarks_md import write_section
from waorch.sending import accept

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Redis memory per message"
TEXT = "Hi Ana, your order 48213 is on its way. Reply STOP to opt out."
SESSION, PHONE = "s1", "14155550100"


def used(r) -> int:
    r.execute_command("MEMORY", "PURGE")
    return int(r.info("memory")["used_memory"])


def whole_life(r, n: int, start: float) -> None:
    """n messages accepted, routed, scheduled, claimed, sent, delivered and read, on a fast clock."""
    from waorch.core import keys
    from waorch.policy.pacing import Pace
    from waorch.sending import outbox

    pace = Pace(per_minute=1_000_000, jitter=0.0)
    ids = []
    for first in range(0, n, 1000):
        records = [{"id": accept.new_message_id(), "to": f"1415{i:07d}", "text": TEXT}
                   for i in range(first, min(n, first + 1000))]
        accept.store(r, "acme", records, {}, now=start)
        ids += [rec["id"] for rec in records]
    r.delete(keys.MESSAGES_UNROUTED)  # routed here instead of by the dispatch task
    for msg_id in ids:
        outbox.route(r, msg_id, SESSION, PHONE, now=start)
    clock = start
    while r.llen(keys.session_queue(PHONE)):
        outbox.reserve_slots(r, SESSION, PHONE, pace, now=clock)
        clock += 1
        while (claim := outbox.claim(r, SESSION, pace, now=clock)).outcome == "claimed":
            msg = claim.message
            assert outbox.ack(r, SESSION, msg["id"], msg["lease_token"], f"wa{msg['id']}", now=clock) == "ok"
            outbox.record_receipt(r, SESSION, f"wa{msg['id']}", "delivered", at=clock + 1)
            outbox.record_receipt(r, SESSION, f"wa{msg['id']}", "read", at=clock + 2)
            clock += 0.001
    assert r.hget(keys.message(ids[-1]), "status") == "read"


def one_round(n: int) -> dict:
    import redis

    from waorch.launcher.redis_server import start_local_redis
    from waorch.messages import records as messages

    with tempfile.TemporaryDirectory() as tmp:
        server = start_local_redis(Path(tmp), appendonly=False)
        try:
            r = redis.Redis.from_url(server.url, decode_responses=True)
            empty = used(r)
            for i in range(n):
                r.set(f"bare:{i}", TEXT)
            bare = (used(r) - empty) / n
            r.flushall()
            empty = used(r)
            start = time.time() - 40 * 86400
            whole_life(r, n, start)
            full = used(r)
            began = time.perf_counter()
            pruned = messages.prune_finished(r, 30 * 86400)
            prune_s = time.perf_counter() - began
            after = used(r)
            assert pruned == n, (pruned, n)
            # what stays is bounded by the day: per-recipient cap counters (EXPIRE one day) and the
            # session's rolling send log (trimmed to 24 h); drop them as the day passing would
            for key in [*r.scan_iter("recipient:sends:*"), *r.scan_iter("session:sendlog:*")]:
                r.delete(key)
            day_later = used(r)
            return {"bare": bare, "message": (full - empty) / n, "left": (after - empty) / n,
                    "day_later": (day_later - empty) / n, "prune_per_s": n / prune_s}
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write", action="store_true", help="rewrite this section of BENCHMARKS.md")
    args = parser.parse_args()
    os.environ.setdefault("WAORCH_SECRET_KEY", "bench-key")
    rounds = [one_round(args.messages) for _ in range(args.rounds)]
    med = {k: statistics.median(one[k] for one in rounds) for k in rounds[0]}
    text = f"""{SECTION}

`.venv/bin/python -m bench.bench_message_memory --messages {args.messages} --rounds {args.rounds}` on
{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, {time.strftime('%Y-%m-%d')};
medians of {args.rounds} rounds, each on a fresh redis-server. Every message goes its whole life
through the real scripts (accepted, routed, scheduled, claimed, sent, delivered, read: 7 history
entries, listing indexes, WhatsApp id mapping) with a {len(TEXT)}-character text. Baseline, same run:
the text alone as a bare Redis string.

| what | bytes per message |
|---|---:|
| bare text string (baseline) | {med['bare']:.0f} |
| a read message with its history and indexes | {med['message']:.0f} |
| ratio | {med['message'] / med['bare']:.1f}× |
| left at once after `prune_finished` (retention passed) | {med['left']:.0f} |
| … once the day after the sends has passed too | {med['day_later']:.0f} |

- Pruning ran at {med['prune_per_s']:,.0f} messages/s (batches of 500 per script call), so the hourly
  task of a fleet sending a million messages a day spends well under a minute per day on it.
- Plan Redis memory as messages per day × `WAORCH_MESSAGE_RETENTION` in days × the second row
  (30 days of 100 000 a day: {med['message'] * 100_000 * 30 / 2**30:.1f} GiB), plus the AOF rewrite headroom.
- What stays at once after pruning is one day's worth of per-recipient daily-cap counters (they
  expire a day after the send) and the session's rolling 24 h send log (trimmed by the next claim
  a day later); neither depends on the retention. The last ~45 B are Redis's own key table, which
  it shrinks later, on its own.
"""
    print(text)
    if args.write:
        write_section(SECTION, text, ROOT / "BENCHMARKS.md")


if __name__ == "__main__":
    main()
