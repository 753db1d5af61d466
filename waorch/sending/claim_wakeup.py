"""Wake parked claim long-polls when their session's outbox may hold something claimable.

Writers PUBLISH the session id on one channel (`notify`); each gateway process keeps ONE
subscriber (a thread, a greenlet under gunicorn+gevent) that wakes that session's parked claims.
Notifications are hints: a waiter also re-checks on a slow timer, so a lost one costs latency only.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from waorch.core import keys, redis_urls

log = logging.getLogger(__name__)

RECONNECT_PAUSE = 1.0  # seconds between attempts while Redis is unreachable
LISTEN_TICK = 5.0  # longest blocking read of the subscriber; bounds how long a stop takes

# claim-script runs by parked long-polls after their first, per session id (this process): the
# cost the notifications save; read by tests and the benchmark
rechecks: Counter[str] = Counter()


def notify(r: redis.Redis, session_id: str) -> None:
    """Tell every gateway that parked claims of `session_id` should look at its outbox again."""
    r.publish(keys.OUTBOX_WAKE, session_id)


class _Session:
    __slots__ = ("cond", "generation", "waiters")

    def __init__(self, lock: threading.Lock) -> None:
        self.cond = threading.Condition(lock)
        self.generation = 0
        self.waiters = 0


class Watch:
    """One parked claim's view of its session's wake-ups."""

    def __init__(self, hub: _Hub, slot: _Session) -> None:
        self._hub, self._slot = hub, slot

    @property
    def live(self) -> bool:
        """True while the subscriber is connected (wake-ups are arriving)."""
        return self._hub.live

    def mark(self) -> int:
        """Take before looking at the outbox; `wait(mark)` returns at once if woken since."""
        return self._slot.generation

    def wait(self, mark: int, timeout: float) -> bool:
        """Block up to `timeout` s for a wake-up after `mark`; True if woken."""
        with self._slot.cond:
            return self._slot.cond.wait_for(lambda: self._slot.generation != mark, timeout)


class _Hub:
    """The process's subscriber and the parked claims it wakes, by session id."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.pid = os.getpid()
        self._live = threading.Event()  # subscribed: wake-ups are arriving
        self._lock = threading.Lock()
        self._sessions: dict[str, _Session] = {}
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="claim-wakeup", daemon=True)
        self._thread.start()

    @property
    def live(self) -> bool:
        return self._live.is_set()

    def wait_live(self, timeout: float) -> bool:
        return self._live.wait(timeout)

    @contextmanager
    def watching(self, session_id: str) -> Iterator[Watch]:
        with self._lock:
            slot = self._sessions.get(session_id)
            if slot is None:
                slot = self._sessions[session_id] = _Session(self._lock)
            slot.waiters += 1
        try:
            yield Watch(self, slot)
        finally:
            with self._lock:
                slot.waiters -= 1
                if slot.waiters == 0:
                    self._sessions.pop(session_id, None)

    def parked(self, session_id: str) -> int:
        with self._lock:
            slot = self._sessions.get(session_id)
            return slot.waiters if slot is not None else 0

    def wake(self, session_id: str | None) -> None:
        """Wake the parked claims of one session (None: of every session)."""
        with self._lock:
            slots = list(self._sessions.values()) if session_id is None else \
                [s for s in (self._sessions.get(session_id),) if s is not None]
            for slot in slots:
                slot.generation += 1
                slot.cond.notify_all()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(LISTEN_TICK + 2)

    def _run(self) -> None:
        while not self._stopped.is_set():
            client = redis_urls.redis_client_for(self.url, socket_timeout=LISTEN_TICK + 10,
                                                 socket_keepalive=True)
            pubsub = client.pubsub()
            try:
                pubsub.subscribe(keys.OUTBOX_WAKE)
                while not self._stopped.is_set():
                    msg = pubsub.get_message(timeout=LISTEN_TICK)
                    if msg is None:
                        continue
                    if msg["type"] == "subscribe":
                        self._live.set()
                        self.wake(None)  # anything published while we were away was missed
                    elif msg["type"] == "message":
                        self.wake(msg["data"])
            except (redis.RedisError, OSError) as exc:
                if self.live:
                    log.warning("claim wake-up subscriber lost Redis (%s); claims poll meanwhile", exc)
                self._live.clear()
                self._stopped.wait(RECONNECT_PAUSE)
            finally:
                self._live.clear()
                try:
                    pubsub.close()
                    client.close()
                except (redis.RedisError, OSError):
                    pass


_hubs: dict[str, _Hub] = {}
_hubs_lock = threading.Lock()


def _hub(url: str) -> _Hub:
    hub = _hubs.get(url)
    if hub is None or hub.pid != os.getpid():  # a forked child needs its own subscriber
        with _hubs_lock:
            hub = _hubs.get(url)
            if hub is None or hub.pid != os.getpid():
                hub = _hubs[url] = _Hub(url)
    return hub


@contextmanager
def watching(url: str, session_id: str) -> Iterator[Watch]:
    """Register a parked claim of `session_id` for the duration of the block."""
    with _hub(url).watching(session_id) as watch:
        yield watch


def parked(url: str, session_id: str) -> int:
    """How many claims of `session_id` are parked on this process's subscriber for `url`."""
    hub = _hubs.get(url)
    return hub.parked(session_id) if hub is not None else 0


def wait_live(url: str, timeout: float = 10.0) -> bool:
    """Start this process's subscriber for `url` and wait until it is subscribed (tests, warm-up)."""
    return _hub(url).wait_live(timeout)


def stop_all() -> None:
    """Stop this process's subscribers (tests switching Redis)."""
    with _hubs_lock:
        hubs = list(_hubs.values())
        _hubs.clear()
    for hub in hubs:
        if hub.pid == os.getpid():
            hub.stop()
