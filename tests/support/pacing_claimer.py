"""A competing claimer process for the pacing tests: claims and ACKs for the given sessions as fast
as the pacing scripts allow, recording every claim in the Redis list `test:claims`.

Run: python -m tests.support.pacing_claimer --seconds S [--speed K --t0 T --base B] SESSION_ID...
With --speed, `now` is a shared virtual clock: base + (wall time - t0) * K (the same function of
wall time in every process), so that a 60 s window passes in 60/K seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time

from waorch.core.redis_client import get_redis
from waorch.policy.pacing import pace_for
from waorch.sending import outbox
from waorch.sessions import registry as sessions

CLAIMS = "test:claims"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--speed", type=float, default=1.0)
    parser.add_argument("--t0", type=float, default=None)
    parser.add_argument("--base", type=float, default=None)
    parser.add_argument("sessions", nargs="+")
    args = parser.parse_args()
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    r = get_redis()
    t0 = time.time() if args.t0 is None else args.t0
    base = t0 if args.base is None else args.base

    def clock() -> float:
        return base + (time.time() - t0) * args.speed

    deadline = time.monotonic() + args.seconds
    r.rpush("test:claimers", os.getpid())
    while not stop and time.monotonic() < deadline:
        soonest = None
        for sid in args.sessions:
            session = sessions.get_session(r, sid)
            now = clock()
            res = outbox.claim(r, sid, pace_for(session), now=now)
            if res.outcome == "claimed":
                msg = res.message
                r.rpush(CLAIMS, json.dumps({"session": sid, "msg": msg["id"], "now": now,
                                            "pid": os.getpid()}))
                outbox.ack(r, sid, msg["id"], msg["lease_token"], f"wa-{msg['id']}", sent_at=now, now=now)
                soonest = now
            elif res.outcome == "wait":
                soonest = res.ready_at if soonest is None else min(soonest, res.ready_at)
        # sleep until something may be due (in wall time), but stay in the race
        pause = 0.01 if soonest is None else (soonest - clock()) / args.speed
        time.sleep(min(0.01, max(0.0, pause)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
